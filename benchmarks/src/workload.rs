//! What every throughput benchmark shares: the options, timed workloads run by
//! concurrent workers over the corpus, and the results table with ratios
//! against the baselines measured in the same run.

use anyhow::{ensure, Result};
use clap::Args;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A file of this crate, in the repository cargo (or `cargo xtask bench`)
/// names at run time.
pub fn source_file(name: &str) -> PathBuf {
    e2e_tests::repo_dir().join("benchmarks").join(name)
}

#[derive(Args, Clone)]
pub struct Options {
    /// Seconds each workload is timed for.
    #[arg(long, default_value_t = 12.0)]
    pub seconds: f64,
    /// Untimed seconds before each workload (loads instances, warms caches).
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// HTTP clients and native threads (each with its own model) running at
    /// once; the server endpoint gets this many allocations.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Requests each workload runs at least, however long they take.
    #[arg(long, default_value_t = 24)]
    pub min_requests: usize,
    /// Inputs per request in the batch workloads (documents per rerank query).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Clients of the one-input workload under heavy concurrency (more
    /// clients than allocations: requests queue); 0 skips it.
    #[arg(long, default_value_t = 16)]
    pub wide: usize,
    /// The server's compute modes to measure, where it has a choice.
    #[arg(long, value_delimiter = ',', default_values_t = crate::server::COMPUTES.map(String::from))]
    pub computes: Vec<String>,
}

impl Options {
    pub fn check(&self) -> Result<()> {
        ensure!(
            self.concurrency > 0 && self.batch > 0,
            "concurrency and batch must be positive"
        );
        Ok(())
    }
}

pub use e2e_tests::{corpus, corpus_path};

/// One timed workload on one backend.
pub struct Run {
    pub latencies: Vec<Duration>,
    pub docs: usize,
    pub wall: Duration,
}

impl Run {
    pub fn docs_per_s(&self) -> f64 {
        self.docs as f64 / self.wall.as_secs_f64()
    }

    /// Nearest-rank percentile, in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies, p)
    }
}

pub fn percentile_ms(latencies: &[Duration], p: f64) -> f64 {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// One backend's runs, one per workload, in the order of the labels.
pub struct Backend {
    pub name: String,
    pub runs: Vec<Run>,
}

/// Runs `workers` at once for `time` and at least `min_requests` requests
/// (so that slow workloads still have a few samples); each calls `work`
/// with its own state and the inputs of the next request. Workers take
/// request numbers from one shared counter, so together they walk the corpus
/// in order.
pub fn run_workload<W: Send>(
    workers: &mut [W],
    corpus: &[String],
    batch: usize,
    (time, min_requests): (Duration, usize),
    work: impl Fn(&mut W, &[String]) -> Result<()> + Sync,
) -> Result<Run> {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let per_worker = std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .iter_mut()
            .map(|state| {
                let (next, work) = (&next, &work);
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
                        work(state, &texts)?;
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

/// Warm-up, then one timed workload per batch size.
pub fn timed_workloads<W: Send>(
    name: &str,
    options: &Options,
    batches: &[usize],
    workers: &mut [W],
    corpus: &[String],
    work: impl Fn(&mut W, &[String]) -> Result<()> + Sync,
) -> Result<Backend> {
    let warmup = Duration::from_secs_f64(options.warmup);
    let time = Duration::from_secs_f64(options.seconds);
    let mut runs = Vec::new();
    for &batch in batches {
        run_workload(workers, corpus, batch, (warmup, workers.len()), &work)?;
        let run = run_workload(workers, corpus, batch, (time, options.min_requests), &work)?;
        eprintln!(
            "{name}, batch {batch}, {} workers: {:.1} docs/s",
            workers.len(),
            run.docs_per_s()
        );
        runs.push(run);
    }
    Ok(Backend {
        name: name.to_string(),
        runs,
    })
}

/// The workloads every throughput benchmark runs: one input and
/// `options.batch` inputs with `options.concurrency` workers, then one input
/// with `options.wide` workers. `workers(n)` makes n workers' state.
pub fn with_wide<W: Send>(
    options: &Options,
    workers: impl Fn(usize) -> Vec<W>,
    run: impl Fn(&Options, &[usize], &mut [W]) -> Result<Backend>,
) -> Result<Backend> {
    let mut backend = run(
        options,
        &[1, options.batch],
        &mut workers(options.concurrency),
    )?;
    if options.wide > 0 {
        let wide = run(options, &[1], &mut workers(options.wide))?;
        backend.runs.extend(wide.runs);
    }
    Ok(backend)
}

/// The labels of the workloads of `timed_workloads(.., &[1, batch], ..)`,
/// and of the wide one when there is one.
pub fn labels(options: &Options) -> Vec<String> {
    let mut labels = vec![
        format!("1 input, concurrency {}", options.concurrency),
        format!(
            "{} inputs, concurrency {}",
            options.batch, options.concurrency
        ),
    ];
    if options.wide > 0 {
        labels.push(format!("1 input, concurrency {}", options.wide));
    }
    labels
}

/// The table of every backend on every workload, then each measured backend
/// as ratios of each baseline measured in the same run.
pub fn print_table(labels: &[String], measured: &[Backend], baselines: &[Backend]) {
    let backends: Vec<&Backend> = measured.iter().chain(baselines).collect();
    println!();
    println!(
        "{:<38} {:<22} {:>9} {:>9} {:>9} {:>9}",
        "workload", "backend", "docs/s", "p50 ms", "p99 ms", "requests"
    );
    for (w, label) in labels.iter().enumerate() {
        for (i, b) in backends.iter().enumerate() {
            let Some(run) = b.runs.get(w) else { continue };
            println!(
                "{:<38} {:<22} {:>9.1} {:>9.1} {:>9.1} {:>9}",
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
    println!("ratios (docs/s: higher is better for the first; p50 and p99: lower is better)");
    for first in measured {
        for other in baselines {
            for (w, label) in labels.iter().enumerate() {
                let (Some(s), Some(o)) = (first.runs.get(w), other.runs.get(w)) else {
                    continue;
                };
                println!(
                    "  {:>22} / {:<15} {:<38} docs/s {:>5.2}   p50 {:>5.2}   p99 {:>5.2}",
                    first.name,
                    other.name,
                    label,
                    s.docs_per_s() / o.docs_per_s(),
                    s.percentile_ms(50.0) / o.percentile_ms(50.0),
                    s.percentile_ms(99.0) / o.percentile_ms(99.0)
                );
            }
        }
    }
}

/// The first lines of a report: what is measured, how, and on what machine.
pub fn print_header(what: &str, corpus: usize, options: &Options) {
    println!(
        "{what}: corpus {corpus} sentences; concurrency {}; each workload {:.0} s and at least {} requests, after {:.0} s warm-up",
        options.concurrency, options.seconds, options.min_requests, options.warmup
    );
    print_machine();
}

/// Prints the machine's state, since the figures depend on it.
pub fn print_machine() {
    println!(
        "machine: {} cores, load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let ms = |v: u64| Duration::from_millis(v);
        let latencies: Vec<Duration> = (1..=100).rev().map(ms).collect();
        assert_eq!(percentile_ms(&latencies, 50.0), 50.0);
        assert_eq!(percentile_ms(&latencies, 99.0), 99.0);
        assert_eq!(percentile_ms(&latencies[..1], 99.0), 100.0);
    }

    #[test]
    fn workers_walk_the_corpus_in_order() {
        let corpus: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let seen = std::sync::Mutex::new(Vec::new());
        let mut workers = [(), ()];
        let run = run_workload(&mut workers, &corpus, 3, (Duration::ZERO, 4), |_, texts| {
            seen.lock().unwrap().push(texts.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(run.docs, run.latencies.len() * 3);
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert!(seen.contains(&vec!["0".into(), "1".into(), "2".into()]));
        assert!(seen.contains(&vec!["9".into(), "0".into(), "1".into()]));
    }
}
