//! The browser demo at `/_demo/`: the page and its WebAssembly bundle from a
//! directory (`--demo-dir`, assembled by `cargo xtask browser`), and the few
//! files the page loads of each installed encoder model, from the model cache.
//! The routes join the API's router, so whatever guards the API guards them.
//!
//! `cargo xtask serve` builds the demo beside the running server, so the
//! directory may not hold the page yet: until it does, `/_demo/` answers 503
//! with a page that says so and reloads itself.

use crate::api::{error_response, App};
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use es_wire::{EsError, TaskType};
use std::path::PathBuf;
use std::sync::Arc;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

/// What the page fetches of a model; nothing else in a model directory is served.
pub const MODEL_FILES: [&str; 3] = ["model.json", "tokenizer.json", "model.onnx"];

/// `/_demo/` (the static files in `dir`) and `/_demo/models/{model}/{file}`.
pub fn routes(dir: PathBuf) -> Router<Arc<App>> {
    Router::new()
        // Relative links in the page need the trailing slash.
        .route("/_demo", get(|| async { Redirect::permanent("/_demo/") }))
        .route("/_demo/models/{model}/{file}", get(model_file))
        .nest_service(
            "/_demo/",
            ServeDir::new(&dir).fallback(get(move || not_found(dir.clone()))),
        )
}

/// How often the "being built" page reloads itself, in seconds.
const RELOAD_SECONDS: u32 = 30;

/// A file the directory lacks: a 404, or, while the page itself is missing,
/// a 503 saying the demo is still being built.
async fn not_found(dir: PathBuf) -> Response {
    if dir.join("index.html").is_file() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let page = format!(
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content={RELOAD_SECONDS}>\
         <title>Demo being built</title>\
         <p>The browser demo is being built beside the server (<code>cargo xtask serve</code> \
         does this after the server starts; on a fresh 2-core machine it takes about ten \
         minutes). This page reloads itself every {RELOAD_SECONDS} seconds. \
         The API is already serving.</p>"
    );
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::RETRY_AFTER, RELOAD_SECONDS.to_string()),
            (header::CONTENT_TYPE, "text/html; charset=utf-8".into()),
        ],
        page,
    )
        .into_response()
}

async fn model_file(
    State(app): State<Arc<App>>,
    Path((model, file)): Path<(String, String)>,
    request: Request,
) -> Response {
    // Installed models are looked up by id and files by exact name, so no
    // part of the request ever becomes a path.
    let found = app.backend.models.by_id.get(&model).filter(|m| {
        // Encoders only: the page cannot run the language model.
        m.task_types.iter().any(|t| {
            matches!(
                t,
                TaskType::TextEmbedding | TaskType::SparseEmbedding | TaskType::Rerank
            )
        })
    });
    let (Some(found), Some(name)) = (found, MODEL_FILES.iter().find(|f| **f == file)) else {
        return error_response(
            &EsError::status_exception(404, format!("no demo file [{file}] for model [{model}]")),
            false,
        );
    };
    match ServeFile::new(found.dir.join(name)).oneshot(request).await {
        Ok(response) => response.into_response(),
        Err(never) => match never {},
    }
}
