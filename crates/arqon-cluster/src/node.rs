//! One node's connection to the cluster: what it tells Redis about itself,
//! and the Redis commands behind each backplane operation.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arqon_config::ClusterConfig;
use arqon_protocol::{ChannelKey, ClientId, Envelope, RawJson};
use arqon_routing::backplane::{NodeStatus, Overview, Published};
use arqon_routing::{PresenceEvent, Router};
use arqon_storage::{Storage, layout};
use bytes::Bytes;
use fred::clients::{Pipeline, SubscriberClient};
use fred::error::Error;
use fred::prelude::{
    Client, ClientLike, HashesInterface, KeysInterface, PubsubInterface, SetsInterface,
    SortedSetsInterface, Value,
};
use fred::types::{ClusterHash, CustomCommand};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ClusterError;
use crate::frame;
use crate::presence::Remote;
use crate::scripts;
use crate::subscriptions::Subscriptions;

/// The cluster connection of one node. Cheap to clone; it implements
/// [`Backplane`](arqon_routing::Backplane) (see `backplane.rs`).
#[derive(Debug, Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) settings: ClusterConfig,
    pub(crate) started_at: String,
    pub(crate) stream_maxlen: i64,
    pub(crate) ttl_secs: i64,
    pub(crate) client: Client,
    pub(crate) subscriber: SubscriberClient,
    /// History: publishes go through the cluster only while it is caught
    /// up (what was sequenced here during an outage is written first).
    pub(crate) storage: Storage,
    /// This node's clients, where what other nodes send is delivered.
    pub(crate) router: Arc<Router>,
    pub(crate) local: Mutex<Local>,
    pub(crate) subscriptions: Subscriptions,
    /// Some presence write failed: the next heartbeat rewrites it all.
    pub(crate) dirty: AtomicBool,
    /// Publishes waiting for the publisher task.
    pub(crate) publishes: mpsc::Sender<PublishJob>,
    /// Members of other nodes, for the `leave` events of a dead node.
    pub(crate) remote: Mutex<Remote>,
    /// Where the node's background work runs (the bus's tracker).
    pub(crate) tasks: TaskTracker,
    /// Ends the node's tasks: cancelled by the bus's stop signal, or when
    /// the last handle goes (a node that dies, in tests).
    pub(crate) stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A connected client as this node mirrors it.
#[derive(Debug, Clone)]
pub(crate) struct LocalClient {
    client_type: String,
}

/// What this node has told (or must tell) Redis about itself.
#[derive(Debug, Default)]
pub(crate) struct Local {
    pub(crate) clients: HashMap<ClientId, LocalClient>,
    /// Per channel, client id → client record (JSON text).
    pub(crate) channels: HashMap<ChannelKey, BTreeMap<ClientId, String>>,
}

/// One channel's local presence for a heartbeat: its key, member count,
/// and (for a full rewrite) its members' `(client id, record)`.
type ChannelPresence = (ChannelKey, u64, Vec<(String, String)>);

/// A node's summary in its `node` hash (`summary` field).
#[derive(Debug, Serialize, Deserialize)]
struct Summary {
    node_id: String,
    started_at: String,
    clients: u64,
    by_type: BTreeMap<String, u64>,
}

/// One queued publish: its script call and where its result goes.
pub(crate) struct PublishJob {
    pub(crate) script: (CustomCommand, Vec<Value>),
    pub(crate) reply: oneshot::Sender<Result<Published, ClusterError>>,
}

impl std::fmt::Debug for PublishJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublishJob")
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// An `EVAL` of `script` as a custom command, so that it can be pipelined;
/// its cluster slot is its first key's.
pub(crate) fn eval(
    script: &str,
    keys: Vec<String>,
    args: Vec<Value>,
) -> (CustomCommand, Vec<Value>) {
    let mut all = Vec::with_capacity(2 + keys.len() + args.len());
    all.push(Value::from(script));
    all.push(Value::Integer(i64::try_from(keys.len()).unwrap_or(0)));
    all.extend(keys.into_iter().map(Value::from));
    all.extend(args);
    (
        CustomCommand::new_static("EVAL", ClusterHash::Offset(2), false),
        all,
    )
}

impl Cluster {
    pub fn node_id(&self) -> &str {
        &self.inner.settings.node_id
    }

    /// Both Redis connections are up.
    pub fn is_connected(&self) -> bool {
        self.inner.client.is_connected() && self.inner.subscriber.is_connected()
    }

    /// Publishes can go through Redis now: it is reachable, and nothing
    /// is left in the storage outage buffer (what was sequenced locally
    /// during an outage is written first, so `seq` continues above it).
    pub(crate) fn routes(&self) -> bool {
        let storage = &self.inner.storage;
        self.is_connected() && storage.is_available() && storage.status().buffered == 0
    }

    /// Queues a channel message for the publish script (sequence, store,
    /// broadcast). Queued when called, so one caller's messages reach
    /// Redis in the order of the calls; the returned future only waits
    /// for the result.
    pub(crate) fn publish(
        &self,
        key: &ChannelKey,
        sender: Option<&ClientId>,
        echo: bool,
        envelope: &mut Envelope<RawJson>,
        epoch: &str,
    ) -> impl Future<Output = Result<Published, ClusterError>> + Send + 'static {
        let open = frame::open_envelope(envelope, key, sender);
        let keys = vec![
            layout::meta_key(key),
            layout::stream_key(key),
            layout::channel_nodes_key(key),
        ];
        let script = eval(
            &scripts::PUBLISH,
            keys,
            vec![
                Value::Bytes(open.into()),
                Value::from(epoch),
                Value::Integer(self.inner.stream_maxlen),
                Value::Integer(self.inner.ttl_secs),
                Value::from(layout::live_channel(key)),
                Value::Integer(now_ms()),
                Value::from(frame::channel_header(sender, echo)),
                Value::from(layout::members_prefix(key)),
            ],
        );
        let (reply, result) = oneshot::channel();
        // A full queue (Redis far behind) fails the publish, which the
        // caller then routes on this node alone.
        let queued = self.inner.publishes.try_send(PublishJob { script, reply });
        async move {
            if queued.is_err() {
                return Err(ClusterError::QueueFull { queue: "publish" });
            }
            result.await.unwrap_or(Err(ClusterError::Stopped))
        }
    }

    /// Sends `frame` (or, with `disconnect`, a disconnect) to client
    /// `target` on whichever live node holds it. `Ok(false)`: no live node
    /// has that client.
    pub(crate) async fn send_direct(
        &self,
        target: &ClientId,
        frame: Bytes,
        disconnect: bool,
    ) -> Result<bool, ClusterError> {
        let mut args = vec![
            Value::from(target.as_str()),
            Value::Bytes(frame),
            Value::Integer(now_ms()),
            Value::Integer(millis(self.inner.settings.node_ttl)),
            Value::from(layout::NODE_CHANNEL_PREFIX),
        ];
        if disconnect {
            args.push(Value::from(frame::disconnect_header(target)));
        }
        let (command, args) = eval(
            scripts::DIRECT,
            vec![layout::CLIENTS_KEY.to_owned(), layout::NODES_KEY.to_owned()],
            args,
        );
        let found: i64 = self
            .inner
            .client
            .custom(command, args)
            .await
            .map_err(ClusterError::redis("direct message"))?;
        Ok(found == 1)
    }

    /// Registers a client of this node, so direct messages find it. The
    /// mirror is updated at once; the heartbeat rewrites the registry if
    /// this write is lost.
    pub(crate) async fn client_connected(
        &self,
        client_id: &ClientId,
        client_type: &str,
    ) -> Result<(), ClusterError> {
        lock(&self.inner.local).clients.insert(
            client_id.clone(),
            LocalClient {
                client_type: client_type.to_owned(),
            },
        );
        if !self.is_connected() {
            self.mark_dirty();
            return Ok(());
        }
        let pipeline = self.inner.client.pipeline();
        let written: Result<(), Error> = async {
            pipeline
                .hset::<(), _, _>(layout::CLIENTS_KEY, (client_id.as_str(), self.node_id()))
                .await?;
            self.queue_summary(&pipeline).await?;
            pipeline.all::<Value>().await.map(drop)
        }
        .await;
        written.map_err(|error| self.failed("client registration", error))
    }

    /// Forgets a client of this node and its memberships.
    pub(crate) async fn client_disconnected(&self, client_id: &ClientId, channels: &[ChannelKey]) {
        lock(&self.inner.local).clients.remove(client_id);
        for key in channels {
            if let Err(error) = self.left(key, client_id).await {
                tracing::debug!(channel = %key, %error, "cluster: presence not updated; it expires with the node TTL");
            }
        }
        let (command, args) = eval(
            scripts::UNREGISTER,
            vec![layout::CLIENTS_KEY.to_owned()],
            vec![Value::from(client_id.as_str()), Value::from(self.node_id())],
        );
        let unregistered = async {
            let pipeline = self.inner.client.pipeline();
            pipeline.custom::<(), _>(command, args).await?;
            self.queue_summary(&pipeline).await?;
            pipeline.all::<Value>().await
        };
        if let Err(error) = unregistered.await {
            tracing::debug!(%error, "cluster: client registration not removed yet");
        }
    }

    /// Notes that Redis missed a presence write: the next heartbeat writes
    /// all of this node's presence again.
    pub(crate) fn mark_dirty(&self) {
        self.inner.dirty.store(true, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self, operation: &'static str, error: Error) -> ClusterError {
        self.mark_dirty();
        ClusterError::redis(operation)(error)
    }

    /// Queues the write of this node's summary (its client counts).
    async fn queue_summary(&self, pipeline: &Pipeline<Client>) -> Result<(), Error> {
        let node = layout::node_key(self.node_id());
        pipeline
            .hset::<(), _, _>(
                node.as_str(),
                (layout::FIELD_SUMMARY, self.summary().as_str()),
            )
            .await?;
        pipeline
            .pexpire::<(), _>(node.as_str(), millis(self.inner.settings.node_ttl), None)
            .await
    }

    /// Records that `client_id` (described by `record`, JSON text) joined
    /// `key` on this node, and listens to the channel if it is its first
    /// local member. Returns the members over the cluster and the
    /// channel's epoch and last `seq` in Redis (`None` if it has none).
    pub(crate) async fn joined(
        &self,
        key: &ChannelKey,
        client_id: &ClientId,
        record: String,
    ) -> Result<(u64, Option<(Arc<str>, u64)>), ClusterError> {
        let previous = lock(&self.inner.local)
            .channels
            .entry(key.clone())
            .or_default()
            .insert(client_id.clone(), record.clone());
        if self.sync_subscription(key).await? {
            self.seed_remote(key).await;
        }
        let node = self.node_id();
        let local_count = self.local_count(key);
        // A repeated join is no news to the other nodes.
        let header = match previous {
            None => frame::presence_header(node, PresenceEvent::Join, client_id),
            Some(_) => String::new(),
        };
        let (presence, presence_args) =
            self.presence_script(key, PresenceEvent::Join, client_id, record, header);
        let pipeline = self.inner.client.pipeline();
        let queued: Result<(), Error> = async {
            pipeline.custom::<(), _>(presence, presence_args).await?;
            pipeline
                .hset::<(), _, _>(layout::counts_key(node), (key.as_str(), local_count))
                .await?;
            pipeline
                .pexpire::<(), _>(
                    layout::counts_key(node),
                    millis(self.inner.settings.node_ttl),
                    None,
                )
                .await?;
            pipeline
                .hmget::<(), _, _>(
                    layout::meta_key(key),
                    vec![layout::FIELD_EPOCH, layout::FIELD_LAST_SEQ],
                )
                .await?;
            Ok(())
        }
        .await;
        queued.map_err(|error| self.failed("join", error))?;
        let replies: Vec<Value> = pipeline
            .all()
            .await
            .map_err(|error| self.failed("join", error))?;
        let mut replies = replies.into_iter();
        let count = replies.next().and_then(|value| value.as_u64()).unwrap_or(0);
        let sequence = replies
            .nth(2)
            .and_then(|meta| meta.convert::<(Option<String>, Option<u64>)>().ok())
            .and_then(|(epoch, seq)| epoch.map(|epoch| (Arc::from(epoch), seq.unwrap_or(0))));
        Ok((count, sequence))
    }

    /// The presence script's call recording `change` of `client_id` in
    /// `key` on this node; it publishes a notice unless `header` is empty.
    fn presence_script(
        &self,
        key: &ChannelKey,
        change: PresenceEvent,
        client_id: &ClientId,
        record: String,
        header: String,
    ) -> (CustomCommand, Vec<Value>) {
        let node = self.node_id();
        let change = match change {
            PresenceEvent::Join => "j",
            PresenceEvent::Leave => "l",
        };
        eval(
            scripts::PRESENCE,
            vec![
                layout::members_key(key, node),
                layout::channel_nodes_key(key),
            ],
            vec![
                Value::from(change),
                Value::from(client_id.as_str()),
                Value::from(record),
                Value::Integer(millis(self.inner.settings.node_ttl)),
                Value::from(node),
                Value::from(layout::members_prefix(key)),
                Value::from(layout::live_channel(key)),
                Value::from(header),
            ],
        )
    }

    /// Records that `client_id` left `key` on this node; stops listening
    /// to the channel when it was its last local member.
    pub(crate) async fn left(
        &self,
        key: &ChannelKey,
        client_id: &ClientId,
    ) -> Result<(), ClusterError> {
        let removed = {
            let mut local = lock(&self.inner.local);
            let mut removed = None;
            if let Some(members) = local.channels.get_mut(key) {
                removed = members.remove(client_id);
                if members.is_empty() {
                    local.channels.remove(key);
                }
            }
            removed
        };
        self.sync_subscription(key).await?;
        let node = self.node_id();
        let local_count = self.local_count(key);
        let (header, record) = match removed {
            Some(record) => (
                frame::presence_header(node, PresenceEvent::Leave, client_id),
                record,
            ),
            None => (String::new(), String::new()),
        };
        let (presence, presence_args) =
            self.presence_script(key, PresenceEvent::Leave, client_id, record, header);
        let pipeline = self.inner.client.pipeline();
        let queued: Result<(), Error> = async {
            pipeline.custom::<(), _>(presence, presence_args).await?;
            if local_count == 0 {
                pipeline
                    .hdel::<(), _, _>(layout::counts_key(node), key.as_str())
                    .await?;
            } else {
                pipeline
                    .hset::<(), _, _>(layout::counts_key(node), (key.as_str(), local_count))
                    .await?;
            }
            Ok(())
        }
        .await;
        queued.map_err(|error| self.failed("leave", error))?;
        pipeline
            .all::<Value>()
            .await
            .map_err(|error| self.failed("leave", error))?;
        Ok(())
    }

    pub(crate) fn local_count(&self, key: &ChannelKey) -> u64 {
        lock(&self.inner.local)
            .channels
            .get(key)
            .map_or(0, |members| members.len() as u64)
    }

    /// Makes this node's Pub/Sub subscription to `key` match whether it has
    /// local members. Returns whether it subscribed now (the caller then
    /// seeds the mirror of other nodes' members).
    ///
    /// # Cancel safety
    /// Cancel safe: the change is made by the subscription task, which
    /// reads the wanted state when it gets to it.
    pub(crate) async fn sync_subscription(&self, key: &ChannelKey) -> Result<bool, ClusterError> {
        let wanted = lock(&self.inner.local).channels.contains_key(key);
        self.inner.subscriptions.sync(key, wanted).await
    }

    /// The channel's members over the cluster: their number and up to
    /// `limit` client records (JSON text).
    pub(crate) async fn members(
        &self,
        key: &ChannelKey,
        limit: usize,
    ) -> Result<(u64, Vec<String>), ClusterError> {
        let (command, args) = eval(
            scripts::MEMBERS,
            vec![layout::channel_nodes_key(key)],
            vec![Value::from(layout::members_prefix(key))],
        );
        let records: Vec<String> = self
            .inner
            .client
            .custom(command, args)
            .await
            .map_err(ClusterError::redis("members"))?;
        let count = records.len() as u64;
        Ok((count, records.into_iter().take(limit).collect()))
    }

    /// Shares a channel's record (JSON text) with every node, unless one is
    /// shared already. Returns whether this one was stored.
    pub(crate) async fn register_channel(
        &self,
        key: &ChannelKey,
        record: &str,
    ) -> Result<bool, ClusterError> {
        self.inner
            .client
            .hsetnx(layout::CHANNELS_KEY, key.as_str(), record)
            .await
            .map_err(ClusterError::redis("channel registration"))
    }

    /// The shared record of a channel (JSON text), if any node created it.
    pub(crate) async fn channel_record(
        &self,
        key: &ChannelKey,
    ) -> Result<Option<String>, ClusterError> {
        self.inner
            .client
            .hget(layout::CHANNELS_KEY, key.as_str())
            .await
            .map_err(ClusterError::redis("channel record"))
    }

    /// Every shared channel record (JSON text).
    pub(crate) async fn channel_records(&self) -> Result<Vec<String>, ClusterError> {
        self.inner
            .client
            .hvals(layout::CHANNELS_KEY)
            .await
            .map_err(ClusterError::redis("channel records"))
    }

    /// Removes a channel everywhere: its shared record goes, and every node
    /// (this one included) is told to drop it.
    pub(crate) async fn delete_channel(&self, key: &ChannelKey) -> Result<(), ClusterError> {
        let pipeline = self.inner.client.pipeline();
        let queued: Result<(), Error> = async {
            pipeline
                .hdel::<(), _, _>(layout::CHANNELS_KEY, key.as_str())
                .await?;
            pipeline
                .publish::<(), _, _>(layout::CONTROL_CHANNEL, frame::deleted(key))
                .await
        }
        .await;
        queued.map_err(ClusterError::redis("channel deletion"))?;
        pipeline
            .all::<Value>()
            .await
            .map_err(ClusterError::redis("channel deletion"))?;
        Ok(())
    }

    /// Forgets this node's members of a deleted channel.
    pub(crate) async fn channel_gone(&self, key: &ChannelKey) -> Result<(), ClusterError> {
        lock(&self.inner.local).channels.remove(key);
        self.sync_subscription(key).await?;
        let node = self.node_id();
        let pipeline = self.inner.client.pipeline();
        let queued: Result<(), Error> = async {
            pipeline
                .del::<(), _>(layout::members_key(key, node))
                .await?;
            pipeline
                .hdel::<(), _, _>(layout::counts_key(node), key.as_str())
                .await
        }
        .await;
        queued.map_err(|error| self.failed("channel cleanup", error))?;
        pipeline
            .all::<Value>()
            .await
            .map_err(|error| self.failed("channel cleanup", error))?;
        Ok(())
    }

    /// The channel's epoch and last `seq` in Redis, if it has any.
    pub(crate) async fn sequence(
        &self,
        key: &ChannelKey,
    ) -> Result<Option<(Arc<str>, u64)>, ClusterError> {
        let (epoch, seq): (Option<String>, Option<u64>) = self
            .inner
            .client
            .hmget(
                layout::meta_key(key),
                vec![layout::FIELD_EPOCH, layout::FIELD_LAST_SEQ],
            )
            .await
            .map_err(ClusterError::redis("sequence"))?;
        Ok(epoch.map(|epoch| (Arc::from(epoch), seq.unwrap_or(0))))
    }

    /// Live nodes and members per channel over the cluster.
    pub(crate) async fn overview(&self) -> Result<Overview, ClusterError> {
        let since = now_ms() - millis(self.inner.settings.node_ttl);
        let nodes: Vec<(String, f64)> = self
            .inner
            .client
            .zrangebyscore(layout::NODES_KEY, since as f64, "+inf", true, None)
            .await
            .map_err(ClusterError::redis("overview"))?;
        let pipeline = self.inner.client.pipeline();
        let queued: Result<(), Error> = async {
            for (node, _) in &nodes {
                pipeline.hgetall::<(), _>(layout::counts_key(node)).await?;
                pipeline
                    .hget::<(), _, _>(layout::node_key(node), layout::FIELD_SUMMARY)
                    .await?;
            }
            Ok(())
        }
        .await;
        queued.map_err(ClusterError::redis("overview"))?;
        let replies: Vec<Value> = pipeline
            .all()
            .await
            .map_err(ClusterError::redis("overview"))?;
        let mut overview = Overview::default();
        let mut replies = replies.into_iter();
        for (node, seen) in nodes {
            let counts: HashMap<String, u64> = replies
                .next()
                .and_then(|value| value.convert().ok())
                .unwrap_or_default();
            for (channel, count) in counts {
                if count > 0 {
                    *overview.channel_members.entry(channel).or_default() += count;
                }
            }
            let summary: Option<Summary> = replies
                .next()
                .and_then(|value| value.convert::<Option<String>>().ok())
                .flatten()
                .and_then(|text| serde_json::from_str(&text).ok());
            let mut status = NodeStatus {
                node_id: node,
                last_seen_ms: seen as i64,
                ..NodeStatus::default()
            };
            if let Some(summary) = summary {
                status.started_at = Some(summary.started_at);
                status.clients = summary.clients;
                status.by_type = summary.by_type;
            }
            overview.nodes.push(status);
        }
        Ok(overview)
    }

    /// This node's summary as JSON text: id, start, clients by type.
    pub(crate) fn summary(&self) -> String {
        let local = lock(&self.inner.local);
        let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
        for client in local.clients.values() {
            *by_type.entry(client.client_type.clone()).or_default() += 1;
        }
        let summary = Summary {
            node_id: self.node_id().to_owned(),
            started_at: self.inner.started_at.clone(),
            clients: local.clients.len() as u64,
            by_type,
        };
        drop(local);
        serde_json::to_string(&summary).unwrap_or_default()
    }

    /// One heartbeat pipeline. `Ok(false)` when this node's keys had
    /// expired in Redis (so what it wrote before is gone).
    pub(crate) async fn renew(&self, full: bool) -> Result<bool, Error> {
        let node = self.node_id().to_owned();
        let ttl = millis(self.inner.settings.node_ttl);
        let now = now_ms();
        let summary = self.summary();
        let (clients, channels) = {
            let local = lock(&self.inner.local);
            let clients: Vec<String> = if full {
                local
                    .clients
                    .keys()
                    .map(|id| id.as_str().to_owned())
                    .collect()
            } else {
                Vec::new()
            };
            let channels: Vec<ChannelPresence> = local
                .channels
                .iter()
                .map(|(key, members)| {
                    let records = if full {
                        members
                            .iter()
                            .map(|(id, record)| (id.as_str().to_owned(), record.clone()))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    (key.clone(), members.len() as u64, records)
                })
                .collect();
            (clients, channels)
        };
        let node_key = layout::node_key(&node);
        let counts_key = layout::counts_key(&node);
        let pipeline = self.inner.client.pipeline();
        pipeline
            .pexpire::<(), _>(node_key.as_str(), ttl, None)
            .await?;
        pipeline
            .zadd::<(), _, _>(
                layout::NODES_KEY,
                None,
                None,
                false,
                false,
                (now as f64, node.as_str()),
            )
            .await?;
        pipeline
            .hset::<(), _, _>(node_key.as_str(), (layout::FIELD_SUMMARY, summary.as_str()))
            .await?;
        pipeline
            .pexpire::<(), _>(node_key.as_str(), ttl, None)
            .await?;
        if full {
            pipeline.del::<(), _>(counts_key.as_str()).await?;
            for chunk in clients.chunks(1000) {
                let fields: Vec<(&str, &str)> = chunk
                    .iter()
                    .map(|id| (id.as_str(), node.as_str()))
                    .collect();
                pipeline
                    .hset::<(), _, _>(layout::CLIENTS_KEY, fields)
                    .await?;
            }
        }
        if !channels.is_empty() {
            let counts: Vec<(&str, u64)> = channels
                .iter()
                .map(|(key, count, _)| (key.as_str(), *count))
                .collect();
            pipeline
                .hset::<(), _, _>(counts_key.as_str(), counts)
                .await?;
            pipeline
                .pexpire::<(), _>(counts_key.as_str(), ttl, None)
                .await?;
        }
        for (key, _, records) in &channels {
            let members = layout::members_key(key, &node);
            let nodes = layout::channel_nodes_key(key);
            if full {
                pipeline.del::<(), _>(members.as_str()).await?;
                if !records.is_empty() {
                    pipeline
                        .hset::<(), _, _>(members.as_str(), records.clone())
                        .await?;
                }
            }
            pipeline
                .pexpire::<(), _>(members.as_str(), ttl, None)
                .await?;
            pipeline
                .sadd::<(), _, _>(nodes.as_str(), node.as_str())
                .await?;
            pipeline.pexpire::<(), _>(nodes.as_str(), ttl, None).await?;
        }
        // Nodes silent for four TTLs are dead for good.
        pipeline
            .zremrangebyscore::<(), _, _, _>(layout::NODES_KEY, "-inf", (now - 4 * ttl) as f64)
            .await?;
        let replies: Vec<Value> = pipeline.all().await?;
        let existed = replies.first().and_then(Value::as_i64) == Some(1);
        Ok(existed || full)
    }

    /// Renews this node's presence; with `full`, first writes all of it
    /// again (at startup, and when Redis has lost it). Failures are logged:
    /// the next heartbeat tries again.
    pub(crate) async fn heartbeat_once(&self, full: bool) {
        let dirty = self.inner.dirty.swap(false, Ordering::Relaxed);
        let full = full || dirty;
        match self.renew(full).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(
                    node = self.node_id(),
                    "cluster: presence lost in Redis; rewriting it"
                );
                if let Err(error) = self.renew(true).await {
                    self.mark_dirty();
                    tracing::warn!(%error, "cluster: heartbeat failed");
                }
            }
            Err(error) => {
                self.mark_dirty();
                tracing::warn!(%error, "cluster: heartbeat failed");
            }
        }
        // Channels whose SUBSCRIBE failed (Redis was down) are retried.
        let wanted: Vec<ChannelKey> = lock(&self.inner.local).channels.keys().cloned().collect();
        for key in wanted {
            match self.sync_subscription(&key).await {
                Ok(true) => self.seed_remote(&key).await,
                Ok(false) => {}
                Err(error) => {
                    tracing::debug!(channel = %key, %error, "cluster: subscription not restored yet");
                    break;
                }
            }
        }
        self.reap_dead_nodes().await;
    }
}
