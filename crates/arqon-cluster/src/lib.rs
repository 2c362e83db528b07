//! Cluster mode for ArqonBus (SPEC §10): several nodes behave as one bus
//! through a shared Redis. This crate is the Redis implementation of the
//! [`Backplane`] seam of `arqon-routing`; [`open`] gives the bus its
//! backplane, this one or the single node's [`Local`].
//!
//! - **Channel messages** are sequenced, stored and broadcast by one Lua
//!   script: `HINCRBY` of the channel's `last_seq`, `XADD` to its stream,
//!   `PUBLISH` to its Pub/Sub channel. Every node, the publisher's
//!   included, delivers what arrives there to its local members, so all
//!   subscribers see one `seq` order. A node subscribes only to the
//!   channels it has local members in.
//! - **Direct messages** and operator disconnects go through the client
//!   registry (client id → node) to the target node's Pub/Sub channel.
//! - **Presence**: per channel and node a hash of the node's members, per
//!   node its member count per channel and a summary, all expiring after
//!   the node TTL unless the heartbeat renews them; a sorted set of last
//!   heartbeats says which nodes are alive. Joins and leaves are recorded
//!   and announced by one script; each node mirrors the members other
//!   nodes have in the channels it listens to, and reports a `leave` for
//!   each member of a node found dead.
//!
//! # Dependencies
//!
//! May depend on `arqon-protocol`, `arqon-config` (its [`ClusterConfig`]
//! section), `arqon-routing` (the [`Backplane`] trait and the router it
//! delivers to) and `arqon-storage` (the Redis layout, [`layout`], and
//! the history handle whose health gates publishes). It owns the `fred`
//! clients of cluster mode (a command client and a Pub/Sub subscriber),
//! as `arqon-storage` owns those of history; no fred type appears in its
//! API. Nothing but the server depends on it: commands see the trait.
//!
//! # Key types
//!
//! - [`open`]: the backplane for a configuration.
//! - [`Cluster`]: one node's connection, a [`Backplane`].
//! - [`ClusterError`]: why an operation failed.
//!
//! # Invariants
//!
//! - Redis keys, fields and channel names come from [`layout`] alone, and
//!   every Pub/Sub message is encoded and decoded in `frame.rs` alone,
//!   identifiers validated once there.
//! - The handle never blocks the caller on Redis: membership changes are
//!   mirrored locally at once, and what Redis must learn is sent by the
//!   returned futures or by the heartbeat, which also rewrites everything
//!   after Redis lost it (a restart). Redis unreachable, every operation
//!   answers with this node's own view.
//! - No lock is held across Redis I/O: locks are short `std` mutexes;
//!   subscriptions change in one task fed by a bounded queue.
//! - Every queue is bounded (`queue_capacity`); every task runs on the
//!   bus's task tracker and ends with its stop signal.
//!
//! [`Local`]: arqon_routing::backplane::Local
//! [`layout`]: arqon_storage::layout

mod backplane;
mod error;
mod frame;
mod node;
mod presence;
mod scripts;
mod subscriptions;
mod tasks;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use arqon_config::{ClusterConfig, ClusterMode, StorageConfig, redact_url};
use arqon_routing::backplane::Local;
use arqon_routing::{Backplane, Router};
use arqon_storage::{Storage, layout};
use fred::prelude::{
    Builder, ClientLike, Config, EventInterface, PubsubInterface, ReconnectPolicy,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::{ClusterError, RedisError};
pub use node::Cluster;

use node::Inner;
use presence::Remote;
use subscriptions::Subscriptions;

/// The backplane `cluster` asks for: [`Local`] for a single node, else a
/// [`Cluster`] over the Redis of `storage.redis_url`, delivering what
/// other nodes send to `router`. Its tasks run on `tasks` until `stop` (or
/// until the last handle is dropped).
///
/// Redis unreachable at startup is not fatal: the clients keep
/// reconnecting (backoff up to 5 s) and the node serves its local clients
/// meanwhile. Only an unusable URL fails.
pub async fn open(
    cluster: &ClusterConfig,
    storage: &StorageConfig,
    history: Storage,
    router: Arc<Router>,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> Result<Arc<dyn Backplane>, ClusterError> {
    match cluster.mode {
        ClusterMode::None => Ok(Arc::new(Local::new(cluster.node_id.clone()))),
        ClusterMode::Redis => {
            let node = Cluster::open(cluster, storage, history, router, tasks, stop).await?;
            tracing::info!(
                node_id = node.node_id(),
                "cluster mode: sharing channels through Redis"
            );
            Ok(Arc::new(node))
        }
    }
}

impl Cluster {
    /// Connects to the shared Redis and starts the node's tasks (see
    /// [`open`]).
    pub async fn open(
        settings: &ClusterConfig,
        storage: &StorageConfig,
        history: Storage,
        router: Arc<Router>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Cluster, ClusterError> {
        let url = &storage.redis_url;
        let invalid = |source| ClusterError::InvalidUrl {
            url: redact_url(url),
            source: RedisError(source),
        };
        if layout::is_tls_url(url) {
            return Err(invalid(fred::error::Error::new(
                fred::error::ErrorKind::Config,
                "TLS (rediss://) is not supported by this build",
            )));
        }
        let mut config = Config::from_url(&layout::client_url(url)).map_err(invalid)?;
        config.fail_fast = false;
        let policy = ReconnectPolicy::new_exponential(0, 100, 5_000, 2);
        let timeout = settings.command_timeout;
        let connect_timeout = settings.connect_timeout;
        let capacity = settings.queue_capacity.max(1);
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
            .map_err(invalid)?;
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
                performance.broadcast_channel_capacity = capacity;
            })
            .set_policy(policy)
            .build_subscriber_client()
            .map_err(invalid)?;
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
        let stop = stop.child_token();
        let (publishes, jobs) = mpsc::channel(capacity);
        let (subscriptions, requests) = Subscriptions::new(capacity);
        let inner = Arc::new(Inner {
            settings: settings.clone(),
            started_at: arqon_protocol::now_rfc3339(),
            stream_maxlen: i64::try_from(storage.redis_stream_maxlen).unwrap_or(i64::MAX),
            ttl_secs: storage.history_ttl.map_or(0, |ttl| {
                i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX)
            }),
            client: client.clone(),
            subscriber,
            storage: history,
            router,
            local: Mutex::default(),
            subscriptions,
            dirty: AtomicBool::new(false),
            publishes,
            remote: Mutex::new(Remote::new()),
            tasks: tasks.clone(),
            stop: stop.clone(),
        });
        // This node's direct messages, and cluster-wide events.
        let channels = vec![
            layout::node_channel(&settings.node_id),
            layout::CONTROL_CHANNEL.to_owned(),
        ];
        if let Err(error) = inner.subscriber.subscribe(channels).await {
            tracing::warn!(%error, "cluster: cannot subscribe to this node's channels yet; retried on reconnect");
        }
        let weak = Arc::downgrade(&inner);
        tasks.spawn(tasks::publisher(
            client,
            jobs,
            settings.publish_batch,
            stop.clone(),
        ));
        tasks.spawn(subscriptions::run(weak.clone(), requests, stop.clone()));
        tasks.spawn(tasks::pump(messages, weak.clone(), stop.clone()));
        let cluster = Cluster { inner };
        cluster.heartbeat_once(true).await;
        tasks.spawn(tasks::heartbeat(weak, stop));
        Ok(cluster)
    }
}
