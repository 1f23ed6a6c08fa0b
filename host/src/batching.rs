//! Cross-request batching of embeddings, as text-embeddings-inference does
//! it: while an endpoint's instances are all busy, embedding requests wait
//! here, and a request that gets an instance takes, besides its own inputs,
//! those of requests still waiting for one (of the same `input_type`, up to
//! an input budget) into one call, then answers each. A request that a
//! batch took returns with its answer at once.
//!
//! Only requests waiting for an instance join another's call: one whose
//! own call has an instance, or will have one because an instance is idle,
//! runs on it, so that two requests on two idle instances run side by side
//! rather than one after the other in one call. Every request that gets an
//! instance answers its own inputs, unless a batch took them already, so no
//! request is left queued with no call to come for it; and a request whose
//! client leaves is taken out of the queue, so no call is spent on it.
//!
//! One request's bad input must not fail its neighbours: when a batch of
//! several fails cleanly, each request runs again alone on the same
//! instance. A trap or a timeout fails the whole batch, as it would fail one
//! request, and the pool replaces the instance.

use crate::pool::Pool;
use crate::runtime::{CallError, Instance};
use es_wire::{Deadline, EsError, InputType};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// An instance's embedding call: `Instance::embed` or `Instance::sparse_embed`.
pub type EmbedCall<T> =
    fn(&mut Instance, Option<Duration>, &[String], Option<InputType>) -> Result<Vec<T>, CallError>;

/// The queue of one endpoint's embedding requests.
pub struct Batches<T> {
    queue: Mutex<VecDeque<Pending<T>>>,
    next_id: AtomicU64,
    /// Inputs one call takes from several requests at most; 1 turns
    /// batching off.
    max_inputs: usize,
}

struct Pending<T> {
    id: u64,
    inputs: Vec<String>,
    input_type: Option<InputType>,
    deadline: Deadline,
    reply: oneshot::Sender<Result<Vec<T>, EsError>>,
}

impl<T: Send + 'static> Batches<T> {
    pub fn new(max_inputs: usize) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::default(),
            next_id: AtomicU64::new(0),
            max_inputs,
        })
    }

    /// Embeds `inputs` on an instance of `pool`, in one call with the
    /// requests that wait for an instance then, or in one of theirs.
    pub async fn run(
        self: &Arc<Self>,
        pool: &Arc<Pool>,
        inputs: Vec<String>,
        input_type: Option<InputType>,
        deadline: Deadline,
        call: EmbedCall<T>,
    ) -> Result<Vec<T>, EsError> {
        if self.max_inputs <= 1 {
            return pool
                .run(deadline, move |i, timeout| {
                    call(i, timeout, &inputs, input_type)
                })
                .await;
        }
        let (reply, mut answer) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.queue.lock().unwrap().push_back(Pending {
            id,
            inputs,
            input_type,
            deadline,
            reply,
        });
        let _leaves = Unqueue { batches: self, id };
        let served = pool.run(deadline, |instance, _| {
            self.serve(instance, call, id, pool.waiting())
        });
        tokio::pin!(served);
        let ended = |_| Err(EsError::internal("the batch ended without an answer"));
        tokio::select! {
            // Answered by another request's call: its own wait for an
            // instance (dropped here) would only find nothing to do.
            biased;
            answer = &mut answer => answer.unwrap_or_else(ended),
            served = &mut served => {
                if self.unqueue(id) {
                    // No instance in time (429, 408), or a failed call: no
                    // batch took this request, so it leaves the queue with
                    // that error.
                    return Err(served.err().unwrap_or_else(|| deadline.error()));
                }
                answer.await.unwrap_or_else(ended)
            }
        }
    }

    /// Request `id`, unless a batch took it already, with up to `others`
    /// more queued requests of its `input_type` that fit in the input
    /// budget, oldest first.
    fn take(&self, id: u64, others: usize) -> Vec<Pending<T>> {
        let mut queue = self.queue.lock().unwrap();
        let Some(mine) = queue.iter().position(|p| p.id == id) else {
            return Vec::new();
        };
        let mine = queue.remove(mine).expect("found just now");
        let mut total = mine.inputs.len();
        let mut batch = vec![mine];
        let mut at = 0;
        while batch.len() <= others && at < queue.len() {
            let next = &queue[at];
            if next.input_type == batch[0].input_type
                && total + next.inputs.len() <= self.max_inputs
            {
                total += next.inputs.len();
                batch.extend(queue.remove(at));
            } else {
                at += 1;
            }
        }
        batch
    }

    /// On an instance: answers request `id`, unless a batch took it
    /// already, in one call with up to `waiting` requests that wait for an
    /// instance.
    fn serve(
        &self,
        instance: &mut Instance,
        call: EmbedCall<T>,
        id: u64,
        waiting: usize,
    ) -> Result<(), CallError> {
        match self.answer(instance, call, self.take(id, waiting)) {
            // A clean failure was answered to the requests it failed; only
            // a lost instance is the pool's business.
            Err(e) if !e.instance_survives() => Err(e),
            _ => Ok(()),
        }
    }

    /// On an instance: answers one batch of queued requests.
    fn answer(
        &self,
        instance: &mut Instance,
        call: EmbedCall<T>,
        batch: Vec<Pending<T>>,
    ) -> Result<(), CallError> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let input_type = first.input_type;
        // The call may run as long as the most patient request allows;
        // requests past their own deadline are answered 408 after it.
        let timeout = batch
            .iter()
            .map(|p| p.deadline.remaining())
            .reduce(|a, b| a.zip(b).map(|(a, b)| a.max(b)))
            .flatten();
        let inputs: Vec<String> = batch.iter().flat_map(|p| p.inputs.clone()).collect();
        match call(instance, timeout, &inputs, input_type) {
            Ok(mut results) => {
                for p in batch.into_iter().rev() {
                    let mine = results.split_off(results.len() - p.inputs.len());
                    let _ = p.reply.send(p.deadline.check().map(|()| mine));
                }
                Ok(())
            }
            Err(e) if e.instance_survives() && batch.len() > 1 => {
                let mut alone = batch.into_iter();
                while let Some(p) = alone.next() {
                    match call(instance, p.deadline.remaining(), &p.inputs, input_type) {
                        Ok(mine) => drop(p.reply.send(Ok(mine))),
                        Err(e) if e.instance_survives() => {
                            drop(p.reply.send(Err(e.to_es_error(p.deadline))))
                        }
                        Err(e) => {
                            fail(std::iter::once(p).chain(alone), &e);
                            return Err(e);
                        }
                    }
                }
                Ok(())
            }
            Err(e) => {
                fail(batch, &e);
                Err(e)
            }
        }
    }
}

impl<T> Batches<T> {
    /// Takes request `id` out of the queue; whether it was still there.
    fn unqueue(&self, id: u64) -> bool {
        let mut queue = self.queue.lock().unwrap();
        let at = queue.iter().position(|p| p.id == id);
        at.map(|at| queue.remove(at)).is_some()
    }
}

/// A queued request, taken out of the queue if its client leaves (its
/// future is dropped) before a batch takes it.
struct Unqueue<'a, T> {
    batches: &'a Batches<T>,
    id: u64,
}

impl<T> Drop for Unqueue<'_, T> {
    fn drop(&mut self) {
        self.batches.unqueue(self.id);
    }
}

/// Answers every request of `batch` with `error`.
fn fail<T>(batch: impl IntoIterator<Item = Pending<T>>, error: &CallError) {
    for p in batch {
        let _ = p.reply.send(Err(error.to_es_error(p.deadline)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Queues requests of `inputs` inputs each, of `input_type`; their ids.
    fn queue(batches: &Batches<()>, requests: &[(usize, Option<InputType>)]) -> Vec<u64> {
        let mut queue = batches.queue.lock().unwrap();
        requests
            .iter()
            .map(|&(inputs, input_type)| {
                let id = batches.next_id.fetch_add(1, Ordering::Relaxed);
                queue.push_back(Pending {
                    id,
                    inputs: vec![String::new(); inputs],
                    input_type,
                    deadline: Deadline::from(Instant::now(), None),
                    reply: oneshot::channel().0,
                });
                id
            })
            .collect()
    }

    fn ids_of(batch: &[Pending<()>]) -> Vec<u64> {
        batch.iter().map(|p| p.id).collect()
    }

    #[test]
    fn a_call_takes_its_own_request_and_only_as_many_others_as_wait() {
        let batches = Batches::new(32);
        let ids = queue(&batches, &[(1, None); 4]);
        // Nobody waits for an instance: the others have instances of their own.
        assert_eq!(ids_of(&batches.take(ids[2], 0)), [ids[2]]);
        // Two wait: the oldest two join.
        assert_eq!(ids_of(&batches.take(ids[3], 2)), [ids[3], ids[0], ids[1]]);
        // Taken already: nothing left for its own call to do.
        assert!(batches.take(ids[0], 4).is_empty());
    }

    #[test]
    fn a_batch_keeps_to_its_input_type_and_its_input_budget() {
        let batches = Batches::new(8);
        let search = Some(InputType::Search);
        let ids = queue(
            &batches,
            &[
                (2, search),
                (3, None),
                (7, search),
                (4, search),
                (2, search),
            ],
        );
        // Of the others, the one of another type and the one over the
        // budget stay; the rest join while they fit.
        assert_eq!(ids_of(&batches.take(ids[0], 4)), [ids[0], ids[3], ids[4]]);
        assert_eq!(ids_of(&batches.take(ids[1], 4)), [ids[1]]);
        assert_eq!(ids_of(&batches.take(ids[2], 4)), [ids[2]]);
    }
}
