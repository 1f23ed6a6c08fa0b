//! Cross-request batching: embedding requests that queue while an
//! endpoint's instance is busy are answered by one call, each with its own
//! answer, and one request's bad input fails only that request. The
//! hostile component's `count` order answers how many inputs its call had.

use e2e_tests::{components_dir, json, Server, Value};
use std::time::Duration;

const ENDPOINT: &str = "/_inference/text_embedding/one-allocation";

/// A server whose text-embedding component is the hostile one, with an
/// endpoint of one instance.
fn server(extra: &[&str]) -> Server {
    let hostile = components_dir().join("hostile_component.wasm");
    let component = format!("text_embedding={}", hostile.display());
    let mut args = vec!["--component", &component];
    args.extend(extra);
    let server = Server::start(&args).expect("server starts");
    let created = server.put(
        ENDPOINT,
        &json!({"service": "elasticsearch", "service_settings": {
            "model_id": "all-minilm-l6-v2", "num_allocations": 1}}),
    );
    assert_eq!(created.status().as_u16(), 200);
    server
}

/// Holds the one instance for a second, sends `inputs` as concurrent
/// requests meanwhile, and returns each one's status and body.
fn while_busy(server: &Server, inputs: &[&str]) -> Vec<(u16, Value)> {
    let bodies: Vec<Value> = inputs.iter().map(|i| json!({ "input": i })).collect();
    while_busy_with(server, &bodies)
}

/// [`while_busy`] with whole request bodies, queued in the order given.
fn while_busy_with(server: &Server, bodies: &[Value]) -> Vec<(u16, Value)> {
    // The instance is loaded and idle before the blocker takes it.
    let ready = server.post(ENDPOINT, &json!({"input": "ready"}));
    assert_eq!(ready.status().as_u16(), 200);
    std::thread::scope(|s| {
        let busy = s.spawn(|| server.post(ENDPOINT, &json!({"input": "sleep:1000"})));
        // The blocker reaches the instance first.
        std::thread::sleep(Duration::from_millis(300));
        let waiting: Vec<_> = bodies
            .iter()
            .map(|body| {
                let waiter = s.spawn(move || {
                    let response = server.post(ENDPOINT, body);
                    (
                        response.status().as_u16(),
                        response.json::<Value>().unwrap(),
                    )
                });
                // Queued in order, well within the blocker's second.
                std::thread::sleep(Duration::from_millis(20));
                waiter
            })
            .collect();
        assert_eq!(busy.join().unwrap().status().as_u16(), 200);
        waiting.into_iter().map(|w| w.join().unwrap()).collect()
    })
}

fn value(body: &Value) -> f64 {
    body["text_embedding"][0]["embedding"][0].as_f64().unwrap()
}

#[test]
fn requests_queued_behind_a_busy_instance_share_one_call() {
    let s = server(&[]);
    let answers = while_busy(&s, &["count"; 6]);
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(
            value(body),
            6.0,
            "all six queued requests in one call: {body}"
        );
    }
    // Alone, a request is a call of its own.
    let alone = s.post(ENDPOINT, &json!({"input": "count"}));
    assert_eq!(value(&alone.json().unwrap()), 1.0);
}

#[test]
fn a_bad_request_in_a_batch_fails_alone() {
    let s = server(&[]);
    let answers = while_busy(&s, &["count", "env", "count", "hello"]);
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [200, 400, 200, 200], "{answers:?}");
    assert_eq!(value(&answers[0].1), 1.0, "answered again alone");
    assert_eq!(
        value(&answers[3].1),
        5.0,
        "its own answer: the text's length"
    );
}

/// A bad request whose `input_type` puts it in a batch of its own fails
/// only itself; the requests queued with it are answered.
#[test]
fn a_bad_request_in_a_batch_of_its_own_fails_only_itself() {
    let s = server(&[]);
    let mut bodies = vec![json!({"input": "env", "input_type": "search"})];
    bodies.extend((0..5).map(|_| json!({"input": "count", "input_type": "ingest"})));
    let answers = while_busy_with(&s, &bodies);
    assert_eq!(answers[0].0, 400, "{:?}", answers[0]);
    for (status, body) in &answers[1..] {
        assert_eq!(*status, 200, "{body}");
    }
}

#[test]
fn max_batch_inputs_of_one_turns_batching_off() {
    let s = server(&["--max-batch-inputs", "1"]);
    for (status, body) in while_busy(&s, &["count"; 4]) {
        assert_eq!(status, 200, "{body}");
        assert_eq!(value(&body), 1.0, "{body}");
    }
}
