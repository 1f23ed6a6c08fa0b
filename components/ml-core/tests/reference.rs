//! The reference behaviour of the shipped models (see models/README.md), on
//! the real converted files. Run `python3 models/fetch.py` first.

mod common;
use common::{model_dir, strings};

use ml_core::sparse::dot;
use ml_core::{cosine, SparseEmbedder, TextEmbedder};
use std::sync::OnceLock;

fn minilm() -> &'static TextEmbedder {
    static MODEL: OnceLock<TextEmbedder> = OnceLock::new();
    MODEL.get_or_init(|| TextEmbedder::load(&model_dir("all-minilm-l6-v2")).unwrap())
}

fn splade() -> &'static SparseEmbedder {
    static MODEL: OnceLock<SparseEmbedder> = OnceLock::new();
    MODEL.get_or_init(|| SparseEmbedder::load(&model_dir("splade-tiny")).unwrap())
}

const CAT: &str = "The cat sits on the mat.";
const KITTEN: &str = "A kitten is resting on a rug.";
const STOCKS: &str = "Stock markets fell sharply today.";

#[test]
fn related_sentences_are_closer_than_unrelated_ones() {
    let e = minilm()
        .embed(&strings(&[CAT, KITTEN, STOCKS]), None)
        .unwrap();
    assert_eq!(e[0].values.len(), 384);
    let related = cosine(&e[0].values, &e[1].values);
    let unrelated = cosine(&e[0].values, &e[2].values);
    assert!(
        (0.55..0.75).contains(&related),
        "cos(cat, kitten) = {related}"
    );
    assert!(unrelated < 0.2, "cos(cat, stocks) = {unrelated}");
    for v in &e {
        let norm: f32 = v.values.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
    }
}

#[test]
fn a_batch_equals_one_by_one() {
    let texts = strings(&[
        CAT,
        "Short.",
        STOCKS,
        "A considerably longer sentence about the weather in the mountains, which changes quickly in spring.",
        KITTEN,
    ]);
    let batch = minilm().embed(&texts, None).unwrap();
    for (text, batched) in texts.iter().zip(&batch) {
        let single = &minilm().embed(std::slice::from_ref(text), None).unwrap()[0];
        let diff = single
            .values
            .iter()
            .zip(&batched.values)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "{text:?}: batch differs from single by {diff}");
    }
}

#[test]
fn long_inputs_are_truncated_and_flagged() {
    let long = vec!["word"; 2000].join(" ");
    let e = minilm().embed(&[long, CAT.to_string()], None).unwrap();
    assert!(e[0].truncated);
    assert!(!e[1].truncated);
    assert!(e[0].values.iter().all(|v| v.is_finite()));
}

#[test]
fn splade_expands_a_query() {
    let e = splade()
        .embed(&strings(&["what is the capital of france"]))
        .unwrap();
    let tokens: Vec<&str> = e[0].tokens.iter().map(|(t, _)| t.as_str()).collect();
    for expected in ["capital", "france", "paris", "city"] {
        assert!(
            tokens.contains(&expected),
            "{expected} missing from {tokens:?}"
        );
    }
    assert!(
        e[0].tokens.windows(2).all(|w| w[0].1 >= w[1].1),
        "not sorted by weight"
    );
}

#[test]
fn splade_scores_the_relevant_passage_higher() {
    let e = splade()
        .embed(&strings(&[
            "what is the capital of france",
            "The Eiffel Tower stands in Paris, on the banks of the Seine.",
            "Photosynthesis turns light into chemical energy in plants.",
        ]))
        .unwrap();
    let relevant = dot(&e[0], &e[1]);
    let unrelated = dot(&e[0], &e[2]);
    assert!(
        relevant > 3.0 && relevant > 5.0 * unrelated.max(0.1),
        "{relevant} vs {unrelated}"
    );
}

#[test]
fn splade_flags_truncation() {
    let long = vec!["word"; 2000].join(" ");
    let e = splade().embed(&[long, "short".to_string()]).unwrap();
    assert!(e[0].truncated);
    assert!(!e[1].truncated);
}

#[test]
fn kernel_report_names_native_kernels() {
    let report = ml_core::kernels::report();
    assert!(!report.matmul_kernels.is_empty());
    assert!(!report.tiers.is_empty(), "{report:?}");
}
