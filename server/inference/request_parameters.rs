//! The request parameters the protocol reserves and oxserve applies,
//! whatever the transport: `timeout` (microseconds) and `priority`. The
//! client's own deadline comes from the transport.

use std::collections::HashMap;
use std::time::Duration;

use oxserve_proto::inference::{InferParameter, ParameterChoice};

use crate::error::Error;

/// The request's `timeout` parameter, in microseconds as the protocol
/// reserves it; 0 or absent means none.
pub(crate) fn timeout_parameter(
    model: &str,
    parameters: &HashMap<String, InferParameter>,
) -> Result<Option<Duration>, Error> {
    let Some(parameter) = parameters.get("timeout") else {
        return Ok(None);
    };
    let micros = match parameter.parameter_choice {
        Some(ParameterChoice::Int64Param(v)) if v >= 0 => v as u64,
        Some(ParameterChoice::Uint64Param(v)) => v,
        _ => {
            return Err(Error::InvalidParameter {
                model: model.to_string(),
                parameter: "timeout",
                reason: "must be a non-negative int64 or uint64 number of microseconds".into(),
            });
        }
    };
    Ok((micros > 0).then(|| Duration::from_micros(micros)))
}

/// The request's `priority` parameter (Triton's: 1 is the highest level,
/// 0 or absent the model's default).
pub(crate) fn priority_parameter(
    model: &str,
    parameters: &HashMap<String, InferParameter>,
) -> Result<Option<u64>, Error> {
    let Some(parameter) = parameters.get("priority") else {
        return Ok(None);
    };
    match parameter.parameter_choice {
        Some(ParameterChoice::Int64Param(v)) if v >= 0 => Ok(Some(v as u64)),
        Some(ParameterChoice::Uint64Param(v)) => Ok(Some(v)),
        _ => Err(Error::InvalidParameter {
            model: model.to_string(),
            parameter: "priority",
            reason: "must be a non-negative int64 or uint64 priority level".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_parameter_is_microseconds() {
        let with = |choice| {
            HashMap::from([(
                "timeout".to_string(),
                InferParameter {
                    parameter_choice: Some(choice),
                },
            )])
        };
        assert_eq!(timeout_parameter("m", &HashMap::new()).unwrap(), None);
        assert_eq!(
            timeout_parameter("m", &with(ParameterChoice::Int64Param(1500))).unwrap(),
            Some(Duration::from_micros(1500))
        );
        assert_eq!(
            timeout_parameter("m", &with(ParameterChoice::Int64Param(0))).unwrap(),
            None
        );
        assert!(timeout_parameter("m", &with(ParameterChoice::Int64Param(-1))).is_err());
        assert!(timeout_parameter("m", &with(ParameterChoice::StringParam("1s".into()))).is_err());
    }
}
