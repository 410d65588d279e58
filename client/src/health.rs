//! The standard `grpc.health.v1.Health` statuses.

use oxserve_proto::health::health_check_response::ServingStatus as PbServingStatus;

use crate::{Error, Result};

/// A service's status as reported by `grpc.health.v1.Health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServingStatus {
    /// `UNKNOWN`: the server does not know yet.
    Unknown,
    /// `SERVING`: the only status a Kubernetes probe accepts.
    Serving,
    /// `NOT_SERVING`.
    NotServing,
    /// `SERVICE_UNKNOWN`: only sent by `Watch`; `Check` answers `NOT_FOUND`.
    ServiceUnknown,
}

impl ServingStatus {
    /// Whether this is [`ServingStatus::Serving`].
    pub fn is_serving(self) -> bool {
        self == ServingStatus::Serving
    }

    pub(crate) fn from_wire(value: i32) -> Result<Self> {
        match PbServingStatus::try_from(value) {
            Ok(PbServingStatus::Unknown) => Ok(ServingStatus::Unknown),
            Ok(PbServingStatus::Serving) => Ok(ServingStatus::Serving),
            Ok(PbServingStatus::NotServing) => Ok(ServingStatus::NotServing),
            Ok(PbServingStatus::ServiceUnknown) => Ok(ServingStatus::ServiceUnknown),
            Err(_) => Err(Error::decode(format!("unknown health status {value}"))),
        }
    }
}

impl From<ServingStatus> for PbServingStatus {
    fn from(status: ServingStatus) -> Self {
        match status {
            ServingStatus::Unknown => PbServingStatus::Unknown,
            ServingStatus::Serving => PbServingStatus::Serving,
            ServingStatus::NotServing => PbServingStatus::NotServing,
            ServingStatus::ServiceUnknown => PbServingStatus::ServiceUnknown,
        }
    }
}
