//! Perform-inference and chat-completion request bodies.

use serde_json::{Map, Value};

use crate::endpoint::Endpoint;
use crate::error::EsError;
use crate::json::{first_unknown, parse_object, unknown_field, value_loc, wrong_type, Obj};
use crate::settings::{check_task_settings, TaskSettings};
use crate::types::{InputType, TaskType, Timeout};

/// Name Elasticsearch's `ObjectParser` gives the perform-inference body; it
/// appears in parse errors: `[1:10] [cluster:internal/xpack/inference] unknown field [foo]`.
pub const INFERENCE_PARSER: &str = "cluster:internal/xpack/inference";
/// Parser name used in errors about chat-completion bodies.
pub const CHAT_PARSER: &str = "chat_completion_request";

/// Size limits on requests, so that one request cannot hold a sandbox forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body accepted, in bytes (default 10 MiB; Elasticsearch's
    /// `http.max_content_length` is 100 MiB, but every byte here ends up
    /// copied into a sandbox). Larger: 413.
    pub max_body_bytes: usize,
    /// Most entries in `input` (or chat `messages`) per request (default 1024).
    /// More: 400.
    pub max_inputs: usize,
    /// Most characters (Unicode scalar values) in one input, the rerank
    /// `query` or one chat message (default 100 000, about 25 000 tokens; the
    /// models truncate far below that, so the limit only bounds tokenizer
    /// work). More: 400.
    pub max_input_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 * 1024 * 1024,
            max_inputs: 1024,
            max_input_chars: 100_000,
        }
    }
}

impl Limits {
    /// 413 when a body of `len` bytes is over the limit. Hosts should call it
    /// with the `Content-Length` before reading the body.
    pub fn check_body_len(&self, len: usize) -> Result<(), EsError> {
        if len > self.max_body_bytes {
            Err(EsError::body_too_large(len, self.max_body_bytes))
        } else {
            Ok(())
        }
    }

    fn check_inputs<'a>(
        &self,
        field: &str,
        items: impl ExactSizeIterator<Item = &'a str>,
    ) -> Result<(), EsError> {
        if items.len() > self.max_inputs {
            return Err(EsError::request_validation(vec![format!(
                "Field [{field}] has [{}] entries, more than the limit of [{}]",
                items.len(),
                self.max_inputs
            )]));
        }
        for (i, s) in items.enumerate() {
            self.check_chars(&format!("{field}][{i}"), s)?;
        }
        Ok(())
    }

    fn check_chars(&self, field: &str, s: &str) -> Result<(), EsError> {
        // Count lazily: a string under the limit in bytes is under it in chars.
        if s.len() > self.max_input_chars && s.chars().count() > self.max_input_chars {
            return Err(EsError::request_validation(vec![format!(
                "Field [{field}] has [{}] characters, more than the limit of [{}]",
                s.chars().count(),
                self.max_input_chars
            )]));
        }
        Ok(())
    }
}

/// A perform-inference body (`POST /_inference/[{task_type}/]{id}`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InferenceRequest {
    /// One entry per input, in order (a single string becomes one entry).
    pub input: Vec<String>,
    /// The rerank query.
    pub query: Option<String>,
    /// Overrides `task_settings.input_type` (dense embeddings only).
    pub input_type: Option<InputType>,
    /// Overrides the endpoint's task settings for this request.
    pub task_settings: Map<String, Value>,
    /// Rerank: keep at most this many results.
    pub top_n: Option<u32>,
    /// Rerank: include the document text in each result.
    pub return_documents: Option<bool>,
    /// The body's `timeout` field (Elasticsearch accepts one); the URL's
    /// `timeout` parameter, when given, takes precedence.
    pub timeout: Timeout,
}

/// Options for running a request on an endpoint: the request's fields over the
/// request's `task_settings` over the endpoint's `task_settings`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOptions {
    pub input_type: Option<InputType>,
    pub top_n: Option<u32>,
    /// Rerank: `true` unless set otherwise, as Elasticsearch's own reranker.
    pub return_documents: bool,
    /// The merged task settings (e.g. `max_tokens` for completion).
    pub task_settings: TaskSettings,
}

impl InferenceRequest {
    /// Resolves the effective options for `endpoint`.
    pub fn options(&self, endpoint: &Endpoint) -> TaskOptions {
        let settings = TaskSettings::read(&self.task_settings)
            .over(TaskSettings::read(&endpoint.task_settings));
        TaskOptions {
            input_type: self.input_type.or(settings.input_type),
            top_n: self.top_n.or(settings.top_n),
            return_documents: self
                .return_documents
                .or(settings.return_documents)
                .unwrap_or(true),
            task_settings: settings,
        }
    }
}

/// Checks, after the endpoint was looked up, that a perform-inference or
/// `_stream` request may run on it: the path's task type (if any) must be the
/// endpoint's (400 `status_exception` "Incompatible task_type ..."), `_stream`
/// needs a streaming task (405), and `chat_completion` endpoints answer only on
/// `_stream` (400), as in Elasticsearch. Returns the task type to run.
pub fn check_inference_target(
    requested: Option<TaskType>,
    endpoint: &Endpoint,
    stream: bool,
) -> Result<TaskType, EsError> {
    let actual = endpoint.task_type;
    match requested {
        Some(r) if r != actual => Err(EsError::task_type_mismatch(r, actual)),
        _ if stream && !actual.can_stream() => Err(EsError::streaming_not_allowed(actual)),
        _ if !stream && actual == TaskType::ChatCompletion => Err(
            EsError::chat_completion_requires_stream(&endpoint.inference_id),
        ),
        _ => Ok(actual),
    }
}

/// Parses a perform-inference body for an endpoint of `task_type` (also used
/// for `completion` on `_stream`).
///
/// As Elasticsearch: `input` is a string or an array (numbers and booleans in
/// it are taken as text), required and non-empty (empty strings are allowed);
/// for `embedding`, content objects too, alone or in the array
/// ([`embedding_content`]);
/// unknown fields and wrong types are a 400 `x_content_parse_exception`
/// located like Jackson (`[line:col]`); `query` is required and non-empty for
/// `rerank` and refused for the embedding tasks (ignored by `completion`);
/// `top_n` and `return_documents` only for `rerank`; `input_type` only for
/// `text_embedding` and `embedding`. Field errors are 400
/// `action_request_validation_exception`. `task_settings` follow the same
/// per-task rules as in [`crate::parse_put`]. `top_n` must be ≥ 1. The
/// [`Limits`] apply.
pub fn parse_inference(
    task_type: TaskType,
    body: &[u8],
    limits: &Limits,
) -> Result<InferenceRequest, EsError> {
    limits.check_body_len(body.len())?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(EsError::body_required());
    }
    let p = INFERENCE_PARSER;
    let map = parse_object(body).map_err(|e| EsError::x_content_parse(e.describe()))?;
    let allowed = [
        "input",
        "input_type",
        "task_settings",
        "query",
        "return_documents",
        "top_n",
        "timeout",
    ];
    if let Some((k, loc)) = first_unknown(body, &map, &allowed) {
        return Err(unknown_field(p, &k, &loc));
    }

    let mut req = InferenceRequest::default();
    let mut input = None;
    for (k, v) in &map {
        let bad = || wrong_type(body, p, k, v);
        match (k.as_str(), v) {
            ("input", Value::String(s)) => input = Some(vec![s.clone()]),
            ("input", Value::Object(_)) if task_type == TaskType::Embedding => {
                input = Some(vec![embedding_content(v)?])
            }
            ("input", Value::Array(items)) => {
                let unparsable = || {
                    EsError::x_content_parse(format!(
                        "{} [{p}] failed to parse field [input]",
                        value_loc(body, k)
                    ))
                };
                let texts = items.iter().map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    Value::Bool(b) => Ok(b.to_string()),
                    Value::Object(_) if task_type == TaskType::Embedding => embedding_content(item),
                    _ => Err(unparsable()),
                });
                input = Some(texts.collect::<Result<Vec<_>, _>>()?);
            }
            ("query", Value::String(s)) => req.query = Some(s.clone()),
            ("input_type", Value::String(s)) => req.input_type = Some(s.parse()?),
            ("task_settings", Value::Object(m)) => req.task_settings = m.clone(),
            ("top_n", Value::Number(_) | Value::String(_)) => {
                let n = match v {
                    Value::Number(n) => n.as_i64(),
                    _ => v.as_str().and_then(|s| s.trim().parse().ok()),
                };
                let n = n.ok_or_else(|| {
                    EsError::x_content_parse(format!(
                        "{} [{p}] failed to parse field [top_n]",
                        value_loc(body, k)
                    ))
                })?;
                if n < 1 || n > i64::from(u32::MAX) {
                    return Err(EsError::request_validation(vec![format!(
                        "Field [top_n] must be a positive integer, found [{n}]"
                    )]));
                }
                req.top_n = Some(n as u32);
            }
            ("return_documents", Value::Bool(b)) => req.return_documents = Some(*b),
            ("return_documents", Value::String(s)) => {
                req.return_documents = Some(match s.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(EsError::illegal_argument(format!(
                            "Failed to parse value [{s}] as only [true] or [false] are allowed."
                        )))
                    }
                })
            }
            ("timeout", Value::String(s)) => req.timeout = Timeout::parse(s)?,
            _ => return Err(bad()),
        }
    }

    // InferenceAction.Request.validate(), in its order.
    let fail = |msg: String| Err(EsError::request_validation(vec![msg]));
    let Some(input) = input else {
        return fail("Field [input] cannot be null".into());
    };
    if input.is_empty() {
        return fail("Field [input] cannot be an empty array".into());
    }
    if task_type == TaskType::Rerank {
        match req.query.as_deref() {
            None => return fail("Field [query] cannot be null for task type [rerank]".into()),
            Some("") => return fail("Field [query] cannot be empty for task type [rerank]".into()),
            Some(q) => limits.check_chars("query", q)?,
        }
    } else {
        if req.return_documents.is_some() {
            return fail(format!(
                "Field [return_documents] cannot be specified for task type [{task_type}]"
            ));
        }
        if req.top_n.is_some() {
            return fail(format!(
                "Field [top_n] cannot be specified for task type [{task_type}]"
            ));
        }
    }
    if matches!(
        task_type,
        TaskType::TextEmbedding | TaskType::SparseEmbedding | TaskType::Embedding
    ) && req.query.is_some()
    {
        return fail(format!(
            "Field [query] cannot be specified for task type [{task_type}]"
        ));
    }
    if !task_type.is_dense_embedding() && req.input_type.is_some() {
        return fail(format!(
            "Field [input_type] cannot be specified for task type [{task_type}]"
        ));
    }
    limits.check_inputs("input", input.iter().map(String::as_str))?;
    let mut errors = Vec::new();
    check_task_settings(task_type, &req.task_settings, &mut errors)?;
    if !errors.is_empty() {
        return Err(EsError::validation(errors));
    }
    req.input = input;
    Ok(req)
}

/// The text of one `embedding` input given as content,
/// `{"content": {"type": "text", "format": "text", "value": "..."}}` (the
/// specification's `RequestEmbedding`; `content` may also be a list of one
/// such item). The models here embed text alone: any other type (image,
/// audio, video, pdf) is refused by name.
fn embedding_content(item: &Value) -> Result<String, EsError> {
    let bad = |why: &str| EsError::status_exception(400, format!("Invalid embedding input: {why}"));
    let content = match item.get("content") {
        Some(Value::Array(parts)) if parts.len() == 1 => &parts[0],
        Some(Value::Array(parts)) => {
            return Err(bad(&format!(
                "[content] has [{}] items; the models of this server embed one text item per input",
                parts.len()
            )))
        }
        Some(c @ Value::Object(_)) => c,
        _ => return Err(bad("each object in [input] needs a [content] object")),
    };
    let field = |name: &str| content.get(name).and_then(Value::as_str);
    let kind = field("type").ok_or_else(|| bad("[content] needs a [type]"))?;
    if kind != "text" {
        return Err(EsError::status_exception(
            400,
            format!(
                "Data type [{kind}] is not supported: the models of this server take text only; send [{{\"type\": \"text\", \"value\": ...}}]"
            ),
        ));
    }
    let format = field("format").unwrap_or("text");
    if format != "text" {
        return Err(EsError::status_exception(
            400,
            format!("Data type [text] does not support data format [{format}], supported formats are [text]"),
        ));
    }
    field("value")
        .map(String::from)
        .ok_or_else(|| bad("[content] needs a string [value]"))
}

/// Role of a chat message (`developer` is taken as `system`, as OpenAI does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

/// One chat message with its text content.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub role: ChatRole,
    /// The text; an array of `{"type": "text", "text": ...}` parts is joined.
    pub content: String,
}

/// An OpenAI-style chat completion body
/// (`POST /_inference/chat_completion/{id}/_stream`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatCompletionRequest {
    pub messages: Vec<ChatMessage>,
    /// Informational; the endpoint decides the model.
    pub model: Option<String>,
    /// `max_completion_tokens` (or OpenAI's older `max_tokens`).
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Stop sequences (`stop` as a string or an array).
    pub stop: Vec<String>,
}

/// Parses a chat completion body: `messages` (required, non-empty; roles
/// `system`, `user`, `assistant`; content a string or text parts),
/// `max_completion_tokens` (≥ 1), `temperature` (≥ 0), `top_p` (0..=1),
/// `stop`, `model`; OpenAI's `stream` and `max_tokens` are accepted too.
/// Tools are not supported: non-empty `tools` is a 400. Unknown fields are a
/// 400 `x_content_parse_exception`. The [`Limits`] apply to the messages.
pub fn parse_chat_completion(
    body: &[u8],
    limits: &Limits,
) -> Result<ChatCompletionRequest, EsError> {
    limits.check_body_len(body.len())?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(EsError::body_required());
    }
    let p = CHAT_PARSER;
    let map = parse_object(body).map_err(|e| EsError::x_content_parse(e.describe()))?;
    let allowed = [
        "messages",
        "model",
        "max_completion_tokens",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "stream",
        "tools",
        "tool_choice",
    ];
    if let Some((k, loc)) = first_unknown(body, &map, &allowed) {
        return Err(unknown_field(p, &k, &loc));
    }
    let mut req = ChatCompletionRequest::default();
    let mut messages = None;
    for (k, v) in &map {
        let bad = || wrong_type(body, p, k, v);
        match (k.as_str(), v) {
            (_, Value::Null) => {}
            ("messages", Value::Array(items)) => {
                messages = Some(
                    items
                        .iter()
                        .map(|m| chat_message(body, m))
                        .collect::<Result<Vec<_>, _>>()?,
                )
            }
            ("model", Value::String(s)) => req.model = Some(s.clone()),
            ("max_completion_tokens" | "max_tokens", Value::Number(n)) => match n.as_i64() {
                Some(n) if n >= 1 && n <= i64::from(u32::MAX) => {
                    req.max_completion_tokens = Some(n as u32)
                }
                _ => {
                    return Err(EsError::request_validation(vec![format!(
                        "Field [{k}] must be a positive integer, found [{n}]"
                    )]))
                }
            },
            ("temperature", Value::Number(n)) => {
                let t = n.as_f64().unwrap_or(-1.0);
                if t < 0.0 {
                    return Err(EsError::request_validation(vec![format!(
                        "Field [temperature] must be greater than or equal to [0.0], found [{n}]"
                    )]));
                }
                req.temperature = Some(t as f32);
            }
            ("top_p", Value::Number(n)) => {
                let t = n.as_f64().unwrap_or(-1.0);
                if !(0.0..=1.0).contains(&t) {
                    return Err(EsError::request_validation(vec![format!(
                        "Field [top_p] must be between [0.0] and [1.0], found [{n}]"
                    )]));
                }
                req.top_p = Some(t as f32);
            }
            ("stop", Value::String(s)) => req.stop = vec![s.clone()],
            ("stop", Value::Array(items)) => {
                req.stop = items
                    .iter()
                    .map(|s| s.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(bad)?
            }
            ("stream", Value::Bool(_)) => {}
            ("tools", Value::Array(items)) if items.is_empty() => {}
            ("tools", Value::Array(_)) => {
                return Err(EsError::illegal_argument(
                    "[tools] are not supported by the [elasticsearch] service",
                ))
            }
            ("tool_choice", Value::String(_) | Value::Object(_)) => {}
            _ => return Err(bad()),
        }
    }
    let Some(messages) = messages else {
        return Err(EsError::request_validation(vec![
            "Field [messages] cannot be null".into(),
        ]));
    };
    if messages.is_empty() {
        return Err(EsError::request_validation(vec![
            "Field [messages] cannot be an empty array".into(),
        ]));
    }
    limits.check_inputs("messages", messages.iter().map(|m| m.content.as_str()))?;
    req.messages = messages;
    Ok(req)
}

fn chat_message(body: &[u8], m: &Value) -> Result<ChatMessage, EsError> {
    let loc = value_loc(body, "messages");
    let fail = |what: String| {
        EsError::x_content_parse(format!(
            "{loc} [{CHAT_PARSER}] failed to parse field [messages]: {what}"
        ))
    };
    let Value::Object(obj) = m else {
        return Err(fail("each message must be an object".into()));
    };
    let obj: &Obj = obj;
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "role" | "content" | "name"))
    {
        return Err(match k.as_str() {
            "tool_calls" | "tool_call_id" => EsError::illegal_argument(
                "tool calls are not supported by the [elasticsearch] service",
            ),
            _ => fail(format!("unknown field [{k}]")),
        });
    }
    let role = match obj.get("role").and_then(Value::as_str) {
        Some("system" | "developer") => ChatRole::System,
        Some("user") => ChatRole::User,
        Some("assistant") => ChatRole::Assistant,
        Some(other) => {
            return Err(EsError::illegal_argument(format!(
                "Unsupported role [{other}], must be one of [system, user, assistant]"
            )))
        }
        None => return Err(fail("[role] is required and must be a string".into())),
    };
    let content = match obj.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(text)) => Ok(text),
                    _ => Err(EsError::illegal_argument(
                        "only content parts of type [text] with a [text] string are supported",
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?
            .concat(),
        _ => {
            return Err(fail(
                "[content] is required and must be a string or an array of text parts".into(),
            ))
        }
    };
    Ok(ChatMessage { role, content })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, ModelInfo};
    use crate::settings::parse_put;
    use serde_json::json;

    fn parse(task: TaskType, body: &str) -> Result<InferenceRequest, EsError> {
        parse_inference(task, body.as_bytes(), &Limits::default())
    }

    #[test]
    fn embedding_takes_text_content_objects() {
        let text = |v: &str| {
            format!(r#"{{"content": {{"type": "text", "format": "text", "value": "{v}"}}}}"#)
        };
        let r = parse(
            TaskType::Embedding,
            &format!(r#"{{"input": {}}}"#, text("a")),
        )
        .unwrap();
        assert_eq!(r.input, ["a"]);
        let body = format!(
            r#"{{"input": ["b", {}, {{"content": [{{"type": "text", "value": "d"}}]}}], "input_type": "search"}}"#,
            text("c")
        );
        let r = parse(TaskType::Embedding, &body).unwrap();
        assert_eq!(r.input, ["b", "c", "d"]);
        let image = r#"{"input": {"content": {"type": "image", "format": "base64", "value": "data:image/png;base64,AAAA"}}}"#;
        let e = parse(TaskType::Embedding, image).unwrap_err();
        assert_eq!((e.status, e.error_type), (400, "status_exception"));
        assert!(
            e.reason.starts_with("Data type [image] is not supported"),
            "{}",
            e.reason
        );
        let e = parse(
            TaskType::Embedding,
            r#"{"input": [{"content": {"type": "text", "format": "base64", "value": "x"}}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.reason,
            "Data type [text] does not support data format [base64], supported formats are [text]"
        );
        // Only the embedding task takes content objects.
        let e = parse(
            TaskType::TextEmbedding,
            &format!(r#"{{"input": [{}]}}"#, text("a")),
        )
        .unwrap_err();
        assert_eq!(e.error_type, "x_content_parse_exception");
    }

    #[test]
    fn input_string_or_array() {
        let r = parse(TaskType::TextEmbedding, r#"{"input": "hello"}"#).unwrap();
        assert_eq!(r.input, vec!["hello"]);
        let r = parse(TaskType::TextEmbedding, r#"{"input": ["a", "", 3, true]}"#).unwrap();
        assert_eq!(r.input, vec!["a", "", "3", "true"]);
        assert_eq!(r.timeout, Timeout::Default);
    }

    #[test]
    fn input_required_and_non_empty() {
        let e = parse(TaskType::TextEmbedding, r#"{"input_type": "search"}"#).unwrap_err();
        assert_eq!(
            (e.status, e.error_type),
            (400, "action_request_validation_exception")
        );
        assert_eq!(
            e.reason,
            "Validation Failed: 1: Field [input] cannot be null;"
        );
        let e = parse(TaskType::TextEmbedding, r#"{"input": []}"#).unwrap_err();
        assert_eq!(
            e.reason,
            "Validation Failed: 1: Field [input] cannot be an empty array;"
        );
    }

    #[test]
    fn bad_json_unknown_fields_and_types() {
        let e = parse(TaskType::TextEmbedding, r#"{"input": }"#).unwrap_err();
        assert_eq!(e.error_type, "x_content_parse_exception");
        assert_eq!(e.reason, "[1:11] expected value");
        let e = parse(TaskType::TextEmbedding, r#"{"input": "a", "foo": 1}"#).unwrap_err();
        assert_eq!((e.status, e.error_type), (400, "x_content_parse_exception"));
        assert_eq!(
            e.reason,
            "[1:16] [cluster:internal/xpack/inference] unknown field [foo]"
        );
        let e = parse(TaskType::TextEmbedding, r#"{"input": 5}"#).unwrap_err();
        assert_eq!(e.reason, "[1:11] [cluster:internal/xpack/inference] input doesn't support values of type: VALUE_NUMBER");
        let e = parse(TaskType::TextEmbedding, r#"{"input": [null]}"#).unwrap_err();
        assert_eq!(
            e.reason,
            "[1:11] [cluster:internal/xpack/inference] failed to parse field [input]"
        );
        let e = parse(TaskType::TextEmbedding, r#"["a"]"#).unwrap_err();
        assert_eq!(e.error_type, "x_content_parse_exception");
        assert_eq!(
            parse(TaskType::TextEmbedding, "  ").unwrap_err().reason,
            "request body is required"
        );
    }

    #[test]
    fn rerank_fields() {
        let r = parse(
            TaskType::Rerank,
            r#"{"input": ["a", "b"], "query": "q", "top_n": 1, "return_documents": "false"}"#,
        )
        .unwrap();
        assert_eq!(
            (r.query.as_deref(), r.top_n, r.return_documents),
            (Some("q"), Some(1), Some(false))
        );
        let e = parse(TaskType::Rerank, r#"{"input": ["a"]}"#).unwrap_err();
        assert_eq!(
            e.reason,
            "Validation Failed: 1: Field [query] cannot be null for task type [rerank];"
        );
        let e = parse(TaskType::Rerank, r#"{"input": ["a"], "query": ""}"#).unwrap_err();
        assert_eq!(
            e.reason,
            "Validation Failed: 1: Field [query] cannot be empty for task type [rerank];"
        );
        let e = parse(
            TaskType::Rerank,
            r#"{"input": ["a"], "query": "q", "top_n": 0}"#,
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        let e = parse(
            TaskType::Rerank,
            r#"{"input": ["a"], "query": "q", "return_documents": "yes"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.reason,
            "Failed to parse value [yes] as only [true] or [false] are allowed."
        );
    }

    #[test]
    fn fields_refused_per_task() {
        let e = parse(TaskType::TextEmbedding, r#"{"input": "a", "top_n": 2}"#).unwrap_err();
        assert_eq!(e.reason, "Validation Failed: 1: Field [top_n] cannot be specified for task type [text_embedding];");
        let e = parse(
            TaskType::SparseEmbedding,
            r#"{"input": "a", "return_documents": true}"#,
        )
        .unwrap_err();
        assert_eq!(e.reason, "Validation Failed: 1: Field [return_documents] cannot be specified for task type [sparse_embedding];");
        let e = parse(TaskType::SparseEmbedding, r#"{"input": "a", "query": "q"}"#).unwrap_err();
        assert_eq!(e.reason, "Validation Failed: 1: Field [query] cannot be specified for task type [sparse_embedding];");
        let e = parse(
            TaskType::SparseEmbedding,
            r#"{"input": "a", "input_type": "search"}"#,
        )
        .unwrap_err();
        assert_eq!(e.reason, "Validation Failed: 1: Field [input_type] cannot be specified for task type [sparse_embedding];");
        // Completion ignores a query, as Elasticsearch.
        assert!(parse(TaskType::Completion, r#"{"input": "a", "query": "q"}"#).is_ok());
    }

    #[test]
    fn input_type_and_task_settings() {
        let r = parse(
            TaskType::TextEmbedding,
            r#"{"input": "a", "input_type": "SEARCH", "timeout": "5s"}"#,
        )
        .unwrap();
        assert_eq!(r.input_type, Some(InputType::Search));
        assert_eq!(r.timeout, Timeout::After(std::time::Duration::from_secs(5)));
        let e = parse(
            TaskType::TextEmbedding,
            r#"{"input": "a", "input_type": "internal_ingest"}"#,
        )
        .unwrap_err();
        assert_eq!(e.error_type, "illegal_argument_exception");
        let e = parse(
            TaskType::TextEmbedding,
            r#"{"input": "a", "task_settings": {"foo": 1}}"#,
        )
        .unwrap_err();
        assert_eq!(e.reason, "Model configuration contains settings [{foo=1}] unknown to the [elasticsearch] service");
        let e = parse(
            TaskType::TextEmbedding,
            r#"{"input": "a", "task_settings": {"input_type": "x"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.error_type, "validation_exception");
    }

    #[test]
    fn limits() {
        let limits = Limits {
            max_body_bytes: 64,
            max_inputs: 2,
            max_input_chars: 3,
        };
        let e = parse_inference(
            TaskType::TextEmbedding,
            br#"{"input": ["a", "b", "c"]}"#,
            &limits,
        )
        .unwrap_err();
        assert_eq!(
            e.reason,
            "Validation Failed: 1: Field [input] has [3] entries, more than the limit of [2];"
        );
        let e = parse_inference(
            TaskType::TextEmbedding,
            br#"{"input": ["a", "abcd"]}"#,
            &limits,
        )
        .unwrap_err();
        assert_eq!(e.reason, "Validation Failed: 1: Field [input][1] has [4] characters, more than the limit of [3];");
        // Three two-byte characters are within a three-character limit.
        assert!(parse_inference(
            TaskType::TextEmbedding,
            "{\"input\": \"\u{e9}\u{e9}\u{e9}\"}".as_bytes(),
            &limits
        )
        .is_ok());
        let big = format!(r#"{{"input": "{}"}}"#, "a".repeat(100));
        assert_eq!(
            parse_inference(TaskType::TextEmbedding, big.as_bytes(), &limits)
                .unwrap_err()
                .status,
            413
        );
        let d = Limits::default();
        assert_eq!(
            (d.max_body_bytes, d.max_inputs, d.max_input_chars),
            (10 * 1024 * 1024, 1024, 100_000)
        );
    }

    fn endpoint(task: TaskType, task_settings: Value) -> Endpoint {
        let catalog = Catalog::new(vec![ModelInfo {
            model_id: "m".into(),
            task_types: TaskType::ALL.to_vec(),
        }]);
        let body = json!({"service": "elasticsearch", "service_settings": {"model_id": "m", "num_allocations": 1}, "task_settings": task_settings});
        parse_put(Some(task), "ep", body.to_string().as_bytes(), &catalog).unwrap()
    }

    #[test]
    fn options_merge_request_over_endpoint() {
        let ep = endpoint(
            TaskType::Rerank,
            json!({"top_n": 5, "return_documents": false}),
        );
        let r = parse(TaskType::Rerank, r#"{"input": ["a"], "query": "q"}"#).unwrap();
        let o = r.options(&ep);
        assert_eq!((o.top_n, o.return_documents), (Some(5), false));
        let r = parse(TaskType::Rerank, r#"{"input": ["a"], "query": "q", "top_n": 1, "task_settings": {"return_documents": true}}"#).unwrap();
        let o = r.options(&ep);
        assert_eq!((o.top_n, o.return_documents), (Some(1), true));
        let plain = endpoint(TaskType::Rerank, json!({}));
        assert!(
            parse(TaskType::Rerank, r#"{"input": ["a"], "query": "q"}"#)
                .unwrap()
                .options(&plain)
                .return_documents
        );
        let ep = endpoint(TaskType::TextEmbedding, json!({"input_type": "ingest"}));
        let r = parse(TaskType::TextEmbedding, r#"{"input": "a"}"#).unwrap();
        assert_eq!(r.options(&ep).input_type, Some(InputType::Ingest));
        let r = parse(
            TaskType::TextEmbedding,
            r#"{"input": "a", "input_type": "search"}"#,
        )
        .unwrap();
        assert_eq!(r.options(&ep).input_type, Some(InputType::Search));
    }

    #[test]
    fn inference_targets() {
        let ep = endpoint(TaskType::TextEmbedding, json!({}));
        assert_eq!(
            check_inference_target(None, &ep, false).unwrap(),
            TaskType::TextEmbedding
        );
        let e = check_inference_target(Some(TaskType::Rerank), &ep, false).unwrap_err();
        assert_eq!(e.reason, "Incompatible task_type, the requested type [rerank] does not match the model type [text_embedding]");
        assert_eq!(
            check_inference_target(None, &ep, true).unwrap_err().status,
            405
        );
        let chat = endpoint(TaskType::ChatCompletion, json!({}));
        assert!(check_inference_target(None, &chat, false)
            .unwrap_err()
            .reason
            .contains("_inference/chat_completion/ep/_stream"));
        assert!(check_inference_target(Some(TaskType::ChatCompletion), &chat, true).is_ok());
    }

    fn chat(body: Value) -> Result<ChatCompletionRequest, EsError> {
        parse_chat_completion(body.to_string().as_bytes(), &Limits::default())
    }

    #[test]
    fn chat_completion_bodies() {
        let r = chat(json!({"model": "x", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]}],
            "max_completion_tokens": 16, "temperature": 0.2, "top_p": 0.9, "stop": "\n", "stream": true})).unwrap();
        assert_eq!(
            r.messages[0],
            ChatMessage {
                role: ChatRole::System,
                content: "be brief".into()
            }
        );
        assert_eq!(r.messages[1].content, "Hello");
        assert_eq!(
            (r.max_completion_tokens, r.stop.clone()),
            (Some(16), vec!["\n".to_string()])
        );
        let e = chat(json!({"messages": []})).unwrap_err();
        assert_eq!(
            e.reason,
            "Validation Failed: 1: Field [messages] cannot be an empty array;"
        );
        let e = chat(json!({"messages": [{"role": "tool", "content": "x"}]})).unwrap_err();
        assert!(e.reason.starts_with("Unsupported role [tool]"));
        let e = chat(json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})).unwrap_err();
        assert_eq!(e.status, 400);
        let e =
            chat(json!({"messages": [{"role": "user", "content": "x"}], "foo": 1})).unwrap_err();
        assert_eq!(e.error_type, "x_content_parse_exception");
        let e = chat(json!({"messages": [{"role": "user"}]})).unwrap_err();
        assert_eq!(e.error_type, "x_content_parse_exception");
        let e =
            chat(json!({"messages": [{"role": "user", "content": "x"}], "top_p": 3})).unwrap_err();
        assert_eq!(e.status, 400);
    }
}
