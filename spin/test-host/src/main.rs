//! A test host for the composed Spin app (`<target>/spin/app.wasm`): serves
//! it over HTTP on a loopback port as Spin would, with a fresh instance per
//! request, on wasmtime with WASI 0.3 HTTP (`wasi:http/handler@0.3.0`),
//! Spin's key-value store (in memory, saved to `--kv-file` when given, so a
//! restarted host keeps its endpoints) and Spin variables (`--var name=value`).
//! The model directory is preopened read-only at `/models`, where spin.toml
//! mounts it. Test support only: the product servers are the native host and
//! Spin itself.
//!
//! Prints `listening on http://ADDR` as its first line of output.

mod spin;

use clap::Parser;
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;
use wasmtime::component::{Component, GuestTaskId, Linker, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{bail, Result};
use wasmtime::{Config, Engine, Store, StoreContextMut};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, ProxyHandler, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState,
    WorkerStatus,
};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

#[derive(Parser, Clone)]
#[command(about = "Serve the composed Spin app for tests and benchmarks")]
struct Cli {
    /// The composed app (router plus task components).
    #[arg(long)]
    app: PathBuf,
    /// The model cache, mounted read-only at /models.
    #[arg(long)]
    models: PathBuf,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Keep the key-value store in this file (JSON) across restarts.
    #[arg(long)]
    kv_file: Option<PathBuf>,
    /// A Spin variable, `name=value` (repeatable).
    #[arg(long = "var", value_parser = parse_var)]
    vars: Vec<(String, String)>,
    /// Where to cache the app compiled to native code (default: beside it).
    #[arg(long)]
    compiled: Option<PathBuf>,
    /// Compile the app (filling the cache), then exit.
    #[arg(long)]
    compile_only: bool,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected name=value, got {s}"))
}

/// Per-store state: WASI, WASI HTTP and the Spin interfaces.
pub struct Host {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    spin: spin::SpinState,
    /// No outgoing HTTP: the app makes no requests.
    hooks: NoOutgoing,
}

/// The app makes no outgoing requests; the default hooks refuse them.
pub struct NoOutgoing;

impl wasmtime_wasi_http::WasiHttpHooks for NoOutgoing {
    #[allow(clippy::type_complexity)]
    fn send_request(
        &mut self,
        _: hyper::Request<wasmtime_wasi_http::WasiBody>,
        _: Option<wasmtime_wasi_http::RequestOptions>,
        _: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        hyper::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async {
            Err(wasmtime_wasi_http::p3::bindings::http::types::ErrorCode::HttpRequestDenied.into())
        })
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

struct AppState {
    engine: Engine,
    pre: ProxyPre<Host>,
    models: PathBuf,
    kv: spin::Kv,
    vars: Arc<HashMap<String, String>>,
}

impl AppState {
    fn new_store(&self) -> Result<Store<Host>> {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stderr()
            .preopened_dir(&self.models, "/models", FsPerms::ReadOnly)
            .with_context(|| format!("opening {}", self.models.display()))?;
        let mut store = Store::new(
            &self.engine,
            Host {
                table: ResourceTable::new(),
                wasi: wasi.build(),
                http: WasiHttpCtx::new(),
                spin: spin::SpinState::new(self.kv.clone(), self.vars.clone()),
                hooks: NoOutgoing,
            },
        );
        // Embedding lists and model loads pass large values between components.
        store.set_hostcall_fuel(usize::MAX / 2);
        Ok(store)
    }
}

impl HandlerState for AppState {
    type StoreData = Host;
    type WorkerExpiration = NoExpiration;
    type WorkerState = OneRequest;

    async fn instantiate(&self) -> wasmtime::Result<Instance<Host, NoExpiration, OneRequest>> {
        let mut store = self.new_store()?;
        let proxy = self.pre.instantiate_async(&mut store).await?;
        Ok(Instance {
            store,
            proxy,
            view: WasiHttpView::http,
            expiration: NoExpiration,
            state: OneRequest,
        })
    }
}

/// Requests run to completion (the app enforces the API's `timeout`).
pub struct NoExpiration;

impl WorkerExpiration for NoExpiration {
    fn poll(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        _: WorkerStatus,
        _: Instant,
    ) -> Poll<()> {
        Poll::Pending
    }
}

/// One instance per request, as Spin does.
pub struct OneRequest;

impl WorkerState for OneRequest {
    type StoreData = Host;
    type RequestData = u64;

    fn should_accept_request(&self, _concurrent: usize, total: usize) -> ShouldAccept {
        if total >= 1 {
            ShouldAccept::Never
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _: StoreContextMut<'_, Host>,
        _: u64,
        _: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        Box::pin(std::future::pending())
    }

    fn drop(&self, _store: Store<Host>, result: Result<(), wasmtime::Error>) {
        if let Err(e) = result {
            eprintln!("spin-test-host: instance failed: {e:?}");
        }
    }
}

fn engine() -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model_async(true);
    config.concurrency_support(true);
    Engine::new(&config)
}

/// Compiles the app once and caches the native code beside it (or at
/// `compiled`), keyed by the app's size and modification time.
fn load_component(engine: &Engine, app: &Path, compiled: Option<&Path>) -> Result<Component> {
    let meta = std::fs::metadata(app).with_context(|| format!("reading {}", app.display()))?;
    let stamp = format!(
        "{}-{}",
        meta.len(),
        meta.modified()?
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    let cache = compiled
        .map(Path::to_path_buf)
        .unwrap_or_else(|| app.with_extension(format!("{stamp}.cwasm")));
    if cache.exists() {
        // SAFETY: the file was written by `precompile_component` of this
        // same engine configuration (a mismatch is an error, not UB).
        if let Ok(c) = unsafe { Component::deserialize_file(engine, &cache) } {
            return Ok(c);
        }
    }
    let bytes = engine.precompile_component(&std::fs::read(app)?)?;
    let tmp = cache.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, &cache)?;
    if compiled.is_none() {
        remove_stale_compilations(app, &cache);
    }
    // SAFETY: as above.
    unsafe { Component::deserialize_file(engine, &cache) }
}

/// Removes the compilations of earlier builds of `app` beside it (over a
/// gigabyte each), keeping `current`.
fn remove_stale_compilations(app: &Path, current: &Path) {
    let (Some(dir), Some(stem)) = (app.parent(), app.file_stem().and_then(|s| s.to_str())) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{stem}.");
    for path in entries.flatten().map(|e| e.path()) {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let stale = name.starts_with(&prefix) && name.ends_with(".cwasm");
        if stale && path != current {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let engine = engine()?;
    let component = load_component(&engine, &cli.app, cli.compiled.as_deref())?;
    if cli.compile_only {
        return Ok(());
    }
    if !cli.models.is_dir() {
        bail!(
            "the model directory {} does not exist",
            cli.models.display()
        );
    }
    let mut linker = Linker::<Host>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    spin::add_to_linker(&mut linker)?;
    let pre = linker.instantiate_pre(&component)?;
    let pre = ProxyPre::P3(wasmtime_wasi_http::p3::bindings::ServicePre::new(pre)?);

    let handler = ProxyHandler::new(AppState {
        engine: engine.clone(),
        pre,
        models: cli.models.clone(),
        kv: spin::Kv::open(cli.kv_file.clone())?,
        vars: Arc::new(cli.vars.iter().cloned().collect()),
    });

    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let next_id = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let handler = handler.clone();
        let next_id = next_id.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let req = req.map(|body| body.map_err(|e| e.into()).boxed_unsync());
                        match handler.handle(id, req).await {
                            Ok(response) => Ok::<_, std::convert::Infallible>(response),
                            Err(e) => {
                                eprintln!("spin-test-host: request failed: {e:?}");
                                let body = http_body_util::Full::new(bytes_of(format!(
                                    "{{\"error\":\"the app failed: {}\"}}",
                                    e.to_string().replace('"', "'")
                                )))
                                .map_err(|never| match never {})
                                .boxed_unsync();
                                Ok(hyper::Response::builder()
                                    .status(500)
                                    .header("content-type", "application/json")
                                    .body(body)
                                    .expect("valid response"))
                            }
                        }
                    }
                });
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                eprintln!("spin-test-host: connection error: {e:?}");
            }
        });
    }
}

fn bytes_of(s: String) -> hyper::body::Bytes {
    hyper::body::Bytes::from(s)
}
