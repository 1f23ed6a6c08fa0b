//! The sparse-embedding task component: a thin WIT adapter over `ml_core::SparseEmbedder`.

wit_bindgen::generate!({ path: "../../wit", world: "sparse-embedding-task" });

use edge::inference::types::{Error, InputType, KernelReport, ModelInfo};
use exports::edge::inference::sparse_embedding::{Guest, SparseEmbedding};
use std::sync::OnceLock;

/// One model per instance: the host calls `load` once after instantiating.
static MODEL: OnceLock<ml_core::SparseEmbedder> = OnceLock::new();

struct Component;

impl Guest for Component {
    fn load(dir: String) -> Result<ModelInfo, Error> {
        if MODEL.get().is_none() {
            let model = ml_core::SparseEmbedder::load(dir.as_ref())
                .map_err(|e| Error::Model(format!("{e:#}")))?;
            let _ = MODEL.set(model);
        }
        let config = &MODEL.get().expect("set above").encoder.config;
        Ok(ModelInfo {
            model_id: config.model_id.clone(),
            task: config.task.clone(),
            max_sequence_length: config.max_sequence_length as u32,
            dimensions: 0,
        })
    }

    fn embed(
        inputs: Vec<String>,
        _input_type: Option<InputType>,
    ) -> Result<Vec<SparseEmbedding>, Error> {
        let model = MODEL
            .get()
            .ok_or_else(|| Error::Model("load was not called".into()))?;
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
        let r = ml_core::kernels::report();
        KernelReport {
            isa: r.isa,
            matmul_kernels: r.matmul_kernels,
            tiers: r.tiers,
        }
    }
}

export!(Component);
