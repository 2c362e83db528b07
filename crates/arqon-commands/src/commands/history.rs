//! `history`: a channel's stored messages (SPEC §5, §7).

use arqon_protocol::{ErrorCode, parse_timestamp};
use arqon_storage::HistoryQuery;
use bytes::Bytes;
use serde_json::{Value, json};

use super::channels::REPLY_OVERHEAD;
use super::{CommandFuture, Ctx};
use crate::args::{Args, invalid_argument};
use crate::error::CommandError;

/// Messages returned when `limit` is not given.
pub const DEFAULT_LIMIT: u64 = 50;
/// The largest `limit` accepted.
pub const MAX_LIMIT: u64 = 1000;

pub(super) fn history(ctx: Ctx<'_>, args: Args<'_>) -> Result<CommandFuture, CommandError> {
    let key = args.channel_key()?;
    let limit = match args.0.get("limit") {
        None | Some(Value::Null) => DEFAULT_LIMIT,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(limit @ 1..=MAX_LIMIT) => limit,
            _ => {
                return Err(invalid_argument(
                    "limit",
                    "must be an integer from 1 to 1000",
                ));
            }
        },
        Some(_) => {
            return Err(invalid_argument(
                "limit",
                "must be an integer from 1 to 1000",
            ));
        }
    };
    let timestamp = |field: &str| -> Result<_, CommandError> {
        args.opt_str(field)?
            .map(|text| {
                parse_timestamp(text).ok_or_else(|| {
                    invalid_argument(field, "must be an ISO 8601 / RFC 3339 timestamp")
                })
            })
            .transpose()
    };
    let query = HistoryQuery {
        limit: usize::try_from(limit).unwrap_or(usize::MAX),
        since: timestamp("since")?,
        until: timestamp("until")?,
        after_seq: args.opt_u64("after_seq", u64::MAX)?,
    };
    let from_oldest = query.after_seq.is_some();
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
            .ok_or(arqon_routing::RoutingError::ChannelNotFound { key: key.clone() })?;
        let storage = bus.storage();
        let stored = storage.history(&key, &query).await.map_err(|_| {
            CommandError::new(
                ErrorCode::StorageUnavailable,
                format!("history of {key} cannot be read right now"),
            )
        })?;
        // No reply may exceed the message size limit (SPEC §18): keep the
        // end the query starts from (the oldest after `after_seq`, else the
        // newest), as many as fit.
        let budget = bus.max_message_size().saturating_sub(REPLY_OVERHEAD);
        let (kept, truncated) = fit(&stored, budget, from_oldest);
        // Entries are the envelopes exactly as delivered; a stored frame
        // that does not parse (it cannot: the server wrote it) is skipped.
        let messages: Vec<Value> = kept
            .iter()
            .filter_map(|frame| serde_json::from_slice(frame).ok())
            .collect();
        let (epoch, last_seq) = bus.sequence(&channel).await;
        Ok(json!({
            "room": key.room(),
            "channel": key.channel(),
            "count": messages.len(),
            "messages": messages,
            "truncated": truncated,
            "backend": storage.status().backend,
            "epoch": &*epoch,
            "last_seq": last_seq,
        }))
    }))
}

/// The longest run of `frames` (oldest first) that fits in `budget` bytes
/// as a JSON array, taken from the oldest end or the newest; and whether
/// some were left out.
fn fit(frames: &[Bytes], budget: usize, from_oldest: bool) -> (&[Bytes], bool) {
    let mut size = 0;
    let mut fits = |frame: &Bytes| {
        size += frame.len() + 1;
        size <= budget
    };
    if from_oldest {
        let n = frames.iter().take_while(|frame| fits(frame)).count();
        (&frames[..n], n < frames.len())
    } else {
        let n = frames.iter().rev().take_while(|frame| fits(frame)).count();
        (&frames[frames.len() - n..], n < frames.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_the_end_the_query_starts_from() {
        let frames: Vec<Bytes> = (0..5).map(|i| Bytes::from(vec![b'0' + i; 9])).collect();
        // Each frame costs 10 bytes with its comma.
        let (kept, truncated) = fit(&frames, 30, true);
        assert_eq!((kept, truncated), (&frames[..3], true));
        let (kept, truncated) = fit(&frames, 30, false);
        assert_eq!((kept, truncated), (&frames[2..], true));
        let (kept, truncated) = fit(&frames, 50, false);
        assert_eq!((kept, truncated), (&frames[..], false));
        let (kept, truncated) = fit(&frames, 5, true);
        assert_eq!((kept.len(), truncated), (0, true));
    }
}
