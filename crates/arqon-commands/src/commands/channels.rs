//! Channel commands: join, leave, create, delete, list, info (SPEC §5).

use arqon_protocol::{Envelope, format_timestamp};
use std::sync::Arc;

use arqon_routing::{Channel, ChannelSpec, Client};
use arqon_storage::cluster::Cluster;
use arqon_telemetry::{AgentAction, Event};
use bytes::Bytes;
use serde_json::{Value, json};

use super::{CommandFuture, Ctx};
use crate::args::Args;
use crate::bus::Bus;
use crate::error::CommandError;

/// `channel_info` lists at most this many participants.
const MAX_LISTED_PARTICIPANTS: usize = 1000;

pub(super) fn join(ctx: Ctx<'_>, args: Args<'_>) -> Result<CommandFuture, CommandError> {
    let key = args.channel_key()?;
    if !ctx.client.may_access(&key) {
        return Err(CommandError::forbidden(format!(
            "your token does not allow channel {key}"
        )));
    }
    let joined = ctx.bus.router().join(ctx.client, &key)?;
    let telemetry = ctx.bus.telemetry();
    let client_id = Some(ctx.client.id().clone());
    if joined.created {
        telemetry.emit_with(|| Event::ChannelCreated {
            client_id: client_id.clone(),
            channel: key.clone(),
        });
    }
    if !joined.already_member {
        telemetry.emit_with(|| Event::ChannelJoined {
            client_id,
            channel: key.clone(),
        });
        ctx.bus
            .agent_activity(ctx.client, AgentAction::Join, Some(&key));
    }
    let mut reply = json!({
        "room": key.room(),
        "channel": key.channel(),
        "participant_count": joined.participant_count,
        "seq": joined.seq,
        "epoch": &*joined.epoch,
    });
    let Some(cluster) = ctx.bus.cluster().cloned() else {
        return Ok(ready(reply));
    };
    // Cluster: the reply waits until this node listens to the channel in
    // Redis and the membership is recorded there, so a message published
    // anywhere after the reply reaches this client, and counts on every
    // node include it. Should Redis be down, the local join stands.
    let (bus, client) = (ctx.bus.clone(), ctx.client.clone());
    let record = participant(&client).to_string();
    Ok(Box::pin(async move {
        match cluster.joined(&key, client.id().as_str(), record).await {
            Ok((members, sequence)) => {
                if let Some((epoch, seq)) = sequence {
                    bus.router().sync_sequence(&key, &epoch, seq);
                }
                if let Some(channel) = bus.router().channel(&key) {
                    let (epoch, seq) = channel.sequence();
                    reply["seq"] = json!(seq);
                    reply["epoch"] = json!(&*epoch);
                }
                reply["participant_count"] = json!(members.max(1));
            }
            Err(error) => {
                tracing::warn!(channel = %key, %error, "cluster: join recorded on this node only");
            }
        }
        Ok(reply)
    }))
}

/// A finished command's payload as a [`CommandFuture`].
fn ready(payload: Value) -> CommandFuture {
    Box::pin(std::future::ready(Ok(payload)))
}

/// A member as `channel_info` lists it.
fn participant(client: &Client) -> Value {
    let profile = client.profile();
    json!({
        "client_id": client.id(),
        "client_type": profile.client_type,
        "screen_name": profile.screen_name,
        "connected_at": format_timestamp(client.connected_at()),
        "last_activity": format_timestamp(client.last_activity()),
    })
}

pub(super) fn leave(ctx: Ctx<'_>, args: Args<'_>) -> Result<CommandFuture, CommandError> {
    let key = args.channel_key()?;
    let was_member = ctx.bus.router().leave(ctx.client, &key)?;
    if was_member {
        let client_id = Some(ctx.client.id().clone());
        ctx.bus.telemetry().emit_with(|| Event::ChannelLeft {
            client_id,
            channel: key.clone(),
        });
        ctx.bus
            .agent_activity(ctx.client, AgentAction::Leave, Some(&key));
    }
    let reply = json!({"room": key.room(), "channel": key.channel(), "was_member": was_member});
    let Some(cluster) = ctx.bus.cluster().cloned().filter(|_| was_member) else {
        return Ok(ready(reply));
    };
    let client_id = ctx.client.id().clone();
    Ok(Box::pin(async move {
        if let Err(error) = cluster.left(&key, client_id.as_str()).await {
            tracing::warn!(channel = %key, %error, "cluster: leave recorded on this node only; it expires with the node TTL");
        }
        Ok(reply)
    }))
}

pub(super) fn create(ctx: Ctx<'_>, args: Args<'_>) -> Result<Value, CommandError> {
    ctx.require_admin("create_channel")?;
    let key = args.channel_key()?;
    let spec = ChannelSpec {
        created_by: Some(ctx.client.id().clone()),
        auto_created: false,
        description: args.opt_str("description")?.map(str::to_owned),
        metadata: args.opt_object("metadata")?.cloned().unwrap_or_default(),
        restored: None,
    };
    let channel = ctx.bus.router().create_channel(key.clone(), spec)?;
    let client_id = Some(ctx.client.id().clone());
    ctx.bus.telemetry().emit_with(|| Event::ChannelCreated {
        client_id,
        channel: key,
    });
    Ok(channel.record())
}

pub(super) fn delete(ctx: Ctx<'_>, args: Args<'_>) -> Result<Value, CommandError> {
    ctx.require_admin("delete_channel")?;
    let key = args.channel_key()?;
    let force = args.opt_bool("force")?.unwrap_or(false);
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
    let removed = ctx
        .bus
        .router()
        .delete_channel(&key, force, Bytes::from(notice.to_json()))?;
    // Its history goes with it: a channel created again starts a new epoch.
    ctx.bus.storage().delete(&key);
    let client_id = Some(ctx.client.id().clone());
    ctx.bus.telemetry().emit_with(|| Event::ChannelDeleted {
        client_id,
        channel: key.clone(),
    });
    Ok(json!({
        "room": key.room(),
        "channel": key.channel(),
        "deleted": true,
        "removed_members": removed,
    }))
}

pub(super) fn list(ctx: Ctx<'_>, args: Args<'_>) -> Result<Value, CommandError> {
    let room = args.opt_name("room")?;
    let channels = ctx.bus.router().channels(room)?;
    let records: Vec<Value> = channels.iter().map(|channel| channel.record()).collect();
    Ok(json!({"total": records.len(), "channels": records}))
}

pub(super) fn info(ctx: Ctx<'_>, args: Args<'_>) -> Result<CommandFuture, CommandError> {
    let key = args.channel_key()?;
    let bus = ctx.bus.clone();
    if let Some(channel) = bus.router().channel(&key) {
        return Ok(describe(bus, channel));
    }
    if bus.cluster().is_none() {
        return Err(arqon_routing::RoutingError::ChannelNotFound { key }.into());
    }
    // In a cluster the channel may so far exist on other nodes only.
    Ok(Box::pin(async move {
        match bus.find_channel(&key).await {
            Some(channel) => describe(bus, channel).await,
            None => Err(arqon_routing::RoutingError::ChannelNotFound { key }.into()),
        }
    }))
}

/// The `channel_info` payload of `channel`.
fn describe(bus: Arc<Bus>, channel: Arc<Channel>) -> CommandFuture {
    let participants: Vec<Value> = channel
        .members_snapshot(MAX_LISTED_PARTICIPANTS)
        .iter()
        .map(|client| participant(client))
        .collect();
    let mut record = channel.record();
    let (epoch, last_seq) = channel.sequence();
    if let Value::Object(fields) = &mut record {
        fields.insert("participants".into(), Value::Array(participants));
        fields.insert("last_seq".into(), json!(last_seq));
        fields.insert("epoch".into(), json!(&*epoch));
    }
    Box::pin(async move {
        let stored = bus.storage().count(channel.key()).await;
        if let Value::Object(fields) = &mut record {
            fields.insert("messages_stored".into(), json!(stored));
        }
        if let Some(cluster) = bus.cluster_route() {
            cluster_info(cluster, &bus, &channel, &mut record).await;
        }
        Ok(record)
    })
}

/// Replaces the local view in a `channel_info` record with the cluster's:
/// members on every live node, and `seq`/`epoch` as Redis holds them.
async fn cluster_info(cluster: &Cluster, bus: &Bus, channel: &Channel, record: &mut Value) {
    let key = channel.key();
    let (members, (epoch, last_seq)) = tokio::join!(
        cluster.members(key, MAX_LISTED_PARTICIPANTS),
        bus.sequence(channel)
    );
    let Value::Object(fields) = record else {
        return;
    };
    fields.insert("last_seq".into(), json!(last_seq));
    fields.insert("epoch".into(), json!(&*epoch));
    match members {
        Ok(members) => {
            let listed: Vec<Value> = members
                .records
                .iter()
                .filter_map(|text| serde_json::from_str(text).ok())
                .collect();
            fields.insert("participant_count".into(), json!(members.count));
            fields.insert("participants".into(), Value::Array(listed));
        }
        Err(error) => {
            tracing::warn!(channel = %key, %error, "cluster: channel_info shows this node's members only");
        }
    }
}
