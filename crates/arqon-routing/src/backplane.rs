//! The backplane: what this node shares with the other nodes of a cluster
//! (SPEC §10), behind one trait with two implementations.
//!
//! The command layer calls the [`Backplane`] once per operation (publish,
//! direct message, join and leave, members, channel records, deletion,
//! sequence, overview) whatever the deployment. [`Local`], a single node,
//! has nothing to add: it answers `None` ("this node's view is the whole
//! bus") or does nothing. The Redis backplane (`arqon-cluster`) answers
//! for every node, and answers `None` too whenever it cannot (Redis
//! unreachable), so that a node always falls back to serving its own
//! clients.
//!
//! What other nodes send this one arrives as [`Inbound`] messages, decoded
//! and validated once by the backplane and applied to the router with
//! [`deliver`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arqon_protocol::{ChannelKey, ClientId, Envelope, RawJson, close};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::{Client, CloseReason, PresenceEvent, Router, RoutingError};

/// The future of a backplane operation. `'static` and `Send`: a backplane
/// call may be awaited in a reply that outlives the caller's borrow.
pub type BackplaneFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The close an operator's disconnect sends (SPEC §17), on whichever node
/// the client is connected to.
pub const OPERATOR_CLOSE: CloseReason = CloseReason {
    code: close::DISCONNECTED,
    reason: "disconnected by an operator",
    discard_pending: false,
};

/// A channel message for the backplane to sequence, store and broadcast to
/// every node (this one included, which delivers it when it comes back).
#[derive(Debug)]
pub struct SharedMessage<'a> {
    pub key: &'a ChannelKey,
    /// The publisher: a client, or `None` for the server.
    pub sender: Option<&'a ClientId>,
    /// The publisher asked to get its own message back.
    pub echo: bool,
    /// The envelope as the publisher sent it. A backplane that takes the
    /// message stamps it (`sender`, `timestamp`, `room`, `channel`) before
    /// it adds `seq` and `epoch`; routed here instead, the router stamps
    /// it again.
    pub envelope: &'a mut Envelope<RawJson>,
    /// The epoch to start if the backplane has none for the channel (see
    /// `Channel::epoch_to_start`).
    pub epoch: &'a str,
}

/// What the backplane did with a [`SharedMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub seq: u64,
    pub epoch: Arc<str>,
    /// Members of the channel on every live node when it was published.
    pub members: u64,
    /// The message is in the channel's history.
    pub stored: bool,
}

/// A join as every node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedJoin {
    /// Members of the channel over the cluster, the new one included.
    pub members: u64,
    /// The channel's epoch and last `seq` in the backplane, if it has any.
    pub sequence: Option<(Arc<str>, u64)>,
}

/// A channel's members over the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Members {
    pub count: u64,
    /// Up to the requested number of member records (`client_id`,
    /// `client_type`, `screen_name`, `connected_at`, `last_activity`).
    pub records: Vec<Value>,
}

/// What the backplane knows of a channel this node may not have.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SharedChannel {
    /// Its channel record, when some node created it.
    pub record: Option<Value>,
    /// Its epoch and last `seq`, when it has history.
    pub sequence: Option<(Arc<str>, u64)>,
}

/// The cluster for `status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overview {
    /// The backplane is unreachable: `nodes` and `channel_members` are
    /// empty and the node reports its own figures.
    pub degraded: bool,
    pub nodes: Vec<NodeStatus>,
    /// Members per channel (`room:channel`), summed over live nodes;
    /// channels without members are left out.
    pub channel_members: HashMap<String, u64>,
}

/// A live node, as its last heartbeat described it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub node_id: String,
    /// Milliseconds since the Unix epoch of its last heartbeat.
    pub last_seen_ms: i64,
    pub started_at: Option<String>,
    /// Its connected clients, in total and by client type.
    pub clients: u64,
    pub by_type: BTreeMap<String, u64>,
}

/// What another node (or this one, through the backplane) sent this node.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// A channel message, sequenced by the backplane.
    Channel(ChannelMessage),
    /// A direct message for a client of this node.
    Direct { target: ClientId, frame: Bytes },
    /// A channel was deleted (on some node): remove it here too.
    ChannelDeleted(ChannelKey),
    /// An operator disconnected a client of this node through another
    /// node's HTTP API (SPEC §17).
    Disconnect { target: ClientId },
    /// A member of a channel this node listens to joined or left on
    /// another node, or vanished with a dead node (SPEC §15).
    Presence(PresenceNotice),
}

/// A sequenced channel message.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelMessage {
    pub key: ChannelKey,
    pub seq: u64,
    pub epoch: Arc<str>,
    /// The member not to deliver it to: the publisher, unless it asked
    /// for an echo (`None` too for the server's messages).
    pub skip: Option<ClientId>,
    /// The delivered envelope, with `seq` and `epoch`.
    pub frame: Bytes,
}

/// A member joined or left a channel on `node`.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceNotice {
    pub key: ChannelKey,
    pub node: String,
    pub change: PresenceEvent,
    pub client_id: ClientId,
    /// Members of the channel over the cluster after the change.
    pub count: u64,
    /// The member's record (JSON), as given to [`Backplane::joined`].
    pub record: Bytes,
}

/// What this node shares with the other nodes of its cluster. See the
/// module documentation; `None` answers mean "nothing beyond this node".
///
/// No method blocks: those that talk to other nodes return a future, and
/// the fire-and-forget ones run in the backplane's own tasks.
pub trait Backplane: Send + Sync + fmt::Debug {
    /// This node's id (`ARQONBUS_NODE_ID`).
    fn node_id(&self) -> &str;

    /// Whether [`publish`](Self::publish) takes channel messages now. A
    /// cheap check (no I/O): a single node answers `false`, a cluster
    /// whether Redis is reachable and history is caught up.
    fn takes_channel_messages(&self) -> bool;

    /// Hands a channel message to the backplane, which sequences, stores
    /// and broadcasts it. Call it only when
    /// [`takes_channel_messages`](Self::takes_channel_messages) said so.
    /// The message is queued when this returns, so one caller's messages
    /// keep their order; the future only waits for the outcome. An error
    /// means the message was not published: the caller routes it on this
    /// node instead.
    fn publish(
        &self,
        message: SharedMessage<'_>,
    ) -> BackplaneFuture<Result<Published, RoutingError>>;

    /// Sends `frame` to client `target` on whichever other node holds it.
    /// `None`: there is no other node to ask. `Ok(false)`: no live node has
    /// the client.
    fn send_direct(
        &self,
        target: &ClientId,
        frame: Bytes,
    ) -> Option<BackplaneFuture<Result<bool, RoutingError>>>;

    /// Asks whichever other node holds client `target` to close it with
    /// [`OPERATOR_CLOSE`]. `None` and `Ok(false)` as for
    /// [`send_direct`](Self::send_direct).
    fn disconnect(&self, target: &ClientId) -> Option<BackplaneFuture<Result<bool, RoutingError>>>;

    /// A client connected to this node: registers it so that direct
    /// messages from any node find it. Resolves once registered, or once
    /// the backplane gave up waiting (failures are logged and repaired
    /// later).
    fn client_connected(&self, client: &Client) -> BackplaneFuture<()>;

    /// A client of this node disconnected, with the channels it had
    /// joined. Runs in the background.
    fn client_disconnected(&self, client: &Client, channels: Vec<ChannelKey>);

    /// `client_id` (described by `record`) joined `key` on this node.
    /// Resolves once every node will deliver the channel's messages to it;
    /// `None` when there is nothing beyond this node's view.
    fn joined(
        &self,
        key: &ChannelKey,
        client_id: &ClientId,
        record: Value,
    ) -> BackplaneFuture<Option<SharedJoin>>;

    /// `client_id` left `key` on this node.
    fn left(&self, key: &ChannelKey, client_id: &ClientId) -> BackplaneFuture<()>;

    /// The channel's members over the cluster, with up to `limit` records.
    fn members(&self, key: &ChannelKey, limit: usize) -> BackplaneFuture<Option<Members>>;

    /// What other nodes know of `key` (a channel this node does not have).
    fn channel(&self, key: &ChannelKey) -> BackplaneFuture<Option<SharedChannel>>;

    /// The records of every shared channel.
    fn channel_records(&self) -> BackplaneFuture<Vec<Value>>;

    /// Shares a new channel's record with every node, unless one is shared
    /// already: `Ok(false)` then (another node created it first).
    fn register_channel(
        &self,
        key: &ChannelKey,
        record: &Value,
    ) -> BackplaneFuture<Result<bool, RoutingError>>;

    /// Deletes a channel on every node (this one is told too, through
    /// [`Inbound::ChannelDeleted`]).
    fn delete_channel(&self, key: &ChannelKey) -> BackplaneFuture<Result<(), RoutingError>>;

    /// This node removed an idle channel (SPEC §18): its shared record goes
    /// too once no node has members. Runs in the background.
    fn channel_idle(&self, key: &ChannelKey);

    /// The channel's epoch and last `seq` in the backplane, if it has any.
    fn sequence(&self, key: &ChannelKey) -> BackplaneFuture<Option<(Arc<str>, u64)>>;

    /// The cluster for `status`; `None` on a single node.
    fn overview(&self) -> BackplaneFuture<Option<Overview>>;
}

/// A single node: nothing to share, every answer is this node's own.
#[derive(Debug, Clone)]
pub struct Local {
    node_id: String,
}

impl Local {
    pub fn new(node_id: impl Into<String>) -> Self {
        Self {
            node_id: node_id.into(),
        }
    }
}

fn ready<T: Send + 'static>(value: T) -> BackplaneFuture<T> {
    Box::pin(std::future::ready(value))
}

impl Backplane for Local {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn takes_channel_messages(&self) -> bool {
        false
    }

    fn publish(
        &self,
        _message: SharedMessage<'_>,
    ) -> BackplaneFuture<Result<Published, RoutingError>> {
        ready(Err(RoutingError::BackplaneUnavailable))
    }

    fn send_direct(
        &self,
        _target: &ClientId,
        _frame: Bytes,
    ) -> Option<BackplaneFuture<Result<bool, RoutingError>>> {
        None
    }

    fn disconnect(
        &self,
        _target: &ClientId,
    ) -> Option<BackplaneFuture<Result<bool, RoutingError>>> {
        None
    }

    fn client_connected(&self, _client: &Client) -> BackplaneFuture<()> {
        ready(())
    }

    fn client_disconnected(&self, _client: &Client, _channels: Vec<ChannelKey>) {}

    fn joined(
        &self,
        _key: &ChannelKey,
        _client_id: &ClientId,
        _record: Value,
    ) -> BackplaneFuture<Option<SharedJoin>> {
        ready(None)
    }

    fn left(&self, _key: &ChannelKey, _client_id: &ClientId) -> BackplaneFuture<()> {
        ready(())
    }

    fn members(&self, _key: &ChannelKey, _limit: usize) -> BackplaneFuture<Option<Members>> {
        ready(None)
    }

    fn channel(&self, _key: &ChannelKey) -> BackplaneFuture<Option<SharedChannel>> {
        ready(None)
    }

    fn channel_records(&self) -> BackplaneFuture<Vec<Value>> {
        ready(Vec::new())
    }

    fn register_channel(
        &self,
        _key: &ChannelKey,
        _record: &Value,
    ) -> BackplaneFuture<Result<bool, RoutingError>> {
        ready(Ok(true))
    }

    fn delete_channel(&self, _key: &ChannelKey) -> BackplaneFuture<Result<(), RoutingError>> {
        ready(Ok(()))
    }

    fn channel_idle(&self, _key: &ChannelKey) {}

    fn sequence(&self, _key: &ChannelKey) -> BackplaneFuture<Option<(Arc<str>, u64)>> {
        ready(None)
    }

    fn overview(&self) -> BackplaneFuture<Option<Overview>> {
        ready(None)
    }
}

/// The `system` notice a channel's members get when it is deleted.
pub fn deleted_notice(key: &ChannelKey) -> Bytes {
    let notice = Envelope::system(
        key.room(),
        key.channel(),
        json!({
            "event": "channel_deleted",
            "room": key.room(),
            "channel": key.channel(),
            "message": format!("channel {key} was deleted; you are no longer subscribed"),
        }),
    );
    Bytes::from(notice.to_json())
}

/// Applies what the backplane received to this node's clients: delivers
/// messages, drops deleted channels, closes disconnected clients and
/// passes presence notices of other nodes on (a notice from `node_id`,
/// this node, was announced when the membership changed here).
pub fn deliver(router: &Router, node_id: &str, inbound: Inbound) {
    match inbound {
        Inbound::Channel(message) => {
            router.deliver_sequenced(
                &message.key,
                message.seq,
                &message.epoch,
                &message.frame,
                message.skip.as_ref(),
            );
        }
        Inbound::Direct { target, frame } => match router.client(&target) {
            Some(client) => {
                router.deliver(&client, frame);
            }
            None => tracing::debug!(%target, "cluster: direct message for a client that left"),
        },
        Inbound::Disconnect { target } => match router.client(&target) {
            Some(client) => {
                client.close(OPERATOR_CLOSE);
                tracing::info!(client_id = %target, "client disconnected by an operator (through the cluster)");
            }
            None => tracing::debug!(%target, "cluster: disconnect for a client that left"),
        },
        Inbound::ChannelDeleted(key) => {
            // Gone already on the node that deleted it.
            let _ = router.delete_channel(&key, true, deleted_notice(&key));
        }
        Inbound::Presence(notice) => {
            if notice.node == node_id {
                return;
            }
            let record: Value = serde_json::from_slice(&notice.record).unwrap_or(Value::Null);
            let client = json!({
                "client_id": notice.client_id,
                "client_type": record.get("client_type"),
                "screen_name": record.get("screen_name"),
            });
            router.announce_remote(&notice.key, notice.change, client, notice.count);
        }
    }
}
