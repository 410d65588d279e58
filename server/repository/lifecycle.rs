//! Loading, reloading and unloading models while the server serves: at
//! start, on request (RepositoryModelLoad/Unload in explicit mode), and
//! when the poller sees the repository change.
//!
//! Operations on one model run one at a time (a lock per name); a version
//! loads on a blocking thread while whatever served it keeps serving, and
//! the switch is one swap under the state lock.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::disk::{self, ModelDir};
use super::load::VersionLoad;
use super::{ControlMode, LoadError, LoadRequest, LoadState, Repository, VersionEntry};
use crate::backend::ModelSource;
use crate::error::Error;
use crate::model_config::{self, LoadPlan, Written};

/// The models `load_model` asks for at start in explicit mode: `*` means
/// every model in the repository.
pub(crate) const ALL_MODELS: &str = "*";

/// What one model's load works from.
struct Plan {
    written: Option<Written>,
    plan: LoadPlan,
    versions: Vec<(u64, ModelSource)>,
    /// The directory as scanned (for the poller), or `None` when uploaded.
    dir: Option<ModelDir>,
}

impl Repository {
    /// Loads what the control mode says to load at start (`load_model`
    /// in explicit mode, every model otherwise), then reports readiness.
    pub(crate) async fn start(self: &Arc<Self>, load_model: &[String]) {
        let names: Vec<String> = match self.options.mode {
            ControlMode::None | ControlMode::Poll => self.read().keys().cloned().collect(),
            ControlMode::Explicit if load_model.iter().any(|m| m == ALL_MODELS) => {
                self.read().keys().cloned().collect()
            }
            ControlMode::Explicit => load_model.to_vec(),
        };
        for name in names {
            let request = LoadRequest {
                force: true,
                ..LoadRequest::default()
            };
            if let Err(e) = self.load(&name, request).await {
                // Logged where it failed; a model named at start that is
                // missing is wanted all the same, so readiness tells.
                if matches!(e, Error::ModelNotFound { .. }) {
                    tracing::error!(model = %name, "load_model names a model the repository does not hold");
                    self.write().entry(name).or_default().wanted = true;
                }
            }
        }
        self.started.store(true, Ordering::Release);
        if let Err(reason) = self.readiness() {
            tracing::warn!(%reason, "the server stays NOT ready (strict_readiness = true); what loaded serves");
        }
        self.update_readiness();
    }

    /// The RPC-facing load: refused unless the control mode is explicit.
    pub(crate) async fn load_by_request(
        self: &Arc<Self>,
        name: &str,
        request: LoadRequest,
    ) -> Result<(), Error> {
        self.allowed("RepositoryModelLoad")?;
        self.load(name, request).await
    }

    /// The RPC-facing unload: refused unless the control mode is explicit.
    pub(crate) async fn unload_by_request(&self, name: &str) -> Result<(), Error> {
        self.allowed("RepositoryModelUnload")?;
        self.unload(name).await
    }

    fn allowed(&self, rpc: &'static str) -> Result<(), Error> {
        match self.options.mode {
            ControlMode::Explicit => Ok(()),
            mode @ (ControlMode::None | ControlMode::Poll) => Err(Error::ControlMode {
                rpc,
                mode: mode.as_str(),
            }),
        }
    }

    /// The lock that serialises operations on model `name`.
    fn operation_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.operations.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(name.to_string()).or_default())
    }

    /// Loads or reloads model `name`: every version its policy selects is
    /// loaded beside what serves it and then published; versions no longer
    /// selected are unloaded. Whatever fails leaves the previous version
    /// serving, and is recorded (index, logs, metrics).
    pub(crate) async fn load(
        self: &Arc<Self>,
        name: &str,
        request: LoadRequest,
    ) -> Result<(), Error> {
        let lock = self.operation_lock(name);
        let _one_at_a_time = lock.lock().await;
        let started = Instant::now();
        let result = self.load_locked(name, request).await;
        let seconds = started.elapsed().as_secs_f64();
        // Only models the repository holds get a series: a request naming
        // an unknown model must not grow the label set.
        let known = !matches!(result, Err(Error::ModelNotFound { .. }));
        if let Some(metrics) = &self.options.metrics
            && known
        {
            metrics.model_load(name, result.is_ok(), seconds);
        }
        self.update_readiness();
        result
    }

    async fn load_locked(self: &Arc<Self>, name: &str, request: LoadRequest) -> Result<(), Error> {
        let plan = match self.plan(name, &request) {
            Ok(plan) => plan,
            Err(PlanError::NotFound) => {
                return Err(Error::ModelNotFound {
                    model: name.to_string(),
                });
            }
            Err(PlanError::Invalid(error)) => return Err(error),
            Err(PlanError::Load(failed)) => {
                let (problem, dir) = *failed;
                tracing::error!(model = %name, "model cannot load: {problem}");
                if let Some(metrics) = &self.options.metrics {
                    metrics.model_problem(name);
                }
                let mut models = self.write();
                let entry = models.entry(name.to_string()).or_default();
                entry.wanted = true;
                entry.unloaded = false;
                entry.problem = Some(problem.clone());
                entry.loaded_dir = dir.clone();
                entry.seen_dir = dir;
                return Err(Error::LoadFailed {
                    model: name.to_string(),
                    source: problem,
                });
            }
        };

        // Which versions need loading: all of them on request; on a poll,
        // those whose files or configuration changed, or that do not serve.
        let to_load: Vec<(u64, ModelSource)> = {
            let mut models = self.write();
            let entry = models.entry(name.to_string()).or_default();
            entry.wanted = true;
            entry.unloaded = false;
            entry.problem = None;
            let config_changed =
                plan.dir.as_ref().map(|d| d.config) != entry.loaded_dir.as_ref().map(|d| d.config);
            let mut to_load = Vec::new();
            for (version, source) in &plan.versions {
                let unchanged = !request.force
                    && !config_changed
                    && entry.versions.get(version).is_some_and(|v| {
                        v.serving.is_some() && matches!(v.state, LoadState::Ready)
                    })
                    && plan.dir.as_ref().map(|d| d.versions.get(version))
                        == entry.loaded_dir.as_ref().map(|d| d.versions.get(version));
                if unchanged {
                    continue;
                }
                let slot = entry.versions.entry(*version).or_insert(VersionEntry {
                    serving: None,
                    state: LoadState::Loading,
                });
                slot.state = LoadState::Loading;
                to_load.push((*version, source.clone()));
            }
            to_load
        };

        let mut failures = Vec::new();
        for (version, source) in to_load {
            if let Some(metrics) = &self.options.metrics {
                metrics.model_state(name, Some(version), "loading", None);
            }
            let load = VersionLoad {
                env: self.env.clone(),
                options: self.options.clone(),
                model: name.to_string(),
                version,
                source,
                plan: plan.plan.clone(),
                written: plan.written.clone(),
                model_dir: plan.dir.is_some().then(|| self.root.join(name)),
            };
            let started = Instant::now();
            let loaded = tokio::task::spawn_blocking(move || load.run())
                .await
                .unwrap_or_else(|e| Err(LoadError::Threads(format!("the load panicked: {e}"))));
            let seconds = started.elapsed().as_secs_f64();
            let mut models = self.write();
            let entry = models.entry(name.to_string()).or_default();
            let slot = entry.versions.entry(version).or_insert(VersionEntry {
                serving: None,
                state: LoadState::Loading,
            });
            match loaded {
                Ok(loaded) => {
                    // The switch: the new version serves from here on; the
                    // old one ends when its last request lets go of it.
                    slot.serving = Some(Arc::new(loaded));
                    slot.state = LoadState::Ready;
                    tracing::info!(model = %name, version, seconds, "model version loaded");
                    if let Some(metrics) = &self.options.metrics {
                        metrics.model_state(name, Some(version), "ready", Some(seconds));
                    }
                }
                Err(error) => {
                    tracing::error!(
                        model = %name,
                        version,
                        serving_before = slot.serving.is_some(),
                        "model version failed to load: {error}"
                    );
                    let state = if slot.serving.is_some() {
                        "ready"
                    } else {
                        "failed"
                    };
                    if let Some(metrics) = &self.options.metrics {
                        metrics.model_state(name, Some(version), state, Some(seconds));
                    }
                    slot.state = LoadState::Failed(error.clone());
                    failures.push(error);
                }
            }
        }

        // Versions the policy no longer selects stop serving now; their
        // in-flight requests finish on the version they hold.
        {
            let selected: BTreeSet<u64> = plan.versions.iter().map(|(v, _)| *v).collect();
            let mut models = self.write();
            let entry = models.entry(name.to_string()).or_default();
            let dropped: Vec<u64> = entry
                .versions
                .keys()
                .filter(|v| !selected.contains(v))
                .copied()
                .collect();
            for version in dropped {
                entry.versions.remove(&version);
                tracing::info!(model = %name, version, "model version unloaded");
                if let Some(metrics) = &self.options.metrics {
                    metrics.model_state(name, Some(version), "unloaded", None);
                }
            }
            entry.loaded_dir = plan.dir.clone();
            entry.seen_dir = plan.dir;
        }

        match failures.into_iter().next() {
            None => Ok(()),
            Some(source) => Err(Error::LoadFailed {
                model: name.to_string(),
                source,
            }),
        }
    }

    /// Reads what loading `name` works from: the request's files and
    /// configuration, or the model's directory.
    fn plan(&self, name: &str, request: &LoadRequest) -> Result<Plan, PlanError> {
        let problem = |source| LoadError::Config {
            model: name.to_string(),
            source,
        };
        if !request.files.is_empty() {
            let written = request.config.clone();
            let plan = LoadPlan::new(written.as_ref(), &self.options.defaults)
                .map_err(|e| PlanError::Load(Box::new((problem(e), None))))?;
            let mut versions = Vec::new();
            for (&version, (file, bytes)) in &request.files {
                if *file != plan.filename {
                    return Err(PlanError::Invalid(Error::InvalidLoadRequest {
                        model: name.to_string(),
                        reason: format!(
                            "file '{version}/{file}': the model file is '{}' (default_model_filename)",
                            plan.filename
                        ),
                    }));
                }
                versions.push((
                    version,
                    ModelSource::Memory {
                        name: format!("{name}/{version}/{file}"),
                        bytes: bytes.clone(),
                    },
                ));
            }
            return Ok(Plan {
                written,
                plan,
                versions,
                dir: None,
            });
        }
        let path = self.root.join(name);
        let Some(dir) = disk::scan(&path) else {
            return Err(PlanError::NotFound);
        };
        let written = match &request.config {
            Some(config) => Some(config.clone()),
            None => model_config::read(&path)
                .map_err(|e| PlanError::Load(Box::new((problem(e), Some(dir.clone())))))?,
        };
        let plan = LoadPlan::new(written.as_ref(), &self.options.defaults)
            .map_err(|e| PlanError::Load(Box::new((problem(e), Some(dir.clone())))))?;
        let found: Vec<u64> = dir.versions.keys().copied().collect();
        let selected = plan
            .select_versions(&found)
            .map_err(|e| PlanError::Load(Box::new((problem(e), Some(dir.clone())))))?;
        if selected.is_empty() {
            return Err(PlanError::Load(Box::new((
                LoadError::NoVersions {
                    model: name.to_string(),
                },
                Some(dir),
            ))));
        }
        let versions = selected
            .into_iter()
            .map(|v| (v, ModelSource::File(plan.model_path(&path, v))))
            .collect();
        Ok(Plan {
            written,
            plan,
            versions,
            dir: Some(dir),
        })
    }

    /// Unloads model `name`: it stops serving at once (its in-flight
    /// requests finish on the versions they hold) and answers UNAVAILABLE
    /// until loaded again.
    pub(crate) async fn unload(&self, name: &str) -> Result<(), Error> {
        let lock = self.operation_lock(name);
        let _one_at_a_time = lock.lock().await;
        let removed = {
            let mut models = self.write();
            let entry = models.get_mut(name).ok_or_else(|| Error::ModelNotFound {
                model: name.to_string(),
            })?;
            entry.wanted = false;
            entry.unloaded = true;
            entry.problem = None;
            std::mem::take(&mut entry.versions)
        };
        if let Some(metrics) = &self.options.metrics {
            metrics.model_unload(name);
            for &version in removed.keys() {
                metrics.model_state(name, Some(version), "unloaded", None);
            }
        }
        tracing::info!(model = %name, versions = removed.len(), "model unloaded");
        self.update_readiness();
        // The versions are dropped here, outside the lock; each ends once
        // its last request lets go of it.
        drop(removed);
        Ok(())
    }

    /// Polls the repository every `interval` until the task is dropped:
    /// new models are loaded, changed ones reloaded, removed ones
    /// unloaded. A change is acted on once it has held still for a whole
    /// interval, so half-written files are not loaded and a change is
    /// loaded once.
    pub(crate) async fn poll(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.poll_once().await;
        }
    }

    /// One look at the repository (see [`Repository::poll`]).
    pub(crate) async fn poll_once(self: &Arc<Self>) {
        let names = match disk::model_names(&self.root) {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(repository = %self.root.display(), "cannot read the model repository: {e}");
                return;
            }
        };
        let mut due = Vec::new();
        {
            let mut models = self.write();
            for name in &names {
                let now = disk::scan(&self.root.join(name));
                let entry = models.entry(name.clone()).or_default();
                if now.is_some() && now == entry.loaded_dir && entry.wanted {
                    entry.seen_dir = now;
                    continue;
                }
                if now != entry.seen_dir {
                    // Changed since the last look: wait for it to settle.
                    entry.seen_dir = now;
                    continue;
                }
                due.push(name.clone());
            }
            // Models whose directory is gone, twice in a row.
            let gone: Vec<String> = models
                .iter_mut()
                .filter(|(name, _)| !names.contains(name))
                .filter_map(|(name, entry)| {
                    if entry.seen_dir.take().is_some() {
                        None
                    } else {
                        Some(name.clone())
                    }
                })
                .collect();
            for name in &gone {
                if let Some(entry) = models.remove(name) {
                    tracing::info!(model = %name, "model directory removed: unloading");
                    if let Some(metrics) = &self.options.metrics {
                        metrics.model_unload(name);
                        for &version in entry.versions.keys() {
                            metrics.model_state(name, Some(version), "unloaded", None);
                        }
                    }
                }
            }
        }
        for name in due {
            let request = LoadRequest::default();
            if let Err(e) = self.load(&name, request).await {
                tracing::warn!(model = %name, "poll: {e}");
            }
        }
        self.update_readiness();
    }
}

/// Why a load could not even start.
enum PlanError {
    /// No such model directory.
    NotFound,
    /// The request itself is wrong (nothing recorded for the model).
    Invalid(Error),
    /// The model's configuration or versions are wrong; recorded as its
    /// problem, with the directory as scanned (boxed: it is large and rare).
    Load(Box<(LoadError, Option<ModelDir>)>),
}
