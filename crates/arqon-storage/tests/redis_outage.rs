//! Redis outages (SPEC §7): in degraded mode the bus never stops; writes
//! are buffered, reported as degraded, and flushed in order once Redis is
//! back, so nothing recorded is missing or out of order. In strict mode
//! storage refuses to start without Redis and reports itself unavailable
//! during an outage.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use arqon_storage::{
    DegradedReason, HistoryQuery, StorageBackend, StorageError, StorageEvent, StorageMode, Stored,
};
use support::{
    durable_redis_server, entry, eventually, fast_tuning, key, open_redis, redis_config,
    redis_server, seqs,
};
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(20);

async fn next_event(events: &mut broadcast::Receiver<StorageEvent>) -> StorageEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("a storage event in time")
        .expect("event channel open")
}

fn stream_ids(redis: &support::RedisServer, name: &str) -> Vec<u64> {
    redis
        .xrange(name)
        .into_iter()
        .map(|(id, _)| id.strip_suffix("-0").unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_degraded_then_recovers_and_flushes_in_order() {
    let Some(mut redis) = redis_server() else {
        return;
    };
    redis.kill();
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    let status = storage.status();
    assert!(status.degraded, "{status:?}");
    assert!(!storage.is_available());
    assert!(
        storage.restore().await.is_empty(),
        "nothing to restore while degraded"
    );
    let mut events = storage.events();

    let chat = key("outage", "chat");
    for seq in 1..=50 {
        // Even with an ack asked for: Redis is down, the ack says stored:false.
        let stored = storage.record(entry(&chat, "e", seq), true);
        assert!(matches!(stored, Stored::Buffered), "{stored:?}");
    }
    assert_eq!(storage.status().buffered, 50);
    // History is served from the buffer meanwhile.
    let history = storage
        .history(&chat, &HistoryQuery::newest(10))
        .await
        .unwrap();
    assert_eq!(seqs(&history), (41..=50).collect::<Vec<_>>());

    redis.restart();
    assert_eq!(
        next_event(&mut events).await,
        StorageEvent::Recovered {
            backend: StorageBackend::Redis
        }
    );
    let report = storage.flush(WAIT).await;
    assert!(report.is_complete(), "{report:?}");
    assert!(storage.is_available());
    assert!(!storage.status().degraded);
    assert_eq!(
        stream_ids(&redis, "arqonbus:{outage:chat}:stream"),
        (1..=50).collect::<Vec<_>>()
    );
    assert_eq!(
        redis.hgetall("arqonbus:{outage:chat}:meta")["last_seq"],
        "50"
    );
}

/// 2000 entries with tickets; Redis is killed after the first third and
/// restarted after the second. Afterwards every entry is in the stream, in
/// `seq` order, without a gap, and every ticket has resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_mid_stream_loses_nothing() {
    let Some(mut redis) = durable_redis_server() else {
        return;
    };
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    let mut events = storage.events();
    let chat = key("crash", "chat");
    let mut tickets = Vec::new();
    let mut record = |seq: u64| match storage.record(entry(&chat, "e", seq), true) {
        Stored::Pending(ticket) => tickets.push((seq, ticket)),
        Stored::Buffered => {}
        other => panic!("seq {seq}: {other:?}"),
    };

    for seq in 1..=700 {
        record(seq);
        if seq % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    eventually("some writes before the crash", WAIT, || {
        storage.status().written > 0
    })
    .await;
    redis.kill();
    for seq in 701..=1400 {
        record(seq);
        if seq % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    match next_event(&mut events).await {
        StorageEvent::Degraded { backend, reason } => {
            assert_eq!(backend, StorageBackend::Redis);
            assert_ne!(reason, DegradedReason::ServerError);
        }
        other => panic!("expected Degraded, got {other:?}"),
    }
    assert!(storage.status().degraded);
    redis.restart();
    for seq in 1401..=2000 {
        record(seq);
        if seq % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }

    let report = storage.flush(WAIT).await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(
        stream_ids(&redis, "arqonbus:{crash:chat}:stream"),
        (1..=2000).collect::<Vec<_>>(),
        "every entry, in order, no gap"
    );
    let meta = redis.hgetall("arqonbus:{crash:chat}:meta");
    assert_eq!(meta["last_seq"], "2000");
    assert_eq!(meta["epoch"], "e");
    let status = storage.status();
    assert_eq!(
        (status.buffered, status.overflowed, status.failed),
        (0, 0, 0)
    );
    // Every ticket resolved: true ones were durable, false ones were
    // outstanding when Redis failed (and were written afterwards anyway).
    let mut durable = 0;
    for (seq, ticket) in tickets {
        let resolved = tokio::time::timeout(WAIT, ticket.wait()).await;
        if resolved.unwrap_or_else(|_| panic!("ticket {seq} never resolved")) {
            durable += 1;
        }
    }
    assert!(durable > 0, "some acks were stored:true");
}

/// A closed connection is noticed at once, not after a command timeout:
/// with timeouts and health pings far beyond the test's deadline, the
/// outage still shows, and storage recovers when Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_is_noticed_without_waiting_for_a_timeout() {
    // Durable: a Redis that lost seq 1 would make seq 2 a history loss.
    let Some(mut redis) = durable_redis_server() else {
        return;
    };
    let mut tuning = fast_tuning();
    tuning.command_timeout = Duration::from_secs(600);
    tuning.health_interval = Duration::from_secs(600);
    let config = redis_config(&redis.url(), StorageMode::Degraded);
    let storage = arqon_storage::Storage::open_tuned(&config, tuning)
        .await
        .unwrap();
    let chat = key("notice", "chat");
    let Stored::Pending(first) = storage.record(entry(&chat, "e", 1), true) else {
        panic!("healthy storage hands out tickets");
    };
    assert!(first.wait().await);
    redis.kill();
    eventually("degraded", WAIT, || storage.status().degraded).await;
    assert!(!storage.is_available());
    redis.restart();
    eventually("recovered", WAIT, || !storage.status().degraded).await;
    let Stored::Pending(second) = storage.record(entry(&chat, "e", 2), true) else {
        panic!("recovered storage hands out tickets");
    };
    assert!(tokio::time::timeout(WAIT, second.wait()).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_refuses_to_start_without_redis() {
    let Some(mut redis) = redis_server() else {
        return;
    };
    redis.kill();
    let config = redis_config(&redis.url(), StorageMode::Strict);
    let error = arqon_storage::Storage::open_tuned(&config, fast_tuning())
        .await
        .expect_err("strict storage cannot start without Redis");
    assert!(
        matches!(
            error,
            StorageError::Unavailable {
                backend: StorageBackend::Redis,
                source: Some(_)
            }
        ),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_is_unavailable_during_an_outage() {
    let Some(mut redis) = redis_server() else {
        return;
    };
    let storage = open_redis(&redis.url(), StorageMode::Strict).await;
    assert!(storage.is_available());
    assert_eq!(storage.status().mode, StorageMode::Strict);
    redis.kill();
    eventually("unavailable", WAIT, || !storage.is_available()).await;
    redis.restart();
    eventually("available again", WAIT, || storage.is_available()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_url_is_an_error_in_every_mode() {
    for mode in [StorageMode::Degraded, StorageMode::Strict] {
        let config = redis_config("redis://user:hunter2@[::1", mode);
        let error = arqon_storage::Storage::open_tuned(&config, fast_tuning())
            .await
            .expect_err("bad URL");
        let StorageError::InvalidUrl { url, .. } = &error else {
            panic!("{error:?}");
        };
        assert!(!url.contains("hunter2"), "{url}");
        assert!(!error.to_string().contains("hunter2"));
    }
}
