//! `cargo xtask bench`: every task type served through HTTP against the same
//! model run natively in-process, measured in the same run, ratios printed;
//! and the Spin app against the native host.
//! With no subcommand, all of them in turn.

mod completion;
mod rerank;
mod server;
mod sparse_embedding;
mod text_embedding;
mod workload;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "The HTTP server against the native ML core, per task type")]
struct Cli {
    #[command(subcommand)]
    bench: Option<Bench>,
}

#[derive(Subcommand)]
enum Bench {
    /// all-minilm-l6-v2: server vs native core vs ONNX Runtime, and start-up.
    TextEmbedding(text_embedding::EmbeddingArgs),
    /// SPLADE-tiny: server vs native core.
    SparseEmbedding(workload::Options),
    /// Bi-encoder and cross-encoder reranking: server vs native core.
    Rerank(workload::Options),
    /// SmolLM2 streaming: time to first token and tokens/s, server vs native
    /// core, anchored by llama.cpp on the same GGUF (with `--llama-python`).
    Completion(completion::CompletionArgs),
    /// text_embedding through the Spin app (test host, an instance per
    /// request, its snapshot's model: multilingual-e5-small) vs the native
    /// host vs the native core.
    Spin(workload::Options),
}

fn main() -> Result<()> {
    match Cli::parse().bench {
        Some(Bench::TextEmbedding(args)) => text_embedding::run(&args),
        Some(Bench::SparseEmbedding(options)) => sparse_embedding::run(&options),
        Some(Bench::Rerank(options)) => rerank::run(&options),
        Some(Bench::Completion(args)) => completion::run(&args),
        Some(Bench::Spin(options)) => text_embedding::run_spin(&options),
        None => {
            let args = text_embedding::EmbeddingArgs::parse_from(["text-embedding"]);
            text_embedding::run(&args)?;
            sparse_embedding::run(&args.options)?;
            rerank::run(&args.options)?;
            text_embedding::run_spin(&args.options)?;
            completion::run(&completion::CompletionArgs::parse_from(["completion"]))
        }
    }
}
