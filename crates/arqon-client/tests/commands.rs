//! Every typed command of SPEC §5 round-trips against a real server and
//! decodes into its reply type.

#![allow(clippy::unwrap_used)]

use arqon_client::{Client, ClientType, ErrorCode, HistoryQuery, Identity};
use arqonbus_tests::TestServer;
use arqonbus_tests::client;
use serde_json::{Map, json};

#[tokio::test]
async fn ping_and_status() {
    let server = TestServer::for_clients(|b| b).await;
    let client = Client::connect(server.options()).await.unwrap();
    let welcome = client.welcome().expect("connected");
    assert!(welcome.client_id.as_str().starts_with("arq_client_"));
    assert_eq!(welcome.protocol, "1.0");

    let pong = client.ping().await.unwrap();
    assert!(pong.pong);
    assert!(pong.server_time.ends_with('Z'));

    let _joined = client.join_channel("science", "explore").await.unwrap();
    let status = client.status().await.unwrap();
    assert_eq!(status.server.name, "ArqonBus");
    assert_eq!(status.server.protocol, "1.0");
    assert_eq!(status.clients.active, 1);
    assert!(status.subscriptions >= 1);
    assert_eq!(status.participants.channels["science:explore"], 1);
    assert_eq!(status.storage.backend, "memory");
}

#[tokio::test]
async fn identify_updates_the_client_record() {
    let server = TestServer::for_clients(|b| b).await;
    let client = Client::connect(
        server
            .options()
            .client_type(ClientType::Service)
            .screen_name("indexer"),
    )
    .await
    .unwrap();
    let record = client
        .identify(&Identity {
            client_type: Some(ClientType::AiAgent),
            personality: Some("curious".into()),
            ..Identity::default()
        })
        .await
        .unwrap();
    assert_eq!(record.client_id, client.client_id().unwrap().as_str());
    assert_eq!(record.client_type, "ai-agent");
    assert_eq!(record.screen_name.as_deref(), Some("indexer"));
    assert_eq!(record.personality.as_deref(), Some("curious"));
}

#[tokio::test]
async fn join_leave_list_and_info() {
    let server = TestServer::for_clients(|b| b).await;
    let client = Client::connect(server.options().screen_name("ada"))
        .await
        .unwrap();

    let sub = client.join_channel("science", "explore").await.unwrap();
    assert_eq!(sub.channel().as_str(), "science:explore");
    assert_eq!(sub.joined().participant_count, 1);
    assert_eq!(sub.joined().seq, 0);
    assert!(sub.joined().epoch.is_some());

    let list = client.list_channels(Some("science")).await.unwrap();
    assert_eq!(list.total, 1);
    assert_eq!(list.channels[0].channel, "explore");
    assert!(list.channels[0].auto_created);
    let all = client.list_channels(None).await.unwrap();
    assert!(all.total >= 3, "system channels are listed too: {all:?}");

    let info = client.channel_info("science", "explore").await.unwrap();
    assert_eq!(info.record.participant_count, 1);
    assert_eq!(info.participants[0].screen_name.as_deref(), Some("ada"));
    assert_eq!(info.epoch, sub.joined().epoch);

    let left = client.leave_channel("science", "explore").await.unwrap();
    assert!(left.was_member);
    let again = client.leave_channel("science", "explore").await.unwrap();
    assert!(!again.was_member);
}

#[tokio::test]
async fn create_and_delete_channels() {
    let server = TestServer::for_clients(|b| b).await;
    let admin = Client::connect(server.options()).await.unwrap();
    let mut metadata = Map::new();
    metadata.insert("topic".into(), json!("stars"));
    let record = admin
        .create_channel("lab", "one", Some("the first"), Some(metadata))
        .await
        .unwrap();
    assert_eq!(record.room, "lab");
    assert_eq!(record.kind, "general");
    assert_eq!(record.description.as_deref(), Some("the first"));
    assert_eq!(record.metadata["topic"], "stars");
    assert!(!record.auto_created);

    let err = admin
        .create_channel("lab", "one", None, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ChannelExists));

    // A member is removed by a forced delete; its subscription ends.
    let member = Client::connect(server.options()).await.unwrap();
    let mut sub = member.join_channel("lab", "one").await.unwrap();
    let err = admin.delete_channel("lab", "one", false).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ChannelNotEmpty));
    let deleted = admin.delete_channel("lab", "one", true).await.unwrap();
    assert!(deleted.deleted);
    assert_eq!(deleted.removed_members, 1);
    let end = client::within("the subscription ends", sub.next_message()).await;
    assert!(end.is_none());
}

#[tokio::test]
async fn history_returns_messages_after_a_seq() {
    let server = TestServer::for_clients(|b| b).await;
    let client = Client::connect(server.options()).await.unwrap();
    let _joined = client.join_channel("h", "one").await.unwrap();
    for n in 1..=5 {
        client
            .publish_with_ack("h", "one", json!({ "n": n }))
            .await
            .unwrap();
    }
    let history = client
        .history(
            "h",
            "one",
            &HistoryQuery {
                after_seq: Some(2),
                limit: Some(2),
                ..HistoryQuery::default()
            },
        )
        .await
        .unwrap();
    let seqs: Vec<u64> = history.messages.iter().filter_map(|m| m.seq).collect();
    assert_eq!(seqs, [3, 4]);
    assert_eq!(history.count, 2);
    assert_eq!(history.last_seq, 5);
    assert_eq!(history.messages[0].payload.as_ref().unwrap()["n"], 3);
    let latest = client
        .history("h", "one", &HistoryQuery::default())
        .await
        .unwrap();
    assert_eq!(latest.messages.len(), 5);
    assert_eq!(latest.epoch, history.epoch);

    let err = client
        .history(
            "h",
            "one",
            &HistoryQuery {
                limit: Some(1001),
                ..HistoryQuery::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument));
}
