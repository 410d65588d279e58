//! ERROR lines for the server's own faults, rate limited.
//!
//! A server fault (INTERNAL) is logged at ERROR so that operators see it,
//! but a fault that repeats on every request (a broken model, a runtime
//! that fails each batch) must not turn the log into a flood. Each kind of
//! fault logs at most [`PER_INTERVAL`] lines per [`INTERVAL`]; the rest
//! are counted, and the first line logged after them says how many similar
//! lines were suppressed. Client-caused failures are never logged here:
//! they are logged at DEBUG where they happen, and counted in the metrics
//! (`oxserve_client_errors_total`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines logged per kind of fault per interval.
pub(crate) const PER_INTERVAL: u32 = 5;

/// The interval over which [`PER_INTERVAL`] lines are logged.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

/// The rate limit of one kind of ERROR line.
#[derive(Debug)]
pub(crate) struct RateLimit {
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    /// When the current interval started; `None` before the first fault.
    start: Option<Instant>,
    /// Lines logged in the current interval.
    logged: u32,
    /// Lines suppressed since the last one logged.
    suppressed: u64,
}

/// Whether to log one fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Log it, saying that `suppressed` similar lines were not logged
    /// before it.
    Log {
        /// Similar lines suppressed since the last logged one.
        suppressed: u64,
    },
    /// Do not log it (it is counted).
    Suppress,
}

impl RateLimit {
    /// A limit with nothing logged yet (usable in a `static`).
    pub(crate) const fn new() -> RateLimit {
        RateLimit {
            window: Mutex::new(Window {
                start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a fault occurring `now` is logged.
    pub(crate) fn admit(&self, now: Instant) -> Admit {
        // A poisoned lock only means another thread panicked while holding
        // it; the counts are still usable.
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let expired = w
            .start
            .is_none_or(|start| now.saturating_duration_since(start) >= INTERVAL);
        if expired {
            w.start = Some(now);
            w.logged = 0;
        }
        if w.logged < PER_INTERVAL {
            w.logged += 1;
            let suppressed = std::mem::take(&mut w.suppressed);
            Admit::Log { suppressed }
        } else {
            w.suppressed += 1;
            Admit::Suppress
        }
    }
}

/// Holds ONNX Runtime's own WARN and ERROR lines (target `ort`) to the
/// same rate, per level: a model that fails on every request makes ONNX
/// Runtime log each failure too ("Non-zero status code returned while
/// running ... node"), which the server's own `inference failed` line
/// already carries, counted. Lines over the limit are dropped. Added to
/// the process's subscriber by `logging::init`.
#[derive(Debug, Default)]
pub(crate) struct RuntimeLogLimit {
    errors: RateLimit,
    warnings: RateLimit,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::new()
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RuntimeLogLimit {
    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let meta = event.metadata();
        let target = meta.target();
        if target != "ort" && !target.starts_with("ort::") {
            return true;
        }
        let limit = match *meta.level() {
            tracing::Level::ERROR => &self.errors,
            tracing::Level::WARN => &self.warnings,
            _ => return true,
        };
        matches!(limit.admit(Instant::now()), Admit::Log { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tracing_subscriber::layer::SubscriberExt;

    /// Counts the events that reach it.
    struct Count(Arc<AtomicUsize>);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
        fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many of the events `emit` logs get past the runtime log limit.
    fn passed(emit: impl FnOnce()) -> usize {
        let seen = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(Count(Arc::clone(&seen)))
            .with(RuntimeLogLimit::default());
        tracing::subscriber::with_default(subscriber, emit);
        seen.load(Ordering::Relaxed)
    }

    #[test]
    fn onnx_runtime_errors_are_limited_and_nothing_else_is() {
        let passed_ort = passed(|| {
            for _ in 0..50 {
                tracing::error!(target: "ort", "Non-zero status code returned");
            }
        });
        assert_eq!(passed_ort, PER_INTERVAL as usize);

        let passed_others = passed(|| {
            for _ in 0..50 {
                tracing::error!(target: "oxserve::repository", "model cannot load");
                tracing::info!(target: "ort", "graph optimised");
            }
        });
        assert_eq!(passed_others, 100);
    }

    #[test]
    fn at_most_n_lines_per_interval_then_a_summary() {
        let limit = RateLimit::new();
        let t0 = Instant::now();
        for i in 0..PER_INTERVAL {
            let at = t0 + Duration::from_millis(u64::from(i));
            assert_eq!(limit.admit(at), Admit::Log { suppressed: 0 });
        }
        for i in 0..100 {
            let at = t0 + Duration::from_millis(100 + i);
            assert_eq!(limit.admit(at), Admit::Suppress);
        }
        // Still in the first interval.
        assert_eq!(limit.admit(t0 + INTERVAL / 2), Admit::Suppress);
        // The next interval logs again, with the count of what was not.
        assert_eq!(limit.admit(t0 + INTERVAL), Admit::Log { suppressed: 101 });
        assert_eq!(
            limit.admit(t0 + INTERVAL + Duration::from_millis(1)),
            Admit::Log { suppressed: 0 }
        );
    }
}
