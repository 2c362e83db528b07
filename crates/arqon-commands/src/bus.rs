//! The bus core one server process runs: the router plus what commands
//! need to know about the server.

use std::time::Instant;

use arqon_config::{Config, LimitsConfig, StorageMode};
use arqon_protocol::{ChannelKey, Timestamp};
use std::sync::Arc;

use arqon_protocol::Envelope;
use arqon_routing::{Channel, ChannelSpec, Client, PresenceEvent, Router, RoutingError};
use arqon_storage::Storage;
use arqon_storage::cluster::{Cluster, Inbound, PresenceChange, PresenceNotice};
use arqon_telemetry::{AgentAction, Event, Telemetry};
use bytes::Bytes;
use serde_json::json;

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

/// Everything the sessions of one server share. Cheap to reach through an
/// `Arc`; holds no lock of its own.
#[derive(Debug)]
pub struct Bus {
    router: Router,
    info: ServerInfo,
    limits: LimitsConfig,
    max_message_size: usize,
    storage: Storage,
    strict_storage: bool,
    telemetry: Telemetry,
    /// Set in cluster mode (SPEC §10).
    cluster: Option<Cluster>,
}

impl Bus {
    /// A bus for `config` over `storage` (see `Storage::open`), with its
    /// system channels created. `version` is the server's version string.
    /// Create it after any metrics recorder is installed: the telemetry hub
    /// takes its metric handles then.
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
            router: Router::new(&config.routing, &system),
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
            cluster: None,
        }
    }

    /// Joins this bus to a cluster (SPEC §10): channel and direct messages,
    /// `seq`, history and presence are shared through Redis from now on.
    /// The caller feeds the cluster's inbound stream to
    /// [`Bus::deliver_inbound`].
    #[must_use]
    pub fn with_cluster(mut self, cluster: Cluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// The cluster, in cluster mode.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// The cluster when publishes can go through it now: Redis reachable,
    /// and nothing left in the storage outage buffer (what was sequenced
    /// locally during an outage is written first, so `seq` continues above
    /// it).
    pub fn cluster_route(&self) -> Option<&Cluster> {
        let cluster = self.cluster.as_ref()?;
        (cluster.is_connected()
            && self.storage.is_available()
            && self.storage.status().buffered == 0)
            .then_some(cluster)
    }

    /// Delivers what the cluster sent this node to its local clients.
    pub fn deliver_inbound(&self, inbound: Inbound) {
        match inbound {
            Inbound::Channel(message) => {
                let skip = if message.echo {
                    None
                } else {
                    arqon_protocol::ClientId::new(&message.sender).ok()
                };
                self.router.deliver_sequenced(
                    &message.key,
                    message.seq,
                    &message.epoch,
                    &message.frame,
                    skip.as_ref(),
                );
            }
            Inbound::Direct { target, frame } => {
                let recipient = arqon_protocol::ClientId::new(&target)
                    .ok()
                    .and_then(|id| self.router.client(&id));
                match recipient {
                    Some(client) => {
                        self.router.deliver(&client, frame);
                    }
                    None => {
                        tracing::debug!(%target, "cluster: direct message for a client that left")
                    }
                }
            }
            Inbound::Disconnect { target } => self.disconnect_here(&target),
            Inbound::Presence(notice) => self.announce_remote(notice),
            Inbound::ChannelDeleted(key) => {
                // Gone already on the node that deleted it.
                let _ = self.delete_channel_here(&key, true);
                if let Some(cluster) = self.cluster.clone() {
                    tokio::spawn(async move {
                        if let Err(error) = cluster.channel_gone(&key).await {
                            tracing::debug!(channel = %key, %error, "cluster: presence of a deleted channel expires with the node TTL");
                        }
                    });
                }
            }
        }
    }

    /// Hands another node's presence notice to this node's presence
    /// subscribers (SPEC §15). This node's own notices are skipped: the
    /// router announced those when the membership changed here.
    fn announce_remote(&self, notice: PresenceNotice) {
        if self
            .cluster
            .as_ref()
            .is_some_and(|cluster| cluster.node_id() == notice.node)
        {
            return;
        }
        let record: serde_json::Value =
            serde_json::from_slice(&notice.record).unwrap_or(serde_json::Value::Null);
        let client = json!({
            "client_id": notice.client_id,
            "client_type": record.get("client_type"),
            "screen_name": record.get("screen_name"),
        });
        let event = match notice.change {
            PresenceChange::Join => PresenceEvent::Join,
            PresenceChange::Leave => PresenceEvent::Leave,
        };
        self.router
            .announce_remote(&notice.key, event, client, notice.count);
    }

    /// The channel's epoch and last `seq`: in cluster mode as Redis holds
    /// them (adopted by the local channel), else the local channel's.
    pub async fn sequence(&self, channel: &Channel) -> (Arc<str>, u64) {
        if let Some(cluster) = self.cluster_route()
            && let Ok(Some((epoch, seq))) = cluster.sequence(channel.key()).await
        {
            self.router.sync_sequence(channel.key(), &epoch, seq);
        }
        channel.sequence()
    }

    /// The channel `key` on this node; in cluster mode also a channel that
    /// exists only elsewhere (created on another node, or with history in
    /// Redis), which is then created here with its shared record, epoch and
    /// `seq`.
    pub async fn find_channel(&self, key: &ChannelKey) -> Option<Arc<Channel>> {
        if let Some(channel) = self.router.channel(key) {
            return Some(channel);
        }
        let cluster = self.cluster.as_ref()?;
        let (record, sequence) = tokio::join!(cluster.channel_record(key), cluster.sequence(key));
        let record = record
            .ok()
            .flatten()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
        let sequence = sequence.ok().flatten();
        if record.is_none() && sequence.is_none() {
            return None;
        }
        let spec = ChannelSpec {
            restored: sequence,
            ..record.as_ref().map_or_else(
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
        self.router
            .delete_channel(key, force, Bytes::from(notice.to_json()))
    }

    /// Removes the auto-created channels left empty for `ttl`, with their
    /// history (SPEC §18), and reports each as `channel_deleted` with
    /// `reason: "idle"`. In a cluster the shared record goes too, once no
    /// node has members.
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
            if let Some(cluster) = self.cluster.clone() {
                let key = key.clone();
                tokio::spawn(async move {
                    match cluster.members(&key, 0).await {
                        Ok(members) if members.count == 0 => {
                            if let Err(error) = cluster.delete_channel(&key).await {
                                tracing::debug!(channel = %key, %error, "cluster: idle channel record kept for now");
                            }
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::debug!(channel = %key, %error, "cluster: idle channel record kept for now")
                        }
                    }
                });
            }
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
