//! When and how often a failed call is tried again.

use std::{
    fmt,
    hash::{BuildHasher, RandomState},
    sync::Arc,
    time::Duration,
};

use crate::Error;

/// Which failed calls are tried again, how often, and how long to wait in
/// between; see [`ClientBuilder::retry`](crate::ClientBuilder::retry).
///
/// Only calls that are safe to repeat are retried: liveness, readiness,
/// metadata and health checks always, inference unless
/// [`RetryPolicy::retry_inference`] is off, the request carries the reserved
/// `sequence_id` parameter (a stateful sequence must not see a step twice),
/// or [`InferBuilder::idempotent`](crate::InferBuilder::idempotent) says
/// otherwise. Streams are never retried.
///
/// The default retries `UNAVAILABLE` (server down, restarting, shutting
/// down, or shedding load) up to 5 attempts in all, waiting 50 ms, 100 ms,
/// 200 ms, ... up to 2 s between them, each wait shortened by up to a fifth
/// at random so that many clients do not retry in lock step. With several
/// endpoints, each attempt goes to the next one, so a retry normally lands
/// on another server at once. The client's timeout applies to each attempt.
///
/// ```
/// use std::time::Duration;
///
/// use oxserve_client::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .max_attempts(10)
///     .backoff(Duration::from_millis(100), Duration::from_secs(5))
///     .retry_on([tonic::Code::Unavailable, tonic::Code::ResourceExhausted]);
/// assert_eq!(policy.nominal_delay(1), Duration::from_millis(100));
/// assert_eq!(policy.nominal_delay(3), Duration::from_millis(400));
/// assert_eq!(policy.nominal_delay(30), Duration::from_secs(5));
/// assert_eq!(RetryPolicy::never().get_max_attempts(), 1);
/// ```
#[derive(Clone)]
#[must_use]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    multiplier: f64,
    jitter: f64,
    codes: Vec<tonic::Code>,
    retry_inference: bool,
    on_retry: Option<Arc<OnRetry>>,
}

type OnRetry = dyn Fn(&RetryEvent<'_>) + Send + Sync;

/// One retry about to happen, as shown to [`RetryPolicy::on_retry`].
#[derive(Debug)]
#[non_exhaustive]
pub struct RetryEvent<'a> {
    /// The gRPC method, e.g. `"ModelInfer"`.
    pub method: &'static str,
    /// The attempt that failed, from 1.
    pub attempt: u32,
    /// Why it failed.
    pub error: &'a Error,
    /// The endpoint it failed on.
    pub endpoint: &'a str,
    /// How long the client waits before the next attempt.
    pub delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            multiplier: 2.0,
            jitter: 0.2,
            codes: vec![tonic::Code::Unavailable],
            retry_inference: true,
            on_retry: None,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries: every call is tried once.
    pub fn never() -> Self {
        RetryPolicy::default().max_attempts(1)
    }

    /// Tries each call at most `attempts` times in all (at least once).
    /// Default: 5.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Waits `initial` before the first retry, growing by the multiplier
    /// up to `max`. Default: 50 ms and 2 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// How much each wait grows over the previous one (at least 1).
    /// Default: 2.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// The largest fraction (0 to 1) by which a wait is shortened at
    /// random. Default: 0.2; 0 makes the waits exact.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The gRPC codes that are retried. Default: `UNAVAILABLE` only, which
    /// promises the request was not processed. Add others (such as
    /// `RESOURCE_EXHAUSTED` for a full queue) only if every retried call is
    /// safe to repeat.
    pub fn retry_on(mut self, codes: impl IntoIterator<Item = tonic::Code>) -> Self {
        self.codes = codes.into_iter().collect();
        self
    }

    /// Whether inference requests are retried. Default: yes, as inference
    /// on a stateless model is idempotent; requests of a sequence (with a
    /// `sequence_id` parameter) never are.
    pub fn retry_inference(mut self, retry: bool) -> Self {
        self.retry_inference = retry;
        self
    }

    /// Calls `hook` before each retry, e.g. to log it or count it.
    pub fn on_retry(mut self, hook: impl Fn(&RetryEvent<'_>) + Send + Sync + 'static) -> Self {
        self.on_retry = Some(Arc::new(hook));
        self
    }

    /// The most attempts a call gets.
    pub fn get_max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether inference requests may be retried.
    pub fn retries_inference(&self) -> bool {
        self.retry_inference
    }

    /// The wait before retry number `retry` (from 1) without jitter:
    /// `initial * multiplier^(retry - 1)`, at most the maximum.
    pub fn nominal_delay(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let factor = self.multiplier.powi(exponent);
        let max = self.max_backoff.as_secs_f64();
        let secs = (self.initial_backoff.as_secs_f64() * factor).min(max);
        // `secs` is finite and within [0, max] here, so this cannot panic.
        Duration::try_from_secs_f64(secs).unwrap_or(self.max_backoff)
    }

    /// The wait before retry number `retry`, with jitter applied.
    pub(crate) fn delay(&self, retry: u32) -> Duration {
        let nominal = self.nominal_delay(retry);
        nominal.mul_f64(1.0 - self.jitter * unit_random())
    }

    /// Whether a call that failed with `error` on attempt `attempt` is tried
    /// again.
    pub(crate) fn should_retry(&self, attempt: u32, error: &Error) -> bool {
        attempt < self.max_attempts && error.code().is_some_and(|c| self.codes.contains(&c))
    }

    pub(crate) fn notify(&self, event: &RetryEvent<'_>) {
        if let Some(hook) = &self.on_retry {
            hook(event);
        }
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("multiplier", &self.multiplier)
            .field("jitter", &self.jitter)
            .field("codes", &self.codes)
            .field("retry_inference", &self.retry_inference)
            .field("on_retry", &self.on_retry.as_ref().map(|_| "Fn"))
            .finish()
    }
}

/// A number in [0, 1) that differs from call to call: jitter needs no more
/// than that, and std's randomly keyed hasher saves a dependency.
fn unit_random() -> f64 {
    let bits = RandomState::new().hash_one(std::time::Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_geometrically_up_to_the_maximum() {
        let p =
            RetryPolicy::default().backoff(Duration::from_millis(10), Duration::from_millis(70));
        let delays: Vec<_> = (1..=5).map(|n| p.nominal_delay(n).as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 70, 70]);
        assert_eq!(p.nominal_delay(u32::MAX), Duration::from_millis(70));
        let flat = p.clone().multiplier(0.5);
        assert_eq!(flat.nominal_delay(4), Duration::from_millis(10));
    }

    #[test]
    fn jitter_only_shortens_and_by_at_most_its_fraction() {
        let p = RetryPolicy::default().backoff(Duration::from_secs(1), Duration::from_secs(1));
        for _ in 0..200 {
            let d = p.delay(1);
            assert!(
                d <= Duration::from_secs(1) && d >= Duration::from_millis(800),
                "{d:?}"
            );
        }
        let exact = p.jitter(0.0);
        assert_eq!(exact.delay(1), Duration::from_secs(1));
    }

    #[test]
    fn only_listed_codes_are_retried_and_only_up_to_the_limit() {
        let p = RetryPolicy::default().max_attempts(3);
        let unavailable = Error::from(tonic::Status::unavailable("down"));
        let not_found = Error::from(tonic::Status::not_found("no model"));
        assert!(p.should_retry(1, &unavailable));
        assert!(p.should_retry(2, &unavailable));
        assert!(!p.should_retry(3, &unavailable));
        assert!(!p.should_retry(1, &not_found));
        assert!(!p.should_retry(1, &Error::decode("bad")));
        let p = p.retry_on([tonic::Code::NotFound]);
        assert!(p.should_retry(1, &not_found));
        assert!(!p.should_retry(1, &unavailable));
        assert!(!RetryPolicy::never().should_retry(1, &unavailable));
        assert_eq!(RetryPolicy::default().max_attempts(0).get_max_attempts(), 1);
    }

    #[test]
    fn the_hook_sees_each_retry() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let p = RetryPolicy::default().on_retry(move |e| {
            log.lock()
                .unwrap()
                .push((e.method, e.attempt, e.endpoint.to_owned()));
        });
        let error = Error::from(tonic::Status::unavailable("down"));
        p.notify(&RetryEvent {
            method: "ModelInfer",
            attempt: 2,
            error: &error,
            endpoint: "http://a:1",
            delay: Duration::ZERO,
        });
        assert_eq!(
            *seen.lock().unwrap(),
            [("ModelInfer", 2, "http://a:1".to_owned())]
        );
        assert!(format!("{p:?}").contains("on_retry: Some(\"Fn\")"));
    }
}
