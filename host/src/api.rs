//! The HTTP side: axum in and out of es-wire's request core ([`App`]).
//! Everything between, from routing to the error envelope, is the core's;
//! here are only the body, the reply and a guard against panics.

use crate::backend::Pools;
use crate::store::RedbStore;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use es_wire::{EsError, Reply, ReplyBody};
use std::sync::Arc;
use std::time::Instant;

/// The request core over the host's endpoint store and instance pools.
pub type App = es_wire::Service<RedbStore, Pools>;

/// The API, with `extra` routes (the browser demo) under the same layers.
pub fn router(app: Arc<App>, extra: Option<axum::Router<Arc<App>>>) -> axum::Router {
    extra
        .unwrap_or_default()
        .fallback(handle)
        .with_state(app)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            error_response(
                &EsError::internal("the server failed while handling this request"),
                false,
            )
        }))
}

/// An axum body, read once a route asks for it.
struct RequestBody(Body);

impl es_wire::RequestBody for RequestBody {
    async fn read(self, limit: usize) -> Result<Vec<u8>, EsError> {
        axum::body::to_bytes(self.0, limit)
            .await
            .map(|b| b.to_vec())
            .map_err(|_| EsError::body_too_large(limit + 1, limit))
    }
}

async fn handle(State(app): State<Arc<App>>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let header = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let incoming = es_wire::Request {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        accept: header(header::ACCEPT),
        content_type: header(header::CONTENT_TYPE),
        content_length: header(header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
        body: RequestBody(body),
    };
    let reply = app.handle(incoming).await;
    record(&app, &parts, reply.status, started);
    tracing::info!(
        method = %parts.method,
        path = %parts.uri.path(),
        status = reply.status,
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    into_response(reply)
}

/// The request metrics of an inference request (`POST` to an endpoint that
/// exists; see [`crate::metrics`]).
fn record(app: &App, parts: &axum::http::request::Parts, status: u16, started: Instant) {
    use es_wire::Route;
    let route = es_wire::route(parts.method.as_str(), parts.uri.path(), parts.uri.query());
    let (Ok(Route::Infer { inference_id, .. }) | Ok(Route::Stream { inference_id, .. })) = route
    else {
        return;
    };
    let Some(task) = app.backend.task_of(&inference_id) else {
        return;
    };
    let (id, task) = (inference_id, task.to_string());
    metrics::counter!("inference_requests_total", "inference_id" => id.clone(), "task" => task.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("inference_request_duration_seconds", "inference_id" => id.clone(), "task" => task.clone())
        .record(started.elapsed());
    if matches!(status, 408 | 413 | 429) {
        metrics::counter!("inference_rejected_total", "inference_id" => id, "task" => task, "status" => status.to_string())
            .increment(1);
    }
}

fn into_response(reply: Reply<crate::backend::Generation>) -> Response {
    let body = match reply.body {
        ReplyBody::Full(bytes) => Body::from(bytes),
        ReplyBody::Events(events) => {
            Body::from_stream(futures::stream::unfold(events, |mut events| async move {
                let frame = events.next().await?;
                Some((Ok::<_, std::convert::Infallible>(frame), events))
            }))
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
    response
}

/// An error outside the core (the demo's files, a panic, authentication).
pub fn error_response(err: &EsError, pretty: bool) -> Response {
    into_response(Reply::error(err, pretty))
}
