//! Triton's API groups, and which group each gRPC method and REST route
//! belongs to.
//!
//! The names and the split are Triton's restricted-protocol groups
//! (`--grpc-restricted-protocol`, `--http-restricted-api`), so a setting
//! written for Triton means the same here. `grpc.health.v1.Health` joins
//! `health`; reflection joins `metadata`, since it describes the server's
//! API just as ServerMetadata does.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One of Triton's API groups, as `protected_groups` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiGroup {
    /// ServerLive, ServerReady, ModelReady, `grpc.health.v1.Health`;
    /// REST `/v2/health/*` and `.../ready`.
    Health,
    /// ServerMetadata, ModelMetadata, server reflection.
    Metadata,
    /// ModelInfer, ModelStreamInfer.
    Inference,
    /// The system and CUDA shared-memory RPCs.
    SharedMemory,
    /// ModelConfig.
    ModelConfig,
    /// RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload.
    ModelRepository,
    /// ModelStatistics.
    Statistics,
    /// TraceSetting.
    Trace,
    /// LogSettings.
    Logging,
}

impl ApiGroup {
    /// Every group, in Triton's order.
    pub const ALL: [ApiGroup; 9] = [
        ApiGroup::Health,
        ApiGroup::Metadata,
        ApiGroup::Inference,
        ApiGroup::SharedMemory,
        ApiGroup::ModelConfig,
        ApiGroup::ModelRepository,
        ApiGroup::Statistics,
        ApiGroup::Trace,
        ApiGroup::Logging,
    ];

    /// The group's name, as Triton spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiGroup::Health => "health",
            ApiGroup::Metadata => "metadata",
            ApiGroup::Inference => "inference",
            ApiGroup::SharedMemory => "shared-memory",
            ApiGroup::ModelConfig => "model-config",
            ApiGroup::ModelRepository => "model-repository",
            ApiGroup::Statistics => "statistics",
            ApiGroup::Trace => "trace",
            ApiGroup::Logging => "logging",
        }
    }

    /// The default of `protected_groups`: every group but health, so that
    /// Kubernetes probes (which cannot send a key) keep working.
    pub fn default_protected() -> Vec<ApiGroup> {
        ApiGroup::ALL
            .into_iter()
            .filter(|&g| g != ApiGroup::Health)
            .collect()
    }

    /// The bit of this group in a [`GroupSet`].
    pub(crate) fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for ApiGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the groups.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown API group '{0}'; the groups are {all}", all = list_all())]
pub struct UnknownGroup(String);

fn list_all() -> String {
    ApiGroup::ALL.map(ApiGroup::as_str).join(", ")
}

impl FromStr for ApiGroup {
    type Err = UnknownGroup;

    fn from_str(name: &str) -> Result<ApiGroup, UnknownGroup> {
        let name = name.trim();
        ApiGroup::ALL
            .into_iter()
            .find(|g| g.as_str() == name)
            .ok_or_else(|| UnknownGroup(name.to_string()))
    }
}

impl Serialize for ApiGroup {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ApiGroup {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ApiGroup, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// `protected_groups` as a list (`["metadata", "inference"]`, from a flag
/// or the config file) or one comma-separated string
/// (`OXSERVE_PROTECTED_GROUPS=metadata,inference`); empty names are
/// skipped, so `""` protects nothing.
pub(crate) mod group_list {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use super::ApiGroup;

    pub(crate) fn serialize<S: Serializer>(groups: &[ApiGroup], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(groups)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ApiGroup>, D::Error> {
        let names = match Raw::deserialize(d)? {
            Raw::One(text) => text.split(',').map(str::to_owned).collect(),
            Raw::Many(names) => names,
        };
        let mut groups = Vec::new();
        for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            let group: ApiGroup = name.parse().map_err(D::Error::custom)?;
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        Ok(groups)
    }
}

/// A set of groups, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GroupSet(u16);

impl GroupSet {
    pub(crate) fn contains(self, group: ApiGroup) -> bool {
        self.0 & group.bit() != 0
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<ApiGroup> for GroupSet {
    fn from_iter<I: IntoIterator<Item = ApiGroup>>(groups: I) -> GroupSet {
        GroupSet(groups.into_iter().fold(0, |bits, g| bits | g.bit()))
    }
}

/// The group of a gRPC method, from its path (`/package.Service/Method`);
/// `None` for a path no served method has.
pub fn grpc_group(path: &str) -> Option<ApiGroup> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    match service {
        "inference.GRPCInferenceService" => Some(match method {
            "ServerLive" | "ServerReady" | "ModelReady" => ApiGroup::Health,
            "ServerMetadata" | "ModelMetadata" => ApiGroup::Metadata,
            "ModelInfer" | "ModelStreamInfer" => ApiGroup::Inference,
            "SystemSharedMemoryStatus"
            | "SystemSharedMemoryRegister"
            | "SystemSharedMemoryUnregister"
            | "CudaSharedMemoryStatus"
            | "CudaSharedMemoryRegister"
            | "CudaSharedMemoryUnregister" => ApiGroup::SharedMemory,
            "ModelConfig" => ApiGroup::ModelConfig,
            "RepositoryIndex" | "RepositoryModelLoad" | "RepositoryModelUnload" => {
                ApiGroup::ModelRepository
            }
            "ModelStatistics" => ApiGroup::Statistics,
            "TraceSetting" => ApiGroup::Trace,
            "LogSettings" => ApiGroup::Logging,
            _ => return None,
        }),
        "grpc.health.v1.Health" => match method {
            "Check" | "Watch" => Some(ApiGroup::Health),
            _ => None,
        },
        "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection" => {
            match method {
                "ServerReflectionInfo" => Some(ApiGroup::Metadata),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The group of a REST route, from the request path (mirroring the routes
/// of `http::service`); `None` for a path no route has.
pub fn rest_group(path: &str) -> Option<ApiGroup> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() {
        return Some(ApiGroup::Metadata);
    }
    let segments: Vec<&str> = rest.strip_prefix('/')?.split('/').collect();
    match segments.as_slice() {
        ["health", "live" | "ready"] => Some(ApiGroup::Health),
        ["models", "stats"] => Some(ApiGroup::Statistics),
        ["models", _model, tail @ ..] => {
            // `/versions/{v}` may come between the model and what is asked.
            let tail = match tail {
                ["versions", _version, tail @ ..] => tail,
                other => other,
            };
            match tail {
                [] => Some(ApiGroup::Metadata),
                ["ready"] => Some(ApiGroup::Health),
                ["infer"] => Some(ApiGroup::Inference),
                ["config"] => Some(ApiGroup::ModelConfig),
                ["stats"] => Some(ApiGroup::Statistics),
                // Per-model trace settings exist without a version only.
                ["trace", "setting"] if tail.len() == segments.len() - 2 => Some(ApiGroup::Trace),
                _ => None,
            }
        }
        ["systemsharedmemory" | "cudasharedmemory", ..] => Some(ApiGroup::SharedMemory),
        ["repository", ..] => Some(ApiGroup::ModelRepository),
        ["logging"] => Some(ApiGroup::Logging),
        ["trace", "setting"] => Some(ApiGroup::Trace),
        _ => None,
    }
}

#[cfg(test)]
#[path = "groups_tests.rs"]
mod tests;
