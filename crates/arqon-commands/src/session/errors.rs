//! Error replies (SPEC §6): what a rejected frame or a failed command
//! gets, and how it counts as a violation.

use arqon_protocol::{ClientId, Envelope, ErrorCode, FieldError, MessageId, Rejection};
use arqon_telemetry::Event;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::bus::Bus;
use crate::error::CommandError;

use super::{Flow, Session, VIOLATIONS_CLOSE};

/// What one error reply says.
pub(super) struct ErrorReply<'a> {
    pub(super) request_id: Option<&'a MessageId>,
    pub(super) command: Option<&'a str>,
    pub(super) code: ErrorCode,
    pub(super) message: String,
    pub(super) details: Vec<FieldError>,
    pub(super) extra: Option<Map<String, Value>>,
}

/// Counts an error sent to a client (and whether it was a violation) in
/// the metrics and emits its telemetry event.
pub(super) fn report_error(bus: &Bus, client_id: &ClientId, code: ErrorCode, violation: bool) {
    arqon_telemetry::metrics::error(code);
    if code == ErrorCode::RateLimited {
        arqon_telemetry::metrics::rate_limited();
    }
    if violation {
        arqon_telemetry::metrics::violation();
    }
    bus.telemetry().emit(Event::Error {
        client_id: Some(client_id.clone()),
        error_code: code,
    });
}

pub(super) fn command_error_envelope(
    id: &MessageId,
    name: Option<&str>,
    err: CommandError,
) -> Envelope {
    Envelope::error(Some(id), name, err.code, err.message, &err.details, None)
}

impl Session {
    pub(super) fn on_rejection(&mut self, rejection: Rejection) -> Flow {
        let violation = rejection.error.is_violation();
        self.error(
            ErrorReply {
                request_id: rejection.request_id.as_ref(),
                command: rejection.command.as_deref(),
                code: rejection.error.code(),
                message: rejection.error.to_string(),
                details: rejection.error.details().to_vec(),
                extra: None,
            },
            violation,
        )
    }

    pub(super) fn command_error(
        &mut self,
        request_id: Option<&MessageId>,
        command: Option<&str>,
        err: CommandError,
    ) -> Flow {
        self.error(
            ErrorReply {
                request_id,
                command,
                code: err.code,
                message: err.message,
                details: err.details,
                extra: None,
            },
            false,
        )
    }

    /// Sends an error; a violation may instead end the connection with
    /// `TOO_MANY_VIOLATIONS` and close 1008.
    pub(super) fn error(&mut self, reply: ErrorReply<'_>, violation: bool) -> Flow {
        report_error(&self.bus, self.client.id(), reply.code, violation);
        tracing::debug!(code = %reply.code, command = reply.command, violation, "error sent");
        if violation && self.violations.record(Instant::now()) {
            let max = self.bus.limits().max_violations;
            self.send(Envelope::error(
                reply.request_id,
                reply.command,
                ErrorCode::TooManyViolations,
                format!("{max} protocol violations within the window; closing the connection"),
                &[],
                None,
            ));
            self.client.close(VIOLATIONS_CLOSE);
            return Flow::Close;
        }
        self.send(Envelope::error(
            reply.request_id,
            reply.command,
            reply.code,
            reply.message,
            &reply.details,
            reply.extra,
        ));
        Flow::Continue
    }
}
