//! Host compute: the encoder graphs that task components run through
//! `wasi:nn`.
//!
//! A task component keeps everything but the tensor graph in its sandbox:
//! tokenization, batching, pooling, SPLADE, scoring. It asks for its graph by
//! name (`load-by-name` with the model id) and sends `[batch, sequence]` i64
//! tensors; the host runs the graph natively and sends back one f32 tensor.
//! What the component may do is narrow:
//!
//! - it gets exactly one graph, the one of its endpoint's model, loaded by
//!   the host from that model's directory; any other name is `not-found`, and
//!   loading a graph from bytes is refused;
//! - every tensor is checked against the model's [`Limits`] before compute:
//!   names, dtype, rank, shape and byte length; a bad one is an
//!   `invalid-argument` error, never a host panic (the backend runs under
//!   `catch_unwind`);
//! - the request deadline bounds every call: it is checked before compute,
//!   ONNX Runtime's run is terminated when it passes, and a call past it
//!   stops the instance with a timeout (408);
//! - host memory for one call is bounded: inputs by [`Limits`] (at most
//!   8192 tokens), the output by `ml_core`'s 64 Mi values (256 MiB), and the
//!   tensors a component holds at once by [`MAX_TENSOR_BYTES`].
//!
//! Two backends: tract, natively (always there), and ONNX Runtime through
//! `ort`, loaded at run time from the `libonnxruntime` that the model
//! tooling's `onnxruntime` wheel ships. Each instance gets its own execution
//! context with one intra-op thread, so allocations scale across cores.

mod onnxruntime;
pub mod wasi_nn;

use anyhow::{bail, Context as _, Result};
use es_wire::Compute;
use ml_core::encoder::{max_batch_tokens, MAX_BATCH_OUTPUT_VALUES, MAX_BATCH_SIZE};
use ml_core::{Input, ModelConfig, Output};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Bytes of tensors one instance may hold at once (inputs it made, outputs
/// it has not dropped): one largest output and its inputs, with room.
pub const MAX_TENSOR_BYTES: usize = 4 * MAX_BATCH_OUTPUT_VALUES + (64 << 20);

/// One instance's execution context: it runs the graph, one call at a time.
pub trait Context: Send {
    /// Runs the graph; `deadline` may stop it early where the backend can.
    fn run(
        &mut self,
        batch: usize,
        sequence: usize,
        inputs: Vec<Input<'_>>,
        deadline: Option<Instant>,
    ) -> Result<Output>;
}

/// A backend's graph, loaded once per model and shared by its instances.
trait Backend: Send + Sync {
    fn context(&self) -> Result<Box<dyn Context>>;
    /// The size of the output's last dimension, if the graph fixes it.
    fn output_width(&self) -> Option<usize>;
}

/// What one compute call may send for a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// The graph's inputs, each `[batch, sequence]` i64.
    pub inputs: Vec<String>,
    pub max_batch: usize,
    pub max_sequence: usize,
    /// `batch × sequence` at most.
    pub max_tokens: usize,
}

impl Limits {
    fn new(config: &ModelConfig, output_width: Option<usize>) -> Self {
        Self {
            inputs: config.inputs.clone(),
            max_batch: MAX_BATCH_SIZE,
            max_sequence: config.max_sequence_length,
            max_tokens: max_batch_tokens(output_width.unwrap_or(1)),
        }
    }
}

/// A model's graph on one backend, as instances see it through `wasi:nn`.
pub struct HostGraph {
    /// The one name `load-by-name` answers to.
    pub name: String,
    pub compute: Compute,
    pub limits: Limits,
    backend: Box<dyn Backend>,
}

impl HostGraph {
    pub fn context(&self) -> Result<Box<dyn Context>> {
        self.backend.context()
    }
}

/// The host's backends and the graphs they loaded, by model directory.
pub struct HostCompute {
    onnxruntime: Option<onnxruntime::Runtime>,
    graphs: Mutex<HashMap<(PathBuf, Compute), Arc<HostGraph>>>,
}

impl HostCompute {
    /// Tract is always there; ONNX Runtime when `libonnxruntime` loads.
    pub fn new(onnxruntime_library: Option<&Path>) -> Self {
        let onnxruntime = onnxruntime_library.and_then(|path| {
            match onnxruntime::Runtime::load(path) {
                Ok(rt) => {
                    tracing::info!(library = %path.display(), "ONNX Runtime available for host compute");
                    Some(rt)
                }
                Err(e) => {
                    tracing::warn!(library = %path.display(), error = format!("{e:#}"), "ONNX Runtime unavailable; host compute uses tract");
                    None
                }
            }
        });
        Self {
            onnxruntime,
            graphs: Mutex::default(),
        }
    }

    /// Where an endpoint asking for `asked` runs its graph: by default the
    /// fastest available, ONNX Runtime, else tract in the host.
    pub fn resolve(&self, asked: Option<Compute>) -> Result<Compute, es_wire::EsError> {
        match asked {
            Some(Compute::Onnxruntime) if self.onnxruntime.is_none() => {
                Err(es_wire::EsError::illegal_argument(
                    "[service_settings.compute] is [onnxruntime], but this server has no ONNX Runtime: start it with --onnxruntime <path to libonnxruntime.so>, or choose [tract] or [sandbox]",
                ))
            }
            Some(c) => Ok(c),
            None if self.onnxruntime.is_some() => Ok(Compute::Onnxruntime),
            None => Ok(Compute::Tract),
        }
    }

    /// The graph of the model in `dir` on `compute`'s backend, loaded once.
    pub fn graph(&self, dir: &Path, compute: Compute) -> Result<Arc<HostGraph>> {
        let key = (dir.to_path_buf(), compute);
        if let Some(g) = self.graphs.lock().unwrap().get(&key) {
            return Ok(g.clone());
        }
        // Loaded outside the lock: optimising a graph takes a second.
        let config = ModelConfig::from_dir(dir)?;
        let onnx = dir.join("model.onnx");
        let started = Instant::now();
        let backend: Box<dyn Backend> = match compute {
            Compute::Tract => {
                let bytes =
                    std::fs::read(&onnx).with_context(|| format!("reading {}", onnx.display()))?;
                Box::new(Arc::new(ml_core::TractGraph::from_onnx(
                    &bytes,
                    &config.output,
                )?))
            }
            Compute::Onnxruntime => match &self.onnxruntime {
                Some(rt) => Box::new(rt.graph(&onnx, &config.output)?),
                None => bail!("ONNX Runtime is not available"),
            },
            Compute::Sandbox => bail!("a sandbox endpoint runs its graph in its component"),
        };
        tracing::info!(model = %config.model_id, compute = compute.name(), seconds = started.elapsed().as_secs_f32(), "graph loaded for host compute");
        let graph = Arc::new(HostGraph {
            name: config.model_id.clone(),
            compute,
            limits: Limits::new(&config, backend.output_width()),
            backend,
        });
        Ok(self
            .graphs
            .lock()
            .unwrap()
            .entry(key)
            .or_insert(graph)
            .clone())
    }
}

/// The `libonnxruntime` of the `onnxruntime` wheel the model tooling
/// installed into `<model cache>/venv` (`models/requirements.txt` pins it).
pub fn find_onnxruntime(model_cache: &Path) -> Option<PathBuf> {
    let lib = model_cache.join("venv/lib");
    std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .map(|python| python.path().join("site-packages/onnxruntime/capi"))
        .filter_map(|capi| std::fs::read_dir(capi).ok())
        .flat_map(|files| files.flatten().map(|f| f.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so."))
        })
}

/// tract's plan is immutable and shared by every instance's context.
impl Backend for Arc<ml_core::TractGraph> {
    fn context(&self) -> Result<Box<dyn Context>> {
        Ok(Box::new(self.clone()))
    }

    fn output_width(&self) -> Option<usize> {
        ml_core::TractGraph::output_width(self)
    }
}

impl Context for Arc<ml_core::TractGraph> {
    /// tract cannot be stopped mid-run: the deadline is checked between calls.
    fn run(
        &mut self,
        batch: usize,
        sequence: usize,
        inputs: Vec<Input<'_>>,
        _deadline: Option<Instant>,
    ) -> Result<Output> {
        ml_core::Graph::run(&**self, batch, sequence, inputs)
    }
}
