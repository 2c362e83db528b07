//! What can go wrong on the client side, and the server's own errors.

use std::time::Duration;

use arqon_protocol::{Envelope, ErrorCode, FieldError, InvalidId};
use tokio_tungstenite::tungstenite;

/// An `error` envelope the server answered with (SPEC §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// The stable code, when it is one this crate knows.
    pub code: Option<ErrorCode>,
    /// The code exactly as sent (`"CHANNEL_NOT_FOUND"`), known or not.
    pub error_code: String,
    /// The server's human text.
    pub message: String,
    /// The command the error answers, if any.
    pub command: Option<String>,
    /// The id of the frame the error answers (`None` when it was `null`).
    pub request_id: Option<String>,
    /// `payload.details`: one entry per invalid field.
    pub details: Vec<FieldError>,
    /// `payload.retry_after_ms` of a `RATE_LIMITED` error.
    pub retry_after_ms: Option<u64>,
}

impl ServerError {
    /// Reads an `error` envelope.
    pub fn from_envelope(envelope: &Envelope) -> Self {
        let payload = envelope.payload.as_ref();
        let details = payload
            .and_then(|p| p.get("details"))
            .and_then(|d| serde_json::from_value::<Vec<FieldError>>(d.clone()).ok())
            .unwrap_or_default();
        Self {
            code: envelope.error_code(),
            error_code: envelope.error_code.clone().unwrap_or_default(),
            message: envelope.error.clone().unwrap_or_default(),
            command: envelope.command.clone(),
            request_id: envelope.request_id.clone().flatten(),
            details,
            retry_after_ms: payload
                .and_then(|p| p.get("retry_after_ms"))
                .and_then(serde_json::Value::as_u64),
        }
    }
}

/// The error a [`token_provider`](crate::ConnectOptions::token_provider)
/// callback returned.
#[derive(Debug, thiserror::Error)]
#[error("token provider failed: {0}")]
pub struct TokenError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Why the client stopped for good instead of reconnecting: the server
/// said that trying again cannot help.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The upgrade was refused with HTTP 400 (a bad query parameter),
    /// 401 (a bad or expired token) or 403.
    Refused { status: u16, body: String },
    /// Close code 4000: a newer connection with the same identity (JWT
    /// `sub`) replaced this one; reconnecting would only fight it.
    Replaced { reason: String },
    /// Close code 4003: an operator disconnected this client (SPEC §17).
    DisconnectedByOperator { reason: String },
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Refused { status, body } => {
                write!(f, "handshake refused with HTTP {status}: {body}")
            }
            StopReason::Replaced { reason } => {
                write!(f, "replaced by a newer connection (4000): {reason}")
            }
            StopReason::DisconnectedByOperator { reason } => {
                write!(f, "disconnected by an operator (4003): {reason}")
            }
        }
    }
}

impl StopReason {
    /// The handshake statuses that make retrying pointless.
    pub(crate) fn from_refusal(err: &ClientError) -> Option<Self> {
        match err {
            ClientError::Refused { status, body } if matches!(status, 400 | 401 | 403) => {
                Some(StopReason::Refused {
                    status: *status,
                    body: body.clone(),
                })
            }
            _ => None,
        }
    }
}

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL given to [`ConnectOptions`](crate::ConnectOptions) is unusable.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// An option value the server would refuse anyway (too long, empty…).
    #[error("invalid option {name}: {reason}")]
    InvalidOption { name: &'static str, reason: String },
    /// A room, channel or client id that is not valid on the wire.
    #[error(transparent)]
    InvalidName(#[from] InvalidId),
    /// A payload that is not a JSON object (SPEC §3 requires one).
    #[error("payload must be a JSON object")]
    PayloadNotObject,
    /// The TCP connection or the WebSocket handshake failed.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: Box<tungstenite::Error>,
    },
    /// TLS could not be set up for a `wss://` URL (no usable root
    /// certificates). A failed TLS handshake is [`ClientError::Connect`].
    #[error("TLS setup failed: {reason}")]
    Tls { reason: String },
    /// The server refused the handshake with an HTTP status (400 for a bad
    /// query parameter, 401 for a bad token, 503 when full or draining).
    #[error("handshake refused with HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    /// Nothing came back in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: &'static str, after: Duration },
    /// The server answered with an `error` envelope.
    #[error("server error {}: {}", .0.error_code, .0.message)]
    Server(Box<ServerError>),
    /// The connection dropped while the request was in flight: it may or
    /// may not have been executed.
    #[error("connection lost before the reply arrived")]
    Disconnected,
    /// The client is reconnecting; the request was not sent.
    #[error("not connected (reconnecting)")]
    NotConnected,
    /// The client was closed, or gave up reconnecting.
    #[error("client closed")]
    Closed,
    /// The client stopped for good (a permanent refusal, a replaced
    /// connection, an operator's disconnect): pending and later calls fail
    /// with this, subscriptions end.
    #[error("client stopped: {0}")]
    Stopped(StopReason),
    /// The [`token_provider`](crate::ConnectOptions::token_provider) failed.
    #[error(transparent)]
    Token(TokenError),
    /// The server sent something this client cannot read.
    #[error("unexpected reply from the server: {reason}")]
    Protocol { reason: String },
}

impl ClientError {
    /// The server's error code, when the server answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(err) => err.code,
            _ => None,
        }
    }

    /// The server's error, when the server answered with one.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            ClientError::Server(err) => Some(err),
            _ => None,
        }
    }

    pub(crate) fn protocol(reason: impl Into<String>) -> Self {
        ClientError::Protocol {
            reason: reason.into(),
        }
    }
}

impl From<ServerError> for ClientError {
    fn from(err: ServerError) -> Self {
        ClientError::Server(Box::new(err))
    }
}
