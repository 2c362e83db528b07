//! Resource bounds (SPEC §18, "Memory and replies"): idle auto-created
//! channels are reclaimed; no reply exceeds the message size limit
//! (`history` truncates, `list_channels` pages); a socket write that makes
//! no progress aborts the connection and frees its slot; the shutdown grace
//! period cuts off what is left.

use std::collections::BTreeSet;
use std::time::Duration;

use arqon_config::SlowConsumerPolicy;
use arqonbus_tests::{TestServer, assert_error, envelope, eventually, http_get, raw_upgrade};
use serde_json::{Value, json};

#[tokio::test]
async fn an_idle_auto_created_channel_is_removed_with_its_history() {
    let server = TestServer::full(|b| b.empty_channel_ttl(Some(Duration::from_secs(1)))).await;
    let (mut events, _) = server.telemetry("events=channel_deleted").await;
    let mut admin = server.connect().await;
    let created = admin
        .command("create_channel", json!({"room": "keep", "channel": "made"}))
        .await;
    assert_eq!(created["status"], "success", "{created}");
    admin.join("lab", "busy").await;
    let mut visitor = server.connect().await;
    visitor.join("lab", "tmp").await;
    visitor.publish("lab", "tmp", json!({"n": 1})).await;
    visitor
        .command("leave_channel", json!({"room": "lab", "channel": "tmp"}))
        .await;

    let deleted = events.recv().await;
    assert_eq!(
        deleted["payload"]["eventType"], "channel_deleted",
        "{deleted}"
    );
    assert_eq!(deleted["payload"]["room"], "lab");
    assert_eq!(deleted["payload"]["channel"], "tmp");
    assert_eq!(deleted["payload"]["reason"], "idle");
    assert_eq!(deleted["payload"]["client_id"], Value::Null);

    let listed = admin.command("list_channels", json!({})).await;
    let keys: BTreeSet<String> = listed["payload"]["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .map(|record| {
            format!(
                "{}:{}",
                record["room"].as_str().expect("a record has a room"),
                record["channel"].as_str().expect("a record has a channel")
            )
        })
        .collect();
    assert!(!keys.contains("lab:tmp"), "{keys:?}");
    // Created, joined and system channels stay.
    for kept in ["keep:made", "lab:busy", "integriguard:telemetry-stream"] {
        assert!(keys.contains(kept), "{kept} missing from {keys:?}");
    }
    // Its history went with it: joining again starts a new channel.
    let rejoined = visitor.join("lab", "tmp").await;
    assert_eq!(rejoined["payload"]["seq"], 0, "{rejoined}");
    // Nothing else was reclaimed meanwhile.
    events.expect_silence(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn history_replies_fit_the_message_size_limit() {
    const LIMIT: usize = 8192;
    let server = TestServer::with(|b| b.max_message_size(LIMIT)).await;
    let mut client = server.connect().await;
    client.join("big", "msgs").await;
    let filler = "y".repeat(1500);
    for n in 1..=12 {
        client
            .publish("big", "msgs", json!({"n": n, "filler": filler}))
            .await;
    }
    for (args, first, last) in [
        // Newest first kept: the end `history` starts from.
        (
            json!({"room": "big", "channel": "msgs", "limit": 50}),
            None,
            Some(12),
        ),
        // With `after_seq`, the oldest after it.
        (
            json!({"room": "big", "channel": "msgs", "after_seq": 0}),
            Some(1),
            None,
        ),
    ] {
        let frame = envelope("command", json!({"command": "history", "args": args}));
        client.send_json(&frame).await;
        let raw = client.ws_next_text().await;
        assert!(raw.len() <= LIMIT, "reply of {} bytes", raw.len());
        let reply: Value = serde_json::from_str(&raw).expect("json");
        let payload = &reply["payload"];
        assert_eq!(payload["truncated"], true, "{payload}");
        let messages = payload["messages"].as_array().expect("messages");
        assert!(!messages.is_empty() && messages.len() < 12);
        assert_eq!(payload["count"], messages.len());
        if let Some(first) = first {
            assert_eq!(messages[0]["seq"], first);
        }
        if let Some(last) = last {
            assert_eq!(messages[messages.len() - 1]["seq"], last);
        }
    }
    let all = client
        .command(
            "history",
            json!({"room": "big", "channel": "msgs", "limit": 2}),
        )
        .await;
    assert_eq!(all["payload"]["truncated"], false);
}

#[tokio::test]
async fn list_channels_pages_by_limit_and_by_size() {
    let server = TestServer::with(|b| b.max_message_size(4096)).await;
    let mut client = server.connect().await;
    let mut expected = BTreeSet::new();
    for n in 0..30 {
        let channel = format!("c{n:02}");
        client.join("paged", &channel).await;
        expected.insert(format!("paged:{channel}"));
    }
    for limit in [Value::Null, json!(7)] {
        let mut seen = Vec::new();
        let mut cursor = Value::Null;
        for page in 0.. {
            assert!(page < 40, "paging ends");
            let frame = envelope(
                "command",
                json!({"command": "list_channels", "args": {"room": "paged", "limit": limit, "cursor": cursor}}),
            );
            client.send_json(&frame).await;
            let raw = client.ws_next_text().await;
            assert!(raw.len() <= 4096, "page of {} bytes", raw.len());
            let reply: Value = serde_json::from_str(&raw).expect("json");
            let payload = &reply["payload"];
            assert_eq!(payload["total"], 30);
            let channels = payload["channels"].as_array().expect("channels");
            if let Some(limit) = limit.as_u64() {
                assert!(channels.len() as u64 <= limit);
            }
            for record in channels {
                seen.push(format!(
                    "paged:{}",
                    record["channel"].as_str().expect("channel")
                ));
            }
            cursor = payload["next_cursor"].clone();
            if cursor.is_null() {
                break;
            }
        }
        assert_eq!(seen.len(), 30, "each channel once ({limit})");
        assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), expected);
    }
    for args in [
        json!({"limit": 0}),
        json!({"limit": 10_001}),
        json!({"cursor": "not a cursor"}),
    ] {
        let frame = envelope("command", json!({"command": "list_channels", "args": args}));
        client.send_json(&frame).await;
        assert_error(
            &client.recv().await,
            "INVALID_ARGUMENT",
            Some(&frame["id"]),
            Some("list_channels"),
        );
    }
}

/// A client that stops reading: once its socket buffers are full, a write
/// makes no progress; after the write timeout the connection is aborted,
/// counted, and its slot is free for someone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_without_progress_aborts_the_connection_and_frees_its_slot() {
    let server = TestServer::full(|b| {
        b.write_timeout(Duration::from_secs(1))
            .max_connections(2)
            .slow_consumer(SlowConsumerPolicy::Drop)
            .client_queue_bytes(256 << 20)
            .rate_limit_per_sec(0)
    })
    .await;
    let (response, mut stalled) = raw_upgrade(server.addr, "/", &[]).await;
    assert_eq!(response.status, 101);
    let join = envelope(
        "command",
        json!({"command": "join_channel", "args": {"room": "flood", "channel": "one"}}),
    );
    stalled
        .send_frame(0x81, true, join.to_string().as_bytes())
        .await;
    // It never reads again.
    let mut publisher = server.connect().await;
    publisher.join("flood", "one").await;
    eventually(
        Duration::from_secs(5),
        "the stalled client joined",
        async || {
            let info = publisher
                .command("channel_info", json!({"room": "flood", "channel": "one"}))
                .await;
            info["payload"]["participant_count"] == 2
        },
    )
    .await;
    let filler = "z".repeat(60_000);
    // Enough to fill both socket buffers many times over.
    for n in 0..1500 {
        publisher
            .publish("flood", "one", json!({"n": n, "filler": filler}))
            .await;
    }
    eventually(
        Duration::from_secs(20),
        "the stalled connection is aborted",
        async || publisher.status().await["clients"]["active"] == 1,
    )
    .await;
    let metrics = http_get(server.addr, "/metrics").await.body;
    let aborted = metrics
        .lines()
        .find(|line| {
            line.starts_with("arqonbus_connections_aborted_total{reason=\"write_timeout\"}")
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(aborted >= 1.0, "counted in /metrics: {aborted}");
    // The slot is free again (max_connections is 2: publisher + one).
    let another = server.connect().await;
    drop(another);
    drop(stalled);
}

/// After the shutdown grace period, connections that still have not
/// finished are aborted: the server stops in bounded time even when a
/// client never reads its close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_aborts_what_is_left_after_the_grace_period() {
    let mut server = TestServer::with(|b| {
        b.shutdown_grace(Duration::from_secs(2))
            .write_timeout(Duration::from_secs(60))
            .slow_consumer(SlowConsumerPolicy::Drop)
            .client_queue_bytes(256 << 20)
            .rate_limit_per_sec(0)
    })
    .await;
    let (_, mut stalled) = raw_upgrade(server.addr, "/", &[]).await;
    let join = envelope(
        "command",
        json!({"command": "join_channel", "args": {"room": "flood", "channel": "two"}}),
    );
    stalled
        .send_frame(0x81, true, join.to_string().as_bytes())
        .await;
    let mut publisher = server.connect().await;
    publisher.join("flood", "two").await;
    eventually(
        Duration::from_secs(5),
        "the stalled client joined",
        async || {
            let info = publisher
                .command("channel_info", json!({"room": "flood", "channel": "two"}))
                .await;
            info["payload"]["participant_count"] == 2
        },
    )
    .await;
    let filler = "z".repeat(60_000);
    for n in 0..800 {
        publisher
            .publish("flood", "two", json!({"n": n, "filler": filler}))
            .await;
    }
    publisher.command("ping", json!({})).await;
    server.begin_shutdown();
    let stopped = tokio::time::timeout(Duration::from_secs(15), server.stop()).await;
    assert!(
        stopped.is_ok(),
        "the server stopped despite a client that never reads"
    );
    drop(stalled);
}
