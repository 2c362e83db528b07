//! Strict decoding of what a client sends (SPEC §3): every alias resolved,
//! every rule checked, every invalid field reported at once.

//!
//! `decode` reads the frame and checks the fields common to every type
//! (the per-field checks are in `fields`); the rules of each type follow:
//! commands in `command` (with the legacy `payload.command` form),
//! telemetry, and publishes, whose `target` module resolves the
//! direct-target aliases.

mod command;
mod fields;
mod target;

use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::envelope::{Envelope, EnvelopeType, PROTOCOL_VERSION};
use crate::error::ProtocolError;
use crate::ids::{ChannelKey, ClientId, MessageId, is_valid_message_id};
use crate::time::{Timestamp, parse_timestamp};

use fields::{Checker, Wire, empty_object, object_map};

/// A client's payload or metadata, kept as the exact JSON text it sent.
pub type RawJson = Box<RawValue>;

/// A valid frame from a client.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Inbound {
    /// A `message`, or a client's `response`/`error` answering another
    /// client: routed to a channel or a direct target (SPEC §4).
    Publish(Publish),
    /// A `command` for the server (SPEC §5).
    Command(CommandRequest),
    /// A client-sent `telemetry` event, to be rebroadcast (SPEC §8).
    Telemetry(ClientTelemetry),
}

impl Inbound {
    pub fn id(&self) -> &MessageId {
        match self {
            Inbound::Publish(publish) => &publish.id,
            Inbound::Command(command) => &command.id,
            Inbound::Telemetry(telemetry) => &telemetry.id,
        }
    }
}

/// Where a published envelope goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Channel(ChannelKey),
    Direct(ClientId),
}

/// A routable envelope. `envelope` is already canonical (aliases resolved,
/// `ack` and unknown fields dropped); the router stamps `sender`,
/// `timestamp`, `seq` and `epoch` on it before encoding it once.
#[derive(Debug, Clone)]
pub struct Publish {
    pub id: MessageId,
    pub target: Target,
    /// The client asked for a `response` once the message is routed.
    pub ack: bool,
    /// `metadata.echo: true`: deliver to the sender too.
    pub echo: bool,
    /// The client's own timestamp (not relayed: the server writes its own).
    pub sent_at: Timestamp,
    pub envelope: Envelope<RawJson>,
}

/// A command with its arguments, `room`/`channel` already defaulted from
/// the envelope (SPEC §3 `args`).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRequest {
    pub id: MessageId,
    pub name: String,
    pub args: Map<String, Value>,
}

/// A client's `telemetry` envelope with its required `payload.eventType`.
#[derive(Debug, Clone)]
pub struct ClientTelemetry {
    pub id: MessageId,
    pub event_type: String,
    pub envelope: Envelope<RawJson>,
}

/// A frame that was not accepted, with what the error reply needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The frame's `id` when it was a valid id: the error's `request_id`.
    pub request_id: Option<MessageId>,
    /// The command name, when the frame was a recognisable command.
    pub command: Option<String>,
    pub error: ProtocolError,
}

impl Rejection {
    fn bare(error: ProtocolError) -> Self {
        Self {
            request_id: None,
            command: None,
            error,
        }
    }
}

/// The type as the client wrote it, before aliases are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputType {
    Message,
    Private,
    Command,
    Response,
    Error,
    Telemetry,
    System,
}

impl InputType {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "message" | "event" => InputType::Message,
            "private" => InputType::Private,
            "command" => InputType::Command,
            "response" | "command_response" => InputType::Response,
            "error" => InputType::Error,
            "telemetry" => InputType::Telemetry,
            "system" => InputType::System,
            _ => return None,
        })
    }
}

/// Decodes and validates one text frame from a client.
pub fn decode(text: &str) -> Result<Inbound, Rejection> {
    if !text.trim_start().starts_with('{') {
        let error = match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => ProtocolError::NotAnObject,
            Err(err) => ProtocolError::NotJson {
                reason: err.to_string(),
            },
        };
        return Err(Rejection::bare(error));
    }
    let wire: Wire<'_> = serde_json::from_str(text).map_err(|err| {
        Rejection::bare(ProtocolError::NotJson {
            reason: err.to_string(),
        })
    })?;

    let mut check = Checker::default();

    // The id first, so that every later rejection can name it.
    let id_text = check.required_string("id", wire.id);
    let id = match id_text {
        Some(text) if is_valid_message_id(&text) => MessageId::new(&text).ok(),
        Some(_) => {
            check.fail(
                "id",
                "must be \"arq_\" followed by 1-124 of A-Z a-z 0-9 _ . : -",
            );
            None
        }
        None => None,
    };
    let reject = |error: ProtocolError, command: Option<String>| Rejection {
        request_id: id.clone(),
        command,
        error,
    };

    match wire.version {
        None => check.fail("version", "is required"),
        Some(raw) => match serde_json::from_str::<String>(raw.get()) {
            Ok(version) if version == PROTOCOL_VERSION => {}
            Ok(version) => {
                return Err(reject(ProtocolError::UnsupportedVersion { version }, None));
            }
            Err(_) => check.fail("version", "must be a string"),
        },
    }

    let input_type = match check.required_string("type", wire.kind) {
        Some(text) => {
            let parsed = InputType::parse(&text);
            if parsed.is_none() {
                check.fail(
                    "type",
                    "must be one of message, command, response, error, telemetry",
                );
            }
            parsed
        }
        None => None,
    };

    let sent_at = match check.required_string("timestamp", wire.timestamp) {
        Some(text) => {
            let parsed = parse_timestamp(&text);
            if parsed.is_none() {
                check.fail("timestamp", "must be an ISO 8601 / RFC 3339 timestamp");
            }
            parsed
        }
        None => None,
    };

    // `room` may carry "room:channel" when `channel` is absent.
    let room_text = check.string("room", wire.room);
    let channel_text = check.string("channel", wire.channel);
    let (room, channel) = match (room_text, channel_text) {
        (Some(room), None) if room.contains(':') => match ChannelKey::parse(&room) {
            Ok(key) => (Some(key.room().to_owned()), Some(key.channel().to_owned())),
            Err(_) => {
                check.fail("room", "must be a room name or \"room:channel\"");
                (None, None)
            }
        },
        (room, channel) => (check.name("room", room), check.name("channel", channel)),
    };

    let payload = check.object("payload", wire.payload);
    let metadata = check.object("metadata", wire.metadata);
    let args = check.object("args", wire.args);
    let command = check.string("command", wire.command);
    let request_id = check.string("request_id", wire.request_id);
    let status = check.string("status", wire.status);
    let error = check.string("error", wire.error);
    let error_code = check.string("error_code", wire.error_code);
    let to_client = check.string("to_client", wire.to_client);
    let ack = check.bool("ack", wire.ack).unwrap_or(false);
    // Metadata is only looked into when it may hold a key that matters.
    let metadata_map = metadata
        .as_deref()
        .filter(|raw| raw.get().contains("echo") || raw.get().contains("to_client"))
        .map(object_map)
        .unwrap_or_default();
    let echo = metadata_map.get("echo") == Some(&Value::Bool(true));

    let command_name = match input_type {
        Some(InputType::Command) => command::name(command, payload.as_deref()),
        _ => None,
    };
    let rejected_command = command_name.clone();

    if let (Some(id), Some(input_type), Some(sent_at), true) =
        (id.clone(), input_type, sent_at, check.details.is_empty())
    {
        if input_type == InputType::System {
            return Err(reject(ProtocolError::SystemType, None));
        }
        let fields = Fields {
            id,
            sent_at,
            room,
            channel,
            payload,
            metadata,
            metadata_map,
            args,
            command_name,
            request_id,
            status,
            error,
            error_code,
            to_client,
            ack,
            echo,
        };
        if let Some(inbound) = fields.into_inbound(input_type, &mut check) {
            return Ok(inbound);
        }
    }
    Err(reject(
        ProtocolError::InvalidFields {
            details: check.details,
        },
        rejected_command,
    ))
}

/// The envelope's fields once each has been type-checked.
struct Fields {
    id: MessageId,
    sent_at: Timestamp,
    room: Option<String>,
    channel: Option<String>,
    payload: Option<RawJson>,
    metadata: Option<RawJson>,
    metadata_map: Map<String, Value>,
    args: Option<RawJson>,
    command_name: Option<String>,
    request_id: Option<String>,
    status: Option<String>,
    error: Option<String>,
    error_code: Option<String>,
    to_client: Option<String>,
    ack: bool,
    echo: bool,
}

impl Fields {
    /// Applies the rules of each type; `None` when `check` gained details.
    fn into_inbound(self, input_type: InputType, check: &mut Checker) -> Option<Inbound> {
        match input_type {
            InputType::Command => self.into_command(check).map(Inbound::Command),
            InputType::Telemetry => self.into_telemetry(check).map(Inbound::Telemetry),
            InputType::Message | InputType::Private | InputType::Response | InputType::Error => {
                self.into_publish(input_type, check).map(Inbound::Publish)
            }
            InputType::System => None,
        }
    }

    fn into_telemetry(self, check: &mut Checker) -> Option<ClientTelemetry> {
        let event_type =
            self.payload.as_deref().map(object_map).and_then(|payload| {
                match payload.get("eventType") {
                    Some(Value::String(event)) if !event.is_empty() => Some(event.clone()),
                    _ => None,
                }
            });
        let Some(event_type) = event_type else {
            check.fail("payload.eventType", "a non-empty string is required");
            return None;
        };
        let mut envelope = Envelope::relayed(EnvelopeType::Telemetry, self.id.as_str());
        envelope.payload = self.payload;
        envelope.metadata = self.metadata;
        Some(ClientTelemetry {
            id: self.id,
            event_type,
            envelope,
        })
    }

    fn into_publish(self, input_type: InputType, check: &mut Checker) -> Option<Publish> {
        let kind = match input_type {
            InputType::Response => EnvelopeType::Response,
            InputType::Error => EnvelopeType::Error,
            _ => EnvelopeType::Message,
        };
        if kind == EnvelopeType::Message && self.payload.is_none() {
            check.fail("payload", "is required for type \"message\" (it may be {})");
        }
        if matches!(kind, EnvelopeType::Response | EnvelopeType::Error) && self.request_id.is_none()
        {
            check.fail(
                "request_id",
                "is required for types \"response\" and \"error\"",
            );
        }

        let target = self.target(input_type, check);
        if !check.details.is_empty() {
            return None;
        }
        let target = target?;

        let mut envelope = Envelope::relayed(kind, self.id.as_str());
        match &target {
            Target::Channel(key) => {
                envelope.room = Some(key.room().to_owned());
                envelope.channel = Some(key.channel().to_owned());
            }
            Target::Direct(client) => envelope.to_client = Some(client.as_str().to_owned()),
        }
        if kind != EnvelopeType::Message {
            envelope.request_id = self.request_id.map(Some);
            envelope.status = self.status;
            envelope.error = self.error;
            envelope.error_code = self.error_code;
        }
        envelope.payload = self.payload;
        // Subscribers always get `metadata` (SPEC §4.1): `{}` when absent.
        envelope.metadata = Some(self.metadata.unwrap_or_else(empty_object));
        Some(Publish {
            id: self.id,
            target,
            ack: self.ack,
            echo: self.echo,
            sent_at: self.sent_at,
            envelope,
        })
    }
}

#[cfg(test)]
mod tests;
