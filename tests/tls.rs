//! TLS on every port (gRPC through the SDK's `tls` feature, REST, metrics),
//! mTLS refusing clients without a certificate from the client CA,
//! certificate rotation without a restart, the plaintext health-only
//! listener, and `oxserve health` over TLS.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod common;
mod pki;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use oxserve::{Config, ServeError};
use oxserve_client::Client;
use oxserve_client::tls::{Certificate, ClientTlsConfig, Identity};
use pki::{Leaf, Pki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Every log line of this test binary, for the tests that wait for one.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    Arc::clone(LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    }))
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A server on ephemeral ports, with every address it serves.
struct Server {
    grpc: SocketAddr,
    http: SocketAddr,
    metrics: SocketAddr,
    health: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Server {
    async fn start(config: Config) -> Server {
        let listeners = oxserve::Listeners::bind(&config).await.unwrap();
        let addr = |l: &Option<tokio::net::TcpListener>| l.as_ref().unwrap().local_addr().unwrap();
        let (grpc, http) = (listeners.grpc.local_addr().unwrap(), addr(&listeners.http));
        let (metrics, health) = (addr(&listeners.metrics), addr(&listeners.health));
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(oxserve::run(config, listeners, async move {
            let _ = signal.await;
        }));
        Server {
            grpc,
            http,
            metrics,
            health,
            shutdown: Some(shutdown),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

fn config(dir: &Path, leaf: &Leaf) -> Config {
    let (cert, key) = leaf.write(dir, "tls");
    Config {
        tls_cert: Some(cert),
        tls_key: Some(key),
        metrics_address: "127.0.0.1:0".parse().unwrap(),
        health_address: Some("127.0.0.1:0".parse().unwrap()),
        ..common::config(&common::test_models())
    }
}

fn sdk_tls(pki: &Pki, identity: Option<&Leaf>) -> ClientTlsConfig {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem));
    match identity {
        Some(leaf) => tls.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem)),
        None => tls,
    }
}

async fn sdk(addr: SocketAddr, tls: ClientTlsConfig) -> Client {
    Client::builder(format!("https://{addr}"))
        .tls(tls)
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap()
}

/// Whether the SDK fails to connect or to get an answer (TLS 1.2 fails at
/// connect; TLS 1.3 reports a refused client certificate after the
/// client's side of the handshake, at the first request).
async fn refused(addr: SocketAddr, scheme: &str, tls: Option<ClientTlsConfig>) -> bool {
    let mut builder = Client::builder(format!("{scheme}://{addr}")).timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    match builder.connect().await {
        Err(_) => true,
        Ok(client) => client.is_live().await.is_err(),
    }
}

/// GET `path` over an HTTP/1.1 connection kept open; the status code.
async fn get<S>(stream: &mut S, path: &str) -> u16
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    head[9..12].parse().unwrap()
}

/// Waits (polling, at most 20 s) until `condition` holds.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Replaces a file the way a writer that cares does: whole, by rename.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_grpc_rest_and_metrics_and_plaintext_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test CA");
    let server = Server::start(Config {
        metrics_tls: true,
        ..config(dir.path(), &pki.server(1))
    })
    .await;

    // gRPC through the SDK's `tls` feature.
    let client = sdk(server.grpc, sdk_tls(&pki, None)).await;
    assert!(client.is_live().await.unwrap());
    common::wait_serving(&client).await;
    assert!(client.model_ready("identity_fp32", None).await.is_ok());

    // A client that does not trust the CA, and a plaintext client, fail.
    let other = Pki::new("other CA");
    assert!(refused(server.grpc, "https", Some(sdk_tls(&other, None))).await);
    assert!(refused(server.grpc, "http", None).await);

    // REST (HTTP/1.1 negotiated by ALPN) and metrics over the same TLS.
    let rest = pki::client_config(&pki.ca_pem, None, &[b"http/1.1"]);
    let mut stream = pki::connect(server.http, Arc::clone(&rest)).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(get(&mut stream, "/v2/health/live").await, 200);
    let mut stream = pki::connect(server.metrics, rest).await.unwrap();
    assert_eq!(get(&mut stream, "/metrics").await, 200);

    // gRPC's port negotiates h2 (grpc-go refuses a server that does not).
    let h2 = pki::client_config(&pki.ca_pem, None, &[b"h2"]);
    let stream = pki::connect(server.grpc, h2).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    // The health-only listener is plaintext and serves nothing else.
    let health = Client::connect(format!("http://{}", server.health))
        .await
        .unwrap();
    let status = health.health_check("").await.unwrap();
    assert_eq!(status, oxserve_client::ServingStatus::Serving);
    let metadata = health.server_metadata().await.unwrap_err();
    assert_eq!(
        metadata.code(),
        Some(tonic::Code::Unimplemented),
        "{metadata:?}"
    );

    // `oxserve health` as a Docker HEALTHCHECK runs it, from the server's
    // settings: the health listener when there is one, else the gRPC port
    // (which, with TLS on, a plaintext check cannot pass).
    let (grpc, health) = (server.grpc.to_string(), server.health.to_string());
    let settings = move |health_address: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_oxserve"));
        command
            .args(["health", "--timeout", "5s"])
            .env_remove("OXSERVE_CONFIG")
            .env_remove("OXSERVE_HEALTH_ADDRESS")
            .env("OXSERVE_GRPC_ADDRESS", &grpc);
        if let Some(address) = health_address {
            command.env("OXSERVE_HEALTH_ADDRESS", address);
        }
        command.output().unwrap()
    };
    let (with, without) =
        tokio::task::spawn_blocking(move || (settings(Some(&health)), settings(None)))
            .await
            .unwrap();
    assert!(with.status.success(), "{with:?}");
    assert!(!without.status.success(), "{without:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_clients_without_a_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test CA");
    let clients = Pki::new("client CA");
    let ca = dir.path().join("client-ca.crt");
    std::fs::write(&ca, &clients.ca_pem).unwrap();
    let server = Server::start(Config {
        tls_client_ca: Some(ca),
        ..config(dir.path(), &pki.server(1))
    })
    .await;

    let good = clients.client("app");
    let client = sdk(server.grpc, sdk_tls(&pki, Some(&good))).await;
    assert!(client.is_live().await.unwrap());

    assert!(
        refused(server.grpc, "https", Some(sdk_tls(&pki, None))).await,
        "no client certificate"
    );
    let stranger = Pki::new("stranger CA").client("app");
    assert!(
        refused(server.grpc, "https", Some(sdk_tls(&pki, Some(&stranger)))).await,
        "a certificate from another CA"
    );

    // REST is behind the same mTLS.
    let refused = pki::client_config(&pki.ca_pem, None, &[b"http/1.1"]);
    let refused_answer = async {
        let mut stream = pki::connect(server.http, refused).await?;
        stream
            .write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            .await?;
        let mut buf = [0u8; 1];
        stream.read_exact(&mut buf).await
    };
    assert!(refused_answer.await.is_err());
    let accepted = pki::client_config(&pki.ca_pem, Some(&good), &[b"http/1.1"]);
    let mut stream = pki::connect(server.http, accepted).await.unwrap();
    assert_eq!(get(&mut stream, "/v2/health/live").await, 200);

    // `oxserve health` with the CA and a client certificate, and without.
    common::wait_serving(&client).await;
    let (cert, key) = good.write(dir.path(), "client");
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let grpc = server.grpc.to_string();
    let health = move |with_identity: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_oxserve"));
        command
            .args(["health", "--addr", &grpc, "--timeout", "5s"])
            .arg("--tls-ca")
            .arg(&ca_file);
        if with_identity {
            command
                .arg("--tls-client-cert")
                .arg(&cert)
                .arg("--tls-client-key")
                .arg(&key);
        }
        command.output().unwrap()
    };
    let output = tokio::task::spawn_blocking(move || (health(true), health(false)))
        .await
        .unwrap();
    assert!(output.0.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.0.stdout).contains("SERVING"));
    assert!(!output.1.status.success(), "{output:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_reach_new_connections_and_bad_files_are_refused() {
    let logs = logs();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test CA");
    let first = pki.server(1);
    let server = Server::start(Config {
        tls_reload_interval: Duration::from_millis(100),
        ..config(dir.path(), &first)
    })
    .await;
    let rest = pki::client_config(&pki.ca_pem, None, &[b"http/1.1"]);
    let presented = |config| async move {
        let stream = pki::connect(server.http, config).await.unwrap();
        pki::peer_certificate(&stream)
    };

    let mut old = pki::connect(server.http, Arc::clone(&rest)).await.unwrap();
    assert_eq!(pki::peer_certificate(&old), first.der);
    assert_eq!(get(&mut old, "/v2/health/live").await, 200);

    // Rotation: the key, then the certificate (a reader between the two
    // sees a mismatched pair, which is refused until the pair matches).
    let second = pki.server(2);
    replace(&dir.path().join("tls.key"), &second.key_pem);
    replace(&dir.path().join("tls.crt"), &second.cert_pem);
    eventually("the new certificate", || {
        let rest = Arc::clone(&rest);
        let expected = second.der.clone();
        async move { presented(rest).await == expected }
    })
    .await;
    // The connection opened before keeps working, on its certificate.
    assert_eq!(get(&mut old, "/v2/health/live").await, 200);
    assert_eq!(pki::peer_certificate(&old), first.der);

    // A bad certificate file: logged, and the second certificate stays.
    replace(
        &dir.path().join("tls.crt"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    );
    let crt = dir.path().join("tls.crt").display().to_string();
    eventually("the rejection's log line", || {
        let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
        let found = text.lines().any(|l| {
            l.contains("ERROR") && l.contains("cannot reload TLS files") && l.contains(&crt)
        });
        async move { found }
    })
    .await;
    assert_eq!(presented(Arc::clone(&rest)).await, second.der);
    assert_eq!(get(&mut old, "/v2/health/live").await, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_missing_or_mismatched_key_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test CA");
    let mut config = config(dir.path(), &pki.server(1));
    std::fs::write(config.tls_key.as_ref().unwrap(), pki.server(2).key_pem).unwrap();
    config.health_address = None;
    let listeners = oxserve::Listeners::bind(&config).await.unwrap();
    let error = oxserve::run(config, listeners, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(error, ServeError::Tls(_)), "{error}");
    assert!(error.to_string().contains("tls_cert"), "{error}");
}
