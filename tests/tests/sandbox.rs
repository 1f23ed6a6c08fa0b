//! The sandbox holds against a hostile component: the deadline stops an
//! endless loop, the memory cap stops unbounded allocation, a trap costs one
//! instance and never the server, and the component sees nothing but its
//! read-only model directory.

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
    let reason = |order: &str| {
        let (status, body) = ask(&s, order, "");
        assert_eq!(status, 400, "{body}");
        body["error"]["reason"].as_str().unwrap().to_string()
    };
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
