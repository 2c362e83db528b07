//! What the server does on an operator's behalf, for the HTTP server API
//! (SPEC §17): publish to a channel as the server, send a direct message as
//! the server, and disconnect a client. The transport (HTTP, auth, bodies)
//! lives in the server; the bus behaviour lives here, beside the session's
//! own publish path, so that both share storage and cluster handling.
//!
//! Messages written here carry `sender: "arqonbus"` ([`SERVER_SENDER`]).
//! A publish may target a system channel: the API speaks for the server,
//! and system channels carry what the server says (SPEC §18 forbids only
//! clients from writing there).

use std::sync::Arc;

use arqon_protocol::{
    ChannelKey, ClientId, Envelope, EnvelopeType, ErrorCode, RawJson, SERVER_SENDER, close,
    now_rfc3339,
};
use arqon_routing::{ChannelKind, CloseReason, Publisher, RoutingError};
use arqon_storage::Stored;
use bytes::Bytes;

use crate::bus::Bus;
use crate::error::CommandError;
use crate::session::record;

/// The close an operator's disconnect sends (SPEC §17).
pub const OPERATOR_CLOSE: CloseReason = CloseReason {
    code: close::DISCONNECTED,
    reason: "disconnected by an operator",
    discard_pending: false,
};

/// The outcome of a server publish: the `POST /api/publish` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPublished {
    pub seq: u64,
    pub epoch: Arc<str>,
    /// Subscribers that got the message (in a cluster: members on every
    /// live node when it was published).
    pub delivered: u64,
    /// Durable in history: in the Redis stream, or in the memory ring.
    pub stored: bool,
}

impl Bus {
    /// Publishes `payload` (and `metadata`) on channel `key` as the server.
    /// The channel must exist (on any node in a cluster). Waits until the
    /// message is durable in history (or storage failed) before returning.
    ///
    /// In cluster mode the message is sequenced, stored and broadcast
    /// through Redis like a client's; should Redis fail, it is routed on
    /// this node alone, as a client's publish is. A system channel is per
    /// node in a cluster: its message reaches this node's members only.
    ///
    /// # Cancel safety
    /// Not cancel safe: once sequenced the message is delivered whether or
    /// not the caller waits for the outcome.
    pub async fn publish_as_server(
        &self,
        key: &ChannelKey,
        payload: RawJson,
        metadata: Option<RawJson>,
    ) -> Result<ServerPublished, CommandError> {
        let started = tokio::time::Instant::now();
        let channel = self
            .find_channel(key)
            .await
            .ok_or_else(|| RoutingError::ChannelNotFound { key: key.clone() })?;
        if self.storage_refuses_writes() {
            return Err(CommandError::new(
                ErrorCode::StorageUnavailable,
                "history storage is unavailable; the message was not published",
            ));
        }
        let mut envelope = Envelope::<RawJson>::new(EnvelopeType::Message);
        envelope.payload = Some(payload);
        envelope.metadata = metadata;
        // System channels are per node (SPEC §10: they describe the node
        // that emits them), so they never go through the cluster.
        let shared = channel.kind() != ChannelKind::System;
        if let Some(cluster) = self.cluster_route().filter(|_| shared).cloned() {
            let mut stamped = envelope.clone();
            stamped.sender = Some(SERVER_SENDER.to_owned());
            stamped.timestamp = now_rfc3339();
            stamped.room = Some(key.room().to_owned());
            stamped.channel = Some(key.channel().to_owned());
            let mut open_frame = stamped.to_json();
            open_frame.pop(); // the closing brace: Redis appends `seq` and `epoch`
            let result = cluster
                .publish(
                    key,
                    SERVER_SENDER,
                    false,
                    open_frame,
                    &channel.epoch_to_start(),
                )
                .await;
            self.telemetry().record_route(started.elapsed());
            match result {
                Ok(published) => {
                    return Ok(ServerPublished {
                        seq: published.seq,
                        epoch: published.epoch,
                        delivered: published.members,
                        stored: published.stored,
                    });
                }
                Err(error) => {
                    tracing::warn!(channel = %key, %error, "cluster publish failed; routed on this node only");
                }
            }
        }
        let storage = self.storage();
        let (delivery, stored) =
            self.router()
                .publish_with(Publisher::Server, key, envelope, false, |sequenced| {
                    record(storage, &sequenced, true)
                })?;
        self.telemetry().record_route(started.elapsed());
        let stored = match stored {
            Stored::Pending(ticket) => ticket.wait().await,
            Stored::Durable => true,
            Stored::Buffered | Stored::Dropped => false,
        };
        let (Some(seq), Some(epoch)) = (delivery.seq, delivery.epoch) else {
            return Err(CommandError::new(
                ErrorCode::InternalError,
                "the message was published without a sequence number",
            ));
        };
        Ok(ServerPublished {
            seq,
            epoch,
            delivered: u64::try_from(delivery.delivered).unwrap_or(u64::MAX),
            stored,
        })
    }

    /// Sends `payload` (and `metadata`) to client `target` as the server,
    /// on whichever node holds it. Returns how many got it: 1, or 0 when
    /// the target's queue was full under the `drop` slow-consumer policy.
    /// `TARGET_NOT_FOUND` when no node has that client.
    ///
    /// # Cancel safety
    /// Not cancel safe (a cluster lookup runs once sent).
    pub async fn send_as_server(
        &self,
        target: &ClientId,
        payload: RawJson,
        metadata: Option<RawJson>,
    ) -> Result<u64, CommandError> {
        let mut envelope = Envelope::<RawJson>::from_server(EnvelopeType::Message);
        envelope.to_client = Some(target.as_str().to_owned());
        envelope.payload = Some(payload);
        envelope.metadata = metadata;
        let frame = Bytes::from(envelope.to_json());
        if let Some(client) = self.router().client(target) {
            return Ok(u64::from(self.router().deliver(&client, frame)));
        }
        let Some(cluster) = self.cluster_route() else {
            return Err(RoutingError::TargetNotFound {
                client: target.clone(),
            }
            .into());
        };
        match cluster.send_direct(target.as_str(), frame).await {
            Ok(true) => Ok(1),
            Ok(false) => Err(RoutingError::TargetNotFound {
                client: target.clone(),
            }
            .into()),
            Err(error) => {
                tracing::warn!(%error, "cluster direct message failed");
                Err(CommandError::new(
                    ErrorCode::TargetNotFound,
                    format!("client {target} is not reachable: the cluster is unavailable"),
                ))
            }
        }
    }

    /// Closes client `target`'s connection with 4003 ([`OPERATOR_CLOSE`]),
    /// on whichever node holds it. `TARGET_NOT_FOUND` when no node has
    /// that client.
    ///
    /// # Cancel safety
    /// Not cancel safe (a cluster lookup runs once sent).
    pub async fn disconnect_client(&self, target: &ClientId) -> Result<(), CommandError> {
        if let Some(client) = self.router().client(target) {
            client.close(OPERATOR_CLOSE);
            tracing::info!(client_id = %target, "client disconnected by an operator");
            return Ok(());
        }
        let not_found = || {
            CommandError::from(RoutingError::TargetNotFound {
                client: target.clone(),
            })
        };
        let Some(cluster) = self.cluster_route() else {
            return Err(not_found());
        };
        match cluster.disconnect(target.as_str()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(not_found()),
            Err(error) => {
                tracing::warn!(%error, "cluster disconnect failed");
                Err(CommandError::new(
                    ErrorCode::TargetNotFound,
                    format!("client {target} is not reachable: the cluster is unavailable"),
                ))
            }
        }
    }

    /// Closes a client of this node that an operator disconnected through
    /// another node (the cluster's `Inbound::Disconnect`).
    pub(crate) fn disconnect_here(&self, target: &str) {
        let client = ClientId::new(target)
            .ok()
            .and_then(|id| self.router().client(&id));
        match client {
            Some(client) => {
                client.close(OPERATOR_CLOSE);
                tracing::info!(client_id = %target, "client disconnected by an operator (through the cluster)");
            }
            None => tracing::debug!(%target, "cluster: disconnect for a client that left"),
        }
    }
}
