//! The host's task backend for es-wire's request core: a pool of warm,
//! sandboxed instances per inference endpoint ([`Pool`]), created on first
//! use and made anew when the endpoint changes.
//!
//! A generation runs on one instance and its chunks flow through a channel,
//! so the core can stream them, and a client that goes away (the channel
//! dropped) stops the model within one chunk.

use crate::batching::Batches;
use crate::catalog::Models;
use crate::pool::{Pool, PoolConfig};
use crate::runtime::{Embedding, Instance, Runtime, TaskKind};
use es_wire::{
    Answer, Call, Deadline, Endpoint, EsError, GenerationEnd, GenerationParams, Prompt, Task,
    TaskType,
};
use metrics::{counter, histogram};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Idle instances above an endpoint's minimum are dropped after this long.
const IDLE_INSTANCE_TTL: Duration = Duration::from_secs(300);

pub struct Pools {
    runtime: Arc<Runtime>,
    pub models: Models,
    /// Requests waiting for an instance, per endpoint, before 429.
    max_queue: usize,
    /// Inputs one call may take from several queued embedding requests.
    max_batch_inputs: usize,
    /// By inference id. Shared with the task that shrinks idle pools.
    pools: Arc<Mutex<HashMap<String, Arc<Serving>>>>,
}

/// An endpoint's instances, and the queues that batch its embedding requests.
struct Serving {
    task: TaskType,
    pool: Arc<Pool>,
    dense: Arc<Batches<Embedding>>,
    sparse: Arc<Batches<es_wire::SparseEmbedding>>,
}

impl Pools {
    pub fn new(
        runtime: Arc<Runtime>,
        models: Models,
        max_queue: usize,
        max_batch_inputs: usize,
    ) -> Self {
        Self {
            runtime,
            models,
            max_queue,
            max_batch_inputs,
            pools: Arc::default(),
        }
    }

    /// Loads the minimum instances of `endpoints` in the background, and
    /// starts shrinking idle pools.
    pub fn warm(&self, endpoints: &[Endpoint]) {
        for endpoint in endpoints {
            match self.serving(endpoint).map(|s| s.pool.clone()) {
                Ok(pool) => {
                    tracing::info!(endpoint = %endpoint.inference_id, model = %endpoint.service_settings.model_id, compute = pool.compute().name(), "endpoint");
                    pool.warm()
                }
                Err(e) => {
                    tracing::warn!(endpoint = %endpoint.inference_id, error = %e, "endpoint cannot serve")
                }
            }
        }
        let pools = Arc::downgrade(&self.pools);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                let Some(pools) = pools.upgrade() else { break };
                let all: Vec<Arc<Serving>> = pools.lock().unwrap().values().cloned().collect();
                all.iter().for_each(|s| s.pool.shrink(IDLE_INSTANCE_TTL));
            }
        });
    }

    /// The task type of a served endpoint: the metrics label requests with
    /// it, and only requests to endpoints that exist.
    pub fn task_of(&self, id: &str) -> Option<TaskType> {
        self.pools.lock().unwrap().get(id).map(|s| s.task)
    }

    /// The instances serving `endpoint`, created on first use.
    fn serving(&self, endpoint: &Endpoint) -> Result<Arc<Serving>, EsError> {
        let mut pools = self.pools.lock().unwrap();
        if let Some(serving) = pools.get(&endpoint.inference_id) {
            return Ok(serving.clone());
        }
        let model_id = &endpoint.service_settings.model_id;
        let model = self
            .models
            .by_id
            .get(model_id)
            .ok_or_else(|| EsError::model_not_installed(model_id, &endpoint.inference_id))?;
        let (min, max) = allocations(endpoint);
        let kind = TaskKind::for_task_type(endpoint.task_type);
        let compute = self
            .runtime
            .resolve_compute(kind, endpoint.service_settings.compute)?;
        let pool = Pool::new(
            self.runtime.clone(),
            PoolConfig {
                endpoint: endpoint.inference_id.clone(),
                kind,
                model_dir: model.dir.clone(),
                compute,
                threads: endpoint.service_settings.num_threads as usize,
                min,
                max,
                max_queue: self.max_queue,
            },
        );
        let serving = Arc::new(Serving {
            task: endpoint.task_type,
            pool,
            dense: Batches::new(self.max_batch_inputs),
            sparse: Batches::new(self.max_batch_inputs),
        });
        pools.insert(endpoint.inference_id.clone(), serving.clone());
        Ok(serving)
    }
}

/// (instances kept warm, instances at most) from the endpoint's settings.
fn allocations(endpoint: &Endpoint) -> (usize, usize) {
    let s = &endpoint.service_settings;
    match (s.num_allocations, s.adaptive_allocations) {
        (_, Some(a)) if a.enabled => {
            let min = a.min_number_of_allocations.unwrap_or(0) as usize;
            let max = a
                .max_number_of_allocations
                .map_or(min.max(1), |m| m as usize);
            (min, max.max(min).max(1))
        }
        (Some(n), _) => (n as usize, n.max(1) as usize),
        _ => (1, 1),
    }
}

impl Pools {
    /// Starts a generation on an instance of `pool`; its chunks come through
    /// the returned [`Generation`].
    fn generate(
        pool: Arc<Pool>,
        endpoint: String,
        prompt: Prompt,
        params: GenerationParams,
        deadline: Deadline,
    ) -> Generation {
        let (tx, events) = mpsc::channel(32);
        let started = Instant::now();
        tokio::spawn(async move {
            let chunks = tx.clone();
            let id = endpoint.clone();
            let result = pool
                .run(deadline, move |instance, timeout| {
                    let mut first = true;
                    instance.generate(timeout, prompt, params, |chunk| {
                        if std::mem::take(&mut first) {
                            histogram!("inference_time_to_first_token_seconds", "inference_id" => id.clone())
                                .record(started.elapsed());
                        }
                        chunks
                            .blocking_send(Event::Chunk(chunk.to_string()))
                            .is_ok()
                    })
                })
                .await;
            if let Ok(end) = &result {
                let tokens = |kind: &'static str, n: u32| {
                    counter!("inference_tokens_total", "inference_id" => endpoint.clone(), "kind" => kind)
                        .increment(u64::from(n))
                };
                tokens("prompt", end.prompt_tokens);
                tokens("generated", end.completion_tokens);
            }
            let _ = tx
                .send(result.map_or_else(Event::Failed, Event::Done))
                .await;
        });
        Generation {
            events,
            end: GenerationEnd::default(),
        }
    }
}

impl es_wire::Backend for Pools {
    type Generation = Generation;

    async fn run(&self, call: Call<'_>) -> Result<Answer<Generation>, EsError> {
        let serving = self.serving(call.endpoint)?;
        let pool = &serving.pool;
        let deadline = call.deadline;
        let id = &call.endpoint.inference_id;
        let inputs = match &call.task {
            Task::Embed { inputs, .. } | Task::SparseEmbed { inputs, .. } => inputs.len(),
            Task::Rerank { documents, .. } => documents.len(),
            Task::Generate { .. } => 1,
        };
        counter!("inference_inputs_total", "inference_id" => id.clone(), "task" => serving.task.to_string())
            .increment(inputs as u64);
        Ok(match call.task {
            Task::Embed { inputs, input_type } => {
                let embeddings = serving
                    .dense
                    .run(pool, inputs, input_type, deadline, Instance::embed)
                    .await?;
                Answer::Embeddings(embeddings.into_iter().map(|e| e.values).collect())
            }
            Task::SparseEmbed { inputs, input_type } => Answer::SparseEmbeddings(
                serving
                    .sparse
                    .run(pool, inputs, input_type, deadline, Instance::sparse_embed)
                    .await?,
            ),
            Task::Rerank {
                query,
                documents,
                options,
            } => Answer::Scores(
                pool.run(deadline, move |i, timeout| {
                    i.rerank(timeout, &query, &documents, options)
                })
                .await?,
            ),
            Task::Generate { prompt, params } => Answer::Generation(Pools::generate(
                pool.clone(),
                id.clone(),
                prompt,
                params,
                deadline,
            )),
        })
    }

    fn check(&self, endpoint: &Endpoint) -> Result<(), EsError> {
        let kind = TaskKind::for_task_type(endpoint.task_type);
        self.runtime
            .resolve_compute(kind, endpoint.service_settings.compute)
            .map(drop)
    }

    fn endpoint_saved(&self, endpoint: &Endpoint) -> Result<(), EsError> {
        // In-flight requests finish on the old pool; new ones get the new one.
        self.pools.lock().unwrap().remove(&endpoint.inference_id);
        self.serving(endpoint)?.pool.warm();
        Ok(())
    }

    fn endpoint_deleted(&self, id: &str) {
        self.pools.lock().unwrap().remove(id);
    }
}

enum Event {
    Chunk(String),
    Done(GenerationEnd),
    Failed(EsError),
}

/// A generation running on an instance of the pool.
pub struct Generation {
    events: mpsc::Receiver<Event>,
    end: GenerationEnd,
}

impl es_wire::Generation for Generation {
    async fn next_chunk(&mut self) -> Result<Option<String>, EsError> {
        match self.events.recv().await {
            Some(Event::Chunk(c)) => Ok(Some(c)),
            Some(Event::Done(end)) => {
                self.end = end;
                Ok(None)
            }
            Some(Event::Failed(e)) => Err(e),
            None => Err(EsError::internal("the generation ended without an answer")),
        }
    }

    fn end(&self) -> GenerationEnd {
        self.end
    }
}
