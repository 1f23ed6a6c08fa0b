//! Routing of the inference API, query parameters and media types.

use crate::error::EsError;
use crate::types::{TaskType, Timeout};

/// What a request asks for. Ids are percent-decoded but not validated: lookups
/// answer 404 for ids that do not exist (creation validates with
/// [`crate::validate_inference_id`] in [`crate::parse_put`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: the cluster-info document ([`crate::cluster_info`]).
    ClusterInfo,
    /// `HEAD /`: 200, no body.
    Ping,
    /// `OPTIONS` on a known path: 200, no body, `Allow: <allow joined by ",">`.
    Options { allow: Vec<&'static str> },
    /// `GET /_inference[/_all|/*]`, `GET /_inference/{id}`,
    /// `GET /_inference/{task_type}/{id|_all|*}`. `inference_id: None` lists
    /// all endpoints (of `task_type`, when given). With both set, an endpoint
    /// of another task type is a 400
    /// ([`EsError::requested_task_type_mismatch`]).
    GetEndpoints {
        task_type: Option<TaskType>,
        inference_id: Option<String>,
    },
    /// `GET /_inference/_services[/{task_type}]` ([`crate::services_response`]).
    GetServices { task_type: Option<TaskType> },
    /// `PUT /_inference/[{task_type}/]{id}` ([`crate::parse_put`]).
    Put {
        task_type: Option<TaskType>,
        inference_id: String,
    },
    /// `PUT /_inference/[{task_type}/]{id}/_update` ([`crate::parse_update`]).
    Update {
        task_type: Option<TaskType>,
        inference_id: String,
    },
    /// `DELETE /_inference/[{task_type}/]{id}`, with `?dry_run` and `?force`.
    /// Preconfigured (dot) endpoints cannot be deleted
    /// ([`EsError::reserved_endpoint`]).
    Delete {
        task_type: Option<TaskType>,
        inference_id: String,
        dry_run: bool,
        force: bool,
    },
    /// `POST /_inference/[{task_type}/]{id}` ([`crate::parse_inference`] after
    /// [`crate::check_inference_target`]). `timeout` is the URL parameter
    /// ([`Timeout::Default`] when absent).
    Infer {
        task_type: Option<TaskType>,
        inference_id: String,
        timeout: Timeout,
    },
    /// `POST /_inference/[{task_type}/]{id}/_stream`: Server-Sent Events for
    /// `completion` ([`crate::parse_inference`]) and `chat_completion`
    /// ([`crate::parse_chat_completion`]). A non-streaming task type in the
    /// path is refused here with 405.
    Stream {
        task_type: Option<TaskType>,
        inference_id: String,
        timeout: Timeout,
    },
}

/// Query parameters every Elasticsearch API accepts. `pretty` is honoured via
/// [`wants_pretty`]; the others are accepted and ignored.
pub const UNIVERSAL_PARAMS: [&str; 5] = ["error_trace", "filter_path", "format", "human", "pretty"];

/// Maps a request to a [`Route`].
///
/// `path` is the raw (still percent-encoded) path, `query` the raw query
/// string without `?`. Segments are percent-decoded after splitting, so `%2F`
/// stays inside an id; empty segments are ignored, so trailing slashes are
/// harmless. Unknown paths answer Elasticsearch's 400 "no handler found",
/// known paths with another method 405 ([`allowed_methods`] gives the `Allow`
/// header), unknown query parameters 400 "request [...] contains
/// unrecognized parameter: \[x\]" with Elasticsearch's "did you mean"
/// suggestions; boolean parameters take `true`, `false` or nothing (= true).
pub fn route(method: &str, path: &str, query: Option<&str>) -> Result<Route, EsError> {
    let uri = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let raw_segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let segs = raw_segments
        .iter()
        .map(|s| percent_decode(s, false))
        .collect::<Result<Vec<_>, _>>()?;
    let params = parse_query(query.unwrap_or(""))?;

    let allow = methods_for(&segs).ok_or_else(|| EsError::no_handler(method, &uri))?;
    if method == "OPTIONS" {
        return Ok(Route::Options {
            allow: allow.to_vec(),
        });
    }
    if !allow.contains(&method) {
        return Err(EsError::method_not_allowed(method, &uri, allow));
    }

    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let id = |s: &str| s.to_string();
    let (route, extra): (Route, &[&str]) = match (method, s.as_slice()) {
        ("GET", []) => (Route::ClusterInfo, &[]),
        ("HEAD", []) => (Route::Ping, &[]),
        ("GET", ["_inference"]) => (
            Route::GetEndpoints {
                task_type: None,
                inference_id: None,
            },
            &[],
        ),
        ("GET", ["_inference", "_services"]) => (Route::GetServices { task_type: None }, &[]),
        ("GET", ["_inference", "_services", t]) => (
            Route::GetServices {
                task_type: path_task(t)?,
            },
            &[],
        ),
        ("GET", ["_inference", i]) => (
            Route::GetEndpoints {
                task_type: None,
                inference_id: all_or_id(i),
            },
            &[],
        ),
        ("GET", ["_inference", t, i]) => (
            Route::GetEndpoints {
                task_type: path_task(t)?,
                inference_id: all_or_id(i),
            },
            &[],
        ),
        ("PUT", ["_inference", i, "_update"]) => (
            Route::Update {
                task_type: None,
                inference_id: id(i),
            },
            &["timeout"],
        ),
        ("PUT", ["_inference", t, i, "_update"]) => (
            Route::Update {
                task_type: path_task(t)?,
                inference_id: id(i),
            },
            &["timeout"],
        ),
        ("PUT", ["_inference", i]) => (
            Route::Put {
                task_type: None,
                inference_id: id(i),
            },
            &["timeout"],
        ),
        ("PUT", ["_inference", t, i]) => (
            Route::Put {
                task_type: path_task(t)?,
                inference_id: id(i),
            },
            &["timeout"],
        ),
        ("DELETE", ["_inference", i]) => (delete(None, i), &["dry_run", "force"]),
        ("DELETE", ["_inference", t, i]) => (delete(path_task(t)?, i), &["dry_run", "force"]),
        ("POST", ["_inference", i, "_stream"]) => (stream(None, i), &["timeout"]),
        ("POST", ["_inference", t, i, "_stream"]) => {
            let task_type = path_task(t)?;
            if let Some(t) = task_type.filter(|t| !t.can_stream()) {
                return Err(EsError::streaming_not_allowed(t));
            }
            (stream(task_type, i), &["timeout"])
        }
        ("POST", ["_inference", i]) => (infer(None, i), &["timeout"]),
        ("POST", ["_inference", t, i]) => {
            let task_type = path_task(t)?;
            if task_type == Some(TaskType::ChatCompletion) {
                return Err(EsError::chat_completion_requires_stream(i));
            }
            (infer(task_type, i), &["timeout"])
        }
        _ => return Err(EsError::no_handler(method, &uri)),
    };
    finish(route, extra, &params, path, &segs)
}

/// Methods served on a path (for the `Allow` header of a 405 or OPTIONS);
/// empty for unknown paths. `path` is raw, as for [`route`].
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false).unwrap_or_default())
        .collect();
    methods_for(&segs).map(<[_]>::to_vec).unwrap_or_default()
}

/// Whether the query asks for pretty-printed JSON (`?pretty`, `?pretty=true`).
pub fn wants_pretty(query: Option<&str>) -> bool {
    parse_query(query.unwrap_or(""))
        .ok()
        .and_then(|ps| ps.into_iter().rev().find(|(k, _)| k == "pretty"))
        .is_some_and(|(_, v)| v.is_empty() || v == "true")
}

fn methods_for(segs: &[String]) -> Option<&'static [&'static str]> {
    const ALL: &[&str] = &["GET", "PUT", "POST", "DELETE"];
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        [] => Some(&["GET", "HEAD"]),
        ["_inference"] => Some(&["GET"]),
        ["_inference", _] | ["_inference", _, _] => Some(ALL),
        ["_inference", _, _, "_update"] => Some(&["PUT"]),
        ["_inference", _, _, "_stream"] => Some(&["POST"]),
        _ => None,
    }
}

fn all_or_id(s: &str) -> Option<String> {
    (s != "_all" && s != "*").then(|| s.to_string())
}

/// A task type in the path; `any` (Elasticsearch's wildcard task) means none.
fn path_task(s: &str) -> Result<Option<TaskType>, EsError> {
    if s.trim().eq_ignore_ascii_case("any") {
        Ok(None)
    } else {
        s.parse().map(Some)
    }
}

fn delete(task_type: Option<TaskType>, id: &str) -> Route {
    Route::Delete {
        task_type,
        inference_id: id.to_string(),
        dry_run: false,
        force: false,
    }
}

fn infer(task_type: Option<TaskType>, id: &str) -> Route {
    Route::Infer {
        task_type,
        inference_id: id.to_string(),
        timeout: Timeout::Default,
    }
}

fn stream(task_type: Option<TaskType>, id: &str) -> Route {
    Route::Stream {
        task_type,
        inference_id: id.to_string(),
        timeout: Timeout::Default,
    }
}

/// Checks the query parameters against the route and fills their values in.
fn finish(
    mut route: Route,
    extra: &[&str],
    params: &[(String, String)],
    path: &str,
    segs: &[String],
) -> Result<Route, EsError> {
    let known = |k: &str| UNIVERSAL_PARAMS.contains(&k) || extra.contains(&k);
    let mut unknown: Vec<&str> = params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !known(k))
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        unknown.dedup();
        // Elasticsearch suggests among consumed parameters, path ones included.
        let path_params: &[&str] = match segs.len() {
            2 => &["task_type_or_id"],
            3.. => &["task_type_or_id", "inference_id"],
            _ => &[],
        };
        let candidates: Vec<&str> = UNIVERSAL_PARAMS
            .iter()
            .chain(extra)
            .chain(path_params)
            .copied()
            .collect();
        return Err(unrecognized(path, &unknown, &candidates));
    }
    // Last value wins, as Elasticsearch's query decoding.
    let get = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    for flag in ["pretty", "human", "error_trace"] {
        if let Some(v) = get(flag) {
            parse_bool(v)?;
        }
    }
    match &mut route {
        Route::Delete { dry_run, force, .. } => {
            *dry_run = get("dry_run").map(parse_bool).transpose()?.unwrap_or(false);
            *force = get("force").map(parse_bool).transpose()?.unwrap_or(false);
        }
        Route::Infer { timeout, .. } | Route::Stream { timeout, .. } => {
            if let Some(v) = get("timeout") {
                *timeout = Timeout::parse(v)?;
            }
        }
        Route::Put { .. } | Route::Update { .. } => {
            if let Some(v) = get("timeout") {
                Timeout::parse(v)?;
            }
        }
        _ => {}
    }
    Ok(route)
}

/// Elasticsearch's `paramAsBoolean`: empty means true.
fn parse_bool(v: &str) -> Result<bool, EsError> {
    match v {
        "" | "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(EsError::illegal_argument(format!(
            "Failed to parse value [{v}] as only [true] or [false] are allowed."
        ))),
    }
}

/// BaseRestHandler.unrecognized: sorted names, each with the candidates whose
/// Levenshtein similarity is above 0.5.
fn unrecognized(path: &str, invalid: &[&str], candidates: &[&str]) -> EsError {
    let plural = if invalid.len() > 1 { "s" } else { "" };
    let mut msg = format!("request [{path}] contains unrecognized parameter{plural}: ");
    for (i, name) in invalid.iter().enumerate() {
        let mut scored: Vec<(f32, &str)> = candidates
            .iter()
            .map(|c| (similarity(name, c), *c))
            .filter(|(s, _)| *s > 0.5)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        scored.dedup_by(|a, b| a.1 == b.1);
        if i > 0 {
            msg.push_str(", ");
        }
        msg.push_str(&format!("[{name}]"));
        match scored.as_slice() {
            [] => {}
            [(_, one)] => msg.push_str(&format!(" -> did you mean [{one}]?")),
            many => {
                let names: Vec<&str> = many.iter().map(|(_, n)| *n).collect();
                msg.push_str(&format!(" -> did you mean any of [{}]?", names.join(", ")));
            }
        }
    }
    EsError::illegal_argument(msg)
}

/// Lucene's `LevenshteinDistance.getDistance`: 1 - distance / longest length.
fn similarity(a: &str, b: &str) -> f32 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.is_empty() || b.is_empty() {
        return if a == b { 1.0 } else { 0.0 };
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    1.0 - prev[b.len()] as f32 / a.len().max(b.len()) as f32
}

/// `a=b&c` into decoded pairs (`+` is a space in queries, as in Elasticsearch).
fn parse_query(q: &str) -> Result<Vec<(String, String)>, EsError> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

/// Percent-decoding to UTF-8, refusing broken escapes as Elasticsearch's
/// `RestUtils.decodeComponent` does.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, EsError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or_else(|| {
                    EsError::illegal_argument(format!(
                        "unterminated escape sequence at end of string: {s}"
                    ))
                })?;
                let v = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        EsError::illegal_argument(format!(
                            "invalid escape sequence `%{}' at index {i} of: {s}",
                            String::from_utf8_lossy(hex)
                        ))
                    })?;
                out.push(v);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map_err(|_| EsError::illegal_argument(format!("invalid UTF-8 after decoding: {s}")))
}

/// Media types we read and write.
const VENDOR_JSON: &str = "application/vnd.elasticsearch+json";
/// Media types Elasticsearch knows but this server cannot read or write.
const OTHER_XCONTENT: [&str; 6] = [
    "application/yaml",
    "application/cbor",
    "application/smile",
    "application/vnd.elasticsearch+yaml",
    "application/vnd.elasticsearch+cbor",
    "application/vnd.elasticsearch+smile",
];

struct MediaType {
    essence: String,
    compatible_with: Option<String>,
}

fn parse_media_type(s: &str) -> MediaType {
    let mut parts = s.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let compatible_with = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("compatible-with")
            .then(|| v.trim().trim_matches('"').to_string())
    });
    MediaType {
        essence,
        compatible_with,
    }
}

/// Checks the `compatible-with` version of a vendor media type.
fn check_version(header: &str, value: &str, mt: &MediaType) -> Result<Option<u8>, EsError> {
    match mt.compatible_with.as_deref() {
        None => Ok(None),
        Some("8") => Ok(Some(8)),
        Some("9") => Ok(Some(9)),
        Some(v) => Err(EsError::status_exception(
            400,
            format!(
                "{header} version must be either version 8 or 9, but found {v}. {header}={value}"
            ),
        )),
    }
}

/// Checks a request's `Content-Type`: JSON (any charset), Elasticsearch's
/// vendor JSON type with `compatible-with=8` or `9`, or none at all (curl
/// without `-H` still works; Elasticsearch would refuse it). Anything else,
/// including the browser form types and YAML/CBOR/Smile, is Elasticsearch's
/// 406 "Content-Type header [..] is not supported"; another compatible
/// version is a 400.
pub fn check_content_type(value: Option<&str>) -> Result<(), EsError> {
    let Some(v) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(());
    };
    let mt = parse_media_type(v);
    match mt.essence.as_str() {
        "application/json" => Ok(()),
        VENDOR_JSON => check_version("Content-Type", v, &mt).map(|_| ()),
        _ => Err(EsError::content_type_not_supported(v)),
    }
}

/// Checks a request's `Accept` and returns the `Content-Type` to answer with:
/// `application/json`, or the vendor type with the requested compatible
/// version (as Elasticsearch echoes it). Like Elasticsearch, types it does not
/// know (`text/html`, `*/*`, ...) fall back to JSON; only YAML, CBOR or Smile
/// alone are a 406, and an unsupported compatible version is a 400.
pub fn check_accept(value: Option<&str>) -> Result<&'static str, EsError> {
    const JSON: &str = "application/json";
    let Some(v) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(JSON);
    };
    let types: Vec<MediaType> = v.split(',').map(parse_media_type).collect();
    for mt in &types {
        match mt.essence.as_str() {
            "application/json" => return Ok(JSON),
            VENDOR_JSON => {
                return Ok(match check_version("Accept", v, mt)? {
                    Some(8) => "application/vnd.elasticsearch+json;compatible-with=8",
                    Some(_) => "application/vnd.elasticsearch+json;compatible-with=9",
                    None => JSON,
                })
            }
            _ => {}
        }
    }
    if types
        .iter()
        .all(|mt| OTHER_XCONTENT.contains(&mt.essence.as_str()))
    {
        return Err(EsError::accept_not_supported(v));
    }
    Ok(JSON)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn r(method: &str, path: &str) -> Result<Route, EsError> {
        let (p, q) = path
            .split_once('?')
            .map_or((path, None), |(p, q)| (p, Some(q)));
        route(method, p, q)
    }

    fn get(task: Option<TaskType>, id: Option<&str>) -> Route {
        Route::GetEndpoints {
            task_type: task,
            inference_id: id.map(str::to_string),
        }
    }

    #[test]
    fn root() {
        assert_eq!(r("GET", "/").unwrap(), Route::ClusterInfo);
        assert_eq!(r("HEAD", "/").unwrap(), Route::Ping);
        assert_eq!(r("GET", "").unwrap(), Route::ClusterInfo);
        let e = r("POST", "/").unwrap_err();
        assert_eq!(e.status, 405);
        assert_eq!(
            e.reason,
            "Incorrect HTTP method for uri [/] and method [POST], allowed: [GET, HEAD]"
        );
    }

    #[test]
    fn get_endpoints() {
        assert_eq!(r("GET", "/_inference").unwrap(), get(None, None));
        assert_eq!(r("GET", "/_inference/").unwrap(), get(None, None));
        assert_eq!(r("GET", "/_inference/_all").unwrap(), get(None, None));
        assert_eq!(r("GET", "/_inference/*").unwrap(), get(None, None));
        assert_eq!(
            r("GET", "/_inference/my-e5").unwrap(),
            get(None, Some("my-e5"))
        );
        assert_eq!(
            r("GET", "/_inference/.elser-2-elasticsearch").unwrap(),
            get(None, Some(".elser-2-elasticsearch"))
        );
        assert_eq!(
            r("GET", "/_inference/text_embedding/my-e5/").unwrap(),
            get(Some(TaskType::TextEmbedding), Some("my-e5"))
        );
        assert_eq!(
            r("GET", "/_inference/rerank/_all").unwrap(),
            get(Some(TaskType::Rerank), None)
        );
        assert_eq!(
            r("GET", "/_inference/sparse_embedding/*").unwrap(),
            get(Some(TaskType::SparseEmbedding), None)
        );
        let e = r("GET", "/_inference/bogus/x").unwrap_err();
        assert_eq!(
            (e.status, e.reason.as_str()),
            (400, "Unknown task_type [bogus]")
        );
    }

    #[test]
    fn services() {
        assert_eq!(
            r("GET", "/_inference/_services").unwrap(),
            Route::GetServices { task_type: None }
        );
        assert_eq!(
            r("GET", "/_inference/_services/rerank").unwrap(),
            Route::GetServices {
                task_type: Some(TaskType::Rerank)
            }
        );
    }

    #[test]
    fn put_update_delete() {
        let put = |t, i: &str| Route::Put {
            task_type: t,
            inference_id: i.into(),
        };
        assert_eq!(r("PUT", "/_inference/my-e5").unwrap(), put(None, "my-e5"));
        assert_eq!(
            r("PUT", "/_inference/text_embedding/my-e5").unwrap(),
            put(Some(TaskType::TextEmbedding), "my-e5")
        );
        assert_eq!(
            r("PUT", "/_inference/any/my-e5").unwrap(),
            put(None, "my-e5")
        );
        assert_eq!(
            r("PUT", "/_inference/my-e5?timeout=30s").unwrap(),
            put(None, "my-e5")
        );
        assert_eq!(
            r("PUT", "/_inference/my-e5/_update").unwrap(),
            Route::Update {
                task_type: None,
                inference_id: "my-e5".into()
            }
        );
        assert_eq!(
            r("PUT", "/_inference/rerank/r/_update").unwrap(),
            Route::Update {
                task_type: Some(TaskType::Rerank),
                inference_id: "r".into()
            }
        );
        assert_eq!(
            r("DELETE", "/_inference/x").unwrap(),
            Route::Delete {
                task_type: None,
                inference_id: "x".into(),
                dry_run: false,
                force: false
            }
        );
        assert_eq!(
            r("DELETE", "/_inference/completion/x?dry_run&force=true").unwrap(),
            Route::Delete {
                task_type: Some(TaskType::Completion),
                inference_id: "x".into(),
                dry_run: true,
                force: true
            }
        );
        let e = r("DELETE", "/_inference/x?force=yes").unwrap_err();
        assert_eq!(
            e.reason,
            "Failed to parse value [yes] as only [true] or [false] are allowed."
        );
        assert_eq!(
            r("POST", "/_inference/a/b/_update").unwrap_err().status,
            405
        );
    }

    #[test]
    fn perform_inference_and_stream() {
        assert_eq!(
            r("POST", "/_inference/my-e5").unwrap(),
            Route::Infer {
                task_type: None,
                inference_id: "my-e5".into(),
                timeout: Timeout::Default
            }
        );
        assert_eq!(
            r("POST", "/_inference/text_embedding/my-e5?timeout=500ms").unwrap(),
            Route::Infer {
                task_type: Some(TaskType::TextEmbedding),
                inference_id: "my-e5".into(),
                timeout: Timeout::After(Duration::from_millis(500))
            }
        );
        assert_eq!(
            r("POST", "/_inference/x?timeout=-1").unwrap(),
            Route::Infer {
                task_type: None,
                inference_id: "x".into(),
                timeout: Timeout::Never
            }
        );
        assert!(r("POST", "/_inference/x?timeout=5")
            .unwrap_err()
            .reason
            .contains("unit is missing"));
        assert_eq!(
            r("POST", "/_inference/completion/c/_stream").unwrap(),
            Route::Stream {
                task_type: Some(TaskType::Completion),
                inference_id: "c".into(),
                timeout: Timeout::Default
            }
        );
        assert_eq!(
            r("POST", "/_inference/chat_completion/c/_stream?timeout=2m").unwrap(),
            Route::Stream {
                task_type: Some(TaskType::ChatCompletion),
                inference_id: "c".into(),
                timeout: Timeout::After(Duration::from_secs(120))
            }
        );
        assert_eq!(
            r("POST", "/_inference/c/_stream").unwrap(),
            Route::Stream {
                task_type: None,
                inference_id: "c".into(),
                timeout: Timeout::Default
            }
        );
        assert_eq!(
            r("POST", "/_inference/rerank/c/_stream")
                .unwrap_err()
                .status,
            405
        );
        let e = r("POST", "/_inference/chat_completion/c").unwrap_err();
        assert!(e.reason.contains("_inference/chat_completion/c/_stream"));
        assert_eq!(
            r("GET", "/_inference/completion/c/_stream")
                .unwrap_err()
                .status,
            405
        );
    }

    #[test]
    fn decoding() {
        assert_eq!(
            r("GET", "/_inference/my%2De5").unwrap(),
            get(None, Some("my-e5"))
        );
        assert_eq!(
            r("GET", "/_inference/a%2Fb").unwrap(),
            get(None, Some("a/b"))
        );
        assert_eq!(r("GET", "/_inference/a+b").unwrap(), get(None, Some("a+b")));
        assert_eq!(r("GET", "/%5Finference").unwrap(), get(None, None));
        assert!(r("GET", "/_inference/a%zz")
            .unwrap_err()
            .reason
            .contains("invalid escape sequence"));
        assert!(r("GET", "/_inference/a%2")
            .unwrap_err()
            .reason
            .contains("unterminated escape"));
        assert!(r("GET", "/_inference/a%FF").is_err());
        assert_eq!(
            r("POST", "/_inference/x?timeout=%35s").unwrap(),
            Route::Infer {
                task_type: None,
                inference_id: "x".into(),
                timeout: Timeout::After(Duration::from_secs(5))
            }
        );
    }

    #[test]
    fn query_params() {
        assert_eq!(
            r(
                "GET",
                "/_inference?pretty&human=true&error_trace=false&filter_path=endpoints&format=json"
            )
            .unwrap(),
            get(None, None)
        );
        let e = r("GET", "/_inference/x?foo=1").unwrap_err();
        assert_eq!(
            (e.status, e.error_type),
            (400, "illegal_argument_exception")
        );
        assert_eq!(
            e.reason,
            "request [/_inference/x] contains unrecognized parameter: [foo]"
        );
        let e = r("DELETE", "/_inference/x?forse=true&dryrun").unwrap_err();
        assert_eq!(
            e.reason,
            "request [/_inference/x] contains unrecognized parameters: [dryrun] -> did you mean [dry_run]?, [forse] -> did you mean [force]?"
        );
        let e = r("POST", "/_inference/x?timeot=1s").unwrap_err();
        assert!(
            e.reason.ends_with("[timeot] -> did you mean [timeout]?"),
            "{}",
            e.reason
        );
        assert!(r("GET", "/_inference?pretty=maybe").is_err());
        assert!(r("GET", "/?timeout=1s").is_err());
        assert!(wants_pretty(Some("pretty")));
        assert!(wants_pretty(Some("a=b&pretty=true")));
        assert!(!wants_pretty(Some("pretty=false")));
        assert!(!wants_pretty(None));
    }

    #[test]
    fn unknown_paths_and_methods() {
        let e = r("GET", "/foo?pretty").unwrap_err();
        assert_eq!(
            (e.status, e.reason.as_str()),
            (
                400,
                "no handler found for uri [/foo?pretty] and method [GET]"
            )
        );
        assert_eq!(r("GET", "/_inference/a/b/c/d").unwrap_err().status, 400);
        assert_eq!(r("GET", "/_inference/a/b/c").unwrap_err().status, 400);
        let e = r("DELETE", "/_inference").unwrap_err();
        assert_eq!(
            e.reason,
            "Incorrect HTTP method for uri [/_inference] and method [DELETE], allowed: [GET]"
        );
        assert_eq!(r("PATCH", "/_inference/x").unwrap_err().status, 405);
        assert_eq!(
            r("OPTIONS", "/_inference/x").unwrap(),
            Route::Options {
                allow: vec!["GET", "PUT", "POST", "DELETE"]
            }
        );
        assert_eq!(allowed_methods("/_inference/a/b/_update"), vec!["PUT"]);
        assert_eq!(allowed_methods("/nope"), Vec::<&str>::new());
    }

    #[test]
    fn levenshtein_like_lucene() {
        assert_eq!(similarity("force", "force"), 1.0);
        assert!((similarity("forse", "force") - 0.8).abs() < 1e-6);
        assert!(similarity("foo", "timeout") < 0.5);
    }

    #[test]
    fn content_types() {
        for ok in [
            None,
            Some(""),
            Some("application/json"),
            Some("application/json; charset=UTF-8"),
            Some("application/vnd.elasticsearch+json; compatible-with=8"),
            Some("application/vnd.elasticsearch+json;compatible-with=9"),
            Some("Application/JSON"),
        ] {
            check_content_type(ok).unwrap();
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/yaml",
            "multipart/form-data",
        ] {
            let e = check_content_type(Some(bad)).unwrap_err();
            assert_eq!(e.status, 406);
            assert_eq!(
                e.reason,
                format!("Content-Type header [{bad}] is not supported")
            );
        }
        let e = check_content_type(Some(
            "application/vnd.elasticsearch+json; compatible-with=7",
        ))
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e
            .reason
            .starts_with("Content-Type version must be either version 8 or 9, but found 7."));
    }

    #[test]
    fn accept_types() {
        assert_eq!(check_accept(None).unwrap(), "application/json");
        assert_eq!(
            check_accept(Some("application/json")).unwrap(),
            "application/json"
        );
        assert_eq!(check_accept(Some("*/*")).unwrap(), "application/json");
        assert_eq!(
            check_accept(Some("text/html,application/xhtml+xml,*/*;q=0.8")).unwrap(),
            "application/json"
        );
        assert_eq!(
            check_accept(Some(
                "application/vnd.elasticsearch+json; compatible-with=9"
            ))
            .unwrap(),
            "application/vnd.elasticsearch+json;compatible-with=9"
        );
        assert_eq!(
            check_accept(Some("application/vnd.elasticsearch+json;compatible-with=8")).unwrap(),
            "application/vnd.elasticsearch+json;compatible-with=8"
        );
        assert_eq!(
            check_accept(Some("application/yaml")).unwrap_err().status,
            406
        );
        assert_eq!(
            check_accept(Some("application/vnd.elasticsearch+json;compatible-with=7"))
                .unwrap_err()
                .status,
            400
        );
    }
}
