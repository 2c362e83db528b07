//! A client's publish: to a channel or to one client, and its ack
//! (SPEC §4).

use arqon_protocol::{Envelope, ErrorCode, MessageId, Publish, Target};
use arqon_routing::ChannelKind;
use arqon_storage::Stored;
use arqon_telemetry::AgentAction;
use serde_json::{Value, json};

use crate::bus::{Routed, Sent};
use crate::error::CommandError;

use super::errors::{command_error_envelope, report_error};
use super::{Flow, Session};

/// What a publish handed back: a channel message's or a direct one's.
enum Outcome {
    Channel(Routed),
    Direct(Sent),
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

impl Session {
    pub(super) fn on_publish(&mut self, publish: Publish, started: tokio::time::Instant) -> Flow {
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
}
