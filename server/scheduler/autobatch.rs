//! Learning a model's efficient batch size from its own executions, for
//! models whose configuration leaves the batch size to the server.
//!
//! Bigger batches amortise each execution's fixed cost, until the model is
//! compute-bound: from there a bigger batch costs as much per row (or more,
//! once activations fall out of cache) and only adds latency and memory.
//! The sizer keeps, per power-of-two batch size, a moving average of the
//! execution time per row, and moves the batch limit one power of two at a
//! time towards the *efficient* size: the smallest recently measured size
//! whose time per row is within a few percent of the best measured one.
//! While the limit is binding (batches fill it) and the next size up has
//! no recent measurement, it tries that size for one window; a limit whose
//! executions exceed the latency budget is halved. Measurements go stale
//! after a while, so sizes are tried again and the sizer follows a model
//! whose load or behaviour changes.
//!
//! A plain state machine, fed execution times: tested with synthetic cost
//! curves, no clock, no model.

use std::time::Duration;

/// Settings of the sizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoBatchSettings {
    /// The largest limit it may choose.
    pub cap: usize,
    /// Longest one execution may take; a limit that needs more is too big.
    pub latency_budget: Duration,
}

/// Executions per decision.
const WINDOW: u32 = 24;
/// Samples a batch size needs before its average is trusted.
const MIN_SAMPLES: u32 = 8;
/// Relative difference in time per row that counts as a gain.
const GAIN: f64 = 0.05;
/// Decisions after which a size's measurements are stale.
const STALE: u32 = 12;

#[derive(Debug, Clone, Copy, Default)]
struct Average {
    per_row: f64,
    per_batch: f64,
    samples: u32,
    /// The decision during whose window it was last measured.
    seen_at: u32,
}

impl Average {
    fn add(&mut self, per_row: f64, per_batch: f64, now: u32) {
        if self.samples > 0 && now.saturating_sub(self.seen_at) > STALE {
            // Stale: start again rather than blend old and new.
            *self = Average::default();
        }
        // A moving average: quick to learn, and it forgets a changed model.
        let alpha = if self.samples < MIN_SAMPLES {
            1.0 / f64::from(self.samples + 1)
        } else {
            0.15
        };
        self.per_row += alpha * (per_row - self.per_row);
        self.per_batch += alpha * (per_batch - self.per_batch);
        self.samples = self.samples.saturating_add(1);
        self.seen_at = now;
    }

    fn fresh(&self, now: u32) -> bool {
        self.samples >= MIN_SAMPLES && now.saturating_sub(self.seen_at) <= STALE
    }
}

/// The learned batch limit of one model version.
#[derive(Debug, Clone)]
pub struct AutoBatch {
    settings: AutoBatchSettings,
    /// The current limit: a power of two, at most `settings.cap`.
    limit: usize,
    /// Per power of two (index = log2): execution time per row and per
    /// batch, for executions of (2^(i-1), 2^i] rows.
    averages: Vec<Average>,
    executions: u32,
    at_limit: u32,
    /// Decisions made so far: the sizer's clock.
    decisions: u32,
}

fn bucket(rows: usize) -> usize {
    rows.max(1).next_power_of_two().trailing_zeros() as usize
}

impl AutoBatch {
    /// A sizer starting at a limit of 1.
    pub fn new(settings: AutoBatchSettings) -> AutoBatch {
        let cap = settings.cap.max(1);
        AutoBatch {
            settings: AutoBatchSettings { cap, ..settings },
            limit: 1,
            averages: vec![Average::default(); bucket(cap) + 1],
            executions: 0,
            at_limit: 0,
            decisions: 0,
        }
    }

    /// The batch limit to form batches with now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Rows per execution for a request larger than the limit: as many as
    /// the latency budget allows at the best time per row measured (the
    /// cap when nothing is measured yet), a power of two.
    pub fn chunk_rows(&self) -> usize {
        let now = self.decisions;
        let best = self
            .averages
            .iter()
            .filter(|a| a.fresh(now))
            .map(|a| a.per_row)
            .fold(f64::INFINITY, f64::min);
        let budget = self.settings.latency_budget.as_secs_f64();
        let mut rows = self.settings.cap;
        if best.is_finite() && best > 0.0 {
            while rows > self.limit && best * rows as f64 > budget {
                rows /= 2;
            }
        }
        rows.max(self.limit)
    }

    /// Records one execution of `rows` rows that took `took`; returns the
    /// new limit if it changed.
    pub fn observe(&mut self, rows: usize, took: Duration) -> Option<usize> {
        let rows = rows.max(1);
        let seconds = took.as_secs_f64();
        let now = self.decisions;
        if let Some(average) = self.averages.get_mut(bucket(rows)) {
            average.add(seconds / rows as f64, seconds, now);
        }
        self.executions += 1;
        if rows >= self.limit {
            self.at_limit += 1;
        }
        if self.executions < WINDOW {
            return None;
        }
        let before = self.limit;
        self.decide();
        self.decisions = self.decisions.wrapping_add(1);
        self.executions = 0;
        self.at_limit = 0;
        (self.limit != before).then_some(self.limit)
    }

    fn decide(&mut self) {
        let now = self.decisions;
        let sizes = || (0..self.averages.len()).map(|i| 1usize << i);
        let fresh = |size: usize| {
            let a = self.averages[bucket(size)];
            a.fresh(now).then_some(a)
        };
        let budget = self.settings.latency_budget.as_secs_f64();
        // Too slow for the budget: a smaller batch.
        if let Some(here) = fresh(self.limit)
            && self.limit > 1
            && here.per_batch > budget
        {
            self.limit /= 2;
            return;
        }
        // The efficient size among recent measurements within the budget.
        let measured: Vec<(usize, Average)> = sizes()
            .filter_map(|s| fresh(s).map(|a| (s, a)))
            .filter(|(_, a)| a.per_batch <= budget)
            .collect();
        let best = measured
            .iter()
            .map(|(_, a)| a.per_row)
            .fold(f64::INFINITY, f64::min);
        let efficient = measured
            .iter()
            .find(|(_, a)| a.per_row <= best * (1.0 + GAIN))
            .map(|&(s, _)| s);
        let binding = self.at_limit * 2 >= self.executions;
        let up = self.limit * 2;
        match efficient {
            Some(efficient) if self.limit > efficient => self.limit /= 2,
            Some(efficient) if self.limit < efficient => {
                if binding {
                    self.limit = up.min(self.settings.cap);
                }
            }
            // At the efficient size (or nothing measured yet).
            _ => {
                let lower = (self.limit > 1).then(|| fresh(self.limit / 2));
                match (lower, fresh(self.limit)) {
                    // Whether this size still beats the one below it is no
                    // longer known: measure that one again. Growing on a
                    // stale comparison would climb past where the gain
                    // stops, and each bigger batch grows the model's
                    // memory for good.
                    (Some(None), _) => self.limit /= 2,
                    // It did not beat the size below: nothing bigger will.
                    (Some(Some(lower)), Some(here))
                        if here.per_row > lower.per_row * (1.0 - GAIN) => {}
                    // Try the next size up if the load fills this one, it
                    // has no recent measurement, and it would not break the
                    // budget as far as this one's time per row tells.
                    (_, here) => {
                        let affordable = here.is_none_or(|here| here.per_row * up as f64 <= budget);
                        if binding && up <= self.settings.cap && fresh(up).is_none() && affordable {
                            self.limit = up;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(cap: usize) -> AutoBatchSettings {
        AutoBatchSettings {
            cap,
            latency_budget: Duration::from_millis(100),
        }
    }

    /// Feeds `executions` full batches (the load fills every limit) timed by
    /// `cost`, and returns the limits seen.
    fn drive(sizer: &mut AutoBatch, executions: usize, cost: impl Fn(usize) -> f64) -> Vec<usize> {
        let mut seen = Vec::new();
        for _ in 0..executions {
            let rows = sizer.limit();
            sizer.observe(rows, Duration::from_secs_f64(cost(rows)));
            seen.push(sizer.limit());
        }
        seen
    }

    #[test]
    fn a_model_with_a_large_fixed_cost_grows_to_the_cap() {
        // mlp-like: 40 µs per execution plus 1 µs per row.
        let mut sizer = AutoBatch::new(settings(64));
        drive(&mut sizer, 2000, |rows| 40e-6 + 1e-6 * rows as f64);
        assert_eq!(sizer.limit(), 64);
    }

    #[test]
    fn a_compute_bound_model_settles_where_the_gain_stops() {
        // magika-like: amortised up to 4 rows, then linear, then slower
        // per row once activations leave the cache.
        let per_row = |rows: usize| match rows {
            1 => 14e-3,
            2 => 9e-3,
            4 => 7e-3,
            8 => 6.9e-3,
            16 => 7.2e-3,
            _ => 8e-3,
        };
        let mut sizer = AutoBatch::new(settings(64));
        let seen = drive(&mut sizer, 6000, |rows| per_row(rows) * rows as f64);
        let settled = &seen[seen.len() / 2..];
        let at_4 = settled.iter().filter(|&&l| l == 4).count() as f64 / settled.len() as f64;
        assert!(
            settled.iter().all(|&l| (2..=8).contains(&l)),
            "only 4, and 2 and 8 now and then to check: {settled:?}"
        );
        assert!(at_4 > 0.8, "mostly at 4: {at_4}");
    }

    #[test]
    fn a_model_that_batching_slows_stays_at_one_and_never_tries_four() {
        // magika with one instance per core: every batch above 1 is
        // slower per row, and each size tried grows the model's memory.
        let per_row = |rows: usize| match rows {
            1 => 6.7e-3,
            2 => 7.1e-3,
            _ => 8.4e-3,
        };
        let mut sizer = AutoBatch::new(settings(64));
        let seen = drive(&mut sizer, 6000, |rows| per_row(rows) * rows as f64);
        assert!(seen.iter().all(|&l| l <= 2), "never beyond 2: {seen:?}");
        let at_1 = seen.iter().filter(|&&l| l == 1).count() as f64 / seen.len() as f64;
        assert!(at_1 > 0.85, "mostly at 1: {at_1}");
    }

    #[test]
    fn the_latency_budget_caps_the_batch() {
        // 10 ms per row, no gain from batching beyond 8 and a 40 ms budget.
        let mut sizer = AutoBatch::new(AutoBatchSettings {
            cap: 64,
            latency_budget: Duration::from_millis(40),
        });
        let seen = drive(&mut sizer, 3000, |rows| {
            1e-3 + 9e-3 * rows as f64 * 0.9f64.powi(rows.min(8).trailing_zeros() as i32)
        });
        assert!(
            seen[seen.len() / 2..].iter().all(|&l| l <= 4),
            "{:?}",
            &seen[seen.len() - 30..]
        );
    }

    #[test]
    fn large_requests_are_chunked_within_the_budget() {
        let mut sizer = AutoBatch::new(settings(1024));
        assert_eq!(sizer.chunk_rows(), 1024, "nothing measured: the cap");
        // 1 ms per row: 100 ms allow 64 rows (a power of two).
        drive(&mut sizer, 200, |rows| 1e-3 * rows as f64);
        assert_eq!(sizer.chunk_rows(), 64);
    }

    #[test]
    fn a_limit_that_is_not_binding_does_not_grow() {
        let mut sizer = AutoBatch::new(settings(64));
        for _ in 0..1000 {
            // Light load: single rows, whatever the limit.
            sizer.observe(1, Duration::from_micros(50));
            if sizer.limit() > 2 {
                break;
            }
        }
        assert!(sizer.limit() <= 2, "{}", sizer.limit());
    }

    #[test]
    fn it_follows_a_model_that_changes() {
        let mut sizer = AutoBatch::new(settings(64));
        drive(&mut sizer, 2000, |rows| 40e-6 + 1e-6 * rows as f64);
        assert_eq!(sizer.limit(), 64);
        // Now every row costs 5 ms and batching gains nothing.
        drive(&mut sizer, 3000, |rows| 5e-3 * rows as f64);
        assert!(sizer.limit() <= 16, "{}", sizer.limit());
    }
}
