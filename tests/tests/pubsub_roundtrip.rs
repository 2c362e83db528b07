//! Channel messages reach exactly the subscribers of their `room:channel`:
//! two rooms stay isolated, the sender is excluded unless it asks for an
//! echo, and subscribers receive the canonical envelope with `seq`/`epoch`.

use std::time::Duration;

use arqonbus_tests::{TestServer, envelope};
use serde_json::json;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn two_rooms_are_isolated() {
    let server = TestServer::start().await;
    let mut explorer = server.connect().await;
    let mut explorer2 = server.connect().await;
    let mut chatter = server.connect().await;
    let mut chatter2 = server.connect().await;
    explorer.join("science", "explore").await;
    explorer2.join("science", "explore").await;
    chatter.join("chat", "public").await;
    chatter2.join("chat", "public").await;

    let sent = explorer
        .publish("science", "explore", json!({"text": "found a comet"}))
        .await;
    chatter
        .publish("chat", "public", json!({"text": "hello all"}))
        .await;

    let got = explorer2.recv().await;
    assert_eq!(got["id"], sent["id"]);
    assert_eq!(got["payload"]["text"], "found a comet");
    let got = chatter2.recv().await;
    assert_eq!(got["payload"]["text"], "hello all");

    explorer.expect_silence(QUIET).await;
    chatter.expect_silence(QUIET).await;
    explorer2.expect_silence(QUIET).await;
    chatter2.expect_silence(QUIET).await;
}

#[tokio::test]
async fn subscribers_get_the_canonical_envelope() {
    let server = TestServer::start().await;
    let mut sender = server.connect().await;
    let mut receiver = server.connect().await;
    sender.join("science", "explore").await;
    let joined = receiver.join("science", "explore").await;
    let epoch = joined["payload"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    assert_eq!(joined["payload"]["seq"], 0);

    let mut frame = envelope(
        "event",
        json!({
            "room": "science:explore",
            "payload": {"n": 1},
            "metadata": {"trace": "t1"},
            "from": "arq_client_spoofed",
            "sender": "arq_client_spoofed",
            "unknown_field": true,
        }),
    );
    frame["timestamp"] = json!("2020-01-01T00:00:00");
    sender.send_json(&frame).await;

    let got = receiver.recv().await;
    assert_eq!(got["version"], "1.0");
    assert_eq!(got["id"], frame["id"]);
    assert_eq!(got["type"], "message");
    assert_eq!(got["room"], "science");
    assert_eq!(got["channel"], "explore");
    assert_eq!(got["sender"], sender.client_id.as_str());
    assert_eq!(got["payload"], json!({"n": 1}));
    assert_eq!(got["metadata"], json!({"trace": "t1"}));
    assert_eq!(got["seq"], 1);
    assert_eq!(got["epoch"], epoch.as_str());
    assert!(got.get("unknown_field").is_none() && got.get("from").is_none());
    let timestamp = got["timestamp"].as_str().expect("timestamp");
    assert!(
        timestamp.ends_with('Z') && timestamp.len() == 24,
        "{timestamp}"
    );
    assert_ne!(
        timestamp, "2020-01-01T00:00:00.000Z",
        "the server writes its own time"
    );
}

#[tokio::test]
async fn echo_includes_the_sender() {
    let server = TestServer::start().await;
    let mut sender = server.connect().await;
    let mut other = server.connect().await;
    sender.join("r", "c").await;
    other.join("r", "c").await;
    let frame = envelope(
        "message",
        json!({"room": "r", "channel": "c", "payload": {}, "metadata": {"echo": true}}),
    );
    sender.send_json(&frame).await;
    assert_eq!(sender.recv().await["id"], frame["id"]);
    assert_eq!(other.recv().await["id"], frame["id"]);
}

#[tokio::test]
async fn acks_report_delivery_and_seq() {
    let server = TestServer::start().await;
    let mut sender = server.connect().await;
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    for c in [&mut sender, &mut a, &mut b] {
        c.join("r", "c").await;
    }
    let frame = envelope(
        "message",
        json!({"room": "r", "channel": "c", "payload": {}, "ack": true}),
    );
    sender.send_json(&frame).await;
    let ack = sender.recv().await;
    assert_eq!(ack["type"], "response");
    assert_eq!(ack["request_id"], frame["id"]);
    assert_eq!(ack["status"], "success");
    assert_eq!(ack["payload"]["delivered"], 2);
    assert_eq!(ack["payload"]["seq"], 1);
    assert!(ack["payload"]["stored"].is_boolean());

    // Without ack, a successful publish gets no reply.
    sender.publish("r", "c", json!({})).await;
    sender.expect_silence(QUIET).await;
    assert_eq!(a.recv().await["seq"], 1);
    assert_eq!(a.recv().await["seq"], 2);
}

#[tokio::test]
async fn publishing_requires_joining_unless_configured_otherwise() {
    let server = TestServer::start().await;
    let mut member = server.connect().await;
    let mut outsider = server.connect().await;
    member.join("r", "c").await;
    let frame = outsider.publish("r", "c", json!({})).await;
    let err = outsider.recv().await;
    assert_eq!(err["error_code"], "NOT_SUBSCRIBED");
    assert_eq!(err["request_id"], frame["id"]);
    member.expect_silence(QUIET).await;

    let open = TestServer::with(|b| b.publish_requires_join(false)).await;
    let mut member = open.connect().await;
    let mut outsider = open.connect().await;
    member.join("r", "c").await;
    outsider.publish("r", "c", json!({"x": 1})).await;
    assert_eq!(member.recv().await["payload"]["x"], 1);
}
