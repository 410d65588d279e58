//! The model repository extension through the wire: RepositoryIndex,
//! RepositoryModelLoad (config overrides, uploaded files) and
//! RepositoryModelUnload, control modes, and reloads under load that fail
//! no request.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use common::{TestServer, config, start, test_models};
use oxserve::ControlMode;
use oxserve_client::pb;
use pb::model_repository_parameter::ParameterChoice;
use tonic::Code;

fn fixture(version: u64) -> PathBuf {
    match version {
        2 => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/versioned_v2.onnx"),
        v => test_models().join(format!("versioned/{v}/model.onnx")),
    }
}

/// A repository holding `versioned` (the given versions, default policy:
/// latest only) and `identity_fp32`.
fn repository(versions: &[u64]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for &v in versions {
        add_version(dir.path(), v);
    }
    let identity = dir.path().join("identity_fp32/1");
    std::fs::create_dir_all(&identity).unwrap();
    std::fs::copy(
        test_models().join("identity_fp32/1/model.onnx"),
        identity.join("model.onnx"),
    )
    .unwrap();
    dir
}

fn add_version(root: &Path, version: u64) {
    let staging = root.join(format!(".staging-{version}"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(fixture(version), staging.join("model.onnx")).unwrap();
    let target = root.join("versioned").join(version.to_string());
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::rename(staging, target).unwrap();
}

async fn explicit(root: &Path, load: &[&str]) -> TestServer {
    let mut cfg = config(root);
    cfg.model_control_mode = ControlMode::Explicit;
    cfg.load_model = load.iter().map(|s| s.to_string()).collect();
    start(cfg).await
}

fn inference(server: &TestServer) -> pb::GrpcInferenceServiceClient<tonic::transport::Channel> {
    server.client.inference_client()
}

async fn load(
    server: &TestServer,
    model: &str,
    parameters: HashMap<String, pb::ModelRepositoryParameter>,
) -> Result<(), tonic::Status> {
    inference(server)
        .repository_model_load(pb::RepositoryModelLoadRequest {
            repository_name: String::new(),
            model_name: model.into(),
            parameters,
        })
        .await
        .map(|_| ())
}

async fn unload(server: &TestServer, model: &str) -> Result<(), tonic::Status> {
    inference(server)
        .repository_model_unload(pb::RepositoryModelUnloadRequest {
            repository_name: String::new(),
            model_name: model.into(),
            parameters: HashMap::from([(
                "unload_dependents".into(),
                pb::ModelRepositoryParameter {
                    parameter_choice: Some(ParameterChoice::BoolParam(false)),
                },
            )]),
        })
        .await
        .map(|_| ())
}

async fn index(server: &TestServer, ready: bool) -> Vec<(String, String, String, String)> {
    let mut rows: Vec<_> = inference(server)
        .repository_index(pb::RepositoryIndexRequest {
            repository_name: String::new(),
            ready,
        })
        .await
        .unwrap()
        .into_inner()
        .models
        .into_iter()
        .map(|m| (m.name, m.version, m.state, m.reason))
        .collect();
    rows.sort();
    rows
}

/// `versioned` answers INPUT0 + its version; returns (version, output).
async fn ask(client: &oxserve_client::Client, x: f32) -> oxserve_client::Result<(u64, f32)> {
    let r = client
        .infer("versioned")
        .input("INPUT0", [1, 1], &[x])
        .send()
        .await?;
    let version: u64 = r.model_version().parse().unwrap();
    let y = r.output("OUTPUT0").unwrap().as_f32().unwrap()[0];
    Ok((version, y))
}

fn string(value: &str) -> pb::ModelRepositoryParameter {
    pb::ModelRepositoryParameter {
        parameter_choice: Some(ParameterChoice::StringParam(value.into())),
    }
}

fn bytes(value: Vec<u8>) -> pb::ModelRepositoryParameter {
    pb::ModelRepositoryParameter {
        parameter_choice: Some(ParameterChoice::BytesParam(Bytes::from(value))),
    }
}

#[tokio::test]
async fn the_index_tells_every_models_state_and_none_mode_refuses_loads() {
    let server = start(config(&test_models())).await;
    let rows = index(&server, false).await;
    assert!(rows.contains(&(
        "identity_fp32".into(),
        "1".into(),
        "READY".into(),
        String::new()
    )));
    let broken = rows.iter().find(|r| r.0 == "broken").unwrap();
    assert_eq!(broken.2, "UNAVAILABLE");
    assert!(broken.3.contains("cannot load"), "{broken:?}");
    let ready = index(&server, true).await;
    assert!(ready.iter().all(|r| r.2 == "READY"));
    assert!(!ready.iter().any(|r| r.0 == "broken"));

    let e = load(&server, "identity_fp32", HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("'none'"), "{}", e.message());
    let e = unload(&server, "identity_fp32").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    let meta = server.client.server_metadata().await.unwrap();
    assert!(meta.extensions.contains(&"model_repository".to_string()));
    assert!(
        meta.extensions
            .contains(&"model_repository(unload_dependents)".to_string())
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn explicit_mode_loads_unloads_and_takes_configs_and_files() {
    let dir = repository(&[1, 3]);
    let mut cfg = config(dir.path());
    cfg.model_control_mode = ControlMode::Explicit;
    cfg.load_model = vec!["identity_fp32".into()];
    cfg.max_message_size = 64 * 1024;
    let server = start(cfg).await;
    // No retries: each UNAVAILABLE below is one request, counted once.
    let client = oxserve_client::Client::builder(format!("http://{}", server.addr))
        .retry(oxserve_client::RetryPolicy::never())
        .connect()
        .await
        .unwrap();
    let c = &client;

    // Only what was named is loaded.
    let e = ask(c, 1.0).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "{e}");
    assert!(index(&server, false).await.contains(&(
        "versioned".into(),
        String::new(),
        "UNAVAILABLE".into(),
        "not loaded".into()
    )));

    load(&server, "versioned", HashMap::new()).await.unwrap();
    assert_eq!(ask(c, 1.0).await.unwrap(), (3, 4.0), "the latest version");

    // A JSON configuration replaces config.pbtxt for this load.
    load(
        &server,
        "versioned",
        HashMap::from([(
            "config".into(),
            string(r#"{"max_batch_size": 2, "version_policy": {"all": {}}}"#),
        )]),
    )
    .await
    .unwrap();
    let config = c.model_config("versioned", Some("1")).await.unwrap();
    assert_eq!(config.max_batch_size, Some(2));
    let r = c
        .infer("versioned")
        .version("1")
        .input("INPUT0", [1, 1], &[1.0f32])
        .send()
        .await
        .unwrap();
    assert_eq!(r.output("OUTPUT0").unwrap().as_f32().unwrap(), [2.0]);

    // Bad requests are refused precisely, and the model serves on.
    let cases: [(&str, HashMap<String, pb::ModelRepositoryParameter>, Code); 5] = [
        (
            "versioned",
            HashMap::from([("config".into(), string("{not json"))]),
            Code::InvalidArgument,
        ),
        (
            "versioned",
            HashMap::from([("config".into(), string(r#"{"max_batch_size": -1}"#))]),
            Code::InvalidArgument,
        ),
        (
            "versioned",
            HashMap::from([
                ("config".into(), string("{}")),
                ("file:1/../../escape.onnx".into(), bytes(vec![1])),
            ]),
            Code::InvalidArgument,
        ),
        ("no-such-model", HashMap::new(), Code::NotFound),
        (
            "uploaded",
            HashMap::from([
                ("config".into(), string("{}")),
                ("file:1/model.onnx".into(), bytes(vec![0; 100 * 1024])),
            ]),
            Code::OutOfRange,
        ),
    ];
    for (model, parameters, code) in cases {
        let e = load(&server, model, parameters).await.unwrap_err();
        assert_eq!(e.code(), code, "{model}: {e:?}");
        assert!(ask(c, 1.0).await.is_ok(), "versioned still serves");
    }

    // A model uploaded with its load request, from memory.
    let model = std::fs::read(fixture(2)).unwrap();
    load(
        &server,
        "uploaded",
        HashMap::from([
            ("config".into(), string(r#"{"max_batch_size": 4}"#)),
            ("file:7/model.onnx".into(), bytes(model)),
        ]),
    )
    .await
    .unwrap();
    let r = c
        .infer("uploaded")
        .input("INPUT0", [1, 1], &[1.0f32])
        .send()
        .await
        .unwrap();
    assert_eq!(r.model_version(), "7");
    assert_eq!(r.output("OUTPUT0").unwrap().as_f32().unwrap(), [3.0]);

    // Unloaded: UNAVAILABLE, and back after a load.
    unload(&server, "versioned").await.unwrap();
    let e = ask(c, 1.0).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "{e}");
    assert!(e.message().unwrap().contains("not loaded"), "{e}");
    assert_eq!(
        unload(&server, "no-such-model").await.unwrap_err().code(),
        Code::NotFound
    );
    load(&server, "versioned", HashMap::new()).await.unwrap();
    assert_eq!(ask(c, 1.0).await.unwrap().0, 3);

    // Lifecycle and unroutable requests in the metrics.
    let m = server.metrics().await;
    assert!(m[r#"oxserve_model_loads_total{model="versioned",outcome="success"}"#] >= 3.0);
    assert_eq!(
        m[r#"oxserve_model_loads_total{model="versioned",outcome="failure"}"#],
        1.0
    );
    assert_eq!(m[r#"oxserve_model_unloads_total{model="versioned"}"#], 1.0);
    assert_eq!(
        m[r#"oxserve_unroutable_requests_total{reason="not_ready"}"#],
        2.0
    );
    let e = c.infer("no-such-model").send().await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound));
    let m = server.metrics().await;
    assert_eq!(
        m[r#"oxserve_unroutable_requests_total{reason="unknown_model"}"#],
        1.0
    );
    server.stop().await.unwrap();
}

/// Steady load from several clients while the model is reloaded ten times
/// and its version changes twice: no request fails, and every answer is
/// the answer of the version it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_request() {
    let dir = repository(&[1]);
    let server = explicit(dir.path(), &["versioned"]).await;
    // No retries: a request that failed would show.
    let client = oxserve_client::Client::builder(format!("http://{}", server.addr))
        .retry(oxserve_client::RetryPolicy::never())
        .connect()
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|worker| {
            let client = client.clone();
            let stop = Arc::clone(&stop);
            let answered = Arc::clone(&answered);
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut versions = BTreeSet::new();
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let x = (worker * 1000 + i) as f32;
                    i += 1;
                    match ask(&client, x).await {
                        Ok((version, y)) => {
                            versions.insert(version);
                            if y != x + version as f32 {
                                failures.push(format!("v{version}: {x} -> {y}"));
                            }
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                (failures, versions)
            })
        })
        .collect();

    // Requests flow before, between and after every reload.
    let wait_for_traffic = |n: u64| {
        let answered = Arc::clone(&answered);
        async move {
            let target = answered.load(Ordering::Relaxed) + n;
            while answered.load(Ordering::Relaxed) < target {
                tokio::task::yield_now().await;
            }
        }
    };
    for round in 0..10 {
        wait_for_traffic(50).await;
        load(&server, "versioned", HashMap::new()).await.unwrap();
        if round == 3 {
            add_version(dir.path(), 2);
            load(&server, "versioned", HashMap::new()).await.unwrap();
        }
        if round == 6 {
            add_version(dir.path(), 3);
            load(&server, "versioned", HashMap::new()).await.unwrap();
        }
    }
    wait_for_traffic(20).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = BTreeSet::new();
    for client in clients {
        let (failures, versions) = client.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
        seen.extend(versions);
    }
    assert_eq!(seen, BTreeSet::from([1, 2, 3]));
    eprintln!(
        "{} requests answered across 12 loads, none failed",
        answered.load(Ordering::Relaxed)
    );
    assert_eq!(
        index(&server, true).await,
        [
            (
                "identity_fp32".into(),
                String::new(),
                "UNAVAILABLE".into(),
                "not loaded".into()
            ),
            (
                "versioned".into(),
                "3".into(),
                "READY".into(),
                String::new()
            )
        ]
        .into_iter()
        .filter(|r| r.2 == "READY")
        .collect::<Vec<_>>()
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_response_cache_answers_repeats_and_never_a_stale_answer_after_a_reload() {
    let dir = repository(&[1]);
    std::fs::write(
        dir.path().join("versioned/config.pbtxt"),
        "max_batch_size: 4\nresponse_cache { enable: true }\n",
    )
    .unwrap();
    let server = explicit(dir.path(), &["versioned"]).await;
    let c = &server.client;
    let ask_full = |x: f32| c.infer("versioned").input("INPUT0", [1, 1], &[x]).send();
    let hit = |r: &oxserve_client::InferResponse| {
        matches!(
            r.parameters()
                .get("cache_hit")
                .and_then(|p| p.parameter_choice.clone()),
            Some(pb::ParameterChoice::BoolParam(true))
        )
    };
    let first = ask_full(5.0).await.unwrap();
    assert!(!hit(&first));
    let second = ask_full(5.0).await.unwrap();
    assert!(hit(&second), "the same request is answered from the cache");
    assert_eq!(second.output("OUTPUT0").unwrap().as_f32().unwrap(), [6.0]);
    assert!(
        !hit(&ask_full(7.0).await.unwrap()),
        "other bytes, other answer"
    );

    let stats = c
        .model_statistics(Some("versioned"), Some("1"))
        .await
        .unwrap();
    let s = stats[0].inference_stats.unwrap();
    assert_eq!(s.cache_hit.unwrap().count, 1);
    assert_eq!(s.cache_miss.unwrap().count, 2);
    assert_eq!(stats[0].execution_count, 2, "the hit did not run the model");

    // The same version number with another model file: a reload must not
    // answer from what the old load computed.
    std::fs::copy(fixture(3), dir.path().join("versioned/1/model.onnx")).unwrap();
    load(&server, "versioned", HashMap::new()).await.unwrap();
    let after = ask_full(5.0).await.unwrap();
    assert!(!hit(&after));
    assert_eq!(after.output("OUTPUT0").unwrap().as_f32().unwrap(), [8.0]);

    let m = server.metrics().await;
    assert_eq!(
        m[r#"oxserve_cache_hits_total{model="versioned",version="1"}"#],
        1.0
    );
    assert!(m["oxserve_cache_entries"] >= 2.0);
    server.stop().await.unwrap();
}
