//! The writer task: drains the pending buffer into Redis, one pipeline per
//! batch, and owns reconnection.
//!
//! Per batch (up to `batch_size` operations, in buffer order), one
//! pipeline carries, in order: per channel (between deletes) one `EVAL` of
//! [`APPEND_SCRIPT`] with its run of entries; every `DEL` of a deleted
//! channel in its place. The script checks the channel's meta hash first
//! (the reset rule and the loss rule, below), then runs every `XADD …
//! <seq>-0`, `HSET meta epoch E last_seq S` and `EXPIRE`/`PERSIST` of both
//! keys.
//!
//! - **Reset**: a run that starts at `seq` 1 in an epoch the meta hash does
//!   not hold (or with no meta hash) starts the channel over: `DEL stream
//!   meta`, then the entries. Stale entries of an older epoch never mix
//!   with the new one, and stream ids stay increasing.
//! - **Loss** (SPEC §18): a run that starts after `seq` 1 while the meta
//!   hash is missing or holds another epoch, or holds this epoch with a
//!   `last_seq` below what this process already confirmed written, finds
//!   history that vanished behind the server's back (Redis restarted
//!   without persistence, keys expired). Nothing is written: the entries
//!   are dropped ([`Outcome::Lost`]) and [`StorageEvent::HistoryLost`]
//!   asks for a new epoch, whose `seq` 1 then resets the stream. Later
//!   entries of the lost epoch are dropped without a round trip.
//!
//! Every command is idempotent given the order, so a batch that fails
//! half-way is simply sent again: an `XADD` whose id is not above the
//! stream's top was written by an earlier attempt and counts as success,
//! and a retried reset finds its own epoch in the meta hash and does not
//! delete again.
//!
//! [`StorageEvent::HistoryLost`]: crate::StorageEvent::HistoryLost

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arqon_protocol::ChannelKey;
use fred::error::Error;
use fred::prelude::{Client, ClientLike, KeysInterface, Value};
use fred::types::Key;
use fred::types::{ClusterHash, CustomCommand};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::layout::{entry_id, meta_key, stream_key};
use crate::query::millis;
use crate::redis::conn::{self, Class, classify};
use crate::redis::shared::{BatchOp, Outcome, Shared};
use crate::redis::{RedisTuning, Settings};
use crate::types::{DegradedReason, Entry};

/// A batch that must be retried after reconnecting.
#[derive(Debug)]
struct Failure {
    reason: DegradedReason,
    error: Error,
}

/// Who a pipelined command belongs to.
#[derive(Debug, Clone)]
enum Owner {
    /// The batch operation at this index (a delete).
    Op(usize),
    /// One channel's run of writes in one epoch: the batch operations at
    /// these indices, the last one's `seq`.
    Run {
        key: ChannelKey,
        epoch: Arc<str>,
        indices: Vec<usize>,
        last_seq: u64,
    },
}

/// Appends one channel's run of entries (KEYS: stream, meta; ARGV: maxlen,
/// epoch, last seq, TTL seconds or 0, first seq, confirmed seq, then id,
/// envelope, ts per entry), then updates the meta hash and the keys' TTL:
/// one command per channel per batch instead of one per entry.
///
/// First the meta hash is checked (see the module docs): another epoch or
/// none, with a run starting at `seq` 1, resets both keys; with a run
/// starting later, or this epoch with `last_seq` below the confirmed seq
/// (ARGV[6], 0 when unknown), the history was lost: returns 0 and writes
/// nothing. Otherwise returns 1. An entry whose id is not above the
/// stream's top was written by an earlier attempt and is skipped; any other
/// error is returned as it is, after the entries before it.
pub(crate) static APPEND_SCRIPT: LazyLock<String> = LazyLock::new(|| {
    crate::layout::script(
        r"
local current = redis.pcall('HGET', KEYS[2], '$EPOCH')
if type(current) == 'table' then
  current = false
end
if current ~= ARGV[2] then
  if ARGV[5] ~= '1' then
    return 0
  end
  redis.call('DEL', KEYS[1], KEYS[2])
elseif (tonumber(redis.call('HGET', KEYS[2], '$LAST_SEQ') or '0') or 0) < tonumber(ARGV[6]) then
  return 0
end
local ttl = tonumber(ARGV[4])
for i = 7, #ARGV, 3 do
  local reply = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[i], '$ENVELOPE', ARGV[i + 1], '$TS', ARGV[i + 2])
  if type(reply) == 'table' and reply.err and not string.find(reply.err, 'equal or smaller', 1, true) then
    return reply
  end
end
-- Never move last_seq back: in a cluster another node may have gone further.
local last = tonumber(redis.call('HGET', KEYS[2], '$LAST_SEQ') or '0') or 0
redis.call('HSET', KEYS[2], '$EPOCH', ARGV[2], '$LAST_SEQ', math.max(last, tonumber(ARGV[3])))
$APPLY_TTL
return 1
",
    )
});

/// The writes of `ops` (which hold no delete) grouped by channel and epoch,
/// in order of first appearance, each group's indices (offset by `base`)
/// in buffer order.
fn channel_runs(ops: &[BatchOp], base: usize) -> Vec<(ChannelKey, Arc<str>, Vec<usize>)> {
    let mut runs: Vec<(ChannelKey, Arc<str>, Vec<usize>)> = Vec::new();
    let mut at: HashMap<(ChannelKey, Arc<str>), usize> = HashMap::new();
    for (offset, op) in ops.iter().enumerate() {
        let Some(entry) = op.entry() else { continue };
        let slot = *at
            .entry((entry.key.clone(), entry.epoch.clone()))
            .or_insert_with(|| {
                runs.push((entry.key.clone(), entry.epoch.clone(), Vec::new()));
                runs.len() - 1
            });
        runs[slot].2.push(base + offset);
    }
    runs
}

/// A pipeline that failed as a whole (not sent, timed out…): its replies
/// are short, and the first error says why.
fn whole_pipeline_failed<T>(results: Vec<Result<T, Error>>) -> Failure {
    let error = results
        .into_iter()
        .find_map(Result::err)
        .unwrap_or_else(|| Error::new(fred::error::ErrorKind::Protocol, "short pipeline reply"));
    let reason = match classify(&error) {
        Class::Retry(reason) => reason,
        Class::Duplicate | Class::Refused => DegradedReason::ServerError,
    };
    Failure { reason, error }
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    settings: Settings,
    config: fred::prelude::Config,
    cancel: CancellationToken,
    /// Where the writer's connections run their watcher and closing tasks.
    tasks: TaskTracker,
    /// Per channel, its epoch and the highest `seq` Redis confirmed
    /// written in it: Redis holding less means history was lost. Kept
    /// across reconnections (that is when a loss shows); forgotten on
    /// delete.
    confirmed: HashMap<ChannelKey, (Arc<str>, u64)>,
    /// Per channel, an epoch whose history was lost: its further entries
    /// are dropped without a round trip.
    lost: HashMap<ChannelKey, Arc<str>>,
    /// Consecutive failures, for the backoff.
    failures: u32,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        settings: Settings,
        config: fred::prelude::Config,
        cancel: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            shared,
            settings,
            config,
            cancel,
            tasks,
            confirmed: HashMap::new(),
            lost: HashMap::new(),
            failures: 0,
        }
    }

    fn tuning(&self) -> &RedisTuning {
        &self.settings.tuning
    }

    /// Runs until cancelled (the last `Storage` handle dropped).
    pub(crate) async fn run(mut self) {
        if self.shared.is_degraded() {
            self.failures = 1;
        }
        while !self.cancel.is_cancelled() {
            if self.shared.is_degraded() && !self.reconnect().await {
                continue;
            }
            let Some(link) = self.shared.link() else {
                self.degrade(DegradedReason::ConnectionLost, None);
                continue;
            };
            let batch = self.shared.take_batch(self.tuning().batch_size);
            if batch.is_empty() {
                self.idle(&link).await;
                continue;
            }
            let cancel = self.cancel.clone();
            let result = tokio::select! {
                () = cancel.cancelled() => break,
                // The socket closed: do not wait for the command timeout.
                () = link.lost.cancelled() => Err(Failure {
                    reason: DegradedReason::ConnectionLost,
                    error: Error::new(fred::error::ErrorKind::IO, "connection closed"),
                }),
                result = self.write(&link.client, &batch) => result,
            };
            match result {
                Ok(outcomes) => {
                    self.failures = 0;
                    self.shared.complete(&outcomes);
                }
                Err(failure) => self.degrade(failure.reason, Some(&failure.error)),
            }
        }
        if let Some(link) = self.shared.replace_link(None) {
            conn::close(link, &self.tasks);
        }
    }

    /// Waits for work. While idle, pings Redis now and then so that an
    /// outage shows in `status()` before the next write (a closed socket
    /// shows at once).
    async fn idle(&mut self, link: &conn::Link) {
        let interval = self.tuning().health_interval;
        tokio::select! {
            () = self.cancel.cancelled() => {}
            () = self.shared.wake.notified() => {}
            () = link.lost.cancelled() => {
                self.degrade(DegradedReason::ConnectionLost, None);
            }
            () = tokio::time::sleep(interval) => {
                let ping = tokio::select! {
                    () = link.lost.cancelled() => Err(Error::new(
                        fred::error::ErrorKind::IO,
                        "connection closed",
                    )),
                    result = link.client.ping::<Value>(None) => result,
                };
                if let Err(error) = ping
                    && let Class::Retry(reason) = classify(&error)
                {
                    self.degrade(reason, Some(&error));
                }
            }
        }
    }

    fn degrade(&mut self, reason: DegradedReason, error: Option<&Error>) {
        self.failures = self.failures.saturating_add(1);
        if self.shared.set_degraded(reason) {
            tracing::warn!(
                backend = "redis",
                reason = reason.as_str(),
                error = error.map(tracing::field::display),
                buffered = self.shared.status().buffered,
                "storage degraded: Redis unreachable, buffering writes in memory"
            );
        }
        if let Some(link) = self.shared.replace_link(None) {
            conn::close(link, &self.tasks);
        }
    }

    /// One reconnection attempt after the backoff delay. Returns whether
    /// Redis is back.
    async fn reconnect(&mut self) -> bool {
        let delay = backoff(self.tuning(), self.failures);
        tokio::select! {
            () = self.cancel.cancelled() => return false,
            () = tokio::time::sleep(delay) => {}
            () = self.shared.hurry.notified() => {}
        }
        match conn::connect(&self.config, &self.settings.tuning, &self.tasks).await {
            Ok(link) => {
                // Redis may have restarted with another configuration.
                let persistence = conn::persistence(&link.client).await;
                if self.shared.set_persistence(persistence) != persistence {
                    super::warn_about_persistence(persistence);
                }
                if let Some(old) = self.shared.replace_link(Some(link)) {
                    conn::close(old, &self.tasks);
                }
                self.shared.set_recovered();
                tracing::info!(
                    backend = "redis",
                    buffered = self.shared.status().buffered,
                    "storage recovered: Redis reachable again, flushing the buffer in order"
                );
                true
            }
            Err(error) => {
                self.failures = self.failures.saturating_add(1);
                tracing::debug!(
                    backend = "redis",
                    %error,
                    retry_in_ms = u64::try_from(backoff(self.tuning(), self.failures).as_millis())
                        .unwrap_or(u64::MAX),
                    "Redis still unreachable"
                );
                false
            }
        }
    }

    /// Writes one batch. `Ok` holds one outcome per operation.
    async fn write(&mut self, client: &Client, batch: &[BatchOp]) -> Result<Vec<Outcome>, Failure> {
        let settings = &self.settings;
        let pipeline = client.pipeline();
        let mut owners: Vec<Owner> = Vec::with_capacity(batch.len());
        let mut outcomes = vec![Outcome::Written; batch.len()];
        // Channels whose epoch is (found) lost in this batch.
        let mut lost_now: HashMap<ChannelKey, Arc<str>> = HashMap::new();

        let queued: Result<(), Error> = async {
            // Segments end at each delete, so that a channel's writes and
            // its deletion stay in order; within a segment a channel's
            // writes (already in `seq` order) go out as one script call.
            let mut start = 0;
            while start < batch.len() {
                let end = batch[start..]
                    .iter()
                    .position(|op| matches!(op, BatchOp::Delete(_)))
                    .map_or(batch.len(), |at| start + at);
                for (key, epoch, indices) in channel_runs(&batch[start..end], start) {
                    if self.lost.get(&key) == Some(&epoch) {
                        for &index in &indices {
                            outcomes[index] = Outcome::Lost;
                        }
                        lost_now.insert(key, epoch);
                        continue;
                    }
                    let entries: Vec<&Entry> = indices
                        .iter()
                        .filter_map(|&index| batch[index].entry())
                        .collect();
                    let first_seq = entries.first().map_or(0, |entry| entry.seq);
                    let last_seq = entries.last().map_or(0, |entry| entry.seq);
                    let confirmed = match self.confirmed.get(&key) {
                        Some((known, seq)) if *known == epoch => *seq,
                        _ => 0,
                    };
                    let stream = stream_key(&key);
                    let meta = meta_key(&key);
                    let mut args: Vec<Value> = Vec::with_capacity(9 + 3 * entries.len());
                    args.push(Value::from(APPEND_SCRIPT.as_str()));
                    args.push(Value::Integer(2));
                    args.push(Value::from(stream.as_str()));
                    args.push(Value::from(meta.as_str()));
                    args.push(Value::Integer(settings.stream_maxlen));
                    args.push(Value::from(&*epoch));
                    args.push(Value::Integer(i64::try_from(last_seq).unwrap_or(i64::MAX)));
                    args.push(Value::Integer(settings.ttl_secs.unwrap_or(0)));
                    args.push(Value::Integer(i64::try_from(first_seq).unwrap_or(i64::MAX)));
                    args.push(Value::Integer(i64::try_from(confirmed).unwrap_or(i64::MAX)));
                    for entry in entries {
                        args.push(Value::from(entry_id(entry.seq)));
                        args.push(Value::Bytes(entry.frame.clone()));
                        args.push(Value::Integer(millis(entry.at)));
                    }
                    // EVAL as a custom command: fred does not pipeline its
                    // scripting interface. The cluster slot is the first key's.
                    let eval = CustomCommand::new_static("EVAL", ClusterHash::Offset(2), false);
                    pipeline.custom::<(), _>(eval, args).await?;
                    owners.push(Owner::Run {
                        key,
                        epoch,
                        indices,
                        last_seq,
                    });
                }
                if let Some(BatchOp::Delete(key)) = batch.get(end) {
                    pipeline
                        .del::<(), _>(vec![Key::from(stream_key(key)), Key::from(meta_key(key))])
                        .await?;
                    owners.push(Owner::Op(end));
                }
                start = end + 1;
            }
            Ok(())
        }
        .await;
        if let Err(error) = queued {
            // Arguments that cannot be encoded: they never will be.
            tracing::error!(backend = "redis", %error, "cannot encode a storage batch; dropping it");
            return Ok(vec![Outcome::Failed; batch.len()]);
        }
        let results = if owners.is_empty() {
            Vec::new()
        } else {
            pipeline.try_all::<Value>().await
        };
        if results.len() != owners.len() {
            return Err(whole_pipeline_failed(results));
        }
        let mut refused = 0usize;
        // What Redis confirmed, applied once the whole batch is known good.
        let mut confirmed: Vec<(ChannelKey, Arc<str>, u64)> = Vec::new();
        let mut deleted: Vec<ChannelKey> = Vec::new();
        for (result, owner) in results.into_iter().zip(owners) {
            let error = match result {
                Ok(reply) => {
                    match owner {
                        Owner::Run {
                            key,
                            epoch,
                            indices,
                            ..
                        } if matches!(reply, Value::Integer(0)) => {
                            for index in indices {
                                outcomes[index] = Outcome::Lost;
                            }
                            lost_now.insert(key, epoch);
                        }
                        Owner::Run {
                            key,
                            epoch,
                            last_seq,
                            ..
                        } => confirmed.push((key, epoch, last_seq)),
                        Owner::Op(index) => deleted.push(batch[index].key().clone()),
                    }
                    continue;
                }
                Err(error) => error,
            };
            match classify(&error) {
                Class::Duplicate => {}
                Class::Retry(reason) => return Err(Failure { reason, error }),
                Class::Refused => {
                    refused += 1;
                    let channel = match &owner {
                        Owner::Op(index) => {
                            outcomes[*index] = Outcome::Failed;
                            batch[*index].key()
                        }
                        Owner::Run { key, indices, .. } => {
                            for &index in indices {
                                outcomes[index] = Outcome::Failed;
                            }
                            key
                        }
                    };
                    if refused == 1 {
                        tracing::error!(
                            backend = "redis",
                            %channel,
                            %error,
                            "Redis refused a history write; the entry is dropped"
                        );
                    }
                }
            }
        }
        for (key, epoch, seq) in confirmed {
            if self.lost.get(&key).is_some_and(|lost| *lost != epoch) {
                self.lost.remove(&key);
            }
            match self.confirmed.get_mut(&key) {
                Some((known, known_seq)) if *known == epoch => *known_seq = (*known_seq).max(seq),
                _ => {
                    self.confirmed.insert(key, (epoch, seq));
                }
            }
        }
        for key in deleted {
            self.confirmed.remove(&key);
            self.lost.remove(&key);
        }
        for (key, epoch) in lost_now {
            let dropped = outcomes
                .iter()
                .zip(batch)
                .filter(|(outcome, op)| {
                    **outcome == Outcome::Lost && op.entry().is_some_and(|entry| entry.key == key)
                })
                .count();
            if self.lost.get(&key) != Some(&epoch) {
                tracing::warn!(
                    backend = "redis",
                    channel = %key,
                    epoch = %epoch,
                    dropped,
                    "channel history lost in Redis (keys gone or behind what was written: \
                     a restart without persistence, or expiry); the channel starts a new epoch"
                );
                self.confirmed.remove(&key);
                self.lost.insert(key.clone(), epoch.clone());
            }
            self.shared.history_lost(&key, &epoch);
        }
        Ok(outcomes)
    }
}

/// `initial · 2^(failures-1)`, capped.
pub(crate) fn backoff(tuning: &RedisTuning, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    tuning
        .backoff_initial
        .saturating_mul(1u32 << exponent)
        .min(tuning.backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let tuning = RedisTuning::default();
        let delays: Vec<u128> = (1..=9).map(|n| backoff(&tuning, n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(backoff(&tuning, u32::MAX), Duration::from_secs(5));
    }
}
