//! Logs: the process's `tracing` subscriber, and Triton's `LogSettings`
//! (over gRPC and `/v2/logging`), which change its level and format while
//! the server runs.
//!
//! A process has one subscriber, so its reload handles are kept in a
//! process-wide cell, set by [`init`] (which `main` calls). A server run
//! without it (an embedding program with its own subscriber, most tests)
//! answers `LogSettings` with FAILED_PRECONDITION rather than pretending.
//!
//! Served keys: Triton's `log_info`, `log_warning`, `log_error` (bool),
//! `log_verbose_level` (uint: 1 is debug, 2 and more trace), `log_format`
//! (`text` or `json`; Triton's `default` is `text`) and `log_file` (only
//! empty: logs go to standard output); plus oxserve's `log_level`, a full
//! filter such as `oxserve=debug,ort=warn`.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::{LogFormat, log_directives};

/// One setting's value, as Triton types them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogValue {
    /// `log_info`, `log_warning`, `log_error`.
    Bool(bool),
    /// `log_verbose_level`.
    Uint(u32),
    /// `log_format`, `log_file`, `log_level`.
    Text(String),
}

/// Settings by name.
pub(crate) type LogSettings = BTreeMap<String, LogValue>;

/// Why settings cannot be read or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LogError {
    /// This process's logs are not set up by oxserve.
    #[error("log settings cannot be changed: this process's logging is not set up by oxserve")]
    NotControlled,
    /// A setting the client cannot make.
    #[error("log setting '{name}': {reason}")]
    Invalid {
        /// The setting.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

impl LogError {
    /// The gRPC code for this error. No catch-all arm.
    #[deny(clippy::wildcard_enum_match_arm)]
    pub(crate) fn code(&self) -> tonic::Code {
        match self {
            LogError::NotControlled => tonic::Code::FailedPrecondition,
            LogError::Invalid { .. } => tonic::Code::InvalidArgument,
        }
    }
}

type Base = Layered<reload::Layer<EnvFilter, Registry>, Registry>;
type Output = Box<dyn Layer<Base> + Send + Sync>;

struct Control {
    filter: reload::Handle<EnvFilter, Registry>,
    output: reload::Handle<Output, Base>,
    /// The level filter and format in force.
    now: Mutex<(String, LogFormat)>,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up logging: {0}")]
pub struct LogInitError(String);

fn filter(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(log_directives(level)).map_err(|e| format!("'{level}': {e}"))
}

fn output(format: LogFormat) -> Output {
    use std::io::IsTerminal;
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .boxed(),
        // Colour only for people (https://no-color.org): log collectors
        // get plain text.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .boxed(),
    }
}

/// Installs the process's subscriber: `level` and `format`, changeable
/// later through `LogSettings`. Once per process.
pub fn init(level: &str, format: LogFormat) -> Result<(), LogInitError> {
    let (filter_layer, filter_handle) = reload::Layer::new(filter(level).map_err(LogInitError)?);
    let (output_layer, output_handle) = reload::Layer::new(output(format));
    tracing_subscriber::registry()
        .with(filter_layer)
        .with(output_layer)
        // ONNX Runtime's own WARN/ERROR lines, rate limited (issue 12).
        .with(crate::fault_log::RuntimeLogLimit::default())
        .try_init()
        .map_err(|e| LogInitError(e.to_string()))?;
    let control = Control {
        filter: filter_handle,
        output: output_handle,
        now: Mutex::new((level.to_string(), format)),
    };
    CONTROL
        .set(control)
        .map_err(|_| LogInitError("already set up".into()))
}

fn control() -> Result<&'static Control, LogError> {
    CONTROL.get().ok_or(LogError::NotControlled)
}

/// The settings in force.
pub(crate) fn settings() -> Result<LogSettings, LogError> {
    let control = control()?;
    let now = control.now.lock().unwrap_or_else(|p| p.into_inner());
    Ok(describe(&now.0, now.1))
}

/// Triton's view of a level filter: the most verbose level it lets through.
fn describe(level: &str, format: LogFormat) -> LogSettings {
    use tracing::level_filters::LevelFilter;
    let max = filter(level)
        .ok()
        .and_then(|f| f.max_level_hint())
        .unwrap_or(LevelFilter::INFO);
    let mut out = LogSettings::new();
    out.insert("log_level".into(), LogValue::Text(level.to_string()));
    out.insert("log_file".into(), LogValue::Text(String::new()));
    out.insert(
        "log_error".into(),
        LogValue::Bool(max >= LevelFilter::ERROR),
    );
    out.insert(
        "log_warning".into(),
        LogValue::Bool(max >= LevelFilter::WARN),
    );
    out.insert("log_info".into(), LogValue::Bool(max >= LevelFilter::INFO));
    let verbose = if max >= LevelFilter::TRACE {
        2
    } else if max >= LevelFilter::DEBUG {
        1
    } else {
        0
    };
    out.insert("log_verbose_level".into(), LogValue::Uint(verbose));
    let format = match format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    out.insert("log_format".into(), LogValue::Text(format.into()));
    out
}

/// The level and format `changes` ask for, starting from `level` and
/// `format`; nothing is applied.
fn plan(
    level: &str,
    format: LogFormat,
    changes: &LogSettings,
) -> Result<(String, LogFormat), LogError> {
    let invalid = |name: &str, reason: String| LogError::Invalid {
        name: name.to_string(),
        reason,
    };
    let current = describe(level, format);
    let flag = |name: &str| -> Result<bool, LogError> {
        match changes.get(name).or_else(|| current.get(name)) {
            Some(LogValue::Bool(b)) => Ok(*b),
            _ => Err(invalid(name, "must be a bool".into())),
        }
    };
    let mut new_level = level.to_string();
    let mut new_format = format;
    let flags = ["log_info", "log_warning", "log_error", "log_verbose_level"];
    if flags.iter().any(|f| changes.contains_key(*f)) {
        let verbose = match changes
            .get("log_verbose_level")
            .or_else(|| current.get("log_verbose_level"))
        {
            Some(LogValue::Uint(v)) => *v,
            _ => {
                return Err(invalid(
                    "log_verbose_level",
                    "must be an unsigned integer".into(),
                ));
            }
        };
        new_level = match (
            verbose,
            flag("log_info")?,
            flag("log_warning")?,
            flag("log_error")?,
        ) {
            (2.., ..) => "trace",
            (1, ..) => "debug",
            (0, true, ..) => "info",
            (0, false, true, _) => "warn",
            (0, false, false, true) => "error",
            (0, false, false, false) => "off",
        }
        .to_string();
    }
    for (name, value) in changes {
        match (name.as_str(), value) {
            ("log_info" | "log_warning" | "log_error" | "log_verbose_level", _) => {}
            ("log_level", LogValue::Text(level)) => {
                filter(level).map_err(|e| invalid(name, e))?;
                new_level = level.clone();
            }
            ("log_format", LogValue::Text(format)) => {
                new_format = match format.as_str() {
                    "text" | "default" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => {
                        return Err(invalid(name, format!("'{other}' is not text or json")));
                    }
                }
            }
            ("log_file", LogValue::Text(file)) => {
                if !file.is_empty() {
                    return Err(invalid(
                        name,
                        "logs go to standard output only; collect them from there".into(),
                    ));
                }
            }
            ("log_level" | "log_format" | "log_file", _) => {
                return Err(invalid(name, "must be a string".into()));
            }
            _ => {
                return Err(invalid(
                    name,
                    "unknown setting; the settings are log_level, log_format, log_file, log_info, log_warning, log_error and log_verbose_level".into(),
                ));
            }
        }
    }
    Ok((new_level, new_format))
}

/// Applies `changes` (all or none) and returns the settings after.
pub(crate) fn update(changes: &LogSettings) -> Result<LogSettings, LogError> {
    let control = control()?;
    let mut now = control.now.lock().unwrap_or_else(|p| p.into_inner());
    let (level, format) = plan(&now.0, now.1, changes)?;
    let reload_error = |e: reload::Error| LogError::Invalid {
        name: "log_level".into(),
        reason: format!("cannot apply: {e}"),
    };
    if level != now.0 {
        let new = filter(&level).map_err(|reason| LogError::Invalid {
            name: "log_level".into(),
            reason,
        })?;
        control.filter.reload(new).map_err(reload_error)?;
    }
    if format != now.1 {
        control
            .output
            .reload(output(format))
            .map_err(reload_error)?;
    }
    *now = (level, format);
    let settings = describe(&now.0, now.1);
    drop(now);
    tracing::info!(?changes, "log settings changed");
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, LogValue)]) -> LogSettings {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn triton_flags_become_a_level() {
        let text = LogFormat::Text;
        let plan = |changes| plan("info", text, &with(changes)).unwrap().0;
        assert_eq!(plan(&[("log_verbose_level", LogValue::Uint(1))]), "debug");
        assert_eq!(plan(&[("log_verbose_level", LogValue::Uint(7))]), "trace");
        assert_eq!(plan(&[("log_info", LogValue::Bool(false))]), "warn");
        assert_eq!(
            plan(&[
                ("log_info", LogValue::Bool(false)),
                ("log_warning", LogValue::Bool(false))
            ]),
            "error"
        );
        assert_eq!(
            plan(&[("log_level", LogValue::Text("oxserve=debug".into()))]),
            "oxserve=debug"
        );
    }

    #[test]
    fn levels_are_described_the_way_triton_does() {
        let d = describe("warn", LogFormat::Json);
        assert_eq!(d["log_info"], LogValue::Bool(false));
        assert_eq!(d["log_warning"], LogValue::Bool(true));
        assert_eq!(d["log_verbose_level"], LogValue::Uint(0));
        assert_eq!(d["log_format"], LogValue::Text("json".into()));
        assert_eq!(
            describe("debug", LogFormat::Text)["log_verbose_level"],
            LogValue::Uint(1)
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let text = LogFormat::Text;
        for bad in [
            with(&[("log_format", LogValue::Text("ISO8601".into()))]),
            with(&[("log_file", LogValue::Text("/var/log/x".into()))]),
            with(&[("log_level", LogValue::Text("oxserve=loud".into()))]),
            with(&[("log_info", LogValue::Uint(1))]),
            with(&[("log_colour", LogValue::Bool(true))]),
        ] {
            assert!(plan("info", text, &bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            plan(
                "info",
                text,
                &with(&[("log_format", LogValue::Text("json".into()))])
            )
            .unwrap()
            .1,
            LogFormat::Json
        );
    }
}
