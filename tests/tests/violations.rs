//! Protocol violations (`VALIDATION_ERROR`, `UNSUPPORTED_VERSION`,
//! client-sent `system`, `RATE_LIMITED`) are counted per connection in a
//! sliding window (SPEC §6): the `ARQONBUS_MAX_VIOLATIONS`-th gets
//! `TOO_MANY_VIOLATIONS` instead of its own error, then close 1008. Errors
//! that are not violations (unknown command, not subscribed, not found,
//! forbidden command) never count.

use std::time::Duration;

use arqonbus_tests::{TestClient, TestServer, assert_error, envelope};
use serde_json::{Value, json};

const CLOSE_WAIT: Duration = Duration::from_secs(5);

async fn still_alive(client: &mut TestClient) {
    let pong = client.command("ping", json!({})).await;
    assert_eq!(pong["status"], "success", "{pong}");
}

/// Sends `frame` and expects the final error and a 1008 close.
async fn expect_closed_by(client: &mut TestClient, frame: &Value) {
    client.send_json(frame).await;
    let (ending, frames) = client.until_closed(CLOSE_WAIT).await;
    assert_eq!(frames.len(), 1, "one final error, nothing else: {frames:?}");
    assert_error(&frames[0], "TOO_MANY_VIOLATIONS", Some(&frame["id"]), None);
    assert_eq!(ending.code(), Some(1008), "{ending:?}");
}

#[tokio::test]
async fn the_third_violation_closes_with_1008() {
    let server = TestServer::with(|b| b.max_violations(3)).await;
    let mut client = server.connect().await;

    client.send_text("not json").await;
    assert_error(&client.recv().await, "VALIDATION_ERROR", None, None);
    let frame = envelope("command", json!({"version": "2.0", "command": "ping"}));
    client.send_json(&frame).await;
    assert_eq!(client.recv().await["error_code"], "UNSUPPORTED_VERSION");

    // Third: a well-formed id, so the final error names it.
    let frame = envelope("message", json!({"payload": {}}));
    expect_closed_by(&mut client, &frame).await;

    // The server forgot the client.
    let mut observer = server.connect().await;
    arqonbus_tests::eventually(CLOSE_WAIT, "the closed client is gone", async || {
        observer.status().await["clients"]["active"] == 1
    })
    .await;
}

#[tokio::test]
async fn client_sent_system_counts() {
    let server = TestServer::with(|b| b.max_violations(3)).await;
    let mut client = server.connect().await;
    client.join("r", "c").await;
    for _ in 0..2 {
        let frame = envelope(
            "system",
            json!({"room": "r", "channel": "c", "payload": {}}),
        );
        client.send_json(&frame).await;
        assert_error(&client.recv().await, "FORBIDDEN", Some(&frame["id"]), None);
    }
    let frame = envelope(
        "system",
        json!({"room": "r", "channel": "c", "payload": {}}),
    );
    expect_closed_by(&mut client, &frame).await;
}

#[tokio::test]
async fn binary_frames_count() {
    let server = TestServer::with(|b| b.max_violations(3)).await;
    let mut client = server.connect().await;
    for _ in 0..2 {
        client.send_binary(vec![1, 2, 3]).await;
        assert_eq!(client.recv().await["error_code"], "VALIDATION_ERROR");
    }
    client.send_binary(vec![1, 2, 3]).await;
    let (ending, frames) = client.until_closed(CLOSE_WAIT).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_error(&frames[0], "TOO_MANY_VIOLATIONS", None, None);
    assert_eq!(ending.code(), Some(1008));
}

#[tokio::test]
async fn errors_that_are_not_violations_do_not_count() {
    let server = TestServer::with(|b| b.max_violations(3)).await;
    let mut client = server.connect().await;
    let mut member = server.connect().await;
    member.join("r", "c").await;

    for _ in 0..4 {
        let reply = client.command("frobnicate", json!({})).await;
        assert_eq!(reply["error_code"], "UNKNOWN_COMMAND");
        let frame = client.publish("r", "c", json!({})).await;
        let reply = client.recv().await;
        assert_eq!(reply["request_id"], frame["id"]);
        assert_eq!(reply["error_code"], "NOT_SUBSCRIBED");
        let reply = client
            .command("leave_channel", json!({"room": "no", "channel": "where"}))
            .await;
        assert_eq!(reply["error_code"], "CHANNEL_NOT_FOUND");
        let reply = client.command("join_channel", json!({})).await;
        assert_eq!(reply["error_code"], "INVALID_ARGUMENT");
        let frame = envelope(
            "message",
            json!({"to_client": "arq_client_00000000000000000000000000000000", "payload": {}}),
        );
        client.send_json(&frame).await;
        assert_eq!(client.recv().await["error_code"], "TARGET_NOT_FOUND");
        let reply = client
            .command(
                "delete_channel",
                json!({"room": "integriguard", "channel": "telemetry-stream"}),
            )
            .await;
        assert_eq!(reply["error_code"], "FORBIDDEN");
    }
    still_alive(&mut client).await;

    // Two real violations are still tolerated; the third is not.
    for _ in 0..2 {
        client.send_text("{").await;
        assert_eq!(client.recv().await["error_code"], "VALIDATION_ERROR");
    }
    still_alive(&mut client).await;
    let frame = envelope("message", json!({"version": 1, "payload": {}}));
    expect_closed_by(&mut client, &frame).await;
}

#[tokio::test]
async fn rate_limited_frames_count() {
    let server = TestServer::with(|b| {
        b.max_violations(3)
            .rate_limit_per_sec(1)
            .rate_limit_burst(2)
    })
    .await;
    let mut client = server.connect().await;
    let frames: Vec<Value> = (0..5)
        .map(|_| envelope("command", json!({"command": "ping"})))
        .collect();
    for frame in &frames {
        client.send_json(frame).await;
    }
    let (ending, got) = client.until_closed(CLOSE_WAIT).await;
    let codes: Vec<&Value> = got.iter().map(|f| &f["error_code"]).collect();
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[0]["status"], "success");
    assert_eq!(got[1]["status"], "success");
    assert_eq!(codes[2], "RATE_LIMITED");
    assert_eq!(codes[3], "RATE_LIMITED");
    assert_eq!(codes[4], "TOO_MANY_VIOLATIONS");
    assert_eq!(got[4]["request_id"], frames[4]["id"]);
    assert_eq!(got[4]["payload"]["code"], 429);
    assert_eq!(ending.code(), Some(1008));
}

#[tokio::test]
async fn the_default_limit_is_ten() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    for _ in 0..9 {
        client.send_text("[]").await;
        assert_eq!(client.recv().await["error_code"], "VALIDATION_ERROR");
    }
    still_alive(&mut client).await;
    let frame = envelope("shout", json!({}));
    expect_closed_by(&mut client, &frame).await;
}

#[tokio::test]
async fn violations_slide_out_of_the_window() {
    let window = Duration::from_secs(1);
    let server = TestServer::with(|b| b.max_violations(3).violation_window(window)).await;
    let mut client = server.connect().await;
    for _ in 0..2 {
        client.send_text("nope").await;
        assert_eq!(client.recv().await["error_code"], "VALIDATION_ERROR");
    }
    tokio::time::sleep(window + Duration::from_millis(500)).await;
    for _ in 0..2 {
        client.send_text("nope").await;
        assert_eq!(client.recv().await["error_code"], "VALIDATION_ERROR");
    }
    still_alive(&mut client).await;
    client.send_text("nope").await;
    let (ending, frames) = client.until_closed(CLOSE_WAIT).await;
    assert_eq!(frames[0]["error_code"], "TOO_MANY_VIOLATIONS");
    assert_eq!(ending.code(), Some(1008));
}
