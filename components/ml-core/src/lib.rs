//! The ML core shared by every task component and the browser build:
//! tokenization, length-grouped batches, the pooling each task needs, and
//! generation. Plain Rust, tested natively.
//!
//! Where an encoder's graph runs is a feature: `tract` runs it in process
//! (natively, in the browser, or inside a sandboxed component), `wasi-nn`
//! hands it to the host through `wasi:nn` (see [`graph`]); a decoder's graph
//! moves the same way (see [`decoder`]).

#[cfg(feature = "tract")]
pub mod blocks;
pub mod component;
pub mod config;
pub mod decoder;
pub mod embedding;
pub mod encoder;
#[cfg(feature = "tract")]
pub mod gelu;
pub mod generation;
pub mod graph;
pub mod kernels;
pub mod rerank;
pub mod sparse;
#[cfg(feature = "wasi-nn")]
pub mod wasi_nn;

#[cfg(not(any(feature = "tract", feature = "wasi-nn")))]
compile_error!("ml-core runs graphs with feature `tract`, `wasi-nn`, or both");

pub use component::ModelSlot;
pub use config::{ModelConfig, Pooling};
pub use embedding::{cosine, Embedding, TextEmbedder};
pub use encoder::Encoder;
pub use generation::{
    FinishReason, Generation, GenerationOptions, Generator, GeneratorConfig, Usage,
};
#[cfg(feature = "tract")]
pub use graph::TractGraph;
pub use graph::{Graph, Input, Output};
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
