//! When a session's memory arena gives its unused chunks back.
//!
//! ONNX Runtime's CPU arena keeps what a run needed for the next one. After
//! a burst of large batches that is far more than small ones need, so the
//! arena is shrunk (`memory.enable_memory_arena_shrinkage` on one run).
//! Shrinking after every run would free and reallocate the arena's chunks
//! each time: slower, and glibc's heaps grow ragged under the churn (for
//! magika, peak RSS 2.6× idle against 1.3× without). So a run shrinks the
//! arena only when it needs at most a quarter of the rows the arena grew
//! for, at most once a second; and a worker left idle shrinks it with one
//! small run.

use std::time::{Duration, Instant};

/// A run of at most 1/`RATIO` of the rows the arena grew for gives the
/// rest back,
const RATIO: usize = 4;
/// at most this often (batch sizes that swing under load would otherwise
/// free and regrow the arena on every other run).
const EVERY: Duration = Duration::from_secs(1);

/// What one session's arena holds memory for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Arena {
    /// The most rows (a power of two) run since the arena last shrank.
    rows: usize,
    /// When it last shrank.
    shrunk: Instant,
}

impl Arena {
    pub(super) fn new(now: Instant) -> Arena {
        Arena {
            rows: 0,
            shrunk: now,
        }
    }

    /// Whether the run of `rows` rows starting `now` should shrink the
    /// arena; records the run either way.
    pub(super) fn shrink_after(&mut self, rows: usize, now: Instant) -> bool {
        let rows = rows.max(1).next_power_of_two();
        let shrink = rows.saturating_mul(RATIO) <= self.rows
            && now.saturating_duration_since(self.shrunk) >= EVERY;
        if shrink {
            self.rows = rows;
            self.shrunk = now;
        } else {
            self.rows = self.rows.max(rows);
        }
        shrink
    }

    /// Whether a one-row run would give memory back once due.
    pub(super) fn holds_more_than_one_row_needs(&self) -> bool {
        self.rows >= RATIO
    }

    /// Makes the next small run shrink, however recently the last did.
    pub(super) fn make_due(&mut self, now: Instant) {
        if let Some(due) = now.checked_sub(EVERY) {
            self.shrunk = self.shrunk.min(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_batches_keep_the_arena_and_a_small_run_after_large_ones_shrinks_it() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut arena = Arena::new(start);
        // A steady load of 3- and 4-row batches: never shrinks.
        for i in 0..100u64 {
            assert!(!arena.shrink_after(3 + (i % 2) as usize, at(2000 + i * 10)));
        }
        // A burst of 64 rows, then single rows: the first single row
        // shrinks it, the next ones find nothing to give back.
        assert!(!arena.shrink_after(64, at(4000)));
        assert!(arena.shrink_after(1, at(4010)));
        assert!(!arena.shrink_after(1, at(5100)));
        assert!(!arena.holds_more_than_one_row_needs());
    }

    #[test]
    fn swinging_batch_sizes_shrink_at_most_once_a_second() {
        let start = Instant::now();
        let mut arena = Arena::new(start);
        let shrinks = (0..1000u64)
            .filter(|&i| {
                let rows = if i % 2 == 0 { 64 } else { 4 };
                arena.shrink_after(rows, start + Duration::from_millis(i * 5))
            })
            .count();
        // 5 s of runs: four or five shrinks, not five hundred.
        assert!((4..=5).contains(&shrinks), "{shrinks}");
    }

    #[test]
    fn an_idle_shrink_is_due_at_once() {
        let start = Instant::now();
        let mut arena = Arena::new(start);
        let now = start + Duration::from_secs(5);
        assert!(!arena.shrink_after(64, now));
        assert!(arena.shrink_after(1, now + Duration::from_millis(1)));
        assert!(!arena.shrink_after(64, now + Duration::from_millis(2)));
        assert!(arena.holds_more_than_one_row_needs());
        // Too soon for a shrink on the way, but an idle worker's is due.
        arena.make_due(now + Duration::from_millis(3));
        assert!(arena.shrink_after(1, now + Duration::from_millis(4)));
    }
}
