//! The request logic, as the native host's `api.rs` does it: every request
//! goes through es-wire's router, parsers and response builders, so both
//! servers speak the same wire format.

use crate::store::{self, EndpointStore};
use crate::tasks::{self, Deadline, Prompt};
use es_wire::{Catalog, Endpoint, EsError, GenerationParams, Limits, Route, TaskType};
use serde_json::Value;
use std::time::Instant;

/// What the app knows besides the store: the models it can serve and its
/// settings (from Spin variables).
pub struct App<S> {
    pub store: S,
    pub catalog: Catalog,
    pub preconfigured: Vec<Endpoint>,
    pub limits: Limits,
    /// Where the model directories are mounted (`<models_dir>/<model id>`).
    pub models_dir: String,
    pub node_name: String,
}

/// An HTTP request, already read.
pub struct Incoming {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// One generation to stream as Server-Sent Events.
pub struct StreamPlan {
    pub task: TaskType,
    pub model_id: String,
    pub generation: tasks::Generation,
    /// The first chunk, pulled before answering so that an early failure is
    /// an ordinary error response.
    pub first: Option<String>,
}

pub enum Reply {
    Json {
        status: u16,
        body: Value,
        content_type: &'static str,
        pretty: bool,
    },
    Empty {
        status: u16,
        allow: Option<String>,
    },
    Stream(StreamPlan),
}

impl Reply {
    pub fn error(err: &EsError, pretty: bool) -> Self {
        Reply::Json {
            status: err.status,
            body: err.to_json(),
            content_type: "application/json",
            pretty,
        }
    }

    /// The body bytes of a JSON or empty reply.
    pub fn json_bytes(body: &Value, pretty: bool) -> Vec<u8> {
        if pretty {
            serde_json::to_vec_pretty(body)
        } else {
            serde_json::to_vec(body)
        }
        .expect("JSON values serialise")
    }
}

fn internal(e: String) -> EsError {
    EsError::internal(e)
}

impl<S: EndpointStore> App<S> {
    async fn endpoint(&self, id: &str) -> Result<Endpoint, EsError> {
        if let Some(e) = self.preconfigured.iter().find(|e| e.inference_id == id) {
            return Ok(e.clone());
        }
        store::load(&self.store, id)
            .await
            .map_err(internal)?
            .ok_or_else(|| EsError::endpoint_not_found(id))
    }

    async fn endpoints(&self) -> Result<Vec<Endpoint>, EsError> {
        let mut all = self.preconfigured.clone();
        all.extend(store::list(&self.store).await.map_err(internal)?);
        all.sort_by(|a, b| a.inference_id.cmp(&b.inference_id));
        Ok(all)
    }

    /// Answers one request; errors become Elasticsearch error envelopes.
    pub async fn handle(&self, request: Incoming) -> Reply {
        let pretty = es_wire::wants_pretty(request.query.as_deref());
        self.serve(request)
            .await
            .unwrap_or_else(|e| Reply::error(&e, pretty))
    }

    async fn serve(&self, request: Incoming) -> Result<Reply, EsError> {
        let content_type = es_wire::check_accept(request.accept.as_deref())?;
        let pretty = es_wire::wants_pretty(request.query.as_deref());
        let route = es_wire::route(&request.method, &request.path, request.query.as_deref())?;
        let reply = |body: Value| {
            Ok(Reply::Json {
                status: 200,
                body,
                content_type,
                pretty,
            })
        };
        // Bodies count only for the routes that take one.
        let body = || -> Result<&[u8], EsError> {
            self.limits.check_body_len(request.body.len())?;
            if !request.body.iter().all(u8::is_ascii_whitespace) {
                es_wire::check_content_type(request.content_type.as_deref())?;
            }
            Ok(&request.body)
        };

        match route {
            Route::ClusterInfo => reply(es_wire::cluster_info(
                &self.node_name,
                "edge-inference",
                es_wire::ES_VERSION,
            )),
            Route::Ping => Ok(Reply::Empty {
                status: 200,
                allow: None,
            }),
            Route::Options { allow } => Ok(Reply::Empty {
                status: 200,
                allow: Some(allow.join(",")),
            }),
            Route::GetServices { task_type } => {
                reply(es_wire::services_response(&self.catalog, task_type))
            }
            Route::GetEndpoints {
                task_type,
                inference_id,
            } => {
                let endpoints = match inference_id {
                    Some(id) => {
                        let endpoint = self.endpoint(&id).await?;
                        check_requested(task_type, &endpoint)?;
                        vec![endpoint]
                    }
                    None => self
                        .endpoints()
                        .await?
                        .into_iter()
                        .filter(|e| task_type.is_none_or(|t| t == e.task_type))
                        .collect(),
                };
                reply(es_wire::endpoints_response(&endpoints))
            }
            Route::Put {
                task_type,
                inference_id,
            } => {
                let endpoint =
                    es_wire::parse_put(task_type, &inference_id, body()?, &self.catalog)?;
                // Key-value stores have no create-if-absent: a race between two
                // PUTs of one id is decided by the last write.
                if store::load(&self.store, &inference_id)
                    .await
                    .map_err(internal)?
                    .is_some()
                {
                    return Err(EsError::already_exists(&inference_id));
                }
                store::save(&self.store, &endpoint)
                    .await
                    .map_err(internal)?;
                reply(endpoint.info_json())
            }
            Route::Update {
                task_type,
                inference_id,
            } => {
                let existing = self.endpoint(&inference_id).await?;
                let updated = es_wire::parse_update(&existing, task_type, body()?)?;
                store::save(&self.store, &updated).await.map_err(internal)?;
                reply(updated.info_json())
            }
            Route::Delete {
                task_type,
                inference_id,
                dry_run,
                force: _,
            } => {
                if es_wire::is_reserved_id(&inference_id) {
                    return Err(EsError::reserved_endpoint(&inference_id));
                }
                let endpoint = self.endpoint(&inference_id).await?;
                check_requested(task_type, &endpoint)?;
                if !dry_run {
                    self.store.delete(&inference_id).await.map_err(internal)?;
                }
                reply(es_wire::delete_response(&[]))
            }
            Route::Infer {
                task_type,
                inference_id,
                timeout,
            } => {
                let start = Instant::now();
                let endpoint = self.endpoint(&inference_id).await?;
                let task = es_wire::check_inference_target(task_type, &endpoint, false)?;
                let request = es_wire::parse_inference(task, body()?, &self.limits)?;
                let deadline = Deadline {
                    start,
                    timeout: timeout.or(request.timeout).resolve(task),
                };
                reply(self.infer(&endpoint, task, request, deadline)?)
            }
            Route::Stream {
                task_type,
                inference_id,
                timeout: _,
            } => {
                let endpoint = self.endpoint(&inference_id).await?;
                let task = es_wire::check_inference_target(task_type, &endpoint, true)?;
                let (prompt, params) = match task {
                    TaskType::ChatCompletion => {
                        let chat = es_wire::parse_chat_completion(body()?, &self.limits)?;
                        let params = GenerationParams::for_chat(&chat, &endpoint.task_settings);
                        let messages = chat
                            .messages
                            .into_iter()
                            .map(|m| (es_wire::chat_role_name(m.role).to_string(), m.content))
                            .collect();
                        (Prompt::Chat(messages), params)
                    }
                    _ => {
                        let mut request = es_wire::parse_inference(task, body()?, &self.limits)?;
                        if request.input.len() != 1 {
                            return Err(EsError::request_validation(vec![
                                "streaming takes exactly one input".to_string(),
                            ]));
                        }
                        let params = GenerationParams::for_completion(&request, &endpoint);
                        (Prompt::Text(request.input.remove(0)), params)
                    }
                };
                let model_id = endpoint.service_settings.model_id.clone();
                let generation = tasks::generate(&self.models_dir, &model_id, prompt, &params)?;
                let first = tasks::next_chunk(&generation)?;
                Ok(Reply::Stream(StreamPlan {
                    task,
                    model_id,
                    generation,
                    first,
                }))
            }
        }
    }

    fn infer(
        &self,
        endpoint: &Endpoint,
        task: TaskType,
        request: es_wire::InferenceRequest,
        deadline: Deadline,
    ) -> Result<Value, EsError> {
        let model_id = &endpoint.service_settings.model_id;
        self.check_installed(endpoint)?;
        let options = request.options(endpoint);
        match task {
            TaskType::TextEmbedding | TaskType::Embedding => {
                let vectors = tasks::embed(
                    &self.models_dir,
                    model_id,
                    &request.input,
                    options.input_type,
                    deadline,
                )?;
                Ok(es_wire::text_embedding_response(
                    task,
                    &vectors,
                    endpoint.element_type(),
                ))
            }
            TaskType::SparseEmbedding => {
                let items = tasks::sparse_embed(
                    &self.models_dir,
                    model_id,
                    &request.input,
                    options.input_type,
                    deadline,
                )?;
                Ok(es_wire::sparse_embedding_response(&items))
            }
            TaskType::Rerank => {
                let settings = &endpoint.service_settings;
                let scores = tasks::rerank(
                    &self.models_dir,
                    model_id,
                    request.query.as_deref().unwrap_or_default(),
                    &request.input,
                    settings.long_document_strategy.unwrap_or_default(),
                    settings.max_chunks_per_doc,
                    deadline,
                )?;
                Ok(es_wire::rerank_response(
                    &scores,
                    &request.input,
                    options.top_n,
                    options.return_documents,
                ))
            }
            TaskType::Completion => {
                let params = GenerationParams::for_completion(&request, endpoint);
                let mut results = Vec::new();
                for input in request.input {
                    let generation =
                        tasks::generate(&self.models_dir, model_id, Prompt::Text(input), &params)?;
                    let mut text = String::new();
                    while let Some(chunk) = tasks::next_chunk(&generation)? {
                        deadline.check()?;
                        text.push_str(&chunk);
                    }
                    results.push(text);
                }
                Ok(es_wire::completion_response(&results))
            }
            other => Err(EsError::illegal_argument(format!(
                "task type [{}] is not served by this server yet",
                other.as_str()
            ))),
        }
    }

    fn check_installed(&self, endpoint: &Endpoint) -> Result<(), EsError> {
        let model_id = &endpoint.service_settings.model_id;
        if self.catalog.get(model_id).is_none() {
            return Err(EsError::illegal_argument(format!(
                "model [{model_id}] of inference endpoint [{}] is not installed in this app",
                endpoint.inference_id
            )));
        }
        Ok(())
    }
}

/// A GET or DELETE naming a task type must name the endpoint's.
fn check_requested(task_type: Option<TaskType>, endpoint: &Endpoint) -> Result<(), EsError> {
    match task_type {
        Some(t) if t != endpoint.task_type => {
            Err(EsError::requested_task_type_mismatch(t, endpoint.task_type))
        }
        _ => Ok(()),
    }
}

/// The catalog from the mounted model directories: every `<dir>/*/model.json`
/// beside a `SHA256SUMS` (a directory without one is an unfinished build).
pub fn scan_models(models_dir: &str) -> Catalog {
    #[derive(serde::Deserialize)]
    struct ModelJson {
        model_id: String,
        task: String,
    }
    let mut models = Vec::new();
    if let Ok(entries) = std::fs::read_dir(models_dir) {
        for entry in entries.flatten() {
            let dir = entry.path();
            let Ok(bytes) = std::fs::read(dir.join("model.json")) else {
                continue;
            };
            if !dir.join("SHA256SUMS").exists() {
                continue;
            }
            let Ok(meta) = serde_json::from_slice::<ModelJson>(&bytes) else {
                continue;
            };
            let Ok(task) = meta.task.parse::<TaskType>() else {
                continue;
            };
            models.push(es_wire::ModelInfo {
                model_id: meta.model_id,
                task_types: es_wire::model_task_types(task),
            });
        }
    }
    models.sort_by(|a, b| a.model_id.cmp(&b.model_id));
    Catalog::new(models)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use futures::executor::block_on;
    use serde_json::json;

    fn app() -> App<MemoryStore> {
        let catalog = Catalog::new(vec![es_wire::ModelInfo {
            model_id: "all-minilm-l6-v2".into(),
            task_types: es_wire::model_task_types(TaskType::TextEmbedding),
        }]);
        App {
            store: MemoryStore::default(),
            preconfigured: es_wire::preconfigured_endpoints(&catalog, 1),
            catalog,
            limits: Limits::default(),
            models_dir: crate::MODELS_DIR.into(),
            node_name: "test".into(),
        }
    }

    fn call(app: &App<MemoryStore>, method: &str, path: &str, body: Value) -> (u16, Value) {
        let incoming = Incoming {
            method: method.into(),
            path: path.into(),
            query: None,
            accept: None,
            content_type: Some("application/json".into()),
            body: if body.is_null() {
                Vec::new()
            } else {
                serde_json::to_vec(&body).unwrap()
            },
        };
        match block_on(app.handle(incoming)) {
            Reply::Json { status, body, .. } => (status, body),
            Reply::Empty { status, .. } => (status, Value::Null),
            Reply::Stream(_) => panic!("no stream expected"),
        }
    }

    #[test]
    fn endpoints_are_created_listed_and_deleted_in_the_store() {
        let app = app();
        let definition = json!({"service": "elasticsearch", "service_settings":
            {"model_id": "all-minilm-l6-v2", "num_allocations": 1, "num_threads": 1}});
        let (status, info) = call(
            &app,
            "PUT",
            "/_inference/text_embedding/mine",
            definition.clone(),
        );
        assert_eq!(status, 200, "{info}");
        assert_eq!(info["inference_id"], "mine");
        let (status, again) = call(&app, "PUT", "/_inference/text_embedding/mine", definition);
        assert_eq!(status, 400);
        assert_eq!(again["error"]["type"], "resource_already_exists_exception");

        let (_, all) = call(&app, "GET", "/_inference/_all", Value::Null);
        let ids: Vec<&str> = all["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["inference_id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                ".multilingual-e5-small-elasticsearch",
                ".rerank-v1-elasticsearch",
                "mine"
            ]
        );

        let (status, _) = call(&app, "DELETE", "/_inference/mine", Value::Null);
        assert_eq!(status, 200);
        let (status, gone) = call(&app, "GET", "/_inference/mine", Value::Null);
        assert_eq!(
            (status, gone["error"]["type"].as_str()),
            (404, Some("resource_not_found_exception"))
        );
        assert!(block_on(app.store.ids()).unwrap().is_empty());
    }

    #[test]
    fn preconfigured_endpoints_cannot_be_deleted_and_bad_models_are_refused() {
        let app = app();
        let (status, _) = call(
            &app,
            "DELETE",
            "/_inference/.multilingual-e5-small-elasticsearch",
            Value::Null,
        );
        assert_eq!(status, 400);
        let (status, envelope) = call(
            &app,
            "PUT",
            "/_inference/sparse_embedding/sparse",
            json!({"service": "elasticsearch", "service_settings":
                {"model_id": "splade-tiny", "num_allocations": 1, "num_threads": 1}}),
        );
        assert_eq!(
            status, 400,
            "splade-tiny is not in this catalog: {envelope}"
        );
        let (status, info) = call(&app, "GET", "/", Value::Null);
        assert_eq!((status, info["name"].as_str()), (200, Some("test")));
    }
}
