//! The request core: one request path for every server.
//!
//! A server adapter (the native host over axum, the Spin router over
//! spin-sdk) turns its framework's request into a [`Request`], calls
//! [`Service::handle`], and writes the [`Reply`] back: status, headers, and
//! either a body or a stream of Server-Sent Events. Everything in between is
//! here, once: routing, endpoint lookup and listing, body limits, parsing,
//! timeouts, task dispatch, chat handling and the error envelope.
//!
//! What differs between servers sits behind two traits, as
//! text-embeddings-inference puts its backends behind one:
//! - [`EndpointStore`]: where endpoint definitions live (the host's redb, Spin's
//!   key-value store);
//! - [`Backend`]: what runs a task (the host's pools of sandboxed instances,
//!   the task components Spin plugs into the router).
//!
//! Both are async so that either server can implement them over its own I/O.
//! The core itself does no I/O but through them, and holds no framework type.

use std::time::{Duration, Instant};

use crate::catalog::Catalog;
use crate::endpoint::{Endpoint, LongDocumentStrategy};
use crate::error::EsError;
use crate::generation::{GenerationParams, SseFrames};
use crate::infer::{InferenceRequest, Limits};
use crate::response::{SparseEmbedding, Usage};
use crate::route::Route;
use crate::types::{InputType, TaskType, Timeout};

/// Where endpoint definitions live. Preconfigured endpoints are not stored:
/// the [`Service`] answers for them.
#[allow(async_fn_in_trait)]
pub trait EndpointStore {
    async fn get(&self, id: &str) -> Result<Option<Endpoint>, EsError>;
    async fn list(&self) -> Result<Vec<Endpoint>, EsError>;
    /// Stores a new endpoint; false (and nothing written) when the id exists.
    async fn create(&self, endpoint: &Endpoint) -> Result<bool, EsError>;
    async fn replace(&self, endpoint: &Endpoint) -> Result<(), EsError>;
    async fn delete(&self, id: &str) -> Result<(), EsError>;
}

/// How a rerank endpoint treats documents longer than the model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RerankOptions {
    pub long_document_strategy: LongDocumentStrategy,
    /// With `chunk`: score at most this many chunks per document.
    pub max_chunks_per_doc: Option<u32>,
}

/// What to generate from.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Raw text, continued as it is.
    Text(String),
    /// `(role, content)` messages, rendered with the model's chat template.
    Chat(Vec<(String, String)>),
}

/// One call into a task: what the [`Backend`] runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// Dense embeddings, one per input, in input order.
    Embed {
        inputs: Vec<String>,
        input_type: Option<InputType>,
    },
    /// Sparse embeddings, one per input, in input order.
    SparseEmbed {
        inputs: Vec<String>,
        input_type: Option<InputType>,
    },
    /// One relevance score per document, in input order.
    Rerank {
        query: String,
        documents: Vec<String>,
        options: RerankOptions,
    },
    /// Starts one generation.
    Generate {
        prompt: Prompt,
        params: GenerationParams,
    },
}

/// A task's answer, one variant per [`Task`].
pub enum Answer<G> {
    Embeddings(Vec<Vec<f32>>),
    SparseEmbeddings(Vec<SparseEmbedding>),
    Scores(Vec<f32>),
    Generation(G),
}

/// How a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GenerationEnd {
    /// `stop` or `length`; none when it was stopped from outside.
    pub finish_reason: Option<&'static str>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// A generation in progress: its text, chunk by chunk. Dropping it stops it.
#[allow(async_fn_in_trait)]
pub trait Generation {
    /// The next piece of text, or none once the generation has ended.
    async fn next_chunk(&mut self) -> Result<Option<String>, EsError>;
    /// How it ended (meaningful once `next_chunk` answered none).
    fn end(&self) -> GenerationEnd;
}

/// One call into a task: what to run, for which endpoint (whose
/// `service_settings.model_id` is installed: the service checked), and
/// within which deadline. The backend must honour the deadline: it answers
/// [`Deadline::error`] once it has passed.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub endpoint: &'a Endpoint,
    pub task: Task,
    pub deadline: Deadline,
}

/// What runs the tasks, one [`Call`] at a time.
#[allow(async_fn_in_trait)]
pub trait Backend {
    type Generation: Generation;

    async fn run(&self, call: Call<'_>) -> Result<Answer<Self::Generation>, EsError>;

    /// Whether this backend can serve `endpoint`, asked before it is stored:
    /// an endpoint it refuses is never saved.
    fn check(&self, _endpoint: &Endpoint) -> Result<(), EsError> {
        Ok(())
    }

    /// An endpoint was created or updated: a backend that keeps resources per
    /// endpoint (warm instances) makes them anew.
    fn endpoint_saved(&self, _endpoint: &Endpoint) -> Result<(), EsError> {
        Ok(())
    }

    /// An endpoint was deleted.
    fn endpoint_deleted(&self, _id: &str) {}
}

/// A request's deadline: when its `timeout` runs out, if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Option<Instant>,
    timeout: Duration,
}

impl Deadline {
    /// `timeout` from `start`; none means never.
    pub fn from(start: Instant, timeout: Option<Duration>) -> Self {
        Self {
            at: timeout.and_then(|t| start.checked_add(t)),
            timeout: timeout.unwrap_or_default(),
        }
    }

    /// When it runs out, if ever.
    pub fn instant(&self) -> Option<Instant> {
        self.at
    }

    /// The time left (zero once passed); none means no deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// The 408 to answer once it has passed, naming the request's timeout.
    pub fn error(&self) -> EsError {
        EsError::timed_out(self.timeout)
    }

    /// [`Deadline::error`] if it has passed.
    pub fn check(&self) -> Result<(), EsError> {
        match self.at {
            Some(at) if Instant::now() >= at => Err(self.error()),
            _ => Ok(()),
        }
    }
}

/// A request's body, read only by the routes that take one.
#[allow(async_fn_in_trait)]
pub trait RequestBody {
    /// The whole body, or 413 when it is longer than `limit` bytes.
    async fn read(self, limit: usize) -> Result<Vec<u8>, EsError>;
}

impl RequestBody for Vec<u8> {
    async fn read(self, limit: usize) -> Result<Vec<u8>, EsError> {
        if self.len() > limit {
            return Err(EsError::body_too_large(self.len(), limit));
        }
        Ok(self)
    }
}

/// An HTTP request, as the adapter got it.
pub struct Request<B> {
    pub method: String,
    /// The raw path, still percent-encoded.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    /// `Content-Length`, when declared: a body declared too large is refused
    /// before a byte of it is read.
    pub content_length: Option<usize>,
    pub body: B,
}

/// The answer: status, headers (every one the server must send), and body.
pub struct Reply<G> {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: ReplyBody<G>,
}

impl<G> Reply<G> {
    /// A JSON body, written straight from its typed form: through a
    /// `serde_json::Value`, each f32 would print as its exact f64
    /// (0.8999999761581421 for 0.9).
    fn json(status: u16, content_type: &str, body: &impl serde::Serialize, pretty: bool) -> Self {
        let bytes = if pretty {
            serde_json::to_vec_pretty(body)
        } else {
            serde_json::to_vec(body)
        }
        .expect("response bodies serialise");
        Self::with_body(status, content_type, ReplyBody::Full(bytes))
    }

    fn with_body(status: u16, content_type: &str, body: ReplyBody<G>) -> Self {
        Reply {
            status,
            headers: vec![
                ("content-type", content_type.to_string()),
                (crate::PRODUCT_HEADER.0, crate::PRODUCT_HEADER.1.to_string()),
            ],
            body,
        }
    }

    /// An error envelope, with the headers its status needs (but `Allow` on
    /// a 405, which [`Service::handle`] adds: it needs the path).
    pub fn error(err: &EsError, pretty: bool) -> Self {
        let mut reply = Self::json(err.status, "application/json", &err.to_json(), pretty);
        match err.status {
            // A queue slot usually frees within a request's time.
            429 => reply.headers.push(("retry-after", "1".into())),
            // The rest of the body is never read, so the connection cannot
            // carry another request: say so, or a client reuses it.
            413 => reply.headers.push(("connection", "close".into())),
            _ => {}
        }
        reply
    }
}

/// How a request wants its JSON answered: the media type it accepts, and
/// whether pretty.
#[derive(Debug, Clone, Copy)]
struct Json {
    content_type: &'static str,
    pretty: bool,
}

impl Json {
    fn ok<G>(self, body: &impl serde::Serialize) -> Result<Reply<G>, EsError> {
        Ok(Reply::json(200, self.content_type, body, self.pretty))
    }
}

pub enum ReplyBody<G> {
    Full(Vec<u8>),
    /// Server-Sent Events, pulled frame by frame.
    Events(Events<G>),
}

/// A streamed generation as SSE frames: each call to [`Events::next`] pulls
/// one chunk from the generation and renders it; past the deadline or on a
/// failure the stream ends with an `event: error` frame.
pub struct Events<G> {
    generation: G,
    frames: SseFrames,
    deadline: Deadline,
    /// The first pull's answer, made before the reply began.
    first: Option<Option<String>>,
    finished: bool,
}

impl<G: Generation> Events<G> {
    /// The next frame, or none once the stream is over.
    pub async fn next(&mut self) -> Option<String> {
        if self.finished {
            return None;
        }
        let next = match self.first.take() {
            Some(first) => Ok(first),
            None => match self.deadline.check() {
                Ok(()) => self.generation.next_chunk().await,
                Err(e) => Err(e),
            },
        };
        Some(match next {
            Ok(Some(chunk)) => self.frames.chunk(&chunk),
            Ok(None) => {
                self.finished = true;
                let end = self.generation.end();
                let usage = Usage {
                    prompt_tokens: end.prompt_tokens,
                    completion_tokens: end.completion_tokens,
                    total_tokens: end.prompt_tokens + end.completion_tokens,
                };
                self.frames.done(end.finish_reason, usage)
            }
            Err(e) => {
                self.finished = true;
                self.frames.error(&e)
            }
        })
    }
}

/// The request core over an endpoint store and a task backend.
pub struct Service<S, B> {
    pub store: S,
    pub backend: B,
    /// The installed models.
    pub catalog: Catalog,
    /// Endpoints that exist without being stored (see [`crate::PRECONFIGURED`]).
    pub preconfigured: Vec<Endpoint>,
    pub limits: Limits,
    /// `name` in `GET /`.
    pub node_name: String,
}

impl<S: EndpointStore, B: Backend> Service<S, B> {
    /// Answers one request; every error becomes an Elasticsearch error
    /// envelope.
    pub async fn handle<R: RequestBody>(&self, request: Request<R>) -> Reply<B::Generation> {
        let pretty = crate::wants_pretty(request.query.as_deref());
        let path = request.path.clone();
        self.serve(request, pretty).await.unwrap_or_else(|e| {
            let mut reply = Reply::error(&e, pretty);
            if e.status == 405 {
                reply
                    .headers
                    .push(("allow", crate::allowed_methods(&path).join(",")));
            }
            reply
        })
    }

    async fn serve<R: RequestBody>(
        &self,
        request: Request<R>,
        pretty: bool,
    ) -> Result<Reply<B::Generation>, EsError> {
        let start = Instant::now();
        let content_type = crate::check_accept(request.accept.as_deref())?;
        let route = crate::route(&request.method, &request.path, request.query.as_deref())?;
        let json = Json {
            content_type,
            pretty,
        };
        let Request {
            content_type: declared_type,
            content_length,
            body,
            ..
        } = request;
        // Bodies are read only by the routes that take one, within the limit.
        let body = || async {
            if let Some(len) = content_length {
                self.limits.check_body_len(len)?;
            }
            let bytes = body.read(self.limits.max_body_bytes).await?;
            if !bytes.iter().all(u8::is_ascii_whitespace) {
                crate::check_content_type(declared_type.as_deref())?;
            }
            Ok::<_, EsError>(bytes)
        };

        match route {
            Route::ClusterInfo => json.ok(&crate::cluster_info(
                &self.node_name,
                "edge-inference",
                crate::ES_VERSION,
            )),
            Route::Ping => Ok(empty(None)),
            Route::Options { allow } => Ok(empty(Some(allow.join(",")))),
            Route::GetServices { task_type } => {
                json.ok(&crate::services_response(&self.catalog, task_type))
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
                json.ok(&crate::endpoints_response(&endpoints))
            }
            Route::Put {
                task_type,
                inference_id,
            } => {
                let endpoint =
                    crate::parse_put(task_type, &inference_id, &body().await?, &self.catalog)?;
                self.backend.check(&endpoint)?;
                if !self.store.create(&endpoint).await? {
                    return Err(EsError::already_exists(&inference_id));
                }
                self.backend.endpoint_saved(&endpoint)?;
                json.ok(&endpoint.info_json())
            }
            Route::Update {
                task_type,
                inference_id,
            } => {
                let body = body().await?;
                let existing = self.endpoint(&inference_id).await?;
                let updated = crate::parse_update(&existing, task_type, &body)?;
                self.backend.check(&updated)?;
                self.store.replace(&updated).await?;
                self.backend.endpoint_saved(&updated)?;
                json.ok(&updated.info_json())
            }
            Route::Delete {
                task_type,
                inference_id,
                dry_run,
                force,
            } => {
                let reserved = crate::is_reserved_id(&inference_id);
                if reserved && !force {
                    return Err(EsError::reserved_endpoint(&inference_id));
                }
                let endpoint = self.endpoint(&inference_id).await?;
                check_requested(task_type, &endpoint)?;
                // Nothing here refers to an endpoint (no ingest pipelines or
                // mappings), so `force` has no reference check to skip. It
                // does let a preconfigured endpoint go: as in Elasticsearch,
                // its instances stop and it stays listed, loading again on
                // its next use.
                if !dry_run {
                    if !reserved {
                        self.store.delete(&inference_id).await?;
                    }
                    self.backend.endpoint_deleted(&inference_id);
                }
                json.ok(&crate::delete_response(dry_run))
            }
            Route::Infer {
                task_type,
                inference_id,
                timeout,
            } => {
                let endpoint = self.endpoint(&inference_id).await?;
                let task = crate::check_inference_target(task_type, &endpoint, false)?;
                let request = crate::parse_inference(task, &body().await?, &self.limits)?;
                let deadline = Deadline::from(start, timeout.or(request.timeout).resolve(task));
                self.infer(&endpoint, task, request, deadline, json).await
            }
            Route::Stream {
                task_type,
                inference_id,
                timeout,
            } => {
                let endpoint = self.endpoint(&inference_id).await?;
                let task = crate::check_inference_target(task_type, &endpoint, true)?;
                let (prompt, params, body_timeout) =
                    self.generation_request(task, &endpoint, &body().await?)?;
                let deadline = Deadline::from(start, timeout.or(body_timeout).resolve(task));
                let events = self
                    .stream(&endpoint, task, prompt, params, deadline)
                    .await?;
                let mut reply =
                    Reply::with_body(200, "text/event-stream", ReplyBody::Events(events));
                reply.headers.push(("cache-control", "no-cache".into()));
                Ok(reply)
            }
        }
    }

    async fn endpoint(&self, id: &str) -> Result<Endpoint, EsError> {
        if let Some(e) = self.preconfigured.iter().find(|e| e.inference_id == id) {
            return Ok(e.clone());
        }
        self.store
            .get(id)
            .await?
            .ok_or_else(|| EsError::endpoint_not_found(id))
    }

    async fn endpoints(&self) -> Result<Vec<Endpoint>, EsError> {
        let mut all = self.preconfigured.clone();
        all.extend(self.store.list().await?);
        all.sort_by(|a, b| a.inference_id.cmp(&b.inference_id));
        Ok(all)
    }

    /// A `_stream` body: chat messages for `chat_completion`, one input for
    /// `completion`; with the body's own `timeout`.
    fn generation_request(
        &self,
        task: TaskType,
        endpoint: &Endpoint,
        body: &[u8],
    ) -> Result<(Prompt, GenerationParams, Timeout), EsError> {
        if task == TaskType::ChatCompletion {
            let chat = crate::parse_chat_completion(body, &self.limits)?;
            let params = GenerationParams::for_chat(&chat, endpoint);
            let messages = chat
                .messages
                .into_iter()
                .map(|m| (crate::chat_role_name(m.role).to_string(), m.content))
                .collect();
            return Ok((Prompt::Chat(messages), params, Timeout::Default));
        }
        let mut request = crate::parse_inference(task, body, &self.limits)?;
        if request.input.len() != 1 {
            return Err(EsError::request_validation(vec![
                "streaming takes exactly one input".to_string(),
            ]));
        }
        let params = GenerationParams::for_completion(&request, endpoint);
        Ok((
            Prompt::Text(request.input.remove(0)),
            params,
            request.timeout,
        ))
    }

    /// Starts a generation and pulls its first chunk before answering, so that
    /// an early failure (a timeout, a bad prompt) is an ordinary error reply.
    async fn stream(
        &self,
        endpoint: &Endpoint,
        task: TaskType,
        prompt: Prompt,
        params: GenerationParams,
        deadline: Deadline,
    ) -> Result<Events<B::Generation>, EsError> {
        self.check_installed(endpoint)?;
        let mut generation = self.generate(endpoint, prompt, params, deadline).await?;
        let first = generation.next_chunk().await?;
        deadline.check()?;
        let frames = SseFrames::new(task, endpoint.service_settings.model_id.clone(), chat_id());
        Ok(Events {
            generation,
            frames,
            deadline,
            finished: false,
            first: Some(first),
        })
    }

    async fn infer(
        &self,
        endpoint: &Endpoint,
        task: TaskType,
        request: InferenceRequest,
        deadline: Deadline,
        json: Json,
    ) -> Result<Reply<B::Generation>, EsError> {
        self.check_installed(endpoint)?;
        let options = request.options(endpoint);
        let run = |task| {
            self.backend.run(Call {
                endpoint,
                task,
                deadline,
            })
        };
        match task {
            TaskType::TextEmbedding | TaskType::Embedding => {
                let inputs = request.input;
                let input_type = options.input_type;
                match run(Task::Embed { inputs, input_type }).await? {
                    Answer::Embeddings(vectors) => json.ok(&crate::text_embedding_response(
                        task,
                        &vectors,
                        endpoint.element_type(),
                    )),
                    _ => Err(wrong_answer()),
                }
            }
            TaskType::SparseEmbedding => {
                let inputs = request.input;
                let input_type = options.input_type;
                match run(Task::SparseEmbed { inputs, input_type }).await? {
                    Answer::SparseEmbeddings(items) => {
                        json.ok(&crate::sparse_embedding_response(&items))
                    }
                    _ => Err(wrong_answer()),
                }
            }
            TaskType::Rerank => {
                let settings = &endpoint.service_settings;
                let rerank = Task::Rerank {
                    query: request.query.clone().unwrap_or_default(),
                    documents: request.input.clone(),
                    options: RerankOptions {
                        long_document_strategy: settings.long_document_strategy.unwrap_or_default(),
                        max_chunks_per_doc: settings.max_chunks_per_doc,
                    },
                };
                match run(rerank).await? {
                    Answer::Scores(scores) => json.ok(&crate::rerank_response(
                        &scores,
                        &request.input,
                        options.top_n,
                        options.return_documents,
                    )),
                    _ => Err(wrong_answer()),
                }
            }
            TaskType::Completion => {
                let params = GenerationParams::for_completion(&request, endpoint);
                let mut results = Vec::with_capacity(request.input.len());
                for input in request.input {
                    let mut generation = self
                        .generate(endpoint, Prompt::Text(input), params.clone(), deadline)
                        .await?;
                    let mut text = String::new();
                    while let Some(chunk) = generation.next_chunk().await? {
                        deadline.check()?;
                        text.push_str(&chunk);
                    }
                    results.push(text);
                }
                json.ok(&crate::completion_response(&results))
            }
            // `check_inference_target` sends chat_completion to `_stream` only.
            TaskType::ChatCompletion => Err(EsError::chat_completion_requires_stream(
                &endpoint.inference_id,
            )),
        }
    }

    async fn generate(
        &self,
        endpoint: &Endpoint,
        prompt: Prompt,
        params: GenerationParams,
        deadline: Deadline,
    ) -> Result<B::Generation, EsError> {
        let task = Task::Generate { prompt, params };
        let call = Call {
            endpoint,
            task,
            deadline,
        };
        match self.backend.run(call).await? {
            Answer::Generation(generation) => Ok(generation),
            _ => Err(wrong_answer()),
        }
    }

    fn check_installed(&self, endpoint: &Endpoint) -> Result<(), EsError> {
        let model_id = &endpoint.service_settings.model_id;
        if self.catalog.get(model_id).is_none() {
            return Err(EsError::model_not_installed(
                model_id,
                &endpoint.inference_id,
            ));
        }
        Ok(())
    }
}

/// A backend answered a task with another task's answer: a bug.
fn wrong_answer() -> EsError {
    EsError::internal("the task backend gave an answer of the wrong kind")
}

/// 200 with no body, and an `Allow` header when given.
fn empty<G>(allow: Option<String>) -> Reply<G> {
    let mut headers = vec![(crate::PRODUCT_HEADER.0, crate::PRODUCT_HEADER.1.to_string())];
    headers.extend(allow.map(|a| ("allow", a)));
    Reply {
        status: 200,
        headers,
        body: ReplyBody::Full(Vec::new()),
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

/// A chat completion's id, unique within the process and across restarts.
fn chat_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "chatcmpl-{nanos:x}{:04x}",
        NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ModelInfo;
    use serde_json::{json, Value};
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// Endpoints in a map.
    #[derive(Default)]
    struct MemoryStore(RefCell<BTreeMap<String, Endpoint>>);

    impl EndpointStore for MemoryStore {
        async fn get(&self, id: &str) -> Result<Option<Endpoint>, EsError> {
            Ok(self.0.borrow().get(id).cloned())
        }
        async fn list(&self) -> Result<Vec<Endpoint>, EsError> {
            Ok(self.0.borrow().values().cloned().collect())
        }
        async fn create(&self, endpoint: &Endpoint) -> Result<bool, EsError> {
            let mut map = self.0.borrow_mut();
            if map.contains_key(&endpoint.inference_id) {
                return Ok(false);
            }
            map.insert(endpoint.inference_id.clone(), endpoint.clone());
            Ok(true)
        }
        async fn replace(&self, endpoint: &Endpoint) -> Result<(), EsError> {
            self.0
                .borrow_mut()
                .insert(endpoint.inference_id.clone(), endpoint.clone());
            Ok(())
        }
        async fn delete(&self, id: &str) -> Result<(), EsError> {
            self.0.borrow_mut().remove(id);
            Ok(())
        }
    }

    /// A backend with no task to run: these tests are about everything
    /// around the tasks (the servers' tests run the real ones).
    struct NoTasks;

    struct NoGeneration;

    impl Generation for NoGeneration {
        async fn next_chunk(&mut self) -> Result<Option<String>, EsError> {
            Ok(None)
        }
        fn end(&self) -> GenerationEnd {
            GenerationEnd::default()
        }
    }

    impl Backend for NoTasks {
        type Generation = NoGeneration;
        async fn run(&self, _: Call<'_>) -> Result<Answer<NoGeneration>, EsError> {
            Err(EsError::internal("no tasks here"))
        }
    }

    fn service() -> Service<MemoryStore, NoTasks> {
        let catalog = Catalog::new(
            ["all-minilm-l6-v2", "multilingual-e5-small"]
                .map(|id| ModelInfo {
                    model_id: id.into(),
                    task_types: crate::model_task_types(TaskType::TextEmbedding),
                })
                .to_vec(),
        );
        Service {
            store: MemoryStore::default(),
            backend: NoTasks,
            preconfigured: crate::preconfigured_endpoints(&catalog, 1),
            catalog,
            limits: Limits::default(),
            node_name: "test".into(),
        }
    }

    /// Runs a future whose every await is ready at once (the memory store's).
    fn ready<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("the test service never waits"),
        }
    }

    fn call(
        service: &Service<MemoryStore, NoTasks>,
        method: &str,
        path: &str,
        body: Value,
    ) -> (u16, Vec<(&'static str, String)>, Value) {
        let body = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body).unwrap()
        };
        let reply = ready(service.handle(Request {
            method: method.into(),
            path: path.into(),
            query: None,
            accept: None,
            content_type: Some("application/json".into()),
            content_length: Some(body.len()),
            body,
        }));
        let ReplyBody::Full(bytes) = reply.body else {
            panic!("no stream expected");
        };
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (reply.status, reply.headers, value)
    }

    #[test]
    fn endpoints_are_created_listed_and_deleted_in_the_store() {
        let service = service();
        let definition = json!({"service": "elasticsearch", "service_settings":
            {"model_id": "all-minilm-l6-v2", "num_allocations": 1, "num_threads": 1}});
        let (status, _, info) = call(
            &service,
            "PUT",
            "/_inference/text_embedding/mine",
            definition.clone(),
        );
        assert_eq!(status, 200, "{info}");
        assert_eq!(info["inference_id"], "mine");
        let (status, _, again) = call(
            &service,
            "PUT",
            "/_inference/text_embedding/mine",
            definition,
        );
        assert_eq!(status, 400);
        assert_eq!(again["error"]["type"], "resource_already_exists_exception");

        let (_, _, all) = call(&service, "GET", "/_inference/_all", Value::Null);
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

        let (status, _, _) = call(&service, "DELETE", "/_inference/mine", Value::Null);
        assert_eq!(status, 200);
        let (status, _, gone) = call(&service, "GET", "/_inference/mine", Value::Null);
        assert_eq!(
            (status, gone["error"]["type"].as_str()),
            (404, Some("resource_not_found_exception"))
        );
        assert!(service.store.0.borrow().is_empty());
    }

    #[test]
    fn preconfigured_endpoints_stay_and_missing_models_are_refused() {
        let service = service();
        let (status, _, _) = call(
            &service,
            "DELETE",
            "/_inference/.multilingual-e5-small-elasticsearch",
            Value::Null,
        );
        assert_eq!(status, 400);
        let (status, _, envelope) = call(
            &service,
            "PUT",
            "/_inference/sparse_embedding/sparse",
            json!({"service": "elasticsearch", "service_settings":
                {"model_id": "splade-tiny", "num_allocations": 1, "num_threads": 1}}),
        );
        assert_eq!(
            status, 400,
            "splade-tiny is not in this catalog: {envelope}"
        );
        let (status, _, info) = call(&service, "GET", "/", Value::Null);
        assert_eq!((status, info["name"].as_str()), (200, Some("test")));
    }

    #[test]
    fn every_reply_carries_the_headers_its_status_needs() {
        let service = service();
        let header = |headers: &[(&str, String)], name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let (status, headers, _) = call(&service, "GET", "/", Value::Null);
        assert_eq!(status, 200);
        assert_eq!(
            header(&headers, "x-elastic-product").as_deref(),
            Some("Elasticsearch")
        );
        assert_eq!(
            header(&headers, "content-type").as_deref(),
            Some("application/json")
        );

        let (status, headers, _) = call(&service, "POST", "/", Value::Null);
        assert_eq!(status, 405);
        assert!(header(&headers, "allow").is_some(), "{headers:?}");

        let big = json!({"input": "x".repeat(Limits::default().max_body_bytes)});
        let (status, headers, _) = call(
            &service,
            "POST",
            "/_inference/.rerank-v1-elasticsearch",
            big,
        );
        assert_eq!(status, 413);
        assert_eq!(header(&headers, "connection").as_deref(), Some("close"));
        assert_eq!(
            header(&headers, "x-elastic-product").as_deref(),
            Some("Elasticsearch")
        );
    }

    #[test]
    fn a_deadline_names_the_request_timeout() {
        let past = Deadline::from(
            Instant::now() - Duration::from_secs(1),
            Some(Duration::from_millis(5)),
        );
        let err = past.check().unwrap_err();
        assert_eq!(
            (err.status, err.reason.as_str()),
            (408, "Request timed out after [5ms]")
        );
        assert_eq!(past.remaining(), Some(Duration::ZERO));
        let never = Deadline::from(Instant::now(), None);
        assert!(never.check().is_ok());
        assert_eq!(never.remaining(), None);
    }
}
