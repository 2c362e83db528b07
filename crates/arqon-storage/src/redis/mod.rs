//! The Redis Streams backend: a non-blocking `record` into a bounded
//! buffer, one writer task that pipelines the buffer into Redis, degraded
//! mode and reconnection, and reads that merge Redis with what is still
//! buffered.

pub(crate) mod conn;
mod read;
mod shared;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use arqon_config::{StorageBackend, StorageConfig, StorageMode};
use arqon_protocol::ChannelKey;
use arqon_telemetry::metrics::set_storage_degraded;
use bytes::Bytes;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{BackendError, StorageError};
use crate::query::{self, merge};
use crate::types::{
    DegradedReason, Entry, FlushReport, HistoryQuery, Persistence, RestoredChannel, StorageEvent,
    StorageStatus, Stored,
};
use shared::Shared;

/// Timeouts and sizes of the Redis backend. [`Storage::open`](crate::Storage::open)
/// uses [`RedisTuning::of`] its configuration: the connect and command
/// timeouts are configuration keys, the rest are these defaults; tests
/// shorten them all.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisTuning {
    /// Wait for a connection, at startup and on each reconnect (2 s).
    pub connect_timeout: Duration,
    /// Wait for any command or pipeline before the connection counts as
    /// broken (5 s).
    pub command_timeout: Duration,
    /// First reconnection delay (100 ms); doubles per failure…
    pub backoff_initial: Duration,
    /// …up to this (5 s, SPEC §7).
    pub backoff_max: Duration,
    /// Operations per pipeline (512).
    pub batch_size: usize,
    /// While idle, Redis is pinged this often, so an outage shows in
    /// `status()` before the next write (1 s).
    pub health_interval: Duration,
}

impl RedisTuning {
    /// The configured timeouts (`ARQONBUS_REDIS_CONNECT_TIMEOUT_MS`,
    /// `ARQONBUS_REDIS_COMMAND_TIMEOUT_MS`), the rest at its default.
    pub fn of(config: &StorageConfig) -> Self {
        Self {
            connect_timeout: config.redis_connect_timeout,
            command_timeout: config.redis_command_timeout,
            ..Self::default()
        }
    }
}

impl Default for RedisTuning {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            batch_size: 512,
            health_interval: Duration::from_secs(1),
        }
    }
}

/// What the writer needs from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) stream_maxlen: i64,
    /// `EXPIRE` seconds; `None` = `PERSIST`.
    pub(crate) ttl_secs: Option<i64>,
    pub(crate) tuning: RedisTuning,
}

/// Logs what Redis said of its persistence: a warning when it keeps
/// nothing across a restart (SPEC §18).
pub(crate) fn warn_about_persistence(persistence: Option<Persistence>) {
    match persistence {
        Some(Persistence::None) => tracing::warn!(
            backend = "redis",
            persistence = "none",
            "Redis runs without persistence (no AOF, no RDB snapshots): history is lost \
             if Redis restarts, and its channels then start a new epoch"
        ),
        Some(persistence) => tracing::info!(
            backend = "redis",
            persistence = persistence.as_str(),
            "Redis persistence"
        ),
        None => tracing::info!(
            backend = "redis",
            persistence = "unknown",
            "Redis persistence unknown (CONFIG GET save refused)"
        ),
    }
}

#[derive(Debug)]
pub(crate) struct RedisStore {
    shared: Arc<Shared>,
    /// Stops the writer when the last handle is dropped.
    cancel: CancellationToken,
    /// The writer and its connections' tasks, waited for by `close`.
    tasks: TaskTracker,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl RedisStore {
    pub(crate) async fn open(
        config: &StorageConfig,
        tuning: RedisTuning,
    ) -> Result<Self, StorageError> {
        let client_config = conn::client_config(&config.redis_url)?;
        let settings = Settings {
            stream_maxlen: i64::try_from(config.redis_stream_maxlen).unwrap_or(i64::MAX),
            ttl_secs: config
                .history_ttl
                .map(|ttl| i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX)),
            tuning: RedisTuning {
                batch_size: tuning.batch_size.max(1),
                ..tuning
            },
        };
        let shared = Arc::new(Shared::new(config.mode, config.buffer_messages));
        let tasks = TaskTracker::new();
        match conn::connect(&client_config, &settings.tuning, &tasks).await {
            Ok(link) => {
                let persistence = conn::persistence(&link.client).await;
                shared.set_persistence(persistence);
                warn_about_persistence(persistence);
                shared.replace_link(Some(link));
                set_storage_degraded(false);
            }
            Err(error) if config.mode == StorageMode::Strict => {
                return Err(StorageError::Unavailable {
                    backend: StorageBackend::Redis,
                    source: Some(BackendError(error)),
                });
            }
            Err(error) => {
                shared.set_degraded(DegradedReason::Unreachable);
                tracing::warn!(
                    backend = "redis",
                    reason = DegradedReason::Unreachable.as_str(),
                    %error,
                    "storage degraded: Redis unreachable at startup; the bus runs on, \
                     writes are buffered in memory and flushed when Redis is back"
                );
            }
        }
        let cancel = CancellationToken::new();
        let writer = writer::Writer::new(
            shared.clone(),
            settings,
            client_config,
            cancel.clone(),
            tasks.clone(),
        );
        tasks.spawn(writer.run());
        tasks.close();
        Ok(Self {
            shared,
            cancel,
            tasks,
        })
    }

    pub(crate) fn record(&self, entry: Entry, want_ticket: bool) -> Stored {
        self.shared.record(entry, want_ticket)
    }

    pub(crate) fn delete(&self, key: &ChannelKey) {
        self.shared.delete(key);
    }

    pub(crate) fn status(&self) -> StorageStatus {
        self.shared.status()
    }

    pub(crate) fn is_available(&self) -> bool {
        !self.shared.is_degraded()
    }

    pub(crate) fn events(&self) -> broadcast::Receiver<StorageEvent> {
        self.shared.events()
    }

    pub(crate) async fn restore(&self) -> Vec<RestoredChannel> {
        let Some(client) = self.connected_client() else {
            return Vec::new();
        };
        match read::restore(&client).await {
            Ok(channels) => {
                for channel in &channels {
                    self.shared.note_restored(&channel.key, &channel.epoch);
                }
                tracing::info!(
                    backend = "redis",
                    channels = channels.len(),
                    "restored channel history state"
                );
                channels
            }
            Err(error) => {
                tracing::warn!(
                    backend = "redis",
                    %error,
                    "cannot list channels in Redis; none restored (their history restarts with a new epoch)"
                );
                Vec::new()
            }
        }
    }

    fn connected_client(&self) -> Option<fred::prelude::Client> {
        self.shared.client()
    }

    pub(crate) async fn history(
        &self,
        key: &ChannelKey,
        query: &HistoryQuery,
    ) -> Result<Vec<Bytes>, StorageError> {
        let pending = self.shared.pending_view(key);
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let from_buffer = |pending: shared::PendingView,
                           source: Option<BackendError>|
         -> Result<Vec<Bytes>, StorageError> {
            if pending.any {
                Ok(query::select(pending.items.iter(), query))
            } else {
                Err(StorageError::Unavailable {
                    backend: StorageBackend::Redis,
                    source,
                })
            }
        };
        if pending.resets {
            return Ok(query::select(pending.items.iter(), query));
        }
        let Some(client) = self.connected_client() else {
            tracing::info!(
                backend = "redis",
                channel = %key,
                buffered = pending.items.len(),
                "history served from the outage buffer only: Redis is unreachable"
            );
            return from_buffer(pending, None);
        };
        match read::history(&client, key, query).await {
            Ok((epoch, stored)) => {
                let stale = match (&epoch, &pending.epoch) {
                    (Some(stored), Some(current)) => **stored != **current,
                    _ => false,
                };
                let stored = if stale { Vec::new() } else { stored };
                let items = merge(stored, pending.items);
                Ok(query::select(items.iter(), query))
            }
            Err(error) => {
                tracing::warn!(
                    backend = "redis",
                    channel = %key,
                    %error,
                    buffered = pending.items.len(),
                    "history read from Redis failed; serving the outage buffer only"
                );
                from_buffer(pending, Some(BackendError(error)))
            }
        }
    }

    pub(crate) async fn count(&self, key: &ChannelKey) -> u64 {
        let pending = self.shared.pending_view(key);
        let buffered = |after: u64| {
            u64::try_from(pending.items.iter().filter(|item| item.seq > after).count())
                .unwrap_or(u64::MAX)
        };
        if pending.resets {
            return buffered(0);
        }
        let Some(client) = self.connected_client() else {
            return buffered(0);
        };
        match read::count(&client, key).await {
            Ok((epoch, len, top)) => {
                let stale = match (&epoch, &pending.epoch) {
                    (Some(stored), Some(current)) => **stored != **current,
                    _ => false,
                };
                if stale {
                    buffered(0)
                } else {
                    len.saturating_add(buffered(top.unwrap_or(0)))
                }
            }
            Err(error) => {
                tracing::debug!(backend = "redis", channel = %key, %error, "XLEN failed");
                buffered(0)
            }
        }
    }

    /// Stops the writer and waits until it and its connections' tasks have
    /// ended (closing a connection waits at most one second for Redis).
    pub(crate) async fn close(&self) {
        self.cancel.cancel();
        self.tasks.wait().await;
    }

    pub(crate) async fn flush(&self, deadline: Duration) -> FlushReport {
        let started = Instant::now();
        let written_before = self.shared.written();
        let give_up = started + deadline;
        let mut progress = self.shared.progress();
        self.shared.wake.notify_one();
        loop {
            let remaining = self.shared.pending_ops();
            if remaining == 0 {
                break;
            }
            // Ask a degraded writer to retry now rather than after its
            // backoff; re-asked every tick while Redis stays away.
            self.shared.hurry.notify_one();
            let tick = Instant::now() + Duration::from_millis(250);
            match tokio::time::timeout_at(give_up.min(tick), progress.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_closed)) => break,
                Err(_elapsed) if Instant::now() >= give_up => break,
                Err(_elapsed) => {}
            }
        }
        let status = self.shared.status();
        let report = FlushReport {
            written: status.written.saturating_sub(written_before),
            remaining: status.buffered,
            overflowed: status.overflowed,
            elapsed: started.elapsed(),
        };
        if report.is_complete() {
            tracing::info!(
                backend = "redis",
                written = report.written,
                "storage flushed"
            );
        } else {
            tracing::warn!(
                backend = "redis",
                written = report.written,
                remaining = report.remaining,
                "storage flush incomplete: entries not written to Redis are lost at exit"
            );
        }
        report
    }
}
