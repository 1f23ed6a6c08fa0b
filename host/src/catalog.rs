//! The installed models (converted by `python3 models/fetch.py` into the model
//! cache) and the preconfigured endpoints they give.

use crate::runtime::TaskKind;
use es_wire::{Catalog, Endpoint, ModelInfo, TaskType};
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

impl Models {
    /// The models in `cache` (see [`es_wire::scan_models`]), keeping the task
    /// types whose component `has_component` says is installed.
    pub fn scan(cache: &Path, has_component: impl Fn(TaskKind) -> bool) -> Self {
        let by_id = es_wire::scan_models(cache)
            .into_iter()
            .filter_map(|m| {
                let task_types: Vec<TaskType> = es_wire::model_task_types(m.task)
                    .into_iter()
                    .filter(|t| has_component(TaskKind::for_task_type(*t)))
                    .collect();
                let model = Model {
                    dir: m.dir,
                    task_types,
                };
                (!model.task_types.is_empty()).then_some((m.model_id, model))
            })
            .collect();
        Self { by_id }
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
