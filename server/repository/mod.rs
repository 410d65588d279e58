//! The model repository: `<root>/<model>/<version>/model.onnx`.
//!
//! Discovery is quick and synchronous; loading (session creation and warm-up)
//! happens afterwards on a blocking thread while the server already answers
//! liveness. Each version loads on its own: one that fails is recorded with
//! its reason and the others serve.

mod version;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ort::environment::Environment;
use oxserve_proto::inference::ModelStatistics;

pub(crate) use version::LoadedVersion;

use crate::backend::{BackendError, Instance, SessionOptions};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::model_config::{
    self, CONFIG_FILE, Defaults, LoadPlan, MODEL_FILE, ModelConfigError, Written,
};
use crate::scheduler::{Observer, Scheduler};
use crate::stats::VersionStats;

/// Why a model or one of its versions cannot be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum LoadError {
    /// The model directory has no version directories its policy selects.
    #[error("no version directories (<repository>/{model}/<number>/{MODEL_FILE}) found")]
    NoVersions {
        /// Model name.
        model: String,
    },
    /// Its configuration cannot be used.
    #[error("{model}/{CONFIG_FILE}: {source}")]
    Config {
        /// Model name.
        model: String,
        /// What is wrong.
        source: ModelConfigError,
    },
    /// The version directory lacks its model file.
    #[error("{} does not exist", .path.display())]
    MissingFile {
        /// The file looked for.
        path: PathBuf,
    },
    /// ONNX Runtime cannot load the model.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The worker threads could not be started.
    #[error("cannot start the inference threads: {0}")]
    Threads(String),
}

/// Where one version stands.
#[derive(Debug, Clone)]
enum VersionState {
    Loading,
    Ready(Arc<LoadedVersion>),
    Failed(LoadError),
}

impl VersionState {
    fn ready(&self) -> Option<&Arc<LoadedVersion>> {
        match self {
            VersionState::Ready(v) => Some(v),
            VersionState::Loading | VersionState::Failed(_) => None,
        }
    }
}

#[derive(Debug, Default)]
struct Model {
    /// Why the model as a whole cannot serve (no version directories, a
    /// config.pbtxt that does not parse, ...).
    problem: Option<LoadError>,
    /// Its config.pbtxt, if it has one.
    written: Option<Written>,
    /// How to load it (absent when `problem` is set).
    plan: Option<LoadPlan>,
    /// The versions its version policy selects.
    versions: BTreeMap<u64, VersionState>,
}

/// How versions are loaded.
#[derive(Debug, Clone)]
pub(crate) struct LoadOptions {
    /// Server-wide defaults for model configurations.
    pub defaults: Defaults,
    /// Where versions report their metrics; `None` when metrics are off.
    pub metrics: Option<Arc<Metrics>>,
    /// Whether readiness requires every discovered version to load.
    pub strict_readiness: bool,
}

/// Every model found under the repository root, and their states.
#[derive(Debug)]
pub(crate) struct Repository {
    root: PathBuf,
    models: RwLock<BTreeMap<String, Model>>,
}

impl Repository {
    /// Scans `root` for models, their config.pbtxt and versions; nothing is
    /// loaded yet.
    pub(crate) fn discover(root: &Path, defaults: &Defaults) -> std::io::Result<Repository> {
        let mut models = BTreeMap::new();
        for entry in std::fs::read_dir(root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // `Path::is_dir` follows symlinks: Kubernetes volumes (ConfigMap,
            // git-sync) present model directories as links.
            if name.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            let mut model = Model::default();
            let mut found = Vec::new();
            for version_dir in std::fs::read_dir(entry.path())? {
                let version_dir = version_dir?;
                let file_name = version_dir.file_name();
                let Some(version) = file_name.to_str().and_then(canonical_version) else {
                    continue; // config files and other non-version entries
                };
                if version_dir.path().is_dir() {
                    found.push(version);
                }
            }
            found.sort_unstable();
            let planned = model_config::read(&entry.path())
                .and_then(|written| {
                    let plan = LoadPlan::new(written.as_ref(), defaults)?;
                    let versions = plan.select_versions(&found)?;
                    Ok((written, plan, versions))
                })
                .map_err(|source| LoadError::Config {
                    model: name.clone(),
                    source,
                });
            match planned {
                Ok((_, _, versions)) if versions.is_empty() => {
                    model.problem = Some(LoadError::NoVersions {
                        model: name.clone(),
                    });
                }
                Ok((written, plan, versions)) => {
                    model.written = written;
                    model.plan = Some(plan);
                    for version in versions {
                        model.versions.insert(version, VersionState::Loading);
                    }
                }
                Err(problem) => model.problem = Some(problem),
            }
            if let Some(problem) = &model.problem {
                tracing::error!(model = %name, "model cannot load: {problem}");
            }
            models.insert(name, model);
        }
        if models.is_empty() {
            tracing::warn!(repository = %root.display(), "the model repository holds no models");
        }
        Ok(Repository {
            root: root.to_path_buf(),
            models: RwLock::new(models),
        })
    }

    /// Loads every discovered version, one after another, and returns
    /// whether the server is ready: always with relaxed readiness; with
    /// strict readiness, only if there were models and every version loaded.
    /// If not, the error says why (for the health service). Blocking: run it
    /// on a blocking thread.
    pub(crate) fn load_all(&self, env: &Environment, options: &LoadOptions) -> Result<(), String> {
        let pending: Vec<(String, u64)> = self
            .read()
            .iter()
            .flat_map(|(name, m)| m.versions.keys().map(move |&v| (name.clone(), v)))
            .collect();
        let mut all_loaded = self.read().values().all(|m| m.problem.is_none());
        let report = |name: &str, version, state, seconds| {
            if let Some(metrics) = &options.metrics {
                metrics.model_state(name, version, state, seconds);
            }
        };
        for (name, version) in &pending {
            report(name, *version, "loading", None);
        }
        for (name, version) in pending {
            let started = std::time::Instant::now();
            let state = match self.load_version(env, options, &name, version) {
                Ok(loaded) => {
                    let elapsed = started.elapsed();
                    tracing::info!(model = %name, version, ?elapsed, "model loaded");
                    report(&name, version, "ready", Some(elapsed.as_secs_f64()));
                    VersionState::Ready(Arc::new(loaded))
                }
                Err(reason) => {
                    tracing::error!(model = %name, version, "model failed to load: {reason}");
                    report(
                        &name,
                        version,
                        "failed",
                        Some(started.elapsed().as_secs_f64()),
                    );
                    all_loaded = false;
                    VersionState::Failed(reason)
                }
            };
            if let Some(model) = self.write().get_mut(&name) {
                model.versions.insert(version, state);
            }
        }
        if !options.strict_readiness {
            return Ok(());
        }
        if self.read().is_empty() {
            // A server with nothing to serve is not ready to take inference
            // traffic: an empty or unmounted model volume is a deployment
            // mistake that should stop a roll-out, not pass its probes.
            tracing::warn!("the server stays NOT ready: no models (strict_readiness = true)");
            return Err(format!(
                "the model repository {} holds no models",
                self.root.display()
            ));
        }
        if all_loaded {
            return Ok(());
        }
        tracing::warn!(
            "some models failed to load: the server stays NOT ready (strict_readiness = true); the others serve"
        );
        Err(self.load_failures())
    }

    /// Every model that cannot serve and why, for the health service.
    fn load_failures(&self) -> String {
        let mut failures = Vec::new();
        for (name, model) in self.read().iter() {
            if let Some(problem) = &model.problem {
                failures.push(format!("model '{name}' cannot load: {problem}"));
            }
            for (version, state) in &model.versions {
                if let VersionState::Failed(reason) = state {
                    failures.push(format!(
                        "model '{name}' version {version} failed to load: {reason}"
                    ));
                }
            }
        }
        failures.join("; ")
    }

    fn load_version(
        &self,
        env: &Environment,
        options: &LoadOptions,
        name: &str,
        version: u64,
    ) -> Result<LoadedVersion, LoadError> {
        let (plan, written) = {
            let models = self.read();
            let model = models
                .get(name)
                .expect("versions are loaded only for models discovered before");
            (
                model
                    .plan
                    .clone()
                    .expect("models with versions to load have a plan"),
                model.written.clone(),
            )
        };
        let path = plan.model_path(&self.root.join(name), version);
        if !path.is_file() {
            return Err(LoadError::MissingFile { path });
        }
        let defaults = &options.defaults;
        let mut instances = Vec::with_capacity(plan.instances.len());
        let mut devices = Vec::with_capacity(plan.instances.len());
        for device in &plan.instances {
            let session = SessionOptions {
                intra_op_threads: defaults.intra_op_threads,
                graph_level: plan.graph_level,
                device: device.clone(),
            };
            let (instance, used) = Instance::load(env, name, &path, &session)?;
            instances.push(instance);
            devices.push(used);
        }
        let onnx = Arc::clone(instances[0].spec());
        let resolved = model_config::complete(name, written.as_ref(), &onnx, &devices, defaults)
            .map_err(|source| LoadError::Config {
                model: name.to_string(),
                source,
            })?;
        for instance in &mut instances {
            if let Err(e) = instance.warm_up() {
                // Zeros are not valid input for every model; the first real
                // request will pay for initialisation instead.
                tracing::warn!(model = %name, version, "warm-up failed: {e}");
            }
        }
        let metrics = options
            .metrics
            .as_ref()
            .map(|m| m.version(name, version))
            .unwrap_or_default();
        let stats = Arc::new(VersionStats::new(metrics));
        let observer: Arc<dyn Observer> = stats.clone();
        let scheduler = Scheduler::start(
            &format!("oxserve-{name}-{version}"),
            instances,
            resolved.policy.clone(),
            resolved.max_queue_size,
            observer,
        )
        .map_err(|e| LoadError::Threads(e.to_string()))?;
        Ok(LoadedVersion {
            model: name.to_string(),
            version,
            spec: Arc::new(resolved.spec),
            config: resolved.config,
            stats,
            default_timeout: resolved.default_timeout,
            allow_timeout_override: resolved.allow_timeout_override,
            scheduler,
        })
    }

    /// The loaded version that answers for `model` and `version` (empty =
    /// the highest ready version).
    pub(crate) fn get(&self, model: &str, version: &str) -> Result<Arc<LoadedVersion>, Error> {
        let models = self.read();
        let entry = models.get(model).ok_or_else(|| Error::ModelNotFound {
            model: model.to_string(),
        })?;
        let unavailable = |version: Option<String>, reason: String| Error::ModelUnavailable {
            model: model.to_string(),
            version,
            reason,
        };
        if version.is_empty() {
            if let Some(problem) = &entry.problem {
                return Err(unavailable(None, problem.to_string()));
            }
            return entry
                .versions
                .values()
                .rev()
                .find_map(|s| s.ready().map(Arc::clone))
                .ok_or_else(|| unavailable(None, describe_states(&entry.versions)));
        }
        let state = version
            .parse::<u64>()
            .ok()
            .and_then(|v| entry.versions.get(&v))
            .ok_or_else(|| Error::VersionNotFound {
                model: model.to_string(),
                version: version.to_string(),
                available: entry
                    .versions
                    .keys()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        match state {
            VersionState::Ready(v) => Ok(Arc::clone(v)),
            VersionState::Loading => Err(unavailable(Some(version.into()), "still loading".into())),
            VersionState::Failed(reason) => Err(unavailable(
                Some(version.into()),
                format!("failed to load: {reason}"),
            )),
        }
    }

    /// Versions of `model` that are ready, lowest first.
    pub(crate) fn ready_versions(&self, model: &str) -> Vec<u64> {
        self.read().get(model).map_or_else(Vec::new, |m| {
            m.versions
                .iter()
                .filter(|(_, s)| matches!(s, VersionState::Ready(_)))
                .map(|(&v, _)| v)
                .collect()
        })
    }

    /// Statistics of `model` (all models if empty) and `version` (all
    /// loaded versions if empty).
    pub(crate) fn statistics(
        &self,
        model: &str,
        version: &str,
    ) -> Result<Vec<ModelStatistics>, Error> {
        if !model.is_empty() && !version.is_empty() {
            let loaded = self.get(model, version)?;
            return Ok(vec![loaded.stats.to_proto(&loaded.model, loaded.version)]);
        }
        let models = self.read();
        if !model.is_empty() && !models.contains_key(model) {
            return Err(Error::ModelNotFound {
                model: model.to_string(),
            });
        }
        Ok(models
            .iter()
            .filter(|(name, _)| model.is_empty() || name.as_str() == model)
            .flat_map(|(_, m)| m.versions.values())
            .filter_map(VersionState::ready)
            .map(|v| v.stats.to_proto(&v.model, v.version))
            .collect())
    }

    /// Drops every loaded version, ending their worker threads once the
    /// requests holding them finish.
    pub(crate) fn unload_all(&self) {
        for model in self.write().values_mut() {
            model.versions.clear();
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Model>> {
        // Writers never panic while holding the lock (they only insert), so
        // a poisoned lock still holds consistent data.
        self.models.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Model>> {
        self.models.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// A version directory name: decimal digits without leading zeros, so that
/// the directory is found again from the number (`01` would not be).
fn canonical_version(name: &str) -> Option<u64> {
    let version = name.parse::<u64>().ok()?;
    if version.to_string() == name {
        Some(version)
    } else {
        tracing::warn!(
            directory = name,
            "ignoring version directory: write versions without leading zeros or signs"
        );
        None
    }
}

fn describe_states(versions: &BTreeMap<u64, VersionState>) -> String {
    let parts: Vec<String> = versions
        .iter()
        .map(|(v, s)| match s {
            VersionState::Loading => format!("version {v} is still loading"),
            VersionState::Ready(_) => format!("version {v} is ready"),
            VersionState::Failed(reason) => format!("version {v} failed to load: {reason}"),
        })
        .collect();
    parts.join("; ")
}
