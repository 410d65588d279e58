//! Triton's trace settings (`TraceSetting` over gRPC, `/v2/trace/setting`
//! over REST): names and values as strings, read and changed at run time.
//!
//! Served: `trace_level` (OFF or TIMESTAMPS), `trace_rate` (trace one
//! request in N: the sampling ratio 1/N) and oxserve's own
//! `trace_sampling_ratio`. Triton's file-based keys are answered with the
//! only values that hold here (`trace_count` -1, `log_frequency` 0,
//! `trace_file` empty, `trace_mode` opentelemetry) and accepted only with
//! those values, so a client is never told a setting took effect when it
//! did not.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::Traces;

/// Settings as names and their values.
pub(crate) type TraceSettings = BTreeMap<String, Vec<String>>;

/// A change that cannot be made; the client's mistake (INVALID_ARGUMENT).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trace setting '{name}': {reason}")]
pub(crate) struct SettingsError {
    /// The setting.
    pub name: String,
    /// What is wrong.
    pub reason: String,
}

const LEVEL: &str = "trace_level";
const RATE: &str = "trace_rate";
const RATIO: &str = "trace_sampling_ratio";
const COUNT: &str = "trace_count";
const LOG_FREQUENCY: &str = "log_frequency";
const FILE: &str = "trace_file";
const MODE: &str = "trace_mode";

/// The fixed settings: name, the one value accepted and reported.
const FIXED: &[(&str, &str)] = &[
    (COUNT, "-1"),
    (LOG_FREQUENCY, "0"),
    (FILE, ""),
    (MODE, "opentelemetry"),
];

impl Traces {
    /// Every setting and its value now.
    pub(crate) fn settings(&self) -> TraceSettings {
        let on = self.knobs.on.load(Ordering::Relaxed);
        let ratio = self.knobs.ratio();
        let rate = if ratio > 0.0 {
            (1.0 / ratio).round() as u64
        } else {
            0
        };
        let mut out = TraceSettings::new();
        out.insert(
            LEVEL.into(),
            vec![if on { "TIMESTAMPS" } else { "OFF" }.into()],
        );
        out.insert(RATE.into(), vec![rate.to_string()]);
        out.insert(RATIO.into(), vec![ratio.to_string()]);
        for &(name, value) in FIXED {
            out.insert(name.into(), vec![value.into()]);
        }
        out
    }

    /// Applies `changes` (all or none) and returns the settings after.
    /// An empty value list restores that setting's start-up value, as in
    /// Triton. Per-model settings are not kept: `model` must be empty.
    pub(crate) fn update(
        &self,
        model: &str,
        changes: &TraceSettings,
    ) -> Result<TraceSettings, SettingsError> {
        let initial_ratio = self.initial_ratio;
        let error = |name: &str, reason: String| SettingsError {
            name: name.to_string(),
            reason,
        };
        if !model.is_empty() {
            return Err(error(
                "model_name",
                format!(
                    "settings apply to the whole server; per-model settings (for '{model}') are not kept"
                ),
            ));
        }
        // Check everything first, then apply, so a bad change changes nothing.
        let mut on = None;
        let mut ratio = None;
        for (name, values) in changes {
            let value = match values.as_slice() {
                [] => None,
                [one] => Some(one.as_str()),
                _ => return Err(error(name, "takes one value".into())),
            };
            match name.as_str() {
                LEVEL => {
                    on = Some(match value {
                        None | Some("TIMESTAMPS") => true,
                        Some("OFF") => false,
                        Some("TENSORS") => {
                            return Err(error(
                                name,
                                "TENSORS is not served: spans carry timestamps only".into(),
                            ));
                        }
                        Some(other) => {
                            return Err(error(name, format!("'{other}' is not OFF or TIMESTAMPS")));
                        }
                    })
                }
                RATE => {
                    ratio = Some(match value {
                        None => initial_ratio,
                        Some(v) => match v.parse::<u64>() {
                            Ok(0) | Err(_) => {
                                return Err(error(
                                    name,
                                    format!(
                                        "'{v}' is not a whole number of 1 or more (trace one request in N)"
                                    ),
                                ));
                            }
                            Ok(n) => 1.0 / n as f64,
                        },
                    })
                }
                RATIO => {
                    ratio = Some(match value {
                        None => initial_ratio,
                        Some(v) => match v.parse::<f64>() {
                            Ok(r) if (0.0..=1.0).contains(&r) => r,
                            _ => {
                                return Err(error(
                                    name,
                                    format!("'{v}' is not a number from 0 to 1"),
                                ));
                            }
                        },
                    })
                }
                other => match FIXED.iter().find(|(n, _)| *n == other) {
                    Some(&(_, fixed)) => {
                        if value.is_some_and(|v| v != fixed) {
                            return Err(error(
                                name,
                                format!(
                                    "only '{fixed}' is served: spans are exported over OTLP, not written to files"
                                ),
                            ));
                        }
                    }
                    None => {
                        return Err(error(
                            name,
                            format!(
                                "unknown setting; the settings are {LEVEL}, {RATE}, {RATIO}, {COUNT}, {LOG_FREQUENCY}, {FILE} and {MODE}"
                            ),
                        ));
                    }
                },
            }
        }
        if let Some(on) = on {
            self.knobs.on.store(on, Ordering::Relaxed);
        }
        if let Some(ratio) = ratio {
            self.knobs.ratio.store(ratio.to_bits(), Ordering::Relaxed);
        }
        if on.is_some() || ratio.is_some() {
            tracing::info!(settings = ?self.settings(), "trace settings changed");
        }
        Ok(self.settings())
    }

    /// Where spans are exported, if anywhere.
    pub(crate) fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(pairs: &[(&str, &[&str])]) -> TraceSettings {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn rate_and_ratio_are_two_views_of_one_setting() {
        let traces = Traces::new(None, 1.0).unwrap();
        let after = traces.update("", &change(&[(RATE, &["4"])])).unwrap();
        assert_eq!(after[RATIO], ["0.25"]);
        assert_eq!(after[RATE], ["4"]);
        let after = traces
            .update("", &change(&[(RATIO, &["0.5"]), (LEVEL, &["OFF"])]))
            .unwrap();
        assert_eq!(after[RATE], ["2"]);
        assert_eq!(after[LEVEL], ["OFF"]);
        // An empty list restores the start-up value.
        let after = traces
            .update("", &change(&[(RATE, &[]), (LEVEL, &[])]))
            .unwrap();
        assert_eq!(after[RATE], ["1"]);
        assert_eq!(after[LEVEL], ["TIMESTAMPS"]);
    }

    #[test]
    fn bad_changes_change_nothing() {
        let traces = Traces::new(None, 1.0).unwrap();
        let before = traces.settings();
        for bad in [
            change(&[(LEVEL, &["OFF"]), (RATE, &["0"])]),
            change(&[(LEVEL, &["TENSORS"])]),
            change(&[(RATIO, &["1.5"])]),
            change(&[(FILE, &["/tmp/trace.json"])]),
            change(&[("trace_colour", &["blue"])]),
            change(&[(RATE, &["1", "2"])]),
        ] {
            assert!(traces.update("", &bad).is_err(), "{bad:?}");
            assert_eq!(traces.settings(), before);
        }
        assert!(traces.update("mlp", &change(&[])).is_err());
        // The fixed values themselves are accepted.
        assert!(
            traces
                .update("", &change(&[(COUNT, &["-1"]), (FILE, &[""])]))
                .is_ok()
        );
    }
}
