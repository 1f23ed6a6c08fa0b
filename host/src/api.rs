//! The HTTP side: every request goes through es-wire's router, and every
//! answer, error or not, carries `X-Elastic-Product: Elasticsearch`.

use crate::catalog::Models;
use crate::generation;
use crate::pool::{Pool, PoolConfig};
use crate::runtime::{Runtime, TaskKind};
use crate::store::EndpointStore;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use es_wire::{Catalog, Endpoint, EsError, Limits, Route, TaskType};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Idle instances above an endpoint's minimum are dropped after this long.
const IDLE_INSTANCE_TTL: Duration = Duration::from_secs(300);

pub struct App {
    pub runtime: Arc<Runtime>,
    pub models: Models,
    pub catalog: Catalog,
    pub preconfigured: Vec<Endpoint>,
    pub store: EndpointStore,
    pub limits: Limits,
    /// Requests waiting for an instance, per endpoint, before 429.
    pub max_queue: usize,
    pub node_name: String,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
}

impl App {
    pub fn new(
        runtime: Arc<Runtime>,
        models: Models,
        store: EndpointStore,
        limits: Limits,
        max_queue: usize,
    ) -> Arc<Self> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
        Arc::new(Self {
            catalog: models.catalog(),
            preconfigured: models.preconfigured(cores),
            runtime,
            models,
            store,
            limits,
            max_queue,
            node_name: "edge-inference".into(),
            pools: Mutex::new(HashMap::new()),
        })
    }

    /// Loads the minimum instances of every endpoint in the background, and
    /// starts shrinking idle pools.
    pub fn warm_all(self: &Arc<Self>) -> anyhow::Result<()> {
        for endpoint in self.preconfigured.iter().chain(&self.store.list()?) {
            match self.pool(endpoint) {
                Ok(pool) => pool.warm(),
                Err(e) => {
                    tracing::warn!(endpoint = %endpoint.inference_id, error = %e, "endpoint cannot serve")
                }
            }
        }
        let app = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                let Some(app) = app.upgrade() else { break };
                let pools: Vec<Arc<Pool>> = app.pools.lock().unwrap().values().cloned().collect();
                pools.iter().for_each(|p| p.shrink(IDLE_INSTANCE_TTL));
            }
        });
        Ok(())
    }

    fn endpoint(&self, id: &str) -> Result<Endpoint, EsError> {
        if let Some(e) = self.preconfigured.iter().find(|e| e.inference_id == id) {
            return Ok(e.clone());
        }
        self.store
            .get(id)
            .map_err(internal)?
            .ok_or_else(|| EsError::endpoint_not_found(id))
    }

    fn endpoints(&self) -> Result<Vec<Endpoint>, EsError> {
        let mut all = self.preconfigured.clone();
        all.extend(self.store.list().map_err(internal)?);
        all.sort_by(|a, b| a.inference_id.cmp(&b.inference_id));
        Ok(all)
    }

    /// The instance pool serving `endpoint`, created on first use.
    fn pool(&self, endpoint: &Endpoint) -> Result<Arc<Pool>, EsError> {
        let mut pools = self.pools.lock().unwrap();
        if let Some(pool) = pools.get(&endpoint.inference_id) {
            return Ok(pool.clone());
        }
        let model_id = &endpoint.service_settings.model_id;
        let model = self.models.by_id.get(model_id).ok_or_else(|| {
            EsError::illegal_argument(format!(
                "model [{model_id}] of inference endpoint [{}] is not installed; run `python3 models/fetch.py`",
                endpoint.inference_id
            ))
        })?;
        let kind = TaskKind::for_task_type(endpoint.task_type);
        let (min, max) = allocations(endpoint);
        let pool = Pool::new(
            self.runtime.clone(),
            PoolConfig {
                kind,
                model_dir: model.dir.clone(),
                min,
                max,
                max_queue: self.max_queue,
            },
        );
        pools.insert(endpoint.inference_id.clone(), pool.clone());
        Ok(pool)
    }

    fn forget_pool(&self, id: &str) {
        self.pools.lock().unwrap().remove(id);
    }
}

/// (instances kept warm, instances at most) from the endpoint's settings.
fn allocations(endpoint: &Endpoint) -> (usize, usize) {
    let s = &endpoint.service_settings;
    match (s.num_allocations, s.adaptive_allocations) {
        (_, Some(a)) if a.enabled => {
            let min = a.min_number_of_allocations.unwrap_or(0) as usize;
            let max = a
                .max_number_of_allocations
                .map_or(min.max(1), |m| m as usize);
            (min, max.max(min).max(1))
        }
        (Some(n), _) => (n as usize, n.max(1) as usize),
        _ => (1, 1),
    }
}

fn internal(e: anyhow::Error) -> EsError {
    tracing::error!(error = %format!("{e:#}"), "internal error");
    EsError::internal(format!("{e:#}"))
}

pub fn router(app: Arc<App>) -> axum::Router {
    router_with_demo(app, None)
}

/// The API, and with `demo` the browser demo (`crate::demo`) under the same layers.
pub fn router_with_demo(app: Arc<App>, demo: Option<std::path::PathBuf>) -> axum::Router {
    let routes = demo.map(crate::demo::routes).unwrap_or_default();
    routes
        .fallback(handle)
        .with_state(app)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            error_response(
                &EsError::internal("the server failed while handling this request"),
                false,
            )
        }))
}

async fn handle(State(app): State<Arc<App>>, request: Request) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let pretty = es_wire::wants_pretty(request.uri().query());
    let mut response = serve(&app, request)
        .await
        .unwrap_or_else(|e| error_response(&e, pretty));
    let not_allowed = response.status() == StatusCode::METHOD_NOT_ALLOWED;
    let overloaded = response.status() == StatusCode::TOO_MANY_REQUESTS;
    let too_large = response.status() == StatusCode::PAYLOAD_TOO_LARGE;
    let headers = response.headers_mut();
    if too_large {
        // The rest of the body is never read, so the connection cannot carry
        // another request: say so, or a client reuses it and its next
        // request finds it closed.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if overloaded {
        // A queue slot usually frees within a request's time; clients retry then.
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    headers.insert(
        es_wire::PRODUCT_HEADER.0,
        HeaderValue::from_static(es_wire::PRODUCT_HEADER.1),
    );
    if not_allowed {
        let allow = es_wire::allowed_methods(&path).join(",");
        headers.insert(
            header::ALLOW,
            HeaderValue::from_str(&allow).expect("method names are ASCII"),
        );
    }
    tracing::info!(
        %method,
        %path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

async fn serve(app: &Arc<App>, request: Request) -> Result<Response, EsError> {
    let (parts, body) = request.into_parts();
    let header = |name: header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let content_type = es_wire::check_accept(header(header::ACCEPT))?;
    let pretty = es_wire::wants_pretty(parts.uri.query());
    let route = es_wire::route(parts.method.as_str(), parts.uri.path(), parts.uri.query())?;
    let reply = |value: Value| Ok(json_response(StatusCode::OK, &value, content_type, pretty));

    // Bodies are read only by the routes that take one, within the limit.
    let declared_len = header(header::CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok());
    let read_body = || async {
        if let Some(len) = declared_len {
            app.limits.check_body_len(len)?;
        }
        let bytes = axum::body::to_bytes(body, app.limits.max_body_bytes)
            .await
            .map_err(|_| {
                EsError::body_too_large(app.limits.max_body_bytes + 1, app.limits.max_body_bytes)
            })?;
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            es_wire::check_content_type(header(header::CONTENT_TYPE))?;
        }
        Ok::<_, EsError>(bytes)
    };

    match route {
        Route::ClusterInfo => reply(es_wire::cluster_info(
            &app.node_name,
            "edge-inference",
            es_wire::ES_VERSION,
        )),
        Route::Ping => Ok(StatusCode::OK.into_response()),
        Route::Options { allow } => Ok(Response::builder()
            .header(header::ALLOW, allow.join(","))
            .body(Body::empty())
            .expect("valid response")),
        Route::GetServices { task_type } => {
            reply(es_wire::services_response(&app.catalog, task_type))
        }
        Route::GetEndpoints {
            task_type,
            inference_id,
        } => {
            let endpoints = match inference_id {
                Some(id) => {
                    let endpoint = app.endpoint(&id)?;
                    check_requested(task_type, &endpoint)?;
                    vec![endpoint]
                }
                None => app
                    .endpoints()?
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
            let body = read_body().await?;
            let endpoint = es_wire::parse_put(task_type, &inference_id, &body, &app.catalog)?;
            if !app.store.create(&endpoint).map_err(internal)? {
                return Err(EsError::already_exists(&inference_id));
            }
            app.pool(&endpoint)?.warm();
            tracing::info!(endpoint = %inference_id, model = %endpoint.service_settings.model_id, "endpoint created");
            reply(endpoint.info_json())
        }
        Route::Update {
            task_type,
            inference_id,
        } => {
            let body = read_body().await?;
            let existing = app.endpoint(&inference_id)?;
            let updated = es_wire::parse_update(&existing, task_type, &body)?;
            app.store.replace(&updated).map_err(internal)?;
            // In-flight requests finish on the old pool; new ones get the new size.
            app.forget_pool(&inference_id);
            app.pool(&updated)?.warm();
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
            let endpoint = app.endpoint(&inference_id)?;
            check_requested(task_type, &endpoint)?;
            if !dry_run {
                app.store.delete(&inference_id).map_err(internal)?;
                app.forget_pool(&inference_id);
                tracing::info!(endpoint = %inference_id, "endpoint deleted");
            }
            reply(es_wire::delete_response(&[]))
        }
        Route::Infer {
            task_type,
            inference_id,
            timeout,
        } => {
            let endpoint = app.endpoint(&inference_id)?;
            let task = es_wire::check_inference_target(task_type, &endpoint, false)?;
            let body = read_body().await?;
            let request = es_wire::parse_inference(task, &body, &app.limits)?;
            let deadline = timeout
                .or(request.timeout)
                .resolve(task)
                .map(|d| Instant::now() + d);
            reply(infer(app, &endpoint, task, request, deadline).await?)
        }
        Route::Stream {
            task_type,
            inference_id,
            timeout,
        } => {
            let endpoint = app.endpoint(&inference_id)?;
            let task = es_wire::check_inference_target(task_type, &endpoint, true)?;
            let body = read_body().await?;
            let (request, body_timeout) = match task {
                TaskType::ChatCompletion => (
                    generation::chat_request(&body, &endpoint.task_settings, &app.limits)?,
                    es_wire::Timeout::Default,
                ),
                _ => {
                    let request = es_wire::parse_inference(task, &body, &app.limits)?;
                    let timeout = request.timeout;
                    (generation::completion_request(request, &endpoint), timeout)
                }
            };
            let deadline = timeout
                .or(body_timeout)
                .resolve(task)
                .map(|d| Instant::now() + d);
            let model_id = endpoint.service_settings.model_id.clone();
            generation::stream(app.pool(&endpoint)?, deadline, task, model_id, request).await
        }
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

async fn infer(
    app: &Arc<App>,
    endpoint: &Endpoint,
    task: TaskType,
    request: es_wire::InferenceRequest,
    deadline: Option<Instant>,
) -> Result<Value, EsError> {
    let pool = app.pool(endpoint)?;
    if task == TaskType::Completion {
        return generation::complete(
            pool,
            deadline,
            generation::completion_request(request, endpoint),
        )
        .await;
    }
    let options = request.options(endpoint);
    let input = request.input;
    match task {
        TaskType::TextEmbedding | TaskType::Embedding => {
            let embeddings = pool
                .run(deadline, move |i, timeout| {
                    i.embed(timeout, &input, options.input_type)
                })
                .await?;
            let vectors: Vec<Vec<f32>> = embeddings.into_iter().map(|e| e.values).collect();
            Ok(es_wire::text_embedding_response(
                task,
                &vectors,
                endpoint.element_type(),
            ))
        }
        TaskType::SparseEmbedding => {
            let embeddings = pool
                .run(deadline, move |i, timeout| {
                    i.sparse_embed(timeout, &input, options.input_type)
                })
                .await?;
            let items: Vec<(bool, Vec<(String, f32)>)> = embeddings
                .into_iter()
                .map(|e| (e.truncated, e.tokens))
                .collect();
            Ok(es_wire::sparse_embedding_response(&items))
        }
        TaskType::Rerank => {
            let query = request.query.unwrap_or_default();
            let settings = &endpoint.service_settings;
            let (strategy, max_chunks) = (
                settings.long_document_strategy.unwrap_or_default(),
                settings.max_chunks_per_doc,
            );
            let documents = input.clone();
            let scores = pool
                .run(deadline, move |i, timeout| {
                    i.rerank(timeout, &query, &documents, strategy, max_chunks)
                })
                .await?;
            Ok(es_wire::rerank_response(
                &scores,
                &input,
                options.top_n,
                options.return_documents,
            ))
        }
        other => Err(not_served(other)),
    }
}

fn not_served(task: TaskType) -> EsError {
    EsError::illegal_argument(format!(
        "task type [{}] is not served by this server yet",
        task.as_str()
    ))
}

fn json_response(status: StatusCode, value: &Value, content_type: &str, pretty: bool) -> Response {
    let body = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    }
    .expect("JSON values serialise");
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("static media type"),
    );
    headers.insert(
        es_wire::PRODUCT_HEADER.0,
        HeaderValue::from_static(es_wire::PRODUCT_HEADER.1),
    );
    response
}

pub fn error_response(err: &EsError, pretty: bool) -> Response {
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &err.to_json(), "application/json", pretty)
}
