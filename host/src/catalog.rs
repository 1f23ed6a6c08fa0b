//! The installed models (converted by `python3 models/fetch.py` into the model
//! cache) and the preconfigured endpoints they give.

use crate::runtime::TaskKind;
use anyhow::{Context, Result};
use es_wire::{AdaptiveAllocations, Catalog, Endpoint, ModelInfo, ServiceSettings, TaskType};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// An installed model.
#[derive(Debug, Clone)]
pub struct Model {
    pub dir: PathBuf,
    pub task_types: Vec<TaskType>,
}

#[derive(Debug, Default)]
pub struct Models {
    pub by_id: BTreeMap<String, Model>,
}

#[derive(Deserialize)]
struct ModelJson {
    model_id: String,
    task: String,
}

impl Models {
    /// Reads every `*/model.json` under `cache`, keeping the models whose task
    /// component `has_component` says is installed.
    pub fn scan(cache: &Path, has_component: impl Fn(TaskKind) -> bool) -> Result<Self> {
        let mut by_id = BTreeMap::new();
        let entries = match std::fs::read_dir(cache) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading the model cache {}", cache.display()))
            }
        };
        for entry in entries {
            let dir = entry?.path();
            let Ok(bytes) = std::fs::read(dir.join("model.json")) else {
                continue;
            };
            // A directory without SHA256SUMS is an unfinished build.
            if !dir.join("SHA256SUMS").exists() {
                continue;
            }
            let meta: ModelJson = serde_json::from_slice(&bytes)
                .with_context(|| format!("{}/model.json is not valid", dir.display()))?;
            let Ok(task) = meta.task.parse::<TaskType>() else {
                continue;
            };
            // A text-embedding model also reranks, as a bi-encoder.
            let candidates = match task {
                TaskType::TextEmbedding => vec![TaskType::TextEmbedding, TaskType::Rerank],
                TaskType::Completion => vec![TaskType::Completion, TaskType::ChatCompletion],
                other => vec![other],
            };
            let task_types: Vec<TaskType> = candidates
                .into_iter()
                .filter(|t| has_component(TaskKind::for_task_type(*t)))
                .collect();
            if !task_types.is_empty() {
                by_id.insert(meta.model_id, Model { dir, task_types });
            }
        }
        Ok(Self { by_id })
    }

    /// es-wire's view: model ids and the task types each serves.
    pub fn catalog(&self) -> Catalog {
        Catalog::new(
            self.by_id
                .iter()
                .map(|(id, m)| ModelInfo {
                    model_id: id.clone(),
                    task_types: m.task_types.clone(),
                })
                .collect(),
        )
    }

    /// The endpoints that exist from the first start, named as Elasticsearch
    /// names its own defaults, each on the model this project ships for the
    /// task (its real id is in `service_settings.model_id`). Only those whose
    /// model is installed.
    pub fn preconfigured(&self, max_allocations: u32) -> Vec<Endpoint> {
        const DEFAULTS: [(&str, TaskType, &str); 5] = [
            (
                ".multilingual-e5-small-elasticsearch",
                TaskType::TextEmbedding,
                "all-minilm-l6-v2",
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
        DEFAULTS
            .iter()
            .filter(|(_, task, model)| {
                self.by_id
                    .get(*model)
                    .is_some_and(|m| m.task_types.contains(task))
            })
            .map(|(id, task_type, model)| Endpoint {
                inference_id: id.to_string(),
                task_type: *task_type,
                service: es_wire::SERVICE.to_string(),
                service_settings: ServiceSettings {
                    num_allocations: None,
                    num_threads: 1,
                    model_id: model.to_string(),
                    adaptive_allocations: Some(AdaptiveAllocations {
                        enabled: true,
                        // The language model (1.3 GB an instance) loads on first use.
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
                },
                task_settings: Default::default(),
                chunking_settings: None,
            })
            .collect()
    }
}
