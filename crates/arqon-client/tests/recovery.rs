//! Recovery on re-join (SPEC §14): after a reconnect the client re-joins
//! each channel with `recover: {seq, epoch}` and, when the server answers
//! `recovered: true`, delivers the reply's `publications` and then the live
//! messages — every message exactly once, in `seq` order. This holds
//! across a restart of a server whose history is in Redis (the epoch
//! survives) and across a dropped connection while a publisher keeps
//! publishing.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arqon_client::{
    Client, GapFill, GapReport, JoinOptions, ReconnectPolicy, Subscription, SubscriptionEvent,
};
use arqon_config::StorageBackend;
use arqonbus_tests::TestServer;
use arqonbus_tests::client::{self, Proxy, wait_reconnecting, within};
use serde_json::json;

/// Messages (`n`, `seq`, `replayed`) until `count` of them have arrived,
/// and the gap reports seen on the way.
async fn collect(sub: &mut Subscription, count: usize) -> (Vec<(u64, u64, bool)>, Vec<GapReport>) {
    let mut messages = Vec::new();
    let mut gaps = Vec::new();
    while messages.len() < count {
        match within("the next event", sub.recv()).await.unwrap() {
            SubscriptionEvent::Message(m) => {
                messages.push((m.payload["n"].as_u64().unwrap(), m.seq.unwrap(), m.replayed))
            }
            SubscriptionEvent::Gap(gap) => gaps.push(gap),
            other => panic!("unexpected {other:?}"),
        }
    }
    (messages, gaps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_with_redis_history_loses_and_repeats_nothing() {
    let Some(redis) = arqonbus_tests::redis::redis_server() else {
        return;
    };
    let url = redis.url();
    let config = move |b: arqon_config::ConfigBuilder| {
        b.storage(StorageBackend::Redis).redis_url(url.clone())
    };
    let first = TestServer::for_clients(config.clone()).await;
    let addr = first.addr;
    // The client goes through a proxy, so that it comes back only once the
    // new server has the missed messages.
    let proxy = Proxy::start(addr).await;
    let client = Client::connect(client::options(&proxy.url()))
        .await
        .unwrap();
    let mut sub = client.join_channel("durable", "feed").await.unwrap();
    let epoch = sub.joined().epoch.clone();

    let publisher = Client::connect(first.options().reconnect(ReconnectPolicy::disabled()))
        .await
        .unwrap();
    let _publishing = publisher.join_channel("durable", "feed").await.unwrap();
    for n in 1..=3 {
        let ack = publisher
            .publish_with_ack("durable", "feed", json!({ "n": n }))
            .await
            .unwrap();
        assert!(ack.stored, "{ack:?}");
    }
    let (before, _) = collect(&mut sub, 3).await;
    assert_eq!(before, [(1, 1, false), (2, 2, false), (3, 3, false)]);

    // Mid-stream the server stops (flushing to Redis) and a new one starts
    // on the same port and the same Redis; 4..=8 are published there while
    // the client is away.
    proxy.cut();
    wait_reconnecting(&client).await;
    drop(publisher);
    first.stop().await;
    let second = TestServer::for_clients_on(addr, config).await;
    let publisher = Client::connect(second.options()).await.unwrap();
    let _publishing = publisher.join_channel("durable", "feed").await.unwrap();
    for n in 4..=8 {
        let ack = publisher
            .publish_with_ack("durable", "feed", json!({ "n": n }))
            .await
            .unwrap();
        assert_eq!(ack.seq, Some(n), "seq goes on in the same epoch");
    }
    proxy.resume();

    let (after, gaps) = collect(&mut sub, 5).await;
    assert_eq!(
        after,
        [
            (4, 4, true),
            (5, 5, true),
            (6, 6, true),
            (7, 7, true),
            (8, 8, true)
        ]
    );
    let gap = within("the gap report", sub.recv()).await.unwrap();
    assert!(gaps.is_empty(), "{gaps:?}");
    let SubscriptionEvent::Gap(gap) = gap else {
        panic!("expected the gap report, got {gap:?}");
    };
    assert_eq!(gap.via, GapFill::Recovery, "recovered: true (§14): {gap:?}");
    assert!(gap.filled && !gap.epoch_changed, "{gap:?}");
    assert_eq!((gap.from_seq, gap.to_seq, gap.recovered), (4, 8, 5));
    assert_eq!(gap.new_epoch, epoch);

    // Live messages follow, without a duplicate.
    for n in 9..=10 {
        publisher
            .publish("durable", "feed", json!({ "n": n }))
            .await
            .unwrap();
    }
    let (live, _) = collect(&mut sub, 2).await;
    assert_eq!(live, [(9, 9, false), (10, 10, false)]);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_recovers_while_a_publisher_keeps_publishing() {
    const TOTAL: u64 = 300;
    let server = TestServer::for_clients(|b| b).await;
    let proxy = Proxy::start(server.addr).await;
    let client = Client::connect(client::options(&proxy.url()))
        .await
        .unwrap();
    let mut sub = client.join_channel("busy", "feed").await.unwrap();

    let publisher = Client::connect(server.options()).await.unwrap();
    let publishing = publisher.join_channel("busy", "feed").await.unwrap();
    let published = Arc::new(AtomicU64::new(0));
    let task = {
        let published = published.clone();
        tokio::spawn(async move {
            for n in 1..=TOTAL {
                publisher
                    .publish_with_ack("busy", "feed", json!({ "n": n }))
                    .await
                    .unwrap();
                published.store(n, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
            drop(publishing);
            publisher
        })
    };

    let (mut seen, _) = collect(&mut sub, 20).await;
    proxy.cut();
    wait_reconnecting(&client).await;
    // Let the publisher get ahead while the client is away.
    let cut_at = published.load(Ordering::SeqCst);
    within("the publisher goes on", async {
        while published.load(Ordering::SeqCst) < (cut_at + 10).min(TOTAL) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    proxy.resume();

    let mut gaps = Vec::new();
    while seen.len() < TOTAL as usize {
        let (more, g) = collect(&mut sub, 1).await;
        seen.extend(more);
        gaps.extend(g);
    }
    let ns: Vec<u64> = seen.iter().map(|m| m.0).collect();
    assert_eq!(
        ns,
        (1..=TOTAL).collect::<Vec<_>>(),
        "each message exactly once"
    );
    assert!(seen.iter().all(|(n, seq, _)| n == seq));
    assert!(seen.iter().any(|m| m.2), "some were recovered");
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].via, GapFill::Recovery, "{:?}", gaps[0]);
    assert!(gaps[0].filled, "{:?}", gaps[0]);
    let publisher = within("the publisher ends", task).await.unwrap();
    drop(publisher);
}

#[tokio::test]
async fn join_with_recover_delivers_the_missed_messages_first() {
    let server = TestServer::for_clients(|b| b).await;
    let client = Client::connect(server.options()).await.unwrap();
    let first = client.join_channel("again", "feed").await.unwrap();
    let epoch = first.joined().epoch.clone().unwrap();
    for n in 1..=4 {
        client
            .publish_with_ack("again", "feed", json!({ "n": n }))
            .await
            .unwrap();
    }
    let mut sub = client
        .join_channel_with("again", "feed", JoinOptions::new().recover(2, epoch))
        .await
        .unwrap();
    assert_eq!(sub.joined().recovered, Some(true));
    drop(first);
    let (messages, _) = collect(&mut sub, 2).await;
    assert_eq!(messages, [(3, 3, true), (4, 4, true)]);
}
