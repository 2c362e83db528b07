//! `StorageError`: why a storage operation failed.

use std::fmt;

use arqon_config::StorageBackend;

/// Why a storage operation failed. Internal text (the Redis client's error)
/// is kept as a [`source`](std::error::Error::source) for logs; it never
/// reaches a client or a metric label.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The Redis client refused `ARQONBUS_REDIS_URL` (unsupported scheme,
    /// bad host or port…).
    #[error("invalid Redis URL {url}")]
    InvalidUrl {
        /// The URL with any credentials removed.
        url: String,
        /// What the client said.
        #[source]
        source: BackendError,
    },
    /// The backend cannot be reached: at startup in strict mode, or for a
    /// read while Redis is down and nothing about the channel is buffered.
    #[error("{} storage is unavailable", backend.as_str())]
    Unavailable {
        /// The configured backend.
        backend: StorageBackend,
        /// The last error seen, when there is one.
        #[source]
        source: Option<BackendError>,
    },
}

/// An error reported by the Redis client. Opaque, so that the client library
/// stays an implementation detail of this crate.
#[derive(Clone)]
pub struct BackendError(pub(crate) fred::error::Error);

impl BackendError {
    /// A short, stable description of the kind of failure (`io`, `timeout`,
    /// `server`…), fit for a log field.
    pub fn kind(&self) -> &'static str {
        use fred::error::ErrorKind;
        match self.0.kind() {
            ErrorKind::IO => "io",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Canceled => "canceled",
            ErrorKind::Auth => "auth",
            ErrorKind::Config | ErrorKind::Url => "config",
            ErrorKind::Unknown | ErrorKind::InvalidArgument | ErrorKind::InvalidCommand => "server",
            _ => "other",
        }
    }
}

impl fmt::Debug for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for BackendError {}

impl From<fred::error::Error> for BackendError {
    fn from(error: fred::error::Error) -> Self {
        Self(error)
    }
}
