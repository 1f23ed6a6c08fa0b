//! Reranking on the real converted models: the bi-encoder (all-minilm-l6-v2)
//! and the test cross-encoder (minilm-pair-classifier-test, MiniLM under a
//! seeded classifier: its scores carry no relevance, only the plumbing is
//! checked). Run `python3 models/fetch.py` first.

mod common;
use common::{model_dir, strings};

use ml_core::{
    cosine, InputType, LongDocumentStrategy, RerankOptions, Reranker, RerankerKind, TextEmbedder,
};
use std::path::PathBuf;
use std::sync::OnceLock;
use tokenizers::{Tokenizer, TruncationParams, TruncationStrategy};
use tract_onnx::prelude::*;

fn bi_encoder() -> &'static Reranker {
    static MODEL: OnceLock<Reranker> = OnceLock::new();
    MODEL.get_or_init(|| Reranker::load(&model_dir("all-minilm-l6-v2")).unwrap())
}

fn cross_encoder() -> &'static Reranker {
    static MODEL: OnceLock<Reranker> = OnceLock::new();
    MODEL.get_or_init(|| Reranker::load(&model_dir("minilm-pair-classifier-test")).unwrap())
}

const TRUNCATE: RerankOptions = RerankOptions {
    strategy: LongDocumentStrategy::Truncate,
    max_chunks_per_doc: None,
};

fn chunk(max_chunks_per_doc: Option<usize>) -> RerankOptions {
    RerankOptions {
        strategy: LongDocumentStrategy::Chunk,
        max_chunks_per_doc,
    }
}

/// `DOCUMENTS[i]` answers `QUERIES[i]`.
const QUERIES: [&str; 13] = [
    "When was the Eiffel Tower built?",
    "How do plants make food from sunlight?",
    "I can't log in because I forgot my password",
    "Is cardio good for heart health?",
    "Where is the biggest coral reef?",
    "What makes sourdough bread rise?",
    "How does Rust prevent dangling references?",
    "Why did the central bank increase interest rates?",
    "What is the biggest planet?",
    "Who wrote The Magic Flute?",
    "How do vaccines work?",
    "How long is a marathon?",
    "How do I grow tomatoes?",
];

const DOCUMENTS: [&str; 13] = [
    "The Eiffel Tower was completed in 1889 and stands on the Champ de Mars in Paris.",
    "Photosynthesis lets plants turn sunlight, water and carbon dioxide into glucose and oxygen.",
    "To reset a forgotten password, click 'Forgot password' on the sign-in page and follow the link we email you.",
    "Regular aerobic exercise strengthens the heart muscle and lowers blood pressure.",
    "The Great Barrier Reef off the coast of Queensland is the largest coral reef system in the world.",
    "Sourdough rises thanks to a starter of wild yeast and lactic acid bacteria that release carbon dioxide.",
    "Rust's borrow checker ensures at compile time that references never outlive the data they point to.",
    "The central bank raised its key rate by half a point to bring inflation back under control.",
    "Jupiter is the largest planet in the solar system, a gas giant with a storm called the Great Red Spot.",
    "Mozart composed more than six hundred works, among them the opera The Magic Flute and the Requiem.",
    "Vaccines train the immune system to recognise a pathogen without causing the disease itself.",
    "A marathon is a long-distance running race of 42.195 kilometres.",
    "Tomato plants need full sun, regular watering and well-drained, fertile soil.",
];

#[test]
fn picks_the_cross_encoder_from_model_json() {
    assert_eq!(bi_encoder().kind(), RerankerKind::BiEncoder);
    assert_eq!(cross_encoder().kind(), RerankerKind::CrossEncoder);
    assert_eq!(cross_encoder().config().task, "rerank");
}

#[test]
fn bi_encoder_ranks_the_relevant_document_first() {
    let documents = strings(&DOCUMENTS);
    for (i, query) in QUERIES.iter().enumerate() {
        let scores = bi_encoder().score(query, &documents, &TRUNCATE).unwrap();
        assert_eq!(scores.len(), documents.len());
        let best = (0..scores.len())
            .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
            .unwrap();
        let runner_up = scores
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, &s)| s)
            .fold(f32::MIN, f32::max);
        println!(
            "{query:?}: relevant {:.3}, best other {runner_up:.3}",
            scores[i]
        );
        assert_eq!(
            best, i,
            "{query:?} ranked {:?} first: {scores:?}",
            DOCUMENTS[best]
        );
    }
}

/// Filler about office procedures, then the passage that answers [`BEES`]:
/// the answer lies beyond the first window.
fn long_document() -> String {
    let filler = "The quarterly budget review moved to Thursday afternoon. \
        Please file travel expenses before the end of the month. \
        The printer on the third floor needs a new toner cartridge. \
        Meeting rooms can be booked through the facilities portal. ";
    format!(
        "{}Bees make honey by collecting nectar from flowers, breaking it down with enzymes \
         and storing it in wax honeycomb cells, where they fan it with their wings until \
         the water evaporates.",
        filler.repeat(12)
    )
}

const BEES: &str = "How do bees make honey from nectar?";

/// Windows of the document beside nothing but `[CLS]` and `[SEP]`: what the
/// bi-encoder chunks it into.
fn bi_encoder_windows(text: &str) -> usize {
    let mut tokenizer =
        Tokenizer::from_file(model_dir("all-minilm-l6-v2").join("tokenizer.json")).unwrap();
    tokenizer.with_truncation(None).unwrap();
    tokenizer.with_padding(None);
    let tokens = tokenizer.encode(text, false).unwrap().len();
    tokens.div_ceil(bi_encoder().config().max_sequence_length - 2)
}

#[test]
fn chunking_finds_the_answer_at_the_end_of_a_long_document() {
    let documents = vec![long_document(), DOCUMENTS[4].to_string()];
    let windows = bi_encoder_windows(&documents[0]);
    assert!(windows >= 3, "{windows} windows");
    let truncated = bi_encoder().score(BEES, &documents, &TRUNCATE).unwrap();
    let chunked = bi_encoder().score(BEES, &documents, &chunk(None)).unwrap();
    println!("{windows} windows; truncate {truncated:?}, chunk {chunked:?}");
    assert!(
        chunked[0] > truncated[0] + 0.2,
        "chunk {} vs truncate {}",
        chunked[0],
        truncated[0]
    );
    // The short document fits in one window either way (batched differently).
    assert!((chunked[1] - truncated[1]).abs() < 1e-5);

    // max_chunks_per_doc: one chunk is truncating; the answer needs them all.
    let first = bi_encoder()
        .score(BEES, &documents, &chunk(Some(1)))
        .unwrap();
    assert_eq!(first, truncated);
    let all_but_last = bi_encoder()
        .score(BEES, &documents, &chunk(Some(windows - 1)))
        .unwrap();
    assert!(all_but_last[0] < chunked[0] - 0.2, "{all_but_last:?}");
    for limit in [windows, windows + 3] {
        let scores = bi_encoder()
            .score(BEES, &documents, &chunk(Some(limit)))
            .unwrap();
        assert_eq!(scores, chunked, "max_chunks_per_doc {limit}");
    }
}

#[test]
fn cross_encoder_chunks_obey_max_chunks_per_doc() {
    let documents = vec![long_document(), DOCUMENTS[4].to_string()];
    let truncated = cross_encoder().score(BEES, &documents, &TRUNCATE).unwrap();
    let first = cross_encoder()
        .score(BEES, &documents, &chunk(Some(1)))
        .unwrap();
    assert_eq!(first, truncated);
    let all = cross_encoder()
        .score(BEES, &documents, &chunk(None))
        .unwrap();
    assert!(all[0] >= truncated[0]);
    assert!((all[1] - truncated[1]).abs() < 1e-5);
    assert!(cross_encoder()
        .score(BEES, &documents, &chunk(Some(0)))
        .is_err());
}

#[test]
fn bi_encoder_truncate_is_the_cosine_of_search_and_ingest_embeddings() {
    let embedder = TextEmbedder::load(&model_dir("all-minilm-l6-v2")).unwrap();
    let documents = vec![
        DOCUMENTS[0].to_string(),
        long_document(),
        String::new(),
        DOCUMENTS[8].to_string(),
    ];
    let query = embedder
        .embed(&[QUERIES[0].to_string()], Some(InputType::Search))
        .unwrap();
    let docs = embedder.embed(&documents, Some(InputType::Ingest)).unwrap();
    let scores = bi_encoder()
        .score(QUERIES[0], &documents, &TRUNCATE)
        .unwrap();
    for (doc, score) in docs.iter().zip(&scores) {
        let expected = cosine(&query[0].values, &doc.values);
        assert!((expected - score).abs() < 1e-5, "{score} vs {expected}");
    }
}

/// `sigmoid(logit)` of the pair, computed without the ML core: the tokenizer
/// encodes the pair (truncating only the document), and tract runs the ONNX
/// on exactly that one row.
struct HandScorer {
    tokenizer: Tokenizer,
    onnx: PathBuf,
}

impl HandScorer {
    fn new() -> Self {
        let dir = model_dir("minilm-pair-classifier-test");
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: 256,
                strategy: TruncationStrategy::OnlySecond,
                ..Default::default()
            }))
            .unwrap();
        Self {
            tokenizer,
            onnx: dir.join("model.onnx"),
        }
    }

    fn score(&self, first: &str, second: &str, zero_token_types: bool) -> f32 {
        let e = self.tokenizer.encode((first, second), true).unwrap();
        let ids = e.get_ids();
        let mask = e.get_attention_mask();
        let types: Vec<u32> = if zero_token_types {
            vec![0; ids.len()]
        } else {
            e.get_type_ids().to_vec()
        };
        let row = |v: &[u32]| {
            tract_ndarray::Array2::from_shape_vec(
                (1, v.len()),
                v.iter().map(|&x| x as i64).collect(),
            )
            .unwrap()
            .into_tvalue()
        };
        let mut model = tract_onnx::onnx().model_for_path(&self.onnx).unwrap();
        let names: Vec<String> = model
            .input_outlets()
            .unwrap()
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        assert_eq!(names, ["input_ids", "attention_mask", "token_type_ids"]);
        for ix in 0..3 {
            model
                .set_input_fact(
                    ix,
                    InferenceFact::dt_shape(i64::datum_type(), tvec!(1, ids.len())),
                )
                .unwrap();
        }
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let out = plan.run(tvec![row(ids), row(mask), row(&types)]).unwrap();
        let logits = out[0].to_plain_array_view::<f32>().unwrap();
        assert_eq!(logits.shape(), [1, 1]);
        let logit = logits[[0, 0]];
        1.0 / (1.0 + (-logit).exp())
    }
}

#[test]
fn cross_encoder_scores_equal_the_hand_computation() {
    let hand = HandScorer::new();
    let query = QUERIES[4];
    let documents = vec![
        DOCUMENTS[4].to_string(),
        DOCUMENTS[1].to_string(),
        long_document(),
        "Coral.".to_string(),
        DOCUMENTS[9].to_string(),
    ];
    let scores = cross_encoder().score(query, &documents, &TRUNCATE).unwrap();
    println!("cross-encoder scores {scores:?}");
    for (doc, &score) in documents.iter().zip(&scores) {
        let expected = hand.score(query, doc, false);
        assert!(
            (score - expected).abs() < 1e-5,
            "{doc:.40}: {score} vs by hand {expected}"
        );
        // The check sees the token types and (where the document fits as the
        // first sequence) the pair order.
        let untyped = hand.score(query, doc, true);
        assert!((score - untyped).abs() > 1e-5, "token types do not matter?");
        if doc.len() < 200 {
            let swapped = hand.score(doc, query, false);
            assert!(
                (score - swapped).abs() > 1e-5,
                "pair order does not matter?"
            );
        }
    }
}

#[test]
fn scores_follow_input_order() {
    let documents = strings(&DOCUMENTS);
    // A rotation and a reversal, applied to the documents.
    let perms: [Vec<usize>; 2] = [
        (0..documents.len())
            .map(|i| (i + 5) % documents.len())
            .collect(),
        (0..documents.len()).rev().collect(),
    ];
    for reranker in [bi_encoder(), cross_encoder()] {
        let scores = reranker.score(QUERIES[6], &documents, &TRUNCATE).unwrap();
        for perm in &perms {
            let permuted: Vec<String> = perm.iter().map(|&i| documents[i].clone()).collect();
            let permuted_scores = reranker.score(QUERIES[6], &permuted, &TRUNCATE).unwrap();
            for (&i, s) in perm.iter().zip(&permuted_scores) {
                assert!(
                    (scores[i] - s).abs() < 1e-5,
                    "{:?}: document {i}: {} vs {s}",
                    reranker.kind(),
                    scores[i]
                );
            }
        }
        assert!(reranker
            .score(QUERIES[6], &[], &TRUNCATE)
            .unwrap()
            .is_empty());
    }
}
