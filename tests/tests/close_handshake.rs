//! The WebSocket close handshake (SPEC §11, §18): a client's Close frame is
//! answered with a Close frame carrying the same code before the TCP
//! connection ends, on the bus and on the telemetry listener; invalid UTF-8
//! in a text frame closes with 1007 and every other framing violation
//! (unmasked frame, reserved bits, unknown opcode, stray continuation) with
//! 1002; every close the server starts carries a code and a non-empty
//! reason.

use std::net::SocketAddr;
use std::time::Duration;

use arqon_config::AuthMode;
use arqonbus_tests::{Ending, RawSocket, TestClient, TestServer, envelope, raw_upgrade};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Sends Close(1000, "bye") and returns the close frame the server answers
/// with; panics if the connection ends without one.
async fn close_and_read_echo(client: &mut TestClient) -> CloseFrame {
    client
        .ws
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })))
        .await
        .expect("send close");
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match client.ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return frame,
                Some(Ok(Message::Close(None))) => panic!("a close frame without a code"),
                Some(Ok(_)) => continue,
                other => panic!("the connection ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("the echo arrives in time")
}

#[tokio::test]
async fn the_bus_echoes_a_client_close() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let echo = close_and_read_echo(&mut client).await;
    assert_eq!(u16::from(echo.code), 1000);
    assert_eq!(echo.reason.as_str(), "bye");
}

#[tokio::test]
async fn the_telemetry_listener_echoes_a_client_close() {
    let server = TestServer::full(|b| b).await;
    let (mut socket, first) = server.telemetry("").await;
    assert_eq!(first["payload"]["eventType"], "telemetry_connected");
    let echo = close_and_read_echo(&mut socket).await;
    assert_eq!(u16::from(echo.code), 1000);
    assert_eq!(echo.reason.as_str(), "bye");
}

/// The echo comes on the raw wire too, unmasked, before the end of TCP.
#[tokio::test]
async fn the_echo_precedes_the_end_of_the_tcp_connection() {
    let server = TestServer::start().await;
    let mut socket = upgraded(server.addr).await;
    socket.send_close(1000, "bye").await;
    let close = socket.read_close().await;
    assert!(!close.masked, "server frames are unmasked");
    assert_eq!(close.close(), Some((1000, "bye".to_owned())));
    assert!(
        socket.ends_within(Duration::from_secs(5)).await,
        "the server ends the TCP connection after the handshake"
    );
}

async fn upgraded(addr: SocketAddr) -> RawSocket {
    let (response, socket) = raw_upgrade(addr, "/", &[]).await;
    assert_eq!(response.status, 101, "{response:?}");
    socket
}

/// Sends one hand-built frame and returns the server's close code and
/// reason, checking the close frame is well formed and comes before the
/// TCP connection ends.
async fn close_after(addr: SocketAddr, first: u8, mask: bool, payload: &[u8]) -> (u16, String) {
    let mut socket = upgraded(addr).await;
    socket.send_frame(first, mask, payload).await;
    let close = socket.read_close().await;
    assert!(!close.masked, "server frames are unmasked: {close:?}");
    assert!(close.fin, "{close:?}");
    close.close().expect("the close frame carries a code")
}

async fn assert_framing_rules(addr: SocketAddr) {
    let cases: [(&str, u8, bool, &[u8], u16); 7] = [
        (
            "invalid UTF-8 in a text frame",
            0x81,
            true,
            b"{\"a\":\"\xff\xfe\"}",
            1007,
        ),
        ("an unmasked client frame", 0x81, false, b"{}", 1002),
        ("RSV1 set without an extension", 0xC1, true, b"{}", 1002),
        ("an unknown opcode 0x3", 0x83, true, b"x", 1002),
        ("a stray continuation frame", 0x80, true, b"x", 1002),
        ("a fragmented ping", 0x09, true, b"x", 1002),
        ("a ping over 125 bytes", 0x89, true, &[b'p'; 126], 1002),
    ];
    for (what, first, mask, payload, expected) in cases {
        let (code, reason) = close_after(addr, first, mask, payload).await;
        assert_eq!(code, expected, "{what}: reason {reason:?}");
        assert!(!reason.is_empty(), "{what}: the close has a reason");
    }
}

#[tokio::test]
async fn framing_violations_on_the_bus_close_with_1007_or_1002() {
    let server = TestServer::start().await;
    assert_framing_rules(server.addr).await;
}

#[tokio::test]
async fn framing_violations_on_the_telemetry_listener_close_with_1007_or_1002() {
    let server = TestServer::full(|b| b).await;
    assert_framing_rules(server.telemetry_addr.expect("telemetry")).await;
}

/// Invalid UTF-8 is caught in a fragmented message too, wherever the
/// fragments split it.
#[tokio::test]
async fn invalid_utf8_across_fragments_closes_with_1007() {
    let server = TestServer::start().await;
    let mut socket = upgraded(server.addr).await;
    socket.send_frame(0x01, true, b"{\"a\":\"").await;
    socket.send_frame(0x00, true, b"ok").await;
    socket.send_frame(0x80, true, b"\xc3\x28\"}").await;
    let close = socket.read_close().await;
    let (code, reason) = close.close().expect("a code");
    assert_eq!(code, 1007, "{reason}");
    assert!(!reason.is_empty());
}

/// Whatever valid code a client closes with comes back.
#[tokio::test]
async fn the_echo_carries_the_client_code() {
    let server = TestServer::full(|b| b).await;
    for addr in [server.addr, server.telemetry_addr.expect("telemetry")] {
        for code in [1000, 1001, 3000, 4001, 4999] {
            let mut socket = upgraded(addr).await;
            socket.send_close(code, "leaving").await;
            let close = socket.read_close().await;
            assert_eq!(
                close.close().map(|(c, _)| c),
                Some(code),
                "{addr}: {close:?}"
            );
        }
    }
}

/// A malformed client close is a framing violation too (RFC 6455 §5.5.1,
/// §7.4): a one-byte payload or a code no endpoint may send gets 1002, a
/// reason that is not UTF-8 gets 1007; an empty close is echoed empty.
#[tokio::test]
async fn malformed_client_closes_are_answered_with_1002_or_1007() {
    let server = TestServer::full(|b| b).await;
    let cases: [(&str, &[u8], u16); 4] = [
        ("a one-byte close payload", &[0x03], 1002),
        ("the reserved code 1005", &[0x03, 0xed], 1002),
        ("the unassigned code 999", &[0x03, 0xe7], 1002),
        (
            "a reason that is not UTF-8",
            &[0x03, 0xe8, 0xff, 0xfe],
            1007,
        ),
    ];
    for addr in [server.addr, server.telemetry_addr.expect("telemetry")] {
        for (what, payload, expected) in cases {
            let (code, reason) = close_after(addr, 0x88, true, payload).await;
            assert_eq!(code, expected, "{addr}, {what}: {reason:?}");
            assert!(!reason.is_empty(), "{addr}, {what}");
        }
        let mut socket = upgraded(addr).await;
        socket.send_frame(0x88, true, &[]).await;
        let close = socket.read_close().await;
        assert_eq!(
            close.close(),
            None,
            "{addr}: an empty close is echoed empty"
        );
    }
}

/// A valid text frame split across a fragment and its continuation is not
/// a violation: the bus answers it.
#[tokio::test]
async fn a_proper_continuation_is_accepted() {
    let server = TestServer::start().await;
    let mut socket = upgraded(server.addr).await;
    let welcome = socket.read_frame().await.expect("welcome");
    assert_eq!(welcome.opcode, 0x1);
    let frame = envelope("command", json!({"command": "ping"})).to_string();
    let (head, tail) = frame.as_bytes().split_at(10);
    socket.send_frame(0x01, true, head).await;
    socket.send_frame(0x80, true, tail).await;
    let reply = socket.read_frame().await.expect("reply");
    assert_eq!(reply.opcode, 0x1, "{reply:?}");
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).expect("json");
    assert_eq!(reply["payload"]["pong"], true, "{reply}");
}

fn assert_code_and_reason(ending: &Ending, code: u16) {
    match ending {
        Ending::Closed(Some(frame)) => {
            assert_eq!(u16::from(frame.code), code, "{frame:?}");
            assert!(!frame.reason.is_empty(), "a non-empty reason: {frame:?}");
        }
        other => panic!("expected a close frame with {code}, got {other:?}"),
    }
}

#[tokio::test]
async fn an_idle_close_carries_1001_and_a_reason() {
    let server = TestServer::with(|b| b.idle_timeout(Duration::from_secs(1))).await;
    let mut client = server.connect().await;
    let (ending, _) = client.until_closed(Duration::from_secs(10)).await;
    assert_code_and_reason(&ending, 1001);
}

#[tokio::test]
async fn a_violation_close_carries_1008_and_a_reason() {
    let server = TestServer::with(|b| b.max_violations(2)).await;
    let mut client = server.connect().await;
    client.send_text("not json").await;
    client.send_text("still not json").await;
    let (ending, frames) = client.until_closed(Duration::from_secs(5)).await;
    assert_eq!(
        frames.last().map(|f| f["error_code"].clone()),
        Some(json!("TOO_MANY_VIOLATIONS")),
        "{frames:?}"
    );
    assert_code_and_reason(&ending, 1008);
}

#[tokio::test]
async fn a_too_big_close_carries_1009_and_a_reason() {
    let server = TestServer::with(|b| b.max_message_size(1024)).await;
    let mut client = server.connect().await;
    client.send_text("x".repeat(4096)).await;
    let (ending, _) = client.until_closed(Duration::from_secs(5)).await;
    assert_code_and_reason(&ending, 1009);
}

#[tokio::test]
async fn a_shutdown_close_carries_1001_and_a_reason() {
    let mut server = TestServer::full(|b| b).await;
    let mut client = server.connect().await;
    let (mut telemetry, _) = server.telemetry("events=stats").await;
    server.begin_shutdown();
    let (ending, _) = client.until_closed(Duration::from_secs(10)).await;
    assert_code_and_reason(&ending, 1001);
    let (ending, _) = telemetry.until_closed(Duration::from_secs(10)).await;
    assert_code_and_reason(&ending, 1001);
}

#[tokio::test]
async fn a_replaced_connection_close_carries_4000_and_a_reason() {
    const SECRET: &str = "close-handshake-secret-012345";
    let server = TestServer::with(|b| b.auth(AuthMode::Jwt).jwt_secret(SECRET)).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "twin", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign");
    let mut first = server.connect_query(&format!("token={jwt}")).await;
    let _second = server.connect_query(&format!("token={jwt}")).await;
    let (ending, _) = first.until_closed(Duration::from_secs(5)).await;
    assert_code_and_reason(&ending, 4000);
}
