//! What a load request asks for, read from its parameters once for every
//! transport: Triton's `config` (a JSON ModelConfig that replaces
//! config.pbtxt for this load) and `file:<version>/<name>` (a model file's
//! bytes, loaded from memory).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use oxserve_proto::inference::ModelRepositoryParameter;
use oxserve_proto::inference::model_repository_parameter::ParameterChoice;

use super::disk::canonical_version;
use crate::error::Error;
use crate::model_config::{self, Written};

/// The `config` parameter.
const CONFIG: &str = "config";
/// The prefix of file parameters.
const FILE: &str = "file:";

/// A load or reload of one model.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadRequest {
    /// A configuration replacing config.pbtxt for this load.
    pub(crate) config: Option<Written>,
    /// Model files given with the request: version → (file name, bytes).
    pub(crate) files: BTreeMap<u64, (String, Bytes)>,
    /// Load again even if nothing changed on disk (an explicit request
    /// always reloads; the poller only reloads what changed).
    pub(crate) force: bool,
}

impl LoadRequest {
    /// Reads the parameters of a RepositoryModelLoad for `model`.
    pub(crate) fn from_parameters(
        model: &str,
        parameters: &HashMap<String, ModelRepositoryParameter>,
    ) -> Result<LoadRequest, Error> {
        let invalid = |reason: String| Error::InvalidLoadRequest {
            model: model.to_string(),
            reason,
        };
        let mut request = LoadRequest {
            force: true,
            ..LoadRequest::default()
        };
        for (key, value) in parameters {
            let choice = value.parameter_choice.as_ref();
            if key == CONFIG {
                let Some(ParameterChoice::StringParam(json)) = choice else {
                    return Err(invalid(
                        "the 'config' parameter must be a string holding a JSON model configuration"
                            .into(),
                    ));
                };
                let written = model_config::parse_json(json).map_err(|e| invalid(e.to_string()))?;
                request.config = Some(written);
            } else if let Some(path) = key.strip_prefix(FILE) {
                let Some(ParameterChoice::BytesParam(bytes)) = choice else {
                    return Err(invalid(format!("the '{key}' parameter must carry bytes")));
                };
                let (version, name) = file_path(path).ok_or_else(|| {
                    invalid(format!(
                        "file path '{path}' must be <version>/<file name> inside the model directory (no other directories, no '..')"
                    ))
                })?;
                if request
                    .files
                    .insert(version, (name.to_string(), bytes.clone()))
                    .is_some()
                {
                    return Err(invalid(format!(
                        "more than one file for version {version}; only the model file is loaded from a request"
                    )));
                }
            } else {
                return Err(invalid(format!(
                    "unknown parameter '{key}' (use 'config' or 'file:<version>/<name>')"
                )));
            }
        }
        if !request.files.is_empty() && request.config.is_none() {
            return Err(invalid(
                "model files given without a 'config' parameter: a model loaded from the request needs its configuration in it".into(),
            ));
        }
        Ok(request)
    }
}

/// `<version>/<name>` with a canonical version number and a plain file
/// name: nothing that could lead out of the model's directory.
fn file_path(path: &str) -> Option<(u64, &str)> {
    let (version, name) = path.split_once('/')?;
    let version = canonical_version(version)?;
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.starts_with('.');
    plain.then_some((version, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(choice: ParameterChoice) -> ModelRepositoryParameter {
        ModelRepositoryParameter {
            parameter_choice: Some(choice),
        }
    }

    fn load(params: &[(&str, ParameterChoice)]) -> Result<LoadRequest, Error> {
        let map = params
            .iter()
            .map(|(k, v)| (k.to_string(), param(v.clone())))
            .collect();
        LoadRequest::from_parameters("m", &map)
    }

    #[test]
    fn files_and_config_are_read() {
        let r = load(&[
            (
                "config",
                ParameterChoice::StringParam(
                    r#"{"max_batch_size": 4, "backend": "onnxruntime"}"#.into(),
                ),
            ),
            (
                "file:1/model.onnx",
                ParameterChoice::BytesParam(Bytes::from_static(b"x")),
            ),
        ])
        .unwrap();
        assert_eq!(r.config.unwrap().config.max_batch_size, Some(4));
        assert_eq!(r.files[&1].0, "model.onnx");
        assert!(r.force);
    }

    #[test]
    fn paths_out_of_the_model_directory_are_refused() {
        for path in [
            "file:../model.onnx",
            "file:1/../../etc/passwd",
            "file:/etc/passwd",
            "file:1/sub/model.onnx",
            "file:01/model.onnx",
            "file:1/..",
            "file:1/",
            "file:model.onnx",
        ] {
            let e = load(&[
                ("config", ParameterChoice::StringParam("{}".into())),
                (path, ParameterChoice::BytesParam(Bytes::new())),
            ])
            .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{path}: {e}");
        }
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases: [(&[(&str, ParameterChoice)], &str); 4] = [
            (
                &[("config", ParameterChoice::StringParam("{not json".into()))],
                "config parameter",
            ),
            (
                &[(
                    "config",
                    ParameterChoice::StringParam(r#"{"sequence_batching": {}}"#.into()),
                )],
                "sequence_batching",
            ),
            (
                &[(
                    "file:1/model.onnx",
                    ParameterChoice::BytesParam(Bytes::new()),
                )],
                "without a 'config'",
            ),
            (
                &[("colour", ParameterChoice::BoolParam(true))],
                "unknown parameter",
            ),
        ];
        for (params, needle) in cases {
            let e = load(params).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.to_string().contains(needle), "{e}");
        }
    }
}
