//! [`Cluster`] as the bus's [`Backplane`]: each operation through Redis,
//! and `None` (this node's own view) whenever Redis cannot answer, so that
//! a node keeps serving its clients through an outage. Failures are
//! logged here, with their cause; the command layer sees
//! [`RoutingError::BackplaneUnavailable`].

use std::sync::Arc;

use arqon_protocol::{ChannelKey, ClientId};
use arqon_routing::backplane::{
    BackplaneFuture, Members, Overview, Published, SharedChannel, SharedJoin, SharedMessage,
};
use arqon_routing::{Backplane, Client, RoutingError};
use bytes::Bytes;
use serde_json::Value;

use crate::error::ClusterError;
use crate::node::Cluster;

/// The command layer's view of a cluster failure (logged by the caller).
fn unavailable(_: ClusterError) -> RoutingError {
    RoutingError::BackplaneUnavailable
}

/// A record read back from Redis, if it is JSON.
fn record(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok()
}

impl Backplane for Cluster {
    fn node_id(&self) -> &str {
        Cluster::node_id(self)
    }

    fn takes_channel_messages(&self) -> bool {
        self.routes()
    }

    fn publish(
        &self,
        message: SharedMessage<'_>,
    ) -> BackplaneFuture<Result<Published, RoutingError>> {
        let key = message.key.clone();
        let published = Cluster::publish(
            self,
            message.key,
            message.sender,
            message.echo,
            message.envelope,
            message.epoch,
        );
        Box::pin(async move {
            published.await.map_err(|error| {
                tracing::debug!(channel = %key, %error, "cluster: publish not sequenced in Redis");
                unavailable(error)
            })
        })
    }

    fn send_direct(
        &self,
        target: &ClientId,
        frame: Bytes,
    ) -> Option<BackplaneFuture<Result<bool, RoutingError>>> {
        if !self.routes() {
            return None;
        }
        let (cluster, target) = (self.clone(), target.clone());
        Some(Box::pin(async move {
            cluster
                .send_direct(&target, frame, false)
                .await
                .map_err(|error| {
                    tracing::debug!(%error, "cluster: direct message not sent");
                    unavailable(error)
                })
        }))
    }

    fn disconnect(&self, target: &ClientId) -> Option<BackplaneFuture<Result<bool, RoutingError>>> {
        if !self.routes() {
            return None;
        }
        let (cluster, target) = (self.clone(), target.clone());
        Some(Box::pin(async move {
            cluster
                .send_direct(&target, Bytes::new(), true)
                .await
                .map_err(|error| {
                    tracing::debug!(%error, "cluster: disconnect not sent");
                    unavailable(error)
                })
        }))
    }

    fn client_connected(&self, client: &Client) -> BackplaneFuture<()> {
        let (cluster, client_id) = (self.clone(), client.id().clone());
        let client_type = client.client_type();
        let wait = self.inner.settings.command_timeout;
        Box::pin(async move {
            let registered = cluster.client_connected(&client_id, client_type.as_str());
            match tokio::time::timeout(wait, registered).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "cluster: client not registered yet; the heartbeat retries");
                }
                Err(_elapsed) => {
                    cluster.mark_dirty();
                    tracing::warn!("cluster: client registration timed out; the heartbeat retries");
                }
            }
        })
    }

    fn client_disconnected(&self, client: &Client, channels: Vec<ChannelKey>) {
        let (cluster, client_id) = (self.clone(), client.id().clone());
        self.inner.tasks.spawn(async move {
            cluster.client_disconnected(&client_id, &channels).await;
        });
    }

    fn joined(
        &self,
        key: &ChannelKey,
        client_id: &ClientId,
        record: Value,
    ) -> BackplaneFuture<Option<SharedJoin>> {
        let (cluster, key, client_id) = (self.clone(), key.clone(), client_id.clone());
        Box::pin(async move {
            match cluster.joined(&key, &client_id, record.to_string()).await {
                Ok((members, sequence)) => Some(SharedJoin { members, sequence }),
                Err(error) => {
                    tracing::warn!(channel = %key, %error, "cluster: join recorded on this node only");
                    None
                }
            }
        })
    }

    fn left(&self, key: &ChannelKey, client_id: &ClientId) -> BackplaneFuture<()> {
        let (cluster, key, client_id) = (self.clone(), key.clone(), client_id.clone());
        Box::pin(async move {
            if let Err(error) = cluster.left(&key, &client_id).await {
                tracing::warn!(channel = %key, %error, "cluster: leave recorded on this node only; it expires with the node TTL");
            }
        })
    }

    fn members(&self, key: &ChannelKey, limit: usize) -> BackplaneFuture<Option<Members>> {
        let (cluster, key) = (self.clone(), key.clone());
        Box::pin(async move {
            if !cluster.is_connected() {
                return None;
            }
            match cluster.members(&key, limit).await {
                Ok((count, records)) => Some(Members {
                    count,
                    records: records.iter().filter_map(|text| record(text)).collect(),
                }),
                Err(error) => {
                    tracing::warn!(channel = %key, %error, "cluster: members listed from this node only");
                    None
                }
            }
        })
    }

    fn channel(&self, key: &ChannelKey) -> BackplaneFuture<Option<SharedChannel>> {
        let (cluster, key) = (self.clone(), key.clone());
        Box::pin(async move {
            let (shared, sequence) =
                tokio::join!(cluster.channel_record(&key), cluster.sequence(&key));
            Some(SharedChannel {
                record: shared.ok().flatten().as_deref().and_then(record),
                sequence: sequence.ok().flatten(),
            })
        })
    }

    fn channel_records(&self) -> BackplaneFuture<Vec<Value>> {
        let cluster = self.clone();
        Box::pin(async move {
            match cluster.channel_records().await {
                Ok(records) => records.iter().filter_map(|text| record(text)).collect(),
                Err(error) => {
                    tracing::debug!(%error, "cluster: shared channels not listed");
                    Vec::new()
                }
            }
        })
    }

    fn register_channel(
        &self,
        key: &ChannelKey,
        record: &Value,
    ) -> BackplaneFuture<Result<bool, RoutingError>> {
        let (cluster, key, record) = (self.clone(), key.clone(), record.to_string());
        Box::pin(async move {
            cluster
                .register_channel(&key, &record)
                .await
                .map_err(|error| {
                    tracing::debug!(channel = %key, %error, "cluster: channel record not shared");
                    unavailable(error)
                })
        })
    }

    fn delete_channel(&self, key: &ChannelKey) -> BackplaneFuture<Result<(), RoutingError>> {
        let (cluster, key) = (self.clone(), key.clone());
        Box::pin(async move {
            cluster.delete_channel(&key).await.map_err(|error| {
                tracing::warn!(channel = %key, %error, "cluster: channel not deleted on every node");
                unavailable(error)
            })
        })
    }

    fn channel_idle(&self, key: &ChannelKey) {
        let (cluster, key) = (self.clone(), key.clone());
        self.inner.tasks.spawn(async move {
            match cluster.members(&key, 0).await {
                Ok((0, _)) => {
                    if let Err(error) = cluster.delete_channel(&key).await {
                        tracing::debug!(channel = %key, %error, "cluster: idle channel record kept for now");
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(channel = %key, %error, "cluster: idle channel record kept for now");
                }
            }
        });
    }

    fn sequence(&self, key: &ChannelKey) -> BackplaneFuture<Option<(Arc<str>, u64)>> {
        let (cluster, key) = (self.clone(), key.clone());
        Box::pin(async move {
            if !cluster.routes() {
                return None;
            }
            cluster.sequence(&key).await.ok().flatten()
        })
    }

    fn overview(&self) -> BackplaneFuture<Option<Overview>> {
        let cluster = self.clone();
        Box::pin(async move {
            let degraded = Overview {
                degraded: true,
                ..Overview::default()
            };
            if !cluster.is_connected() {
                return Some(degraded);
            }
            match cluster.overview().await {
                Ok(overview) => Some(overview),
                Err(error) => {
                    tracing::debug!(%error, "cluster: overview not read");
                    Some(degraded)
                }
            }
        })
    }
}
