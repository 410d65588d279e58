//! The `oxserve` binary as scripts, probes and orchestrators run it: SIGTERM
//! drains and exits 0, `oxserve health` exit codes, start-up errors that name
//! the key or the fix, `--help` covering every configuration key.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{INFERENCE_SERVICE, slow_call, test_models, wait_serving};
use oxserve_client::Client;

const BIN: &str = env!("CARGO_BIN_EXE_oxserve");

/// A port that was free a moment ago (the binary needs a concrete one).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    addr: String,
    /// The metrics port's address, if it has one.
    metrics: Option<std::net::SocketAddr>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on tests/models and connects once it listens.
async fn serve(extra: &[&str]) -> (Server, Client) {
    serve_with_env(extra, &[]).await
}

/// The binary on `repository` (no models of tests/models' kind needed).
async fn serve_repository(repository: &std::path::Path, extra: &[&str]) -> (Server, Client) {
    spawn_server(repository, extra, &[]).await
}

/// [`serve`] with environment variables set for the server.
async fn serve_with_env(extra: &[&str], envs: &[(&str, &str)]) -> (Server, Client) {
    spawn_server(&test_models(), extra, envs).await
}

async fn spawn_server(
    repository: &std::path::Path,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> (Server, Client) {
    spawn_server_logging(repository, extra, envs, Stdio::null()).await
}

/// [`spawn_server`] with the server's log (standard output) going to `log`.
async fn spawn_server_logging(
    repository: &std::path::Path,
    extra: &[&str],
    envs: &[(&str, &str)],
    log: Stdio,
) -> (Server, Client) {
    let addr = format!("127.0.0.1:{}", free_port());
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--model-repository"])
        .arg(repository)
        .args(["--grpc-address", &addr, "--strict-readiness", "false"])
        .args(["--metrics-address", &metrics.to_string()])
        .args(["--http-address", &format!("127.0.0.1:{}", free_port())])
        .args(extra)
        .envs(envs.iter().copied())
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        addr,
        metrics: Some(metrics),
    };
    // The process needs a moment to bind: a lazy client waits for it.
    let client = Client::builder(format!("http://{}", server.addr))
        .connect_lazy()
        .unwrap();
    wait_serving(&client).await;
    (server, client)
}

fn health(addr: &str, service: &str) -> Output {
    Command::new(BIN)
        .args([
            "health",
            "--addr",
            addr,
            "--service",
            service,
            "--timeout",
            "5s",
        ])
        .output()
        .unwrap()
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let (mut server, client) = serve(&["--drain-timeout", "20s"]).await;
    let calls: Vec<_> = (0..3).map(|_| slow_call(&client)).collect();
    let mut calls = calls.into_iter();
    calls.next().unwrap().await.unwrap().unwrap();
    let calls: Vec<_> = calls.collect();
    // SIGTERM once every call not yet answered is in the server (its 16 MiB
    // body received; queued or running): a request still being sent is not
    // in flight yet. In one run of eight on a loaded machine, SIGTERM came
    // while the third was still uploading and it failed.
    let metrics = server.metrics.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = common::get(metrics, "/metrics").await;
        let in_flight: f64 = common::samples(&body)
            .iter()
            .filter(|(k, _)| {
                k.starts_with("oxserve_inflight_requests{") && k.contains("model=\"slow\"")
            })
            .map(|(_, v)| v)
            .sum();
        let unanswered = calls.iter().filter(|c| !c.is_finished()).count();
        if in_flight >= unanswered as f64 {
            break;
        }
        assert!(Instant::now() < deadline, "the other calls never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sigterm(&server.child);
    for call in calls {
        call.await.unwrap().expect("in-flight request drained");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn health_command_exit_codes_follow_the_status() {
    let (server, _client) = serve(&[]).await;
    let out = health(&server.addr, INFERENCE_SERVICE);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "inference.GRPCInferenceService: SERVING"
    );
    assert!(health(&server.addr, "").status.success());
    let out = health(&server.addr, "no.such.Service");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown service"),
        "{out:?}"
    );
    let out = health(&format!("127.0.0.1:{}", free_port()), "");
    assert_eq!(out.status.code(), Some(1), "nothing listens there");
}

/// `oxserve health` on the inference service once the server at `addr`
/// answers and has finished loading its models.
fn settled_health(addr: &str) -> (Output, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = health(addr, INFERENCE_SERVICE);
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !stdout.is_empty() && !stdout.contains("models are loading") {
            return (out, stdout);
        }
        assert!(Instant::now() < deadline, "still loading: {out:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the binary with strict readiness on `repository`.
fn serve_strict(repository: &std::path::Path) -> Server {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(BIN)
        .args(["serve", "--model-repository"])
        .arg(repository)
        .args(["--grpc-address", &addr, "--metrics", "false"])
        .args(["--strict-readiness", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server {
        child,
        addr,
        metrics: None,
    }
}

#[test]
fn health_says_why_the_server_is_not_serving() {
    // What Docker's health log shows for a container without models...
    let empty = tempfile::tempdir().unwrap();
    let server = serve_strict(empty.path());
    let (out, stdout) = settled_health(&server.addr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stdout,
        format!(
            "inference.GRPCInferenceService: NOT_SERVING (the model repository {} holds no models)",
            empty.path().display()
        )
    );
    // The process itself is live all the same.
    assert!(health(&server.addr, "").status.success());
    drop(server);

    // ... and for one whose model cannot load: which, and why.
    let server = serve_strict(&test_models());
    let (out, stdout) = settled_health(&server.addr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout.starts_with(
            "inference.GRPCInferenceService: NOT_SERVING (model 'broken' version 1 failed to load: "
        ),
        "{stdout}"
    );
}

#[tokio::test]
async fn health_follows_the_servers_own_address_settings() {
    // Defaults given as environment variables, as scripts/serve-examples.sh
    // gives them, are overridden by flags: the server listens where the
    // flag says, not on the variable's unusable port.
    let (server, _client) = serve_with_env(&[], &[("OXSERVE_GRPC_ADDRESS", "127.0.0.1:1")]).await;
    let port = server.addr.rsplit(':').next().unwrap();
    let check = |envs: &[(&str, String)], args: &[&str]| {
        Command::new(BIN)
            .args(["health", "--timeout", "5s"])
            .args(args)
            .env_remove("OXSERVE_GRPC_ADDRESS")
            .env_remove("OXSERVE_CONFIG")
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    };
    // From OXSERVE_GRPC_ADDRESS, with the unspecified host asked on loopback.
    let out = check(&[("OXSERVE_GRPC_ADDRESS", format!("0.0.0.0:{port}"))], &[]);
    assert!(out.status.success(), "{out:?}");
    // From the server's config file, named by the flag or by OXSERVE_CONFIG
    // (which `oxserve serve` reads too, so one variable serves both).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("oxserve.toml");
    std::fs::write(&file, format!("grpc_address = \"127.0.0.1:{port}\"\n")).unwrap();
    let out = check(&[], &["--config", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let out = check(&[("OXSERVE_CONFIG", file.display().to_string())], &[]);
    assert!(out.status.success(), "{out:?}");
    // --addr wins over both.
    let elsewhere = format!("127.0.0.1:{}", free_port());
    let out = check(
        &[("OXSERVE_GRPC_ADDRESS", format!("127.0.0.1:{port}"))],
        &["--addr", &elsewhere],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn invalid_configuration_fails_at_start_naming_the_key() {
    let out = Command::new(BIN)
        .args(["serve", "--model-repository"])
        .arg(test_models())
        .env("OXSERVE_DRAIN_TIMEOUT", "forever")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("drain_timeout"), "{err}");

    let out = Command::new(BIN)
        .args(["serve", "--model-repository", "/no/such/dir"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model_repository"));
}

#[test]
fn an_unusable_onnx_runtime_is_a_clear_error_not_a_panic() {
    // A file that exists but is no shared library.
    let not_a_library = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(BIN)
        .args(["serve", "--model-repository"])
        .arg(test_models())
        .args(["--grpc-address", &format!("127.0.0.1:{}", free_port())])
        .args(["--metrics", "false", "--http", "false"])
        .args(["--onnxruntime-library", not_a_library])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot load ONNX Runtime") && err.contains("Cargo.toml"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let out = Command::new(BIN)
        .args(["serve", "--model-repository"])
        .arg(test_models())
        .args(["--onnxruntime-library", "/no/libonnxruntime.so"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("onnxruntime_library"));
}

#[test]
fn help_documents_every_configuration_key() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for setting in oxserve::SETTINGS {
        let (flag, env) = (setting.flag(), setting.env());
        assert!(help.contains(&flag), "--help lacks {flag}");
        assert!(help.contains(&env), "--help lacks {env}");
    }
    assert!(help.contains("--config"));
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("serve") && help.contains("health"));
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn memory_after_fifty_reloads_stays_within_ten_percent_of_after_the_first() {
    let (server, client) = serve_repository(
        &common::example_models(),
        &["--model-control-mode", "explicit", "--load-model", "*"],
    )
    .await;
    let mut inference = client.inference_client();
    let cycle = || {
        let mut inference = inference.clone();
        async move {
            for model in ["mlp", "intent"] {
                inference
                    .repository_model_load(oxserve_client::pb::RepositoryModelLoadRequest {
                        model_name: model.into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        }
    };
    let infer = || async {
        let r = client
            .infer("intent")
            .input_bytes("text", [1, 1], &["Hi, how are you?"])
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.output("label").unwrap().as_strings().unwrap(),
            ["greeting"]
        );
    };
    cycle().await;
    infer().await;
    let after_first = rss_kib(server.child.id());
    for _ in 1..50 {
        cycle().await;
        infer().await;
    }
    let after_fifty = rss_kib(server.child.id());
    eprintln!("RSS after 1 reload cycle: {after_first} KiB; after 50: {after_fifty} KiB");
    assert!(
        after_fifty as f64 <= after_first as f64 * 1.10,
        "RSS grew from {after_first} KiB to {after_fifty} KiB over 50 reloads"
    );
    let _ = inference
        .server_live(oxserve_client::pb::ServerLiveRequest {})
        .await;
}

/// A server fault (here a model that fails inside ONNX Runtime on one row)
/// is logged at ERROR with the model, version and request id on the line
/// itself: at the default level there is no request span to carry them.
#[tokio::test]
async fn a_server_fault_logs_the_model_version_and_request_id() {
    let repository = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/misshapen");
    let model = repository.path().join("misshapen").join("1");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::copy(fixture.join("1/model.onnx"), model.join("model.onnx")).unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let (_server, client) =
        spawn_server_logging(repository.path(), &[], &[], log.reopen().unwrap().into()).await;

    // Two rows of 6 make three rows of 4; one row of 6 cannot.
    let ok = client
        .infer("misshapen")
        .input("INPUT0", [2, 6], &[1.0_f32; 12])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.output("OUTPUT0").unwrap().shape(), [3, 4]);
    let error = client
        .infer("misshapen")
        .id("r-7")
        .input("INPUT0", [1, 6], &[1.0_f32; 6])
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::Internal), "{error}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let text = std::fs::read_to_string(log.path()).unwrap();
        // (Not the warm-up's warning at load, which has a row of its own.)
        let failed = |l: &&str| l.contains("inference failed") && l.contains("r-7");
        if let Some(line) = text.lines().find(failed) {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no `inference failed` line:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(line.contains("ERROR"), "{line}");
    for field in ["model=misshapen", "version=1", "id=r-7", "code=Internal"] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    // The server serves on.
    client
        .infer("misshapen")
        .input("INPUT0", [2, 6], &[1.0_f32; 12])
        .send()
        .await
        .unwrap();
}
