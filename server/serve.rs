//! Serving connections: the accept loop, HTTP/2 for each connection, and
//! the graceful drain at shutdown.
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
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower::Service;

/// Serves `service` on every connection `listener` accepts until
/// `shutdown` completes, then drains: returns once every connection has
/// closed.
pub(crate) async fn serve<S, B>(
    listener: TcpListener,
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
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    // tonic's server default: no cap on concurrent streams per connection.
    builder.max_concurrent_streams(None);

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
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        );
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
            // GOAWAY: no new streams; those in flight finish.
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
