//! The inference API end to end against the native host (the cases are
//! shared with the Spin app: `e2e_tests::cases`).

use e2e_tests::{cases, Kind};

#[test]
fn endpoint_lifecycle_survives_a_restart() {
    cases::endpoint_lifecycle_survives_a_restart(Kind::Native);
}

#[test]
fn embeddings_over_http_equal_the_native_core() {
    cases::embeddings_over_http_equal_the_native_core(Kind::Native);
}

#[test]
fn byte_and_bit_element_types_quantise() {
    cases::byte_and_bit_element_types_quantise(Kind::Native);
}

#[test]
fn contract_errors_have_the_right_status_and_type() {
    cases::contract_errors_have_the_right_status_and_type(Kind::Native);
}

#[test]
fn a_request_past_its_timeout_answers_408_and_the_endpoint_recovers() {
    cases::a_request_past_its_timeout_answers_408_and_the_endpoint_recovers(Kind::Native);
}

#[test]
fn cluster_info_services_and_vendor_media_types() {
    cases::cluster_info_services_and_vendor_media_types(Kind::Native);
}

#[test]
fn concurrent_requests_all_succeed() {
    cases::concurrent_requests_all_succeed(Kind::Native);
}

#[test]
fn rerank_orders_documents_by_relevance() {
    cases::rerank_orders_documents_by_relevance(Kind::Native);
}

#[test]
fn rerank_chunks_long_documents_when_the_endpoint_says_so() {
    cases::rerank_chunks_long_documents_when_the_endpoint_says_so(Kind::Native);
}
