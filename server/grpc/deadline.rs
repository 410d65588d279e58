//! When a request must be answered: the client's `grpc-timeout` header and
//! the protocol's `timeout` request parameter (microseconds).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;

use crate::error::Error;
use crate::proto::inference::InferParameter;
use crate::proto::inference::infer_parameter::ParameterChoice;

/// The deadline a client set with `grpc-timeout` (gRPC over HTTP/2: up to
/// eight digits and a unit, H M S m u n), if any.
pub(crate) fn from_metadata(metadata: &MetadataMap) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    parse_grpc_timeout(value).map(|t| Instant::now() + t)
}

fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The request's `timeout` parameter, in microseconds as the protocol
/// reserves it; 0 or absent means none.
pub(crate) fn from_parameters(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        for bad in ["", "S", "10", "10x", "123456789S", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

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
        assert_eq!(from_parameters("m", &HashMap::new()).unwrap(), None);
        assert_eq!(
            from_parameters("m", &with(ParameterChoice::Int64Param(1500))).unwrap(),
            Some(Duration::from_micros(1500))
        );
        assert_eq!(
            from_parameters("m", &with(ParameterChoice::Int64Param(0))).unwrap(),
            None
        );
        assert!(from_parameters("m", &with(ParameterChoice::Int64Param(-1))).is_err());
        assert!(from_parameters("m", &with(ParameterChoice::StringParam("1s".into()))).is_err());
    }
}
