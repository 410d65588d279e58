//! The client SDK against a different server implementation: KServe's
//! Python model server (`kserve` from PyPI, grpcio underneath) running
//! `tests/interop/kserve_server.py`. It shows the SDK relies on the v2
//! protocol, not on oxserve's quirks: KServe answers in typed `contents` as
//! well as raw, words its errors differently and has no health service.
//!
//! Skipped, with the reason printed, when the Python it would use cannot
//! `import kserve`. That Python is `$KSERVE_PYTHON` if set, else the
//! project's `.venv/bin/python`.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use oxserve_client::{Client, DataType, Error, RetryPolicy};
use tonic::Code;

fn python() -> PathBuf {
    std::env::var_os("KSERVE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// Why the test cannot run here, if it cannot.
fn missing_kserve(python: &PathBuf) -> Option<String> {
    match Command::new(python)
        .args(["-c", "import kserve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => None,
        Ok(_) => Some(format!("{} cannot import kserve", python.display())),
        Err(e) => Some(format!("cannot run {}: {e}", python.display())),
    }
}

/// Two distinct ports free right now (the server binds them a moment
/// later): both are held until both are known, so they cannot coincide.
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// The KServe process, killed when dropped so a failing test leaves
/// nothing behind; its log is printed if the test failed.
struct KServe {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Drop for KServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
            eprintln!("--- KServe log ---\n{log}");
        }
    }
}

#[tokio::test]
async fn the_sdk_works_against_kserve() {
    let python = python();
    if let Some(reason) = missing_kserve(&python) {
        println!("skipped: {reason} (pip install kserve to run this test)");
        return;
    }
    let (grpc_port, http_port) = free_ports();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/kserve_server.py");
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(&python)
        .arg(script)
        .args([grpc_port.to_string(), http_port.to_string()])
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("python starts");
    let _server = KServe { child, log };

    // Python takes seconds to import KServe: the SDK's own retries on
    // UNAVAILABLE wait for it (up to about a minute).
    let client = Client::builder(format!("http://127.0.0.1:{grpc_port}"))
        .timeout(Duration::from_secs(30))
        .retry(
            RetryPolicy::default()
                .max_attempts(300)
                .backoff(Duration::from_millis(50), Duration::from_millis(200)),
        )
        .connect_lazy()
        .unwrap();
    assert!(client.is_live().await.expect("KServe comes up"));
    assert!(client.is_ready().await.unwrap());
    assert!(client.model_ready("echo", None).await.unwrap());
    let meta = client.server_metadata().await.unwrap();
    assert!(!meta.name.is_empty());
    let meta = client.model_metadata("echo", None).await.unwrap();
    assert_eq!(meta.name, "echo");

    // Raw in; raw (`echo`) or typed contents (`echo_typed`) out.
    for model in ["echo", "echo_typed"] {
        let response = client
            .infer(model)
            .id("kserve-1")
            .input("f32", [2, 2], &[1.5f32, -2.0, 0.0, 1e-3])
            .input("f64", [1], &[0.25f64])
            .input("i8", [2], &[i8::MIN, i8::MAX])
            .input("i16", [1], &[-300i16])
            .input("i32", [1, 1], &[i32::MIN])
            .input("i64", [2], &[i64::MIN, 7])
            .input("u8", [3], &[0u8, 1, 255])
            .input("u16", [1], &[u16::MAX])
            .input("u32", [1], &[u32::MAX])
            .input("u64", [1], &[u64::MAX])
            .input("bool", [3], &[true, false, true])
            .input_bytes("text", [2], &["hello", "naïve"])
            .send()
            .await
            .unwrap_or_else(|e| panic!("{model}: {e}"));
        assert_eq!(response.id(), "kserve-1", "{model}");
        let out = |name| response.try_output(name).unwrap();
        let typed = model == "echo_typed";
        assert_eq!(out("f32").raw().is_none(), typed, "{model} encoding");
        assert_eq!(out("f32").shape(), [2, 2]);
        assert_eq!(out("f32").as_f32().unwrap(), [1.5, -2.0, 0.0, 1e-3]);
        assert_eq!(out("f64").as_f64().unwrap(), [0.25]);
        assert_eq!(out("i8").as_i8().unwrap(), [i8::MIN, i8::MAX]);
        assert_eq!(out("i16").as_i16().unwrap(), [-300]);
        assert_eq!(out("i32").as_i32().unwrap(), [i32::MIN]);
        assert_eq!(out("i64").as_i64().unwrap(), [i64::MIN, 7]);
        assert_eq!(out("u8").as_u8().unwrap(), [0, 1, 255]);
        assert_eq!(out("u16").as_u16().unwrap(), [u16::MAX]);
        assert_eq!(out("u32").as_u32().unwrap(), [u32::MAX]);
        assert_eq!(out("u64").as_u64().unwrap(), [u64::MAX]);
        assert_eq!(out("bool").as_bool().unwrap(), [true, false, true]);
        assert_eq!(out("text").as_strings().unwrap(), ["hello", "naïve"]);
    }

    // FP16 travels raw both ways (KServe switches to raw for it).
    let half = vec![0x00, 0x3c, 0x00, 0xc0];
    let response = client
        .infer("echo")
        .input_raw("h", DataType::Fp16, [2], half.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.try_output("h").unwrap().raw(), Some(&half[..]));

    // Errors keep KServe's code and message.
    let status = |e: Error| (e.code(), e.message().unwrap_or_default().to_owned());
    let (code, message) = status(client.infer("no_such_model").send().await.unwrap_err());
    assert_eq!(code, Some(Code::NotFound), "{message}");
    assert!(message.contains("no_such_model"), "{message}");
    let failing = client.infer("fail").input("x", [1], &[1u8]).send().await;
    let (code, message) = status(failing.unwrap_err());
    assert_eq!(code, Some(Code::InvalidArgument), "{message}");
    assert!(message.contains("this model always fails"), "{message}");
    // KServe serves no grpc.health.v1: the SDK reports that as it is.
    let err = client.health_check("").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unimplemented), "{err}");
}
