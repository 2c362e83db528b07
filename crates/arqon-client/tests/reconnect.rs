//! Automatic reconnect: after the connection drops the client reconnects,
//! re-joins its channels and keeps receiving. With the server still up
//! (same epoch) the gap is filled by the join's recovery (SPEC §14); after a server
//! restart with memory storage the epoch changed and the gap is reported
//! as unfillable.

#![allow(clippy::unwrap_used)]

use arqon_client::{
    Client, ClientEvent, ConnectionState, GapFill, GapReport, ReconnectPolicy, Subscription,
    SubscriptionEvent,
};
use arqonbus_tests::TestServer;
use arqonbus_tests::client::{self, Proxy, wait_reconnecting, within};
use serde_json::json;

/// Reads the subscription until a gap report, returning the messages'
/// `n` before it and the report.
async fn until_gap(sub: &mut Subscription) -> (Vec<u64>, GapReport) {
    let mut seen = Vec::new();
    loop {
        match within("a gap report", sub.recv())
            .await
            .expect("subscription open")
        {
            SubscriptionEvent::Message(m) => seen.push(m.payload["n"].as_u64().unwrap()),
            SubscriptionEvent::Gap(report) => return (seen, report),
            SubscriptionEvent::Removed { reason } => panic!("removed: {reason}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn next_n(sub: &mut Subscription) -> (u64, u64, bool) {
    let m = within("a message", sub.next_message())
        .await
        .expect("subscription open");
    (m.payload["n"].as_u64().unwrap(), m.seq.unwrap(), m.replayed)
}

#[tokio::test]
async fn after_a_server_restart_the_client_rejoins_and_reports_a_new_epoch() {
    let first = TestServer::for_clients(|b| b).await;
    let addr = first.addr;
    let client = Client::connect(first.options()).await.unwrap();
    let mut events = client.events().unwrap();
    let mut sub = client.join_channel("live", "feed").await.unwrap();
    let old_epoch = sub.joined().epoch.clone();
    let old_id = client.client_id().unwrap();

    let publisher = Client::connect(first.options().reconnect(ReconnectPolicy::disabled()))
        .await
        .unwrap();
    let _joined = publisher.join_channel("live", "feed").await.unwrap();
    for n in 1..=3 {
        publisher
            .publish_with_ack("live", "feed", json!({ "n": n }))
            .await
            .unwrap();
    }
    for n in 1..=3 {
        assert_eq!(next_n(&mut sub).await, (n, n, false));
    }

    // Mid-stream, the server goes away and a new one starts on the port.
    first.stop().await;
    wait_reconnecting(&client).await;
    let second = TestServer::for_clients_on(addr, |b| b).await;

    let (before, gap) = until_gap(&mut sub).await;
    assert!(before.is_empty(), "nothing to replay: {before:?}");
    assert!(gap.epoch_changed, "{gap:?}");
    assert!(!gap.filled, "{gap:?}");
    assert_eq!(gap.from_seq, 4);
    assert_eq!(gap.old_epoch, old_epoch);
    assert_ne!(gap.new_epoch, old_epoch);
    assert_eq!(gap.recovered, 0);
    assert_ne!(client.client_id().unwrap(), old_id, "a new connection");

    // The channel was re-joined on the new server: live messages flow.
    let publisher = Client::connect(second.options()).await.unwrap();
    let joined = publisher.join_channel("live", "feed").await.unwrap();
    assert_eq!(joined.joined().participant_count, 2, "the client re-joined");
    for n in 10..=12 {
        publisher
            .publish("live", "feed", json!({ "n": n }))
            .await
            .unwrap();
    }
    for (i, n) in (10..=12).enumerate() {
        assert_eq!(next_n(&mut sub).await, (n, i as u64 + 1, false));
    }

    // The connection events tell the same story.
    let mut saw = (false, false, false);
    while let Ok(event) = events.try_recv() {
        match event {
            ClientEvent::Disconnected { .. } => saw.0 = true,
            ClientEvent::Reconnected { .. } => saw.1 = true,
            ClientEvent::Gap(report) => saw.2 = report == gap,
            _ => {}
        }
    }
    assert_eq!(saw, (true, true, true));
}

#[tokio::test]
async fn with_the_same_epoch_the_gap_is_filled_by_recovery() {
    let server = TestServer::for_clients(|b| b).await;
    let proxy = Proxy::start(server.addr).await;
    let client = Client::connect(client::options(&format!("ws://{}/", proxy.addr)))
        .await
        .unwrap();
    let mut sub = client.join_channel("gap", "fill").await.unwrap();
    let epoch = sub.joined().epoch.clone();

    let publisher = Client::connect(server.options()).await.unwrap();
    let _joined = publisher.join_channel("gap", "fill").await.unwrap();
    for n in 1..=3 {
        publisher
            .publish_with_ack("gap", "fill", json!({ "n": n }))
            .await
            .unwrap();
    }
    for n in 1..=3 {
        assert_eq!(next_n(&mut sub).await, (n, n, false));
    }

    proxy.cut();
    wait_reconnecting(&client).await;
    for n in 4..=8 {
        publisher
            .publish_with_ack("gap", "fill", json!({ "n": n }))
            .await
            .unwrap();
    }
    proxy.resume();

    // The missed messages come from history, then the report.
    let (replayed, gap) = until_gap(&mut sub).await;
    assert_eq!(replayed, [4, 5, 6, 7, 8]);
    assert_eq!(
        gap,
        GapReport {
            channel: sub.channel().clone(),
            from_seq: 4,
            to_seq: 8,
            recovered: 5,
            filled: true,
            epoch_changed: false,
            old_epoch: epoch.clone(),
            new_epoch: epoch,
            // The server recovers them in the join reply (SPEC §14).
            via: GapFill::Recovery,
        }
    );
    assert_eq!(gap.missed(), 5);

    // And live messages continue after them, without duplicates.
    publisher
        .publish("gap", "fill", json!({ "n": 9 }))
        .await
        .unwrap();
    assert_eq!(next_n(&mut sub).await, (9, 9, false));
}

#[tokio::test]
async fn requests_during_a_reconnect_fail_fast() {
    let server = TestServer::for_clients(|b| b).await;
    let proxy = Proxy::start(server.addr).await;
    let client = Client::connect(client::options(&format!("ws://{}/", proxy.addr)))
        .await
        .unwrap();
    proxy.cut();
    wait_reconnecting(&client).await;
    let err = client.ping().await.unwrap_err();
    assert!(
        matches!(err, arqon_client::ClientError::NotConnected),
        "{err:?}"
    );
    let err = client.publish("a", "b", json!({})).await.unwrap_err();
    assert!(matches!(err, arqon_client::ClientError::NotConnected));
    proxy.resume();
    let mut state = client.watch_state();
    within(
        "reconnected",
        state.wait_for(|s| matches!(s, ConnectionState::Connected(_))),
    )
    .await
    .unwrap();
    client.ping().await.unwrap();
}
