//! The inference API end to end against the Spin app: the router composed
//! with the task components, in the wasmtime test host. Same cases as the
//! native host (`e2e_tests::cases`), and the same numbers.

use e2e_tests::{cases, json, Kind, Server, Value};

#[test]
fn endpoint_lifecycle_survives_a_restart() {
    cases::endpoint_lifecycle_survives_a_restart(Kind::Spin);
}

#[test]
fn embeddings_over_http_equal_the_native_core() {
    cases::embeddings_over_http_equal_the_native_core(Kind::Spin);
}

#[test]
fn byte_and_bit_element_types_quantise() {
    cases::byte_and_bit_element_types_quantise(Kind::Spin);
}

#[test]
fn contract_errors_have_the_right_status_and_type() {
    cases::contract_errors_have_the_right_status_and_type(Kind::Spin);
}

#[test]
fn a_request_past_its_timeout_answers_408_and_the_endpoint_recovers() {
    cases::a_request_past_its_timeout_answers_408_and_the_endpoint_recovers(Kind::Spin);
}

#[test]
fn cluster_info_services_and_vendor_media_types() {
    cases::cluster_info_services_and_vendor_media_types(Kind::Spin);
}

#[test]
fn concurrent_requests_all_succeed() {
    cases::concurrent_requests_all_succeed(Kind::Spin);
}

#[test]
fn rerank_orders_documents_by_relevance() {
    cases::rerank_orders_documents_by_relevance(Kind::Spin);
}

/// The Spin app and the native host run the same task components on the
/// same models: embeddings, sparse weights and rerank scores are identical.
#[test]
fn spin_app_and_native_host_give_identical_numbers() {
    let native = Server::start_kind(Kind::Native, &[]).expect("native host starts");
    let spin = Server::start_kind(Kind::Spin, &[]).expect("Spin test host starts");
    let texts = [
        "The cat sits on the mat.",
        "A kitten is resting on a rug.",
        "Stock markets fell sharply today after the rate decision.",
    ];
    let requests: [(&str, Value); 3] = [
        (
            "/_inference/text_embedding/.multilingual-e5-small-elasticsearch",
            json!({"input": texts}),
        ),
        (
            "/_inference/sparse_embedding/.elser-2-elasticsearch",
            json!({"input": texts}),
        ),
        (
            "/_inference/rerank/.rerank-v1-elasticsearch",
            json!({"query": "a small cat", "input": texts}),
        ),
    ];
    for (path, request) in &requests {
        let (status, from_native) = cases::body(native.post(path, request));
        assert_eq!(status, 200, "{from_native}");
        let (status, from_spin) = cases::body(spin.post(path, request));
        assert_eq!(status, 200, "{from_spin}");
        assert_eq!(from_spin, from_native, "{path}: the two servers differ");
    }
}

#[test]
fn rerank_chunks_long_documents_when_the_endpoint_says_so() {
    cases::rerank_chunks_long_documents_when_the_endpoint_says_so(Kind::Spin);
}

#[test]
fn completion_answers_and_streams_the_same_text() {
    cases::completion_answers_and_streams_the_same_text(Kind::Spin);
}
