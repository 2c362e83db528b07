//! What the server does on an operator's behalf, for the HTTP server API
//! (SPEC §17): publish to a channel as the server, send a direct message as
//! the server, and disconnect a client. The transport (HTTP, auth, bodies)
//! lives in the server; the bus behaviour lives here, over the publish
//! path sessions use too ([`Bus::publish`]), so that both share storage
//! and backplane handling.
//!
//! Messages written here carry `sender: "arqonbus"` ([`SERVER_SENDER`]).
//! A publish may target a system channel: the API speaks for the server,
//! and system channels carry what the server says (SPEC §18 forbids only
//! clients from writing there).

use std::sync::Arc;

use arqon_protocol::{ChannelKey, ClientId, Envelope, EnvelopeType, ErrorCode, RawJson};
pub use arqon_routing::OPERATOR_CLOSE;
use arqon_routing::RoutingError;
use bytes::Bytes;

use crate::bus::{Bus, unreachable};
use crate::error::CommandError;

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
    /// In a cluster the message is sequenced, stored and broadcast by the
    /// backplane like a client's; should it fail, it is routed on this
    /// node alone, as a client's publish is. A system channel is per node
    /// in a cluster: its message reaches this node's members only.
    ///
    /// # Cancel safety
    /// Not cancel safe: once sequenced the message is delivered whether or
    /// not the caller waits for the outcome.
    pub async fn publish_as_server(
        self: &Arc<Self>,
        key: &ChannelKey,
        payload: RawJson,
        metadata: Option<RawJson>,
    ) -> Result<ServerPublished, CommandError> {
        let started = tokio::time::Instant::now();
        self.find_channel(key)
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
        let routed = self.publish(None, key, envelope, false, true)?;
        self.telemetry().record_route(started.elapsed());
        let settled = routed.settle().await?;
        let (Some(seq), Some(epoch)) = (settled.seq, settled.epoch) else {
            return Err(CommandError::new(
                ErrorCode::InternalError,
                "the message was published without a sequence number",
            ));
        };
        Ok(ServerPublished {
            seq,
            epoch,
            delivered: settled.delivered,
            stored: settled.stored,
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
        match self.shared_direct(target, frame) {
            Some(sent) => sent.await,
            None => Err(RoutingError::TargetNotFound {
                client: target.clone(),
            }
            .into()),
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
        let Some(asked) = self.backplane().disconnect(target) else {
            return Err(not_found());
        };
        match asked.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(not_found()),
            Err(error) => {
                tracing::warn!(%error, "cluster disconnect failed");
                Err(unreachable(target))
            }
        }
    }
}
