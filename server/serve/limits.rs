//! What one client may hold: HTTP/2 streams and headers (hyper enforces
//! them), keep-alive pings (hyper sends them), and the connection limits
//! the accept loop enforces itself (how many, how old, how long idle).

use std::time::Duration;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto::Http2Builder;

use crate::config::Config;

/// The limits of one listener; see the settings of the same names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Streams (requests) in flight at once on one HTTP/2 connection; more
    /// are refused with REFUSED_STREAM, which clients retry.
    pub(crate) max_concurrent_streams: u32,
    /// Largest header list (HTTP/2, decoded) in bytes.
    pub(crate) max_header_list_size: u32,
    /// HTTP/2 PING interval; `None` sends none.
    pub(crate) keepalive_interval: Option<Duration>,
    /// How long a PING may go unanswered before the connection is closed.
    pub(crate) keepalive_timeout: Duration,
    /// Age after which a connection is sent GOAWAY; `None`: no limit.
    pub(crate) max_connection_age: Option<Duration>,
    /// After that GOAWAY, how long its requests may take before it closes.
    pub(crate) max_connection_age_grace: Duration,
    /// Connections open at once on this listener; more are closed at once.
    pub(crate) max_connections: usize,
    /// Time with no request in flight after which a connection is closed
    /// (GOAWAY); `None`: no limit.
    pub(crate) idle_timeout: Option<Duration>,
}

/// Zero means off for the durations that can be turned off.
fn nonzero(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

impl Limits {
    /// The limits `config` sets.
    pub(crate) fn from_config(config: &Config) -> Limits {
        Limits {
            max_concurrent_streams: config.http2_max_concurrent_streams,
            max_header_list_size: u32::try_from(config.http2_max_header_list_size)
                .unwrap_or(u32::MAX),
            keepalive_interval: nonzero(config.http2_keepalive_interval),
            keepalive_timeout: config.http2_keepalive_timeout,
            max_connection_age: nonzero(config.max_connection_age),
            max_connection_age_grace: config.max_connection_age_grace,
            max_connections: config.max_connections,
            idle_timeout: nonzero(config.connection_idle_timeout),
        }
    }

    /// Sets hyper's HTTP/2 limits.
    pub(crate) fn apply(&self, http2: &mut Http2Builder<'_, TokioExecutor>) {
        http2
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_header_list_size(self.max_header_list_size)
            .keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout);
    }
}
