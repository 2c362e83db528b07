//! Reading history, counts and the restore list from Redis.

use fred::error::{Error, ErrorKind};
use fred::prelude::{
    Client, ClientLike, ClusterInterface, HashesInterface, KeysInterface, StreamsInterface, Value,
};

use arqon_protocol::ChannelKey;

use crate::layout::{
    FIELD_ENVELOPE, FIELD_EPOCH, FIELD_LAST_SEQ, FIELD_TS, META_PATTERN, meta_key, parse_entry_id,
    parse_meta_key, stream_key,
};
use crate::query::{Item, Window};
use crate::types::{HistoryQuery, RestoredChannel};

/// Entries fetched per `XRANGE` page when filters may skip some.
const PAGE: usize = 500;
/// Keys asked for per `SCAN` page, and meta hashes read per pipeline.
const SCAN_COUNT: u32 = 1000;

/// The channel's stream as far as `query` needs it: the meta epoch, and the
/// matching entries (at most `limit`), sorted by ascending `seq`.
pub(crate) async fn history(
    client: &Client,
    key: &ChannelKey,
    query: &HistoryQuery,
) -> Result<(Option<String>, Vec<Item>), Error> {
    let window = Window::of(query);
    let stream = stream_key(key);
    let unfiltered = query.since.is_none() && query.until.is_none();
    let page = if unfiltered {
        query.limit.max(1)
    } else {
        PAGE.max(query.limit)
    };
    let count = Some(u64::try_from(page).unwrap_or(u64::MAX));
    let forward = query.after_seq.is_some();
    // Bounds of the next page: `seq` values, inclusive.
    let mut low: u64 = match query.after_seq {
        Some(after) => match after.checked_add(1) {
            Some(low) => low,
            None => return Ok((meta_epoch(client, key).await?, Vec::new())),
        },
        None => 0,
    };
    let mut high: Option<u64> = None;

    // The first page rides with the meta read, in one round trip.
    let pipeline = client.pipeline();
    pipeline
        .hget::<(), _, _>(meta_key(key), FIELD_EPOCH)
        .await?;
    if forward {
        pipeline
            .xrange::<(), _, _, _>(stream.as_str(), low.to_string(), "+", count)
            .await?;
    } else {
        pipeline
            .xrevrange::<(), _, _, _>(stream.as_str(), "+", "-", count)
            .await?;
    }
    let mut replies = pipeline.all::<Vec<Value>>().await?.into_iter();
    let epoch: Option<String> = replies.next().map(Value::convert).transpose()?.flatten();
    let mut reply = replies.next().unwrap_or(Value::Null);

    let mut found: Vec<Item> = Vec::new();
    loop {
        let entries = parse_entries(reply)?;
        let full_page = entries.len() >= page;
        let mut done = !full_page;
        for item in &entries {
            if forward {
                low = item.seq.saturating_add(1);
                if window.exhausted_forwards(item.at_ms) {
                    done = true;
                    break;
                }
            } else {
                high = Some(item.seq.saturating_sub(1));
                if window.exhausted_backwards(item.at_ms) {
                    done = true;
                    break;
                }
            }
        }
        found.extend(
            entries
                .into_iter()
                .filter(|item| window.contains(item.seq, item.at_ms)),
        );
        if done || found.len() >= query.limit || high == Some(0) {
            break;
        }
        reply = if forward {
            client
                .xrange::<Value, _, _, _>(stream.as_str(), low.to_string(), "+", count)
                .await?
        } else {
            let end = high.map_or_else(|| "+".to_owned(), |high| high.to_string());
            client
                .xrevrange::<Value, _, _, _>(stream.as_str(), end, "-", count)
                .await?
        };
    }
    found.sort_by_key(|item| item.seq);
    found.dedup_by_key(|item| item.seq);
    if forward {
        found.truncate(query.limit);
    } else if found.len() > query.limit {
        found.drain(..found.len() - query.limit);
    }
    Ok((epoch, found))
}

async fn meta_epoch(client: &Client, key: &ChannelKey) -> Result<Option<String>, Error> {
    client.hget(meta_key(key), FIELD_EPOCH).await
}

/// The meta epoch, the stream length and the top `seq`, in one round trip.
pub(crate) async fn count(
    client: &Client,
    key: &ChannelKey,
) -> Result<(Option<String>, u64, Option<u64>), Error> {
    let stream = stream_key(key);
    let pipeline = client.pipeline();
    pipeline
        .hget::<(), _, _>(meta_key(key), FIELD_EPOCH)
        .await?;
    pipeline.xlen::<(), _>(stream.as_str()).await?;
    pipeline
        .xrevrange::<(), _, _, _>(stream.as_str(), "+", "-", Some(1))
        .await?;
    let mut replies = pipeline.all::<Vec<Value>>().await?.into_iter();
    let epoch: Option<String> = replies.next().map(Value::convert).transpose()?.flatten();
    let len: u64 = replies.next().map(Value::convert).transpose()?.unwrap_or(0);
    let top = parse_entries(replies.next().unwrap_or(Value::Null))?
        .first()
        .map(|item| item.seq);
    Ok((epoch, len, top))
}

/// Every channel with a meta hash: `SCAN` for the keys, then `HMGET` of
/// `epoch` and `last_seq`, pipelined per page.
/// On a Redis Cluster every primary is scanned in turn (a `SCAN` sees one
/// node's keys only).
pub(crate) async fn restore(client: &Client) -> Result<Vec<RestoredChannel>, Error> {
    let mut restored = Vec::new();
    let primaries = if client.is_clustered() {
        client
            .cached_cluster_state()
            .map(|state| state.unique_primary_nodes())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    if primaries.is_empty() {
        restore_node(client, None, &mut restored).await?;
    }
    for server in primaries {
        restore_node(client, Some(server), &mut restored).await?;
    }
    restored.sort_by(|a, b| a.key.cmp(&b.key));
    restored.dedup_by(|a, b| a.key == b.key);
    Ok(restored)
}

async fn restore_node(
    client: &Client,
    server: Option<fred::types::config::Server>,
    restored: &mut Vec<RestoredChannel>,
) -> Result<(), Error> {
    let mut cursor = "0".to_owned();
    loop {
        let page = match &server {
            Some(server) => {
                client
                    .with_cluster_node(server.clone())
                    .scan_page(cursor, META_PATTERN, Some(SCAN_COUNT), None)
                    .await
            }
            None => {
                client
                    .scan_page(cursor, META_PATTERN, Some(SCAN_COUNT), None)
                    .await
            }
        };
        let (next, keys): (String, Vec<String>) = page?;
        let channels: Vec<(ChannelKey, String)> = keys
            .into_iter()
            .filter_map(|name| parse_meta_key(&name).map(|key| (key, name)))
            .collect();
        if !channels.is_empty() {
            // Per channel: the meta hash, and the stream's top entry, in
            // case a crash left `last_seq` behind the stream (seq must
            // continue past every id already used).
            let pipeline = client.pipeline();
            for (key, name) in &channels {
                pipeline
                    .hmget::<(), _, _>(name.as_str(), vec![FIELD_EPOCH, FIELD_LAST_SEQ])
                    .await?;
                pipeline
                    .xrevrange::<(), _, _, _>(stream_key(key), "+", "-", Some(1))
                    .await?;
            }
            let replies = pipeline.try_all::<Value>().await;
            if replies.len() != channels.len() * 2 {
                if let Some(error) = replies.into_iter().find_map(Result::err) {
                    return Err(error);
                }
                return Err(Error::new(ErrorKind::Protocol, "short pipeline reply"));
            }
            let mut replies = replies.into_iter();
            for (key, name) in channels {
                let (Some(meta), Some(top)) = (replies.next(), replies.next()) else {
                    break;
                };
                let meta = meta.and_then(Value::convert::<(Option<String>, Option<u64>)>);
                let top = top
                    .and_then(parse_entries)
                    .map(|entries| entries.first().map_or(0, |item| item.seq));
                match (meta, top) {
                    (Ok((Some(epoch), last_seq)), Ok(top)) if !epoch.is_empty() => {
                        restored.push(RestoredChannel {
                            key,
                            epoch,
                            last_seq: last_seq.unwrap_or(0).max(top),
                        });
                    }
                    (Ok(_), Ok(_)) => {
                        tracing::warn!(backend = "redis", key = %name, "meta hash without an epoch; channel not restored");
                    }
                    (Err(error), _) | (_, Err(error)) => {
                        tracing::warn!(backend = "redis", key = %name, %error, "unreadable channel keys; channel not restored");
                    }
                }
            }
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    Ok(())
}

/// Parses an `XRANGE`/`XREVRANGE` reply: `[[id, [field, value, …]], …]`.
/// Entries without an `envelope` field are skipped (not ours).
fn parse_entries(reply: Value) -> Result<Vec<Item>, Error> {
    if reply.is_null() {
        return Ok(Vec::new());
    }
    let Value::Array(entries) = reply else {
        return Err(Error::new(ErrorKind::Parse, "XRANGE reply is not an array"));
    };
    let mut items = Vec::with_capacity(entries.len());
    for entry in entries {
        let mut parts = entry.into_array().into_iter();
        let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(seq) = id.as_str().and_then(|id| parse_entry_id(&id)) else {
            continue;
        };
        let mut envelope = None;
        let mut at_ms = 0i64;
        let mut fields = fields.into_array().into_iter();
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            match name.as_str().as_deref() {
                Some(FIELD_ENVELOPE) => envelope = value.into_bytes(),
                Some(FIELD_TS) => {
                    at_ms = value
                        .as_i64()
                        .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
                        .unwrap_or(0);
                }
                _ => {}
            }
        }
        if let Some(frame) = envelope {
            items.push(Item { seq, at_ms, frame });
        }
    }
    Ok(items)
}
