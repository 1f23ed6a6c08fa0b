//! SPLADE sparse embeddings: vocabulary-wide token weights, as ELSER returns.

use crate::config::Pooling;
use crate::encoder::{Encoder, Tokens};
use anyhow::{bail, Result};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct SparseEmbedding {
    /// Tokens with a non-zero weight, heaviest first.
    pub tokens: Vec<(String, f32)>,
    pub truncated: bool,
}

pub struct SparseEmbedder {
    pub encoder: Encoder,
}

impl SparseEmbedder {
    pub fn load(dir: &Path) -> Result<Self> {
        Self::new(Encoder::load(dir)?)
    }

    /// Builds the embedder from file contents (the browser has bytes, not paths).
    #[cfg(feature = "tract")]
    pub fn from_bytes(model_json: &[u8], tokenizer_json: &[u8], onnx: &[u8]) -> Result<Self> {
        Self::new(Encoder::from_bytes(model_json, tokenizer_json, onnx)?)
    }

    pub fn new(encoder: Encoder) -> Result<Self> {
        if encoder.config.pooling != Pooling::Splade {
            bail!("model [{}] is not a SPLADE model", encoder.config.model_id);
        }
        Ok(Self { encoder })
    }

    /// One sparse embedding per input, in input order.
    pub fn embed(&self, inputs: &[String]) -> Result<Vec<SparseEmbedding>> {
        let tokens = inputs
            .iter()
            .map(|text| self.encoder.tokenize(text.as_str()))
            .collect::<Result<Vec<Tokens>>>()?;
        let mut out: Vec<Option<SparseEmbedding>> = vec![None; inputs.len()];
        self.encoder.run(&tokens, |batch| {
            let logits = &batch.output;
            logits.expect_shape(
                &[Some(batch.rows.len()), None, None],
                "[batch, sequence, vocab] logits",
            )?;
            let vocab = logits.shape[2];
            for (row, &input) in batch.rows.iter().enumerate() {
                // max over real tokens of log(1 + relu(logit)); relu makes 0 the floor.
                let mut weights = vec![0f32; vocab];
                for (t, &m) in batch.mask[row].iter().enumerate() {
                    if m == 0 {
                        continue;
                    }
                    for (w, &l) in weights.iter_mut().zip(logits.row(&[row, t])) {
                        if l > 0.0 {
                            *w = w.max(l.ln_1p());
                        }
                    }
                }
                let mut entries: Vec<(String, f32)> = weights
                    .iter()
                    .enumerate()
                    .filter(|(_, &w)| w > 0.0)
                    .filter_map(|(id, &w)| {
                        self.encoder
                            .tokenizer
                            .id_to_token(id as u32)
                            .map(|t| (t, w))
                    })
                    .collect();
                entries.sort_by(|a, b| b.1.total_cmp(&a.1));
                out[input] = Some(SparseEmbedding {
                    tokens: entries,
                    truncated: tokens[input].truncated,
                });
            }
            Ok(())
        })?;
        Ok(out
            .into_iter()
            .map(|e| e.expect("every input is in one batch"))
            .collect())
    }
}

/// Dot product of two sparse embeddings, as Elasticsearch's `sparse_vector` query scores.
pub fn dot(a: &SparseEmbedding, b: &SparseEmbedding) -> f32 {
    let b: std::collections::HashMap<&str, f32> =
        b.tokens.iter().map(|(t, w)| (t.as_str(), *w)).collect();
    a.tokens
        .iter()
        .filter_map(|(t, w)| b.get(t.as_str()).map(|v| v * w))
        .sum()
}
