//! The ArqonBus wire protocol (SPEC §3, §6): the versioned JSON envelope,
//! strict validation of what clients send, the stable error codes, and the
//! identifiers that appear on the wire.
//!
//! This crate is the shared vocabulary of the server and of client SDKs, so
//! it must stay free of tokio, tracing and any I/O: it depends only on
//! serde, serde_json, thiserror, chrono (timestamps) and rand (ids).
//!
//! - [`decode`] turns one text frame into an [`Inbound`] (a [`Publish`], a
//!   [`CommandRequest`] or a [`ClientTelemetry`]) or a [`Rejection`] that
//!   carries everything the error reply needs. It never panics, whatever
//!   the bytes (a proptest says so).
//! - [`Envelope`] is the frame as it travels; the server builds its replies
//!   with [`Envelope::response`] and [`Envelope::error`], and clients can
//!   read every server frame into it.
//! - [`ErrorCode`] is the stable `error_code`; [`ProtocolError`] is why a
//!   frame was refused.
//! - [`ClientId`], [`MessageId`] and [`ChannelKey`] are validated once at
//!   construction and cheap to clone.
//!
//! Invariants: the server only ever sends canonical type names (aliases are
//! accepted on input only), every timestamp it writes is RFC 3339 UTC with
//! milliseconds and `Z`, and an `error` always carries `request_id`.

mod client;
mod decode;
mod envelope;
mod error;
mod ids;
mod pattern;
mod time;

pub use client::{
    ClientType, InvalidProfileText, MAX_AVATAR_LEN, MAX_PERSONALITY_LEN, MAX_SCREEN_NAME_LEN,
    UnknownClientType, check_profile_text, close,
};
pub use decode::{
    ClientTelemetry, CommandRequest, Inbound, Publish, RawJson, Rejection, Target, decode,
};
pub use envelope::{Envelope, EnvelopeType, PROTOCOL_VERSION, SERVER_SENDER};
pub use error::{ErrorCode, FieldError, ProtocolError};
pub use ids::{
    ChannelKey, ClientId, InvalidId, MAX_CLIENT_ID_LEN, MAX_ID_SUFFIX_LEN, MAX_NAME_LEN, MessageId,
    is_valid_client_id, is_valid_message_id, is_valid_name,
};
pub use pattern::{ChannelPattern, InvalidPattern};
pub use time::{Timestamp, format_timestamp, now, now_rfc3339, parse_timestamp};
