//! The writer task: drains the pending buffer into Redis, one pipeline per
//! batch, and owns reconnection.
//!
//! Per batch (up to `batch_size` operations, in buffer order):
//! 1. channels whose Redis epoch this process has not seen yet get one
//!    `HGET meta epoch` each, in one pipeline;
//! 2. one pipeline carries, in order: for a channel whose Redis epoch
//!    differs from the entry's (or is absent), `DEL stream meta` (the reset
//!    rule); per channel (between deletes) one `EVAL` of [`APPEND_SCRIPT`]
//!    with its run of entries: every `XADD … <seq>-0`, then `HSET meta epoch
//!    E last_seq S` and `EXPIRE`/`PERSIST` of both keys; every `DEL` of a
//!    deleted channel in its place.
//!
//! Every command is idempotent given the order, so a batch that fails
//! half-way is simply sent again: an `XADD` whose id is not above the
//! stream's top was written by the earlier attempt and counts as success.
//! What this process knows of Redis epochs is updated only after a batch is
//! confirmed, so a retried reset deletes again rather than appending to a
//! stale stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arqon_protocol::ChannelKey;
use fred::error::Error;
use fred::prelude::{Client, ClientLike, HashesInterface, KeysInterface, Value};
use fred::types::Key;
use fred::types::{ClusterHash, CustomCommand};
use tokio_util::sync::CancellationToken;

use crate::query::millis;
use crate::redis::conn::{self, Class, classify};
use crate::redis::keys::{FIELD_EPOCH, entry_id, meta_key, stream_key};
use crate::redis::shared::{BatchOp, Outcome, Shared};
use crate::redis::{RedisTuning, Settings};
use crate::types::DegradedReason;

/// A batch that must be retried after reconnecting.
#[derive(Debug)]
struct Failure {
    reason: DegradedReason,
    error: Error,
}

/// Who a pipelined command belongs to.
#[derive(Debug, Clone)]
enum Owner {
    /// The batch operation at this index.
    Op(usize),
    /// The batch operations at these indices (one channel's run of writes).
    Ops(Vec<usize>),
    /// Bookkeeping (reset, meta, TTL) of this channel.
    Channel(ChannelKey),
}

/// Appends one channel's run of entries (KEYS: stream, meta; ARGV: maxlen,
/// epoch, last seq, TTL seconds or 0, then id, envelope, ts per entry),
/// then updates the meta hash and the keys' TTL: one command per channel
/// per batch instead of one per entry. An entry whose id is not above the
/// stream's top was written by an earlier attempt and is skipped; any other
/// error is returned as it is, after the entries before it.
const APPEND_SCRIPT: &str = r"
local ttl = tonumber(ARGV[4])
for i = 5, #ARGV, 3 do
  local reply = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[i], 'envelope', ARGV[i + 1], 'ts', ARGV[i + 2])
  if type(reply) == 'table' and reply.err and not string.find(reply.err, 'equal or smaller', 1, true) then
    return reply
  end
end
-- Never move last_seq back: in a cluster another node may have gone further.
local last = tonumber(redis.call('HGET', KEYS[2], 'last_seq') or '0') or 0
redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'last_seq', math.max(last, tonumber(ARGV[3])))
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
return 1
";

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
    /// The epoch of each channel's meta hash in Redis, as far as this
    /// process has confirmed it.
    known: HashMap<ChannelKey, Arc<str>>,
    /// Consecutive failures, for the backoff.
    failures: u32,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        settings: Settings,
        config: fred::prelude::Config,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            shared,
            settings,
            config,
            cancel,
            known: HashMap::new(),
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
            conn::close(link);
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
            conn::close(link);
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
        match conn::connect(&self.config, &self.settings.tuning).await {
            Ok(link) => {
                if let Some(old) = self.shared.replace_link(Some(link)) {
                    conn::close(old);
                }
                // Redis may have lost data or changed meanwhile (a restart
                // without persistence, another writer): check epochs again.
                self.known.clear();
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
        let mut state = self.redis_epochs(client, batch).await?;
        let settings = &self.settings;
        let pipeline = client.pipeline();
        let mut owners: Vec<Owner> = Vec::with_capacity(batch.len() + 8);

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
                    let stream = stream_key(&key);
                    let meta = meta_key(&key);
                    let current = state.get(&key).cloned().flatten();
                    if current.as_deref() != Some(&*epoch) {
                        // The reset rule: another epoch's history (or
                        // none) is there; start the channel over.
                        pipeline
                            .del::<(), _>(vec![
                                Key::from(stream.as_str()),
                                Key::from(meta.as_str()),
                            ])
                            .await?;
                        owners.push(Owner::Channel(key.clone()));
                        state.insert(key.clone(), Some(epoch.clone()));
                    }
                    let mut args: Vec<Value> = Vec::with_capacity(8 + 3 * indices.len());
                    args.push(Value::from(APPEND_SCRIPT));
                    args.push(Value::Integer(2));
                    args.push(Value::from(stream.as_str()));
                    args.push(Value::from(meta.as_str()));
                    let last_seq = indices
                        .last()
                        .and_then(|&index| batch[index].entry())
                        .map_or(0, |entry| entry.seq);
                    args.push(Value::Integer(settings.stream_maxlen));
                    args.push(Value::from(&*epoch));
                    args.push(Value::Integer(i64::try_from(last_seq).unwrap_or(i64::MAX)));
                    args.push(Value::Integer(settings.ttl_secs.unwrap_or(0)));
                    for entry in indices.iter().filter_map(|&index| batch[index].entry()) {
                        args.push(Value::from(entry_id(entry.seq)));
                        args.push(Value::Bytes(entry.frame.clone()));
                        args.push(Value::Integer(millis(entry.at)));
                    }
                    // EVAL as a custom command: fred does not pipeline its
                    // scripting interface. The cluster slot is the first key's.
                    let eval = CustomCommand::new_static("EVAL", ClusterHash::Offset(2), false);
                    pipeline.custom::<(), _>(eval, args).await?;
                    owners.push(Owner::Ops(indices));
                }
                if let Some(BatchOp::Delete(key)) = batch.get(end) {
                    pipeline
                        .del::<(), _>(vec![Key::from(stream_key(key)), Key::from(meta_key(key))])
                        .await?;
                    owners.push(Owner::Op(end));
                    state.insert(key.clone(), None);
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
        let results = pipeline.try_all::<Value>().await;
        let mut outcomes = vec![Outcome::Written; batch.len()];
        if results.len() != owners.len() {
            return Err(whole_pipeline_failed(results));
        }
        let mut refused = 0usize;
        for (result, owner) in results.into_iter().zip(&owners) {
            let Err(error) = result else { continue };
            match classify(&error) {
                Class::Duplicate => {}
                Class::Retry(reason) => return Err(Failure { reason, error }),
                Class::Refused => {
                    refused += 1;
                    let channel = match owner {
                        Owner::Op(index) => {
                            outcomes[*index] = Outcome::Failed;
                            batch[*index].key()
                        }
                        Owner::Ops(indices) => {
                            for &index in indices {
                                outcomes[index] = Outcome::Failed;
                            }
                            indices
                                .first()
                                .map_or(&batch[0], |&index| &batch[index])
                                .key()
                        }
                        Owner::Channel(key) => key,
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
        for (key, epoch) in state {
            match epoch {
                Some(epoch) => {
                    self.known.insert(key, epoch);
                }
                None => {
                    self.known.remove(&key);
                }
            }
        }
        Ok(outcomes)
    }

    /// The Redis epoch of every channel of `batch`: what this process knows,
    /// and for the others one `HGET` each, pipelined. `None` = no meta hash
    /// (or an unreadable one).
    async fn redis_epochs(
        &self,
        client: &Client,
        batch: &[BatchOp],
    ) -> Result<HashMap<ChannelKey, Option<Arc<str>>>, Failure> {
        let mut state: HashMap<ChannelKey, Option<Arc<str>>> = HashMap::new();
        let mut unknown: Vec<ChannelKey> = Vec::new();
        for op in batch {
            let key = op.key();
            if state.contains_key(key) || unknown.contains(key) {
                continue;
            }
            match self.known.get(key) {
                Some(epoch) => {
                    state.insert(key.clone(), Some(epoch.clone()));
                }
                // A channel deleted before any write in this batch needs no
                // lookup: the delete decides.
                None if matches!(op, BatchOp::Delete(_)) => {
                    state.insert(key.clone(), None);
                }
                None => unknown.push(key.clone()),
            }
        }
        if unknown.is_empty() {
            return Ok(state);
        }
        let pipeline = client.pipeline();
        for key in &unknown {
            if let Err(error) = pipeline.hget::<(), _, _>(meta_key(key), FIELD_EPOCH).await {
                return Err(Failure {
                    reason: DegradedReason::ServerError,
                    error,
                });
            }
        }
        let results = pipeline.try_all::<Option<String>>().await;
        if results.len() != unknown.len() {
            return Err(whole_pipeline_failed(results));
        }
        for (key, result) in unknown.into_iter().zip(results) {
            let epoch = match result {
                Ok(epoch) => epoch.map(Arc::from),
                Err(error) => match classify(&error) {
                    Class::Retry(reason) => return Err(Failure { reason, error }),
                    // Not a hash: reset it.
                    Class::Duplicate | Class::Refused => None,
                },
            };
            state.insert(key, epoch);
        }
        Ok(state)
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
