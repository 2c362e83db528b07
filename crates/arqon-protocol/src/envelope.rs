//! The envelope as it travels on the wire (SPEC §3), and the envelopes the
//! server writes: replies, errors, notices.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

use crate::error::{ErrorCode, FieldError};
use crate::ids::MessageId;
use crate::time::now_rfc3339;

/// The only protocol version this crate speaks.
pub const PROTOCOL_VERSION: &str = "1.0";
/// The `sender` of everything the server itself writes.
pub const SERVER_SENDER: &str = "arqonbus";

/// The canonical `type` of an envelope. Input aliases (`event`, `private`,
/// `command_response`) are resolved by [`crate::decode`]; this enum only
/// holds canonical names, which are the only ones ever sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvelopeType {
    Message,
    Command,
    Response,
    Error,
    Telemetry,
    /// Server-only notices; a client sending it gets `FORBIDDEN`.
    System,
}

impl EnvelopeType {
    pub const fn as_str(self) -> &'static str {
        match self {
            EnvelopeType::Message => "message",
            EnvelopeType::Command => "command",
            EnvelopeType::Response => "response",
            EnvelopeType::Error => "error",
            EnvelopeType::Telemetry => "telemetry",
            EnvelopeType::System => "system",
        }
    }
}

/// One frame of the protocol.
///
/// `P` is how `payload` and `metadata` are held: a parsed [`Value`] by
/// default (handy for clients and tests), or a `Box<RawValue>` on the
/// server's relay path, where a client's payload is copied through without
/// being parsed into a tree and serialized again.
///
/// Fields are written in a fixed order and absent optional fields are
/// omitted, except `request_id`, which an `error` always carries (`null`
/// when the offending frame had no valid id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P = Value> {
    pub version: String,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EnvelopeType,
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Map<String, Value>>,
    /// `Some(None)` is written as `"request_id": null`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_or_null",
        serialize_with = "serialize_request_id"
    )]
    pub request_id: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub payload: Option<P>,
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub metadata: Option<P>,
}

fn present_or_null<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(de).map(Some)
}

fn serialize_request_id<S: Serializer>(
    value: &Option<Option<String>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(Some(id)) => serializer.serialize_str(id),
        _ => serializer.serialize_none(),
    }
}

impl<P> Envelope<P> {
    /// An empty envelope of `kind` with a fresh id and the current time.
    pub fn new(kind: EnvelopeType) -> Self {
        let mut envelope = Self::relayed(kind, MessageId::generate().as_str());
        envelope.timestamp = now_rfc3339();
        envelope
    }

    /// An envelope carrying a client's `id`, with no timestamp yet: the
    /// router stamps the time when it routes it.
    pub(crate) fn relayed(kind: EnvelopeType, id: &str) -> Self {
        Self {
            version: PROTOCOL_VERSION.to_owned(),
            id: id.to_owned(),
            kind,
            timestamp: String::new(),
            room: None,
            channel: None,
            sender: None,
            to_client: None,
            command: None,
            args: None,
            request_id: None,
            status: None,
            error: None,
            error_code: None,
            ack: None,
            seq: None,
            epoch: None,
            payload: None,
            metadata: None,
        }
    }

    /// An envelope the server writes on its own behalf.
    pub fn from_server(kind: EnvelopeType) -> Self {
        let mut envelope = Self::new(kind);
        envelope.sender = Some(SERVER_SENDER.to_owned());
        envelope
    }
}

impl<P: Serialize> Envelope<P> {
    /// The frame's JSON text.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing this struct cannot fail: every field is a string,
        // number, bool, map with string keys, or an already valid JSON value.
        serde_json::to_vec(self).expect("an envelope always serializes")
    }
}

impl Envelope {
    /// A successful reply to `request_id`: to a command when `command` is
    /// given, otherwise to a published message (an ack, SPEC §4.3).
    pub fn response(request_id: &MessageId, command: Option<&str>, payload: Value) -> Self {
        let mut envelope = Self::from_server(EnvelopeType::Response);
        envelope.request_id = Some(Some(request_id.as_str().to_owned()));
        envelope.status = Some("success".to_owned());
        envelope.command = command.map(str::to_owned);
        envelope.payload = Some(payload);
        envelope
    }

    /// An `error` envelope (SPEC §6). `payload` carries the HTTP-like code,
    /// the details, and any `extra` fields (such as `retry_after_ms`).
    pub fn error(
        request_id: Option<&MessageId>,
        command: Option<&str>,
        code: ErrorCode,
        message: impl Into<String>,
        details: &[FieldError],
        extra: Option<Map<String, Value>>,
    ) -> Self {
        let mut payload = extra.unwrap_or_default();
        payload.insert("code".to_owned(), json!(code.http_status()));
        payload.insert("details".to_owned(), json!(details));
        let mut envelope = Self::from_server(EnvelopeType::Error);
        envelope.request_id = Some(request_id.map(|id| id.as_str().to_owned()));
        envelope.status = Some("error".to_owned());
        envelope.command = command.map(str::to_owned);
        envelope.error_code = Some(code.as_str().to_owned());
        envelope.error = Some(message.into());
        envelope.payload = Some(Value::Object(payload));
        envelope
    }

    /// A server `message` carrying `payload`, such as the welcome frame.
    pub fn server_message(payload: Value) -> Self {
        let mut envelope = Self::from_server(EnvelopeType::Message);
        envelope.payload = Some(payload);
        envelope
    }

    /// A server-only `system` notice about a channel.
    pub fn system(room: &str, channel: &str, payload: Value) -> Self {
        let mut envelope = Self::from_server(EnvelopeType::System);
        envelope.room = Some(room.to_owned());
        envelope.channel = Some(channel.to_owned());
        envelope.payload = Some(payload);
        envelope
    }

    /// The error code of an `error` envelope, when it is one this crate knows.
    pub fn error_code(&self) -> Option<ErrorCode> {
        let code = self.error_code.as_deref()?;
        ErrorCode::ALL
            .into_iter()
            .find(|known| known.as_str() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_always_carry_request_id_even_when_null() {
        let envelope = Envelope::error(
            None,
            None,
            ErrorCode::ValidationError,
            "bad",
            &[FieldError::new("id", "required")],
            None,
        );
        let json: Value = serde_json::from_slice(&envelope.to_json()).expect("json");
        assert_eq!(json["request_id"], Value::Null);
        assert!(json.as_object().expect("object").contains_key("request_id"));
        assert_eq!(json["type"], "error");
        assert_eq!(json["status"], "error");
        assert_eq!(json["sender"], "arqonbus");
        assert_eq!(json["error_code"], "VALIDATION_ERROR");
        assert_eq!(json["payload"]["code"], 400);
        assert_eq!(json["payload"]["details"][0]["field"], "id");
    }

    #[test]
    fn responses_name_the_request_and_command() {
        let id = MessageId::new("arq_req1").expect("valid");
        let envelope = Envelope::response(&id, Some("ping"), json!({"pong": true}));
        let json: Value = serde_json::from_slice(&envelope.to_json()).expect("json");
        assert_eq!(json["request_id"], "arq_req1");
        assert_eq!(json["command"], "ping");
        assert_eq!(json["status"], "success");
        assert_eq!(json["version"], "1.0");
        assert!(json.get("room").is_none());
    }

    #[test]
    fn round_trips_through_json() {
        let id = MessageId::new("arq_x").expect("valid");
        let envelope = Envelope::error(
            Some(&id),
            Some("join_channel"),
            ErrorCode::ChannelFull,
            "full",
            &[],
            None,
        );
        let back: Envelope = serde_json::from_slice(&envelope.to_json()).expect("parse");
        assert_eq!(back, envelope);
        assert_eq!(back.error_code(), Some(ErrorCode::ChannelFull));
    }
}
