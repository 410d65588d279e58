//! The lifecycle on real models in a temporary repository, driven step by
//! step: polls are made by the test (`poll_once`), so nothing depends on
//! timing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::model_config::Defaults;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models")
}

fn defaults() -> Defaults {
    Defaults {
        max_batch_size: crate::model_config::BatchSize::Fixed(8),
        batch_latency_budget: std::time::Duration::from_millis(100),
        split_large_requests: true,
        preferred_batch_sizes: Vec::new(),
        max_queue_delay: std::time::Duration::ZERO,
        inline_threshold: std::time::Duration::from_micros(100),
        max_queue_size: 16,
        instances: crate::model_config::InstanceCount::Fixed(1),
        intra_op_threads: 1,
        spinning: false,
        shrink_arena: true,
    }
}

fn repository(root: &Path, mode: ControlMode) -> Arc<Repository> {
    let env = crate::backend::environment(None).expect("ONNX Runtime is set up for the tests");
    let options = LoadOptions {
        defaults: defaults(),
        metrics: None,
        strict_readiness: true,
        mode,
    };
    Arc::new(Repository::new(root, env, options, Health::new()).unwrap())
}

/// `versioned` with only the given versions, in a fresh repository.
fn versioned(root: &Path, versions: &[u64]) {
    let dir = root.join("versioned");
    for &v in versions {
        add_version(&dir, v);
    }
}

fn add_version(dir: &Path, version: u64) {
    let source = match version {
        2 => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/versioned_v2.onnx"),
        v => models().join(format!("versioned/{v}/model.onnx")),
    };
    // Written under another name, then renamed: as a careful deployer does.
    let target = dir.join(version.to_string());
    let staging = dir.join(format!(".staging-{version}"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(source, staging.join("model.onnx")).unwrap();
    std::fs::rename(staging, target).unwrap();
}

fn states(repository: &Repository) -> Vec<(String, String, String)> {
    repository
        .index(false)
        .into_iter()
        .map(|r| (r.name, r.version, r.state))
        .collect()
}

fn row(name: &str, version: &str, state: &str) -> (String, String, String) {
    (name.into(), version.into(), state.into())
}

#[tokio::test]
async fn poll_loads_new_versions_once_they_hold_still_and_unloads_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    versioned(dir.path(), &[1]);
    let repo = repository(dir.path(), ControlMode::Poll);
    repo.start(&[]).await;
    assert!(repo.readiness().is_ok());
    assert_eq!(repo.get("versioned", "").unwrap().version, 1);
    let first = Arc::clone(&repo.get("versioned", "").unwrap());

    add_version(&dir.path().join("versioned"), 3);
    repo.poll_once().await;
    assert_eq!(
        repo.get("versioned", "").unwrap().version,
        1,
        "a change is loaded once it has held still for an interval"
    );
    repo.poll_once().await;
    assert_eq!(repo.get("versioned", "").unwrap().version, 3);
    // The default policy serves the latest version only.
    assert_eq!(states(&repo), [row("versioned", "3", "READY")]);
    // Whoever held version 1 still has a working version.
    assert_eq!(first.version, 1);

    // Nothing changed: a poll loads nothing (the same Arc serves on).
    let serving = repo.get("versioned", "").unwrap();
    repo.poll_once().await;
    repo.poll_once().await;
    assert!(Arc::ptr_eq(&serving, &repo.get("versioned", "").unwrap()));

    // The directory goes away: unloaded after two looks.
    std::fs::remove_dir_all(dir.path().join("versioned")).unwrap();
    repo.poll_once().await;
    assert!(repo.get("versioned", "").is_ok(), "one look is not enough");
    repo.poll_once().await;
    assert_eq!(
        repo.get("versioned", "").unwrap_err().code(),
        tonic::Code::NotFound
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_configmap_style_swap_reloads_once() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    versioned(dir.path(), &[1]);
    let model = dir.path().join("versioned");
    // config.pbtxt -> ..data/config.pbtxt, ..data -> ..v1: how Kubernetes
    // mounts a ConfigMap, and how it updates it (one rename of ..data).
    let write_generation = |name: &str, text: &str| {
        std::fs::create_dir(model.join(name)).unwrap();
        std::fs::write(model.join(name).join("config.pbtxt"), text).unwrap();
    };
    write_generation("..v1", "max_batch_size: 4\n");
    symlink("..v1", model.join("..data")).unwrap();
    symlink("..data/config.pbtxt", model.join("config.pbtxt")).unwrap();

    let repo = repository(dir.path(), ControlMode::Poll);
    repo.start(&[]).await;
    assert_eq!(
        repo.get("versioned", "").unwrap().config.max_batch_size,
        Some(4)
    );
    let before = repo.get("versioned", "").unwrap();

    write_generation("..v2", "max_batch_size: 2\n");
    symlink("..v2", model.join("..data_tmp")).unwrap();
    std::fs::rename(model.join("..data_tmp"), model.join("..data")).unwrap();
    repo.poll_once().await;
    repo.poll_once().await;
    let after = repo.get("versioned", "").unwrap();
    assert_eq!(after.config.max_batch_size, Some(2));
    assert!(!Arc::ptr_eq(&before, &after));
    // Once loaded, further polls leave it alone: one load per change.
    repo.poll_once().await;
    repo.poll_once().await;
    assert!(Arc::ptr_eq(&after, &repo.get("versioned", "").unwrap()));
}

#[tokio::test]
async fn a_failed_reload_leaves_the_old_version_serving_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    versioned(dir.path(), &[1]);
    let repo = repository(dir.path(), ControlMode::Explicit);
    repo.start(&["versioned".into()]).await;
    let old = repo.get("versioned", "1").unwrap();

    // A new model file that is not ONNX.
    std::fs::write(dir.path().join("versioned/1/model.onnx"), b"garbage").unwrap();
    let e = repo
        .load_by_request(
            "versioned",
            LoadRequest {
                force: true,
                ..LoadRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(Arc::ptr_eq(&old, &repo.get("versioned", "1").unwrap()));
    let rows = repo.index(false);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, "READY");
    assert!(
        rows[0].reason.contains("the latest load failed"),
        "{rows:?}"
    );
    assert!(repo.readiness().is_ok(), "the old version serves on");

    // A configuration that does not parse: the same.
    std::fs::write(
        dir.path().join("versioned/config.pbtxt"),
        "max_batch_size: \"x\"",
    )
    .unwrap();
    let e = repo
        .load_by_request("versioned", LoadRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(Arc::ptr_eq(&old, &repo.get("versioned", "1").unwrap()));
}

#[tokio::test]
async fn none_and_poll_modes_refuse_the_load_rpcs() {
    let dir = tempfile::tempdir().unwrap();
    versioned(dir.path(), &[1]);
    for mode in [ControlMode::None, ControlMode::Poll] {
        let repo = repository(dir.path(), mode);
        repo.start(&[]).await;
        let e = repo
            .load_by_request("versioned", LoadRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.to_string().contains(mode.as_str()), "{e}");
        let e = repo.unload_by_request("versioned").await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    }
}

#[tokio::test]
async fn warmup_samples_run_before_ready_and_a_bad_one_fails_the_load() {
    let dir = tempfile::tempdir().unwrap();
    versioned(dir.path(), &[1]);
    let config = |dims: &str| {
        format!(
            r#"max_batch_size: 4
model_warmup [ {{ name: "ones" batch_size: 2 count: 3
  inputs {{ key: "INPUT0" value: {{ data_type: TYPE_FP32 dims: {dims} random_data: true }} }} }} ]"#
        )
    };
    std::fs::write(dir.path().join("versioned/config.pbtxt"), config("[1]")).unwrap();
    let repo = repository(dir.path(), ControlMode::Explicit);
    repo.start(&["versioned".into()]).await;
    let loaded = repo.get("versioned", "").unwrap();
    assert_eq!(loaded.config.model_warmup.len(), 1);
    // The samples ran outside the statistics.
    assert_eq!(loaded.stats.execution_count(), 0);

    std::fs::write(dir.path().join("versioned/config.pbtxt"), config("[2]")).unwrap();
    let e = repo
        .load_by_request("versioned", LoadRequest::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("model_warmup[0]"), "{e}");
}

#[tokio::test]
async fn unload_stops_serving_and_load_serves_again() {
    let dir = tempfile::tempdir().unwrap();
    versioned(dir.path(), &[1]);
    let repo = repository(dir.path(), ControlMode::Explicit);
    repo.start(&[]).await;
    // Explicit mode with nothing named loads nothing.
    assert_eq!(states(&repo), [row("versioned", "", "UNAVAILABLE")]);
    assert_eq!(
        repo.get("versioned", "").unwrap_err().code(),
        tonic::Code::Unavailable
    );
    repo.load_by_request("versioned", LoadRequest::default())
        .await
        .unwrap();
    let held = repo.get("versioned", "").unwrap();
    repo.unload_by_request("versioned").await.unwrap();
    let e = repo.get("versioned", "").unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(e.to_string().contains("not loaded"), "{e}");
    // A request that held the version before the unload still has it.
    assert_eq!(held.version, 1);
    assert_eq!(
        repo.unload_by_request("nope").await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    assert_eq!(
        repo.load_by_request("nope", LoadRequest::default())
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
}
