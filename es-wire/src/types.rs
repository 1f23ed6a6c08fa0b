//! Small vocabulary types: task, input and element types, ids, durations.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::EsError;

/// The task types of the inference API. Serialised as Elasticsearch's snake
/// case names (`text_embedding`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    TextEmbedding,
    SparseEmbedding,
    Rerank,
    Completion,
    ChatCompletion,
    Embedding,
}

impl TaskType {
    /// Every task type, in Elasticsearch's declaration order.
    pub const ALL: [TaskType; 6] = [
        TaskType::TextEmbedding,
        TaskType::SparseEmbedding,
        TaskType::Rerank,
        TaskType::Completion,
        TaskType::ChatCompletion,
        TaskType::Embedding,
    ];

    /// The wire name, e.g. `text_embedding`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::TextEmbedding => "text_embedding",
            TaskType::SparseEmbedding => "sparse_embedding",
            TaskType::Rerank => "rerank",
            TaskType::Completion => "completion",
            TaskType::ChatCompletion => "chat_completion",
            TaskType::Embedding => "embedding",
        }
    }

    /// Dense embedding tasks: the ones with `element_type`, `similarity` and
    /// `input_type`.
    pub fn is_dense_embedding(self) -> bool {
        matches!(self, TaskType::TextEmbedding | TaskType::Embedding)
    }

    /// Tasks that may be served as Server-Sent Events on `_stream`.
    pub fn can_stream(self) -> bool {
        matches!(self, TaskType::Completion | TaskType::ChatCompletion)
    }
}

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskType {
    type Err = EsError;

    /// Case-insensitive and trimmed, as Elasticsearch's `TaskType.fromString`.
    /// Unknown names are a 400 `status_exception` "Unknown task_type \[x\]".
    fn from_str(s: &str) -> Result<Self, EsError> {
        let norm = s.trim().to_ascii_lowercase();
        TaskType::ALL
            .into_iter()
            .find(|t| t.as_str() == norm)
            .ok_or_else(|| EsError::unknown_task_type(s))
    }
}

/// What an embedding is for. Parsed case-insensitively; Elasticsearch's
/// internal values (`internal_search`, `internal_ingest`) are refused on the
/// REST API, as Elasticsearch does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    Search,
    Ingest,
    Classification,
    Clustering,
}

impl InputType {
    const ALL: [InputType; 4] = [
        InputType::Search,
        InputType::Ingest,
        InputType::Classification,
        InputType::Clustering,
    ];

    /// The wire name, e.g. `search`.
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::Search => "search",
            InputType::Ingest => "ingest",
            InputType::Classification => "classification",
            InputType::Clustering => "clustering",
        }
    }
}

impl fmt::Display for InputType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InputType {
    type Err = EsError;

    fn from_str(s: &str) -> Result<Self, EsError> {
        let norm = s.trim().to_ascii_lowercase();
        InputType::ALL
            .into_iter()
            .find(|t| t.as_str() == norm)
            .ok_or_else(|| {
                EsError::illegal_argument(format!(
                    "Unrecognized input_type [{norm}], must be one of [classification, clustering, ingest, search]"
                ))
            })
    }
}

/// How dense vectors are answered: `float`, `byte` (int8, see
/// [`crate::quantize_int8`]) or `bit` (sign bits, see [`crate::pack_bits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElementType {
    #[default]
    Float,
    Byte,
    Bit,
}

impl ElementType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ElementType::Float => "float",
            ElementType::Byte => "byte",
            ElementType::Bit => "bit",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "float" => Some(ElementType::Float),
            "byte" => Some(ElementType::Byte),
            "bit" => Some(ElementType::Bit),
            _ => None,
        }
    }
}

/// Similarity measure advertised for dense embeddings (what a `dense_vector`
/// field should use with them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Similarity {
    Cosine,
    DotProduct,
    L2Norm,
    MaxInnerProduct,
}

impl Similarity {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cosine" => Some(Similarity::Cosine),
            "dot_product" => Some(Similarity::DotProduct),
            "l2_norm" => Some(Similarity::L2Norm),
            "max_inner_product" => Some(Similarity::MaxInnerProduct),
            _ => None,
        }
    }
}

/// Maximum length of an inference id (Elasticsearch's ML id limit).
pub const MAX_ID_LEN: usize = 64;

/// Whether an id is reserved for preconfigured endpoints (it starts with `.`).
/// Such endpoints can be read and used, but not created, updated or deleted.
pub fn is_reserved_id(id: &str) -> bool {
    id.starts_with('.')
}

/// The rules for the id of a new endpoint, as `PutInferenceModelAction`'s
/// request validation (`MlStrings.isValidId`): lowercase `a-z`, `0-9`, `-`,
/// `_` and `.`, starting and ending with a letter or digit, at most 64
/// characters. So a dot-prefixed id, reserved for preconfigured endpoints,
/// is refused before any reserved-id check could see it. Errors are 400
/// `action_request_validation_exception`.
///
/// Use it only when creating: lookups (GET, POST, DELETE) take any id and
/// answer 404 when it does not exist, so preconfigured endpoints stay usable.
pub fn validate_inference_id(id: &str) -> Result<(), EsError> {
    let b = id.as_bytes();
    let inner_ok =
        |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.');
    let edge_ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid =
        !b.is_empty() && b.iter().all(inner_ok) && edge_ok(&b[0]) && edge_ok(&b[b.len() - 1]);
    if !valid {
        return Err(EsError::request_validation(vec![format!(
            "Invalid inference_id; '{id}' can contain lowercase alphanumeric (a-z and 0-9), hyphens or underscores; must start and end with alphanumeric"
        )]));
    }
    if id.len() > MAX_ID_LEN {
        return Err(EsError::request_validation(vec![format!(
            "Invalid inference_id; '{id}' cannot contain more than {MAX_ID_LEN} characters."
        )]));
    }
    Ok(())
}

/// Parses an Elasticsearch time value (`500ms`, `30s`, `2m`, `1h`, `1d`,
/// `100nanos`, `10micros`; `0` and `-1` need no unit), exactly as
/// Elasticsearch's `TimeValue.parseTimeValue`: units are case-insensitive
/// except `m` (minutes; `M` would be months), whitespace around the number is
/// allowed, fractions and negative values other than -1 are refused.
///
/// `-1` (with or without a unit) means "no timeout" and gives `None`; `0` gives
/// `Some(Duration::ZERO)`. `setting` names the parameter in error messages.
/// Errors are 400 `illegal_argument_exception` with Elasticsearch's wording.
pub fn parse_duration(value: &str, setting: &str) -> Result<Option<Duration>, EsError> {
    let norm = value.trim().to_ascii_lowercase();
    // Order matters: "nanos" and "ms" end in "s"; "m" is checked on the raw value.
    let units: [(&str, u128); 7] = [
        ("nanos", 1),
        ("micros", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
        ("d", 86_400_000_000_000),
    ];
    for (unit, nanos_per) in units {
        let matches = if unit == "m" {
            value.trim_end().ends_with('m')
        } else {
            norm.ends_with(unit)
        };
        if !matches {
            continue;
        }
        let number = norm[..norm.len() - unit.len()].trim();
        let n: i64 = match number.parse() {
            Ok(n) => n,
            Err(_) if number.parse::<f64>().is_ok() => {
                return Err(EsError::illegal_argument(format!(
                    "failed to parse [{value}], fractional time values are not supported"
                )))
            }
            Err(_) => {
                return Err(EsError::illegal_argument(format!(
                    "failed to parse [{value}]"
                )))
            }
        };
        return match n {
            -1 => Ok(None),
            n if n < -1 => Err(EsError::illegal_argument(format!(
                "failed to parse setting [{setting}] with value [{value}] as a time value: negative durations are not supported"
            ))),
            n => {
                let nanos = (n as u128).saturating_mul(nanos_per);
                let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
                Ok(Some(Duration::new(secs, (nanos % 1_000_000_000) as u32)))
            }
        };
    }
    let minus_one = norm
        .strip_prefix('-')
        .is_some_and(|digits| digits.trim_start_matches('0') == "1");
    if minus_one {
        Ok(None)
    } else if !norm.is_empty() && norm.bytes().all(|c| c == b'0') {
        Ok(Some(Duration::ZERO))
    } else {
        Err(EsError::illegal_argument(format!(
            "failed to parse setting [{setting}] with value [{value}] as a time value: unit is missing or unrecognized"
        )))
    }
}

/// A request's `timeout`: not given (the task's default applies), `-1` (no
/// deadline), or a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Timeout {
    #[default]
    Default,
    Never,
    After(Duration),
}

impl Timeout {
    /// Parses a `timeout` value with [`parse_duration`].
    pub fn parse(value: &str) -> Result<Self, EsError> {
        Ok(match parse_duration(value, "timeout")? {
            None => Timeout::Never,
            Some(d) => Timeout::After(d),
        })
    }

    /// `self` unless it is [`Timeout::Default`], else `fallback`: combines the
    /// URL's `timeout` (which wins) with the body's.
    pub fn or(self, fallback: Timeout) -> Timeout {
        match self {
            Timeout::Default => fallback,
            given => given,
        }
    }

    /// The deadline to apply for a task: `None` means no deadline.
    pub fn resolve(self, task_type: TaskType) -> Option<Duration> {
        match self {
            Timeout::Default => Some(default_timeout(task_type)),
            Timeout::Never => None,
            Timeout::After(d) => Some(d),
        }
    }
}

/// The timeout when the request names none: 30 s (Elasticsearch's
/// `InferenceAction.Request.DEFAULT_TIMEOUT`), 120 s for the generative tasks.
pub fn default_timeout(task_type: TaskType) -> Duration {
    match task_type {
        TaskType::Completion | TaskType::ChatCompletion => Duration::from_secs(120),
        _ => Duration::from_secs(30),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_type_names_round_trip() {
        for t in TaskType::ALL {
            assert_eq!(t.as_str().parse::<TaskType>().unwrap(), t);
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
            assert_eq!(
                serde_json::from_value::<TaskType>(t.as_str().into()).unwrap(),
                t
            );
        }
        assert_eq!(
            " TEXT_Embedding ".parse::<TaskType>().unwrap(),
            TaskType::TextEmbedding
        );
        let e = "bad".parse::<TaskType>().unwrap_err();
        assert_eq!((e.status, e.error_type), (400, "status_exception"));
        assert_eq!(e.reason, "Unknown task_type [bad]");
    }

    #[test]
    fn input_type_parsing() {
        assert_eq!("SEARCH".parse::<InputType>().unwrap(), InputType::Search);
        assert_eq!(" ingest".parse::<InputType>().unwrap(), InputType::Ingest);
        assert_eq!(
            "clustering".parse::<InputType>().unwrap(),
            InputType::Clustering
        );
        assert_eq!(
            "Classification".parse::<InputType>().unwrap(),
            InputType::Classification
        );
        let e = "internal_search".parse::<InputType>().unwrap_err();
        assert_eq!(e.error_type, "illegal_argument_exception");
        assert!(e
            .reason
            .starts_with("Unrecognized input_type [internal_search]"));
    }

    #[test]
    fn element_type_serde() {
        assert_eq!(serde_json::to_value(ElementType::Bit).unwrap(), "bit");
        assert_eq!(ElementType::parse("BYTE"), Some(ElementType::Byte));
        assert_eq!(ElementType::parse("int8"), None);
        assert_eq!(ElementType::default(), ElementType::Float);
    }

    #[test]
    fn id_rules() {
        for ok in ["a", "my-e5", "e5_small-2", "0", "e5.v2", &"a".repeat(64)] {
            validate_inference_id(ok).unwrap();
        }
        // Preconfigured ids start with a dot: refused as any other bad id.
        for bad in [
            "",
            "-a",
            "a-",
            "_a",
            "a_",
            "My-E5",
            "a b",
            "a.",
            "é",
            "a/b",
            ".elser-2-elasticsearch",
        ] {
            let e = validate_inference_id(bad).unwrap_err();
            assert_eq!(
                (e.status, e.error_type),
                (400, "action_request_validation_exception"),
                "{bad}"
            );
            assert_eq!(
                e.reason,
                format!("Validation Failed: 1: Invalid inference_id; '{bad}' can contain lowercase alphanumeric (a-z and 0-9), hyphens or underscores; must start and end with alphanumeric;")
            );
        }
        let long = "a".repeat(65);
        let e = validate_inference_id(&long).unwrap_err();
        assert_eq!(
            e.reason,
            format!("Validation Failed: 1: Invalid inference_id; '{long}' cannot contain more than 64 characters.;")
        );
        assert!(is_reserved_id(".x") && !is_reserved_id("x"));
    }

    fn d(v: &str) -> Result<Option<Duration>, EsError> {
        parse_duration(v, "timeout")
    }

    #[test]
    fn durations() {
        assert_eq!(d("500ms").unwrap(), Some(Duration::from_millis(500)));
        assert_eq!(d("30s").unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(d("30S").unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(d("2m").unwrap(), Some(Duration::from_secs(120)));
        assert_eq!(d("1h").unwrap(), Some(Duration::from_secs(3600)));
        assert_eq!(d("1d").unwrap(), Some(Duration::from_secs(86400)));
        assert_eq!(d("15micros").unwrap(), Some(Duration::from_micros(15)));
        assert_eq!(d("7nanos").unwrap(), Some(Duration::from_nanos(7)));
        assert_eq!(d(" 10 s ").unwrap(), Some(Duration::from_secs(10)));
        assert_eq!(d("-1").unwrap(), None);
        assert_eq!(d("-001").unwrap(), None);
        assert_eq!(d("-1s").unwrap(), None);
        assert_eq!(d("0").unwrap(), Some(Duration::ZERO));
        assert_eq!(d("0ms").unwrap(), Some(Duration::ZERO));
        assert_eq!(
            d("99999999999999d").unwrap().unwrap().as_secs(),
            99999999999999 * 86400
        );
    }

    #[test]
    fn duration_errors_use_es_wording() {
        let e = d("10").unwrap_err();
        assert_eq!(e.error_type, "illegal_argument_exception");
        assert_eq!(e.reason, "failed to parse setting [timeout] with value [10] as a time value: unit is missing or unrecognized");
        assert!(d("5M").unwrap_err().reason.contains("unit is missing"));
        assert_eq!(
            d("1.5s").unwrap_err().reason,
            "failed to parse [1.5s], fractional time values are not supported"
        );
        assert_eq!(d("xs").unwrap_err().reason, "failed to parse [xs]");
        assert_eq!(
            d("-2s").unwrap_err().reason,
            "failed to parse setting [timeout] with value [-2s] as a time value: negative durations are not supported"
        );
        assert!(d("").is_err());
    }

    #[test]
    fn time_value_format() {}

    #[test]
    fn timeouts() {
        assert_eq!(
            default_timeout(TaskType::TextEmbedding),
            Duration::from_secs(30)
        );
        assert_eq!(
            default_timeout(TaskType::Completion),
            Duration::from_secs(120)
        );
        assert_eq!(
            default_timeout(TaskType::ChatCompletion),
            Duration::from_secs(120)
        );
        assert_eq!(
            Timeout::Default.resolve(TaskType::Rerank),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            Timeout::parse("-1").unwrap().resolve(TaskType::Rerank),
            None
        );
        assert_eq!(Timeout::Default.or(Timeout::Never), Timeout::Never);
        assert_eq!(
            Timeout::After(Duration::ZERO).or(Timeout::Never),
            Timeout::After(Duration::ZERO)
        );
        assert_eq!(
            Timeout::parse("2s").unwrap(),
            Timeout::After(Duration::from_secs(2))
        );
    }
}
