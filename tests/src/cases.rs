//! The inference API end to end, over real HTTP: each case takes the kind
//! of server to spawn, so the native host and the Spin app answer the same
//! cases (`tests/tests/api.rs`, `tests/tests/spin_api.rs`).

use crate::{error_type, json, model_cache, Kind, Server, Value};

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
        (200, json!({"acknowledged": true, "pipelines": []}))
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
        (".multilingual-e5-small-elasticsearch", "all-minilm-l6-v2"),
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
    let served = &served[0];
    let cos = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    assert!(cos(&served[0], &served[1]) > cos(&served[0], &served[2]) + 0.3);
}

pub fn byte_and_bit_element_types_quantise(kind: Kind) {
    let s = server(kind);
    for (id, element_type) in [("minilm-bytes", "byte"), ("minilm-bits", "bit")] {
        let (status, info) = body(s.put(
            &format!("/_inference/text_embedding/{id}"),
            &minilm_endpoint(json!({"element_type": element_type})),
        ));
        assert_eq!(status, 200, "{info}");
    }
    let input = json!({"input": "The cat sits on the mat."});
    let (_, floats) = body(s.post("/_inference/.multilingual-e5-small-elasticsearch", &input));
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
        &["illegal_argument_exception"],
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
pub const FRANCE: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";

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
