//! Which waiting requests form the next batch: a plain function of the queue
//! and the clock, with no channels, threads or sleeping, so it is tested on
//! its own with paused time.

use std::time::Duration;

use tokio::time::Instant;

/// What the policy needs to know of a waiting request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Rows it carries along dimension 0 (1 for a model without batching).
    pub rows: usize,
    /// Requests batch together only when their keys are equal: the
    /// datatypes and non-batch dimensions of every input.
    pub key: Box<[u64]>,
    /// When it entered the queue.
    pub enqueued: Instant,
}

/// The next step for an idle model instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<K> {
    /// Run the requests with these ids (oldest first) as one batch.
    Run(Vec<K>),
    /// Nothing to run yet; look again at this instant (or when a request
    /// arrives).
    WaitUntil(Instant),
    /// The queue is empty.
    Idle,
}

/// Dynamic batching settings of one model version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most rows in one batch; 0 runs every request on its own.
    pub max_batch_size: usize,
    /// Batch sizes worth running at once when they can be formed exactly.
    pub preferred_batch_sizes: Vec<usize>,
    /// Longest the oldest request waits for others to join it.
    pub max_queue_delay: Duration,
}

impl BatchPolicy {
    /// A policy that never merges requests.
    pub fn unbatched() -> BatchPolicy {
        BatchPolicy {
            max_batch_size: 0,
            preferred_batch_sizes: Vec::new(),
            max_queue_delay: Duration::ZERO,
        }
    }

    /// Decides what an idle instance does with the waiting requests
    /// (oldest first, each with the id it is taken by) at `now`.
    ///
    /// The batch is always led by the oldest request, so nothing starves;
    /// it takes the following requests with the same key in arrival order,
    /// up to `max_batch_size` rows, stopping at the first that would not
    /// fit. It runs at once when full or when a prefix of it is exactly a
    /// preferred size (the largest such prefix); otherwise it waits until
    /// the oldest request has waited `max_queue_delay`, then runs what it
    /// has. It reads the queue only as far as the batch it forms, except
    /// when skipping requests of other shapes.
    pub fn decide<'w, K>(
        &self,
        queue: impl IntoIterator<Item = (K, &'w Waiting)>,
        now: Instant,
    ) -> Decision<K> {
        let mut queue = queue.into_iter();
        let Some((head_id, head)) = queue.next() else {
            return Decision::Idle;
        };
        if self.max_batch_size == 0 {
            return Decision::Run(vec![head_id]);
        }
        let mut picked = Vec::new();
        let mut rows = 0;
        let mut preferred_prefix = None;
        for (id, waiting) in std::iter::once((head_id, head)).chain(queue) {
            if waiting.key != head.key {
                continue;
            }
            if rows + waiting.rows > self.max_batch_size {
                break;
            }
            picked.push(id);
            rows += waiting.rows;
            if self.preferred_batch_sizes.contains(&rows) {
                preferred_prefix = Some(picked.len());
            }
            if rows == self.max_batch_size {
                return Decision::Run(picked);
            }
        }
        if let Some(len) = preferred_prefix {
            picked.truncate(len);
            return Decision::Run(picked);
        }
        let deadline = head.enqueued + self.max_queue_delay;
        if deadline <= now {
            Decision::Run(picked)
        } else {
            Decision::WaitUntil(deadline)
        }
    }
}

#[cfg(test)]
mod tests;
