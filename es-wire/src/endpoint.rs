//! Inference endpoints as stored and answered (creating and changing them is
//! [`crate::settings`]).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::types::{ElementType, Similarity, TaskType};

/// The only service this server runs: models executed locally.
pub const SERVICE: &str = "elasticsearch";
/// Elasticsearch's older name for the service, accepted for `sparse_embedding`.
pub const ELSER_SERVICE: &str = "elser";

/// An inference endpoint as stored (the host keeps it as JSON) and as answered
/// by PUT and GET: the serde form *is* Elasticsearch's endpoint info, so
/// `task_settings` is left out when empty and `chunking_settings` when unset,
/// as Elasticsearch does. There are no secrets to hide: local models take no
/// API keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub inference_id: String,
    pub task_type: TaskType,
    pub service: String,
    pub service_settings: ServiceSettings,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub task_settings: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunking_settings: Option<Value>,
}

impl Endpoint {
    /// The object returned by PUT, GET (inside `endpoints`) and `_update`.
    pub fn info_json(&self) -> Value {
        serde_json::to_value(self).expect("endpoint serialises")
    }

    /// How vectors are answered: `service_settings.element_type`, else `float`.
    pub fn element_type(&self) -> ElementType {
        self.service_settings.element_type.unwrap_or_default()
    }
}

/// `service_settings` of the `elasticsearch` service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSettings {
    /// Fixed number of warm instances; may be absent when adaptive allocations
    /// are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_allocations: Option<u32>,
    /// Threads per instance (default 1).
    #[serde(default = "one")]
    pub num_threads: u32,
    /// The installed model serving the endpoint.
    pub model_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_allocations: Option<AdaptiveAllocations>,
    /// Dense embedding tasks only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element_type: Option<ElementType>,
    /// Dense embedding tasks only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity: Option<Similarity>,
    /// Rerank only (Elasticsearch 9.2): `truncate` (default) or `chunk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_document_strategy: Option<LongDocumentStrategy>,
    /// Rerank with `chunk` only: score at most this many chunks per document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chunks_per_doc: Option<u32>,
    /// Encoder tasks only: where the model's graph runs. Absent: the fastest
    /// the server has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<Compute>,
}

/// Where an endpoint's graph runs. The task logic (tokenization, batching,
/// pooling, scoring, sampling) always runs in the task's sandbox; a
/// decoder's KV cache stays with its graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compute {
    /// The host runs the graph with ONNX Runtime, through `wasi:nn`.
    Onnxruntime,
    /// The host runs the graph with tract, natively, through `wasi:nn`.
    Tract,
    /// tract runs the graph inside the task's sandbox (wasm simd128).
    Sandbox,
}

impl Compute {
    pub const NAMES: [&str; 3] = ["onnxruntime", "tract", "sandbox"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "onnxruntime" => Some(Self::Onnxruntime),
            "tract" => Some(Self::Tract),
            "sandbox" => Some(Self::Sandbox),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Onnxruntime => "onnxruntime",
            Self::Tract => "tract",
            Self::Sandbox => "sandbox",
        }
    }
}

/// How a reranker handles documents longer than the model's input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LongDocumentStrategy {
    /// Score the beginning of each document.
    #[default]
    Truncate,
    /// Split long documents, score every chunk, keep the best.
    Chunk,
}

impl LongDocumentStrategy {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "truncate" => Some(Self::Truncate),
            "chunk" => Some(Self::Chunk),
            _ => None,
        }
    }
}

fn one() -> u32 {
    1
}

/// Scale the number of warm instances between `min` (may be 0: scale to zero)
/// and `max` with the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdaptiveAllocations {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_number_of_allocations: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_number_of_allocations: Option<u32>,
}

/// `{"endpoints": [info, ...]}`, the answer of every GET.
pub fn endpoints_response(endpoints: &[Endpoint]) -> Value {
    json!({"endpoints": endpoints.iter().map(Endpoint::info_json).collect::<Vec<_>>()})
}

/// The answer of DELETE, as `DeleteInferenceEndpointAction.Response`:
/// `pipelines` and `indexes` list what uses the endpoint (ingest pipelines,
/// `semantic_text` mappings: nothing here). A dry run deletes nothing, so it
/// is not acknowledged, and carries an `error_message` that would explain a
/// refusal (empty: nothing refers to the endpoint).
pub fn delete_response(dry_run: bool) -> Value {
    if dry_run {
        json!({"acknowledged": false, "pipelines": [], "indexes": [], "error_message": ""})
    } else {
        json!({"acknowledged": true, "pipelines": [], "indexes": []})
    }
}
