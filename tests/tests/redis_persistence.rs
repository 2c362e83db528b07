//! History in Redis through the whole server (SPEC §7), against a real
//! `redis-server` each test starts on a free port: acked messages are in
//! their stream as delivered; history, `seq` and `epoch` survive a server
//! restart; Redis down at startup degrades instead of failing and flushes
//! on recovery; Redis killed mid-stream loses nothing acknowledged; strict
//! mode refuses to start and answers STORAGE_UNAVAILABLE while Redis is
//! down.
//!
//! Skipped with a notice when `redis-server` is missing, unless
//! `ARQONBUS_REQUIRE_REDIS=1`.

use std::time::Duration;

use arqon_config::{Config, StorageBackend, StorageMode};
use arqonbus_tests::redis::{RedisServer, durable_redis_server, redis_server};
use arqonbus_tests::{TestClient, TestServer, envelope, eventually, http_get};
use serde_json::{Value, json};

async fn redis_bus(redis: &RedisServer, mode: StorageMode) -> TestServer {
    let url = redis.url();
    TestServer::with(move |b| {
        b.storage(StorageBackend::Redis)
            .storage_mode(mode)
            .redis_url(url)
            .rate_limit_per_sec(0)
    })
    .await
}

async fn publish_acked(client: &mut TestClient, n: u64) -> Value {
    let frame = envelope(
        "message",
        json!({"room": "r", "channel": "c", "payload": {"n": n}, "ack": true}),
    );
    client.send_json(&frame).await;
    client.recv_reply_to(&frame["id"]).await
}

const STREAM: &str = "arqonbus:{r:c}:stream";

#[tokio::test]
async fn acked_messages_are_in_their_stream_as_delivered() {
    let Some(redis) = redis_server() else { return };
    let server = redis_bus(&redis, StorageMode::Degraded).await;
    let mut sender = server.connect().await;
    let mut reader = server.connect().await;
    sender.join("r", "c").await;
    reader.join("r", "c").await;
    for n in 1..=3 {
        let ack = publish_acked(&mut sender, n).await;
        assert_eq!(ack["payload"]["stored"], true, "{ack}");
        assert_eq!(ack["payload"]["seq"], n);
    }
    let delivered = reader.recv().await;
    reader.recv().await;
    reader.recv().await;
    let entries = redis.xrange(STREAM);
    let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["1-0", "2-0", "3-0"]);
    let stored: Value = serde_json::from_slice(&entries[0].1["envelope"]).expect("envelope JSON");
    assert_eq!(stored, delivered);
    let meta = redis.hgetall("arqonbus:{r:c}:meta");
    assert_eq!(meta["epoch"], delivered["epoch"].as_str().expect("epoch"));

    let history = reader
        .command("history", json!({"room": "r", "channel": "c"}))
        .await;
    assert_eq!(history["payload"]["backend"], "redis");
    assert_eq!(history["payload"]["count"], 3);
    let status = reader.status().await;
    assert_eq!(
        status["storage"],
        json!({"backend": "redis", "degraded": false, "memory_bytes": 0, "persistence": "none"})
    );
}

#[tokio::test]
async fn history_seq_and_epoch_survive_a_server_restart() {
    let Some(redis) = redis_server() else { return };
    let server = redis_bus(&redis, StorageMode::Degraded).await;
    let mut client = server.connect().await;
    let epoch = client.join("r", "c").await["payload"]["epoch"].clone();
    for n in 1..=5 {
        assert_eq!(
            publish_acked(&mut client, n).await["payload"]["stored"],
            true
        );
    }
    drop(client);
    server.stop().await;

    let server = redis_bus(&redis, StorageMode::Degraded).await;
    let mut client = server.connect().await;
    let joined = client.join("r", "c").await;
    assert_eq!(joined["payload"]["seq"], 5, "seq continues: {joined}");
    assert_eq!(joined["payload"]["epoch"], epoch, "epoch unchanged");
    let history = client
        .command("history", json!({"room": "r", "channel": "c"}))
        .await;
    assert_eq!(history["payload"]["count"], 5);
    assert_eq!(history["payload"]["epoch"], epoch);
    assert_eq!(publish_acked(&mut client, 6).await["payload"]["seq"], 6);
    assert_eq!(redis.xrange(STREAM).len(), 6);
}

#[tokio::test]
async fn redis_down_at_startup_degrades_then_flushes_on_recovery() {
    let Some(mut redis) = redis_server() else {
        return;
    };
    redis.kill();
    let server = redis_bus(&redis, StorageMode::Degraded).await;
    let health = http_get(server.addr, "/health").await.json();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["storage"]["degraded"], true);
    assert_eq!(
        http_get(server.addr, "/ready").await.status,
        200,
        "degraded mode stays ready"
    );

    let mut sender = server.connect().await;
    let mut reader = server.connect().await;
    sender.join("r", "c").await;
    reader.join("r", "c").await;
    for n in 1..=4 {
        let ack = publish_acked(&mut sender, n).await;
        assert_eq!(ack["payload"]["stored"], false, "not in Redis yet: {ack}");
        assert_eq!(ack["payload"]["delivered"], 1, "live routing continues");
        assert_eq!(reader.recv().await["payload"]["n"], n);
    }

    redis.restart();
    let addr = server.addr;
    eventually(Duration::from_secs(15), "storage recovers", || async move {
        http_get(addr, "/health").await.json()["status"] == "ok"
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "the buffer is flushed in order",
        || {
            let ids: Vec<String> = redis.xrange(STREAM).into_iter().map(|(id, _)| id).collect();
            async move { ids == ["1-0", "2-0", "3-0", "4-0"] }
        },
    )
    .await;
    assert_eq!(
        publish_acked(&mut sender, 5).await["payload"]["stored"],
        true
    );
}

#[tokio::test]
async fn redis_killed_mid_stream_loses_nothing_acknowledged() {
    let Some(mut redis) = durable_redis_server() else {
        return;
    };
    let server = redis_bus(&redis, StorageMode::Degraded).await;
    let mut sender = server.connect().await;
    sender.join("r", "c").await;
    let total = 600;
    let mut stored_true = Vec::new();
    for n in 1..=total {
        if n == total / 3 {
            redis.kill();
        }
        if n == 2 * total / 3 {
            redis.restart();
        }
        let ack = publish_acked(&mut sender, n).await;
        assert_eq!(ack["payload"]["seq"], n);
        if ack["payload"]["stored"] == true {
            stored_true.push(n);
        }
    }
    assert!(!stored_true.is_empty());
    eventually(
        Duration::from_secs(20),
        "every message reaches the stream",
        || {
            let len = redis.xrange(STREAM).len();
            async move { len == total as usize }
        },
    )
    .await;
    let ids: Vec<String> = redis.xrange(STREAM).into_iter().map(|(id, _)| id).collect();
    let expected: Vec<String> = (1..=total).map(|n| format!("{n}-0")).collect();
    assert_eq!(ids, expected, "in seq order, no gap");
}

#[tokio::test]
async fn strict_mode_refuses_to_start_and_refuses_publishes_while_down() {
    // Durable: restarted without its data, Redis would have lost seq 1, and
    // seq 2 would rightly not be stored under the old epoch (SPEC §18).
    let Some(mut redis) = durable_redis_server() else {
        return;
    };
    let url = redis.url();
    let strict = |url: String| {
        Config::builder()
            .port(0)
            .telemetry_port(0)
            .storage(StorageBackend::Redis)
            .storage_mode(StorageMode::Strict)
            .redis_url(url)
            .build()
            .expect("config")
    };
    redis.kill();
    let refused = arqonbus_server::Server::bind(strict(url.clone())).await;
    assert!(
        matches!(refused, Err(arqonbus_server::ServerError::Storage(_))),
        "{refused:?}"
    );

    redis.restart();
    let server = TestServer::with_config(strict(url)).await;
    let mut client = server.connect().await;
    client.join("r", "c").await;
    assert_eq!(
        publish_acked(&mut client, 1).await["payload"]["stored"],
        true
    );

    redis.kill();
    let addr = server.addr;
    eventually(Duration::from_secs(10), "/ready turns 503", || async move {
        http_get(addr, "/ready").await.status == 503
    })
    .await;
    let refused = publish_acked(&mut client, 2).await;
    assert_eq!(refused["error_code"], "STORAGE_UNAVAILABLE", "{refused}");
    assert_eq!(refused["payload"]["code"], 503);

    redis.restart();
    eventually(Duration::from_secs(15), "/ready is back", || async move {
        http_get(addr, "/ready").await.status == 200
    })
    .await;
    assert_eq!(
        publish_acked(&mut client, 2).await["payload"]["stored"],
        true
    );
}
