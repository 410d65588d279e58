//! Serving connections: the accept loop, HTTP for each connection (HTTP/2
//! only for gRPC; HTTP/1.1 or h2c, whichever the client speaks, for REST),
//! and the graceful drain at shutdown.
//!
//! oxserve runs its own loop over hyper instead of tonic's server so that it
//! owns every connection: which layers see a request first (tonic's server
//! would enforce `grpc-timeout` itself, answering CANCELLED), and when and
//! how connections end. At shutdown the listener closes, every connection
//! is sent a GOAWAY, and the loop returns once the last one has finished
//! its in-flight requests; the caller bounds that wait.

use std::convert::Infallible;
use std::future::Future;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower::Service;

/// Which HTTP versions a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocols {
    /// HTTP/2 (prior knowledge) only: gRPC.
    Http2,
    /// HTTP/1.1, or HTTP/2 when the connection opens with its preface
    /// (h2c with prior knowledge): REST, which curl and most HTTP clients
    /// speak as HTTP/1.1.
    Http1AndHttp2,
}

/// Serves `service` on every connection `listener` accepts until
/// `shutdown` completes, then drains: returns once every connection has
/// closed.
pub(crate) async fn serve<S, B>(
    listener: TcpListener,
    protocols: Protocols,
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
    if protocols == Protocols::Http2 {
        builder = builder.http2_only();
    }
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        // tonic's server default: no cap on concurrent streams per connection.
        .max_concurrent_streams(None);

    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: the listener stays
                // usable once some connections close.
                tracing::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small requests must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let connection = builder
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(service.clone()),
            )
            // The connection outlives this loop's borrow of the builder.
            .into_owned();
        let mut stop = stop.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let _alive = alive;
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!("connection ended: {e}");
                    }
                    return;
                }
                _ = stop.wait_for(|stop| *stop) => {}
            }
            // HTTP/2: GOAWAY, no new streams, those in flight finish.
            // HTTP/1.1: the request in flight finishes, then the
            // connection closes instead of being kept alive.
            connection.as_mut().graceful_shutdown();
            if let Err(e) = connection.await {
                tracing::debug!("connection ended while draining: {e}");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive);
    let _ = all_closed.recv().await;
}
