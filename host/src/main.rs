//! `inference-host`: serves Elasticsearch's inference API on sandboxed WASI
//! task components.

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use inference_host::api::{self, App};
use inference_host::catalog::Models;
use inference_host::runtime::{InstanceLimits, Runtime, TaskKind};
use inference_host::store::EndpointStore;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Elasticsearch's inference API (`/_inference`), served by WebAssembly
/// components running tract-onnx on local models.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "INFERENCE_LISTEN", default_value = "127.0.0.1:9200")]
    listen: SocketAddr,
    /// Where endpoint definitions and compiled components are kept
    /// [default: ~/.local/share/edge-inference].
    #[arg(long, env = "INFERENCE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The model cache written by `python3 models/fetch.py`
    /// [default: ~/.cache/edge-inference/models].
    #[arg(long, env = "INFERENCE_MODEL_CACHE")]
    models: Option<PathBuf>,
    /// Directory holding the task components (`text_embedding.wasm`, ...)
    /// [default: `components/` beside the binary's target directory].
    #[arg(long, env = "INFERENCE_COMPONENTS")]
    components: Option<PathBuf>,
    /// Use another component for one task, e.g. `text_embedding=/path/x.wasm`.
    #[arg(long = "component", value_name = "TASK=PATH")]
    component_overrides: Vec<String>,
    /// Memory one component instance may use, in MiB.
    #[arg(long, default_value_t = 2048)]
    instance_memory_mib: usize,
    /// Requests that may wait for a busy endpoint before 429.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = es_wire::Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Most inputs in one request.
    #[arg(long, default_value_t = es_wire::Limits::default().max_inputs)]
    max_inputs: usize,
    /// Most characters in one input.
    #[arg(long, default_value_t = es_wire::Limits::default().max_input_chars)]
    max_input_chars: usize,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, env = "INFERENCE_LOG", default_value = "info")]
    log_level: String,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Serve the browser demo at `/_demo/` from this directory (what
    /// `cargo xtask browser` assembles), with the model files it loads.
    #[arg(long, env = "INFERENCE_DEMO_DIR")]
    demo_dir: Option<PathBuf>,
    /// Compile the components into the data dir's cache, then exit.
    #[arg(long)]
    compile_only: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .with_context(|| format!("invalid --log-level [{}]", cli.log_level))?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let started = Instant::now();
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()));
    let data_dir = cli
        .data_dir
        .clone()
        .unwrap_or_else(|| home.join(".local/share/edge-inference"));
    let model_cache = cli
        .models
        .clone()
        .unwrap_or_else(|| home.join(".cache/edge-inference/models"));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;

    let components = component_paths(&cli)?;
    let limits = InstanceLimits {
        memory_bytes: cli.instance_memory_mib << 20,
        load_timeout: Duration::from_secs(300),
    };
    let runtime = tokio::task::spawn_blocking({
        let cache = data_dir.join("compiled");
        move || Runtime::new(&components, &cache, limits)
    })
    .await??;
    if cli.compile_only {
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "components compiled"
        );
        return Ok(());
    }
    let models = Models::scan(&model_cache, |kind| runtime.has(kind))?;
    if models.by_id.is_empty() {
        tracing::warn!(cache = %model_cache.display(), "no models installed: run `python3 models/fetch.py`");
    }
    let store = EndpointStore::open(&data_dir.join("endpoints.redb"))?;
    let app = App::new(
        Arc::new(runtime),
        models,
        store,
        es_wire::Limits {
            max_body_bytes: cli.max_body_bytes,
            max_inputs: cli.max_inputs,
            max_input_chars: cli.max_input_chars,
        },
        cli.max_queue,
    );
    app.warm_all()?;

    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("listening on {}", cli.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(
        models = ?app.models.by_id.keys().collect::<Vec<_>>(),
        endpoints = ?app.preconfigured.iter().map(|e| &e.inference_id).collect::<Vec<_>>(),
        data_dir = %data_dir.display(),
        ms = started.elapsed().as_millis() as u64,
        "ready"
    );
    // Tests and scripts read this line to find the port.
    println!("listening on http://{address}");
    axum::serve(listener, api::router_with_demo(app, cli.demo_dir))
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

/// The component for each task: `--component` overrides, else the file in
/// the components directory, when present.
fn component_paths(cli: &Cli) -> Result<HashMap<TaskKind, PathBuf>> {
    let dir = cli
        .components
        .clone()
        .unwrap_or_else(default_components_dir);
    let mut paths: HashMap<TaskKind, PathBuf> = TaskKind::ALL
        .into_iter()
        .map(|k| (k, dir.join(k.file_name())))
        .filter(|(_, p)| p.exists())
        .collect();
    for spec in &cli.component_overrides {
        let Some((task, path)) = spec.split_once('=') else {
            bail!("--component takes TASK=PATH, got [{spec}]");
        };
        let kind =
            TaskKind::parse(task).with_context(|| format!("--component: unknown task [{task}]"))?;
        paths.insert(kind, PathBuf::from(path));
    }
    if paths.is_empty() {
        bail!(
            "no task components in {}: run `cargo xtask build`",
            dir.display()
        );
    }
    Ok(paths)
}

/// `cargo xtask build` puts components in `<target>/components`; the binary
/// is `<target>/release/inference-host`.
fn default_components_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("components")))
        .unwrap_or_else(|| Path::new("target/components").to_path_buf())
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
