//! The native host: Elasticsearch's inference API over sandboxed WASI task
//! components, one warm pool of instances per inference endpoint.
//!
//! The request path is es-wire's [`es_wire::Service`]; the host adapts it:
//! [`api`] (HTTP in and out, over axum), [`store`] (endpoints in redb),
//! [`backend`] (the pools, over [`runtime`]'s wasmtime instances),
//! [`security`] and the browser [`demo`] in front, and [`metrics`] beside.

pub mod api;
pub mod backend;
pub mod batching;
pub mod catalog;
pub mod compute;
pub mod demo;
pub mod metrics;
pub mod pool;
pub mod runtime;
pub mod security;
pub mod store;
