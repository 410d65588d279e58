//! TLS for the gRPC, REST and metrics ports: rustls with the ring provider,
//! certificates and keys from PEM files, re-read when the files change.
//!
//! A Kubernetes Secret (cert-manager's, for one) is rotated by swapping the
//! `..data` symlink of its mount, so the files' paths stay and their contents
//! change. [`Tls::watch`] reads the files every `tls_reload_interval` and,
//! when their bytes differ, builds a new `ServerConfig` and swaps it in: every
//! handshake takes the config current at its accept, so new connections get
//! the new certificate and established ones keep theirs. Files that do not
//! make a config (half-written, mismatched key, not PEM) are logged once and
//! the previous config stays.

mod reload;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio_rustls::TlsAcceptor;

/// The files TLS is read from (`tls_cert`, `tls_key`, `tls_client_ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub(crate) cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub(crate) key: PathBuf,
    /// PEM CA certificates client certificates must chain to (mTLS);
    /// `None` asks clients for none.
    pub(crate) client_ca: Option<PathBuf>,
}

/// Why TLS files do not make a server config.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} '{}': {source}", path.display())]
    Read {
        /// Which setting's file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file holds no usable PEM item of the kind expected.
    #[error("{what} '{}': {reason}", path.display())]
    Pem {
        /// Which setting's file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificate, key or CA (e.g. the key does not
    /// match the certificate).
    #[error("tls_cert '{}' with tls_key '{}': {source}", cert.display(), key.display())]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// The client CA file does not make a verifier.
    #[error("tls_client_ca '{}': {reason}", path.display())]
    ClientCa {
        /// The CA file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The ALPN protocols a listener offers: gRPC needs `h2` (grpc-go refuses a
/// TLS server that does not negotiate it); REST also speaks HTTP/1.1;
/// metrics only HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alpn {
    /// `h2` only.
    Http2,
    /// `h2`, then `http/1.1`.
    Http1AndHttp2,
    /// `http/1.1` only.
    Http1,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::Http2 => vec![b"h2".to_vec()],
            Alpn::Http1AndHttp2 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
        }
    }
}

/// The current server configs, one per ALPN set, swapped whole on reload.
#[derive(Debug)]
struct Configs {
    http2: Arc<ServerConfig>,
    both: Arc<ServerConfig>,
    http1: Arc<ServerConfig>,
}

/// TLS for every listener, from one set of files, reloadable.
#[derive(Debug)]
pub(crate) struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<Configs>>,
}

impl Tls {
    /// Reads the files; fails if they do not make a config (the server
    /// must not start without the TLS it was asked for).
    pub(crate) fn load(files: TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let contents = reload::Contents::read(&files)?;
        let configs = build(&files, &contents)?;
        Ok(Arc::new(Tls {
            files,
            current: RwLock::new(Arc::new(configs)),
        }))
    }

    /// An acceptor with the config current now, for one connection.
    pub(crate) fn acceptor(&self, alpn: Alpn) -> TlsAcceptor {
        let configs = match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            // A writer only swaps an Arc; a poisoned lock still holds a
            // whole config.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        let config = match alpn {
            Alpn::Http2 => &configs.http2,
            Alpn::Http1AndHttp2 => &configs.both,
            Alpn::Http1 => &configs.http1,
        };
        TlsAcceptor::from(Arc::clone(config))
    }

    fn swap(&self, configs: Configs) {
        let configs = Arc::new(configs);
        match self.current.write() {
            Ok(mut guard) => *guard = configs,
            Err(poisoned) => *poisoned.into_inner() = configs,
        }
    }
}

/// The ring provider, named explicitly so that no process-wide default
/// (or a second provider elsewhere in the tree) decides.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            reason: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.to_path_buf(),
            reason: "no CERTIFICATE in the file".into(),
        });
    }
    Ok(certs)
}

/// Builds the three configs from the files' contents.
fn build(files: &TlsFiles, contents: &reload::Contents) -> Result<Configs, TlsError> {
    let certs = certificates("tls_cert", &files.cert, &contents.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|e| TlsError::Pem {
        what: "tls_key",
        path: files.key.clone(),
        reason: format!("no usable PRIVATE KEY: {e}"),
    })?;
    let provider = provider();
    let verifier = match (&files.client_ca, &contents.client_ca) {
        (Some(path), Some(pem)) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates("tls_client_ca", path, pem)? {
                roots.add(ca).map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
            // Clients must present a certificate that chains to `roots`.
            Some(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| TlsError::ClientCa {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?,
            )
        }
        _ => None,
    };
    let config_error = |source| TlsError::Config {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_error)?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let base = builder.with_single_cert(certs, key).map_err(config_error)?;
    let with = |alpn: Alpn| {
        let mut config = base.clone();
        config.alpn_protocols = alpn.protocols();
        Arc::new(config)
    };
    Ok(Configs {
        http2: with(Alpn::Http2),
        both: with(Alpn::Http1AndHttp2),
        http1: with(Alpn::Http1),
    })
}
