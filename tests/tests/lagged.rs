//! Lagged notices (SPEC §16): under `ARQONBUS_SLOW_CONSUMER=drop`, a client
//! that lost messages to a full queue is told how many, per channel, with
//! the first lost `seq`, once its queue has room again, so it can refill
//! from history. The notice itself is never dropped.

use std::time::Duration;

use arqon_config::SlowConsumerPolicy;
use arqonbus_tests::TestServer;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_lost_messages_is_told_what_to_refill() {
    const PUBLISHED: u64 = 6000;
    let server = TestServer::with(|b| {
        b.slow_consumer(SlowConsumerPolicy::Drop)
            .client_queue_bytes(8 * 1024)
            .rate_limit_per_sec(0)
            .history_size(PUBLISHED as usize)
            .history_max_bytes(64 << 20)
    })
    .await;
    let mut reader = server.connect().await;
    reader.join("feed", "fast").await;
    let mut publisher = server.connect().await;
    publisher.join("feed", "fast").await;
    // The reader reads nothing while the publisher floods the channel.
    let filler = "x".repeat(2000);
    for i in 0..PUBLISHED {
        publisher
            .publish("feed", "fast", json!({"i": i, "filler": filler}))
            .await;
    }
    publisher.command("ping", json!({})).await;

    let mut received = Vec::new();
    let mut notices: Vec<Value> = Vec::new();
    while let Some(frame) = reader.try_recv(Duration::from_secs(3)).await {
        if frame["type"] == "system" {
            notices.push(frame);
        } else {
            received.push(frame["seq"].as_u64().expect("seq"));
        }
    }
    assert!(
        !notices.is_empty(),
        "a lagged notice arrives ({} of {PUBLISHED} received)",
        received.len()
    );
    let mut dropped = 0;
    let mut first_dropped = u64::MAX;
    for notice in &notices {
        assert_eq!(notice["sender"], "arqonbus");
        let payload = &notice["payload"];
        assert_eq!(payload["event"], "lagged", "{notice}");
        let channels = payload["channels"].as_array().expect("channels");
        assert_eq!(channels.len(), 1, "{notice}");
        assert_eq!(channels[0]["room"], "feed");
        assert_eq!(channels[0]["channel"], "fast");
        assert_eq!(channels[0]["dropped"], payload["dropped"]);
        dropped += payload["dropped"].as_u64().expect("dropped");
        first_dropped = first_dropped.min(channels[0]["first_dropped_seq"].as_u64().expect("seq"));
    }
    assert!(dropped > 0);
    assert_eq!(
        received.len() as u64 + dropped,
        PUBLISHED,
        "every message was either delivered or counted as dropped"
    );
    let missing = (1..=PUBLISHED)
        .find(|seq| !received.contains(seq))
        .expect("a gap");
    assert_eq!(first_dropped, missing, "the first lost seq is named");

    // The notice says where to refill from.
    let history = reader
        .command(
            "history",
            json!({"room": "feed", "channel": "fast", "after_seq": first_dropped - 1, "limit": 1}),
        )
        .await;
    assert_eq!(history["payload"]["messages"][0]["seq"], first_dropped);
}

#[tokio::test]
async fn no_notice_without_drops() {
    let server = TestServer::with(|b| b.slow_consumer(SlowConsumerPolicy::Drop)).await;
    let mut reader = server.connect().await;
    reader.join("feed", "calm").await;
    let mut publisher = server.connect().await;
    publisher.join("feed", "calm").await;
    for i in 0..20 {
        publisher.publish("feed", "calm", json!({"i": i})).await;
    }
    for seq in 1..=20 {
        assert_eq!(reader.recv().await["seq"], seq);
    }
    reader.expect_silence(Duration::from_millis(1500)).await;
}
