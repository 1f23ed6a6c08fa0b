//! completion and chat_completion: a generation runs on one instance and its
//! chunks flow through a channel, so the HTTP side can stream them as
//! Server-Sent Events, and a client that goes away stops the model within
//! one chunk.

use crate::pool::Pool;
use crate::runtime::{GenerationOptions, GenerationSummary, Prompt};
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use es_wire::{ChatRole, EsError, Limits, TaskType};
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Generated tokens when the request and the endpoint name no limit.
const DEFAULT_MAX_TOKENS: u32 = 256;

pub enum Event {
    Chunk(String),
    Done(GenerationSummary),
    Failed(EsError),
}

/// One generation to run: what from, and how.
pub struct Request {
    pub prompts: Vec<Prompt>,
    pub options: GenerationOptions,
}

/// A perform-inference request on a `completion` endpoint: one generation
/// per input, options from the task settings (request over endpoint).
pub fn completion_request(
    request: es_wire::InferenceRequest,
    endpoint: &es_wire::Endpoint,
) -> Request {
    let settings = request.options(endpoint).task_settings;
    let number = |key: &str| settings.get(key).and_then(Value::as_f64);
    let options = GenerationOptions {
        max_tokens: number("max_tokens").map_or(DEFAULT_MAX_TOKENS, |n| n as u32),
        temperature: number("temperature").unwrap_or(0.0) as f32,
        top_p: number("top_p").unwrap_or(1.0) as f32,
        seed: settings.get("seed").and_then(Value::as_u64),
        stop: Vec::new(),
    };
    Request {
        prompts: request.input.into_iter().map(Prompt::Text).collect(),
        options,
    }
}

/// Reads an OpenAI-style chat body of a `chat_completion` endpoint.
pub fn chat_request(
    body: &[u8],
    endpoint_settings: &Map<String, Value>,
    limits: &Limits,
) -> Result<Request, EsError> {
    let chat = es_wire::parse_chat_completion(body, limits)?;
    let setting = |key: &str| endpoint_settings.get(key).and_then(Value::as_f64);
    let messages = chat
        .messages
        .into_iter()
        .map(|m| {
            let role = match m.role {
                ChatRole::System => "system",
                ChatRole::User => "user",
                ChatRole::Assistant => "assistant",
            };
            (role.to_string(), m.content)
        })
        .collect();
    let options = GenerationOptions {
        max_tokens: chat
            .max_completion_tokens
            .or_else(|| setting("max_tokens").map(|n| n as u32))
            .unwrap_or(DEFAULT_MAX_TOKENS),
        temperature: chat
            .temperature
            .or_else(|| setting("temperature").map(|t| t as f32))
            .unwrap_or(0.0),
        top_p: chat
            .top_p
            .or_else(|| setting("top_p").map(|t| t as f32))
            .unwrap_or(1.0),
        seed: endpoint_settings.get("seed").and_then(Value::as_u64),
        stop: chat.stop,
    };
    Ok(Request {
        prompts: vec![Prompt::Chat(messages)],
        options,
    })
}

/// Starts one generation on the pool; events arrive on the receiver. Dropping
/// the receiver stops the generation at its next chunk.
pub fn spawn(
    pool: Arc<Pool>,
    deadline: Option<Instant>,
    prompt: Prompt,
    options: GenerationOptions,
) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move {
        let chunks = tx.clone();
        let result = pool
            .run(deadline, move |instance, timeout| {
                instance.generate(timeout, prompt, options, |chunk| {
                    chunks
                        .blocking_send(Event::Chunk(chunk.to_string()))
                        .is_ok()
                })
            })
            .await;
        let _ = tx
            .send(result.map_or_else(Event::Failed, Event::Done))
            .await;
    });
    rx
}

/// Runs each prompt to its end: `{"completion": [{"result": ...}]}`.
pub async fn complete(
    pool: Arc<Pool>,
    deadline: Option<Instant>,
    request: Request,
) -> Result<Value, EsError> {
    let mut results = Vec::new();
    for prompt in request.prompts {
        let mut events = spawn(pool.clone(), deadline, prompt, request.options.clone());
        let mut text = String::new();
        loop {
            match events.recv().await {
                Some(Event::Chunk(c)) => text.push_str(&c),
                Some(Event::Done(_)) => break,
                Some(Event::Failed(e)) => return Err(e),
                None => return Err(EsError::internal("the generation ended without an answer")),
            }
        }
        results.push(text);
    }
    Ok(es_wire::completion_response(&results))
}

/// Streams one generation as Server-Sent Events, in the completion or the
/// chat-completion shape. An error before the first chunk is an ordinary
/// error response (e.g. 408); after it, an `event: error`.
pub async fn stream(
    pool: Arc<Pool>,
    deadline: Option<Instant>,
    task: TaskType,
    model_id: String,
    mut request: Request,
) -> Result<Response, EsError> {
    if request.prompts.len() != 1 {
        return Err(EsError::request_validation(vec![
            "streaming takes exactly one input".to_string(),
        ]));
    }
    let prompt = request.prompts.remove(0);
    let mut events = spawn(pool, deadline, prompt, request.options);
    let first = match events.recv().await {
        Some(Event::Failed(e)) => return Err(e),
        Some(event) => event,
        None => return Err(EsError::internal("the generation ended without an answer")),
    };
    let frames = Frames {
        task,
        model_id,
        id: chat_id(),
        role_sent: false,
    };
    let body = futures::stream::unfold(
        (Some(first), events, frames, false),
        |(pending, mut events, mut frames, done)| async move {
            if done {
                return None;
            }
            let event = match pending {
                Some(event) => event,
                None => events.recv().await?,
            };
            let (text, finished) = frames.render(event);
            Some((
                Ok::<_, std::convert::Infallible>(text),
                (None, events, frames, finished),
            ))
        },
    );
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Turns generation events into SSE frames.
struct Frames {
    task: TaskType,
    model_id: String,
    id: String,
    role_sent: bool,
}

impl Frames {
    /// The frames for one event, and whether the stream is over.
    fn render(&mut self, event: Event) -> (String, bool) {
        match (event, self.task) {
            (Event::Chunk(text), TaskType::ChatCompletion) => {
                let role = (!std::mem::replace(&mut self.role_sent, true)).then_some("assistant");
                (self.chat(role, Some(&text), None, None), false)
            }
            (Event::Chunk(text), _) => (
                es_wire::sse_event(&es_wire::completion_delta(&text).to_string()),
                false,
            ),
            (Event::Done(summary), TaskType::ChatCompletion) => {
                let usage = es_wire::Usage {
                    prompt_tokens: summary.prompt_tokens,
                    completion_tokens: summary.completion_tokens,
                    total_tokens: summary.prompt_tokens + summary.completion_tokens,
                };
                let role = (!self.role_sent).then_some("assistant");
                let mut text = self.chat(
                    role,
                    None,
                    Some(summary.finish_reason.unwrap_or("stop")),
                    None,
                );
                text.push_str(&self.chat(None, None, None, Some(usage)));
                text.push_str(&es_wire::sse_done());
                (text, true)
            }
            (Event::Done(_), _) => (es_wire::sse_done(), true),
            (Event::Failed(e), _) => (es_wire::sse_error(&e), true),
        }
    }

    fn chat(
        &self,
        role: Option<&str>,
        content: Option<&str>,
        finish: Option<&str>,
        usage: Option<es_wire::Usage>,
    ) -> String {
        let chunk =
            es_wire::chat_completion_chunk(&self.id, &self.model_id, role, content, finish, usage);
        es_wire::sse_event(&chunk.to_string())
    }
}

fn chat_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "chatcmpl-{:x}{:04x}",
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}
