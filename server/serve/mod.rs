//! Serving connections: the accept loop, TLS, HTTP for each connection
//! (HTTP/2 only for gRPC; HTTP/1.1 or HTTP/2, whichever the client speaks,
//! for REST), the limits on what one client may hold, and the graceful
//! drain at shutdown.
//!
//! oxserve runs its own loop over hyper instead of tonic's server so that it
//! owns every connection: which layers see a request first (tonic's server
//! would enforce `grpc-timeout` itself, answering CANCELLED), and when and
//! how connections end. At shutdown the listener closes, every connection
//! is sent a GOAWAY, and the loop returns once the last one has finished
//! its in-flight requests; the caller bounds that wait.
//!
//! `connection` holds one connection's life: the TLS handshake, its maximum
//! age and idle time; `limits` the settings and hyper's HTTP/2 knobs.

mod connection;
mod limits;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tower::Service;

pub(crate) use limits::Limits;

use crate::tls::{Alpn, Tls};

/// Which HTTP versions a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocols {
    /// HTTP/2 (prior knowledge) only: gRPC.
    Http2,
    /// HTTP/1.1, or HTTP/2 when the connection opens with its preface
    /// (h2c with prior knowledge, or `h2` negotiated over TLS): REST, which
    /// curl and most HTTP clients speak as HTTP/1.1.
    Http1AndHttp2,
}

impl Protocols {
    fn alpn(self) -> Alpn {
        match self {
            Protocols::Http2 => Alpn::Http2,
            Protocols::Http1AndHttp2 => Alpn::Http1AndHttp2,
        }
    }
}

/// How one listener serves: its protocols, its TLS (`None`: plaintext)
/// and its limits.
#[derive(Debug, Clone)]
pub(crate) struct Listener {
    /// The HTTP versions spoken.
    pub(crate) protocols: Protocols,
    /// TLS, reloaded as its files change; `None` for plaintext.
    pub(crate) tls: Option<Arc<Tls>>,
    /// What one connection (and all of them) may hold.
    pub(crate) limits: Limits,
}

/// Serves `service` on every connection `listener` accepts until
/// `shutdown` completes, then drains: returns once every connection has
/// closed.
pub(crate) async fn serve<S, B>(
    listener: TcpListener,
    how: Listener,
    service: S,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (stop_tx, stop) = watch::channel(false);
    // Each connection task holds a sender; `recv` returns `None` once the
    // last of them has ended (mini-redis's drain).
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if how.protocols == Protocols::Http2 {
        builder = builder.http2_only();
    }
    builder.http1().timer(TokioTimer::new());
    how.limits.apply(builder.http2().timer(TokioTimer::new()));
    let connections = Arc::new(Semaphore::new(how.limits.max_connections));
    let alpn = how.protocols.alpn();
    let limits = Arc::new(how.limits);
    // Logged when the limit is reached, and again only after it was not.
    let mut at_limit = false;

    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: the listener stays
                // usable once some connections close.
                tracing::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            // Closed at once rather than left in the kernel's backlog: the
            // client learns now, and can try another replica.
            if !at_limit {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection limit reached: refusing new connections until some close"
                );
                at_limit = true;
            }
            tracing::debug!(%peer, "refused a connection over max_connections");
            drop(stream);
            continue;
        };
        at_limit = false;
        // Small requests must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let task = connection::Connection {
            builder: builder.clone(),
            service: service.clone(),
            limits: Arc::clone(&limits),
            tls: how.tls.as_ref().map(|tls| tls.acceptor(alpn)),
            stop: stop.clone(),
        };
        let alive = alive.clone();
        tokio::spawn(async move {
            let _alive = alive;
            let _permit = permit;
            task.run(stream).await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive);
    let _ = all_closed.recv().await;
}
