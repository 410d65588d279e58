//! One connection's life: the TLS handshake (bounded in time), HTTP, and
//! its end: the peer closes it, the server shuts down, it reaches its
//! maximum age (GOAWAY, then at most the grace period for the requests in
//! flight), or it stays idle too long.
//!
//! Maximum age is what makes clients that connect straight to pods (a
//! headless Service, the SDK's DNS balancing) spread over replicas added
//! after they connected (Triton issue #6177): a GOAWAY makes gRPC clients
//! reconnect, and the new connection may land elsewhere.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};

use super::Limits;

/// A client that opens a TCP connection and never finishes its TLS
/// handshake (or, in plaintext, sends nothing) holds a connection slot this
/// long at most.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a closing connection reads what the client still sends (frames
/// it wrote before it saw the close) before the socket is closed.
const LINGER: Duration = Duration::from_secs(2);

/// Everything one connection task needs.
pub(super) struct Connection<S> {
    pub(super) builder: auto::Builder<TokioExecutor>,
    pub(super) service: S,
    pub(super) limits: Arc<Limits>,
    /// The acceptor with the TLS config current at accept; `None`:
    /// plaintext.
    pub(super) tls: Option<TlsAcceptor>,
    pub(super) stop: watch::Receiver<bool>,
}

/// Why a connection is being closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Shutdown,
    Age,
    Idle,
}

impl<S, B> Connection<S>
where
    S: Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Serves the connection until it ends, then closes it without losing
    /// what was last written to it ([`linger`]).
    pub(super) async fn run(self, stream: TcpStream) {
        // A second handle on the socket: hyper drops its own when HTTP ends.
        let last = std::os::fd::AsFd::as_fd(&stream).try_clone_to_owned();
        self.serve(stream).await;
        if let Ok(fd) = last {
            linger(fd).await;
        }
    }

    async fn serve(mut self, stream: TcpStream) {
        let mut stop = self.stop.clone();
        let Some(acceptor) = self.tls.take() else {
            // hyper waits for a connection's first bytes without a time
            // limit: a client that connects and says nothing would hold a
            // connection slot for ever. It gets as long as a handshake.
            let first_byte = async {
                let mut byte = [0u8; 1];
                stream.peek(&mut byte).await
            };
            tokio::select! {
                spoke = tokio::time::timeout(HANDSHAKE_TIMEOUT, first_byte) => match spoke {
                    Ok(Ok(n)) if n > 0 => {}
                    Ok(Ok(_)) => return,
                    Ok(Err(e)) => return tracing::debug!("connection failed before its first byte: {e}"),
                    Err(_) => return tracing::debug!("a connection sent nothing; closed"),
                },
                _ = stop.wait_for(|stop| *stop) => return,
            }
            return self.http(stream).await;
        };
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
        let stream = tokio::select! {
            handshake = handshake => match handshake {
                Ok(Ok(stream)) => stream,
                // Debug, not warn: any client can fail a handshake at will
                // (a plaintext client, a client without a certificate).
                Ok(Err(e)) => return tracing::debug!("TLS handshake failed: {e}"),
                Err(_) => return tracing::debug!("TLS handshake timed out"),
            },
            _ = stop.wait_for(|stop| *stop) => return,
        };
        self.http(stream).await
    }

    async fn http<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            builder,
            service,
            limits,
            stop,
            ..
        } = self;
        let io = TokioIo::new(io);
        match limits.idle_timeout {
            // Without an idle timeout nothing counts requests: the service
            // as it is, no wrapper on the request path.
            None => {
                let service = TowerToHyperService::new(service);
                drive(builder, io, service, None, limits, stop).await;
            }
            Some(_) => {
                let activity = Arc::new(Activity::new());
                let service = Tracked {
                    inner: service,
                    activity: Arc::clone(&activity),
                };
                drive(builder, io, service, Some(activity), limits, stop).await;
            }
        }
    }
}

/// Serves HTTP on `io` until the connection ends, or ends it (GOAWAY) at
/// shutdown, at its maximum age, or when idle (`activity`).
async fn drive<I, H, B>(
    builder: auto::Builder<TokioExecutor>,
    io: TokioIo<I>,
    service: H,
    activity: Option<Arc<Activity>>,
    limits: Arc<Limits>,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>
        + Send
        + 'static,
    H::Future: Send + 'static,
    H::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = builder
        .serve_connection(io, service)
        // The connection outlives the builder it was made by.
        .into_owned();
    tokio::pin!(connection);
    let age = async {
        match limits.max_connection_age {
            Some(age) => tokio::time::sleep(jittered(age)).await,
            None => std::future::pending().await,
        }
    };
    let idle = async {
        match (&activity, limits.idle_timeout) {
            (Some(activity), Some(timeout)) => activity.idle(timeout).await,
            _ => std::future::pending().await,
        }
    };
    let ending = tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!("connection ended: {e}");
            }
            return;
        }
        _ = stop.wait_for(|stop| *stop) => Ending::Shutdown,
        () = age => Ending::Age,
        () = idle => Ending::Idle,
    };
    // HTTP/2: GOAWAY, no new streams, those in flight finish.
    // HTTP/1.1: the request in flight finishes, then the connection
    // closes instead of being kept alive.
    connection.as_mut().graceful_shutdown();
    let drained = match ending {
        // The caller bounds the drain (drain_timeout).
        Ending::Shutdown => Ok(connection.await),
        Ending::Age | Ending::Idle => {
            tracing::debug!(?ending, "closing a connection");
            tokio::time::timeout(limits.max_connection_age_grace, connection).await
        }
    };
    match drained {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("connection ended while closing: {e}"),
        // Dropping the connection aborts its remaining streams.
        Err(_) => tracing::debug!("connection closed at the end of its grace period"),
    }
}

/// Closes a connection the way HTTP servers must: the write side first
/// (FIN, after the last response), then reading and discarding what the
/// client still sends (a PING or SETTINGS acknowledgement, a WINDOW_UPDATE)
/// until it closes its side, for at most [`LINGER`]. Closing a socket with
/// unread data makes the kernel send RST instead of FIN, and a client that
/// gets RST may discard the last response before reading it: requests
/// answered during a drain then fail on the client.
async fn linger(fd: std::os::fd::OwnedFd) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let std_stream = std::net::TcpStream::from(fd);
    if std_stream.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(mut stream) = TcpStream::from_std(std_stream) else {
        return;
    };
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buffer).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// `age` ± 10 %, as gRPC servers do: connections opened together (by a
/// roll-out, or a client starting) do not all reconnect at the same moment.
fn jittered(age: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // Each RandomState has fresh keys: a random number without a crate.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let fraction = (random % 2001) as f64 / 1000.0 - 1.0;
    age.mul_f64(1.0 + 0.1 * fraction)
}

/// Requests in flight on one connection, and when that count last changed
/// (atomics, not a lock: every request on the connection touches them).
struct Activity {
    active: AtomicUsize,
    opened: Instant,
    /// Nanoseconds after `opened`.
    changed: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            active: AtomicUsize::new(0),
            opened: Instant::now(),
            changed: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let since = u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.changed.fetch_max(since, Ordering::AcqRel);
    }

    fn start(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(Arc::clone(self))
    }

    /// How long the connection has had nothing in flight; `None` while
    /// something is.
    fn idle_for(&self) -> Option<Duration> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let changed = Duration::from_nanos(self.changed.load(Ordering::Acquire));
        Some(self.opened.elapsed().saturating_sub(changed))
    }

    /// Completes once nothing has been in flight for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            let wait = match self.idle_for() {
                Some(idle) if idle >= timeout => return,
                Some(idle) => timeout - idle,
                // Busy: look again a whole timeout later at the soonest.
                None => timeout,
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// One request in flight, until its response body is done or dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

/// The connection's service when it has an idle timeout: `inner`, with each
/// request counted in flight
/// until its response has been sent (a streaming response is in flight
/// while it streams).
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> hyper::service::Service<http::Request<Incoming>> for Tracked<S>
where
    S: Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
{
    type Response = http::Response<TrackedBody<B>>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.start();
        let service = self.inner.clone();
        Box::pin(async move {
            let response = service.oneshot(request).await?;
            Ok(response.map(|body| TrackedBody {
                inner: Box::pin(body),
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that ends its request's time in flight when dropped.
struct TrackedBody<B> {
    inner: Pin<Box<B>>,
    _in_flight: InFlight,
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.inner.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
