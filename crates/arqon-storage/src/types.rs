//! The values that cross the storage API: what is recorded, what a record
//! returns, history queries, status, events and flush reports.

use std::sync::Arc;
use std::time::Duration;

use arqon_config::{StorageBackend, StorageMode};
use arqon_protocol::{ChannelKey, Timestamp};
use bytes::Bytes;
use tokio::sync::oneshot;

/// One channel message to keep in history: the delivered envelope and the
/// fields storage indexes it by.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The channel.
    pub key: ChannelKey,
    /// Its `seq` in the channel (SPEC §7): 1, 2, 3… within one epoch.
    pub seq: u64,
    /// The channel's epoch when the message was sequenced.
    pub epoch: Arc<str>,
    /// The envelope's `timestamp`; `since`/`until` filter on it, at
    /// millisecond precision (the precision of the envelope).
    pub at: Timestamp,
    /// The delivered envelope JSON, exactly as sent to subscribers.
    pub frame: Bytes,
}

/// What [`Storage::record`](crate::Storage::record) did with an entry.
#[derive(Debug)]
#[must_use = "an ack must say whether the message was stored"]
pub enum Stored {
    /// Memory backend: the entry is in the ring.
    Durable,
    /// Redis backend, healthy, ticket asked for: resolves once the entry is
    /// in its stream (`true`), or `false` if Redis fails first.
    Pending(StoreTicket),
    /// Kept in the outage buffer to be written later (Redis is down, or no
    /// ticket was asked for). An ack says `stored: false`.
    Buffered,
    /// The outage buffer was full: the message was delivered but is not in
    /// history. Counted in [`StorageStatus::overflowed`] and logged.
    Dropped,
}

impl Stored {
    /// Whether the entry is durable: `true` for [`Stored::Durable`], the
    /// ticket's outcome for [`Stored::Pending`], `false` otherwise. This is
    /// the `stored` field of an ack (SPEC §4.3).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the ticket; the write goes on.
    pub async fn wait(self) -> bool {
        match self {
            Stored::Durable => true,
            Stored::Pending(ticket) => ticket.wait().await,
            Stored::Buffered | Stored::Dropped => false,
        }
    }
}

/// Resolves when a recorded entry is durable in Redis.
#[derive(Debug)]
pub struct StoreTicket {
    pub(crate) rx: oneshot::Receiver<bool>,
}

impl StoreTicket {
    /// `true` once the entry is in its Redis stream; `false` if Redis failed
    /// first (storage went degraded: the entry stays buffered and is written
    /// later, but the ack cannot wait for that) or storage was dropped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the ticket; the write goes on.
    pub async fn wait(self) -> bool {
        self.rx.await.unwrap_or(false)
    }
}

/// A `history` request (SPEC §5). Results are oldest first. `since` and
/// `until` are exclusive bounds on the message time. Without `after_seq`,
/// the newest `limit` matches; with it, the oldest `limit` messages whose
/// `seq` is greater than `after_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// At most this many messages (the caller validates it, ≤ 1000).
    pub limit: usize,
    /// Only messages strictly after this time.
    pub since: Option<Timestamp>,
    /// Only messages strictly before this time.
    pub until: Option<Timestamp>,
    /// Only messages with `seq` greater than this, oldest first.
    pub after_seq: Option<u64>,
}

impl HistoryQuery {
    /// The SPEC §5 default `limit`.
    pub const DEFAULT_LIMIT: usize = 50;
    /// The largest `limit` the SPEC allows.
    pub const MAX_LIMIT: usize = 1000;

    /// The newest `limit` messages, no filter.
    pub fn newest(limit: usize) -> Self {
        Self {
            limit,
            since: None,
            until: None,
            after_seq: None,
        }
    }

    /// The oldest `limit` messages after `seq`.
    pub fn after(seq: u64, limit: usize) -> Self {
        Self {
            after_seq: Some(seq),
            ..Self::newest(limit)
        }
    }
}

impl Default for HistoryQuery {
    /// The newest [`HistoryQuery::DEFAULT_LIMIT`] messages.
    fn default() -> Self {
        Self::newest(Self::DEFAULT_LIMIT)
    }
}

/// A channel whose history outlived the process (found in Redis at
/// startup): recreate it so that `seq` continues and `epoch` is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredChannel {
    /// The channel.
    pub key: ChannelKey,
    /// Its epoch, as stored in the meta hash.
    pub epoch: String,
    /// The last `seq` written.
    pub last_seq: u64,
}

/// A snapshot of storage health, read from atomics (never blocks).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StorageStatus {
    /// `"memory"` or `"redis"`.
    pub backend: &'static str,
    /// Degraded or strict.
    pub mode: StorageMode,
    /// Redis is unreachable: writes are buffered in memory (SPEC §7).
    pub degraded: bool,
    /// Entries waiting to be written to Redis.
    pub buffered: usize,
    /// Bound of the outage buffer (`ARQONBUS_STORAGE_BUFFER_MESSAGES`; 0 for
    /// memory storage, which has none).
    pub buffer_capacity: usize,
    /// Entries dropped because the outage buffer was full, since start.
    pub overflowed: u64,
    /// Entries written to Redis since start.
    pub written: u64,
    /// Entries Redis refused for good (e.g. a key of the wrong type), since
    /// start. Logged, never retried.
    pub failed: u64,
    /// Bytes of encoded envelopes held in memory for history: the memory
    /// rings (bounded by `ARQONBUS_HISTORY_MEMORY_BYTES`, SPEC §18), or for
    /// Redis the entries waiting in the outage buffer.
    pub memory_bytes: usize,
    /// Whether history survives a restart of its store (SPEC §18): for
    /// Redis what `INFO persistence` and `CONFIG GET save` said at the last
    /// connection; `None` while unknown (never connected, or `CONFIG`
    /// refused and AOF off). Memory history is [`Persistence::None`].
    pub persistence: Option<Persistence>,
}

/// How the history store keeps data across its own restart (SPEC §18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Persistence {
    /// Redis append-only file: at most the last fsync interval is lost.
    Aof,
    /// Redis RDB snapshots only: everything after the last snapshot is lost.
    Rdb,
    /// Nothing survives a restart.
    None,
}

impl Persistence {
    /// `aof`, `rdb` or `none`, as `status.storage.persistence` shows it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Persistence::Aof => "aof",
            Persistence::Rdb => "rdb",
            Persistence::None => "none",
        }
    }
}

/// A change of storage health, for telemetry (`storage_degraded`,
/// `storage_recovered`, SPEC §8) and `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageEvent {
    /// The backend became unreachable; writes are buffered.
    Degraded {
        /// The backend.
        backend: StorageBackend,
        /// Why, as a stable code.
        reason: DegradedReason,
    },
    /// The backend is reachable again; the buffer is being flushed in order.
    Recovered {
        /// The backend.
        backend: StorageBackend,
    },
    /// The channel's history vanished from Redis behind the server's back
    /// (its keys were gone, or behind what this process wrote, e.g. Redis
    /// restarted without persistence) while `epoch` was being written
    /// (SPEC §18). Entries of `epoch` are no longer written (they would
    /// leave a history with a hole under an unchanged epoch): the channel
    /// must start a new epoch at `seq` 1, whose first write replaces what
    /// is left of the old stream. Sent again for every batch that still
    /// carries entries of the lost epoch, so a lagging receiver still
    /// learns of it; act only if the channel is still in `epoch`.
    HistoryLost {
        /// The channel.
        key: ChannelKey,
        /// The epoch whose history was lost.
        epoch: Arc<str>,
    },
}

/// Why storage went degraded: a stable code, safe for telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DegradedReason {
    /// No connection could be made (at startup or on reconnect).
    Unreachable,
    /// The connection failed during a write.
    ConnectionLost,
    /// A write got no answer in time.
    Timeout,
    /// Redis answered writes with a retryable error (OOM, LOADING,
    /// READONLY…).
    ServerError,
}

impl DegradedReason {
    /// `unreachable`, `connection_lost`, `timeout` or `server_error`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DegradedReason::Unreachable => "unreachable",
            DegradedReason::ConnectionLost => "connection_lost",
            DegradedReason::Timeout => "timeout",
            DegradedReason::ServerError => "server_error",
        }
    }
}

/// What [`Storage::flush`](crate::Storage::flush) achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlushReport {
    /// Entries written to Redis while flushing.
    pub written: u64,
    /// Entries still not written when the flush returned; `0` means every
    /// recorded entry is durable.
    pub remaining: usize,
    /// Entries lost to buffer overflow since start (they were never going to
    /// be written).
    pub overflowed: u64,
    /// How long the flush took.
    pub elapsed: Duration,
}

impl FlushReport {
    /// Nothing is left to write.
    pub fn is_complete(&self) -> bool {
        self.remaining == 0
    }

    pub(crate) fn nothing_to_do() -> Self {
        Self {
            written: 0,
            remaining: 0,
            overflowed: 0,
            elapsed: Duration::ZERO,
        }
    }
}
