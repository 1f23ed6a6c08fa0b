//! The installed models (converted by `python3 models/fetch.py` into the model
//! cache) and the preconfigured endpoints they give.

use crate::runtime::TaskKind;
use anyhow::{Context, Result};
use es_wire::{Catalog, Endpoint, ModelInfo, TaskType};
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
            let candidates = es_wire::model_task_types(task);
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
        es_wire::preconfigured_endpoints(&self.catalog(), max_allocations)
    }
}
