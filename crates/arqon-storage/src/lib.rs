//! Channel history for ArqonBus (SPEC §7, `history` in §5, acks in §4.3,
//! the shutdown flush in §11): an in-memory ring buffer per channel, or one
//! Redis Stream per channel with a bounded outage buffer in front of it.
//! [`layout`] names every Redis key, field and Pub/Sub channel, for
//! history here and for cluster mode (`arqon-cluster`) alike.
//!
//! # Dependencies
//!
//! May depend on `arqon-protocol` (identifiers, timestamps), `arqon-config`
//! (its [`StorageConfig`] section) and `arqon-telemetry` (metric helpers).
//! It owns `fred`, the Redis client, for history (`arqon-cluster` owns its
//! own fred clients for Pub/Sub); no fred type appears in its API. Routing does not depend on it: the router calls
//! [`Storage::record`] through its `on_sequenced` hook.
//!
//! # Key types
//!
//! - [`Storage`]: the handle, cheap to clone. [`Storage::open`] picks the
//!   backend from the configuration.
//! - [`Entry`]: one sequenced channel message; [`Stored`] says what
//!   [`Storage::record`] did with it, and a [`StoreTicket`] resolves once a
//!   Redis write is durable.
//! - [`HistoryQuery`]: a `history` request; [`StorageStatus`],
//!   [`StorageEvent`], [`FlushReport`], [`RestoredChannel`].
//! - [`StorageError`]: why an operation failed.
//!
//! # Invariants
//!
//! - [`Storage::record`] never blocks and never awaits: it is called under
//!   the channel lock, in `seq` order. With Redis it appends to a bounded
//!   buffer (`ARQONBUS_STORAGE_BUFFER_MESSAGES`) and wakes one writer task;
//!   a full buffer drops the entry from history, counted and logged.
//! - The writer sends the buffer to Redis in batches, one pipeline per
//!   batch, in buffer order, so each channel's entries land in `seq` order.
//!   An entry leaves the buffer only once Redis confirmed it; a failed batch
//!   is retried whole, and retries never duplicate (stream ids are
//!   `<seq>-0`).
//! - Redis down: storage is *degraded* ([`StorageStatus::degraded`],
//!   [`StorageEvent::Degraded`]); records are buffered and acked
//!   `stored:false`; reconnection backs off exponentially up to 5 s; once
//!   back, the buffer is written in order before anything newer. In strict
//!   mode [`Storage::open`] fails without Redis and [`Storage::is_available`]
//!   turns false during an outage.
//! - A ticket resolves `true` only after its entry is in its stream.
//! - History is read from Redis and merged with what is still buffered, so a
//!   reader sees every delivered message that was not dropped.
//! - Memory history is bounded per channel in messages and bytes, and in
//!   total bytes, evicting from the least recently written channel
//!   ([`StorageStatus::memory_bytes`], SPEC §18); `memory.rs` documents
//!   its lock discipline (never two locks at once).
//! - Redis history that vanished behind the server's back (a restart
//!   without persistence, expired keys) is never papered over under the
//!   same epoch: its writes stop and [`StorageEvent::HistoryLost`] asks for
//!   a new epoch, whose first entry (`seq` 1) replaces the old stream.
//! - No lock is held across an `.await`; all locks here are short.
//!
//! `docs/storage.md` describes the Redis layout, the epoch reset rule,
//! retention and how to inspect a channel with `redis-cli`.

mod error;
pub mod layout;
mod memory;
mod query;
mod redis;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
mod types;

use std::sync::Arc;
use std::time::Duration;

pub use arqon_config::{StorageBackend, StorageConfig, StorageMode};
use arqon_protocol::ChannelKey;
use bytes::Bytes;
use tokio::sync::broadcast;

pub use error::{BackendError, StorageError};
pub use redis::RedisTuning;
pub use types::{
    DegradedReason, Entry, FlushReport, HistoryQuery, Persistence, RestoredChannel, StorageEvent,
    StorageStatus, StoreTicket, Stored,
};

use memory::{Limits, MemoryStore};
use redis::RedisStore;

/// Channel history: memory rings or Redis Streams. Cheap to clone; every
/// clone is the same store. [`Storage::close`], or dropping the last clone,
/// stops the Redis writer (call [`Storage::flush`] first to keep pending
/// writes).
#[derive(Debug, Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    mode: StorageMode,
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl Storage {
    /// Opens the configured backend.
    ///
    /// Memory is ready at once. Redis connects, waiting at most
    /// `redis_connect_timeout` (timeouts from `config`, the rest of
    /// [`RedisTuning`] at its defaults). If Redis is unreachable: in strict mode this fails with
    /// [`StorageError::Unavailable`]; in degraded mode it succeeds, starts
    /// degraded, and reconnects in the background. An unusable URL is
    /// [`StorageError::InvalidUrl`] in both modes.
    ///
    /// Must be called within a tokio runtime (the Redis writer is spawned).
    pub async fn open(config: &StorageConfig) -> Result<Storage, StorageError> {
        Self::open_tuned(config, RedisTuning::of(config)).await
    }

    /// [`Storage::open`] with other Redis timeouts, backoff and batch size
    /// than the configuration's (`tuning` replaces them).
    pub async fn open_tuned(
        config: &StorageConfig,
        tuning: RedisTuning,
    ) -> Result<Storage, StorageError> {
        let backend = match config.backend {
            StorageBackend::Memory => Backend::Memory(MemoryStore::new(Limits::of(config))),
            StorageBackend::Redis => Backend::Redis(RedisStore::open(config, tuning).await?),
        };
        Ok(Storage {
            inner: Arc::new(Inner {
                mode: config.mode,
                backend,
            }),
        })
    }

    /// Memory storage of `history_size` messages per channel, with the
    /// default byte bounds, without a configuration (tests, embedders).
    pub fn in_memory(history_size: usize) -> Storage {
        Self::in_memory_with(&StorageConfig {
            history_size,
            ..StorageConfig::default()
        })
    }

    /// Memory storage bounded as `config` says (`history_size`,
    /// `history_max_bytes`, `history_memory_bytes`), whatever its
    /// `backend`; synchronous, unlike [`Storage::open`].
    pub fn in_memory_with(config: &StorageConfig) -> Storage {
        Storage {
            inner: Arc::new(Inner {
                mode: config.mode,
                backend: Backend::Memory(MemoryStore::new(Limits::of(config))),
            }),
        }
    }

    /// The configured backend.
    pub fn backend(&self) -> StorageBackend {
        match self.inner.backend {
            Backend::Memory(_) => StorageBackend::Memory,
            Backend::Redis(_) => StorageBackend::Redis,
        }
    }

    /// Channels that have history in Redis (every `arqonbus:{*}:meta` hash),
    /// to recreate at startup so that `seq` continues and `epoch` is
    /// unchanged across a restart. Empty for memory storage, while degraded,
    /// or if Redis fails while listing (logged).
    pub async fn restore(&self) -> Vec<RestoredChannel> {
        match &self.inner.backend {
            Backend::Memory(_) => Vec::new(),
            Backend::Redis(redis) => redis.restore().await,
        }
    }

    /// Records one sequenced message. Called by the router under the channel
    /// lock, in `seq` order per channel: never blocks, never awaits.
    /// `want_ticket`: the publisher asked for an ack, so a healthy Redis
    /// backend returns [`Stored::Pending`].
    pub fn record(&self, entry: Entry, want_ticket: bool) -> Stored {
        match &self.inner.backend {
            Backend::Memory(memory) => {
                memory.record(entry);
                arqon_telemetry::metrics::storage_write(
                    arqon_telemetry::metrics::StorageWriteResult::Ok,
                );
                arqon_telemetry::metrics::set_history_memory_bytes(memory.bytes());
                Stored::Durable
            }
            Backend::Redis(redis) => redis.record(entry, want_ticket),
        }
    }

    /// Forgets a channel's history (the channel was deleted). Ordered after
    /// the channel's earlier records: they are written first, then deleted.
    pub fn delete(&self, key: &ChannelKey) {
        match &self.inner.backend {
            Backend::Memory(memory) => {
                memory.delete(key);
                arqon_telemetry::metrics::set_history_memory_bytes(memory.bytes());
            }
            Backend::Redis(redis) => redis.delete(key),
        }
    }

    /// The channel's history (envelope JSON, oldest first) per `query`
    /// (SPEC §5). With Redis, entries still buffered are included. If Redis
    /// fails, the buffered entries alone are returned (and a line is
    /// logged); [`StorageError::Unavailable`] only when nothing at all is
    /// buffered for the channel.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn history(
        &self,
        key: &ChannelKey,
        query: &HistoryQuery,
    ) -> Result<Vec<Bytes>, StorageError> {
        match &self.inner.backend {
            Backend::Memory(memory) => Ok(memory.history(key, query)),
            Backend::Redis(redis) => redis.history(key, query).await,
        }
    }

    /// Messages stored for the channel (`messages_stored` of
    /// `channel_info`): the ring's length, or the stream's length plus what
    /// is still buffered. Best effort: while Redis is down, the buffered
    /// count only.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn count(&self, key: &ChannelKey) -> u64 {
        match &self.inner.backend {
            Backend::Memory(memory) => memory.count(key),
            Backend::Redis(redis) => redis.count(key).await,
        }
    }

    /// Health and counters, from atomics: never blocks.
    pub fn status(&self) -> StorageStatus {
        match &self.inner.backend {
            Backend::Memory(memory) => StorageStatus {
                backend: StorageBackend::Memory.as_str(),
                mode: self.inner.mode,
                degraded: false,
                buffered: 0,
                buffer_capacity: 0,
                overflowed: 0,
                written: 0,
                failed: 0,
                memory_bytes: memory.bytes(),
                persistence: Some(Persistence::None),
            },
            Backend::Redis(redis) => redis.status(),
        }
    }

    /// `false` while Redis is unreachable. In strict mode the bus answers
    /// publishes with `STORAGE_UNAVAILABLE` meanwhile (SPEC §7).
    pub fn is_available(&self) -> bool {
        match &self.inner.backend {
            Backend::Memory(_) => true,
            Backend::Redis(redis) => redis.is_available(),
        }
    }

    /// Health changes from now on. A receiver that lags misses events (see
    /// [`broadcast`]); [`Storage::status`] is always current.
    pub fn events(&self) -> broadcast::Receiver<StorageEvent> {
        match &self.inner.backend {
            // Memory storage never changes health: a sender nobody keeps.
            Backend::Memory(_) => broadcast::channel(1).1,
            Backend::Redis(redis) => redis.events(),
        }
    }

    /// Graceful shutdown: writes every pending entry to Redis, waiting at
    /// most `deadline` (retrying the connection meanwhile if it is down).
    /// Storage stays usable afterwards.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the writer goes on in the background.
    pub async fn flush(&self, deadline: Duration) -> FlushReport {
        match &self.inner.backend {
            Backend::Memory(_) => FlushReport::nothing_to_do(),
            Backend::Redis(redis) => redis.flush(deadline).await,
        }
    }

    /// The end of a graceful shutdown, after [`Storage::flush`]: stops the
    /// Redis writer and waits for its tasks, closing its connection (which
    /// waits at most one second for Redis to answer). Entries recorded
    /// afterwards stay in memory and are not written. Memory storage has
    /// nothing to close.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the writer is stopped by the first poll; the tasks end
    /// on their own.
    pub async fn close(&self) {
        match &self.inner.backend {
            Backend::Memory(_) => {}
            Backend::Redis(redis) => redis.close().await,
        }
    }
}
