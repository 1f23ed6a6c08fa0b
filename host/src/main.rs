//! `inference-host`: serves Elasticsearch's inference API on sandboxed WASI
//! task components.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use inference_host::api::{self, App};
use inference_host::backend::Pools;
use inference_host::catalog::Models;
use inference_host::compute::{self, HostCompute};
use inference_host::demo;
use inference_host::runtime::{Build, InstanceLimits, Runtime, TaskKind};
use inference_host::security::{self, users, Security};
use inference_host::store::RedbStore;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Elasticsearch's inference API (`/_inference`), served by WebAssembly
/// components running tract-onnx on local models.
#[derive(Parser, Debug)]
// Later options override earlier ones (scripts and tests add to defaults).
#[command(version, args_override_self = true)]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "INFERENCE_LISTEN", default_value = "127.0.0.1:9200")]
    listen: SocketAddr,
    /// Serve Prometheus metrics at `/metrics` on this address, apart from
    /// the API [default: off].
    #[arg(long, env = "INFERENCE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
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
    /// ONNX Runtime's shared library, for host compute [default: the one the
    /// model tooling's `onnxruntime` wheel installed in the model cache].
    /// Without it, host compute uses tract.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    onnxruntime: Option<PathBuf>,
    /// Memory one component instance may use, in MiB.
    #[arg(long, default_value_t = 2048)]
    instance_memory_mib: usize,
    /// Requests that may wait for a busy endpoint before 429.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Inputs one model call may take from several queued embedding
    /// requests (cross-request batching); 1 turns batching off.
    #[arg(long, env = "INFERENCE_MAX_BATCH_INPUTS", default_value_t = 32)]
    max_batch_inputs: usize,
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
    /// Require credentials (basic auth or API keys) on every route but `GET /`.
    #[arg(long, env = "INFERENCE_SECURITY")]
    security: bool,
    /// The users file (TOML; see `inference-host users add`)
    /// [default: <data-dir>/users.toml].
    #[arg(long, env = "INFERENCE_USERS_FILE")]
    users_file: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "INFERENCE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "INFERENCE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage the users file.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Read a password from standard input and print its argon2id hash.
    HashPassword,
}

#[derive(Subcommand, Debug)]
enum UsersCommand {
    /// Add a user, or replace one's password and roles. The password is read
    /// from standard input (one line), never from the command line.
    Add {
        name: String,
        /// A role: superuser, inference_admin, inference_user or one the
        /// file defines. Repeat for several.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
    },
    /// Remove a user.
    Remove { name: String },
    /// List users and their roles.
    List,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(command) = &cli.command {
        return run_command(&cli, command);
    }
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

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
}

fn data_dir(cli: &Cli) -> PathBuf {
    cli.data_dir
        .clone()
        .unwrap_or_else(|| home().join(".local/share/edge-inference"))
}

fn users_file(cli: &Cli) -> PathBuf {
    cli.users_file
        .clone()
        .unwrap_or_else(|| data_dir(cli).join("users.toml"))
}

fn read_password() -> Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        bail!("no password on standard input");
    }
    Ok(password)
}

fn run_command(cli: &Cli, command: &Command) -> Result<()> {
    let path = users_file(cli);
    match command {
        Command::HashPassword => println!("{}", users::hash_password(&read_password()?)?),
        Command::Users(UsersCommand::Add { name, roles }) => {
            let mut file = users::UsersFile::read_or_default(&path)?;
            let password_hash = users::hash_password(&read_password()?)?;
            file.users.insert(
                name.clone(),
                users::UserEntry {
                    password_hash,
                    roles: roles.clone(),
                },
            );
            file.write(&path)?;
            eprintln!("user [{name}] written to {}", path.display());
        }
        Command::Users(UsersCommand::Remove { name }) => {
            let mut file = users::UsersFile::read(&path)?;
            if file.users.remove(name).is_none() {
                bail!("no user [{name}] in {}", path.display());
            }
            file.write(&path)?;
        }
        Command::Users(UsersCommand::List) => {
            for (name, user) in users::UsersFile::read(&path)?.users {
                println!("{name}: {}", user.roles.join(","));
            }
        }
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let started = Instant::now();
    let home = home();
    let data_dir = data_dir(&cli);
    let model_cache = cli
        .models
        .clone()
        .unwrap_or_else(|| home.join(es_wire::DEFAULT_MODEL_CACHE));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;

    let components = component_paths(&cli)?;
    let limits = InstanceLimits {
        memory_bytes: cli.instance_memory_mib << 20,
        load_timeout: Duration::from_secs(300),
    };
    let onnxruntime = cli
        .onnxruntime
        .clone()
        .or_else(|| compute::find_onnxruntime(&model_cache));
    let runtime = tokio::task::spawn_blocking({
        let cache = data_dir.join("compiled");
        move || {
            let host = HostCompute::new(onnxruntime.as_deref());
            Runtime::new(&components, &cache, limits, host)
        }
    })
    .await??;
    if cli.compile_only {
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "components compiled"
        );
        return Ok(());
    }
    let models = Models::scan(&model_cache, |kind| runtime.has(kind));
    if models.by_id.is_empty() {
        tracing::warn!(cache = %model_cache.display(), "no models installed: run `python3 models/fetch.py`");
    }
    let store = RedbStore::open(&data_dir.join("endpoints.redb"))?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
    let app = Arc::new(App {
        catalog: models.catalog(),
        preconfigured: models.preconfigured(cores),
        store,
        backend: Pools::new(
            Arc::new(runtime),
            models,
            cli.max_queue,
            cli.max_batch_inputs,
        ),
        limits: es_wire::Limits {
            max_body_bytes: cli.max_body_bytes,
            max_inputs: cli.max_inputs,
            max_input_chars: cli.max_input_chars,
        },
        node_name: "edge-inference".into(),
    });
    let security = if cli.security {
        let path = users_file(&cli);
        let users = users::Users::new(users::UsersFile::read(&path)?)?;
        tracing::info!(users = users.len(), file = %path.display(), "security on: every route but GET / needs credentials");
        Some(Arc::new(Security {
            users,
            keys: security::api_keys::ApiKeys::new(app.store.clone()),
            max_body_bytes: cli.max_body_bytes.min(1 << 20),
        }))
    } else {
        tracing::warn!("security is OFF: anyone who reaches this port can use and change every endpoint (start with --security to require credentials)");
        None
    };
    let mut endpoints = app.preconfigured.clone();
    endpoints.extend(app.store.list()?);
    app.backend.warm(&endpoints);

    let mut router = api::router(app.clone(), cli.demo_dir.clone().map(demo::routes));
    if let Some(security) = security {
        router = security::protect(router, security);
    }
    if let Some(addr) = cli.metrics_listen {
        let address = inference_host::metrics::serve(addr).await?;
        // Tests and scripts read this line to find the port.
        println!("metrics on http://{address}/metrics");
    }
    let listener = std::net::TcpListener::bind(cli.listen)
        .with_context(|| format!("listening on {}", cli.listen))?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => {
            // One crypto provider for the process: ring.
            let _ = rustls::crypto::ring::default_provider().install_default();
            Some(
                axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .with_context(|| {
                        format!("loading TLS certificate {} and key", cert.display())
                    })?,
            )
        }
        _ => None,
    };
    tracing::info!(
        models = ?app.backend.models.by_id.keys().collect::<Vec<_>>(),
        endpoints = ?app.preconfigured.iter().map(|e| &e.inference_id).collect::<Vec<_>>(),
        data_dir = %data_dir.display(),
        ms = started.elapsed().as_millis() as u64,
        "ready"
    );
    // Tests and scripts read this line to find the port.
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("listening on {scheme}://{address}");
    match tls {
        Some(config) => {
            let handle = axum_server::Handle::new();
            tokio::spawn({
                let handle = handle.clone();
                async move {
                    shutdown().await;
                    handle.graceful_shutdown(Some(Duration::from_secs(10)));
                }
            });
            axum_server::from_tcp_rustls(listener, config)
                .handle(handle)
                .serve(router.into_make_service())
                .await?;
        }
        None => {
            axum::serve(tokio::net::TcpListener::from_std(listener)?, router)
                .with_graceful_shutdown(shutdown())
                .await?;
        }
    }
    Ok(())
}

/// The component for each task and build: `--component` overrides (both
/// builds), else the files in the components directory, when present.
fn component_paths(cli: &Cli) -> Result<HashMap<(TaskKind, Build), PathBuf>> {
    let dir = cli
        .components
        .clone()
        .unwrap_or_else(default_components_dir);
    let mut paths: HashMap<(TaskKind, Build), PathBuf> = TaskKind::ALL
        .into_iter()
        .flat_map(|k| Build::ALL.map(|b| (k, b)))
        .filter_map(|(k, b)| Some(((k, b), dir.join(k.file_name(b)?))))
        .filter(|(_, p)| p.exists())
        .collect();
    for spec in &cli.component_overrides {
        let Some((task, path)) = spec.split_once('=') else {
            bail!("--component takes TASK=PATH, got [{spec}]");
        };
        let kind =
            TaskKind::parse(task).with_context(|| format!("--component: unknown task [{task}]"))?;
        for build in Build::ALL {
            paths.insert((kind, build), PathBuf::from(path));
        }
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
