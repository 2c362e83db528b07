//! Telemetry events (SPEC §8) and their `telemetry` envelope.

use std::borrow::Cow;

use arqon_config::StorageBackend;
use arqon_protocol::{
    ChannelKey, ClientId, ClientTelemetry, ClientType, Envelope, EnvelopeType, ErrorCode,
    MessageId, RawJson,
};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::hub::ChannelTarget;

/// One telemetry event. Each variant carries exactly the payload fields
/// SPEC §8 lists for it; [`Event::kind`] is its `eventType`.
///
/// Identifiers are the protocol's validated newtypes; a `client_id` that
/// is an `Option` is written `null` when absent (a server action, such as a
/// system channel created at startup).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// First frame on every telemetry socket, whatever its filter.
    TelemetryConnected {
        server_version: Cow<'static, str>,
        connections: usize,
        rooms: usize,
        channels: usize,
    },
    /// A bus client finished its handshake.
    ClientConnected {
        client_id: ClientId,
        client_type: ClientType,
        /// `null` when the client gave none.
        screen_name: Option<String>,
    },
    /// A bus client is gone; `reason` is a short, bounded word such as
    /// `normal`, `idle_timeout`, `slow_consumer`, `replaced`, `violations`,
    /// `shutdown` (never internal error text).
    ClientDisconnected {
        client_id: ClientId,
        reason: Cow<'static, str>,
        duration_ms: u64,
    },
    /// A client joined `channel` (payload fields `room` and `channel`).
    ChannelJoined {
        client_id: Option<ClientId>,
        channel: ChannelKey,
    },
    /// A client left `channel`, or was removed from it.
    ChannelLeft {
        client_id: Option<ClientId>,
        channel: ChannelKey,
    },
    /// A channel was created (explicitly, auto-created, or at startup).
    ChannelCreated {
        client_id: Option<ClientId>,
        channel: ChannelKey,
    },
    /// A channel was deleted: by `client_id`, or by the server with a
    /// `reason` (`"idle"`: an auto-created channel left empty for
    /// `ARQONBUS_EMPTY_CHANNEL_TTL_SECS`, SPEC §18).
    ChannelDeleted {
        client_id: Option<ClientId>,
        channel: ChannelKey,
        reason: Option<&'static str>,
    },
    /// A command was answered.
    CommandExecuted {
        client_id: ClientId,
        command: Cow<'static, str>,
        status: CommandStatus,
        duration_us: u64,
    },
    /// An `error` envelope was sent to a client.
    Error {
        client_id: Option<ClientId>,
        error_code: ErrorCode,
    },
    /// Storage went degraded (SPEC §7).
    StorageDegraded {
        backend: StorageBackend,
        reason: Cow<'static, str>,
    },
    /// Storage is healthy again.
    StorageRecovered {
        backend: StorageBackend,
        reason: Cow<'static, str>,
    },
    /// Periodic statistics, see [`crate::StatsSampler`].
    Stats(Stats),
    /// What an `ai-agent` client did; published to the dashboard channel.
    AgentActivity {
        client_id: ClientId,
        screen_name: Option<String>,
        personality: Option<String>,
        action: AgentAction,
        /// The channel acted on, when the action has one (`room` and
        /// `channel` are omitted otherwise).
        channel: Option<ChannelKey>,
    },
    /// A `telemetry` envelope a client sent on the bus, rebroadcast with its
    /// sender set (SPEC §8).
    Custom(ClientEvent),
}

/// The `stats` event (SPEC §8).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stats {
    pub connections: usize,
    /// Messages received per second over the interval.
    pub messages_in_per_sec: f64,
    /// Deliveries to clients per second over the interval.
    pub messages_out_per_sec: f64,
    pub route_latency_p50_us: u64,
    pub route_latency_p99_us: u64,
    pub rooms: usize,
    pub channels: usize,
    /// What the dashboard needs besides the counters (SPEC §19); its
    /// fields are written only when it is present.
    pub detail: Option<StatsDetail>,
}

/// The dashboard fields of a `stats` event (SPEC §19): `clients_by_type`
/// (`{"human":n,…}`, every type listed), `top_channels` (the channels with
/// most members, largest first, `[{room,channel,members}]`) and `storage`
/// (`{backend,degraded}`). Bounded: the server keeps
/// [`StatsDetail::TOP_CHANNELS`] channels.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatsDetail {
    pub clients_by_type: Vec<(ClientType, usize)>,
    pub top_channels: Vec<(ChannelKey, usize)>,
    pub storage: StorageState,
}

impl StatsDetail {
    /// How many channels `top_channels` lists at most.
    pub const TOP_CHANNELS: usize = 10;
}

/// The storage backend and whether it is degraded (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorageState {
    pub backend: StorageBackend,
    pub degraded: bool,
}

/// `clients_by_type` as a JSON object.
struct ByType<'a>(&'a [(ClientType, usize)]);

impl Serialize for ByType<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (kind, count) in self.0 {
            map.serialize_entry(kind.as_str(), count)?;
        }
        map.end()
    }
}

/// `top_channels` as `[{room,channel,members}]`.
struct TopChannels<'a>(&'a [(ChannelKey, usize)]);

impl Serialize for TopChannels<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for (key, members) in self.0 {
            seq.serialize_element(&ChannelMembers {
                room: key.room(),
                channel: key.channel(),
                members: *members,
            })?;
        }
        seq.end()
    }
}

#[derive(serde::Serialize)]
struct ChannelMembers<'a> {
    room: &'a str,
    channel: &'a str,
    members: usize,
}

impl Serialize for StorageState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("backend", self.backend.as_str())?;
        map.serialize_entry("degraded", &self.degraded)?;
        map.end()
    }
}

/// The `status` of a `command_executed` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandStatus {
    Success,
    Error,
}

impl CommandStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Success => "success",
            CommandStatus::Error => "error",
        }
    }
}

/// The `action` of an `agent_activity` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentAction {
    Connect,
    Disconnect,
    Join,
    Leave,
    Message,
    Command,
}

impl AgentAction {
    pub const fn as_str(self) -> &'static str {
        match self {
            AgentAction::Connect => "connect",
            AgentAction::Disconnect => "disconnect",
            AgentAction::Join => "join",
            AgentAction::Leave => "leave",
            AgentAction::Message => "message",
            AgentAction::Command => "command",
        }
    }
}

/// A client's `telemetry` envelope, already validated by
/// [`arqon_protocol::decode`] (so its payload has a non-empty `eventType`).
/// It keeps the client's `id`, payload and metadata as sent.
#[derive(Debug, Clone)]
pub struct ClientEvent {
    pub sender: ClientId,
    pub id: MessageId,
    /// The client's `eventType`, for logs; the payload carries it too.
    pub event_type: String,
    pub payload: Option<RawJson>,
    pub metadata: Option<RawJson>,
}

impl ClientEvent {
    /// The event `sender` sent. Copies the raw payload and metadata text
    /// (the caller usually routes `telemetry` itself as well).
    pub fn from_client(sender: &ClientId, telemetry: &ClientTelemetry) -> Self {
        Self {
            sender: sender.clone(),
            id: telemetry.id.clone(),
            event_type: telemetry.event_type.clone(),
            payload: telemetry.envelope.payload.clone(),
            metadata: telemetry.envelope.metadata.clone(),
        }
    }
}

impl PartialEq for ClientEvent {
    fn eq(&self, other: &Self) -> bool {
        let raw = |value: &Option<RawJson>| value.as_ref().map(|raw| raw.get().to_owned());
        self.sender == other.sender
            && self.id == other.id
            && self.event_type == other.event_type
            && raw(&self.payload) == raw(&other.payload)
            && raw(&self.metadata) == raw(&other.metadata)
    }
}

impl Event {
    /// Every `eventType` this crate emits, in SPEC §8 order, plus `custom`
    /// for client-sent events: the names [`crate::EventFilter`] accepts.
    pub const KINDS: [&'static str; 14] = [
        "telemetry_connected",
        "client_connected",
        "client_disconnected",
        "channel_joined",
        "channel_left",
        "channel_created",
        "channel_deleted",
        "command_executed",
        "error",
        "storage_degraded",
        "storage_recovered",
        "stats",
        "agent_activity",
        "custom",
    ];

    /// Whether `event_type` is one the server emits itself (SPEC §8): a
    /// client may not send telemetry under these names (SPEC §18).
    pub fn is_server_kind(event_type: &str) -> bool {
        Self::KINDS
            .iter()
            .any(|kind| *kind != "custom" && *kind == event_type)
    }

    /// The `eventType` of the event. A client-sent event ([`Event::Custom`])
    /// is `"custom"` here (its own `eventType` is in its payload): that is
    /// the name to filter on.
    pub const fn kind(&self) -> &'static str {
        Self::KINDS[self.index()]
    }

    /// The position of [`Event::kind`] in [`Event::KINDS`].
    pub(crate) const fn index(&self) -> usize {
        match self {
            Event::TelemetryConnected { .. } => 0,
            Event::ClientConnected { .. } => 1,
            Event::ClientDisconnected { .. } => 2,
            Event::ChannelJoined { .. } => 3,
            Event::ChannelLeft { .. } => 4,
            Event::ChannelCreated { .. } => 5,
            Event::ChannelDeleted { .. } => 6,
            Event::CommandExecuted { .. } => 7,
            Event::Error { .. } => 8,
            Event::StorageDegraded { .. } => 9,
            Event::StorageRecovered { .. } => 10,
            Event::Stats(_) => 11,
            Event::AgentActivity { .. } => 12,
            Event::Custom(_) => 13,
        }
    }

    /// The channel the event is published to: `agent_activity` goes to the
    /// dashboard channel, everything else to the telemetry channel.
    pub const fn target(&self) -> ChannelTarget {
        match self {
            Event::AgentActivity { .. } => ChannelTarget::Dashboard,
            _ => ChannelTarget::Telemetry,
        }
    }

    /// The event's `telemetry` envelope as JSON, addressed to `channel`
    /// (`room`/`channel` are omitted when it is `None`). The hub calls this
    /// once per event, whatever the number of subscribers.
    pub fn to_json(&self, channel: Option<&ChannelKey>) -> Vec<u8> {
        match self {
            Event::Custom(custom) => {
                let mut envelope: Envelope<RawJson> = Envelope::new(EnvelopeType::Telemetry);
                envelope.id = custom.id.as_str().to_owned();
                envelope.sender = Some(custom.sender.as_str().to_owned());
                address(&mut envelope, channel);
                envelope.payload = custom.payload.clone();
                envelope.metadata = custom.metadata.clone();
                envelope.to_json()
            }
            _ => {
                let mut envelope: Envelope<Payload<'_>> =
                    Envelope::from_server(EnvelopeType::Telemetry);
                address(&mut envelope, channel);
                envelope.payload = Some(Payload(self));
                envelope.to_json()
            }
        }
    }
}

fn address<P>(envelope: &mut Envelope<P>, channel: Option<&ChannelKey>) {
    if let Some(key) = channel {
        envelope.room = Some(key.room().to_owned());
        envelope.channel = Some(key.channel().to_owned());
    }
}

/// The `payload` of a server event: `eventType` first, then the SPEC §8
/// fields in the order the SPEC lists them.
struct Payload<'a>(&'a Event);

impl Serialize for Payload<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("eventType", event.kind())?;
        match event {
            Event::TelemetryConnected {
                server_version,
                connections,
                rooms,
                channels,
            } => {
                map.serialize_entry("server_version", server_version)?;
                map.serialize_entry("connections", connections)?;
                map.serialize_entry("rooms", rooms)?;
                map.serialize_entry("channels", channels)?;
            }
            Event::ClientConnected {
                client_id,
                client_type,
                screen_name,
            } => {
                map.serialize_entry("client_id", client_id.as_str())?;
                map.serialize_entry("client_type", client_type.as_str())?;
                map.serialize_entry("screen_name", screen_name)?;
            }
            Event::ClientDisconnected {
                client_id,
                reason,
                duration_ms,
            } => {
                map.serialize_entry("client_id", client_id.as_str())?;
                map.serialize_entry("reason", reason)?;
                map.serialize_entry("duration_ms", duration_ms)?;
            }
            Event::ChannelJoined { client_id, channel }
            | Event::ChannelLeft { client_id, channel }
            | Event::ChannelCreated { client_id, channel } => {
                map.serialize_entry("client_id", &client_id.as_ref().map(ClientId::as_str))?;
                map.serialize_entry("room", channel.room())?;
                map.serialize_entry("channel", channel.channel())?;
            }
            Event::ChannelDeleted {
                client_id,
                channel,
                reason,
            } => {
                map.serialize_entry("client_id", &client_id.as_ref().map(ClientId::as_str))?;
                map.serialize_entry("room", channel.room())?;
                map.serialize_entry("channel", channel.channel())?;
                if let Some(reason) = reason {
                    map.serialize_entry("reason", reason)?;
                }
            }
            Event::CommandExecuted {
                client_id,
                command,
                status,
                duration_us,
            } => {
                map.serialize_entry("client_id", client_id.as_str())?;
                map.serialize_entry("command", command)?;
                map.serialize_entry("status", status.as_str())?;
                map.serialize_entry("duration_us", duration_us)?;
            }
            Event::Error {
                client_id,
                error_code,
            } => {
                map.serialize_entry("client_id", &client_id.as_ref().map(ClientId::as_str))?;
                map.serialize_entry("error_code", error_code.as_str())?;
            }
            Event::StorageDegraded { backend, reason }
            | Event::StorageRecovered { backend, reason } => {
                map.serialize_entry("backend", backend.as_str())?;
                map.serialize_entry("reason", reason)?;
            }
            Event::Stats(stats) => {
                map.serialize_entry("connections", &stats.connections)?;
                map.serialize_entry("messages_in_per_sec", &finite(stats.messages_in_per_sec))?;
                map.serialize_entry("messages_out_per_sec", &finite(stats.messages_out_per_sec))?;
                map.serialize_entry("route_latency_p50_us", &stats.route_latency_p50_us)?;
                map.serialize_entry("route_latency_p99_us", &stats.route_latency_p99_us)?;
                map.serialize_entry("rooms", &stats.rooms)?;
                map.serialize_entry("channels", &stats.channels)?;
                if let Some(detail) = &stats.detail {
                    map.serialize_entry("clients_by_type", &ByType(&detail.clients_by_type))?;
                    map.serialize_entry("top_channels", &TopChannels(&detail.top_channels))?;
                    map.serialize_entry("storage", &detail.storage)?;
                }
            }
            Event::AgentActivity {
                client_id,
                screen_name,
                personality,
                action,
                channel,
            } => {
                map.serialize_entry("client_id", client_id.as_str())?;
                map.serialize_entry("screen_name", screen_name)?;
                map.serialize_entry("personality", personality)?;
                map.serialize_entry("action", action.as_str())?;
                if let Some(key) = channel {
                    map.serialize_entry("room", key.room())?;
                    map.serialize_entry("channel", key.channel())?;
                }
            }
            // Encoded from the client's own payload in `Event::to_json`.
            Event::Custom(_) => {}
        }
        map.end()
    }
}

/// A rate as a JSON number: never `NaN` or infinite (which JSON cannot
/// carry and serde_json would write as `null`).
fn finite(value: f64) -> f64 {
    if value.is_finite() { value } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn client() -> ClientId {
        ClientId::new("arq_client_0123456789abcdef0123456789abcdef").expect("valid")
    }

    fn key(text: &str) -> ChannelKey {
        ChannelKey::parse(text).expect("valid key")
    }

    fn telemetry_key() -> ChannelKey {
        key("integriguard:telemetry-stream")
    }

    /// The envelope of `event` sent to the telemetry channel, parsed.
    fn encode(event: &Event) -> Value {
        serde_json::from_slice(&event.to_json(Some(&telemetry_key()))).expect("valid JSON")
    }

    fn assert_envelope(json: &Value, kind: &str, room: &str, channel: &str) {
        assert_eq!(json["version"], "1.0");
        assert_eq!(json["type"], "telemetry");
        assert_eq!(json["sender"], "arqonbus");
        assert_eq!(json["room"], room);
        assert_eq!(json["channel"], channel);
        assert_eq!(json["payload"]["eventType"], kind);
        let id = json["id"].as_str().expect("id");
        assert!(arqon_protocol::is_valid_message_id(id), "{id}");
        let timestamp = json["timestamp"].as_str().expect("timestamp");
        assert!(timestamp.ends_with('Z'), "{timestamp}");
        assert!(arqon_protocol::parse_timestamp(timestamp).is_some());
    }

    /// Every server event, with the exact payload SPEC §8 gives it.
    fn cases() -> Vec<(Event, Value)> {
        let id = client();
        let general = key("lobby:general");
        vec![
            (
                Event::TelemetryConnected {
                    server_version: "0.1.0".into(),
                    connections: 3,
                    rooms: 2,
                    channels: 4,
                },
                json!({"eventType": "telemetry_connected", "server_version": "0.1.0",
                       "connections": 3, "rooms": 2, "channels": 4}),
            ),
            (
                Event::ClientConnected {
                    client_id: id.clone(),
                    client_type: ClientType::AiAgent,
                    screen_name: None,
                },
                json!({"eventType": "client_connected", "client_id": id.as_str(),
                       "client_type": "ai-agent", "screen_name": null}),
            ),
            (
                Event::ClientDisconnected {
                    client_id: id.clone(),
                    reason: "idle_timeout".into(),
                    duration_ms: 1500,
                },
                json!({"eventType": "client_disconnected", "client_id": id.as_str(),
                       "reason": "idle_timeout", "duration_ms": 1500}),
            ),
            (
                Event::ChannelJoined {
                    client_id: Some(id.clone()),
                    channel: general.clone(),
                },
                json!({"eventType": "channel_joined", "client_id": id.as_str(),
                       "room": "lobby", "channel": "general"}),
            ),
            (
                Event::ChannelLeft {
                    client_id: Some(id.clone()),
                    channel: general.clone(),
                },
                json!({"eventType": "channel_left", "client_id": id.as_str(),
                       "room": "lobby", "channel": "general"}),
            ),
            (
                Event::ChannelCreated {
                    client_id: None,
                    channel: general.clone(),
                },
                json!({"eventType": "channel_created", "client_id": null,
                       "room": "lobby", "channel": "general"}),
            ),
            (
                Event::ChannelDeleted {
                    client_id: Some(id.clone()),
                    channel: general.clone(),
                    reason: None,
                },
                json!({"eventType": "channel_deleted", "client_id": id.as_str(),
                       "room": "lobby", "channel": "general"}),
            ),
            (
                Event::ChannelDeleted {
                    client_id: None,
                    channel: general.clone(),
                    reason: Some("idle"),
                },
                json!({"eventType": "channel_deleted", "client_id": null,
                       "room": "lobby", "channel": "general", "reason": "idle"}),
            ),
            (
                Event::CommandExecuted {
                    client_id: id.clone(),
                    command: "join_channel".into(),
                    status: CommandStatus::Error,
                    duration_us: 42,
                },
                json!({"eventType": "command_executed", "client_id": id.as_str(),
                       "command": "join_channel", "status": "error", "duration_us": 42}),
            ),
            (
                Event::Error {
                    client_id: Some(id.clone()),
                    error_code: ErrorCode::ChannelNotFound,
                },
                json!({"eventType": "error", "client_id": id.as_str(),
                       "error_code": "CHANNEL_NOT_FOUND"}),
            ),
            (
                Event::StorageDegraded {
                    backend: StorageBackend::Redis,
                    reason: "connection refused".into(),
                },
                json!({"eventType": "storage_degraded", "backend": "redis",
                       "reason": "connection refused"}),
            ),
            (
                Event::StorageRecovered {
                    backend: StorageBackend::Redis,
                    reason: "reconnected".into(),
                },
                json!({"eventType": "storage_recovered", "backend": "redis",
                       "reason": "reconnected"}),
            ),
            (
                Event::Stats(Stats {
                    connections: 10,
                    messages_in_per_sec: 12.5,
                    messages_out_per_sec: 25.0,
                    route_latency_p50_us: 40,
                    route_latency_p99_us: 900,
                    rooms: 2,
                    channels: 3,
                    detail: None,
                }),
                json!({"eventType": "stats", "connections": 10, "messages_in_per_sec": 12.5,
                       "messages_out_per_sec": 25.0, "route_latency_p50_us": 40,
                       "route_latency_p99_us": 900, "rooms": 2, "channels": 3}),
            ),
            (
                Event::AgentActivity {
                    client_id: id.clone(),
                    screen_name: Some("Ada".to_owned()),
                    personality: None,
                    action: AgentAction::Join,
                    channel: Some(general.clone()),
                },
                json!({"eventType": "agent_activity", "client_id": id.as_str(),
                       "screen_name": "Ada", "personality": null, "action": "join",
                       "room": "lobby", "channel": "general"}),
            ),
            (
                Event::AgentActivity {
                    client_id: id.clone(),
                    screen_name: None,
                    personality: Some("curious".to_owned()),
                    action: AgentAction::Connect,
                    channel: None,
                },
                json!({"eventType": "agent_activity", "client_id": id.as_str(),
                       "screen_name": null, "personality": "curious", "action": "connect"}),
            ),
        ]
    }

    #[test]
    fn every_server_event_has_its_exact_payload() {
        let mut seen = std::collections::HashSet::new();
        for (event, payload) in cases() {
            let json = encode(&event);
            assert_envelope(&json, event.kind(), "integriguard", "telemetry-stream");
            assert_eq!(json["payload"], payload, "{}", event.kind());
            seen.insert(event.kind());
        }
        // Every kind but `custom` is covered above.
        assert_eq!(seen.len(), Event::KINDS.len() - 1);
        assert!(!seen.contains("custom"));
    }

    #[test]
    fn event_type_is_written_first() {
        for (event, _) in cases() {
            let text = String::from_utf8(event.to_json(None)).expect("utf8");
            let start = format!("\"payload\":{{\"eventType\":\"{}\"", event.kind());
            assert!(text.contains(&start), "{text}");
            let json: Value = serde_json::from_str(&text).expect("json");
            assert!(json.get("room").is_none() && json.get("channel").is_none());
        }
    }

    #[test]
    fn only_agent_activity_targets_the_dashboard() {
        for (event, _) in cases() {
            let expected = if event.kind() == "agent_activity" {
                ChannelTarget::Dashboard
            } else {
                ChannelTarget::Telemetry
            };
            assert_eq!(event.target(), expected, "{}", event.kind());
        }
    }

    #[test]
    fn custom_events_keep_the_client_payload_id_and_sender() {
        let frame = json!({"version": "1.0", "id": "arq_t1", "type": "telemetry",
            "timestamp": "2026-01-01T00:00:00Z", "sender": "spoofed",
            "payload": {"eventType": "heartbeat", "cpu": 0.5},
            "metadata": {"source": "sdk"}})
        .to_string();
        let Ok(arqon_protocol::Inbound::Telemetry(telemetry)) = arqon_protocol::decode(&frame)
        else {
            panic!("a valid client telemetry frame")
        };
        let event = Event::Custom(ClientEvent::from_client(&client(), &telemetry));
        assert_eq!(event.kind(), "custom");
        assert_eq!(event.target(), ChannelTarget::Telemetry);
        let json = encode(&event);
        assert_eq!(json["type"], "telemetry");
        assert_eq!(json["id"], "arq_t1");
        assert_eq!(json["sender"], client().as_str());
        assert_eq!(json["room"], "integriguard");
        assert_eq!(json["channel"], "telemetry-stream");
        assert_eq!(
            json["payload"],
            json!({"eventType": "heartbeat", "cpu": 0.5})
        );
        assert_eq!(json["metadata"], json!({"source": "sdk"}));
        assert_ne!(json["timestamp"], "2026-01-01T00:00:00Z");
    }

    #[test]
    fn stats_detail_is_written_when_present() {
        let event = Event::Stats(Stats {
            connections: 3,
            detail: Some(StatsDetail {
                clients_by_type: vec![(ClientType::Human, 2), (ClientType::AiAgent, 1)],
                top_channels: vec![(ChannelKey::new("lobby", "general").expect("valid"), 2)],
                storage: StorageState {
                    backend: StorageBackend::Redis,
                    degraded: true,
                },
            }),
            ..Stats::default()
        });
        let payload = &encode(&event)["payload"];
        assert_eq!(
            payload["clients_by_type"],
            json!({"human": 2, "ai-agent": 1})
        );
        assert_eq!(
            payload["top_channels"],
            json!([{"room": "lobby", "channel": "general", "members": 2}])
        );
        assert_eq!(
            payload["storage"],
            json!({"backend": "redis", "degraded": true})
        );
    }

    #[test]
    fn non_finite_rates_are_written_as_zero() {
        let event = Event::Stats(Stats {
            messages_in_per_sec: f64::NAN,
            messages_out_per_sec: f64::INFINITY,
            ..Stats::default()
        });
        let json = encode(&event);
        assert_eq!(json["payload"]["messages_in_per_sec"], 0.0);
        assert_eq!(json["payload"]["messages_out_per_sec"], 0.0);
    }

    #[test]
    fn kinds_match_their_index() {
        for (event, _) in cases() {
            assert_eq!(Event::KINDS[event.index()], event.kind());
        }
    }
}
