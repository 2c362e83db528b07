//! History with the default in-memory storage (SPEC §5 `history`, §7): acks
//! say `stored: true`, `history` answers oldest first with the newest
//! `limit` matches (or the oldest after `after_seq`), `since`/`until` are
//! exclusive, the ring keeps `ARQONBUS_HISTORY_SIZE` messages,
//! `channel_info` counts them, and a deleted channel starts a new epoch.

use arqonbus_tests::{TestClient, TestServer, envelope};
use serde_json::{Value, json};

async fn publish_acked(client: &mut TestClient, room: &str, channel: &str, n: u64) -> Value {
    let frame = envelope(
        "message",
        json!({"room": room, "channel": channel, "payload": {"n": n}, "ack": true}),
    );
    client.send_json(&frame).await;
    let ack = client.recv().await;
    assert_eq!(ack["request_id"], frame["id"]);
    ack
}

fn ns(history: &Value) -> Vec<u64> {
    history["payload"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["payload"]["n"].as_u64().expect("n"))
        .collect()
}

#[tokio::test]
async fn history_returns_what_was_delivered_oldest_first() {
    let server = TestServer::start().await;
    let mut sender = server.connect().await;
    let mut reader = server.connect().await;
    sender.join("lab", "log").await;
    reader.join("lab", "log").await;
    for n in 1..=10 {
        let ack = publish_acked(&mut sender, "lab", "log", n).await;
        assert_eq!(
            ack["payload"]["stored"], true,
            "memory storage stores at once"
        );
        assert_eq!(ack["payload"]["seq"], n);
    }
    let delivered = reader.recv().await;
    for _ in 2..=10 {
        reader.recv().await;
    }

    let all = reader
        .command("history", json!({"room": "lab", "channel": "log"}))
        .await;
    assert_eq!(all["status"], "success", "{all}");
    let payload = &all["payload"];
    assert_eq!(payload["room"], "lab");
    assert_eq!(payload["channel"], "log");
    assert_eq!(payload["count"], 10);
    assert_eq!(payload["backend"], "memory");
    assert_eq!(payload["last_seq"], 10);
    assert_eq!(payload["epoch"], delivered["epoch"]);
    assert_eq!(ns(&all), (1..=10).collect::<Vec<_>>());
    // Stored messages are the envelopes exactly as delivered.
    assert_eq!(payload["messages"][0], delivered);

    let newest = reader
        .command(
            "history",
            json!({"room": "lab", "channel": "log", "limit": 3}),
        )
        .await;
    assert_eq!(ns(&newest), [8, 9, 10]);
    let after = reader
        .command(
            "history",
            json!({"room": "lab", "channel": "log", "after_seq": 4, "limit": 3}),
        )
        .await;
    assert_eq!(ns(&after), [5, 6, 7]);
    let none_after = reader
        .command(
            "history",
            json!({"room": "lab", "channel": "log", "after_seq": 10}),
        )
        .await;
    assert_eq!(none_after["payload"]["count"], 0);
}

#[tokio::test]
async fn since_and_until_are_exclusive_bounds() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client.join("t", "c").await;
    for n in 1..=3 {
        publish_acked(&mut client, "t", "c", n).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let all = client
        .command("history", json!({"room": "t", "channel": "c"}))
        .await;
    let times: Vec<String> = all["payload"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["timestamp"].as_str().expect("timestamp").to_owned())
        .collect();
    let since = client
        .command(
            "history",
            json!({"room": "t", "channel": "c", "since": times[0]}),
        )
        .await;
    assert_eq!(ns(&since), [2, 3]);
    let until = client
        .command(
            "history",
            json!({"room": "t", "channel": "c", "until": times[2]}),
        )
        .await;
    assert_eq!(ns(&until), [1, 2]);
    let between = client
        .command(
            "history",
            json!({"room": "t", "channel": "c", "since": times[0], "until": times[2]}),
        )
        .await;
    assert_eq!(ns(&between), [2]);
}

#[tokio::test]
async fn bad_arguments_and_missing_channels_are_errors() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client.join("t", "c").await;
    for (args, field) in [
        (json!({"room": "t", "channel": "c", "limit": 1001}), "limit"),
        (json!({"room": "t", "channel": "c", "limit": 0}), "limit"),
        (
            json!({"room": "t", "channel": "c", "limit": "ten"}),
            "limit",
        ),
        (
            json!({"room": "t", "channel": "c", "since": "yesterday"}),
            "since",
        ),
        (
            json!({"room": "t", "channel": "c", "after_seq": -1}),
            "after_seq",
        ),
        (json!({"room": "t"}), "channel"),
    ] {
        let reply = client.command("history", args.clone()).await;
        assert_eq!(reply["error_code"], "INVALID_ARGUMENT", "{args}: {reply}");
        assert_eq!(reply["command"], "history");
        assert_eq!(reply["payload"]["details"][0]["field"], field, "{args}");
    }
    let missing = client
        .command("history", json!({"room": "no", "channel": "where"}))
        .await;
    assert_eq!(missing["error_code"], "CHANNEL_NOT_FOUND");
    let max = client
        .command(
            "history",
            json!({"room": "t", "channel": "c", "limit": 1000}),
        )
        .await;
    assert_eq!(max["status"], "success");
}

#[tokio::test]
async fn the_ring_keeps_history_size_messages_and_channel_info_counts_them() {
    let server = TestServer::with(|b| b.history_size(5)).await;
    let mut client = server.connect().await;
    client.join("r", "c").await;
    for n in 1..=8 {
        publish_acked(&mut client, "r", "c", n).await;
    }
    let history = client
        .command("history", json!({"room": "r", "channel": "c"}))
        .await;
    assert_eq!(ns(&history), [4, 5, 6, 7, 8]);
    let info = client
        .command("channel_info", json!({"room": "r", "channel": "c"}))
        .await;
    assert_eq!(info["payload"]["messages_stored"], 5);
    assert_eq!(info["payload"]["last_seq"], 8);
}

#[tokio::test]
async fn a_recreated_channel_starts_a_new_epoch_and_empty_history() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let first = client.join("r", "c").await["payload"]["epoch"].clone();
    publish_acked(&mut client, "r", "c", 1).await;
    let request = client
        .send_command(
            "delete_channel",
            json!({"room": "r", "channel": "c", "force": true}),
        )
        .await;
    // The forced member gets its notice, then the reply.
    let notice = client.recv().await;
    assert_eq!(notice["type"], "system");
    let deleted = client.recv_reply_to(&request["id"]).await;
    assert_eq!(deleted["status"], "success");
    let again = client.join("r", "c").await;
    assert_ne!(again["payload"]["epoch"], first);
    assert_eq!(again["payload"]["seq"], 0);
    let history = client
        .command("history", json!({"room": "r", "channel": "c"}))
        .await;
    assert_eq!(history["payload"]["count"], 0);
    let ack = publish_acked(&mut client, "r", "c", 1).await;
    assert_eq!(ack["payload"]["seq"], 1);
}
