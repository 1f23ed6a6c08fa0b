//! Host compute: the graphs that task components run through `wasi:nn`.
//!
//! A task component keeps everything but the tensor graph in its sandbox:
//! tokenization, batching, pooling, SPLADE, scoring, sampling. It asks for
//! its graph by name (`load-by-name` with the model id) and sends
//! `[batch, sequence]` i64 tensors; the host runs the graph natively and
//! sends back one f32 tensor.
//!
//! A decoder (the completion model) keeps its KV cache here, in the
//! execution context: one context per sequence; each compute takes the new
//! ids `[1, n]` (n ≤ [`PREFILL_CHUNK`]) and answers the last position's
//! logits `[1, vocab]`. Nothing that grows with the context crosses per
//! token. A context whose step failed refuses further steps, so a sequence
//! never continues from a lost cache. On ONNX Runtime a decoder runs
//! [`ONNXRUNTIME_GRAPH`] when its model has one: the same inputs and outputs
//! in ONNX Runtime's fused operators, with int8 activations as llama.cpp
//! computes (the converter's essay says why and how close).
//!
//! What the component may do is narrow:
//!
//! - it gets exactly one graph, the one of its endpoint's model, loaded by
//!   the host from that model's directory; any other name is `not-found`, and
//!   loading a graph from bytes is refused;
//! - every tensor is checked against the model's [`Limits`] before compute:
//!   names, dtype, rank, shape and byte length; a bad one is an
//!   `invalid-argument` error, never a host panic (the backend runs under
//!   `catch_unwind`);
//! - the request deadline bounds every call: it is checked before compute,
//!   ONNX Runtime's run is terminated when it passes, and a call past it
//!   stops the instance with a timeout (408);
//! - host memory for one call is bounded: inputs by [`Limits`] (at most
//!   8192 tokens), the output by `ml_core`'s 64 Mi values (256 MiB), and the
//!   tensors a component holds at once by [`MAX_TENSOR_BYTES`]; a decoder's
//!   cache by its model's `max_sequence_length` (SmolLM2: 8192 positions,
//!   30 layers × 2 × 3 heads × 64 floats each, 360 MiB).
//!
//! Two backends: tract, natively (always there), and ONNX Runtime through
//! `ort`, loaded at run time from the `libonnxruntime` that the model
//! tooling's `onnxruntime` wheel ships. Each instance gets its own execution
//! context, with one intra-op thread unless the endpoint's `num_threads`
//! asks for more (ONNX Runtime only), so allocations scale across cores.

mod onnxruntime;
pub mod wasi_nn;

use anyhow::{bail, Context as _, Result};
use es_wire::Compute;
use ml_core::encoder::{max_batch_tokens, MAX_BATCH_OUTPUT_VALUES, MAX_BATCH_SIZE};
use ml_core::generation::{ONNXRUNTIME_GRAPH, PREFILL_CHUNK};
use ml_core::{GeneratorConfig, Input, ModelConfig, Output};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Bytes of tensors one instance may hold at once (inputs it made, outputs
/// it has not dropped): one largest output and its inputs, with room.
pub const MAX_TENSOR_BYTES: usize = 4 * MAX_BATCH_OUTPUT_VALUES + (64 << 20);

/// One instance's execution context: it runs the graph, one call at a time.
pub trait Context: Send {
    /// Runs the graph; `deadline` may stop it early where the backend can.
    fn run(
        &mut self,
        batch: usize,
        sequence: usize,
        inputs: Vec<Input<'_>>,
        deadline: Option<Instant>,
    ) -> Result<Output>;
}

/// A backend's graph, loaded once per model and shared by its instances.
trait Backend: Send + Sync {
    fn context(&self) -> Result<Box<dyn Context>>;
    /// The size of the output's last dimension, if the graph fixes it.
    fn output_width(&self) -> Option<usize>;
}

/// What one compute call may send for a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// The graph's inputs, each `[batch, sequence]` i64.
    pub inputs: Vec<String>,
    pub max_batch: usize,
    pub max_sequence: usize,
    /// `batch × sequence` at most.
    pub max_tokens: usize,
}

impl Limits {
    fn new(config: &ModelConfig, output_width: Option<usize>) -> Self {
        Self {
            inputs: config.inputs.clone(),
            max_batch: MAX_BATCH_SIZE,
            max_sequence: config.max_sequence_length,
            max_tokens: max_batch_tokens(output_width.unwrap_or(1)),
        }
    }

    /// A decoder step: one sequence, a prompt chunk at most.
    fn decoder(config: &GeneratorConfig) -> Self {
        Self {
            inputs: vec![config.inputs.input_ids.name.clone()],
            max_batch: 1,
            max_sequence: PREFILL_CHUNK,
            max_tokens: PREFILL_CHUNK,
        }
    }
}

/// A model's graph on one backend, as instances see it through `wasi:nn`.
pub struct HostGraph {
    /// The one name `load-by-name` answers to.
    pub name: String,
    pub compute: Compute,
    pub limits: Limits,
    backend: Box<dyn Backend>,
}

impl HostGraph {
    pub fn context(&self) -> Result<Box<dyn Context>> {
        self.backend.context()
    }
}

/// The host's backends and the graphs they loaded, by model directory.
pub struct HostCompute {
    onnxruntime: Option<onnxruntime::Runtime>,
    /// By model directory, backend and ONNX Runtime's intra-op threads.
    graphs: Mutex<HashMap<(PathBuf, Compute, usize), Arc<HostGraph>>>,
}

impl HostCompute {
    /// Tract is always there; ONNX Runtime when `libonnxruntime` loads.
    pub fn new(onnxruntime_library: Option<&Path>) -> Self {
        let onnxruntime = onnxruntime_library.and_then(|path| {
            match onnxruntime::Runtime::load(path) {
                Ok(rt) => {
                    tracing::info!(library = %path.display(), "ONNX Runtime available for host compute");
                    Some(rt)
                }
                Err(e) => {
                    tracing::warn!(library = %path.display(), error = format!("{e:#}"), "ONNX Runtime unavailable; host compute uses tract");
                    None
                }
            }
        });
        Self {
            onnxruntime,
            graphs: Mutex::default(),
        }
    }

    /// Where an endpoint asking for `asked` runs its graph: by default the
    /// fastest available, ONNX Runtime, else tract in the host.
    pub fn resolve(&self, asked: Option<Compute>) -> Result<Compute, es_wire::EsError> {
        match asked {
            Some(Compute::Onnxruntime) if self.onnxruntime.is_none() => {
                Err(es_wire::EsError::illegal_argument(
                    "[service_settings.compute] is [onnxruntime], but this server has no ONNX Runtime: start it with --onnxruntime <path to libonnxruntime.so>, or choose [tract] or [sandbox]",
                ))
            }
            Some(c) => Ok(c),
            None if self.onnxruntime.is_some() => Ok(Compute::Onnxruntime),
            None => Ok(Compute::Tract),
        }
    }

    /// The graph of the model in `dir` on `compute`'s backend, loaded once.
    /// ONNX Runtime gives each session `threads` intra-op threads; tract
    /// runs on one.
    pub fn graph(&self, dir: &Path, compute: Compute, threads: usize) -> Result<Arc<HostGraph>> {
        let threads = match compute {
            Compute::Onnxruntime => threads.max(1),
            _ => 1,
        };
        let key = (dir.to_path_buf(), compute, threads);
        if let Some(g) = self.graphs.lock().unwrap().get(&key) {
            return Ok(g.clone());
        }
        // Loaded outside the lock: optimising a graph takes a second.
        let model_json = dir.join("model.json");
        let model_json = std::fs::read(&model_json)
            .with_context(|| format!("reading {}", model_json.display()))?;
        if is_decoder(&model_json) {
            let config = GeneratorConfig::from_json(&model_json)?;
            let backend = self.decoder(dir, &config, compute, threads)?;
            return Ok(self.insert(
                key,
                &config.model_id,
                compute,
                Limits::decoder(&config),
                backend,
            ));
        }
        let config = ModelConfig::from_json(&model_json)?;
        let onnx = dir.join("model.onnx");
        let started = Instant::now();
        let backend: Box<dyn Backend> = match compute {
            Compute::Tract => {
                let bytes =
                    std::fs::read(&onnx).with_context(|| format!("reading {}", onnx.display()))?;
                Box::new(Arc::new(ml_core::TractGraph::from_onnx(&bytes, &config)?))
            }
            Compute::Onnxruntime => match &self.onnxruntime {
                Some(rt) => Box::new(rt.graph(&onnx, &config.output, threads)?),
                None => bail!("ONNX Runtime is not available"),
            },
            Compute::Sandbox => bail!("a sandbox endpoint runs its graph in its component"),
        };
        tracing::info!(model = %config.model_id, compute = compute.name(), seconds = started.elapsed().as_secs_f32(), "graph loaded for host compute");
        let limits = Limits::new(&config, backend.output_width());
        Ok(self.insert(key, &config.model_id, compute, limits, backend))
    }

    /// A decoder's graph on `compute`'s backend.
    fn decoder(
        &self,
        dir: &Path,
        config: &GeneratorConfig,
        compute: Compute,
        threads: usize,
    ) -> Result<Box<dyn Backend>> {
        let mut onnx = dir.join("model.onnx");
        let fused = dir.join(ONNXRUNTIME_GRAPH);
        if compute == Compute::Onnxruntime && fused.is_file() {
            onnx = fused;
        }
        let started = Instant::now();
        let backend: Box<dyn Backend> = match compute {
            Compute::Tract => {
                let mut file = std::fs::File::open(&onnx)
                    .with_context(|| format!("reading {}", onnx.display()))?;
                let decoder = ml_core::decoder::TractDecoder::load(
                    &mut file,
                    config,
                    ml_core::blocks::Blocks::HERE,
                )?;
                Box::new(TractDecoder {
                    decoder,
                    limits: SequenceLimits::new(config),
                })
            }
            Compute::Onnxruntime => match &self.onnxruntime {
                Some(rt) => Box::new(rt.decoder(&onnx, config, threads)?),
                None => bail!("ONNX Runtime is not available"),
            },
            Compute::Sandbox => bail!("a sandbox endpoint runs its graph in its component"),
        };
        tracing::info!(model = %config.model_id, compute = compute.name(), graph = %onnx.display(), seconds = started.elapsed().as_secs_f32(), "decoder loaded for host compute");
        Ok(backend)
    }

    /// Keeps the first graph loaded for `key` (two instances may race).
    fn insert(
        &self,
        key: (PathBuf, Compute, usize),
        name: &str,
        compute: Compute,
        limits: Limits,
        backend: Box<dyn Backend>,
    ) -> Arc<HostGraph> {
        let graph = Arc::new(HostGraph {
            name: name.to_string(),
            compute,
            limits,
            backend,
        });
        self.graphs
            .lock()
            .unwrap()
            .entry(key)
            .or_insert(graph)
            .clone()
    }
}

/// Whether `model.json` describes a decoder (task `completion`).
fn is_decoder(model_json: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Task {
        task: String,
    }
    serde_json::from_slice::<Task>(model_json).is_ok_and(|t| t.task == "completion")
}

/// What one decoder sequence may hold, from its `model.json`.
#[derive(Debug, Clone, Copy)]
pub struct SequenceLimits {
    pub vocab: usize,
    pub max_sequence: usize,
}

impl SequenceLimits {
    fn new(config: &GeneratorConfig) -> Self {
        Self {
            vocab: config.vocab_size,
            max_sequence: config.max_sequence_length,
        }
    }
}

/// One decoder sequence's length and health, checked around each step.
struct Sequence {
    limits: SequenceLimits,
    length: usize,
    failed: bool,
}

impl Sequence {
    fn new(limits: SequenceLimits) -> Self {
        Self {
            limits,
            length: 0,
            failed: false,
        }
    }

    /// The ids of a step, refused if they would not fit or are no tokens.
    fn ids<'a>(&self, inputs: &'a [Input<'_>]) -> Result<&'a [i64]> {
        if self.failed {
            bail!("an earlier step of this sequence failed: start a new execution context");
        }
        let [input] = inputs else {
            bail!("a decoder step takes one input, the token ids");
        };
        let ids = input.values.as_slice();
        if let Some(bad) = ids
            .iter()
            .find(|&&id| !(0..self.limits.vocab as i64).contains(&id))
        {
            bail!(
                "token id {bad} is outside the vocabulary of {}",
                self.limits.vocab
            );
        }
        if self.length + ids.len() > self.limits.max_sequence {
            bail!(
                "the sequence would reach {} tokens; the model takes {} at most",
                self.length + ids.len(),
                self.limits.max_sequence
            );
        }
        Ok(ids)
    }

    /// Records a step's outcome: its tokens are in the cache, or the cache is lost.
    fn advance<T>(&mut self, steps: usize, result: Result<T>) -> Result<T> {
        match &result {
            Ok(_) => self.length += steps,
            Err(_) => self.failed = true,
        }
        result
    }
}

/// A decoder on tract: the ML core's own, run natively.
struct TractDecoder {
    decoder: ml_core::decoder::TractDecoder,
    limits: SequenceLimits,
}

impl Backend for TractDecoder {
    fn context(&self) -> Result<Box<dyn Context>> {
        use ml_core::decoder::Decoder;
        Ok(Box::new(TractSequence {
            run: self.decoder.start()?,
            sequence: Sequence::new(self.limits),
        }))
    }

    fn output_width(&self) -> Option<usize> {
        Some(self.limits.vocab)
    }
}

struct TractSequence {
    run: Box<dyn ml_core::decoder::DecoderRun>,
    sequence: Sequence,
}

impl Context for TractSequence {
    /// tract cannot be stopped mid-run: the deadline is checked between calls.
    fn run(
        &mut self,
        _batch: usize,
        _sequence: usize,
        inputs: Vec<Input<'_>>,
        _deadline: Option<Instant>,
    ) -> Result<Output> {
        let ids: Vec<u32> = self
            .sequence
            .ids(&inputs)?
            .iter()
            .map(|&id| id as u32)
            .collect();
        let logits = self.run.run(&ids);
        let values = self.sequence.advance(ids.len(), logits)?;
        Ok(Output {
            shape: vec![1, values.len()],
            values,
        })
    }
}

/// The `libonnxruntime` of the `onnxruntime` wheel the model tooling
/// installed into `<model cache>/venv` (`models/requirements.txt` pins it).
pub fn find_onnxruntime(model_cache: &Path) -> Option<PathBuf> {
    let lib = model_cache.join("venv/lib");
    std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .map(|python| python.path().join("site-packages/onnxruntime/capi"))
        .filter_map(|capi| std::fs::read_dir(capi).ok())
        .flat_map(|files| files.flatten().map(|f| f.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so."))
        })
}

/// tract's plan is immutable and shared by every instance's context.
impl Backend for Arc<ml_core::TractGraph> {
    fn context(&self) -> Result<Box<dyn Context>> {
        Ok(Box::new(self.clone()))
    }

    fn output_width(&self) -> Option<usize> {
        ml_core::TractGraph::output_width(self)
    }
}

impl Context for Arc<ml_core::TractGraph> {
    /// tract cannot be stopped mid-run: the deadline is checked between calls.
    fn run(
        &mut self,
        batch: usize,
        sequence: usize,
        inputs: Vec<Input<'_>>,
        _deadline: Option<Instant>,
    ) -> Result<Output> {
        ml_core::Graph::run(&**self, batch, sequence, inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(values: &[i64]) -> Vec<Input<'static>> {
        vec![Input {
            name: "input_ids",
            values: values.to_vec(),
        }]
    }

    #[test]
    fn a_sequence_refuses_what_its_cache_cannot_take() {
        let mut sequence = Sequence::new(SequenceLimits {
            vocab: 10,
            max_sequence: 4,
        });
        let err = sequence.ids(&ids(&[1, 10])).unwrap_err();
        assert!(
            err.to_string().contains("outside the vocabulary of 10"),
            "{err}"
        );
        let err = sequence.ids(&ids(&[-1])).unwrap_err();
        assert!(err.to_string().contains("token id -1"), "{err}");

        let three = ids(&[1, 2, 3]);
        let steps = sequence.ids(&three).unwrap().len();
        sequence.advance(steps, Ok(())).unwrap();
        let err = sequence.ids(&ids(&[4, 5])).unwrap_err();
        assert!(err.to_string().contains("would reach 5 tokens"), "{err}");
        assert_eq!(sequence.ids(&ids(&[4])).unwrap(), [4]);

        // After a failed step the cache is lost: nothing continues it.
        sequence
            .advance::<()>(1, Err(anyhow::anyhow!("terminated")))
            .unwrap_err();
        let err = sequence.ids(&ids(&[4])).unwrap_err();
        assert!(
            err.to_string().contains("start a new execution context"),
            "{err}"
        );
    }
}
