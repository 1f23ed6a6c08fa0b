//! A pool of warm instances per inference endpoint (Elasticsearch's
//! allocations): at most `max` run at once, `min` stay loaded, extra idle
//! ones are dropped after a while (adaptive allocations may scale to zero).
//! Models are loaded once per instance, never per request.

use crate::runtime::{CallError, Instance, Runtime, TaskError, TaskKind};
use es_wire::EsError;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub struct PoolConfig {
    pub kind: TaskKind,
    pub model_dir: PathBuf,
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
    idle: Mutex<Vec<Instance>>,
    /// Signalled when an instance becomes idle or a load fails.
    ready: Condvar,
    /// Loaded instances, idle or busy.
    live: AtomicUsize,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
}

impl Pool {
    pub fn new(runtime: Arc<Runtime>, config: PoolConfig) -> Arc<Self> {
        let permits = Arc::new(Semaphore::new(config.max.max(1)));
        Arc::new(Self {
            runtime,
            config,
            idle: Mutex::new(Vec::new()),
            ready: Condvar::new(),
            live: AtomicUsize::new(0),
            permits,
            waiting: AtomicUsize::new(0),
        })
    }

    /// Loads instances up to `min` in the background.
    pub fn warm(self: &Arc<Self>) {
        let missing = self
            .config
            .min
            .saturating_sub(self.live.load(Ordering::SeqCst));
        for _ in 0..missing {
            let pool = self.clone();
            pool.live.fetch_add(1, Ordering::SeqCst);
            tokio::task::spawn_blocking(move || match pool.create() {
                Ok(instance) => pool.put_back(Some(instance)),
                Err(e) => {
                    pool.live.fetch_sub(1, Ordering::SeqCst);
                    pool.ready.notify_all();
                    tracing::error!(error = %e, "warming an instance failed");
                }
            });
        }
    }

    fn create(&self) -> Result<Instance, EsError> {
        let started = Instant::now();
        let instance = self
            .runtime
            .instantiate(self.config.kind, &self.config.model_dir)
            .map_err(|e| EsError::internal(format!("could not start a model instance: {e:#}")))?;
        tracing::info!(
            model = %instance.model_id,
            ms = started.elapsed().as_millis() as u64,
            "instance loaded"
        );
        Ok(instance)
    }

    /// Runs `call` on an instance, within `deadline`. A call that traps or
    /// times out loses its instance; a replacement is loaded in the background.
    pub async fn run<R, F>(
        self: &Arc<Self>,
        deadline: Option<Instant>,
        call: F,
    ) -> Result<R, EsError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Instance, Option<Duration>) -> Result<R, CallError> + Send + 'static,
    {
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let timed_out = || EsError::timed_out(timeout.unwrap_or_default());
        if self.waiting.load(Ordering::SeqCst) >= self.config.max_queue {
            return Err(EsError::overloaded(format!(
                "too many requests are waiting for this endpoint ({} queued); retry later",
                self.config.max_queue
            )));
        }
        // Counted out on drop: a client that leaves while queued (its future
        // dropped) must not hold a queue slot forever.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let waiting = Waiting(&self.waiting);
        let acquire = self.permits.clone().acquire_owned();
        let permit = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), acquire)
                .await
                .map_err(|_| timed_out()),
            None => Ok(acquire.await),
        };
        drop(waiting);
        let permit = permit?.expect("the semaphore is never closed");

        let pool = self.clone();
        let (instance, result) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut instance = match pool.take_or_reserve() {
                Some(i) => i,
                None => match pool.create() {
                    Ok(i) => i,
                    Err(e) => {
                        pool.live.fetch_sub(1, Ordering::SeqCst);
                        pool.ready.notify_all();
                        return (None, Err(Failure::Start(e)));
                    }
                },
            };
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let result = call(&mut instance, remaining).map_err(Failure::Call);
            (Some(instance), result)
        })
        .await
        .map_err(|e| EsError::internal(format!("inference worker failed: {e}")))?;

        match result {
            Ok(value) => {
                self.put_back(instance);
                Ok(value)
            }
            Err(Failure::Start(e)) => Err(e),
            Err(Failure::Call(err)) => {
                if err.instance_survives() {
                    self.put_back(instance);
                } else {
                    drop(instance);
                    self.live.fetch_sub(1, Ordering::SeqCst);
                    self.ready.notify_all();
                    self.warm();
                }
                Err(match err {
                    CallError::Task(TaskError::InvalidInput(m)) => EsError::illegal_argument(m),
                    CallError::Task(TaskError::Model(m)) => {
                        EsError::internal(format!("model error: {m}"))
                    }
                    CallError::Task(TaskError::Inference(m)) => {
                        EsError::internal(format!("inference failed: {m}"))
                    }
                    CallError::Timeout => timed_out(),
                    CallError::Trap(m) => {
                        tracing::warn!(trap = %m, "instance trapped; replacing it");
                        EsError::internal(format!(
                            "the model instance failed and was replaced: {}",
                            first_line(&m)
                        ))
                    }
                })
            }
        }
    }

    fn put_back(&self, instance: Option<Instance>) {
        if let Some(i) = instance {
            self.idle.lock().unwrap().push(i);
            self.ready.notify_one();
        }
    }

    /// An idle instance, or `None` with a slot reserved (`live` counted) for
    /// the caller to load one. While `max` instances exist, some still
    /// loading, waits for one of them rather than loading one more.
    fn take_or_reserve(&self) -> Option<Instance> {
        let mut idle = self.idle.lock().unwrap();
        loop {
            if let Some(i) = idle.pop() {
                return Some(i);
            }
            if self.live.load(Ordering::SeqCst) < self.config.max.max(1) {
                self.live.fetch_add(1, Ordering::SeqCst);
                return None;
            }
            idle = self
                .ready
                .wait_timeout(idle, Duration::from_millis(100))
                .unwrap()
                .0;
        }
    }

    /// Drops idle instances above `min` unused for `idle_for`.
    pub fn shrink(&self, idle_for: Duration) {
        let mut idle = self.idle.lock().unwrap();
        let now = Instant::now();
        while self.live.load(Ordering::SeqCst) > self.config.min {
            let Some(pos) = idle
                .iter()
                .position(|i| now.duration_since(i.last_used) >= idle_for)
            else {
                break;
            };
            idle.remove(pos);
            self.live.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

enum Failure {
    /// No instance could be loaded.
    Start(EsError),
    Call(CallError),
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
