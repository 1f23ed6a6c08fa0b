//! The ML core shared by every task component and the browser build:
//! tokenization, tract-onnx inference on length-grouped batches, and the
//! pooling each task needs. Plain Rust, tested natively.

pub mod component;
pub mod config;
pub mod embedding;
pub mod encoder;
pub mod generation;
pub mod kernels;
pub mod rerank;
pub mod sparse;

pub use component::ModelSlot;
pub use config::{ModelConfig, Pooling};
pub use embedding::{cosine, Embedding, TextEmbedder};
pub use encoder::Encoder;
pub use generation::{
    FinishReason, Generation, GenerationOptions, Generator, GeneratorConfig, Usage,
};
pub use rerank::{LongDocumentStrategy, Options as RerankOptions, Reranker, RerankerKind};
pub use sparse::{SparseEmbedder, SparseEmbedding};

/// Elasticsearch's `input_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    Search,
    Ingest,
    Classification,
    Clustering,
}
