//! The `wasi:http/handler@0.3.0` export: turns a Spin request into an
//! [`Incoming`], and a [`Reply`] into a response (streamed for SSE).

use crate::app::{App, Incoming, Reply, StreamPlan};
use crate::store::SpinKv;
use crate::tasks;
use bytes::Bytes;
use es_wire::{EsError, Limits, SseFrames, Usage};
use futures::SinkExt;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{box_body, BoxBody, FullBody, Request};
use spin_sdk::http_service;

/// A Spin variable, or `default` when the manifest leaves it unset.
async fn setting<T: std::str::FromStr>(name: &str, default: T) -> Result<T, EsError> {
    match spin_sdk::variables::get(name).await {
        Ok(v) if v.trim().is_empty() => Ok(default),
        Ok(v) => v.trim().parse().map_err(|_| {
            EsError::internal(format!("the Spin variable [{name}] is not valid: [{v}]"))
        }),
        Err(_) => Ok(default),
    }
}

async fn limits() -> Result<Limits, EsError> {
    let d = Limits::default();
    Ok(Limits {
        max_body_bytes: setting("max_body_bytes", d.max_body_bytes).await?,
        max_inputs: setting("max_inputs", d.max_inputs).await?,
        max_input_chars: setting("max_input_chars", d.max_input_chars).await?,
    })
}

#[http_service]
async fn handle(request: Request) -> http::Response<BoxBody> {
    let path = request.uri().path().to_string();
    let pretty = es_wire::wants_pretty(request.uri().query());
    let reply = match serve(request).await {
        Ok(reply) => reply,
        Err(e) => Reply::error(&e, pretty),
    };
    respond(reply, &path)
}

async fn serve(request: Request) -> Result<Reply, EsError> {
    let limits = limits().await?;
    let header = |name: http::header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if let Some(len) = header(http::header::CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok()) {
        limits.check_body_len(len)?;
    }
    let incoming = Incoming {
        method: request.method().as_str().to_string(),
        path: request.uri().path().to_string(),
        query: request.uri().query().map(str::to_string),
        accept: header(http::header::ACCEPT),
        content_type: header(http::header::CONTENT_TYPE),
        body: Vec::new(),
    };
    let body = request
        .into_body()
        .bytes()
        .await
        .map_err(|e| EsError::internal(format!("reading the request body: {e:?}")))?;
    let incoming = Incoming {
        body: body.to_vec(),
        ..incoming
    };
    let app = App {
        store: SpinKv::open(&setting("kv_store", "default".to_string()).await?)
            .await
            .map_err(EsError::internal)?,
        catalog: crate::app::scan_models(crate::MODELS_DIR),
        preconfigured: Vec::new(),
        limits,
        models_dir: crate::MODELS_DIR.to_string(),
        node_name: setting("node_name", "edge-inference-spin".to_string()).await?,
    };
    let app = App {
        preconfigured: es_wire::preconfigured_endpoints(&app.catalog, 1),
        ..app
    };
    Ok(app.handle(incoming).await)
}

fn with_product_header(builder: http::response::Builder) -> http::response::Builder {
    builder.header(es_wire::PRODUCT_HEADER.0, es_wire::PRODUCT_HEADER.1)
}

fn respond(reply: Reply, path: &str) -> http::Response<BoxBody> {
    match reply {
        Reply::Json {
            status,
            body,
            content_type,
            pretty,
        } => {
            let mut builder = with_product_header(http::Response::builder().status(status))
                .header(http::header::CONTENT_TYPE, content_type);
            if status == 405 {
                builder = builder.header(
                    http::header::ALLOW,
                    es_wire::allowed_methods(path).join(","),
                );
            }
            builder
                .body(box_body(FullBody::new(Bytes::from(Reply::json_bytes(
                    &body, pretty,
                )))))
                .expect("valid response")
        }
        Reply::Empty { status, allow } => {
            let mut builder = with_product_header(http::Response::builder().status(status));
            if let Some(allow) = allow {
                builder = builder.header(http::header::ALLOW, allow);
            }
            builder
                .body(box_body(FullBody::new(Bytes::new())))
                .expect("valid response")
        }
        Reply::Stream(plan) => stream(plan),
    }
}

/// Streams the generation: each chunk is pulled from the completion
/// component and sent as soon as it exists. A client that goes away closes
/// the channel, which stops the generation at its next chunk.
fn stream(plan: StreamPlan) -> http::Response<BoxBody> {
    let (mut tx, body) = spin_sdk::http::body::stream::<String>();
    let StreamPlan {
        task,
        model_id,
        generation,
        first,
    } = plan;
    spin_sdk::wasip3::spawn(async move {
        let mut frames = SseFrames::new(task, model_id, chat_id());
        let mut next = Ok(first);
        loop {
            let frame = match next {
                Ok(Some(chunk)) => frames.chunk(&chunk),
                Ok(None) => {
                    let (reason, prompt, completion) = tasks::summary(&generation);
                    let usage = Usage {
                        prompt_tokens: prompt,
                        completion_tokens: completion,
                        total_tokens: prompt + completion,
                    };
                    let _ = tx.send(frames.done(reason, usage)).await;
                    break;
                }
                Err(e) => {
                    let _ = tx.send(frames.error(&e)).await;
                    break;
                }
            };
            if tx.send(frame).await.is_err() {
                break;
            }
            next = tasks::next_chunk(&generation);
        }
    });
    with_product_header(http::Response::builder().status(200))
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(box_body(body))
        .expect("valid response")
}

fn chat_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("chatcmpl-{nanos:x}")
}
