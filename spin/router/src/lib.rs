//! The Spin app's HTTP router: the Elasticsearch inference API (`/_inference`,
//! `GET /`) over the task components, which Spin wires to this component's
//! imports as component dependencies. The request path itself is es-wire's
//! [`es_wire::Service`]; this crate only adapts it to Spin: endpoint
//! definitions in Spin's key-value store ([`store`]), tasks through the
//! imports ([`tasks`]), settings from Spin variables, and HTTP in and out.
//!
//! Spin instantiates the app per request, so the router keeps no state
//! between requests; everything it knows is in the store, the variables and
//! the mounted files.

pub mod store;
pub mod tasks;

#[cfg(target_arch = "wasm32")]
mod entry;

/// Where the manifest mounts the model directories.
pub const MODELS_DIR: &str = "/models";
