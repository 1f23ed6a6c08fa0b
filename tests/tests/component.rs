//! The task components run the real models inside the sandbox and give the
//! same numbers as the ML core natively, on the wasm SIMD kernels.

use e2e_tests::{components_dir, model_cache, shared_compile_cache};
use inference_host::runtime::{InstanceLimits, Runtime, TaskKind};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let components: HashMap<TaskKind, _> = TaskKind::ALL
            .into_iter()
            .map(|k| (k, components_dir().join(k.file_name())))
            .collect();
        let limits = InstanceLimits {
            memory_bytes: 2 << 30,
            load_timeout: Duration::from_secs(300),
        };
        Runtime::new(&components, &shared_compile_cache(), limits).expect("components load")
    })
}

fn sentences() -> Vec<String> {
    [
        "The cat sits on the mat.",
        "A kitten is resting on a rug.",
        "Stock markets fell sharply today.",
        "what is the capital of france",
        "The Eiffel Tower stands in Paris, on the banks of the Seine.",
        "",
        "Ünïcödé text, emoji 🙂 and numbers 12345 all tokenize.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn text_embedding_component_equals_native_core() {
    let dir = model_cache().join("all-minilm-l6-v2");
    let mut instance = runtime()
        .instantiate(TaskKind::TextEmbedding, &dir)
        .expect("instance");
    let inputs = sentences();
    let sandboxed = instance
        .embed(None, &inputs, None)
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    let native = ml_core::TextEmbedder::load(&dir)
        .unwrap()
        .embed(&inputs, None)
        .unwrap();
    assert_eq!(sandboxed.len(), native.len());
    for ((s, n), text) in sandboxed.iter().zip(&native).zip(&inputs) {
        assert_eq!(s.values.len(), 384);
        let diff = s
            .values
            .iter()
            .zip(&n.values)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 1e-5,
            "{text:?}: component differs from native by {diff}"
        );
        assert_eq!(s.truncated, n.truncated);
    }
}

#[test]
fn sparse_embedding_component_equals_native_core() {
    let dir = model_cache().join("splade-tiny");
    let mut instance = runtime()
        .instantiate(TaskKind::SparseEmbedding, &dir)
        .expect("instance");
    let inputs = sentences();
    let sandboxed = instance
        .sparse_embed(None, &inputs, None)
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    let native = ml_core::SparseEmbedder::load(&dir)
        .unwrap()
        .embed(&inputs)
        .unwrap();
    for (s, n) in sandboxed.iter().zip(&native) {
        assert_eq!(s.tokens.len(), n.tokens.len());
        let native: HashMap<&str, f32> = n.tokens.iter().map(|(t, w)| (t.as_str(), *w)).collect();
        for (token, weight) in &s.tokens {
            let diff = (weight - native[token.as_str()]).abs();
            assert!(
                diff < 1e-4,
                "{token}: {weight} vs {}",
                native[token.as_str()]
            );
        }
    }
}

#[test]
fn rerank_component_equals_native_core() {
    let documents = sentences();
    for model in ["all-minilm-l6-v2", "minilm-pair-classifier-test"] {
        let dir = model_cache().join(model);
        let mut instance = runtime()
            .instantiate(TaskKind::Rerank, &dir)
            .expect("instance");
        let sandboxed = instance
            .rerank(
                None,
                "where is the eiffel tower",
                &documents,
                es_wire::RerankOptions::default(),
            )
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        let native = ml_core::Reranker::load(&dir)
            .unwrap()
            .score("where is the eiffel tower", &documents, &Default::default())
            .unwrap();
        for (s, n) in sandboxed.iter().zip(&native) {
            assert!((s - n).abs() < 1e-5, "{model}: {s} vs {n}");
        }
    }
}

/// tract registers its SIMD kernels through constructors; a component built
/// without simd128, or whose constructors did not run, falls back to generic
/// kernels 5-6x slower. This fails in either case.
#[test]
fn components_run_wasm_simd_kernels() {
    for (kind, model) in [
        (TaskKind::TextEmbedding, "all-minilm-l6-v2"),
        (TaskKind::SparseEmbedding, "splade-tiny"),
    ] {
        let mut instance = runtime()
            .instantiate(kind, &model_cache().join(model))
            .expect("instance");
        let report = instance.kernels().map_err(|e| format!("{e:?}")).unwrap();
        assert!(report.isa.contains("simd128"), "{kind:?}: isa {report:?}");
        assert!(
            report
                .matmul_kernels
                .iter()
                .any(|k| k.starts_with("wasm_f32")),
            "{kind:?}: no wasm SIMD matmul kernel in {report:?}"
        );
        assert_eq!(
            report.tiers.first().map(String::as_str),
            Some("wasm-simd128"),
            "{kind:?}: {report:?}"
        );
    }
}
