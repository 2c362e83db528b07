//! `history`: a channel's stored messages (SPEC §5, §7).

use arqon_protocol::{ErrorCode, parse_timestamp};
use arqon_storage::HistoryQuery;
use serde_json::{Value, json};

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
        // Entries are the envelopes exactly as delivered; a stored frame
        // that does not parse (it cannot: the server wrote it) is skipped.
        let messages: Vec<Value> = stored
            .iter()
            .filter_map(|frame| serde_json::from_slice(frame).ok())
            .collect();
        let (epoch, last_seq) = bus.sequence(&channel).await;
        Ok(json!({
            "room": key.room(),
            "channel": key.channel(),
            "count": messages.len(),
            "messages": messages,
            "backend": storage.status().backend,
            "epoch": &*epoch,
            "last_seq": last_seq,
        }))
    }))
}
