//! The tower layer that puts [`Auth`] in front of a transport: the same
//! check for gRPC and REST, each answering a refusal its own way from the
//! same code (gRPC: the status; REST: the status's HTTP status and a
//! KServe-style `{"error": ...}` body).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::{ApiGroup, Auth, Rejection};

/// How one transport classifies paths and writes refusals.
pub(crate) trait Transport {
    /// The transport's response body.
    type Body;
    /// The group of a request path.
    fn group(path: &str) -> Option<ApiGroup>;
    /// The answer to a refused request.
    fn reject(rejection: &Rejection) -> http::Response<Self::Body>;
}

/// gRPC: `inference.GRPCInferenceService`, health and reflection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grpc;

impl Transport for Grpc {
    type Body = tonic::body::Body;

    fn group(path: &str) -> Option<ApiGroup> {
        crate::api_keys::grpc_group(path)
    }

    fn reject(rejection: &Rejection) -> http::Response<tonic::body::Body> {
        tonic::Status::new(rejection.code(), rejection.message()).into_http()
    }
}

/// KServe v2 REST.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rest;

impl Transport for Rest {
    type Body = axum::body::Body;

    fn group(path: &str) -> Option<ApiGroup> {
        crate::api_keys::rest_group(path)
    }

    fn reject(rejection: &Rejection) -> http::Response<axum::body::Body> {
        let body = serde_json::json!({ "error": rejection.message() }).to_string();
        let mut response = http::Response::new(axum::body::Body::from(body));
        *response.status_mut() = crate::http::http_status(rejection.code());
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        if rejection.code() == tonic::Code::Unauthenticated {
            // RFC 6750 §3: a 401 names the scheme that would be accepted.
            headers.insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Checks every request with [`Auth`] before `T`'s service sees it.
#[derive(Debug, Clone)]
pub(crate) struct AuthLayer<T> {
    auth: Auth,
    transport: PhantomData<fn() -> T>,
}

impl<T> AuthLayer<T> {
    pub(crate) fn new(auth: Auth) -> AuthLayer<T> {
        AuthLayer {
            auth,
            transport: PhantomData,
        }
    }
}

impl<S, T> Layer<S> for AuthLayer<T> {
    type Service = Authorized<S, T>;

    fn layer(&self, inner: S) -> Authorized<S, T> {
        Authorized {
            inner,
            auth: self.auth.clone(),
            transport: PhantomData,
        }
    }
}

/// See [`AuthLayer`].
#[derive(Debug)]
pub(crate) struct Authorized<S, T> {
    inner: S,
    auth: Auth,
    transport: PhantomData<fn() -> T>,
}

impl<S: Clone, T> Clone for Authorized<S, T> {
    fn clone(&self) -> Self {
        Authorized {
            inner: self.inner.clone(),
            auth: self.auth.clone(),
            transport: PhantomData,
        }
    }
}

impl<S, T, B> Service<http::Request<B>> for Authorized<S, T>
where
    S: Service<http::Request<B>, Response = http::Response<T::Body>>,
    T: Transport,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = AuthFuture<S::Future, T::Body>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if !self.auth.enabled() {
            return AuthFuture::Inner {
                future: self.inner.call(request),
            };
        }
        let group = T::group(request.uri().path());
        match self.auth.check(group, request.headers()) {
            Ok(()) => {
                // Checked: nothing further in needs it, or may log it.
                request.headers_mut().remove(http::header::AUTHORIZATION);
                AuthFuture::Inner {
                    future: self.inner.call(request),
                }
            }
            Err(rejection) => AuthFuture::Refused {
                response: Some(T::reject(&rejection)),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's answer, or a refusal at once.
    #[project = AuthFutureProj]
    pub(crate) enum AuthFuture<F, B> {
        Inner { #[pin] future: F },
        Refused { response: Option<http::Response<B>> },
    }
}

impl<F, B, E> Future for AuthFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AuthFutureProj::Inner { future } => future.poll(cx),
            AuthFutureProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled again after completing: a caller's bug; never
                // answer twice.
                None => Poll::Pending,
            },
        }
    }
}
