//! Where a decoder's graph runs, behind one small trait.
//!
//! Generation (tokenization, sampling, stop sequences, streaming) is the
//! same wherever the graph runs; what moves is one step: run some token ids
//! after everything the sequence has seen, and give back the logits of the
//! last position. The KV cache belongs to that step, so it stays beside the
//! compute: [`DecoderRun`] holds it, and nothing that grows with the context
//! crosses between the caller and the graph.
//!
//! - [`TractDecoder`] (feature `tract`): tract-onnx in process, natively or
//!   inside a sandboxed component; the host also runs it as a `wasi:nn`
//!   backend.
//! - `WasiNnDecoder` (feature `wasi-nn`, in [`crate::wasi_nn`]): the host
//!   runs the graph, one `wasi:nn` execution context per sequence.
//! - The host's ONNX Runtime backend.

use anyhow::Result;

/// A decoder graph, loaded once and shared by every sequence.
pub trait Decoder: Send + Sync {
    /// A new sequence, with an empty KV cache.
    fn start(&self) -> Result<Box<dyn DecoderRun>>;
}

/// One sequence in progress: the KV cache of everything it has run.
pub trait DecoderRun: Send {
    /// Runs `ids` after the sequence so far and returns the logits of the
    /// last position (`vocab_size` values).
    fn run(&mut self, ids: &[u32]) -> Result<Vec<f32>>;
}

#[cfg(feature = "tract")]
pub use self::tract::TractDecoder;

#[cfg(feature = "tract")]
mod tract {
    use super::{Decoder, DecoderRun};
    use crate::blocks::{self, Blocks};
    use crate::generation::GeneratorConfig;
    use anyhow::{bail, Context, Result};
    use std::sync::Arc;
    use tract_onnx::prelude::*;

    /// The graph as an optimised tract plan.
    pub struct TractDecoder {
        plan: Arc<TypedRunnableModel>,
        /// `[1, num_kv_heads, 0, head_dim]`: the cache of a new sequence.
        empty: [usize; 4],
        layers: usize,
    }

    impl TractDecoder {
        /// Reads the ONNX graph and optimises it for `config`'s inputs, its
        /// block-quantised products computed as `blocks` says.
        pub fn load(
            onnx: &mut dyn std::io::Read,
            config: &GeneratorConfig,
            blocks: Blocks,
        ) -> Result<Self> {
            let mut model = graph(onnx, blocks)?;
            let (inputs, outputs) = config.graph_names();
            let found: Vec<String> = model
                .input_outlets()?
                .iter()
                .map(|o| model.node(o.node).name.clone())
                .collect();
            if found != inputs {
                bail!("model.onnx inputs {found:?} differ from model.json's {inputs:?}");
            }
            let found: Vec<String> = model
                .output_outlets()?
                .iter()
                .map(|o| model.node(o.node).name.clone())
                .collect();
            if found != outputs {
                bail!("model.onnx outputs {found:?} differ from model.json's {outputs:?}");
            }
            // The symbols must be the ones the file already names, or tract
            // cannot unify them with the graph's own shapes.
            let sequence = model.symbols.sym("sequence");
            let past = model.symbols.sym("past_sequence");
            model.set_input_fact(
                0,
                InferenceFact::dt_shape(i64::datum_type(), tvec!(1.to_dim(), sequence.to_dim())),
            )?;
            let kv_shape = tvec!(
                1.to_dim(),
                config.num_kv_heads.to_dim(),
                past.to_dim(),
                config.head_dim.to_dim()
            );
            for ix in 1..inputs.len() {
                model.set_input_fact(
                    ix,
                    InferenceFact::dt_shape(f32::datum_type(), kv_shape.clone()),
                )?;
            }
            let plan = model
                .into_optimized()
                .context("optimising model.onnx")?
                .into_runnable()?;
            Ok(Self {
                plan,
                empty: [1, config.num_kv_heads, 0, config.head_dim],
                layers: config.num_layers,
            })
        }
    }

    impl Decoder for TractDecoder {
        fn start(&self) -> Result<Box<dyn DecoderRun>> {
            let past = (0..2 * self.layers)
                .map(|_| Tensor::zero::<f32>(&self.empty).map(|t| t.into_tvalue()))
                .collect::<TractResult<_>>()?;
            Ok(Box::new(Run {
                plan: self.plan.clone(),
                past,
            }))
        }
    }

    struct Run {
        plan: Arc<TypedRunnableModel>,
        /// `present` of the last run, fed back as `past_key_values`.
        past: TVec<TValue>,
    }

    impl DecoderRun for Run {
        fn run(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
            let ids: Vec<i64> = ids.iter().map(|&id| id as i64).collect();
            let input = tract_ndarray::Array2::from_shape_vec((1, ids.len()), ids)?;
            let mut inputs = tvec![input.into_tvalue()];
            inputs.extend(self.past.drain(..));
            let mut outputs = self.plan.run(inputs)?;
            self.past = outputs.drain(1..).collect();
            let logits = outputs.remove(0);
            let logits = logits.to_plain_array_view::<f32>()?;
            Ok(logits.iter().copied().collect())
        }
    }

    /// The ONNX graph read from `onnx`, ready to compute its blocks as
    /// `blocks` says.
    fn graph(onnx: &mut dyn std::io::Read, blocks: Blocks) -> Result<InferenceModel> {
        let mut framework = tract_onnx::onnx();
        if blocks == Blocks::Int16 {
            blocks::op::register(&mut framework);
        }
        let mut proto = framework
            .proto_model_for_read(onnx)
            .context("model.onnx is not a valid ONNX graph")?;
        if blocks == Blocks::Expand {
            blocks::expand(&mut proto).context("expanding model.onnx's blocks to fp32")?;
        }
        framework
            .model_for_proto_model(&proto)
            .context("model.onnx is not a graph tract can run")
    }
}
