//! Spawns the real server binary for end-to-end tests and benchmarks: the
//! native host, the composed Spin app in its test host, or `spin up` of the
//! repository's `spin.toml` with a real Spin CLI ([`Kind`]).
//!
//! Paths come from the environment `cargo xtask test` sets
//! (`INFERENCE_HOST_BIN`, `INFERENCE_COMPONENTS`, `INFERENCE_MODEL_CACHE`,
//! `INFERENCE_SPIN_HOST_BIN`, `INFERENCE_SPIN_APP`), else from the target
//! directory this test binary runs from. The Spin CLI is `SPIN_BIN`; without
//! it, the cases for [`Kind::SpinCli`] say so and pass over.

pub mod cases;

pub mod sse;

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use reqwest::blocking::{Client, Response};
pub use serde_json::{json, Value};

/// `<target>/release`, from the path of the running test binary
/// (`<target>/release/deps/<test>`).
fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "release"))
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target/release"))
}

fn env_path(var: &str, default: impl FnOnce() -> PathBuf) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(default)
}

/// The repository, from the directory cargo names at run time: this crate's
/// under `cargo test`, `benchmarks/`'s under `cargo xtask bench` (both one
/// level below the root). A target directory shared by clones at other paths
/// (CI's cache) holds binaries built elsewhere, whose build path may be gone.
pub fn repo_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from)
        .join("..")
}

/// The benchmarks' fixed corpus, which the browser benchmark embeds too.
pub fn corpus_path() -> PathBuf {
    repo_dir().join("benchmarks/corpus.txt")
}

/// The sentences of [`corpus_path`], one a line.
pub fn corpus() -> Result<Vec<String>> {
    let path = corpus_path();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

pub fn host_bin() -> PathBuf {
    env_path("INFERENCE_HOST_BIN", || {
        release_dir().join("inference-host")
    })
}

pub fn components_dir() -> PathBuf {
    env_path("INFERENCE_COMPONENTS", || {
        release_dir()
            .parent()
            .expect("target dir")
            .join("components")
    })
}

pub use es_wire::model_cache;

/// The Spin CLI (`SPIN_BIN`), when given.
pub fn spin_bin() -> Option<PathBuf> {
    std::env::var_os("SPIN_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The browser demo bundle `cargo xtask browser` assembles:
/// `INFERENCE_DEMO_DIR`, else `<target>/browser-bundle`.
pub fn demo_dir() -> PathBuf {
    env_path("INFERENCE_DEMO_DIR", || {
        release_dir()
            .parent()
            .expect("target dir")
            .join("browser-bundle")
    })
}

/// The cargo target directory (where tests leave screenshots and the like).
pub fn target_dir() -> PathBuf {
    release_dir().parent().expect("target dir").to_path_buf()
}

pub fn spin_host_bin() -> PathBuf {
    env_path("INFERENCE_SPIN_HOST_BIN", || {
        release_dir().join("spin-test-host")
    })
}

/// The composed Spin app (`cargo xtask spin` writes it).
pub fn spin_app() -> PathBuf {
    env_path("INFERENCE_SPIN_APP", || {
        release_dir()
            .parent()
            .expect("target dir")
            .join("spin/app.wasm")
    })
}

/// Which server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The native host.
    Native,
    /// The Spin app (router and task components composed ahead of time) in
    /// the wasmtime test host.
    Spin,
    /// `spin up` of the repository's `spin.toml`, with the CLI `SPIN_BIN`.
    SpinCli,
}

/// Compiled components are cached across test servers (compiling takes tens
/// of seconds); endpoint stores are per server.
pub fn shared_compile_cache() -> PathBuf {
    release_dir().join("test-compiled")
}

/// A running `inference-host` on a free loopback port, killed on drop.
pub struct Server {
    pub kind: Kind,
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    _tmp: tempfile::TempDir,
    args: Vec<String>,
    pub client: Client,
    /// Where the server's log (stderr) goes, when captured.
    pub log: Option<PathBuf>,
    /// `http://…/metrics`, when started with `--metrics-listen`.
    pub metrics_url: Option<String>,
}

impl Server {
    /// Starts a server with a fresh data directory and `args` added.
    pub fn start(args: &[&str]) -> Result<Self> {
        Self::start_kind(Kind::Native, args)
    }

    /// Starts a server of `kind` with a fresh data directory.
    pub fn start_kind(kind: Kind, args: &[&str]) -> Result<Self> {
        Self::launch(kind, args, |_| Ok(()), false)
    }

    /// Like [`Server::start`] with `setup` run on the fresh data directory
    /// first (to write a users file, say), and the server's log captured in
    /// `<data dir>/server.log` (appended to across restarts).
    pub fn start_with(args: &[&str], setup: impl FnOnce(&Path) -> Result<()>) -> Result<Self> {
        Self::launch(Kind::Native, args, setup, true)
    }

    fn launch(
        kind: Kind,
        args: &[&str],
        setup: impl FnOnce(&Path) -> Result<()>,
        capture_log: bool,
    ) -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let data_dir = tmp.path().to_path_buf();
        setup(&data_dir)?;
        let log = capture_log.then(|| data_dir.join("server.log"));
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, url, metrics_url) = spawn(kind, &data_dir, &args, log.as_deref())?;
        Ok(Self {
            kind,
            child,
            url,
            metrics_url,
            data_dir,
            _tmp: tmp,
            args,
            client: client(),
            log,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The captured log so far (empty when not captured).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Stops the server and starts it again on the same data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let (child, url, metrics_url) =
            spawn(self.kind, &self.data_dir, &self.args, self.log.as_deref())?;
        self.child = child;
        self.url = url;
        self.metrics_url = metrics_url;
        Ok(())
    }

    pub fn stop(&mut self) {
        if self.kind == Kind::SpinCli {
            // `spin up` runs the app in a child process (`spin trigger
            // http`) that outlives it when only `spin up` is killed: kill
            // the process group it leads.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .expect("GET")
    }

    pub fn delete(&self, path: &str) -> Response {
        self.client
            .delete(format!("{}{path}", self.url))
            .send()
            .expect("DELETE")
    }

    pub fn put(&self, path: &str, body: &Value) -> Response {
        self.client
            .put(format!("{}{path}", self.url))
            .json(body)
            .send()
            .expect("PUT")
    }

    pub fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .expect("POST")
    }

    /// POST with a raw body and content type.
    pub fn post_raw(&self, path: &str, body: &str) -> Response {
        self.client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .expect("POST")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("http client")
}

fn spawn(
    kind: Kind,
    data_dir: &Path,
    args: &[String],
    log: Option<&Path>,
) -> Result<(Child, String, Option<String>)> {
    let (child, url) = match kind {
        Kind::Spin => spawn_spin(data_dir, args)?,
        Kind::SpinCli => spawn_spin_cli(data_dir)?,
        Kind::Native => return spawn_host(data_dir, args, log),
    };
    Ok((child, url, None))
}

/// The native host; it announces its metrics address, when it serves them,
/// before its API address.
fn spawn_host(
    data_dir: &Path,
    args: &[String],
    log: Option<&Path>,
) -> Result<(Child, String, Option<String>)> {
    let bin = host_bin();
    if !bin.exists() {
        bail!("{} does not exist: run `cargo xtask build`", bin.display());
    }
    // The compiled-component cache lives in the data dir; share it.
    let compiled = data_dir.join("compiled");
    if !compiled.exists() {
        std::fs::create_dir_all(shared_compile_cache())?;
        std::os::unix::fs::symlink(shared_compile_cache(), &compiled)?;
    }
    let child = Command::new(&bin)
        .args(["--listen", "127.0.0.1:0", "--log-level", "warn"])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--models")
        .arg(model_cache())
        .arg("--components")
        .arg(components_dir())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(match log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None => Stdio::inherit(),
        })
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    announced_urls(child)
}

/// The Spin test host on the composed app; its key-value store is saved in
/// the data directory, so a restart keeps the endpoints.
fn spawn_spin(data_dir: &Path, args: &[String]) -> Result<(Child, String)> {
    let bin = spin_host_bin();
    let app = spin_app();
    for path in [&bin, &app] {
        if !path.exists() {
            bail!("{} does not exist: run `cargo xtask spin`", path.display());
        }
    }
    // Compile the app once per test process, not once per server.
    static COMPILED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    {
        let mut compiled = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
        if !*compiled {
            let status = Command::new(&bin)
                .arg("--app")
                .arg(&app)
                .arg("--models")
                .arg(model_cache())
                .arg("--compile-only")
                .status()?;
            if !status.success() {
                bail!("{} could not compile {}", bin.display(), app.display());
            }
            *compiled = true;
        }
    }
    let child = Command::new(&bin)
        .args(["--listen", "127.0.0.1:0"])
        .arg("--app")
        .arg(&app)
        .arg("--models")
        .arg(model_cache())
        .arg("--kv-file")
        .arg(data_dir.join("kv.json"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    first_line_url(child)
}

/// `spin up` of the repository's `spin.toml`, as written, from a copy in the
/// data directory beside links to the build (`target`) and the model cache
/// (`spin-models`), the two paths the manifest names. Spin keeps its
/// key-value store in the data directory, so a restart keeps the endpoints.
fn spawn_spin_cli(data_dir: &Path) -> Result<(Child, String)> {
    let bin = spin_bin().context("SPIN_BIN is not set: no Spin CLI to run")?;
    if !bin.exists() {
        bail!("SPIN_BIN is {}, which does not exist", bin.display());
    }
    let app = data_dir.join("spin-app");
    std::fs::create_dir_all(&app)?;
    let repo = repo_dir();
    std::fs::copy(repo.join("spin.toml"), app.join("spin.toml"))?;
    for (link, to) in [("target", target_dir()), ("spin-models", model_cache())] {
        if !app.join(link).exists() {
            std::os::unix::fs::symlink(to, app.join(link))?;
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(&bin)
        // A process group of its own, so that `Server::stop` ends the
        // trigger process `spin up` starts too.
        .process_group(0)
        .arg("up")
        .arg("--from")
        .arg(app.join("spin.toml"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // Mount the model cache as it is instead of copying gigabytes.
        // Direct mounts resolve against the working directory.
        .arg("--direct-mounts")
        .current_dir(&app)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    // Spin composes and compiles the app before it listens (minutes the first
    // time; its cache makes later starts quick).
    let client = client();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(600) {
        if let Some(status) = child.try_wait()? {
            bail!("spin up exited with {status} before serving");
        }
        if client.get(&url).send().is_ok() {
            return Ok((child, url));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
    bail!("spin up did not serve {url} within 10 minutes")
}

/// Waits for the `listening on URL` line a server prints first.
fn first_line_url(child: Child) -> Result<(Child, String)> {
    announced_urls(child).map(|(child, url, _)| (child, url))
}

/// Reads the server's `metrics on URL` line, if any, and then its
/// `listening on URL` line (its last: nothing reads stdout after it).
fn announced_urls(mut child: Child) -> Result<(Child, String, Option<String>)> {
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut metrics = None;
    loop {
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        if let Some(url) = line.trim().strip_prefix("metrics on ") {
            metrics = Some(url.to_string());
        } else if let Some(url) = line.trim().strip_prefix("listening on ") {
            return Ok((child, url.to_string(), metrics));
        } else {
            let _ = child.kill();
            bail!("the server did not start (first line: {line:?})");
        }
    }
}

/// A number from the environment (a test's length, say), else `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The error envelope's `error.type`, checking the envelope's shape.
pub fn error_type(body: &Value) -> String {
    assert!(
        body["error"]["root_cause"].is_array(),
        "not an error envelope: {body}"
    );
    assert!(body["status"].is_u64(), "no status in {body}");
    body["error"]["type"]
        .as_str()
        .expect("error.type")
        .to_string()
}
