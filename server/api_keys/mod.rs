//! What API keys are made of, apart from checking them: Triton's API
//! groups (which gRPC method or REST route belongs to which, and the
//! `protected_groups` setting's values) and the key file (`api_keys`:
//! reading, reloading, constant-time look-up). A leaf the configuration
//! can use; `auth` is the check in front of the transports.

mod groups;
mod keys;

use std::path::Path;

pub use groups::{ApiGroup, UnknownGroup};
pub(crate) use groups::{GroupSet, group_list};
pub use groups::{grpc_group, rest_group};
pub(crate) use keys::KeyStore;
pub(crate) use keys::RELOAD_INTERVAL;
pub use keys::{KeyFileError, Keys};

/// Checks that the key file at `path` can be used (at start, for the
/// configuration's validation).
pub(crate) fn load_keys(path: &Path) -> Result<(), KeyFileError> {
    keys::load(path).map(|_| ())
}
