//! Per channel, every subscriber sees every message exactly once and in
//! the same order: strictly increasing `seq` from 1 with no gaps (SPEC §4.1,
//! §7), with each publisher's messages in the order it sent them, even when
//! several publishers send concurrently.

use std::collections::HashMap;

use arqonbus_tests::{TestClient, TestServer};
use serde_json::{Value, json};

const PER_PUBLISHER: u64 = 250;
const PUBLISHERS: usize = 2;
const SUBSCRIBERS: usize = 3;
const TOTAL: u64 = PER_PUBLISHER * PUBLISHERS as u64;

/// Reads `count` channel messages.
async fn collect(mut client: TestClient, count: u64) -> (TestClient, Vec<Value>) {
    let mut got = Vec::new();
    while (got.len() as u64) < count {
        let frame = client.recv().await;
        assert_eq!(frame["type"], "message", "only channel messages: {frame}");
        got.push(frame);
    }
    (client, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishers_one_order_for_everyone() {
    let server = TestServer::start().await;
    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut client = server.connect().await;
        client.join("race", "track").await;
        subscribers.push(client);
    }
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        let mut client = server.connect().await;
        client.join("race", "track").await;
        publishers.push(client);
    }
    let publisher_ids: Vec<String> = publishers.iter().map(|p| p.client_id.clone()).collect();

    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|client| tokio::spawn(collect(client, TOTAL)))
        .collect();
    let writers: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(p, mut client)| {
            tokio::spawn(async move {
                for n in 0..PER_PUBLISHER {
                    client
                        .publish("race", "track", json!({"p": p, "n": n}))
                        .await;
                }
                client
            })
        })
        .collect();
    let mut publishers = Vec::new();
    for writer in writers {
        publishers.push(writer.await.expect("publisher task"));
    }

    let mut orders: Vec<Vec<Value>> = Vec::new();
    for reader in readers {
        let (mut client, frames) = reader.await.expect("subscriber task");
        client
            .expect_silence(std::time::Duration::from_millis(200))
            .await;

        // seq 1..=TOTAL, strictly increasing, no gaps, no duplicates.
        let seqs: Vec<u64> = frames
            .iter()
            .map(|f| f["seq"].as_u64().expect("seq"))
            .collect();
        let expected: Vec<u64> = (1..=TOTAL).collect();
        assert_eq!(seqs, expected, "seq order with no gaps");

        // One epoch for the whole run.
        let epoch = &frames[0]["epoch"];
        assert!(epoch.is_string());
        assert!(frames.iter().all(|f| &f["epoch"] == epoch));

        // Each publisher's messages in its own order, each exactly once,
        // and attributed to it.
        let mut next: HashMap<u64, u64> = HashMap::new();
        for frame in &frames {
            let p = frame["payload"]["p"].as_u64().expect("p");
            let n = frame["payload"]["n"].as_u64().expect("n");
            assert_eq!(frame["sender"], publisher_ids[p as usize].as_str());
            let want = next.entry(p).or_insert(0);
            assert_eq!(n, *want, "publisher {p} out of order");
            *want += 1;
        }
        assert!(next.values().all(|&count| count == PER_PUBLISHER));

        orders.push(frames.iter().map(|f| json!([f["id"], f["seq"]])).collect());
    }
    for other in &orders[1..] {
        assert_eq!(other, &orders[0], "every subscriber sees the same order");
    }

    // A publisher sees the other publisher's messages (not its own), as the
    // same subsequence of the channel's order.
    for (p, publisher) in publishers.into_iter().enumerate() {
        let (_, frames) = collect(publisher, PER_PUBLISHER).await;
        let mut last_seq = 0;
        for (i, frame) in frames.iter().enumerate() {
            assert_ne!(frame["payload"]["p"], p, "no echo without asking");
            assert_eq!(frame["payload"]["n"], i);
            let seq = frame["seq"].as_u64().expect("seq");
            assert!(seq > last_seq);
            last_seq = seq;
            let position = usize::try_from(seq - 1).expect("index");
            assert_eq!(
                orders[0][position][0], frame["id"],
                "same seq, same message"
            );
        }
    }
}
