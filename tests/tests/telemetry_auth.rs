//! The telemetry listener's own rules (SPEC §18): in `token` and `jwt`
//! modes it requires admin credentials (the admin token, or a JWT with
//! `role: admin`, by query or bearer header), else HTTP 401; in `none`
//! mode nothing is needed. It takes at most
//! `ARQONBUS_TELEMETRY_MAX_CONNECTIONS` sockets (beyond: 503, and a slot is
//! free again once a socket closes); an inbound frame over 4096 bytes
//! closes with 1009, smaller inbound frames are ignored.

use std::net::SocketAddr;
use std::time::Duration;

use arqon_config::AuthMode;
use arqonbus_tests::{
    Ending, TestServer, eventually, raw_upgrade, upgrade_request, upgrade_request_with,
};
use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "telemetry-auth-secret-0123456";

fn jwt(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

fn exp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600
}

fn telemetry(server: &TestServer) -> SocketAddr {
    server.telemetry_addr.expect("telemetry listener")
}

#[tokio::test]
async fn token_mode_requires_the_admin_token() {
    let server = TestServer::full(|b| b.auth(AuthMode::Token).admin_token("s3cret")).await;
    let addr = telemetry(&server);
    for target in ["/", "/?token=wrong", "/?token=", "/?events=stats"] {
        let response = upgrade_request(addr, target).await;
        assert_eq!(response.status, 401, "{target}: {response:?}");
        assert!(response.json().is_object(), "a JSON body: {response:?}");
    }
    let wrong_bearer = upgrade_request_with(addr, "/", &[("Authorization", "Bearer nope")]).await;
    assert_eq!(wrong_bearer.status, 401);

    assert_eq!(upgrade_request(addr, "/?token=s3cret").await.status, 101);
    let bearer = upgrade_request_with(addr, "/", &[("Authorization", "Bearer s3cret")]).await;
    assert_eq!(bearer.status, 101, "{bearer:?}");
    // The bus itself still lets a user in without a token.
    assert_eq!(upgrade_request(server.addr, "/").await.status, 101);
}

#[tokio::test]
async fn jwt_mode_requires_an_admin_jwt() {
    let server = TestServer::full(|b| b.auth(AuthMode::Jwt).jwt_secret(SECRET)).await;
    let addr = telemetry(&server);
    let user = jwt(json!({"sub": "u1", "exp": exp()}));
    let explicit_user = jwt(json!({"sub": "u2", "exp": exp(), "role": "user"}));
    let admin = jwt(json!({"sub": "ops", "exp": exp(), "role": "admin"}));
    for target in [
        "/".to_owned(),
        format!("/?token={user}"),
        format!("/?token={explicit_user}"),
    ] {
        let response = upgrade_request(addr, &target).await;
        assert_eq!(response.status, 401, "{target}: {response:?}");
    }
    let bearer_user =
        upgrade_request_with(addr, "/", &[("Authorization", &format!("Bearer {user}"))]).await;
    assert_eq!(bearer_user.status, 401);

    assert_eq!(
        upgrade_request(addr, &format!("/?token={admin}"))
            .await
            .status,
        101
    );
    let bearer_admin =
        upgrade_request_with(addr, "/", &[("Authorization", &format!("Bearer {admin}"))]).await;
    assert_eq!(bearer_admin.status, 101, "{bearer_admin:?}");
    // And the admin socket streams: its first frame is the greeting.
    let (mut socket, first) = server.telemetry(&format!("token={admin}")).await;
    assert_eq!(first["payload"]["eventType"], "telemetry_connected");
    socket.ws.close(None).await.expect("close");
}

#[tokio::test]
async fn none_mode_needs_no_credential() {
    let server = TestServer::full(|b| b).await;
    let addr = telemetry(&server);
    assert_eq!(upgrade_request(addr, "/").await.status, 101);
    assert_eq!(upgrade_request(addr, "/?token=anything").await.status, 101);
}

#[tokio::test]
async fn the_connection_cap_refuses_with_503_until_a_slot_frees() {
    let server = TestServer::full(|b| b.telemetry_max_connections(2)).await;
    let addr = telemetry(&server);
    let (first, _) = server.telemetry("").await;
    let (_second, _) = server.telemetry("").await;
    let third = upgrade_request(addr, "/").await;
    assert_eq!(third.status, 503, "{third:?}");
    assert!(third.json().is_object(), "{third:?}");

    let mut first = first;
    first.ws.close(None).await.expect("close");
    let _ = first.until_closed(Duration::from_secs(5)).await;
    drop(first);
    let mut held = None;
    eventually(
        Duration::from_secs(5),
        "a freed slot is reused",
        async || {
            let (response, socket) = raw_upgrade(addr, "/", &[]).await;
            let ok = response.status == 101;
            if ok {
                held = Some(socket);
            }
            ok
        },
    )
    .await;
    assert_eq!(upgrade_request(addr, "/").await.status, 503, "full again");

    // A socket that vanishes without a close frame frees its slot too.
    drop(held);
    eventually(
        Duration::from_secs(5),
        "an abruptly dropped slot is reused",
        async || upgrade_request(addr, "/").await.status == 101,
    )
    .await;
}

#[tokio::test]
async fn oversized_inbound_frames_close_with_1009_small_ones_are_ignored() {
    let server = TestServer::full(|b| b.telemetry_stats_interval(Duration::from_millis(200))).await;
    let (mut socket, _) = server.telemetry("events=stats").await;
    socket
        .ws
        .send(Message::Text("hello, small frame".into()))
        .await
        .expect("send small");
    socket
        .ws
        .send(Message::Binary(vec![7u8; 100].into()))
        .await
        .expect("send small binary");
    // Ignored: no reply, the socket stays open and still streams events.
    let stats = socket.recv().await;
    assert_eq!(stats["payload"]["eventType"], "stats", "{stats}");
    let stats = socket.recv().await;
    assert_eq!(stats["payload"]["eventType"], "stats", "{stats}");

    socket
        .ws
        .send(Message::Text("x".repeat(5000).into()))
        .await
        .expect("send big");
    let (ending, _) = socket.until_closed(Duration::from_secs(5)).await;
    match ending {
        Ending::Closed(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1009, "{frame:?}");
            assert!(!frame.reason.is_empty(), "{frame:?}");
        }
        other => panic!("expected close 1009, got {other:?}"),
    }
}

#[tokio::test]
async fn an_oversized_binary_frame_closes_with_1009_too() {
    let server = TestServer::full(|b| b).await;
    let (mut socket, _) = server.telemetry("").await;
    socket
        .ws
        .send(Message::Binary(vec![0u8; 4097].into()))
        .await
        .expect("send big");
    let (ending, _) = socket.until_closed(Duration::from_secs(5)).await;
    assert_eq!(ending.code(), Some(1009), "{ending:?}");
}

#[tokio::test]
async fn a_frame_of_exactly_4096_bytes_is_still_small() {
    let server = TestServer::full(|b| b.telemetry_stats_interval(Duration::from_millis(200))).await;
    let (mut socket, _) = server.telemetry("events=stats").await;
    socket
        .ws
        .send(Message::Text("y".repeat(4096).into()))
        .await
        .expect("send");
    let stats = socket.recv().await;
    assert_eq!(stats["payload"]["eventType"], "stats", "{stats}");
}
