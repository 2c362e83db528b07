//! A connected client as the router sees it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};

use arqon_protocol::{
    ChannelKey, ChannelPattern, ClientId, ClientType, Timestamp, format_timestamp,
};
use bytes::Bytes;
use chrono::DateTime;
use serde_json::{Value, json};

use crate::outbound::{CloseReason, Outbound, PushError};

/// What a client says about itself (SPEC §2, `identify`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub client_type: ClientType,
    pub screen_name: Option<String>,
    pub avatar: Option<String>,
    pub personality: Option<String>,
}

/// The access a connection was granted at the upgrade (SPEC §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    User,
    Admin,
}

/// One connection. Shared by the registry, the channels it joined and its
/// own connection task; its queue is the only way to reach its socket.
#[derive(Debug)]
pub struct Client {
    id: ClientId,
    peer: SocketAddr,
    role: Role,
    /// The channels this client may join and publish to (a JWT's
    /// `channels` claim); `None` allows all.
    allowed_channels: Option<Box<[ChannelPattern]>>,
    connected_at: Timestamp,
    last_activity_ms: AtomicI64,
    profile: Mutex<Profile>,
    subscriptions: Mutex<HashSet<ChannelKey>>,
    /// Channel frames held back while a join's reply is on its way, so
    /// that live messages follow the reply (SPEC §14). `holding` lets the
    /// fan-out skip the lock when nothing is held, the common case.
    holds: Mutex<HashMap<ChannelKey, Held>>,
    holding: AtomicBool,
    outbound: Outbound,
}

/// Frames of one channel held for a client until its join reply is sent.
#[derive(Debug, Default)]
struct Held {
    frames: Vec<(Bytes, Option<u64>)>,
    bytes: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single insert, remove or copy, so a
    // poisoned lock still guards consistent data.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Client {
    pub fn new(
        id: ClientId,
        peer: SocketAddr,
        role: Role,
        profile: Profile,
        queue_bytes: usize,
    ) -> Self {
        let now = arqon_protocol::now();
        Self {
            id,
            peer,
            role,
            allowed_channels: None,
            connected_at: now,
            last_activity_ms: AtomicI64::new(now.timestamp_millis()),
            profile: Mutex::new(profile),
            subscriptions: Mutex::new(HashSet::new()),
            holds: Mutex::new(HashMap::new()),
            holding: AtomicBool::new(false),
            outbound: Outbound::new(queue_bytes),
        }
    }

    /// Restricts the channels this client may join and publish to.
    #[must_use]
    pub fn with_allowed_channels(mut self, patterns: Option<Vec<ChannelPattern>>) -> Self {
        self.allowed_channels = patterns.map(Vec::into_boxed_slice);
        self
    }

    /// Whether this client may join or publish to `key` (SPEC §9).
    pub fn may_access(&self, key: &ChannelKey) -> bool {
        self.allowed_channels
            .as_deref()
            .is_none_or(|patterns| patterns.iter().any(|pattern| pattern.matches(key)))
    }

    pub fn id(&self) -> &ClientId {
        &self.id
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn connected_at(&self) -> Timestamp {
        self.connected_at
    }

    pub fn outbound(&self) -> &Outbound {
        &self.outbound
    }

    /// Queues one encoded frame for this client's socket.
    pub fn send(&self, frame: Bytes) -> Result<(), PushError> {
        self.outbound.push(frame)
    }

    /// Queues a frame of channel `key` (a message with `seq`, or a
    /// presence event without), unless a join of that channel is still
    /// waiting for its reply: then the frame waits behind the reply (see
    /// [`Router::release`](crate::Router::release)). A hold is bounded by
    /// the queue's byte budget like the queue itself.
    pub(crate) fn send_channel(
        &self,
        key: &ChannelKey,
        frame: Bytes,
        seq: Option<u64>,
    ) -> Result<(), PushError> {
        if self.holding.load(Ordering::Acquire) {
            let mut holds = lock(&self.holds);
            if let Some(held) = holds.get_mut(key) {
                if !held.frames.is_empty() && held.bytes + frame.len() > self.outbound.capacity() {
                    return Err(PushError::Full);
                }
                held.bytes += frame.len();
                held.frames.push((frame, seq));
                return Ok(());
            }
        }
        self.outbound.push_batched(frame)
    }

    /// Starts holding back `key`'s frames (a join is under way).
    pub(crate) fn hold(&self, key: &ChannelKey) {
        let mut holds = lock(&self.holds);
        holds.entry(key.clone()).or_default();
        self.holding.store(true, Ordering::Release);
    }

    /// Stops holding `key`'s frames, queueing those held, in order, with
    /// `queue` (which applies the slow-consumer policy to each). Runs
    /// under the holds lock, so a frame published meanwhile waits and
    /// still comes after them.
    pub(crate) fn release_with(&self, key: &ChannelKey, mut queue: impl FnMut(Bytes, Option<u64>)) {
        let mut holds = lock(&self.holds);
        if let Some(held) = holds.remove(key) {
            for (frame, seq) in held.frames {
                queue(frame, seq);
            }
        }
        if holds.is_empty() {
            // An idle connection keeps no table here.
            holds.shrink_to_fit();
            self.holding.store(false, Ordering::Release);
        }
    }

    /// Forgets what is held for `key` (the client left the channel).
    pub(crate) fn drop_hold(&self, key: &ChannelKey) {
        self.release_with(key, |_, _| {});
    }

    /// Asks the connection to close.
    pub fn close(&self, reason: CloseReason) -> bool {
        self.outbound.close(reason)
    }

    /// Records that the client sent something now.
    pub fn touch(&self) {
        self.last_activity_ms
            .store(arqon_protocol::now().timestamp_millis(), Ordering::Relaxed);
    }

    pub fn last_activity(&self) -> Timestamp {
        DateTime::from_timestamp_millis(self.last_activity_ms.load(Ordering::Relaxed))
            .unwrap_or(self.connected_at)
    }

    pub fn profile(&self) -> Profile {
        lock(&self.profile).clone()
    }

    pub fn client_type(&self) -> ClientType {
        lock(&self.profile).client_type
    }

    pub fn set_profile(&self, profile: Profile) {
        *lock(&self.profile) = profile;
    }

    /// The channels this client is subscribed to.
    pub fn subscriptions(&self) -> Vec<ChannelKey> {
        lock(&self.subscriptions).iter().cloned().collect()
    }

    pub fn subscription_count(&self) -> usize {
        lock(&self.subscriptions).len()
    }

    pub fn is_subscribed(&self, key: &ChannelKey) -> bool {
        lock(&self.subscriptions).contains(key)
    }

    pub(crate) fn subscriptions_mut(&self) -> MutexGuard<'_, HashSet<ChannelKey>> {
        lock(&self.subscriptions)
    }

    /// The client record of SPEC §5.
    pub fn record(&self) -> Value {
        let profile = self.profile();
        json!({
            "client_id": self.id,
            "client_type": profile.client_type,
            "screen_name": profile.screen_name,
            "avatar": profile.avatar,
            "personality": profile.personality,
            "connected_at": format_timestamp(self.connected_at),
            "last_activity": format_timestamp(self.last_activity()),
        })
    }
}
