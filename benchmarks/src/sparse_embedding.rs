//! sparse_embedding with SPLADE-tiny: the server through HTTP against the
//! native ML core in-process, one input and a batch per request.

use crate::server;
use crate::workload::{self, timed_workloads, Options};
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
    let batches = [1, options.batch];

    let server = server::start(
        "sparse_embedding",
        "bench-splade",
        MODEL,
        options.concurrency,
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
    let native = SparseEmbedder::load(&model_dir)?;
    let reference = native.embed(&corpus[..4])?;
    let answered = embed(&mut server.client.clone(), &corpus[..4])?;
    let mut worst = 0f64;
    for (item, expected) in answered.iter().zip(&reference) {
        for (token, weight) in &expected.tokens {
            let got = item["embedding"][token].as_f64().unwrap_or(0.0);
            worst = worst.max((got - f64::from(*weight)).abs());
        }
    }
    ensure!(
        worst < 1e-3,
        "the server disagrees with the native core by {worst}"
    );
    eprintln!("server agrees with the native core: largest weight difference {worst:.2e}");

    let mut clients = vec![server.client.clone(); options.concurrency];
    let http = timed_workloads(
        "server (HTTP)",
        options,
        &batches,
        &mut clients,
        &corpus,
        |c, t| embed(c, t).map(drop),
    )?;
    drop(server);
    let mut embedders = (0..options.concurrency)
        .map(|_| SparseEmbedder::load(&model_dir))
        .collect::<Result<Vec<_>>>()?;
    let native = timed_workloads(
        "native core",
        options,
        &batches,
        &mut embedders,
        &corpus,
        |e, t| {
            ensure!(e.embed(t)?.len() == t.len(), "wrong number of embeddings");
            Ok(())
        },
    )?;
    workload::print_table(&workload::labels(options), &[http, native]);
    Ok(())
}
