//! The endpoints a client spreads its requests over.
//!
//! Each endpoint has its own HTTP/2 connection, and every request (not
//! every connection) goes to the next endpoint in turn: gRPC connections
//! are long-lived, so balancing per connection would pin a client to one
//! server. An endpoint that just failed with `UNAVAILABLE` is skipped for
//! a moment while others are healthy, so retries and new requests go where
//! they can succeed.
//!
//! For a DNS name (a Kubernetes headless Service), a task resolves the name
//! periodically and swaps in the new set of addresses, keeping the
//! connections of addresses that stay.

use std::{
    collections::BTreeSet,
    fmt,
    net::SocketAddr,
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::task::AbortHandle;
use tonic::transport::Channel;

/// How long an endpoint that failed with `UNAVAILABLE` is passed over
/// while another endpoint is healthy.
pub(crate) const EJECT_FOR: Duration = Duration::from_secs(1);

/// One server: its connection and whether it failed recently.
pub(crate) struct Backend {
    name: String,
    addr: Option<SocketAddr>,
    pub(crate) channel: Channel,
    /// Milliseconds since the pool's epoch until which this backend is
    /// passed over; 0 when healthy.
    down_until: AtomicU64,
}

impl Backend {
    pub(crate) fn new(name: String, addr: Option<SocketAddr>, channel: Channel) -> Self {
        Backend {
            name,
            addr,
            channel,
            down_until: AtomicU64::new(0),
        }
    }

    /// The endpoint's URI, e.g. `http://10.0.0.7:8001`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// The endpoints of one client and its clones.
pub(crate) struct Pool {
    /// What the client was pointed at, for messages.
    target: String,
    backends: RwLock<Arc<[Arc<Backend>]>>,
    next: AtomicUsize,
    epoch: Instant,
    /// A connection to the DNS name itself, for the raw generated clients
    /// while the name has not resolved yet.
    fallback: Option<Channel>,
    resolver: Mutex<Option<AbortHandle>>,
}

impl Pool {
    pub(crate) fn new(target: String, backends: Vec<Backend>, fallback: Option<Channel>) -> Self {
        Pool {
            target,
            backends: RwLock::new(backends.into_iter().map(Arc::new).collect()),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            fallback,
            resolver: Mutex::new(None),
        }
    }

    /// What the client was pointed at.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    fn snapshot(&self) -> Arc<[Arc<Backend>]> {
        // A poisoned lock only means a resolver update panicked half-way;
        // the slice it guards is replaced whole, so it is still valid.
        Arc::clone(&self.backends.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The endpoints' names, in balancing order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.snapshot().iter().map(|b| b.name.clone()).collect()
    }

    /// The next endpoint in turn, passing over those that failed within
    /// [`EJECT_FOR`] unless all did; `None` if there are none (a DNS name
    /// that has not resolved yet).
    pub(crate) fn pick(&self) -> Option<Arc<Backend>> {
        let backends = self.snapshot();
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        (0..n)
            .map(|i| &backends[start.wrapping_add(i) % n])
            .find(|b| b.down_until.load(Ordering::Relaxed) <= now)
            .or_else(|| backends.get(start % n))
            .cloned()
    }

    /// A channel for the raw generated clients: the next endpoint's, or a
    /// connection to the DNS name while it has not resolved.
    pub(crate) fn any_channel(&self) -> Option<Channel> {
        self.pick()
            .map(|b| b.channel.clone())
            .or_else(|| self.fallback.clone())
    }

    pub(crate) fn mark_down(&self, backend: &Backend) {
        let until = self.now_ms().saturating_add(EJECT_FOR.as_millis() as u64);
        backend.down_until.store(until.max(1), Ordering::Relaxed);
    }

    pub(crate) fn mark_up(&self, backend: &Backend) {
        // Read first: a store on every success would bounce the cache line
        // between cores for nothing.
        if backend.down_until.load(Ordering::Relaxed) != 0 {
            backend.down_until.store(0, Ordering::Relaxed);
        }
    }

    fn now_ms(&self) -> u64 {
        // Never 0, which means "healthy".
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Replaces the endpoints with one per address in `addrs`, reusing the
    /// backends (and so the connections) of addresses already present and
    /// making the others with `make`. Returns whether anything changed.
    pub(crate) fn update(
        &self,
        addrs: impl IntoIterator<Item = SocketAddr>,
        make: impl Fn(SocketAddr) -> Option<Backend>,
    ) -> bool {
        let wanted: BTreeSet<SocketAddr> = addrs.into_iter().collect();
        let current = self.snapshot();
        let have: BTreeSet<SocketAddr> = current.iter().filter_map(|b| b.addr).collect();
        if wanted == have {
            return false;
        }
        let next: Arc<[Arc<Backend>]> = wanted
            .iter()
            .filter_map(|addr| {
                current
                    .iter()
                    .find(|b| b.addr == Some(*addr))
                    .cloned()
                    .or_else(|| make(*addr).map(Arc::new))
            })
            .collect();
        *self.backends.write().unwrap_or_else(|e| e.into_inner()) = next;
        true
    }

    /// Keeps `handle` to stop the resolver task when the pool goes.
    pub(crate) fn set_resolver(&self, handle: AbortHandle) {
        *self.resolver.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(handle) = self
            .resolver
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            handle.abort();
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .field("endpoints", &self.names())
            .finish()
    }
}

/// Resolves `host:port` every `interval` and updates `pool` with the
/// answer; a failed or empty answer keeps the endpoints it has, since a
/// DNS hiccup should not take every server away. Ends when the pool goes.
pub(crate) async fn resolve_periodically(
    pool: Weak<Pool>,
    host: String,
    port: u16,
    interval: Duration,
    make: impl Fn(SocketAddr) -> Option<Backend>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Ok(addrs) = tokio::net::lookup_host((host.as_str(), port)).await else {
            continue;
        };
        let addrs: Vec<SocketAddr> = addrs.collect();
        let Some(pool) = pool.upgrade() else {
            return;
        };
        if !addrs.is_empty() {
            pool.update(addrs, &make);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(addr: &str) -> Backend {
        let addr: SocketAddr = addr.parse().unwrap();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        Backend::new(format!("http://{addr}"), Some(addr), channel)
    }

    fn picks(pool: &Pool, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| pool.pick().unwrap().name().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn requests_go_round_robin() {
        let pool = Pool::new(
            "test".into(),
            vec![backend("127.0.0.1:1"), backend("127.0.0.1:2")],
            None,
        );
        assert_eq!(
            picks(&pool, 4),
            [
                "http://127.0.0.1:1",
                "http://127.0.0.1:2",
                "http://127.0.0.1:1",
                "http://127.0.0.1:2"
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_endpoint_is_passed_over_unless_all_failed() {
        let pool = Pool::new(
            "test".into(),
            vec![backend("127.0.0.1:1"), backend("127.0.0.1:2")],
            None,
        );
        let first = pool.pick().unwrap();
        pool.mark_down(&first);
        assert_eq!(picks(&pool, 3), ["http://127.0.0.1:2"; 3]);
        let second = pool.pick().unwrap();
        pool.mark_down(&second);
        // Both down: round robin again rather than no endpoint at all.
        let both = picks(&pool, 2);
        assert_ne!(both[0], both[1]);
        pool.mark_up(&first);
        assert_eq!(picks(&pool, 2), ["http://127.0.0.1:1"; 2]);
    }

    #[tokio::test]
    async fn updates_keep_the_backends_of_addresses_that_stay() {
        let pool = Pool::new("test".into(), vec![backend("127.0.0.1:1")], None);
        let kept = pool.pick().unwrap();
        let addrs = |list: &[&str]| -> Vec<SocketAddr> {
            list.iter().map(|a| a.parse().unwrap()).collect()
        };
        let make = |addr: SocketAddr| Some(backend(&addr.to_string()));
        assert!(pool.update(addrs(&["127.0.0.1:2", "127.0.0.1:1"]), make));
        assert_eq!(pool.names(), ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        let snapshot = pool.snapshot();
        assert!(
            Arc::ptr_eq(&snapshot[0], &kept),
            "same backend, same connection"
        );
        assert!(!pool.update(addrs(&["127.0.0.1:1", "127.0.0.1:2"]), make));
        assert!(pool.update(addrs(&["127.0.0.1:2"]), make));
        assert_eq!(pool.names(), ["http://127.0.0.1:2"]);
        assert!(Arc::ptr_eq(&pool.snapshot()[0], &snapshot[1]));
    }

    #[tokio::test]
    async fn an_empty_pool_has_nothing_to_pick() {
        let pool = Pool::new("dns:///nowhere".into(), vec![], None);
        assert!(pool.pick().is_none());
        assert!(pool.any_channel().is_none());
        assert!(format!("{pool:?}").contains("nowhere"));
    }
}
