//! A pool of warm instances per inference endpoint (Elasticsearch's
//! allocations): at most `max` run at once, `min` stay loaded, extra idle
//! ones are dropped after a while (adaptive allocations may scale to zero).
//! Models are loaded once per instance, never per request.
//!
//! All of the pool's state is one [`State`] behind one mutex, and every
//! change to it wakes the requests waiting for an instance ([`Notify`]).
//! A request takes an idle instance, or reserves a slot to load one while
//! fewer than `max` exist (loaded or loading); otherwise it waits, up to
//! `max_queue` requests at once, within its deadline.

use crate::runtime::{CallError, Instance, Runtime, TaskKind};
use es_wire::{Deadline, EsError};
use metrics::{gauge, histogram};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

pub struct PoolConfig {
    /// The inference id, for the metrics.
    pub endpoint: String,
    pub kind: TaskKind,
    pub model_dir: PathBuf,
    /// Where the instances run the model's graph.
    pub compute: es_wire::Compute,
    /// ONNX Runtime's intra-op threads per instance (`num_threads`).
    pub threads: usize,
    /// Instances kept loaded.
    pub min: usize,
    /// Instances running at once.
    pub max: usize,
    /// Requests waiting for an instance before new ones are refused with 429.
    pub max_queue: usize,
}

pub struct Pool {
    runtime: Arc<Runtime>,
    config: PoolConfig,
    state: Mutex<State>,
    /// Signalled on every change of `state` that may let a request go on.
    changed: Notify,
    /// Linear memory of this pool's instances, in bytes.
    memory: Arc<AtomicU64>,
}

#[derive(Default)]
struct State {
    idle: Vec<Instance>,
    /// Instances loaded or loading, idle or busy.
    live: usize,
    /// Instances loading.
    loading: usize,
    /// Requests waiting for an instance.
    waiting: usize,
}

impl Pool {
    pub fn new(runtime: Arc<Runtime>, config: PoolConfig) -> Arc<Self> {
        Arc::new(Self {
            runtime,
            config,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            memory: Arc::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the pool's gauges; called after every change of `state`.
    fn publish(&self, state: &State) {
        let id = self.config.endpoint.clone();
        let instances = |kind: &'static str, n: usize| {
            gauge!("inference_instances", "inference_id" => id.clone(), "state" => kind)
                .set(n as f64)
        };
        let loaded = state.live.saturating_sub(state.loading);
        instances("loaded", loaded);
        instances("loading", state.loading);
        instances("busy", loaded.saturating_sub(state.idle.len()));
        gauge!("inference_queue_depth", "inference_id" => id.clone()).set(state.waiting as f64);
        gauge!("inference_instance_memory_bytes", "inference_id" => id)
            .set(self.memory.load(Ordering::Relaxed) as f64);
    }

    /// Where this pool's instances run the graph.
    pub fn compute(&self) -> es_wire::Compute {
        self.config.compute
    }

    /// Requests waiting for an instance: all are busy, and no more may load.
    pub fn waiting(&self) -> usize {
        self.state().waiting
    }

    /// Loads instances up to `min` in the background.
    pub fn warm(self: &Arc<Self>) {
        let missing = {
            let mut state = self.state();
            let missing = self.config.min.saturating_sub(state.live);
            state.live += missing;
            missing
        };
        for _ in 0..missing {
            let pool = self.clone();
            tokio::task::spawn_blocking(move || match pool.create() {
                Ok(instance) => pool.release(Some(instance)),
                Err(e) => {
                    pool.release(None);
                    tracing::error!(error = %e, "warming an instance failed");
                }
            });
        }
    }

    fn create(&self) -> Result<Instance, EsError> {
        let started = Instant::now();
        {
            let mut state = self.state();
            state.loading += 1;
            self.publish(&state);
        }
        let instance = self.runtime.instantiate(
            self.config.kind,
            &self.config.model_dir,
            self.config.compute,
            self.config.threads,
            self.memory.clone(),
        );
        {
            let mut state = self.state();
            state.loading -= 1;
            self.publish(&state);
        }
        let instance = instance
            .map_err(|e| EsError::internal(format!("could not start a model instance: {e:#}")))?;
        histogram!("inference_model_load_seconds", "inference_id" => self.config.endpoint.clone())
            .record(started.elapsed());
        tracing::info!(
            model = %instance.model_id,
            ms = started.elapsed().as_millis() as u64,
            "instance loaded"
        );
        Ok(instance)
    }

    /// Gives an instance back (idle), or gives up its slot (`None`: it
    /// failed to load or was discarded), and wakes the waiting requests.
    fn release(&self, instance: Option<Instance>) {
        {
            let mut state = self.state();
            match instance {
                Some(i) => state.idle.push(i),
                None => state.live -= 1,
            }
            self.publish(&state);
        }
        self.changed.notify_waiters();
    }

    /// An idle instance, or `None`: a slot reserved to load one into;
    /// waiting for either within `deadline`.
    async fn acquire(&self, deadline: Deadline) -> Result<Option<Instance>, EsError> {
        let started = Instant::now();
        let waited = || {
            histogram!("inference_queue_wait_seconds", "inference_id" => self.config.endpoint.clone())
                .record(started.elapsed())
        };
        let mut queued = None;
        loop {
            // Registered before looking, so no change between the look and
            // the wait goes unnoticed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.state();
                if let Some(i) = state.idle.pop() {
                    self.publish(&state);
                    waited();
                    return Ok(Some(i));
                }
                if state.live < self.config.max.max(1) {
                    state.live += 1;
                    self.publish(&state);
                    waited();
                    return Ok(None);
                }
                if queued.is_none() {
                    if state.waiting >= self.config.max_queue {
                        return Err(EsError::overloaded(format!(
                            "too many requests are waiting for this endpoint ({} queued); retry later",
                            self.config.max_queue
                        )));
                    }
                    state.waiting += 1;
                    self.publish(&state);
                    // Counted out on drop: a client that leaves while queued
                    // (its future dropped) must not keep its place.
                    queued = Some(Queued(self));
                }
            }
            match deadline.instant() {
                Some(at) => tokio::time::timeout_at(at.into(), changed)
                    .await
                    .map_err(|_| deadline.error())?,
                None => changed.await,
            }
        }
    }

    /// Runs `call` on an instance, within `deadline`. A call that traps or
    /// times out loses its instance; a replacement is loaded in the background.
    ///
    /// The call runs on this task's own worker thread (`block_in_place`;
    /// tokio moves the thread's other tasks elsewhere meanwhile): the thread
    /// that read the request runs the model and writes the answer, with no
    /// hand-over to a blocking pool and back (on host tract, one input a
    /// request, pairs of runs gave 1-13% more requests a second). A client
    /// that leaves is noticed after the call, and the lease gives the
    /// instance back however the call ends, a panic included.
    pub async fn run<R, F>(self: &Arc<Self>, deadline: Deadline, call: F) -> Result<R, EsError>
    where
        F: FnOnce(&mut Instance, Option<Duration>) -> Result<R, CallError> + Send,
    {
        let lease = Lease {
            pool: self.clone(),
            instance: self.acquire(deadline).await?,
            returned: false,
        };
        tokio::task::block_in_place(|| {
            std::panic::catch_unwind(AssertUnwindSafe(|| lease.call(deadline, call)))
                .unwrap_or_else(|_| Err(EsError::internal("the inference call panicked")))
        })
    }

    /// Drops idle instances above `min` unused for `idle_for`.
    pub fn shrink(&self, idle_for: Duration) {
        let mut state = self.state();
        let now = Instant::now();
        while state.live > self.config.min {
            let Some(pos) = state
                .idle
                .iter()
                .position(|i| now.duration_since(i.last_used) >= idle_for)
            else {
                break;
            };
            state.idle.remove(pos);
            state.live -= 1;
        }
        self.publish(&state);
    }
}

/// An acquired instance, or a slot reserved to load one into. However the
/// call ends, even by a panic, its place goes back to the pool.
struct Lease {
    pool: Arc<Pool>,
    instance: Option<Instance>,
    returned: bool,
}

impl Lease {
    fn call<R>(
        mut self,
        deadline: Deadline,
        call: impl FnOnce(&mut Instance, Option<Duration>) -> Result<R, CallError>,
    ) -> Result<R, EsError> {
        let mut instance = match self.instance.take() {
            Some(i) => i,
            None => self.pool.create()?,
        };
        let result = call(&mut instance, deadline.remaining());
        self.returned = true;
        match result {
            Ok(value) => {
                self.pool.release(Some(instance));
                Ok(value)
            }
            Err(err) if err.instance_survives() => {
                self.pool.release(Some(instance));
                Err(err.to_es_error(deadline))
            }
            Err(err) => {
                drop(instance);
                self.pool.release(None);
                self.pool.warm();
                if let CallError::Trap(trap) = &err {
                    tracing::warn!(%trap, "instance trapped; replacing it");
                }
                Err(err.to_es_error(deadline))
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.returned {
            // A panic, a failed load, or a call never started: the slot is
            // free again, and a waiting request may load an instance into it.
            self.pool.release(None);
        }
    }
}

/// A request's place in the queue.
struct Queued<'a>(&'a Pool);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.waiting -= 1;
        self.0.publish(&state);
    }
}
