//! `status`: what the server is doing, in one reply.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use arqon_protocol::{ChannelKey, PROTOCOL_VERSION, format_timestamp};
use arqon_routing::Client;
use serde_json::{Map, Value, json};

use arqon_routing::backplane::Overview;
use arqon_storage::Persistence;

use super::{CommandFuture, Ctx};
use crate::args::Args;
use crate::bus::Bus;
use crate::bus::PRODUCT_NAME;
use crate::error::CommandError;

/// How many channels `participants.channels` lists.
const LARGEST_CHANNELS: usize = 100;

pub(super) fn status(ctx: Ctx<'_>, _args: Args<'_>) -> Result<CommandFuture, CommandError> {
    let bus = ctx.bus;
    let info = bus.info();
    let router = bus.router();
    // `participants` lists only channels the client may join (SPEC §18).
    let client = ctx.client.clone();
    let snapshot = router.snapshot_of(LARGEST_CHANNELS, |key| client.may_access(key));
    let storage = bus.storage().status();
    let stats = router.stats();
    let participants: Map<String, Value> = snapshot
        .largest_channels
        .iter()
        .map(|(key, members)| (key.as_str().to_owned(), json!(members)))
        .collect();
    let mut payload = json!({
        "server": {
            "name": PRODUCT_NAME,
            "version": info.version,
            "protocol": PROTOCOL_VERSION,
            "node_id": info.node_id,
            "started_at": format_timestamp(info.started_at),
            "uptime_seconds": info.uptime_seconds(),
        },
        "clients": {"active": snapshot.clients, "by_type": snapshot.clients_by_type},
        "rooms": snapshot.rooms,
        "channels": snapshot.channels,
        "subscriptions": snapshot.subscriptions,
        "participants": {
            "channels": participants,
            "truncated": snapshot.ranked > LARGEST_CHANNELS,
        },
        "messages": {
            "received": stats.received.load(Ordering::Relaxed),
            "delivered": stats.delivered.load(Ordering::Relaxed),
            "dropped": stats.dropped.load(Ordering::Relaxed),
        },
        "storage": {
            "backend": storage.backend,
            "degraded": storage.degraded,
            "memory_bytes": storage.memory_bytes,
            "persistence": storage.persistence.map(Persistence::as_str),
        },
    });
    let bus = bus.clone();
    Ok(Box::pin(async move {
        if let Some(overview) = bus.backplane().overview().await {
            add_cluster(&overview, &bus, &client, &mut payload);
        }
        Ok(payload)
    }))
}

/// Cluster mode: clients, subscriptions and participants over every live
/// node, and the list of live nodes. While Redis is unreachable the local
/// figures stay, and `cluster.degraded` says so.
fn add_cluster(overview: &Overview, bus: &Bus, client: &Client, payload: &mut Value) {
    let node_id = bus.backplane().node_id();
    if overview.degraded {
        payload["cluster"] = json!({
            "mode": "redis",
            "node_id": node_id,
            "degraded": true,
            "nodes": [],
        });
        return;
    }
    let mut clients = 0u64;
    let mut by_type: Map<String, Value> = Map::new();
    let mut nodes = Vec::with_capacity(overview.nodes.len());
    for node in &overview.nodes {
        clients += node.clients;
        for (kind, count) in &node.by_type {
            let total = by_type.entry(kind.clone()).or_insert(json!(0));
            *total = json!(total.as_u64().unwrap_or(0) + count);
        }
        nodes.push(json!({
            "node_id": node.node_id,
            "started_at": node.started_at,
            "clients": node.clients,
            "last_seen": chrono_millis(node.last_seen_ms),
        }));
    }
    if !by_type.is_empty() {
        payload["clients"]["by_type"] = Value::Object(by_type);
    }
    payload["clients"]["active"] = json!(clients);
    let mut channels: Vec<(&String, &u64)> = overview
        .channel_members
        .iter()
        .filter(|(key, _)| ChannelKey::parse(key).is_ok_and(|key| client.may_access(&key)))
        .collect();
    channels.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let subscriptions: u64 = overview.channel_members.values().sum();
    // Channels with members anywhere, and this node's (with or without).
    let local_channels = bus.router().channels(None).unwrap_or_default();
    let mut all: HashSet<&str> = overview
        .channel_members
        .keys()
        .map(String::as_str)
        .collect();
    all.extend(local_channels.iter().map(|channel| channel.key().as_str()));
    let rooms: HashSet<&str> = all
        .iter()
        .filter_map(|key| key.split_once(':').map(|(room, _)| room))
        .collect();
    payload["rooms"] = json!(rooms.len());
    payload["channels"] = json!(all.len());
    payload["subscriptions"] = json!(subscriptions);
    payload["participants"] = json!({
        "channels": channels
            .iter()
            .take(LARGEST_CHANNELS)
            .map(|(key, count)| ((*key).clone(), json!(count)))
            .collect::<Map<String, Value>>(),
        "truncated": channels.len() > LARGEST_CHANNELS,
    });
    payload["cluster"] = json!({
        "mode": "redis",
        "node_id": node_id,
        "degraded": false,
        "nodes": nodes,
    });
}

/// RFC 3339 (ms, `Z`) of a Unix time in milliseconds.
fn chrono_millis(ms: i64) -> String {
    arqon_protocol::format_timestamp(
        chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default(),
    )
}
