//! The wasmtime side: one engine, the task components (precompiled once and
//! cached), and sandboxed instances that each hold one loaded model.
//!
//! Sandbox of an instance: the model directory, read-only, at `/model`;
//! nothing else (no network, no other files, no environment); a memory cap;
//! and an execution deadline through epoch interruption.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

mod text_embedding {
    wasmtime::component::bindgen!({ path: "../wit", world: "text-embedding-task" });
}
mod sparse_embedding {
    wasmtime::component::bindgen!({ path: "../wit", world: "sparse-embedding-task" });
}
mod rerank {
    wasmtime::component::bindgen!({ path: "../wit", world: "rerank-task" });
}
mod completion {
    wasmtime::component::bindgen!({ path: "../wit", world: "completion-task" });
}

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

    /// The component file name, as `cargo xtask build` writes it.
    pub fn file_name(self) -> &'static str {
        match self {
            TaskKind::TextEmbedding => "text_embedding.wasm",
            TaskKind::SparseEmbedding => "sparse_embedding.wasm",
            TaskKind::Rerank => "rerank.wasm",
            TaskKind::Completion => "completion.wasm",
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

/// Per-instance resource limits.
#[derive(Debug, Clone, Copy)]
pub struct InstanceLimits {
    /// Linear memory an instance may grow to.
    pub memory_bytes: usize,
    /// How long loading a model may take.
    pub load_timeout: Duration,
}

/// Why a call into an instance failed. Only `Task` leaves the instance usable.
#[derive(Debug)]
pub enum CallError {
    /// The task refused or failed cleanly.
    Task(TaskError),
    /// The deadline passed: the instance was interrupted.
    Timeout,
    /// The instance trapped (panic, out of memory, a bug): it is discarded.
    Trap(String),
}

#[derive(Debug)]
pub enum TaskError {
    InvalidInput(String),
    Model(String),
    Inference(String),
}

impl CallError {
    fn from_wasmtime(err: wasmtime::Error) -> Self {
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallError::Timeout,
            _ => CallError::Trap(format!("{err:?}")),
        }
    }

    /// Whether the instance may serve another call.
    pub fn instance_survives(&self) -> bool {
        matches!(self, CallError::Task(_))
    }
}

pub struct Runtime {
    engine: Engine,
    components: HashMap<TaskKind, Component>,
    linker: Linker<Sandbox>,
    limits: InstanceLimits,
}

impl Runtime {
    /// Loads the given components, compiling each once and caching the
    /// native code in `cache_dir` (keyed by the component's hash and the
    /// engine's settings), so a restart deserialises in milliseconds.
    pub fn new(
        components: &HashMap<TaskKind, PathBuf>,
        cache_dir: &Path,
        limits: InstanceLimits,
    ) -> Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        std::fs::create_dir_all(cache_dir)
            .with_context(|| format!("creating {}", cache_dir.display()))?;
        let mut loaded = HashMap::new();
        for (&kind, path) in components {
            loaded.insert(kind, load_component(&engine, path, cache_dir)?);
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
            linker,
            limits,
        })
    }

    pub fn has(&self, kind: TaskKind) -> bool {
        self.components.contains_key(&kind)
    }

    /// A fresh instance of `kind` with the model in `model_dir` loaded.
    /// Blocking: instantiation is fast, model loading takes up to a second.
    pub fn instantiate(&self, kind: TaskKind, model_dir: &Path) -> Result<Instance> {
        let component = self
            .components
            .get(&kind)
            .with_context(|| format!("no component for {kind:?} is installed"))?;
        let wasi = WasiCtxBuilder::new()
            .inherit_stderr()
            .preopened_dir(model_dir, MODEL_DIR, FsPerms::ReadOnly)?
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            &self.engine,
            Sandbox {
                wasi,
                table: ResourceTable::new(),
                limits,
            },
        );
        store.limiter(|s| &mut s.limits);
        set_deadline(&mut store, Some(self.limits.load_timeout));
        let loaded = match kind {
            TaskKind::TextEmbedding => {
                let b = text_embedding::TextEmbeddingTask::instantiate(
                    &mut store,
                    component,
                    &self.linker,
                )?;
                let info = b
                    .edge_inference_text_embedding()
                    .call_load(&mut store, MODEL_DIR)?;
                info.map(|i| (Task::TextEmbedding(b), i.model_id))
                    .map_err(|e| format!("{e:?}"))
            }
            TaskKind::SparseEmbedding => {
                let b = sparse_embedding::SparseEmbeddingTask::instantiate(
                    &mut store,
                    component,
                    &self.linker,
                )?;
                let info = b
                    .edge_inference_sparse_embedding()
                    .call_load(&mut store, MODEL_DIR)?;
                info.map(|i| (Task::SparseEmbedding(b), i.model_id))
                    .map_err(|e| format!("{e:?}"))
            }
            TaskKind::Rerank => {
                let b = rerank::RerankTask::instantiate(&mut store, component, &self.linker)?;
                let info = b.edge_inference_rerank().call_load(&mut store, MODEL_DIR)?;
                info.map(|i| (Task::Rerank(b), i.model_id))
                    .map_err(|e| format!("{e:?}"))
            }
            TaskKind::Completion => {
                let b =
                    completion::CompletionTask::instantiate(&mut store, component, &self.linker)?;
                let info = b
                    .edge_inference_completion()
                    .call_load(&mut store, MODEL_DIR)?;
                info.map(|i| (Task::Completion(b), i.model_id))
                    .map_err(|e| format!("{e:?}"))
            }
        };
        match loaded {
            Ok((task, model_id)) => Ok(Instance {
                store,
                task,
                model_id,
                last_used: Instant::now(),
            }),
            Err(e) => bail!("loading the model in {}: {e}", model_dir.display()),
        }
    }
}

fn load_component(engine: &Engine, path: &Path, cache_dir: &Path) -> Result<Component> {
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
        tracing::info!(component = %path.display(), "compiling component (once; cached for next start)");
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

fn set_deadline(store: &mut Store<Sandbox>, timeout: Option<Duration>) {
    let ticks = match timeout {
        Some(t) => (t.as_millis() / EPOCH_TICK.as_millis()) as u64 + 1,
        None => u64::MAX / 2,
    };
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_trap();
}

pub struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
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
    TextEmbedding(text_embedding::TextEmbeddingTask),
    SparseEmbedding(sparse_embedding::SparseEmbeddingTask),
    Rerank(rerank::RerankTask),
    Completion(completion::CompletionTask),
}

/// What to generate from.
pub enum Prompt {
    Text(String),
    /// `(role, content)` messages, rendered with the model's chat template.
    Chat(Vec<(String, String)>),
}

/// How a generation ended.
#[derive(Debug, Clone)]
pub struct GenerationSummary {
    /// `stop` or `length`; none when the caller stopped it.
    pub finish_reason: Option<&'static str>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
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

pub struct SparseEmbedding {
    pub tokens: Vec<(String, f32)>,
    pub truncated: bool,
}

/// The tract kernels an instance runs (see the WIT `kernel-report`).
#[derive(Debug, serde::Serialize)]
pub struct KernelReport {
    pub isa: String,
    pub matmul_kernels: Vec<String>,
    pub tiers: Vec<String>,
}

macro_rules! task_error {
    ($module:ident, $err:expr) => {{
        use $module::edge::inference::types::Error as E;
        CallError::Task(match $err {
            E::InvalidInput(m) => TaskError::InvalidInput(m),
            E::Model(m) => TaskError::Model(m),
            E::Inference(m) => TaskError::Inference(m),
        })
    }};
}

macro_rules! input_type {
    ($module:ident, $t:expr) => {{
        use $module::edge::inference::types::InputType as I;
        $t.map(|t| match t {
            es_wire::InputType::Search => I::Search,
            es_wire::InputType::Ingest => I::Ingest,
            es_wire::InputType::Classification => I::Classification,
            es_wire::InputType::Clustering => I::Clustering,
        })
    }};
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
        let Task::TextEmbedding(b) = &self.task else {
            return Err(wrong_task("text_embedding"));
        };
        let result = b
            .edge_inference_text_embedding()
            .call_embed(
                &mut self.store,
                inputs,
                input_type!(text_embedding, input_type),
            )
            .map_err(CallError::from_wasmtime)?;
        result
            .map(|v| {
                v.into_iter()
                    .map(|e| Embedding {
                        values: e.values,
                        truncated: e.truncated,
                    })
                    .collect()
            })
            .map_err(|e| task_error!(text_embedding, e))
    }

    pub fn sparse_embed(
        &mut self,
        timeout: Option<Duration>,
        inputs: &[String],
        input_type: Option<es_wire::InputType>,
    ) -> Result<Vec<SparseEmbedding>, CallError> {
        self.begin(timeout);
        let Task::SparseEmbedding(b) = &self.task else {
            return Err(wrong_task("sparse_embedding"));
        };
        let result = b
            .edge_inference_sparse_embedding()
            .call_embed(
                &mut self.store,
                inputs,
                input_type!(sparse_embedding, input_type),
            )
            .map_err(CallError::from_wasmtime)?;
        result
            .map(|v| {
                v.into_iter()
                    .map(|e| SparseEmbedding {
                        tokens: e.tokens,
                        truncated: e.truncated,
                    })
                    .collect()
            })
            .map_err(|e| task_error!(sparse_embedding, e))
    }

    /// One relevance score per document, in input order.
    pub fn rerank(
        &mut self,
        timeout: Option<Duration>,
        query: &str,
        documents: &[String],
        strategy: es_wire::LongDocumentStrategy,
        max_chunks_per_doc: Option<u32>,
    ) -> Result<Vec<f32>, CallError> {
        use rerank::exports::edge::inference::rerank::{LongDocumentStrategy as S, RerankOptions};
        self.begin(timeout);
        let Task::Rerank(b) = &self.task else {
            return Err(wrong_task("rerank"));
        };
        let options = RerankOptions {
            long_document_strategy: match strategy {
                es_wire::LongDocumentStrategy::Truncate => S::Truncate,
                es_wire::LongDocumentStrategy::Chunk => S::Chunk,
            },
            max_chunks_per_doc: max_chunks_per_doc.unwrap_or(0),
        };
        b.edge_inference_rerank()
            .call_score(&mut self.store, query, documents, options)
            .map_err(CallError::from_wasmtime)?
            .map_err(|e| task_error!(rerank, e))
    }

    /// Generates text, handing each chunk to `emit` as the model makes it;
    /// `emit` answering false (the client went away) stops the generation.
    pub fn generate(
        &mut self,
        timeout: Option<Duration>,
        prompt: Prompt,
        options: es_wire::GenerationParams,
        mut emit: impl FnMut(&str) -> bool,
    ) -> Result<GenerationSummary, CallError> {
        use completion::exports::edge::inference::completion as wit;
        self.begin(timeout);
        let Self { store, task, .. } = self;
        let Task::Completion(b) = task else {
            return Err(wrong_task("completion"));
        };
        let guest = b.edge_inference_completion();
        let options = wit::GenerationOptions {
            max_tokens: options.max_tokens,
            temperature: options.temperature,
            top_p: options.top_p,
            seed: options.seed,
            stop: options.stop,
        };
        let started = match prompt {
            Prompt::Text(p) => guest.call_complete(&mut *store, &p, &options),
            Prompt::Chat(messages) => {
                let messages: Vec<wit::ChatMessage> = messages
                    .into_iter()
                    .map(|(role, content)| wit::ChatMessage { role, content })
                    .collect();
                guest.call_chat(&mut *store, &messages, &options)
            }
        }
        .map_err(CallError::from_wasmtime)?
        .map_err(|e| task_error!(completion, e))?;
        let generation = guest.generation();
        loop {
            let chunk = generation
                .call_next_chunk(&mut *store, started)
                .map_err(CallError::from_wasmtime)?
                .map_err(|e| task_error!(completion, e))?;
            match chunk {
                Some(text) if emit(&text) => {}
                _ => break,
            }
        }
        let reason = generation
            .call_finish_reason(&mut *store, started)
            .map_err(CallError::from_wasmtime)?;
        let usage = generation
            .call_usage(&mut *store, started)
            .map_err(CallError::from_wasmtime)?;
        started
            .resource_drop(&mut *store)
            .map_err(CallError::from_wasmtime)?;
        Ok(GenerationSummary {
            finish_reason: reason.map(|r| match r {
                wit::FinishReason::Stop => "stop",
                wit::FinishReason::Length => "length",
            }),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        })
    }

    pub fn kernels(&mut self) -> Result<KernelReport, CallError> {
        self.begin(Some(Duration::from_secs(5)));
        macro_rules! report {
            ($r:expr) => {{
                let r = $r.map_err(CallError::from_wasmtime)?;
                KernelReport {
                    isa: r.isa,
                    matmul_kernels: r.matmul_kernels,
                    tiers: r.tiers,
                }
            }};
        }
        Ok(match &self.task {
            Task::TextEmbedding(b) => report!(b
                .edge_inference_text_embedding()
                .call_kernels(&mut self.store)),
            Task::SparseEmbedding(b) => report!(b
                .edge_inference_sparse_embedding()
                .call_kernels(&mut self.store)),
            Task::Rerank(b) => report!(b.edge_inference_rerank().call_kernels(&mut self.store)),
            Task::Completion(b) => {
                report!(b.edge_inference_completion().call_kernels(&mut self.store))
            }
        })
    }
}

fn wrong_task(wanted: &str) -> CallError {
    CallError::Task(TaskError::Model(format!(
        "this instance does not serve {wanted}"
    )))
}
