//! `status`: what the server is doing, in one reply.

use std::sync::atomic::Ordering;

use arqon_protocol::{PROTOCOL_VERSION, format_timestamp};
use serde_json::{Map, Value, json};

use super::Ctx;
use crate::args::Args;
use crate::bus::PRODUCT_NAME;
use crate::error::CommandError;

/// How many channels `participants.channels` lists.
const LARGEST_CHANNELS: usize = 100;

pub(super) fn status(ctx: Ctx<'_>, _args: Args<'_>) -> Result<Value, CommandError> {
    let bus = ctx.bus;
    let info = bus.info();
    let router = bus.router();
    let snapshot = router.snapshot(LARGEST_CHANNELS);
    let storage = bus.storage().status();
    let stats = router.stats();
    let participants: Map<String, Value> = snapshot
        .largest_channels
        .iter()
        .map(|(key, members)| (key.as_str().to_owned(), json!(members)))
        .collect();
    Ok(json!({
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
            "truncated": snapshot.channels > LARGEST_CHANNELS,
        },
        "messages": {
            "received": stats.received.load(Ordering::Relaxed),
            "delivered": stats.delivered.load(Ordering::Relaxed),
            "dropped": stats.dropped.load(Ordering::Relaxed),
        },
        "storage": {"backend": storage.backend, "degraded": storage.degraded},
    }))
}
