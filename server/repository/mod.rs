//! The model repository: `<root>/<model>/<version>/model.onnx` (and
//! `config.pbtxt`), and the lifecycle of every model in it.
//!
//! A model is *wanted* once it is loaded (at start, by request, or by the
//! poller) and until it is unloaded. Each of its versions has the version
//! that serves it (if any) apart from the state of its latest load, so a
//! reload happens beside the running version: the new one is loaded and
//! warmed in the background, then published in one step under the lock;
//! requests already holding the old one finish on it, and its sessions are
//! freed when the last of them lets go. A failed reload leaves the old one
//! serving and says why in [`Repository::index`].
//!
//! [`lifecycle`] holds the operations (start, load, unload, poll); this
//! module holds the state and the look-ups the request path makes.

mod disk;
mod lifecycle;
mod load;
mod request;
mod version;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use ort::environment::Environment;
use oxserve_proto::inference::ModelStatistics;
use oxserve_proto::inference::repository_index_response::ModelIndex;
use serde::{Deserialize, Serialize};

pub(crate) use request::LoadRequest;
pub(crate) use version::LoadedVersion;

use crate::error::Error;
pub(crate) use crate::error::LoadError;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::model_config::Defaults;
use disk::ModelDir;

/// How the set of loaded models may change while the server runs, with
/// Triton's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlMode {
    /// Every model is loaded at start; nothing changes afterwards, and the
    /// load and unload RPCs are refused.
    None,
    /// Every model is loaded at start, and the repository is polled for
    /// new, changed and removed models and versions; the load and unload
    /// RPCs are refused.
    Poll,
    /// Only the models named by `load_model` are loaded at start; the load
    /// and unload RPCs load, reload and unload models.
    Explicit,
}

impl ControlMode {
    /// The mode's name, as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlMode::None => "none",
            ControlMode::Poll => "poll",
            ControlMode::Explicit => "explicit",
        }
    }
}

/// How versions are loaded.
#[derive(Debug, Clone)]
pub(crate) struct LoadOptions {
    /// Server-wide defaults for model configurations.
    pub(crate) defaults: Defaults,
    /// Where versions report their metrics; `None` when metrics are off.
    pub(crate) metrics: Option<Arc<Metrics>>,
    /// Whether readiness requires every wanted model to serve.
    pub(crate) strict_readiness: bool,
    /// How models may change while the server runs.
    pub(crate) mode: ControlMode,
}

/// Where the latest load of a version stands.
#[derive(Debug, Clone)]
enum LoadState {
    Loading,
    Ready,
    Failed(LoadError),
}

/// One version of a model: what serves it, and its latest load.
#[derive(Debug, Clone)]
struct VersionEntry {
    serving: Option<Arc<LoadedVersion>>,
    state: LoadState,
}

/// One model directory (or uploaded model) and its versions.
#[derive(Debug, Default)]
struct ModelEntry {
    /// Loaded and not unloaded since.
    wanted: bool,
    /// Unloaded (by request) since its last load.
    unloaded: bool,
    /// Why the model as a whole could not load at its last attempt (its
    /// configuration, no versions); versions that served before still do.
    problem: Option<LoadError>,
    versions: BTreeMap<u64, VersionEntry>,
    /// The directory as of the last load, which the poller compares with.
    loaded_dir: Option<ModelDir>,
    /// The directory at the previous poll: a change is acted on once it
    /// has held still for a whole interval (no half-written files).
    seen_dir: Option<ModelDir>,
}

impl ModelEntry {
    /// The highest version that serves.
    fn latest(&self) -> Option<&Arc<LoadedVersion>> {
        self.versions
            .values()
            .rev()
            .find_map(|v| v.serving.as_ref())
    }

    /// Whether it serves as strict readiness requires: no model-level
    /// problem, and every version it selected serving.
    fn serves_fully(&self) -> bool {
        self.problem.is_none()
            && !self.versions.is_empty()
            && self.versions.values().all(|v| v.serving.is_some())
    }
}

/// Every model of the repository and where each stands.
#[derive(Debug)]
pub(crate) struct Repository {
    root: PathBuf,
    env: Environment,
    options: LoadOptions,
    health: Arc<Health>,
    models: RwLock<BTreeMap<String, ModelEntry>>,
    /// One lock per model name, so that operations on one model run one
    /// at a time (and on different models side by side).
    operations: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Set once the start-up loads are done; readiness waits for it.
    started: AtomicBool,
}

impl Repository {
    /// The repository at `root`, nothing loaded yet: see
    /// [`Repository::start`].
    pub(crate) fn new(
        root: &Path,
        env: Environment,
        options: LoadOptions,
        health: Arc<Health>,
    ) -> std::io::Result<Repository> {
        let names = disk::model_names(root)?;
        if names.is_empty() {
            tracing::warn!(repository = %root.display(), "the model repository holds no models");
        }
        let models = names
            .into_iter()
            .map(|name| (name, ModelEntry::default()))
            .collect();
        Ok(Repository {
            root: root.to_path_buf(),
            env,
            options,
            health,
            models: RwLock::new(models),
            operations: Mutex::new(HashMap::new()),
            started: AtomicBool::new(false),
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
        if !entry.wanted {
            let reason = if entry.unloaded {
                "it is not loaded (unloaded)"
            } else {
                "it is not loaded"
            };
            return Err(unavailable(None, reason.into()));
        }
        if version.is_empty() {
            if let Some(latest) = entry.latest() {
                return Ok(Arc::clone(latest));
            }
            let reason = match &entry.problem {
                Some(problem) => problem.to_string(),
                None => describe_states(&entry.versions),
            };
            return Err(unavailable(None, reason));
        }
        let found = version
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
        match (&found.serving, &found.state) {
            (Some(serving), _) => Ok(Arc::clone(serving)),
            (None, LoadState::Loading) => {
                Err(unavailable(Some(version.into()), "still loading".into()))
            }
            (None, LoadState::Failed(reason)) => Err(unavailable(
                Some(version.into()),
                format!("failed to load: {reason}"),
            )),
            (None, LoadState::Ready) => {
                Err(unavailable(Some(version.into()), "not serving".into()))
            }
        }
    }

    /// Where the server's metrics go; `None` when metrics are off.
    pub(crate) fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.options.metrics.as_ref()
    }

    /// Counts a request that no loaded version could take, by why (a
    /// bounded label set: no label per unknown name).
    #[expect(
        clippy::wildcard_enum_match_arm,
        reason = "get() fails only with look-up errors; any other is a model not ready"
    )]
    pub(crate) fn unroutable(&self, error: &Error) {
        let Some(metrics) = &self.options.metrics else {
            return;
        };
        let reason = match error {
            Error::ModelNotFound { .. } => "unknown_model",
            Error::VersionNotFound { .. } => "unknown_version",
            _ => "not_ready",
        };
        metrics.unroutable(reason);
    }

    /// Versions of `model` that serve, lowest first.
    pub(crate) fn ready_versions(&self, model: &str) -> Vec<u64> {
        self.read().get(model).map_or_else(Vec::new, |m| {
            m.versions
                .iter()
                .filter(|(_, v)| v.serving.is_some())
                .map(|(&n, _)| n)
                .collect()
        })
    }

    /// Statistics of `model` (all models if empty) and `version` (all
    /// serving versions if empty).
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
            .filter_map(|v| v.serving.as_ref())
            .map(|v| v.stats.to_proto(&v.model, v.version))
            .collect())
    }

    /// Every model and version with its state, in Triton's terms (READY,
    /// LOADING, UNAVAILABLE) and why when it is not ready; models on disk
    /// that were never loaded included. `ready` keeps only READY rows.
    pub(crate) fn index(&self, ready: bool) -> Vec<ModelIndex> {
        let on_disk = disk::model_names(&self.root).unwrap_or_default();
        let models = self.read();
        let mut rows = Vec::new();
        let row = |name: &str, version: String, state: &str, reason: String| ModelIndex {
            name: name.to_string(),
            version,
            state: state.to_string(),
            reason,
        };
        for (name, entry) in models.iter() {
            if !entry.wanted {
                let reason = if entry.unloaded {
                    "unloaded"
                } else {
                    "not loaded"
                };
                rows.push(row(name, String::new(), "UNAVAILABLE", reason.into()));
                continue;
            }
            if entry.versions.is_empty() {
                let reason = entry
                    .problem
                    .as_ref()
                    .map_or_else(|| "no versions".to_string(), ToString::to_string);
                rows.push(row(name, String::new(), "UNAVAILABLE", reason));
                continue;
            }
            for (number, version) in &entry.versions {
                let number = number.to_string();
                let reason = |state: &LoadState| match state {
                    LoadState::Loading => "a new load is in progress".to_string(),
                    LoadState::Ready => String::new(),
                    LoadState::Failed(e) => format!("the latest load failed: {e}"),
                };
                rows.push(match (&version.serving, &version.state) {
                    (Some(_), state) => {
                        let mut why = reason(state);
                        if let Some(problem) = &entry.problem {
                            why = format!("the latest load failed: {problem}");
                        }
                        row(name, number, "READY", why)
                    }
                    (None, LoadState::Loading) => row(name, number, "LOADING", String::new()),
                    (None, LoadState::Failed(e)) => row(name, number, "UNAVAILABLE", e.to_string()),
                    (None, LoadState::Ready) => {
                        row(name, number, "UNAVAILABLE", "not serving".into())
                    }
                });
            }
        }
        for name in on_disk {
            if !models.contains_key(&name) {
                rows.push(row(
                    &name,
                    String::new(),
                    "UNAVAILABLE",
                    "not loaded".into(),
                ));
            }
        }
        drop(models);
        if ready {
            rows.retain(|r| r.state == "READY");
        }
        rows
    }

    /// Whether the server is ready, with the reason when not (the health
    /// service hands it to `oxserve health` and so to Docker's health log):
    /// once the start-up loads are done, always with relaxed readiness; with
    /// strict readiness, only while every wanted model serves every version
    /// it selected.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        if !self.started.load(Ordering::Acquire) {
            return Err("models are loading".into());
        }
        if !self.options.strict_readiness {
            return Ok(());
        }
        let models = self.read();
        let mut wanted = models.iter().filter(|(_, m)| m.wanted).peekable();
        if wanted.peek().is_none() && self.options.mode != ControlMode::Explicit {
            // Nothing to serve is a deployment mistake (an empty or
            // unmounted model volume) that should stop a roll-out, not pass
            // its probes. In explicit mode nothing loaded is what was asked.
            return Err(format!(
                "the model repository {} holds no models",
                self.root.display()
            ));
        }
        let mut failures = Vec::new();
        for (name, model) in wanted.filter(|(_, m)| !m.serves_fully()) {
            let before = failures.len();
            if let Some(problem) = &model.problem {
                failures.push(format!("model '{name}' cannot load: {problem}"));
            } else if model.versions.is_empty() {
                failures.push(format!("model '{name}' is not in the model repository"));
            }
            for (version, entry) in &model.versions {
                match (&entry.state, &entry.serving) {
                    (LoadState::Failed(reason), None) => failures.push(format!(
                        "model '{name}' version {version} failed to load: {reason}"
                    )),
                    (LoadState::Loading, None) => {
                        failures.push(format!("model '{name}' version {version} is loading"))
                    }
                    _ => {}
                }
            }
            if failures.len() == before {
                failures.push(format!("model '{name}' does not serve every version"));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    /// Tells the health service whether the server is ready now.
    fn update_readiness(&self) {
        self.health.set_ready(self.readiness());
    }

    /// Drops every loaded version, ending their worker threads once the
    /// requests holding them finish.
    pub(crate) fn unload_all(&self) {
        for model in self.write().values_mut() {
            model.versions.clear();
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ModelEntry>> {
        // Writers never panic while holding the lock (they only swap
        // entries), so a poisoned lock still holds consistent data.
        self.models.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, ModelEntry>> {
        self.models.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn describe_states(versions: &BTreeMap<u64, VersionEntry>) -> String {
    if versions.is_empty() {
        return "it has no versions".into();
    }
    let parts: Vec<String> = versions
        .iter()
        .map(|(v, entry)| match (&entry.serving, &entry.state) {
            (Some(_), _) => format!("version {v} is ready"),
            (None, LoadState::Loading) => format!("version {v} is still loading"),
            (None, LoadState::Failed(reason)) => format!("version {v} failed to load: {reason}"),
            (None, LoadState::Ready) => format!("version {v} is not serving"),
        })
        .collect();
    parts.join("; ")
}

#[cfg(test)]
mod tests;
