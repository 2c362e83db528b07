//! The bus core one server process runs: the router, the backplane it
//! shares with other nodes, and what commands need to know about the
//! server.
//!
//! The publish path lives here, once, for sessions and the HTTP server
//! API alike: a channel message goes to the [`Backplane`] when it carries
//! channel messages now, and is routed on this node otherwise (or should
//! the backplane fail).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arqon_config::{Config, LimitsConfig, StorageMode};
use arqon_protocol::{ChannelKey, ClientId, Envelope, ErrorCode, RawJson, Timestamp, now_rfc3339};
use arqon_routing::backplane::{Local, SharedMessage, deleted_notice};
use arqon_routing::{
    Backplane, Channel, ChannelKind, ChannelSpec, Client, Delivery, Publisher, Router, RoutingError,
};
use arqon_storage::{Entry, Storage, Stored};
use arqon_telemetry::{AgentAction, Event, Telemetry};
use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::CommandError;

/// Product name reported by `status` and `/version`.
pub const PRODUCT_NAME: &str = "ArqonBus";

/// Facts about this server process.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub node_id: String,
    pub started_at: Timestamp,
    started: Instant,
}

impl ServerInfo {
    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// A publish or direct message that settles later: handed to the
/// backplane (and, should it fail, routed on this node after all).
pub type Later<T> = Pin<Box<dyn Future<Output = Result<T, CommandError>> + Send + 'static>>;

/// How a channel publish went.
pub enum Routed {
    /// Routed on this node: delivered now, history as `stored` says.
    Here { delivery: Delivery, stored: Stored },
    /// Handed to the backplane.
    Shared(Later<Settled>),
}

impl std::fmt::Debug for Routed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Routed::Here { delivery, stored } => f
                .debug_struct("Here")
                .field("delivery", delivery)
                .field("stored", stored)
                .finish(),
            Routed::Shared(_) => f.write_str("Shared(..)"),
        }
    }
}

/// A publish's outcome once settled, for its ack (SPEC §4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Recipients: on this node, or the members on every live node
    /// (less the publisher) when the backplane carried it.
    pub delivered: u64,
    pub seq: Option<u64>,
    pub epoch: Option<Arc<str>>,
    /// Durable in history.
    pub stored: bool,
}

/// How a direct message went.
pub enum Sent {
    /// Queued for a client of this node (`false`: dropped, its queue was
    /// full under the `drop` policy).
    Here(Delivery),
    /// Handed to the backplane for a client of another node: resolves to
    /// 1 once that node has it.
    Shared(Later<u64>),
}

impl std::fmt::Debug for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sent::Here(delivery) => f.debug_tuple("Here").field(delivery).finish(),
            Sent::Shared(_) => f.write_str("Shared(..)"),
        }
    }
}

/// Everything the sessions of one server share. Cheap to reach through an
/// `Arc`; holds no lock of its own.
#[derive(Debug)]
pub struct Bus {
    router: Arc<Router>,
    info: ServerInfo,
    limits: LimitsConfig,
    max_message_size: usize,
    storage: Storage,
    strict_storage: bool,
    telemetry: Telemetry,
    /// What this node shares with other nodes (SPEC §10).
    backplane: Arc<dyn Backplane>,
    /// Background work of the bus and its backplane; shutdown stops and
    /// waits for it.
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Bus {
    /// A single-node bus for `config` over `storage` (see `Storage::open`),
    /// with its system channels created. `version` is the server's version
    /// string. Create it after any metrics recorder is installed: the
    /// telemetry hub takes its metric handles then.
    pub fn new(config: &Config, version: impl Into<String>, storage: Storage) -> Self {
        let mut system: Vec<ChannelKey> = config
            .routing
            .system_channels
            .iter()
            .filter_map(|text| ChannelKey::parse(text).ok())
            .collect();
        // The telemetry and dashboard channels are always system channels.
        for extra in [
            &config.telemetry.channel,
            &config.telemetry.dashboard_channel,
        ] {
            if let Ok(key) = ChannelKey::parse(extra)
                && !system.contains(&key)
            {
                system.push(key);
            }
        }
        Self {
            router: Arc::new(Router::new(&config.routing, &system)),
            info: ServerInfo {
                version: version.into(),
                node_id: config.cluster.node_id.clone(),
                started_at: arqon_protocol::now(),
                started: Instant::now(),
            },
            limits: config.limits.clone(),
            max_message_size: config.server.max_message_size,
            storage,
            strict_storage: config.storage.mode == StorageMode::Strict,
            telemetry: Telemetry::new(&config.telemetry),
            backplane: Arc::new(Local::new(config.cluster.node_id.clone())),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Shares this bus with other nodes through `backplane` (SPEC §10):
    /// channel and direct messages, `seq`, history and presence from now
    /// on. Open the backplane with [`Bus::shared_router`], [`Bus::tasks`]
    /// and [`Bus::stopping`], so that what it receives reaches this bus's
    /// clients and its tasks end with the bus.
    #[must_use]
    pub fn with_backplane(mut self, backplane: Arc<dyn Backplane>) -> Self {
        self.backplane = backplane;
        self
    }

    /// The backplane: [`Local`] unless [`Bus::with_backplane`] set one.
    pub fn backplane(&self) -> &dyn Backplane {
        &*self.backplane
    }

    /// The router, shared with the backplane that delivers to it.
    pub fn shared_router(&self) -> Arc<Router> {
        self.router.clone()
    }

    /// The tracker of the bus's background tasks (and its backplane's).
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Cancelled by [`Bus::stop_tasks`]: long-running tasks end then.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops the bus's background tasks and waits for them, at most
    /// `wait`. Returns whether they all ended.
    ///
    /// # Cancel safety
    /// Cancel safe: the tasks are told to stop at once.
    pub async fn stop_tasks(&self, wait: std::time::Duration) -> bool {
        self.stop.cancel();
        self.tasks.close();
        tokio::time::timeout(wait, self.tasks.wait()).await.is_ok()
    }

    /// Publishes `envelope` on channel `key`, from `author` (a client, or
    /// the server when `None`). The channel must exist and, for a client,
    /// admit it (SPEC §4.1); `ack` asks for a storage ticket to wait on.
    ///
    /// Through the backplane when it takes channel messages now (system
    /// channels never: they describe the node that emits them); on this
    /// node otherwise, or should the backplane fail. A single node goes
    /// straight to the router: no lookup or check is done twice.
    pub fn publish(
        self: &Arc<Self>,
        author: Option<&Arc<Client>>,
        key: &ChannelKey,
        mut envelope: Envelope<RawJson>,
        echo: bool,
        ack: bool,
    ) -> Result<Routed, RoutingError> {
        if self.backplane.takes_channel_messages() {
            let channel = match author {
                Some(client) => self.router.check_publish(client, key)?,
                None => self
                    .router
                    .channel(key)
                    .ok_or_else(|| RoutingError::ChannelNotFound { key: key.clone() })?,
            };
            if channel.kind() != ChannelKind::System {
                let sender = author.map(|client| client.id());
                let shared = self.backplane.publish(SharedMessage {
                    key,
                    sender,
                    echo,
                    envelope: &mut envelope,
                    epoch: &channel.epoch_to_start(),
                });
                // The publisher is among the members the backplane counted,
                // but not a recipient.
                let sender_counted = !echo && sender.is_some_and(|id| channel.has_member(id));
                let (bus, author, key) = (self.clone(), author.cloned(), key.clone());
                return Ok(Routed::Shared(Box::pin(async move {
                    match shared.await {
                        Ok(published) => Ok(Settled {
                            delivered: published.members.saturating_sub(u64::from(sender_counted)),
                            seq: Some(published.seq),
                            epoch: Some(published.epoch),
                            stored: published.stored,
                        }),
                        Err(error) => {
                            tracing::warn!(channel = %key, %error, "cluster publish failed; routed on this node only");
                            bus.publish_here(author.as_ref(), &key, envelope, echo, ack)?
                                .settle()
                                .await
                        }
                    }
                })));
            }
        }
        self.publish_here(author, key, envelope, echo, ack)
    }

    /// Routes a channel message on this node, recording it in history.
    fn publish_here(
        &self,
        author: Option<&Arc<Client>>,
        key: &ChannelKey,
        envelope: Envelope<RawJson>,
        echo: bool,
        ack: bool,
    ) -> Result<Routed, RoutingError> {
        let publisher = author.map_or(Publisher::Server, Publisher::Member);
        let storage = &self.storage;
        let (delivery, stored) =
            self.router
                .publish_with(publisher, key, envelope, echo, |sequenced| {
                    storage.record(
                        Entry {
                            key: sequenced.key.clone(),
                            seq: sequenced.seq,
                            epoch: sequenced.epoch.clone(),
                            at: arqon_protocol::now(),
                            frame: sequenced.frame.clone(),
                        },
                        ack,
                    )
                })?;
        Ok(Routed::Here { delivery, stored })
    }

    /// Sends `envelope` from `sender` to client `target`: on this node when
    /// it is connected here, else through the backplane to its node.
    /// `TARGET_NOT_FOUND` when no node has it.
    pub fn send_direct(
        &self,
        sender: &Arc<Client>,
        target: &ClientId,
        mut envelope: Envelope<RawJson>,
    ) -> Result<Sent, RoutingError> {
        if self.router.client(target).is_none() {
            envelope.sender = Some(sender.id().as_str().to_owned());
            envelope.timestamp = now_rfc3339();
            envelope.to_client = Some(target.as_str().to_owned());
            let frame = Bytes::from(envelope.to_json());
            if let Some(sent) = self.shared_direct(target, frame) {
                return Ok(Sent::Shared(sent));
            }
        }
        self.router
            .send_direct(sender, target, envelope)
            .map(Sent::Here)
    }

    /// `frame` to client `target` of another node, through the backplane;
    /// `None` when there is no other node to ask.
    pub(crate) fn shared_direct(&self, target: &ClientId, frame: Bytes) -> Option<Later<u64>> {
        let sent = self.backplane.send_direct(target, frame)?;
        let target = target.clone();
        Some(Box::pin(async move {
            match sent.await {
                Ok(true) => Ok(1),
                Ok(false) => Err(RoutingError::TargetNotFound { client: target }.into()),
                Err(error) => {
                    tracing::warn!(%error, "cluster direct message failed");
                    Err(unreachable(&target))
                }
            }
        }))
    }

    /// The channel's epoch and last `seq`: as the backplane holds them
    /// (adopted by the local channel) when it has them, else the local
    /// channel's.
    pub async fn sequence(&self, channel: &Channel) -> (Arc<str>, u64) {
        if let Some((epoch, seq)) = self.backplane.sequence(channel.key()).await {
            self.router.sync_sequence(channel.key(), &epoch, seq);
        }
        channel.sequence()
    }

    /// The channel `key` on this node; also a channel that exists only on
    /// other nodes (created there, or with shared history), which is then
    /// created here with its shared record, epoch and `seq`.
    pub async fn find_channel(&self, key: &ChannelKey) -> Option<Arc<Channel>> {
        if let Some(channel) = self.router.channel(key) {
            return Some(channel);
        }
        let shared = self.backplane.channel(key).await?;
        if shared.record.is_none() && shared.sequence.is_none() {
            return None;
        }
        let spec = ChannelSpec {
            restored: shared.sequence,
            ..shared.record.as_ref().map_or_else(
                || ChannelSpec {
                    auto_created: true,
                    ..ChannelSpec::default()
                },
                ChannelSpec::from_record,
            )
        };
        match self.router.create_channel(key.clone(), spec) {
            Ok(channel) => Some(channel),
            // Created here meanwhile.
            Err(_) => self.router.channel(key),
        }
    }

    /// Deletes a channel on this node: members (only with `force`) get a
    /// `system` notice and lose the subscription. Returns how many.
    pub fn delete_channel_here(
        &self,
        key: &ChannelKey,
        force: bool,
    ) -> Result<usize, RoutingError> {
        self.router.delete_channel(key, force, deleted_notice(key))
    }

    /// Removes the auto-created channels left empty for `ttl`, with their
    /// history (SPEC §18), and reports each as `channel_deleted` with
    /// `reason: "idle"`. The backplane forgets the shared record too once
    /// no node has members.
    pub fn reclaim_idle_channels(&self, ttl: std::time::Duration) -> usize {
        let deleted = self.router.delete_idle_channels(ttl);
        for key in &deleted {
            tracing::debug!(channel = %key, "idle channel removed");
            self.storage.delete(key);
            self.telemetry.emit_with(|| Event::ChannelDeleted {
                client_id: None,
                channel: key.clone(),
                reason: Some("idle"),
            });
            self.backplane.channel_idle(key);
        }
        deleted.len()
    }

    /// The telemetry hub events are emitted to.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Emits `agent_activity` when `client` is an AI agent (SPEC §8).
    pub fn agent_activity(
        &self,
        client: &Client,
        action: AgentAction,
        channel: Option<&ChannelKey>,
    ) {
        if client.client_type() != arqon_protocol::ClientType::AiAgent {
            return;
        }
        self.telemetry.emit_with(|| {
            let profile = client.profile();
            Event::AgentActivity {
                client_id: client.id().clone(),
                screen_name: profile.screen_name,
                personality: profile.personality,
                action,
                channel: channel.cloned(),
            }
        });
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    pub fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Channel history.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Whether publishes must be refused with `STORAGE_UNAVAILABLE` now:
    /// strict storage mode while Redis is down (SPEC §7).
    pub fn storage_refuses_writes(&self) -> bool {
        self.strict_storage && !self.storage.is_available()
    }
}

impl Routed {
    /// Waits for the outcome: a ticket's durability, or the backplane.
    pub async fn settle(self) -> Result<Settled, CommandError> {
        match self {
            Routed::Here { delivery, stored } => Ok(Settled {
                delivered: u64::try_from(delivery.delivered).unwrap_or(u64::MAX),
                seq: delivery.seq,
                epoch: delivery.epoch,
                stored: match stored {
                    Stored::Pending(ticket) => ticket.wait().await,
                    Stored::Durable => true,
                    Stored::Buffered | Stored::Dropped => false,
                },
            }),
            Routed::Shared(later) => later.await,
        }
    }
}

/// The error for a client of another node that cannot be reached now.
pub(crate) fn unreachable(target: &ClientId) -> CommandError {
    CommandError::new(
        ErrorCode::TargetNotFound,
        format!("client {target} is not reachable: the cluster is unavailable"),
    )
}
