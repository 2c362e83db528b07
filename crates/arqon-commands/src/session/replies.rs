//! The ordered replies of a session: a reply that must wait on I/O holds
//! back the ones after it, and a join's reply releases the channel's held
//! live frames once it is queued (SPEC §14).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use arqon_config::SlowConsumerPolicy;
use arqon_protocol::{ChannelKey, Envelope, EnvelopeType};
use arqon_routing::PushError;
use bytes::Bytes;

use super::{MAX_PENDING_REPLIES, Session};

/// A reply that is not ready yet.
/// Resolves to `None` when, after all, nothing is owed (a publish without
/// `ack` that went through the cluster).
pub(super) type ReplyFuture = Pin<Box<dyn Future<Output = Option<Envelope>> + Send + 'static>>;

/// Replies in the order they are owed: a reply that must wait (a `history`
/// read, an ack waiting for Redis) holds back the ones after it, so that a
/// connection's replies always arrive in the order of its frames.
///
/// A `join_channel` reply carries the channel whose live frames wait for
/// it (SPEC §14): they are released right after the reply is queued.
pub(super) enum PendingReply {
    Ready(Bytes, Option<Release>),
    Waiting(ReplyFuture, Option<ChannelKey>),
}

/// The live frames of a join to let through once its reply is queued; a
/// held message the reply's `seq` already covers is not sent twice.
#[derive(Debug)]
pub(super) struct Release {
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

impl Session {
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

    /// Sends a reply now, or after the replies still pending before it.
    pub(super) fn send(&mut self, envelope: Envelope) {
        self.send_releasing(envelope, None);
    }

    /// [`send`](Self::send), then releases `joining`'s held frames.
    pub(super) fn send_releasing(&mut self, envelope: Envelope, joining: Option<ChannelKey>) {
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
    pub(super) fn send_later(
        &mut self,
        reply: impl Future<Output = Option<Envelope>> + Send + 'static,
    ) {
        self.send_later_releasing(reply, None);
    }

    /// [`send_later`](Self::send_later) for a join's reply: `joining`'s
    /// live frames are released once it is queued.
    pub(super) fn send_later_releasing(
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
