//! Typed replies (SPEC §5) and what the connection delivers: channel
//! messages, direct messages, gap reports and connection events.
//!
//! Reply types are lenient: fields the server may omit default, and
//! unknown fields are ignored, so a newer server does not break an older
//! client.

use std::collections::BTreeMap;

use arqon_protocol::{ChannelKey, ClientId, Envelope, EnvelopeType};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ClientError;

/// Limits announced in the welcome frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Limits {
    pub max_message_size: u64,
    pub rate_limit_per_sec: u64,
    pub max_subscriptions: u64,
}

/// The first frame of every connection (SPEC §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub client_id: ClientId,
    pub server_version: String,
    pub protocol: String,
    pub limits: Limits,
}

impl Welcome {
    pub(crate) fn from_envelope(envelope: &Envelope) -> Result<Self, ClientError> {
        #[derive(Deserialize)]
        struct Raw {
            client_id: String,
            #[serde(default)]
            server_version: String,
            #[serde(default)]
            protocol: String,
            #[serde(default)]
            limits: Limits,
        }
        let payload = envelope
            .payload
            .clone()
            .ok_or_else(|| ClientError::protocol("welcome frame without payload"))?;
        let raw: Raw = serde_json::from_value(payload)
            .map_err(|e| ClientError::protocol(format!("welcome frame: {e}")))?;
        Ok(Self {
            client_id: ClientId::new(&raw.client_id)?,
            server_version: raw.server_version,
            protocol: raw.protocol,
            limits: raw.limits,
        })
    }
}

/// `ping` reply.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Pong {
    pub pong: bool,
    pub server_time: String,
}

/// A channel record (SPEC §5).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChannelRecord {
    pub room: String,
    pub channel: String,
    /// `"general"` or `"system"`.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub hardcoded: bool,
    #[serde(default)]
    pub auto_created: bool,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub participant_count: u64,
}

/// A client record (SPEC §5), as `identify` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClientRecord {
    pub client_id: String,
    pub client_type: String,
    #[serde(default)]
    pub screen_name: Option<String>,
    #[serde(default)]
    pub avatar: Option<String>,
    #[serde(default)]
    pub personality: Option<String>,
    #[serde(default)]
    pub connected_at: String,
    #[serde(default)]
    pub last_activity: String,
}

/// One member listed by `channel_info`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Participant {
    pub client_id: String,
    pub client_type: String,
    #[serde(default)]
    pub screen_name: Option<String>,
    #[serde(default)]
    pub connected_at: String,
    #[serde(default)]
    pub last_activity: String,
}

/// `join_channel` reply.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Joined {
    pub room: String,
    pub channel: String,
    pub participant_count: u64,
    /// The channel's last assigned `seq` (0 if none): live messages start
    /// after it.
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub epoch: Option<String>,
    /// With [`JoinOptions::recover`] (and after every reconnect): whether
    /// the server recovered the missed messages (SPEC §14). `None` when
    /// recovery was not asked for, or the server predates §14.
    #[serde(default)]
    pub recovered: Option<bool>,
}

/// The §14 part of a `join_channel` reply.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Recovery {
    pub recovered: Option<bool>,
    pub publications: Vec<Envelope>,
}

/// Where to recover from when joining: the last `seq` and `epoch` seen on
/// the channel (SPEC §14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverFrom {
    pub seq: u64,
    pub epoch: String,
}

/// Options of [`Client::join_channel_with`](crate::Client::join_channel_with).
///
/// ```
/// use arqon_client::JoinOptions;
///
/// let options = JoinOptions::new().presence(true).recover(41, "3f2a");
/// assert!(options.presence);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinOptions {
    /// Receive [`SubscriptionEvent::Presence`] when others join or leave
    /// (SPEC §15). Kept across reconnects.
    pub presence: bool,
    /// Ask for the messages after this position (SPEC §14): when the
    /// server recovers them they are delivered first, marked `replayed`.
    pub recover: Option<RecoverFrom>,
}

impl JoinOptions {
    pub fn new() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn presence(mut self, presence: bool) -> Self {
        self.presence = presence;
        self
    }

    #[must_use]
    pub fn recover(mut self, seq: u64, epoch: impl Into<String>) -> Self {
        self.recover = Some(RecoverFrom {
            seq,
            epoch: epoch.into(),
        });
        self
    }
}

/// `leave_channel` reply.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Left {
    pub room: String,
    pub channel: String,
    pub was_member: bool,
}

/// `list_channels` reply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChannelList {
    pub channels: Vec<ChannelRecord>,
    pub total: u64,
}

/// `channel_info` reply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChannelInfo {
    #[serde(flatten)]
    pub record: ChannelRecord,
    #[serde(default)]
    pub participants: Vec<Participant>,
    #[serde(default)]
    pub messages_stored: u64,
    #[serde(default)]
    pub last_seq: u64,
    #[serde(default)]
    pub epoch: Option<String>,
}

/// `delete_channel` reply.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Deleted {
    pub room: String,
    pub channel: String,
    pub deleted: bool,
    #[serde(default)]
    pub removed_members: u64,
}

/// Arguments of `history` (SPEC §5); all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// How many messages (server default 50, at most 1000).
    pub limit: Option<u32>,
    /// Only messages after this time (exclusive, RFC 3339).
    pub since: Option<String>,
    /// Only messages before this time (exclusive, RFC 3339).
    pub until: Option<String>,
    /// The oldest `limit` messages after this `seq`.
    pub after_seq: Option<u64>,
}

impl HistoryQuery {
    pub(crate) fn to_args(&self, args: &mut Map<String, Value>) {
        if let Some(limit) = self.limit {
            args.insert("limit".into(), limit.into());
        }
        if let Some(since) = &self.since {
            args.insert("since".into(), since.clone().into());
        }
        if let Some(until) = &self.until {
            args.insert("until".into(), until.clone().into());
        }
        if let Some(after) = self.after_seq {
            args.insert("after_seq".into(), after.into());
        }
    }
}

/// `history` reply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct History {
    pub room: String,
    pub channel: String,
    /// Oldest first.
    #[serde(default)]
    pub messages: Vec<Envelope>,
    #[serde(default)]
    pub count: u64,
    #[serde(default)]
    pub backend: String,
    #[serde(default)]
    pub epoch: Option<String>,
    #[serde(default)]
    pub last_seq: u64,
    /// The page was cut short to fit the server's maximum message size:
    /// ask again with `after_seq` = the last message's `seq`.
    #[serde(default)]
    pub truncated: bool,
}

/// `status` reply (SPEC §5).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Status {
    pub server: ServerInfo,
    pub clients: ClientCounts,
    #[serde(default)]
    pub rooms: u64,
    #[serde(default)]
    pub channels: u64,
    #[serde(default)]
    pub subscriptions: u64,
    #[serde(default)]
    pub participants: ParticipantCounts,
    #[serde(default)]
    pub messages: MessageCounts,
    #[serde(default)]
    pub storage: StorageInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServerInfo {
    pub name: String,
    pub version: String,
    pub protocol: String,
    #[serde(default)]
    pub node_id: String,
    #[serde(default)]
    pub started_at: String,
    #[serde(default)]
    pub uptime_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClientCounts {
    pub active: u64,
    #[serde(default)]
    pub by_type: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ParticipantCounts {
    /// `"room:channel"` → members, for the 100 largest channels.
    pub channels: BTreeMap<String, u64>,
    pub truncated: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct MessageCounts {
    pub received: u64,
    pub delivered: u64,
    pub dropped: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct StorageInfo {
    pub backend: String,
    pub degraded: bool,
}

/// The acknowledgement of a publish (SPEC §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Ack {
    /// Recipients whose queue took the message.
    pub delivered: u64,
    /// The channel `seq` it got; `None` for a direct message.
    #[serde(default)]
    pub seq: Option<u64>,
    /// Whether it is in history storage.
    #[serde(default)]
    pub stored: bool,
}

/// A message received on a joined channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelMessage {
    pub channel: ChannelKey,
    /// The publisher's envelope id.
    pub id: String,
    /// `message` usually; `telemetry` on the telemetry channel, or a
    /// `response`/`error` a client routed to the channel.
    pub kind: EnvelopeType,
    /// The publisher's `client_id` (`"arqonbus"` for server events).
    pub sender: Option<String>,
    pub seq: Option<u64>,
    pub epoch: Option<String>,
    pub timestamp: String,
    pub payload: Value,
    pub metadata: Option<Value>,
    /// Whether it was fetched from history after a reconnect rather than
    /// received live.
    pub replayed: bool,
}

impl ChannelMessage {
    pub(crate) fn from_envelope(channel: ChannelKey, envelope: Envelope, replayed: bool) -> Self {
        Self {
            channel,
            id: envelope.id,
            kind: envelope.kind,
            sender: envelope.sender,
            seq: envelope.seq,
            epoch: envelope.epoch,
            timestamp: envelope.timestamp,
            payload: envelope.payload.unwrap_or(Value::Null),
            metadata: envelope.metadata,
            replayed,
        }
    }
}

/// A message sent to this client alone (SPEC §4.2), or a `response` /
/// `error` envelope another client addressed to it.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectMessage {
    pub id: String,
    pub kind: EnvelopeType,
    pub sender: Option<String>,
    pub timestamp: String,
    pub payload: Value,
    pub metadata: Option<Value>,
    /// Set on `response`/`error` envelopes from other clients.
    pub request_id: Option<String>,
}

impl DirectMessage {
    pub(crate) fn from_envelope(envelope: Envelope) -> Self {
        Self {
            id: envelope.id,
            kind: envelope.kind,
            sender: envelope.sender,
            timestamp: envelope.timestamp,
            payload: envelope.payload.unwrap_or(Value::Null),
            metadata: envelope.metadata,
            request_id: envelope.request_id.flatten(),
        }
    }
}

/// What happened to a channel's stream across a reconnect.
///
/// `from_seq..=to_seq` is the range that was published while the client
/// was away (empty when `to_seq < from_seq`). With an unchanged epoch the
/// client fetched it with `history after_seq`; `filled` says whether every
/// message of the range was recovered. A changed epoch means the channel's
/// history restarted (the server restarted with memory storage, or the
/// channel was recreated): what was missed cannot be recovered, `filled` is
/// false, and `to_seq` is the new epoch's current `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapReport {
    pub channel: ChannelKey,
    /// First `seq` not seen before the connection dropped (in `old_epoch`).
    pub from_seq: u64,
    /// The channel's `seq` when the client re-joined (in `new_epoch`).
    pub to_seq: u64,
    /// Messages delivered from history to close the gap.
    pub recovered: u64,
    pub filled: bool,
    pub epoch_changed: bool,
    pub old_epoch: Option<String>,
    pub new_epoch: Option<String>,
    /// How the missed messages were fetched.
    pub via: GapFill,
}

/// How a [`GapReport`]'s messages were recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GapFill {
    /// The server recovered them in the `join_channel` reply
    /// (`recovered: true`, SPEC §14).
    Recovery,
    /// The server could not (`recovered: false`, or a server without §14):
    /// the client paged through `history after_seq`.
    History,
    /// Nothing to fetch: no message was missed, or the epoch changed.
    Nothing,
}

/// Someone joined or left a channel joined with
/// [`JoinOptions::presence`] (SPEC §15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    pub channel: ChannelKey,
    /// `true` for a join, `false` for a leave (or a disconnect).
    pub joined: bool,
    pub client_id: String,
    pub client_type: String,
    pub screen_name: Option<String>,
    /// Members after the change.
    pub participant_count: u64,
}

impl PresenceEvent {
    pub(crate) fn from_envelope(channel: ChannelKey, envelope: &Envelope) -> Option<Self> {
        let payload = envelope.payload.as_ref()?;
        let joined = match payload.get("event")?.as_str()? {
            "join" => true,
            "leave" => false,
            _ => return None,
        };
        let client = payload.get("client")?;
        let text = |name: &str| client.get(name).and_then(Value::as_str).map(str::to_owned);
        Some(Self {
            channel,
            joined,
            client_id: text("client_id")?,
            client_type: text("client_type").unwrap_or_default(),
            screen_name: text("screen_name"),
            participant_count: payload
                .get("participant_count")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        })
    }
}

/// The server dropped messages of this channel because this client's
/// queue was full (SPEC §16 `lagged` notice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagReport {
    pub channel: ChannelKey,
    /// Messages of this channel dropped since the previous notice.
    pub dropped: u64,
    /// The `seq` of the first of them.
    pub first_dropped_seq: Option<u64>,
}

impl GapReport {
    /// How many messages were published while away (in the same epoch).
    pub fn missed(&self) -> u64 {
        if self.epoch_changed {
            0
        } else {
            (self.to_seq + 1).saturating_sub(self.from_seq)
        }
    }
}

/// An item of a [`Subscription`](crate::Subscription).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SubscriptionEvent {
    Message(ChannelMessage),
    /// After a reconnect: comes after the messages recovered from history
    /// (marked `replayed`) and before the live messages that follow.
    Gap(GapReport),
    /// The subscription ended: the channel was deleted, or re-joining it
    /// after a reconnect failed. No more events follow.
    Removed {
        reason: String,
    },
    /// A member joined or left (only with [`JoinOptions::presence`]).
    Presence(PresenceEvent),
    /// The server dropped messages of this channel for this slow client
    /// (SPEC §16); fetch them with `history after_seq` if they matter.
    Lagged(LagReport),
}

/// Connection-level events, from [`Client::events`](crate::Client::events).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The connection dropped; reconnecting unless the policy says not to.
    Disconnected { reason: String },
    /// Connected again (a new `client_id`, unless a JWT fixes it); channels
    /// are being re-joined.
    Reconnected { welcome: Welcome, attempts: u32 },
    /// The per-channel result of a reconnect (also sent on the channel's
    /// subscription).
    Gap(GapReport),
    /// An `error` the server sent that answers no pending request (for
    /// example a failed fire-and-forget publish).
    ServerError(Box<crate::error::ServerError>),
    /// A `system` notice.
    System(Box<Envelope>),
    /// The client stopped for good, without reconnecting: a permanent
    /// refusal (HTTP 400/401/403), a replaced connection (4000) or an
    /// operator's disconnect (4003). [`ClientEvent::Closed`] follows.
    Stopped(crate::error::StopReason),
    /// The client gave up reconnecting or was closed.
    Closed,
}
