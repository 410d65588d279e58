//! Counting requests the inference service could not decode.
//!
//! [`CallerCodec`](super::codec::CallerCodec) answers an undecodable unary
//! request before any handler runs, with a status it marks; this wrapper
//! around the service counts the marked answers in
//! `oxserve_client_errors_total{reason="undecodable"}` and takes the mark
//! off, so clients never see it. (ModelStreamInfer meets its decode errors
//! inside its handler, which counts them itself.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::server::NamedService;
use tower::Service;

use super::codec::UNDECODABLE_MARK;
use crate::metrics::{Metrics, Protocol};

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct CountUndecodable<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

impl<S> CountUndecodable<S> {
    /// `inner`, counting its undecodable requests in `metrics`.
    pub(crate) fn new(inner: S, metrics: Option<Arc<Metrics>>) -> Self {
        CountUndecodable { inner, metrics }
    }
}

impl<S: NamedService> NamedService for CountUndecodable<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> Service<http::Request<B>> for CountUndecodable<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let answer = self.inner.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let mut response = answer.await?;
            if response.headers_mut().remove(UNDECODABLE_MARK).is_some()
                && let Some(metrics) = metrics
            {
                metrics.client_error(Protocol::Grpc, "undecodable");
            }
            Ok(response)
        })
    }
}
