//! Why a command or publish failed, as the client will be told.

use arqon_protocol::{ErrorCode, FieldError};
use arqon_routing::RoutingError;

/// A failed command: a wire code, text safe to show the client, and
/// per-field details for `payload.details`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
#[non_exhaustive]
pub struct CommandError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Vec<FieldError>,
}

impl CommandError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::with_details(code, message, Vec::new())
    }

    pub fn with_details(
        code: ErrorCode,
        message: impl Into<String>,
        details: Vec<FieldError>,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            details,
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
}

impl From<RoutingError> for CommandError {
    fn from(err: RoutingError) -> Self {
        Self::new(err.code(), err.to_string())
    }
}
