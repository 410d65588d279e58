//! A real oxserve server in-process on `127.0.0.1:0`, and the SDK client
//! connected to it.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use oxserve::{Config, ServeError};
use oxserve_client::Client;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The service name readiness is reported under.
pub(crate) const INFERENCE_SERVICE: &str = "inference.GRPCInferenceService";

/// `tests/models` of this checkout.
pub(crate) fn test_models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models")
}

/// `examples/models` of this checkout.
pub(crate) fn example_models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models")
}

/// A running server; stop it with [`TestServer::stop`].
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    /// Where its REST API is served.
    pub(crate) http_addr: SocketAddr,
    /// Where its Prometheus metrics are served.
    pub(crate) metrics_addr: SocketAddr,
    pub(crate) client: Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

/// A config for `repository` on an ephemeral port. `tests/models` holds a
/// deliberately broken model, so readiness there is not strict.
pub(crate) fn config(repository: &Path) -> Config {
    Config {
        model_repository: repository.to_path_buf(),
        grpc_address: "127.0.0.1:0".parse().unwrap(),
        http_address: "127.0.0.1:0".parse().unwrap(),
        strict_readiness: false,
        drain_timeout: Duration::from_secs(10),
        ..Config::default()
    }
}

/// Starts a server with `config` and waits until it reports SERVING.
pub(crate) async fn start(config: Config) -> TestServer {
    let server = spawn(config).await;
    wait_serving(&server.client).await;
    server
}

/// Starts a server without waiting for readiness.
pub(crate) async fn spawn(config: Config) -> TestServer {
    let grpc = tokio::net::TcpListener::bind(config.grpc_address)
        .await
        .unwrap();
    let addr = grpc.local_addr().unwrap();
    let http = tokio::net::TcpListener::bind(config.http_address)
        .await
        .unwrap();
    let http_addr = http.local_addr().unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let listeners = oxserve::Listeners {
        grpc,
        http: Some(http),
        metrics: Some(metrics),
        health: None,
    };
    let (shutdown, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(oxserve::run(config, listeners, async move {
        let _ = signal.await;
    }));
    let client = Client::builder(format!("http://{addr}"))
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .expect("the listener is bound, so connecting succeeds");
    TestServer {
        addr,
        http_addr,
        metrics_addr,
        client,
        shutdown: Some(shutdown),
        task,
    }
}

/// Waits until the server is ready for inference (the one helper every
/// test uses: the SDK's own, following health with `Watch`); panics after
/// 60 s.
pub(crate) async fn wait_serving(client: &Client) {
    client
        .wait_until_serving(INFERENCE_SERVICE, Duration::from_secs(60))
        .await
        .expect("the server becomes SERVING");
}

impl TestServer {
    /// Signals shutdown and waits for `run` to return.
    pub(crate) async fn stop(mut self) -> Result<(), ServeError> {
        self.begin_shutdown();
        self.task.await.expect("server task panicked")
    }

    /// Signals shutdown without waiting.
    pub(crate) fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for `run` to return (after [`TestServer::begin_shutdown`]).
    pub(crate) async fn join(self) -> Result<(), ServeError> {
        self.task.await.expect("server task panicked")
    }
}

/// Raw little-endian bytes of `f32`s.
pub(crate) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A request to the `slow` test model that takes about a quarter of a
/// second on one core: long enough to be in flight when a test acts.
pub(crate) fn slow_call(
    client: &Client,
) -> JoinHandle<oxserve_client::Result<oxserve_client::InferResponse>> {
    let client = client.clone();
    tokio::spawn(async move {
        let n = 2048usize;
        let matrix = vec![1e-3f32; n * n];
        client
            .infer("slow")
            .input("INPUT0", [n as i64, n as i64], &matrix)
            .send()
            .await
    })
}

/// GETs `path` over HTTP/1.1 and returns (status line, body).
pub(crate) async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// Every sample of a Prometheus exposition as `name{labels}` → value.
pub(crate) fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sample `key`; panics if there is none.
pub(crate) fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key}"))
}

impl TestServer {
    /// The server's metrics now.
    pub(crate) async fn metrics(&self) -> BTreeMap<String, f64> {
        let (status, body) = get(self.metrics_addr, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        samples(&body)
    }

    /// Waits until the metric `key` reads `expected`: for state the test
    /// cannot observe otherwise (a request sitting in a queue). Panics after
    /// 30 s.
    pub(crate) async fn wait_for_metric(&self, key: &str, expected: f64) {
        let wait = async {
            loop {
                if self.metrics().await.get(key) == Some(&expected) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("{key} never read {expected}"));
    }
}

/// An answer from the REST API.
pub(crate) struct RestAnswer {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: bytes::Bytes,
}

impl RestAnswer {
    /// The body as JSON; panics if it is not.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(500)])
            )
        })
    }
}

/// Sends one REST request over HTTP/1.1 and reads the whole answer.
pub(crate) async fn rest(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<bytes::Bytes>,
) -> RestAnswer {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(http_body_util::Full::new(body.into()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    RestAnswer {
        status,
        headers,
        body,
    }
}

/// POSTs `json` to `path`.
pub(crate) async fn post_json(addr: SocketAddr, path: &str, json: serde_json::Value) -> RestAnswer {
    rest(
        addr,
        "POST",
        path,
        &[("content-type", "application/json")],
        serde_json::to_vec(&json).unwrap(),
    )
    .await
}

/// GETs `path` from the REST API.
pub(crate) async fn rest_get(addr: SocketAddr, path: &str) -> RestAnswer {
    rest(addr, "GET", path, &[], bytes::Bytes::new()).await
}
