//! Dense text embeddings: encoder states pooled into one vector per input.

use crate::config::{Head, Pooling};
use crate::encoder::{Encoder, Tokens};
use crate::InputType;
use anyhow::{bail, Result};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub values: Vec<f32>,
    /// The input was cut to the model's maximum sequence length.
    pub truncated: bool,
}

pub struct TextEmbedder {
    pub encoder: Encoder,
}

impl TextEmbedder {
    pub fn load(dir: &Path) -> Result<Self> {
        Self::new(Encoder::load(dir)?)
    }

    /// Builds the embedder from file contents (the browser has bytes, not paths).
    #[cfg(feature = "tract")]
    pub fn from_bytes(model_json: &[u8], tokenizer_json: &[u8], onnx: &[u8]) -> Result<Self> {
        Self::new(Encoder::from_bytes(model_json, tokenizer_json, onnx)?)
    }

    pub fn new(encoder: Encoder) -> Result<Self> {
        if encoder.config.head == Some(Head::Classification) {
            bail!(
                "model [{}] is a classifier, not a dense embedding",
                encoder.config.model_id
            );
        }
        if !matches!(encoder.config.pooling, Pooling::Mean | Pooling::Cls) {
            bail!(
                "model [{}] pools with {:?}, not a dense embedding",
                encoder.config.model_id,
                encoder.config.pooling
            );
        }
        Ok(Self { encoder })
    }

    /// One embedding per input, in input order.
    pub fn embed(
        &self,
        inputs: &[String],
        input_type: Option<InputType>,
    ) -> Result<Vec<Embedding>> {
        let tokens = inputs
            .iter()
            .map(|text| self.tokenize(text, input_type))
            .collect::<Result<Vec<Tokens>>>()?;
        self.embed_tokens(&tokens)
    }

    /// Tokenizes one input with the prefix its `input_type` calls for.
    pub fn tokenize(&self, text: &str, input_type: Option<InputType>) -> Result<Tokens> {
        let prefix = match input_type {
            Some(InputType::Search) => self.encoder.config.query_prefix.as_str(),
            Some(InputType::Ingest) => self.encoder.config.passage_prefix.as_str(),
            _ => "",
        };
        self.encoder.tokenize(format!("{prefix}{text}"))
    }

    /// One embedding per already tokenized input (special tokens included), in
    /// input order.
    pub fn embed_tokens(&self, tokens: &[Tokens]) -> Result<Vec<Embedding>> {
        let config = &self.encoder.config;
        let mut out: Vec<Option<Embedding>> = vec![None; tokens.len()];
        self.encoder.run(tokens, |batch| {
            let states = &batch.output;
            states.expect_shape(
                &[Some(batch.rows.len()), None, None],
                "[batch, sequence, hidden] states",
            )?;
            for (row, &input) in batch.rows.iter().enumerate() {
                let mask = &batch.mask[row];
                let mut values = match config.pooling {
                    Pooling::Cls => states.row(&[row, 0]).to_vec(),
                    _ => {
                        let mut sum = vec![0f32; states.shape[2]];
                        let mut count = 0f32;
                        for (t, &m) in mask.iter().enumerate() {
                            if m == 0 {
                                continue;
                            }
                            count += 1.0;
                            for (v, s) in sum.iter_mut().zip(states.row(&[row, t])) {
                                *v += s;
                            }
                        }
                        sum.iter_mut().for_each(|v| *v /= count.max(1.0));
                        sum
                    }
                };
                if config.normalize {
                    l2_normalize(&mut values);
                }
                out[input] = Some(Embedding {
                    values,
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

pub fn l2_normalize(values: &mut [f32]) {
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        values.iter_mut().for_each(|v| *v /= norm);
    }
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(f32::MIN_POSITIVE)
}
