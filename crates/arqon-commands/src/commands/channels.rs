//! Channel commands: join, leave, create, delete, list, info (SPEC §5).

use arqon_protocol::{Envelope, format_timestamp};
use arqon_routing::ChannelSpec;
use arqon_telemetry::{AgentAction, Event};
use bytes::Bytes;
use serde_json::{Value, json};

use super::{CommandFuture, Ctx};
use crate::args::Args;
use crate::error::CommandError;

/// `channel_info` lists at most this many participants.
const MAX_LISTED_PARTICIPANTS: usize = 1000;

pub(super) fn join(ctx: Ctx<'_>, args: Args<'_>) -> Result<Value, CommandError> {
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
    Ok(json!({
        "room": key.room(),
        "channel": key.channel(),
        "participant_count": joined.participant_count,
        "seq": joined.seq,
        "epoch": &*joined.epoch,
    }))
}

pub(super) fn leave(ctx: Ctx<'_>, args: Args<'_>) -> Result<Value, CommandError> {
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
    Ok(json!({"room": key.room(), "channel": key.channel(), "was_member": was_member}))
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
    let channel = ctx
        .bus
        .router()
        .channel(&key)
        .ok_or(arqon_routing::RoutingError::ChannelNotFound { key: key.clone() })?;
    let participants: Vec<Value> = channel
        .members_snapshot(MAX_LISTED_PARTICIPANTS)
        .iter()
        .map(|client| {
            let profile = client.profile();
            json!({
                "client_id": client.id(),
                "client_type": profile.client_type,
                "screen_name": profile.screen_name,
                "connected_at": format_timestamp(client.connected_at()),
                "last_activity": format_timestamp(client.last_activity()),
            })
        })
        .collect();
    let mut record = channel.record();
    if let Value::Object(fields) = &mut record {
        fields.insert("participants".into(), Value::Array(participants));
        fields.insert("last_seq".into(), json!(channel.last_seq()));
        fields.insert("epoch".into(), json!(&**channel.epoch()));
    }
    let storage = ctx.bus.storage().clone();
    Ok(Box::pin(async move {
        let stored = storage.count(&key).await;
        if let Value::Object(fields) = &mut record {
            fields.insert("messages_stored".into(), json!(stored));
        }
        Ok(record)
    }))
}
