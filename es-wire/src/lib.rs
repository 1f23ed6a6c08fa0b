//! Elasticsearch inference API wire format: routes, request parsing and
//! validation, response bodies and error envelopes.
//!
//! This is the one implementation of the wire format, shared by the native
//! host and the Spin router, so it does no I/O, has no async and no HTTP
//! framework types: callers pass methods, paths, header values and body bytes
//! in, and get [`Route`]s, parsed requests, `serde_json::Value` bodies or an
//! [`EsError`] (whose [`EsError::to_json`] is the error body and whose
//! `status` is the HTTP status) back. It builds for `wasm32-wasip2`.
//!
//! A request goes through:
//! 1. [`check_content_type`], [`check_accept`] (which gives the response
//!    `Content-Type`) and [`Limits::check_body_len`];
//! 2. [`route`];
//! 3. per route: [`parse_put`] / [`parse_update`] against the stored
//!    [`Endpoint`], or [`check_inference_target`] then [`parse_inference`] /
//!    [`parse_chat_completion`];
//! 4. a response body ([`text_embedding_response`], [`rerank_response`], ...,
//!    [`endpoints_response`], [`cluster_info`], [`services_response`]) or
//!    Server-Sent Events ([`sse_event`], [`sse_done`], [`sse_error`]).
//!
//! Every response carries [`PRODUCT_HEADER`]. Where the contract is silent the
//! crate follows Elasticsearch 9.1, including its error wording.

mod catalog;
mod endpoint;
mod error;
mod generation;
mod infer;
mod json;
mod response;
mod route;
pub mod security;
mod types;

pub use catalog::{model_task_types, preconfigured_endpoints, PRECONFIGURED};
pub use endpoint::{
    delete_response, endpoints_response, parse_put, parse_update, AdaptiveAllocations, Catalog,
    Endpoint, LongDocumentStrategy, ModelInfo, ServiceSettings, ELSER_SERVICE, SERVICE,
};
pub use error::EsError;
pub use generation::{chat_role_name, GenerationParams, SseFrames, DEFAULT_MAX_TOKENS};
pub use infer::{
    check_inference_target, parse_chat_completion, parse_inference, ChatCompletionRequest,
    ChatMessage, ChatRole, InferenceRequest, Limits, TaskOptions, CHAT_PARSER, INFERENCE_PARSER,
};
pub use response::{
    chat_completion_chunk, cluster_info, completion_delta, completion_response, pack_bits,
    quantize_int8, rerank_response, services_response, sparse_embedding_response, sse_done,
    sse_error, sse_event, text_embedding_response, Usage, ES_VERSION, PRODUCT_HEADER,
};
pub use route::{
    allowed_methods, check_accept, check_content_type, route, wants_pretty, Route, UNIVERSAL_PARAMS,
};
pub use types::{
    default_timeout, format_time_value, is_reserved_id, parse_duration, validate_inference_id,
    ElementType, InputType, Similarity, TaskType, Timeout, MAX_ID_LEN,
};
