//! TLS for every listener (`ARQONBUS_TLS_CERT`, `ARQONBUS_TLS_KEY`):
//! the PEM files are read and checked once, when the server binds, into a
//! rustls server configuration (ring provider, TLS 1.2 and 1.3, ALPN
//! `http/1.1`) shared by the bus, telemetry and HTTP listeners.
//!
//! A file that is not what it should be (no certificate, no private key, a
//! key that does not belong to the certificate) is invalid configuration:
//! [`ServerError::Tls`] names the variable and the path.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use arqon_config::ServerConfig;
use rustls::crypto::ring;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::ServerError;

/// The variables as an operator writes them.
const CERT: &str = "ARQONBUS_TLS_CERT";
const KEY: &str = "ARQONBUS_TLS_KEY";

/// What is wrong with a TLS file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read: {0}")]
    Read(#[source] io::Error),
    #[error("not valid PEM: {0}")]
    Pem(#[source] pem::Error),
    #[error("no PEM certificate found")]
    NoCertificate,
    #[error("no private key found")]
    NoPrivateKey,
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// rustls refused the certificate or the key.
    #[error("{0}")]
    Rejected(#[source] rustls::Error),
}

/// Wraps accepted connections in TLS; cheap to clone.
#[derive(Clone)]
pub(crate) struct Acceptor(TlsAcceptor);

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Acceptor").finish_non_exhaustive()
    }
}

impl Acceptor {
    /// The acceptor the configuration asks for: `None` without TLS files.
    pub(crate) fn from_config(server: &ServerConfig) -> Result<Option<Self>, ServerError> {
        let Some(files) = server.tls() else {
            return Ok(None);
        };
        let config = server_config(&files.cert, &files.key)?;
        Ok(Some(Self(TlsAcceptor::from(Arc::new(config)))))
    }

    pub(crate) fn inner(&self) -> &TlsAcceptor {
        &self.0
    }
}

fn error(key: &'static str, path: &Path, reason: TlsError) -> ServerError {
    ServerError::Tls {
        key,
        path: path.to_owned(),
        reason,
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|e| error(key, path, TlsError::Read(e)))
}

/// The ring provider, named explicitly rather than installed process-wide
/// (nothing in this crate touches global state). rustls 0.23.48 deprecates
/// it for lacking post-quantum key exchange; the alternative, aws-lc-rs,
/// needs cmake and a C toolchain to build.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Reads the certificate chain and the private key, and checks that they
/// belong together.
fn server_config(cert_path: &Path, key_path: &Path) -> Result<rustls::ServerConfig, ServerError> {
    let cert_pem = read(CERT, cert_path)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(CERT, cert_path, TlsError::Pem(e)))?;
    if certs.is_empty() {
        return Err(error(CERT, cert_path, TlsError::NoCertificate));
    }
    let key_pem = read(KEY, key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let reason = match e {
            pem::Error::NoItemsFound => TlsError::NoPrivateKey,
            e => TlsError::Pem(e),
        };
        error(KEY, key_path, reason)
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| error(CERT, cert_path, TlsError::Rejected(e)))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => error(KEY, key_path, TlsError::KeyMismatch),
            // The key could not be loaded (an unsupported or corrupt key).
            e @ rustls::Error::General(_) => error(KEY, key_path, TlsError::Rejected(e)),
            e => error(CERT, cert_path, TlsError::Rejected(e)),
        })?;
    // Only HTTP/1.1 is served (WebSocket upgrades need it).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
