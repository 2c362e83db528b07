//! Failures surface as typed `ClientError`s: the server's error code, a
//! refused handshake, a request that gets no reply in time, a closed client.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use arqon_client::{Client, ClientError, ClientEvent, ConnectOptions, ErrorCode, ReconnectPolicy};
use arqonbus_tests::TestServer;
use arqonbus_tests::client::within;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, json};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn server_errors_carry_their_code() {
    let server = TestServer::for_clients(|b| b).await;
    let client = Client::connect(server.options()).await.unwrap();

    let err = client.leave_channel("nowhere", "none").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ChannelNotFound));
    let detail = err.server_error().expect("server error");
    assert_eq!(detail.command.as_deref(), Some("leave_channel"));
    assert!(!detail.message.is_empty());

    let err = client.command("frobnicate", Map::new()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownCommand));

    let err = client.list_channels(Some("ghost")).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RoomNotFound));

    // Publishing to a channel one has not joined.
    let other = Client::connect(server.options()).await.unwrap();
    let _joined = other.join_channel("chat", "x").await.unwrap();
    let err = client
        .publish_with_ack("chat", "x", json!({"text": "hi"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotSubscribed));
    assert!(matches!(err, ClientError::Server(_)));

    // A fire-and-forget publish's error arrives as an event.
    let mut events = client.events().expect("taken once");
    client.publish("chat", "x", json!({})).await.unwrap();
    let event = within("error event", events.recv()).await.unwrap();
    match event {
        ClientEvent::ServerError(err) => assert_eq!(err.code, Some(ErrorCode::NotSubscribed)),
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_input_is_refused_before_sending() {
    let server = TestServer::for_clients(|b| b).await;
    let client = Client::connect(server.options()).await.unwrap();
    assert!(matches!(
        client.join_channel("bad room", "x").await,
        Err(ClientError::InvalidName(_))
    ));
    assert!(matches!(
        client.publish("a", "b", json!([1, 2])).await,
        Err(ClientError::PayloadNotObject)
    ));
    assert!(matches!(
        client.send_direct("not valid!", json!({})).await,
        Err(ClientError::InvalidName(_))
    ));
}

#[tokio::test]
async fn a_refused_handshake_reports_the_http_status() {
    let server = TestServer::for_clients(|b| {
        b.set("ARQONBUS_AUTH", "token")
            .unwrap()
            .set("ARQONBUS_ADMIN_TOKEN", "right-token")
            .unwrap()
    })
    .await;
    let err = Client::connect(server.options().token("wrong-token"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Refused { status: 401, .. }),
        "{err:?}"
    );
    // The right token is sent as a bearer token and makes the client admin.
    let admin = Client::connect(server.options().token("right-token"))
        .await
        .unwrap();
    admin
        .create_channel("ops", "alerts", None, None)
        .await
        .unwrap();

    let err = Client::connect(ConnectOptions::new(format!("ws://{}/nope", server.addr)))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Refused { .. }), "{err:?}");
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = Client::connect(ConnectOptions::new(format!("ws://{addr}/")))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
}

/// A WebSocket server that welcomes clients, then never answers.
async fn silent_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                let welcome = json!({
                    "version": "1.0", "id": "arq_w", "type": "message",
                    "timestamp": "2026-01-01T00:00:00.000Z", "sender": "arqonbus",
                    "payload": {"welcome": "hi", "client_id": "arq_client_0123456789abcdef0123456789abcdef",
                                "server_version": "0", "protocol": "1.0", "limits": {}}
                });
                ws.send(Message::Text(welcome.to_string().into()))
                    .await
                    .unwrap();
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_request_without_reply_times_out() {
    let addr = silent_server().await;
    let client = Client::connect(
        ConnectOptions::new(format!("ws://{addr}/")).request_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let err = client.ping().await.unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout { .. }),
        "expected a timeout, got {err:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    let err = client
        .publish_with_ack("a", "b", json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }));
}

#[tokio::test]
async fn a_closed_client_refuses_calls() {
    let server = TestServer::for_clients(|b| b).await;
    let client = Client::connect(server.options().reconnect(ReconnectPolicy::disabled()))
        .await
        .unwrap();
    let mut sub = client.join_channel("a", "b").await.unwrap();
    client.close().await;
    assert!(matches!(client.ping().await, Err(ClientError::Closed)));
    // The subscription ends.
    assert!(
        within("subscription ends", sub.next_message())
            .await
            .is_none()
    );
}

#[tokio::test]
async fn without_reconnect_a_dropped_connection_closes_the_client() {
    let server = TestServer::for_clients(|b| b).await;
    let client = Client::connect(server.options().reconnect(ReconnectPolicy::disabled()))
        .await
        .unwrap();
    let mut events = client.events().unwrap();
    server.stop().await;
    let mut saw_disconnect = false;
    loop {
        match within("events", events.recv()).await {
            Some(ClientEvent::Disconnected { .. }) => saw_disconnect = true,
            Some(ClientEvent::Closed) | None => break,
            Some(_) => {}
        }
    }
    assert!(saw_disconnect);
    assert!(matches!(client.ping().await, Err(ClientError::Closed)));
}
