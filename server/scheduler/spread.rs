//! How many of a version's instances take work, when the server chose the
//! instances (no `instance_group`).
//!
//! Instances run side by side only pay when one is not enough: for a model
//! whose executions are short (mlp, ~10 µs), a second worker splits the
//! batches, adds thread hand-offs and competes with the gRPC threads for
//! the cores (at 32 in flight, 36k requests/s with two instances against
//! 45k with one); for a compute-bound one (magika, ~7 ms), one instance
//! leaves every other core idle. So work starts on one instance, and each
//! window the instances' busy time decides: when the active ones were
//! busy nearly all the time, one more takes work; when fewer would have
//! been busy well short of that, one fewer.
//!
//! A plain state machine fed busy time and a clock: tested without threads.

use std::time::Duration;

use tokio::time::Instant;

/// How long busy time is summed before a decision.
const WINDOW: Duration = Duration::from_millis(200);
/// Busy fraction per active instance above which one more helps.
const SATURATED: f64 = 0.85;
/// Busy fraction the remaining instances would have after one fewer,
/// below which one fewer is enough.
const SPARE: f64 = 0.6;

/// The number of instances that take work.
#[derive(Debug, Clone)]
pub(super) struct Spread {
    total: usize,
    active: usize,
    adaptive: bool,
    window_start: Instant,
    busy: Duration,
}

impl Spread {
    /// `total` instances; with `adaptive`, work starts on one of them,
    /// otherwise all take work always.
    pub(super) fn new(total: usize, adaptive: bool, now: Instant) -> Spread {
        let adaptive = adaptive && total > 1;
        Spread {
            total,
            active: if adaptive { 1 } else { total },
            adaptive,
            window_start: now,
            busy: Duration::ZERO,
        }
    }

    /// Instances `0..active()` take work.
    pub(super) fn active(&self) -> usize {
        self.active
    }

    /// Records `busy`, an execution's time, at `now`; returns the new
    /// number of active instances when it changes.
    pub(super) fn record(&mut self, busy: Duration, now: Instant) -> Option<usize> {
        if !self.adaptive {
            return None;
        }
        self.busy += busy;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < WINDOW {
            return None;
        }
        // Instances' worth of work done in the window.
        let demand = self.busy.as_secs_f64() / elapsed.as_secs_f64();
        self.window_start = now;
        self.busy = Duration::ZERO;
        let before = self.active;
        let active = before as f64;
        if demand > active * SATURATED && self.active < self.total {
            self.active += 1;
        } else if self.active > 1 && demand < (active - 1.0) * SPARE {
            self.active -= 1;
        }
        (self.active != before).then_some(self.active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `windows` windows in which the work asked for is `demand`
    /// instances' worth, capped by the instances active; returns the
    /// active counts seen.
    fn drive(spread: &mut Spread, start: Instant, windows: u32, demand: f64) -> Vec<usize> {
        let mut seen = Vec::new();
        for w in 0..windows {
            let busy = WINDOW.mul_f64(demand.min(spread.active() as f64));
            spread.record(busy, start + WINDOW * (w + 1));
            seen.push(spread.active());
        }
        seen
    }

    #[test]
    fn a_short_model_stays_on_one_instance() {
        let start = Instant::now();
        let mut spread = Spread::new(4, true, start);
        // mlp at 32 in flight: its one instance busy a third of the time.
        assert!(drive(&mut spread, start, 50, 0.35).iter().all(|&a| a == 1));
    }

    #[test]
    fn a_compute_bound_model_spreads_to_every_instance_and_back() {
        let start = Instant::now();
        let mut spread = Spread::new(4, true, start);
        let seen = drive(&mut spread, start, 10, 8.0);
        assert_eq!(&seen[..3], [2, 3, 4], "one more per window");
        assert_eq!(spread.active(), 4);
        // The load falls to one instance's worth: back to one.
        let later = start + WINDOW * 10;
        let seen = drive(&mut spread, later, 10, 0.5);
        assert_eq!(*seen.last().unwrap(), 1, "{seen:?}");
    }

    #[test]
    fn a_load_between_two_settles_without_flapping() {
        let start = Instant::now();
        let mut spread = Spread::new(2, true, start);
        // 1.2 instances' worth: one is saturated, two are not.
        let seen = drive(&mut spread, start, 50, 1.2);
        assert!(seen[2..].iter().all(|&a| a == 2), "{seen:?}");
    }

    #[test]
    fn named_instances_all_take_work() {
        let start = Instant::now();
        let mut spread = Spread::new(3, false, start);
        assert_eq!(spread.active(), 3);
        assert!(drive(&mut spread, start, 10, 0.1).iter().all(|&a| a == 3));
    }
}
