//! Reading the configuration: defaults, the TOML file, `OXSERVE_*`
//! variables and flags merged with figment, then every value checked, with
//! errors that name the key and where its value came from.

use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;

use super::{BatchSize, Config, ControlMode, InstanceCount, keys};

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Values of the wrong type or format, each with its key and source.
    #[error("{}", describe(.0))]
    Parse(#[from] Box<figment::Error>),
    /// A well-formed value outside what the server accepts.
    #[error("invalid value for '{key}': {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// One line per error: `'key' (from <source>): <what is wrong>`, without
/// figment's profile prefix and provider source locations.
fn describe(errors: &figment::Error) -> String {
    let lines: Vec<String> = errors
        .clone()
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::from("(whole configuration)")
            } else {
                e.path.join(".").to_lowercase()
            };
            let source = match &e.metadata {
                Some(m) => match &m.source {
                    Some(figment::Source::File(path)) => format!("{} {}", m.name, path.display()),
                    _ => m.name.to_string(),
                },
                None => "configuration".to_string(),
            };
            format!("'{key}' (from {source}): {}", e.kind)
        })
        .collect();
    lines.join("; ")
}

/// A provider under a name of our choosing, so that errors say "command-line
/// flags" rather than a Rust type and source location.
struct Named<P> {
    name: &'static str,
    inner: P,
}

impl<P: figment::Provider> figment::Provider for Named<P> {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(self.name)
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        self.inner.data()
    }
}

impl Config {
    /// The figment for defaults, an optional TOML file, the environment and
    /// `overrides` (the command-line flags that were given).
    pub fn figment(file: Option<&Path>, overrides: impl Serialize) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(Named {
                name: "OXSERVE_* environment variables",
                inner: Env::prefixed("OXSERVE_").only(&keys()),
            })
            .merge(Named {
                name: "command-line flags",
                inner: Serialized::defaults(overrides),
            })
    }

    /// Extracts and validates.
    pub fn from_figment(figment: &Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and the model repository.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if !self.model_repository.is_dir() {
            return invalid(
                "model_repository",
                format!("'{}' is not a directory", self.model_repository.display()),
            );
        }
        const MIN_MESSAGE: usize = 4 * 1024;
        const MAX_MESSAGE: usize = 2 * 1024 * 1024 * 1024;
        if !(MIN_MESSAGE..=MAX_MESSAGE).contains(&self.max_message_size) {
            return invalid(
                "max_message_size",
                format!("{} bytes is outside 4KiB..=2GiB", self.max_message_size),
            );
        }
        if self.drain_timeout > Duration::from_secs(3600) {
            return invalid("drain_timeout", "more than one hour".into());
        }
        if self.intra_op_threads > 1024 {
            return invalid(
                "intra_op_threads",
                format!("{} is more than 1024", self.intra_op_threads),
            );
        }
        if !(1..=1_000_000).contains(&self.max_queue_size) {
            return invalid(
                "max_queue_size",
                format!("{} is outside 1..=1000000", self.max_queue_size),
            );
        }
        let max_instances = crate::model_config::MAX_INSTANCES;
        if let InstanceCount::Fixed(n) = self.instances
            && !(1..=max_instances).contains(&n)
        {
            return invalid("instances", format!("{n} is outside 1..={max_instances}"));
        }
        let batch_cap = match self.max_batch_size {
            BatchSize::Auto => crate::model_config::AUTO_BATCH_CAP,
            BatchSize::Fixed(n) if n > 1 << 20 => {
                return invalid("max_batch_size", format!("{n} is more than 1048576"));
            }
            BatchSize::Fixed(n) => n,
        };
        if let Some(&bad) = self
            .preferred_batch_sizes
            .iter()
            .find(|&&s| s == 0 || s > batch_cap)
        {
            return invalid(
                "preferred_batch_sizes",
                format!("{bad} is outside 1..={batch_cap} (max_batch_size)"),
            );
        }
        if self.batch_latency_budget < Duration::from_millis(1)
            || self.batch_latency_budget > Duration::from_secs(60)
        {
            return invalid(
                "batch_latency_budget",
                format!("{:?} is outside 1ms..=60s", self.batch_latency_budget),
            );
        }
        if self.inline_threshold > Duration::from_millis(1) {
            return invalid("inline_threshold", "more than 1 millisecond".into());
        }
        if self.max_queue_delay > Duration::from_secs(10) {
            return invalid("max_queue_delay", "more than 10 seconds".into());
        }
        if let Some(lib) = &self.onnxruntime_library
            && !lib.is_file()
        {
            return invalid(
                "onnxruntime_library",
                format!("'{}' is not a file", lib.display()),
            );
        }
        if !(0.0..=1.0).contains(&self.trace_sampling_ratio) {
            return invalid(
                "trace_sampling_ratio",
                format!("{} is outside 0..=1", self.trace_sampling_ratio),
            );
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && endpoint
                .parse::<http::Uri>()
                .map_or(true, |u| u.scheme().is_none())
        {
            return invalid(
                "otlp_endpoint",
                format!("'{endpoint}' is not a URL such as http://otel-collector:4317"),
            );
        }
        if !self.load_model.is_empty() && self.model_control_mode != ControlMode::Explicit {
            return invalid(
                "load_model",
                format!(
                    "only applies with model_control_mode = explicit (it is '{}'); in the other modes every model loads",
                    self.model_control_mode.as_str()
                ),
            );
        }
        if self.repository_poll_interval < Duration::from_millis(100) {
            return invalid(
                "repository_poll_interval",
                format!("{:?} is less than 100ms", self.repository_poll_interval),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return invalid("log_level", format!("'{}': {e}", self.log_level));
        }
        self.validate_transport()?;
        // API keys: the file must be usable at start (later, a bad file
        // keeps the keys in force; at start there are none to keep).
        if let Some(path) = &self.api_keys
            && let Err(e) = crate::api_keys::load_keys(path)
        {
            return invalid("api_keys", e.to_string());
        }
        Ok(())
    }
}
