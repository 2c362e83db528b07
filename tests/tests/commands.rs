//! Every built-in command answers with the success payload of SPEC §5, in
//! both the canonical form (`command` + `args`) and the legacy one
//! (`payload.command` + `payload.parameters`), with `args.room` /
//! `args.channel` defaulting to the envelope's; and one connection's
//! replies arrive in the order its commands were sent.

use std::collections::BTreeSet;

use arqonbus_tests::{TestClient, TestServer, assert_error, assert_server_time, envelope};
use serde_json::{Value, json};

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn assert_has_keys(value: &Value, expected: &[&str]) {
    let present = keys(value);
    for key in expected {
        assert!(present.contains(key), "{key} missing from {value}");
    }
}

/// Asserts `reply` is a success for `command` and returns its payload.
fn success(reply: &Value, command: &str) -> Value {
    assert_eq!(reply["type"], "response", "{reply}");
    assert_eq!(reply["status"], "success", "{reply}");
    assert_eq!(reply["command"], command, "{reply}");
    assert_eq!(reply["sender"], "arqonbus", "{reply}");
    assert_eq!(reply["version"], "1.0", "{reply}");
    assert_server_time(reply["timestamp"].as_str().expect("timestamp"));
    reply["payload"].clone()
}

async fn run(client: &mut TestClient, command: &str, args: Value) -> Value {
    let reply = client.command(command, args).await;
    success(&reply, command)
}

const CHANNEL_RECORD: &[&str] = &[
    "room",
    "channel",
    "type",
    "created_at",
    "created_by",
    "hardcoded",
    "auto_created",
    "description",
    "metadata",
    "participant_count",
];

const CLIENT_RECORD: &[&str] = &[
    "client_id",
    "client_type",
    "screen_name",
    "avatar",
    "personality",
    "connected_at",
    "last_activity",
];

fn assert_channel_record(record: &Value) {
    assert_has_keys(record, CHANNEL_RECORD);
    assert!(record["room"].is_string() && record["channel"].is_string());
    let kind = record["type"].as_str().expect("type");
    assert!(kind == "general" || kind == "system", "{record}");
    assert_server_time(record["created_at"].as_str().expect("created_at"));
    assert!(record["created_by"].is_string() || record["created_by"].is_null());
    assert!(record["hardcoded"].is_boolean() && record["auto_created"].is_boolean());
    assert!(record["description"].is_string() || record["description"].is_null());
    assert!(record["metadata"].is_object() || record["metadata"].is_null());
    assert!(record["participant_count"].is_u64());
}

#[tokio::test]
async fn ping() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let payload = run(&mut client, "ping", json!({})).await;
    assert_eq!(payload["pong"], true);
    assert_server_time(payload["server_time"].as_str().expect("server_time"));
}

#[tokio::test]
async fn join_channel() {
    let server = TestServer::start().await;
    let mut first = server.connect().await;
    let mut second = server.connect().await;

    let joined = run(
        &mut first,
        "join_channel",
        json!({"room": "r", "channel": "c"}),
    )
    .await;
    assert_eq!(
        keys(&joined),
        BTreeSet::from(["room", "channel", "participant_count", "seq", "epoch"])
    );
    assert_eq!(joined["room"], "r");
    assert_eq!(joined["channel"], "c");
    assert_eq!(joined["participant_count"], 1);
    assert_eq!(joined["seq"], 0);
    let epoch = joined["epoch"].as_str().expect("epoch").to_owned();
    assert!(!epoch.is_empty());

    // Idempotent.
    let again = run(
        &mut first,
        "join_channel",
        json!({"room": "r", "channel": "c"}),
    )
    .await;
    assert_eq!(again, joined);
    assert_eq!(first.status().await["subscriptions"], 1);

    // `seq` is the last one assigned.
    second.join("r", "c").await;
    first.publish("r", "c", json!({})).await;
    first.publish("r", "c", json!({})).await;
    assert_eq!(second.recv().await["seq"], 1);
    assert_eq!(second.recv().await["seq"], 2);
    let mut third = server.connect().await;
    let joined = run(
        &mut third,
        "join_channel",
        json!({"room": "r", "channel": "c"}),
    )
    .await;
    assert_eq!(joined["participant_count"], 3);
    assert_eq!(joined["seq"], 2);
    assert_eq!(joined["epoch"], epoch.as_str());

    // The "room:channel" form.
    let joined = run(&mut third, "join_channel", json!({"room": "r:other"})).await;
    assert_eq!(joined["room"], "r");
    assert_eq!(joined["channel"], "other");
}

#[tokio::test]
async fn leave_channel() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let mut other = server.connect().await;
    client.join("r", "c").await;
    other.join("r", "c").await;
    let args = json!({"room": "r", "channel": "c"});
    let left = run(&mut client, "leave_channel", args.clone()).await;
    assert_eq!(
        left,
        json!({"room": "r", "channel": "c", "was_member": true})
    );
    let left = run(&mut client, "leave_channel", args.clone()).await;
    assert_eq!(
        left,
        json!({"room": "r", "channel": "c", "was_member": false})
    );
    let info = run(&mut client, "channel_info", args).await;
    assert_eq!(info["participant_count"], 1);

    // No longer a subscriber: no more messages, and publishing is refused.
    other.publish("r", "c", json!({})).await;
    client
        .expect_silence(std::time::Duration::from_millis(200))
        .await;
    let frame = client.publish("r", "c", json!({})).await;
    assert_error(
        &client.recv().await,
        "NOT_SUBSCRIBED",
        Some(&frame["id"]),
        None,
    );
}

#[tokio::test]
async fn identify() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let record = run(&mut client, "identify", json!({})).await;
    assert_eq!(keys(&record), CLIENT_RECORD.iter().copied().collect());
    assert_eq!(record["client_id"], client.client_id.as_str());
    assert_eq!(record["client_type"], "human", "the default type");
    assert!(record["screen_name"].is_null());
    assert_server_time(record["connected_at"].as_str().expect("connected_at"));
    assert_server_time(record["last_activity"].as_str().expect("last_activity"));

    let connected_at = record["connected_at"].clone();
    let record = run(
        &mut client,
        "identify",
        json!({
            "client_type": "ai-agent",
            "screen_name": "Ada",
            "avatar": "https://example.invalid/ada.png",
            "personality": "curious",
        }),
    )
    .await;
    assert_eq!(record["client_type"], "ai-agent");
    assert_eq!(record["screen_name"], "Ada");
    assert_eq!(record["avatar"], "https://example.invalid/ada.png");
    assert_eq!(record["personality"], "curious");
    assert_eq!(record["connected_at"], connected_at);
    assert_eq!(record["client_id"], client.client_id.as_str());

    // Fields not given are kept.
    let record = run(&mut client, "identify", json!({"screen_name": "Ada L."})).await;
    assert_eq!(record["client_type"], "ai-agent");
    assert_eq!(record["screen_name"], "Ada L.");
    assert_eq!(record["personality"], "curious");

    // Visible to others.
    let status = client.status().await;
    assert_eq!(status["clients"]["by_type"]["ai-agent"], 1);
    client.join("r", "c").await;
    let info = run(
        &mut client,
        "channel_info",
        json!({"room": "r", "channel": "c"}),
    )
    .await;
    assert_eq!(info["participants"][0]["screen_name"], "Ada L.");
    assert_eq!(info["participants"][0]["client_type"], "ai-agent");

    // Bad values are INVALID_ARGUMENT naming the field, and change nothing.
    for (args, field) in [
        (json!({"client_type": "robot"}), "client_type"),
        (json!({"client_type": 3}), "client_type"),
        (json!({"screen_name": "x".repeat(65)}), "screen_name"),
        (json!({"screen_name": ""}), "screen_name"),
        (json!({"avatar": "a".repeat(513)}), "avatar"),
        (json!({"personality": "p".repeat(257)}), "personality"),
    ] {
        let frame = client.send_command("identify", args).await;
        let err = client.recv().await;
        assert_error(
            &err,
            "INVALID_ARGUMENT",
            Some(&frame["id"]),
            Some("identify"),
        );
        let fields = arqonbus_tests::detail_fields(&err);
        assert!(fields.iter().any(|f| f == field), "{field}: {err}");
    }
    let record = run(
        &mut client,
        "identify",
        json!({"screen_name": "y".repeat(64)}),
    )
    .await;
    assert_eq!(record["screen_name"], "y".repeat(64));
    assert_eq!(record["client_type"], "ai-agent");
}

#[tokio::test]
async fn status() {
    let server = TestServer::start().await;
    let mut client = server.connect_query("client_type=service").await;
    let status = client.status().await;
    assert_has_keys(
        &status,
        &[
            "server",
            "clients",
            "rooms",
            "channels",
            "subscriptions",
            "participants",
            "messages",
            "storage",
        ],
    );
    let info = &status["server"];
    assert_has_keys(
        info,
        &[
            "name",
            "version",
            "protocol",
            "node_id",
            "started_at",
            "uptime_seconds",
        ],
    );
    assert_eq!(info["name"], "ArqonBus");
    assert!(info["version"].as_str().is_some_and(|v| !v.is_empty()));
    assert_eq!(info["protocol"], "1.0");
    assert!(info["node_id"].as_str().is_some_and(|v| !v.is_empty()));
    assert_server_time(info["started_at"].as_str().expect("started_at"));
    assert!(info["uptime_seconds"].is_u64());

    assert_eq!(status["clients"]["active"], 1);
    let by_type = status["clients"]["by_type"].as_object().expect("by_type");
    assert_eq!(by_type["service"], 1);
    assert!(by_type.values().all(Value::is_u64));
    // The two default system channels, in one room.
    assert_eq!(status["rooms"], 1);
    assert_eq!(status["channels"], 2);
    assert_eq!(status["subscriptions"], 0);
    assert!(status["participants"]["channels"].is_object());
    assert_eq!(status["participants"]["truncated"], false);
    for counter in ["received", "delivered", "dropped"] {
        assert!(status["messages"][counter].is_u64(), "{counter}: {status}");
    }
    assert_eq!(status["storage"]["backend"], "memory");
    assert_eq!(status["storage"]["degraded"], false);
    assert!(status["storage"]["memory_bytes"].is_u64(), "{status}");
    assert_eq!(status["storage"]["persistence"], "none");

    // Counts move with clients and joins.
    let mut other = server.connect().await;
    other.join("r", "a").await;
    other.join("r", "b").await;
    client.join("r", "a").await;
    other.publish("r", "a", json!({})).await;
    client.recv().await;
    let later = client.status().await;
    assert_eq!(later["clients"]["active"], 2);
    assert_eq!(later["clients"]["by_type"]["human"], 1);
    assert_eq!(later["rooms"], 2);
    assert_eq!(later["channels"], 4);
    assert_eq!(later["subscriptions"], 3);
    assert_eq!(later["participants"]["channels"]["r:a"], 2);
    assert_eq!(later["participants"]["channels"]["r:b"], 1);
    let received = |s: &Value| s["messages"]["received"].as_u64().expect("received");
    let delivered = |s: &Value| s["messages"]["delivered"].as_u64().expect("delivered");
    assert!(received(&later) > received(&status));
    assert!(delivered(&later) > delivered(&status));
}

#[tokio::test]
async fn list_channels() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client.join("alpha", "one").await;
    client.join("alpha", "two").await;
    client.join("beta", "one").await;

    let listed = run(&mut client, "list_channels", json!({})).await;
    assert_eq!(
        keys(&listed),
        BTreeSet::from(["channels", "total", "next_cursor"])
    );
    assert_eq!(listed["next_cursor"], Value::Null);
    let channels = listed["channels"].as_array().expect("channels");
    assert_eq!(listed["total"], 5);
    assert_eq!(channels.len(), 5);
    for record in channels {
        assert_channel_record(record);
    }
    let find = |room: &str, channel: &str| {
        channels
            .iter()
            .find(|r| r["room"] == room && r["channel"] == channel)
            .unwrap_or_else(|| panic!("{room}:{channel} not listed: {listed}"))
            .clone()
    };
    let joined = find("alpha", "one");
    assert_eq!(joined["type"], "general");
    assert_eq!(joined["hardcoded"], false);
    assert_eq!(joined["auto_created"], true);
    assert_eq!(joined["created_by"], client.client_id.as_str());
    assert_eq!(joined["participant_count"], 1);
    for system in ["telemetry-stream", "dashboard-events"] {
        let record = find("integriguard", system);
        assert_eq!(record["type"], "system");
        assert_eq!(record["hardcoded"], true);
        assert!(record["created_by"].is_null(), "{record}");
        assert_eq!(record["participant_count"], 0);
    }

    let alpha = run(&mut client, "list_channels", json!({"room": "alpha"})).await;
    assert_eq!(alpha["total"], 2);
    let names: BTreeSet<&str> = alpha["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .map(|r| {
            assert_eq!(r["room"], "alpha");
            r["channel"].as_str().expect("channel")
        })
        .collect();
    assert_eq!(names, BTreeSet::from(["one", "two"]));
}

#[tokio::test]
async fn channel_info() {
    let server = TestServer::start().await;
    let mut first = server
        .connect_query("client_type=dashboard&screen_name=Board")
        .await;
    let mut second = server.connect().await;
    first.join("r", "c").await;
    second.join("r", "c").await;
    first.publish("r", "c", json!({})).await;
    first.publish("r", "c", json!({})).await;
    second.recv().await;
    second.recv().await;

    let info = run(
        &mut second,
        "channel_info",
        json!({"room": "r", "channel": "c"}),
    )
    .await;
    assert_channel_record(&info);
    assert_has_keys(
        &info,
        &["participants", "messages_stored", "last_seq", "epoch"],
    );
    assert_eq!(info["room"], "r");
    assert_eq!(info["channel"], "c");
    assert_eq!(info["participant_count"], 2);
    assert_eq!(info["last_seq"], 2);
    assert!(info["messages_stored"].is_u64(), "{info}");
    assert!(info["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    let participants = info["participants"].as_array().expect("participants");
    assert_eq!(participants.len(), 2);
    for participant in participants {
        assert_has_keys(
            participant,
            &[
                "client_id",
                "client_type",
                "screen_name",
                "connected_at",
                "last_activity",
            ],
        );
        assert_server_time(participant["connected_at"].as_str().expect("connected_at"));
        assert_server_time(
            participant["last_activity"]
                .as_str()
                .expect("last_activity"),
        );
    }
    let board = participants
        .iter()
        .find(|p| p["client_id"] == first.client_id.as_str())
        .expect("first is listed");
    assert_eq!(board["client_type"], "dashboard");
    assert_eq!(board["screen_name"], "Board");
    let plain = participants
        .iter()
        .find(|p| p["client_id"] == second.client_id.as_str())
        .expect("second is listed");
    assert_eq!(plain["client_type"], "human");
    assert!(plain["screen_name"].is_null());

    // The epoch is the one joins report.
    let joined = second.join("r", "c").await;
    assert_eq!(joined["payload"]["epoch"], info["epoch"]);

    // System channels have info too.
    let system = run(
        &mut second,
        "channel_info",
        json!({"room": "integriguard", "channel": "telemetry-stream"}),
    )
    .await;
    assert_eq!(system["type"], "system");
    assert_eq!(system["participants"], json!([]));
}

#[tokio::test]
async fn create_and_delete_channel() {
    let server = TestServer::start().await;
    let mut admin = server.connect().await;
    let created = run(
        &mut admin,
        "create_channel",
        json!({
            "room": "ops",
            "channel": "alerts",
            "description": "pager duty",
            "metadata": {"severity": "high", "n": 3},
        }),
    )
    .await;
    assert_channel_record(&created);
    assert_eq!(created["room"], "ops");
    assert_eq!(created["channel"], "alerts");
    assert_eq!(created["type"], "general");
    assert_eq!(created["hardcoded"], false);
    assert_eq!(created["auto_created"], false);
    assert_eq!(created["created_by"], admin.client_id.as_str());
    assert_eq!(created["description"], "pager duty");
    assert_eq!(created["metadata"], json!({"severity": "high", "n": 3}));
    assert_eq!(created["participant_count"], 0);

    // The record is what list_channels and channel_info show afterwards.
    let listed = run(&mut admin, "list_channels", json!({"room": "ops"})).await;
    assert_eq!(listed["channels"][0], created);
    let info = run(
        &mut admin,
        "channel_info",
        json!({"room": "ops", "channel": "alerts"}),
    )
    .await;
    for key in CHANNEL_RECORD {
        assert_eq!(info[key], created[key], "{key}");
    }

    // A channel made by create_channel is joinable, not re-created.
    let mut member = server.connect().await;
    member.join("ops", "alerts").await;
    let info = run(
        &mut admin,
        "channel_info",
        json!({"room": "ops", "channel": "alerts"}),
    )
    .await;
    assert_eq!(info["auto_created"], false);
    assert_eq!(info["created_by"], admin.client_id.as_str());

    run(
        &mut admin,
        "create_channel",
        json!({"room": "ops", "channel": "quiet"}),
    )
    .await;
    let deleted = run(
        &mut admin,
        "delete_channel",
        json!({"room": "ops", "channel": "quiet"}),
    )
    .await;
    assert_eq!(
        deleted,
        json!({"room": "ops", "channel": "quiet", "deleted": true, "removed_members": 0})
    );
    let listed = run(&mut admin, "list_channels", json!({"room": "ops"})).await;
    assert_eq!(listed["total"], 1, "the room stays while it has a channel");

    let old_epoch = info["epoch"].clone();
    assert!(old_epoch.is_string());
    let deleted = run(
        &mut admin,
        "delete_channel",
        json!({"room": "ops", "channel": "alerts", "force": true}),
    )
    .await;
    assert_eq!(deleted["removed_members"], 1);
    assert_eq!(member.recv().await["type"], "system");

    // The room went with its last channel.
    let frame = admin
        .send_command("list_channels", json!({"room": "ops"}))
        .await;
    let err = admin.recv().await;
    assert_error(
        &err,
        "ROOM_NOT_FOUND",
        Some(&frame["id"]),
        Some("list_channels"),
    );
    let status = admin.status().await;
    assert_eq!(status["rooms"], 1, "only the system room: {status}");
    assert_eq!(status["channels"], 2);
    let listed = run(&mut admin, "list_channels", json!({})).await;
    assert_eq!(listed["total"], 2);

    // A deleted channel can be created again, with a new epoch.
    let joined = member.join("ops", "alerts").await;
    assert_eq!(joined["payload"]["seq"], 0);
    assert_ne!(joined["payload"]["epoch"], old_epoch, "history restarted");
}

#[tokio::test]
async fn the_legacy_command_form() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;

    let frame = envelope(
        "command",
        json!({"payload": {"command": "join_channel", "parameters": {"room": "old", "channel": "school"}}}),
    );
    client.send_json(&frame).await;
    let reply = client.recv().await;
    assert_eq!(reply["request_id"], frame["id"]);
    let joined = success(&reply, "join_channel");
    assert_eq!(joined["room"], "old");
    assert_eq!(joined["channel"], "school");
    assert_eq!(joined["participant_count"], 1);

    let frame = envelope(
        "command",
        json!({"payload": {"command": "channel_info", "args": {"room": "old", "channel": "school"}}}),
    );
    client.send_json(&frame).await;
    let reply = client.recv().await;
    assert_eq!(reply["request_id"], frame["id"]);
    assert_eq!(success(&reply, "channel_info")["participant_count"], 1);

    let frame = envelope("command", json!({"payload": {"command": "ping"}}));
    client.send_json(&frame).await;
    let reply = client.recv().await;
    assert_eq!(success(&reply, "ping")["pong"], true);

    // Errors in the legacy form name the command too.
    let frame = envelope(
        "command",
        json!({"payload": {"command": "leave_channel", "parameters": {"room": "no", "channel": "pe"}}}),
    );
    client.send_json(&frame).await;
    let err = client.recv().await;
    assert_error(
        &err,
        "CHANNEL_NOT_FOUND",
        Some(&frame["id"]),
        Some("leave_channel"),
    );
}

#[tokio::test]
async fn room_and_channel_default_to_the_envelope() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;

    let frame = envelope(
        "command",
        json!({"command": "join_channel", "room": "env", "channel": "chan"}),
    );
    client.send_json(&frame).await;
    let joined = success(&client.recv().await, "join_channel");
    assert_eq!(
        (&joined["room"], &joined["channel"]),
        (&json!("env"), &json!("chan"))
    );

    // `args` win over the envelope.
    let frame = envelope(
        "command",
        json!({"command": "join_channel", "room": "env", "channel": "chan", "args": {"channel": "other"}}),
    );
    client.send_json(&frame).await;
    let joined = success(&client.recv().await, "join_channel");
    assert_eq!(
        (&joined["room"], &joined["channel"]),
        (&json!("env"), &json!("other"))
    );

    // "room:channel" in the envelope's room.
    let frame = envelope(
        "command",
        json!({"command": "channel_info", "room": "env:chan"}),
    );
    client.send_json(&frame).await;
    let info = success(&client.recv().await, "channel_info");
    assert_eq!(info["participant_count"], 1);

    // The legacy form defaults the same way.
    let frame = envelope(
        "command",
        json!({"room": "env", "channel": "other", "payload": {"command": "leave_channel"}}),
    );
    client.send_json(&frame).await;
    let left = success(&client.recv().await, "leave_channel");
    assert_eq!(left["was_member"], true);
    assert_eq!(left["channel"], "other");
}

#[tokio::test]
async fn commands_work_before_any_join() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    for command in ["ping", "status", "identify", "list_channels"] {
        run(&mut client, command, json!({})).await;
    }
}

#[tokio::test]
async fn replies_arrive_in_command_order() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let mut sent = Vec::new();
    for i in 0..50 {
        let (name, args) = match i % 7 {
            0 => ("ping", json!({})),
            1 => (
                "join_channel",
                json!({"room": "order", "channel": format!("c{}", i % 5)}),
            ),
            2 => ("status", json!({})),
            3 => (
                "leave_channel",
                json!({"room": "order", "channel": format!("c{}", i % 5)}),
            ),
            4 => ("frobnicate", json!({})),
            5 => ("list_channels", json!({})),
            _ => ("channel_info", json!({"room": "nope", "channel": "nope"})),
        };
        sent.push((client.send_command(name, args).await, name));
    }
    for (frame, name) in &sent {
        let reply = client.recv().await;
        assert_eq!(
            reply["request_id"], frame["id"],
            "reply out of order: {reply}"
        );
        assert_eq!(reply["command"], *name, "{reply}");
        assert!(
            reply["type"] == "response" || reply["type"] == "error",
            "{reply}"
        );
    }
    client
        .expect_silence(std::time::Duration::from_millis(200))
        .await;
}

#[tokio::test]
async fn status_lists_the_hundred_largest_channels() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let mut other = server.connect().await;
    let mut sent = Vec::new();
    for i in 0..105 {
        sent.push(
            client
                .send_command(
                    "join_channel",
                    json!({"room": "many", "channel": format!("c{i:03}")}),
                )
                .await,
        );
    }
    for frame in &sent {
        let reply = client.recv().await;
        assert_eq!(reply["request_id"], frame["id"]);
        assert_eq!(reply["status"], "success", "{reply}");
    }
    // Two channels are larger than the rest.
    other.join("many", "c050").await;
    other.join("many", "c104").await;

    let status = client.status().await;
    assert_eq!(status["channels"], 107);
    assert_eq!(status["subscriptions"], 107);
    let listed = status["participants"]["channels"]
        .as_object()
        .expect("participants.channels");
    assert_eq!(listed.len(), 100, "the 100 largest");
    assert_eq!(status["participants"]["truncated"], true);
    assert_eq!(listed["many:c050"], 2);
    assert_eq!(listed["many:c104"], 2);
    assert!(
        !listed.contains_key("integriguard:telemetry-stream"),
        "empty channels are the ones left out"
    );
}
