//! The Redis layout of SPEC §7, checked with an independent client: one
//! stream per channel with entry ids `<seq>-0` and the delivered envelope in
//! field `envelope`; a meta hash with `epoch` and `last_seq`; TTL on both;
//! `restore` finds them after a restart (and never reuses a `seq`); a new
//! epoch resets the channel; delete removes it; a retried write never
//! duplicates.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use arqon_storage::{HistoryQuery, RestoredChannel, Storage, StorageMode, Stored};
use support::{entry, fast_tuning, frame, key, open_redis, redis_config, redis_server, seqs};

const FLUSH: Duration = Duration::from_secs(10);

async fn flushed(storage: &Storage) {
    let report = storage.flush(FLUSH).await;
    assert!(report.is_complete(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_land_in_the_stream_with_seq_ids_and_the_frame() {
    let Some(redis) = redis_server() else { return };
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    let chat = key("lobby", "chat");
    for seq in 1..=5 {
        drop(storage.record(entry(&chat, "e1", seq), false));
    }
    flushed(&storage).await;

    let stream = redis.xrange("arqonbus:{lobby:chat}:stream");
    let ids: Vec<&str> = stream.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["1-0", "2-0", "3-0", "4-0", "5-0"]);
    for (seq, (_, fields)) in (1..).zip(&stream) {
        assert_eq!(fields["envelope"], frame(&chat, "e1", seq).to_vec());
        let ts: i64 = String::from_utf8(fields["ts"].clone())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(ts, entry(&chat, "e1", seq).at.timestamp_millis());
    }
    let meta = redis.hgetall("arqonbus:{lobby:chat}:meta");
    assert_eq!(meta["epoch"], "e1");
    assert_eq!(meta["last_seq"], "5");
    // Default TTL: 86400 s on both keys.
    for name in ["arqonbus:{lobby:chat}:stream", "arqonbus:{lobby:chat}:meta"] {
        let ttl = redis.int(&["TTL", name]);
        assert!((86_000..=86_400).contains(&ttl), "{name}: TTL {ttl}");
    }
    assert_eq!(storage.count(&chat).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ttl_means_the_keys_persist_and_maxlen_trims() {
    let Some(redis) = redis_server() else { return };
    let mut config = redis_config(&redis.url(), StorageMode::Degraded);
    config.history_ttl = None;
    config.redis_stream_maxlen = 10;
    let storage = Storage::open_tuned(&config, fast_tuning()).await.unwrap();
    let chat = key("trim", "chat");
    for seq in 1..=1000 {
        drop(storage.record(entry(&chat, "e", seq), false));
    }
    flushed(&storage).await;
    assert_eq!(redis.int(&["TTL", "arqonbus:{trim:chat}:stream"]), -1);
    assert_eq!(redis.int(&["TTL", "arqonbus:{trim:chat}:meta"]), -1);
    // `MAXLEN ~ 10`: trimmed by whole macro nodes, so roughly, never below 10.
    let len = redis.int(&["XLEN", "arqonbus:{trim:chat}:stream"]);
    assert!((10..1000).contains(&len), "XLEN {len}");
    let newest = storage
        .history(&chat, &HistoryQuery::newest(3))
        .await
        .unwrap();
    assert_eq!(seqs(&newest), [998, 999, 1000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_finds_channels_after_a_restart() {
    let Some(redis) = redis_server() else { return };
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    let (a, b) = (key("r1", "a"), key("r2", "b"));
    for seq in 1..=7 {
        drop(storage.record(entry(&a, "epoch-a", seq), false));
    }
    for seq in 1..=2 {
        drop(storage.record(entry(&b, "epoch-b", seq), false));
    }
    flushed(&storage).await;
    drop(storage);

    // A new process: same Redis.
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    let restored = storage.restore().await;
    assert_eq!(
        restored,
        [
            RestoredChannel {
                key: a.clone(),
                epoch: "epoch-a".to_owned(),
                last_seq: 7
            },
            RestoredChannel {
                key: b.clone(),
                epoch: "epoch-b".to_owned(),
                last_seq: 2
            },
        ]
    );
    // The router continues at seq 8 in the same epoch: one stream, no reset.
    drop(storage.record(entry(&a, "epoch-a", 8), false));
    flushed(&storage).await;
    let history = storage
        .history(&a, &HistoryQuery::newest(50))
        .await
        .unwrap();
    assert_eq!(seqs(&history), (1..=8).collect::<Vec<_>>());
    assert_eq!(
        redis.hgetall("arqonbus:{r1:a}:meta")["last_seq"],
        "8".to_owned()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_is_empty_for_memory_and_fresh_redis() {
    assert!(Storage::in_memory(10).restore().await.is_empty());
    let Some(redis) = redis_server() else { return };
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    assert!(storage.restore().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_epoch_resets_the_channel() {
    let Some(redis) = redis_server() else { return };
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    let chat = key("reset", "chat");
    for seq in 1..=9 {
        drop(storage.record(entry(&chat, "old", seq), false));
    }
    flushed(&storage).await;
    drop(storage);

    // Restarted without restoring the channel (say Redis was down then):
    // the router started it fresh, with a new epoch and seq 1.
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    for seq in 1..=3 {
        drop(storage.record(entry(&chat, "new", seq), false));
    }
    flushed(&storage).await;
    let ids: Vec<String> = redis
        .xrange("arqonbus:{reset:chat}:stream")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["1-0", "2-0", "3-0"]);
    let meta = redis.hgetall("arqonbus:{reset:chat}:meta");
    assert_eq!(meta["epoch"], "new");
    assert_eq!(meta["last_seq"], "3");
    let history = storage
        .history(&chat, &HistoryQuery::newest(50))
        .await
        .unwrap();
    assert_eq!(history, [1, 2, 3].map(|seq| frame(&chat, "new", seq)));

    // The same within one process: the channel was deleted and re-created.
    storage.delete(&chat);
    for seq in 1..=2 {
        drop(storage.record(entry(&chat, "newer", seq), false));
    }
    flushed(&storage).await;
    let meta = redis.hgetall("arqonbus:{reset:chat}:meta");
    assert_eq!(meta["epoch"], "newer");
    assert_eq!(redis.int(&["XLEN", "arqonbus:{reset:chat}:stream"]), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_both_keys_after_earlier_writes() {
    let Some(redis) = redis_server() else { return };
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    let gone = key("del", "gone");
    let kept = key("del", "kept");
    for seq in 1..=4 {
        drop(storage.record(entry(&gone, "e", seq), false));
        drop(storage.record(entry(&kept, "e", seq), false));
    }
    storage.delete(&gone);
    flushed(&storage).await;
    assert_eq!(
        redis.int(&[
            "EXISTS",
            "arqonbus:{del:gone}:stream",
            "arqonbus:{del:gone}:meta"
        ]),
        0
    );
    assert_eq!(redis.int(&["XLEN", "arqonbus:{del:kept}:stream"]), 4);
    assert!(
        storage
            .history(&gone, &HistoryQuery::newest(10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(storage.count(&gone).await, 0);
}

/// A process that restarts and re-sends entries Redis already has (as a
/// retried batch does) neither fails nor duplicates them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_entries_never_duplicates() {
    let Some(redis) = redis_server() else { return };
    let chat = key("dup", "chat");
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    for seq in 1..=5 {
        drop(storage.record(entry(&chat, "e", seq), false));
    }
    flushed(&storage).await;
    drop(storage);

    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    storage.restore().await;
    let mut tickets = Vec::new();
    for seq in 3..=7 {
        match storage.record(entry(&chat, "e", seq), true) {
            Stored::Pending(ticket) => tickets.push(ticket),
            other => panic!("expected a ticket, got {other:?}"),
        }
    }
    for ticket in tickets {
        assert!(ticket.wait().await, "a re-sent entry counts as written");
    }
    let ids: Vec<String> = redis
        .xrange("arqonbus:{dup:chat}:stream")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["1-0", "2-0", "3-0", "4-0", "5-0", "6-0", "7-0"]);
    assert_eq!(storage.status().failed, 0);
}

/// A crash between the stream writes and the meta update leaves `last_seq`
/// behind the stream; restore still continues past every id in use, so no
/// new message is mistaken for an already-written one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_continues_past_the_stream_top() {
    let Some(redis) = redis_server() else { return };
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    let chat = key("behind", "chat");
    for seq in 1..=6 {
        drop(storage.record(entry(&chat, "e", seq), false));
    }
    flushed(&storage).await;
    drop(storage);
    redis.cmd(&["HSET", "arqonbus:{behind:chat}:meta", "last_seq", "4"]);

    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    let restored = storage.restore().await;
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0].last_seq, 6);
}
