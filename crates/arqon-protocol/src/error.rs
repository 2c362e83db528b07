//! Wire error codes (SPEC §6) and the errors of decoding a frame.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The stable `error_code` of an `error` envelope (SPEC §6).
///
/// Clients switch on these; the human `error` text may change between
/// releases, the codes never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ErrorCode {
    ValidationError,
    UnsupportedVersion,
    InvalidArgument,
    UnknownCommand,
    Unauthorized,
    Forbidden,
    NotSubscribed,
    ChannelNotFound,
    RoomNotFound,
    TargetNotFound,
    ChannelExists,
    ChannelNotEmpty,
    ChannelFull,
    SubscriptionLimit,
    RateLimited,
    StorageUnavailable,
    TooManyViolations,
    InternalError,
}

impl ErrorCode {
    /// Every code, in SPEC §6 order.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::ValidationError,
        ErrorCode::UnsupportedVersion,
        ErrorCode::InvalidArgument,
        ErrorCode::UnknownCommand,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotSubscribed,
        ErrorCode::ChannelNotFound,
        ErrorCode::RoomNotFound,
        ErrorCode::TargetNotFound,
        ErrorCode::ChannelExists,
        ErrorCode::ChannelNotEmpty,
        ErrorCode::ChannelFull,
        ErrorCode::SubscriptionLimit,
        ErrorCode::RateLimited,
        ErrorCode::StorageUnavailable,
        ErrorCode::TooManyViolations,
        ErrorCode::InternalError,
    ];

    /// The code as it appears on the wire, e.g. `"CHANNEL_NOT_FOUND"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::UnknownCommand => "UNKNOWN_COMMAND",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotSubscribed => "NOT_SUBSCRIBED",
            ErrorCode::ChannelNotFound => "CHANNEL_NOT_FOUND",
            ErrorCode::RoomNotFound => "ROOM_NOT_FOUND",
            ErrorCode::TargetNotFound => "TARGET_NOT_FOUND",
            ErrorCode::ChannelExists => "CHANNEL_EXISTS",
            ErrorCode::ChannelNotEmpty => "CHANNEL_NOT_EMPTY",
            ErrorCode::ChannelFull => "CHANNEL_FULL",
            ErrorCode::SubscriptionLimit => "SUBSCRIPTION_LIMIT",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::StorageUnavailable => "STORAGE_UNAVAILABLE",
            ErrorCode::TooManyViolations => "TOO_MANY_VIOLATIONS",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// The HTTP-like status carried in `payload.code`.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::ValidationError
            | ErrorCode::UnsupportedVersion
            | ErrorCode::InvalidArgument => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden | ErrorCode::NotSubscribed => 403,
            ErrorCode::UnknownCommand
            | ErrorCode::ChannelNotFound
            | ErrorCode::RoomNotFound
            | ErrorCode::TargetNotFound => 404,
            ErrorCode::ChannelExists
            | ErrorCode::ChannelNotEmpty
            | ErrorCode::ChannelFull
            | ErrorCode::SubscriptionLimit => 409,
            ErrorCode::RateLimited | ErrorCode::TooManyViolations => 429,
            ErrorCode::InternalError => 500,
            ErrorCode::StorageUnavailable => 503,
        }
    }

    /// Whether an error with this code counts as a protocol violation
    /// (SPEC §6): too many of them close the connection with 1008.
    pub const fn is_violation(self) -> bool {
        matches!(
            self,
            ErrorCode::ValidationError | ErrorCode::UnsupportedVersion | ErrorCode::RateLimited
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One invalid field of a rejected frame: an entry of `payload.details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The field as the client wrote it, dotted for nested fields
    /// (`"payload.target"`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a frame could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame is not JSON at all.
    #[error("frame is not valid JSON: {reason}")]
    NotJson { reason: String },
    /// The frame is JSON but not an object.
    #[error("frame must be a JSON object")]
    NotAnObject,
    /// A binary WebSocket frame: the protocol is JSON text only.
    #[error("binary frames are not supported: send JSON text frames")]
    BinaryFrame,
    /// `version` is a string other than `"1.0"`.
    #[error("unsupported protocol version {version:?}: this server speaks \"1.0\"")]
    UnsupportedVersion { version: String },
    /// One or more fields are missing or invalid.
    #[error("invalid envelope: {}", join_details(.details))]
    InvalidFields { details: Vec<FieldError> },
    /// A client sent `type: "system"`, which only the server may send.
    #[error("type \"system\" is reserved for the server")]
    SystemType,
}

fn join_details(details: &[FieldError]) -> String {
    let parts: Vec<String> = details.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

impl ProtocolError {
    /// The wire code this error is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::NotJson { .. }
            | ProtocolError::NotAnObject
            | ProtocolError::BinaryFrame
            | ProtocolError::InvalidFields { .. } => ErrorCode::ValidationError,
            ProtocolError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            ProtocolError::SystemType => ErrorCode::Forbidden,
        }
    }

    /// Whether the connection's violation counter goes up (SPEC §6):
    /// validation errors, unsupported versions and client-sent `system`.
    pub fn is_violation(&self) -> bool {
        self.code().is_violation() || matches!(self, ProtocolError::SystemType)
    }

    /// The per-field details for `payload.details`.
    pub fn details(&self) -> &[FieldError] {
        match self {
            ProtocolError::InvalidFields { details } => details,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_wire_names() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).expect("serializable");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).expect("round trip");
            assert_eq!(back, code);
        }
    }

    #[test]
    fn http_statuses_follow_the_spec_table() {
        assert_eq!(ErrorCode::ValidationError.http_status(), 400);
        assert_eq!(ErrorCode::UnknownCommand.http_status(), 404);
        assert_eq!(ErrorCode::Unauthorized.http_status(), 401);
        assert_eq!(ErrorCode::NotSubscribed.http_status(), 403);
        assert_eq!(ErrorCode::SubscriptionLimit.http_status(), 409);
        assert_eq!(ErrorCode::RateLimited.http_status(), 429);
        assert_eq!(ErrorCode::TooManyViolations.http_status(), 429);
        assert_eq!(ErrorCode::StorageUnavailable.http_status(), 503);
        assert_eq!(ErrorCode::InternalError.http_status(), 500);
    }

    #[test]
    fn system_type_is_a_forbidden_violation() {
        assert_eq!(ProtocolError::SystemType.code(), ErrorCode::Forbidden);
        assert!(ProtocolError::SystemType.is_violation());
        assert!(!ErrorCode::Forbidden.is_violation());
    }
}
