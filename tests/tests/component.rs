//! The task components run the real models and give the same numbers as the
//! ML core natively, wherever their graph runs: inside the sandbox on the
//! wasm SIMD kernels, or in the host through `wasi:nn` on tract or ONNX
//! Runtime.

use e2e_tests::{components_dir, model_cache, shared_compile_cache};
use es_wire::Compute;
use inference_host::compute::{find_onnxruntime, HostCompute};
use inference_host::runtime::{Build, InstanceLimits, Runtime, TaskKind};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let components: HashMap<(TaskKind, Build), _> = TaskKind::ALL
            .into_iter()
            .flat_map(|k| Build::ALL.map(|b| (k, b)))
            .filter_map(|(k, b)| Some(((k, b), components_dir().join(k.file_name(b)?))))
            .collect();
        let limits = InstanceLimits {
            memory_bytes: 2 << 30,
            load_timeout: Duration::from_secs(300),
        };
        let onnxruntime = find_onnxruntime(&model_cache())
            .expect("the model tooling installs onnxruntime: run `python3 models/fetch.py`");
        let host = HostCompute::new(Some(&onnxruntime));
        Runtime::new(&components, &shared_compile_cache(), limits, host).expect("components load")
    })
}

/// Every place a graph runs, with how close to the native core it must be:
/// tract anywhere gives the same floats to 1e-5; ONNX Runtime fuses and
/// orders operations its own way.
const COMPUTES: [(Compute, f32); 3] = [
    (Compute::Sandbox, 1e-5),
    (Compute::Tract, 1e-5),
    (Compute::Onnxruntime, 1e-3),
];

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
    let inputs = sentences();
    let native = ml_core::TextEmbedder::load(&dir)
        .unwrap()
        .embed(&inputs, None)
        .unwrap();
    for (compute, tolerance) in COMPUTES {
        let mut instance = runtime()
            .instantiate(
                TaskKind::TextEmbedding,
                &dir,
                compute,
                1,
                Default::default(),
            )
            .expect("instance");
        let embedded = instance
            .embed(None, &inputs, None)
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        assert_eq!(embedded.len(), native.len());
        for ((s, n), text) in embedded.iter().zip(&native).zip(&inputs) {
            assert_eq!(s.values.len(), 384);
            let diff = s
                .values
                .iter()
                .zip(&n.values)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                diff < tolerance,
                "{compute:?}, {text:?}: differs from the native core by {diff}"
            );
            let cosine = ml_core::cosine(&s.values, &n.values);
            assert!(cosine >= 0.9999, "{compute:?}, {text:?}: cosine {cosine}");
            assert_eq!(s.truncated, n.truncated);
        }
    }
}

#[test]
fn sparse_embedding_component_equals_native_core() {
    let dir = model_cache().join("splade-tiny");
    let inputs = sentences();
    let native = ml_core::SparseEmbedder::load(&dir)
        .unwrap()
        .embed(&inputs)
        .unwrap();
    for (compute, tolerance) in COMPUTES {
        let mut instance = runtime()
            .instantiate(
                TaskKind::SparseEmbedding,
                &dir,
                compute,
                1,
                Default::default(),
            )
            .expect("instance");
        let embedded = instance
            .sparse_embed(None, &inputs, None)
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        for (s, n) in embedded.iter().zip(&native) {
            let native: HashMap<&str, f32> =
                n.tokens.iter().map(|(t, w)| (t.as_str(), *w)).collect();
            // A weight within the tolerance of 0 may be kept by one and not the other.
            for (token, weight) in &s.tokens {
                let other = native.get(token.as_str()).copied().unwrap_or(0.0);
                let diff = (weight - other).abs();
                assert!(
                    diff < tolerance * 10.0,
                    "{compute:?}, {token}: {weight} vs {other}"
                );
            }
            if compute != Compute::Onnxruntime {
                assert_eq!(s.tokens.len(), n.tokens.len(), "{compute:?}");
            }
        }
    }
}

#[test]
fn rerank_component_equals_native_core() {
    let documents = sentences();
    for model in ["all-minilm-l6-v2", "minilm-pair-classifier-test"] {
        let dir = model_cache().join(model);
        let native = ml_core::Reranker::load(&dir)
            .unwrap()
            .score("where is the eiffel tower", &documents, &Default::default())
            .unwrap();
        for (compute, tolerance) in COMPUTES {
            let mut instance = runtime()
                .instantiate(TaskKind::Rerank, &dir, compute, 1, Default::default())
                .expect("instance");
            let scores = instance
                .rerank(
                    None,
                    "where is the eiffel tower",
                    &documents,
                    es_wire::RerankOptions::default(),
                )
                .map_err(|e| format!("{e:?}"))
                .unwrap();
            for (s, n) in scores.iter().zip(&native) {
                assert!(
                    (s - n).abs() < tolerance,
                    "{model}, {compute:?}: {s} vs {n}"
                );
            }
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
            .instantiate(
                kind,
                &model_cache().join(model),
                Compute::Sandbox,
                1,
                Default::default(),
            )
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
        // The ML core's 8x8 kernel first (ml_core::kernels::wasm_tile),
        // tract's wasm tier behind it for what it leaves.
        assert_eq!(
            report.tiers.iter().map(String::as_str).collect::<Vec<_>>()[..2],
            ["ml-core-wasm", "wasm-simd128"],
            "{kind:?}: {report:?}"
        );
        assert!(
            report.matmul_kernels.iter().any(|k| k == "wasm_f32_8x8_k2"),
            "{kind:?}: {report:?}"
        );
    }
}

/// tract chooses how to run an operation by what it can prove about batch and
/// sequence: with both bounds of both, the encoder's residual sums (two a
/// layer) run on its vectorised kernel rather than element by element. The
/// graph refuses what lies outside the bounds it was optimised for.
#[test]
fn tract_graphs_are_optimised_for_their_bounds() {
    use ml_core::{Graph, Input, ModelConfig, TractGraph};
    let dir = model_cache().join("all-minilm-l6-v2");
    let config = ModelConfig::from_dir(&dir).unwrap();
    let onnx = std::fs::read(dir.join("model.onnx")).unwrap();
    let graph = TractGraph::from_onnx(&onnx, &config).unwrap();
    let operations = graph.operation_names();
    let sums = operations.iter().filter(|o| *o == "OptAddUnicast").count();
    assert!(sums >= 12, "{operations:?}");

    let (max_batch, max_sequence) = (ml_core::encoder::MAX_BATCH_SIZE, config.max_sequence_length);
    let limit = format!("this graph takes 1 to {max_batch} inputs of 1 to {max_sequence} tokens");
    // Every input of the graph, `batch × sequence` ids of 1.
    let ids = |batch: usize, sequence: usize| -> Vec<Input> {
        config
            .inputs
            .iter()
            .map(|name| Input {
                name,
                values: vec![1; batch * sequence],
            })
            .collect()
    };
    for (batch, sequence) in [(0, 4), (max_batch + 1, 4), (1, 0), (1, max_sequence + 1)] {
        let err = graph
            .run(batch, sequence, ids(batch, sequence))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&limit), "{batch} x {sequence}: {err}");
    }
    let output = graph.run(max_batch, 1, ids(max_batch, 1)).unwrap();
    assert_eq!(output.shape[..2], [max_batch, 1]);
}
