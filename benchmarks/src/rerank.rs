//! rerank: one query against a batch of documents per request, on both
//! scoring paths (bi-encoder all-minilm-l6-v2, cross-encoder pair
//! classifier), the server through HTTP (once per compute mode) against the
//! native ML core.

use crate::server;
use crate::workload::{self, timed_workloads, Backend, Options};
use anyhow::{ensure, Context, Result};
use e2e_tests::{json, Client};
use ml_core::{RerankOptions, Reranker};

const QUERY: &str = "Which sentence talks about the weather?";
/// (model, endpoint id, label)
const MODELS: [(&str, &str, &str); 2] = [
    ("all-minilm-l6-v2", "bench-bi", "bi-encoder"),
    (
        "minilm-pair-classifier-test",
        "bench-cross",
        "cross-encoder",
    ),
];

pub fn run(options: &Options) -> Result<()> {
    options.check()?;
    let corpus = workload::corpus()?;
    println!(
        "rerank: 1 query x {} documents a request; corpus {} sentences; concurrency {}; each workload {:.0} s and at least {} requests",
        options.batch,
        corpus.len(),
        options.concurrency,
        options.seconds,
        options.min_requests
    );
    workload::print_machine();
    let batches = [options.batch];
    let mut measured: Vec<Backend> = options
        .computes
        .iter()
        .map(|compute| Backend {
            name: format!("server, {compute}"),
            runs: Vec::new(),
        })
        .collect();
    let mut native = Backend {
        name: "native core".into(),
        runs: Vec::new(),
    };
    let mut labels = Vec::new();
    for (model, id, label) in MODELS {
        let model_dir = e2e_tests::model_cache().join(model);
        let reranker = Reranker::load(&model_dir)?;
        let docs = &corpus[..options.batch.min(corpus.len())];
        let expected = reranker.score(QUERY, docs, &RerankOptions::default())?;
        for (compute, backend) in options.computes.iter().zip(&mut measured) {
            let server = server::start("rerank", id, model, options.concurrency, compute)?;
            let url = format!("{}/_inference/rerank/{id}", server.url);
            let rerank = |client: &mut Client, docs: &[String]| -> Result<Vec<f64>> {
                let body = server::post(
                    client,
                    &url,
                    &json!({ "query": QUERY, "input": docs, "return_documents": false }),
                )?;
                let ranked = body["rerank"]
                    .as_array()
                    .with_context(|| format!("not a rerank response: {body}"))?;
                ensure!(ranked.len() == docs.len(), "wrong number of results");
                let mut scores = vec![f64::NAN; docs.len()];
                for r in ranked {
                    let index = r["index"].as_u64().context("index")? as usize;
                    scores[index] = r["relevance_score"].as_f64().context("relevance_score")?;
                }
                Ok(scores)
            };
            let answered = rerank(&mut server.client.clone(), docs)?;
            let worst = answered
                .iter()
                .zip(&expected)
                .map(|(a, e)| (a - f64::from(*e)).abs())
                .fold(0.0, f64::max);
            ensure!(
                worst < 1e-3,
                "{label}, {compute}: the server disagrees with the native core by {worst}"
            );
            eprintln!(
                "{label}, {compute}: server agrees with the native core: largest score difference {worst:.2e}"
            );
            let mut clients = vec![server.client.clone(); options.concurrency];
            let run = timed_workloads(
                &backend.name,
                options,
                &batches,
                &mut clients,
                &corpus,
                |c, d| rerank(c, d).map(drop),
            )?;
            backend.runs.extend(run.runs);
        }
        // One model shared by every thread: tract's plan runs concurrently.
        let reranker = std::sync::Arc::new(reranker);
        let mut rerankers = vec![reranker; options.concurrency];
        let run = timed_workloads(
            "native core",
            options,
            &batches,
            &mut rerankers,
            &corpus,
            |r, d| {
                ensure!(r.score(QUERY, d, &RerankOptions::default())?.len() == d.len());
                Ok(())
            },
        )?;
        native.runs.extend(run.runs);
        labels.push(format!(
            "{label}, {} docs, concurrency {}",
            options.batch, options.concurrency
        ));
    }
    workload::print_table(&labels, &measured, &[native]);
    Ok(())
}
