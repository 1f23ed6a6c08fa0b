//! The text-embedding task component: a thin WIT adapter over `ml_core::TextEmbedder`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "text-embedding-task",
    // The task interface and its types live in packages under wit/deps.
    generate_all,
});

use edge::inference_types::types::{Error, InputType, KernelReport, ModelInfo};
use exports::edge::text_embedding::text_embedding::{Embedding, Guest};

/// One model per instance: the host instantiates a component per endpoint
/// allocation and calls `load` once.
static MODEL: ml_core::ModelSlot<ml_core::TextEmbedder> = ml_core::ModelSlot::new();

struct Component;

ml_core::wit_records!();

impl Guest for Component {
    fn load(dir: String) -> Result<ModelInfo, Error> {
        let model = MODEL
            .load(&dir, ml_core::TextEmbedder::load)
            .map_err(Error::Model)?;
        let config = &model.encoder.config;
        Ok(model_info(
            &config.model_id,
            &config.task,
            config.max_sequence_length,
            config.dimensions,
        ))
    }

    fn embed(inputs: Vec<String>, input_type: Option<InputType>) -> Result<Vec<Embedding>, Error> {
        let model = MODEL.get().map_err(Error::Model)?;
        let input_type = input_type.map(|t| match t {
            InputType::Search => ml_core::InputType::Search,
            InputType::Ingest => ml_core::InputType::Ingest,
            InputType::Classification => ml_core::InputType::Classification,
            InputType::Clustering => ml_core::InputType::Clustering,
        });
        let embeddings = model
            .embed(&inputs, input_type)
            .map_err(|e| Error::Inference(format!("{e:#}")))?;
        Ok(embeddings
            .into_iter()
            .map(|e| Embedding {
                values: e.values,
                truncated: e.truncated,
            })
            .collect())
    }

    fn kernels() -> KernelReport {
        kernel_report()
    }
}

export!(Component);
