//! Prometheus metrics, served on a listener of their own
//! (`--metrics-listen`), never on the API port: to an Elasticsearch client
//! `/metrics` is an index name.
//!
//! The code records through the `metrics` facade (a no-op until a recorder
//! is installed, so a server started without `--metrics-listen` pays
//! nothing), and `metrics-exporter-prometheus` renders the text format.
//! Every per-endpoint series carries `inference_id`; requests also carry
//! `task` and `status`. Only endpoints that exist get a label, so a client
//! asking for random ids cannot grow the series without bound.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `inference_requests_total` | counter | requests by `inference_id`, `task`, `status` |
//! | `inference_request_duration_seconds` | histogram | to the answer (to the first byte of a stream) |
//! | `inference_rejected_total` | counter | requests answered 408, 413 or 429 |
//! | `inference_queue_depth` | gauge | requests waiting for an instance |
//! | `inference_queue_wait_seconds` | histogram | time waited for an instance |
//! | `inference_instances` | gauge | instances by `state`: `loaded`, `loading`, `busy` |
//! | `inference_model_load_seconds` | histogram | time to start an instance with its model |
//! | `inference_inputs_total` | counter | inputs (texts, documents, prompts) processed |
//! | `inference_tokens_total` | counter | prompt and generated tokens (`kind`) of generations |
//! | `inference_time_to_first_token_seconds` | histogram | generation: request start to first chunk |
//! | `inference_instance_memory_bytes` | gauge | linear memory of the endpoint's instances |
//! | `process_resident_memory_bytes` | gauge | the server's resident memory |
//! | `process_open_fds` | gauge | the server's open file descriptors |

use anyhow::{Context, Result};
use axum::http::header;
use metrics::{describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::time::Duration;

/// Latency buckets, in seconds: from a short embedding to a long generation.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often process memory and descriptors are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Installs the recorder and serves `GET /metrics` on `addr` (port 0 picks
/// a free port); returns the address it listens on.
pub async fn serve(addr: SocketAddr) -> Result<SocketAddr> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)?
        .install_recorder()
        .context("installing the metrics recorder")?;
    describe();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for metrics on {addr}"))?;
    let local = listener.local_addr()?;
    let scrape = {
        let handle = handle.clone();
        move || async move {
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                handle.render(),
            )
        }
    };
    let router = axum::Router::new().route("/metrics", axum::routing::get(scrape));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    tokio::spawn(sample(handle));
    Ok(local)
}

/// Samples the process every few seconds, and keeps the exporter's
/// histograms drained.
async fn sample(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        sample_process();
        handle.run_upkeep();
    }
}

fn describe() {
    describe_counter!(
        "inference_requests_total",
        "Requests by endpoint, task and status."
    );
    describe_histogram!(
        "inference_request_duration_seconds",
        Unit::Seconds,
        "Time to the answer (for a stream, to its first byte)."
    );
    describe_counter!(
        "inference_rejected_total",
        "Requests answered 408, 413 or 429."
    );
    describe_gauge!("inference_queue_depth", "Requests waiting for an instance.");
    describe_histogram!(
        "inference_queue_wait_seconds",
        Unit::Seconds,
        "Time a request waited for an instance."
    );
    describe_gauge!(
        "inference_instances",
        "Instances by state: loaded, loading, busy."
    );
    describe_histogram!(
        "inference_model_load_seconds",
        Unit::Seconds,
        "Time to start an instance with its model loaded."
    );
    describe_counter!("inference_inputs_total", "Inputs processed.");
    describe_counter!(
        "inference_tokens_total",
        "Prompt and generated tokens of generations."
    );
    describe_histogram!(
        "inference_time_to_first_token_seconds",
        Unit::Seconds,
        "Generation: from the request to its first chunk."
    );
    describe_gauge!(
        "inference_instance_memory_bytes",
        Unit::Bytes,
        "Linear memory of the endpoint's instances."
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        Unit::Bytes,
        "Resident memory of the server."
    );
    describe_gauge!("process_open_fds", "Open file descriptors of the server.");
}

/// Resident memory and open descriptors, from `/proc` (Linux).
fn sample_process() {
    if let Some(rss) = resident_memory_bytes() {
        gauge!("process_resident_memory_bytes").set(rss as f64);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge!("process_open_fds").set(fds.count() as f64);
    }
}

/// The process's resident set, in bytes.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
