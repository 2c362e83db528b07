//! Store tickets (SPEC §4.3 `stored`): a ticket resolves `true` only once
//! its entry is in the stream; when Redis fails first it resolves `false`
//! promptly (the ack cannot wait for the outage), and the entry is still
//! written once Redis answers again.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use arqon_storage::{Storage, StorageMode, Stored};
use support::{entry, fast_tuning, key, open_redis, redis_config, redis_server};

const WAIT: Duration = Duration::from_secs(20);

fn ticket(stored: Stored) -> arqon_storage::StoreTicket {
    match stored {
        Stored::Pending(ticket) => ticket,
        other => panic!("expected a ticket, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_resolves_true_only_after_the_write() {
    let Some(redis) = redis_server() else { return };
    let mut tuning = fast_tuning();
    tuning.command_timeout = Duration::from_secs(30); // the pause must not look like an outage
    tuning.health_interval = Duration::from_secs(30);
    let storage = Storage::open_tuned(&redis_config(&redis.url(), StorageMode::Degraded), tuning)
        .await
        .unwrap();
    let chat = key("ticket", "chat");

    // Redis frozen: the write cannot complete, so neither can the ticket.
    redis.pause();
    let mut wait = Box::pin(ticket(storage.record(entry(&chat, "e", 1), true)).wait());
    let early = tokio::time::timeout(Duration::from_millis(300), &mut wait).await;
    assert!(early.is_err(), "ticket resolved while Redis was frozen");
    assert_eq!(storage.status().buffered, 1);
    redis.resume();

    assert!(tokio::time::timeout(WAIT, wait).await.expect("resolves"));
    // Resolved: the entry is in the stream already.
    let stream = redis.xrange("arqonbus:{ticket:chat}:stream");
    assert_eq!(stream.len(), 1);
    assert_eq!(stream[0].0, "1-0");

    // And in the healthy steady state, every ticket resolves true.
    let tickets: Vec<_> = (2..=200)
        .map(|seq| ticket(storage.record(entry(&chat, "e", seq), true)))
        .collect();
    for ticket in tickets {
        assert!(ticket.wait().await);
    }
    assert_eq!(redis.int(&["XLEN", "arqonbus:{ticket:chat}:stream"]), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_resolve_false_when_redis_fails_and_the_entries_still_land() {
    let Some(redis) = redis_server() else { return };
    let mut tuning = fast_tuning();
    tuning.command_timeout = Duration::from_millis(300);
    let storage = Storage::open_tuned(&redis_config(&redis.url(), StorageMode::Degraded), tuning)
        .await
        .unwrap();
    let chat = key("ticket", "late");
    redis.pause();
    let tickets: Vec<_> = (1..=10)
        .map(|seq| ticket(storage.record(entry(&chat, "e", seq), true)))
        .collect();
    for ticket in tickets {
        let durable = tokio::time::timeout(WAIT, ticket.wait())
            .await
            .expect("a ticket resolves even while Redis hangs");
        assert!(!durable, "nothing can be durable in a frozen Redis");
    }
    assert!(storage.status().degraded);
    // While degraded, no ticket is handed out: the ack says stored:false.
    assert!(matches!(
        storage.record(entry(&chat, "e", 11), true),
        Stored::Buffered
    ));
    redis.resume();
    let report = storage.flush(WAIT).await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(redis.int(&["XLEN", "arqonbus:{ticket:late}:stream"]), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_storage_is_durable_at_once() {
    let storage = Storage::in_memory(10);
    let stored = storage.record(entry(&key("mem", "chat"), "e", 1), true);
    assert!(matches!(stored, Stored::Durable));
    assert!(stored.wait().await);
    let Some(redis) = redis_server() else { return };
    let storage = open_redis(&redis.url(), StorageMode::Degraded).await;
    // No ticket asked for: buffered for writing, the ack (if any) says false.
    let stored = storage.record(entry(&key("mem", "chat"), "e", 1), false);
    assert!(matches!(stored, Stored::Buffered));
    assert!(!stored.wait().await);
}
