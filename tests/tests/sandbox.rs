//! The sandbox holds against a hostile component: the deadline stops an
//! endless loop, the memory cap stops unbounded allocation, a trap costs one
//! instance and never the server, and the component sees nothing but its
//! read-only model directory. Through `wasi:nn` it gets its endpoint's graph
//! and nothing else, every tensor it sends is checked, and neither a compute
//! past the deadline nor a hoard of tensors costs more than its instance.

use e2e_tests::{components_dir, error_type, json, Server, Value};

const ENDPOINT: &str = "/_inference/.multilingual-e5-small-elasticsearch";

/// A server whose text-embedding component is the hostile one, with a
/// 256 MiB memory cap per instance.
fn server() -> Server {
    let hostile = components_dir().join("hostile_component.wasm");
    let component = format!("text_embedding={}", hostile.display());
    Server::start(&["--component", &component, "--instance-memory-mib", "256"])
        .expect("server starts")
}

/// The reason of the 400 that answers `order`.
fn reason(server: &Server, order: &str) -> String {
    let (status, body) = ask(server, order, "");
    assert_eq!(status, 400, "{order}: {body}");
    body["error"]["reason"].as_str().unwrap().to_string()
}

fn ask(server: &Server, order: &str, query: &str) -> (u16, Value) {
    let response = server.post(&format!("{ENDPOINT}{query}"), &json!({"input": order}));
    (response.status().as_u16(), response.json().unwrap())
}

/// The endpoint still answers normally.
fn assert_serving(server: &Server) {
    let (status, body) = ask(server, "hello", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["text_embedding"][0]["embedding"], json!([5.0]));
}

#[test]
fn an_endless_loop_is_stopped_at_the_deadline() {
    let s = server();
    let (status, body) = ask(&s, "loop", "?timeout=1s");
    assert_eq!(status, 408, "{body}");
    assert_eq!(error_type(&body), "status_exception");
    assert_serving(&s);
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    let s = server();
    let (status, body) = ask(&s, "alloc", "");
    assert_eq!(status, 500, "{body}");
    assert_eq!(error_type(&body), "status_exception");
    assert_serving(&s);
}

#[test]
fn a_trap_is_a_500_and_the_instance_is_replaced() {
    let s = server();
    for _ in 0..3 {
        let (status, body) = ask(&s, "panic", "");
        assert_eq!(status, 500, "{body}");
    }
    assert_serving(&s);
}

#[test]
fn only_the_model_directory_is_visible_and_it_is_read_only() {
    let s = server();
    let reason = |order: &str| reason(&s, order);
    assert!(
        reason("read:/model/model.json").starts_with("read "),
        "the granted model dir is readable"
    );
    assert!(
        reason("read:/etc/passwd").starts_with("denied"),
        "host files are invisible"
    );
    assert!(
        reason("read:/model/../../etc/passwd").starts_with("denied"),
        "no escape from the preopen"
    );
    assert!(
        reason("write:/model/planted").starts_with("denied"),
        "the model dir is read-only"
    );
    assert_eq!(reason("env"), "env vars: 0", "no environment");
    assert_serving(&s);
}

#[test]
fn wasi_nn_grants_only_the_endpoints_own_graph() {
    let s = server();
    assert_eq!(reason(&s, "nn:graph:multilingual-e5-small"), "loaded");
    for other in [
        "splade-tiny",
        "../splade-tiny",
        "/models/splade-tiny/model.onnx",
        "",
    ] {
        let answer = reason(&s, &format!("nn:graph:{other}"));
        assert!(
            answer.starts_with("denied: ErrorCode::NotFound: no graph"),
            "{other}: {answer}"
        );
    }
    let answer = reason(&s, "nn:load-bytes");
    assert!(
        answer.starts_with("denied: ErrorCode::Security"),
        "{answer}"
    );
    assert_serving(&s);
}

#[test]
fn wasi_nn_checks_every_tensor_before_compute() {
    let s = server();
    for (order, says) in [
        ("nn:oversized", "exceeds the model's limits"),
        ("nn:dtype", "must be i64"),
        ("nn:short", "not the 64 its shape needs"),
        ("nn:rank", "must be [batch, sequence]"),
        ("nn:unknown-input", "the graph has no input [weights]"),
    ] {
        let answer = reason(&s, order);
        assert!(
            answer.starts_with("denied: ErrorCode::InvalidArgument") && answer.contains(says),
            "{order}: {answer}"
        );
    }
    assert_serving(&s);
}

/// Ids outside the vocabulary reach the backend (the host does not know
/// the vocabulary): each backend refuses them cleanly, tract and ONNX
/// Runtime alike.
#[test]
fn wasi_nn_backends_refuse_ids_outside_the_vocabulary() {
    let s = server();
    for compute in ["onnxruntime", "tract"] {
        let id = format!("hostile-{compute}");
        let created = s.put(
            &format!("/_inference/text_embedding/{id}"),
            &json!({"service": "elasticsearch", "service_settings": {
                "model_id": "all-minilm-l6-v2", "num_allocations": 1, "compute": compute}}),
        );
        assert_eq!(
            created.status().as_u16(),
            200,
            "{}",
            created.text().unwrap()
        );
        let response = s.post(
            &format!("/_inference/text_embedding/{id}"),
            &json!({"input": "nn:bad-ids"}),
        );
        let status = response.status().as_u16();
        let body: Value = response.json().unwrap();
        assert_eq!(status, 400, "{compute}: {body}");
        let answer = body["error"]["reason"].as_str().unwrap();
        assert!(
            answer.starts_with("denied: ErrorCode::RuntimeError"),
            "{compute}: {answer}"
        );
    }
    assert_serving(&s);
}

#[test]
fn wasi_nn_compute_past_the_deadline_is_a_408() {
    let s = server();
    let (status, body) = ask(&s, "nn:spin", "?timeout=1s");
    assert_eq!(status, 408, "{body}");
    assert_serving(&s);
}

#[test]
fn wasi_nn_tensors_held_in_the_host_are_capped() {
    let s = server();
    let (status, body) = ask(&s, "nn:hoard", "");
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("the model instance failed and was replaced"),
        "{body}"
    );
    assert_serving(&s);
    // Other endpoints never noticed.
    let response = s.post(
        "/_inference/.elser-2-elasticsearch",
        &json!({"input": "the sandbox held"}),
    );
    assert_eq!(response.status().as_u16(), 200);
}
