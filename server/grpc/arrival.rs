//! The moment a gRPC request arrives, its client deadline and trace
//! context.
//!
//! A tower layer in front of every service stamps each request with its
//! [`Arrival`] as soon as its headers are read (before the body is
//! decoded), parsing `grpc-timeout` once. It takes the header off the
//! request, so that nothing else (tonic's own timer answers a missed
//! deadline with CANCELLED) races the inference core, which answers
//! DEADLINE_EXCEEDED and counts the request.

use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service};

use crate::inference::Arrival;
use crate::metrics::Protocol;
use crate::trace::{TRACEPARENT, TraceParent};

/// The gRPC-over-HTTP/2 header carrying the client's timeout.
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Adds an [`Arrival`] to every request's extensions.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ArrivalLayer;

impl<S> Layer<S> for ArrivalLayer {
    type Service = Stamp<S>;

    fn layer(&self, inner: S) -> Stamp<S> {
        Stamp { inner }
    }
}

/// See [`ArrivalLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Stamp<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Stamp<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let received = Instant::now();
        let timeout = request
            .headers_mut()
            .remove(GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok().and_then(parse_grpc_timeout));
        let trace = request
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse);
        request.extensions_mut().insert(Arrival {
            received,
            deadline: timeout.map(|t| received + t),
            protocol: Protocol::Grpc,
            trace,
        });
        self.inner.call(request)
    }
}

/// The arrival of a tonic request, as stamped by [`ArrivalLayer`] (or now,
/// for a request that did not pass through it).
pub(crate) fn arrival<T>(request: &tonic::Request<T>) -> Arrival {
    request
        .extensions()
        .get::<Arrival>()
        .copied()
        .unwrap_or_else(|| Arrival::now(Protocol::Grpc))
}

/// A `grpc-timeout` value: up to eight digits and a unit (H M S m u n), as
/// gRPC over HTTP/2 defines it. Malformed values are ignored, as the spec
/// allows.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        for bad in ["", "S", "10", "10x", "123456789S", "-1S", "+1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_layer_stamps_arrival_and_takes_the_header() {
        let mut seen = None;
        let mut service = ArrivalLayer.layer(tower::service_fn(|r: http::Request<()>| {
            let arrival = r.extensions().get::<Arrival>().copied();
            let header = r.headers().get(GRPC_TIMEOUT).cloned();
            async move { Ok::<_, std::convert::Infallible>((arrival, header)) }
        }));
        let request = http::Request::builder()
            .header(GRPC_TIMEOUT, "250m")
            .body(())
            .unwrap();
        let now = Instant::now();
        let (arrival, header) = service.call(request).await.unwrap();
        seen.replace(arrival);
        let arrival = seen.unwrap().expect("stamped");
        assert_eq!(arrival.received, now);
        assert_eq!(arrival.deadline, Some(now + Duration::from_millis(250)));
        assert_eq!(header, None, "the header is taken off");
    }
}
