//! Recovery on join (SPEC §14): a client that rejoins with the last `seq`
//! and `epoch` it saw gets exactly the messages it missed in the reply's
//! `publications`, then every later message live, after the reply — with
//! no gap and no duplicate, even while a publisher runs flat out.

use std::collections::BTreeMap;
use std::time::Duration;

use arqonbus_tests::{TestClient, TestServer, assert_error, envelope};
use serde_json::{Value, json};

const ROOM: &str = "ops";
const CHANNEL: &str = "feed";

async fn join_recovering(client: &mut TestClient, seq: u64, epoch: &Value) -> Value {
    let reply = client
        .command(
            "join_channel",
            json!({"room": ROOM, "channel": CHANNEL, "recover": {"seq": seq, "epoch": epoch}}),
        )
        .await;
    assert_eq!(reply["status"], "success", "{reply}");
    reply
}

async fn publish_n(publisher: &mut TestClient, n: usize) {
    for i in 0..n {
        publisher.publish(ROOM, CHANNEL, json!({"i": i})).await;
    }
}

/// The seqs of `messages`.
fn seqs(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|message| message["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test]
async fn a_rejoin_recovers_what_was_missed_then_continues_live() {
    let server = TestServer::start().await;
    let mut publisher = server.connect().await;
    publisher.join(ROOM, CHANNEL).await;
    publish_n(&mut publisher, 5).await;
    publisher.command("ping", json!({})).await;

    let mut reader = server.connect().await;
    let joined = reader.join(ROOM, CHANNEL).await;
    let epoch = joined["payload"]["epoch"].clone();
    assert_eq!(joined["payload"]["seq"], 5);
    drop(reader);

    publish_n(&mut publisher, 3).await;
    // The publisher's own round trip orders the three before the rejoin.
    publisher.command("ping", json!({})).await;

    let mut reader = server.connect().await;
    let reply = join_recovering(&mut reader, 5, &epoch).await;
    let payload = &reply["payload"];
    assert_eq!(payload["recovered"], true, "{payload}");
    assert_eq!(payload["seq"], 8);
    let publications = payload["publications"].as_array().expect("array");
    assert_eq!(seqs(publications), [6, 7, 8]);
    for message in publications {
        assert_eq!(message["type"], "message");
        assert_eq!(message["sender"], publisher.client_id.as_str());
        assert_eq!(message["epoch"], epoch);
    }

    publisher.publish(ROOM, CHANNEL, json!({"i": "live"})).await;
    let live = reader.recv().await;
    assert_eq!(live["seq"], 9, "{live}");
}

#[tokio::test]
async fn nothing_missed_recovers_with_no_publications() {
    let server = TestServer::start().await;
    let mut publisher = server.connect().await;
    publisher.join(ROOM, CHANNEL).await;
    publish_n(&mut publisher, 2).await;
    publisher.command("ping", json!({})).await;
    let mut reader = server.connect().await;
    let epoch = reader.join(ROOM, CHANNEL).await["payload"]["epoch"].clone();
    let reply = join_recovering(&mut reader, 2, &epoch).await;
    assert_eq!(reply["payload"]["recovered"], true);
    assert_eq!(reply["payload"]["publications"], json!([]));
}

#[tokio::test]
async fn a_wrong_epoch_a_future_seq_or_lost_history_is_not_recovered() {
    let server = TestServer::with(|b| b.history_size(3)).await;
    let mut publisher = server.connect().await;
    let epoch = publisher.join(ROOM, CHANNEL).await["payload"]["epoch"].clone();
    publish_n(&mut publisher, 10).await;
    publisher.command("ping", json!({})).await;

    let mut reader = server.connect().await;
    let cases = [
        (9, json!("another-epoch")),
        (11, epoch.clone()),
        // Only seqs 8..=10 are still stored.
        (2, epoch.clone()),
    ];
    for (seq, epoch_sent) in cases {
        let reply = join_recovering(&mut reader, seq, &epoch_sent).await;
        let payload = &reply["payload"];
        assert_eq!(payload["recovered"], false, "{seq} {epoch_sent}: {payload}");
        assert_eq!(payload["publications"], json!([]));
        // Where the channel stands, so the client can start over.
        assert_eq!(payload["seq"], 10);
        assert_eq!(payload["epoch"], epoch);
    }
    // Still stored: recovered.
    let reply = join_recovering(&mut reader, 8, &epoch).await;
    assert_eq!(reply["payload"]["recovered"], true);
    assert_eq!(
        seqs(reply["payload"]["publications"].as_array().expect("array")),
        [9, 10]
    );
}

#[tokio::test]
async fn more_than_recovery_max_is_not_recovered() {
    let server = TestServer::with(|b| b.recovery_max(3)).await;
    let mut publisher = server.connect().await;
    let epoch = publisher.join(ROOM, CHANNEL).await["payload"]["epoch"].clone();
    publish_n(&mut publisher, 6).await;
    publisher.command("ping", json!({})).await;
    let mut reader = server.connect().await;
    let reply = join_recovering(&mut reader, 2, &epoch).await;
    assert_eq!(reply["payload"]["recovered"], false);
    let reply = join_recovering(&mut reader, 3, &epoch).await;
    assert_eq!(reply["payload"]["recovered"], true);
    assert_eq!(
        seqs(reply["payload"]["publications"].as_array().expect("array")),
        [4, 5, 6]
    );
}

#[tokio::test]
async fn a_malformed_recover_is_an_invalid_argument() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    for (recover, field) in [
        (json!(5), "recover"),
        (json!({"seq": "5", "epoch": "e"}), "recover.seq"),
        (json!({"seq": 5}), "recover.epoch"),
        (json!({"seq": -1, "epoch": "e"}), "recover.seq"),
    ] {
        let frame = envelope(
            "command",
            json!({"command": "join_channel", "args": {"room": ROOM, "channel": CHANNEL, "recover": recover}}),
        );
        client.send_json(&frame).await;
        let reply = client.recv().await;
        assert_error(
            &reply,
            "INVALID_ARGUMENT",
            Some(&frame["id"]),
            Some("join_channel"),
        );
        assert!(
            reply["payload"]["details"].to_string().contains(field),
            "{field}: {reply}"
        );
    }
}

#[tokio::test]
async fn a_member_may_recover_too() {
    let server = TestServer::start().await;
    let mut publisher = server.connect().await;
    publisher.join(ROOM, CHANNEL).await;
    let mut reader = server.connect().await;
    let epoch = reader.join(ROOM, CHANNEL).await["payload"]["epoch"].clone();
    publish_n(&mut publisher, 3).await;
    for expected in 1..=3 {
        assert_eq!(reader.recv().await["seq"], expected);
    }
    let reply = join_recovering(&mut reader, 1, &epoch).await;
    assert_eq!(reply["payload"]["recovered"], true);
    assert_eq!(
        seqs(reply["payload"]["publications"].as_array().expect("array")),
        [2, 3]
    );
    // Still a member, once.
    assert_eq!(reply["payload"]["participant_count"], 2);
}

/// A publisher runs flat out while a reader keeps dropping its connection
/// and rejoining with `recover`: every seq arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_concurrent_publishing_every_message_arrives_exactly_once() {
    const TOTAL: u64 = 3000;
    let server = TestServer::with(|b| {
        b.rate_limit_per_sec(0)
            .history_size(TOTAL as usize)
            .recovery_max(TOTAL as usize)
    })
    .await;
    let mut publisher = server.connect().await;
    let epoch = publisher.join(ROOM, CHANNEL).await["payload"]["epoch"].clone();

    let publishing = tokio::spawn(async move {
        for i in 0..TOTAL {
            publisher.publish(ROOM, CHANNEL, json!({"i": i})).await;
            if i % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
        publisher.command("ping", json!({})).await;
        publisher
    });

    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut last = 0;
    let mut rounds = 0;
    while last < TOTAL {
        rounds += 1;
        assert!(rounds < 1000, "no progress: last seq {last}");
        let mut reader = server.connect().await;
        let reply = join_recovering(&mut reader, last, &epoch).await;
        let payload = &reply["payload"];
        assert_eq!(payload["recovered"], true, "round {rounds}: {payload}");
        for message in payload["publications"].as_array().expect("array") {
            let seq = message["seq"].as_u64().expect("seq");
            *seen.entry(seq).or_default() += 1;
            last = seq;
        }
        // Read a few live messages, then vanish without leaving.
        for _ in 0..(rounds % 7) * 40 {
            match reader.try_recv(Duration::from_millis(300)).await {
                Some(message) => {
                    let seq = message["seq"].as_u64().expect("seq");
                    assert_eq!(seq, last + 1, "live messages follow the reply in order");
                    *seen.entry(seq).or_default() += 1;
                    last = seq;
                }
                None => break,
            }
        }
    }
    publishing.await.expect("publisher");
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "duplicates: {duplicates:?}");
    let expected: Vec<u64> = (1..=TOTAL).collect();
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), expected);
    assert!(rounds > 2, "the reader reconnected while the publisher ran");
}
