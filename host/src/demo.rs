//! The browser demo at `/_demo/`: the page and its WebAssembly bundle from a
//! directory (`--demo-dir`, assembled by `cargo xtask browser`), and the few
//! files the page loads of each installed encoder model, from the model cache.
//! The routes join the API's router, so whatever guards the API guards them.

use crate::api::{error_response, App};
use axum::extract::{Path, Request, State};
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
        .nest_service("/_demo/", ServeDir::new(dir))
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
