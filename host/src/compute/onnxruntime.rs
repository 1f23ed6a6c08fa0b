//! ONNX Runtime through `ort`, loaded at run time (`load-dynamic`): nothing
//! is downloaded at build time, and the library is the one the model
//! tooling's pinned `onnxruntime` wheel ships.
//!
//! wasmtime-wasi-nn's own ONNX backend takes f32 inputs only and serialises
//! each graph behind one mutex; this one takes BERT's i64 ids and gives each
//! instance a session of its own with one intra-op thread.

use super::{Backend, Context};
use anyhow::{anyhow, bail, Context as _, Result};
use ml_core::{Input, Output};
use ort::session::{RunOptions, Session};
use ort::value::{Tensor, ValueType};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// The loaded library and its one environment.
pub struct Runtime {
    environment: Arc<ort::environment::Environment>,
}

impl Runtime {
    pub fn load(library: &Path) -> Result<Self> {
        let environment = ort::init_from(library)
            .map_err(|e| anyhow!("loading {}: {e}", library.display()))?
            .with_name("inference-host")
            .with_telemetry(false)
            .build()
            .map_err(|e| anyhow!("starting ONNX Runtime: {e}"))?;
        Ok(Self {
            environment: Arc::new(environment),
        })
    }

    /// The model in `onnx`, read once; each instance builds its own session.
    pub fn graph(&self, onnx: &Path, output: &str) -> Result<Graph> {
        let bytes = std::fs::read(onnx).with_context(|| format!("reading {}", onnx.display()))?;
        let graph = Graph {
            environment: self.environment.clone(),
            bytes: Arc::from(bytes),
            output: output.to_string(),
            width: None,
        };
        // One session up front: the file must load, and it tells the output width.
        let probe = graph.session()?;
        let width = probe
            .outputs()
            .iter()
            .find(|o| o.name() == output)
            .or(probe.outputs().first())
            .and_then(|o| match o.dtype() {
                ValueType::Tensor { shape, .. } => shape.last().copied(),
                _ => None,
            })
            .and_then(|w| usize::try_from(w).ok());
        Ok(Graph { width, ..graph })
    }
}

pub struct Graph {
    environment: Arc<ort::environment::Environment>,
    bytes: Arc<[u8]>,
    output: String,
    width: Option<usize>,
}

impl Graph {
    fn session(&self) -> Result<Session> {
        Session::builder(&self.environment)
            .and_then(|b| Ok(b.with_intra_threads(1)?.with_inter_threads(1)?))
            .and_then(|mut b| b.commit_from_memory(&self.bytes))
            .map_err(|e| anyhow!("ONNX Runtime cannot load the model: {e}"))
    }
}

impl Backend for Graph {
    fn context(&self) -> Result<Box<dyn Context>> {
        Ok(Box::new(Run {
            session: self.session()?,
            output: self.output.clone(),
            watchdog: Watchdog::start()?,
        }))
    }

    fn output_width(&self) -> Option<usize> {
        self.width
    }
}

struct Run {
    session: Session,
    output: String,
    watchdog: Watchdog,
}

impl Context for Run {
    fn run(
        &mut self,
        batch: usize,
        sequence: usize,
        inputs: Vec<Input<'_>>,
        deadline: Option<Instant>,
    ) -> Result<Output> {
        let mut values = Vec::with_capacity(inputs.len());
        for input in inputs {
            let tensor = Tensor::from_array(([batch, sequence], input.values))?;
            values.push((input.name.to_string(), tensor.into_dyn()));
        }
        let options = Arc::new(RunOptions::new()?);
        self.watchdog.watch(deadline.map(|d| (d, options.clone())));
        let result = self.session.run_with_options(values, &options);
        self.watchdog.watch(None);
        let outputs = result.map_err(|e| anyhow!("ONNX Runtime: {e}"))?;
        if outputs.len() == 0 {
            bail!("ONNX Runtime returned no output");
        }
        let output = match outputs.get(&self.output) {
            Some(o) => o,
            None => &outputs[0],
        };
        let (shape, data) = output
            .try_extract_tensor::<f32>()
            .map_err(|e| anyhow!("ONNX Runtime's output is not an f32 tensor: {e}"))?;
        Ok(Output {
            shape: shape.iter().map(|&d| d as usize).collect(),
            values: data.to_vec(),
        })
    }
}

/// Terminates a context's run when its deadline passes: one thread per
/// context, asleep while no run is watched (a thread per run would cost
/// more than a short run).
struct Watchdog {
    shared: Arc<(Mutex<Watched>, Condvar)>,
}

#[derive(Default)]
struct Watched {
    run: Option<(Instant, Arc<RunOptions>)>,
    closed: bool,
}

impl Watchdog {
    fn start() -> Result<Self> {
        let shared = Arc::new((Mutex::new(Watched::default()), Condvar::new()));
        let watched = shared.clone();
        std::thread::Builder::new()
            .name("onnxruntime-deadline".into())
            .spawn(move || {
                let (lock, changed) = &*watched;
                let mut state = lock.lock().unwrap();
                while !state.closed {
                    state = match &state.run {
                        None => changed.wait(state).unwrap(),
                        Some((deadline, options)) => {
                            let wait = deadline.saturating_duration_since(Instant::now());
                            if wait.is_zero() {
                                let _ = options.terminate();
                                state.run = None;
                                state
                            } else {
                                changed.wait_timeout(state, wait).unwrap().0
                            }
                        }
                    };
                }
            })?;
        Ok(Self { shared })
    }

    /// Watches a run until its deadline (`None`: no run now).
    fn watch(&self, run: Option<(Instant, Arc<RunOptions>)>) {
        let (lock, changed) = &*self.shared;
        lock.lock().unwrap().run = run;
        changed.notify_one();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, changed) = &*self.shared;
        lock.lock().unwrap().closed = true;
        changed.notify_one();
    }
}
