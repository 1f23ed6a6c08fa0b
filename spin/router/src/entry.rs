//! The `wasi:http/handler@0.3.0` export: a Spin request in, es-wire's
//! [`Service`] in between, its [`Reply`] out (streamed for SSE).

use crate::store::SpinKv;
use crate::tasks::{Generation, Tasks};
use bytes::Bytes;
use es_wire::{EsError, Limits, Reply, ReplyBody, Service};
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

/// The service for one request, from the variables, the store and the
/// mounted models.
async fn service() -> Result<Service<SpinKv, Tasks>, EsError> {
    let d = Limits::default();
    let limits = Limits {
        max_body_bytes: setting("max_body_bytes", d.max_body_bytes).await?,
        max_inputs: setting("max_inputs", d.max_inputs).await?,
        max_input_chars: setting("max_input_chars", d.max_input_chars).await?,
    };
    let installed = es_wire::scan_models(std::path::Path::new(crate::MODELS_DIR));
    let catalog = es_wire::Catalog::new(installed.iter().map(|m| m.info()).collect());
    Ok(Service {
        store: SpinKv::open(&setting("kv_store", "default".to_string()).await?).await?,
        backend: Tasks {
            models_dir: crate::MODELS_DIR.to_string(),
        },
        preconfigured: es_wire::preconfigured_endpoints(&catalog, 1),
        catalog,
        limits,
        node_name: setting("node_name", "edge-inference-spin".to_string()).await?,
    })
}

/// The request body, read once a route asks for it.
struct Body<B>(B);

impl<B: IncomingBodyExt> es_wire::RequestBody for Body<B> {
    async fn read(self, limit: usize) -> Result<Vec<u8>, EsError> {
        let bytes = self
            .0
            .bytes()
            .await
            .map_err(|e| EsError::internal(format!("reading the request body: {e:?}")))?;
        bytes.to_vec().read(limit).await
    }
}

#[http_service]
async fn handle(request: Request) -> http::Response<BoxBody> {
    let service = match service().await {
        Ok(service) => service,
        Err(e) => return error(&e),
    };
    let header = |name: http::header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let incoming = es_wire::Request {
        method: request.method().as_str().to_string(),
        path: request.uri().path().to_string(),
        query: request.uri().query().map(str::to_string),
        accept: header(http::header::ACCEPT),
        content_type: header(http::header::CONTENT_TYPE),
        content_length: header(http::header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
        body: Body(request.into_body()),
    };
    respond(service.handle(incoming).await)
}

fn respond(reply: Reply<Generation>) -> http::Response<BoxBody> {
    let mut builder = http::Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        builder = builder.header(*name, value);
    }
    let body = match reply.body {
        ReplyBody::Full(bytes) => box_body(FullBody::new(Bytes::from(bytes))),
        ReplyBody::Events(mut events) => {
            // Each frame is sent as soon as its chunk exists. A client that
            // goes away closes the channel, which stops the generation.
            let (mut tx, body) = spin_sdk::http::body::stream::<String>();
            spin_sdk::wasip3::spawn(async move {
                while let Some(frame) = events.next().await {
                    if tx.send(frame).await.is_err() {
                        break;
                    }
                }
            });
            box_body(body)
        }
    };
    builder.body(body).expect("valid response")
}

/// An error before the service exists (a bad variable, no store).
fn error(e: &EsError) -> http::Response<BoxBody> {
    respond(Reply::error(e, false))
}
