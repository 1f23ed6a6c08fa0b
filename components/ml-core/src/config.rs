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

#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    pub model_id: String,
    /// The Elasticsearch task type the model serves.
    pub task: String,
    #[serde(default)]
    pub dimensions: usize,
    pub max_sequence_length: usize,
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
