//! `cargo xtask bench`: embeds a fixed corpus with all-minilm-l6-v2 three
//! ways and compares them on the same workloads:
//!
//! - the server, through HTTP (WebAssembly components, tract inside);
//! - the native ML core in-process (`ml_core::TextEmbedder`, tract natively);
//! - ONNX Runtime on the same `model.onnx` (`ort_bench.py`).
//!
//! Each workload runs `--concurrency` workers for `--seconds` (and at least
//! `--min-requests` requests) after a warm-up; workers take request numbers
//! from one shared counter, so together they walk the corpus in order. It
//! ends with the server's time from process start to first answer on a warm
//! compile cache.

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use e2e_tests::{json, Client, Server, Value};
use ml_core::{cosine, TextEmbedder};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const MODEL: &str = "all-minilm-l6-v2";
const PRECONFIGURED: &str = ".multilingual-e5-small-elasticsearch";
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus.txt");
const ORT_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ort_bench.py");

#[derive(Parser)]
#[command(about = "HTTP server vs native ML core vs ONNX Runtime on all-minilm-l6-v2")]
struct Args {
    /// Seconds each workload is timed for.
    #[arg(long, default_value_t = 12.0)]
    seconds: f64,
    /// Untimed seconds before each workload (loads instances, warms caches).
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// HTTP clients, native threads (each with its own model) and ORT
    /// sessions (one intra-op thread each) running at once; the server
    /// endpoint gets this many allocations.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Requests each workload runs at least, however long they take.
    #[arg(long, default_value_t = 24)]
    min_requests: usize,
    /// Inputs per request in the batch workload.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Server starts timed for the time to first answer.
    #[arg(long, default_value_t = 3)]
    starts: usize,
    /// Skip ONNX Runtime (needs the model tooling's venv).
    #[arg(long)]
    skip_ort: bool,
}

/// One timed workload on one backend.
struct Run {
    latencies: Vec<Duration>,
    docs: usize,
    wall: Duration,
}

impl Run {
    fn docs_per_s(&self) -> f64 {
        self.docs as f64 / self.wall.as_secs_f64()
    }

    /// Nearest-rank percentile, in milliseconds.
    fn percentile_ms(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
    }
}

/// One backend's results: the single-input workload, then the batch one.
struct Backend {
    name: &'static str,
    runs: [Run; 2],
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.concurrency > 0 && args.batch > 0,
        "concurrency and batch must be positive"
    );
    let corpus: Vec<String> = std::fs::read_to_string(CORPUS)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let model_dir = e2e_tests::model_cache().join(MODEL);
    println!(
        "corpus: {} sentences; model: {MODEL}; concurrency {}; each workload {:.0} s and at least {} requests, after {:.0} s warm-up",
        corpus.len(),
        args.concurrency,
        args.seconds,
        args.min_requests,
        args.warmup
    );
    println!(
        "machine: {} cores, load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    let kernels = ml_core::kernels::report();
    println!(
        "native tract: isa {}, matmul tiers {}",
        kernels.isa,
        kernels.tiers.join(" > ")
    );

    // A reference for checking that every backend computes the same vectors.
    let reference_texts = &corpus[..4];
    let reference = TextEmbedder::load(&model_dir)?
        .embed(reference_texts, None)?
        .into_iter()
        .map(|e| e.values)
        .collect::<Vec<_>>();

    let mut backends = vec![bench_server(&args, &corpus, reference_texts, &reference)?];
    backends.push(bench_native(&args, &corpus, &model_dir)?);
    if !args.skip_ort {
        backends.push(bench_ort(&args, &model_dir, &reference)?);
    }
    let starts = time_starts(args.starts)?;

    print_table(&args, &backends);
    print_starts(&starts);
    Ok(())
}

/// Runs `workers` at once for `time` and at least `min_requests` requests
/// (so that slow workloads still have a few samples); each calls `embed`
/// with its own state and the inputs of the next request.
fn run_workload<W: Send>(
    workers: &mut [W],
    corpus: &[String],
    batch: usize,
    (time, min_requests): (Duration, usize),
    embed: impl Fn(&mut W, &[String]) -> Result<()> + Sync,
) -> Result<Run> {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let per_worker = std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .iter_mut()
            .map(|state| {
                let (next, embed) = (&next, &embed);
                s.spawn(move || -> Result<Vec<Duration>> {
                    let mut latencies = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if started.elapsed() >= time && k >= min_requests {
                            break;
                        }
                        let texts: Vec<String> = (0..batch)
                            .map(|j| corpus[(k * batch + j) % corpus.len()].clone())
                            .collect();
                        let t = Instant::now();
                        embed(state, &texts)?;
                        latencies.push(t.elapsed());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect::<Result<Vec<_>>>()
    })?;
    let wall = started.elapsed();
    let latencies: Vec<Duration> = per_worker.into_iter().flatten().collect();
    Ok(Run {
        docs: latencies.len() * batch,
        latencies,
        wall,
    })
}

/// Warm-up, then the timed single-input and batch workloads.
fn both_workloads<W: Send>(
    name: &'static str,
    args: &Args,
    workers: &mut [W],
    corpus: &[String],
    embed: impl Fn(&mut W, &[String]) -> Result<()> + Sync,
) -> Result<Backend> {
    let warmup = Duration::from_secs_f64(args.warmup);
    let time = Duration::from_secs_f64(args.seconds);
    let mut timed = |batch| -> Result<Run> {
        let warmup = (warmup, workers.len());
        run_workload(workers, corpus, batch, warmup, &embed)?;
        let run = run_workload(workers, corpus, batch, (time, args.min_requests), &embed)?;
        eprintln!("{name}, batch {batch}: {:.1} docs/s", run.docs_per_s());
        Ok(run)
    };
    let runs = [timed(1)?, timed(args.batch)?];
    Ok(Backend { name, runs })
}

fn bench_server(
    args: &Args,
    corpus: &[String],
    reference_texts: &[String],
    reference: &[Vec<f32>],
) -> Result<Backend> {
    eprintln!("starting the server (the first start compiles the components, about a minute)");
    let server = Server::start(&[])?;
    let created = server.put(
        "/_inference/text_embedding/bench-minilm",
        &json!({
            "service": "elasticsearch",
            "service_settings": {
                "model_id": MODEL,
                "num_allocations": args.concurrency,
                "num_threads": 1
            }
        }),
    );
    ensure!(
        created.status().is_success(),
        "creating the endpoint: {}",
        created.text()?
    );
    // The endpoint loads its instances in the background; a request that
    // finds none idle loads another, so let them finish first.
    std::thread::sleep(Duration::from_secs(3));
    let url = format!("{}/_inference/text_embedding/bench-minilm", server.url);
    let embed = |client: &mut Client, texts: &[String]| -> Result<Vec<Vec<f32>>> {
        let response = client.post(&url).json(&json!({ "input": texts })).send()?;
        let status = response.status();
        let body: Value = response.json()?;
        ensure!(status.is_success(), "HTTP {status}: {body}");
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
    check_agreement("server", &embed(&mut client, reference_texts)?, reference)?;
    let mut clients = vec![server.client.clone(); args.concurrency];
    both_workloads("server (HTTP)", args, &mut clients, corpus, |c, texts| {
        embed(c, texts).map(drop)
    })
}

fn bench_native(args: &Args, corpus: &[String], model_dir: &Path) -> Result<Backend> {
    let mut embedders = (0..args.concurrency)
        .map(|_| TextEmbedder::load(model_dir))
        .collect::<Result<Vec<_>>>()?;
    both_workloads("native core", args, &mut embedders, corpus, |e, texts| {
        let vectors = e.embed(texts, None)?;
        ensure!(vectors.len() == texts.len(), "wrong number of vectors");
        Ok(())
    })
}

fn bench_ort(args: &Args, model_dir: &Path, reference: &[Vec<f32>]) -> Result<Backend> {
    let python = e2e_tests::model_cache().join("venv/bin/python");
    ensure!(
        python.exists(),
        "{} does not exist: run `python3 models/fetch.py` (or pass --skip-ort)",
        python.display()
    );
    let output = Command::new(&python)
        .arg(ORT_SCRIPT)
        .arg("--model-dir")
        .arg(model_dir)
        .args(["--corpus", CORPUS])
        .args(["--seconds", &args.seconds.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--concurrency", &args.concurrency.to_string()])
        .args(["--batch", &args.batch.to_string()])
        .args(["--min-requests", &args.min_requests.to_string()])
        .args(["--check", &reference.len().to_string()])
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
    Ok(Backend {
        name: "ONNX Runtime",
        runs: [run("single")?, run("batch")?],
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

fn print_table(args: &Args, backends: &[Backend]) {
    println!();
    println!(
        "{:<25} {:<15} {:>9} {:>9} {:>9} {:>9}",
        "workload", "backend", "docs/s", "p50 ms", "p99 ms", "requests"
    );
    let workloads = [
        format!("1 input, concurrency {}", args.concurrency),
        format!("{} inputs, concurrency {}", args.batch, args.concurrency),
    ];
    for (w, label) in workloads.iter().enumerate() {
        for (i, b) in backends.iter().enumerate() {
            let run = &b.runs[w];
            println!(
                "{:<25} {:<15} {:>9.1} {:>9.1} {:>9.1} {:>9}",
                if i == 0 { label.as_str() } else { "" },
                b.name,
                run.docs_per_s(),
                run.percentile_ms(50.0),
                run.percentile_ms(99.0),
                run.latencies.len()
            );
        }
    }
    println!();
    println!("server relative to the others (docs/s ratio: higher is better for the server; p50 ratio: lower is better)");
    let server = &backends[0];
    for other in &backends[1..] {
        for (w, label) in workloads.iter().enumerate() {
            let (s, o) = (&server.runs[w], &other.runs[w]);
            println!(
                "  server/{:<13} {:<25} docs/s {:>5.2}   p50 {:>5.2}",
                other.name,
                label,
                s.docs_per_s() / o.docs_per_s(),
                s.percentile_ms(50.0) / o.percentile_ms(50.0)
            );
        }
    }
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
