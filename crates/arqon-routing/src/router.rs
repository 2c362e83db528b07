//! The router: who is connected, which channels exist, who listens where,
//! and the fan-out of published envelopes (SPEC §4, §11).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use arqon_config::{RoutingConfig, SlowConsumerPolicy};
use arqon_protocol::{ChannelKey, ClientId, ClientType, Envelope, RawJson, close, now_rfc3339};
use bytes::Bytes;
use tokio::time::{Duration, Instant};

use crate::channel::{Channel, ChannelKind, ChannelSpec, Members};
use crate::client::Client;
use crate::error::RoutingError;
use crate::outbound::{CloseReason, PushError};

/// The close used when a subscriber's queue overflows under
/// [`SlowConsumerPolicy::Disconnect`].
pub const SLOW_CONSUMER_CLOSE: CloseReason = CloseReason {
    code: close::SLOW_CONSUMER,
    reason: "slow consumer",
    discard_pending: true,
};

/// Counters the router keeps for `status` (SPEC §5). Relaxed atomics:
/// they are statistics, not synchronization.
#[derive(Debug, Default)]
pub struct Stats {
    /// Envelopes received from clients.
    pub received: AtomicU64,
    /// Messages queued to clients by fan-out and direct delivery (replies
    /// to a client's own frames are not counted).
    pub delivered: AtomicU64,
    /// Deliveries dropped under the `drop` policy.
    pub dropped: AtomicU64,
    /// Subscribers disconnected as slow consumers.
    pub slow_disconnects: AtomicU64,
}

/// A presence event (SPEC §15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceEvent {
    Join,
    Leave,
}

impl PresenceEvent {
    const fn as_str(self) -> &'static str {
        match self {
            PresenceEvent::Join => "join",
            PresenceEvent::Leave => "leave",
        }
    }
}

/// Who a channel publish comes from.
#[derive(Debug, Clone, Copy)]
pub enum Publisher<'a> {
    /// A client publishing on its own behalf: it must be a member when
    /// `publish_requires_join` is on, and is skipped in the fan-out unless
    /// it asked for an echo.
    Member(&'a Arc<Client>),
    /// A client's envelope relayed by the server to a channel it need not
    /// have joined (client telemetry rebroadcast to the telemetry channel).
    Relay(&'a ClientId),
    /// The server itself (`sender: "arqonbus"`).
    Server,
}

/// A message that has just been given its `seq`, as the router hands it to
/// the `on_sequenced` hook of [`Router::publish_with`]: still under the
/// channel lock, so hooks see a channel's messages in `seq` order.
#[derive(Debug, Clone, Copy)]
pub struct Sequenced<'a> {
    pub key: &'a ChannelKey,
    pub seq: u64,
    pub epoch: &'a Arc<str>,
    /// The encoded envelope, exactly as delivered.
    pub frame: &'a Bytes,
}

/// The outcome of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Recipients whose queue took the message.
    pub delivered: usize,
    /// The channel `seq` given to the message; `None` for direct messages.
    pub seq: Option<u64>,
    pub epoch: Option<Arc<str>>,
}

/// The outcome of a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub participant_count: usize,
    /// Last `seq` assigned in the channel, 0 if none.
    pub seq: u64,
    pub epoch: Arc<str>,
    /// Whether the join created the channel.
    pub created: bool,
    /// Whether the client was a member already (joins are idempotent).
    pub already_member: bool,
}

/// What a join asks for besides membership.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JoinOptions {
    /// Receive presence events of this channel (SPEC §15); a join without
    /// it turns them off.
    pub presence: bool,
    /// Hold this channel's live frames for the client until
    /// [`Router::release`]: its join reply is to come first (SPEC §14).
    pub hold: bool,
}

/// A point-in-time summary for `status`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub clients: usize,
    pub clients_by_type: HashMap<&'static str, usize>,
    pub rooms: usize,
    pub channels: usize,
    pub subscriptions: usize,
    /// The largest channels by members, largest first.
    pub largest_channels: Vec<(ChannelKey, usize)>,
    /// How many channels `largest_channels` was chosen from.
    pub ranked: usize,
}

#[derive(Debug, Default)]
struct Channels {
    by_key: HashMap<ChannelKey, Arc<Channel>>,
    /// Channels per room: a room exists while it has a channel.
    rooms: HashMap<String, usize>,
}

impl Channels {
    fn insert(&mut self, channel: Arc<Channel>) {
        *self
            .rooms
            .entry(channel.key().room().to_owned())
            .or_default() += 1;
        self.by_key.insert(channel.key().clone(), channel);
    }

    fn remove(&mut self, key: &ChannelKey) -> Option<Arc<Channel>> {
        let channel = self.by_key.remove(key)?;
        if let Some(count) = self.rooms.get_mut(key.room()) {
            *count -= 1;
            if *count == 0 {
                self.rooms.remove(key.room());
            }
        }
        Some(channel)
    }
}

/// Clients, channels and subscriptions. State is split by owner: the
/// client map, the channel map, and per-channel member lists each have
/// their own lock, always taken briefly and in the order
/// channel map → channel members → client subscriptions.
#[derive(Debug)]
pub struct Router {
    config: RoutingConfig,
    clients: RwLock<HashMap<ClientId, Arc<Client>>>,
    channels: RwLock<Channels>,
    subscriptions: AtomicUsize,
    stats: Stats,
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Router {
    /// A router with the configured system channels already created.
    /// `system_channels` holds `room:channel` keys (already validated by the
    /// configuration); invalid ones are skipped.
    pub fn new(config: &RoutingConfig, system_channels: &[ChannelKey]) -> Self {
        let mut channels = Channels::default();
        for key in system_channels {
            if !channels.by_key.contains_key(key) {
                channels.insert(Arc::new(Channel::new(
                    key.clone(),
                    ChannelKind::System,
                    ChannelSpec::default(),
                )));
            }
        }
        Self {
            config: config.clone(),
            clients: RwLock::new(HashMap::new()),
            channels: RwLock::new(channels),
            subscriptions: AtomicUsize::new(0),
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &RoutingConfig {
        &self.config
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    // ---- clients -------------------------------------------------------

    /// Adds a connected client. Returns the client it replaces, if one was
    /// registered under the same id (a second JWT connection, SPEC §9); the
    /// caller closes that one.
    pub fn register(&self, client: Arc<Client>) -> Option<Arc<Client>> {
        write(&self.clients).insert(client.id().clone(), client)
    }

    /// Removes a client from the registry (if it is still the registered
    /// one) and from every channel it joined. The one cleanup path of a
    /// connection.
    pub fn unregister(&self, client: &Arc<Client>) {
        {
            let mut clients = write(&self.clients);
            if clients
                .get(client.id())
                .is_some_and(|c| Arc::ptr_eq(c, client))
            {
                clients.remove(client.id());
            }
        }
        let joined: Vec<ChannelKey> = client.subscriptions_mut().drain().collect();
        for key in joined {
            client.drop_hold(&key);
            if let Some(channel) = self.channel(&key) {
                let mut members = channel.members();
                if members.remove(client.id()).is_some() {
                    self.subscriptions.fetch_sub(1, Ordering::Relaxed);
                    self.announce(&key, &members, client, PresenceEvent::Leave);
                }
                channel.sync_count(&members);
            }
        }
    }

    pub fn client(&self, id: &ClientId) -> Option<Arc<Client>> {
        read(&self.clients).get(id).cloned()
    }

    pub fn client_count(&self) -> usize {
        read(&self.clients).len()
    }

    /// Every connected client (a snapshot).
    pub fn clients(&self) -> Vec<Arc<Client>> {
        read(&self.clients).values().cloned().collect()
    }

    // ---- channels ------------------------------------------------------

    pub fn channel(&self, key: &ChannelKey) -> Option<Arc<Channel>> {
        read(&self.channels).by_key.get(key).cloned()
    }

    /// Every channel, or those of `room` (`RoomNotFound` when it has none),
    /// sorted by key.
    pub fn channels(&self, room: Option<&str>) -> Result<Vec<Arc<Channel>>, RoutingError> {
        let channels = read(&self.channels);
        if let Some(room) = room
            && !channels.rooms.contains_key(room)
        {
            return Err(RoutingError::RoomNotFound {
                room: room.to_owned(),
            });
        }
        let mut list: Vec<_> = channels
            .by_key
            .values()
            .filter(|channel| room.is_none_or(|room| channel.key().room() == room))
            .cloned()
            .collect();
        drop(channels);
        list.sort_by(|a, b| a.key().cmp(b.key()));
        Ok(list)
    }

    /// Recreates a channel whose history outlived the process (storage
    /// restore at startup): its `seq` continues and its epoch is kept.
    /// Does nothing if the channel exists already.
    pub fn restore_channel(&self, key: ChannelKey, epoch: Arc<str>, last_seq: u64) {
        let mut channels = write(&self.channels);
        if channels.by_key.contains_key(&key) {
            return;
        }
        let spec = ChannelSpec {
            auto_created: true,
            restored: Some((epoch, last_seq)),
            ..ChannelSpec::default()
        };
        channels.insert(Arc::new(Channel::new(key, ChannelKind::General, spec)));
    }

    /// Creates a general channel.
    pub fn create_channel(
        &self,
        key: ChannelKey,
        spec: ChannelSpec,
    ) -> Result<Arc<Channel>, RoutingError> {
        let mut channels = write(&self.channels);
        if let Some(existing) = channels.by_key.get(&key) {
            return Err(match existing.kind() {
                ChannelKind::System => RoutingError::SystemChannel { key },
                ChannelKind::General => RoutingError::ChannelExists { key },
            });
        }
        let channel = Arc::new(Channel::new(key, ChannelKind::General, spec));
        channels.insert(channel.clone());
        Ok(channel)
    }

    /// Deletes a general channel. Members block it unless `force`, in which
    /// case they lose the subscription and get `notice` (already encoded).
    /// Returns how many members were removed.
    pub fn delete_channel(
        &self,
        key: &ChannelKey,
        force: bool,
        notice: Bytes,
    ) -> Result<usize, RoutingError> {
        let removed = {
            let mut channels = write(&self.channels);
            let channel = channels
                .by_key
                .get(key)
                .cloned()
                .ok_or_else(|| RoutingError::ChannelNotFound { key: key.clone() })?;
            if channel.kind() == ChannelKind::System {
                return Err(RoutingError::SystemChannel { key: key.clone() });
            }
            let mut members = channel.members();
            if members.len() > 0 && !force {
                return Err(RoutingError::ChannelNotEmpty {
                    key: key.clone(),
                    members: members.len(),
                });
            }
            // Marked under the members lock: a join or publish that looked
            // the channel up before it left the map sees it is gone.
            members.deleted = true;
            let removed = members.drain();
            channel.sync_count(&members);
            drop(members);
            channels.remove(key);
            removed
        };
        for member in &removed {
            member.drop_hold(key);
            member.subscriptions_mut().remove(key);
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
            self.deliver(member, notice.clone());
        }
        Ok(removed.len())
    }

    /// Deletes every auto-created channel that has had no members for at
    /// least `ttl` (SPEC §18), and returns their keys. Created and system
    /// channels stay. A channel joined meanwhile is kept: the deletion
    /// re-checks under the channel's lock.
    pub fn delete_idle_channels(&self, ttl: Duration) -> Vec<ChannelKey> {
        let now = Instant::now();
        let candidates: Vec<ChannelKey> = read(&self.channels)
            .by_key
            .values()
            .filter(|channel| {
                channel.kind() == ChannelKind::General
                    && channel.is_auto_created()
                    && channel
                        .members()
                        .empty_since
                        .is_some_and(|since| now.saturating_duration_since(since) >= ttl)
            })
            .map(|channel| channel.key().clone())
            .collect();
        candidates
            .into_iter()
            .filter(|key| self.delete_channel(key, false, Bytes::new()).is_ok())
            .collect()
    }

    /// Subscribes `client` to `key`, creating the channel when allowed.
    pub fn join(&self, client: &Arc<Client>, key: &ChannelKey) -> Result<Joined, RoutingError> {
        self.join_with(client, key, JoinOptions::default())
    }

    /// [`join`](Self::join) with presence events and a hold of live frames
    /// as `options` say. The members lock orders the join against every
    /// publish: messages up to the returned `seq` were sequenced before
    /// the join, every later one reaches the client (after the reply, when
    /// held). Presence subscribers hear of a new member once.
    pub fn join_with(
        &self,
        client: &Arc<Client>,
        key: &ChannelKey,
        options: JoinOptions,
    ) -> Result<Joined, RoutingError> {
        let (channel, created) = match self.channel(key) {
            Some(channel) => (channel, false),
            None if self.config.auto_create_channels => {
                let mut channels = write(&self.channels);
                match channels.by_key.get(key) {
                    Some(channel) => (channel.clone(), false),
                    None => {
                        let channel = Arc::new(Channel::new(
                            key.clone(),
                            ChannelKind::General,
                            ChannelSpec {
                                created_by: Some(client.id().clone()),
                                auto_created: true,
                                ..ChannelSpec::default()
                            },
                        ));
                        channels.insert(channel.clone());
                        (channel, true)
                    }
                }
            }
            None => return Err(RoutingError::ChannelNotFound { key: key.clone() }),
        };

        let mut members = channel.members();
        if members.deleted {
            return Err(RoutingError::ChannelNotFound { key: key.clone() });
        }
        let already_member = members.contains(client.id());
        if !already_member {
            let max = self.config.max_channel_members;
            if max > 0 && members.len() >= max {
                return Err(RoutingError::ChannelFull {
                    key: key.clone(),
                    max,
                });
            }
            let mut subscriptions = client.subscriptions_mut();
            let max = self.config.max_subscriptions;
            if subscriptions.len() >= max {
                return Err(RoutingError::SubscriptionLimit { max });
            }
            subscriptions.insert(key.clone());
            drop(subscriptions);
        }
        if options.hold {
            client.hold(key);
        }
        if !already_member {
            members.insert(client.clone());
            channel.sync_count(&members);
            self.subscriptions.fetch_add(1, Ordering::Relaxed);
            self.announce(key, &members, client, PresenceEvent::Join);
        }
        if options.presence {
            members.presence.insert(client.id().clone());
        } else {
            members.presence.remove(client.id());
        }
        Ok(Joined {
            participant_count: members.len(),
            seq: members.seq,
            epoch: members.epoch.clone(),
            created,
            already_member,
        })
    }

    /// Unsubscribes `client` from `key`; returns whether it was a member.
    pub fn leave(&self, client: &Arc<Client>, key: &ChannelKey) -> Result<bool, RoutingError> {
        let channel = self
            .channel(key)
            .ok_or_else(|| RoutingError::ChannelNotFound { key: key.clone() })?;
        let mut members = channel.members();
        let was_member = members.remove(client.id()).is_some();
        channel.sync_count(&members);
        if was_member {
            self.announce(key, &members, client, PresenceEvent::Leave);
        }
        drop(members);
        client.drop_hold(key);
        if was_member {
            client.subscriptions_mut().remove(key);
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(was_member)
    }

    /// Sends the join reply's companions: the frames of `key` held for
    /// `client` since its join (SPEC §14), in order, now that the reply is
    /// queued. Frames published meanwhile wait until these are queued.
    /// Held messages up to `covered` (the reply's `seq`: they are in its
    /// `publications` or were sequenced before the join) are not sent.
    ///
    /// Messages up to `covered` that come later still (in a cluster, from
    /// Redis, [`Router::deliver_sequenced`]) are not delivered either.
    pub fn release(&self, client: &Client, key: &ChannelKey, covered: u64) {
        if covered > 0
            && let Some(channel) = self.channel(key)
        {
            let mut members = channel.members();
            if members.contains(client.id()) {
                members.covered.insert(client.id().clone(), covered);
            }
        }
        client.release_with(key, |frame, seq| {
            if seq.is_some_and(|seq| seq <= covered) {
                return;
            }
            // Counted as delivered when it was held; only a failure is new.
            let queued = client.outbound().push_batched(frame);
            self.note_lag(client, key, seq, queued);
            self.settled(client, queued);
        });
    }

    /// Tells the presence subscribers of `key` (but not `subject`) that
    /// `subject` joined or left (SPEC §15). One frame for all of them;
    /// called under the members lock, so events follow membership order.
    fn announce(
        &self,
        key: &ChannelKey,
        members: &Members,
        subject: &Client,
        event: PresenceEvent,
    ) {
        if members.presence.is_empty()
            || (members.presence.len() == 1 && members.presence.contains(subject.id()))
        {
            return;
        }
        let profile = subject.profile();
        let client = serde_json::json!({
            "client_id": subject.id(),
            "client_type": profile.client_type,
            "screen_name": profile.screen_name,
        });
        let frame = presence_frame(key, event, client, members.len() as u64);
        self.tell_presence_subscribers(key, members, subject.id().as_str(), &frame);
    }

    /// Tells this node's presence subscribers of `key` that a client of
    /// another node joined or left (SPEC §15, in a cluster). `client` is
    /// the event's `client` object (`client_id`, `client_type`,
    /// `screen_name`); a local member with that `client_id` is not told.
    /// Returns how many members got the event.
    pub fn announce_remote(
        &self,
        key: &ChannelKey,
        event: PresenceEvent,
        client: serde_json::Value,
        participant_count: u64,
    ) -> usize {
        let Some(channel) = self.channel(key) else {
            return 0;
        };
        let members = channel.members();
        if members.deleted || members.presence.is_empty() {
            return 0;
        }
        let subject = client["client_id"].as_str().unwrap_or_default().to_owned();
        let frame = presence_frame(key, event, client, participant_count);
        self.tell_presence_subscribers(key, &members, &subject, &frame)
    }

    /// Queues a presence event to the members of `key` that asked for
    /// presence, except `subject`; returns how many got it.
    fn tell_presence_subscribers(
        &self,
        key: &ChannelKey,
        members: &Members,
        subject: &str,
        frame: &Bytes,
    ) -> usize {
        let mut told = 0;
        for member in &members.list {
            if member.id().as_str() != subject
                && members.presence.contains(member.id())
                && self.deliver_to_member(member, key, frame.clone(), None)
            {
                told += 1;
            }
        }
        told
    }

    // ---- delivery ------------------------------------------------------

    /// Publishes `envelope` on channel `key` from `publisher`. Stamps `sender`,
    /// `timestamp`, `seq` and `epoch`, encodes once, and queues the same
    /// bytes to every member except the sender (unless `echo`).
    ///
    /// Never waits on a subscriber: a full queue triggers the configured
    /// slow-consumer policy for that subscriber alone.
    pub fn publish(
        &self,
        publisher: Publisher<'_>,
        key: &ChannelKey,
        envelope: Envelope<RawJson>,
        echo: bool,
    ) -> Result<Delivery, RoutingError> {
        self.publish_with(publisher, key, envelope, echo, |_| ())
            .map(|(delivery, ())| delivery)
    }

    /// [`publish`](Self::publish), calling `on_sequenced` with the encoded
    /// message once it has its `seq`, before the fan-out and under the
    /// channel lock (so it must not block). History storage records
    /// messages through this hook, in order, without routing depending on
    /// it.
    pub fn publish_with<T>(
        &self,
        publisher: Publisher<'_>,
        key: &ChannelKey,
        mut envelope: Envelope<RawJson>,
        echo: bool,
        on_sequenced: impl FnOnce(Sequenced<'_>) -> T,
    ) -> Result<(Delivery, T), RoutingError> {
        let channel = self
            .channel(key)
            .ok_or_else(|| RoutingError::ChannelNotFound { key: key.clone() })?;
        let mut members = channel.members();
        let sender_id = match publisher {
            Publisher::Member(sender) => {
                self.admit(&members, sender, key)?;
                Some(sender.id())
            }
            Publisher::Relay(_) | Publisher::Server => {
                if members.deleted {
                    return Err(RoutingError::ChannelNotFound { key: key.clone() });
                }
                None
            }
        };
        envelope.sender = Some(match publisher {
            Publisher::Member(sender) => sender.id().as_str().to_owned(),
            Publisher::Relay(id) => id.as_str().to_owned(),
            Publisher::Server => arqon_protocol::SERVER_SENDER.to_owned(),
        });
        members.seq += 1;
        let seq = members.seq;
        let epoch = members.epoch.clone();
        envelope.timestamp = now_rfc3339();
        envelope.room = Some(key.room().to_owned());
        envelope.channel = Some(key.channel().to_owned());
        envelope.seq = Some(seq);
        envelope.epoch = Some(epoch.to_string());
        let frame = Bytes::from(envelope.to_json());
        let recorded = on_sequenced(Sequenced {
            key,
            seq,
            epoch: &epoch,
            frame: &frame,
        });

        let mut delivered = 0;
        for member in &members.list {
            if !echo && Some(member.id()) == sender_id {
                continue;
            }
            if self.deliver_to_member(member, key, frame.clone(), Some(seq)) {
                delivered += 1;
            }
        }
        drop(members);
        let delivery = Delivery {
            delivered,
            seq: Some(seq),
            epoch: Some(epoch),
        };
        Ok((delivery, recorded))
    }

    /// The channel `key` if `publisher` may publish to it now: the checks
    /// of [`publish`](Self::publish), without publishing.
    pub fn check_publish(
        &self,
        publisher: &Client,
        key: &ChannelKey,
    ) -> Result<Arc<Channel>, RoutingError> {
        let channel = self
            .channel(key)
            .ok_or_else(|| RoutingError::ChannelNotFound { key: key.clone() })?;
        self.admit(&channel.members(), publisher, key)?;
        Ok(channel)
    }

    /// A member's publish to a channel it looked up: the channel must not
    /// have been deleted since, and the sender must have joined it when
    /// `publish_requires_join` is on.
    fn admit(
        &self,
        members: &Members,
        publisher: &Client,
        key: &ChannelKey,
    ) -> Result<(), RoutingError> {
        if members.deleted {
            return Err(RoutingError::ChannelNotFound { key: key.clone() });
        }
        if self.config.publish_requires_join && !members.contains(publisher.id()) {
            return Err(RoutingError::NotSubscribed { key: key.clone() });
        }
        Ok(())
    }

    /// Delivers a message sequenced elsewhere (by the cluster, in Redis) to
    /// this node's members of `key`, except `skip`. `frame` already carries
    /// its `seq` and `epoch`; the channel adopts them (never moving `seq`
    /// back within an epoch), so that `join` and `channel_info` report them
    /// and a local fallback continues from there. Redis broadcasts each
    /// message once, so every one is delivered, even when the channel has
    /// already learnt a higher `seq` from Redis ([`Router::sync_sequence`]).
    /// Returns how many members got it.
    pub fn deliver_sequenced(
        &self,
        key: &ChannelKey,
        seq: u64,
        epoch: &str,
        frame: &Bytes,
        skip: Option<&ClientId>,
    ) -> usize {
        let Some(channel) = self.channel(key) else {
            return 0;
        };
        let mut members = channel.members();
        if members.deleted {
            return 0;
        }
        adopt_sequence(&mut members, epoch, seq);
        let mut delivered = 0;
        let members = &mut *members;
        for member in &members.list {
            if Some(member.id()) == skip {
                continue;
            }
            if let Some(&covered) = members.covered.get(member.id()) {
                if seq <= covered {
                    // In its join reply already.
                    continue;
                }
                members.covered.remove(member.id());
            }
            if self.deliver_to_member(member, key, frame.clone(), Some(seq)) {
                delivered += 1;
            }
        }
        delivered
    }

    /// Starts a new epoch for `key` because its history in `lost` vanished
    /// from storage (SPEC §7, §18: e.g. Redis restarted without
    /// persistence): a fresh random epoch, `seq` back to 0 so the next
    /// message is `seq` 1. Does nothing, returning `None`, if the channel
    /// is gone or no longer in `lost` (already restarted: calling again
    /// for the same loss is harmless). Returns the new epoch.
    pub fn restart_epoch(&self, key: &ChannelKey, lost: &str) -> Option<Arc<str>> {
        let channel = self.channel(key)?;
        let mut members = channel.members();
        if members.deleted || *members.epoch != *lost {
            return None;
        }
        let epoch = crate::channel::fresh_epoch();
        members.epoch = epoch.clone();
        members.covered.clear();
        members.seq = 0;
        Some(epoch)
    }

    /// Adopts the cluster's epoch and last `seq` for `key` (read from Redis
    /// at a join), unless the channel has seen a later message already.
    pub fn sync_sequence(&self, key: &ChannelKey, epoch: &str, seq: u64) {
        let Some(channel) = self.channel(key) else {
            return;
        };
        adopt_sequence(&mut channel.members(), epoch, seq);
    }

    /// Sends `envelope` from `sender` to one client.
    pub fn send_direct(
        &self,
        sender: &Arc<Client>,
        target: &ClientId,
        mut envelope: Envelope<RawJson>,
    ) -> Result<Delivery, RoutingError> {
        let recipient = self
            .client(target)
            .ok_or_else(|| RoutingError::TargetNotFound {
                client: target.clone(),
            })?;
        envelope.sender = Some(sender.id().as_str().to_owned());
        envelope.timestamp = now_rfc3339();
        envelope.to_client = Some(target.as_str().to_owned());
        let delivered = usize::from(self.deliver(&recipient, Bytes::from(envelope.to_json())));
        Ok(Delivery {
            delivered,
            seq: None,
            epoch: None,
        })
    }

    /// Queues a frame of channel `key` for one of its members: held back
    /// while the member's join reply is on its way, else like
    /// [`Router::deliver`].
    fn deliver_to_member(
        &self,
        member: &Client,
        key: &ChannelKey,
        frame: Bytes,
        seq: Option<u64>,
    ) -> bool {
        let queued = member.send_channel(key, frame, seq);
        self.note_lag(member, key, seq, queued);
        self.counted(member, queued)
    }

    /// A channel message dropped under the `drop` policy is owed a lagged
    /// notice (SPEC §16).
    fn note_lag(
        &self,
        member: &Client,
        key: &ChannelKey,
        seq: Option<u64>,
        queued: Result<(), PushError>,
    ) {
        if queued == Err(PushError::Full) && self.config.slow_consumer == SlowConsumerPolicy::Drop {
            member.outbound().note_dropped(key, seq);
        }
    }

    /// Queues `frame` (a message: channel, direct or notice) for `client`,
    /// applying the slow-consumer policy when its queue is full, and counts
    /// it in [`Stats::delivered`]. Returns whether the frame was queued.
    pub fn deliver(&self, client: &Client, frame: Bytes) -> bool {
        self.counted(client, client.send(frame))
    }

    /// Queues a reply (a response or an error) for `client` like
    /// [`Router::deliver`], without counting it as a delivered message.
    pub fn reply(&self, client: &Client, frame: Bytes) -> bool {
        self.settled(client, client.send(frame))
    }

    /// [`settled`](Self::settled), counting a queued frame as delivered.
    fn counted(&self, client: &Client, queued: Result<(), PushError>) -> bool {
        let queued = self.settled(client, queued);
        if queued {
            self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    /// Whether a push queued its frame; a full queue gets the
    /// slow-consumer policy.
    fn settled(&self, client: &Client, queued: Result<(), PushError>) -> bool {
        match queued {
            Ok(()) => true,
            Err(PushError::Full) => {
                self.slow_consumer(client);
                false
            }
            Err(PushError::Closed) => false,
        }
    }

    /// Applies the slow-consumer policy to a client whose queue is full.
    fn slow_consumer(&self, client: &Client) {
        match self.config.slow_consumer {
            SlowConsumerPolicy::Disconnect => {
                if client.close(SLOW_CONSUMER_CLOSE) {
                    self.stats.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                }
            }
            SlowConsumerPolicy::Drop => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    // ---- status --------------------------------------------------------

    /// Rooms and channels that exist, without scanning them.
    pub fn room_and_channel_counts(&self) -> (usize, usize) {
        let channels = read(&self.channels);
        (channels.rooms.len(), channels.by_key.len())
    }

    /// Counts for `status`, with the `top` largest channels.
    pub fn snapshot(&self, top: usize) -> Snapshot {
        self.snapshot_of(top, |_| true)
    }

    /// [`Router::snapshot`], ranking only the channels `visible` accepts
    /// (those a client's token allows, SPEC §18).
    pub fn snapshot_of(&self, top: usize, visible: impl Fn(&ChannelKey) -> bool) -> Snapshot {
        let mut clients_by_type: HashMap<&'static str, usize> = ClientType::ALL
            .iter()
            .map(|kind| (kind.as_str(), 0))
            .collect();
        let clients = {
            let clients = read(&self.clients);
            for client in clients.values() {
                *clients_by_type
                    .entry(client.client_type().as_str())
                    .or_default() += 1;
            }
            clients.len()
        };
        let channels = read(&self.channels);
        let (rooms, channel_count) = (channels.rooms.len(), channels.by_key.len());
        // Borrow keys under the read lock; clone only the `top` kept.
        let mut sizes: Vec<(usize, &ChannelKey)> = channels
            .by_key
            .iter()
            .filter(|(key, _)| visible(key))
            .map(|(key, channel)| (channel.member_count(), key))
            .collect();
        let ranked = sizes.len();
        let by_size = |a: &(usize, &ChannelKey), b: &(usize, &ChannelKey)| {
            b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1))
        };
        if sizes.len() > top && top > 0 {
            sizes.select_nth_unstable_by(top - 1, by_size);
        }
        sizes.truncate(top);
        sizes.sort_by(by_size);
        let largest_channels = sizes
            .into_iter()
            .map(|(count, key)| (key.clone(), count))
            .collect();
        drop(channels);
        Snapshot {
            clients,
            clients_by_type,
            rooms,
            channels: channel_count,
            subscriptions: self.subscriptions.load(Ordering::Relaxed),
            ranked,
            largest_channels,
        }
    }
}

/// Takes the cluster's `epoch` and `seq` for a channel: another epoch
/// replaces the local one with its `seq`; within the same epoch `seq` only
/// moves forward.
/// A presence event's `system` envelope, encoded once for every recipient.
fn presence_frame(
    key: &ChannelKey,
    event: PresenceEvent,
    client: serde_json::Value,
    participant_count: u64,
) -> Bytes {
    let notice = Envelope::system(
        key.room(),
        key.channel(),
        serde_json::json!({
            "event": event.as_str(),
            "client": client,
            "participant_count": participant_count,
        }),
    );
    Bytes::from(notice.to_json())
}

fn adopt_sequence(members: &mut Members, epoch: &str, seq: u64) {
    if *members.epoch != *epoch {
        members.epoch = Arc::from(epoch);
        members.seq = seq;
        members.covered.clear();
    } else {
        members.seq = members.seq.max(seq);
    }
}
