//! Elasticsearch inference API wire format and the request core: routes,
//! request parsing and validation, response bodies, error envelopes, and the
//! one request path every server runs ([`Service`]).
//!
//! This is the one implementation of both, shared by the native host and the
//! Spin router. It holds no HTTP framework type and does no I/O of its own:
//! callers pass methods, paths, header values and body bytes in, and get
//! [`Route`]s, parsed requests, `serde_json::Value` bodies or an [`EsError`]
//! (whose [`EsError::to_json`] is the error body and whose `status` is the
//! HTTP status) back. [`Service`] reaches endpoints and tasks only through
//! the [`EndpointStore`] and [`Backend`] traits each server implements. It
//! builds for `wasm32-wasip2`.
//!
//! A request goes through ([`Service::handle`] does all of it):
//! 1. [`check_content_type`], [`check_accept`] (which gives the response
//!    `Content-Type`) and [`Limits::check_body_len`];
//! 2. [`route`];
//! 3. per route: [`parse_put`] / [`parse_update`] against the stored
//!    [`Endpoint`], or [`check_inference_target`] then [`parse_inference`] /
//!    [`parse_chat_completion`];
//! 4. a response body ([`text_embedding_response`], [`rerank_response`], ...,
//!    [`endpoints_response`], [`cluster_info`], [`services_response`]) or
//!    Server-Sent Events ([`SseFrames`], pulled through [`Events`]).
//!
//! Every response carries [`PRODUCT_HEADER`]. Where the contract is silent the
//! crate follows Elasticsearch 9.1, including its error wording.

mod catalog;
mod chunking;
mod endpoint;
mod error;
mod generation;
mod infer;
mod json;
mod response;
mod route;
pub mod security;
mod service;
mod settings;
mod types;

pub use catalog::{
    model_cache, model_task_types, preconfigured_endpoints, preconfigured_model, scan_models,
    Catalog, InstalledModel, ModelInfo, COMPONENT_FILES, DEFAULT_MODEL_CACHE, PRECONFIGURED,
    WASI_NN_COMPONENT_FILES,
};
pub use chunking::{default_chunking_settings, parse_chunking_settings};
pub use endpoint::{
    delete_response, endpoints_response, AdaptiveAllocations, Compute, Endpoint,
    LongDocumentStrategy, ServiceSettings, ELSER_SERVICE, SERVICE,
};
pub use error::{format_time_value, EsError, TaskError};
pub use generation::{chat_role_name, GenerationParams, SseFrames, DEFAULT_MAX_TOKENS};
pub use infer::{
    check_inference_target, parse_chat_completion, parse_inference, ChatCompletionRequest,
    ChatMessage, ChatRole, InferenceRequest, Limits, TaskOptions, CHAT_PARSER, INFERENCE_PARSER,
};
pub use response::{
    chat_completion_chunk, cluster_info, completion_delta, completion_response, pack_bits,
    quantize_int8, rerank_response, services_response, sparse_embedding_response, sse_done,
    sse_error, sse_event, text_embedding_response, SparseEmbedding, Usage, ES_VERSION,
    PRODUCT_HEADER,
};
pub use route::{
    allowed_methods, check_accept, check_content_type, route, wants_pretty, Route, UNIVERSAL_PARAMS,
};
pub use service::{
    Answer, Backend, Call, Deadline, EndpointStore, Events, Generation, GenerationEnd, Prompt,
    Reply, ReplyBody, Request, RequestBody, RerankOptions, Service, Task,
};
pub use settings::{parse_put, parse_update, TaskSettings};
pub use types::{
    default_timeout, is_reserved_id, parse_duration, validate_inference_id, ElementType, InputType,
    Similarity, TaskType, Timeout, MAX_ID_LEN,
};
