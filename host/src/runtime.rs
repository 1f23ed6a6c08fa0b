//! The wasmtime side: one engine, the task components (precompiled once and
//! cached), and sandboxed instances that each hold one loaded model.
//!
//! Sandbox of an instance: the model directory, read-only, at `/model`;
//! nothing else (no network, no other files, no environment); a memory cap;
//! and an execution deadline through epoch interruption. An encoder instance
//! built for host compute also gets `wasi:nn`, through which it may run its
//! endpoint's graph and nothing else (see [`crate::compute`]).

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// One set of bindings for every task: the `tasks` world exports all four
/// task interfaces, and each component exports one of them. Their shared
/// records (`edge:inference-types`) are generated once.
mod bindings {
    wasmtime::component::bindgen!({ path: "../wit", world: "tasks" });
}

use crate::compute::wasi_nn::{self, DeadlinePassed, NnState, NnView};
use crate::compute::HostCompute;
use bindings::edge::inference_types::types as wit;
use bindings::exports::edge::completion::completion;
use bindings::exports::edge::rerank::rerank;
use bindings::exports::edge::sparse_embedding::sparse_embedding;
use bindings::exports::edge::text_embedding::text_embedding;
use es_wire::{Compute, TaskError};

/// How often the epoch advances: the resolution of every deadline.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Where an instance sees its model directory.
const MODEL_DIR: &str = "/model";

/// The task components, one world each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    TextEmbedding,
    SparseEmbedding,
    Rerank,
    Completion,
}

impl TaskKind {
    pub const ALL: [TaskKind; 4] = [
        TaskKind::TextEmbedding,
        TaskKind::SparseEmbedding,
        TaskKind::Rerank,
        TaskKind::Completion,
    ];

    /// The component file name of a build, as `cargo xtask build` writes it;
    /// `None` for a build the task does not have.
    pub fn file_name(self, build: Build) -> Option<&'static str> {
        let index = match self {
            TaskKind::TextEmbedding => 0,
            TaskKind::SparseEmbedding => 1,
            TaskKind::Rerank => 2,
            TaskKind::Completion => 3,
        };
        match build {
            Build::Sandbox => Some(es_wire::COMPONENT_FILES[index]),
            Build::WasiNn => es_wire::WASI_NN_COMPONENT_FILES.get(index).copied(),
        }
    }

    /// The component serving an Elasticsearch task type.
    pub fn for_task_type(task: es_wire::TaskType) -> Self {
        use es_wire::TaskType as T;
        match task {
            T::TextEmbedding | T::Embedding => TaskKind::TextEmbedding,
            T::SparseEmbedding => TaskKind::SparseEmbedding,
            T::Rerank => TaskKind::Rerank,
            T::Completion | T::ChatCompletion => TaskKind::Completion,
        }
    }

    /// A task type's name, e.g. `text_embedding`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(Self::for_task_type(name.parse().ok()?))
    }
}

/// The two builds of a task component: the graph inside (tract in wasm), or
/// in the host through `wasi:nn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Build {
    Sandbox,
    WasiNn,
}

impl Build {
    pub const ALL: [Build; 2] = [Build::Sandbox, Build::WasiNn];

    fn for_compute(compute: Compute) -> Self {
        match compute {
            Compute::Sandbox => Build::Sandbox,
            Compute::Onnxruntime | Compute::Tract => Build::WasiNn,
        }
    }
}

/// Per-instance resource limits.
#[derive(Debug, Clone, Copy)]
pub struct InstanceLimits {
    /// Linear memory an instance may grow to.
    pub memory_bytes: usize,
    /// How long loading a model may take.
    pub load_timeout: Duration,
}

/// Why a call into an instance failed. Only `Task` leaves the instance usable.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The task refused or failed cleanly.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// The deadline passed: the instance was interrupted.
    #[error("the deadline passed")]
    Timeout,
    /// The instance trapped (panic, out of memory, a bug): it is discarded.
    #[error("the model instance failed and was replaced: {}", first_line(.0))]
    Trap(String),
}

impl CallError {
    /// Whether the instance may serve another call.
    pub fn instance_survives(&self) -> bool {
        matches!(self, CallError::Task(_))
    }

    /// The Elasticsearch error for a call made within `deadline`.
    pub fn to_es_error(&self, deadline: es_wire::Deadline) -> es_wire::EsError {
        match self {
            CallError::Task(e) => e.clone().into(),
            CallError::Timeout => deadline.error(),
            trap @ CallError::Trap(_) => es_wire::EsError::internal(trap.to_string()),
        }
    }
}

impl From<wasmtime::Error> for CallError {
    fn from(err: wasmtime::Error) -> Self {
        if err.downcast_ref::<DeadlinePassed>().is_some() {
            return CallError::Timeout;
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallError::Timeout,
            _ => CallError::Trap(format!("{err:?}")),
        }
    }
}

impl From<wit::Error> for CallError {
    fn from(e: wit::Error) -> Self {
        CallError::Task(match e {
            wit::Error::InvalidInput(m) => TaskError::InvalidInput(m),
            wit::Error::Model(m) => TaskError::Model(m),
            wit::Error::Inference(m) => TaskError::Inference(m),
        })
    }
}

impl From<es_wire::InputType> for wit::InputType {
    fn from(t: es_wire::InputType) -> Self {
        match t {
            es_wire::InputType::Search => wit::InputType::Search,
            es_wire::InputType::Ingest => wit::InputType::Ingest,
            es_wire::InputType::Classification => wit::InputType::Classification,
            es_wire::InputType::Clustering => wit::InputType::Clustering,
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// A task component, linked and ready to instantiate, with its export
/// looked up once.
struct Prepared {
    pre: InstancePre<Sandbox>,
    exports: Exports,
}

enum Exports {
    TextEmbedding(text_embedding::GuestIndices),
    SparseEmbedding(sparse_embedding::GuestIndices),
    Rerank(rerank::GuestIndices),
    Completion(completion::GuestIndices),
}

impl Prepared {
    fn new(kind: TaskKind, pre: InstancePre<Sandbox>) -> Result<Self> {
        let exports = match kind {
            TaskKind::TextEmbedding => {
                Exports::TextEmbedding(text_embedding::GuestIndices::new(&pre)?)
            }
            TaskKind::SparseEmbedding => {
                Exports::SparseEmbedding(sparse_embedding::GuestIndices::new(&pre)?)
            }
            TaskKind::Rerank => Exports::Rerank(rerank::GuestIndices::new(&pre)?),
            TaskKind::Completion => Exports::Completion(completion::GuestIndices::new(&pre)?),
        };
        Ok(Self { pre, exports })
    }

    fn instantiate(&self, store: &mut Store<Sandbox>) -> Result<Task> {
        let instance = self.pre.instantiate(&mut *store)?;
        Ok(match &self.exports {
            Exports::TextEmbedding(i) => Task::TextEmbedding(i.load(&mut *store, &instance)?),
            Exports::SparseEmbedding(i) => Task::SparseEmbedding(i.load(&mut *store, &instance)?),
            Exports::Rerank(i) => Task::Rerank(i.load(&mut *store, &instance)?),
            Exports::Completion(i) => Task::Completion(i.load(&mut *store, &instance)?),
        })
    }
}

pub struct Runtime {
    engine: Engine,
    components: HashMap<(TaskKind, Build), Prepared>,
    limits: InstanceLimits,
    /// The graphs instances built for `wasi:nn` run.
    pub host: HostCompute,
}

impl Runtime {
    /// Loads the given components, compiling each once and caching the
    /// native code in `cache_dir` (keyed by the component's hash and the
    /// engine's settings), so a restart deserialises in milliseconds.
    pub fn new(
        components: &HashMap<(TaskKind, Build), PathBuf>,
        cache_dir: &Path,
        limits: InstanceLimits,
        host: HostCompute,
    ) -> Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        wasi_nn::add_to_linker(&mut linker, |s: &mut Sandbox| NnView {
            state: &mut s.nn,
            table: &mut s.table,
        })?;
        std::fs::create_dir_all(cache_dir)
            .with_context(|| format!("creating {}", cache_dir.display()))?;
        let mut loaded = HashMap::new();
        for (i, (&(kind, build), path)) in components.iter().enumerate() {
            let progress = (i + 1, components.len());
            let component = load_component(&engine, path, cache_dir, progress)?;
            let pre = linker.instantiate_pre(&component).map_err(|e| {
                anyhow::Error::from(e).context(format!("linking {}", path.display()))
            })?;
            let prepared = Prepared::new(kind, pre)
                .with_context(|| format!("{} is not a {kind:?} component", path.display()))?;
            loaded.insert((kind, build), prepared);
        }
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        Ok(Self {
            engine,
            components: loaded,
            limits,
            host,
        })
    }

    /// Whether some build of `kind` is installed.
    pub fn has(&self, kind: TaskKind) -> bool {
        Build::ALL
            .iter()
            .any(|&b| self.components.contains_key(&(kind, b)))
    }

    /// Where an endpoint of `kind` asking for `asked` runs its graph: the
    /// fastest available by default; always the sandbox for a task without
    /// a `wasi:nn` build installed.
    pub fn resolve_compute(
        &self,
        kind: TaskKind,
        asked: Option<Compute>,
    ) -> Result<Compute, es_wire::EsError> {
        if !self.components.contains_key(&(kind, Build::WasiNn)) {
            return Ok(Compute::Sandbox);
        }
        self.host.resolve(asked)
    }

    /// A fresh instance of `kind` with the model in `model_dir` loaded, its
    /// graph running where `compute` says. Blocking: instantiation is fast,
    /// model loading takes up to a second.
    ///
    /// `threads`: ONNX Runtime's intra-op threads for its session. `memory`
    /// counts the linear memory of the instance while it lives.
    pub fn instantiate(
        &self,
        kind: TaskKind,
        model_dir: &Path,
        compute: Compute,
        threads: usize,
        memory: Arc<AtomicU64>,
    ) -> Result<Instance> {
        let build = Build::for_compute(compute);
        let component = self
            .components
            .get(&(kind, build))
            .with_context(|| format!("no {build:?} component for {kind:?} is installed"))?;
        let graph = match build {
            Build::WasiNn => Some(self.host.graph(model_dir, compute, threads)?),
            Build::Sandbox => None,
        };
        let wasi = WasiCtxBuilder::new()
            .inherit_stderr()
            .preopened_dir(model_dir, MODEL_DIR, FsPerms::ReadOnly)?
            .build();
        let limits = Limiter {
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            memory,
            mine: 0,
        };
        let mut store = Store::new(
            &self.engine,
            Sandbox {
                wasi,
                table: ResourceTable::new(),
                limits,
                nn: NnState::new(graph),
            },
        );
        store.limiter(|s| &mut s.limits);
        set_deadline(&mut store, Some(self.limits.load_timeout));
        let task = component.instantiate(&mut store)?;
        let info = match &task {
            Task::TextEmbedding(g) => g.call_load(&mut store, MODEL_DIR),
            Task::SparseEmbedding(g) => g.call_load(&mut store, MODEL_DIR),
            Task::Rerank(g) => g.call_load(&mut store, MODEL_DIR),
            Task::Completion(g) => g.call_load(&mut store, MODEL_DIR),
        }?;
        match info {
            Ok(info) => Ok(Instance {
                store,
                task,
                model_id: info.model_id,
                last_used: Instant::now(),
            }),
            Err(e) => bail!("loading the model in {}: {e:?}", model_dir.display()),
        }
    }
}

/// `progress` is (this one, of how many), for the log of a first start.
fn load_component(
    engine: &Engine,
    path: &Path,
    cache_dir: &Path,
    (n, of): (usize, usize),
) -> Result<Component> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading component {} (run `cargo xtask build`)",
            path.display()
        )
    })?;
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let digest = Sha256::digest(&bytes);
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("component");
    let key: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    let cached = cache_dir.join(format!("{stem}-{key}-{:016x}.cwasm", engine_hash.finish()));
    if !cached.exists() {
        let started = Instant::now();
        tracing::info!(component = %path.display(), "compiling component {n} of {of} (once; cached for next start)");
        let compiled = engine.precompile_component(&bytes)?;
        // Unique per process: test servers may compile the same component at once.
        let partial = cached.with_extension(format!("partial-{}", std::process::id()));
        std::fs::write(&partial, compiled)?;
        std::fs::rename(&partial, &cached)?;
        tracing::info!(
            seconds = started.elapsed().as_secs_f32(),
            "component compiled"
        );
    }
    // SAFETY: the file was written by `precompile_component` of an engine with
    // the same compatibility hash (it is in the name), into our own cache.
    Ok(unsafe { Component::deserialize_file(engine, &cached) }?)
}

/// Bounds the next call: epochs for the code in the sandbox, an instant
/// for the graph the host runs for it.
fn set_deadline(store: &mut Store<Sandbox>, timeout: Option<Duration>) {
    let ticks = match timeout {
        Some(t) => (t.as_millis() / EPOCH_TICK.as_millis()) as u64 + 1,
        None => u64::MAX / 2,
    };
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_trap();
    store.data_mut().nn.deadline = timeout.map(|t| Instant::now() + t);
}

pub struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limiter,
    nn: NnState,
}

/// The store's limits, counting the linear memory they grant into a shared
/// total (the pool's) until the instance is dropped.
struct Limiter {
    limits: StoreLimits,
    memory: Arc<AtomicU64>,
    /// What this instance added to `memory`.
    mine: u64,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let granted = self.limits.memory_growing(current, desired, maximum)?;
        if granted {
            let grown = (desired - current) as u64;
            self.mine += grown;
            self.memory.fetch_add(grown, Ordering::Relaxed);
        }
        Ok(granted)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        self.memory.fetch_sub(self.mine, Ordering::Relaxed);
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

enum Task {
    TextEmbedding(text_embedding::Guest),
    SparseEmbedding(sparse_embedding::Guest),
    Rerank(rerank::Guest),
    Completion(completion::Guest),
}

/// One sandboxed component instance with its model loaded.
pub struct Instance {
    store: Store<Sandbox>,
    task: Task,
    pub model_id: String,
    pub last_used: Instant,
}

pub struct Embedding {
    pub values: Vec<f32>,
    pub truncated: bool,
}

/// The tract kernels an instance runs (see the WIT `kernel-report`).
#[derive(Debug, serde::Serialize)]
pub struct KernelReport {
    pub isa: String,
    pub matmul_kernels: Vec<String>,
    pub tiers: Vec<String>,
}

impl Instance {
    fn begin(&mut self, timeout: Option<Duration>) {
        self.last_used = Instant::now();
        set_deadline(&mut self.store, timeout);
    }

    pub fn embed(
        &mut self,
        timeout: Option<Duration>,
        inputs: &[String],
        input_type: Option<es_wire::InputType>,
    ) -> Result<Vec<Embedding>, CallError> {
        self.begin(timeout);
        let Task::TextEmbedding(g) = &self.task else {
            return Err(wrong_task("text_embedding"));
        };
        let embeddings = g.call_embed(&mut self.store, inputs, input_type.map(Into::into))??;
        Ok(embeddings
            .into_iter()
            .map(|e| Embedding {
                values: e.values,
                truncated: e.truncated,
            })
            .collect())
    }

    pub fn sparse_embed(
        &mut self,
        timeout: Option<Duration>,
        inputs: &[String],
        input_type: Option<es_wire::InputType>,
    ) -> Result<Vec<es_wire::SparseEmbedding>, CallError> {
        self.begin(timeout);
        let Task::SparseEmbedding(g) = &self.task else {
            return Err(wrong_task("sparse_embedding"));
        };
        let embeddings = g.call_embed(&mut self.store, inputs, input_type.map(Into::into))??;
        Ok(embeddings
            .into_iter()
            .map(|e| es_wire::SparseEmbedding {
                tokens: e.tokens,
                truncated: e.truncated,
            })
            .collect())
    }

    /// One relevance score per document, in input order.
    pub fn rerank(
        &mut self,
        timeout: Option<Duration>,
        query: &str,
        documents: &[String],
        options: es_wire::RerankOptions,
    ) -> Result<Vec<f32>, CallError> {
        self.begin(timeout);
        let Task::Rerank(g) = &self.task else {
            return Err(wrong_task("rerank"));
        };
        let options = rerank::RerankOptions {
            long_document_strategy: match options.long_document_strategy {
                es_wire::LongDocumentStrategy::Truncate => rerank::LongDocumentStrategy::Truncate,
                es_wire::LongDocumentStrategy::Chunk => rerank::LongDocumentStrategy::Chunk,
            },
            max_chunks_per_doc: options.max_chunks_per_doc,
        };
        Ok(g.call_score(&mut self.store, query, documents, options)??)
    }

    /// Generates text, handing each chunk to `emit` as the model makes it;
    /// `emit` answering false (the client went away) stops the generation.
    pub fn generate(
        &mut self,
        timeout: Option<Duration>,
        prompt: es_wire::Prompt,
        options: es_wire::GenerationParams,
        mut emit: impl FnMut(&str) -> bool,
    ) -> Result<es_wire::GenerationEnd, CallError> {
        self.begin(timeout);
        let Self { store, task, .. } = self;
        let Task::Completion(guest) = task else {
            return Err(wrong_task("completion"));
        };
        let options = completion::GenerationOptions {
            max_tokens: options.max_tokens,
            temperature: options.temperature,
            top_p: options.top_p,
            seed: options.seed,
            stop: options.stop,
        };
        let started = match prompt {
            es_wire::Prompt::Text(p) => guest.call_complete(&mut *store, &p, &options),
            es_wire::Prompt::Chat(messages) => {
                let messages: Vec<completion::ChatMessage> = messages
                    .into_iter()
                    .map(|(role, content)| completion::ChatMessage { role, content })
                    .collect();
                guest.call_chat(&mut *store, &messages, &options)
            }
        }??;
        let generation = guest.generation();
        while let Some(text) = generation.call_next_chunk(&mut *store, started)?? {
            if !emit(&text) {
                break;
            }
        }
        let reason = generation.call_finish_reason(&mut *store, started)?;
        let usage = generation.call_usage(&mut *store, started)?;
        started.resource_drop(&mut *store)?;
        Ok(es_wire::GenerationEnd {
            finish_reason: reason.map(|r| match r {
                completion::FinishReason::Stop => "stop",
                completion::FinishReason::Length => "length",
            }),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        })
    }

    pub fn kernels(&mut self) -> Result<KernelReport, CallError> {
        self.begin(Some(Duration::from_secs(5)));
        let store = &mut self.store;
        let r = match &self.task {
            Task::TextEmbedding(g) => g.call_kernels(store),
            Task::SparseEmbedding(g) => g.call_kernels(store),
            Task::Rerank(g) => g.call_kernels(store),
            Task::Completion(g) => g.call_kernels(store),
        }?;
        Ok(KernelReport {
            isa: r.isa,
            matmul_kernels: r.matmul_kernels,
            tiers: r.tiers,
        })
    }
}

fn wrong_task(wanted: &str) -> CallError {
    CallError::Task(TaskError::Model(format!(
        "this instance does not serve {wanted}"
    )))
}
