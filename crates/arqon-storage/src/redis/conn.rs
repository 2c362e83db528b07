//! Connecting to Redis, and sorting its errors into "retry later" and
//! "never works".
//!
//! The client is built without a reconnect policy: this crate owns
//! reconnection (with its own backoff and degraded mode), so a command on a
//! broken connection fails at once instead of waiting inside the client.

use fred::error::{Error, ErrorKind};
use fred::prelude::{Builder, Client, ClientLike, Config, EventInterface, Value};
use fred::types::{ClusterHash, CustomCommand};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use arqon_config::redact_url;

use crate::error::{BackendError, StorageError};
use crate::redis::RedisTuning;
use crate::types::{DegradedReason, Persistence};

/// Parses `url` into a client configuration.
///
/// TLS URLs (`rediss://`) are refused: this build has no TLS support, and
/// the client would otherwise fall back to plain TCP with only a warning.
pub(crate) fn client_config(url: &str) -> Result<Config, StorageError> {
    let invalid = |source: Error| StorageError::InvalidUrl {
        url: redact_url(url),
        source: BackendError(source),
    };
    if crate::layout::is_tls_url(url) {
        return Err(invalid(Error::new(
            ErrorKind::Config,
            "TLS (rediss://) is not supported by this build",
        )));
    }
    Config::from_url(&crate::layout::client_url(url)).map_err(invalid)
}

/// One connection and the signal that it broke.
///
/// Without a reconnect policy the client notices a closed socket (it
/// reports it on its error stream) but keeps queueing commands until they
/// time out. A watcher task turns that report into `lost`, so storage
/// degrades at once instead of after a command timeout; it ends when
/// `lost` is cancelled, by a broken socket or by [`close`].
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) client: Client,
    /// Cancelled when the connection is known to be broken, or closed.
    pub(crate) lost: CancellationToken,
}

impl Link {
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }
}

/// Opens one connection, waiting at most `tuning.connect_timeout`.
pub(crate) async fn connect(
    config: &Config,
    tuning: &RedisTuning,
    tasks: &TaskTracker,
) -> Result<Link, Error> {
    let client = Builder::from_config(config.clone())
        .with_connection_config(|connection| {
            connection.connection_timeout = tuning.connect_timeout;
            connection.internal_command_timeout = tuning.connect_timeout;
            connection.max_command_attempts = 1;
            connection.tcp.nodelay = Some(true);
        })
        .with_performance_config(|performance| {
            performance.default_command_timeout = tuning.command_timeout;
        })
        .build()?;
    let mut errors = client.error_rx();
    match tokio::time::timeout(tuning.connect_timeout, client.init()).await {
        Ok(Ok(_connection_task)) => {
            let lost = CancellationToken::new();
            let signal = lost.clone();
            tasks.spawn(async move {
                loop {
                    let error = tokio::select! {
                        () = signal.cancelled() => return, // closed
                        error = errors.recv() => error,
                    };
                    match error {
                        Ok((error, _server)) => {
                            if let Class::Retry(_) = classify(&error) {
                                signal.cancel();
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
            Ok(Link { client, lost })
        }
        Ok(Err(error)) => Err(error),
        Err(_elapsed) => {
            close_client(client, tasks);
            Err(Error::new(ErrorKind::Timeout, "connection timed out"))
        }
    }
}

/// Closes a connection in a task on `tasks` (never waits on a dead server).
pub(crate) fn close(link: Link, tasks: &TaskTracker) {
    link.lost.cancel();
    close_client(link.client, tasks);
}

fn close_client(client: Client, tasks: &TaskTracker) {
    tasks.spawn(async move {
        let _ = tokio::time::timeout(QUIT_TIMEOUT, client.quit()).await;
    });
}

/// How long a closing connection waits for Redis to answer `QUIT`.
const QUIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// How Redis keeps its data across a restart: `aof` when `INFO
/// persistence` says `aof_enabled:1`, else `rdb` when `CONFIG GET save`
/// lists snapshot points, else `none`. `None` when it cannot tell (a
/// managed Redis refusing `CONFIG`, with AOF off; or a failed `INFO`).
/// In a Redis Cluster this asks one node.
pub(crate) async fn persistence(client: &Client) -> Option<Persistence> {
    let info = CustomCommand::new_static("INFO", ClusterHash::Random, false);
    let info: String = match client
        .custom::<Value, _>(info, vec![Value::from("persistence")])
        .await
        .and_then(Value::convert)
    {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(backend = "redis", %error, "INFO persistence failed");
            return None;
        }
    };
    if aof_enabled(&info) {
        return Some(Persistence::Aof);
    }
    let config = CustomCommand::new_static("CONFIG", ClusterHash::Random, false);
    match client
        .custom::<Value, _>(config, vec![Value::from("GET"), Value::from("save")])
        .await
    {
        Ok(reply) => save_points(reply).map(|save| {
            if save.trim().is_empty() {
                Persistence::None
            } else {
                Persistence::Rdb
            }
        }),
        Err(error) => {
            tracing::debug!(backend = "redis", %error, "CONFIG GET save refused");
            None
        }
    }
}

/// Whether an `INFO persistence` text says `aof_enabled:1`.
fn aof_enabled(info: &str) -> bool {
    info.lines()
        .filter_map(|line| line.trim().split_once(':'))
        .any(|(field, value)| field == "aof_enabled" && value.trim() == "1")
}

/// The value of `save` in a `CONFIG GET save` reply (`["save", "…"]`, or a
/// map in RESP3).
fn save_points(reply: Value) -> Option<String> {
    match reply {
        Value::Array(values) => values.into_iter().nth(1)?.convert().ok(),
        Value::Map(map) => map
            .inner()
            .into_iter()
            .find(|(key, _)| key.as_str().is_some_and(|key| key == "save"))
            .and_then(|(_, value)| value.convert().ok()),
        _ => None,
    }
}

/// What an error means for the operation that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// `XADD` of an id not above the stream's top: the entry was written by
    /// an earlier attempt. Success.
    Duplicate,
    /// The connection or the server is unwell: keep the operation, go
    /// degraded, retry later.
    Retry(DegradedReason),
    /// The server refuses this operation for good (wrong key type, syntax):
    /// retrying would block the buffer forever.
    Refused,
}

/// Server replies that mean "not now" rather than "never".
const RETRYABLE_REPLIES: &[&str] = &[
    "OOM",
    "LOADING",
    "READONLY",
    "MASTERDOWN",
    "BUSY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "NOREPLICAS",
    "MISCONF",
    "NOAUTH",
    "WRONGPASS",
    "NOPERM",
];

pub(crate) fn classify(error: &Error) -> Class {
    match error.kind() {
        ErrorKind::Timeout => Class::Retry(DegradedReason::Timeout),
        ErrorKind::IO
        | ErrorKind::Canceled
        | ErrorKind::Routing
        | ErrorKind::Protocol
        | ErrorKind::Backpressure
        | ErrorKind::Cluster
        | ErrorKind::Sentinel
        | ErrorKind::Auth => Class::Retry(DegradedReason::ConnectionLost),
        _ => {
            let details = error.details();
            if details.contains("equal or smaller than the target stream top item") {
                Class::Duplicate
            } else if RETRYABLE_REPLIES
                .iter()
                .any(|code| details.starts_with(code))
            {
                Class::Retry(DegradedReason::ServerError)
            } else if details.contains("onnection") || details.contains("isconnected") {
                // The client's own "Connection closed" / "Disconnected"
                // messages, whatever kind they carry.
                Class::Retry(DegradedReason::ConnectionLost)
            } else {
                Class::Refused
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_urls_are_refused_rather_than_downgraded() {
        let Err(StorageError::InvalidUrl { url, .. }) = client_config("rediss://u:secret@h:6380")
        else {
            panic!("rediss:// accepted");
        };
        assert_eq!(url, "rediss://u:***@h:6380");
        assert!(client_config("redis://127.0.0.1:6379/2").is_ok());
    }

    #[test]
    fn cluster_urls_list_their_seed_nodes() {
        assert_eq!(
            crate::layout::client_url("redis-cluster://a:1,b:2,c:3"),
            "redis-cluster://a:1?node=b:2&node=c:3"
        );
        assert_eq!(
            crate::layout::client_url("redis-cluster://u:p@a:1,b:2"),
            "redis-cluster://u:p@a:1?node=b:2"
        );
        assert_eq!(
            crate::layout::client_url("redis-cluster://a:1"),
            "redis-cluster://a:1"
        );
        assert_eq!(crate::layout::client_url("redis://a:1"), "redis://a:1");
        let config =
            client_config("redis-cluster://127.0.0.1:7000,127.0.0.1:7001").expect("parses");
        assert!(config.server.is_clustered());
    }

    #[test]
    fn persistence_replies_are_read() {
        assert!(aof_enabled(
            "# Persistence\r\nloading:0\r\naof_enabled:1\r\n"
        ));
        assert!(!aof_enabled("# Persistence\r\naof_enabled:0\r\n"));
        assert!(!aof_enabled(""));
        let reply = |save: &str| Value::Array(vec![Value::from("save"), Value::from(save)]);
        assert_eq!(save_points(reply("")).as_deref(), Some(""));
        assert_eq!(
            save_points(reply("3600 1 300 100")).as_deref(),
            Some("3600 1 300 100")
        );
        assert_eq!(save_points(Value::Null), None);
    }

    #[test]
    fn errors_are_sorted() {
        let server = |text: &'static str| Error::new(ErrorKind::Unknown, text);
        assert_eq!(
            classify(&server(
                "ERR The ID specified in XADD is equal or smaller than the target stream top item"
            )),
            Class::Duplicate
        );
        assert_eq!(
            classify(&server(
                "OOM command not allowed when used memory > 'maxmemory'."
            )),
            Class::Retry(DegradedReason::ServerError)
        );
        assert_eq!(
            classify(&Error::new(
                ErrorKind::InvalidArgument,
                "WRONGTYPE Operation against a key holding the wrong kind of value"
            )),
            Class::Refused
        );
        assert_eq!(
            classify(&Error::new(ErrorKind::IO, "Connection reset by peer")),
            Class::Retry(DegradedReason::ConnectionLost)
        );
        assert_eq!(
            classify(&Error::new(ErrorKind::Timeout, "Request timed out.")),
            Class::Retry(DegradedReason::Timeout)
        );
    }
}
