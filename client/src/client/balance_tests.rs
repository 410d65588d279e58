//! Several endpoints, retries, headers and DNS targets, against mock
//! servers over real sockets.

use std::sync::Mutex;

use super::*;
use crate::{DEFAULT_USER_AGENT, InferResponse, mock};

/// An address nothing listens on: bind an ephemeral port, then free it.
async fn closed_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// Retries without waiting long, recording each retry's attempt and code.
fn quick_retries(log: &Arc<Mutex<Vec<(u32, tonic::Code)>>>) -> RetryPolicy {
    let log = Arc::clone(log);
    RetryPolicy::default()
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .on_retry(move |event| {
            let code = event.error.code().expect("only statuses are retried");
            log.lock().unwrap().push((event.attempt, code));
        })
}

async fn echo(client: &Client) -> Result<InferResponse> {
    client.infer("echo").input("x", [1], &[1u8]).send().await
}

#[tokio::test]
async fn requests_alternate_between_endpoints() {
    let (a, b) = (mock::start().await, mock::start().await);
    let client = Client::balanced([a.endpoint(), b.endpoint()])
        .connect()
        .await
        .unwrap();
    assert_eq!(client.endpoints(), [a.endpoint(), b.endpoint()]);
    for _ in 0..10 {
        echo(&client).await.unwrap();
    }
    assert_eq!((a.infers(), b.infers()), (5, 5));
    // Clones share the rotation.
    let clone = client.clone();
    echo(&clone).await.unwrap();
    echo(&client).await.unwrap();
    assert_eq!((a.infers(), b.infers()), (6, 6));
}

#[tokio::test]
async fn unavailable_is_retried_with_backoff_until_it_succeeds() {
    let server = mock::start().await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let client = Client::builder(server.endpoint())
        .retry(quick_retries(&log))
        .connect()
        .await
        .unwrap();
    server.fail_next(2);
    let response = client
        .infer("flaky")
        .input("x", [1], &[7u8])
        .send()
        .await
        .unwrap();
    assert_eq!(response.output("x").unwrap().as_u8().unwrap(), [7]);
    assert_eq!(server.infers(), 3);
    let unavailable = tonic::Code::Unavailable;
    assert_eq!(*log.lock().unwrap(), [(1, unavailable), (2, unavailable)]);
}

#[tokio::test]
async fn retries_stop_at_the_attempt_limit() {
    let server = mock::start().await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let client = Client::builder(server.endpoint())
        .retry(quick_retries(&log).max_attempts(3))
        .connect()
        .await
        .unwrap();
    server.fail_next(10);
    let err = client.infer("flaky").send().await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unavailable), "{err}");
    assert_eq!(err.message(), Some("flaky: failing on purpose"));
    assert_eq!(server.infers(), 3);
    assert_eq!(log.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn only_idempotent_calls_and_listed_codes_are_retried() {
    let server = mock::start().await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let client = Client::builder(server.endpoint())
        .retry(quick_retries(&log))
        .connect()
        .await
        .unwrap();
    let once = |builder: InferBuilder| async {
        let before = server.infers();
        server.fail_next(1);
        let err = builder.send().await.unwrap_err();
        assert_eq!(err.code(), Some(tonic::Code::Unavailable));
        server.infers() - before
    };
    assert_eq!(once(client.infer("flaky").idempotent(false)).await, 1);
    // A step of a stateful sequence must not run twice.
    let step = client.infer("flaky").parameter("sequence_id", 7i64);
    assert_eq!(once(step).await, 1);
    let cautious = client
        .clone()
        .with_retry(client.retry_policy().clone().retry_inference(false));
    assert_eq!(once(cautious.infer("flaky")).await, 1);
    // ...unless the request says it is safe.
    server.fail_next(1);
    cautious
        .infer("flaky")
        .idempotent(true)
        .send()
        .await
        .unwrap();
    // Codes other than UNAVAILABLE fail at once.
    let before = server.infers();
    let err = client.infer("nope").send().await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound));
    assert_eq!(server.infers() - before, 1);
    server.fail_next(0);
    assert_eq!(
        log.lock().unwrap().len(),
        1,
        "only the idempotent(true) call"
    );
}

#[tokio::test]
async fn a_dead_endpoint_does_not_fail_requests() {
    let live = mock::start().await;
    let dead = closed_endpoint().await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let client = Client::balanced([dead.clone(), live.endpoint()])
        .retry(quick_retries(&log))
        .connect()
        .await
        .expect("one reachable endpoint is enough");
    for _ in 0..6 {
        echo(&client).await.unwrap();
        assert!(client.is_live().await.unwrap());
    }
    assert_eq!(live.infers(), 6);
    // The dead endpoint cost one failed attempt, then was passed over.
    assert_eq!(*log.lock().unwrap(), [(1, tonic::Code::Unavailable)]);
}

#[tokio::test]
async fn connecting_fails_only_when_every_endpoint_is_down() {
    let (first, second) = (closed_endpoint().await, closed_endpoint().await);
    let err = Client::balanced([first.clone(), second])
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Connect { endpoint, .. } if *endpoint == first),
        "{err}"
    );
    let err = Client::balanced(Vec::<String>::new())
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[tokio::test]
async fn headers_and_user_agent_go_with_every_request() {
    let server = mock::start().await;
    let client = Client::builder(server.endpoint())
        .user_agent("my-app/1.2")
        .bearer_token("s3cret")
        .header("x-tenant", "blue")
        .connect()
        .await
        .unwrap();
    let response = client
        .infer("headers")
        .header("x-request", "one")
        .send()
        .await
        .unwrap();
    let headers = response.output("headers").unwrap().as_strings().unwrap();
    for expected in [
        "authorization=Bearer s3cret",
        "x-tenant=blue",
        "x-request=one",
    ] {
        assert!(
            headers.iter().any(|h| h == expected),
            "{expected} in {headers:?}"
        );
    }
    assert!(
        headers
            .iter()
            .any(|h| h.starts_with("user-agent=my-app/1.2")),
        "{headers:?}"
    );
    // The per-request header stays with that request.
    let response = client.infer("headers").send().await.unwrap();
    let headers = response.output("headers").unwrap().as_strings().unwrap();
    assert!(!headers.iter().any(|h| h.starts_with("x-request")));
    let default_ua = Client::connect(server.endpoint()).await.unwrap();
    let response = default_ua.infer("headers").send().await.unwrap();
    let headers = response.output("headers").unwrap().as_strings().unwrap();
    let ua = format!("user-agent={DEFAULT_USER_AGENT}");
    assert!(headers.iter().any(|h| h.starts_with(&ua)), "{headers:?}");
}

#[tokio::test]
async fn the_api_key_goes_as_a_bearer_token() {
    let server = mock::start().await;
    let client = Client::builder(server.endpoint())
        .api_key("k3y")
        .connect()
        .await
        .unwrap();
    let response = client.infer("headers").send().await.unwrap();
    let headers = response.output("headers").unwrap().as_strings().unwrap();
    assert!(
        headers.iter().any(|h| h == "authorization=Bearer k3y"),
        "{headers:?}"
    );
    let builder = Client::builder(server.endpoint())
        .api_key("k3y")
        .header("x-tenant", "blue");
    let shown = format!("{builder:?}");
    assert!(!shown.contains("k3y"), "{shown}");
    assert!(shown.contains("blue"), "{shown}");
    let err = Client::builder("http://127.0.0.1:9")
        .api_key("two\nlines")
        .connect_lazy()
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[tokio::test]
async fn invalid_headers_are_configuration_errors() {
    let err = Client::builder("http://127.0.0.1:9")
        .header("Not A Name", "x")
        .connect_lazy()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("Not A Name")),
        "{err}"
    );
    let err = Client::builder("http://127.0.0.1:9")
        .header("x-ok", "line\nbreak")
        .connect_lazy()
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    let client = Client::builder("http://127.0.0.1:9")
        .connect_lazy()
        .unwrap();
    let err = client
        .infer("m")
        .header("x-ok", "bad\u{7f}")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn https_needs_the_tls_feature() {
    let err = Client::builder("https://127.0.0.1:9")
        .connect_lazy()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("`tls` feature")),
        "{err}"
    );
}

#[tokio::test]
async fn a_dns_name_is_resolved_to_its_addresses() {
    let server = mock::start().await;
    let port = server.addr.port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let client = Client::dns(format!("http://localhost:{port}"))
        .retry(quick_retries(&log))
        .connect()
        .await
        .unwrap();
    // localhost may also resolve to ::1, where nothing listens: requests
    // still succeed, through retries on the next address.
    let expected = format!("http://127.0.0.1:{port}");
    assert!(
        client.endpoints().contains(&expected),
        "{:?}",
        client.endpoints()
    );
    for _ in 0..4 {
        echo(&client).await.unwrap();
    }
    assert_eq!(server.infers(), 4);
    assert!(client.health_check("").await.unwrap().is_serving());
}

#[tokio::test]
async fn a_lazy_dns_client_resolves_in_the_background() {
    let server = mock::start().await;
    let port = server.addr.port();
    let client = Client::dns(format!("http://localhost:{port}"))
        .resolve_interval(Duration::from_millis(20))
        .retry(
            RetryPolicy::default()
                .max_attempts(50)
                .backoff(Duration::from_millis(10), Duration::from_millis(50)),
        )
        .connect_lazy()
        .unwrap();
    echo(&client).await.unwrap();
    let expected = format!("http://127.0.0.1:{port}");
    assert!(
        client.endpoints().contains(&expected),
        "{:?}",
        client.endpoints()
    );
    // The raw clients work on it too.
    assert!(
        client
            .inference_client()
            .server_live(pb::ServerLiveRequest {})
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn unresolvable_names_fail_to_connect() {
    let err = Client::dns("http://no-such-host.invalid:8001")
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    let err = Client::dns("no host").connect().await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
}

#[tokio::test]
async fn connection_options_are_accepted() {
    let server = mock::start().await;
    let client = Client::builder(server.endpoint())
        .connect_timeout(Duration::from_secs(5))
        .keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .max_send_message_size(1024)
        .max_receive_message_size(2 << 20)
        .connect()
        .await
        .unwrap();
    assert_eq!(client.max_send_message_size(), 1024);
    assert_eq!(client.max_receive_message_size(), 2 << 20);
    assert_eq!(client.max_message_size(), 1024);
    // A 1 MiB response is within the receive limit...
    let big = client
        .infer("big")
        .parameter("size", 1u64 << 20)
        .send()
        .await;
    assert_eq!(
        big.unwrap().output("big").unwrap().raw().unwrap().len(),
        1 << 20
    );
    // ...but a 2 KiB request is over the send limit.
    let err = client
        .infer("echo")
        .input("x", [2048], &[0u8; 2048])
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::OutOfRange), "{err}");
}
