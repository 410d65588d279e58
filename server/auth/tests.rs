use std::convert::Infallible;

use http::{HeaderMap, HeaderValue};
use tower::{Layer, Service, ServiceExt};

use super::layer::{AuthLayer, Grpc, Rest};
use super::*;

fn auth(keys: &str, protected: &[ApiGroup]) -> (Auth, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    std::fs::write(&path, keys).unwrap();
    let auth = Auth::new(Some(&path), protected, Some(Metrics::new())).unwrap();
    (auth, dir)
}

fn with(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_str(value).unwrap());
    headers
}

#[test]
fn missing_malformed_and_wrong_keys_are_told_apart() {
    let (auth, _dir) = auth("right\n", &ApiGroup::default_protected());
    let group = Some(ApiGroup::Inference);
    let reason = |headers: &HeaderMap| auth.check(group, headers).map_err(|r| r.reason);
    assert_eq!(reason(&HeaderMap::new()), Err(Reason::Missing));
    for malformed in ["right", "Basic right", "Bearer", "Bearer   ", "Bearerright"] {
        assert_eq!(
            reason(&with(malformed)),
            Err(Reason::Malformed),
            "{malformed}"
        );
    }
    assert_eq!(reason(&with("Bearer wrong")), Err(Reason::Wrong));
    assert_eq!(reason(&with("Bearer righ")), Err(Reason::Wrong));
    for good in ["Bearer right", "bearer right", "BEARER  right "] {
        assert_eq!(reason(&with(good)), Ok(()), "{good}");
    }
}

#[test]
fn codes_follow_the_reason_and_messages_never_echo_the_key() {
    let (auth, _dir) = auth("right\n", &ApiGroup::default_protected());
    let missing = auth
        .check(Some(ApiGroup::Metadata), &HeaderMap::new())
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(
        missing.message().contains("'metadata'"),
        "{}",
        missing.message()
    );
    let wrong = auth
        .check(Some(ApiGroup::Metadata), &with("Bearer guess-123"))
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied);
    assert!(
        !wrong.message().contains("guess-123"),
        "{}",
        wrong.message()
    );
    let malformed = auth
        .check(Some(ApiGroup::Metadata), &with("Token guess-123"))
        .unwrap_err();
    assert_eq!(malformed.code(), Code::Unauthenticated);
    assert!(!malformed.message().contains("guess-123"));
}

#[test]
fn only_protected_groups_are_checked_and_unknown_paths_need_a_key() {
    let (auth, _dir) = auth("right\n", &[ApiGroup::Inference]);
    let none = HeaderMap::new();
    assert!(auth.check(Some(ApiGroup::Inference), &none).is_err());
    for open in ApiGroup::ALL
        .into_iter()
        .filter(|&g| g != ApiGroup::Inference)
    {
        assert_eq!(auth.check(Some(open), &none), Ok(()), "{open}");
    }
    assert_eq!(
        auth.check(None, &none).map_err(|r| r.reason),
        Err(Reason::Missing)
    );
    assert_eq!(auth.check(None, &with("Bearer right")), Ok(()));

    let (nothing, _dir) = self::auth("right\n", &[]);
    assert!(!nothing.enabled());
    assert_eq!(nothing.check(None, &none), Ok(()));
}

#[test]
fn without_a_key_file_nothing_is_checked() {
    let auth = Auth::new(None, &ApiGroup::ALL, None).unwrap();
    assert!(!auth.enabled());
    for group in ApiGroup::ALL {
        assert_eq!(auth.check(Some(group), &HeaderMap::new()), Ok(()));
    }
    assert!(auth.watch().is_none());
}

#[test]
fn rejections_are_counted_by_group_and_reason() {
    let metrics = Metrics::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    std::fs::write(&path, "right\n").unwrap();
    let auth = Auth::new(Some(&path), &ApiGroup::ALL, Some(Arc::clone(&metrics))).unwrap();
    let _ = auth.check(Some(ApiGroup::Inference), &HeaderMap::new());
    let _ = auth.check(Some(ApiGroup::Inference), &HeaderMap::new());
    let _ = auth.check(Some(ApiGroup::Logging), &with("Bearer no"));
    let _ = auth.check(Some(ApiGroup::Logging), &with("Bearer right"));
    let text = metrics.render();
    let line = |group: &str, reason: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("oxserve_auth_rejections_total")
                    && l.contains(&format!("group=\"{group}\""))
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_string())
    };
    assert_eq!(line("inference", "missing").as_deref(), Some("2"), "{text}");
    assert_eq!(line("logging", "wrong").as_deref(), Some("1"), "{text}");
    // Every protected group's counters exist from the start, at zero.
    assert_eq!(line("logging", "missing").as_deref(), Some("0"), "{text}");
    assert_eq!(line("other", "malformed").as_deref(), Some("0"), "{text}");

    // Without keys nothing is checked, and no counter is shown.
    let quiet = Metrics::new();
    let _ = Auth::new(None, &ApiGroup::ALL, Some(Arc::clone(&quiet))).unwrap();
    assert!(!quiet.render().contains("oxserve_auth_rejections_total{"));
}

/// An inner service that answers 200, with `x-saw-key: yes` if it still
/// saw an `authorization` header.
fn inner<B: Default>()
-> impl Service<http::Request<()>, Response = http::Response<B>, Error = Infallible> + Clone {
    tower::service_fn(|request: http::Request<()>| async move {
        let seen = request.headers().contains_key("authorization");
        let mut response = http::Response::new(B::default());
        if seen {
            response
                .headers_mut()
                .insert("x-saw-key", HeaderValue::from_static("yes"));
        }
        Ok::<_, Infallible>(response)
    })
}

fn request(path: &str, authorization: Option<&str>) -> http::Request<()> {
    let mut builder = http::Request::builder().uri(path);
    if let Some(value) = authorization {
        builder = builder.header("authorization", value);
    }
    builder.body(()).unwrap()
}

async fn body_text(body: axum::body::Body) -> String {
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn grpc_refusals_are_statuses_and_accepted_requests_lose_the_header() {
    let (auth, _dir) = auth("right\n", &ApiGroup::default_protected());
    let service = AuthLayer::<Grpc>::new(auth).layer(inner::<tonic::body::Body>());
    let path = "/inference.GRPCInferenceService/ModelInfer";

    let response = service.clone().oneshot(request(path, None)).await.unwrap();
    let status = tonic::Status::from_header_map(response.headers()).unwrap();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        response.status(),
        http::StatusCode::OK,
        "gRPC errors ride on 200"
    );

    let response = service
        .clone()
        .oneshot(request(path, Some("Bearer nope")))
        .await
        .unwrap();
    let status = tonic::Status::from_header_map(response.headers()).unwrap();
    assert_eq!(status.code(), Code::PermissionDenied);

    let response = service
        .clone()
        .oneshot(request(path, Some("Bearer right")))
        .await
        .unwrap();
    assert!(tonic::Status::from_header_map(response.headers()).is_none());
    assert!(
        !response.headers().contains_key("x-saw-key"),
        "the key is taken off"
    );

    // Health is open by default.
    let response = service
        .oneshot(request("/grpc.health.v1.Health/Check", None))
        .await
        .unwrap();
    assert!(tonic::Status::from_header_map(response.headers()).is_none());
}

#[tokio::test]
async fn rest_refusals_are_401_and_403_with_a_json_error() {
    let (auth, _dir) = auth("right\n", &ApiGroup::default_protected());
    let service = AuthLayer::<Rest>::new(auth).layer(inner::<axum::body::Body>());
    let path = "/v2/models/mlp/infer";

    let response = service.clone().oneshot(request(path, None)).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: serde_json::Value =
        serde_json::from_str(&body_text(response.into_body()).await).unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("'inference'"), "{error}");

    let response = service
        .clone()
        .oneshot(request(path, Some("Bearer nope")))
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
    assert!(!body_text(response.into_body()).await.contains("nope"));

    let response = service
        .clone()
        .oneshot(request(path, Some("Bearer right")))
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    assert!(
        !response.headers().contains_key("x-saw-key"),
        "the key is taken off"
    );

    let response = service
        .oneshot(request("/v2/health/ready", None))
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
}
