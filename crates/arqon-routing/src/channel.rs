//! One channel: its record, its members in join order, its `seq` counter.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arqon_protocol::{ChannelKey, ClientId, Timestamp, format_timestamp};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::client::Client;

/// A new random epoch: 16 hex digits.
pub(crate) fn fresh_epoch() -> Arc<str> {
    Arc::from(format!("{:016x}", rand::random::<u64>()))
}

/// `general` channels come and go; `system` channels exist from startup and
/// cannot be deleted (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    General,
    System,
}

impl ChannelKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ChannelKind::General => "general",
            ChannelKind::System => "system",
        }
    }
}

/// How a channel came to be.
#[derive(Debug, Clone, Default)]
pub struct ChannelSpec {
    pub created_by: Option<ClientId>,
    pub auto_created: bool,
    pub description: Option<String>,
    pub metadata: Map<String, Value>,
    /// History state to continue from (a channel restored from storage):
    /// its epoch, and the last `seq` assigned. `None` starts a new epoch
    /// at `seq` 0.
    pub restored: Option<(Arc<str>, u64)>,
    /// When the channel was first created, if that was elsewhere (another
    /// cluster node); `None` is now.
    pub created_at: Option<Timestamp>,
}

impl ChannelSpec {
    /// The spec of a channel described by its record (SPEC §5, as
    /// [`Channel::record`] writes it), such as another cluster node shared.
    /// Missing or mistyped fields take their defaults.
    pub fn from_record(record: &Value) -> Self {
        Self {
            created_by: record["created_by"]
                .as_str()
                .and_then(|id| ClientId::new(id).ok()),
            auto_created: record["auto_created"].as_bool().unwrap_or(false),
            description: record["description"].as_str().map(str::to_owned),
            metadata: record["metadata"].as_object().cloned().unwrap_or_default(),
            restored: None,
            created_at: record["created_at"]
                .as_str()
                .and_then(arqon_protocol::parse_timestamp),
        }
    }
}

/// Members in join order plus an index for O(1) membership and removal,
/// and the channel's sequence counter: both change under one lock so that
/// every member sees messages in `seq` order.
#[derive(Debug, Default)]
pub(crate) struct Members {
    pub(crate) list: Vec<Arc<Client>>,
    index: HashMap<ClientId, usize>,
    pub(crate) seq: u64,
    /// The epoch `seq` counts in. Changes in cluster mode, when Redis holds
    /// another epoch for the channel, and when storage lost the channel's
    /// history (`Router::restart_epoch`).
    pub(crate) epoch: Arc<str>,
    /// Set when the channel is deleted, under this lock.
    pub(crate) deleted: bool,
    /// Since when the channel has had no members; `None` while it has some
    /// (idle channels are reclaimed, SPEC §18).
    pub(crate) empty_since: Option<Instant>,
    /// Members that asked for presence events (SPEC §15).
    pub(crate) presence: HashSet<ClientId>,
    /// Per member, the `seq` its join reply covered (SPEC §14), until a
    /// later message reaches it: in a cluster a message sequenced before
    /// the join may still be on its way from Redis after the reply, and is
    /// not delivered again ([`Router::deliver_sequenced`]). Cleared when
    /// the epoch changes.
    ///
    /// [`Router::deliver_sequenced`]: crate::Router::deliver_sequenced
    pub(crate) covered: HashMap<ClientId, u64>,
}

impl Members {
    pub(crate) fn contains(&self, id: &ClientId) -> bool {
        self.index.contains_key(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn insert(&mut self, client: Arc<Client>) -> bool {
        if self.index.contains_key(client.id()) {
            return false;
        }
        self.index.insert(client.id().clone(), self.list.len());
        self.list.push(client);
        self.empty_since = None;
        true
    }

    pub(crate) fn remove(&mut self, id: &ClientId) -> Option<Arc<Client>> {
        let position = self.index.remove(id)?;
        let removed = self.list.swap_remove(position);
        if let Some(moved) = self.list.get(position) {
            self.index.insert(moved.id().clone(), position);
        }
        self.presence.remove(id);
        self.covered.remove(id);
        if self.list.is_empty() {
            self.empty_since = Some(Instant::now());
        }
        Some(removed)
    }

    pub(crate) fn drain(&mut self) -> Vec<Arc<Client>> {
        self.index.clear();
        self.presence.clear();
        self.empty_since = Some(Instant::now());
        std::mem::take(&mut self.list)
    }
}

/// A channel. Its record is immutable; members and `seq` sit behind one
/// short-lived lock that is never held across an `.await`.
#[derive(Debug)]
pub struct Channel {
    key: ChannelKey,
    kind: ChannelKind,
    spec: ChannelSpec,
    created_at: Timestamp,
    member_count: AtomicUsize,
    members: Mutex<Members>,
}

impl Channel {
    pub(crate) fn new(key: ChannelKey, kind: ChannelKind, mut spec: ChannelSpec) -> Self {
        let (epoch, last_seq) = spec.restored.take().unwrap_or_else(|| (fresh_epoch(), 0));
        Self {
            key,
            kind,
            created_at: spec.created_at.unwrap_or_else(arqon_protocol::now),
            spec,
            member_count: AtomicUsize::new(0),
            members: Mutex::new(Members {
                seq: last_seq,
                epoch,
                empty_since: Some(Instant::now()),
                ..Members::default()
            }),
        }
    }

    pub fn key(&self) -> &ChannelKey {
        &self.key
    }

    /// Whether a join created the channel (rather than `create_channel`
    /// or the system channel list).
    pub fn is_auto_created(&self) -> bool {
        self.spec.auto_created
    }

    pub fn kind(&self) -> ChannelKind {
        self.kind
    }

    /// Changes whenever this channel's history starts over (SPEC §7): each
    /// creation of the channel gets a new one. In a cluster it is the epoch
    /// Redis holds for the channel.
    pub fn epoch(&self) -> Arc<str> {
        self.members().epoch.clone()
    }

    /// The epoch a new history of this channel starts in when Redis has
    /// none for it (cluster mode, SPEC §7, §18): the current epoch while no
    /// `seq` was assigned in it, else a fresh one, so that history lost
    /// behind the server's back shows as a new epoch rather than `seq`
    /// going back to 1 under the old one.
    pub fn epoch_to_start(&self) -> Arc<str> {
        let members = self.members();
        if members.seq == 0 {
            members.epoch.clone()
        } else {
            fresh_epoch()
        }
    }

    /// The epoch and the last `seq` assigned, read together.
    pub fn sequence(&self) -> (Arc<str>, u64) {
        let members = self.members();
        (members.epoch.clone(), members.seq)
    }

    /// Current members, read without taking the members lock.
    pub fn member_count(&self) -> usize {
        self.member_count.load(Ordering::Relaxed)
    }

    /// The last `seq` assigned, 0 if none.
    pub fn last_seq(&self) -> u64 {
        self.members().seq
    }

    /// Up to `limit` members, in join order.
    pub fn members_snapshot(&self, limit: usize) -> Vec<Arc<Client>> {
        self.members().list.iter().take(limit).cloned().collect()
    }

    pub fn has_member(&self, id: &ClientId) -> bool {
        self.members().contains(id)
    }

    pub(crate) fn members(&self) -> MutexGuard<'_, Members> {
        // Critical sections are single inserts, removals or a fan-out of
        // non-blocking pushes; the data stays consistent after a panic.
        self.members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn sync_count(&self, members: &Members) {
        self.member_count.store(members.len(), Ordering::Relaxed);
    }

    /// The channel record of SPEC §5.
    pub fn record(&self) -> Value {
        json!({
            "room": self.key.room(),
            "channel": self.key.channel(),
            "type": self.kind.as_str(),
            "created_at": format_timestamp(self.created_at),
            "created_by": self.spec.created_by,
            "hardcoded": self.kind == ChannelKind::System,
            "auto_created": self.spec.auto_created,
            "description": self.spec.description,
            "metadata": self.spec.metadata,
            "participant_count": self.member_count(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use super::*;
    use crate::client::{Profile, Role};

    fn client() -> Arc<Client> {
        Arc::new(Client::new(
            ClientId::generate(),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
            Role::User,
            Profile::default(),
            1024,
        ))
    }

    #[test]
    fn a_record_gives_back_its_spec() {
        let creator = ClientId::generate();
        let mut metadata = Map::new();
        metadata.insert("team".into(), json!("ops"));
        let original = Channel::new(
            ChannelKey::new("ops", "alerts").expect("valid"),
            ChannelKind::General,
            ChannelSpec {
                created_by: Some(creator.clone()),
                description: Some("pager".into()),
                metadata: metadata.clone(),
                ..ChannelSpec::default()
            },
        );
        let spec = ChannelSpec::from_record(&original.record());
        assert_eq!(spec.created_by, Some(creator));
        assert!(!spec.auto_created);
        assert_eq!(spec.description.as_deref(), Some("pager"));
        assert_eq!(spec.metadata, metadata);
        let copy = Channel::new(original.key().clone(), ChannelKind::General, spec);
        assert_eq!(copy.record(), original.record());
        let empty = ChannelSpec::from_record(&json!({}));
        assert!(empty.created_by.is_none() && empty.created_at.is_none());
    }

    #[test]
    fn members_keep_their_index_through_removals() {
        let mut members = Members::default();
        let clients: Vec<_> = (0..5).map(|_| client()).collect();
        for c in &clients {
            assert!(members.insert(c.clone()));
        }
        assert!(!members.insert(clients[0].clone()), "idempotent");
        assert!(members.remove(clients[1].id()).is_some());
        assert!(members.remove(clients[1].id()).is_none());
        assert!(members.remove(clients[4].id()).is_some());
        for c in [&clients[0], &clients[2], &clients[3]] {
            assert!(members.contains(c.id()));
            assert!(members.remove(c.id()).is_some());
        }
        assert_eq!(members.len(), 0);
    }
}
