//! Messages between two clients: channel publish/subscribe in `seq` order,
//! acknowledgements, direct messages.

#![allow(clippy::unwrap_used)]

use arqon_client::{Client, EnvelopeType, ErrorCode, SubscriptionEvent};
use arqonbus_tests::TestServer;
use arqonbus_tests::client::within;
use serde_json::{Map, json};

#[tokio::test]
async fn a_published_message_reaches_the_other_member() {
    let server = TestServer::for_clients(|b| b).await;
    let alice = Client::connect(server.options()).await.unwrap();
    let bob = Client::connect(server.options()).await.unwrap();
    let mut alice_sub = alice.join_channel("chat", "general").await.unwrap();
    let mut bob_sub = bob.join_channel("chat", "general").await.unwrap();

    for n in 0..50 {
        alice
            .publish("chat", "general", json!({"text": "hi", "n": n}))
            .await
            .unwrap();
    }
    let alice_id = alice.client_id().unwrap();
    let mut last_seq = 0;
    for n in 0..50 {
        let message = within("bob receives", bob_sub.next_message())
            .await
            .expect("a message");
        assert_eq!(message.payload["n"], n);
        assert_eq!(message.sender.as_deref(), Some(alice_id.as_str()));
        assert_eq!(message.kind, EnvelopeType::Message);
        assert_eq!(message.channel.as_str(), "chat:general");
        let seq = message.seq.expect("channel messages carry seq");
        assert_eq!(seq, last_seq + 1, "seq without gaps");
        last_seq = seq;
        assert_eq!(message.epoch, bob_sub.joined().epoch);
        assert!(!message.replayed);
    }
    // The sender does not get its own messages back.
    let nothing =
        tokio::time::timeout(std::time::Duration::from_millis(200), alice_sub.recv()).await;
    assert!(nothing.is_err(), "alice got {nothing:?}");
}

#[tokio::test]
async fn acks_report_delivery_and_seq() {
    let server = TestServer::for_clients(|b| b).await;
    let alice = Client::connect(server.options()).await.unwrap();
    let bob = Client::connect(server.options()).await.unwrap();
    let carol = Client::connect(server.options()).await.unwrap();
    let _joined = alice.join_channel("chat", "acks").await.unwrap();
    let _bob_sub = bob.join_channel("chat", "acks").await.unwrap();
    let _carol_sub = carol.join_channel("chat", "acks").await.unwrap();

    let first = alice
        .publish_with_ack("chat", "acks", json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(first.delivered, 2);
    assert_eq!(first.seq, Some(1));
    let second = alice
        .publish_with_ack("chat", "acks", json!({"n": 2}))
        .await
        .unwrap();
    assert_eq!(second.seq, Some(2));

    // With echo, the sender is a recipient too.
    let mut echo = Map::new();
    echo.insert("echo".into(), json!(true));
    let mut alice_sub = alice.join_channel("chat", "acks").await.unwrap();
    let ack = alice
        .publish_with_metadata("chat", "acks", json!({"n": 3}), echo)
        .await
        .unwrap();
    assert_eq!(ack.delivered, 3);
    let mine = within("echo", alice_sub.next_message()).await.unwrap();
    assert_eq!(mine.payload["n"], 3);
}

#[tokio::test]
async fn direct_messages_reach_only_their_target() {
    let server = TestServer::for_clients(|b| b).await;
    let alice = Client::connect(server.options()).await.unwrap();
    let bob = Client::connect(server.options()).await.unwrap();
    let mut inbox = bob.direct_messages().expect("taken once");
    assert!(bob.direct_messages().is_none());
    let bob_id = bob.client_id().unwrap();

    let id = alice
        .send_direct(bob_id.as_str(), json!({"text": "psst"}))
        .await
        .unwrap();
    let message = within("direct message", inbox.recv()).await.unwrap();
    assert_eq!(message.id, id.as_str());
    assert_eq!(message.payload["text"], "psst");
    assert_eq!(
        message.sender.as_deref(),
        Some(alice.client_id().unwrap().as_str())
    );

    let ack = alice
        .send_direct_with_ack(bob_id.as_str(), json!({"text": "again"}))
        .await
        .unwrap();
    assert_eq!(ack.delivered, 1);
    assert_eq!(ack.seq, None);
    within("second direct message", inbox.recv()).await.unwrap();

    let err = alice
        .send_direct_with_ack("arq_client_00000000000000000000000000000000", json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TargetNotFound));
}

#[tokio::test]
async fn subscriptions_are_streams() {
    use futures_util::StreamExt;
    let server = TestServer::for_clients(|b| b).await;
    let alice = Client::connect(server.options()).await.unwrap();
    let bob = Client::connect(server.options()).await.unwrap();
    let _joined = alice.join_channel("s", "t").await.unwrap();
    let sub = bob.join_channel("s", "t").await.unwrap();
    for n in 0..3 {
        alice.publish("s", "t", json!({ "n": n })).await.unwrap();
    }
    let events: Vec<SubscriptionEvent> = within("three events", sub.take(3).collect()).await;
    assert_eq!(events.len(), 3);
}
