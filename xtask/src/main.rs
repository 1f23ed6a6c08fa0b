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
    /// Models, build, then run the server (extra arguments go to it), and
    /// build the browser demo beside it.
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
    // From cargo at run time: a target directory shared by clones at other
    // paths (CI's cache) may hold this binary as built by another clone.
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .parent()
        .expect("xtask is in the workspace")
        .to_path_buf();
    std::env::set_current_dir(&root)?;
    let target = target_dir()?;
    match cli.command {
        Cmd::Models => models(),
        Cmd::Build => build(&target, false),
        Cmd::Serve { args } => {
            plan(&["models", "components", "host", "serve"]);
            models()?;
            build(&target, false)?;
            // The server needs none of the demo: it answers from the start
            // and `/_demo/` says the page is coming until it is.
            let log = target.join("browser-demo.log");
            let demo = target.clone();
            std::thread::spawn(move || {
                eprintln!(
                    "==> browser demo: building beside the server (log: {})",
                    log.display()
                );
                match browser(&demo, Some(&log)) {
                    Ok(()) => eprintln!("==> browser demo: ready at /_demo/"),
                    Err(e) => eprintln!("==> browser demo failed: {e:#} (see {})", log.display()),
                }
            });
            step("serve", || {
                run(Command::new(target.join("release/inference-host"))
                    .arg("--demo-dir")
                    .arg(target.join(BROWSER_BUNDLE))
                    .args(&args))
            })
        }
        Cmd::Spin => {
            build(&target, false)?;
            native_crates()?;
            spin(&target)
        }
        Cmd::Test => test(&target),
        Cmd::Browser => browser(&target, None),
        Cmd::BenchBrowser => {
            models()?;
            build(&target, false)?;
            browser(&target, None)?;
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
            native_crates()?;
            spin(&target)?;
            // llama.cpp, the completion benchmark's anchor. Its build may
            // fail where the rest works (a compiler, a CPU llama.cpp does
            // not know): the benchmarks then run without it.
            let llama_python = match args.first().map(String::as_str) {
                None | Some("completion") => match llama_venv() {
                    Ok(venv) => Some(venv_python(&venv)),
                    Err(e) => {
                        eprintln!(
                            "==> warning: bench completion runs without its llama.cpp anchor: {e:#}"
                        );
                        None
                    }
                },
                Some(_) => None,
            };
            step("bench", || {
                // Built by `native_crates`; a `-p benchmarks` build would
                // unify features differently and rebuild wasmtime.
                let mut cmd = Command::new(target.join("release/bench"));
                // Where its scripts and corpus are, as `cargo run` would say.
                cmd.args(&args)
                    .env("CARGO_MANIFEST_DIR", root.join("benchmarks"));
                if let Some(python) = &llama_python {
                    cmd.env("LLAMA_PYTHON", python);
                }
                run(&mut cmd)
            })
        }
    }
}

fn test(target: &Path) -> Result<()> {
    plan(&[
        "models",
        "components",
        "host",
        "native crates",
        "browser demo",
        "spin router",
        "format",
        "clippy",
        "compile components for the test servers",
        "cargo tests",
        "model tooling tests",
        "python client tests",
    ]);
    models()?;
    build(target, true)?;
    native_crates()?;
    browser(target, None)?;
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
const SPIN_PREINIT: [(&str, &str, TaskType); 4] = [
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
    (
        "completion.wasm",
        "edge:completion/completion@0.1.0",
        TaskType::Completion,
    ),
];

/// The Spin app for hosts without the Spin CLI: the router component, the
/// pre-initialised task components and the composition. The test host and
/// the tools come from `native_crates`.
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
        // optimised.
        for (file, interface, task) in SPIN_PREINIT {
            let model = es_wire::preconfigured_model(task)
                .expect("every pre-initialised task has a preconfigured endpoint");
            let out = target.join("spin/preinit").join(file);
            // The copy `build` made: `wasm32-wasip2/release` holds whichever
            // build of the task cargo made last (sandbox or wasi-nn).
            let input = target.join("components").join(file);
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
        // Built by `native_crates` (a `-p` build here would unify features
        // differently and rebuild wasmtime).
        run(Command::new(target.join("release/spin-compose")).arg(target))
    })
}

fn models() -> Result<()> {
    step("models", || {
        run(Command::new("python3").arg("models/fetch.py"))
    })
}

/// Builds the components for wasm32-wasip2 (simd128 comes from
/// .cargo/config.toml), copies them to `<target>/components`, and builds the
/// host: what the server needs, and nothing else.
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
        // The tasks built to run their graphs in the host through wasi:nn.
        // First: the sandbox builds that follow leave
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
    // Its dependency `unified-features` pins the features the whole
    // workspace unifies, so this is a subset of `native_crates`' build.
    step("host", || {
        run(cargo().args(["build", "--release", "-p", "inference-host"]))
    })
}

/// Every native crate: the tests, the benchmarks, the Spin test host and
/// tools; then checks that the host alone was built with the same features,
/// so nothing was compiled twice.
fn native_crates() -> Result<()> {
    step("native crates", || {
        run(cargo().args(["build", "--release"]))?;
        // Both builds are done: these only list their artifacts, whose file
        // names carry a hash of each crate's features. Third-party crates
        // only: the project's own are roots of the full build, which cargo
        // hashes apart (about a minute to rebuild, where wasmtime takes ten).
        let artifacts = |args: &[&str]| -> Result<std::collections::BTreeSet<String>> {
            let out = output(
                cargo()
                    .args(["build", "--release", "--message-format=json"])
                    .args(args),
            )?;
            Ok(out
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|m| m["reason"] == "compiler-artifact")
                .filter(|m| !m["package_id"].as_str().unwrap_or("").starts_with("path+"))
                .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
                .filter_map(|f| f.as_str().map(String::from))
                .collect())
        };
        let all = artifacts(&[])?;
        let twice: Vec<String> = artifacts(&["-p", "inference-host"])?
            .into_iter()
            .filter(|f| !all.contains(f))
            .collect();
        if !twice.is_empty() {
            bail!(
                "inference-host alone builds {} third-party artifacts with other features \
                 than the workspace (such as {}), so a fresh machine compiles them twice: run \
                 `cargo hakari generate` (`cargo install cargo-hakari --locked`) and commit \
                 unified-features/Cargo.toml",
                twice.len(),
                twice[0]
            );
        }
        Ok(())
    })
}

/// Where `cargo xtask browser` assembles the demo, under the target directory.
const BROWSER_BUNDLE: &str = "browser-bundle";

/// Builds `inference-browser` for wasm32-unknown-unknown (simd128 comes from
/// .cargo/config.toml), generates its JavaScript glue with wasm-bindgen
/// (`--target web`) and puts it beside the page's files: a static directory
/// that any web server can serve, and that `--demo-dir` serves at `/_demo/`.
///
/// With `log`, the commands' output goes there instead of the terminal (the
/// build runs beside the server, whose log has the terminal).
fn browser(target: &Path, log: Option<&Path>) -> Result<()> {
    let quiet = |cmd: &mut Command| -> Result<()> {
        if let Some(log) = log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)?;
            cmd.stdout(file.try_clone()?).stderr(file);
        }
        run(cmd)
    };
    step("browser demo", || {
        let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
        if !installed.lines().any(|t| t == "wasm32-unknown-unknown") {
            quiet(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
        }
        quiet(cargo().args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "-p",
            "inference-browser",
        ]))?;
        let bundle = target.join(BROWSER_BUNDLE);
        quiet(
            Command::new(wasm_bindgen(&quiet)?)
                .args(["--target", "web", "--no-typescript", "--out-dir"])
                .arg(bundle.join("pkg"))
                .arg(target.join("wasm32-unknown-unknown/release/inference_browser.wasm")),
        )?;
        // The page last: the server shows it once it is there.
        let mut files: Vec<PathBuf> = std::fs::read_dir("browser/www")?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        files.retain(|p| p.is_file());
        files.sort_by_key(|p| p.ends_with("index.html"));
        for path in files {
            copy_if_changed(&path, &bundle.join(path.file_name().expect("a file name")))?;
        }
        Ok(())
    })
}

/// The wasm-bindgen CLI of the crate's version, installed once (by `run`)
/// into a tools directory beside the model cache (outside the clone) when missing.
fn wasm_bindgen(run: &dyn Fn(&mut Command) -> Result<()>) -> Result<PathBuf> {
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

/// llama-cpp-python's two installs into the llama venv: (requirements,
/// pip flags). pip checks no hashes of the build tools it puts in an
/// isolated build environment, so the tools are installed first, from a
/// hashed file of their own, and the sdist is built with them
/// (`--no-build-isolation`). `--no-cache-dir`: pip would otherwise reuse the
/// wheel it built before, whatever the build environment now says.
const LLAMA_INSTALLS: [(&str, &[&str]); 2] = [
    (
        "benchmarks/llama-build-requirements.txt",
        &["--require-hashes", "--only-binary", ":all:"],
    ),
    (
        "benchmarks/llama-requirements.txt",
        &[
            "--require-hashes",
            "--no-binary",
            "llama-cpp-python",
            "--no-build-isolation",
            "--no-cache-dir",
        ],
    ),
];

/// llama.cpp built for this CPU (GGML_NATIVE) but without AMX, whose
/// instructions fault on the machines the benchmarks run on.
const LLAMA_BUILD_ENV: [(&str, &str); 3] = [
    (
        "CMAKE_ARGS",
        "-DGGML_NATIVE=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF",
    ),
    ("CFLAGS", "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"),
    ("CXXFLAGS", "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"),
];

/// A virtualenv with llama-cpp-python built from its sdist, beside the model
/// cache: `bench completion`'s anchor. Built once (the first build compiles
/// llama.cpp, about 10 minutes on two busy cores), and again when its stamp
/// changes: the build environment, each install's pip flags and
/// requirements.
fn llama_venv() -> Result<PathBuf> {
    let venv = model_cache()
        .parent()
        .unwrap_or(Path::new("."))
        .join("llama-venv");
    let mut want = String::new();
    for (name, value) in LLAMA_BUILD_ENV {
        want += &format!("{name}={value}\n");
    }
    for (file, flags) in LLAMA_INSTALLS {
        let requirements =
            std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        want += &format!("pip install {} -r {file}\n{requirements}", flags.join(" "));
    }
    let stamp = venv.join("stamp");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(venv);
    }
    // Not retried on every run: a failing build takes minutes to fail.
    let failed = venv.join("failed");
    if std::fs::read_to_string(&failed).ok().as_deref() == Some(want.as_str()) {
        bail!(
            "building {} failed before with the same requirements and flags; \
             delete it to try again",
            venv.display()
        );
    }
    let built = step("llama.cpp venv", || {
        eprintln!("compiling llama.cpp for this CPU, once: about 10 minutes on two cores");
        run(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv))?;
        for (file, flags) in LLAMA_INSTALLS {
            run(Command::new(venv_python(&venv))
                .args(["-m", "pip", "install", "--disable-pip-version-check"])
                .args(flags)
                .args(["-r", file])
                .envs(LLAMA_BUILD_ENV))?;
        }
        std::fs::write(&stamp, &want)?;
        Ok(())
    });
    if let Err(e) = built {
        // The venv may not exist if its creation failed.
        let _ = std::fs::write(&failed, &want);
        return Err(e);
    }
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

/// The command's main steps, numbered in its progress lines.
static PLAN: std::sync::OnceLock<(Instant, Vec<&'static str>)> = std::sync::OnceLock::new();

fn plan(steps: &[&'static str]) {
    let _ = PLAN.set((Instant::now(), steps.to_vec()));
}

/// Runs a step between progress lines: which step of how many, and the
/// minutes since the command started.
fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let started = Instant::now();
    let (position, since) = match PLAN.get() {
        Some((begun, steps)) => (
            steps
                .iter()
                .position(|s| *s == name)
                .map(|i| format!("[{}/{}] ", i + 1, steps.len()))
                .unwrap_or_default(),
            format!(" ({:.1} min in)", begun.elapsed().as_secs_f32() / 60.0),
        ),
        None => Default::default(),
    };
    eprintln!("==> {position}{name}{since}");
    f().with_context(|| format!("step [{name}] failed"))?;
    eprintln!(
        "==> {position}{name}: done in {:.1} s",
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
