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
    /// With Triton's DELAY timeout action: from this instant on it yields
    /// to every request of its priority that has not timed out.
    pub delayed_after: Option<Instant>,
}

impl Waiting {
    /// A request that arrived `enqueued`, with no DELAY timeout.
    pub fn new(rows: usize, key: Box<[u64]>, enqueued: Instant) -> Waiting {
        Waiting {
            rows,
            key,
            enqueued,
            delayed_after: None,
        }
    }

    fn delayed(&self, now: Instant) -> bool {
        self.delayed_after.is_some_and(|t| t <= now)
    }
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

    /// Decides what an idle instance does with the waiting requests (in
    /// service order: by priority, then oldest first; each with the id it
    /// is taken by) at `now`, with batches of at most `max_batch_size`
    /// rows. See [`BatchPolicy::decide_within`].
    pub fn decide<'w, K, I>(&self, queue: I, now: Instant) -> Decision<K>
    where
        I: IntoIterator<Item = (K, &'w Waiting)>,
        I::IntoIter: Clone,
    {
        self.decide_within(queue, self.max_batch_size, now)
    }

    /// [`BatchPolicy::decide`] with a batch limit of `limit` rows (the
    /// batch size a model learned, when the server picks it).
    ///
    /// The batch is led by the first request in service order that has not
    /// been delayed (DELAY timeout action), so nothing starves; it takes
    /// the following requests with the same key in that order, up to
    /// `limit` rows, stopping at the first that would not fit. A leading
    /// request larger than the limit runs alone (it is run in chunks). The
    /// batch runs at once when full or when a prefix of it is exactly a
    /// preferred size (the largest such prefix); otherwise it waits until
    /// its leading request has waited `max_queue_delay`, then runs what it
    /// has. It reads the queue only as far as the batch it forms, except
    /// when skipping requests of other shapes or delayed ones.
    pub fn decide_within<'w, K, I>(&self, queue: I, limit: usize, now: Instant) -> Decision<K>
    where
        I: IntoIterator<Item = (K, &'w Waiting)>,
        I::IntoIter: Clone,
    {
        let queue = queue.into_iter();
        // Requests whose DELAY timeout passed yield to all the others; when
        // only such requests wait, they are served in order all the same.
        let all_delayed = queue.clone().all(|(_, w)| w.delayed(now));
        let mut head: Option<&Waiting> = None;
        let mut picked = Vec::new();
        let mut rows = 0;
        let mut preferred_prefix = None;
        for (id, waiting) in queue {
            if !all_delayed && waiting.delayed(now) {
                continue;
            }
            let head = *head.get_or_insert(waiting);
            if waiting.key != head.key {
                continue;
            }
            if self.max_batch_size == 0 || limit == 0 || waiting.rows > limit {
                if picked.is_empty() {
                    // Unbatched, or larger than a batch: it runs alone
                    // (split into chunks by the executor).
                    return Decision::Run(vec![id]);
                }
                break;
            }
            if rows + waiting.rows > limit {
                break;
            }
            picked.push(id);
            rows += waiting.rows;
            if self.preferred_batch_sizes.contains(&rows) {
                preferred_prefix = Some(picked.len());
            }
            if rows == limit {
                return Decision::Run(picked);
            }
        }
        let Some(head) = head else {
            return Decision::Idle;
        };
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
