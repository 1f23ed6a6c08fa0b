//! sparse_embedding with SPLADE-tiny: the server through HTTP, once per
//! compute mode, against the native ML core in-process.

use crate::server;
use crate::workload::{self, timed_workloads, Backend, Options};
use anyhow::{ensure, Context, Result};
use e2e_tests::{json, Client, Value};
use ml_core::SparseEmbedder;

const MODEL: &str = "splade-tiny";

pub fn run(options: &Options) -> Result<()> {
    options.check()?;
    let corpus = workload::corpus()?;
    let model_dir = e2e_tests::model_cache().join(MODEL);
    println!(
        "sparse_embedding: corpus {} sentences; model {MODEL}; concurrency {}; each workload {:.0} s and at least {} requests",
        corpus.len(),
        options.concurrency,
        options.seconds,
        options.min_requests
    );
    workload::print_machine();
    let native = SparseEmbedder::load(&model_dir)?;
    let reference = native.embed(&corpus[..4])?;
    let mut measured = Vec::new();
    for compute in &options.computes {
        measured.push(bench_server(options, &corpus, compute, &reference)?);
    }
    // One model shared by every thread: tract's plan runs concurrently.
    let native = std::sync::Arc::new(native);
    let native = workload::with_wide(
        options,
        |n| vec![native.clone(); n],
        |options, batches, embedders| {
            timed_workloads(
                "native core",
                options,
                batches,
                embedders,
                &corpus,
                |e, t| {
                    ensure!(e.embed(t)?.len() == t.len(), "wrong number of embeddings");
                    Ok(())
                },
            )
        },
    )?;
    workload::print_table(&workload::labels(options), &measured, &[native]);
    Ok(())
}

/// The server with its graph where `compute` says, checked against the
/// native core's `reference` weights for the corpus's first sentences.
fn bench_server(
    options: &Options,
    corpus: &[String],
    compute: &str,
    reference: &[ml_core::SparseEmbedding],
) -> Result<Backend> {
    let server = server::start(
        "sparse_embedding",
        "bench-splade",
        MODEL,
        options.concurrency,
        compute,
    )?;
    let url = format!("{}/_inference/sparse_embedding/bench-splade", server.url);
    let embed = |client: &mut Client, texts: &[String]| -> Result<Vec<Value>> {
        let body = server::post(client, &url, &json!({ "input": texts }))?;
        let items = body["sparse_embedding"]
            .as_array()
            .with_context(|| format!("not a sparse_embedding response: {body}"))?;
        ensure!(items.len() == texts.len(), "wrong number of embeddings");
        Ok(items.clone())
    };
    // Both sides must compute the same weights, or the comparison is moot.
    let answered = embed(&mut server.client.clone(), &corpus[..reference.len()])?;
    let mut worst = 0f64;
    for (item, expected) in answered.iter().zip(reference) {
        for (token, weight) in &expected.tokens {
            let got = item["embedding"][token].as_f64().unwrap_or(0.0);
            worst = worst.max((got - f64::from(*weight)).abs());
        }
    }
    ensure!(
        worst < 1e-2,
        "the server ({compute}) disagrees with the native core by {worst}"
    );
    eprintln!(
        "server ({compute}) agrees with the native core: largest weight difference {worst:.2e}"
    );
    let name = format!("server, {compute}");
    workload::with_wide(
        options,
        |n| vec![server.client.clone(); n],
        |options, batches, clients| {
            timed_workloads(&name, options, batches, clients, corpus, |c, t| {
                embed(c, t).map(drop)
            })
        },
    )
}
