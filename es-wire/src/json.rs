//! JSON helpers shared by the request parsers: object parsing with
//! Elasticsearch-style error locations, and Java-like value printing for the
//! messages Elasticsearch builds from maps.

use serde_json::{Map, Value};

use crate::error::EsError;

pub(crate) type Obj = Map<String, Value>;

/// Why a body is not a usable JSON object.
pub(crate) enum BodyError {
    /// Malformed JSON, with Jackson-like `line`, `column` and message.
    Syntax(usize, usize, String),
    /// Valid JSON that is not an object; carries the token name
    /// (`START_ARRAY`, `VALUE_STRING`, ...).
    NotObject(&'static str),
}

impl BodyError {
    /// `[1:10] expected value`-style text.
    pub(crate) fn describe(&self) -> String {
        match self {
            BodyError::Syntax(l, c, m) => format!("[{l}:{c}] {m}"),
            BodyError::NotObject(t) => format!("[1:1] Expected START_OBJECT but was: {t}"),
        }
    }
}

/// Parses a body that must be a JSON object.
pub(crate) fn parse_object(raw: &[u8]) -> Result<Obj, BodyError> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(BodyError::NotObject(token_name(&other))),
        Err(e) => {
            let msg = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let msg = msg.strip_suffix(&suffix).unwrap_or(&msg).to_string();
            Err(BodyError::Syntax(e.line(), e.column(), msg))
        }
    }
}

/// Jackson's name for the token that starts a value.
pub(crate) fn token_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "VALUE_NULL",
        Value::Bool(_) => "VALUE_BOOLEAN",
        Value::Number(_) => "VALUE_NUMBER",
        Value::String(_) => "VALUE_STRING",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
    }
}

/// 1-based `(line, column)` of a top-level key of the object in `raw` and of
/// its value, as Jackson reports token locations. `None` if not found.
pub(crate) fn locate(raw: &[u8], key: &str) -> Option<((usize, usize), (usize, usize))> {
    let (mut line, mut col) = (1usize, 0usize);
    let advance = |c: u8, line: &mut usize, col: &mut usize| {
        if c == b'\n' {
            *line += 1;
            *col = 0;
        } else if c & 0xC0 != 0x80 {
            *col += 1;
        }
    };
    let (mut depth, mut expect_key, mut i) = (0i32, false, 0usize);
    while i < raw.len() {
        let c = raw[i];
        advance(c, &mut line, &mut col);
        match c {
            b'"' => {
                let start = (line, col);
                let open = i;
                i += 1;
                let mut escaped = false;
                while i < raw.len() {
                    let ch = raw[i];
                    advance(ch, &mut line, &mut col);
                    if escaped {
                        escaped = false;
                    } else if ch == b'\\' {
                        escaped = true;
                    } else if ch == b'"' {
                        break;
                    }
                    i += 1;
                }
                if depth == 1 && expect_key {
                    expect_key = false;
                    let name: Option<String> = raw
                        .get(open..=i)
                        .and_then(|s| serde_json::from_slice(s).ok());
                    if name.as_deref() == Some(key) {
                        let (mut l, mut c2) = (line, col);
                        let mut j = i + 1;
                        while j < raw.len() && matches!(raw[j], b' ' | b'\t' | b'\r' | b'\n' | b':')
                        {
                            advance(raw[j], &mut l, &mut c2);
                            j += 1;
                        }
                        return Some((start, (l, c2 + 1)));
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                expect_key = c == b'{' && depth == 1;
            }
            b'}' | b']' => depth -= 1,
            b',' if depth == 1 => expect_key = true,
            _ => {}
        }
        i += 1;
    }
    None
}

/// `[line:col]` of a top-level key's value, `[1:1]` when it cannot be found.
pub(crate) fn value_loc(raw: &[u8], key: &str) -> String {
    let (l, c) = locate(raw, key).map_or((1, 1), |(_, v)| v);
    format!("[{l}:{c}]")
}

/// The unknown key (not in `allowed`) that comes first in the document, with
/// the `[line:col]` of the key itself.
pub(crate) fn first_unknown(raw: &[u8], map: &Obj, allowed: &[&str]) -> Option<(String, String)> {
    map.keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| (locate(raw, k).map_or((usize::MAX, 0), |(key, _)| key), k))
        .min()
        .map(|((l, c), k)| {
            let loc = if l == usize::MAX {
                "[1:1]".to_string()
            } else {
                format!("[{l}:{c}]")
            };
            (k.clone(), loc)
        })
}

/// `[l:c] [parser] unknown field [k]`, Elasticsearch's `ObjectParser` message.
pub(crate) fn unknown_field(parser: &str, key: &str, loc: &str) -> EsError {
    EsError::x_content_parse(format!("{loc} [{parser}] unknown field [{key}]"))
}

/// `[l:c] [parser] k doesn't support values of type: VALUE_NUMBER`.
pub(crate) fn wrong_type(raw: &[u8], parser: &str, key: &str, v: &Value) -> EsError {
    EsError::x_content_parse(format!(
        "{} [{parser}] {key} doesn't support values of type: {}",
        value_loc(raw, key),
        token_name(v)
    ))
}

/// Prints a value the way Java's `Map.toString()` does (`{a=1, b=[x, y]}`),
/// which Elasticsearch uses in several messages about unknown settings.
pub(crate) fn java_string(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(java_string).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) => java_map(m),
    }
}

/// `{a=1, b=x}`.
pub(crate) fn java_map(m: &Obj) -> String {
    let parts: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={}", java_string(v)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Elasticsearch's message for settings nobody consumed.
pub(crate) fn unknown_settings(m: &Obj) -> EsError {
    EsError::status_exception(
        400,
        format!(
            "Model configuration contains settings [{}] unknown to the [elasticsearch] service",
            java_map(m)
        ),
    )
}

/// ServiceUtils' `field [k] is not of the expected type. The value [v] cannot be converted to a [T]`.
pub(crate) fn not_of_type(key: &str, v: &Value, java_type: &str) -> String {
    format!(
        "field [{key}] is not of the expected type. The value [{}] cannot be converted to a [{java_type}]",
        java_string(v)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn syntax_errors_carry_location() {
        let Err(BodyError::Syntax(l, c, m)) = parse_object(b"{\"input\": }") else {
            panic!()
        };
        assert_eq!((l, c), (1, 11));
        assert_eq!(m, "expected value");
        let Err(e) = parse_object(b"[1]") else {
            panic!()
        };
        assert_eq!(
            e.describe(),
            "[1:1] Expected START_OBJECT but was: START_ARRAY"
        );
    }

    #[test]
    fn locates_top_level_keys_only() {
        let raw = br#"{"a": {"foo": 1}, "foo" : 2}"#;
        let (k, v) = locate(raw, "foo").unwrap();
        assert_eq!(k, (1, 19));
        assert_eq!(v, (1, 27));
        let raw = "{\n  \"input\": \"x\",\n  \"b\u{e9}\": 1\n}".as_bytes();
        assert_eq!(locate(raw, "b\u{e9}").unwrap().0, (3, 3));
        assert_eq!(locate(raw, "missing"), None);
        let raw = br#"{"x\"y": 1}"#;
        assert_eq!(locate(raw, "x\"y").unwrap().0, (1, 2));
    }

    #[test]
    fn first_unknown_is_in_document_order() {
        let raw = br#"{"zeta": 1, "input": "a", "alpha": 2}"#;
        let map = parse_object(raw).ok().unwrap();
        let (k, loc) = first_unknown(raw, &map, &["input"]).unwrap();
        assert_eq!((k.as_str(), loc.as_str()), ("zeta", "[1:2]"));
    }

    #[test]
    fn java_printing() {
        let v = json!({"b": [1, "x"], "a": {"c": true, "d": null}});
        assert_eq!(java_string(&v), "{a={c=true, d=null}, b=[1, x]}");
    }
}
