//! text_embedding with all-minilm-l6-v2, on the same workloads:
//!
//! - the server, through HTTP, once per compute mode: the graph on ONNX
//!   Runtime or tract in the host (through `wasi:nn`), or tract inside the
//!   sandbox;
//! - the native ML core in-process (`ml_core::TextEmbedder`, tract natively);
//! - ONNX Runtime on the same `model.onnx` (`ort_bench.py`).
//!
//! It ends with the server's time from process start to first answer on a
//! warm compile cache.

use crate::server;
use crate::workload::{self, corpus_path, timed_workloads, Backend, Options, Run};
use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use e2e_tests::{json, Client, Kind, Server, Value};
use ml_core::{cosine, TextEmbedder};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MODEL: &str = "all-minilm-l6-v2";
const PRECONFIGURED: &str = ".multilingual-e5-small-elasticsearch";

#[derive(Parser)]
pub struct EmbeddingArgs {
    #[command(flatten)]
    pub options: Options,
    /// Server starts timed for the time to first answer.
    #[arg(long, default_value_t = 3)]
    pub starts: usize,
    /// Skip ONNX Runtime (needs the model tooling's venv).
    #[arg(long)]
    pub skip_ort: bool,
}

pub fn run(args: &EmbeddingArgs) -> Result<()> {
    let options = &args.options;
    options.check()?;
    let corpus = workload::corpus()?;
    let model_dir = e2e_tests::model_cache().join(MODEL);
    workload::print_header(&format!("text_embedding on {MODEL}"), corpus.len(), options);
    let kernels = ml_core::kernels::report();
    println!(
        "native tract: isa {}, matmul tiers {}",
        kernels.isa,
        kernels.tiers.join(" > ")
    );

    // A reference for checking that every backend computes the same vectors.
    let reference_texts = &corpus[..4];
    let reference = reference(&model_dir, reference_texts)?;

    let mut measured = Vec::new();
    for compute in &options.computes {
        measured.push(bench_server(
            Kind::Native,
            MODEL,
            Some(compute),
            options,
            &corpus,
            reference_texts,
            &reference,
        )?);
    }
    let mut baselines = vec![bench_native(options, &corpus, &model_dir)?];
    if !args.skip_ort {
        baselines.push(bench_ort(options, &model_dir, &reference)?);
    }
    let starts = time_starts(args.starts)?;

    workload::print_table(&workload::labels(options), &measured, &baselines);
    print_starts(&starts);
    Ok(())
}

/// The Spin app (router and pre-initialised task components composed, a
/// fresh instance per request, in the wasmtime test host) against the native
/// host and the native core, on the same workloads.
pub fn run_spin(options: &Options) -> Result<()> {
    options.check()?;
    let corpus = workload::corpus()?;
    // The model the Spin app's text-embedding snapshot holds: another would
    // load on every request.
    let model = es_wire::preconfigured_model(es_wire::TaskType::TextEmbedding)
        .expect("a preconfigured text_embedding endpoint");
    let model_dir = e2e_tests::model_cache().join(model);
    workload::print_header(
        &format!("text_embedding on {model} through the Spin app"),
        corpus.len(),
        options,
    );
    let reference_texts = &corpus[..4];
    let reference = reference(&model_dir, reference_texts)?;
    let spin = bench_server(
        Kind::Spin,
        model,
        None,
        options,
        &corpus,
        reference_texts,
        &reference,
    )?;
    let baselines = vec![
        bench_server(
            Kind::Native,
            model,
            Some("sandbox"),
            options,
            &corpus,
            reference_texts,
            &reference,
        )?,
        bench_native(options, &corpus, &model_dir)?,
    ];
    workload::print_table(&workload::labels(options), &[spin], &baselines);
    Ok(())
}

/// The native core's vectors for `texts`, which every backend must match.
fn reference(model_dir: &Path, texts: &[String]) -> Result<Vec<Vec<f32>>> {
    Ok(TextEmbedder::load(model_dir)?
        .embed(texts, None)?
        .into_iter()
        .map(|e| e.values)
        .collect())
}

fn bench_server(
    kind: Kind,
    model: &str,
    compute: Option<&str>,
    args: &Options,
    corpus: &[String],
    reference_texts: &[String],
    reference: &[Vec<f32>],
) -> Result<Backend> {
    let server = server::start_kind(
        kind,
        "text_embedding",
        "bench-embed",
        model,
        args.concurrency,
        compute,
    )?;
    let url = format!("{}/_inference/text_embedding/bench-embed", server.url);
    let embed = |client: &mut Client, texts: &[String]| -> Result<Vec<Vec<f32>>> {
        let body = server::post(client, &url, &json!({ "input": texts }))?;
        let items = body["text_embedding"]
            .as_array()
            .with_context(|| format!("not a text_embedding response: {body}"))?;
        let vectors = items
            .iter()
            .map(|i| Ok(serde_json::from_value(i["embedding"].clone())?))
            .collect::<Result<Vec<Vec<f32>>>>()?;
        ensure!(
            vectors.len() == texts.len(),
            "{} vectors for {} inputs",
            vectors.len(),
            texts.len()
        );
        Ok(vectors)
    };
    let mut client = server.client.clone();
    let name = match (kind, compute) {
        (Kind::Native, Some(compute)) => format!("server, {compute}"),
        (Kind::Native, None) => "server".to_string(),
        (Kind::Spin, _) => "Spin app".to_string(),
        (Kind::SpinCli, _) => "spin up".to_string(),
    };
    check_agreement(&name, &embed(&mut client, reference_texts)?, reference)?;
    let clients = |n| vec![server.client.clone(); n];
    workload::with_wide(args, clients, |args, batches, clients| {
        timed_workloads(&name, args, batches, clients, corpus, |c, texts| {
            embed(c, texts).map(drop)
        })
    })
}

fn bench_native(args: &Options, corpus: &[String], model_dir: &Path) -> Result<Backend> {
    let embedder = std::sync::Arc::new(TextEmbedder::load(model_dir)?);
    // One model shared by every thread: tract's plan runs concurrently.
    let embedders = |n| vec![embedder.clone(); n];
    workload::with_wide(args, embedders, |args, batches, embedders| {
        timed_workloads(
            "native core",
            args,
            batches,
            embedders,
            corpus,
            |e, texts| {
                let vectors = e.embed(texts, None)?;
                ensure!(vectors.len() == texts.len(), "wrong number of vectors");
                Ok(())
            },
        )
    })
}

fn bench_ort(args: &Options, model_dir: &Path, reference: &[Vec<f32>]) -> Result<Backend> {
    let mut backend = run_ort(args, args.concurrency, true, model_dir, reference)?;
    if args.wide > 0 {
        let wide = run_ort(args, args.wide, false, model_dir, reference)?;
        backend.runs.extend(wide.runs);
    }
    Ok(backend)
}

/// `ort_bench.py` with `workers` sessions: one input a request, then (with
/// `batches`) `args.batch`.
fn run_ort(
    args: &Options,
    workers: usize,
    batches: bool,
    model_dir: &Path,
    reference: &[Vec<f32>],
) -> Result<Backend> {
    let python = e2e_tests::model_cache().join("venv/bin/python");
    ensure!(
        python.exists(),
        "{} does not exist: run `python3 models/fetch.py` (or pass --skip-ort)",
        python.display()
    );
    let output = Command::new(&python)
        .arg(workload::source_file("ort_bench.py"))
        .arg("--model-dir")
        .arg(model_dir)
        .arg("--corpus")
        .arg(corpus_path())
        .args(["--seconds", &args.seconds.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--concurrency", &workers.to_string()])
        .args(["--batch", &args.batch.to_string()])
        .args(["--min-requests", &args.min_requests.to_string()])
        .args(["--check", &reference.len().to_string()])
        .args(if batches {
            &[][..]
        } else {
            &["--single-only"][..]
        })
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {}", python.display()))?;
    if !output.status.success() {
        bail!("ort_bench.py exited with {}", output.status);
    }
    let result: Value = serde_json::from_slice(&output.stdout).context("ort_bench.py output")?;
    let vectors: Vec<Vec<f32>> = serde_json::from_value(result["check"].clone())?;
    check_agreement("ONNX Runtime", &vectors, reference)?;
    eprintln!("ONNX Runtime environment: {}", result["env"]);
    let run = |name: &str| -> Result<Run> {
        let w = &result[name];
        let latencies: Vec<f64> = serde_json::from_value(w["latencies_ms"].clone())?;
        Ok(Run {
            latencies: latencies
                .into_iter()
                .map(|ms| Duration::from_secs_f64(ms / 1000.0))
                .collect(),
            docs: w["docs"].as_u64().context("docs")? as usize,
            wall: Duration::from_secs_f64(w["wall_s"].as_f64().context("wall_s")?),
        })
    };
    let mut runs = vec![run("single")?];
    if batches {
        runs.push(run("batch")?);
    }
    Ok(Backend {
        name: "ONNX Runtime".into(),
        runs,
    })
}

/// The same texts must give the same vectors (up to float noise), or the
/// comparison would be between different computations.
fn check_agreement(name: &str, vectors: &[Vec<f32>], reference: &[Vec<f32>]) -> Result<()> {
    ensure!(
        vectors.len() == reference.len(),
        "{name}: wrong number of vectors"
    );
    let worst = vectors
        .iter()
        .zip(reference)
        .map(|(a, b)| cosine(a, b))
        .fold(f32::INFINITY, f32::min);
    ensure!(
        worst > 0.999,
        "{name} disagrees with the native core: cosine {worst}"
    );
    eprintln!("{name} agrees with the native core: lowest cosine {worst:.6}");
    Ok(())
}

/// Spawns a server on a fresh data dir whose compile cache is warm, and times
/// it from spawn to `listening on` and to the first embedding answered.
fn time_starts(starts: usize) -> Result<Vec<(Duration, Duration)>> {
    // An untimed start first: the components may have been rebuilt since the
    // benchmark's server started, and then the first start compiles them.
    drop(Server::start(&[])?);
    (0..starts)
        .map(|_| {
            let started = Instant::now();
            let server = Server::start(&[])?;
            let listening = started.elapsed();
            let url = format!("{}/_inference/text_embedding/{PRECONFIGURED}", server.url);
            let client = e2e_tests::client();
            // Retry until answered: a request may find the instance still loading.
            loop {
                let ok = client
                    .post(&url)
                    .json(&json!({ "input": "Is this seat taken?" }))
                    .send()
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    return Ok((listening, started.elapsed()));
                }
                if started.elapsed() > Duration::from_secs(120) {
                    bail!("no embedding from a new server within 120 s");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .collect()
}

fn print_starts(starts: &[(Duration, Duration)]) {
    let mut first: Vec<f64> = starts.iter().map(|s| s.1.as_secs_f64()).collect();
    first.sort_by(f64::total_cmp);
    println!();
    println!("server start to first answer (warm compile cache, fresh data dir), seconds:");
    for (i, (listening, answered)) in starts.iter().enumerate() {
        println!(
            "  start {}: listening after {:.2}, first embedding from {PRECONFIGURED} after {:.2}",
            i + 1,
            listening.as_secs_f64(),
            answered.as_secs_f64()
        );
    }
    if let Some(median) = first.get(first.len() / 2) {
        println!("  median to first embedding: {median:.2}");
    }
}
