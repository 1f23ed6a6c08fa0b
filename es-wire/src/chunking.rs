//! `chunking_settings` of an embedding endpoint, checked and completed as
//! Elasticsearch's `ChunkingSettingsBuilder` does when an endpoint is created.
//!
//! Elasticsearch splits long text by these settings when `semantic_text`
//! indexes it; a perform-inference request embeds each input whole. So the
//! settings matter to what a client stores and reads back, and they are kept
//! exactly as Elasticsearch would keep them: the strategy's fields, defaults
//! filled in, and refusals in its words.
//!
//! - absent or `{}`: the default, `sentence` chunks of 250 words overlapping
//!   by one sentence;
//! - `strategy` is required: `word` (`max_chunk_size` ≥ 10, `overlap` ≥ 1 and
//!   at most half of it), `sentence` (`max_chunk_size` ≥ 20, `sentence_overlap`
//!   0 or 1, default 1), `recursive` (`max_chunk_size` ≥ 10, and either a
//!   `separator_group`, `plaintext` or `markdown`, or up to 50 `separators`;
//!   default the `plaintext` group), or `none`;
//! - a strategy's unknown fields, and every bad value, are collected into one
//!   `validation_exception`.

use serde_json::{json, Map, Value};

use crate::error::EsError;
use crate::json::{java_string, not_of_type, Obj};

const SCOPE: &str = "chunking_settings";
/// The most `separators` a recursive strategy takes.
const MAX_SEPARATORS: usize = 50;

/// The settings Elasticsearch gives an embedding endpoint created without any.
pub fn default_chunking_settings() -> Value {
    json!({"strategy": "sentence", "max_chunk_size": 250, "sentence_overlap": 1})
}

/// Checks a create request's `chunking_settings` (already known to be an
/// object, or absent) and returns what to store.
pub fn parse_chunking_settings(settings: Option<Obj>) -> Result<Value, EsError> {
    let Some(mut map) = settings.filter(|m| !m.is_empty()) else {
        return Ok(default_chunking_settings());
    };
    let Some(strategy) = map.remove("strategy") else {
        return Err(EsError::illegal_argument(
            "Can't generate Chunker without ChunkingStrategy provided",
        ));
    };
    let strategy = java_string(&strategy);
    let (name, allowed): (&str, &[&str]) = match strategy.as_str() {
        // `none` takes nothing else, and ignores what it is given.
        "none" => return Ok(json!({"strategy": "none"})),
        "word" => ("Word", &["max_chunk_size", "overlap"]),
        "sentence" => ("Sentence", &["max_chunk_size", "sentence_overlap"]),
        "recursive" => (
            "Recursive",
            &["max_chunk_size", "separator_group", "separators"],
        ),
        other => {
            return Err(EsError::illegal_argument(format!(
                "Invalid chunkingStrategy {other}"
            )))
        }
    };
    let mut errors = Vec::new();
    let unknown: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    if !unknown.is_empty() {
        errors.push(format!(
            "{name} based chunking settings can not have the following settings: [{}]",
            unknown.join(", ")
        ));
    }
    let min_size = if strategy == "sentence" { 20 } else { 10 };
    let max_chunk_size = required_at_least(&mut map, "max_chunk_size", min_size, &mut errors);
    let mut out = Map::new();
    out.insert("strategy".into(), json!(strategy));
    match strategy.as_str() {
        "word" => {
            // The overlap is checked only against a valid chunk size.
            if let Some(size) = max_chunk_size {
                if let Some(overlap) = required_at_most(&mut map, "overlap", size / 2, &mut errors)
                {
                    out.insert("overlap".into(), json!(overlap));
                }
            }
        }
        "sentence" => {
            let overlap = match map.remove("sentence_overlap") {
                None | Some(Value::Null) => Some(1),
                Some(v) => match integer(&v) {
                    Some(n @ (0 | 1)) => Some(n),
                    Some(n) => {
                        errors.push(format!("sentence_overlap[{n}] must be either 0 or 1"));
                        None
                    }
                    None => {
                        errors.push(not_of_type("sentence_overlap", &v, "Integer"));
                        None
                    }
                },
            };
            out.extend(overlap.map(|n| ("sentence_overlap".into(), json!(n))));
        }
        _ => {
            let group = separator_group(&mut map, &mut errors);
            let separators = separators(&mut map, &mut errors);
            match (group, separators) {
                (Some(_), Some(_)) => errors.push(
                    "Recursive chunking settings can not have both separators and separator_set"
                        .into(),
                ),
                (_, Some(list)) => {
                    out.insert("separators".into(), json!(list));
                }
                (group, None) => {
                    out.insert(
                        "separator_group".into(),
                        json!(group.unwrap_or("plaintext")),
                    );
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(EsError::validation(errors));
    }
    out.insert("max_chunk_size".into(), json!(max_chunk_size));
    Ok(Value::Object(out))
}

/// An integer setting, as Java's `Integer`: no fraction, no string.
fn integer(v: &Value) -> Option<i64> {
    v.as_i64().filter(|n| i32::try_from(*n).is_ok())
}

/// A required positive integer; `None` (with the error pushed) when missing
/// or bad.
fn required_positive(map: &mut Obj, key: &str, errors: &mut Vec<String>) -> Option<i64> {
    let Some(v) = map.remove(key).filter(|v| !v.is_null()) else {
        errors.push(format!(
            "[{SCOPE}] does not contain the required setting [{key}]"
        ));
        return None;
    };
    match integer(&v) {
        Some(n) if n > 0 => Some(n),
        Some(n) => {
            errors.push(format!(
                "[{SCOPE}] Invalid value [{n}]. [{key}] must be a positive integer"
            ));
            None
        }
        None => {
            errors.push(not_of_type(key, &v, "Integer"));
            None
        }
    }
}

/// Bounds print as Java doubles (`10.0`), as Elasticsearch's messages do.
fn required_at_least(map: &mut Obj, key: &str, min: i64, errors: &mut Vec<String>) -> Option<i64> {
    let n = required_positive(map, key, errors)?;
    if n < min {
        errors.push(format!(
            "[{SCOPE}] Invalid value [{n}.0]. [{key}] must be greater than or equal to [{min}.0]"
        ));
        return None;
    }
    Some(n)
}

fn required_at_most(map: &mut Obj, key: &str, max: i64, errors: &mut Vec<String>) -> Option<i64> {
    let n = required_positive(map, key, errors)?;
    if n > max {
        errors.push(format!(
            "[{SCOPE}] Invalid value [{n}.0]. [{key}] must be less than or equal to [{max}.0]"
        ));
        return None;
    }
    Some(n)
}

fn separator_group(map: &mut Obj, errors: &mut Vec<String>) -> Option<&'static str> {
    let v = map.remove("separator_group").filter(|v| !v.is_null())?;
    let Value::String(s) = &v else {
        errors.push(not_of_type("separator_group", &v, "String"));
        return None;
    };
    match s.to_ascii_lowercase().as_str() {
        "" => errors.push(format!(
            "[{SCOPE}] Invalid value empty string. [separator_group] must be a non-empty string"
        )),
        "plaintext" => return Some("plaintext"),
        "markdown" => return Some("markdown"),
        _ => errors.push(format!(
            "[{SCOPE}] Invalid value [{s}] received. [separator_group] must be one of [markdown, plaintext]"
        )),
    }
    None
}

fn separators(map: &mut Obj, errors: &mut Vec<String>) -> Option<Vec<String>> {
    let v = map.remove("separators").filter(|v| !v.is_null())?;
    let list: Option<Vec<String>> = v
        .as_array()
        .and_then(|items| items.iter().map(|s| s.as_str().map(String::from)).collect());
    match list {
        None => errors.push(not_of_type("separators", &v, "List")),
        Some(l) if l.is_empty() => errors
            .push("Recursive chunking settings can not have an empty list of separators".into()),
        Some(l) if l.len() > MAX_SEPARATORS => errors.push(format!(
            "separators list size [{}] must not exceed [{MAX_SEPARATORS}]",
            l.len()
        )),
        Some(l) => return Some(l),
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<Value, EsError> {
        parse_chunking_settings(v.as_object().cloned())
    }

    #[test]
    fn absent_or_empty_settings_are_the_sentence_default() {
        assert_eq!(
            parse_chunking_settings(None).unwrap(),
            default_chunking_settings()
        );
        assert_eq!(parse(json!({})).unwrap(), default_chunking_settings());
    }

    #[test]
    fn each_strategy_keeps_its_fields_with_defaults() {
        assert_eq!(
            parse(json!({"strategy": "word", "max_chunk_size": 100, "overlap": 50})).unwrap(),
            json!({"strategy": "word", "max_chunk_size": 100, "overlap": 50})
        );
        assert_eq!(
            parse(json!({"strategy": "sentence", "max_chunk_size": 20})).unwrap(),
            json!({"strategy": "sentence", "max_chunk_size": 20, "sentence_overlap": 1})
        );
        assert_eq!(
            parse(json!({"strategy": "recursive", "max_chunk_size": 10, "separator_group": "Markdown"}))
                .unwrap(),
            json!({"strategy": "recursive", "max_chunk_size": 10, "separator_group": "markdown"})
        );
        assert_eq!(
            parse(json!({"strategy": "recursive", "max_chunk_size": 10, "separators": ["\n\n"]}))
                .unwrap(),
            json!({"strategy": "recursive", "max_chunk_size": 10, "separators": ["\n\n"]})
        );
        assert_eq!(
            parse(json!({"strategy": "none", "max_chunk_size": 1})).unwrap(),
            json!({"strategy": "none"})
        );
    }

    #[test]
    fn refusals_use_elasticsearch_wording() {
        let reason = |v: Value| {
            let e = parse(v).unwrap_err();
            assert_eq!(e.status, 400);
            (e.error_type, e.reason)
        };
        assert_eq!(
            reason(json!({"max_chunk_size": 100})),
            (
                "illegal_argument_exception",
                "Can't generate Chunker without ChunkingStrategy provided".into()
            )
        );
        assert_eq!(
            reason(json!({"strategy": "Word"})).1,
            "Invalid chunkingStrategy Word"
        );
        assert_eq!(
            reason(json!({"strategy": "word", "max_chunk_size": 5, "overlap": 1, "foo": 1})),
            (
                "validation_exception",
                "Validation Failed: 1: Word based chunking settings can not have the following settings: [foo];\
                 2: [chunking_settings] Invalid value [5.0]. [max_chunk_size] must be greater than or equal to [10.0];"
                    .into()
            )
        );
        assert_eq!(
            reason(json!({"strategy": "word", "max_chunk_size": 100, "overlap": 60})).1,
            "Validation Failed: 1: [chunking_settings] Invalid value [60.0]. [overlap] must be less than or equal to [50.0];"
        );
        assert_eq!(
            reason(json!({"strategy": "word", "max_chunk_size": 100})).1,
            "Validation Failed: 1: [chunking_settings] does not contain the required setting [overlap];"
        );
        assert_eq!(
            reason(json!({"strategy": "sentence", "max_chunk_size": 0, "sentence_overlap": 2})).1,
            "Validation Failed: 1: [chunking_settings] Invalid value [0]. [max_chunk_size] must be a positive integer;\
             2: sentence_overlap[2] must be either 0 or 1;"
        );
        assert_eq!(
            reason(json!({"strategy": "sentence", "max_chunk_size": "big"})).1,
            "Validation Failed: 1: field [max_chunk_size] is not of the expected type. The value [big] cannot be converted to a [Integer];"
        );
        assert_eq!(
            reason(json!({"strategy": "recursive", "max_chunk_size": 10, "separator_group": "html"})).1,
            "Validation Failed: 1: [chunking_settings] Invalid value [html] received. [separator_group] must be one of [markdown, plaintext];"
        );
        assert_eq!(
            reason(json!({"strategy": "recursive", "max_chunk_size": 10,
                "separator_group": "markdown", "separators": ["a"]})).1,
            "Validation Failed: 1: Recursive chunking settings can not have both separators and separator_set;"
        );
        assert_eq!(
            reason(json!({"strategy": "recursive", "max_chunk_size": 10, "separators": []})).1,
            "Validation Failed: 1: Recursive chunking settings can not have an empty list of separators;"
        );
    }
}
