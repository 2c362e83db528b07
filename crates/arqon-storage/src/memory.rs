//! The memory backend: one ring buffer per channel, bounded three ways:
//! `history_size` messages and `history_max_bytes` bytes of encoded
//! envelopes per channel, and `history_memory_bytes` bytes across all
//! channels (SPEC §7, §18).
//!
//! # Eviction
//!
//! A record appends to its channel's ring, then drops the ring's oldest
//! messages while it holds more than `history_size` messages or more than
//! `history_max_bytes` bytes. So a ring is always the newest contiguous run
//! of its channel's messages; a single message larger than
//! `history_max_bytes` empties the ring (nothing is kept, rather than a
//! history with a gap or over its bound). Then, while the total is over
//! `history_memory_bytes`, the oldest message of the channel *written least
//! recently* is dropped (the channel just written comes last). Channels are
//! kept in an LRU order of last write, a `BTreeMap` from a write tick to
//! the channel: O(log n) per record, never a scan.
//!
//! # Locks
//!
//! Three kinds: the map of rings (`rings`, an `RwLock`), each ring's
//! `Mutex`, and the LRU order (`lru`, a `Mutex`). **No code path holds two
//! of them at once**: each is taken, used and released before the next, so
//! no lock order can deadlock. The byte total is an atomic, changed under
//! the lock of the ring whose bytes change. A ring removed from the map (a
//! deleted channel) is marked `removed` under its lock, so a record racing
//! the delete retries with a fresh ring and its bytes are never lost from
//! the total.
//!
//! # Invariants
//!
//! - `total` equals the sum of `bytes` over rings in the map, each ring's
//!   `bytes` the sum of its frames' lengths (between two lock sections).
//! - After `record` returns, its channel is within both per-channel bounds,
//!   and the total is within `history_memory_bytes` (or every other ring is
//!   empty).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arqon_config::StorageConfig;
use arqon_protocol::ChannelKey;
use bytes::Bytes;

use crate::query::{self, Item, millis};
use crate::sync::{lock, read, write};
use crate::types::{Entry, HistoryQuery};

/// The three bounds of memory history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Messages per channel (`ARQONBUS_HISTORY_SIZE`).
    pub(crate) messages: usize,
    /// Bytes of frames per channel (`ARQONBUS_HISTORY_MAX_BYTES`).
    pub(crate) channel_bytes: usize,
    /// Bytes of frames in total (`ARQONBUS_HISTORY_MEMORY_BYTES`).
    pub(crate) total_bytes: usize,
}

impl Limits {
    pub(crate) fn of(config: &StorageConfig) -> Self {
        Self {
            messages: config.history_size,
            channel_bytes: config.history_max_bytes,
            total_bytes: config.history_memory_bytes,
        }
    }
}

/// Ring buffers by channel, and the LRU order of channels by last write.
#[derive(Debug)]
pub(crate) struct MemoryStore {
    limits: Limits,
    rings: RwLock<HashMap<ChannelKey, Arc<Mutex<Ring>>>>,
    /// Bytes of frames held by every ring in `rings`.
    total: AtomicUsize,
    lru: Mutex<Lru>,
}

#[derive(Debug)]
struct Ring {
    epoch: Arc<str>,
    items: VecDeque<Item>,
    /// Sum of `items`' frame lengths.
    bytes: usize,
    /// The ring left the map (its channel was deleted): do not write to it.
    removed: bool,
}

impl Ring {
    /// Drops the oldest item; returns its size.
    fn pop_oldest(&mut self) -> Option<usize> {
        let item = self.items.pop_front()?;
        self.bytes -= item.frame.len();
        Some(item.frame.len())
    }

    fn pop_newest(&mut self) -> Option<usize> {
        let item = self.items.pop_back()?;
        self.bytes -= item.frame.len();
        Some(item.frame.len())
    }
}

/// Channels ordered by their last write: `by_tick` is the order (oldest
/// tick first), `ticks` finds a channel's entry in it.
#[derive(Debug, Default)]
struct Lru {
    next: u64,
    by_tick: BTreeMap<u64, ChannelKey>,
    ticks: HashMap<ChannelKey, u64>,
}

impl Lru {
    /// Moves `key` to the most recent end.
    fn touch(&mut self, key: &ChannelKey) {
        if self
            .ticks
            .get(key)
            .is_some_and(|tick| tick + 1 == self.next)
        {
            return; // already the most recent: a busy channel costs no tree update
        }
        let tick = self.next;
        self.next += 1;
        match self.ticks.get_mut(key) {
            Some(old) => {
                let key = self
                    .by_tick
                    .remove(old)
                    .expect("`ticks` and `by_tick` hold the same channels");
                *old = tick;
                self.by_tick.insert(tick, key);
            }
            None => {
                self.ticks.insert(key.clone(), tick);
                self.by_tick.insert(tick, key.clone());
            }
        }
    }

    fn remove(&mut self, key: &ChannelKey) {
        if let Some(tick) = self.ticks.remove(key) {
            self.by_tick.remove(&tick);
        }
    }

    /// The channel written least recently, if any.
    fn oldest(&self) -> Option<ChannelKey> {
        self.by_tick.values().next().cloned()
    }
}

impl MemoryStore {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits: Limits {
                messages: limits.messages.max(1),
                channel_bytes: limits.channel_bytes.max(1),
                total_bytes: limits.total_bytes.max(1),
            },
            rings: RwLock::new(HashMap::new()),
            total: AtomicUsize::new(0),
            lru: Mutex::new(Lru::default()),
        }
    }

    fn ring(&self, key: &ChannelKey) -> Option<Arc<Mutex<Ring>>> {
        read(&self.rings).get(key).cloned()
    }

    fn ring_or_insert(&self, key: &ChannelKey, epoch: &Arc<str>) -> Arc<Mutex<Ring>> {
        if let Some(ring) = self.ring(key) {
            return ring;
        }
        write(&self.rings)
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Ring {
                    epoch: epoch.clone(),
                    items: VecDeque::with_capacity(self.limits.messages.min(64)),
                    bytes: 0,
                    removed: false,
                }))
            })
            .clone()
    }

    /// Bytes of frames held, over every channel.
    pub(crate) fn bytes(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    fn added(&self, bytes: usize) {
        self.total.fetch_add(bytes, Ordering::Relaxed);
    }

    fn freed(&self, bytes: usize) {
        if bytes > 0 {
            self.total.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Appends `entry` to its channel's ring and applies the bounds (see the
    /// module docs). A new epoch empties the ring first (the history
    /// restarted); an entry whose `seq` does not follow the last one
    /// replaces what it overlaps, so the ring stays sorted.
    pub(crate) fn record(&self, entry: Entry) {
        let key = entry.key.clone();
        let mut item = Some(Item {
            seq: entry.seq,
            at_ms: millis(entry.at),
            frame: entry.frame,
        });
        while let Some(next) = item.take() {
            let ring = self.ring_or_insert(&key, &entry.epoch);
            let mut ring = lock(&ring);
            if ring.removed {
                // Deleted since we found it: take the new ring.
                item = Some(next);
                continue;
            }
            let before = ring.bytes;
            if ring.epoch != entry.epoch {
                ring.epoch = entry.epoch.clone();
                ring.items.clear();
                ring.bytes = 0;
            }
            while ring.items.back().is_some_and(|last| last.seq >= next.seq) {
                ring.pop_newest();
            }
            ring.bytes += next.frame.len();
            ring.items.push_back(next);
            while ring.items.len() > self.limits.messages || ring.bytes > self.limits.channel_bytes
            {
                ring.pop_oldest();
            }
            let after = ring.bytes;
            // Under the ring lock, so a concurrent delete sees these bytes.
            if after >= before {
                self.added(after - before);
            } else {
                self.freed(before - after);
            }
        }
        lock(&self.lru).touch(&key);
        self.enforce_total();
    }

    /// Drops oldest messages of the least recently written channels while
    /// the total is over its bound. Takes one lock at a time.
    fn enforce_total(&self) {
        while self.bytes() > self.limits.total_bytes {
            let Some(key) = lock(&self.lru).oldest() else {
                return;
            };
            let freed = match self.ring(&key) {
                Some(ring) => {
                    let mut ring = lock(&ring);
                    let freed = if ring.removed {
                        None
                    } else {
                        ring.pop_oldest()
                    };
                    if let Some(bytes) = freed {
                        self.freed(bytes);
                    }
                    freed
                }
                None => None,
            };
            if freed.is_none() {
                // Empty or gone: it no longer holds memory to give back.
                let mut lru = lock(&self.lru);
                if lru.oldest().as_ref() == Some(&key) {
                    lru.remove(&key);
                }
            }
        }
    }

    pub(crate) fn delete(&self, key: &ChannelKey) {
        // The LRU first: a record racing this delete touches the LRU after
        // writing, so a ring it recreates is never left out of the order.
        lock(&self.lru).remove(key);
        let removed = write(&self.rings).remove(key);
        if let Some(ring) = removed {
            let mut ring = lock(&ring);
            ring.removed = true;
            let bytes = std::mem::take(&mut ring.bytes);
            ring.items.clear();
            self.freed(bytes);
        }
    }

    pub(crate) fn history(&self, key: &ChannelKey, query: &HistoryQuery) -> Vec<Bytes> {
        match self.ring(key) {
            Some(ring) => query::select(lock(&ring).items.iter(), query),
            None => Vec::new(),
        }
    }

    pub(crate) fn count(&self, key: &ChannelKey) -> u64 {
        self.ring(key).map_or(0, |ring| {
            u64::try_from(lock(&ring).items.len()).unwrap_or(u64::MAX)
        })
    }
}

#[cfg(test)]
mod tests {
    use arqon_protocol::now;

    use super::*;

    fn entry(key: &ChannelKey, epoch: &str, seq: u64) -> Entry {
        Entry {
            key: key.clone(),
            seq,
            epoch: Arc::from(epoch),
            at: now(),
            frame: Bytes::from(format!("{epoch}/{seq}")),
        }
    }

    fn messages(messages: usize) -> MemoryStore {
        MemoryStore::new(Limits {
            messages,
            channel_bytes: usize::MAX,
            total_bytes: usize::MAX,
        })
    }

    /// An entry whose frame is `size` bytes, starting `epoch/seq`.
    fn sized(key: &ChannelKey, seq: u64, size: usize) -> Entry {
        let mut frame = format!("e/{seq}").into_bytes();
        assert!(size >= frame.len());
        frame.resize(size, b'.');
        Entry {
            frame: Bytes::from(frame),
            ..entry(key, "e", seq)
        }
    }

    fn seqs(store: &MemoryStore, key: &ChannelKey) -> Vec<u64> {
        frames(store, key, &HistoryQuery::newest(1000))
            .iter()
            .map(|frame| {
                let seq = frame.trim_end_matches('.').rsplit('/').next().expect("seq");
                seq.parse().expect("number")
            })
            .collect()
    }

    #[test]
    fn a_channel_keeps_at_most_its_byte_bound() {
        let store = MemoryStore::new(Limits {
            messages: 1000,
            channel_bytes: 1000,
            total_bytes: usize::MAX,
        });
        let key = ChannelKey::new("r", "c").expect("valid");
        for seq in 1..=10 {
            store.record(sized(&key, seq, 300));
        }
        // 3 × 300 fit in 1000, a fourth would not.
        assert_eq!(seqs(&store, &key), [8, 9, 10]);
        assert_eq!(store.bytes(), 900);
        // A message of exactly the bound empties the rest.
        store.record(sized(&key, 11, 1000));
        assert_eq!(seqs(&store, &key), [11]);
        assert_eq!(store.bytes(), 1000);
        // One larger than the bound is not kept, nor anything before it:
        // history stays the newest contiguous run.
        store.record(sized(&key, 12, 1001));
        assert!(seqs(&store, &key).is_empty());
        assert_eq!(store.bytes(), 0);
        store.record(sized(&key, 13, 100));
        assert_eq!(seqs(&store, &key), [13]);
    }

    #[test]
    fn the_total_bound_evicts_from_the_least_recently_written_channel() {
        let store = MemoryStore::new(Limits {
            messages: 1000,
            channel_bytes: usize::MAX,
            total_bytes: 1000,
        });
        let a = ChannelKey::new("r", "a").expect("valid");
        let b = ChannelKey::new("r", "b").expect("valid");
        let c = ChannelKey::new("r", "c").expect("valid");
        store.record(sized(&a, 1, 200));
        store.record(sized(&a, 2, 200));
        store.record(sized(&b, 1, 200));
        store.record(sized(&b, 2, 200));
        store.record(sized(&a, 3, 200)); // a is now the most recent
        assert_eq!(store.bytes(), 1000);
        // Over the total: b (written least recently) loses its oldest.
        store.record(sized(&c, 1, 200));
        assert_eq!(seqs(&store, &b), [2]);
        assert_eq!(seqs(&store, &a), [1, 2, 3]);
        assert_eq!(seqs(&store, &c), [1]);
        assert_eq!(store.bytes(), 1000);
        // Again: b is emptied before a loses anything…
        store.record(sized(&c, 2, 200));
        assert!(seqs(&store, &b).is_empty());
        assert_eq!(seqs(&store, &a), [1, 2, 3]);
        // …then a, the least recently written channel that holds anything.
        store.record(sized(&c, 3, 200));
        assert_eq!(seqs(&store, &a), [2, 3]);
        assert_eq!(seqs(&store, &c), [1, 2, 3]);
        assert_eq!(store.bytes(), 1000);
        // A channel that outgrows the total alone keeps its newest.
        store.record(sized(&c, 4, 900));
        assert!(seqs(&store, &a).is_empty());
        assert_eq!(seqs(&store, &c), [4]);
        assert_eq!(store.bytes(), 900);
    }

    #[test]
    fn memory_bytes_go_down_on_delete_epoch_change_and_eviction() {
        let store = MemoryStore::new(Limits {
            messages: 2,
            channel_bytes: usize::MAX,
            total_bytes: usize::MAX,
        });
        let one = ChannelKey::new("r", "one").expect("valid");
        let two = ChannelKey::new("r", "two").expect("valid");
        store.record(sized(&one, 1, 100));
        store.record(sized(&one, 2, 100));
        store.record(sized(&two, 1, 50));
        assert_eq!(store.bytes(), 250);
        // The message bound evicts, and the bytes follow.
        store.record(sized(&one, 3, 10));
        assert_eq!(store.bytes(), 160);
        // A repeated seq replaces.
        store.record(sized(&one, 3, 30));
        assert_eq!(store.bytes(), 180);
        store.delete(&one);
        assert_eq!(store.bytes(), 50);
        store.delete(&one);
        assert_eq!(store.bytes(), 50);
        // A new epoch starts the ring over.
        store.record(entry(&two, "f", 1));
        assert_eq!(store.bytes(), 3);
        store.delete(&two);
        assert_eq!(store.bytes(), 0);
        // A deleted channel no longer takes part in total eviction.
        let lru = lock(&store.lru);
        assert!(lru.by_tick.is_empty() && lru.ticks.is_empty());
    }

    fn frames(store: &MemoryStore, key: &ChannelKey, query: &HistoryQuery) -> Vec<String> {
        store
            .history(key, query)
            .into_iter()
            .map(|b| String::from_utf8(b.to_vec()).expect("utf8"))
            .collect()
    }

    #[test]
    fn ring_keeps_the_newest_capacity_entries() {
        let store = messages(3);
        let key = ChannelKey::new("r", "c").expect("valid");
        for seq in 1..=5 {
            store.record(entry(&key, "e", seq));
        }
        assert_eq!(store.count(&key), 3);
        assert_eq!(
            frames(&store, &key, &HistoryQuery::newest(10)),
            ["e/3", "e/4", "e/5"]
        );
    }

    #[test]
    fn a_new_epoch_restarts_the_ring() {
        let store = messages(10);
        let key = ChannelKey::new("r", "c").expect("valid");
        for seq in 1..=4 {
            store.record(entry(&key, "a", seq));
        }
        store.record(entry(&key, "b", 1));
        assert_eq!(frames(&store, &key, &HistoryQuery::newest(10)), ["b/1"]);
    }

    #[test]
    fn channels_are_separate_and_delete_forgets() {
        let store = messages(10);
        let one = ChannelKey::new("r", "one").expect("valid");
        let two = ChannelKey::new("r", "two").expect("valid");
        store.record(entry(&one, "e", 1));
        store.record(entry(&two, "e", 1));
        store.record(entry(&two, "e", 2));
        assert_eq!(store.count(&one), 1);
        assert_eq!(store.count(&two), 2);
        store.delete(&two);
        assert_eq!(store.count(&two), 0);
        assert!(frames(&store, &two, &HistoryQuery::newest(10)).is_empty());
        assert_eq!(store.count(&one), 1);
    }

    #[test]
    fn a_repeated_seq_replaces_instead_of_duplicating() {
        let store = messages(10);
        let key = ChannelKey::new("r", "c").expect("valid");
        for seq in [1, 2, 3, 2] {
            store.record(entry(&key, "e", seq));
        }
        assert_eq!(
            frames(&store, &key, &HistoryQuery::newest(10)),
            ["e/1", "e/2"]
        );
    }
}
