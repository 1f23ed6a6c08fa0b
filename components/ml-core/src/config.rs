//! `model.json`: what the project's model tooling says about a converted model.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::path::Path;

/// How token states become one vector per input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Attention-masked mean of the last hidden states.
    Mean,
    /// The `[CLS]` token's state.
    Cls,
    /// SPLADE: max over tokens of `log(1 + relu(logits))`.
    Splade,
}

/// What the graph computes on top of the encoder (models/bert_onnx.py's heads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// `last_hidden_state [batch, sequence, hidden]`.
    Encoder,
    /// `logits [batch, sequence, vocab]`.
    Mlm,
    /// `logits [batch, num_labels]` from the pooled `[CLS]` token.
    Classification,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    pub model_id: String,
    /// The Elasticsearch task type the model serves.
    pub task: String,
    #[serde(default)]
    pub dimensions: usize,
    pub max_sequence_length: usize,
    /// Absent for models converted without one (e.g. ONNX files used as is).
    #[serde(default)]
    pub head: Option<Head>,
    /// Outputs of a classification head.
    #[serde(default)]
    pub num_labels: Option<usize>,
    #[serde(default = "default_pooling")]
    pub pooling: Pooling,
    #[serde(default)]
    pub normalize: bool,
    /// Graph input names, in the order the tooling wrote them.
    pub inputs: Vec<String>,
    /// The graph output the pooling reads.
    pub output: String,
    /// E5-style prefixes, applied by `input_type` (`search` → query, `ingest` → passage).
    #[serde(default)]
    pub query_prefix: String,
    #[serde(default)]
    pub passage_prefix: String,
}

fn default_pooling() -> Pooling {
    Pooling::Mean
}

impl ModelConfig {
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).context("model.json is not a valid model description")
    }

    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("model.json");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json(&bytes)
    }
}
