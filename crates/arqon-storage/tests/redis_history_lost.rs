//! Redis history lost behind the server's back (SPEC §7, §18): when a
//! channel's keys vanish (Redis restarted without persistence, keys deleted
//! or expired) or fall behind what storage confirmed, storage writes
//! nothing more under the old epoch and reports
//! [`StorageEvent::HistoryLost`]; entries of a new epoch then start the
//! stream over at `seq` 1. And at connection, storage reports how Redis
//! persists (`aof`, `rdb`, `none`).

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use arqon_storage::{HistoryQuery, Persistence, Storage, StorageEvent, StorageMode, Stored};
use support::{durable_redis_server, entry, eventually, key, open_redis, redis_server, seqs};
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(20);

/// The next `HistoryLost`, skipping health events.
async fn next_loss(events: &mut broadcast::Receiver<StorageEvent>) -> StorageEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.recv().await.expect("event channel open");
            if let StorageEvent::HistoryLost { .. } = event {
                return event;
            }
        }
    })
    .await
    .expect("a HistoryLost event in time")
}

fn stream_ids(redis: &support::RedisServer, name: &str) -> Vec<u64> {
    redis
        .xrange(name)
        .into_iter()
        .map(|(id, _)| id.strip_suffix("-0").unwrap().parse().unwrap())
        .collect()
}

async fn record_durably(
    storage: &Storage,
    entries: impl IntoIterator<Item = arqon_storage::Entry>,
) {
    let mut tickets = Vec::new();
    for entry in entries {
        match storage.record(entry, true) {
            Stored::Pending(ticket) => tickets.push(ticket),
            other => panic!("healthy storage hands out tickets: {other:?}"),
        }
    }
    for ticket in tickets {
        assert!(
            tokio::time::timeout(WAIT, ticket.wait()).await.unwrap(),
            "stored:true"
        );
    }
}

/// 400 entries acked `stored: true`, then Redis restarts without
/// persistence: the next entries of the old epoch are not written (the
/// history they would continue is gone), a `HistoryLost` names the channel
/// and the old epoch, and once the channel starts a new epoch its entries
/// land from `seq` 1, with history returning only them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_without_persistence_starts_a_new_epoch() {
    let Some(mut redis) = redis_server() else {
        return;
    };
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    let mut events = storage.events();
    let chat = key("amnesia", "chat");
    record_durably(&storage, (1..=400).map(|seq| entry(&chat, "old", seq))).await;
    assert_eq!(
        stream_ids(&redis, "arqonbus:{amnesia:chat}:stream").len(),
        400
    );

    redis.kill();
    eventually("degraded", WAIT, || storage.status().degraded).await;
    redis.restart();
    eventually("recovered", WAIT, || !storage.status().degraded).await;
    for seq in 401..=405 {
        drop(storage.record(entry(&chat, "old", seq), true));
    }
    let event = next_loss(&mut events).await;
    assert_eq!(
        event,
        StorageEvent::HistoryLost {
            key: chat.clone(),
            epoch: Arc::from("old"),
        }
    );
    assert!(storage.flush(WAIT).await.is_complete());
    // Nothing of the old epoch was written over the void.
    assert!(stream_ids(&redis, "arqonbus:{amnesia:chat}:stream").is_empty());
    assert!(redis.hgetall("arqonbus:{amnesia:chat}:meta").is_empty());

    // The router starts a new epoch: seq 1 again.
    record_durably(&storage, (1..=3).map(|seq| entry(&chat, "new", seq))).await;
    assert_eq!(
        stream_ids(&redis, "arqonbus:{amnesia:chat}:stream"),
        [1, 2, 3]
    );
    let meta = redis.hgetall("arqonbus:{amnesia:chat}:meta");
    assert_eq!(
        (meta["epoch"].as_str(), meta["last_seq"].as_str()),
        ("new", "3")
    );
    let history = storage
        .history(&chat, &HistoryQuery::newest(50))
        .await
        .unwrap();
    assert_eq!(seqs(&history), [1, 2, 3]);
    assert!(history.iter().all(|frame| {
        std::str::from_utf8(frame)
            .unwrap()
            .contains(r#""epoch":"new""#)
    }));
    let status = storage.status();
    assert_eq!((status.failed, status.buffered), (0, 0), "{status:?}");
}

/// Without any reconnection: keys deleted by hand, or a meta hash behind
/// what storage confirmed (as a Redis restarted from an older snapshot
/// would be), are losses too; a new epoch's `seq` 1 deletes the stale
/// stream so that ids keep increasing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_or_older_keys_are_losses_and_seq_one_resets_the_stream() {
    let Some(redis) = redis_server() else {
        return;
    };
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    let mut events = storage.events();
    let stream = "arqonbus:{gone:chat}:stream";
    let meta = "arqonbus:{gone:chat}:meta";
    let chat = key("gone", "chat");

    // Keys deleted behind the server's back.
    record_durably(&storage, (1..=10).map(|seq| entry(&chat, "a", seq))).await;
    assert_eq!(redis.int(&["DEL", stream, meta]), 2);
    drop(storage.record(entry(&chat, "a", 11), true));
    assert_eq!(
        next_loss(&mut events).await,
        StorageEvent::HistoryLost {
            key: chat.clone(),
            epoch: Arc::from("a"),
        }
    );
    assert!(storage.flush(WAIT).await.is_complete());
    assert!(stream_ids(&redis, stream).is_empty());

    // A new epoch; then Redis goes back to an older state of it.
    record_durably(&storage, (1..=10).map(|seq| entry(&chat, "b", seq))).await;
    assert_eq!(redis.int(&["HSET", meta, "last_seq", "6"]), 0);
    assert_eq!(redis.int(&["XTRIM", stream, "MAXLEN", "6"]), 4);
    drop(storage.record(entry(&chat, "b", 11), true));
    assert_eq!(
        next_loss(&mut events).await,
        StorageEvent::HistoryLost {
            key: chat.clone(),
            epoch: Arc::from("b"),
        }
    );
    assert!(storage.flush(WAIT).await.is_complete());
    // Nothing written past what Redis holds (XTRIM kept the newest six).
    assert_eq!(stream_ids(&redis, stream), (5..=10).collect::<Vec<_>>());

    // The next epoch's first entry replaces the stale stream.
    record_durably(&storage, (1..=2).map(|seq| entry(&chat, "c", seq))).await;
    assert_eq!(stream_ids(&redis, stream), [1, 2]);
    assert_eq!(redis.hgetall(meta)["epoch"], "c");
    let history = storage
        .history(&chat, &HistoryQuery::newest(50))
        .await
        .unwrap();
    assert_eq!(seqs(&history), [1, 2]);
}

/// A restart with persistence keeps history: no loss, the epoch goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_with_its_data_loses_nothing() {
    let Some(mut redis) = durable_redis_server() else {
        return;
    };
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    let mut events = storage.events();
    let chat = key("durable", "chat");
    record_durably(&storage, (1..=20).map(|seq| entry(&chat, "e", seq))).await;
    redis.kill();
    eventually("degraded", WAIT, || storage.status().degraded).await;
    redis.restart();
    eventually("recovered", WAIT, || !storage.status().degraded).await;
    record_durably(&storage, (21..=25).map(|seq| entry(&chat, "e", seq))).await;
    assert_eq!(
        stream_ids(&redis, "arqonbus:{durable:chat}:stream"),
        (1..=25).collect::<Vec<_>>()
    );
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, StorageEvent::HistoryLost { .. }),
            "{event:?}"
        );
    }
}

/// `status().persistence` says how Redis keeps data across its restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistence_is_detected_at_connection() {
    let Some(plain) = redis_server() else {
        return;
    };
    let storage = open_redis(&plain.url(), StorageMode::Degraded).await;
    assert_eq!(storage.status().persistence, Some(Persistence::None));
    drop(storage);
    // Snapshots configured: rdb.
    assert_eq!(plain.cmd(&["CONFIG", "SET", "save", "3600 1"]).text(), "OK");
    let storage = open_redis(&plain.url(), StorageMode::Degraded).await;
    assert_eq!(storage.status().persistence, Some(Persistence::Rdb));
    drop(storage);

    let Some(durable) = durable_redis_server() else {
        return;
    };
    let storage = open_redis(&durable.url(), StorageMode::Degraded).await;
    let status = storage.status();
    assert_eq!(status.persistence, Some(Persistence::Aof));
    assert_eq!(status.persistence.map(Persistence::as_str), Some("aof"));
}
