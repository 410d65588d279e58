//! The model repository: `<root>/<model>/<version>/model.onnx`.
//!
//! Discovery is quick and synchronous; loading (session creation and warm-up)
//! happens afterwards on a blocking thread while the server already answers
//! liveness. Each version loads on its own: one that fails is recorded with
//! its reason and the others serve.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ort::environment::Environment;

use crate::backend::{Instance, SessionOptions};
use crate::error::Error;
use crate::scheduler::{Scheduler, SubmitError};
use crate::tensor::{DecodedRequest, ModelSpec, Tensor};

/// The file each version directory must hold.
pub const MODEL_FILE: &str = "model.onnx";

/// A version that is loaded and serving.
#[derive(Debug)]
pub struct LoadedVersion {
    /// Model name.
    pub model: String,
    /// Version number.
    pub version: u64,
    /// Inputs and outputs.
    pub spec: Arc<ModelSpec>,
    scheduler: Scheduler,
}

impl LoadedVersion {
    /// Runs a validated request and returns its outputs.
    pub async fn infer(&self, request: DecodedRequest) -> Result<Vec<Tensor>, Error> {
        let answer = self.scheduler.submit(request).map_err(|e| match e {
            SubmitError::QueueFull { capacity } => Error::QueueFull {
                model: self.model.clone(),
                version: self.version.to_string(),
                capacity,
            },
            SubmitError::Stopped => self.stopped(),
        })?;
        // The worker always answers a job it takes; a dropped sender means it
        // stopped before getting to this one.
        let result = answer.await.map_err(|_| self.stopped())?;
        result.map_err(|source| Error::Inference {
            model: self.model.clone(),
            version: self.version.to_string(),
            source: Box::new(source),
        })
    }

    fn stopped(&self) -> Error {
        Error::Stopped {
            model: self.model.clone(),
            version: self.version.to_string(),
        }
    }
}

/// Where one version stands.
#[derive(Debug, Clone)]
enum VersionState {
    Loading,
    Ready(Arc<LoadedVersion>),
    Failed(String),
}

#[derive(Debug, Default)]
struct Model {
    /// Why the model as a whole cannot serve (e.g. no version directories).
    problem: Option<String>,
    versions: BTreeMap<u64, VersionState>,
}

/// How versions are loaded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Session settings for every instance.
    pub session: SessionOptions,
    /// Maximum requests waiting per model version.
    pub queue_capacity: usize,
    /// Whether readiness requires every discovered version to load.
    pub strict_readiness: bool,
}

/// Every model found under the repository root, and their states.
#[derive(Debug)]
pub struct Repository {
    root: PathBuf,
    models: RwLock<BTreeMap<String, Model>>,
}

impl Repository {
    /// Scans `root` for models and versions; nothing is loaded yet.
    pub fn discover(root: &Path) -> std::io::Result<Repository> {
        let mut models = BTreeMap::new();
        for entry in std::fs::read_dir(root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.file_type()?.is_dir() {
                continue;
            }
            let mut model = Model::default();
            for version_dir in std::fs::read_dir(entry.path())? {
                let version_dir = version_dir?;
                let Some(version) = version_dir
                    .file_name()
                    .to_str()
                    .and_then(|v| v.parse::<u64>().ok())
                else {
                    continue; // config files and other non-version entries
                };
                if version_dir.file_type()?.is_dir() {
                    model.versions.insert(version, VersionState::Loading);
                }
            }
            if model.versions.is_empty() {
                let problem = format!(
                    "no version directories (<repository>/{name}/<number>/{MODEL_FILE}) found"
                );
                tracing::error!(model = %name, "{problem}");
                model.problem = Some(problem);
            }
            models.insert(name, model);
        }
        Ok(Repository {
            root: root.to_path_buf(),
            models: RwLock::new(models),
        })
    }

    /// Loads every discovered version, one after another, and returns
    /// whether the server is ready: always with relaxed readiness, only if
    /// every version loaded with strict readiness. Blocking: run it on a
    /// blocking thread.
    pub fn load_all(&self, env: &Environment, options: &LoadOptions) -> bool {
        let pending: Vec<(String, u64)> = self
            .read()
            .iter()
            .flat_map(|(name, m)| m.versions.keys().map(move |&v| (name.clone(), v)))
            .collect();
        let mut all_loaded = self.read().values().all(|m| m.problem.is_none());
        for (name, version) in pending {
            let started = std::time::Instant::now();
            let state = match self.load_version(env, options, &name, version) {
                Ok(loaded) => {
                    tracing::info!(model = %name, version, elapsed = ?started.elapsed(), "model loaded");
                    VersionState::Ready(Arc::new(loaded))
                }
                Err(reason) => {
                    tracing::error!(model = %name, version, "model failed to load: {reason}");
                    all_loaded = false;
                    VersionState::Failed(reason)
                }
            };
            if let Some(model) = self.write().get_mut(&name) {
                model.versions.insert(version, state);
            }
        }
        let ready = all_loaded || !options.strict_readiness;
        if !all_loaded && options.strict_readiness {
            tracing::warn!(
                "some models failed to load: the server stays NOT ready (strict_readiness = true); the others serve"
            );
        }
        ready
    }

    fn load_version(
        &self,
        env: &Environment,
        options: &LoadOptions,
        name: &str,
        version: u64,
    ) -> Result<LoadedVersion, String> {
        let path = self
            .root
            .join(name)
            .join(version.to_string())
            .join(MODEL_FILE);
        if !path.is_file() {
            return Err(format!("{} does not exist", path.display()));
        }
        let mut instance =
            Instance::load(env, name, &path, &options.session).map_err(|e| e.to_string())?;
        if let Err(e) = instance.warm_up() {
            // Zeros are not valid input for every model; the first real
            // request will pay for initialisation instead.
            tracing::warn!(model = %name, version, "warm-up failed: {e}");
        }
        let spec = Arc::clone(instance.spec());
        let scheduler = Scheduler::start(
            format!("oxserve-{name}-{version}"),
            instance,
            options.queue_capacity,
        )
        .map_err(|e| format!("cannot start the inference thread: {e}"))?;
        Ok(LoadedVersion {
            model: name.to_string(),
            version,
            spec,
            scheduler,
        })
    }

    /// The loaded version that answers for `model` and `version` (empty =
    /// the highest ready version).
    pub fn get(&self, model: &str, version: &str) -> Result<Arc<LoadedVersion>, Error> {
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
                return Err(unavailable(None, problem.clone()));
            }
            return entry
                .versions
                .values()
                .rev()
                .find_map(|s| match s {
                    VersionState::Ready(v) => Some(Arc::clone(v)),
                    _ => None,
                })
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
    pub fn ready_versions(&self, model: &str) -> Vec<u64> {
        self.read().get(model).map_or_else(Vec::new, |m| {
            m.versions
                .iter()
                .filter(|(_, s)| matches!(s, VersionState::Ready(_)))
                .map(|(&v, _)| v)
                .collect()
        })
    }

    /// Drops every loaded version, ending their worker threads once the
    /// requests holding them finish.
    pub fn unload_all(&self) {
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
