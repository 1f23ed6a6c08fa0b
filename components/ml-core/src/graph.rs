//! The tensor graph an encoder runs, behind one small trait.
//!
//! Tokenization, batching and pooling are the same wherever the encoder runs;
//! only the graph moves. [`Graph`] takes `[batch, sequence]` i64 inputs by
//! name and gives back one f32 tensor. Three implementations exist:
//!
//! - [`TractGraph`] (feature `tract`): tract-onnx in process. The browser
//!   and the sandboxed task components run it inside wasm, and the native
//!   host runs it natively as one of its `wasi:nn` backends.
//! - `WasiNnGraph` (feature `wasi-nn`, in [`crate::wasi_nn`]): the graph
//!   runs in whatever host provides `wasi:nn`; the component names it and
//!   sends tensors.
//! - The host's ONNX Runtime backend.

use anyhow::{bail, Result};

/// One graph input: its name and `[batch, sequence]` values, row-major.
pub struct Input<'a> {
    pub name: &'a str,
    pub values: Vec<i64>,
}

/// A graph's output: f32 values, row-major, and their shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl Output {
    /// Checks the shape against what the caller reads, e.g.
    /// `[Some(rows), None, None]` for `[batch, sequence, hidden]`.
    pub fn expect_shape(&self, dims: &[Option<usize>], what: &str) -> Result<()> {
        let matches = self.shape.len() == dims.len()
            && self
                .shape
                .iter()
                .zip(dims)
                .all(|(&d, want)| want.is_none_or(|w| w == d))
            && self.shape.iter().product::<usize>() == self.values.len();
        if !matches {
            bail!("expected {what}, got a tensor of shape {:?}", self.shape);
        }
        Ok(())
    }

    /// The innermost vector at `index` (all dimensions but the last).
    pub fn row(&self, index: &[usize]) -> &[f32] {
        let width = *self.shape.last().unwrap_or(&0);
        let mut offset = 0;
        for (&i, &d) in index.iter().zip(&self.shape) {
            offset = offset * d + i;
        }
        &self.values[offset * width..(offset + 1) * width]
    }
}

/// An encoder graph: named `[batch, sequence]` i64 inputs to one f32 output.
pub trait Graph: Send + Sync {
    fn run(&self, batch: usize, sequence: usize, inputs: Vec<Input<'_>>) -> Result<Output>;
}

#[cfg(feature = "tract")]
pub use self::tract::TractGraph;

#[cfg(feature = "tract")]
mod tract {
    use super::{Graph, Input, Output};
    use crate::encoder::MAX_BATCH_SIZE;
    use crate::ModelConfig;
    use anyhow::{bail, ensure, Context, Result};
    use tract_onnx::prelude::*;

    /// An ONNX encoder optimised by tract for batches of 1 to
    /// [`MAX_BATCH_SIZE`] inputs of 1 to the model's `max_sequence_length`
    /// tokens.
    pub struct TractGraph {
        plan: Arc<TypedRunnableModel>,
        /// The graph's input names, in its order.
        inputs: Vec<String>,
        output_index: usize,
        max_sequence: usize,
    }

    impl TractGraph {
        /// Reads an ONNX encoder whose inputs are `[batch, sequence]` i64, and
        /// picks `config.output` (by node or outlet name; the first output
        /// otherwise).
        pub fn from_onnx(onnx: &[u8], config: &ModelConfig) -> Result<Self> {
            let output = config.output.as_str();
            let max_sequence = config.max_sequence_length;
            let mut model = tract_onnx::onnx()
                .model_for_read(&mut &*onnx)
                .context("model.onnx is not a valid ONNX graph")?;
            // The symbols must be the ones the file already names, or tract
            // cannot unify them with the graph's own shapes.
            let batch = model.symbols.sym("batch");
            let sequence = model.symbols.sym("sequence");
            // Bounds tract uses to choose how to run an operation: only with
            // both ends of both can it prove a `[batch, sequence, hidden]` sum
            // large enough for its vectorised kernel, and without it the
            // residual sums run element by element. `run` refuses what lies
            // outside them.
            for bound in [
                "batch >= 1".to_string(),
                format!("batch <= {MAX_BATCH_SIZE}"),
                "sequence >= 1".to_string(),
                format!("sequence <= {max_sequence}"),
            ] {
                model.symbols.add_assertion(bound)?;
            }
            let mut inputs = Vec::new();
            for (ix, outlet) in model.input_outlets()?.to_vec().iter().enumerate() {
                inputs.push(model.node(outlet.node).name.clone());
                model.set_input_fact(
                    ix,
                    InferenceFact::dt_shape(
                        i64::datum_type(),
                        tvec!(batch.to_dim(), sequence.to_dim()),
                    ),
                )?;
            }
            let output_index = model
                .output_outlets()?
                .iter()
                .position(|o| {
                    model.node(o.node).name == output || model.outlet_label(*o) == Some(output)
                })
                .unwrap_or(0);
            let mut typed = model
                .into_typed()
                .and_then(|m| m.into_decluttered())
                .context("optimising model.onnx")?;
            crate::gelu::fuse(&mut typed)?;
            let plan = typed
                .into_optimized()
                .context("optimising model.onnx")?
                .into_runnable()?;
            Ok(Self {
                plan,
                inputs,
                output_index,
                max_sequence,
            })
        }

        /// The graph's input names, in its order.
        pub fn input_names(&self) -> &[String] {
            &self.inputs
        }

        /// The operations of the optimised graph, by tract's names, in
        /// evaluation order: what tract chose to run.
        pub fn operation_names(&self) -> Vec<String> {
            let model = self.plan.model();
            self.plan
                .order_without_consts()
                .iter()
                .map(|&id| model.node(id).op().name().to_string())
                .collect()
        }

        /// The size of the output's last dimension, when the graph fixes it
        /// (hidden size, vocabulary, labels).
        pub fn output_width(&self) -> Option<usize> {
            let fact = self.plan.model().output_fact(self.output_index).ok()?;
            fact.shape.iter().last()?.to_i64().ok()?.try_into().ok()
        }
    }

    impl Graph for TractGraph {
        fn run(&self, batch: usize, sequence: usize, inputs: Vec<Input<'_>>) -> Result<Output> {
            ensure!(
                (1..=MAX_BATCH_SIZE).contains(&batch) && (1..=self.max_sequence).contains(&sequence),
                "a batch of {batch} inputs of {sequence} tokens: this graph takes 1 to {MAX_BATCH_SIZE} inputs of 1 to {} tokens",
                self.max_sequence
            );
            let mut inputs: Vec<Option<Input>> = inputs.into_iter().map(Some).collect();
            let mut ordered = TVec::new();
            for name in &self.inputs {
                let Some(input) = inputs
                    .iter_mut()
                    .find(|i| i.as_ref().is_some_and(|i| i.name == name))
                    .and_then(Option::take)
                else {
                    bail!("the graph needs an input [{name}]");
                };
                let array = tract_ndarray::Array2::from_shape_vec((batch, sequence), input.values)?;
                ordered.push(array.into_tvalue());
            }
            let mut outputs = self.plan.run(ordered)?;
            let output = outputs.remove(self.output_index).into_tensor();
            let shape = output.shape().to_vec();
            let array = output.into_plain_array::<f32>()?;
            // Without a copy when the output owns its buffer in row-major order.
            let values = if array.is_standard_layout() {
                match array.into_raw_vec_and_offset() {
                    (values, None | Some(0)) => values,
                    (values, Some(offset)) => values[offset..][..shape.iter().product()].to_vec(),
                }
            } else {
                array.iter().copied().collect()
            };
            Ok(Output { shape, values })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_index_all_but_the_last_dimension() {
        let out = Output {
            shape: vec![2, 3, 2],
            values: (0..12).map(|v| v as f32).collect(),
        };
        assert_eq!(out.row(&[0, 0]), &[0.0, 1.0]);
        assert_eq!(out.row(&[1, 2]), &[10.0, 11.0]);
        assert!(out.expect_shape(&[Some(2), None, None], "x").is_ok());
        let err = out.expect_shape(&[Some(3), None, None], "[3, s, h]");
        assert_eq!(
            err.unwrap_err().to_string(),
            "expected [3, s, h], got a tensor of shape [2, 3, 2]"
        );
        let two_d = Output {
            shape: vec![2, 1],
            values: vec![0.5, 1.5],
        };
        assert_eq!(two_d.row(&[1]), &[1.5]);
    }
}
