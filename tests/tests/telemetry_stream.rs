//! The telemetry stream (SPEC §8): `telemetry_connected` first on every
//! socket, each event with its fields after the action that causes it, the
//! `?events=` filter, the `stats` cadence, `agent_activity` on the dashboard
//! channel, events on the telemetry system channel of the bus, client-sent
//! telemetry, and a telemetry client that never reads not slowing the bus.

use std::time::Duration;

use arqonbus_tests::{TestClient, TestServer, envelope, http_get};
use serde_json::{Value, json};

/// Reads frames until one satisfies `wanted` (others skipped).
async fn next_where(socket: &mut TestClient, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = socket
            .try_recv(wait)
            .await
            .unwrap_or_else(|| panic!("no {what} in time"));
        if wanted(&frame) {
            return frame;
        }
    }
}

/// Reads frames until a telemetry event of `kind` arrives (others skipped).
async fn next_event(socket: &mut TestClient, kind: &str) -> Value {
    next_where(socket, kind, |frame| frame["payload"]["eventType"] == kind).await
}

fn assert_telemetry_envelope(frame: &Value) {
    assert_eq!(frame["type"], "telemetry", "{frame}");
    assert_eq!(frame["version"], "1.0");
    assert!(
        frame["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("arq_"))
    );
    assert!(
        frame["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
}

#[tokio::test]
async fn every_socket_starts_with_telemetry_connected() {
    let server = TestServer::full(|b| b).await;
    let _client = server.connect().await;
    let (_socket, first) = server.telemetry("").await;
    assert_telemetry_envelope(&first);
    assert_eq!(first["room"], "integriguard");
    assert_eq!(first["channel"], "telemetry-stream");
    assert_eq!(first["sender"], "arqonbus");
    let payload = &first["payload"];
    assert_eq!(payload["eventType"], "telemetry_connected");
    assert!(payload["server_version"].is_string());
    assert_eq!(payload["connections"], 1);
    assert!(payload["rooms"].as_u64().is_some() && payload["channels"].as_u64().is_some());

    // Whatever the filter.
    let (_filtered, first) = server.telemetry("events=stats").await;
    assert_eq!(first["payload"]["eventType"], "telemetry_connected");
}

#[tokio::test]
async fn client_and_channel_events_carry_their_fields() {
    let server = TestServer::full(|b| b).await;
    let (mut socket, _) = server.telemetry("").await;
    let mut client = server
        .connect_query("client_type=service&screen_name=probe")
        .await;

    let connected = next_event(&mut socket, "client_connected").await;
    assert_telemetry_envelope(&connected);
    assert_eq!(connected["payload"]["client_id"], client.client_id.as_str());
    assert_eq!(connected["payload"]["client_type"], "service");
    assert_eq!(connected["payload"]["screen_name"], "probe");

    client.join("science", "explore").await;
    let created = next_event(&mut socket, "channel_created").await;
    assert_eq!(created["payload"]["room"], "science");
    assert_eq!(created["payload"]["channel"], "explore");
    let joined = next_event(&mut socket, "channel_joined").await;
    assert_eq!(joined["payload"]["client_id"], client.client_id.as_str());
    assert_eq!(joined["payload"]["room"], "science");
    assert_eq!(joined["payload"]["channel"], "explore");
    let executed = next_event(&mut socket, "command_executed").await;
    assert_eq!(executed["payload"]["command"], "join_channel");
    assert_eq!(executed["payload"]["status"], "success");
    assert!(executed["payload"]["duration_us"].is_u64());
    assert_eq!(executed["payload"]["client_id"], client.client_id.as_str());

    client
        .command(
            "leave_channel",
            json!({"room": "science", "channel": "explore"}),
        )
        .await;
    let left = next_event(&mut socket, "channel_left").await;
    assert_eq!(left["payload"]["channel"], "explore");
    assert_eq!(
        next_event(&mut socket, "command_executed").await["payload"]["command"],
        "leave_channel"
    );

    client.command("no_such_command", json!({})).await;
    let failed = next_event(&mut socket, "command_executed").await;
    assert_eq!(failed["payload"]["status"], "error");
    assert_eq!(failed["payload"]["command"], "no_such_command");
    let error = next_event(&mut socket, "error").await;
    assert_eq!(error["payload"]["error_code"], "UNKNOWN_COMMAND");
    assert_eq!(error["payload"]["client_id"], client.client_id.as_str());

    let admin_created = client
        .command("create_channel", json!({"room": "ops", "channel": "x"}))
        .await;
    assert_eq!(admin_created["status"], "success");
    assert_eq!(
        next_event(&mut socket, "channel_created").await["payload"]["room"],
        "ops"
    );
    client
        .command("delete_channel", json!({"room": "ops", "channel": "x"}))
        .await;
    assert_eq!(
        next_event(&mut socket, "channel_deleted").await["payload"]["channel"],
        "x"
    );

    let id = client.client_id.clone();
    drop(client);
    let gone = next_event(&mut socket, "client_disconnected").await;
    assert_eq!(gone["payload"]["client_id"], id.as_str());
    assert!(gone["payload"]["reason"].is_string());
    assert!(gone["payload"]["duration_ms"].is_u64());
}

#[tokio::test]
async fn the_filter_selects_events_and_rejects_unknown_names() {
    let server = TestServer::full(|b| b).await;
    let (mut socket, _) = server.telemetry("events=channel_joined").await;
    let mut client = server.connect().await;
    client.join("a", "b").await;
    let frame = socket.recv().await;
    assert_eq!(
        frame["payload"]["eventType"], "channel_joined",
        "only the selected kind: {frame}"
    );
    socket.expect_silence(Duration::from_millis(300)).await;

    let addr = server.telemetry_addr.expect("telemetry");
    let refused = arqonbus_tests::upgrade_request(addr, "/?events=no_such_event").await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["field"], "events");
}

#[tokio::test]
async fn stats_arrive_every_interval() {
    let server = TestServer::full(|b| b.telemetry_stats_interval(Duration::from_millis(100))).await;
    let (mut socket, _) = server.telemetry("events=stats").await;
    let mut sender = server.connect().await;
    let mut receiver = server.connect().await;
    sender.join("r", "c").await;
    receiver.join("r", "c").await;
    for i in 0..20 {
        sender.publish("r", "c", json!({"i": i})).await;
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_event(&mut socket, "stats").await);
    }
    for stats in &seen {
        let payload = &stats["payload"];
        for field in [
            "connections",
            "messages_in_per_sec",
            "messages_out_per_sec",
            "route_latency_p50_us",
            "route_latency_p99_us",
            "rooms",
            "channels",
        ] {
            assert!(payload[field].is_number(), "stats lacks {field}: {payload}");
        }
        assert_eq!(payload["connections"], 2);
    }
    assert!(
        seen.iter()
            .any(|s| s["payload"]["messages_in_per_sec"].as_f64().unwrap_or(0.0) > 0.0),
        "traffic shows in the rates: {seen:?}"
    );
}

#[tokio::test]
async fn bus_subscribers_of_the_telemetry_channel_receive_events() {
    let server = TestServer::full(|b| b).await;
    let mut dashboard = server.connect_query("client_type=dashboard").await;
    dashboard.join("integriguard", "telemetry-stream").await;
    let mut client = server.connect().await;
    client.join("lab", "one").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = dashboard
            .try_recv(wait)
            .await
            .expect("an event reaches the channel");
        assert_eq!(frame["room"], "integriguard");
        assert_eq!(frame["channel"], "telemetry-stream");
        if frame["payload"]["eventType"] == "channel_joined" && frame["payload"]["room"] == "lab" {
            assert_eq!(frame["type"], "telemetry");
            break;
        }
    }
}

#[tokio::test]
async fn ai_agents_show_up_on_the_dashboard_channel() {
    let server = TestServer::full(|b| b).await;
    let mut dashboard = server.connect_query("client_type=dashboard").await;
    dashboard.join("integriguard", "dashboard-events").await;
    let mut agent = server
        .connect_query("client_type=ai-agent&screen_name=Ada&personality=curious")
        .await;
    agent.join("science", "explore").await;
    let mut actions = Vec::new();
    while actions.len() < 2 {
        let frame = dashboard.recv().await;
        assert_eq!(frame["channel"], "dashboard-events", "{frame}");
        if frame["payload"]["eventType"] == "agent_activity" {
            assert_eq!(frame["payload"]["client_id"], agent.client_id.as_str());
            assert_eq!(frame["payload"]["screen_name"], "Ada");
            assert_eq!(frame["payload"]["personality"], "curious");
            actions.push(
                frame["payload"]["action"]
                    .as_str()
                    .expect("action")
                    .to_owned(),
            );
            if frame["payload"]["action"] == "join" {
                assert_eq!(frame["payload"]["room"], "science");
                assert_eq!(frame["payload"]["channel"], "explore");
            }
        }
    }
    assert!(actions.contains(&"connect".to_owned()), "{actions:?}");
    // Humans do not produce agent activity.
    let mut human = server.connect().await;
    human.join("science", "explore").await;
    agent.command("ping", json!({})).await;
    let next = dashboard.recv().await;
    assert_eq!(
        next["payload"]["client_id"],
        agent.client_id.as_str(),
        "{next}"
    );
}

#[tokio::test]
async fn client_telemetry_is_validated_and_rebroadcast() {
    let server = TestServer::full(|b| b).await;
    let (mut socket, _) = server.telemetry("").await;
    let mut client = server.connect().await;
    let event = envelope(
        "telemetry",
        json!({"payload": {"eventType": "model_loaded", "ms": 12}}),
    );
    client.send_json(&event).await;
    let frame = next_event(&mut socket, "model_loaded").await;
    assert_eq!(frame["sender"], client.client_id.as_str());
    assert_eq!(frame["payload"]["ms"], 12);
    assert_eq!(frame["type"], "telemetry");
    let bad = envelope("telemetry", json!({"payload": {"eventType": ""}}));
    client.send_json(&bad).await;
    let err = client.recv().await;
    assert_eq!(err["error_code"], "VALIDATION_ERROR");
    assert_eq!(err["request_id"], bad["id"]);
}

#[tokio::test]
async fn a_telemetry_client_that_never_reads_does_not_slow_the_bus() {
    let server = TestServer::full(|b| b.rate_limit_per_sec(0)).await;
    // Connected, greeted, and then never read again.
    let (_stalled, _) = server.telemetry("").await;
    let mut sender = server.connect().await;
    let mut receiver = server.connect().await;
    sender.join("load", "test").await;
    receiver.join("load", "test").await;
    // Large client telemetry events: far more than the hub's buffer and the
    // stalled socket's kernel buffers hold (about 48 MiB in all).
    let total = 2_000;
    let events = 6_000;
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::with_capacity(total);
        while seqs.len() < total {
            let frame = receiver.recv().await;
            seqs.push(frame["seq"].as_u64().expect("seq"));
        }
        seqs
    });
    let filler = "x".repeat(8 * 1024);
    for i in 0..events {
        let event = envelope(
            "telemetry",
            json!({"payload": {"eventType": "bulk", "filler": filler}}),
        );
        sender.send_json(&event).await;
        if i % 3 == 0 {
            sender.publish("load", "test", json!({"i": i})).await;
        }
    }
    let seqs = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("all delivered")
        .expect("reader");
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());

    let metrics = http_get(server.addr, "/metrics").await.body;
    let dropped: f64 = metrics
        .lines()
        .find(|line| line.starts_with("arqonbus_telemetry_dropped_total"))
        .and_then(|line| line.split_whitespace().last())
        .and_then(|value| value.parse().ok())
        .expect("arqonbus_telemetry_dropped_total is exported");
    assert!(
        dropped > 0.0,
        "the stalled telemetry client missed events: {dropped}"
    );
}
