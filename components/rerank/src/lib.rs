//! The rerank task component: a thin WIT adapter over `ml_core::Reranker`
//! (a cross-encoder or a bi-encoder, as the model's metadata says).

wit_bindgen::generate!({
    path: "../../wit",
    world: "rerank-task",
    // The task interface and its types live in packages under wit/deps.
    generate_all,
});

use edge::inference_types::types::{Error, KernelReport, ModelInfo};
use exports::edge::rerank::rerank::{Guest, LongDocumentStrategy, RerankOptions};

/// The instance's model: the host calls `load` once after instantiating.
static MODEL: ml_core::ModelSlot<ml_core::Reranker> = ml_core::ModelSlot::new();

struct Component;

ml_core::wit_records!();

impl Guest for Component {
    fn load(dir: String) -> Result<ModelInfo, Error> {
        let model = MODEL
            .load(&dir, ml_core::Reranker::load)
            .map_err(Error::Model)?;
        let config = model.config();
        Ok(model_info(
            &config.model_id,
            &config.task,
            config.max_sequence_length,
            0,
        ))
    }

    fn score(
        query: String,
        documents: Vec<String>,
        options: RerankOptions,
    ) -> Result<Vec<f32>, Error> {
        let model = MODEL.get().map_err(Error::Model)?;
        let options = ml_core::RerankOptions {
            strategy: match options.long_document_strategy {
                LongDocumentStrategy::Truncate => ml_core::LongDocumentStrategy::Truncate,
                LongDocumentStrategy::Chunk => ml_core::LongDocumentStrategy::Chunk,
            },
            max_chunks_per_doc: options.max_chunks_per_doc.map(|n| n as usize),
        };
        model
            .score(&query, &documents, &options)
            .map_err(|e| Error::Inference(format!("{e:#}")))
    }

    fn kernels() -> KernelReport {
        kernel_report()
    }
}

export!(Component);
