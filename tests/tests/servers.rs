//! The inference API end to end, the same cases (`e2e_tests::cases`) against
//! every server: the native host, the Spin app in the wasmtime test host, and
//! `spin up` of the repository's `spin.toml` with a real Spin CLI.

use e2e_tests::{cases, json, Kind, Server, Value};

/// One test per shared case for a server kind.
macro_rules! shared_cases {
    ($kind:expr) => {
        shared_cases!(
            $kind;
            endpoint_lifecycle_survives_a_restart,
            embeddings_over_http_equal_the_native_core,
            byte_and_bit_element_types_quantise,
            contract_errors_have_the_right_status_and_type,
            a_request_past_its_timeout_answers_408_and_the_endpoint_recovers,
            a_stream_past_its_timeout_answers_408,
            cluster_info_services_and_vendor_media_types,
            concurrent_requests_all_succeed,
            rerank_orders_documents_by_relevance,
            rerank_chunks_long_documents_when_the_endpoint_says_so,
            completion_answers_and_streams_the_same_text,
        );
    };
    ($kind:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                if $kind == Kind::SpinCli && e2e_tests::spin_bin().is_none() {
                    eprintln!("no Spin CLI (SPIN_BIN is not set): `spin up` not tested");
                    return;
                }
                cases::$case($kind);
            }
        )*
    };
}

mod native_host {
    use super::*;
    shared_cases!(Kind::Native);
}

mod spin_test_host {
    use super::*;
    shared_cases!(Kind::Spin);
}

mod spin_cli {
    use super::*;
    shared_cases!(Kind::SpinCli);

    /// CI sets `SPIN_BIN`: then `spin up` must serve, with every
    /// preconfigured endpoint, rather than the cases passing over it.
    #[test]
    fn spin_up_serves_every_preconfigured_endpoint() {
        let Some(bin) = e2e_tests::spin_bin() else {
            eprintln!("no Spin CLI (SPIN_BIN is not set): `spin up` not tested");
            return;
        };
        let spin = Server::start_kind(Kind::SpinCli, &[])
            .unwrap_or_else(|e| panic!("spin up with {} did not serve: {e:#}", bin.display()));
        let (status, all) = cases::body(spin.get("/_inference/_all"));
        assert_eq!(status, 200, "{all}");
        let ids = cases::endpoint_ids(&all);
        let expected: Vec<&str> = es_wire::PRECONFIGURED.iter().map(|p| p.0).collect();
        for id in expected {
            assert!(ids.contains(&id), "{id} missing from {ids:?}");
        }
    }
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
