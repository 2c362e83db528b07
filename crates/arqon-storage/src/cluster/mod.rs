//! Scale-out through Redis (SPEC §10): several nodes behave as one bus.
//!
//! - **Channel messages** are sequenced, stored and broadcast by one Lua
//!   script ([`scripts::PUBLISH`]): `HINCRBY` of the channel's `last_seq`,
//!   `XADD` to its stream, `PUBLISH` to its Pub/Sub channel
//!   `arqonbus:{room:channel}:live`. Every node, the publisher's included,
//!   delivers what arrives on that Pub/Sub channel to its local members, so
//!   all subscribers see one `seq` order. A node subscribes only to the
//!   channels it has local members in.
//! - **Direct messages** go through the client registry
//!   (`arqonbus:{cluster}:clients`, client id → node) to the target node's
//!   Pub/Sub channel `arqonbus:node:<node_id>` ([`scripts::DIRECT`]).
//! - **Presence**: per channel and node, a hash of the node's members
//!   (`arqonbus:{room:channel}:members:<node_id>`), per node a hash of its
//!   member count per channel (`arqonbus:{cluster}:counts:<node_id>`) and a
//!   summary (`arqonbus:{cluster}:node:<node_id>`), all expiring after the
//!   node TTL unless the node's heartbeat renews them; the node registry
//!   (`arqonbus:{cluster}:nodes`, a sorted set of last heartbeats) says
//!   which nodes are alive. A node that dies stops renewing: its members
//!   vanish from every count within the TTL.
//!
//! - **Presence events** (SPEC §15): a member joining or leaving on a node
//!   is recorded and announced by one Lua script ([`scripts::PRESENCE`]),
//!   which publishes a notice on the channel's Pub/Sub channel (the one
//!   its messages use) with the member count over the cluster after the
//!   change; other nodes hand it on as [`Inbound::Presence`], the origin
//!   node ignores its own. Every node mirrors the members other nodes have
//!   in the channels it listens to (seeded from Redis when it starts to
//!   listen, then kept by the notices); when its heartbeat finds one of
//!   those nodes dead (its last heartbeat older than the node TTL), it
//!   reports a `leave` for each of that node's members to its own clients.
//!
//! Keys of one channel share the hash tag `{room:channel}`, and the global
//! keys share `{cluster}`, so every script touches one Redis Cluster slot.
//!
//! The handle never blocks the caller on Redis: membership changes are
//! mirrored locally at once, and what Redis must learn is sent by the
//! returned futures or by the heartbeat, which also rewrites everything
//! after Redis lost it (a restart).

mod scripts;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arqon_config::StorageConfig;
use arqon_protocol::ChannelKey;
use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::error::Error;
use fred::prelude::{
    Builder, Client, ClientLike, EventInterface, HashesInterface, KeysInterface, PubsubInterface,
    ReconnectPolicy, SetsInterface, SortedSetsInterface, Value,
};
use fred::types::{ClusterHash, CustomCommand};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::{BackendError, StorageError};
use crate::redis::conn;
use crate::redis::keys::{meta_key, stream_key};
use arqon_config::StorageBackend;

/// Timing of cluster mode.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterSettings {
    /// This node's id (`ARQONBUS_NODE_ID`).
    pub node_id: String,
    /// How often the node renews its presence (5 s).
    pub heartbeat: Duration,
    /// How long a node counts as alive after its last heartbeat, and how
    /// long its presence keys live (15 s; SPEC §10 asks ≤ 30 s).
    pub node_ttl: Duration,
    /// Wait for a connection at startup (2 s) and for any command (2 s:
    /// a publish that times out is routed on this node alone).
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

impl ClusterSettings {
    pub fn new(node_id: impl Into<String>) -> Self {
        Self {
            node_id: node_id.into(),
            heartbeat: Duration::from_secs(5),
            node_ttl: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
        }
    }
}

/// What arrives from other nodes (and from this one, through Redis).
#[derive(Debug, Clone)]
pub enum Inbound {
    /// A channel message, sequenced in Redis.
    Channel(ChannelMessage),
    /// A direct message for a client of this node.
    Direct { target: String, frame: Bytes },
    /// A channel was deleted (on some node): remove it here too.
    ChannelDeleted(ChannelKey),
    /// An operator disconnected a client of this node (through another
    /// node's HTTP API, SPEC §17): close its connection.
    Disconnect { target: String },
    /// A member of a channel this node listens to joined or left on some
    /// node, or vanished with a dead node (SPEC §15).
    Presence(PresenceNotice),
}

/// What happened to a channel's member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceChange {
    Join,
    Leave,
}

impl PresenceChange {
    /// Its tag in a presence notice's header.
    const fn tag(self) -> &'static str {
        match self {
            PresenceChange::Join => "j",
            PresenceChange::Leave => "l",
        }
    }

    fn from_tag(tag: &str) -> Option<Self> {
        match tag {
            "j" => Some(PresenceChange::Join),
            "l" => Some(PresenceChange::Leave),
            _ => None,
        }
    }
}

/// A member joined or left a channel on `node` (SPEC §15).
///
/// On the wire (the channel's Pub/Sub channel) it is
/// `p\t<node>\t<j|l>\t<client id>\t<count>\n<record>`: see
/// [`presence_header`] and [`parse`], the one place that reads it.
#[derive(Debug, Clone)]
pub struct PresenceNotice {
    pub key: ChannelKey,
    /// The node the member is (or was) connected to.
    pub node: String,
    pub change: PresenceChange,
    pub client_id: String,
    /// Members of the channel over the cluster after the change.
    pub count: u64,
    /// The member's client record (JSON text), as given to
    /// [`Cluster::joined`].
    pub record: Bytes,
}

/// A sequenced channel message as broadcast by the publish script.
#[derive(Debug, Clone)]
pub struct ChannelMessage {
    pub key: ChannelKey,
    pub seq: u64,
    pub epoch: String,
    /// The publisher's client id.
    pub sender: String,
    /// The publisher asked to get its own message back.
    pub echo: bool,
    /// The delivered envelope, with `seq` and `epoch`.
    pub frame: Bytes,
}

/// What the publish script did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub seq: u64,
    pub epoch: Arc<str>,
    /// Members of the channel on live nodes when it was published.
    pub members: u64,
    /// The message is in the channel's stream.
    pub stored: bool,
}

/// A live node, as its last heartbeat described it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatus {
    pub node_id: String,
    /// Milliseconds since the Unix epoch of its last heartbeat.
    pub last_seen_ms: i64,
    /// Its summary (`clients`, `by_type`, `started_at`…), as JSON text.
    pub summary: Option<String>,
}

/// Cluster-wide counts for `status`.
#[derive(Debug, Clone, Default)]
pub struct Overview {
    pub nodes: Vec<NodeStatus>,
    /// Members per channel, summed over live nodes (channels without any
    /// member are left out).
    pub channel_members: HashMap<String, u64>,
}

/// Members of one channel over the cluster.
#[derive(Debug, Clone, Default)]
pub struct ChannelMembers {
    pub count: u64,
    /// Up to the requested number of client records (JSON text).
    pub records: Vec<String>,
}

/// A connected client as this node mirrors it.
#[derive(Debug, Clone)]
struct LocalClient {
    client_type: String,
}

/// What this node has told (or must tell) Redis about itself.
#[derive(Debug, Default)]
struct Local {
    clients: HashMap<String, LocalClient>,
    /// Per channel, client id → client record (JSON text).
    channels: HashMap<ChannelKey, BTreeMap<String, String>>,
}

/// Members other nodes have in the channels this node listens to: per
/// channel, node id → client id → client record. A channel is present
/// exactly while this node is subscribed to it.
type Remote = HashMap<ChannelKey, HashMap<String, BTreeMap<String, Bytes>>>;

/// One channel's local presence for a heartbeat: its key, member count,
/// and (for a full rewrite) its members' `(client id, record)`.
type ChannelPresence = (ChannelKey, u64, Vec<(String, String)>);

/// The cluster connection of one node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: ClusterSettings,
    started_at: String,
    stream_maxlen: i64,
    ttl_secs: i64,
    client: Client,
    subscriber: SubscriberClient,
    local: Mutex<Local>,
    /// Pub/Sub channels subscribed to; changed only under this lock, so a
    /// leave and a join racing on one channel end in the right state.
    subscribed: tokio::sync::Mutex<HashSet<ChannelKey>>,
    /// Some presence write failed: the next heartbeat rewrites it all.
    dirty: std::sync::atomic::AtomicBool,
    /// Publishes waiting for the publisher task.
    publishes: mpsc::Sender<PublishJob>,
    /// Members of other nodes, for the `leave` events of a dead node.
    remote: Arc<Mutex<Remote>>,
    /// Where this node's [`Inbound`] messages go (dead nodes' leaves).
    inbound: mpsc::Sender<Inbound>,
    cancel: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const CLIENTS_KEY: &str = "arqonbus:{cluster}:clients";
/// Channel key → channel record (JSON) of every general channel.
const CHANNELS_KEY: &str = "arqonbus:{cluster}:channels";
/// Pub/Sub channel of cluster-wide events (`delete\n<room:channel>`).
const CONTROL_CHANNEL: &str = "arqonbus:control";
const NODES_KEY: &str = "arqonbus:{cluster}:nodes";
const NODE_CHANNEL_PREFIX: &str = "arqonbus:node:";
/// The first header field of a presence notice on a channel's Pub/Sub
/// channel (a channel message's is `e` or `-`).
const PRESENCE_TAG: &str = "p";
/// The header kind of a disconnect sent to a node: `disconnect\t<id>`.
const DISCONNECT_HEADER: &str = "disconnect";
const LIVE_PREFIX: &str = "arqonbus:{";
const LIVE_SUFFIX: &str = "}:live";

/// A presence notice's header up to its count (which the
/// [`scripts::PRESENCE`] script appends, with `\n` and the record).
fn presence_header(node: &str, change: PresenceChange, client_id: &str) -> String {
    format!("{PRESENCE_TAG}\t{node}\t{}\t{client_id}\t", change.tag())
}

fn live_channel(key: &ChannelKey) -> String {
    format!("{LIVE_PREFIX}{key}{LIVE_SUFFIX}")
}

/// `arqonbus:{room:channel}:members:` + node id: a node's members.
fn members_prefix(key: &ChannelKey) -> String {
    format!("arqonbus:{{{key}}}:members:")
}

fn members_key(key: &ChannelKey, node: &str) -> String {
    format!("{}{node}", members_prefix(key))
}

/// The nodes that have (or recently had) members in the channel.
fn nodes_key(key: &ChannelKey) -> String {
    format!("arqonbus:{{{key}}}:nodes")
}

fn counts_key(node: &str) -> String {
    format!("arqonbus:{{cluster}}:counts:{node}")
}

fn node_key(node: &str) -> String {
    format!("arqonbus:{{cluster}}:node:{node}")
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn unavailable(error: Error) -> StorageError {
    StorageError::Unavailable {
        backend: StorageBackend::Redis,
        source: Some(BackendError(error)),
    }
}

fn eval(script: &'static str, keys: Vec<String>, args: Vec<Value>) -> (CustomCommand, Vec<Value>) {
    let mut all = Vec::with_capacity(2 + keys.len() + args.len());
    all.push(Value::from(script));
    all.push(Value::Integer(i64::try_from(keys.len()).unwrap_or(0)));
    all.extend(keys.into_iter().map(Value::from));
    all.extend(args);
    // The cluster slot is the first key's.
    (
        CustomCommand::new_static("EVAL", ClusterHash::Offset(2), false),
        all,
    )
}

impl Cluster {
    /// Connects to the shared Redis of `storage.redis_url` and starts the
    /// heartbeat. Returns the handle and the stream of messages for this
    /// node, which the caller delivers to its clients.
    ///
    /// Redis unreachable at startup is not fatal: the clients keep
    /// reconnecting (backoff up to 5 s), the node serves its local clients
    /// meanwhile, and [`Cluster::is_connected`] says when it is back.
    pub async fn open(
        storage: &StorageConfig,
        settings: ClusterSettings,
    ) -> Result<(Cluster, mpsc::Receiver<Inbound>), StorageError> {
        let mut config = conn::client_config(&storage.redis_url)?;
        config.fail_fast = false;
        let policy = ReconnectPolicy::new_exponential(0, 100, 5_000, 2);
        let timeout = settings.command_timeout;
        let connect_timeout = settings.connect_timeout;
        let client = Builder::from_config(config.clone())
            .with_connection_config(|connection| {
                connection.connection_timeout = connect_timeout;
                connection.internal_command_timeout = connect_timeout;
                // A Redis Cluster may answer MOVED/ASK: such a command is
                // sent again to the right node.
                connection.max_command_attempts = 3;
                connection.tcp.nodelay = Some(true);
            })
            .with_performance_config(|performance| {
                performance.default_command_timeout = timeout;
            })
            .set_policy(policy.clone())
            .build()
            .map_err(unavailable)?;
        let subscriber = Builder::from_config(config)
            .with_connection_config(|connection| {
                connection.connection_timeout = connect_timeout;
                connection.internal_command_timeout = connect_timeout;
                connection.tcp.nodelay = Some(true);
            })
            .with_performance_config(|performance| {
                performance.default_command_timeout = timeout;
                // Pub/Sub messages wait here until the pump reads them; a
                // receiver that lags loses messages, so leave ample room.
                performance.broadcast_channel_capacity = 1 << 16;
            })
            .set_policy(policy)
            .build_subscriber_client()
            .map_err(unavailable)?;
        let messages = subscriber.message_rx();
        client.connect();
        subscriber.connect();
        subscriber.manage_subscriptions();
        let (commands, pubsub) = tokio::join!(
            tokio::time::timeout(connect_timeout, client.wait_for_connect()),
            tokio::time::timeout(connect_timeout, subscriber.wait_for_connect()),
        );
        if !matches!((commands, pubsub), (Ok(Ok(())), Ok(Ok(())))) {
            tracing::warn!(
                "cluster: Redis unreachable at startup; serving local clients and reconnecting"
            );
        }
        let node_id = settings.node_id.clone();
        let (publishes, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let remote = Arc::new(Mutex::new(Remote::new()));
        tokio::spawn(publisher(client.clone(), jobs));
        let inner = Arc::new(Inner {
            dirty: std::sync::atomic::AtomicBool::new(false),
            publishes,
            remote: remote.clone(),
            inbound: sender.clone(),
            settings,
            started_at: arqon_protocol::now_rfc3339(),
            stream_maxlen: i64::try_from(storage.redis_stream_maxlen).unwrap_or(i64::MAX),
            ttl_secs: storage.history_ttl.map_or(0, |ttl| {
                i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX)
            }),
            client,
            subscriber,
            local: Mutex::new(Local::default()),
            subscribed: tokio::sync::Mutex::new(HashSet::new()),
            cancel: CancellationToken::new(),
        });
        // This node's direct messages, and cluster-wide events.
        let channels = vec![
            format!("{NODE_CHANNEL_PREFIX}{node_id}"),
            CONTROL_CHANNEL.to_owned(),
        ];
        if let Err(error) = inner.subscriber.subscribe(channels).await {
            tracing::warn!(%error, "cluster: cannot subscribe to this node's channels yet; retried on reconnect");
        }
        tokio::spawn(pump(
            messages,
            sender,
            node_id,
            remote,
            inner.cancel.clone(),
        ));
        let cluster = Cluster { inner };
        cluster.heartbeat_once(true).await;
        tokio::spawn(heartbeat(Arc::downgrade(&cluster.inner)));
        Ok((cluster, receiver))
    }

    pub fn node_id(&self) -> &str {
        &self.inner.settings.node_id
    }

    /// Both Redis connections are up: publishes can go through Redis.
    pub fn is_connected(&self) -> bool {
        self.inner.client.is_connected() && self.inner.subscriber.is_connected()
    }

    /// Sequences, stores and broadcasts a channel message. `open_frame` is
    /// the envelope JSON without `seq`, `epoch` and its closing brace;
    /// `epoch` is used if Redis has none for the channel (a new channel, or
    /// one whose keys expired or vanished with a Redis restart): the caller
    /// passes a fresh epoch unless the channel never assigned a `seq` in
    /// its current one (`Channel::epoch_to_start` in routing), so that lost
    /// history starts a new epoch rather than `seq` 1 under the old one.
    ///
    /// The message is queued for Redis when this is called, so one caller's
    /// messages reach Redis in the order of the calls; the returned future
    /// only waits for the result. Queued messages go to Redis in pipelines.
    pub fn publish(
        &self,
        key: &ChannelKey,
        sender: &str,
        echo: bool,
        open_frame: Vec<u8>,
        epoch: &str,
    ) -> impl std::future::Future<Output = Result<Published, StorageError>> + Send + 'static {
        let keys = vec![meta_key(key), stream_key(key), nodes_key(key)];
        let flags = if echo { "e" } else { "-" };
        let script = eval(
            scripts::PUBLISH,
            keys,
            vec![
                Value::Bytes(open_frame.into()),
                Value::from(epoch),
                Value::Integer(self.inner.stream_maxlen),
                Value::Integer(self.inner.ttl_secs),
                Value::from(live_channel(key)),
                Value::Integer(now_ms()),
                Value::from(format!("{flags}\t{sender}\t")),
                Value::from(members_prefix(key)),
            ],
        );
        let (reply, result) = oneshot::channel();
        // A full queue (Redis far behind) fails the publish, which the
        // caller then routes on this node alone.
        let queued = self.inner.publishes.try_send(PublishJob { script, reply });
        async move {
            if queued.is_err() {
                return Err(StorageError::Unavailable {
                    backend: StorageBackend::Redis,
                    source: None,
                });
            }
            result.await.unwrap_or(Err(StorageError::Unavailable {
                backend: StorageBackend::Redis,
                source: None,
            }))
        }
    }
}

/// One queued publish: its script call and where its result goes.
struct PublishJob {
    script: (CustomCommand, Vec<Value>),
    reply: oneshot::Sender<Result<Published, StorageError>>,
}

impl std::fmt::Debug for PublishJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublishJob")
    }
}

/// Publishes waiting for Redis, and messages from Redis waiting for the
/// node, at most.
const QUEUE_CAPACITY: usize = 65_536;

/// Publishes per pipeline at most.
const PUBLISH_BATCH: usize = 256;

/// Sends queued publishes to Redis in order, one pipeline per batch, until
/// every handle is gone.
async fn publisher(client: Client, mut jobs: mpsc::Receiver<PublishJob>) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while jobs.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let pipeline = client.pipeline();
        let mut queued = Ok(());
        for job in &batch {
            let (command, args) = job.script.clone();
            queued = pipeline.custom::<(), _>(command, args).await;
            if queued.is_err() {
                break;
            }
        }
        let results = match queued {
            Ok(()) => pipeline.try_all::<Value>().await,
            Err(error) => vec![Err(error)],
        };
        let whole = (results.len() != batch.len()).then(|| {
            results
                .iter()
                .find_map(|result| result.as_ref().err().cloned())
                .unwrap_or_else(|| {
                    Error::new(fred::error::ErrorKind::Protocol, "short pipeline reply")
                })
        });
        let mut results = results.into_iter();
        for job in batch.drain(..) {
            let result = match &whole {
                Some(error) => Err(unavailable(error.clone())),
                None => results
                    .next()
                    .unwrap_or_else(|| {
                        Err(Error::new(
                            fred::error::ErrorKind::Protocol,
                            "short pipeline reply",
                        ))
                    })
                    .and_then(Value::convert::<(u64, String, u64, i64)>)
                    .map(|(seq, epoch, members, stored)| Published {
                        seq,
                        epoch: Arc::from(epoch),
                        members,
                        stored: stored == 1,
                    })
                    .map_err(unavailable),
            };
            let _ = job.reply.send(result);
        }
    }
}

impl Cluster {
    /// Sends `frame` to client `target` on whichever live node holds it.
    /// `Ok(false)`: no live node has that client.
    ///
    /// # Cancel safety
    /// Not cancel safe (the script runs once sent).
    pub async fn send_direct(&self, target: &str, frame: Bytes) -> Result<bool, StorageError> {
        let (command, args) = eval(
            scripts::DIRECT,
            vec![CLIENTS_KEY.to_owned(), NODES_KEY.to_owned()],
            vec![
                Value::from(target),
                Value::Bytes(frame),
                Value::Integer(now_ms()),
                Value::Integer(millis(self.inner.settings.node_ttl)),
                Value::from(NODE_CHANNEL_PREFIX),
            ],
        );
        let found: i64 = self
            .inner
            .client
            .custom(command, args)
            .await
            .map_err(unavailable)?;
        Ok(found == 1)
    }

    /// Asks whichever live node holds client `target` to close its
    /// connection (an operator's disconnect, SPEC §17). `Ok(false)`: no
    /// live node has that client.
    ///
    /// # Cancel safety
    /// Not cancel safe (the script runs once sent).
    pub async fn disconnect(&self, target: &str) -> Result<bool, StorageError> {
        let (command, args) = eval(
            scripts::DIRECT,
            vec![CLIENTS_KEY.to_owned(), NODES_KEY.to_owned()],
            vec![
                Value::from(target),
                Value::from(""),
                Value::Integer(now_ms()),
                Value::Integer(millis(self.inner.settings.node_ttl)),
                Value::from(NODE_CHANNEL_PREFIX),
                Value::from(format!("{DISCONNECT_HEADER}\t{target}")),
            ],
        );
        let found: i64 = self
            .inner
            .client
            .custom(command, args)
            .await
            .map_err(unavailable)?;
        Ok(found == 1)
    }

    /// Registers a client of this node, so direct messages find it.
    ///
    /// # Cancel safety
    /// Cancel safe: the mirror is updated at once and the heartbeat
    /// rewrites the registry if this write is lost.
    pub async fn client_connected(
        &self,
        client_id: &str,
        client_type: &str,
    ) -> Result<(), StorageError> {
        lock(&self.inner.local).clients.insert(
            client_id.to_owned(),
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
                .hset::<(), _, _>(CLIENTS_KEY, (client_id, self.node_id()))
                .await?;
            self.queue_summary(&pipeline).await?;
            pipeline.all::<Value>().await.map(drop)
        }
        .await;
        written.map_err(|error| self.failed(error))
    }

    /// Notes that Redis missed a presence write: the next heartbeat writes
    /// all of this node's presence again.
    fn mark_dirty(&self) {
        self.inner
            .dirty
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn failed(&self, error: Error) -> StorageError {
        self.mark_dirty();
        unavailable(error)
    }

    /// Queues the write of this node's summary (its client counts).
    async fn queue_summary(&self, pipeline: &fred::clients::Pipeline<Client>) -> Result<(), Error> {
        let node = node_key(self.node_id());
        pipeline
            .hset::<(), _, _>(node.as_str(), ("summary", self.summary().as_str()))
            .await?;
        pipeline
            .pexpire::<(), _>(node.as_str(), millis(self.inner.settings.node_ttl), None)
            .await
    }

    /// Forgets a client of this node and its memberships (its connection
    /// closed). Runs in the background.
    pub fn client_disconnected(&self, client_id: &str, channels: Vec<ChannelKey>) {
        lock(&self.inner.local).clients.remove(client_id);
        let cluster = self.clone();
        let client_id = client_id.to_owned();
        tokio::spawn(async move {
            for key in &channels {
                if let Err(error) = cluster.left(key, &client_id).await {
                    tracing::debug!(channel = %key, %error, "cluster: presence not updated; it expires with the node TTL");
                }
            }
            let (command, args) = eval(
                scripts::UNREGISTER,
                vec![CLIENTS_KEY.to_owned()],
                vec![
                    Value::from(client_id.as_str()),
                    Value::from(cluster.node_id()),
                ],
            );
            let unregistered = async {
                let pipeline = cluster.inner.client.pipeline();
                pipeline.custom::<(), _>(command, args).await?;
                cluster.queue_summary(&pipeline).await?;
                pipeline.all::<Value>().await
            };
            if let Err(error) = unregistered.await {
                tracing::debug!(%error, "cluster: client registration not removed yet");
            }
        });
    }

    /// Records that `client_id` (described by `record`, JSON text) joined
    /// `key` on this node; subscribes this node to the channel if it is its
    /// first local member. Returns the members over the cluster and the
    /// channel's epoch and last `seq` in Redis (`None` if it has none).
    ///
    /// # Cancel safety
    /// Cancel safe: the mirror is updated first, and the heartbeat repairs
    /// what Redis missed.
    pub async fn joined(
        &self,
        key: &ChannelKey,
        client_id: &str,
        record: String,
    ) -> Result<(u64, Option<(Arc<str>, u64)>), StorageError> {
        let previous = lock(&self.inner.local)
            .channels
            .entry(key.clone())
            .or_default()
            .insert(client_id.to_owned(), record.clone());
        if self.sync_subscription(key).await? {
            self.seed_remote(key).await;
        }
        let node = self.node_id();
        let local_count = self.local_count(key);
        // A repeated join is no news to the other nodes.
        let header = match previous {
            None => presence_header(node, PresenceChange::Join, client_id),
            Some(_) => String::new(),
        };
        let (presence, presence_args) =
            self.presence_script(key, PresenceChange::Join, client_id, record, header);
        let pipeline = self.inner.client.pipeline();
        let queued: Result<(), Error> = async {
            pipeline.custom::<(), _>(presence, presence_args).await?;
            pipeline
                .hset::<(), _, _>(counts_key(node), (key.as_str(), local_count))
                .await?;
            pipeline
                .pexpire::<(), _>(counts_key(node), millis(self.inner.settings.node_ttl), None)
                .await?;
            pipeline
                .hmget::<(), _, _>(meta_key(key), vec!["epoch", "last_seq"])
                .await?;
            Ok(())
        }
        .await;
        queued.map_err(|error| self.failed(error))?;
        let replies: Vec<Value> = pipeline.all().await.map_err(|error| self.failed(error))?;
        let mut replies = replies.into_iter();
        let count = replies.next().and_then(|value| value.as_u64()).unwrap_or(0);
        let sequence = replies
            .nth(2)
            .and_then(|meta| meta.convert::<(Option<String>, Option<u64>)>().ok())
            .and_then(|(epoch, seq)| epoch.map(|epoch| (Arc::from(epoch), seq.unwrap_or(0))));
        Ok((count, sequence))
    }

    /// The [`scripts::PRESENCE`] call recording `change` of `client_id` in
    /// `key` on this node; it publishes a notice unless `header` is empty.
    fn presence_script(
        &self,
        key: &ChannelKey,
        change: PresenceChange,
        client_id: &str,
        record: String,
        header: String,
    ) -> (CustomCommand, Vec<Value>) {
        let node = self.node_id();
        eval(
            scripts::PRESENCE,
            vec![members_key(key, node), nodes_key(key)],
            vec![
                Value::from(change.tag()),
                Value::from(client_id),
                Value::from(record),
                Value::Integer(millis(self.inner.settings.node_ttl)),
                Value::from(node),
                Value::from(members_prefix(key)),
                Value::from(live_channel(key)),
                Value::from(header),
            ],
        )
    }

    /// Records that `client_id` left `key` on this node; unsubscribes the
    /// node from the channel when it was its last local member.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Cluster::joined`].
    pub async fn left(&self, key: &ChannelKey, client_id: &str) -> Result<(), StorageError> {
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
                presence_header(node, PresenceChange::Leave, client_id),
                record,
            ),
            None => (String::new(), String::new()),
        };
        let (presence, presence_args) =
            self.presence_script(key, PresenceChange::Leave, client_id, record, header);
        let pipeline = self.inner.client.pipeline();
        let queued: Result<(), Error> = async {
            pipeline.custom::<(), _>(presence, presence_args).await?;
            if local_count == 0 {
                pipeline
                    .hdel::<(), _, _>(counts_key(node), key.as_str())
                    .await?;
            } else {
                pipeline
                    .hset::<(), _, _>(counts_key(node), (key.as_str(), local_count))
                    .await?;
            }
            Ok(())
        }
        .await;
        queued.map_err(|error| self.failed(error))?;
        pipeline
            .all::<Value>()
            .await
            .map_err(|error| self.failed(error))?;
        Ok(())
    }

    fn local_count(&self, key: &ChannelKey) -> u64 {
        lock(&self.inner.local)
            .channels
            .get(key)
            .map_or(0, |members| members.len() as u64)
    }

    /// Subscribes to or unsubscribes from the channel's Pub/Sub channel so
    /// that it matches whether this node has local members. Returns
    /// whether it subscribed now (the caller then seeds the mirror of
    /// other nodes' members, [`Cluster::seed_remote`]).
    async fn sync_subscription(&self, key: &ChannelKey) -> Result<bool, StorageError> {
        let mut subscribed = self.inner.subscribed.lock().await;
        let wanted = lock(&self.inner.local).channels.contains_key(key);
        let has = subscribed.contains(key);
        if wanted && !has {
            self.inner
                .subscriber
                .subscribe(live_channel(key))
                .await
                .map_err(|error| self.failed(error))?;
            subscribed.insert(key.clone());
            lock(&self.inner.remote).entry(key.clone()).or_default();
            return Ok(true);
        } else if !wanted && has {
            lock(&self.inner.remote).remove(key);
            self.inner
                .subscriber
                .unsubscribe(live_channel(key))
                .await
                .map_err(|error| self.failed(error))?;
            subscribed.remove(key);
        }
        Ok(false)
    }

    /// The channel's members over the cluster: their number and up to
    /// `limit` client records.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn members(
        &self,
        key: &ChannelKey,
        limit: usize,
    ) -> Result<ChannelMembers, StorageError> {
        let (command, args) = eval(
            scripts::MEMBERS,
            vec![nodes_key(key)],
            vec![Value::from(members_prefix(key))],
        );
        let records: Vec<String> = self
            .inner
            .client
            .custom(command, args)
            .await
            .map_err(unavailable)?;
        let count = records.len() as u64;
        let records = records.into_iter().take(limit).collect();
        Ok(ChannelMembers { count, records })
    }

    /// Shares a channel's record (JSON text) with every node, unless one is
    /// shared already. Returns whether this one was stored.
    ///
    /// # Cancel safety
    /// Not cancel safe: once sent, the record may be stored.
    pub async fn register_channel(
        &self,
        key: &ChannelKey,
        record: &str,
    ) -> Result<bool, StorageError> {
        self.inner
            .client
            .hsetnx(CHANNELS_KEY, key.as_str(), record)
            .await
            .map_err(unavailable)
    }

    /// The shared record of a channel (JSON text), if any node created it.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn channel_record(&self, key: &ChannelKey) -> Result<Option<String>, StorageError> {
        self.inner
            .client
            .hget(CHANNELS_KEY, key.as_str())
            .await
            .map_err(unavailable)
    }

    /// Every shared channel record (JSON text).
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn channel_records(&self) -> Result<Vec<String>, StorageError> {
        self.inner
            .client
            .hvals(CHANNELS_KEY)
            .await
            .map_err(unavailable)
    }

    /// Removes a channel everywhere: its shared record goes, and every node
    /// is told (through [`Inbound::ChannelDeleted`], this one included) to
    /// drop it and unsubscribe its members.
    ///
    /// # Cancel safety
    /// Not cancel safe: once sent, the deletion happens.
    pub async fn delete_channel(&self, key: &ChannelKey) -> Result<(), StorageError> {
        let pipeline = self.inner.client.pipeline();
        let queued: Result<(), Error> = async {
            pipeline
                .hdel::<(), _, _>(CHANNELS_KEY, key.as_str())
                .await?;
            pipeline
                .publish::<(), _, _>(CONTROL_CHANNEL, format!("delete\n{key}"))
                .await
        }
        .await;
        queued.map_err(unavailable)?;
        pipeline.all::<Value>().await.map_err(unavailable)?;
        Ok(())
    }

    /// Forgets this node's members of a deleted channel.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Cluster::joined`].
    pub async fn channel_gone(&self, key: &ChannelKey) -> Result<(), StorageError> {
        lock(&self.inner.local).channels.remove(key);
        self.sync_subscription(key).await?;
        let node = self.node_id();
        let pipeline = self.inner.client.pipeline();
        let queued: Result<(), Error> = async {
            pipeline.del::<(), _>(members_key(key, node)).await?;
            pipeline
                .hdel::<(), _, _>(counts_key(node), key.as_str())
                .await
        }
        .await;
        queued.map_err(|error| self.failed(error))?;
        pipeline
            .all::<Value>()
            .await
            .map_err(|error| self.failed(error))?;
        Ok(())
    }

    /// The channel's epoch and last `seq` in Redis, if it has any.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn sequence(
        &self,
        key: &ChannelKey,
    ) -> Result<Option<(Arc<str>, u64)>, StorageError> {
        let (epoch, seq): (Option<String>, Option<u64>) = self
            .inner
            .client
            .hmget(meta_key(key), vec!["epoch", "last_seq"])
            .await
            .map_err(unavailable)?;
        Ok(epoch.map(|epoch| (Arc::from(epoch), seq.unwrap_or(0))))
    }

    /// Live nodes and members per channel over the cluster.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn overview(&self) -> Result<Overview, StorageError> {
        let since = now_ms() - millis(self.inner.settings.node_ttl);
        let nodes: Vec<(String, f64)> = self
            .inner
            .client
            .zrangebyscore(NODES_KEY, since as f64, "+inf", true, None)
            .await
            .map_err(unavailable)?;
        let pipeline = self.inner.client.pipeline();
        let queued: Result<(), Error> = async {
            for (node, _) in &nodes {
                pipeline.hgetall::<(), _>(counts_key(node)).await?;
                pipeline.hget::<(), _, _>(node_key(node), "summary").await?;
            }
            Ok(())
        }
        .await;
        queued.map_err(unavailable)?;
        let replies: Vec<Value> = pipeline.all().await.map_err(unavailable)?;
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
            let summary: Option<String> = replies.next().and_then(|value| value.convert().ok());
            overview.nodes.push(NodeStatus {
                node_id: node,
                last_seen_ms: seen as i64,
                summary,
            });
        }
        Ok(overview)
    }

    /// This node's summary as JSON text: id, start, clients by type.
    fn summary(&self) -> String {
        let local = lock(&self.inner.local);
        let mut by_type: BTreeMap<&str, u64> = BTreeMap::new();
        for client in local.clients.values() {
            *by_type.entry(client.client_type.as_str()).or_default() += 1;
        }
        let by_type: Vec<String> = by_type
            .iter()
            .map(|(kind, count)| format!("\"{kind}\":{count}"))
            .collect();
        format!(
            "{{\"node_id\":\"{}\",\"started_at\":\"{}\",\"clients\":{},\"by_type\":{{{}}}}}",
            self.node_id(),
            self.inner.started_at,
            local.clients.len(),
            by_type.join(",")
        )
    }

    /// Renews this node's presence; with `full`, first writes all of it
    /// again (at startup, and when Redis has lost it). Failures are logged:
    /// the next heartbeat tries again.
    async fn heartbeat_once(&self, full: bool) {
        let dirty = self
            .inner
            .dirty
            .swap(false, std::sync::atomic::Ordering::Relaxed);
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

    /// Reports a `leave` to this node's clients for every member of a
    /// node found dead (in the node registry with a heartbeat older than
    /// the node TTL) in the channels this node listens to, then forgets
    /// those members. A node that vanished from the registry altogether
    /// (a Redis restart) is not reported.
    async fn reap_dead_nodes(&self) {
        let known: HashSet<String> = lock(&self.inner.remote)
            .values()
            .flat_map(|nodes| nodes.keys().cloned())
            .collect();
        if known.is_empty() {
            return;
        }
        let until = now_ms() - millis(self.inner.settings.node_ttl);
        let dead: Vec<String> = match self
            .inner
            .client
            .zrangebyscore(NODES_KEY, "-inf", until as f64, false, None)
            .await
        {
            Ok(dead) => dead,
            Err(error) => {
                tracing::debug!(%error, "cluster: cannot read the node registry");
                return;
            }
        };
        let dead: HashSet<String> = dead
            .into_iter()
            .filter(|node| known.contains(node) && node != self.node_id())
            .collect();
        if dead.is_empty() {
            return;
        }
        let mut notices = Vec::new();
        {
            let mut remote = lock(&self.inner.remote);
            for (key, nodes) in remote.iter_mut() {
                let gone: Vec<(String, BTreeMap<String, Bytes>)> = dead
                    .iter()
                    .filter_map(|node| nodes.remove_entry(node))
                    .collect();
                let count: u64 = nodes.values().map(|members| members.len() as u64).sum();
                for (node, members) in gone {
                    for (client_id, record) in members {
                        notices.push((key.clone(), node.clone(), client_id, record, count));
                    }
                }
            }
        }
        for (key, node, client_id, record, remote_count) in notices {
            tracing::info!(channel = %key, node = %node, client_id = %client_id, "cluster: member of a dead node left");
            let count = remote_count + self.local_count(&key);
            let notice = Inbound::Presence(PresenceNotice {
                key,
                node,
                change: PresenceChange::Leave,
                client_id,
                count,
                record,
            });
            if self.inner.inbound.send(notice).await.is_err() {
                return;
            }
        }
    }

    /// Learns the members other nodes have in `key` from Redis, once this
    /// node listens to it (their later changes arrive as notices).
    async fn seed_remote(&self, key: &ChannelKey) {
        let (command, args) = eval(
            scripts::MEMBERS_BY_NODE,
            vec![nodes_key(key)],
            vec![Value::from(members_prefix(key))],
        );
        let flat: Vec<Bytes> = match self.inner.client.custom(command, args).await {
            Ok(flat) => flat,
            Err(error) => {
                tracing::debug!(channel = %key, %error, "cluster: other nodes' members not read");
                return;
            }
        };
        let mut remote = lock(&self.inner.remote);
        let Some(nodes) = remote.get_mut(key) else {
            return;
        };
        for triple in flat.chunks_exact(3) {
            let (Ok(node), Ok(client_id)) = (
                std::str::from_utf8(&triple[0]),
                std::str::from_utf8(&triple[1]),
            ) else {
                continue;
            };
            if node == self.node_id() {
                continue;
            }
            nodes
                .entry(node.to_owned())
                .or_default()
                .entry(client_id.to_owned())
                .or_insert_with(|| triple[2].clone());
        }
    }

    /// One heartbeat pipeline. `Ok(false)` when this node's keys had
    /// expired in Redis (so what it wrote before is gone).
    async fn renew(&self, full: bool) -> Result<bool, Error> {
        let node = self.node_id().to_owned();
        let ttl = millis(self.inner.settings.node_ttl);
        let now = now_ms();
        let summary = self.summary();
        let (clients, channels) = {
            let local = lock(&self.inner.local);
            let clients: Vec<String> = if full {
                local.clients.keys().cloned().collect()
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
                            .map(|(id, record)| (id.clone(), record.clone()))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    (key.clone(), members.len() as u64, records)
                })
                .collect();
            (clients, channels)
        };
        let pipeline = self.inner.client.pipeline();
        pipeline
            .pexpire::<(), _>(node_key(&node), ttl, None)
            .await?;
        pipeline
            .zadd::<(), _, _>(
                NODES_KEY,
                None,
                None,
                false,
                false,
                (now as f64, node.as_str()),
            )
            .await?;
        pipeline
            .hset::<(), _, _>(node_key(&node), ("summary", summary.as_str()))
            .await?;
        pipeline
            .pexpire::<(), _>(node_key(&node), ttl, None)
            .await?;
        if full {
            pipeline.del::<(), _>(counts_key(&node)).await?;
            for chunk in clients.chunks(1000) {
                let fields: Vec<(&str, &str)> = chunk
                    .iter()
                    .map(|id| (id.as_str(), node.as_str()))
                    .collect();
                pipeline.hset::<(), _, _>(CLIENTS_KEY, fields).await?;
            }
        }
        if !channels.is_empty() {
            let counts: Vec<(&str, u64)> = channels
                .iter()
                .map(|(key, count, _)| (key.as_str(), *count))
                .collect();
            pipeline.hset::<(), _, _>(counts_key(&node), counts).await?;
            pipeline
                .pexpire::<(), _>(counts_key(&node), ttl, None)
                .await?;
        }
        for (key, _, records) in &channels {
            let members = members_key(key, &node);
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
                .sadd::<(), _, _>(nodes_key(key), node.as_str())
                .await?;
            pipeline.pexpire::<(), _>(nodes_key(key), ttl, None).await?;
        }
        // Nodes silent for four TTLs are dead for good.
        pipeline
            .zremrangebyscore::<(), _, _, _>(NODES_KEY, "-inf", (now - 4 * ttl) as f64)
            .await?;
        let replies: Vec<Value> = pipeline.all().await?;
        let existed = replies.first().and_then(Value::as_i64) == Some(1);
        Ok(existed || full)
    }
}

/// Renews this node's presence every heartbeat until the cluster handle
/// is dropped.
async fn heartbeat(inner: std::sync::Weak<Inner>) {
    let Some(period) = inner.upgrade().map(|inner| inner.settings.heartbeat) else {
        return;
    };
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.cancel.is_cancelled() {
            return;
        }
        let cluster = Cluster { inner };
        cluster.heartbeat_once(false).await;
    }
}

/// Turns Pub/Sub messages into [`Inbound`] until cancelled.
/// Presence notices of other nodes also update the mirror of their
/// members (`remote`).
async fn pump(
    mut messages: tokio::sync::broadcast::Receiver<fred::types::Message>,
    sender: mpsc::Sender<Inbound>,
    node_id: String,
    remote: Arc<Mutex<Remote>>,
    cancel: CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let message = tokio::select! {
            () = cancel.cancelled() => return,
            message = messages.recv() => message,
        };
        match message {
            Ok(message) => {
                let Some(payload) = message.value.as_bytes().map(Bytes::copy_from_slice) else {
                    continue;
                };
                match parse(&message.channel, payload) {
                    Some(inbound) => {
                        if let Inbound::Presence(notice) = &inbound
                            && notice.node != node_id
                        {
                            mirror(&mut lock(&remote), notice);
                        }
                        if sender.send(inbound).await.is_err() {
                            return;
                        }
                    }
                    None => {
                        tracing::debug!(channel = %&*message.channel, "cluster: unreadable Pub/Sub message ignored")
                    }
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "cluster: Pub/Sub messages lost: this node read them too slowly"
                );
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Applies another node's presence notice to the mirror of its members,
/// for a channel this node listens to.
fn mirror(remote: &mut Remote, notice: &PresenceNotice) {
    let Some(nodes) = remote.get_mut(&notice.key) else {
        return;
    };
    match notice.change {
        PresenceChange::Join => {
            nodes
                .entry(notice.node.clone())
                .or_default()
                .insert(notice.client_id.clone(), notice.record.clone());
        }
        PresenceChange::Leave => {
            if let Some(members) = nodes.get_mut(&notice.node) {
                members.remove(&notice.client_id);
                if members.is_empty() {
                    nodes.remove(&notice.node);
                }
            }
        }
    }
}

/// Reads a Pub/Sub message of a node channel or a channel's live channel.
fn parse(channel: &str, payload: Bytes) -> Option<Inbound> {
    let newline = payload.iter().position(|&byte| byte == b'\n')?;
    let header = std::str::from_utf8(&payload[..newline]).ok()?;
    let frame = payload.slice(newline + 1..);
    if channel == CONTROL_CHANNEL {
        return match header {
            "delete" => std::str::from_utf8(&frame)
                .ok()
                .and_then(|key| ChannelKey::parse(key).ok())
                .map(Inbound::ChannelDeleted),
            _ => None,
        };
    }
    if channel.starts_with(NODE_CHANNEL_PREFIX) {
        // Client ids never contain a tab: a tabbed header is a control.
        if let Some((kind, target)) = header.split_once('\t') {
            return (kind == DISCONNECT_HEADER).then(|| Inbound::Disconnect {
                target: target.to_owned(),
            });
        }
        return Some(Inbound::Direct {
            target: header.to_owned(),
            frame,
        });
    }
    let key = channel
        .strip_prefix(LIVE_PREFIX)?
        .strip_suffix(LIVE_SUFFIX)
        .and_then(|key| ChannelKey::parse(key).ok())?;
    let mut fields = header.split('\t');
    let flags = fields.next()?;
    if flags == PRESENCE_TAG {
        let node = fields.next()?.to_owned();
        let change = PresenceChange::from_tag(fields.next()?)?;
        let client_id = fields.next()?.to_owned();
        let count = fields.next()?.parse().ok()?;
        return Some(Inbound::Presence(PresenceNotice {
            key,
            node,
            change,
            client_id,
            count,
            record: frame,
        }));
    }
    let echo = flags == "e";
    let sender = fields.next()?.to_owned();
    let seq = fields.next()?.parse().ok()?;
    let epoch = fields.next()?.to_owned();
    Some(Inbound::Channel(ChannelMessage {
        key,
        seq,
        epoch,
        sender,
        echo,
        frame,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_messages_parse() {
        let key = ChannelKey::new("chat", "general").expect("valid");
        let payload = Bytes::from_static(b"-\tarq_client_1\t7\tabc\n{\"x\":1}");
        let Some(Inbound::Channel(message)) = parse(&live_channel(&key), payload) else {
            panic!("not parsed");
        };
        assert_eq!(message.key, key);
        assert_eq!(message.seq, 7);
        assert_eq!(message.epoch, "abc");
        assert_eq!(message.sender, "arq_client_1");
        assert!(!message.echo);
        assert_eq!(&message.frame[..], b"{\"x\":1}");
    }

    #[test]
    fn presence_notices_parse() {
        let key = ChannelKey::new("chat", "general").expect("valid");
        let header = presence_header("n1", PresenceChange::Leave, "arq_client_3");
        let payload = Bytes::from(format!("{header}4\n{{\"client_id\":\"arq_client_3\"}}"));
        let Some(Inbound::Presence(notice)) = parse(&live_channel(&key), payload) else {
            panic!("not parsed");
        };
        assert_eq!(notice.key, key);
        assert_eq!(notice.node, "n1");
        assert_eq!(notice.change, PresenceChange::Leave);
        assert_eq!(notice.client_id, "arq_client_3");
        assert_eq!(notice.count, 4);
        assert_eq!(&notice.record[..], b"{\"client_id\":\"arq_client_3\"}");
        let bad = Bytes::from_static(b"p\tn1\tx\tarq_client_3\t4\n{}");
        assert!(parse(&live_channel(&key), bad).is_none());
        let mut remote = Remote::new();
        remote.insert(key.clone(), HashMap::new());
        let join = PresenceNotice {
            change: PresenceChange::Join,
            ..notice.clone()
        };
        mirror(&mut remote, &join);
        assert_eq!(remote[&key]["n1"].len(), 1);
        mirror(&mut remote, &notice);
        assert!(remote[&key].is_empty());
    }

    #[test]
    fn direct_messages_parse() {
        let payload = Bytes::from_static(b"arq_client_9\n{\"y\":2}");
        let Some(Inbound::Direct { target, frame }) = parse("arqonbus:node:n1", payload) else {
            panic!("not parsed");
        };
        assert_eq!(target, "arq_client_9");
        assert_eq!(&frame[..], b"{\"y\":2}");
    }

    #[test]
    fn disconnects_parse() {
        let payload = Bytes::from_static(b"disconnect\tarq_client_9\n");
        let Some(Inbound::Disconnect { target }) = parse("arqonbus:node:n1", payload) else {
            panic!("not parsed");
        };
        assert_eq!(target, "arq_client_9");
        let unknown = Bytes::from_static(b"other\tarq_client_9\n");
        assert!(parse("arqonbus:node:n1", unknown).is_none());
    }

    #[test]
    fn garbage_is_ignored() {
        assert!(
            parse(
                "arqonbus:{chat:general}:live",
                Bytes::from_static(b"no newline")
            )
            .is_none()
        );
        assert!(
            parse(
                "arqonbus:{chat:general}:live",
                Bytes::from_static(b"-\tx\tnan\te\n{}")
            )
            .is_none()
        );
        assert!(parse("elsewhere", Bytes::from_static(b"a\tb\t1\te\n{}")).is_none());
        assert!(parse(CONTROL_CHANNEL, Bytes::from_static(b"rename\nchat:general")).is_none());
        assert!(parse(CONTROL_CHANNEL, Bytes::from_static(b"delete\nno colon")).is_none());
    }

    #[test]
    fn deletions_parse() {
        let Some(Inbound::ChannelDeleted(key)) =
            parse(CONTROL_CHANNEL, Bytes::from_static(b"delete\nchat:general"))
        else {
            panic!("not parsed");
        };
        assert_eq!(key.as_str(), "chat:general");
    }

    #[test]
    fn keys_share_the_channel_slot() {
        let key = ChannelKey::new("chat", "general").expect("valid");
        assert_eq!(live_channel(&key), "arqonbus:{chat:general}:live");
        assert_eq!(
            members_key(&key, "n1"),
            "arqonbus:{chat:general}:members:n1"
        );
        assert_eq!(counts_key("n1"), "arqonbus:{cluster}:counts:n1");
        assert_eq!(node_key("n1"), "arqonbus:{cluster}:node:n1");
    }
}
