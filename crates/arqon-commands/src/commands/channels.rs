//! Channel commands: join, leave, create, delete, list, info (SPEC §5).

use std::collections::BTreeMap;
use std::sync::Arc;

use arqon_protocol::{ChannelKey, ClientId, ErrorCode, format_timestamp};
use arqon_routing::{Channel, ChannelKind, ChannelSpec, Client, JoinOptions, RoutingError};
use arqon_storage::HistoryQuery;
use arqon_telemetry::{AgentAction, Event};
use bytes::Bytes;
use serde_json::{Value, json};

use super::{CommandFuture, Ctx};
use crate::args::{Args, invalid_argument};
use crate::bus::Bus;
use crate::error::CommandError;

/// `channel_info` lists at most this many participants.
const MAX_LISTED_PARTICIPANTS: usize = 1000;

/// `recover` of a `join_channel` (SPEC §14): the last `seq` and `epoch` the
/// client saw on the channel.
#[derive(Debug, Clone)]
struct Recover {
    seq: u64,
    epoch: String,
}

impl Recover {
    fn parse(args: &Args<'_>) -> Result<Option<Self>, CommandError> {
        let Some(recover) = args.opt_object("recover")? else {
            return Ok(None);
        };
        let seq = recover.get("seq").and_then(Value::as_u64);
        let epoch = recover.get("epoch").and_then(Value::as_str);
        match (seq, epoch) {
            (Some(seq), Some(epoch)) => Ok(Some(Self {
                seq,
                epoch: epoch.to_owned(),
            })),
            (None, Some(_)) => Err(invalid_argument(
                "recover.seq",
                "must be a non-negative integer",
            )),
            (Some(_), None) => Err(invalid_argument("recover.epoch", "must be a string")),
            (None, None) => Err(
                invalid_argument("recover.seq", "must be a non-negative integer")
                    .and(invalid_argument("recover.epoch", "must be a string")),
            ),
        }
    }
}

pub(super) fn join(ctx: Ctx<'_>, args: Args<'_>) -> Result<CommandFuture, CommandError> {
    let key = args.channel_key()?;
    let recover = Recover::parse(&args)?;
    let options = JoinOptions {
        presence: args.opt_bool("presence")?.unwrap_or(false),
        // Live messages wait behind the reply; the session releases them
        // once the reply is queued (SPEC §14).
        hold: true,
    };
    if !ctx.client.may_access(&key) {
        return Err(CommandError::forbidden(format!(
            "your token does not allow channel {key}"
        )));
    }
    let (bus, client) = (ctx.bus.clone(), ctx.client.clone());
    if bus.router().channel(&key).is_none() && !bus.router().config().auto_create_channels {
        // Not auto-created: the channel may exist on other nodes only.
        return Ok(Box::pin(async move {
            bus.find_channel(&key).await;
            let (reply, created) = join_here(&bus, &client, &key, options)?;
            let reply = join_shared(&bus, &client, &key, reply, created).await;
            Ok(match recover {
                None => reply,
                Some(recover) => recovered(&bus, &key, reply, recover).await,
            })
        }));
    }
    // The local join happens now, so that a publish right behind it is
    // accepted; the reply waits for the backplane.
    let (reply, created) = join_here(&bus, &client, &key, options)?;
    Ok(Box::pin(async move {
        let reply = join_shared(&bus, &client, &key, reply, created).await;
        Ok(match recover {
            None => reply,
            Some(recover) => recovered(&bus, &key, reply, recover).await,
        })
    }))
}

/// Adds `recovered` and `publications` to a join reply (SPEC §14). The
/// reply's `seq` is where the join took place in the channel's sequence:
/// every message up to it is read from history here, every later one is
/// held for the client and follows the reply. Recovery succeeds only when
/// the epoch is the channel's, every missed message is still stored, there
/// are at most `ARQONBUS_RECOVERY_MAX` of them, and they fit in one reply.
async fn recovered(bus: &Bus, key: &ChannelKey, mut reply: Value, recover: Recover) -> Value {
    let seq = reply["seq"].as_u64().unwrap_or(0);
    let epoch = reply["epoch"].as_str().unwrap_or_default();
    let publications = if recover.epoch != epoch || recover.seq > seq {
        None
    } else {
        missed(bus, key, recover.seq, seq).await
    };
    reply["recovered"] = json!(publications.is_some());
    reply["publications"] = Value::Array(publications.unwrap_or_default());
    reply
}

/// The messages with `seq` in `(after, upto]`, oldest first, or `None`
/// when they cannot all be given in one reply.
async fn missed(bus: &Bus, key: &ChannelKey, after: u64, upto: u64) -> Option<Vec<Value>> {
    let wanted = usize::try_from(upto - after).ok()?;
    if wanted == 0 {
        return Some(Vec::new());
    }
    if wanted > bus.router().config().recovery_max {
        return None;
    }
    let frames = bus
        .storage()
        .history(key, &HistoryQuery::after(after, wanted))
        .await
        .ok()?;
    let budget = bus.max_message_size().saturating_sub(REPLY_OVERHEAD);
    let mut size = 0;
    let mut publications = Vec::with_capacity(wanted);
    for frame in &frames {
        size += frame.len() + 1;
        let message: Value = serde_json::from_slice(frame).ok()?;
        let expected = after + publications.len() as u64 + 1;
        if size > budget || message["seq"].as_u64() != Some(expected) {
            return None;
        }
        publications.push(message);
        if expected == upto {
            return Some(publications);
        }
    }
    None
}

/// Joins `client` to `key` on this node (creating the channel when
/// allowed); returns the reply and whether the channel was created.
fn join_here(
    bus: &Bus,
    client: &Arc<Client>,
    key: &ChannelKey,
    options: JoinOptions,
) -> Result<(Value, bool), CommandError> {
    let joined = bus.router().join_with(client, key, options)?;
    let telemetry = bus.telemetry();
    let client_id = Some(client.id().clone());
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
        bus.agent_activity(client, AgentAction::Join, Some(key));
    }
    let reply = json!({
        "room": key.room(),
        "channel": key.channel(),
        "participant_count": joined.participant_count,
        "seq": joined.seq,
        "epoch": &*joined.epoch,
    });
    Ok((reply, joined.created))
}

/// Members per `presence` page by default, and the most one page holds.
pub const PRESENCE_DEFAULT_LIMIT: u64 = 100;
pub const PRESENCE_MAX_LIMIT: u64 = 1000;

/// `presence` (SPEC §15): a channel's members, a page at a time, in
/// `client_id` order so that paging visits every member that stays joined
/// exactly once; the cursor is the last `client_id` of the previous page.
pub(super) fn presence(ctx: Ctx<'_>, args: Args<'_>) -> Result<CommandFuture, CommandError> {
    const RULE: &str = "must be an integer from 1 to 1000";
    let key = args.channel_key()?;
    let limit = match args.0.get("limit") {
        None | Some(Value::Null) => PRESENCE_DEFAULT_LIMIT,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(limit @ 1..=PRESENCE_MAX_LIMIT) => limit,
            _ => return Err(invalid_argument("limit", RULE)),
        },
        Some(_) => return Err(invalid_argument("limit", RULE)),
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let cursor = args
        .opt_str("cursor")?
        .map(|cursor| {
            ClientId::new(cursor).map_err(|_| {
                invalid_argument("cursor", "must be a next_cursor from a previous reply")
            })
        })
        .transpose()?;
    if !ctx.client.may_access(&key) {
        return Err(CommandError::forbidden(format!(
            "your token does not allow channel {key}"
        )));
    }
    let bus = ctx.bus.clone();
    Ok(Box::pin(async move {
        let channel = bus
            .find_channel(&key)
            .await
            .ok_or_else(|| RoutingError::ChannelNotFound { key: key.clone() })?;
        // Cluster-wide: the member records every node keeps in Redis.
        match bus.backplane().members(&key, usize::MAX).await {
            Some(members) => {
                let mut records = members.records;
                records.sort_by(|a: &Value, b: &Value| {
                    a["client_id"].as_str().cmp(&b["client_id"].as_str())
                });
                Ok(page_records(&key, records, limit, cursor.as_ref()))
            }
            None => Ok(presence_page(
                &key,
                channel.members_snapshot(usize::MAX),
                limit,
                cursor.as_ref(),
            )),
        }
    }))
}

/// A page of this node's members of `key`.
fn presence_page(
    key: &ChannelKey,
    mut members: Vec<Arc<Client>>,
    limit: usize,
    cursor: Option<&ClientId>,
) -> Value {
    members.sort_by(|a, b| a.id().cmp(b.id()));
    let records = members.iter().map(|client| client.record()).collect();
    page_records(key, records, limit, cursor)
}

/// The page of `records` (client records sorted by `client_id`) after
/// `cursor`.
fn page_records(
    key: &ChannelKey,
    records: Vec<Value>,
    limit: usize,
    cursor: Option<&ClientId>,
) -> Value {
    let count = records.len();
    let rest: Vec<Value> = records
        .into_iter()
        .filter(|record| {
            cursor.is_none_or(|cursor| record["client_id"].as_str() > Some(cursor.as_str()))
        })
        .collect();
    let more = rest.len() > limit;
    let page: Vec<Value> = rest.into_iter().take(limit).collect();
    let next_cursor = if more {
        page.last().map(|record| record["client_id"].clone())
    } else {
        None
    };
    json!({
        "room": key.room(),
        "channel": key.channel(),
        "members": page,
        "count": count,
        "next_cursor": next_cursor,
    })
}

/// The backplane's part of a join: the reply waits until every node will
/// deliver the channel's messages to this client and counts include it;
/// a channel created by this join is shared with the other nodes. Should
/// the backplane be unreachable, the local join stands.
async fn join_shared(
    bus: &Bus,
    client: &Client,
    key: &ChannelKey,
    mut reply: Value,
    created: bool,
) -> Value {
    let backplane = bus.backplane();
    if created
        && let Some(channel) = bus.router().channel(key)
        && let Err(error) = backplane.register_channel(key, &channel.record()).await
    {
        tracing::warn!(channel = %key, %error, "cluster: channel record not shared with the other nodes");
    }
    let Some(joined) = backplane
        .joined(key, client.id(), participant(client))
        .await
    else {
        return reply;
    };
    if let Some((epoch, seq)) = joined.sequence {
        bus.router().sync_sequence(key, &epoch, seq);
    }
    if let Some(channel) = bus.router().channel(key) {
        let (epoch, seq) = channel.sequence();
        reply["seq"] = json!(seq);
        reply["epoch"] = json!(&*epoch);
    }
    reply["participant_count"] = json!(joined.members.max(1));
    reply
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
    if !was_member {
        return Ok(ready(reply));
    }
    let left = ctx.bus.backplane().left(&key, ctx.client.id());
    Ok(Box::pin(async move {
        left.await;
        Ok(reply)
    }))
}

pub(super) fn create(ctx: Ctx<'_>, args: Args<'_>) -> Result<CommandFuture, CommandError> {
    ctx.require_admin("create_channel")?;
    let key = args.channel_key()?;
    let spec = ChannelSpec {
        created_by: Some(ctx.client.id().clone()),
        auto_created: false,
        description: args.opt_str("description")?.map(str::to_owned),
        metadata: args.opt_object("metadata")?.cloned().unwrap_or_default(),
        ..ChannelSpec::default()
    };
    let (bus, client_id) = (ctx.bus.clone(), ctx.client.id().clone());
    // The name must be free on every node.
    Ok(Box::pin(async move {
        bus.find_channel(&key).await;
        let channel = bus.router().create_channel(key.clone(), spec)?;
        let record = channel.record();
        match bus.backplane().register_channel(&key, &record).await {
            Ok(true) => {}
            Ok(false) => {
                // Another node created it meanwhile: its record stands.
                let _ = bus.router().delete_channel(&key, false, Bytes::new());
                return Err(RoutingError::ChannelExists { key }.into());
            }
            Err(error) => {
                tracing::warn!(channel = %key, %error, "cluster: channel created on this node only for now");
            }
        }
        created(&bus, client_id, key);
        Ok(record)
    }))
}

/// Emits `channel_created` for `create_channel`.
fn created(bus: &Bus, client_id: ClientId, key: ChannelKey) {
    bus.telemetry().emit_with(|| Event::ChannelCreated {
        client_id: Some(client_id),
        channel: key,
    });
}

pub(super) fn delete(ctx: Ctx<'_>, args: Args<'_>) -> Result<CommandFuture, CommandError> {
    ctx.require_admin("delete_channel")?;
    let key = args.channel_key()?;
    let force = args.opt_bool("force")?.unwrap_or(false);
    let (bus, client_id) = (ctx.bus.clone(), ctx.client.id().clone());
    if bus
        .router()
        .channel(&key)
        .is_some_and(|channel| channel.kind() == ChannelKind::System)
    {
        return Err(RoutingError::SystemChannel { key }.into());
    }
    // Members on every node count, and every node drops it.
    Ok(Box::pin(async move {
        let Some(channel) = bus.find_channel(&key).await else {
            return Err(RoutingError::ChannelNotFound { key }.into());
        };
        let members = match bus.backplane().members(&key, 0).await {
            Some(members) => usize::try_from(members.count).unwrap_or(usize::MAX),
            None => channel.member_count(),
        };
        if members > 0 && !force {
            return Err(RoutingError::ChannelNotEmpty { key, members }.into());
        }
        bus.backplane().delete_channel(&key).await.map_err(|_| {
            CommandError::new(
                ErrorCode::StorageUnavailable,
                format!("{key} cannot be deleted on every node right now"),
            )
        })?;
        // This node at once; the others (and this one, again) when the
        // deletion reaches them.
        let removed = bus.delete_channel_here(&key, true).unwrap_or(0);
        Ok(deleted(&bus, client_id, &key, removed.max(members)))
    }))
}

/// After a deletion: the channel's history goes with it (a channel created
/// again starts a new epoch), `channel_deleted` is emitted, and the reply.
fn deleted(bus: &Bus, client_id: ClientId, key: &ChannelKey, removed: usize) -> Value {
    bus.storage().delete(key);
    bus.telemetry().emit_with(|| Event::ChannelDeleted {
        client_id: Some(client_id),
        channel: key.clone(),
        reason: None,
    });
    json!({
        "room": key.room(),
        "channel": key.channel(),
        "deleted": true,
        "removed_members": removed,
    })
}

/// `list_channels` pages hold at most this many records by default...
pub const LIST_DEFAULT_LIMIT: u64 = 1000;
/// ...and at most this many when asked.
pub const LIST_MAX_LIMIT: u64 = 10_000;

/// Room for the envelope around a reply's payload (ids, timestamp, field
/// names) when a reply is cut to fit `ARQONBUS_MAX_MESSAGE_SIZE`.
pub(super) const REPLY_OVERHEAD: usize = 1024;

/// One `list_channels` request's paging.
struct Paging {
    limit: usize,
    /// Records start after this key.
    after: Option<String>,
    /// The largest payload that still fits a reply.
    budget: usize,
}

impl Paging {
    fn parse(bus: &Bus, args: &Args<'_>) -> Result<Self, CommandError> {
        const RULE: &str = "must be an integer from 1 to 10000";
        let limit = match args.0.get("limit") {
            None | Some(Value::Null) => LIST_DEFAULT_LIMIT,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(limit @ 1..=LIST_MAX_LIMIT) => limit,
                _ => return Err(invalid_argument("limit", RULE)),
            },
            Some(_) => return Err(invalid_argument("limit", RULE)),
        };
        let after = args
            .opt_str("cursor")?
            .map(|cursor| {
                ChannelKey::parse(cursor)
                    .map(|key| key.as_str().to_owned())
                    .map_err(|_| {
                        invalid_argument("cursor", "must be a next_cursor from a previous reply")
                    })
            })
            .transpose()?;
        Ok(Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            after,
            budget: bus.max_message_size().saturating_sub(REPLY_OVERHEAD),
        })
    }

    /// The page of `records` (sorted by key, already filtered) this request
    /// asks for: `{channels, total, next_cursor}`. A page ends at `limit`
    /// records, or earlier when the next record would push the reply over
    /// the size limit (SPEC §18); `next_cursor` is null on the last page.
    fn page(&self, records: Vec<(String, Value)>) -> Value {
        let total = records.len();
        let mut page = Vec::new();
        let mut size = 0;
        let mut next_cursor = None;
        let mut last = None;
        let rest = records
            .into_iter()
            .filter(|(key, _)| self.after.as_ref().is_none_or(|after| key > after));
        for (key, record) in rest {
            let encoded = serde_json::to_string(&record).map_or(0, |text| text.len()) + 1;
            if page.len() == self.limit || (size + encoded > self.budget && !page.is_empty()) {
                next_cursor = last;
                break;
            }
            size += encoded;
            page.push(record);
            last = Some(key);
        }
        json!({"channels": page, "total": total, "next_cursor": next_cursor})
    }
}

pub(super) fn list(ctx: Ctx<'_>, args: Args<'_>) -> Result<CommandFuture, CommandError> {
    let room = args.opt_name("room")?.map(str::to_owned);
    let paging = Paging::parse(ctx.bus, &args)?;
    let bus = ctx.bus.clone();
    let client = ctx.client.clone();
    // A token's channel patterns filter the list, its total included
    // (SPEC §18): a client learns only of channels it may join.
    let visible = move |key: &str| ChannelKey::parse(key).is_ok_and(|key| client.may_access(&key));
    // This node's channels and those other nodes share, with members
    // counted on every node.
    Ok(Box::pin(async move {
        let mut records: BTreeMap<String, Value> = bus
            .router()
            .channels(None)?
            .iter()
            .map(|channel| (channel.key().as_str().to_owned(), channel.record()))
            .collect();
        let backplane = bus.backplane();
        let (shared, overview) = tokio::join!(backplane.channel_records(), backplane.overview());
        for record in shared {
            if let (Some(room), Some(channel)) =
                (record["room"].as_str(), record["channel"].as_str())
            {
                records.entry(format!("{room}:{channel}")).or_insert(record);
            }
        }
        if let Some(overview) = overview.filter(|overview| !overview.degraded) {
            for (key, record) in &mut records {
                if record["type"] != "system" {
                    record["participant_count"] =
                        json!(overview.channel_members.get(key).copied().unwrap_or(0));
                }
            }
        }
        let records: Vec<(String, Value)> = records
            .into_iter()
            .filter(|(key, record)| {
                visible(key) && room.as_deref().is_none_or(|room| record["room"] == room)
            })
            .collect();
        if let Some(room) = room
            && records.is_empty()
        {
            return Err(RoutingError::RoomNotFound { room }.into());
        }
        Ok(paging.page(records))
    }))
}

pub(super) fn info(ctx: Ctx<'_>, args: Args<'_>) -> Result<CommandFuture, CommandError> {
    let key = args.channel_key()?;
    // A token's channel patterns govern reading too (SPEC §18).
    if !ctx.client.may_access(&key) {
        return Err(CommandError::forbidden(format!(
            "your token does not allow channel {key}"
        )));
    }
    let bus = ctx.bus.clone();
    if let Some(channel) = bus.router().channel(&key) {
        return Ok(describe(bus, channel));
    }
    // The channel may so far exist on other nodes only.
    Ok(Box::pin(async move {
        match bus.find_channel(&key).await {
            Some(channel) => describe(bus, channel).await,
            None => Err(RoutingError::ChannelNotFound { key }.into()),
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
        shared_info(&bus, &channel, &mut record).await;
        Ok(record)
    })
}

/// Replaces the local view in a `channel_info` record with the cluster's,
/// when the backplane has one: members on every live node, and
/// `seq`/`epoch` as the backplane holds them.
async fn shared_info(bus: &Bus, channel: &Channel, record: &mut Value) {
    let key = channel.key();
    let (members, (epoch, last_seq)) = tokio::join!(
        bus.backplane().members(key, MAX_LISTED_PARTICIPANTS),
        bus.sequence(channel)
    );
    let Value::Object(fields) = record else {
        return;
    };
    fields.insert("last_seq".into(), json!(last_seq));
    fields.insert("epoch".into(), json!(&*epoch));
    if let Some(members) = members {
        fields.insert("participant_count".into(), json!(members.count));
        fields.insert("participants".into(), Value::Array(members.records));
    }
}
