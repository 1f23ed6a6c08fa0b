//! completion and chat_completion: a generation runs on one instance and its
//! chunks flow through a channel, so the HTTP side can stream them as
//! Server-Sent Events, and a client that goes away stops the model within
//! one chunk.

use crate::pool::Pool;
use crate::runtime::{GenerationSummary, Prompt};
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use es_wire::{EsError, GenerationParams, Limits, SseFrames, TaskType};
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

pub enum Event {
    Chunk(String),
    Done(GenerationSummary),
    Failed(EsError),
}

/// One generation to run: what from, and how.
pub struct Request {
    pub prompts: Vec<Prompt>,
    pub options: GenerationParams,
}

/// A perform-inference request on a `completion` endpoint: one generation
/// per input, options from the task settings (request over endpoint).
pub fn completion_request(
    request: es_wire::InferenceRequest,
    endpoint: &es_wire::Endpoint,
) -> Request {
    Request {
        options: GenerationParams::for_completion(&request, endpoint),
        prompts: request.input.into_iter().map(Prompt::Text).collect(),
    }
}

/// Reads an OpenAI-style chat body of a `chat_completion` endpoint.
pub fn chat_request(
    body: &[u8],
    endpoint_settings: &Map<String, Value>,
    limits: &Limits,
) -> Result<Request, EsError> {
    let chat = es_wire::parse_chat_completion(body, limits)?;
    let options = GenerationParams::for_chat(&chat, endpoint_settings);
    let messages = chat
        .messages
        .into_iter()
        .map(|m| (es_wire::chat_role_name(m.role).to_string(), m.content))
        .collect();
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
    options: GenerationParams,
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
    let frames = SseFrames::new(task, model_id, chat_id());
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
            let (text, finished) = render(&mut frames, event);
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

/// The SSE frames for one event, and whether the stream is over.
fn render(frames: &mut SseFrames, event: Event) -> (String, bool) {
    match event {
        Event::Chunk(text) => (frames.chunk(&text), false),
        Event::Done(summary) => {
            let usage = es_wire::Usage {
                prompt_tokens: summary.prompt_tokens,
                completion_tokens: summary.completion_tokens,
                total_tokens: summary.prompt_tokens + summary.completion_tokens,
            };
            (frames.done(summary.finish_reason, usage), true)
        }
        Event::Failed(e) => (frames.error(&e), true),
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
