//! Endpoint settings: creating an endpoint from a PUT body and changing one
//! with `_update`, with Elasticsearch's validation and wording.

use serde_json::{Map, Value};

use crate::catalog::Catalog;
use crate::chunking::parse_chunking_settings;
use crate::endpoint::{
    AdaptiveAllocations, Compute, Endpoint, LongDocumentStrategy, ServiceSettings, ELSER_SERVICE,
    SERVICE,
};
use crate::error::EsError;
use crate::json::{java_map, not_of_type, parse_object, unknown_settings, Obj};
use crate::types::{validate_inference_id, ElementType, InputType, Similarity, TaskType};

/// Parses a create request (`PUT /_inference/{task_type}/{id}` or
/// `PUT /_inference/{id}`) into the endpoint to store.
///
/// Rules, in Elasticsearch's order and wording where it has them:
/// - the id follows [`validate_inference_id`] (dot ids are reserved);
/// - the body is `{service, service_settings, task_settings?,
///   chunking_settings?, task_type?}`; anything else is refused;
/// - `service` is `elasticsearch`, or `elser` for `sparse_embedding`; either
///   way the endpoint is stored as `elasticsearch`, as Elasticsearch does;
/// - `service_settings.model_id` names an installed model; `elser` defaults
///   it to the sparse model of `.elser-2-elasticsearch`;
/// - the task type comes from the path, else the body's `task_type`, else the
///   model when it serves exactly one task; the model must serve it;
/// - `num_allocations` (≥ 1) or `adaptive_allocations` is required;
///   `num_threads` defaults to 1 and must be ≥ 1; `element_type` and
///   `similarity` only for dense embeddings; `compute` (`onnxruntime`,
///   `tract` or `sandbox`) for every task;
/// - `task_settings` are checked per task: `input_type` for `text_embedding`
///   and `embedding`; `return_documents` (bool) and `top_n` (≥ 1) for
///   `rerank`; `max_tokens` (≥ 1), `temperature` (≥ 0) and `top_p` (0..=1)
///   for `completion` and `chat_completion`; none for `sparse_embedding`;
///   unknown keys are refused;
/// - `chunking_settings` only for embedding tasks, checked and completed by
///   [`parse_chunking_settings`] (the default when absent).
pub fn parse_put(
    path_task: Option<TaskType>,
    id: &str,
    body: &[u8],
    catalog: &Catalog,
) -> Result<Endpoint, EsError> {
    validate_inference_id(id)?;
    let mut config = parse_settings_body(body)?;

    let service = match config.remove("service") {
        None | Some(Value::Null) => {
            return Err(EsError::status_exception(
                400,
                "Model configuration is missing a service",
            ))
        }
        Some(Value::String(s)) => s,
        Some(v) => {
            return Err(EsError::status_exception(
                400,
                not_of_type("service", &v, "String"),
            ))
        }
    };
    if service != SERVICE && service != ELSER_SERVICE {
        return Err(EsError::status_exception(
            400,
            format!("Unknown service [{service}]"),
        ));
    }
    let body_task = match config.remove("task_type") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.parse::<TaskType>()?),
        Some(v) => {
            return Err(EsError::status_exception(
                400,
                not_of_type("task_type", &v, "String"),
            ))
        }
    };
    let explicit_task = match (path_task, body_task) {
        (Some(p), Some(b)) if p != b => {
            return Err(EsError::status_exception(
                400,
                format!(
                    "Cannot resolve conflicting task_type parameter in the request URL [{p}] and the request body [{b}]"
                ),
            ))
        }
        (p, b) => p.or(b),
    };
    let mut service_settings = match config.remove("service_settings") {
        None | Some(Value::Null) => {
            return Err(EsError::status_exception(
                400,
                "Missing required field [service_settings]",
            ))
        }
        Some(v) => take_object("service_settings", v)?,
    };
    let task_settings = match config.remove("task_settings") {
        None | Some(Value::Null) => Map::new(),
        Some(v) => take_object("task_settings", v)?,
    };
    let chunking_settings = config.remove("chunking_settings").filter(|v| !v.is_null());

    let model_id = match service_settings.remove("model_id") {
        // The `elser` service defaults its model (Elasticsearch's
        // `.elser_model_2`): here, the sparse model `.elser-2-elasticsearch` serves.
        None | Some(Value::Null) if service == ELSER_SERVICE => elser_model().to_string(),
        None | Some(Value::Null) => {
            return Err(EsError::illegal_argument(
                "Error parsing service settings, model_id must be provided",
            ))
        }
        Some(Value::String(s)) => s,
        Some(v) => {
            return Err(EsError::validation(vec![not_of_type(
                "model_id", &v, "String",
            )]))
        }
    };
    let model = catalog
        .get(&model_id)
        .ok_or_else(|| unknown_model(&model_id, catalog))?;

    let task_type = match explicit_task {
        Some(t) => t,
        None => match model.task_types.as_slice() {
            [only] => *only,
            _ => {
                return Err(EsError::status_exception(
                    400,
                    "model is missing required setting [task_type]",
                ))
            }
        },
    };
    if service == ELSER_SERVICE && task_type != TaskType::SparseEmbedding {
        return Err(EsError::status_exception(
            400,
            format!("The [elser] service does not support task type [{task_type}]"),
        ));
    }
    if !model.task_types.contains(&task_type) {
        return Err(EsError::status_exception(
            400,
            format!(
                "Model [{model_id}] does not support task type [{task_type}]; it supports [{}]",
                join(&model.task_types)
            ),
        ));
    }
    let chunking_settings = if takes_chunking_settings(task_type) {
        let settings = chunking_settings
            .map(|v| take_object("chunking_settings", v))
            .transpose()?;
        Some(parse_chunking_settings(settings)?)
    } else {
        // Left over, so refused below as a setting the service does not know.
        config.extend(chunking_settings.map(|v| ("chunking_settings".into(), v)));
        None
    };
    if !config.is_empty() {
        return Err(unknown_settings(&config));
    }

    let mut errors = Vec::new();
    let num_allocations = take_positive(&mut service_settings, "num_allocations", &mut errors);
    let num_threads = take_positive(&mut service_settings, "num_threads", &mut errors);
    let adaptive = take_adaptive(&mut service_settings, &mut errors);
    if num_allocations.is_none() && adaptive.is_none() {
        errors.push(
            "[service_settings] does not contain one of the required settings [num_allocations, adaptive_allocations]"
                .into(),
        );
    }
    let (element_type, similarity) = if task_type.is_dense_embedding() {
        (
            take_enum(
                &mut service_settings,
                "element_type",
                &["bit", "byte", "float"],
                ElementType::parse,
                &mut errors,
            ),
            take_enum(
                &mut service_settings,
                "similarity",
                &["cosine", "dot_product", "l2_norm", "max_inner_product"],
                Similarity::parse,
                &mut errors,
            ),
        )
    } else {
        (None, None)
    };
    let (long_document_strategy, max_chunks_per_doc) = if task_type == TaskType::Rerank {
        (
            take_enum(
                &mut service_settings,
                "long_document_strategy",
                &["chunk", "truncate"],
                LongDocumentStrategy::parse,
                &mut errors,
            ),
            take_positive(&mut service_settings, "max_chunks_per_doc", &mut errors),
        )
    } else {
        (None, None)
    };
    let compute = take_enum(
        &mut service_settings,
        "compute",
        &Compute::NAMES,
        Compute::parse,
        &mut errors,
    );
    check_task_settings(task_type, &task_settings, &mut errors)?;
    if !errors.is_empty() {
        return Err(EsError::validation(errors));
    }
    if !service_settings.is_empty() {
        return Err(unknown_settings(&service_settings));
    }

    Ok(Endpoint {
        inference_id: id.to_string(),
        task_type,
        service: SERVICE.to_string(),
        service_settings: ServiceSettings {
            num_allocations,
            num_threads: num_threads.unwrap_or(1),
            model_id,
            adaptive_allocations: adaptive,
            element_type,
            similarity,
            long_document_strategy,
            max_chunks_per_doc,
            compute,
        },
        task_settings,
        chunking_settings,
    })
}

/// Parses `PUT /_inference/[{task_type}/]{id}/_update` against the stored
/// endpoint and returns the changed endpoint.
///
/// The body may hold `service_settings` (only `num_allocations`,
/// `adaptive_allocations` and `num_threads` may change; `model_id` may be
/// repeated unchanged), `task_settings` (merged key by key over the existing
/// ones) and `task_type` (which, like the path's, must be the endpoint's).
/// Anything else, e.g. `service`, is refused with Elasticsearch's
/// "Request contained fields which cannot be updated" message.
/// Preconfigured (dot-prefixed) endpoints cannot be updated.
pub fn parse_update(
    existing: &Endpoint,
    path_task: Option<TaskType>,
    body: &[u8],
) -> Result<Endpoint, EsError> {
    if crate::types::is_reserved_id(&existing.inference_id) {
        return Err(EsError::status_exception(
            400,
            format!(
                "[{}] is a reserved inference endpoint. Cannot update a reserved inference endpoint.",
                existing.inference_id
            ),
        ));
    }
    let mut body = parse_settings_body(body)?;
    if body.is_empty() {
        return Err(EsError::status_exception(400, "Request body is empty"));
    }
    let body_task = match body.remove("task_type") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.parse::<TaskType>()?),
        Some(v) => {
            return Err(EsError::status_exception(
                400,
                not_of_type("task_type", &v, "String"),
            ))
        }
    };
    if [path_task, body_task]
        .into_iter()
        .flatten()
        .any(|t| t != existing.task_type)
    {
        return Err(EsError::status_exception(
            400,
            "Task type must match the task type of the existing endpoint",
        ));
    }
    let service_settings = match body.remove("service_settings") {
        None | Some(Value::Null) => Map::new(),
        Some(v) => take_object("service_settings", v)?,
    };
    let task_settings = match body.remove("task_settings") {
        None | Some(Value::Null) => Map::new(),
        Some(v) => take_object("task_settings", v)?,
    };
    if !body.is_empty() {
        return Err(EsError::status_exception(
            400,
            format!(
                "Request contained fields which cannot be updated, remove these fields and try again [{}]",
                java_map(&body)
            ),
        ));
    }

    let mut updated = existing.clone();
    let mut ss = service_settings;
    if let Some(model) = ss.remove("model_id") {
        if model.as_str() != Some(existing.service_settings.model_id.as_str()) {
            return Err(EsError::status_exception(
                400,
                format!(
                    "[service_settings] the model of an inference endpoint cannot be changed: it uses [{}], the request names [{}]; create a new endpoint instead",
                    existing.service_settings.model_id,
                    crate::json::java_string(&model)
                ),
            ));
        }
    }
    let mut errors = Vec::new();
    let num_allocations = take_positive(&mut ss, "num_allocations", &mut errors);
    let num_threads = take_positive(&mut ss, "num_threads", &mut errors);
    let adaptive_update = take_adaptive_update(&mut ss, &mut errors);
    if !ss.is_empty() {
        return Err(EsError::status_exception(
            400,
            format!(
                "[service_settings] contains settings [{}] that cannot be updated; only [num_allocations, adaptive_allocations, num_threads] can be",
                java_map(&ss)
            ),
        ));
    }
    let mut merged_tasks = existing.task_settings.clone();
    merged_tasks.extend(task_settings);
    check_task_settings(existing.task_type, &merged_tasks, &mut errors)?;
    if let Some(update) = adaptive_update {
        let base = existing
            .service_settings
            .adaptive_allocations
            .unwrap_or(AdaptiveAllocations {
                enabled: false,
                min_number_of_allocations: None,
                max_number_of_allocations: None,
            });
        let merged = AdaptiveAllocations {
            enabled: update.enabled.unwrap_or(base.enabled),
            min_number_of_allocations: update.min.unwrap_or(base.min_number_of_allocations),
            max_number_of_allocations: update.max.unwrap_or(base.max_number_of_allocations),
        };
        check_adaptive_bounds(&merged, &mut errors);
        updated.service_settings.adaptive_allocations = Some(merged);
    }
    if !errors.is_empty() {
        return Err(EsError::validation(errors));
    }
    if num_allocations.is_some() {
        updated.service_settings.num_allocations = num_allocations;
    }
    if let Some(n) = num_threads {
        updated.service_settings.num_threads = n;
    }
    updated.task_settings = merged_tasks;
    Ok(updated)
}

/// `task_settings` as a task reads them, typed: an endpoint's, a request's,
/// or a request's over its endpoint's ([`TaskSettings::over`]). Their values
/// were checked by [`check_task_settings`] when stored or received, so a
/// setting another task takes is simply absent here.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TaskSettings {
    /// `text_embedding`, `embedding`.
    pub input_type: Option<InputType>,
    /// `rerank`.
    pub top_n: Option<u32>,
    /// `rerank`.
    pub return_documents: Option<bool>,
    /// `completion`, `chat_completion`.
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
}

impl TaskSettings {
    pub fn read(settings: &Map<String, Value>) -> Self {
        let number = |key: &str| settings.get(key).and_then(Value::as_f64);
        let count = |key: &str| u32::try_from(settings.get(key)?.as_u64()?).ok();
        Self {
            input_type: settings
                .get("input_type")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok()),
            top_n: count("top_n"),
            return_documents: settings.get("return_documents").and_then(Value::as_bool),
            max_tokens: count("max_tokens"),
            temperature: number("temperature").map(|t| t as f32),
            top_p: number("top_p").map(|t| t as f32),
            seed: settings.get("seed").and_then(Value::as_u64),
        }
    }

    /// These settings, each falling back to `base`'s.
    pub fn over(self, base: Self) -> Self {
        Self {
            input_type: self.input_type.or(base.input_type),
            top_n: self.top_n.or(base.top_n),
            return_documents: self.return_documents.or(base.return_documents),
            max_tokens: self.max_tokens.or(base.max_tokens),
            temperature: self.temperature.or(base.temperature),
            top_p: self.top_p.or(base.top_p),
            seed: self.seed.or(base.seed),
        }
    }
}

/// Checks `task_settings` for a task, as stored on an endpoint or sent with one
/// request. Bad values are pushed to `errors` (Elasticsearch's validation
/// wording); unknown keys are an immediate 400.
///
/// - `text_embedding`, `embedding`: `input_type` (`search`, `ingest`,
///   `classification`, `clustering`);
/// - `rerank`: `return_documents` (bool), `top_n` (integer ≥ 1);
/// - `completion`, `chat_completion`: `max_tokens` (integer ≥ 1),
///   `temperature` (number ≥ 0), `top_p` (number in 0..=1);
/// - `sparse_embedding`: none.
pub(crate) fn check_task_settings(
    task: TaskType,
    settings: &Map<String, Value>,
    errors: &mut Vec<String>,
) -> Result<(), EsError> {
    let allowed: &[&str] = match task {
        TaskType::TextEmbedding | TaskType::Embedding => &["input_type"],
        TaskType::Rerank => &["return_documents", "top_n"],
        // `seed` makes sampling reproducible (not an Elasticsearch setting).
        TaskType::Completion | TaskType::ChatCompletion => {
            &["max_tokens", "seed", "temperature", "top_p"]
        }
        TaskType::SparseEmbedding => &[],
    };
    let unknown: Obj = settings
        .iter()
        .filter(|(k, _)| !allowed.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !unknown.is_empty() {
        return Err(unknown_settings(&unknown));
    }
    for (k, v) in settings {
        let problem = match (k.as_str(), v) {
            ("input_type", Value::String(s)) => s.parse::<InputType>().err().map(|_| {
                format!(
                    "[task_settings] Invalid value [{s}] received. [input_type] must be one of [classification, clustering, ingest, search]"
                )
            }),
            ("return_documents", Value::Bool(_)) => None,
            ("temperature", Value::Number(n)) => (n.as_f64().unwrap_or(-1.0) < 0.0)
                .then(|| format!("[task_settings] Invalid value [{n}]. [temperature] must be a greater than or equal to [0.0]")),
            ("top_p", Value::Number(n)) => (!(0.0..=1.0).contains(&n.as_f64().unwrap_or(-1.0)))
                .then(|| format!("[task_settings] Invalid value [{n}]. [top_p] must be between [0.0] and [1.0]")),
            ("seed", Value::Number(n)) => n
                .as_u64()
                .is_none()
                .then(|| format!("[task_settings] Invalid value [{n}]. [seed] must be a non-negative integer")),
            ("top_n" | "max_tokens", Value::Number(n)) => match n.as_i64() {
                Some(i) if i > 0 && i <= i64::from(u32::MAX) => None,
                Some(i) => Some(format!("[task_settings] Invalid value [{i}]. [{k}] must be a positive integer")),
                None => Some(not_of_type(k, v, "Integer")),
            },
            (_, _) => Some(not_of_type(
                k,
                v,
                match k.as_str() {
                    "input_type" => "String",
                    "return_documents" => "Boolean",
                    "temperature" | "top_p" => "Double",
                    _ => "Integer",
                },
            )),
        };
        errors.extend(problem);
    }
    Ok(())
}

/// PUT and `_update` bodies are parsed to a map as Elasticsearch does
/// (`parse_exception` on bad JSON).
fn parse_settings_body(body: &[u8]) -> Result<Obj, EsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(EsError::body_required());
    }
    parse_object(body)
        .map_err(|e| EsError::parse(format!("Failed to parse content to map: {}", e.describe())))
}

fn take_object(key: &str, v: Value) -> Result<Obj, EsError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(EsError::status_exception(
            400,
            not_of_type(key, &other, "Map"),
        )),
    }
}

/// The tasks whose endpoints carry `chunking_settings`: those that embed.
pub(crate) fn takes_chunking_settings(task: TaskType) -> bool {
    matches!(
        task,
        TaskType::TextEmbedding | TaskType::SparseEmbedding | TaskType::Embedding
    )
}

/// The model of the preconfigured ELSER endpoint.
fn elser_model() -> &'static str {
    crate::preconfigured_model(TaskType::SparseEmbedding)
        .expect("a preconfigured sparse_embedding endpoint")
}

fn unknown_model(model_id: &str, catalog: &Catalog) -> EsError {
    let installed: Vec<&str> = catalog.models.iter().map(|m| m.model_id.as_str()).collect();
    EsError::illegal_argument(format!(
        "Error parsing request config, model id does not match any models available on this platform. Was [{model_id}]. Installed models: [{}]",
        installed.join(", ")
    ))
}

fn join(tasks: &[TaskType]) -> String {
    tasks
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// ServiceUtils.extractOptionalPositiveInteger.
fn take_positive(map: &mut Obj, key: &str, errors: &mut Vec<String>) -> Option<u32> {
    let v = map.remove(key).filter(|v| !v.is_null())?;
    match v.as_i64() {
        Some(n) if n > 0 && n <= i64::from(u32::MAX) => Some(n as u32),
        Some(n) => {
            errors.push(format!(
                "[service_settings] Invalid value [{n}]. [{key}] must be a positive integer"
            ));
            None
        }
        None => {
            errors.push(not_of_type(key, &v, "Integer"));
            None
        }
    }
}

/// `element_type` / `similarity`: ServiceUtils.extractOptionalEnum.
fn take_enum<T>(
    map: &mut Obj,
    key: &str,
    valid: &[&str],
    parse: fn(&str) -> Option<T>,
    errors: &mut Vec<String>,
) -> Option<T> {
    let v = map.remove(key).filter(|v| !v.is_null())?;
    let Some(s) = v.as_str() else {
        errors.push(not_of_type(key, &v, "String"));
        return None;
    };
    let parsed = parse(s);
    if parsed.is_none() {
        errors.push(format!(
            "[service_settings] Invalid value [{s}] received. [{key}] must be one of [{}]",
            valid.join(", ")
        ));
    }
    parsed
}

/// Fields given in an `adaptive_allocations` object; `None` = not given.
struct AdaptiveUpdate {
    enabled: Option<bool>,
    min: Option<Option<u32>>,
    max: Option<Option<u32>>,
}

/// Parses `adaptive_allocations` as Elasticsearch's
/// `removeAsAdaptiveAllocationsSettings` (min ≥ 0, max ≥ 1, min ≤ max).
fn take_adaptive(map: &mut Obj, errors: &mut Vec<String>) -> Option<AdaptiveAllocations> {
    let update = take_adaptive_update(map, errors)?;
    let settings = AdaptiveAllocations {
        enabled: update.enabled.unwrap_or(false),
        min_number_of_allocations: update.min.flatten(),
        max_number_of_allocations: update.max.flatten(),
    };
    check_adaptive_bounds(&settings, errors);
    Some(settings)
}

fn take_adaptive_update(map: &mut Obj, errors: &mut Vec<String>) -> Option<AdaptiveUpdate> {
    let v = map
        .remove("adaptive_allocations")
        .filter(|v| !v.is_null())?;
    let Value::Object(mut m) = v else {
        errors.push(not_of_type("adaptive_allocations", &v, "Map"));
        return None;
    };
    let enabled = match m.remove("enabled") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(b),
        Some(other) => {
            errors.push(not_of_type("enabled", &other, "Boolean"));
            None
        }
    };
    let mut count = |key: &str, min: i64, errors: &mut Vec<String>| -> Option<Option<u32>> {
        match m.remove(key) {
            None => None,
            Some(Value::Null) => Some(None),
            Some(v) => match v.as_i64() {
                Some(n) if n >= min && n <= i64::from(u32::MAX) => Some(Some(n as u32)),
                Some(_) => {
                    let what = if min == 0 {
                        "a non-negative integer"
                    } else {
                        "a positive integer"
                    };
                    errors.push(format!("[{key}] must be {what} or null"));
                    None
                }
                None => {
                    errors.push(not_of_type(key, &v, "Integer"));
                    None
                }
            },
        }
    };
    let min = count("min_number_of_allocations", 0, errors);
    let max = count("max_number_of_allocations", 1, errors);
    for k in m.keys() {
        errors.push(format!(
            "[adaptive_allocations] does not allow the setting [{k}]"
        ));
    }
    Some(AdaptiveUpdate { enabled, min, max })
}

fn check_adaptive_bounds(a: &AdaptiveAllocations, errors: &mut Vec<String>) {
    if let (Some(min), Some(max)) = (a.min_number_of_allocations, a.max_number_of_allocations) {
        if min > max {
            errors.push(
                "[min_number_of_allocations] must not be larger than [max_number_of_allocations]"
                    .into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ModelInfo;
    use crate::endpoint::{delete_response, endpoints_response};
    use serde_json::json;

    fn catalog() -> Catalog {
        Catalog::new(vec![
            ModelInfo {
                model_id: "all-minilm-l6-v2".into(),
                task_types: vec![TaskType::TextEmbedding, TaskType::Rerank],
            },
            ModelInfo {
                model_id: "splade-tiny".into(),
                task_types: vec![TaskType::SparseEmbedding],
            },
            ModelInfo {
                model_id: "smollm2".into(),
                task_types: vec![TaskType::Completion, TaskType::ChatCompletion],
            },
        ])
    }

    fn put(task: Option<TaskType>, id: &str, body: Value) -> Result<Endpoint, EsError> {
        parse_put(task, id, body.to_string().as_bytes(), &catalog())
    }

    fn minilm(extra: Value) -> Value {
        let mut ss = json!({"model_id": "all-minilm-l6-v2", "num_allocations": 1});
        ss.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"service": "elasticsearch", "service_settings": ss})
    }

    #[test]
    fn creates_and_answers_es_info() {
        let e = put(Some(TaskType::TextEmbedding), "my-e5", minilm(json!({}))).unwrap();
        assert_eq!(
            e.info_json(),
            json!({"inference_id": "my-e5", "task_type": "text_embedding", "service": "elasticsearch",
                   "service_settings": {"num_allocations": 1, "num_threads": 1, "model_id": "all-minilm-l6-v2"},
                   "chunking_settings": {"strategy": "sentence", "max_chunk_size": 250, "sentence_overlap": 1}})
        );
        let back: Endpoint = serde_json::from_value(e.info_json()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn compute_names_where_a_graph_runs() {
        let e = put(
            Some(TaskType::TextEmbedding),
            "e",
            minilm(json!({"compute": "sandbox"})),
        )
        .unwrap();
        assert_eq!(e.service_settings.compute, Some(Compute::Sandbox));
        assert_eq!(e.info_json()["service_settings"]["compute"], "sandbox");
        let e = put(Some(TaskType::TextEmbedding), "e", minilm(json!({}))).unwrap();
        assert_eq!(e.service_settings.compute, None, "absent: the server picks");
        let err = put(
            Some(TaskType::TextEmbedding),
            "e",
            minilm(json!({"compute": "gpu"})),
        )
        .unwrap_err();
        assert_eq!(err.reason, "Validation Failed: 1: [service_settings] Invalid value [gpu] received. [compute] must be one of [onnxruntime, tract, sandbox];");
        // A decoder's graph moves the same way.
        let body = json!({"service": "elasticsearch", "service_settings": {
            "model_id": "smollm2", "num_allocations": 1, "compute": "tract"}});
        let e = put(Some(TaskType::Completion), "e", body).unwrap();
        assert_eq!(e.service_settings.compute, Some(Compute::Tract));
    }

    #[test]
    fn full_round_trip_through_storage() {
        let body = json!({"service": "elasticsearch",
            "service_settings": {"model_id": "all-minilm-l6-v2", "num_threads": 2,
                "adaptive_allocations": {"enabled": true, "min_number_of_allocations": 0, "max_number_of_allocations": 4},
                "element_type": "byte", "similarity": "cosine"},
            "task_settings": {"input_type": "ingest"},
            "chunking_settings": {"strategy": "sentence", "max_chunk_size": 250, "sentence_overlap": 1}});
        let e = put(Some(TaskType::TextEmbedding), "e", body).unwrap();
        assert_eq!(e.element_type(), ElementType::Byte);
        assert_eq!(e.service_settings.num_allocations, None);
        assert_eq!(e.service_settings.num_threads, 2);
        let stored = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Endpoint>(&stored).unwrap(), e);
        let info = e.info_json();
        assert_eq!(info["task_settings"], json!({"input_type": "ingest"}));
        assert_eq!(info["chunking_settings"]["strategy"], "sentence");
        assert_eq!(
            info["service_settings"]["adaptive_allocations"]["max_number_of_allocations"],
            4
        );
        assert_eq!(info["service_settings"]["element_type"], "byte");
    }

    #[test]
    fn task_type_resolution() {
        // From the model when it serves exactly one task.
        let body = json!({"service": "elasticsearch", "service_settings": {"model_id": "splade-tiny", "num_allocations": 1}});
        assert_eq!(
            put(None, "s", body.clone()).unwrap().task_type,
            TaskType::SparseEmbedding
        );
        // Ambiguous model without task type.
        let e = put(None, "m", minilm(json!({}))).unwrap_err();
        assert_eq!(e.reason, "model is missing required setting [task_type]");
        // From the body.
        let mut b = minilm(json!({}));
        b["task_type"] = json!("rerank");
        assert_eq!(
            put(None, "m", b.clone()).unwrap().task_type,
            TaskType::Rerank
        );
        let e = put(Some(TaskType::TextEmbedding), "m", b).unwrap_err();
        assert_eq!(e.reason, "Cannot resolve conflicting task_type parameter in the request URL [text_embedding] and the request body [rerank]");
        // A model that cannot do the task.
        let e = put(Some(TaskType::Completion), "m", minilm(json!({}))).unwrap_err();
        assert_eq!((e.status, e.error_type), (400, "status_exception"));
        assert_eq!(e.reason, "Model [all-minilm-l6-v2] does not support task type [completion]; it supports [text_embedding, rerank]");
    }

    #[test]
    fn services() {
        let body = json!({"service": "elser", "service_settings": {"model_id": "splade-tiny", "num_allocations": 1}});
        let e = put(Some(TaskType::SparseEmbedding), "s", body).unwrap();
        assert_eq!(e.service, "elasticsearch");
        // `elser` defaults the model; `elasticsearch` needs one.
        let body = json!({"service": "elser", "service_settings": {"num_allocations": 1}});
        let e = put(None, "s", body.clone()).unwrap();
        assert_eq!(
            (
                e.task_type,
                e.service.as_str(),
                e.service_settings.model_id.as_str()
            ),
            (TaskType::SparseEmbedding, "elasticsearch", "splade-tiny")
        );
        let mut b = body;
        b["service"] = json!("elasticsearch");
        assert_eq!(
            put(Some(TaskType::SparseEmbedding), "s", b)
                .unwrap_err()
                .reason,
            "Error parsing service settings, model_id must be provided"
        );
        let mut b = minilm(json!({}));
        b["service"] = json!("elser");
        let e = put(Some(TaskType::TextEmbedding), "s", b.clone()).unwrap_err();
        assert_eq!(
            e.reason,
            "The [elser] service does not support task type [text_embedding]"
        );
        b["service"] = json!("openai");
        assert_eq!(
            put(Some(TaskType::TextEmbedding), "s", b.clone())
                .unwrap_err()
                .reason,
            "Unknown service [openai]"
        );
        b.as_object_mut().unwrap().remove("service");
        assert_eq!(
            put(Some(TaskType::TextEmbedding), "s", b)
                .unwrap_err()
                .reason,
            "Model configuration is missing a service"
        );
    }

    #[test]
    fn model_rules() {
        let e = put(
            Some(TaskType::TextEmbedding),
            "x",
            json!({"service": "elasticsearch", "service_settings": {"num_allocations": 1}}),
        )
        .unwrap_err();
        assert_eq!(
            (e.error_type, e.reason.as_str()),
            (
                "illegal_argument_exception",
                "Error parsing service settings, model_id must be provided"
            )
        );
        let e = put(Some(TaskType::TextEmbedding), "x", json!({"service": "elasticsearch", "service_settings": {"model_id": "e5", "num_allocations": 1}})).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.reason
                .contains("Was [e5]. Installed models: [all-minilm-l6-v2, splade-tiny, smollm2]"),
            "{}",
            e.reason
        );
        let e = put(
            Some(TaskType::TextEmbedding),
            "x",
            json!({"service": "elasticsearch"}),
        )
        .unwrap_err();
        assert_eq!(e.reason, "Missing required field [service_settings]");
    }

    #[test]
    fn allocation_rules() {
        let body = json!({"service": "elasticsearch", "service_settings": {"model_id": "all-minilm-l6-v2"}});
        let e = put(Some(TaskType::TextEmbedding), "x", body).unwrap_err();
        assert_eq!(e.error_type, "validation_exception");
        assert_eq!(e.reason, "Validation Failed: 1: [service_settings] does not contain one of the required settings [num_allocations, adaptive_allocations];");
        let e = put(
            Some(TaskType::TextEmbedding),
            "x",
            minilm(json!({"num_allocations": 0, "num_threads": 0})),
        )
        .unwrap_err();
        assert_eq!(e.reason, "Validation Failed: 1: [service_settings] Invalid value [0]. [num_allocations] must be a positive integer;2: [service_settings] Invalid value [0]. [num_threads] must be a positive integer;3: [service_settings] does not contain one of the required settings [num_allocations, adaptive_allocations];");
        let e = put(
            Some(TaskType::TextEmbedding),
            "x",
            minilm(json!({"num_threads": "two"})),
        )
        .unwrap_err();
        assert_eq!(e.reason, "Validation Failed: 1: field [num_threads] is not of the expected type. The value [two] cannot be converted to a [Integer];");
        let e = put(Some(TaskType::TextEmbedding), "x",
            minilm(json!({"adaptive_allocations": {"enabled": true, "min_number_of_allocations": 3, "max_number_of_allocations": 2, "foo": 1}}))).unwrap_err();
        assert!(e
            .reason
            .contains("[adaptive_allocations] does not allow the setting [foo]"));
        assert!(e.reason.contains(
            "[min_number_of_allocations] must not be larger than [max_number_of_allocations]"
        ));
        // adaptive alone is enough
        let body = json!({"service": "elasticsearch", "service_settings": {"model_id": "all-minilm-l6-v2", "adaptive_allocations": {"enabled": true}}});
        let e = put(Some(TaskType::TextEmbedding), "x", body).unwrap();
        assert!(e.service_settings.adaptive_allocations.unwrap().enabled);
    }

    #[test]
    fn element_type_only_for_dense_embeddings() {
        let e = put(
            Some(TaskType::Rerank),
            "x",
            minilm(json!({"element_type": "byte"})),
        )
        .unwrap_err();
        assert_eq!(e.reason, "Model configuration contains settings [{element_type=byte}] unknown to the [elasticsearch] service");
        let e = put(
            Some(TaskType::TextEmbedding),
            "x",
            minilm(json!({"element_type": "int4"})),
        )
        .unwrap_err();
        assert_eq!(e.reason, "Validation Failed: 1: [service_settings] Invalid value [int4] received. [element_type] must be one of [bit, byte, float];");
        let e = put(
            Some(TaskType::TextEmbedding),
            "x",
            minilm(json!({"deployment_id": "d"})),
        )
        .unwrap_err();
        assert_eq!(e.reason, "Model configuration contains settings [{deployment_id=d}] unknown to the [elasticsearch] service");
    }

    #[test]
    fn body_rules() {
        let mut b = minilm(json!({}));
        b["foo"] = json!("bar");
        let e = put(Some(TaskType::TextEmbedding), "x", b).unwrap_err();
        assert_eq!((e.status, e.reason.as_str()), (400, "Model configuration contains settings [{foo=bar}] unknown to the [elasticsearch] service"));
        let mut b = minilm(json!({}));
        b["chunking_settings"] = json!({"strategy": "word"});
        let e = put(Some(TaskType::Rerank), "x", b).unwrap_err();
        assert!(e.reason.contains("chunking_settings="));
        let e = parse_put(Some(TaskType::TextEmbedding), "x", b"{bad", &catalog()).unwrap_err();
        assert_eq!(e.error_type, "parse_exception");
        assert!(
            e.reason
                .starts_with("Failed to parse content to map: [1:2]"),
            "{}",
            e.reason
        );
        let e = parse_put(Some(TaskType::TextEmbedding), "x", b"", &catalog()).unwrap_err();
        assert_eq!(e.reason, "request body is required");
        let e = parse_put(Some(TaskType::TextEmbedding), "x", b"[]", &catalog()).unwrap_err();
        assert_eq!(e.error_type, "parse_exception");
    }

    #[test]
    fn ids_are_checked() {
        let e = put(Some(TaskType::TextEmbedding), "My-E5", minilm(json!({}))).unwrap_err();
        assert_eq!(e.error_type, "action_request_validation_exception");
        let e = put(Some(TaskType::TextEmbedding), ".my-e5", minilm(json!({}))).unwrap_err();
        assert!(
            e.reason.contains("Invalid inference_id; '.my-e5'"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn chunking_settings_only_for_embedding_tasks() {
        let mut b = minilm(json!({}));
        b["chunking_settings"] = json!({"strategy": "word", "max_chunk_size": 100, "overlap": 10});
        let e = put(Some(TaskType::TextEmbedding), "x", b.clone()).unwrap();
        assert_eq!(e.chunking_settings, Some(b["chunking_settings"].clone()));
        let e = put(Some(TaskType::Rerank), "x", b.clone()).unwrap_err();
        assert!(
            e.reason.contains("unknown to the [elasticsearch] service"),
            "{}",
            e.reason
        );
        b["chunking_settings"] = json!({"max_chunk_size": 100});
        let e = put(Some(TaskType::TextEmbedding), "x", b).unwrap_err();
        assert_eq!(
            e.reason,
            "Can't generate Chunker without ChunkingStrategy provided"
        );
    }

    #[test]
    fn task_settings_rules() {
        let mut b = minilm(json!({}));
        b["task_settings"] = json!({"top_n": 0, "return_documents": "yes"});
        let e = put(Some(TaskType::Rerank), "x", b.clone()).unwrap_err();
        assert_eq!(e.reason, "Validation Failed: 1: field [return_documents] is not of the expected type. The value [yes] cannot be converted to a [Boolean];2: [task_settings] Invalid value [0]. [top_n] must be a positive integer;");
        b["task_settings"] = json!({"top_n": 3, "return_documents": false});
        assert_eq!(
            put(Some(TaskType::Rerank), "x", b.clone())
                .unwrap()
                .task_settings["top_n"],
            3
        );
        b["task_settings"] = json!({"input_type": "query"});
        let e = put(Some(TaskType::TextEmbedding), "x", b.clone()).unwrap_err();
        assert!(e
            .reason
            .contains("[input_type] must be one of [classification, clustering, ingest, search]"));
        b["task_settings"] = json!({"user": "me"});
        let e = put(Some(TaskType::TextEmbedding), "x", b).unwrap_err();
        assert_eq!(e.reason, "Model configuration contains settings [{user=me}] unknown to the [elasticsearch] service");
        let mut errors = vec![];
        check_task_settings(
            TaskType::Completion,
            json!({"max_tokens": 5, "temperature": 0.7, "top_p": 2})
                .as_object()
                .unwrap(),
            &mut errors,
        )
        .unwrap();
        assert_eq!(
            errors,
            vec![
                "[task_settings] Invalid value [2]. [top_p] must be between [0.0] and [1.0]"
                    .to_string()
            ]
        );
    }

    fn existing() -> Endpoint {
        let mut b = minilm(json!({}));
        b["task_settings"] = json!({"top_n": 3});
        put(Some(TaskType::Rerank), "r", b).unwrap()
    }

    fn update(task: Option<TaskType>, body: Value) -> Result<Endpoint, EsError> {
        parse_update(&existing(), task, body.to_string().as_bytes())
    }

    #[test]
    fn update_changes_allocations_and_merges_task_settings() {
        let e = update(Some(TaskType::Rerank), json!({"service_settings": {"num_allocations": 4, "num_threads": 2, "model_id": "all-minilm-l6-v2"},
                                           "task_settings": {"return_documents": false}})).unwrap();
        assert_eq!(e.service_settings.num_allocations, Some(4));
        assert_eq!(e.service_settings.num_threads, 2);
        assert_eq!(
            e.task_settings,
            json!({"top_n": 3, "return_documents": false})
                .as_object()
                .unwrap()
                .clone()
        );
        let e = update(None, json!({"service_settings": {"adaptive_allocations": {"enabled": true, "max_number_of_allocations": 8}}})).unwrap();
        assert_eq!(
            e.service_settings.adaptive_allocations,
            Some(AdaptiveAllocations {
                enabled: true,
                min_number_of_allocations: None,
                max_number_of_allocations: Some(8)
            })
        );
        assert_eq!(e.service_settings.num_allocations, Some(1));
    }

    #[test]
    fn update_refusals() {
        let e = update(
            None,
            json!({"service_settings": {"model_id": "splade-tiny"}}),
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.reason.contains("cannot be changed"), "{}", e.reason);
        let e = update(None, json!({"service_settings": {"element_type": "bit"}})).unwrap_err();
        assert!(e
            .reason
            .contains("[{element_type=bit}] that cannot be updated"));
        let e = update(None, json!({"service": "elser"})).unwrap_err();
        assert_eq!(e.reason, "Request contained fields which cannot be updated, remove these fields and try again [{service=elser}]");
        let e = update(
            Some(TaskType::TextEmbedding),
            json!({"task_settings": {"top_n": 1}}),
        )
        .unwrap_err();
        assert_eq!(
            e.reason,
            "Task type must match the task type of the existing endpoint"
        );
        let e = update(
            None,
            json!({"task_type": "completion", "task_settings": {"top_n": 1}}),
        )
        .unwrap_err();
        assert_eq!(
            e.reason,
            "Task type must match the task type of the existing endpoint"
        );
        assert_eq!(
            update(None, json!({})).unwrap_err().reason,
            "Request body is empty"
        );
        let e = update(None, json!({"task_settings": {"top_n": -1}})).unwrap_err();
        assert_eq!(e.error_type, "validation_exception");
        let e = update(None, json!({"service_settings": {"num_allocations": 0}})).unwrap_err();
        assert!(e.reason.contains("must be a positive integer"));
        let mut pre = existing();
        pre.inference_id = ".rerank-v1-elasticsearch".into();
        let e = parse_update(&pre, None, br#"{"task_settings": {"top_n": 1}}"#).unwrap_err();
        assert!(e.reason.contains("reserved inference endpoint"));
    }

    #[test]
    fn listing_and_delete_bodies() {
        assert_eq!(
            endpoints_response(&[existing()])["endpoints"][0]["inference_id"],
            "r"
        );
        assert_eq!(
            delete_response(false),
            json!({"acknowledged": true, "pipelines": [], "indexes": []})
        );
        assert_eq!(
            delete_response(true),
            json!({"acknowledged": false, "pipelines": [], "indexes": [], "error_message": ""})
        );
    }

    #[test]
    fn rerank_takes_the_long_document_settings() {
        let catalog = Catalog::new(vec![ModelInfo {
            model_id: "m".into(),
            task_types: vec![TaskType::Rerank, TaskType::TextEmbedding],
        }]);
        let body = |settings: Value| {
            serde_json::to_vec(&json!({"service": "elasticsearch", "service_settings": settings}))
                .unwrap()
        };
        let e = parse_put(
            Some(TaskType::Rerank),
            "r",
            &body(json!({"model_id": "m", "num_allocations": 1, "long_document_strategy": "chunk", "max_chunks_per_doc": 3})),
            &catalog,
        )
        .unwrap();
        assert_eq!(
            e.service_settings.long_document_strategy,
            Some(LongDocumentStrategy::Chunk)
        );
        assert_eq!(e.service_settings.max_chunks_per_doc, Some(3));
        let bad =
            body(json!({"model_id": "m", "num_allocations": 1, "long_document_strategy": "split"}));
        assert_eq!(
            parse_put(Some(TaskType::Rerank), "r", &bad, &catalog)
                .unwrap_err()
                .status,
            400
        );
        let elsewhere =
            body(json!({"model_id": "m", "num_allocations": 1, "max_chunks_per_doc": 3}));
        assert_eq!(
            parse_put(Some(TaskType::TextEmbedding), "r", &elsewhere, &catalog)
                .unwrap_err()
                .status,
            400
        );
    }
}
