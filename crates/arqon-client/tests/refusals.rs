//! When the server says that trying again cannot help — HTTP 401 at the
//! upgrade of a reconnect, close code 4003 (an operator's disconnect) —
//! the client stops instead of retrying: it reports a
//! [`ClientEvent::Stopped`], ends its subscriptions, and calls fail with
//! [`ClientError::Stopped`]. The token provider is asked for a token
//! before every connection, and the first connection is retried only when
//! the options say so.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use arqon_client::{
    Client, ClientError, ClientEvent, ConnectionState, StopReason, SubscriptionEvent,
};
use arqon_config::AuthMode;
use arqonbus_tests::TestServer;
use arqonbus_tests::client::{self, Proxy, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const ADMIN: &str = "the-admin-token";

/// Events until [`ClientEvent::Closed`].
async fn events_until_closed(events: &mut mpsc::Receiver<ClientEvent>) -> Vec<ClientEvent> {
    let mut seen = Vec::new();
    loop {
        let event = within("client events", events.recv()).await.unwrap();
        let closed = matches!(event, ClientEvent::Closed);
        seen.push(event);
        if closed {
            return seen;
        }
    }
}

#[derive(Debug)]
struct NoToken;

impl std::fmt::Display for NoToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no token")
    }
}

impl std::error::Error for NoToken {}

#[tokio::test]
async fn the_token_provider_is_asked_before_every_connection() {
    let server = TestServer::for_clients(|b| b.auth(AuthMode::Token).admin_token(ADMIN)).await;
    let proxy = Proxy::start(server.addr).await;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let client = Client::connect(client::options(&proxy.url()).token_provider(move || {
        let call = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            // The second call fails once: that attempt is retried.
            if call == 1 {
                Err(NoToken)
            } else {
                Ok(ADMIN.to_owned())
            }
        }
    }))
    .await
    .unwrap();
    let mut events = client.events().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The admin token makes `create_channel` allowed.
    client
        .create_channel("tok", "one", None, None)
        .await
        .unwrap();

    // Cut and reopened at once: the proxy accepts every attempt.
    proxy.cut();
    proxy.resume();
    loop {
        match within("reconnected", events.recv()).await.unwrap() {
            ClientEvent::Reconnected { attempts, .. } => {
                assert_eq!(attempts, 2, "the failed token costs one attempt");
                break;
            }
            _ => continue,
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3, "one call per attempt");
    client
        .create_channel("tok", "two", None, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_401_at_reconnect_stops_retrying() {
    let server = TestServer::for_clients(|b| b.auth(AuthMode::Token).admin_token(ADMIN)).await;
    let proxy = Proxy::start(server.addr).await;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let client = Client::connect(client::options(&proxy.url()).token_provider(move || {
        // The first token is good; later ones were revoked.
        let token = if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            ADMIN
        } else {
            "revoked"
        };
        async move { Ok::<_, NoToken>(token.to_owned()) }
    }))
    .await
    .unwrap();
    let mut events = client.events().unwrap();
    let mut sub = client.join_channel("auth", "feed").await.unwrap();

    proxy.cut();
    proxy.resume();
    let seen = events_until_closed(&mut events).await;
    let stopped = seen
        .iter()
        .find_map(|e| match e {
            ClientEvent::Stopped(reason) => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("a Stopped event: {seen:?}"));
    assert!(
        matches!(stopped, StopReason::Refused { status: 401, .. }),
        "{stopped:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2, "no retry after the 401");
    assert_eq!(client.state(), ConnectionState::Closed);
    assert_eq!(client.stop_reason(), Some(stopped.clone()));
    let err = client.ping().await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Stopped(reason) if *reason == stopped),
        "{err:?}"
    );
    // The subscription ended, saying why.
    loop {
        match within("the subscription ends", sub.recv()).await {
            Some(SubscriptionEvent::Removed { reason }) => {
                assert!(reason.contains("401"), "{reason}");
                break;
            }
            Some(_) => {}
            None => panic!("ended without a Removed event"),
        }
    }
}

/// `POST /api/disconnect` (SPEC §17), over a raw HTTP/1.1 request.
async fn disconnect(addr: SocketAddr, key: &str, client_id: &str) -> String {
    let body = format!(r#"{{"client_id":"{client_id}"}}"#);
    let request = format!(
        "POST /api/disconnect HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    within("the API answers", stream.read_to_string(&mut response))
        .await
        .unwrap();
    response
}

#[tokio::test]
async fn an_operators_disconnect_4003_stops_retrying() {
    let server = TestServer::for_clients(|b| b.api_key("api-key")).await;
    let client = Client::connect(server.options()).await.unwrap();
    let mut events = client.events().unwrap();
    let id = client.client_id().unwrap();
    let response = disconnect(server.addr, "api-key", id.as_str()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let seen = events_until_closed(&mut events).await;
    assert!(
        seen.iter().any(|e| matches!(
            e,
            ClientEvent::Stopped(StopReason::DisconnectedByOperator { .. })
        )),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, ClientEvent::Reconnected { .. })),
        "{seen:?}"
    );
    let err = client.status().await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Stopped(StopReason::DisconnectedByOperator { .. })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_first_connection_is_retried_only_when_asked() {
    let server = TestServer::for_clients(|b| b).await;
    let proxy = Proxy::start(server.addr).await;
    proxy.pause();
    let err = Client::connect(client::options(&proxy.url()))
        .await
        .unwrap_err();
    assert!(
        !matches!(err, ClientError::Stopped(_)),
        "fails at once: {err:?}"
    );

    // The token provider counts the attempts.
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let options = client::options(&proxy.url())
        .retry_first_connect(true)
        .token_provider(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, NoToken>("unused".to_owned()) }
        });
    let connecting = tokio::spawn(Client::connect(options));
    within("two attempts failed", async {
        while calls.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    proxy.resume();
    let client = within("connected after retries", connecting)
        .await
        .unwrap()
        .unwrap();
    client.ping().await.unwrap();

    // A permanent refusal is not retried.
    let guarded = TestServer::for_clients(|b| b.auth(AuthMode::Token).admin_token(ADMIN)).await;
    let err = Client::connect(guarded.options().token("wrong").retry_first_connect(true))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Refused { status: 401, .. }),
        "{err:?}"
    );
}
