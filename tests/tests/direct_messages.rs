//! Direct messages (SPEC §4.2) reach only their target, whichever of the
//! three spellings names it (`to_client`, `metadata.to_client`, type
//! `private` with `payload.target`); the server sets `sender` and a client
//! cannot spoof it; an absent target is `TARGET_NOT_FOUND`; the ack of a
//! direct message is `{"delivered":1,"seq":null,"stored":false}` and direct
//! messages carry no `seq` and do not advance any channel's sequence.

use std::time::Duration;

use arqonbus_tests::{TestServer, assert_error, assert_server_time, detail_fields, envelope};
use serde_json::json;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn to_client_reaches_only_the_target() {
    let server = TestServer::start().await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;
    let mut carol = server.connect().await;
    // Bystanders in a shared channel must not see the direct message either.
    for c in [&mut alice, &mut bob, &mut carol] {
        c.join("r", "c").await;
    }

    let frame = envelope(
        "message",
        json!({"to_client": bob.client_id, "payload": {"text": "psst"}, "metadata": {"k": "v"}}),
    );
    alice.send_json(&frame).await;

    let got = bob.recv().await;
    assert_eq!(got["version"], "1.0");
    assert_eq!(got["id"], frame["id"]);
    assert_eq!(got["type"], "message");
    assert_eq!(got["sender"], alice.client_id.as_str());
    assert_eq!(got["to_client"], bob.client_id.as_str());
    assert_eq!(got["payload"], json!({"text": "psst"}));
    assert_eq!(got["metadata"], json!({"k": "v"}));
    assert_server_time(got["timestamp"].as_str().expect("timestamp"));
    assert!(
        got.get("seq").is_none(),
        "direct messages carry no seq: {got}"
    );
    assert!(got.get("epoch").is_none(), "nor an epoch: {got}");
    assert!(got.get("room").is_none() && got.get("channel").is_none());

    carol.expect_silence(QUIET).await;
    // No ack asked for: the sender hears nothing.
    alice.expect_silence(QUIET).await;
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn private_with_payload_target_is_a_direct_message() {
    let server = TestServer::start().await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;
    let mut carol = server.connect().await;

    let frame = envelope(
        "private",
        json!({"payload": {"target": bob.client_id, "text": "hi bob"}}),
    );
    alice.send_json(&frame).await;
    let got = bob.recv().await;
    assert_eq!(got["id"], frame["id"]);
    assert_eq!(got["type"], "message", "private is an input alias only");
    assert_eq!(got["sender"], alice.client_id.as_str());
    assert_eq!(got["payload"]["text"], "hi bob");
    assert!(got.get("seq").is_none());
    carol.expect_silence(QUIET).await;
    alice.expect_silence(QUIET).await;
}

#[tokio::test]
async fn metadata_to_client_is_a_direct_message() {
    let server = TestServer::start().await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;
    let mut carol = server.connect().await;

    let frame = envelope(
        "message",
        json!({"metadata": {"to_client": bob.client_id}, "payload": {"n": 7}}),
    );
    alice.send_json(&frame).await;
    let got = bob.recv().await;
    assert_eq!(got["id"], frame["id"]);
    assert_eq!(got["sender"], alice.client_id.as_str());
    assert_eq!(got["payload"], json!({"n": 7}));
    assert_eq!(got["metadata"]["to_client"], bob.client_id.as_str());
    carol.expect_silence(QUIET).await;
    alice.expect_silence(QUIET).await;
}

#[tokio::test]
async fn the_sender_cannot_be_spoofed() {
    let server = TestServer::start().await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;
    let carol = server.connect().await;

    let frame = envelope(
        "message",
        json!({
            "to_client": bob.client_id,
            "payload": {},
            "sender": carol.client_id,
            "from": carol.client_id,
            "from_client": carol.client_id,
        }),
    );
    alice.send_json(&frame).await;
    let got = bob.recv().await;
    assert_eq!(got["sender"], alice.client_id.as_str());
    assert!(got.get("from").is_none() && got.get("from_client").is_none());
}

#[tokio::test]
async fn an_absent_target_is_target_not_found() {
    let server = TestServer::start().await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;

    let frame = envelope(
        "message",
        json!({"to_client": "arq_client_00000000000000000000000000000000", "payload": {}}),
    );
    alice.send_json(&frame).await;
    let err = alice.recv().await;
    assert_error(&err, "TARGET_NOT_FOUND", Some(&frame["id"]), None);

    // A client that has left is no longer a target.
    let gone = server.connect().await;
    let gone_id = gone.client_id.clone();
    drop(gone);
    arqonbus_tests::eventually(
        Duration::from_secs(5),
        "the dropped client is gone",
        async || {
            // With an ack there is a reply either way.
            let frame = envelope(
                "message",
                json!({"to_client": gone_id, "payload": {}, "ack": true}),
            );
            bob.send_json(&frame).await;
            let reply = bob.recv().await;
            assert_eq!(reply["request_id"], frame["id"]);
            reply["error_code"] == "TARGET_NOT_FOUND"
        },
    )
    .await;

    // The error did not cost the connection anything.
    let pong = alice.command("ping", json!({})).await;
    assert_eq!(pong["status"], "success");
}

#[tokio::test]
async fn an_invalid_target_is_a_validation_error() {
    let server = TestServer::start().await;
    let mut alice = server.connect().await;

    let frame = envelope(
        "message",
        json!({"to_client": "not a client id!", "payload": {}}),
    );
    alice.send_json(&frame).await;
    let err = alice.recv().await;
    assert_error(&err, "VALIDATION_ERROR", Some(&frame["id"]), None);
    assert!(
        detail_fields(&err).contains(&"to_client".to_owned()),
        "{err}"
    );

    // `private` with no target anywhere.
    let frame = envelope("private", json!({"payload": {"text": "to whom?"}}));
    alice.send_json(&frame).await;
    let err = alice.recv().await;
    assert_error(&err, "VALIDATION_ERROR", Some(&frame["id"]), None);
    assert!(
        detail_fields(&err).contains(&"payload.target".to_owned()),
        "{err}"
    );
}

#[tokio::test]
async fn the_ack_of_a_direct_message_has_no_seq() {
    let server = TestServer::start().await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;

    let frame = envelope(
        "message",
        json!({"to_client": bob.client_id, "payload": {}, "ack": true}),
    );
    alice.send_json(&frame).await;
    let ack = alice.recv().await;
    assert_eq!(ack["type"], "response");
    assert_eq!(ack["status"], "success");
    assert_eq!(ack["request_id"], frame["id"]);
    assert_eq!(ack["sender"], "arqonbus");
    assert_eq!(
        ack["payload"],
        json!({"delivered": 1, "seq": null, "stored": false})
    );
    let got = bob.recv().await;
    assert_eq!(got["id"], frame["id"]);
    assert!(got.get("ack").is_none(), "ack is not relayed: {got}");
}

#[tokio::test]
async fn direct_messages_do_not_advance_channel_sequences() {
    let server = TestServer::start().await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;
    alice.join("r", "c").await;
    bob.join("r", "c").await;

    // A direct message that also names the channel still goes only to the
    // target, and is not a channel message.
    for _ in 0..3 {
        let frame = envelope(
            "message",
            json!({"to_client": bob.client_id, "room": "r", "channel": "c", "payload": {}}),
        );
        alice.send_json(&frame).await;
        let got = bob.recv().await;
        assert_eq!(got["id"], frame["id"]);
        assert!(got.get("seq").is_none(), "{got}");
    }
    alice.expect_silence(QUIET).await;

    let info = alice
        .command("channel_info", json!({"room": "r", "channel": "c"}))
        .await;
    assert_eq!(info["payload"]["last_seq"], 0, "{info}");

    alice.publish("r", "c", json!({"first": true})).await;
    let got = bob.recv().await;
    assert_eq!(got["payload"]["first"], true);
    assert_eq!(got["seq"], 1, "the first channel message is seq 1: {got}");
}

#[tokio::test]
async fn response_and_error_envelopes_route_directly_and_keep_their_type() {
    let server = TestServer::start().await;
    let mut asker = server.connect().await;
    let mut answerer = server.connect().await;
    let mut bystander = server.connect().await;

    let question = envelope(
        "message",
        json!({"to_client": answerer.client_id, "payload": {"q": "2+2"}}),
    );
    asker.send_json(&question).await;
    let got = answerer.recv().await;
    assert_eq!(got["sender"], asker.client_id.as_str());

    let answer = envelope(
        "response",
        json!({
            "to_client": asker.client_id,
            "request_id": question["id"],
            "status": "success",
            "payload": {"a": 4},
        }),
    );
    answerer.send_json(&answer).await;
    let got = asker.recv().await;
    assert_eq!(got["type"], "response");
    assert_eq!(got["id"], answer["id"]);
    assert_eq!(got["request_id"], question["id"]);
    assert_eq!(got["sender"], answerer.client_id.as_str());
    assert_eq!(got["payload"]["a"], 4);

    let refusal = envelope(
        "error",
        json!({
            "to_client": asker.client_id,
            "request_id": question["id"],
            "error": "cannot",
            "error_code": "NOPE",
        }),
    );
    answerer.send_json(&refusal).await;
    let got = asker.recv().await;
    assert_eq!(got["type"], "error");
    assert_eq!(got["request_id"], question["id"]);
    assert_eq!(got["sender"], answerer.client_id.as_str());

    bystander.expect_silence(QUIET).await;
    answerer.expect_silence(QUIET).await;
}
