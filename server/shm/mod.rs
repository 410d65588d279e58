//! System shared memory (Triton's `system_shared_memory` extension):
//! regions that clients on the same host register by their `/dev/shm` key,
//! and that request inputs and outputs then name instead of carrying bytes.
//!
//! A region is mapped once, when it is registered, and only the registered
//! range of the file is mapped. Every access names an offset and a size
//! inside the region and is checked against it before any byte is touched,
//! so no request can read or write outside the mapping. Inputs are copied
//! out of the region once, when the request is decoded: what was validated
//! is what runs, even if the client rewrites the region meanwhile.

mod region;
mod tensor;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tonic::Code;

pub(crate) use region::Region;
pub(crate) use tensor::{input_refs, output_refs};

/// Where regions live: POSIX shared memory objects are files here.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// Why a shared-memory request or registration failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ShmError {
    /// No region registered under that name.
    #[error("Unable to find system shared memory region: '{name}'")]
    UnknownRegion {
        /// The name.
        name: String,
    },
    /// A region of that name is registered already.
    #[error("shared memory region '{name}' is already registered")]
    AlreadyExists {
        /// The name.
        name: String,
    },
    /// A key that does not name a file directly under /dev/shm.
    #[error("shared memory key '{key}' {reason}")]
    InvalidKey {
        /// The key sent.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The shared memory object cannot be opened or mapped.
    #[error("cannot map shared memory key '{key}': {source}")]
    Map {
        /// The key.
        key: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// A registration or access outside the bounds it must stay in.
    #[error("{0}")]
    OutOfBounds(String),
    /// A tensor's shared-memory parameters are missing or of the wrong type.
    #[error("{0}")]
    BadParameter(String),
    /// CUDA shared memory, which this server does not map.
    #[error("{}", cuda_reason())]
    CudaUnavailable,
}

/// Why CUDA shared memory cannot be registered, for this build.
fn cuda_reason() -> &'static str {
    if cfg!(feature = "cuda") {
        "CUDA shared memory is not served yet: oxserve does not open CUDA IPC handles; pass tensors in system shared memory or in the request"
    } else {
        "CUDA shared memory is not served: this oxserve build has no CUDA support (a build with --features cuda runs models on GPUs, but does not open CUDA IPC handles either); pass tensors in system shared memory or in the request"
    }
}

impl ShmError {
    /// The gRPC code for this error. No catch-all arm.
    #[deny(clippy::wildcard_enum_match_arm)]
    pub(crate) fn code(&self) -> Code {
        match self {
            ShmError::UnknownRegion { .. } => Code::NotFound,
            ShmError::AlreadyExists { .. } => Code::AlreadyExists,
            ShmError::InvalidKey { .. } | ShmError::OutOfBounds(_) | ShmError::BadParameter(_) => {
                Code::InvalidArgument
            }
            ShmError::CudaUnavailable => Code::Unimplemented,
            ShmError::Map { source, .. } => {
                // io::ErrorKind is open-ended: compare, not match.
                let kind = source.kind();
                if kind == std::io::ErrorKind::NotFound {
                    Code::NotFound
                } else if kind == std::io::ErrorKind::PermissionDenied {
                    Code::PermissionDenied
                } else {
                    Code::InvalidArgument
                }
            }
        }
    }
}

/// What a region is, as Status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegionStatus {
    /// The name it was registered under.
    pub name: String,
    /// Its /dev/shm key.
    pub key: String,
    /// Where the region starts in the shared memory object.
    pub offset: u64,
    /// Its size in bytes.
    pub byte_size: u64,
}

/// The registered system shared memory regions.
#[derive(Debug, Default)]
pub(crate) struct SharedMemory {
    regions: RwLock<BTreeMap<String, Arc<Region>>>,
}

impl SharedMemory {
    /// No regions yet.
    pub(crate) fn new() -> Arc<SharedMemory> {
        Arc::new(SharedMemory::default())
    }

    /// Maps `byte_size` bytes from `offset` of the shared memory object
    /// `key` and registers them as `name`.
    pub(crate) fn register(
        &self,
        name: &str,
        key: &str,
        offset: u64,
        byte_size: u64,
    ) -> Result<(), ShmError> {
        if name.is_empty() {
            return Err(ShmError::BadParameter(
                "a shared memory region needs a name".into(),
            ));
        }
        if self.regions().contains_key(name) {
            return Err(ShmError::AlreadyExists { name: name.into() });
        }
        let region = Region::map(name, key, offset, byte_size)?;
        let mut regions = self.regions_mut();
        if regions.contains_key(name) {
            return Err(ShmError::AlreadyExists { name: name.into() });
        }
        tracing::info!(
            name,
            key,
            offset,
            byte_size,
            "shared memory region registered"
        );
        regions.insert(name.to_string(), Arc::new(region));
        Ok(())
    }

    /// Unregisters `name`, or every region if `name` is empty. Unknown
    /// names are not an error (clients unregister before registering).
    /// Requests using a region keep its mapping until they finish.
    pub(crate) fn unregister(&self, name: &str) {
        let mut regions = self.regions_mut();
        if name.is_empty() {
            regions.clear();
        } else if regions.remove(name).is_some() {
            tracing::info!(name, "shared memory region unregistered");
        }
    }

    /// The status of `name`, or of every region if `name` is empty.
    pub(crate) fn status(&self, name: &str) -> Result<Vec<RegionStatus>, ShmError> {
        let regions = self.regions();
        if name.is_empty() {
            return Ok(regions.values().map(|r| r.status()).collect());
        }
        regions
            .get(name)
            .map(|r| vec![r.status()])
            .ok_or_else(|| ShmError::UnknownRegion { name: name.into() })
    }

    /// The region called `name`.
    pub(crate) fn get(&self, name: &str) -> Result<Arc<Region>, ShmError> {
        self.regions()
            .get(name)
            .cloned()
            .ok_or_else(|| ShmError::UnknownRegion { name: name.into() })
    }

    /// Copies `size` bytes from `offset` of region `name`, refusing more
    /// than `limit` bytes (the same bound a request body has).
    pub(crate) fn read(
        &self,
        name: &str,
        offset: u64,
        size: u64,
        limit: usize,
    ) -> Result<Bytes, ShmError> {
        if size > limit as u64 {
            return Err(ShmError::OutOfBounds(format!(
                "{size} bytes from shared memory region '{name}' exceed the largest message of {limit} bytes"
            )));
        }
        self.get(name)?.read(offset, size)
    }

    fn regions(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Region>>> {
        // Nothing panics while holding the lock: a poisoned map is intact.
        self.regions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn regions_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Region>>> {
        self.regions.write().unwrap_or_else(|p| p.into_inner())
    }
}
