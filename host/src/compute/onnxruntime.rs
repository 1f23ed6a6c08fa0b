//! ONNX Runtime through `ort`, loaded at run time (`load-dynamic`): nothing
//! is downloaded at build time, and the library is the one the model
//! tooling's pinned `onnxruntime` wheel ships.
//!
//! wasmtime-wasi-nn's own ONNX backend takes f32 inputs only and serialises
//! each graph behind one mutex; this one takes BERT's i64 ids and gives each
//! instance (or each generated sequence) a session of its own, with the
//! endpoint's `num_threads` intra-op threads (1 by default).

use super::{Backend, Context, Sequence, SequenceLimits};
use anyhow::{anyhow, bail, Context as _, Result};
use ml_core::{GeneratorConfig, Input, Output};
use ort::session::{RunOptions, Session};
use ort::value::{DynValue, Tensor, ValueType};
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

    /// The model in `onnx`, read once; each instance builds its own session
    /// with `threads` intra-op threads.
    pub fn graph(&self, onnx: &Path, output: &str, threads: usize) -> Result<Graph> {
        let bytes = std::fs::read(onnx).with_context(|| format!("reading {}", onnx.display()))?;
        let graph = Graph {
            environment: self.environment.clone(),
            bytes: Arc::from(bytes),
            output: output.to_string(),
            width: None,
            threads,
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

    /// The decoder in `onnx`, read once. Sessions are pooled: a sequence
    /// (one execution context) borrows one and gives it back when it ends.
    pub fn decoder(
        &self,
        onnx: &Path,
        config: &GeneratorConfig,
        threads: usize,
    ) -> Result<DecoderGraph> {
        let bytes = std::fs::read(onnx).with_context(|| format!("reading {}", onnx.display()))?;
        let (inputs, outputs) = config.graph_names();
        let graph = DecoderGraph {
            environment: self.environment.clone(),
            bytes: Arc::from(bytes),
            inputs,
            outputs,
            empty: [1, config.num_kv_heads, 0, config.head_dim],
            limits: SequenceLimits::new(config),
            sessions: Arc::default(),
            threads,
        };
        // One session up front: the file must load and take model.json's names.
        let first = session(&graph.environment, &graph.bytes, threads)?;
        let inputs = first.inputs().iter().map(|i| i.name());
        let outputs = first.outputs().iter().map(|o| o.name());
        if !inputs.eq(graph.inputs.iter().map(String::as_str))
            || !outputs.eq(graph.outputs.iter().map(String::as_str))
        {
            bail!(
                "{}: its inputs and outputs differ from model.json's; convert the model again",
                onnx.display()
            );
        }
        graph.sessions.lock().unwrap().push(Pooled {
            session: first,
            watchdog: Watchdog::start()?,
        });
        Ok(graph)
    }
}

fn session(
    environment: &ort::environment::Environment,
    bytes: &[u8],
    threads: usize,
) -> Result<Session> {
    Session::builder(environment)
        .and_then(|b| Ok(b.with_intra_threads(threads)?.with_inter_threads(1)?))
        .and_then(|mut b| b.commit_from_memory(bytes))
        .map_err(|e| anyhow!("ONNX Runtime cannot load the model: {e}"))
}

pub struct Graph {
    environment: Arc<ort::environment::Environment>,
    bytes: Arc<[u8]>,
    output: String,
    width: Option<usize>,
    threads: usize,
}

impl Graph {
    fn session(&self) -> Result<Session> {
        session(&self.environment, &self.bytes, self.threads)
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

/// A decoder graph: its file, names, and the sessions no sequence holds now.
pub struct DecoderGraph {
    environment: Arc<ort::environment::Environment>,
    bytes: Arc<[u8]>,
    /// ids, then each layer's past key and value.
    inputs: Vec<String>,
    /// logits, then each layer's present key and value.
    outputs: Vec<String>,
    /// The shape of a new sequence's (empty) past.
    empty: [usize; 4],
    limits: SequenceLimits,
    sessions: Arc<Mutex<Vec<Pooled>>>,
    threads: usize,
}

/// A session no sequence holds now, with its deadline watchdog: both are
/// kept for the next sequence, so an answer starts neither.
struct Pooled {
    session: Session,
    watchdog: Watchdog,
}

impl Backend for DecoderGraph {
    fn context(&self) -> Result<Box<dyn Context>> {
        let pooled = self.sessions.lock().unwrap().pop();
        let pooled = match pooled {
            Some(pooled) => pooled,
            None => Pooled {
                session: session(&self.environment, &self.bytes, self.threads)?,
                watchdog: Watchdog::start()?,
            },
        };
        Ok(Box::new(DecoderRun {
            pooled: Some(pooled),
            pool: self.sessions.clone(),
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
            empty: self.empty,
            past: None,
            sequence: Sequence::new(self.limits),
        }))
    }

    fn output_width(&self) -> Option<usize> {
        Some(self.limits.vocab)
    }
}

/// One sequence: a pooled session and the KV cache, as ONNX Runtime values
/// that go straight back in as the next step's past.
struct DecoderRun {
    pooled: Option<Pooled>,
    pool: Arc<Mutex<Vec<Pooled>>>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    empty: [usize; 4],
    past: Option<Vec<DynValue>>,
    sequence: Sequence,
}

impl DecoderRun {
    fn step(&mut self, ids: &[i64], deadline: Option<Instant>) -> Result<Vec<f32>> {
        let Pooled { session, watchdog } = self.pooled.as_mut().context("the session is gone")?;
        let ids = Tensor::from_array(([1, ids.len()], ids.to_vec()))?;
        let past = match self.past.take() {
            Some(past) => past,
            None => (1..self.inputs.len())
                .map(|_| Ok(Tensor::<f32>::from_array((self.empty, Vec::new()))?.into_dyn()))
                .collect::<Result<_>>()?,
        };
        let values: Vec<(String, DynValue)> = std::iter::once(ids.into_dyn())
            .chain(past)
            .zip(&self.inputs)
            .map(|(value, name)| (name.clone(), value))
            .collect();
        let options = Arc::new(RunOptions::new()?);
        watchdog.watch(deadline.map(|d| (d, options.clone())));
        let result = session.run_with_options(values, &options);
        watchdog.watch(None);
        let mut outputs = result.map_err(|e| anyhow!("ONNX Runtime: {e}"))?;
        let logits = outputs
            .remove(&self.outputs[0])
            .context("ONNX Runtime returned no logits")?;
        let present = self.outputs[1..]
            .iter()
            .map(|name| {
                outputs
                    .remove(name)
                    .with_context(|| format!("no output [{name}]"))
            })
            .collect::<Result<Vec<_>>>()?;
        let (_, logits) = logits
            .try_extract_tensor::<f32>()
            .map_err(|e| anyhow!("ONNX Runtime's logits are not an f32 tensor: {e}"))?;
        let logits = logits.to_vec();
        self.past = Some(present);
        Ok(logits)
    }
}

impl Context for DecoderRun {
    fn run(
        &mut self,
        _batch: usize,
        _sequence: usize,
        inputs: Vec<Input<'_>>,
        deadline: Option<Instant>,
    ) -> Result<Output> {
        let ids = self.sequence.ids(&inputs)?;
        let steps = ids.len();
        let logits = self.step(ids, deadline);
        let values = self.sequence.advance(steps, logits)?;
        Ok(Output {
            shape: vec![1, values.len()],
            values,
        })
    }
}

impl Drop for DecoderRun {
    /// The session goes back to the pool for the next sequence.
    fn drop(&mut self) {
        if let Some(pooled) = self.pooled.take() {
            self.pool.lock().unwrap().push(pooled);
        }
    }
}

/// Terminates a context's run when its deadline passes: one thread per
/// context, asleep while no run is watched (a thread per run would cost
/// more than a short run). Runs come and go far more often than deadlines
/// pass, so the thread is woken only when a run's deadline is earlier than
/// the time it sleeps until; otherwise it finds out when it wakes.
struct Watchdog {
    shared: Arc<(Mutex<Watched>, Condvar)>,
}

#[derive(Default)]
struct Watched {
    run: Option<(Instant, Arc<RunOptions>)>,
    /// When the thread wakes next by itself (`None`: only when notified).
    wakes: Option<Instant>,
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
                    let deadline = state.run.as_ref().map(|(deadline, _)| *deadline);
                    state.wakes = deadline;
                    state = match deadline {
                        None => changed.wait(state).unwrap(),
                        Some(deadline) => {
                            let wait = deadline.saturating_duration_since(Instant::now());
                            if wait.is_zero() {
                                if let Some((_, options)) = state.run.take() {
                                    let _ = options.terminate();
                                }
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
        let mut state = lock.lock().unwrap();
        let sooner = match (&run, state.wakes) {
            (Some((deadline, _)), Some(wakes)) => *deadline < wakes,
            (Some(_), None) => true,
            (None, _) => false,
        };
        state.run = run;
        if sooner {
            changed.notify_one();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, changed) = &*self.shared;
        lock.lock().unwrap().closed = true;
        changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ml_core::generation::ONNXRUNTIME_GRAPH;

    /// A decoder graph opens only with model.json's inputs and outputs, so a
    /// stale or foreign file is refused when the model loads, not midway
    /// through an answer. The converter's fused graph has them.
    #[test]
    fn a_decoder_graph_must_take_model_json_names() {
        let cache = es_wire::model_cache();
        let library = super::super::find_onnxruntime(&cache)
            .expect("no ONNX Runtime in the model cache: run `python3 models/fetch.py`");
        let runtime = Runtime::load(&library).unwrap();
        let model = cache.join("smollm2-135m-instruct");
        let config =
            GeneratorConfig::from_json(&std::fs::read(model.join("model.json")).unwrap()).unwrap();

        let encoder = cache.join("all-minilm-l6-v2/model.onnx");
        let err = runtime.decoder(&encoder, &config, 1).err().unwrap();
        assert!(
            format!("{err:#}").contains("differ from model.json's"),
            "{err:#}"
        );
        runtime
            .decoder(&model.join(ONNXRUNTIME_GRAPH), &config, 1)
            .unwrap();
    }
}
