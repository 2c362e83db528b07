//! Cluster mode (SPEC §10): three nodes in this process sharing one private
//! `redis-server` behave as one bus: channel messages and direct messages
//! cross nodes, `seq` and history are shared, `channel_info` and `status`
//! count members on every node, and a node keeps serving its own clients
//! while Redis is down, recovering cross-node delivery when it returns.
//! The same runs against a three-master Redis Cluster.
//!
//! Skipped with a notice when `redis-server` (or, for the Redis Cluster,
//! `redis-cli`) is missing, unless `ARQONBUS_REQUIRE_REDIS=1`.

use std::time::Duration;

use arqon_config::{ClusterMode, StorageBackend};
use arqon_storage::testing::{RedisServer, Resp, redis_cluster, redis_server};
use arqonbus_tests::{TestClient, TestServer, envelope, eventually};
use serde_json::{Value, json};

async fn node(url: &str, id: &str) -> TestServer {
    node_with(url, id, true).await
}

async fn node_with(url: &str, id: &str, auto_create: bool) -> TestServer {
    let (url, id) = (url.to_owned(), id.to_owned());
    TestServer::with(move |b| {
        b.storage(StorageBackend::Redis)
            .redis_url(url)
            .cluster(ClusterMode::Redis)
            .node_id(id)
            .rate_limit_per_sec(0)
            .auto_create_channels(auto_create)
    })
    .await
}

async fn three_nodes(url: &str) -> [TestServer; 3] {
    [
        node(url, "node-a").await,
        node(url, "node-b").await,
        node(url, "node-c").await,
    ]
}

async fn publish(client: &mut TestClient, room: &str, channel: &str, payload: Value) -> Value {
    let frame = envelope(
        "message",
        json!({"room": room, "channel": channel, "payload": payload, "ack": true}),
    );
    client.send_json(&frame).await;
    client.recv_reply_to(&frame["id"]).await
}

/// Channel messages published on any node reach members on every node, in
/// one `seq` order, and the ack counts recipients over the cluster.
async fn messages_cross_nodes(url: &str) {
    let [a, b, c] = three_nodes(url).await;
    let mut alice = a.connect().await;
    let mut bob = b.connect().await;
    let mut carol = c.connect().await;
    let mut outsider = c.connect().await;
    let alice_id = client_id(&mut alice).await;
    alice.join("science", "explore").await;
    bob.join("science", "explore").await;
    let joined = carol.join("science", "explore").await;
    assert_eq!(joined["payload"]["participant_count"], 3, "{joined}");
    outsider.join("chat", "public").await;

    let ack = publish(&mut alice, "science", "explore", json!({"n": 1})).await;
    assert_eq!(ack["payload"]["seq"], 1, "{ack}");
    assert_eq!(ack["payload"]["delivered"], 2, "{ack}");
    assert_eq!(ack["payload"]["stored"], true, "{ack}");
    assert_eq!(bob.recv().await["seq"], 1);
    let ack = publish(&mut bob, "science", "explore", json!({"n": 2})).await;
    assert_eq!(ack["payload"]["seq"], 2, "{ack}");

    let first = carol.recv().await;
    let second = carol.recv().await;
    assert_eq!(
        (first["seq"].clone(), second["seq"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(first["payload"], json!({"n": 1}));
    assert_eq!(first["sender"], alice_id);
    assert_eq!(first["epoch"], second["epoch"]);
    assert_eq!(alice.recv().await["seq"], 2);
    // No echo to the sender, nothing for other channels.
    alice.expect_silence(Duration::from_millis(300)).await;
    bob.expect_silence(Duration::from_millis(100)).await;
    outsider.expect_silence(Duration::from_millis(100)).await;

    // Many messages from two nodes at once: everyone sees one order.
    for n in 0..50 {
        let from = if n % 2 == 0 { &mut alice } else { &mut bob };
        let frame = envelope(
            "message",
            json!({"room": "science", "channel": "explore", "payload": {"n": n}}),
        );
        from.send_json(&frame).await;
    }
    let mut seqs = Vec::new();
    for _ in 0..50 {
        seqs.push(carol.recv().await["seq"].as_u64().expect("seq"));
    }
    assert_eq!(seqs, (3..=52).collect::<Vec<u64>>());
}

async fn client_id(client: &mut TestClient) -> Value {
    let identified = client.command("identify", json!({})).await;
    identified["payload"]["client_id"].clone()
}

#[tokio::test]
async fn channel_messages_reach_every_node_in_one_seq_order() {
    let Some(redis) = redis_server() else { return };
    messages_cross_nodes(&redis.url()).await;
}

#[tokio::test]
async fn redis_cluster_topology_works_the_same() {
    let Some(cluster) = redis_cluster() else {
        return;
    };
    messages_cross_nodes(&cluster.url()).await;
    let [a, b, _c] = three_nodes(&cluster.url()).await;
    let mut x = a.connect().await;
    let mut y = b.connect().await;
    let y_id = client_id(&mut y).await;
    let frame = envelope(
        "message",
        json!({"to_client": y_id, "payload": {"hi": true}, "ack": true}),
    );
    x.send_json(&frame).await;
    let ack = x.recv_reply_to(&frame["id"]).await;
    assert_eq!(ack["payload"]["delivered"], 1, "{ack}");
    assert_eq!(y.recv().await["payload"], json!({"hi": true}));
}

#[tokio::test]
async fn direct_messages_find_their_target_on_any_node() {
    let Some(redis) = redis_server() else { return };
    let [a, b, _c] = three_nodes(&redis.url()).await;
    let mut sender = a.connect().await;
    let mut target = b.connect().await;
    let target_id = client_id(&mut target).await;
    let frame = envelope(
        "message",
        json!({"to_client": target_id, "payload": {"secret": 42}, "ack": true}),
    );
    sender.send_json(&frame).await;
    let ack = sender.recv_reply_to(&frame["id"]).await;
    assert_eq!(
        ack["payload"],
        json!({"delivered": 1, "seq": null, "stored": false})
    );
    let got = target.recv().await;
    assert_eq!(got["payload"], json!({"secret": 42}));
    assert_eq!(got["to_client"], target_id);

    // A client that left is not found, on any node.
    drop(target);
    eventually(Duration::from_secs(5), "target unregistered", async || {
        let frame = envelope(
            "message",
            json!({"to_client": target_id, "payload": {}, "ack": true}),
        );
        sender.send_json(&frame).await;
        let reply = sender.recv_reply_to(&frame["id"]).await;
        reply["error_code"] == "TARGET_NOT_FOUND"
    })
    .await;
}

#[tokio::test]
async fn seq_history_and_presence_are_shared() {
    let Some(redis) = redis_server() else { return };
    let [a, b, c] = three_nodes(&redis.url()).await;
    let mut alice = a.connect().await;
    let mut bob = b.connect().await;
    alice.join("r", "c").await;
    bob.join("r", "c").await;
    for n in 1..=3 {
        publish(&mut alice, "r", "c", json!({"n": n})).await;
        publish(&mut bob, "r", "c", json!({"n": n + 10})).await;
    }
    // A client on a third node that never joined sees the whole history.
    let mut carol = c.connect().await;
    let history = carol
        .command("history", json!({"room": "r", "channel": "c"}))
        .await;
    let seqs: Vec<u64> = history["payload"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6], "{history}");
    assert_eq!(history["payload"]["last_seq"], 6);
    let joined = carol.join("r", "c").await;
    assert_eq!(joined["payload"]["seq"], 6, "{joined}");
    assert_eq!(joined["payload"]["participant_count"], 3);
    assert_eq!(joined["payload"]["epoch"], history["payload"]["epoch"]);

    let info = carol
        .command("channel_info", json!({"room": "r", "channel": "c"}))
        .await;
    assert_eq!(info["payload"]["participant_count"], 3, "{info}");
    assert_eq!(
        info["payload"]["participants"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(info["payload"]["last_seq"], 6);

    let status = carol.status().await;
    assert_eq!(status["participants"]["channels"]["r:c"], 3, "{status}");
    assert_eq!(status["clients"]["active"], 3, "{status}");
    assert_eq!(status["subscriptions"], 3, "{status}");
    let nodes: Vec<&str> = status["cluster"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["node_id"].as_str())
        .collect();
    for id in ["node-a", "node-b", "node-c"] {
        assert!(nodes.contains(&id), "{id} missing from {nodes:?}");
    }

    // Leaving on one node is seen from the others.
    let leave = bob
        .send_command("leave_channel", json!({"room": "r", "channel": "c"}))
        .await;
    bob.recv_reply_to(&leave["id"]).await;
    let info = alice
        .send_command("channel_info", json!({"room": "r", "channel": "c"}))
        .await;
    let info = alice.recv_reply_to(&info["id"]).await;
    assert_eq!(info["payload"]["participant_count"], 2, "{info}");
}

#[tokio::test]
async fn a_node_serves_its_clients_while_redis_is_down_and_recovers() {
    let Some(mut redis) = redis_server() else {
        return;
    };
    let [a, b, _c] = three_nodes(&redis.url()).await;
    let mut alice = a.connect().await;
    let mut local = a.connect().await;
    let mut bob = b.connect().await;
    for client in [&mut alice, &mut local, &mut bob] {
        client.join("r", "c").await;
    }
    publish(&mut alice, "r", "c", json!({"n": 1})).await;
    assert_eq!(bob.recv().await["payload"]["n"], 1);
    assert_eq!(local.recv().await["payload"]["n"], 1);

    redis.kill();
    // Local fan-out goes on.
    eventually(
        Duration::from_secs(10),
        "local delivery while down",
        async || {
            publish(&mut alice, "r", "c", json!({"down": true})).await;
            local
                .try_recv(Duration::from_millis(500))
                .await
                .is_some_and(|m| m["payload"]["down"] == true)
        },
    )
    .await;
    let status = alice.status().await;
    assert_eq!(status["storage"]["degraded"], true, "{status}");

    redis.restart();
    // Cross-node delivery comes back.
    eventually(
        Duration::from_secs(20),
        "cross-node delivery after recovery",
        async || {
            publish(&mut alice, "r", "c", json!({"back": true})).await;
            loop {
                match bob.try_recv(Duration::from_millis(500)).await {
                    Some(m) if m["payload"]["back"] == true => return true,
                    Some(_) => {}
                    None => return false,
                }
            }
        },
    )
    .await;
}

#[tokio::test]
async fn channels_created_or_deleted_on_one_node_are_so_on_every_node() {
    let Some(redis) = redis_server() else { return };
    let a = node_with(&redis.url(), "node-a", false).await;
    let b = node_with(&redis.url(), "node-b", false).await;
    let mut admin = a.connect().await;
    let mut other_admin = b.connect().await;
    let mut bob = b.connect().await;
    let admin_id = client_id(&mut admin).await;
    let args = json!({"room": "ops", "channel": "alerts", "description": "pager"});

    let created = admin.command("create_channel", args.clone()).await;
    assert_eq!(created["status"], "success", "{created}");
    let listed = other_admin
        .command("list_channels", json!({"room": "ops"}))
        .await;
    assert_eq!(listed["payload"]["total"], 1, "{listed}");
    let record = &listed["payload"]["channels"][0];
    assert_eq!(record["description"], "pager", "{listed}");
    assert_eq!(record["created_by"], admin_id, "{listed}");
    assert_eq!(record["auto_created"], false, "{listed}");
    // Auto-create is off, yet the channel is joinable on the other node.
    let joined = bob.join("ops", "alerts").await;
    assert_eq!(joined["payload"]["participant_count"], 1, "{joined}");
    for client in [&mut admin, &mut other_admin] {
        let again = client.command("create_channel", args.clone()).await;
        assert_eq!(again["error_code"], "CHANNEL_EXISTS", "{again}");
    }

    let at_a = admin.command("list_channels", json!({"room": "ops"})).await;
    assert_eq!(
        at_a["payload"]["channels"][0]["participant_count"], 1,
        "{at_a}"
    );
    let refused = admin
        .command(
            "delete_channel",
            json!({"room": "ops", "channel": "alerts"}),
        )
        .await;
    assert_eq!(refused["error_code"], "CHANNEL_NOT_EMPTY", "{refused}");
    let gone = admin
        .command(
            "delete_channel",
            json!({"room": "ops", "channel": "alerts", "force": true}),
        )
        .await;
    assert_eq!(gone["payload"]["removed_members"], 1, "{gone}");
    let notice = bob.recv().await;
    assert_eq!(notice["type"], "system", "{notice}");
    assert_eq!(notice["payload"]["event"], "channel_deleted", "{notice}");
    eventually(Duration::from_secs(5), "deleted on node b", async || {
        let listed = other_admin
            .command("list_channels", json!({"room": "ops"}))
            .await;
        listed["error_code"] == "ROOM_NOT_FOUND"
    })
    .await;
    let join = bob
        .command("join_channel", json!({"room": "ops", "channel": "alerts"}))
        .await;
    assert_eq!(join["error_code"], "CHANNEL_NOT_FOUND", "{join}");
}

/// `PUBSUB NUMSUB` of a channel's live Pub/Sub channel: how many nodes
/// listen to it.
fn listening_nodes(redis: &RedisServer, live: &str) -> i64 {
    match redis.cmd(&["PUBSUB", "NUMSUB", live]) {
        Resp::Array(Some(reply)) => match reply.get(1) {
            Some(Resp::Int(n)) => *n,
            other => panic!("NUMSUB count: {other:?}"),
        },
        other => panic!("NUMSUB reply: {other:?}"),
    }
}

#[tokio::test]
async fn a_node_listens_only_to_channels_it_has_members_in() {
    let Some(redis) = redis_server() else { return };
    let [a, b, _c] = three_nodes(&redis.url()).await;
    let live = "arqonbus:{r:c}:live";
    let mut alice = a.connect().await;
    let mut bob = b.connect().await;
    let mut alice_too = a.connect().await;
    assert_eq!(listening_nodes(&redis, live), 0);
    alice.join("r", "c").await;
    assert_eq!(listening_nodes(&redis, live), 1);
    alice_too.join("r", "c").await;
    bob.join("r", "c").await;
    assert_eq!(listening_nodes(&redis, live), 2);
    // Node a listens while it has a member left.
    alice
        .command("leave_channel", json!({"room": "r", "channel": "c"}))
        .await;
    assert_eq!(listening_nodes(&redis, live), 2);
    alice_too
        .command("leave_channel", json!({"room": "r", "channel": "c"}))
        .await;
    assert_eq!(listening_nodes(&redis, live), 1);
    drop(bob);
    eventually(Duration::from_secs(5), "node b unsubscribed", async || {
        listening_nodes(&redis, live) == 0
    })
    .await;
}
