//! What only the server may write (SPEC §18): a client publish to a system
//! channel is `FORBIDDEN` even after joining it; a client `telemetry`
//! envelope whose `eventType` is one the server emits (§8) is a
//! `VALIDATION_ERROR`, while other event types are still rebroadcast with
//! the sender set. Also (§5): `INVALID_ARGUMENT` names every missing
//! argument.

use std::time::Duration;

use arqonbus_tests::{TestClient, TestServer, assert_error, detail_fields, envelope};
use serde_json::{Value, json};

/// The next frame on `socket` for which `wanted` holds, within 5 s.
async fn next_where(socket: &mut TestClient, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let frame = socket.recv().await;
            if wanted(&frame) {
                return frame;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} in time"))
}

/// Joins, skipping the telemetry a member of a system channel receives
/// meanwhile.
async fn join(client: &mut TestClient, room: &str, channel: &str) {
    let frame = client
        .send_command("join_channel", json!({"room": room, "channel": channel}))
        .await;
    let reply = client.recv_reply_to(&frame["id"]).await;
    assert_eq!(reply["status"], "success", "{reply}");
}

#[tokio::test]
async fn publishing_to_a_system_channel_is_forbidden() {
    let server = TestServer::start().await;
    let mut watcher = server.connect().await;
    let mut client = server.connect().await;
    for (room, channel) in [
        ("integriguard", "telemetry-stream"),
        ("integriguard", "dashboard-events"),
    ] {
        join(&mut watcher, room, channel).await;
        join(&mut client, room, channel).await;
        for ack in [false, true] {
            let frame = envelope(
                "message",
                json!({"room": room, "channel": channel, "ack": ack,
                       "payload": {"eventType": "stats", "connections": 0}}),
            );
            client.send_json(&frame).await;
            let reply = client.recv_reply_to(&frame["id"]).await;
            assert_error(&reply, "FORBIDDEN", Some(&frame["id"]), None);
        }
    }
    // Nothing reached the other member of the system channels (whatever
    // telemetry the server itself sends there, no client message).
    while let Some(frame) = watcher.try_recv(Duration::from_millis(300)).await {
        assert_eq!(
            frame["sender"], "arqonbus",
            "only the server writes: {frame}"
        );
    }
}

/// Not by joining first, not without joining where that is allowed, not
/// with another relayed type, not with the `room:channel` shorthand.
#[tokio::test]
async fn no_kind_of_client_envelope_reaches_a_system_channel() {
    let server = TestServer::with(|b| b.publish_requires_join(false)).await;
    let mut watcher = server.connect().await;
    join(&mut watcher, "integriguard", "dashboard-events").await;
    let mut client = server.connect().await;
    let targets = [
        json!({"room": "integriguard", "channel": "dashboard-events"}),
        json!({"room": "integriguard:dashboard-events"}),
        json!({"room": "integriguard", "channel": "telemetry-stream"}),
    ];
    for target in targets {
        for kind in ["message", "event", "response", "error"] {
            let mut fields = target.clone();
            let extra = json!({"payload": {"a": 1}, "request_id": "arq_some_request",
                               "status": "success", "error_code": "X", "error": "x"});
            for (key, value) in extra.as_object().expect("an object") {
                fields[key] = value.clone();
            }
            let frame = envelope(kind, fields);
            client.send_json(&frame).await;
            let reply = client.recv_reply_to(&frame["id"]).await;
            assert_error(&reply, "FORBIDDEN", Some(&frame["id"]), None);
        }
    }
    while let Some(frame) = watcher.try_recv(Duration::from_millis(300)).await {
        assert_eq!(
            frame["sender"], "arqonbus",
            "only the server writes: {frame}"
        );
    }
}

#[tokio::test]
async fn clients_cannot_send_server_event_types() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    for event_type in [
        "storage_degraded",
        "stats",
        "client_connected",
        "telemetry_connected",
        "agent_activity",
    ] {
        let frame = envelope(
            "telemetry",
            json!({"payload": {"eventType": event_type, "backend": "redis", "reason": "fake"}}),
        );
        client.send_json(&frame).await;
        let reply = client.recv_reply_to(&frame["id"]).await;
        assert_error(&reply, "VALIDATION_ERROR", Some(&frame["id"]), None);
        assert!(
            detail_fields(&reply)
                .iter()
                .any(|f| f.contains("eventType")),
            "{event_type}: details name eventType: {reply}"
        );
    }
}

#[tokio::test]
async fn custom_event_types_are_still_rebroadcast() {
    let server = TestServer::full(|b| b).await;
    let (mut socket, _) = server.telemetry("").await;
    let mut subscriber = server.connect().await;
    join(&mut subscriber, "integriguard", "telemetry-stream").await;
    let mut client = server.connect().await;
    // A refused server-kind first: it must not leak through either.
    client
        .send_json(&envelope(
            "telemetry",
            json!({"payload": {"eventType": "storage_degraded", "backend": "x"}}),
        ))
        .await;
    let event = envelope(
        "telemetry",
        json!({"payload": {"eventType": "my_event", "n": 7}}),
    );
    client.send_json(&event).await;
    let sender = client.client_id.clone();
    for receiver in [&mut socket, &mut subscriber] {
        let frame = next_where(receiver, "my_event", |f| {
            assert_ne!(
                f["payload"]["eventType"], "storage_degraded",
                "a refused event leaked: {f}"
            );
            f["payload"]["eventType"] == "my_event"
        })
        .await;
        assert_eq!(frame["type"], "telemetry", "{frame}");
        assert_eq!(frame["sender"], sender.as_str(), "{frame}");
        assert_eq!(frame["payload"]["n"], 7, "{frame}");
    }
}

#[tokio::test]
async fn invalid_argument_names_every_missing_argument() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    for command in [
        "join_channel",
        "leave_channel",
        "channel_info",
        "history",
        "create_channel",
        "delete_channel",
    ] {
        let frame = client.send_command(command, json!({})).await;
        let reply = client.recv_reply_to(&frame["id"]).await;
        assert_error(
            &reply,
            "INVALID_ARGUMENT",
            Some(&frame["id"]),
            Some(command),
        );
        let fields = detail_fields(&reply);
        for name in ["room", "channel"] {
            assert!(
                fields.iter().any(|f| f == name),
                "{command}: details {fields:?} name {name}: {reply}"
            );
        }
    }
    // One missing, one present: only the missing one is named.
    let frame = client
        .send_command("join_channel", json!({"room": "r"}))
        .await;
    let reply = client.recv_reply_to(&frame["id"]).await;
    assert_error(
        &reply,
        "INVALID_ARGUMENT",
        Some(&frame["id"]),
        Some("join_channel"),
    );
    assert_eq!(detail_fields(&reply), ["channel"], "{reply}");
}
