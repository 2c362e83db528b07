//! The members other nodes have in the channels this node listens to
//! (SPEC §15): seeded from Redis when the node starts to listen to a
//! channel, kept by the presence notices of other nodes, and used to
//! report a `leave` for each member of a node found dead.

use std::collections::{BTreeMap, HashMap, HashSet};

use arqon_protocol::{ChannelKey, ClientId};
use arqon_routing::PresenceEvent;
use arqon_routing::backplane::{self, Inbound, PresenceNotice};
use arqon_storage::layout;
use bytes::Bytes;
use fred::prelude::{ClientLike, SortedSetsInterface, Value};

use crate::node::{Cluster, eval, lock, millis, now_ms};
use crate::scripts;

/// Per channel, node id → client id → client record. A channel is present
/// exactly while this node is subscribed to it.
pub(crate) type Remote = HashMap<ChannelKey, HashMap<String, BTreeMap<ClientId, Bytes>>>;

/// Applies another node's presence notice to the mirror of its members,
/// for a channel this node listens to.
pub(crate) fn mirror(remote: &mut Remote, notice: &PresenceNotice) {
    let Some(nodes) = remote.get_mut(&notice.key) else {
        return;
    };
    match notice.change {
        PresenceEvent::Join => {
            nodes
                .entry(notice.node.clone())
                .or_default()
                .insert(notice.client_id.clone(), notice.record.clone());
        }
        PresenceEvent::Leave => {
            if let Some(members) = nodes.get_mut(&notice.node) {
                members.remove(&notice.client_id);
                if members.is_empty() {
                    nodes.remove(&notice.node);
                }
            }
        }
    }
}

impl Cluster {
    /// Learns the members other nodes have in `key` from Redis, once this
    /// node listens to it (their later changes arrive as notices).
    pub(crate) async fn seed_remote(&self, key: &ChannelKey) {
        let (command, args) = eval(
            scripts::MEMBERS_BY_NODE,
            vec![layout::channel_nodes_key(key)],
            vec![Value::from(layout::members_prefix(key))],
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
            let (Ok(node), Some(client_id)) = (
                std::str::from_utf8(&triple[0]),
                std::str::from_utf8(&triple[1])
                    .ok()
                    .and_then(|id| ClientId::new(id).ok()),
            ) else {
                continue;
            };
            if node == self.node_id() {
                continue;
            }
            nodes
                .entry(node.to_owned())
                .or_default()
                .entry(client_id)
                .or_insert_with(|| triple[2].clone());
        }
    }

    /// Reports a `leave` to this node's clients for every member of a
    /// node found dead (in the node registry with a heartbeat older than
    /// the node TTL) in the channels this node listens to, then forgets
    /// those members. A node that vanished from the registry altogether
    /// (a Redis restart) is not reported.
    pub(crate) async fn reap_dead_nodes(&self) {
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
            .zrangebyscore(layout::NODES_KEY, "-inf", until as f64, false, None)
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
                let gone: Vec<(String, BTreeMap<ClientId, Bytes>)> = dead
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
                change: PresenceEvent::Leave,
                client_id,
                count,
                record,
            });
            backplane::deliver(&self.inner.router, self.node_id(), notice);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_keep_the_mirror() {
        let key = ChannelKey::new("chat", "general").expect("valid");
        let client_id = ClientId::new("arq_client_3").expect("valid");
        let leave = PresenceNotice {
            key: key.clone(),
            node: "n1".to_owned(),
            change: PresenceEvent::Leave,
            client_id,
            count: 4,
            record: Bytes::from_static(b"{}"),
        };
        let join = PresenceNotice {
            change: PresenceEvent::Join,
            ..leave.clone()
        };
        let mut remote = Remote::new();
        // A channel this node does not listen to is not mirrored.
        mirror(&mut remote, &join);
        assert!(remote.is_empty());
        remote.insert(key.clone(), HashMap::new());
        mirror(&mut remote, &join);
        assert_eq!(remote[&key]["n1"].len(), 1);
        mirror(&mut remote, &leave);
        assert!(remote[&key].is_empty());
    }
}
