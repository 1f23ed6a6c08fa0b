//! Each configurable limit, over HTTP: body size (413), inputs per request and
//! characters per input (400), the per-endpoint queue (429 with Retry-After)
//! and the per-request deadline (408). The memory cap per instance is shown
//! in `sandbox.rs`.

use e2e_tests::{error_type, json, Server, Value};

const E5: &str = "/_inference/text_embedding/.multilingual-e5-small-elasticsearch";

fn status_and_body(r: e2e_tests::Response) -> (u16, Value) {
    (r.status().as_u16(), r.json().expect("JSON body"))
}

#[test]
fn body_inputs_and_characters_limits() {
    let server = Server::start(&[
        "--max-body-bytes",
        "2000",
        "--max-inputs",
        "3",
        "--max-input-chars",
        "50",
    ])
    .unwrap();
    let (status, body) = status_and_body(server.post(E5, &json!({"input": "x".repeat(3000)})));
    assert_eq!(
        (status, error_type(&body).as_str()),
        (413, "status_exception"),
        "{body}"
    );

    let (status, body) = status_and_body(server.post(E5, &json!({"input": ["a", "b", "c", "d"]})));
    assert_eq!(status, 400, "{body}");
    let (status, body) = status_and_body(server.post(E5, &json!({"input": "y".repeat(51)})));
    assert_eq!(status, 400, "{body}");

    let (status, body) =
        status_and_body(server.post(E5, &json!({"input": ["a", "b", "y".repeat(50)]})));
    assert_eq!(status, 200, "at the limits: {body}");
}

#[test]
fn queue_bound_answers_429_with_retry_after_and_deadline_408() {
    let server = Server::start(&["--max-queue", "1"]).unwrap();
    let r = server.put(
        "/_inference/completion/one-llm",
        &json!({"service": "elasticsearch", "service_settings": {
            "model_id": "smollm2-135m-instruct", "num_allocations": 1, "num_threads": 1}}),
    );
    assert_eq!(r.status(), 200);
    // One runs, one waits, the rest are refused at once.
    let answers: Vec<(u16, Option<String>, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    let r = server.post(
                        "/_inference/completion/one-llm",
                        &json!({"input": "Write a long story about the sea.",
                                "task_settings": {"max_tokens": 48}}),
                    );
                    let retry = r
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    (r.status().as_u16(), retry, r.json().unwrap())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let refused: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert!(!refused.is_empty(), "{answers:?}");
    for (_, retry, body) in &refused {
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(error_type(body), "status_exception");
    }
    assert!(
        answers.iter().all(|a| a.0 == 200 || a.0 == 429),
        "{answers:?}"
    );
    assert!(answers.iter().filter(|a| a.0 == 200).count() >= 1);

    // A deadline shorter than the work: 408.
    let (status, body) = status_and_body(server.post(
        "/_inference/completion/one-llm?timeout=1ms",
        &json!({"input": "Tell me everything.", "task_settings": {"max_tokens": 64}}),
    ));
    assert_eq!(
        (status, error_type(&body).as_str()),
        (408, "status_exception"),
        "{body}"
    );
}
