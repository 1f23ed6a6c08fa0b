//! A transformer encoder: tokenizer plus a [`Graph`], run on length-grouped
//! batches.

use crate::config::{ModelConfig, Pooling};
use crate::graph::{Graph, Input, Output};
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;
use tokenizers::{Encoding, Tokenizer, TruncationParams};

/// Padded tokens per batch at most. Bounds the activation memory of one run
/// (MiniLM: 8192 tokens × 384 floats per layer, about 12 MB), and what a host
/// running the graph accepts in one call.
pub const MAX_BATCH_TOKENS: usize = 8192;
/// Inputs per batch at most.
pub const MAX_BATCH_SIZE: usize = 32;
/// Output values one batch may produce at most (256 MiB of f32). SPLADE's
/// `[batch, sequence, vocab]` logits reach it first: about 2200 tokens of
/// a 30522-token vocabulary.
pub const MAX_BATCH_OUTPUT_VALUES: usize = 64 << 20;
/// Real tokens a batch keeps at least, of its padded tokens. Padding is work
/// thrown away (on the benchmark corpus, batches of 32 were 0.59 real); a
/// batch is cut rather than padded below this.
pub const MIN_BATCH_FILL: f32 = 0.8;

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
    pub output: Output,
    /// `[batch][sequence]`: 1 for a real token, 0 for padding.
    pub mask: Vec<Vec<u32>>,
}

pub struct Encoder {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    graph: Box<dyn Graph>,
    /// The graph's inputs (`model.json`'s `inputs`) and what feeds each.
    feeds: Vec<(String, Feed)>,
}

#[derive(Clone, Copy)]
enum Feed {
    InputIds,
    AttentionMask,
    TokenTypeIds,
}

impl Encoder {
    /// Loads `model.json` and `tokenizer.json` from `dir`, and the graph from
    /// where this build runs it: through `wasi:nn` by model id (feature
    /// `wasi-nn`), or `model.onnx` in tract.
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        let config = ModelConfig::from_json(&read("model.json")?)?;
        let tokenizer = read("tokenizer.json")?;
        #[cfg(feature = "wasi-nn")]
        let graph = Box::new(crate::wasi_nn::WasiNnGraph::load(
            &config.model_id,
            &config.output,
        )?);
        #[cfg(all(feature = "tract", not(feature = "wasi-nn")))]
        let graph = Box::new(crate::graph::TractGraph::from_onnx(
            &read("model.onnx")?,
            &config,
        )?);
        Self::new(config, &tokenizer, graph)
    }

    /// Builds the encoder from file contents (the browser has bytes, not paths).
    #[cfg(feature = "tract")]
    pub fn from_bytes(model_json: &[u8], tokenizer_json: &[u8], onnx: &[u8]) -> Result<Self> {
        let config = ModelConfig::from_json(model_json)?;
        let graph = crate::graph::TractGraph::from_onnx(onnx, &config)?;
        Self::new(config, tokenizer_json, Box::new(graph))
    }

    /// The encoder over `graph`, fed as `config.inputs` names.
    pub fn new(config: ModelConfig, tokenizer_json: &[u8], graph: Box<dyn Graph>) -> Result<Self> {
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
        let feeds = config
            .inputs
            .iter()
            .map(|name| {
                let feed = match name.as_str() {
                    "input_ids" => Feed::InputIds,
                    "attention_mask" => Feed::AttentionMask,
                    "token_type_ids" => Feed::TokenTypeIds,
                    other => bail!("model.onnx has an input [{other}] this encoder cannot feed"),
                };
                Ok((name.clone(), feed))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            config,
            tokenizer,
            graph,
            feeds,
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
        let lengths: Vec<usize> = tokens.iter().map(|t| t.encoding.len()).collect();
        for rows in length_batches(&lengths, MAX_BATCH_SIZE, self.max_batch_tokens()) {
            let encodings: Vec<&Encoding> = rows.iter().map(|&r| &tokens[r].encoding).collect();
            let len = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
            let (inputs, mask) = self.inputs(&encodings, len);
            let output = self.graph.run(encodings.len(), len, inputs)?;
            each(BatchOutput { rows, output, mask })?;
        }
        Ok(())
    }

    /// Padded tokens per batch, so that the output stays within
    /// [`MAX_BATCH_OUTPUT_VALUES`].
    pub fn max_batch_tokens(&self) -> usize {
        max_batch_tokens(match self.config.pooling {
            Pooling::Splade => self.tokenizer.get_vocab_size(true),
            _ => self.config.dimensions,
        })
    }

    fn inputs(&self, encodings: &[&Encoding], len: usize) -> (Vec<Input<'_>>, Vec<Vec<u32>>) {
        let padded = |field: fn(&Encoding) -> &[u32]| {
            let mut values = vec![0i64; encodings.len() * len];
            for (row, e) in encodings.iter().enumerate() {
                for (col, &v) in field(e).iter().enumerate() {
                    values[row * len + col] = v as i64;
                }
            }
            values
        };
        let inputs = self
            .feeds
            .iter()
            .map(|(name, feed)| Input {
                name,
                values: match feed {
                    Feed::InputIds => padded(Encoding::get_ids),
                    Feed::AttentionMask => padded(Encoding::get_attention_mask),
                    Feed::TokenTypeIds => padded(Encoding::get_type_ids),
                },
            })
            .collect();
        let mask = encodings
            .iter()
            .map(|e| {
                let mut m = e.get_attention_mask().to_vec();
                m.resize(len, 0);
                m
            })
            .collect();
        (inputs, mask)
    }
}

/// Padded tokens one batch may hold when each token's output is `width`
/// values wide: [`MAX_BATCH_TOKENS`], fewer for wide outputs. A host that
/// runs the graph accepts the same.
pub fn max_batch_tokens(width: usize) -> usize {
    MAX_BATCH_TOKENS.min(MAX_BATCH_OUTPUT_VALUES / width.max(1))
}

/// Groups inputs by token count (`lengths`): sorts them, then cuts batches
/// of at most `max_size` inputs and `max_tokens` padded tokens, and cuts
/// early where padding would pass [`MIN_BATCH_FILL`]. Each batch lists
/// positions into `lengths`.
pub fn length_batches(lengths: &[usize], max_size: usize, max_tokens: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut real = 0;
    for i in order {
        // Sorted ascending, so this input is the longest of the batch so far.
        let len = lengths[i].max(1);
        let padded = (current.len() + 1) * len;
        if !current.is_empty()
            && (current.len() == max_size
                || padded > max_tokens
                || ((real + len) as f32) < MIN_BATCH_FILL * padded as f32)
        {
            batches.push(std::mem::take(&mut current));
            real = 0;
        }
        current.push(i);
        real += len;
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_group_similar_lengths_within_every_bound() {
        let lengths = [10, 40, 11, 12, 41, 9, 100, 42];
        let batches = length_batches(&lengths, 32, 8192);
        let by_length: Vec<Vec<usize>> = batches
            .iter()
            .map(|b| b.iter().map(|&i| lengths[i]).collect())
            .collect();
        assert_eq!(
            by_length,
            vec![vec![9, 10, 11, 12], vec![40, 41, 42], vec![100]],
            "cut where padding would pass a fifth of the batch"
        );
        for batch in &batches {
            let longest = batch.iter().map(|&i| lengths[i]).max().unwrap();
            let real: usize = batch.iter().map(|&i| lengths[i]).sum();
            assert!(real as f32 >= MIN_BATCH_FILL * (longest * batch.len()) as f32);
        }
        let same = [16; 10];
        assert_eq!(length_batches(&same, 4, 8192).len(), 3, "at most 4 a batch");
        assert_eq!(length_batches(&same, 32, 48).len(), 4, "at most 48 tokens");
        assert!(length_batches(&[], 32, 8192).is_empty());
    }
}
