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

    /// Both errors as one, when both are `INVALID_ARGUMENT`: the messages
    /// joined, every detail kept (SPEC §5: each bad argument is named).
    pub fn and(mut self, other: CommandError) -> Self {
        if self.code != ErrorCode::InvalidArgument || other.code != ErrorCode::InvalidArgument {
            return self;
        }
        self.message = format!("{}; {}", self.message, other.message);
        self.details.extend(other.details);
        self
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
