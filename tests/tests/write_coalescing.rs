//! Write coalescing (`ARQONBUS_WRITE_COALESCE_MS`) changes how frames are
//! grouped into socket writes, never what a client receives: with the
//! longest window, a subscriber flooded with channel messages still gets
//! every message once, in `seq` order, and the replies to its commands in
//! their place among them.

use std::time::Duration;

use arqonbus_tests::{TestClient, TestServer, envelope};
use serde_json::{Value, json};

const MESSAGES: u64 = 400;
const BURST: u64 = 50;
const PINGS: usize = 5;

// One thread: the server reads the publisher's frames in runs and queues
// them faster than the subscriber's writer sends them, so its writes carry
// several frames and the windows engage.
#[tokio::test(flavor = "current_thread")]
async fn held_frames_arrive_complete_in_order_with_replies() {
    let server = TestServer::with(|b| b.write_coalesce(Duration::from_secs(1))).await;
    let mut subscriber = server.connect().await;
    subscriber.join("flood", "ch").await;
    let mut publisher = server.connect().await;
    publisher.join("flood", "ch").await;

    // In bursts, so that later bursts arrive while earlier frames are held.
    let flood = tokio::spawn(async move {
        for n in 0..MESSAGES {
            publisher.publish("flood", "ch", json!({"n": n})).await;
            if (n + 1) % BURST == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        publisher
    });

    // Commands sent while the flood is being held and written in batches.
    let mut ping_ids = Vec::new();
    let mut seqs = Vec::new();
    let mut replies = Vec::new();
    while (seqs.len() as u64) < MESSAGES || replies.len() < PINGS {
        let frame = subscriber.recv().await;
        match frame["type"].as_str() {
            Some("message") => {
                seqs.push(frame["seq"].as_u64().expect("seq"));
                if ping_ids.len() < PINGS && seqs.len() % 50 == 1 {
                    ping_ids.push(send_ping(&mut subscriber).await);
                }
            }
            Some("response") => replies.push(frame),
            _ => panic!("unexpected frame: {frame}"),
        }
    }
    flood.await.expect("publisher");

    let expected: Vec<u64> = (1..=MESSAGES).collect();
    assert_eq!(seqs, expected, "every message once, in seq order");
    let answered: Vec<&Value> = replies.iter().map(|reply| &reply["request_id"]).collect();
    let asked: Vec<Value> = ping_ids.into_iter().map(Value::from).collect();
    assert_eq!(
        answered,
        asked.iter().collect::<Vec<_>>(),
        "replies in command order"
    );
    for reply in &replies {
        assert_eq!(reply["command"], "ping");
        assert_eq!(reply["payload"]["pong"], true);
    }
}

async fn send_ping(client: &mut TestClient) -> String {
    let frame = envelope("command", json!({"command": "ping", "args": {}}));
    let id = frame["id"].as_str().expect("id").to_owned();
    client.send_json(&frame).await;
    id
}
