//! The outage buffer is bounded (`ARQONBUS_STORAGE_BUFFER_MESSAGES`):
//! beyond it entries are dropped, counted in `status()`, never silently;
//! what was kept is written once Redis is back. A shutdown flush writes
//! everything pending, and says so when it cannot. A write Redis refuses
//! for good is dropped and counted without holding up the rest.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use arqon_storage::{Storage, StorageMode, Stored};
use support::{entry, eventually, fast_tuning, key, open_redis, redis_config, redis_server};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_is_counted_and_the_rest_is_written_later() {
    let Some(mut redis) = redis_server() else {
        return;
    };
    redis.kill();
    let mut config = redis_config(&redis.url(), StorageMode::Degraded);
    config.buffer_messages = 10;
    let storage = Storage::open_tuned(&config, fast_tuning()).await.unwrap();
    let chat = key("full", "chat");
    let mut results = Vec::new();
    for seq in 1..=15 {
        results.push(storage.record(entry(&chat, "e", seq), true));
    }
    let dropped = results
        .iter()
        .filter(|stored| matches!(stored, Stored::Dropped))
        .count();
    let buffered = results
        .iter()
        .filter(|stored| matches!(stored, Stored::Buffered))
        .count();
    assert_eq!((buffered, dropped), (10, 5));
    assert!(
        results[..10]
            .iter()
            .all(|stored| matches!(stored, Stored::Buffered))
    );
    let status = storage.status();
    assert_eq!(status.buffered, 10);
    assert_eq!(status.buffer_capacity, 10);
    assert_eq!(status.overflowed, 5);

    redis.restart();
    let report = storage.flush(WAIT).await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.overflowed, 5);
    assert_eq!(redis.int(&["XLEN", "arqonbus:{full:chat}:stream"]), 10);
    // Room again once written.
    assert!(matches!(
        storage.record(entry(&chat, "e", 16), false),
        Stored::Buffered
    ));
    assert_eq!(storage.status().overflowed, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_leaves_nothing_pending() {
    let Some(redis) = redis_server() else { return };
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    let channels: Vec<_> = (0..20).map(|n| key("flush", &format!("c{n}"))).collect();
    for seq in 1..=250 {
        for channel in &channels {
            drop(storage.record(entry(channel, "e", seq), false));
        }
    }
    let report = storage.flush(WAIT).await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(storage.status().buffered, 0);
    assert_eq!(storage.status().written, 5000);
    for n in 0..20 {
        let name = format!("arqonbus:{{flush:c{n}}}:stream");
        assert_eq!(redis.int(&["XLEN", &name]), 250, "{name}");
    }
    // Nothing left: a second flush has nothing to do.
    let again = storage.flush(WAIT).await;
    assert_eq!((again.written, again.remaining), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_retries_a_down_redis_until_its_deadline() {
    let Some(mut redis) = redis_server() else {
        return;
    };
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    redis.kill();
    eventually("degraded", WAIT, || storage.status().degraded).await;
    let chat = key("flush", "late");
    for seq in 1..=30 {
        drop(storage.record(entry(&chat, "e", seq), false));
    }
    // Still down: the flush gives up at its deadline and says what is left.
    let report = storage.flush(Duration::from_millis(300)).await;
    assert!(!report.is_complete());
    assert_eq!(report.remaining, 30);
    // Back: the flush catches up.
    redis.restart();
    let report = storage.flush(WAIT).await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.written, 30);
    assert_eq!(redis.int(&["XLEN", "arqonbus:{flush:late}:stream"]), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_flush_has_nothing_to_do() {
    let report = Storage::in_memory(5).flush(Duration::ZERO).await;
    assert!(report.is_complete());
    assert_eq!(report.written, 0);
}

/// A write Redis refuses for good (here: the stream key was replaced by a
/// string) is dropped and counted; it neither degrades storage nor blocks
/// the entries behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_is_dropped_without_blocking_the_buffer() {
    let Some(redis) = redis_server() else { return };
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    let broken = key("refused", "broken");
    let fine = key("refused", "fine");
    let Stored::Pending(ticket) = storage.record(entry(&broken, "e", 1), true) else {
        panic!("expected a ticket");
    };
    assert!(ticket.wait().await);
    redis.cmd(&["DEL", "arqonbus:{refused:broken}:stream"]);
    redis.cmd(&["SET", "arqonbus:{refused:broken}:stream", "not a stream"]);

    let Stored::Pending(refused) = storage.record(entry(&broken, "e", 2), true) else {
        panic!("expected a ticket");
    };
    let Stored::Pending(after) = storage.record(entry(&fine, "e", 1), true) else {
        panic!("expected a ticket");
    };
    assert!(!refused.wait().await, "a refused write is not durable");
    assert!(after.wait().await, "the next entry is written");
    let status = storage.status();
    assert_eq!(status.failed, 1);
    assert!(!status.degraded);
    assert_eq!(status.buffered, 0);
    assert_eq!(redis.int(&["XLEN", "arqonbus:{refused:fine}:stream"]), 1);
}
