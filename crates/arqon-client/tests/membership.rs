//! Membership follows the `Subscription`: dropping it leaves the channel
//! (unless a later join replaced it), and a join with `presence` reports
//! the others joining and leaving (SPEC §15).

#![allow(clippy::unwrap_used)]

use arqon_client::{Client, JoinOptions, PresenceEvent, Subscription, SubscriptionEvent};
use arqonbus_tests::TestServer;
use arqonbus_tests::client::within;

async fn members(observer: &Client) -> u64 {
    observer
        .channel_info("room", "chan")
        .await
        .unwrap()
        .record
        .participant_count
}

#[tokio::test]
async fn dropping_a_subscription_leaves_the_channel() {
    let server = TestServer::for_clients(|b| b).await;
    let client = Client::connect(server.options()).await.unwrap();
    let observer = Client::connect(server.options()).await.unwrap();
    let _watching = observer.join_channel("room", "chan").await.unwrap();

    let first = client.join_channel("room", "chan").await.unwrap();
    let second = client.join_channel("room", "chan").await.unwrap();
    assert_eq!(members(&observer).await, 2);

    // `first` was replaced by `second`: dropping it leaves nothing. The
    // ping is answered after anything the drop sent.
    drop(first);
    client.ping().await.unwrap();
    assert_eq!(members(&observer).await, 2);

    drop(second);
    client.ping().await.unwrap();
    assert_eq!(members(&observer).await, 1, "the drop left the channel");

    // Leaving explicitly first: the drop afterwards sends nothing more.
    let third = client.join_channel("room", "chan").await.unwrap();
    assert_eq!(members(&observer).await, 2);
    client.leave_channel("room", "chan").await.unwrap();
    drop(third);
    client.ping().await.unwrap();
    assert_eq!(members(&observer).await, 1);
}

async fn next_presence(sub: &mut Subscription) -> PresenceEvent {
    loop {
        match within("a presence event", sub.recv()).await.unwrap() {
            SubscriptionEvent::Presence(event) => return event,
            SubscriptionEvent::Message(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn presence_events_arrive_on_the_subscription() {
    let server = TestServer::for_clients(|b| b).await;
    let watcher = Client::connect(server.options()).await.unwrap();
    let mut sub = watcher
        .join_channel_with("room", "chan", JoinOptions::new().presence(true))
        .await
        .unwrap();

    let visitor = Client::connect(server.options().screen_name("visitor"))
        .await
        .unwrap();
    let visiting = visitor.join_channel("room", "chan").await.unwrap();
    let joined = next_presence(&mut sub).await;
    assert!(joined.joined, "{joined:?}");
    assert_eq!(joined.client_id, visitor.client_id().unwrap().as_str());
    assert_eq!(joined.screen_name.as_deref(), Some("visitor"));
    assert_eq!(joined.participant_count, 2);
    assert_eq!(joined.channel.as_str(), "room:chan");

    drop(visiting);
    let left = next_presence(&mut sub).await;
    assert!(!left.joined, "{left:?}");
    assert_eq!(left.client_id, joined.client_id);
    assert_eq!(left.participant_count, 1);
}
