//! The inference API end to end, over real HTTP: each case takes the kind
//! of server to spawn, so the native host and the Spin app answer the same
//! cases (`tests/tests/api.rs`, `tests/tests/spin_api.rs`).

use crate::{error_type, json, model_cache, Client, Kind, Server, Value};

/// Each test owns its server (and its data directory); dropping it kills it.
fn server(kind: Kind) -> Server {
    Server::start_kind(kind, &[]).expect("server starts")
}

pub fn minilm_endpoint(extra: Value) -> Value {
    let mut settings =
        json!({"model_id": "all-minilm-l6-v2", "num_allocations": 1, "num_threads": 1});
    settings
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({"service": "elasticsearch", "service_settings": settings})
}

pub fn body(response: crate::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(
        response
            .headers()
            .get("x-elastic-product")
            .map(|v| v.to_str().unwrap()),
        Some("Elasticsearch"),
        "every answer carries the product header"
    );
    (status, response.json().expect("JSON body"))
}

/// The ids in a `GET /_inference` answer, in order.
pub fn endpoint_ids(list: &Value) -> Vec<&str> {
    list["endpoints"]
        .as_array()
        .expect("an endpoint list")
        .iter()
        .map(|e| e["inference_id"].as_str().expect("an inference id"))
        .collect()
}

pub fn embeddings(value: &Value, field: &str) -> Vec<Vec<f64>> {
    value[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {value}"))
        .iter()
        .map(|e| {
            e["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

pub fn endpoint_lifecycle_survives_a_restart(kind: Kind) {
    let mut server = Server::start_kind(kind, &[]).unwrap();
    let (status, info) = body(server.put(
        "/_inference/text_embedding/my-minilm",
        &minilm_endpoint(json!({})),
    ));
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["inference_id"], "my-minilm");
    assert_eq!(info["task_type"], "text_embedding");
    assert_eq!(info["service_settings"]["model_id"], "all-minilm-l6-v2");

    for path in [
        "/_inference/my-minilm",
        "/_inference/text_embedding/my-minilm",
    ] {
        let (status, got) = body(server.get(path));
        assert_eq!(status, 200);
        assert_eq!(got["endpoints"][0], info, "{path}");
    }
    for path in [
        "/_inference",
        "/_inference/_all",
        "/_inference/*",
        "/_inference/text_embedding/_all",
    ] {
        let (_, all) = body(server.get(path));
        let ids = endpoint_ids(&all);
        assert!(ids.contains(&"my-minilm"), "{path}: {ids:?}");
        assert!(
            ids.contains(&".multilingual-e5-small-elasticsearch"),
            "{path}: {ids:?}"
        );
    }

    let input = json!({"input": ["The cat sits on the mat.", "Stock markets fell sharply today."]});
    let (status, with_task) = body(server.post("/_inference/text_embedding/my-minilm", &input));
    assert_eq!(status, 200, "{with_task}");
    let (_, without_task) = body(server.post("/_inference/my-minilm", &input));
    assert_eq!(with_task, without_task);
    assert_eq!(embeddings(&with_task, "text_embedding").len(), 2);

    let (status, updated) = body(server.put(
        "/_inference/my-minilm/_update",
        &json!({"service_settings": {"num_allocations": 2}}),
    ));
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["service_settings"]["num_allocations"], 2);
    let (status, refused) = body(server.put(
        "/_inference/my-minilm/_update",
        &json!({"service_settings": {"model_id": "splade-tiny"}}),
    ));
    assert_eq!(status, 400, "changing the model is refused: {refused}");

    server.restart().unwrap();
    let (status, got) = body(server.get("/_inference/my-minilm"));
    assert_eq!(status, 200);
    assert_eq!(
        got["endpoints"][0], updated,
        "the update survived the restart"
    );
    let (_, after_restart) = body(server.post("/_inference/my-minilm", &input));
    assert_eq!(after_restart, with_task, "same embeddings after a restart");

    let (status, deleted) = body(server.delete("/_inference/my-minilm"));
    assert_eq!(
        (status, deleted),
        (
            200,
            json!({"acknowledged": true, "pipelines": [], "indexes": []})
        )
    );
    let (status, gone) = body(server.get("/_inference/my-minilm"));
    assert_eq!(
        (status, error_type(&gone).as_str()),
        (404, "resource_not_found_exception")
    );
    server.restart().unwrap();
    assert_eq!(
        server.get("/_inference/my-minilm").status().as_u16(),
        404,
        "deleted stays deleted"
    );
}

pub fn embeddings_over_http_equal_the_native_core(kind: Kind) {
    let texts = [
        "The cat sits on the mat.",
        "A kitten is resting on a rug.",
        "Stock markets fell sharply today.",
    ];
    let s = server(kind);
    // A second model on the same task component: each endpoint gets its own
    // model, whatever the component loaded before (or was snapshotted with).
    let (status, created) = body(s.put(
        "/_inference/text_embedding/minilm-int8",
        &json!({"service": "elasticsearch", "service_settings": {"model_id": "all-minilm-l6-v2-int8", "num_allocations": 1, "num_threads": 1}}),
    ));
    assert_eq!(status, 200, "{created}");
    let mut served = Vec::new();
    for (id, model) in [
        (
            ".multilingual-e5-small-elasticsearch",
            "multilingual-e5-small",
        ),
        ("minilm-int8", "all-minilm-l6-v2-int8"),
    ] {
        let (status, answer) = body(s.post(
            &format!("/_inference/text_embedding/{id}"),
            &json!({"input": texts}),
        ));
        assert_eq!(status, 200, "{answer}");
        let embedded = embeddings(&answer, "text_embedding");
        let native = ml_core::TextEmbedder::load(&model_cache().join(model))
            .unwrap()
            .embed(&texts.map(String::from), None)
            .unwrap();
        for (s, n) in embedded.iter().zip(&native) {
            assert_eq!(s.len(), 384);
            let diff = s
                .iter()
                .zip(&n.values)
                .map(|(a, b)| (*a as f32 - b).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-5, "{model}: HTTP differs from native by {diff}");
        }
        served.push(embedded);
    }
    assert_ne!(
        served[0], served[1],
        "the two models give different numbers"
    );
    let cos = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    for (model, served) in served.iter().enumerate() {
        assert!(
            cos(&served[0], &served[1]) > cos(&served[0], &served[2]),
            "model {model}: the paraphrase is nearer than the unrelated sentence"
        );
    }
}

pub fn byte_and_bit_element_types_quantise(kind: Kind) {
    let s = server(kind);
    for (id, element_type) in [
        ("minilm-floats", "float"),
        ("minilm-bytes", "byte"),
        ("minilm-bits", "bit"),
    ] {
        let (status, info) = body(s.put(
            &format!("/_inference/text_embedding/{id}"),
            &minilm_endpoint(json!({"element_type": element_type})),
        ));
        assert_eq!(status, 200, "{info}");
    }
    let input = json!({"input": "The cat sits on the mat."});
    let (_, floats) = body(s.post("/_inference/minilm-floats", &input));
    let floats = &embeddings(&floats, "text_embedding")[0];

    let (status, bytes) = body(s.post("/_inference/minilm-bytes", &input));
    assert_eq!(status, 200, "{bytes}");
    let bytes = &embeddings(&bytes, "text_embedding_bytes")[0];
    assert_eq!(bytes.len(), 384);
    for (b, f) in bytes.iter().zip(floats) {
        assert!(b.fract() == 0.0 && (-127.0..=127.0).contains(b));
        assert!(
            (b - (f * 127.0).round()).abs() <= 1.0,
            "{b} is not {f} quantised"
        );
    }

    let (status, bits) = body(s.post("/_inference/minilm-bits", &input));
    assert_eq!(status, 200, "{bits}");
    let bits = &embeddings(&bits, "text_embedding_bits")[0];
    assert_eq!(bits.len(), 384 / 8);
    for (i, byte) in bits.iter().enumerate() {
        let byte = *byte as i8 as u8;
        for bit in 0..8 {
            let positive = floats[i * 8 + bit] > 0.0;
            assert_eq!(
                byte & (0x80 >> bit) != 0,
                positive,
                "dimension {}",
                i * 8 + bit
            );
        }
    }
}

pub fn contract_errors_have_the_right_status_and_type(kind: Kind) {
    let s = server(kind);
    let expect = |response: crate::Response, status: u16, types: &[&str]| {
        let (got, envelope) = body(response);
        assert_eq!(got, status, "{envelope}");
        assert_eq!(envelope["status"], status);
        let t = error_type(&envelope);
        assert!(
            types.contains(&t.as_str()),
            "type {t} not in {types:?}: {envelope}"
        );
    };
    expect(
        s.post("/_inference/no-such-endpoint", &json!({"input": "x"})),
        404,
        &["resource_not_found_exception"],
    );
    expect(
        s.get("/_inference/no-such-endpoint"),
        404,
        &["resource_not_found_exception"],
    );
    expect(
        s.post(
            "/_inference/rerank/.multilingual-e5-small-elasticsearch",
            &json!({"input": "x", "query": "y"}),
        ),
        400,
        &["status_exception"],
    );
    expect(
        s.post_raw(
            "/_inference/.multilingual-e5-small-elasticsearch",
            "{\"input\": [\"x\"",
        ),
        400,
        &["parse_exception", "x_content_parse_exception"],
    );
    expect(
        s.post(
            "/_inference/.multilingual-e5-small-elasticsearch",
            &json!({"input": []}),
        ),
        400,
        &[
            "action_request_validation_exception",
            "validation_exception",
        ],
    );
    expect(
        s.post(
            "/_inference/.multilingual-e5-small-elasticsearch",
            &json!({"input": "x", "nonsense": 1}),
        ),
        400,
        &["x_content_parse_exception"],
    );
    expect(
        s.put(
            "/_inference/text_embedding/Bad_ID!",
            &minilm_endpoint(json!({})),
        ),
        400,
        &["action_request_validation_exception"],
    );
    expect(
        s.put(
            "/_inference/text_embedding/no-model",
            &minilm_endpoint(json!({"model_id": "gpt-17"})),
        ),
        400,
        &[
            "illegal_argument_exception",
            "validation_exception",
            "status_exception",
        ],
    );
    assert_eq!(
        s.put(
            "/_inference/text_embedding/dup",
            &minilm_endpoint(json!({}))
        )
        .status(),
        200
    );
    expect(
        s.put(
            "/_inference/text_embedding/dup",
            &minilm_endpoint(json!({})),
        ),
        400,
        &["resource_already_exists_exception"],
    );
    expect(
        s.delete("/_inference/.multilingual-e5-small-elasticsearch"),
        400,
        &["illegal_argument_exception", "status_exception"],
    );
}

pub fn a_request_past_its_timeout_answers_408_and_the_endpoint_recovers(kind: Kind) {
    let s = server(kind);
    let inputs: Vec<String> = (0..256)
        .map(|i| format!("sentence number {i} {}", "with many words ".repeat(20)))
        .collect();
    let (status, envelope) = body(s.post(
        "/_inference/text_embedding/.multilingual-e5-small-elasticsearch?timeout=5ms",
        &json!({"input": inputs}),
    ));
    assert_eq!(status, 408, "{envelope}");
    assert_eq!(error_type(&envelope), "status_exception");
    let (status, _) = body(s.post(
        "/_inference/.multilingual-e5-small-elasticsearch",
        &json!({"input": "still serving"}),
    ));
    assert_eq!(status, 200);
}

/// Clients that hang up mid-request, more of them than the endpoint has
/// allocations, cost it nothing: the next request is answered.
pub fn clients_that_leave_mid_request_cost_the_endpoint_nothing(kind: Kind) {
    let s = server(kind);
    let path = "/_inference/text_embedding/.multilingual-e5-small-elasticsearch";
    let inputs: Vec<String> = (0..64)
        .map(|i| format!("sentence number {i} {}", "with many words ".repeat(20)))
        .collect();
    let leaving = Client::builder()
        .timeout(std::time::Duration::from_millis(200))
        .build()
        .unwrap();
    for _ in 0..4 {
        let sent = leaving
            .post(format!("{}{path}", s.url))
            .json(&json!({"input": inputs}))
            .send();
        assert!(
            sent.as_ref().is_err_and(|e| e.is_timeout()),
            "the request was to outlast its client: {sent:?}"
        );
    }
    let (status, envelope) = body(s.post(
        &format!("{path}?timeout=2m"),
        &json!({"input": "still serving"}),
    ));
    assert_eq!(status, 200, "{envelope}");
}

/// `_stream` honours `?timeout` as perform-inference does: past it before the
/// first token, the answer is an ordinary 408.
pub fn a_stream_past_its_timeout_answers_408(kind: Kind) {
    let s = server(kind);
    let (status, envelope) = body(s.post(
        &format!("{COMPLETION}/_stream?timeout=1ms"),
        &json!({"input": FRANCE}),
    ));
    assert_eq!(status, 408, "{envelope}");
    assert_eq!(error_type(&envelope), "status_exception");
    assert_eq!(envelope["error"]["reason"], "Request timed out after [1ms]");
}

pub fn cluster_info_services_and_vendor_media_types(kind: Kind) {
    let s = server(kind);
    let (status, info) = body(s.get("/"));
    assert_eq!(status, 200);
    assert!(info["version"]["number"].as_str().unwrap().starts_with('9'));
    assert_eq!(info["tagline"], "You Know, for Search");

    let (_, services) = body(s.get("/_inference/_services"));
    let tasks = &services.as_array().unwrap()[0]["task_types"];
    assert!(
        tasks.as_array().unwrap().contains(&json!("text_embedding")),
        "{services}"
    );
    assert!(
        tasks
            .as_array()
            .unwrap()
            .contains(&json!("sparse_embedding")),
        "{services}"
    );

    let vendor = "application/vnd.elasticsearch+json; compatible-with=9";
    let response = s
        .client
        .post(format!("{}/_inference/.elser-2-elasticsearch", s.url))
        .header("content-type", vendor)
        .header("accept", vendor)
        .body(r#"{"input": "what is the capital of france"}"#)
        .send()
        .unwrap();
    let (status, sparse) = body(response);
    assert_eq!(status, 200, "{sparse}");
    let entry = &sparse["sparse_embedding"][0];
    assert_eq!(entry["is_truncated"], false);
    assert!(
        entry["embedding"]["paris"].as_f64().unwrap() > 0.0,
        "{entry}"
    );
}

/// Where Elasticsearch users would notice a difference: the `embedding`
/// task, the `elser` service's default model, chunking settings, DELETE's
/// `dry_run` and `force`, and reserved ids.
pub fn elasticsearch_semantics_hold(kind: Kind) {
    let s = server(kind);
    let default_chunking =
        json!({"strategy": "sentence", "max_chunk_size": 250, "sentence_overlap": 1});

    // `embedding` on a text model: strings and text content objects, the
    // same vectors as `text_embedding`; other content types are refused.
    let (status, created) = body(s.put("/_inference/embedding/emb", &minilm_endpoint(json!({}))));
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["chunking_settings"], default_chunking);
    let content = json!({"content": {"type": "text", "format": "text", "value": "a cat on a mat"}});
    let (status, answer) = body(s.post(
        "/_inference/embedding/emb",
        &json!({"input": [content, "a cat on a mat"]}),
    ));
    assert_eq!(status, 200, "{answer}");
    let vectors = embeddings(&answer, "embeddings");
    assert_eq!(vectors.len(), 2);
    assert_eq!(vectors[0].len(), 384);
    assert_eq!(vectors[0], vectors[1], "content and plain text embed alike");
    let (_, text) = body(s.post(
        "/_inference/text_embedding/.multilingual-e5-small-elasticsearch",
        &json!({"input": "a cat on a mat"}),
    ));
    assert_eq!(text["text_embedding"].as_array().unwrap().len(), 1);
    let image = json!({"input": {"content": {"type": "image", "format": "base64", "value": "data:image/png;base64,iVBORw0KGgo="}}});
    let (status, refused) = body(s.post("/_inference/embedding/emb", &image));
    assert_eq!(status, 400, "{refused}");
    let reason = refused["error"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("[image]") && reason.contains("text only"),
        "{reason}"
    );

    // `elser` defaults its model and is stored as `elasticsearch`.
    let (status, elser) = body(s.put(
        "/_inference/sparse_embedding/my-elser",
        &json!({"service": "elser", "service_settings": {"num_allocations": 1, "num_threads": 1}}),
    ));
    assert_eq!(status, 200, "{elser}");
    assert_eq!(elser["service"], "elasticsearch");
    assert_eq!(elser["service_settings"]["model_id"], "splade-tiny");
    let (status, _) = body(s.post("/_inference/my-elser", &json!({"input": "paris"})));
    assert_eq!(status, 200);

    // Chunking settings are checked, kept, and not updatable.
    let mut word = minilm_endpoint(json!({}));
    word["chunking_settings"] = json!({"strategy": "word", "max_chunk_size": 100, "overlap": 60});
    let (status, refused) = body(s.put("/_inference/text_embedding/chunked", &word));
    assert_eq!(
        (status, error_type(&refused).as_str()),
        (400, "validation_exception")
    );
    assert_eq!(
        refused["error"]["reason"],
        "Validation Failed: 1: [chunking_settings] Invalid value [60.0]. [overlap] must be less than or equal to [50.0];"
    );
    word["chunking_settings"]["overlap"] = json!(50);
    let (status, created) = body(s.put("/_inference/text_embedding/chunked", &word));
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["chunking_settings"], word["chunking_settings"]);
    let (status, refused) = body(s.put(
        "/_inference/chunked/_update",
        &json!({"chunking_settings": {"strategy": "none"}}),
    ));
    assert_eq!(status, 400, "{refused}");
    assert!(refused["error"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("Request contained fields which cannot be updated"));

    // A dry run deletes nothing and says so.
    let (status, dry) = body(s.delete("/_inference/chunked?dry_run=true"));
    assert_eq!(
        (status, dry),
        (
            200,
            json!({"acknowledged": false, "pipelines": [], "indexes": [], "error_message": ""})
        )
    );
    assert_eq!(s.get("/_inference/chunked").status().as_u16(), 200);

    // Preconfigured endpoints: refused without `force`, let go with it, and
    // still there (they load again on their next use).
    let e5 = "/_inference/.multilingual-e5-small-elasticsearch";
    let (status, refused) = body(s.delete(e5));
    assert_eq!(status, 400);
    assert_eq!(
        refused["error"]["reason"],
        "[.multilingual-e5-small-elasticsearch] is a reserved inference endpoint. Use the force=true query parameter to delete the inference endpoint."
    );
    let (status, forced) = body(s.delete(&format!("{e5}?force=true")));
    assert_eq!((status, forced["acknowledged"].clone()), (200, json!(true)));
    let (status, again) = body(s.post(e5, &json!({"input": "a cat on a mat"})));
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, text, "the preconfigured endpoint answers as before");

    // Reserved ids cannot be created, in the newest wording.
    let (status, refused) = body(s.put(
        "/_inference/text_embedding/.my-endpoint",
        &minilm_endpoint(json!({})),
    ));
    assert_eq!(
        (status, error_type(&refused).as_str()),
        (400, "action_request_validation_exception")
    );
    assert_eq!(
        refused["error"]["reason"],
        "Validation Failed: 1: Invalid inference_id; '.my-endpoint' can contain lowercase alphanumeric (a-z and 0-9), hyphens or underscores; must start and end with alphanumeric;"
    );
}

pub fn concurrent_requests_all_succeed(kind: Kind) {
    let s = server(kind);
    let s = &s;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                scope.spawn(move || {
                    let (status, answer) = body(s.post(
                        "/_inference/.multilingual-e5-small-elasticsearch",
                        &json!({"input": [format!("concurrent request {i}"), "and a second input"]}),
                    ));
                    assert_eq!(status, 200, "{answer}");
                    embeddings(&answer, "text_embedding")
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        // The shared second input embeds identically whichever instance served it.
        for r in &results {
            let diff = r[1]
                .iter()
                .zip(&results[0][1])
                .map(|(a, b)| (a - b).abs())
                .fold(0f64, f64::max);
            assert!(diff < 1e-6);
        }
    });
}

pub fn rerank_orders_documents_by_relevance(kind: Kind) {
    let s = server(kind);
    let documents = [
        "Photosynthesis turns light into chemical energy in plants.",
        "The Eiffel Tower stands in Paris, the capital of France.",
        "Stock markets fell sharply today after the rate decision.",
        "A kitten is resting on a rug.",
    ];
    let path = "/_inference/rerank/.rerank-v1-elasticsearch";
    let (status, answer) = body(s.post(
        path,
        &json!({"query": "what is the capital of france", "input": documents}),
    ));
    assert_eq!(status, 200, "{answer}");
    let ranked = answer["rerank"].as_array().unwrap();
    assert_eq!(ranked.len(), 4);
    assert_eq!(ranked[0]["index"], 1, "{answer}");
    assert_eq!(
        ranked[0]["text"], documents[1],
        "documents are returned by default"
    );
    let scores: Vec<f64> = ranked
        .iter()
        .map(|r| r["relevance_score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "sorted by score: {scores:?}"
    );

    let (status, top) = body(s.post(
        path,
        &json!({"query": "a small cat", "input": documents, "top_n": 2, "return_documents": false}),
    ));
    assert_eq!(status, 200, "{top}");
    let top = top["rerank"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!(top[0]["index"], 3);
    assert!(
        top[0].get("text").is_none(),
        "no text with return_documents false: {top:?}"
    );

    let (status, envelope) = body(s.post(path, &json!({"input": documents})));
    assert_eq!(status, 400, "a missing query is refused: {envelope}");
    error_type(&envelope);
}

pub fn rerank_chunks_long_documents_when_the_endpoint_says_so(kind: Kind) {
    let s = server(kind);
    let filler = "The quarterly budget review moved to Thursday afternoon. \
        Please file travel expenses before the end of the month. \
        The printer on the third floor needs a new toner cartridge. ";
    // The answer lies past the first window of the long document.
    let documents = vec![
        format!(
            "{}Bees make honey from nectar: they break it down with enzymes and fan it \
             in wax cells until the water evaporates.",
            filler.repeat(16)
        ),
        "Photosynthesis turns light into chemical energy in plants.".to_string(),
    ];
    let query = "How do bees make honey from nectar?";
    let mut scores = Vec::new();
    for (id, settings) in [
        ("truncating", json!({})),
        ("chunking", json!({"long_document_strategy": "chunk"})),
        (
            "one-chunk",
            json!({"long_document_strategy": "chunk", "max_chunks_per_doc": 1}),
        ),
    ] {
        let path = format!("/_inference/rerank/{id}");
        let (status, created) = body(s.put(&path, &minilm_endpoint(settings.clone())));
        assert_eq!(status, 200, "{created}");
        let (status, answer) = body(s.post(
            &path,
            &json!({"query": query, "input": documents, "return_documents": false}),
        ));
        assert_eq!(status, 200, "{answer}");
        let mut by_index = [0.0; 2];
        for r in answer["rerank"].as_array().unwrap() {
            by_index[r["index"].as_u64().unwrap() as usize] =
                r["relevance_score"].as_f64().unwrap();
        }
        // The same options in the native core give the same scores.
        let options = ml_core::RerankOptions {
            strategy: if settings.get("long_document_strategy").is_some() {
                ml_core::LongDocumentStrategy::Chunk
            } else {
                ml_core::LongDocumentStrategy::Truncate
            },
            max_chunks_per_doc: settings["max_chunks_per_doc"].as_u64().map(|n| n as usize),
        };
        let native = ml_core::Reranker::load(&model_cache().join("all-minilm-l6-v2"))
            .unwrap()
            .score(query, &documents, &options)
            .unwrap();
        for (served, native) in by_index.iter().zip(&native) {
            assert!(
                (served - f64::from(*native)).abs() < 1e-5,
                "{id}: {by_index:?} vs {native:?}"
            );
        }
        scores.push(by_index);
    }
    let [truncated, chunked, one_chunk] = [scores[0], scores[1], scores[2]];
    assert!(
        chunked[0] > truncated[0] + 0.2,
        "chunking finds the answer: {chunked:?} vs {truncated:?}"
    );
    assert!(chunked[0] > chunked[1], "and ranks the long document first");
    for (one, t) in one_chunk.iter().zip(&truncated) {
        assert!(
            (one - t).abs() < 1e-5,
            "one chunk is truncating: {one_chunk:?} vs {truncated:?}"
        );
    }
}

pub const COMPLETION: &str = "/_inference/completion/.smollm2-135m-instruct-completion";
/// A plain question: completion sends it to the instruct model as one user
/// message, as Elasticsearch does, so it is answered rather than continued.
pub const FRANCE: &str = "What is the capital of France?";

/// Reads a whole SSE response into `(event, data)` pairs, with an SSE
/// client library.
pub fn events(response: crate::Response) -> Vec<(String, String)> {
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    crate::sse::events(response)
        .map(|e| (e.event, e.data))
        .collect()
}

pub fn completion_answers_and_streams_the_same_text(kind: Kind) {
    let s = server(kind);
    let response = s.post(COMPLETION, &json!({"input": FRANCE}));
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().unwrap();
    let result = answer["completion"][0]["result"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(result.contains("Paris"), "{answer}");

    let streamed = events(s.post(&format!("{COMPLETION}/_stream"), &json!({"input": FRANCE})));
    let (last_event, last_data) = streamed.last().unwrap();
    assert_eq!(
        (last_event.as_str(), last_data.as_str()),
        ("message", "[DONE]")
    );
    let text: String = streamed[..streamed.len() - 1]
        .iter()
        .map(|(event, data)| {
            assert_eq!(event, "message");
            let v: Value = serde_json::from_str(data).unwrap();
            v["completion"][0]["delta"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, result, "streamed deltas concatenate to the answer");

    let short = s.post(
        COMPLETION,
        &json!({"input": FRANCE, "task_settings": {"max_tokens": 2}}),
    );
    let short: Value = short.json().unwrap();
    let short = short["completion"][0]["result"].as_str().unwrap();
    assert!(
        result.starts_with(short) && short.len() < result.len(),
        "{short:?}"
    );

    let seeded = |seed: u64| {
        let body = json!({"input": "Once upon a time", "task_settings": {"temperature": 1.0, "seed": seed, "max_tokens": 12}});
        let v: Value = s.post(COMPLETION, &body).json().unwrap();
        v["completion"][0]["result"].as_str().unwrap().to_string()
    };
    assert_eq!(seeded(7), seeded(7), "seeded sampling is reproducible");
}
