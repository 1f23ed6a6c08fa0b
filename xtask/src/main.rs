//! Project commands. `cargo xtask serve` and `cargo xtask test` are the two
//! set-up commands of the README; the others are their steps.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use es_wire::TaskType;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Build, serve, test and benchmark the edge inference server")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fetch, verify and convert the models into the model cache.
    Models,
    /// Build the task components (wasm32-wasip2) and the host.
    Build,
    /// Models, build, then run the server (extra arguments go to it).
    Serve {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Models, build, then every check and test: fmt, clippy, cargo tests,
    /// the model tooling's tests and the Python client tests.
    Test,
    /// Build the Spin app's router, compose it with the task components into
    /// `<target>/spin/app.wasm`, and build its test host.
    Spin,
    /// Models, build, then the benchmarks: the server through HTTP against the
    /// native core, per task type (`bench --help` lists them).
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the browser demo: the ML core for wasm32-unknown-unknown through
    /// wasm-bindgen, and the page, into `<target>/browser-bundle`.
    Browser,
    /// Models, build, then the corpus embedded in chromium against the native core.
    BenchBrowser,
    /// Models, build, then the load mix (every task type, endpoint churn,
    /// bad input) for `--minutes`, sampling the server's memory and open
    /// descriptors each minute; fails if either keeps growing.
    Soak {
        #[arg(long, default_value_t = 60)]
        minutes: u64,
    },
}

/// The wasm-bindgen CLI must match the `wasm-bindgen` crate exactly.
const WASM_BINDGEN_VERSION: &str = "0.2.130";

/// The task components' crates, in the order of `es_wire::COMPONENT_FILES`.
const COMPONENTS: [&str; 4] = ["text-embedding", "sparse-embedding", "rerank", "completion"];
/// Components built only for the tests: (crate, file).
const TEST_COMPONENTS: [(&str, &str); 1] = [("hostile-component", "hostile_component.wasm")];

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_path_buf();
    std::env::set_current_dir(&root)?;
    let target = target_dir()?;
    match cli.command {
        Cmd::Models => models(),
        Cmd::Build => build(&target, false),
        Cmd::Serve { args } => {
            models()?;
            build(&target, false)?;
            step("serve", || {
                run(Command::new(target.join("release/inference-host"))
                    .arg("--demo-dir")
                    .arg(target.join(BROWSER_BUNDLE))
                    .args(&args))
            })
        }
        Cmd::Spin => {
            build(&target, false)?;
            spin(&target)
        }
        Cmd::Test => test(&target),
        Cmd::Browser => browser(&target),
        Cmd::BenchBrowser => {
            models()?;
            build(&target, false)?;
            install_chromium()?;
            step("bench-browser", || {
                run(cargo().args([
                    "test",
                    "--release",
                    "--test",
                    "browser",
                    "--",
                    "--ignored",
                    "--nocapture",
                    "bench_browser_against_native",
                ]))
            })
        }
        Cmd::Soak { minutes } => {
            models()?;
            build(&target, false)?;
            step("soak", || {
                run(cargo()
                    .args(["test", "--release", "--test", "load", "--", "--ignored"])
                    .args(["--exact", "soak", "--nocapture"])
                    .env("SOAK_MINUTES", minutes.to_string()))
            })
        }
        Cmd::Bench { args } => {
            models()?;
            build(&target, false)?;
            spin(&target)?;
            step("bench", || {
                // `build` built it with every native crate; a `-p` build
                // would unify features differently and rebuild wasmtime.
                run(Command::new(target.join("release/bench")).args(&args))
            })
        }
    }
}

fn test(target: &Path) -> Result<()> {
    models()?;
    build(target, true)?;
    spin(target)?;
    step("format", || run(cargo().args(["fmt", "--all", "--check"])))?;
    step("clippy", || {
        run(cargo().args([
            "clippy",
            "--release",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        // The browser crate is not a default member: it builds for the web only.
        run(cargo().args([
            "clippy",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "-p",
            "inference-browser",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    step("compile components for the test servers", || {
        // The test servers share one compiled-component cache; filling it
        // first spares a dozen servers compiling the same components at once.
        let warmup = target.join("release/test-warmup");
        std::fs::create_dir_all(&warmup)?;
        std::fs::create_dir_all(target.join("release/test-compiled"))?;
        if !warmup.join("compiled").exists() {
            std::os::unix::fs::symlink("../test-compiled", warmup.join("compiled"))?;
        }
        run(Command::new(target.join("release/inference-host"))
            .arg("--compile-only")
            .arg("--data-dir")
            .arg(&warmup)
            .arg("--components")
            .arg(target.join("components")))
    })?;
    install_chromium()?;
    step("cargo tests", || run(cargo().args(["test", "--release"])))?;
    step("model tooling tests", || {
        run(Command::new(venv_python(&model_cache().join("venv"))).arg("models/test_models.py"))
    })?;
    let venv = test_venv()?;
    step("python client tests", || {
        run(Command::new(venv_python(&venv))
            .args(["-m", "pytest", "-q", "tests/python"])
            .env("INFERENCE_HOST_BIN", target.join("release/inference-host"))
            .env("INFERENCE_COMPONENTS", target.join("components")))
    })
}

/// The task components the Spin app runs pre-initialised, each holding the
/// model of the task's preconfigured endpoint: (component, interface whose
/// `load` runs, task).
const SPIN_PREINIT: [(&str, &str, TaskType); 3] = [
    (
        "text_embedding.wasm",
        "edge:text-embedding/text-embedding@0.1.0",
        TaskType::TextEmbedding,
    ),
    (
        "sparse_embedding.wasm",
        "edge:sparse-embedding/sparse-embedding@0.1.0",
        TaskType::SparseEmbedding,
    ),
    ("rerank.wasm", "edge:rerank/rerank@0.1.0", TaskType::Rerank),
];

/// The Spin app for hosts without the Spin CLI: the router component, the
/// pre-initialised task components and the composition. The test host and
/// the tools come from `build`.
fn spin(target: &Path) -> Result<()> {
    step("spin router", || {
        run(cargo().args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "spin-router",
        ]))
    })?;
    step("spin: pre-initialise the task components", || {
        // An instance per request must not load its model per request: each
        // snapshot starts with the preconfigured endpoint's model loaded and
        // optimised. SmolLM2 is left out: its snapshot would be 1.3 GB.
        for (file, interface, task) in SPIN_PREINIT {
            let model = es_wire::preconfigured_model(task)
                .expect("every pre-initialised task has a preconfigured endpoint");
            let out = target.join("spin/preinit").join(file);
            let input = target.join("wasm32-wasip2/release").join(file);
            let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            if matches!((modified(&out), modified(&input)), (Some(o), Some(i)) if o > i) {
                continue;
            }
            run(Command::new(target.join("release/spin-preinit"))
                .arg(&input)
                .arg(&out)
                .arg(model_cache())
                .arg(interface)
                .arg(model))?;
        }
        Ok(())
    })?;
    step("spin composition", || {
        // Built with the other native crates by `build` (a `-p` build here
        // would unify features differently and rebuild wasmtime).
        run(Command::new(target.join("release/spin-compose")).arg(target))
    })
}

fn models() -> Result<()> {
    step("models", || {
        run(Command::new("python3").arg("models/fetch.py"))
    })
}

/// Builds the components for wasm32-wasip2 (simd128 comes from
/// .cargo/config.toml), copies them to `<target>/components`, and builds the host.
fn build(target: &Path, with_test_components: bool) -> Result<()> {
    step("rust targets", || {
        let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
        if installed.lines().any(|t| t == "wasm32-wasip2") {
            return Ok(());
        }
        run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))
    })?;
    let mut components: Vec<(&str, &str)> = COMPONENTS
        .into_iter()
        .zip(es_wire::COMPONENT_FILES)
        .collect();
    if with_test_components {
        components.extend(TEST_COMPONENTS);
    }
    step("components", || {
        let release = target.join("wasm32-wasip2/release");
        let out = target.join("components");
        std::fs::create_dir_all(&out)?;
        // The encoder tasks built to run their graphs in the host through
        // wasi:nn. First: the sandbox builds that follow leave
        // `wasm32-wasip2/release` as `spin build` makes it, which spin.toml
        // names.
        let mut cmd = cargo();
        cmd.args(["build", "--release", "--target", "wasm32-wasip2"])
            .args(["--no-default-features", "--features", "wasi-nn"]);
        for package in &COMPONENTS[..es_wire::WASI_NN_COMPONENT_FILES.len()] {
            cmd.args(["-p", package]);
        }
        run(&mut cmd)?;
        for (built, file) in es_wire::COMPONENT_FILES
            .iter()
            .zip(es_wire::WASI_NN_COMPONENT_FILES)
        {
            copy_if_changed(&release.join(built), &out.join(file))?;
        }
        let mut cmd = cargo();
        cmd.args(["build", "--release", "--target", "wasm32-wasip2"]);
        for (package, _) in &components {
            cmd.args(["-p", package]);
        }
        run(&mut cmd)?;
        for (_, file) in &components {
            copy_if_changed(&release.join(file), &out.join(file))?;
        }
        Ok(())
    })?;
    browser(target)?;
    // All native crates at once: the same feature set as `cargo test`, so
    // the tests reuse these artifacts instead of compiling wasmtime again.
    step("host", || run(cargo().args(["build", "--release"])))
}

/// Where `cargo xtask browser` assembles the demo, under the target directory.
const BROWSER_BUNDLE: &str = "browser-bundle";

/// Builds `inference-browser` for wasm32-unknown-unknown (simd128 comes from
/// .cargo/config.toml), generates its JavaScript glue with wasm-bindgen
/// (`--target web`) and puts it beside the page's files: a static directory
/// that any web server can serve, and that `--demo-dir` serves at `/_demo/`.
fn browser(target: &Path) -> Result<()> {
    step("browser demo", || {
        let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
        if !installed.lines().any(|t| t == "wasm32-unknown-unknown") {
            run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
        }
        run(cargo().args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "-p",
            "inference-browser",
        ]))?;
        let bundle = target.join(BROWSER_BUNDLE);
        run(Command::new(wasm_bindgen()?)
            .args(["--target", "web", "--no-typescript", "--out-dir"])
            .arg(bundle.join("pkg"))
            .arg(target.join("wasm32-unknown-unknown/release/inference_browser.wasm")))?;
        for entry in std::fs::read_dir("browser/www")? {
            let path = entry?.path();
            if path.is_file() {
                copy_if_changed(&path, &bundle.join(path.file_name().expect("a file name")))?;
            }
        }
        Ok(())
    })
}

/// The wasm-bindgen CLI of the crate's version, installed once into a tools
/// directory beside the model cache (outside the clone) when missing.
fn wasm_bindgen() -> Result<PathBuf> {
    let root = model_cache()
        .parent()
        .unwrap_or(Path::new("."))
        .join("tools");
    let bin = root.join("bin/wasm-bindgen");
    let version = output(Command::new(&bin).arg("--version")).unwrap_or_default();
    if version.split_whitespace().nth(1) != Some(WASM_BINDGEN_VERSION) {
        // Without --locked: the CLI's own lock file does not build on this toolchain.
        run(cargo()
            .args(["install", "wasm-bindgen-cli", "--force", "--version"])
            .arg(WASM_BINDGEN_VERSION)
            .arg("--root")
            .arg(&root)
            .env_remove("CARGO_TARGET_DIR"))?;
    }
    Ok(bin)
}

/// The browser test drives Debian's chromium through chromedriver.
fn install_chromium() -> Result<()> {
    if Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists() {
        return Ok(());
    }
    step("chromium and chromedriver", || {
        run(Command::new("apt-get").arg("update"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "chromium", "chromium-driver"])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    })
}

/// Copies unless the destination already has the same bytes, so the host's
/// compiled-component cache stays valid and mtimes stay put.
fn copy_if_changed(from: &Path, to: &Path) -> Result<()> {
    let new = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    if std::fs::read(to).ok().as_deref() != Some(new.as_slice()) {
        std::fs::write(to, new)?;
    }
    Ok(())
}

/// A virtualenv with the Python client and pytest, beside the model cache.
fn test_venv() -> Result<PathBuf> {
    let venv = model_cache()
        .parent()
        .unwrap_or(Path::new("."))
        .join("test-venv");
    let requirements = std::fs::read_to_string("tests/python/requirements.txt")?;
    let stamp = venv.join("requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(requirements.as_str()) {
        return Ok(venv);
    }
    step("python test environment", || {
        run(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv))?;
        run(Command::new(venv_python(&venv)).args([
            "-m",
            "pip",
            "install",
            "-q",
            "-r",
            "tests/python/requirements.txt",
        ]))?;
        std::fs::write(&stamp, &requirements)?;
        Ok(())
    })?;
    Ok(venv)
}

use es_wire::model_cache;

fn venv_python(venv: &Path) -> PathBuf {
    venv.join("bin/python")
}

fn target_dir() -> Result<PathBuf> {
    let metadata = output(cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    let value: serde_json::Value = serde_json::from_str(&metadata)?;
    Ok(PathBuf::from(
        value["target_directory"]
            .as_str()
            .context("cargo metadata has no target_directory")?,
    ))
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let started = Instant::now();
    eprintln!("==> {name}");
    f().with_context(|| format!("step [{name}] failed"))?;
    eprintln!(
        "==> {name}: done in {:.1} s",
        started.elapsed().as_secs_f32()
    );
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} exited with {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}
