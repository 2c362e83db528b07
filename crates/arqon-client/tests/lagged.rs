//! A `lagged` notice (SPEC §16) — the server dropped messages for this
//! slow client — arrives on the affected subscription as a
//! `SubscriptionEvent::Lagged`; what was received plus what the notices
//! count as dropped is everything that was published.

#![allow(clippy::unwrap_used)]

use arqon_client::{Client, SubscriptionEvent};
use arqon_config::SlowConsumerPolicy;
use arqonbus_tests::TestServer;
use arqonbus_tests::client::{self, within};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagged_notices_reach_the_subscription() {
    const PUBLISHED: u64 = 6000;
    let server = TestServer::for_clients(|b| {
        b.slow_consumer(SlowConsumerPolicy::Drop)
            .client_queue_bytes(8 * 1024)
            .rate_limit_per_sec(0)
    })
    .await;
    // A one-event queue: the client stops reading while nobody consumes.
    let reader = Client::connect(server.options().subscription_capacity(1))
        .await
        .unwrap();
    let mut sub = reader.join_channel("feed", "fast").await.unwrap();
    let publisher = Client::connect(server.options()).await.unwrap();
    let _publishing = publisher.join_channel("feed", "fast").await.unwrap();
    let filler = "x".repeat(2000);
    for i in 0..PUBLISHED {
        publisher
            .publish("feed", "fast", json!({"i": i, "filler": filler}))
            .await
            .unwrap();
    }
    publisher.ping().await.unwrap();

    let (mut received, mut dropped, mut notices) = (0u64, 0u64, 0u32);
    while received + dropped < PUBLISHED {
        match within("the next event", sub.recv()).await.unwrap() {
            SubscriptionEvent::Message(_) => received += 1,
            SubscriptionEvent::Lagged(lag) => {
                assert_eq!(lag.channel.as_str(), "feed:fast");
                assert!(
                    lag.dropped > 0 && lag.first_dropped_seq.is_some(),
                    "{lag:?}"
                );
                dropped += lag.dropped;
                notices += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(notices > 0, "{received} received, nothing dropped");
    assert_eq!(received + dropped, PUBLISHED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_refill_on_lag_every_dropped_message_comes_back_once() {
    const PUBLISHED: u64 = 6000;
    let server = TestServer::for_clients(|b| {
        b.slow_consumer(SlowConsumerPolicy::Drop)
            .client_queue_bytes(8 * 1024)
            .rate_limit_per_sec(0)
            .history_size(PUBLISHED as usize)
            .history_max_bytes(64 << 20)
    })
    .await;
    let reader = Client::connect(
        server
            .options()
            .subscription_capacity(1)
            .refill_on_lag(true),
    )
    .await
    .unwrap();
    let mut sub = reader.join_channel("feed", "refill").await.unwrap();
    let publisher = Client::connect(server.options()).await.unwrap();
    let _publishing = publisher.join_channel("feed", "refill").await.unwrap();
    let filler = "x".repeat(2000);
    for i in 0..PUBLISHED {
        publisher
            .publish("feed", "refill", json!({"i": i, "filler": filler}))
            .await
            .unwrap();
    }
    publisher.ping().await.unwrap();

    let mut seen = std::collections::BTreeSet::new();
    let (mut notices, mut replayed) = (0u32, 0u64);
    let mut lags = Vec::new();
    while (seen.len() as u64) < PUBLISHED {
        let Ok(event) = tokio::time::timeout(client::WAIT, sub.recv()).await else {
            let lost: Vec<u64> = (1..=PUBLISHED).filter(|s| !seen.contains(s)).collect();
            panic!(
                "{} seen; lost {:?}..; lags {lags:?}",
                seen.len(),
                &lost[..lost.len().min(20)]
            );
        };
        match event.unwrap() {
            SubscriptionEvent::Lagged(lag) => {
                lags.push((lag.first_dropped_seq, lag.dropped, seen.len()));
                notices += 1;
            }
            SubscriptionEvent::Message(m) => {
                let seq = m.seq.unwrap();
                assert!(seen.insert(seq), "seq {seq} delivered twice");
                assert_eq!(m.payload["i"].as_u64().unwrap() + 1, seq);
                replayed += u64::from(m.replayed);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        notices > 0 && replayed > 0,
        "{notices} notices, {replayed} refilled"
    );
    // Nothing more: no duplicate trails behind.
    reader.ping().await.unwrap();
    while let Ok(Some(event)) =
        tokio::time::timeout(std::time::Duration::from_millis(200), sub.recv()).await
    {
        assert!(!matches!(event, SubscriptionEvent::Message(_)), "{event:?}");
    }
}
