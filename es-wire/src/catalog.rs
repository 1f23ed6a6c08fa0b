//! The model catalog: the installed models (a directory each, as the model
//! tooling writes them), which task types each serves, and the preconfigured
//! endpoints they give. Shared by the native host and the Spin router.

use std::path::{Path, PathBuf};

use crate::endpoint::{AdaptiveAllocations, Endpoint, ServiceSettings};
use crate::types::TaskType;

/// The model cache under the user's home directory, where `cargo xtask
/// models` puts the models unless `INFERENCE_MODEL_CACHE` says otherwise.
pub const DEFAULT_MODEL_CACHE: &str = ".cache/edge-inference/models";

/// The model cache: `$INFERENCE_MODEL_CACHE`, else [`DEFAULT_MODEL_CACHE`]
/// under `$HOME`.
pub fn model_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("INFERENCE_MODEL_CACHE") {
        return dir.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    Path::new(&home).join(DEFAULT_MODEL_CACHE)
}

/// The task components' file names, as `cargo build --target wasm32-wasip2`
/// names them: text embedding, sparse embedding, rerank, completion.
pub const COMPONENT_FILES: [&str; 4] = [
    "text_embedding.wasm",
    "sparse_embedding.wasm",
    "rerank.wasm",
    "completion.wasm",
];

/// The task components built to run their graphs in the host through
/// `wasi:nn`, in the same order.
pub const WASI_NN_COMPONENT_FILES: [&str; 4] = [
    "text_embedding_wasi_nn.wasm",
    "sparse_embedding_wasi_nn.wasm",
    "rerank_wasi_nn.wasm",
    "completion_wasi_nn.wasm",
];

/// A model directory: `model.json` (its id and task), the model files, and
/// `SHA256SUMS`, written last by the model tooling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledModel {
    pub model_id: String,
    /// The task its `model.json` names.
    pub task: TaskType,
    pub dir: PathBuf,
}

impl InstalledModel {
    /// The catalog entry: the model and every task type it serves.
    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            model_id: self.model_id.clone(),
            task_types: model_task_types(self.task),
        }
    }
}

/// Every model directory under `dir`, by model id. A directory without
/// `SHA256SUMS` is an unfinished build, and one whose `model.json` is not
/// readable or names no known task is not a model: both are passed over.
pub fn scan_models(dir: &Path) -> Vec<InstalledModel> {
    #[derive(serde::Deserialize)]
    struct ModelJson {
        model_id: String,
        task: String,
    }
    let mut models = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let dir = entry.path();
        if !dir.join("SHA256SUMS").exists() {
            continue;
        }
        let Some(meta) = std::fs::read(dir.join("model.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<ModelJson>(&b).ok())
        else {
            continue;
        };
        if let Ok(task) = meta.task.parse() {
            models.push(InstalledModel {
                model_id: meta.model_id,
                task,
                dir,
            });
        }
    }
    models.sort_by(|a, b| a.model_id.cmp(&b.model_id));
    models
}

/// One installed model and the task types it can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub model_id: String,
    pub task_types: Vec<TaskType>,
}

/// The installed models, supplied by the host or the Spin router.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub models: Vec<ModelInfo>,
}

impl Catalog {
    pub fn new(models: Vec<ModelInfo>) -> Self {
        Self { models }
    }

    /// The model with that id.
    pub fn get(&self, model_id: &str) -> Option<&ModelInfo> {
        self.models.iter().find(|m| m.model_id == model_id)
    }

    /// Task types served by at least one model, in canonical order.
    pub fn task_types(&self) -> Vec<TaskType> {
        TaskType::ALL
            .into_iter()
            .filter(|t| self.models.iter().any(|m| m.task_types.contains(t)))
            .collect()
    }
}

/// The task types a model whose `model.json` says `task` can serve: a
/// text-embedding model also serves `embedding` (text content only) and
/// reranks (as a bi-encoder), a completion model also chats.
pub fn model_task_types(task: TaskType) -> Vec<TaskType> {
    match task {
        TaskType::TextEmbedding => vec![
            TaskType::TextEmbedding,
            TaskType::Embedding,
            TaskType::Rerank,
        ],
        TaskType::Completion => vec![TaskType::Completion, TaskType::ChatCompletion],
        other => vec![other],
    }
}

/// The model of the preconfigured endpoint of `task`, if there is one.
pub fn preconfigured_model(task: TaskType) -> Option<&'static str> {
    PRECONFIGURED
        .iter()
        .find(|(_, t, _)| *t == task)
        .map(|(_, _, model)| *model)
}

/// The endpoints that exist from the first start: (inference id, task type,
/// model id). Named as Elasticsearch names its own defaults, each on the
/// model this project ships for the task.
pub const PRECONFIGURED: [(&str, TaskType, &str); 5] = [
    (
        ".multilingual-e5-small-elasticsearch",
        TaskType::TextEmbedding,
        "multilingual-e5-small",
    ),
    (
        ".elser-2-elasticsearch",
        TaskType::SparseEmbedding,
        "splade-tiny",
    ),
    (
        ".rerank-v1-elasticsearch",
        TaskType::Rerank,
        "all-minilm-l6-v2",
    ),
    (
        ".smollm2-135m-instruct-completion",
        TaskType::Completion,
        "smollm2-135m-instruct",
    ),
    (
        ".smollm2-135m-instruct-chat_completion",
        TaskType::ChatCompletion,
        "smollm2-135m-instruct",
    ),
];

/// The preconfigured endpoints whose model is in `catalog` for that task,
/// with adaptive allocations up to `max_allocations`.
pub fn preconfigured_endpoints(catalog: &Catalog, max_allocations: u32) -> Vec<Endpoint> {
    PRECONFIGURED
        .iter()
        .filter(|(_, task, model)| {
            catalog
                .get(model)
                .is_some_and(|m| m.task_types.contains(task))
        })
        .map(|(id, task_type, model)| Endpoint {
            inference_id: id.to_string(),
            task_type: *task_type,
            service: crate::SERVICE.to_string(),
            service_settings: ServiceSettings {
                num_allocations: None,
                num_threads: 1,
                model_id: model.to_string(),
                adaptive_allocations: Some(AdaptiveAllocations {
                    enabled: true,
                    // The language model (hundreds of MB an instance) loads on first use.
                    min_number_of_allocations: Some(u32::from(!matches!(
                        task_type,
                        TaskType::Completion | TaskType::ChatCompletion
                    ))),
                    max_number_of_allocations: Some(max_allocations),
                }),
                element_type: None,
                similarity: None,
                long_document_strategy: None,
                max_chunks_per_doc: None,
                compute: None,
            },
            task_settings: Default::default(),
            chunking_settings: crate::settings::takes_chunking_settings(*task_type)
                .then(crate::default_chunking_settings),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanning_finds_finished_model_directories_only() {
        let root = std::env::temp_dir().join(format!("es-wire-scan-{}", std::process::id()));
        let model = |name: &str, json: &str, finished: bool| {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("model.json"), json).unwrap();
            if finished {
                std::fs::write(dir.join("SHA256SUMS"), "").unwrap();
            }
        };
        model(
            "b",
            r#"{"model_id": "b", "task": "sparse_embedding"}"#,
            true,
        );
        model("a", r#"{"model_id": "a", "task": "text_embedding"}"#, true);
        model("half", r#"{"model_id": "half", "task": "rerank"}"#, false);
        model("odd", r#"{"model_id": "odd", "task": "painting"}"#, true);
        model("bad", "{", true);
        let found = scan_models(&root);
        std::fs::remove_dir_all(&root).unwrap();
        let ids: Vec<(&str, TaskType)> = found.iter().map(|m| (&*m.model_id, m.task)).collect();
        assert_eq!(
            ids,
            [
                ("a", TaskType::TextEmbedding),
                ("b", TaskType::SparseEmbedding)
            ]
        );
        assert_eq!(
            found[0].info().task_types,
            [
                TaskType::TextEmbedding,
                TaskType::Embedding,
                TaskType::Rerank
            ]
        );
        assert!(
            scan_models(&root).is_empty(),
            "a missing directory holds no model"
        );
    }

    #[test]
    fn only_endpoints_whose_model_serves_the_task_exist() {
        // MiniLM alone serves the rerank endpoint; the text endpoint needs E5.
        let catalog = Catalog::new(vec![ModelInfo {
            model_id: "all-minilm-l6-v2".into(),
            task_types: model_task_types(TaskType::TextEmbedding),
        }]);
        let ids: Vec<String> = preconfigured_endpoints(&catalog, 2)
            .into_iter()
            .map(|e| e.inference_id)
            .collect();
        assert_eq!(ids, [".rerank-v1-elasticsearch"]);
        assert!(preconfigured_endpoints(&Catalog::new(vec![]), 2).is_empty());
    }
}
