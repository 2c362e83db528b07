//! Presence events and recovery across cluster nodes (SPEC §10, §14, §15):
//! two nodes in this process share one private `redis-server`.
//!
//! - A member joining, leaving or disconnecting on one node is announced to
//!   the presence subscribers on the other node, with the member count over
//!   the cluster, and exactly once to those on its own node.
//! - The members of a node that dies (here a bare cluster handle that
//!   joins and is dropped without a word, as a killed process would be)
//!   leave, as far as the surviving node's subscribers are told, once its
//!   heartbeat is older than the node TTL.
//! - A client that saw messages on one node and rejoins on the other with
//!   `recover` gets exactly the messages it missed, then the live ones,
//!   every `seq` once, while a publisher on the first node keeps going.
//!
//! Skipped with a notice when `redis-server` is missing, unless
//! `ARQONBUS_REQUIRE_REDIS=1`.

use std::time::Duration;

use std::sync::Arc;

use arqon_cluster::Cluster;
use arqon_config::{ClusterMode, Config, StorageBackend};
use arqon_protocol::{ChannelKey, ClientId};
use arqon_routing::{Backplane, Router};
use arqon_storage::Storage;
use arqon_storage::testing::redis_server;
use arqonbus_tests::{TestClient, TestServer, eventually};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const ROOM: &str = "lab";
const CHANNEL: &str = "bench";

async fn node(url: &str, id: &str) -> TestServer {
    let (url, id) = (url.to_owned(), id.to_owned());
    TestServer::with(move |b| {
        b.storage(StorageBackend::Redis)
            .redis_url(url)
            .cluster(ClusterMode::Redis)
            .node_id(id)
            .rate_limit_per_sec(0)
    })
    .await
}

async fn join_with(client: &mut TestClient, args: Value) -> Value {
    let mut all = json!({"room": ROOM, "channel": CHANNEL});
    if let (Some(all), Some(extra)) = (all.as_object_mut(), args.as_object()) {
        all.extend(extra.clone());
    }
    let reply = client.command("join_channel", all).await;
    assert_eq!(reply["status"], "success", "{reply}");
    reply
}

/// Asserts `frame` is a presence event about client `subject`.
fn assert_presence(frame: &Value, event: &str, subject: &str, count: Option<u64>) {
    assert_eq!(frame["type"], "system", "{frame}");
    assert_eq!(frame["sender"], "arqonbus", "{frame}");
    assert_eq!(frame["room"], ROOM, "{frame}");
    assert_eq!(frame["channel"], CHANNEL, "{frame}");
    assert!(frame.get("seq").is_none(), "no seq: {frame}");
    let payload = &frame["payload"];
    assert_eq!(payload["event"], event, "{frame}");
    assert_eq!(payload["client"]["client_id"], subject, "{frame}");
    assert!(payload["client"].get("client_type").is_some(), "{frame}");
    assert!(payload["client"].get("screen_name").is_some(), "{frame}");
    if let Some(count) = count {
        assert_eq!(payload["participant_count"], count, "{frame}");
    }
}

#[tokio::test]
async fn joins_leaves_and_disconnects_on_one_node_reach_subscribers_on_another() {
    let Some(redis) = redis_server() else { return };
    let a = node(&redis.url(), "node-a").await;
    let b = node(&redis.url(), "node-b").await;

    let mut remote_watcher = b.connect().await;
    join_with(&mut remote_watcher, json!({"presence": true})).await;
    let mut local_watcher = a.connect().await;
    join_with(&mut local_watcher, json!({"presence": true})).await;
    let event = remote_watcher.recv().await;
    assert_presence(&event, "join", local_watcher.client_id.as_str(), Some(2));

    let mut ada = a.connect_query("screen_name=Ada").await;
    join_with(&mut ada, json!({})).await;
    let event = remote_watcher.recv().await;
    assert_presence(&event, "join", ada.client_id.as_str(), Some(3));
    assert_eq!(event["payload"]["client"]["screen_name"], "Ada");
    // The origin node's own subscriber hears of it once, not again
    // through Redis.
    let event = local_watcher.recv().await;
    assert_presence(&event, "join", ada.client_id.as_str(), None);
    // A repeated join is no news.
    join_with(&mut ada, json!({})).await;

    let reply = ada
        .command("leave_channel", json!({"room": ROOM, "channel": CHANNEL}))
        .await;
    assert_eq!(reply["payload"]["was_member"], true, "{reply}");
    assert_presence(
        &remote_watcher.recv().await,
        "leave",
        ada.client_id.as_str(),
        Some(2),
    );
    assert_presence(
        &local_watcher.recv().await,
        "leave",
        ada.client_id.as_str(),
        None,
    );

    // A disconnect is a leave, on the other node too.
    let mut bob = a.connect().await;
    join_with(&mut bob, json!({})).await;
    let bob_id = bob.client_id.clone();
    assert_presence(&remote_watcher.recv().await, "join", &bob_id, Some(3));
    assert_presence(&local_watcher.recv().await, "join", &bob_id, None);
    drop(bob);
    assert_presence(&remote_watcher.recv().await, "leave", &bob_id, Some(2));
    assert_presence(&local_watcher.recv().await, "leave", &bob_id, None);

    // The same the other way round: B's members reach A's subscriber.
    let mut carol = b.connect().await;
    join_with(&mut carol, json!({})).await;
    assert_presence(
        &local_watcher.recv().await,
        "join",
        carol.client_id.as_str(),
        Some(3),
    );
    assert_presence(
        &remote_watcher.recv().await,
        "join",
        carol.client_id.as_str(),
        None,
    );

    // Exactly once each, and nothing for a subscriber that turned them off.
    local_watcher
        .expect_silence(Duration::from_millis(300))
        .await;
    remote_watcher
        .expect_silence(Duration::from_millis(100))
        .await;
    join_with(&mut remote_watcher, json!({})).await;
    let mut dave = a.connect().await;
    join_with(&mut dave, json!({})).await;
    assert_presence(
        &local_watcher.recv().await,
        "join",
        dave.client_id.as_str(),
        None,
    );
    remote_watcher
        .expect_silence(Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn a_dead_nodes_members_leave_on_the_surviving_node() {
    let Some(redis) = redis_server() else { return };
    let b = node(&redis.url(), "node-b").await;
    let config = Config::builder()
        .storage(StorageBackend::Redis)
        .redis_url(redis.url())
        .node_id("node-ghost")
        .build()
        .expect("valid config");
    let key = ChannelKey::new(ROOM, CHANNEL).expect("valid key");
    let ghost = Cluster::open(
        &config.cluster,
        &config.storage,
        Storage::in_memory(1),
        Arc::new(Router::new(&config.routing, &[])),
        &TaskTracker::new(),
        CancellationToken::new(),
    )
    .await
    .expect("cluster opens");
    let record = |id: &str| json!({"client_id": id, "client_type": "human", "screen_name": id});
    let id = |id: &str| ClientId::new(id).expect("valid client id");
    // One member before the subscriber's node listens to the channel (it
    // learns of it from Redis), one after (it learns of it from a notice).
    Backplane::joined(&ghost, &key, &id("arq_ghost_1"), record("arq_ghost_1"))
        .await
        .expect("joined");

    let mut watcher = b.connect().await;
    let reply = join_with(&mut watcher, json!({"presence": true})).await;
    assert_eq!(reply["payload"]["participant_count"], 2, "{reply}");
    Backplane::joined(&ghost, &key, &id("arq_ghost_2"), record("arq_ghost_2"))
        .await
        .expect("joined");
    assert_presence(&watcher.recv().await, "join", "arq_ghost_2", Some(3));

    // The node dies: no heartbeat, no leave of its own.
    drop(ghost);
    let mut left = Vec::new();
    for _ in 0..2 {
        let event = watcher
            .try_recv(Duration::from_secs(30))
            .await
            .expect("the dead node's members leave within 30 s");
        assert_eq!(event["payload"]["event"], "leave", "{event}");
        assert!(event.get("seq").is_none(), "{event}");
        left.push(event["payload"]["client"]["client_id"].clone());
        assert_eq!(event["payload"]["client"]["client_type"], "human");
    }
    left.sort_by_key(ToString::to_string);
    assert_eq!(left, [json!("arq_ghost_1"), json!("arq_ghost_2")]);
    watcher.expect_silence(Duration::from_millis(300)).await;
    // Its presence keys expire with the same TTL (give or take the moment
    // of its last write).
    eventually(
        Duration::from_secs(5),
        "presence lists the survivor only",
        async || {
            let presence = watcher
                .command("presence", json!({"room": ROOM, "channel": CHANNEL}))
                .await;
            presence["payload"]["count"] == 1
        },
    )
    .await;
}

/// The seq of a channel message.
fn seq(message: &Value) -> u64 {
    message["seq"]
        .as_u64()
        .expect("a channel message has a seq")
}

/// Publishes message `i`, pausing a little every ten messages so that
/// publishing spans the rejoin.
async fn publish_paced(publisher: &mut TestClient, i: u64) {
    publisher.publish(ROOM, CHANNEL, json!({"i": i})).await;
    if i.is_multiple_of(10) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_client_recovers_on_another_node_while_publishing_goes_on() {
    const TOTAL: u64 = 300;
    let Some(redis) = redis_server() else { return };
    let a = node(&redis.url(), "node-a").await;
    let b = node(&redis.url(), "node-b").await;

    let mut publisher = a.connect().await;
    publisher.join(ROOM, CHANNEL).await;
    let mut reader = a.connect().await;
    let joined = reader.join(ROOM, CHANNEL).await;
    let epoch = joined["payload"]["epoch"].clone();
    for i in 0..5 {
        publisher.publish(ROOM, CHANNEL, json!({"i": i})).await;
    }
    let mut last = 0;
    for _ in 0..5 {
        let message = reader.recv().await;
        assert_eq!(message["epoch"], epoch, "{message}");
        last = seq(&message);
    }
    assert_eq!(last, 5);
    drop(reader);

    // The publisher keeps going on node A while the reader comes back on
    // B: the rejoin starts once a watcher on A has seen seq 20, and the
    // last part is published only after the rejoin's reply, so that the
    // reply's publications and the live messages both have some.
    let mut watcher = a.connect().await;
    watcher.join(ROOM, CHANNEL).await;
    let (joined_tx, joined_rx) = tokio::sync::oneshot::channel::<()>();
    let publishing = tokio::spawn(async move {
        for i in 5..TOTAL - 50 {
            publish_paced(&mut publisher, i).await;
        }
        joined_rx.await.expect("the reader rejoined");
        for i in TOTAL - 50..TOTAL {
            publish_paced(&mut publisher, i).await;
        }
        publisher.command("ping", json!({})).await;
        publisher
    });
    while seq(&watcher.recv().await) < 20 {}
    let mut reader = b.connect().await;
    let reply = reader
        .command(
            "join_channel",
            json!({"room": ROOM, "channel": CHANNEL,
                   "recover": {"seq": last, "epoch": epoch}}),
        )
        .await;
    let payload = &reply["payload"];
    assert_eq!(reply["status"], "success", "{reply}");
    assert_eq!(payload["recovered"], true, "{reply}");
    assert_eq!(payload["epoch"], epoch, "{reply}");
    let upto = payload["seq"].as_u64().expect("seq");
    let recovered: Vec<u64> = payload["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(seq)
        .collect();
    assert_eq!(
        recovered,
        (last + 1..=upto).collect::<Vec<u64>>(),
        "{reply}"
    );
    assert!((20..TOTAL - 50).contains(&upto), "{reply}");
    joined_tx.send(()).expect("the publisher waits");

    let _publisher = publishing.await.expect("publisher ran");
    let mut live = Vec::new();
    while live.last().copied().unwrap_or(upto) < TOTAL {
        let message = reader.recv().await;
        assert_eq!(message["type"], "message", "{message}");
        live.push(seq(&message));
    }
    assert_eq!(live, (upto + 1..=TOTAL).collect::<Vec<u64>>());
    reader.expect_silence(Duration::from_millis(300)).await;
}
