//! Strict decoding of what a client sends (SPEC §3): every alias resolved,
//! every rule checked, every invalid field reported at once.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::envelope::{Envelope, EnvelopeType, PROTOCOL_VERSION};
use crate::error::{FieldError, ProtocolError};
use crate::ids::{ChannelKey, ClientId, MessageId, is_valid_message_id, is_valid_name};
use crate::time::{Timestamp, parse_timestamp};

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

/// The known top-level fields, each kept raw so that a wrong type is
/// reported per field instead of failing the whole frame. Unknown fields
/// (including the ignored `sender`, `from` and `from_client`) are skipped.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    version: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    room: Option<&'a RawValue>,
    #[serde(borrow, default)]
    channel: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(borrow, default)]
    command: Option<&'a RawValue>,
    #[serde(borrow, default)]
    args: Option<&'a RawValue>,
    #[serde(borrow, default)]
    request_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    status: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error_code: Option<&'a RawValue>,
    #[serde(borrow, default)]
    to_client: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ack: Option<&'a RawValue>,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
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

/// Collects per-field problems while the fields are read.
#[derive(Default)]
struct Checker {
    details: Vec<FieldError>,
}

impl Checker {
    fn fail(&mut self, field: &str, message: &str) {
        self.details.push(FieldError::new(field, message));
    }

    fn string(&mut self, field: &str, raw: Option<&RawValue>) -> Option<String> {
        let raw = raw?;
        match serde_json::from_str::<String>(raw.get()) {
            Ok(text) => Some(text),
            Err(_) => {
                self.fail(field, "must be a string");
                None
            }
        }
    }

    fn required_string(&mut self, field: &str, raw: Option<&RawValue>) -> Option<String> {
        if raw.is_none() {
            self.fail(field, "is required");
        }
        self.string(field, raw)
    }

    fn object(&mut self, field: &str, raw: Option<&RawValue>) -> Option<RawJson> {
        let raw = raw?;
        if !raw.get().starts_with('{') {
            self.fail(field, "must be an object");
            None
        } else if nested_deeper_than(raw.get(), MAX_NESTING) {
            self.fail(field, "is nested too deeply (at most 128 levels)");
            None
        } else {
            Some(raw.to_owned())
        }
    }

    fn bool(&mut self, field: &str, raw: Option<&RawValue>) -> Option<bool> {
        let raw = raw?;
        match raw.get() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.fail(field, "must be a boolean");
                None
            }
        }
    }

    fn name(&mut self, field: &str, value: Option<String>) -> Option<String> {
        let value = value?;
        if is_valid_name(&value) {
            Some(value)
        } else {
            self.fail(field, "must be 1-64 characters of A-Z a-z 0-9 _ . -");
            None
        }
    }
}

/// How deeply objects and arrays may nest in `payload`, `metadata` and
/// `args`: the limit of serde_json's own parser, so that anything relayed
/// can also be read back by the server and by typical clients.
pub const MAX_NESTING: usize = 128;

/// Whether valid JSON `text` nests objects/arrays deeper than `max`. JSON
/// of `2 * max` bytes or fewer cannot, so short values are not scanned.
fn nested_deeper_than(text: &str, max: usize) -> bool {
    if text.len() <= 2 * max {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// `{}` as raw JSON.
fn empty_object() -> RawJson {
    RawValue::from_string("{}".to_owned()).expect("{} is valid JSON")
}

/// Parses a JSON object's text into a map (for the few places that look
/// inside a payload or metadata object).
fn object_map(raw: &RawValue) -> Map<String, Value> {
    serde_json::from_str(raw.get()).unwrap_or_default()
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
        Some(InputType::Command) => command.clone().or_else(|| {
            payload
                .as_deref()
                .and_then(|raw| object_map(raw).get("command")?.as_str().map(str::to_owned))
        }),
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

    fn into_command(self, check: &mut Checker) -> Option<CommandRequest> {
        let Some(name) = self.command_name.filter(|name| !name.is_empty()) else {
            check.fail("command", "is required for type \"command\"");
            return None;
        };
        // Legacy form: `payload.command` with `payload.parameters` or `payload.args`.
        let mut args = match (&self.args, &self.payload) {
            (Some(args), _) => object_map(args),
            (None, Some(payload)) => {
                let mut payload = object_map(payload);
                match payload
                    .remove("parameters")
                    .or_else(|| payload.remove("args"))
                {
                    Some(Value::Object(args)) => args,
                    Some(_) => {
                        check.fail("payload.parameters", "must be an object");
                        return None;
                    }
                    None => Map::new(),
                }
            }
            (None, None) => Map::new(),
        };
        if let Some(room) = self.room {
            args.entry("room").or_insert(Value::String(room));
        }
        if let Some(channel) = self.channel {
            args.entry("channel").or_insert(Value::String(channel));
        }
        Some(CommandRequest {
            id: self.id,
            name,
            args,
        })
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

        // Direct target: `to_client`, or its aliases `metadata.to_client`
        // and (for type `private`) `payload.target`.
        let mut direct = self.to_client.clone().map(|id| ("to_client", id));
        if direct.is_none() {
            direct = match self.metadata_map.get("to_client") {
                Some(Value::String(id)) => Some(("metadata.to_client", id.clone())),
                Some(_) => {
                    check.fail("metadata.to_client", "must be a string");
                    None
                }
                None => None,
            };
        }
        if direct.is_none() && input_type == InputType::Private {
            direct = match self
                .payload
                .as_deref()
                .map(object_map)
                .and_then(|p| p.get("target").cloned())
            {
                Some(Value::String(id)) => Some(("payload.target", id)),
                Some(_) => {
                    check.fail("payload.target", "must be a string");
                    None
                }
                None => {
                    check.fail("payload.target", "type \"private\" needs a target client");
                    None
                }
            };
        }

        let target = match (direct, self.room.as_deref(), self.channel.as_deref()) {
            (Some((field, id)), _, _) => match ClientId::new(&id) {
                Ok(client) => Some(Target::Direct(client)),
                Err(_) => {
                    check.fail(field, "must be 1-128 characters of A-Z a-z 0-9 _ . : @ -");
                    None
                }
            },
            (None, Some(room), Some(channel)) => {
                ChannelKey::new(room, channel).ok().map(Target::Channel)
            }
            (None, _, _) => {
                check.fail("channel", "a message needs room and channel, or to_client");
                None
            }
        };
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
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::ErrorCode;

    fn frame(overrides: Value) -> String {
        let mut base = json!({
            "version": "1.0",
            "id": "arq_m1",
            "type": "message",
            "timestamp": "2026-01-01T00:00:00Z",
            "room": "science",
            "channel": "explore",
            "payload": {"text": "hi"},
        });
        let map = base.as_object_mut().expect("object");
        for (key, value) in overrides.as_object().expect("object") {
            if value.is_null() {
                map.remove(key);
            } else {
                map.insert(key.clone(), value.clone());
            }
        }
        base.to_string()
    }

    fn publish(text: &str) -> Publish {
        match decode(text) {
            Ok(Inbound::Publish(publish)) => publish,
            other => panic!("expected a publish, got {other:?}"),
        }
    }

    fn rejection(text: &str) -> Rejection {
        decode(text).expect_err("must be rejected")
    }

    fn fields(rejection: &Rejection) -> Vec<&str> {
        rejection
            .error
            .details()
            .iter()
            .map(|d| d.field.as_str())
            .collect()
    }

    #[test]
    fn a_channel_message_decodes_to_a_canonical_envelope() {
        let publish = publish(&frame(
            json!({"from": "spoof", "sender": "spoof", "extra": 1}),
        ));
        assert_eq!(
            publish.target,
            Target::Channel(ChannelKey::parse("science:explore").expect("key"))
        );
        assert!(!publish.ack);
        assert_eq!(publish.envelope.sender, None);
        assert_eq!(
            publish.envelope.payload.as_deref().map(RawValue::get),
            Some(r#"{"text":"hi"}"#)
        );
        let json: Value = serde_json::from_slice(&publish.envelope.to_json()).expect("json");
        assert!(json.get("extra").is_none() && json.get("from").is_none());
    }

    #[test]
    fn relayed_messages_always_carry_metadata() {
        let publish = publish(&frame(json!({})));
        assert_eq!(
            publish.envelope.metadata.as_deref().map(RawValue::get),
            Some("{}")
        );
    }

    #[test]
    fn room_may_carry_room_and_channel() {
        let publish = publish(&frame(json!({"room": "chat:public", "channel": null})));
        assert_eq!(
            publish.target,
            Target::Channel(ChannelKey::parse("chat:public").expect("key"))
        );
    }

    #[test]
    fn type_aliases_resolve() {
        let event = publish(&frame(json!({"type": "event"})));
        assert_eq!(event.envelope.kind, EnvelopeType::Message);

        let private = publish(&frame(
            json!({"type": "private", "room": null, "channel": null, "payload": {"target": "arq_client_abc"}}),
        ));
        assert_eq!(private.envelope.kind, EnvelopeType::Message);
        assert_eq!(
            private.target,
            Target::Direct(ClientId::new("arq_client_abc").expect("id"))
        );

        let response = publish(&frame(
            json!({"type": "command_response", "request_id": "arq_q"}),
        ));
        assert_eq!(response.envelope.kind, EnvelopeType::Response);
        assert_eq!(response.envelope.request_id, Some(Some("arq_q".to_owned())));
    }

    #[test]
    fn direct_target_aliases() {
        let direct = publish(&frame(json!({"to_client": "arq_client_1"})));
        assert_eq!(
            direct.target,
            Target::Direct(ClientId::new("arq_client_1").expect("id"))
        );
        let meta = publish(&frame(json!({"metadata": {"to_client": "arq_client_2"}})));
        assert_eq!(
            meta.target,
            Target::Direct(ClientId::new("arq_client_2").expect("id"))
        );
    }

    #[test]
    fn version_rules() {
        let missing = rejection(&frame(json!({"version": null})));
        assert_eq!(missing.error.code(), ErrorCode::ValidationError);
        assert_eq!(fields(&missing), ["version"]);
        assert_eq!(
            missing.request_id.as_ref().map(MessageId::as_str),
            Some("arq_m1")
        );

        let number = rejection(&frame(json!({"version": 1.0})));
        assert_eq!(number.error.code(), ErrorCode::ValidationError);

        let other = rejection(&frame(json!({"version": "2.0"})));
        assert_eq!(other.error.code(), ErrorCode::UnsupportedVersion);
        assert_eq!(
            other.request_id.as_ref().map(MessageId::as_str),
            Some("arq_m1")
        );
    }

    #[test]
    fn every_invalid_field_is_listed() {
        let bad = rejection(&frame(
            json!({"id": "nope", "timestamp": "yesterday", "payload": [1], "ack": "yes"}),
        ));
        assert_eq!(bad.error.code(), ErrorCode::ValidationError);
        assert_eq!(bad.request_id, None);
        let listed = fields(&bad);
        for field in ["id", "timestamp", "payload", "ack"] {
            assert!(listed.contains(&field), "{field} missing from {listed:?}");
        }
    }

    #[test]
    fn not_json_and_not_objects_are_validation_errors() {
        for text in [
            "",
            "not json",
            "[1,2]",
            "42",
            "\"s\"",
            "{\"version\":",
            "null",
        ] {
            let rejected = rejection(text);
            assert_eq!(rejected.error.code(), ErrorCode::ValidationError, "{text}");
            assert_eq!(rejected.request_id, None);
        }
    }

    #[test]
    fn duplicate_fields_are_rejected() {
        let text = r#"{"version":"1.0","version":"1.0","id":"arq_1","type":"message","timestamp":"2026-01-01T00:00:00Z","room":"a","channel":"b","payload":{}}"#;
        assert_eq!(rejection(text).error.code(), ErrorCode::ValidationError);
    }

    #[test]
    fn system_from_a_client_is_forbidden() {
        let rejected = rejection(&frame(json!({"type": "system"})));
        assert_eq!(rejected.error, ProtocolError::SystemType);
        assert_eq!(rejected.error.code(), ErrorCode::Forbidden);
    }

    #[test]
    fn messages_need_a_target_and_a_payload() {
        let no_target = rejection(&frame(json!({"room": null, "channel": null})));
        assert_eq!(fields(&no_target), ["channel"]);
        let room_only = rejection(&frame(json!({"channel": null})));
        assert_eq!(fields(&room_only), ["channel"]);
        let no_payload = rejection(&frame(json!({"payload": null})));
        assert_eq!(fields(&no_payload), ["payload"]);
        let bad_room = rejection(&frame(json!({"room": "bad room"})));
        assert_eq!(fields(&bad_room), ["room"]);
        let long = rejection(&frame(json!({"channel": "x".repeat(65)})));
        assert_eq!(fields(&long), ["channel"]);
    }

    #[test]
    fn responses_need_request_id_and_a_target() {
        let rejected = rejection(&frame(json!({"type": "response"})));
        assert_eq!(fields(&rejected), ["request_id"]);
        let untargeted = rejection(&frame(
            json!({"type": "error", "request_id": "arq_x", "room": null, "channel": null}),
        ));
        assert_eq!(fields(&untargeted), ["channel"]);
    }

    #[test]
    fn commands_take_args_and_default_room_and_channel() {
        let text = frame(
            json!({"type": "command", "command": "join_channel", "payload": null, "args": {"channel": "other"}}),
        );
        let Ok(Inbound::Command(command)) = decode(&text) else {
            panic!("command")
        };
        assert_eq!(command.name, "join_channel");
        assert_eq!(command.args["room"], "science");
        assert_eq!(command.args["channel"], "other");
    }

    #[test]
    fn legacy_commands_read_the_payload() {
        let text = frame(
            json!({"type": "command", "room": null, "channel": null, "payload": {"command": "ping", "parameters": {"x": 1}}}),
        );
        let Ok(Inbound::Command(command)) = decode(&text) else {
            panic!("command")
        };
        assert_eq!(command.name, "ping");
        assert_eq!(command.args["x"], 1);
        let text =
            frame(json!({"type": "command", "payload": {"command": "status", "args": {"y": 2}}}));
        let Ok(Inbound::Command(command)) = decode(&text) else {
            panic!("command")
        };
        assert_eq!(command.args["y"], 2);
    }

    #[test]
    fn commands_need_a_name() {
        let rejected = rejection(&frame(json!({"type": "command", "payload": {}})));
        assert_eq!(fields(&rejected), ["command"]);
        let mistyped = rejection(&frame(json!({"type": "command", "command": 5})));
        assert_eq!(fields(&mistyped), ["command"]);
    }

    #[test]
    fn telemetry_needs_an_event_type() {
        let ok = frame(json!({"type": "telemetry", "payload": {"eventType": "custom"}}));
        let Ok(Inbound::Telemetry(event)) = decode(&ok) else {
            panic!("telemetry")
        };
        assert_eq!(event.event_type, "custom");
        let empty = rejection(&frame(
            json!({"type": "telemetry", "payload": {"eventType": ""}}),
        ));
        assert_eq!(fields(&empty), ["payload.eventType"]);
        let missing = rejection(&frame(json!({"type": "telemetry", "payload": null})));
        assert_eq!(fields(&missing), ["payload.eventType"]);
    }

    #[test]
    fn echo_and_ack_flags() {
        let publish = publish(&frame(json!({"ack": true, "metadata": {"echo": true}})));
        assert!(publish.ack && publish.echo);
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let deep = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        let ok: Value = serde_json::from_str(&deep(120)).expect("json");
        assert!(decode(&frame(json!({"payload": ok}))).is_ok());
        let text = frame(json!({"payload": {}}))
            .replace("\"payload\":{}", &format!("\"payload\":{}", deep(200)));
        assert_eq!(fields(&rejection(&text)), ["payload"]);
        let text = frame(json!({"type": "command", "command": "ping"})).replacen(
            '{',
            &format!("{{\"args\":{},", deep(100_000)),
            1,
        );
        assert_eq!(fields(&rejection(&text)), ["args"]);
        // Brackets inside strings do not count.
        let strings = json!({"s": "[".repeat(1000)});
        assert!(decode(&frame(json!({"payload": strings}))).is_ok());
    }

    #[test]
    fn unknown_types_are_rejected() {
        assert_eq!(
            fields(&rejection(&frame(json!({"type": "shout"})))),
            ["type"]
        );
    }
}
