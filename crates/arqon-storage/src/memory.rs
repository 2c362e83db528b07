//! The memory backend: one ring buffer of `history_size` entries per
//! channel.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use arqon_protocol::ChannelKey;
use bytes::Bytes;

use crate::query::{self, Item, millis};
use crate::sync::{lock, read, write};
use crate::types::{Entry, HistoryQuery};

/// Ring buffers by channel. The map lock is held only to find or insert a
/// ring; each ring has its own lock, so channels do not contend.
#[derive(Debug)]
pub(crate) struct MemoryStore {
    capacity: usize,
    rings: RwLock<HashMap<ChannelKey, Arc<Mutex<Ring>>>>,
}

#[derive(Debug)]
struct Ring {
    epoch: Arc<str>,
    items: VecDeque<Item>,
}

impl MemoryStore {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            rings: RwLock::new(HashMap::new()),
        }
    }

    fn ring(&self, key: &ChannelKey) -> Option<Arc<Mutex<Ring>>> {
        read(&self.rings).get(key).cloned()
    }

    /// Appends `entry` to its channel's ring, evicting the oldest entry when
    /// full. A new epoch empties the ring first (the history restarted); an
    /// entry whose `seq` does not follow the last one replaces what it
    /// overlaps, so the ring stays sorted.
    pub(crate) fn record(&self, entry: Entry) {
        let ring = match self.ring(&entry.key) {
            Some(ring) => ring,
            None => write(&self.rings)
                .entry(entry.key.clone())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(Ring {
                        epoch: entry.epoch.clone(),
                        items: VecDeque::with_capacity(self.capacity.min(64)),
                    }))
                })
                .clone(),
        };
        let mut ring = lock(&ring);
        if ring.epoch != entry.epoch {
            ring.epoch = entry.epoch.clone();
            ring.items.clear();
        }
        while ring.items.back().is_some_and(|last| last.seq >= entry.seq) {
            ring.items.pop_back();
        }
        if ring.items.len() >= self.capacity {
            ring.items.pop_front();
        }
        ring.items.push_back(Item {
            seq: entry.seq,
            at_ms: millis(entry.at),
            frame: entry.frame,
        });
    }

    pub(crate) fn delete(&self, key: &ChannelKey) {
        write(&self.rings).remove(key);
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

    fn frames(store: &MemoryStore, key: &ChannelKey, query: &HistoryQuery) -> Vec<String> {
        store
            .history(key, query)
            .into_iter()
            .map(|b| String::from_utf8(b.to_vec()).expect("utf8"))
            .collect()
    }

    #[test]
    fn ring_keeps_the_newest_capacity_entries() {
        let store = MemoryStore::new(3);
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
        let store = MemoryStore::new(10);
        let key = ChannelKey::new("r", "c").expect("valid");
        for seq in 1..=4 {
            store.record(entry(&key, "a", seq));
        }
        store.record(entry(&key, "b", 1));
        assert_eq!(frames(&store, &key, &HistoryQuery::newest(10)), ["b/1"]);
    }

    #[test]
    fn channels_are_separate_and_delete_forgets() {
        let store = MemoryStore::new(10);
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
        let store = MemoryStore::new(10);
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
