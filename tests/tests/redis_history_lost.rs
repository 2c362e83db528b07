//! Redis history lost behind the server's back (SPEC §7, §18), through the
//! whole server with real WebSocket clients against a private
//! `redis-server`: after Redis restarts without persistence (or a channel's
//! keys vanish in cluster mode), the channel starts a new epoch at `seq` 1,
//! and `history` and `join_channel` report that epoch, so clients can tell
//! "history restarted" from "messages missed".
//!
//! Skipped with a notice when `redis-server` is missing, unless
//! `ARQONBUS_REQUIRE_REDIS=1`.

use std::time::Duration;

use arqon_config::{ClusterMode, StorageBackend};
use arqonbus_tests::redis::redis_server;
use arqonbus_tests::{TestClient, TestServer, envelope, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

async fn publish_acked(client: &mut TestClient, n: u64) -> Value {
    let frame = envelope(
        "message",
        json!({"room": "r", "channel": "c", "payload": {"n": n}, "ack": true}),
    );
    client.send_json(&frame).await;
    client.recv_reply_to(&frame["id"]).await
}

async fn history(client: &mut TestClient) -> Value {
    client
        .command("history", json!({"room": "r", "channel": "c"}))
        .await
}

/// Publishes (acked) until a message gets `seq` 1, which a new epoch gives.
async fn publish_until_a_new_epoch(client: &mut TestClient) {
    let mut n = 100;
    eventually(WAIT, "a message with seq 1 (a new epoch)", async || {
        n += 1;
        let ack = publish_acked(client, n).await;
        ack["payload"]["seq"] == 1
    })
    .await;
}

#[tokio::test]
async fn a_redis_restarted_without_persistence_gives_the_channel_a_new_epoch() {
    let Some(mut redis) = redis_server() else {
        return;
    };
    let url = redis.url();
    let server = TestServer::with(move |b| {
        b.storage(StorageBackend::Redis)
            .redis_url(url)
            .rate_limit_per_sec(0)
    })
    .await;
    let mut client = server.connect().await;
    let old_epoch = client.join("r", "c").await["payload"]["epoch"].clone();
    for n in 1..=5 {
        let ack = publish_acked(&mut client, n).await;
        assert_eq!(ack["payload"]["stored"], true, "{ack}");
    }
    assert_eq!(client.status().await["storage"]["persistence"], "none");

    redis.kill();
    redis.restart();
    publish_until_a_new_epoch(&mut client).await;

    let new_history = history(&mut client).await;
    let new_epoch = new_history["payload"]["epoch"].clone();
    assert!(new_epoch.is_string(), "{new_history}");
    assert_ne!(new_epoch, old_epoch, "history restarted: a new epoch");
    let messages = new_history["payload"]["messages"]
        .as_array()
        .expect("messages");
    assert_eq!(
        messages.len(),
        1,
        "only the new epoch's message: {new_history}"
    );
    assert_eq!(messages[0]["seq"], 1);
    assert_eq!(messages[0]["epoch"], new_epoch);

    let mut late = server.connect().await;
    let joined = late.join("r", "c").await;
    assert_eq!(joined["payload"]["epoch"], new_epoch, "{joined}");
    assert_eq!(joined["payload"]["seq"], 1, "{joined}");
    let ack = publish_acked(&mut client, 1000).await;
    assert_eq!(
        (
            ack["payload"]["seq"].clone(),
            ack["payload"]["stored"].clone()
        ),
        (json!(2), json!(true)),
        "{ack}"
    );
    let delivered = late.recv().await;
    assert_eq!(
        (delivered["seq"].clone(), delivered["epoch"].clone()),
        (json!(2), new_epoch)
    );
}

/// Cluster mode: Redis sequences messages; when a channel's keys vanish
/// (here deleted by hand, as a Redis restart without persistence or expiry
/// would), the next message starts a new epoch at `seq` 1 rather than
/// `seq` 1 under the old epoch.
#[tokio::test]
async fn cluster_mode_starts_a_new_epoch_when_the_channel_keys_vanish() {
    let Some(redis) = redis_server() else { return };
    let url = redis.url();
    let server = TestServer::with(move |b| {
        b.storage(StorageBackend::Redis)
            .redis_url(url)
            .cluster(ClusterMode::Redis)
            .node_id("node-a")
            .rate_limit_per_sec(0)
    })
    .await;
    let mut client = server.connect().await;
    client.join("r", "c").await;
    for n in 1..=3 {
        assert_eq!(publish_acked(&mut client, n).await["payload"]["seq"], n);
    }
    let old_epoch = history(&mut client).await["payload"]["epoch"].clone();
    assert!(old_epoch.is_string());
    assert_eq!(
        redis.int(&["DEL", "arqonbus:{r:c}:stream", "arqonbus:{r:c}:meta"]),
        2
    );
    let ack = publish_acked(&mut client, 4).await;
    assert_eq!(ack["payload"]["seq"], 1, "{ack}");
    let after = history(&mut client).await;
    assert_ne!(after["payload"]["epoch"], old_epoch, "{after}");
    assert_eq!(after["payload"]["count"], 1, "{after}");
    assert_eq!(after["payload"]["last_seq"], 1, "{after}");
    let mut late = server.connect().await;
    let joined = late.join("r", "c").await;
    assert_eq!(joined["payload"]["epoch"], after["payload"]["epoch"]);
}
