//! Re-reading the TLS files: compare their bytes every interval, build a
//! new config when they change, keep the old one when the new files are
//! bad.
//!
//! Bytes rather than modification times: a Secret rotation swaps a symlink
//! (the file's own mtime may not move, and two writes within a second look
//! the same), and the files are a few kilobytes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Tls, TlsError, TlsFiles, build};

/// The files' contents at one reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Contents {
    pub(super) cert: Vec<u8>,
    pub(super) key: Vec<u8>,
    pub(super) client_ca: Option<Vec<u8>>,
}

/// PEM files are kilobytes; a bigger file is not one (and must not be read
/// into memory whole every few seconds).
const MAX_FILE: u64 = 1024 * 1024;

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let error = |source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(error)?.len();
    if size > MAX_FILE {
        return Err(TlsError::Pem {
            what,
            path: path.to_path_buf(),
            reason: format!("{size} bytes is more than a PEM file's 1 MiB"),
        });
    }
    std::fs::read(path).map_err(error)
}

impl Contents {
    pub(super) fn read(files: &TlsFiles) -> Result<Contents, TlsError> {
        Ok(Contents {
            cert: read("tls_cert", &files.cert)?,
            key: read("tls_key", &files.key)?,
            client_ca: match &files.client_ca {
                Some(path) => Some(read("tls_client_ca", path)?),
                None => None,
            },
        })
    }
}

/// What one look at the files did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Same bytes as the config in use, or as the last bad files seen.
    Unchanged,
    /// New files made a config, now in use.
    Reloaded,
    /// New files did not make a config; the previous one stays.
    Rejected,
}

/// The state between looks: the bytes in use and the last bad bytes (so a
/// bad file is logged once, not every interval).
#[derive(Debug)]
pub(super) struct Watcher {
    in_use: Contents,
    last_bad: Option<Contents>,
}

impl Watcher {
    /// Looks at the files once.
    pub(super) fn check(&mut self, tls: &Tls) -> Outcome {
        let contents = match Contents::read(&tls.files) {
            Ok(contents) => contents,
            Err(e) => {
                // A file missing for a moment mid-rotation is logged once
                // per distinct error text.
                let text = e.to_string().into_bytes();
                let marker = Contents {
                    cert: text,
                    key: Vec::new(),
                    client_ca: None,
                };
                if self.last_bad.as_ref() == Some(&marker) {
                    return Outcome::Unchanged;
                }
                tracing::error!("cannot reload TLS files, keeping the certificate in use: {e}");
                self.last_bad = Some(marker);
                return Outcome::Rejected;
            }
        };
        if contents == self.in_use || self.last_bad.as_ref() == Some(&contents) {
            return Outcome::Unchanged;
        }
        match build(&tls.files, &contents) {
            Ok(configs) => {
                tls.swap(configs);
                tracing::info!(
                    cert = %tls.files.cert.display(),
                    "TLS files changed: new connections use the new certificate"
                );
                self.in_use = contents;
                self.last_bad = None;
                Outcome::Reloaded
            }
            Err(e) => {
                tracing::error!("cannot reload TLS files, keeping the certificate in use: {e}");
                self.last_bad = Some(contents);
                Outcome::Rejected
            }
        }
    }
}

impl Tls {
    /// Re-reads the files every `interval` until the task is dropped.
    pub(crate) async fn watch(self: Arc<Self>, interval: Duration) {
        let mut watcher = match Contents::read(&self.files) {
            Ok(in_use) => Watcher {
                in_use,
                last_bad: None,
            },
            Err(e) => {
                tracing::error!("cannot read TLS files to watch them: {e}");
                return;
            }
        };
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            // Small files, but still blocking I/O: off the async threads.
            let tls = Arc::clone(&self);
            let checked = tokio::task::spawn_blocking(move || {
                let outcome = watcher.check(&tls);
                (watcher, outcome)
            })
            .await;
            match checked {
                Ok((w, _)) => watcher = w,
                Err(e) => {
                    tracing::error!(
                        "TLS reload task failed: {e}; certificates are no longer reloaded"
                    );
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
