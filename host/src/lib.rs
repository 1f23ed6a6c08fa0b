//! The native host: Elasticsearch's inference API over sandboxed WASI task
//! components, one warm pool of instances per inference endpoint.

pub mod api;
pub mod catalog;
pub mod demo;
pub mod generation;
pub mod pool;
pub mod runtime;
pub mod security;
pub mod store;
