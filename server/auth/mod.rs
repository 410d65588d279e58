//! API keys per API group (Triton's restricted protocol): which requests
//! need a key, and whether the one they carry is good.
//!
//! With `api_keys` set, a request to a method or route of a group in
//! `protected_groups` must carry `authorization: Bearer <key>` with a key
//! from the file: no key (or not a bearer one) is UNAUTHENTICATED, a key
//! not in the file PERMISSION_DENIED. A path that belongs to no group (no
//! such method or route) needs a key whenever any group is protected, so
//! nothing unclassified is ever open by accident. Without `api_keys`
//! nothing is checked, whatever `protected_groups` says.
//!
//! The check is one tower layer ([`layer`]) in front of both transports;
//! each transport only says how a path maps to a group and how a refusal
//! is written. The `authorization` header is taken off every request it
//! checked, so no handler, log line or span can see the key.

pub(crate) mod layer;

use std::path::Path;
use std::sync::Arc;

use http::HeaderMap;
use tonic::Code;

use crate::api_keys::{ApiGroup, GroupSet, KeyFileError, KeyStore};
use crate::metrics::Metrics;

/// Why a request was refused; the `reason` label of the rejection counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// No `authorization` header.
    Missing,
    /// An `authorization` header that is not `Bearer <key>`.
    Malformed,
    /// A key that is not in the file.
    Wrong,
}

impl Reason {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::Wrong => "wrong",
        }
    }
}

/// A refused request: its group (`None`: a path of no group) and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) group: Option<ApiGroup>,
    pub(crate) reason: Reason,
}

impl Rejection {
    /// The gRPC code (REST derives its status from it).
    pub(crate) fn code(&self) -> Code {
        match self.reason {
            Reason::Missing | Reason::Malformed => Code::Unauthenticated,
            Reason::Wrong => Code::PermissionDenied,
        }
    }

    /// The group label: its name, or `other` for a path of no group.
    pub(crate) fn group_label(&self) -> &'static str {
        self.group.map_or("other", ApiGroup::as_str)
    }

    /// What the caller is told. It names the group and what to send, and
    /// never echoes what was sent.
    pub(crate) fn message(&self) -> String {
        let what = match self.group {
            Some(group) => format!("the '{group}' API group"),
            None => "this path".to_string(),
        };
        match self.reason {
            Reason::Missing => {
                format!("{what} needs an API key: send the metadata 'authorization: Bearer <key>'")
            }
            Reason::Malformed => format!(
                "{what} needs an API key, and the 'authorization' metadata is not 'Bearer <key>'"
            ),
            Reason::Wrong => format!("the API key is not accepted for {what}"),
        }
    }
}

/// The API key policy of one server, shared by both transports.
#[derive(Debug, Clone)]
pub(crate) struct Auth {
    /// `None`: no `api_keys`, nothing is checked.
    keys: Option<Arc<KeyStore>>,
    protected: GroupSet,
    metrics: Option<Arc<Metrics>>,
}

impl Auth {
    /// The policy for `api_keys` and `protected_groups`, with the key file
    /// loaded now.
    pub(crate) fn new(
        api_keys: Option<&Path>,
        protected: &[ApiGroup],
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Auth, KeyFileError> {
        let keys = api_keys.map(KeyStore::open).transpose()?.map(Arc::new);
        let auth = Auth {
            keys,
            protected: protected.iter().copied().collect(),
            metrics,
        };
        if let Some(metrics) = auth.metrics.as_ref().filter(|_| auth.enabled()) {
            let mut groups: Vec<&'static str> = protected.iter().map(|g| g.as_str()).collect();
            groups.push("other");
            let reasons = [Reason::Missing, Reason::Malformed, Reason::Wrong].map(Reason::as_str);
            metrics.auth_rejections_from_zero(&groups, &reasons);
        }
        Ok(auth)
    }

    /// Reloads the key file while the returned task runs (`None` without
    /// `api_keys`).
    pub(crate) fn watch(&self) -> Option<tokio::task::JoinHandle<()>> {
        let keys = Arc::clone(self.keys.as_ref()?);
        Some(tokio::spawn(keys.watch(crate::api_keys::RELOAD_INTERVAL)))
    }

    /// Whether any request is checked at all.
    pub(crate) fn enabled(&self) -> bool {
        self.keys.is_some() && !self.protected.is_empty()
    }

    /// Whether a request of `group` may go on, given its headers; a
    /// refusal is counted.
    pub(crate) fn check(
        &self,
        group: Option<ApiGroup>,
        headers: &HeaderMap,
    ) -> Result<(), Rejection> {
        let Some(keys) = &self.keys else {
            return Ok(());
        };
        let protected = match group {
            Some(group) => self.protected.contains(group),
            None => !self.protected.is_empty(),
        };
        if !protected {
            return Ok(());
        }
        let reason = match bearer(headers) {
            Bearer::Missing => Reason::Missing,
            Bearer::Malformed => Reason::Malformed,
            Bearer::Key(key) if keys.keys().accepts(key) => return Ok(()),
            Bearer::Key(_) => Reason::Wrong,
        };
        let rejection = Rejection { group, reason };
        if let Some(metrics) = &self.metrics {
            metrics.auth_rejected(rejection.group_label(), reason.as_str());
        }
        tracing::debug!(
            group = rejection.group_label(),
            reason = reason.as_str(),
            "request refused: API key"
        );
        Err(rejection)
    }
}

/// What a request's `authorization` header holds.
enum Bearer<'a> {
    Missing,
    Malformed,
    Key(&'a [u8]),
}

/// The key of `authorization: Bearer <key>` (the scheme in any case, as
/// HTTP's auth schemes are; RFC 9110 §11.1).
fn bearer(headers: &HeaderMap) -> Bearer<'_> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Bearer::Missing;
    };
    let value = value.as_bytes();
    let scheme = b"bearer ";
    match value.get(..scheme.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(scheme) => {
            let key = value[scheme.len()..].trim_ascii();
            if key.is_empty() {
                Bearer::Malformed
            } else {
                Bearer::Key(key)
            }
        }
        _ => Bearer::Malformed,
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
