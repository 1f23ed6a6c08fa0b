//! The sparse-embedding task component: a thin WIT adapter over `ml_core::SparseEmbedder`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "sparse-embedding-task",
    // The task interface and its types live in packages under wit/deps.
    generate_all,
});

use edge::inference_types::types::{Error, InputType, KernelReport, ModelInfo};
use exports::edge::sparse_embedding::sparse_embedding::{Guest, SparseEmbedding};

/// The instance's model: the host calls `load` once after instantiating.
static MODEL: ml_core::ModelSlot<ml_core::SparseEmbedder> = ml_core::ModelSlot::new();

struct Component;

ml_core::wit_records!();

impl Guest for Component {
    fn load(dir: String) -> Result<ModelInfo, Error> {
        let model = MODEL
            .load(&dir, ml_core::SparseEmbedder::load)
            .map_err(Error::Model)?;
        let config = &model.encoder.config;
        Ok(model_info(
            &config.model_id,
            &config.task,
            config.max_sequence_length,
            0,
        ))
    }

    fn embed(
        inputs: Vec<String>,
        _input_type: Option<InputType>,
    ) -> Result<Vec<SparseEmbedding>, Error> {
        let model = MODEL.get().map_err(Error::Model)?;
        let embeddings = model
            .embed(&inputs)
            .map_err(|e| Error::Inference(format!("{e:#}")))?;
        Ok(embeddings
            .into_iter()
            .map(|e| SparseEmbedding {
                tokens: e.tokens,
                truncated: e.truncated,
            })
            .collect())
    }

    fn kernels() -> KernelReport {
        kernel_report()
    }
}

export!(Component);
