//! One connection's protocol state machine, independent of the transport:
//! the server feeds it text frames, it answers through the client's
//! outbound queue.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arqon_config::SlowConsumerPolicy;
use arqon_protocol::{
    ChannelKey, ClientId, ClientTelemetry, CommandRequest, Envelope, EnvelopeType, ErrorCode,
    FieldError, Inbound, MessageId, PROTOCOL_VERSION, ProtocolError, Publish, Rejection, Target,
    close, decode,
};
use arqon_routing::{ChannelKind, Client, CloseReason, PushError};
use arqon_storage::Stored;
use arqon_telemetry::{AgentAction, ClientEvent, CommandStatus, Event};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::args::Args;
use crate::bus::{Bus, Routed, Sent};
use crate::commands::{Ctx, Dispatched, dispatch};
use crate::error::CommandError;
use crate::limits::{TokenBucket, ViolationWindow};

/// The close that follows `TOO_MANY_VIOLATIONS`.
pub const VIOLATIONS_CLOSE: CloseReason = CloseReason {
    code: close::POLICY,
    reason: "too many protocol violations",
    discard_pending: false,
};

/// How many replies may wait on I/O at once before the connection stops
/// reading new frames (backpressure on a client that outpaces storage).
pub const MAX_PENDING_REPLIES: usize = 1024;

/// A reply that is not ready yet.
/// Resolves to `None` when, after all, nothing is owed (a publish without
/// `ack` that went through the cluster).
type ReplyFuture = Pin<Box<dyn Future<Output = Option<Envelope>> + Send + 'static>>;

/// Replies in the order they are owed: a reply that must wait (a `history`
/// read, an ack waiting for Redis) holds back the ones after it, so that a
/// connection's replies always arrive in the order of its frames.
///
/// A `join_channel` reply carries the channel whose live frames wait for
/// it (SPEC §14): they are released right after the reply is queued.
enum PendingReply {
    Ready(Bytes, Option<Release>),
    Waiting(ReplyFuture, Option<ChannelKey>),
}

/// What a publish handed back: a channel message's or a direct one's.
enum Outcome {
    Channel(Routed),
    Direct(Sent),
}

/// The live frames of a join to let through once its reply is queued; a
/// held message the reply's `seq` already covers is not sent twice.
#[derive(Debug)]
struct Release {
    key: ChannelKey,
    covered: u64,
}

impl Release {
    fn after(key: Option<ChannelKey>, reply: &Envelope) -> Option<Self> {
        let covered = match reply.kind {
            EnvelopeType::Response => reply
                .payload
                .as_ref()
                .and_then(|payload| payload["seq"].as_u64())
                .unwrap_or(0),
            _ => 0,
        };
        key.map(|key| Self { key, covered })
    }
}

/// Whether the connection should keep reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// A close was queued; stop reading and let the writer finish.
    Close,
}

/// What one error reply says.
struct ErrorReply<'a> {
    request_id: Option<&'a MessageId>,
    command: Option<&'a str>,
    code: ErrorCode,
    message: String,
    details: Vec<FieldError>,
    extra: Option<Map<String, Value>>,
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

    /// Whether some replies are waiting on I/O.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether the connection may read another frame, or should first let
    /// pending replies resolve.
    pub fn can_read(&self) -> bool {
        self.pending.len() < MAX_PENDING_REPLIES
            && self.pending_bytes <= self.client.outbound().capacity()
    }

    /// Waits for the oldest pending reply, sends it and every ready reply
    /// behind it.
    ///
    /// # Cancel safety
    /// Cancel safe: the pending future stays in place if this is dropped,
    /// and nothing is sent until it resolves.
    pub async fn resolve_pending(&mut self) {
        loop {
            match self.pending.front_mut() {
                None => {
                    // Nothing is pending any more: an idle connection keeps
                    // no reply buffer.
                    self.pending = VecDeque::new();
                    return;
                }
                Some(PendingReply::Waiting(future, key)) => match future.as_mut().await {
                    Some(envelope) => {
                        let release = Release::after(key.take(), &envelope);
                        let frame = Bytes::from(envelope.to_json());
                        self.pending_bytes += frame.len();
                        if let Some(front) = self.pending.front_mut() {
                            *front = PendingReply::Ready(frame, release);
                        }
                    }
                    None => {
                        if let Some(key) = key.take() {
                            self.bus.router().release(&self.client, &key, 0);
                        }
                        self.pending.pop_front();
                    }
                },
                Some(PendingReply::Ready(frame, release)) => {
                    let frame = frame.clone();
                    let frame_len = frame.len();
                    let release = release.take();
                    if let Some(frame) = self.try_deliver(frame) {
                        // Full under the `drop` policy: a reply is never
                        // dropped; this client waits for room instead. The
                        // reply stays first in line until it is queued.
                        let outbound = self.client.outbound().clone();
                        let _ = outbound.push_when_room(frame).await;
                    }
                    self.released(release);
                    self.pending_bytes = self.pending_bytes.saturating_sub(frame_len);
                    self.pending.pop_front();
                }
            }
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

    fn on_rejection(&mut self, rejection: Rejection) -> Flow {
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

    fn on_publish(&mut self, publish: Publish, started: tokio::time::Instant) -> Flow {
        let router = self.bus.router();
        if let Target::Channel(key) = &publish.target {
            if !self.client.may_access(key) {
                let err =
                    CommandError::forbidden(format!("your token does not allow channel {key}"));
                return self.command_error(Some(&publish.id), None, err);
            }
            // System channels carry what the server says (SPEC §18).
            if router
                .channel(key)
                .is_some_and(|channel| channel.kind() == ChannelKind::System)
            {
                let err = CommandError::forbidden(format!(
                    "{key} is a system channel: only the server publishes there"
                ));
                return self.command_error(Some(&publish.id), None, err);
            }
        }
        let result = match &publish.target {
            Target::Channel(key) => {
                if self.bus.storage_refuses_writes() {
                    let err = CommandError::new(
                        ErrorCode::StorageUnavailable,
                        "history storage is unavailable; the message was not published",
                    );
                    return self.command_error(Some(&publish.id), None, err);
                }
                self.bus
                    .publish(
                        Some(&self.client),
                        key,
                        publish.envelope,
                        publish.echo,
                        publish.ack,
                    )
                    .map(Outcome::Channel)
            }
            Target::Direct(target) => self
                .bus
                .send_direct(&self.client, target, publish.envelope)
                .map(Outcome::Direct),
        };
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(err) => return self.command_error(Some(&publish.id), None, err.into()),
        };
        self.bus.telemetry().record_route(started.elapsed());
        let channel = match &publish.target {
            Target::Channel(key) => Some(key),
            Target::Direct(_) => None,
        };
        self.bus
            .agent_activity(&self.client, AgentAction::Message, channel);
        let (id, ack) = (publish.id, publish.ack);
        match outcome {
            Outcome::Channel(Routed::Here { delivery, stored }) => {
                if let Some(key) = channel {
                    tracing::trace!(
                        room = key.room(),
                        channel = key.channel(),
                        seq = delivery.seq,
                        delivered = delivery.delivered,
                        "published"
                    );
                }
                if ack {
                    let (delivered, seq) = (delivery.delivered, delivery.seq);
                    match stored {
                        // Redis: the ack waits until the write is durable
                        // (other replies keep their order behind it).
                        Stored::Pending(ticket) => self.send_later(async move {
                            Some(ack_envelope(&id, delivered, seq, ticket.wait().await))
                        }),
                        Stored::Durable => self.send(ack_envelope(&id, delivered, seq, true)),
                        // Degraded (buffered for later) or dropped.
                        Stored::Buffered | Stored::Dropped => {
                            self.send(ack_envelope(&id, delivered, seq, false));
                        }
                    }
                }
            }
            Outcome::Direct(Sent::Here(delivery)) => {
                tracing::trace!(delivered = delivery.delivered, "sent direct");
                if ack {
                    self.send(ack_envelope(&id, delivery.delivered, None, false));
                }
            }
            // Through the backplane: every node (this one too) delivers a
            // channel message when it comes back; should it fail, the
            // message is routed on this node alone.
            Outcome::Channel(Routed::Shared(later)) => {
                let (bus, client_id) = (self.bus.clone(), self.client.id().clone());
                let reply = async move {
                    match later.await {
                        Ok(settled) => ack.then(|| {
                            ack_envelope(&id, settled.delivered, settled.seq, settled.stored)
                        }),
                        Err(err) => {
                            report_error(&bus, &client_id, err.code, false);
                            Some(command_error_envelope(&id, None, err))
                        }
                    }
                };
                if ack {
                    self.send_later(reply);
                } else {
                    // Without `ack` nothing is owed unless the fallback
                    // fails, and nothing waits behind it.
                    self.bus.tasks().spawn(async move {
                        if let Some(error) = reply.await {
                            tracing::debug!(error_code = ?error.error_code, "cluster publish fallback refused");
                        }
                    });
                }
            }
            Outcome::Direct(Sent::Shared(later)) => {
                let (bus, client_id) = (self.bus.clone(), self.client.id().clone());
                self.send_later(async move {
                    match later.await {
                        Ok(delivered) => ack.then(|| ack_envelope(&id, delivered, None, false)),
                        Err(err) => {
                            report_error(&bus, &client_id, err.code, false);
                            Some(command_error_envelope(&id, None, err))
                        }
                    }
                });
            }
        }
        Flow::Continue
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

    fn command_error(
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
    fn error(&mut self, reply: ErrorReply<'_>, violation: bool) -> Flow {
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

    /// Sends a reply now, or after the replies still pending before it.
    fn send(&mut self, envelope: Envelope) {
        self.send_releasing(envelope, None);
    }

    /// [`send`](Self::send), then releases `joining`'s held frames.
    fn send_releasing(&mut self, envelope: Envelope, joining: Option<ChannelKey>) {
        let release = Release::after(joining, &envelope);
        let frame = Bytes::from(envelope.to_json());
        let waiting = if self.pending.is_empty() {
            self.try_deliver(frame)
        } else {
            Some(frame)
        };
        match waiting {
            Some(frame) => {
                self.pending_bytes += frame.len();
                self.pending.push_back(PendingReply::Ready(frame, release));
            }
            None => self.released(release),
        }
    }

    /// Queues a reply that resolves later, keeping the order of replies.
    fn send_later(&mut self, reply: impl Future<Output = Option<Envelope>> + Send + 'static) {
        self.send_later_releasing(reply, None);
    }

    /// [`send_later`](Self::send_later) for a join's reply: `joining`'s
    /// live frames are released once it is queued.
    fn send_later_releasing(
        &mut self,
        reply: impl Future<Output = Option<Envelope>> + Send + 'static,
        joining: Option<ChannelKey>,
    ) {
        self.pending
            .push_back(PendingReply::Waiting(Box::pin(reply), joining));
    }

    /// Lets a join's held frames through, after its reply.
    fn released(&self, release: Option<Release>) {
        if let Some(release) = release {
            self.bus
                .router()
                .release(&self.client, &release.key, release.covered);
        }
    }

    /// Queues a reply now if it can be; returns it when it has to wait for
    /// room (a full queue under the `drop` policy). Under `disconnect`, a
    /// full queue closes the connection as for any slow consumer.
    fn try_deliver(&self, frame: Bytes) -> Option<Bytes> {
        let router = self.bus.router();
        if router.config().slow_consumer == SlowConsumerPolicy::Disconnect {
            router.reply(&self.client, frame);
            return None;
        }
        match self.client.send(frame.clone()) {
            Ok(()) => None,
            Err(PushError::Full) => Some(frame),
            Err(PushError::Closed) => None,
        }
    }
}

/// The ack of a published message (SPEC §4.3).
fn ack_envelope(
    id: &MessageId,
    delivered: impl Into<Value>,
    seq: Option<u64>,
    stored: bool,
) -> Envelope {
    let payload = json!({"delivered": delivered.into(), "seq": seq, "stored": stored});
    Envelope::response(id, None, payload)
}

/// Counts an error sent to a client (and whether it was a violation) in
/// the metrics and emits its telemetry event.
fn report_error(bus: &Bus, client_id: &ClientId, code: ErrorCode, violation: bool) {
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

fn command_error_envelope(id: &MessageId, name: Option<&str>, err: CommandError) -> Envelope {
    Envelope::error(Some(id), name, err.code, err.message, &err.details, None)
}
