//! The Spin app's HTTP router: the Elasticsearch inference API (`/_inference`,
//! `GET /`) over the task components, which Spin wires to this component's
//! imports as component dependencies. Endpoint definitions live in Spin's
//! key-value store, settings come from Spin variables, and the model files
//! are mounted on this component (the task components inherit them).
//!
//! Spin instantiates the app per request, so the router keeps no state
//! between requests; everything it knows is in the store, the variables and
//! the mounted files.

pub mod app;
pub mod store;
pub mod tasks;

#[cfg(target_arch = "wasm32")]
mod entry;

/// Where the manifest mounts the model directories.
pub const MODELS_DIR: &str = "/models";
