//! One connection's protocol state machine, independent of the transport:
//! the server feeds it text frames, it answers through the client's
//! outbound queue.
//!
//! This module holds the session itself: rate limit, decoding, commands and
//! client telemetry. `publish` handles a client's messages and their acks,
//! `replies` the ordered queue of replies (and the release of a join's held
//! frames), `errors` the error replies and violations.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arqon_protocol::{
    ClientId, ClientTelemetry, CommandRequest, Envelope, ErrorCode, FieldError, Inbound, MessageId,
    PROTOCOL_VERSION, ProtocolError, Rejection, close, decode,
};
use arqon_routing::{Client, CloseReason};
use arqon_telemetry::{AgentAction, ClientEvent, CommandStatus, Event};
use serde_json::{Map, json};
use tokio::time::Instant;

use crate::args::Args;
use crate::bus::Bus;
use crate::commands::{Ctx, Dispatched, dispatch};
use crate::limits::{TokenBucket, ViolationWindow};

mod errors;
mod publish;
mod replies;

use errors::{ErrorReply, command_error_envelope, report_error};

use replies::PendingReply;

/// The close that follows `TOO_MANY_VIOLATIONS`.
pub const VIOLATIONS_CLOSE: CloseReason = CloseReason {
    code: close::POLICY,
    reason: "too many protocol violations",
    discard_pending: false,
};

/// How many replies may wait on I/O at once before the connection stops
/// reading new frames (backpressure on a client that outpaces storage).
pub const MAX_PENDING_REPLIES: usize = 1024;

/// Whether the connection should keep reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// A close was queued; stop reading and let the writer finish.
    Close,
}

/// The per-connection protocol state: rate limit, violation window, and
/// the handling of every frame.
pub struct Session {
    bus: Arc<Bus>,
    client: Arc<Client>,
    bucket: TokenBucket,
    violations: ViolationWindow,
    pending: VecDeque<PendingReply>,
    /// Bytes of the encoded replies in `pending`: bounded like the queue,
    /// so a client that sends requests and never reads cannot make the
    /// server hold more than its queue's worth of replies (SPEC §18).
    pending_bytes: usize,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("client", self.client.id())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub fn new(bus: Arc<Bus>, client: Arc<Client>) -> Self {
        let limits = bus.limits();
        let bucket = TokenBucket::new(
            limits.rate_limit_per_sec,
            limits.rate_limit_burst,
            Instant::now(),
        );
        let violations = ViolationWindow::new(limits.max_violations, limits.violation_window);
        Self {
            bus,
            client,
            bucket,
            violations,
            pending: VecDeque::new(),
            pending_bytes: 0,
        }
    }

    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Queues the welcome frame (SPEC §2): always the first frame sent.
    pub fn welcome(&mut self) {
        let limits = self.bus.limits();
        let envelope = Envelope::server_message(json!({
            "welcome": "Connected to ArqonBus",
            "client_id": self.client.id(),
            "server_version": self.bus.info().version,
            "protocol": PROTOCOL_VERSION,
            "limits": {
                "max_message_size": self.bus.max_message_size(),
                "rate_limit_per_sec": limits.rate_limit_per_sec,
                "max_subscriptions": self.bus.router().config().max_subscriptions,
            },
        }));
        self.send(envelope);
    }

    /// Handles one text frame.
    pub fn on_text(&mut self, text: &str) -> Flow {
        let started = tokio::time::Instant::now();
        self.count_inbound();
        let decoded = decode(text);
        if let Err(flow) = self.take_token(|| match &decoded {
            Ok(inbound) => {
                let command = match inbound {
                    Inbound::Command(command) => Some(command.name.clone()),
                    _ => None,
                };
                (Some(inbound.id().clone()), command)
            }
            Err(rejection) => (rejection.request_id.clone(), rejection.command.clone()),
        }) {
            return flow;
        }
        match decoded {
            Ok(Inbound::Publish(publish)) => self.on_publish(publish, started),
            Ok(Inbound::Command(command)) => self.on_command(&command, started),
            Ok(Inbound::Telemetry(event)) => self.on_telemetry(event),
            Ok(_) => Flow::Continue,
            Err(rejection) => self.on_rejection(rejection),
        }
    }

    /// Handles a WebSocket ping. The transport answers it, but it costs a
    /// token like any inbound frame (SPEC §18): a flood of pings is rate
    /// limited, and counted as violations, as any other flood would be.
    pub fn on_ping(&mut self) -> Flow {
        self.client.touch();
        match self.take_token(|| (None, None)) {
            Ok(()) => Flow::Continue,
            Err(flow) => flow,
        }
    }

    /// Handles one binary frame: the protocol is JSON text only.
    pub fn on_binary(&mut self) -> Flow {
        self.count_inbound();
        if let Err(flow) = self.take_token(|| (None, None)) {
            return flow;
        }
        self.on_rejection(Rejection {
            request_id: None,
            command: None,
            error: ProtocolError::BinaryFrame,
        })
    }

    fn count_inbound(&self) {
        self.client.touch();
        self.bus
            .router()
            .stats()
            .received
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Every inbound frame costs one token (SPEC §6). Without one, the frame
    /// is not processed: it gets `RATE_LIMITED` (a violation), quoting its
    /// id and command as `identify` reports them.
    fn take_token(
        &mut self,
        identify: impl FnOnce() -> (Option<MessageId>, Option<String>),
    ) -> Result<(), Flow> {
        let Err(retry_after) = self.bucket.take(Instant::now()) else {
            return Ok(());
        };
        let retry_ms = u64::try_from(retry_after.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut extra = Map::new();
        extra.insert("retry_after_ms".into(), json!(retry_ms));
        let (request_id, command) = identify();
        Err(self.error(
            ErrorReply {
                request_id: request_id.as_ref(),
                command: command.as_deref(),
                code: ErrorCode::RateLimited,
                message: format!("rate limit exceeded; retry in {retry_ms} ms"),
                details: Vec::new(),
                extra: Some(extra),
            },
            true,
        ))
    }

    fn on_command(&mut self, request: &CommandRequest, started: tokio::time::Instant) -> Flow {
        let ctx = Ctx {
            bus: &self.bus,
            client: &self.client,
        };
        self.bus
            .agent_activity(&self.client, AgentAction::Command, None);
        // A join holds the channel's live frames until its reply is queued.
        let joining = (request.name == "join_channel")
            .then(|| Args(&request.args).channel_key().ok())
            .flatten();
        match dispatch(ctx, request) {
            Dispatched::Done(Ok(payload)) => {
                executed(
                    &self.bus,
                    self.client.id(),
                    &request.name,
                    CommandStatus::Success,
                    started,
                );
                let reply = Envelope::response(&request.id, Some(&request.name), payload);
                self.send_releasing(reply, joining);
                Flow::Continue
            }
            Dispatched::Done(Err(err)) => {
                executed(
                    &self.bus,
                    self.client.id(),
                    &request.name,
                    CommandStatus::Error,
                    started,
                );
                let flow = self.command_error(Some(&request.id), Some(&request.name), err);
                if let Some(key) = joining {
                    // Nothing was held, or the error is queued: either way
                    // live frames may flow.
                    self.bus.router().release(&self.client, &key, 0);
                }
                flow
            }
            Dispatched::Later(future) => {
                let (id, name) = (request.id.clone(), request.name.clone());
                let (bus, client_id) = (self.bus.clone(), self.client.id().clone());
                self.send_later_releasing(
                    async move {
                        let result = future.await;
                        let status = match result {
                            Ok(_) => CommandStatus::Success,
                            Err(_) => CommandStatus::Error,
                        };
                        executed(&bus, &client_id, &name, status, started);
                        Some(match result {
                            Ok(payload) => Envelope::response(&id, Some(&name), payload),
                            Err(err) => {
                                report_error(&bus, &client_id, err.code, false);
                                command_error_envelope(&id, Some(&name), err)
                            }
                        })
                    },
                    joining,
                );
                Flow::Continue
            }
        }
    }

    fn on_telemetry(&mut self, event: ClientTelemetry) -> Flow {
        if Event::is_server_kind(&event.event_type) {
            // A client may not pass events off as the server's (SPEC §18).
            let message = format!(
                "eventType {:?} is reserved for events the server emits",
                event.event_type
            );
            let details = vec![FieldError::new("payload.eventType", message.clone())];
            return self.error(
                ErrorReply {
                    request_id: Some(&event.id),
                    command: None,
                    code: ErrorCode::ValidationError,
                    message,
                    details,
                    extra: None,
                },
                true,
            );
        }
        // Valid client telemetry is rebroadcast with the sender set: to
        // telemetry sockets, and (through the hub's forwarder) to the
        // subscribers of the telemetry system channel.
        self.bus
            .telemetry()
            .emit(Event::Custom(ClientEvent::from_client(
                self.client.id(),
                &event,
            )));
        Flow::Continue
    }
}

/// Records a finished command in the metrics and as a telemetry event.
fn executed(
    bus: &Bus,
    client_id: &ClientId,
    command: &str,
    status: CommandStatus,
    started: tokio::time::Instant,
) {
    let elapsed = started.elapsed();
    arqon_telemetry::metrics::command_duration(command, elapsed);
    bus.telemetry().emit_with(|| Event::CommandExecuted {
        client_id: client_id.clone(),
        command: command.to_owned().into(),
        status,
        duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
    });
}
