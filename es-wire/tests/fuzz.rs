//! Property test of the router and every request parser: generated methods,
//! paths, query strings and bodies (random bytes, random text, and JSON built
//! from the API's own field names) must never panic, and every refusal must
//! be an Elasticsearch envelope with a status from the documented set.
//!
//! `ES_WIRE_FUZZ_CASES` sets the number of cases (default 100,000).

use es_wire::security::{self, SecurityRoute};
use es_wire::{Catalog, Endpoint, EsError, Limits, ModelInfo, Route, TaskType};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Statuses the parsing layer may answer (the rest, 401/403/408/429/500,
/// come from the host, not from parsing).
const DOCUMENTED: [u16; 5] = [400, 404, 405, 406, 413];

const SEGMENTS: &[&str] = &[
    "_inference",
    "_services",
    "_stream",
    "_update",
    "_all",
    "*",
    "text_embedding",
    "sparse_embedding",
    "rerank",
    "completion",
    "chat_completion",
    "embedding",
    "my-endpoint",
    ".elser-2-elasticsearch",
    "_security",
    "api_key",
    "_authenticate",
    "",
    "%2F",
    "%",
    "%zz",
    "..",
];

const FIELDS: &[&str] = &[
    "input",
    "query",
    "service",
    "service_settings",
    "model_id",
    "num_allocations",
    "num_threads",
    "adaptive_allocations",
    "enabled",
    "min_number_of_allocations",
    "max_number_of_allocations",
    "task_settings",
    "chunking_settings",
    "top_n",
    "return_documents",
    "input_type",
    "element_type",
    "similarity",
    "dimensions",
    "timeout",
    "messages",
    "role",
    "content",
    "max_completion_tokens",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "tools",
    "long_document_strategy",
    "max_chunks_per_doc",
    "name",
    "expiration",
    "role_descriptors",
    "cluster",
    "ids",
    "id",
    "owner",
    "metadata",
];

const STRINGS: &[&str] = &[
    "elasticsearch",
    "elser",
    "all-minilm-l6-v2",
    "splade-tiny",
    "smollm2-135m-instruct",
    "text_embedding",
    "user",
    "system",
    "assistant",
    "float",
    "byte",
    "bit",
    "cosine",
    "ingest",
    "search",
    "chunk",
    "1d",
    "-1",
    "0s",
    "monitor_inference",
    "all",
    "",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        prop::sample::select(STRINGS).prop_map(|s| json!(s)),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(FIELDS).prop_map(str::to_string),
                        "[a-z_]{0,8}"
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..96),
        1 => ".{0,64}".prop_map(String::into_bytes),
        // Valid JSON cut short or with a trailing byte.
        1 => (json_value(), 0usize..64, any::<u8>()).prop_map(|(v, cut, b)| {
            let mut bytes = serde_json::to_vec(&v).unwrap();
            bytes.truncate(cut.min(bytes.len()));
            bytes.push(b);
            bytes
        }),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(SEGMENTS).prop_map(str::to_string),
            1 => "[A-Za-z0-9%._~+*-]{0,12}",
            1 => ".{0,8}",
        ],
        0..6,
    )
    .prop_map(|segs| format!("/{}", segs.join("/")))
}

fn query() -> impl Strategy<Value = Option<String>> {
    let key = prop_oneof![
        prop::sample::select(
            &[
                "timeout",
                "dry_run",
                "force",
                "pretty",
                "error_trace",
                "filter_path",
                "id",
                "name",
                "owner",
                "bogus",
                "",
            ][..]
        )
        .prop_map(str::to_string),
        "[a-z_%]{0,6}",
    ];
    let value = prop_oneof![
        prop::sample::select(&["", "true", "false", "30s", "-1", "1ms", "abc", "%zz", "10"][..])
            .prop_map(str::to_string),
        ".{0,6}",
    ];
    prop::option::of(
        prop::collection::vec((key, prop::option::of(value)), 0..4).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k,
                })
                .collect::<Vec<_>>()
                .join("&")
        }),
    )
}

fn method() -> impl Strategy<Value = &'static str> {
    prop::sample::select(
        &[
            "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "get",
        ][..],
    )
}

fn catalog() -> Catalog {
    Catalog::new(vec![
        ModelInfo {
            model_id: "all-minilm-l6-v2".into(),
            task_types: vec![
                TaskType::TextEmbedding,
                TaskType::Embedding,
                TaskType::Rerank,
            ],
        },
        ModelInfo {
            model_id: "splade-tiny".into(),
            task_types: vec![TaskType::SparseEmbedding],
        },
        ModelInfo {
            model_id: "smollm2-135m-instruct".into(),
            task_types: vec![TaskType::Completion, TaskType::ChatCompletion],
        },
    ])
}

/// One stored endpoint per task type, as the host would have them.
fn fixtures(catalog: &Catalog) -> Vec<Endpoint> {
    [
        (TaskType::TextEmbedding, "all-minilm-l6-v2"),
        (TaskType::Embedding, "all-minilm-l6-v2"),
        (TaskType::Rerank, "all-minilm-l6-v2"),
        (TaskType::SparseEmbedding, "splade-tiny"),
        (TaskType::Completion, "smollm2-135m-instruct"),
        (TaskType::ChatCompletion, "smollm2-135m-instruct"),
    ]
    .into_iter()
    .map(|(task, model)| {
        let body = json!({"service": "elasticsearch",
                          "service_settings": {"model_id": model, "num_allocations": 1, "num_threads": 1}});
        es_wire::parse_put(
            Some(task),
            "my-endpoint",
            &serde_json::to_vec(&body).unwrap(),
            catalog,
        )
        .unwrap_or_else(|e| panic!("fixture {task:?}: {e}"))
    })
    .collect()
}

fn check(err: &EsError) -> Result<(), TestCaseError> {
    prop_assert!(
        DOCUMENTED.contains(&err.status),
        "undocumented status {}: {err}",
        err.status
    );
    let body = err.to_json();
    prop_assert_eq!(&body["status"], &json!(err.status));
    prop_assert!(!err.error_type.is_empty());
    prop_assert_eq!(
        &body["error"]["root_cause"][0]["type"],
        &json!(err.error_type)
    );
    Ok(())
}

/// Runs one request through routing and the parser its route uses.
// A request's parts, then what it runs against: grouping them would only
// rename the same arguments.
#[allow(clippy::too_many_arguments)]
fn exercise(
    method: &str,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    content_type: Option<&str>,
    catalog: &Catalog,
    fixtures: &[Endpoint],
    limits: &Limits,
) -> Result<(), EsError> {
    es_wire::check_accept(content_type)?;
    es_wire::check_content_type(content_type)?;
    limits.check_body_len(body.len())?;
    if let Some(route) = security::security_route(method, path, query) {
        let _action = route.as_ref().map(SecurityRoute::action);
        match route? {
            SecurityRoute::CreateApiKey => {
                let req = security::parse_create_api_key(body)?;
                let _ = security::role_descriptors_json(&req.role_descriptors);
            }
            SecurityRoute::InvalidateApiKeys => {
                security::parse_invalidate_api_keys(body)?;
            }
            SecurityRoute::GetApiKeys { .. } | SecurityRoute::Authenticate => {}
        }
        return Ok(());
    }
    let route = es_wire::route(method, path, query)?;
    let _ = security::route_action(&route);
    let fixture = |task: Option<TaskType>| {
        let task = task.unwrap_or(TaskType::TextEmbedding);
        fixtures.iter().find(|e| e.task_type == task).cloned()
    };
    match route {
        Route::Put {
            task_type,
            inference_id,
        } => {
            let endpoint = es_wire::parse_put(task_type, &inference_id, body, catalog)?;
            serde_json::to_vec(&endpoint.info_json()).unwrap();
        }
        Route::Update { task_type, .. } => {
            if let Some(existing) = fixture(task_type) {
                let updated = es_wire::parse_update(&existing, task_type, body)?;
                serde_json::to_vec(&updated.info_json()).unwrap();
            }
        }
        Route::Infer { task_type, .. } | Route::Stream { task_type, .. } => {
            let stream = matches!(route, Route::Stream { .. });
            for endpoint in fixtures
                .iter()
                .filter(|e| task_type.is_none() || task_type == Some(e.task_type))
            {
                let task = match es_wire::check_inference_target(task_type, endpoint, stream) {
                    Ok(t) => t,
                    Err(e) => {
                        check(&e).map_err(|e| EsError::internal(e.to_string()))?;
                        continue;
                    }
                };
                let parsed = if task == TaskType::ChatCompletion {
                    es_wire::parse_chat_completion(body, limits).map(|_| ())
                } else {
                    es_wire::parse_inference(task, body, limits).map(|r| {
                        let _ = r.options(endpoint);
                    })
                };
                if let Err(e) = parsed {
                    check(&e).map_err(|e| EsError::internal(e.to_string()))?;
                }
            }
        }
        Route::GetEndpoints { .. }
        | Route::GetServices { .. }
        | Route::Delete { .. }
        | Route::ClusterInfo
        | Route::Ping
        | Route::Options { .. } => {}
    }
    Ok(())
}

#[test]
fn router_and_parsers_never_panic_and_always_answer_an_envelope() {
    let cases: u32 = std::env::var("ES_WIRE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let catalog = catalog();
    let fixtures = fixtures(&catalog);
    // Small limits so that the limit checks are reached too.
    let limits = Limits {
        max_body_bytes: 4096,
        max_inputs: 4,
        max_input_chars: 16,
    };
    let content_type = prop::option::of(prop_oneof![
        8 => Just("application/json".to_string()),
        1 => Just("application/vnd.elasticsearch+json; compatible-with=8".to_string()),
        1 => Just("text/plain".to_string()),
        1 => ".{0,16}",
    ]);
    let (ran, accepted) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(method(), path(), query(), body(), content_type),
            |(method, path, query, body, content_type)| {
                ran.fetch_add(1, Ordering::Relaxed);
                match exercise(
                    method,
                    &path,
                    query.as_deref(),
                    &body,
                    content_type.as_deref(),
                    &catalog,
                    &fixtures,
                    &limits,
                ) {
                    Ok(()) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(e) => check(&e),
                }
            },
        )
        .unwrap();
    let ran = ran.into_inner();
    println!(
        "es-wire fuzz: {ran} generated requests, {} accepted, {} refused with an envelope",
        accepted.load(Ordering::Relaxed),
        ran - accepted.load(Ordering::Relaxed)
    );
    assert!(ran >= cases as usize);
}
