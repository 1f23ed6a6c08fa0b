//! A transformer encoder: tokenizer plus an optimised tract plan, run on
//! length-grouped batches.

use crate::config::ModelConfig;
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;
use tokenizers::{Encoding, Tokenizer, TruncationParams};
use tract_onnx::prelude::*;

/// Padded tokens per batch at most. Bounds the activation memory of one run
/// (MiniLM: 8192 tokens × 384 floats per layer, about 12 MB).
const MAX_BATCH_TOKENS: usize = 8192;
/// Inputs per batch at most.
const MAX_BATCH_SIZE: usize = 32;

type Plan = Arc<TypedRunnableModel>;

/// One tokenized input.
pub struct Tokens {
    pub encoding: Encoding,
    /// The text did not fit in the model's maximum sequence length.
    pub truncated: bool,
}

/// The model output for one batch, with the attention mask that produced it.
pub struct BatchOutput {
    /// Positions into the caller's input list, one per batch row.
    pub rows: Vec<usize>,
    /// `[batch, sequence, ...]`.
    pub output: Tensor,
    /// `[batch][sequence]`: 1 for a real token, 0 for padding.
    pub mask: Vec<Vec<u32>>,
}

pub struct Encoder {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    plan: Plan,
    /// For each graph input, which tokenizer field feeds it.
    feeds: Vec<Feed>,
    output_index: usize,
}

#[derive(Clone, Copy)]
enum Feed {
    InputIds,
    AttentionMask,
    TokenTypeIds,
}

impl Encoder {
    /// Loads `model.json`, `tokenizer.json` and `model.onnx` from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        Self::from_bytes(
            &read("model.json")?,
            &read("tokenizer.json")?,
            &read("model.onnx")?,
        )
    }

    /// Builds the encoder from file contents (the browser has bytes, not paths).
    pub fn from_bytes(model_json: &[u8], tokenizer_json: &[u8], onnx: &[u8]) -> Result<Self> {
        let config = ModelConfig::from_json(model_json)?;
        let mut tokenizer =
            Tokenizer::from_bytes(tokenizer_json).map_err(|e| anyhow!("tokenizer.json: {e}"))?;
        // The shipped tokenizers pad every input to a fixed length; padding is
        // done per batch instead, to the longest input of that batch.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.max_sequence_length,
                ..Default::default()
            }))
            .map_err(|e| anyhow!("tokenizer truncation: {e}"))?;

        let mut model = tract_onnx::onnx()
            .model_for_read(&mut &*onnx)
            .context("model.onnx is not a valid ONNX graph")?;
        // The symbols must be the ones the file already names, or tract
        // cannot unify them with the graph's own shapes.
        let batch = model.symbols.sym("batch");
        let sequence = model.symbols.sym("sequence");
        let mut feeds = Vec::new();
        for (ix, outlet) in model.input_outlets()?.to_vec().iter().enumerate() {
            let name = model.node(outlet.node).name.clone();
            feeds.push(match name.as_str() {
                "input_ids" => Feed::InputIds,
                "attention_mask" => Feed::AttentionMask,
                "token_type_ids" => Feed::TokenTypeIds,
                other => bail!("model.onnx has an input [{other}] this encoder cannot feed"),
            });
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
                model.node(o.node).name == config.output
                    || model.outlet_label(*o) == Some(&config.output)
            })
            .unwrap_or(0);
        let plan = model
            .into_optimized()
            .context("optimising model.onnx")?
            .into_runnable()?;
        Ok(Self {
            config,
            tokenizer,
            plan,
            feeds,
            output_index,
        })
    }

    /// Tokenizes one text (or a text pair), truncating to the model's maximum.
    pub fn tokenize<'s, E>(&self, input: E) -> Result<Tokens>
    where
        E: Into<tokenizers::EncodeInput<'s>>,
    {
        let encoding = self
            .tokenizer
            .encode_fast(input, true)
            .map_err(|e| anyhow!("tokenizing: {e}"))?;
        let truncated = !encoding.get_overflowing().is_empty();
        Ok(Tokens {
            encoding,
            truncated,
        })
    }

    /// Runs the model over every input, grouped by length so that little work
    /// goes to padding. Yields one [`BatchOutput`] per batch.
    pub fn run(
        &self,
        tokens: &[Tokens],
        mut each: impl FnMut(BatchOutput) -> Result<()>,
    ) -> Result<()> {
        for rows in length_batches(tokens, MAX_BATCH_SIZE, MAX_BATCH_TOKENS) {
            let encodings: Vec<&Encoding> = rows.iter().map(|&r| &tokens[r].encoding).collect();
            let (inputs, mask) = self.inputs(&encodings)?;
            let mut outputs = self.plan.run(inputs)?;
            let output = outputs.remove(self.output_index).into_tensor();
            each(BatchOutput { rows, output, mask })?;
        }
        Ok(())
    }

    fn inputs(&self, encodings: &[&Encoding]) -> Result<(TVec<TValue>, Vec<Vec<u32>>)> {
        let len = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let padded = |field: fn(&Encoding) -> &[u32]| {
            let mut data = vec![0i64; encodings.len() * len];
            for (row, e) in encodings.iter().enumerate() {
                for (col, &v) in field(e).iter().enumerate() {
                    data[row * len + col] = v as i64;
                }
            }
            tract_ndarray::Array2::from_shape_vec((encodings.len(), len), data)
                .map(|a| a.into_tvalue())
        };
        let mut inputs = TVec::new();
        for feed in &self.feeds {
            inputs.push(match feed {
                Feed::InputIds => padded(Encoding::get_ids)?,
                Feed::AttentionMask => padded(Encoding::get_attention_mask)?,
                Feed::TokenTypeIds => padded(Encoding::get_type_ids)?,
            });
        }
        let mask = encodings
            .iter()
            .map(|e| {
                let mut m = e.get_attention_mask().to_vec();
                m.resize(len, 0);
                m
            })
            .collect();
        Ok((inputs, mask))
    }
}

/// Groups inputs of similar length: sorts by token count, then cuts batches
/// of at most `max_size` inputs and `max_tokens` padded tokens. Each batch
/// lists positions into `tokens`.
pub fn length_batches(tokens: &[Tokens], max_size: usize, max_tokens: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    order.sort_by_key(|&i| tokens[i].encoding.len());
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // Sorted ascending, so this input is the longest of the batch so far.
        let len = tokens[i].encoding.len().max(1);
        if !current.is_empty()
            && (current.len() == max_size || (current.len() + 1) * len > max_tokens)
        {
            batches.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}
