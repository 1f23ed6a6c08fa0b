//! Prometheus metrics on `--metrics-listen`: a scrape parses as the text
//! format, the counters move with traffic, and the API port does not serve
//! them (`/metrics` is an index name to an Elasticsearch client).

use e2e_tests::{client, json, Server};
use prometheus_parse::{Sample, Scrape, Value};

const E5: &str = ".multilingual-e5-small-elasticsearch";
const COMPLETION: &str = ".smollm2-135m-instruct-completion";

fn scrape(server: &Server) -> Vec<Sample> {
    let url = server
        .metrics_url
        .as_ref()
        .expect("the server serves metrics");
    let response = client().get(url).send().expect("a scrape");
    assert_eq!(response.status(), 200);
    let text = response.text().unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    Scrape::parse(lines)
        .expect("the text format parses")
        .samples
}

/// The value of `metric` whose labels include every one of `labels`
/// (summed over the rest); histograms give their count.
fn value(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

#[test]
fn metrics_move_with_traffic_on_their_own_port() {
    let server = Server::start(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--max-body-bytes",
        "4096",
    ])
    .expect("server starts");
    let e5 = format!("/_inference/text_embedding/{E5}");
    let ok = server.post(&e5, &json!({"input": ["one", "two", "three"]}));
    assert_eq!(ok.status(), 200);
    let before = scrape(&server);
    let labels = [("inference_id", E5), ("task", "text_embedding")];
    let requests = |samples: &[Sample], status: &str| {
        value(
            samples,
            "inference_requests_total",
            &[labels[0], labels[1], ("status", status)],
        )
    };

    for _ in 0..3 {
        assert_eq!(server.post(&e5, &json!({"input": "again"})).status(), 200);
    }
    assert_eq!(server.post(&e5, &json!({"input": []})).status(), 400);
    let oversized = json!({"input": "x".repeat(5000)});
    assert_eq!(server.post(&e5, &oversized).status(), 413);
    let generated = server.post(
        &format!("/_inference/completion/{COMPLETION}"),
        &json!({"input": "Say hello.", "task_settings": {"max_tokens": 4}}),
    );
    assert_eq!(generated.status(), 200);
    let after = scrape(&server);

    assert_eq!(requests(&after, "200") - requests(&before, "200"), 3.0);
    assert_eq!(requests(&after, "400") - requests(&before, "400"), 1.0);
    assert_eq!(
        value(
            &after,
            "inference_rejected_total",
            &[labels[0], ("status", "413")]
        ),
        1.0
    );
    assert_eq!(
        value(&after, "inference_inputs_total", &labels)
            - value(&before, "inference_inputs_total", &labels),
        3.0
    );
    assert!(value(&after, "inference_request_duration_seconds", &labels) >= 4.0);
    let e5_only = [("inference_id", E5)];
    assert!(
        value(
            &after,
            "inference_instances",
            &[e5_only[0], ("state", "loaded")]
        ) >= 1.0
    );
    assert!(value(&after, "inference_model_load_seconds", &e5_only) >= 1.0);
    assert!(value(&after, "inference_queue_wait_seconds", &e5_only) >= 4.0);
    assert_eq!(value(&after, "inference_queue_depth", &e5_only), 0.0);
    assert!(value(&after, "inference_instance_memory_bytes", &e5_only) > 0.0);

    let completion = [("inference_id", COMPLETION)];
    assert_eq!(
        value(
            &after,
            "inference_tokens_total",
            &[completion[0], ("kind", "generated")]
        ),
        4.0
    );
    assert!(
        value(
            &after,
            "inference_tokens_total",
            &[completion[0], ("kind", "prompt")]
        ) > 10.0
    );
    assert_eq!(
        value(&after, "inference_time_to_first_token_seconds", &completion),
        1.0
    );

    assert!(value(&after, "process_resident_memory_bytes", &[]) > 10e6);
    assert!(value(&after, "process_open_fds", &[]) > 3.0);

    // An id that does not exist gets no series of its own.
    let missing = server.post("/_inference/text_embedding/no-such", &json!({"input": "x"}));
    assert_eq!(missing.status(), 404);
    assert!(scrape(&server)
        .iter()
        .all(|s| s.labels.get("inference_id") != Some("no-such")));

    // On the API port `/metrics` is an index name, not the scrape.
    let api = server.get("/metrics");
    assert_ne!(api.status(), 200);
    assert!(!api.text().unwrap().contains("inference_requests_total"));
}
