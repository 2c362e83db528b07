//! The identity goes with every connection: the options' query parameters
//! on each reconnect, and the fields changed by `identify` at runtime are
//! remembered and sent again after a reconnect.

#![allow(clippy::unwrap_used)]

use arqon_client::{Client, ClientEvent, ClientType, Identity};
use arqonbus_tests::TestServer;
use arqonbus_tests::client::{self, Proxy, within};
use serde_json::{Map, Value};

/// This client's record as the `presence` command lists it.
async fn own_record(client: &Client) -> Value {
    let _joined = client.join_channel("who", "here").await.unwrap();
    let mut args = Map::new();
    args.insert("room".into(), "who".into());
    args.insert("channel".into(), "here".into());
    let reply = client.command("presence", args).await.unwrap();
    let id = client.client_id().unwrap();
    reply["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["client_id"] == id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{id} in {reply}"))
}

#[tokio::test]
async fn identify_fields_are_sent_again_after_a_reconnect() {
    let server = TestServer::for_clients(|b| b).await;
    let proxy = Proxy::start(server.addr).await;
    let client = Client::connect(
        client::options(&proxy.url())
            .client_type(ClientType::AiAgent)
            .screen_name("ada")
            .personality("curious"),
    )
    .await
    .unwrap();
    let mut events = client.events().unwrap();
    client
        .identify(&Identity {
            screen_name: Some("bob".into()),
            avatar: Some("https://example.com/bob.png".into()),
            ..Identity::default()
        })
        .await
        .unwrap();
    let before = client.client_id().unwrap();

    proxy.cut();
    proxy.resume();
    loop {
        if let ClientEvent::Reconnected { .. } = within("reconnected", events.recv()).await.unwrap()
        {
            break;
        }
    }
    assert_ne!(client.client_id().unwrap(), before, "a new connection");
    let record = own_record(&client).await;
    assert_eq!(record["client_type"], "ai-agent", "{record}");
    assert_eq!(record["screen_name"], "bob", "{record}");
    assert_eq!(record["avatar"], "https://example.com/bob.png", "{record}");
    assert_eq!(record["personality"], "curious", "{record}");
}
