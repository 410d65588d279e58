//! Loading one model version: its sessions, its completed configuration,
//! its warm-up, and the scheduler that serves it. Blocking: it runs on a
//! blocking thread while the version it replaces keeps serving.

use std::path::PathBuf;
use std::sync::Arc;

use ort::environment::Environment;

use super::version::LoadedVersion;
use super::{LoadError, LoadOptions};
use crate::backend::{Instance, ModelSource};
use crate::model_config::{self, LoadPlan, Written};
use crate::scheduler::{Observer, Scheduler};
use crate::stats::VersionStats;

/// Numbers every version load, so that nothing cached from one load
/// answers for another.
static NEXT_LOAD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Everything one version's load needs, owned so it can move to a blocking
/// thread.
#[derive(Debug, Clone)]
pub(super) struct VersionLoad {
    pub(super) env: Environment,
    pub(super) options: LoadOptions,
    pub(super) model: String,
    pub(super) version: u64,
    pub(super) source: ModelSource,
    pub(super) plan: LoadPlan,
    pub(super) written: Option<Written>,
    /// The model's directory (for `warmup/` files); `None` when uploaded.
    pub(super) model_dir: Option<PathBuf>,
}

impl VersionLoad {
    /// Loads, completes, warms up and starts the version.
    pub(super) fn run(self) -> Result<LoadedVersion, LoadError> {
        let VersionLoad {
            env,
            options,
            model,
            version,
            source,
            plan,
            written,
            model_dir,
        } = self;
        if let ModelSource::File(path) = &source
            && !path.is_file()
        {
            return Err(LoadError::MissingFile { path: path.clone() });
        }
        let config_error = |source| LoadError::Config {
            model: model.clone(),
            source,
        };
        let defaults = &options.defaults;
        let sessions = plan.sessions(source.size());
        let mut instances = Vec::with_capacity(sessions.len());
        let mut devices = Vec::with_capacity(sessions.len());
        for session in &sessions {
            let (instance, used) = Instance::load(&env, &model, &source, session)?;
            instances.push(instance);
            devices.push(used);
        }
        let onnx = Arc::clone(
            instances
                .first()
                .expect("a load plan has at least one instance")
                .spec(),
        );
        let resolved = model_config::complete(&model, written.as_ref(), &onnx, &devices, defaults)
            .map_err(config_error)?;
        let samples = model_config::warmups(&resolved.config, &resolved.spec, model_dir.as_deref())
            .map_err(config_error)?;
        for instance in &mut instances {
            if samples.is_empty() {
                if let Err(e) = instance.warm_up() {
                    // Zeros are not valid input for every model; the first
                    // real request will pay for initialisation instead.
                    tracing::warn!(%model, version, "warm-up failed: {e}");
                }
                continue;
            }
            // Samples the configuration asks for must run, or the version
            // is not ready (as in Triton).
            for sample in &samples {
                for _ in 0..sample.count {
                    instance
                        .run_batch(&[&sample.request])
                        .map_err(|e| LoadError::Warmup {
                            model: model.clone(),
                            sample: sample.name.clone(),
                            reason: e.to_string(),
                        })?;
                }
            }
        }
        let metrics = options
            .metrics
            .as_ref()
            .map(|m| m.version(&model, version))
            .unwrap_or_default();
        let stats = Arc::new(VersionStats::new(metrics));
        let observer: Arc<dyn Observer> = stats.clone();
        let auto_batch = resolved.scheduling.auto.is_some();
        let scheduler = Scheduler::start(
            &format!("oxserve-{model}-{version}"),
            instances,
            resolved.scheduling,
            observer,
        )
        .map_err(|e| LoadError::Threads(e.to_string()))?;
        Ok(LoadedVersion {
            model,
            version,
            spec: Arc::new(resolved.spec),
            config: resolved.config,
            stats,
            auto_batch,
            response_cache: resolved.response_cache,
            load_id: NEXT_LOAD.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            queues: resolved.queues,
            scheduler,
        })
    }
}
