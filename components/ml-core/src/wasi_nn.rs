//! The encoder graph through `wasi:nn@0.2.0-rc-2024-10-28`, the WIT that
//! wasmtime-wasi-nn 48 ships (`wit/deps/wasi-nn`, unchanged).
//!
//! The component names its graph (the model id) and never sends model bytes:
//! the host decides which graphs an instance may load and runs them natively.
//! Tensors go over as bytes, little-endian as the spec says: i64 token ids in,
//! one f32 tensor out.
//!
//! A decoder's graph goes the same way, with its KV cache kept by the host in
//! the execution context: one context per sequence, and per step only the
//! new ids `[1, n]` go in and the last position's logits `[1, vocab]` come
//! back.

use crate::decoder::{Decoder, DecoderRun};
use crate::graph::{Graph, Input, Output};
use anyhow::{anyhow, bail, Result};

mod bindings {
    wit_bindgen::generate!({ path: "../../wit/deps/wasi-nn", world: "ml" });
}

use bindings::wasi::nn::errors::Error;
use bindings::wasi::nn::graph;
use bindings::wasi::nn::inference::GraphExecutionContext;
use bindings::wasi::nn::tensor::{Tensor, TensorType};

/// A graph the host loaded for this instance, with one execution context.
pub struct WasiNnGraph {
    // Declared first so it drops first: a context belongs to its graph.
    context: GraphExecutionContext,
    _graph: graph::Graph,
    output: String,
}

impl WasiNnGraph {
    /// Asks the host for the graph named `name`, reading output `output`
    /// (or the first output, if none has that name).
    pub fn load(name: &str, output: &str) -> Result<Self> {
        let graph = graph::load_by_name(name)
            .map_err(|e| nn_error(e, &format!("loading graph [{name}] through wasi:nn")))?;
        let context = graph
            .init_execution_context()
            .map_err(|e| nn_error(e, "starting a wasi:nn execution context"))?;
        Ok(Self {
            context,
            _graph: graph,
            output: output.to_string(),
        })
    }
}

impl Graph for WasiNnGraph {
    fn run(&self, batch: usize, sequence: usize, inputs: Vec<Input<'_>>) -> Result<Output> {
        let dims = [u32::try_from(batch)?, u32::try_from(sequence)?];
        let tensors = inputs
            .into_iter()
            .map(|input| {
                let tensor = i64_tensor(&dims, input.values.into_iter());
                (input.name.to_string(), tensor)
            })
            .collect();
        compute(&self.context, tensors, &self.output)
    }
}

/// An i64 tensor of `dims`, little-endian as the spec says.
fn i64_tensor(dims: &[u32], values: impl Iterator<Item = i64>) -> Tensor {
    let bytes = values
        .map(i64::to_le_bytes)
        .collect::<Vec<[u8; 8]>>()
        .into_flattened();
    Tensor::new(dims, TensorType::I64, &bytes)
}

/// Runs `context` on `inputs` and reads its f32 output `output` (or the
/// first output, if none has that name), checked against its shape.
fn compute(
    context: &GraphExecutionContext,
    inputs: Vec<(String, Tensor)>,
    output: &str,
) -> Result<Output> {
    let mut outputs = context
        .compute(inputs)
        .map_err(|e| nn_error(e, "wasi:nn compute"))?;
    if outputs.is_empty() {
        bail!("wasi:nn compute returned no output");
    }
    let at = outputs
        .iter()
        .position(|(name, _)| name == output)
        .unwrap_or(0);
    let (_, tensor) = outputs.swap_remove(at);
    if tensor.ty() != TensorType::Fp32 {
        bail!("wasi:nn returned a {:?} tensor, not f32", tensor.ty());
    }
    let shape: Vec<usize> = tensor.dimensions().iter().map(|&d| d as usize).collect();
    let bytes = tensor.data();
    if bytes.len() != shape.iter().product::<usize>() * 4 {
        bail!(
            "wasi:nn returned {} bytes for a tensor of shape {shape:?}",
            bytes.len()
        );
    }
    let values = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Output { shape, values })
}

/// A decoder graph the host loaded for this instance.
pub struct WasiNnDecoder {
    graph: graph::Graph,
    input: String,
}

impl WasiNnDecoder {
    /// Asks the host for the decoder graph named `name`, fed token ids as
    /// its input `input`.
    pub fn load(name: &str, input: &str) -> Result<Self> {
        let graph = graph::load_by_name(name)
            .map_err(|e| nn_error(e, &format!("loading graph [{name}] through wasi:nn")))?;
        Ok(Self {
            graph,
            input: input.to_string(),
        })
    }
}

impl Decoder for WasiNnDecoder {
    fn start(&self) -> Result<Box<dyn DecoderRun>> {
        let context = self
            .graph
            .init_execution_context()
            .map_err(|e| nn_error(e, "starting a wasi:nn execution context"))?;
        Ok(Box::new(WasiNnRun {
            context,
            input: self.input.clone(),
        }))
    }
}

/// One sequence: its KV cache lives in the host's execution context.
struct WasiNnRun {
    context: GraphExecutionContext,
    input: String,
}

impl DecoderRun for WasiNnRun {
    fn run(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let dims = [1, u32::try_from(ids.len())?];
        let input = i64_tensor(&dims, ids.iter().map(|&id| i64::from(id)));
        let logits = compute(&self.context, vec![(self.input.clone(), input)], "")?;
        Ok(logits.values)
    }
}

fn nn_error(e: Error, doing: &str) -> anyhow::Error {
    anyhow!("{doing}: {:?}: {}", e.code(), e.data())
}
