//! Per-model configuration (config.pbtxt) through a real server: Triton's
//! format accepted unchanged, completion visible in ModelConfig, invalid
//! fields failing only their model, and the GPU fall-back on a CPU machine.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use common::{config, example_models, start, test_models};
use oxserve_client::pb;
use tonic::Code;

/// A repository with the example mlp under each name, with that config.
fn repository(models: &[(&str, Option<&str>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let onnx = example_models().join("mlp/1/model.onnx");
    for (name, config) in models {
        let model = dir.path().join(name);
        std::fs::create_dir_all(model.join("1")).unwrap();
        let file = if config.is_some_and(|c| c.contains("net.onnx")) {
            "net.onnx"
        } else {
            "model.onnx"
        };
        std::fs::copy(&onnx, model.join("1").join(file)).unwrap();
        if let Some(text) = config {
            std::fs::write(model.join("config.pbtxt"), text).unwrap();
        }
    }
    dir
}

async fn model_config(
    client: &oxserve_client::Client,
    name: &str,
) -> Result<pb::ModelConfig, tonic::Status> {
    let mut inference = client.inference_client();
    inference
        .model_config(pb::ModelConfigRequest {
            name: name.into(),
            version: String::new(),
        })
        .await
        .map(|r| r.into_inner().config.unwrap())
}

async fn infer_mlp(
    client: &oxserve_client::Client,
    name: &str,
    rows: usize,
) -> oxserve_client::Result<Vec<f32>> {
    let data = vec![0.25f32; rows * 784];
    let r = client
        .infer(name)
        .input("input", [rows as i64, 784], &data)
        .send()
        .await?;
    r.output("output").unwrap().as_f32()
}

const TRITON_CONFIG: &str = r#"
name: "triton"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  {
    name: "input"
    data_type: TYPE_FP32
    dims: [ 784 ]
  }
]
output [
  {
    name: "output"
    data_type: TYPE_FP32
    dims: [ 10 ]
  }
]
instance_group [ { count: 2, kind: KIND_CPU } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
}
"#;

#[tokio::test]
async fn configs_complete_and_apply() {
    let repo = repository(&[
        ("plain", None),
        ("triton", Some(TRITON_CONFIG)),
        (
            "renamed",
            Some("default_model_filename: \"net.onnx\"\nmax_batch_size: 0"),
        ),
        ("auto", Some("instance_group [ { kind: KIND_AUTO } ]")),
    ]);
    // Volumes mounted by Kubernetes present directories as symlinks.
    std::os::unix::fs::symlink(repo.path().join("plain"), repo.path().join("linked")).unwrap();
    let server = start(config(repo.path())).await;
    let c = &server.client;

    assert_eq!(infer_mlp(c, "linked", 1).await.unwrap().len(), 10);
    let plain = model_config(c, "plain").await.unwrap();
    assert_eq!(plain.platform, "onnxruntime_onnx");
    // The server picks the batch size (max_batch_size = auto): it starts
    // at 1 and learns from executions; ModelConfig shows the one in use.
    assert!(
        matches!(plain.max_batch_size, Some(1..=1024)),
        "{:?}",
        plain.max_batch_size
    );
    assert_eq!(plain.input[0].dims, vec![784]);
    assert!(plain.scheduling_choice.is_some(), "dynamic batching on");

    let triton = model_config(c, "triton").await.unwrap();
    assert_eq!(triton.max_batch_size, Some(8));
    assert_eq!(triton.instance_group[0].count, 2);
    let Some(pb::model_config::SchedulingChoice::DynamicBatching(db)) = triton.scheduling_choice
    else {
        panic!("dynamic batching as written");
    };
    assert_eq!(db.preferred_batch_size, vec![4, 8]);
    assert_eq!(infer_mlp(c, "triton", 8).await.unwrap().len(), 80);
    // More rows than a batch: run in chunks of 8 and joined.
    assert_eq!(infer_mlp(c, "triton", 21).await.unwrap().len(), 210);

    let renamed = model_config(c, "renamed").await.unwrap();
    assert_eq!(renamed.default_model_filename, "net.onnx");
    assert_eq!(renamed.max_batch_size, Some(0));
    assert_eq!(
        renamed.input[0].dims,
        vec![-1, 784],
        "full dims without batching"
    );
    // Without batching, dimension 0 is an ordinary variable dimension.
    assert_eq!(infer_mlp(c, "renamed", 100).await.unwrap().len(), 1000);

    // No GPU here: KIND_AUTO falls back to CPU and says so in its config.
    let auto = model_config(c, "auto").await.unwrap();
    let kind = pb::model_instance_group::Kind::try_from(auto.instance_group[0].kind).unwrap();
    assert_eq!(kind, pb::model_instance_group::Kind::Cpu);
    assert_eq!(infer_mlp(c, "auto", 1).await.unwrap().len(), 10);

    let meta = c.server_metadata().await.unwrap();
    assert!(meta.extensions.contains(&"model_configuration".to_string()));
    assert!(meta.extensions.contains(&"statistics".to_string()));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_invalid_config_fails_only_its_model_naming_the_field() {
    let repo = repository(&[
        ("good", None),
        ("unknown_field", Some("sequence_batching { }")),
        (
            "bad_dims",
            Some("input [ { name: \"input\", data_type: TYPE_FP32, dims: [ 785 ] } ]"),
        ),
        ("needs_gpu", Some("instance_group [ { kind: KIND_GPU } ]")),
    ]);
    let server = start(config(repo.path())).await;
    let c = &server.client;
    assert_eq!(infer_mlp(c, "good", 1).await.unwrap().len(), 10);
    for (model, field) in [
        ("unknown_field", "sequence_batching"),
        ("bad_dims", "dims"),
        ("needs_gpu", "KIND_GPU"),
    ] {
        assert!(!c.model_ready(model, None).await.unwrap(), "{model}");
        let e = infer_mlp(c, model, 1).await.unwrap_err();
        assert_eq!(e.code(), Some(Code::Unavailable), "{model}: {e}");
        assert!(e.to_string().contains(field), "{model}: {e}");
        let status = model_config(c, model).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
    }
    // Readiness is relaxed in the test config, so the good model keeps the
    // server ready despite the broken ones.
    assert!(c.is_ready().await.unwrap());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn models_that_cannot_batch_report_max_batch_size_zero() {
    let server = start(config(&test_models())).await;
    let c = &server.client;
    let fixed = model_config(c, "fixed").await.unwrap();
    assert_eq!(fixed.max_batch_size, Some(0));
    assert_eq!(fixed.input[0].dims, vec![2, 3]);
    let slow = model_config(c, "slow").await.unwrap();
    assert_eq!(slow.max_batch_size, Some(0), "as its config.pbtxt says");
    let strings = model_config(c, "identity_bytes").await.unwrap();
    assert_eq!(strings.input[0].data_type, pb::DataType::TypeString as i32);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn with_splitting_off_larger_requests_are_refused_as_triton_does() {
    let repo = repository(&[("triton", Some(TRITON_CONFIG))]);
    let mut cfg = config(repo.path());
    cfg.split_large_requests = false;
    let server = start(cfg).await;
    let c = &server.client;
    assert_eq!(infer_mlp(c, "triton", 8).await.unwrap().len(), 80);
    let e = infer_mlp(c, "triton", 9).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument));
    assert!(e.to_string().contains("max_batch_size of 8"), "{e}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn priority_levels_and_queue_policies_are_served() {
    let repo = repository(&[(
        "prio",
        Some(
            r#"max_batch_size: 4
dynamic_batching {
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy { max_queue_size: 8 }
  priority_queue_policy { key: 1 value: { max_queue_size: 2 timeout_action: DELAY default_timeout_microseconds: 1000 } }
}"#,
        ),
    )]);
    let server = start(config(repo.path())).await;
    let c = &server.client;
    let send = |priority: i64| {
        c.infer("prio")
            .input("input", [1, 784], &[0.5f32; 784])
            .parameter("priority", priority)
            .send()
    };
    for p in [0, 1, 2] {
        send(p).await.unwrap();
    }
    let e = send(3).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    assert!(e.to_string().contains("priority"), "{e}");
    // The completed configuration states the levels and policies in force.
    let config = model_config(c, "prio").await.unwrap();
    let Some(pb::model_config::SchedulingChoice::DynamicBatching(db)) = config.scheduling_choice
    else {
        panic!("dynamic batching");
    };
    assert_eq!((db.priority_levels, db.default_priority_level), (2, 2));
    assert_eq!(db.priority_queue_policy[&1].max_queue_size, 2);
    assert_eq!(db.default_queue_policy.unwrap().max_queue_size, 8);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_batch_size_the_server_picks_is_shown_and_learned() {
    let repo = repository(&[("plain", None)]);
    let server = start(config(repo.path())).await;
    let c = &server.client;
    assert_eq!(
        model_config(c, "plain").await.unwrap().max_batch_size,
        Some(1)
    );
    // Work starts on one instance.
    assert_eq!(
        server.metrics().await[r#"oxserve_instances_active{model="plain",version="1"}"#],
        1.0
    );
    // Many concurrent single rows: batches fill, the limit grows.
    let calls: Vec<_> = (0..400)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { infer_mlp(&c, "plain", 1).await.map(|v| v.len()) })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 10);
    }
    let limit = model_config(c, "plain")
        .await
        .unwrap()
        .max_batch_size
        .unwrap();
    let gauge = server.metrics().await[r#"oxserve_batch_size_limit{model="plain",version="1"}"#];
    assert_eq!(gauge, f64::from(limit), "the metric shows the same size");
    // One instance per CPU loaded, as many taking work as the load
    // saturated (one before any load; see the start of this test).
    let active = server.metrics().await[r#"oxserve_instances_active{model="plain",version="1"}"#];
    let loaded = model_config(c, "plain").await.unwrap().instance_group;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(loaded.iter().map(|g| g.count).sum::<i32>(), cpus as i32);
    assert!((1.0..=cpus as f64).contains(&active), "{active}");
    server.stop().await.unwrap();
}
