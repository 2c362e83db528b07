//! `ClusterError`: why a cluster operation failed.

use std::fmt;

/// Why a cluster operation failed. The Redis client's error is kept as a
/// [`source`](std::error::Error::source) for logs; it never reaches a
/// client or a metric label (the command layer sees
/// `RoutingError::BackplaneUnavailable`).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The Redis client refused `ARQONBUS_REDIS_URL`.
    #[error("invalid Redis URL {url}")]
    InvalidUrl {
        /// The URL with any credentials removed.
        url: String,
        #[source]
        source: RedisError,
    },
    /// Redis failed or did not answer in time.
    #[error("Redis {operation} failed")]
    Redis {
        operation: &'static str,
        #[source]
        source: RedisError,
    },
    /// One of the cluster's bounded queues is full (Redis far behind).
    #[error("the cluster {queue} queue is full")]
    QueueFull { queue: &'static str },
    /// The cluster is shutting down: its tasks are gone.
    #[error("the cluster is stopped")]
    Stopped,
}

impl ClusterError {
    pub(crate) fn redis(operation: &'static str) -> impl FnOnce(fred::error::Error) -> Self {
        move |source| ClusterError::Redis {
            operation,
            source: RedisError(source),
        }
    }
}

/// An error reported by the Redis client, opaque so that the client
/// library stays an implementation detail of this crate.
#[derive(Clone)]
pub struct RedisError(pub(crate) fred::error::Error);

impl fmt::Debug for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for RedisError {}
