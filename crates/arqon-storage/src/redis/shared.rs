//! State shared by the `Storage` handle and the writer task: the pending
//! buffer, health flags, counters, the current connection.
//!
//! The buffer is one FIFO of operations. `record` and `delete` append; only
//! the writer removes, from the front, and only after Redis confirmed the
//! operations. So an entry stays visible to `history` until it is durable,
//! and a retried batch is exactly the same operations in the same order.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arqon_config::{StorageBackend, StorageMode};
use arqon_protocol::ChannelKey;
use arqon_telemetry::metrics::{
    StorageWriteResult, set_history_memory_bytes, set_storage_degraded, storage_write,
    storage_writes,
};
use fred::prelude::Client;

use crate::redis::conn::Link;
use tokio::sync::{Notify, broadcast, oneshot, watch};
use tokio::time::Instant;

use crate::query::{Item, millis};
use crate::sync::{lock, read, write};
use crate::types::{
    DegradedReason, Entry, Persistence, StorageEvent, StorageStatus, StoreTicket, Stored,
};

/// How often, at most, a buffer overflow is logged.
const OVERFLOW_LOG_EVERY: Duration = Duration::from_secs(5);

/// One pending operation.
#[derive(Debug)]
pub(crate) enum Op {
    Write {
        entry: Entry,
        /// Resolved `true` once written, `false` if storage degrades first.
        ticket: Option<oneshot::Sender<bool>>,
    },
    /// Forget the channel's keys.
    Delete { key: ChannelKey },
}

/// A copy of an operation taken by the writer (the original stays queued
/// until it is confirmed).
#[derive(Debug, Clone)]
pub(crate) enum BatchOp {
    Write(Entry),
    Delete(ChannelKey),
}

impl BatchOp {
    pub(crate) fn key(&self) -> &ChannelKey {
        match self {
            BatchOp::Write(entry) => &entry.key,
            BatchOp::Delete(key) => key,
        }
    }

    /// The entry of a write.
    pub(crate) fn entry(&self) -> Option<&Entry> {
        match self {
            BatchOp::Write(entry) => Some(entry),
            BatchOp::Delete(_) => None,
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    ops: VecDeque<Op>,
    /// `Write` operations in `ops`, the number the bound applies to.
    writes: usize,
    /// Bytes of the frames of those writes.
    bytes: usize,
    /// Whether storage is degraded; the authoritative copy, changed only
    /// under this lock so that a ticket is never handed out after the
    /// sweep that fails the outstanding ones.
    degraded: bool,
    /// The current epoch of every channel recorded or restored, to tell
    /// stale Redis history from current history.
    epochs: HashMap<ChannelKey, Arc<str>>,
    last_overflow_log: Option<Instant>,
    dropped_since_log: u64,
}

/// What the buffer holds for one channel, for `history` and `count`.
#[derive(Debug, Default)]
pub(crate) struct PendingView {
    /// Entries of the channel's current history, oldest first.
    pub(crate) items: Vec<Item>,
    /// The buffer resets the channel (a delete, or entries of a new epoch):
    /// whatever Redis holds for it now is stale.
    pub(crate) resets: bool,
    /// The channel's current epoch, when known (recorded or restored).
    pub(crate) epoch: Option<Arc<str>>,
    /// The buffer holds anything at all for the channel.
    pub(crate) any: bool,
}

/// Outcome of one confirmed operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Written,
    /// Redis refused it for good; dropped.
    Failed,
    /// Its epoch's history was lost in Redis: not written, dropped
    /// (the channel starts a new epoch, see `StorageEvent::HistoryLost`).
    Lost,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) mode: StorageMode,
    pub(crate) capacity: usize,
    queue: Mutex<Queue>,
    /// Wakes the writer when the buffer stops being empty.
    pub(crate) wake: Notify,
    /// Asks the writer to try reconnecting now (flush on shutdown).
    pub(crate) hurry: Notify,
    degraded: AtomicBool,
    buffered: AtomicUsize,
    /// Mirror of `Queue::bytes`, for `status()`.
    buffered_bytes: AtomicUsize,
    /// What Redis said of its persistence at the last connection
    /// (see [`persistence_code`]).
    persistence: AtomicU8,
    overflowed: AtomicU64,
    written: AtomicU64,
    failed: AtomicU64,
    link: RwLock<Option<Link>>,
    events: broadcast::Sender<StorageEvent>,
    /// Bumped after every confirmed batch.
    progress: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn new(mode: StorageMode, capacity: usize) -> Self {
        Self {
            mode,
            capacity: capacity.max(1),
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            hurry: Notify::new(),
            degraded: AtomicBool::new(false),
            buffered: AtomicUsize::new(0),
            buffered_bytes: AtomicUsize::new(0),
            persistence: AtomicU8::new(persistence_code(None)),
            overflowed: AtomicU64::new(0),
            written: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            link: RwLock::new(None),
            events: broadcast::channel(64).0,
            progress: watch::channel(0).0,
        }
    }

    // ---- record / delete (never block, never await) -----------------------

    pub(crate) fn record(&self, entry: Entry, want_ticket: bool) -> Stored {
        let mut queue = lock(&self.queue);
        note_epoch(&mut queue.epochs, &entry.key, &entry.epoch);
        if queue.writes >= self.capacity {
            let report = queue.overflow();
            drop(queue);
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            storage_write(StorageWriteResult::Dropped);
            if let Some(dropped) = report {
                tracing::warn!(
                    backend = "redis",
                    dropped,
                    capacity = self.capacity,
                    "storage buffer full: messages are delivered but dropped from history \
                     (ARQONBUS_STORAGE_BUFFER_MESSAGES)"
                );
            }
            return Stored::Dropped;
        }
        let degraded = queue.degraded;
        let (ticket, stored) = if want_ticket && !degraded {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Stored::Pending(StoreTicket { rx }))
        } else {
            (None, Stored::Buffered)
        };
        let was_empty = queue.ops.is_empty();
        queue.bytes += entry.frame.len();
        queue.ops.push_back(Op::Write { entry, ticket });
        queue.writes += 1;
        self.buffered.store(queue.writes, Ordering::Relaxed);
        self.buffered_bytes.store(queue.bytes, Ordering::Relaxed);
        let bytes = queue.bytes;
        drop(queue);
        set_history_memory_bytes(bytes);
        if degraded {
            storage_write(StorageWriteResult::Buffered);
        }
        if was_empty {
            self.wake.notify_one();
        }
        stored
    }

    pub(crate) fn delete(&self, key: &ChannelKey) {
        let mut queue = lock(&self.queue);
        queue.epochs.remove(key);
        let was_empty = queue.ops.is_empty();
        queue.ops.push_back(Op::Delete { key: key.clone() });
        drop(queue);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Remembers the epochs of channels found in Redis at startup.
    pub(crate) fn note_restored(&self, key: &ChannelKey, epoch: &str) {
        let mut queue = lock(&self.queue);
        queue
            .epochs
            .entry(key.clone())
            .or_insert_with(|| Arc::from(epoch));
    }

    // ---- the writer's side -------------------------------------------------

    /// Copies of the first `max` operations (they stay queued).
    pub(crate) fn take_batch(&self, max: usize) -> Vec<BatchOp> {
        let queue = lock(&self.queue);
        queue
            .ops
            .iter()
            .take(max)
            .map(|op| match op {
                Op::Write { entry, .. } => BatchOp::Write(entry.clone()),
                Op::Delete { key } => BatchOp::Delete(key.clone()),
            })
            .collect()
    }

    /// Removes the first `outcomes.len()` operations, which Redis confirmed,
    /// and resolves their tickets.
    pub(crate) fn complete(&self, outcomes: &[Outcome]) {
        let mut written = 0u64;
        let mut failed = 0u64;
        let mut lost = 0u64;
        let mut tickets = Vec::new();
        let bytes = {
            let mut queue = lock(&self.queue);
            for outcome in outcomes {
                match queue.ops.pop_front() {
                    Some(Op::Write { ticket, entry }) => {
                        queue.writes = queue.writes.saturating_sub(1);
                        queue.bytes = queue.bytes.saturating_sub(entry.frame.len());
                        match outcome {
                            Outcome::Written => written += 1,
                            Outcome::Failed => failed += 1,
                            Outcome::Lost => lost += 1,
                        }
                        tickets.extend(ticket.map(|t| (t, *outcome == Outcome::Written)));
                    }
                    Some(Op::Delete { .. }) | None => {}
                }
            }
            self.buffered.store(queue.writes, Ordering::Relaxed);
            self.buffered_bytes.store(queue.bytes, Ordering::Relaxed);
            queue.bytes
        };
        set_history_memory_bytes(bytes);
        // Counters first: whoever a ticket wakes sees them up to date.
        self.written.fetch_add(written, Ordering::Relaxed);
        self.failed.fetch_add(failed, Ordering::Relaxed);
        if written > 0 {
            storage_writes(StorageWriteResult::Ok, written);
        }
        if failed > 0 {
            storage_writes(StorageWriteResult::Error, failed);
        }
        if lost > 0 {
            storage_writes(StorageWriteResult::Dropped, lost);
        }
        for (ticket, durable) in tickets {
            let _ = ticket.send(durable);
        }
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Enters degraded mode: outstanding tickets resolve `false` (their
    /// entries stay buffered), an event is broadcast. Returns whether this
    /// call changed the state.
    pub(crate) fn set_degraded(&self, reason: DegradedReason) -> bool {
        let tickets: Vec<oneshot::Sender<bool>> = {
            let mut queue = lock(&self.queue);
            if queue.degraded {
                return false;
            }
            queue.degraded = true;
            self.degraded.store(true, Ordering::Relaxed);
            queue
                .ops
                .iter_mut()
                .filter_map(|op| match op {
                    Op::Write { ticket, .. } => ticket.take(),
                    Op::Delete { .. } => None,
                })
                .collect()
        };
        for ticket in tickets {
            let _ = ticket.send(false);
        }
        set_storage_degraded(true);
        let _ = self.events.send(StorageEvent::Degraded {
            backend: StorageBackend::Redis,
            reason,
        });
        true
    }

    /// Tells whoever listens that `key`'s history in `epoch` was lost in
    /// Redis, so that the channel starts a new epoch.
    pub(crate) fn history_lost(&self, key: &ChannelKey, epoch: &Arc<str>) {
        let _ = self.events.send(StorageEvent::HistoryLost {
            key: key.clone(),
            epoch: epoch.clone(),
        });
    }

    /// Records what Redis said of its persistence; returns the previous
    /// value.
    pub(crate) fn set_persistence(&self, persistence: Option<Persistence>) -> Option<Persistence> {
        let previous = self
            .persistence
            .swap(persistence_code(persistence), Ordering::Relaxed);
        persistence_of(previous)
    }

    /// Leaves degraded mode.
    pub(crate) fn set_recovered(&self) {
        {
            let mut queue = lock(&self.queue);
            if !queue.degraded {
                return;
            }
            queue.degraded = false;
            self.degraded.store(false, Ordering::Relaxed);
        }
        set_storage_degraded(false);
        let _ = self.events.send(StorageEvent::Recovered {
            backend: StorageBackend::Redis,
        });
    }

    // ---- connection --------------------------------------------------------

    /// The current connection, unless it is known to be broken.
    pub(crate) fn link(&self) -> Option<Link> {
        read(&self.link).clone().filter(|link| !link.is_lost())
    }

    /// The current client, if Redis is reachable as far as storage knows.
    pub(crate) fn client(&self) -> Option<Client> {
        if self.is_degraded() {
            return None;
        }
        self.link().map(|link| link.client)
    }

    /// Installs a new connection; returns the previous one, to be closed.
    pub(crate) fn replace_link(&self, link: Option<Link>) -> Option<Link> {
        std::mem::replace(&mut *write(&self.link), link)
    }

    // ---- readers -----------------------------------------------------------

    pub(crate) fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    pub(crate) fn events(&self) -> broadcast::Receiver<StorageEvent> {
        self.events.subscribe()
    }

    pub(crate) fn progress(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// Operations still queued (writes and deletes).
    pub(crate) fn pending_ops(&self) -> usize {
        lock(&self.queue).ops.len()
    }

    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    pub(crate) fn status(&self) -> StorageStatus {
        StorageStatus {
            backend: StorageBackend::Redis.as_str(),
            mode: self.mode,
            degraded: self.is_degraded(),
            buffered: self.buffered.load(Ordering::Relaxed),
            buffer_capacity: self.capacity,
            overflowed: self.overflowed(),
            written: self.written(),
            failed: self.failed.load(Ordering::Relaxed),
            memory_bytes: self.buffered_bytes.load(Ordering::Relaxed),
            persistence: persistence_of(self.persistence.load(Ordering::Relaxed)),
        }
    }

    /// What the buffer holds for `key`: its current history (after the last
    /// delete or epoch change), oldest first.
    pub(crate) fn pending_view(&self, key: &ChannelKey) -> PendingView {
        let queue = lock(&self.queue);
        let mut view = PendingView {
            epoch: queue.epochs.get(key).cloned(),
            ..PendingView::default()
        };
        let mut items_epoch: Option<&Arc<str>> = None;
        for op in &queue.ops {
            match op {
                Op::Write { entry, .. } if entry.key == *key => {
                    view.any = true;
                    if items_epoch.is_some_and(|epoch| *epoch != entry.epoch) {
                        view.items.clear();
                        view.resets = true;
                    }
                    items_epoch = Some(&entry.epoch);
                    view.items.push(Item {
                        seq: entry.seq,
                        at_ms: millis(entry.at),
                        frame: entry.frame.clone(),
                    });
                }
                Op::Delete { key: deleted } if deleted == key => {
                    view.any = true;
                    view.items.clear();
                    view.resets = true;
                    items_epoch = None;
                }
                Op::Write { .. } | Op::Delete { .. } => {}
            }
        }
        if let (Some(pending), Some(current)) = (items_epoch, &view.epoch)
            && pending != current
        {
            // Only reachable if a record of a newer epoch races this read.
            view.resets = true;
        }
        drop(queue);
        // A buffer of one epoch and a sequence restart would be unsorted.
        view.items.sort_by_key(|item| item.seq);
        view.items.dedup_by_key(|item| item.seq);
        view
    }
}

impl Queue {
    /// Counts a dropped entry; returns how many to report when it is time to
    /// log again.
    fn overflow(&mut self) -> Option<u64> {
        self.dropped_since_log += 1;
        let now = Instant::now();
        let due = self
            .last_overflow_log
            .is_none_or(|last| now.duration_since(last) >= OVERFLOW_LOG_EVERY);
        if due {
            self.last_overflow_log = Some(now);
            Some(std::mem::take(&mut self.dropped_since_log))
        } else {
            None
        }
    }
}

const fn persistence_code(persistence: Option<Persistence>) -> u8 {
    match persistence {
        None => 0,
        Some(Persistence::Aof) => 1,
        Some(Persistence::Rdb) => 2,
        Some(Persistence::None) => 3,
    }
}

const fn persistence_of(code: u8) -> Option<Persistence> {
    match code {
        1 => Some(Persistence::Aof),
        2 => Some(Persistence::Rdb),
        3 => Some(Persistence::None),
        _ => None,
    }
}

fn note_epoch(epochs: &mut HashMap<ChannelKey, Arc<str>>, key: &ChannelKey, epoch: &Arc<str>) {
    match epochs.get_mut(key) {
        Some(current) if Arc::ptr_eq(current, epoch) || **current == **epoch => {}
        Some(current) => *current = epoch.clone(),
        None => {
            epochs.insert(key.clone(), epoch.clone());
        }
    }
}
