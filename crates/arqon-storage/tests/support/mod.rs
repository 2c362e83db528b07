//! Test support: a throw-away `redis-server` on a free port (never the
//! shared one on 6379) that can be killed, paused and restarted on the same
//! port; a minimal RESP client to inspect it independently of the crate's
//! own client; entry builders and the history-semantics body shared by both
//! backends.
//!
//! Without `redis-server` on the PATH, Redis tests print
//! `skipping: redis-server not found` and pass, unless
//! `ARQONBUS_REQUIRE_REDIS=1`, in which case they fail.

#![allow(dead_code, clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use arqon_protocol::{ChannelKey, Timestamp};
use arqon_storage::{
    Entry, HistoryQuery, RedisTuning, Storage, StorageBackend, StorageConfig, StorageError,
    StorageMode,
};
use bytes::Bytes;
use chrono::{TimeZone, Utc};
use tokio::time::Instant;

pub use arqon_storage::testing::*;

// ---------------------------------------------------------------- storage

/// Redis storage settings for `url`.
pub fn redis_config(url: &str, mode: StorageMode) -> StorageConfig {
    StorageConfig {
        backend: StorageBackend::Redis,
        mode,
        redis_url: url.to_owned(),
        ..StorageConfig::default()
    }
}

/// Short timeouts and backoff so outage tests run quickly.
pub fn fast_tuning() -> RedisTuning {
    let mut tuning = RedisTuning::default();
    tuning.connect_timeout = Duration::from_millis(500);
    tuning.command_timeout = Duration::from_secs(2);
    tuning.backoff_initial = Duration::from_millis(20);
    tuning.backoff_max = Duration::from_millis(200);
    tuning.health_interval = Duration::from_millis(100);
    tuning
}

pub async fn open_redis(url: &str, mode: StorageMode) -> Storage {
    Storage::open_tuned(&redis_config(url, mode), fast_tuning())
        .await
        .expect("open redis storage")
}

pub fn key(room: &str, channel: &str) -> ChannelKey {
    ChannelKey::new(room, channel).unwrap()
}

/// A fixed time plus `ms` milliseconds.
pub fn at(ms: i64) -> Timestamp {
    Utc.timestamp_millis_opt(1_767_225_600_000 + ms)
        .single()
        .unwrap()
}

/// The frame of entry `seq` of `key` in `epoch`.
pub fn frame(key: &ChannelKey, epoch: &str, seq: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"type":"message","room":"{}","channel":"{}","seq":{seq},"epoch":"{epoch}","payload":{{"n":{seq}}}}}"#,
        key.room(),
        key.channel()
    ))
}

/// Entry `seq` of `key` in `epoch`, at `at(seq * 10)`.
pub fn entry(key: &ChannelKey, epoch: &str, seq: u64) -> Entry {
    Entry {
        key: key.clone(),
        seq,
        epoch: Arc::from(epoch),
        at: at(i64::try_from(seq).unwrap() * 10),
        frame: frame(key, epoch, seq),
    }
}

/// The `seq` of each frame (they are [`frame`]s).
pub fn seqs(frames: &[Bytes]) -> Vec<u64> {
    frames
        .iter()
        .map(|frame| {
            let text = std::str::from_utf8(frame).unwrap();
            let start = text.find(r#""seq":"#).unwrap() + 6;
            let end = start + text[start..].find(',').unwrap();
            text[start..end].parse().unwrap()
        })
        .collect()
}

/// Polls `condition` until it holds; fails after `limit` (a deadline for a
/// hang, not a timing assertion).
pub async fn eventually(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------- semantics

/// SPEC §5 history semantics, for any backend. Records channel `sem:a`
/// (seq 1..=20, message `n` at `at(n * 10)`) and `sem:b` (1..=3), then
/// checks every kind of query. `settle` runs between recording and reading
/// (e.g. a flush, to read from Redis rather than from the buffer).
pub async fn check_history_semantics<F, Fut>(storage: &Storage, settle: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let a = key("sem", "a");
    let b = key("sem", "b");
    for seq in 1..=20 {
        drop(storage.record(entry(&a, "ea", seq), false));
    }
    for seq in 1..=3 {
        drop(storage.record(entry(&b, "eb", seq), false));
    }
    settle().await;

    let history = |query: HistoryQuery| {
        let a = a.clone();
        async move { seqs(&storage.history(&a, &query).await.unwrap()) }
    };
    let range = |r: std::ops::RangeInclusive<u64>| r.collect::<Vec<u64>>();

    // The newest `limit`, oldest first.
    assert_eq!(history(HistoryQuery::newest(5)).await, range(16..=20));
    assert_eq!(history(HistoryQuery::newest(50)).await, range(1..=20));
    assert_eq!(history(HistoryQuery::default()).await, range(1..=20));
    assert!(history(HistoryQuery::newest(0)).await.is_empty());
    // With after_seq: the oldest `limit` after it.
    assert_eq!(history(HistoryQuery::after(5, 3)).await, [6, 7, 8]);
    assert_eq!(history(HistoryQuery::after(18, 10)).await, [19, 20]);
    assert!(history(HistoryQuery::after(20, 10)).await.is_empty());
    assert!(history(HistoryQuery::after(u64::MAX, 10)).await.is_empty());
    // since / until are exclusive bounds on the message time.
    let window = HistoryQuery {
        since: Some(at(50)),
        until: Some(at(100)),
        ..HistoryQuery::newest(50)
    };
    assert_eq!(history(window.clone()).await, range(6..=9));
    assert_eq!(
        history(HistoryQuery {
            limit: 2,
            ..window.clone()
        })
        .await,
        [8, 9]
    );
    assert_eq!(
        history(HistoryQuery {
            after_seq: Some(2),
            limit: 3,
            ..window
        })
        .await,
        [6, 7, 8]
    );
    assert_eq!(
        history(HistoryQuery {
            since: Some(at(195)),
            ..HistoryQuery::newest(50)
        })
        .await,
        [20]
    );
    assert_eq!(
        history(HistoryQuery {
            until: Some(at(15)),
            ..HistoryQuery::newest(50)
        })
        .await,
        [1]
    );
    // Frames come back byte for byte.
    let frames = storage.history(&a, &HistoryQuery::newest(1)).await.unwrap();
    assert_eq!(frames, [frame(&a, "ea", 20)]);
    // Channels are separate; an unknown channel has no history.
    assert_eq!(
        seqs(
            &storage
                .history(&b, &HistoryQuery::newest(50))
                .await
                .unwrap()
        ),
        [1, 2, 3]
    );
    match storage
        .history(&key("sem", "none"), &HistoryQuery::newest(50))
        .await
    {
        Ok(frames) => assert!(frames.is_empty()),
        // Redis down and nothing buffered for the channel: nothing is known.
        Err(StorageError::Unavailable { .. }) if storage.status().degraded => {}
        Err(error) => panic!("history of an unknown channel: {error}"),
    }
    assert_eq!(storage.count(&a).await, 20);
    assert_eq!(storage.count(&b).await, 3);
    assert_eq!(storage.count(&key("sem", "none")).await, 0);
}
