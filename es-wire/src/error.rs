//! Elasticsearch's error envelope and the constructors for every error the API answers.

use std::fmt;
use std::time::Duration;

use serde_json::{json, Value};

/// An error as Elasticsearch reports it: an HTTP status, an exception type in
/// snake case (`resource_not_found_exception`) and a human-readable reason.
///
/// Every failure of the API, including internal ones, becomes one of these so
/// that clients always get Elasticsearch's envelope (see [`EsError::to_json`]).
/// The constructors below carry Elasticsearch's own wording where it has one,
/// so that scripts matching on `error.reason` keep working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsError {
    /// HTTP status code of the response.
    pub status: u16,
    /// Elasticsearch exception type, e.g. `illegal_argument_exception`.
    pub error_type: &'static str,
    /// Human-readable reason, e.g. `Inference endpoint not found [my-e5]`.
    pub reason: String,
}

impl EsError {
    /// Any status, type and reason.
    pub fn new(status: u16, error_type: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            error_type,
            reason: reason.into(),
        }
    }

    /// Elasticsearch's `ElasticsearchStatusException`: type `status_exception`
    /// with any status.
    pub fn status_exception(status: u16, reason: impl Into<String>) -> Self {
        Self::new(status, "status_exception", reason)
    }

    /// 404: no endpoint with that id.
    pub fn endpoint_not_found(id: &str) -> Self {
        Self::new(
            404,
            "resource_not_found_exception",
            format!("Inference endpoint not found [{id}]"),
        )
    }

    /// 400: an endpoint with that id exists already.
    pub fn already_exists(id: &str) -> Self {
        Self::new(
            400,
            "resource_already_exists_exception",
            format!("Inference endpoint [{id}] already exists"),
        )
    }

    /// 400: the task type in the path of a perform-inference request differs from
    /// the endpoint's.
    pub fn task_type_mismatch(requested: impl fmt::Display, actual: impl fmt::Display) -> Self {
        Self::status_exception(
            400,
            format!(
                "Incompatible task_type, the requested type [{requested}] does not match the model type [{actual}]"
            ),
        )
    }

    /// 400: the task type in the path of a GET, DELETE or `_update` differs from
    /// the endpoint's.
    pub fn requested_task_type_mismatch(
        requested: impl fmt::Display,
        actual: impl fmt::Display,
    ) -> Self {
        Self::status_exception(
            400,
            format!(
                "Requested task type [{requested}] does not match the inference endpoint's task type [{actual}]"
            ),
        )
    }

    /// 400: a task type that does not exist (Elasticsearch answers a
    /// `status_exception`, not an `illegal_argument_exception`).
    pub fn unknown_task_type(name: &str) -> Self {
        Self::status_exception(400, format!("Unknown task_type [{name}]"))
    }

    /// 400 `parse_exception` (Elasticsearch's `ElasticsearchParseException`).
    pub fn parse(reason: impl Into<String>) -> Self {
        Self::new(400, "parse_exception", reason)
    }

    /// 400 `parse_exception` "request body is required", for an empty body.
    pub fn body_required() -> Self {
        Self::parse("request body is required")
    }

    /// 400 `x_content_parse_exception`: malformed JSON, an unknown field or a
    /// field of the wrong type, e.g. `[1:10] [x] unknown field [foo]`.
    pub fn x_content_parse(reason: impl Into<String>) -> Self {
        Self::new(400, "x_content_parse_exception", reason)
    }

    /// 400 `illegal_argument_exception`.
    pub fn illegal_argument(reason: impl Into<String>) -> Self {
        Self::new(400, "illegal_argument_exception", reason)
    }

    /// 400 `validation_exception` (Elasticsearch's `ValidationException`, used
    /// for endpoint settings): `Validation Failed: 1: first;2: second;`.
    pub fn validation(reasons: Vec<String>) -> Self {
        Self::new(400, "validation_exception", validation_reason(&reasons))
    }

    /// 400 `action_request_validation_exception` (Elasticsearch's
    /// `ActionRequestValidationException`, used for request fields such as an
    /// empty `input`), with the same `Validation Failed: 1: ...;` wording.
    pub fn request_validation(reasons: Vec<String>) -> Self {
        Self::new(
            400,
            "action_request_validation_exception",
            validation_reason(&reasons),
        )
    }

    /// 408: the request's `timeout` elapsed.
    pub fn timeout(reason: impl Into<String>) -> Self {
        Self::status_exception(408, reason)
    }

    /// 408 with a standard reason naming the timeout, e.g. `[30s]`.
    pub fn timed_out(after: Duration) -> Self {
        Self::timeout(format!(
            "Request timed out after [{}]",
            format_time_value(after)
        ))
    }

    /// 429: too many requests in flight for the endpoint.
    pub fn overloaded(reason: impl Into<String>) -> Self {
        Self::status_exception(429, reason)
    }

    /// 500: any internal failure (a trap, a panic, a broken store).
    pub fn internal(reason: impl Into<String>) -> Self {
        Self::status_exception(500, reason)
    }

    /// 401 `security_exception`: missing or bad credentials.
    pub fn unauthenticated(reason: impl Into<String>) -> Self {
        Self::new(401, "security_exception", reason)
    }

    /// 403 `security_exception`: the user lacks a privilege.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(403, "security_exception", reason)
    }

    /// 400 for a path that no route matches. `uri` is the path with its query
    /// string, as Elasticsearch prints it. (Elasticsearch sends a bare
    /// `{"error": "..."}` here; the contract wants the full envelope.)
    pub fn no_handler(method: &str, uri: &str) -> Self {
        Self::illegal_argument(format!(
            "no handler found for uri [{uri}] and method [{method}]"
        ))
    }

    /// 405 for a known path with a method it does not serve. The response
    /// should carry an `Allow` header listing `allowed` (see
    /// [`crate::allowed_methods`]).
    pub fn method_not_allowed(method: &str, uri: &str, allowed: &[&str]) -> Self {
        Self::status_exception(
            405,
            format!(
                "Incorrect HTTP method for uri [{uri}] and method [{method}], allowed: [{}]",
                allowed.join(", ")
            ),
        )
    }

    /// 406 for a request body in a media type other than JSON.
    pub fn content_type_not_supported(value: &str) -> Self {
        Self::status_exception(
            406,
            format!("Content-Type header [{value}] is not supported"),
        )
    }

    /// 406 for an `Accept` header naming only formats this server cannot write.
    pub fn accept_not_supported(value: &str) -> Self {
        Self::status_exception(406, format!("Accept header [{value}] is not supported"))
    }

    /// 413 for a body over the size limit. (Elasticsearch answers 413 with an
    /// empty body; we keep the envelope.)
    pub fn body_too_large(len: usize, limit: usize) -> Self {
        Self::status_exception(
            413,
            format!("request body of [{len}] bytes exceeds the limit of [{limit}] bytes"),
        )
    }

    /// 400 for a body sent to an API that takes none (a GET or DELETE).
    pub fn body_not_supported(method: &str, path: &str) -> Self {
        Self::illegal_argument(format!(
            "request [{method} {path}] does not support having a body"
        ))
    }

    /// 400 for deleting a preconfigured (dot-prefixed) endpoint without
    /// `?force=true`.
    pub fn reserved_endpoint(id: &str) -> Self {
        Self::status_exception(
            400,
            format!(
                "[{id}] is a reserved inference endpoint. Use the force=true query parameter to delete the inference endpoint."
            ),
        )
    }

    /// 405 for `_stream` on a task type that does not stream.
    pub fn streaming_not_allowed(task_type: impl fmt::Display) -> Self {
        Self::status_exception(
            405,
            format!(
                "Streaming is not allowed for service [elasticsearch] and task [{task_type}]. Supported tasks: [completion,chat_completion]"
            ),
        )
    }

    /// 400: an endpoint's model is not in the model cache of this server.
    pub fn model_not_installed(model_id: &str, inference_id: &str) -> Self {
        Self::illegal_argument(format!(
            "model [{model_id}] of inference endpoint [{inference_id}] is not installed on this server; \
             run `cargo xtask models`"
        ))
    }

    /// 400 for the plain perform-inference API on a `chat_completion` endpoint,
    /// which only answers on `_stream`.
    pub fn chat_completion_requires_stream(id: &str) -> Self {
        Self::status_exception(
            400,
            format!(
                "The task type for the inference entity is chat_completion, please use the _inference/chat_completion/{id}/_stream URL."
            ),
        )
    }

    /// The envelope Elasticsearch answers:
    /// `{"error": {"root_cause": [{"type", "reason"}], "type", "reason"}, "status"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "error": {
                "root_cause": [{"type": self.error_type, "reason": self.reason}],
                "type": self.error_type,
                "reason": self.reason,
            },
            "status": self.status,
        })
    }
}

/// Formats a duration as Elasticsearch prints time values: the largest unit
/// that divides it exactly (`30s`, `2m`, `500ms`, `1500micros`).
pub fn format_time_value(d: Duration) -> String {
    let nanos = d.as_nanos();
    let units: [(&str, u128); 7] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("micros", 1_000),
        ("nanos", 1),
    ];
    if nanos == 0 {
        return "0s".into();
    }
    let (unit, per) = units
        .into_iter()
        .find(|(_, per)| nanos.is_multiple_of(*per))
        .unwrap_or(("nanos", 1));
    format!("{}{unit}", nanos / per)
}

/// A task's failure, as every task component reports it (the WIT `error`
/// variant of `edge:inference-types`). Each server's bindings convert their
/// generated variant into this one; the mapping onto the API's errors is here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The request cannot be served as given: a 400.
    #[error("{0}")]
    InvalidInput(String),
    /// The model is missing or unusable: a 500.
    #[error("model error: {0}")]
    Model(String),
    /// The model ran and failed: a 500.
    #[error("inference failed: {0}")]
    Inference(String),
}

impl From<TaskError> for EsError {
    fn from(e: TaskError) -> Self {
        match e {
            TaskError::InvalidInput(m) => EsError::illegal_argument(m),
            other => EsError::internal(other.to_string()),
        }
    }
}

impl fmt::Display for EsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.status, self.error_type, self.reason)
    }
}

impl std::error::Error for EsError {}

/// `Validation Failed: 1: a;2: b;` as Elasticsearch's validation exceptions print.
fn validation_reason(reasons: &[String]) -> String {
    let mut out = String::from("Validation Failed: ");
    for (i, r) in reasons.iter().enumerate() {
        out.push_str(&format!("{}: {r};", i + 1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_values_use_the_largest_exact_unit() {
        assert_eq!(format_time_value(Duration::from_secs(30)), "30s");
        assert_eq!(format_time_value(Duration::from_secs(120)), "2m");
        assert_eq!(format_time_value(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_time_value(Duration::ZERO), "0s");
    }

    #[test]
    fn envelope_shape() {
        let e = EsError::endpoint_not_found("my-e5");
        assert_eq!(
            e.to_json(),
            json!({"error": {"root_cause": [{"type": "resource_not_found_exception",
                                              "reason": "Inference endpoint not found [my-e5]"}],
                             "type": "resource_not_found_exception",
                             "reason": "Inference endpoint not found [my-e5]"},
                   "status": 404})
        );
    }

    #[test]
    fn constructors_use_es_wording_and_status() {
        let e = EsError::already_exists("x");
        assert_eq!(
            (e.status, e.error_type),
            (400, "resource_already_exists_exception")
        );
        assert_eq!(e.reason, "Inference endpoint [x] already exists");

        let e = EsError::task_type_mismatch("rerank", "text_embedding");
        assert_eq!((e.status, e.error_type), (400, "status_exception"));
        assert_eq!(
            e.reason,
            "Incompatible task_type, the requested type [rerank] does not match the model type [text_embedding]"
        );

        assert_eq!(EsError::timeout("t").status, 408);
        assert_eq!(
            EsError::timed_out(Duration::from_secs(30)).reason,
            "Request timed out after [30s]"
        );
        assert_eq!(EsError::overloaded("o").status, 429);
        assert_eq!(EsError::internal("i").status, 500);
        let e = EsError::unauthenticated("u");
        assert_eq!((e.status, e.error_type), (401, "security_exception"));
        assert_eq!(EsError::forbidden("f").status, 403);
        assert_eq!(EsError::parse("p").error_type, "parse_exception");
        assert_eq!(
            EsError::x_content_parse("p").error_type,
            "x_content_parse_exception"
        );
        assert_eq!(
            EsError::illegal_argument("p").error_type,
            "illegal_argument_exception"
        );
        assert_eq!(EsError::body_too_large(2, 1).status, 413);
        assert_eq!(EsError::streaming_not_allowed("rerank").status, 405);
    }

    #[test]
    fn validation_wording() {
        let e = EsError::validation(vec!["a".into(), "b".into()]);
        assert_eq!(e.error_type, "validation_exception");
        assert_eq!(e.reason, "Validation Failed: 1: a;2: b;");
        let e = EsError::request_validation(vec!["Field [input] cannot be null".into()]);
        assert_eq!(e.error_type, "action_request_validation_exception");
        assert_eq!(
            e.reason,
            "Validation Failed: 1: Field [input] cannot be null;"
        );
    }

    #[test]
    fn routing_errors() {
        let e = EsError::no_handler("GET", "/foo?pretty");
        assert_eq!(e.status, 400);
        assert_eq!(
            e.reason,
            "no handler found for uri [/foo?pretty] and method [GET]"
        );
        let e = EsError::method_not_allowed("DELETE", "/_inference", &["GET"]);
        assert_eq!(e.status, 405);
        assert_eq!(
            e.reason,
            "Incorrect HTTP method for uri [/_inference] and method [DELETE], allowed: [GET]"
        );
        let e = EsError::content_type_not_supported("text/plain");
        assert_eq!(
            (e.status, e.reason.as_str()),
            (406, "Content-Type header [text/plain] is not supported")
        );
    }

    #[test]
    fn display_and_error_trait() {
        let e = EsError::internal("boom");
        assert_eq!(e.to_string(), "[500] status_exception: boom");
        let _: &dyn std::error::Error = &e;
    }
}
