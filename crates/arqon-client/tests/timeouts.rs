//! Per-call timeouts: a handle from `Client::with_timeout` waits for its
//! replies as long as it says, whatever the connection's default.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use arqon_client::{Client, ClientError};
use arqonbus_tests::client::{self, within};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// A server that welcomes and then never answers.
async fn silent_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                let welcome = json!({"version": "1.0", "id": "arq_w", "type": "message",
                    "timestamp": "2026-01-01T00:00:00.000Z", "sender": "arqonbus",
                    "payload": {"welcome": "hi", "client_id": format!("arq_client_{:032x}", 7),
                                "server_version": "test", "protocol": "1.0", "limits": {}}});
                ws.send(Message::Text(welcome.to_string().into()))
                    .await
                    .unwrap();
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    format!("ws://{addr}/")
}

#[tokio::test]
async fn a_handle_with_its_own_timeout_gives_up_at_it() {
    let url = silent_server().await;
    // A default far beyond the test's patience: only the override can end
    // the call in time.
    let client = Client::connect(client::options(&url).request_timeout(Duration::from_secs(600)))
        .await
        .unwrap();
    assert_eq!(client.timeout(), Duration::from_secs(600));
    let quick = client.with_timeout(Duration::from_millis(50));
    assert_eq!(quick.timeout(), Duration::from_millis(50));

    let err = within("the short timeout", quick.ping()).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout { after, .. } if after == Duration::from_millis(50)),
        "{err:?}"
    );
    let err = within("the short timeout", quick.join_channel("a", "b"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    let err = within(
        "the short timeout",
        quick.publish_with_ack("a", "b", json!({})),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
}
