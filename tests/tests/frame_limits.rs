//! Frame limits (SPEC §2): a text frame larger than
//! `ARQONBUS_MAX_MESSAGE_SIZE` ends the connection with close code 1009,
//! one at the limit is accepted, the welcome frame reports the limit, and a
//! binary frame is a `VALIDATION_ERROR` that leaves the connection open.

use std::time::Duration;

use arqonbus_tests::{TestServer, assert_error, envelope};
use serde_json::{Value, json};

const LIMIT: usize = 1024;

/// A valid channel message with `ack`, padded to exactly `size` bytes.
fn frame_of_size(size: usize) -> (Value, String) {
    let mut frame = envelope(
        "message",
        json!({"room": "r", "channel": "c", "ack": true, "payload": {"pad": ""}}),
    );
    let bare = frame.to_string().len();
    assert!(bare <= size, "the envelope alone is {bare} bytes");
    frame["payload"]["pad"] = json!("x".repeat(size - bare));
    let text = frame.to_string();
    assert_eq!(text.len(), size);
    (frame, text)
}

#[tokio::test]
async fn the_welcome_frame_reports_the_limit() {
    let server = TestServer::with(|b| b.max_message_size(LIMIT)).await;
    let client = server.connect().await;
    assert_eq!(
        client.welcome["payload"]["limits"]["max_message_size"],
        LIMIT
    );
}

#[tokio::test]
async fn a_frame_at_the_limit_is_accepted() {
    let server = TestServer::with(|b| b.max_message_size(LIMIT)).await;
    let mut sender = server.connect().await;
    let mut receiver = server.connect().await;
    sender.join("r", "c").await;
    receiver.join("r", "c").await;

    for size in [LIMIT - 100, LIMIT - 1, LIMIT] {
        let (frame, text) = frame_of_size(size);
        sender.send_text(text).await;
        let ack = sender.recv().await;
        assert_eq!(ack["request_id"], frame["id"], "{size} bytes: {ack}");
        assert_eq!(ack["status"], "success");
        assert_eq!(ack["payload"]["delivered"], 1);
        let got = receiver.recv().await;
        assert_eq!(got["payload"], frame["payload"]);
    }
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009() {
    let server = TestServer::with(|b| b.max_message_size(LIMIT)).await;
    let mut observer = server.connect().await;
    let mut client = server.connect().await;
    client.join("r", "c").await;
    observer.join("r", "c").await;

    let (_, text) = frame_of_size(LIMIT + 1);
    client.send_text(text).await;
    let (ending, frames) = client.until_closed(Duration::from_secs(5)).await;
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(ending.code(), Some(1009), "{ending:?}");
    observer.expect_silence(Duration::from_millis(200)).await;

    // Much larger frames too.
    let mut client = server.connect().await;
    client.send_text("x".repeat(64 * 1024)).await;
    let (ending, _) = client.until_closed(Duration::from_secs(5)).await;
    assert_eq!(ending.code(), Some(1009), "{ending:?}");

    // Other connections are unaffected.
    let pong = observer.command("ping", json!({})).await;
    assert_eq!(pong["status"], "success");
}

#[tokio::test]
async fn a_binary_frame_is_refused_but_the_connection_stays() {
    let server = TestServer::with(|b| b.max_message_size(LIMIT)).await;
    let mut client = server.connect().await;
    let (_, text) = frame_of_size(LIMIT - 10);
    client.send_binary(text.into_bytes()).await;
    let err = client.recv().await;
    assert_error(&err, "VALIDATION_ERROR", None, None);
    let pong = client.command("ping", json!({})).await;
    assert_eq!(pong["status"], "success");
}
