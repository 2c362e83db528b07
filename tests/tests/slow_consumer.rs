//! A subscriber that stops reading never slows the others (SPEC §11): its
//! bounded queue overflows and, under the default policy, it is closed with
//! 4002 and forgotten; under `drop` it stays connected and misses messages,
//! which `status` counts. Meanwhile a healthy subscriber receives every
//! message, in order.

use std::time::Duration;

use arqon_config::{ConfigBuilder, SlowConsumerPolicy};
use arqonbus_tests::{Ending, TestClient, TestServer, envelope, eventually};
use serde_json::{Value, json};
use tokio::sync::watch;

const QUEUE_BYTES: usize = 16 * 1024;
/// About 11 MiB: far more than the queue plus both kernel socket buffers
/// hold (on loopback they absorbed about 3.5 MiB in trials).
const MESSAGES: u64 = 5000;
const PAD: usize = 2048;
/// Acks outstanding at once.
const WINDOW: u64 = 8;
/// How far the publisher may run ahead of the healthy subscriber: it paces
/// itself so that a reader that keeps up is never more than a few messages
/// behind (LEAD frames of ~2.3 KiB stay under the queue's 16 KiB), however
/// slowly a debug build parses.
const LEAD: u64 = 6;

struct Run {
    server: TestServer,
    publisher: TestClient,
    stalled: TestClient,
    /// The last ack's `delivered`.
    last_delivered: Value,
}

fn config(policy: SlowConsumerPolicy) -> impl FnOnce(ConfigBuilder) -> ConfigBuilder {
    move |b| {
        b.client_queue_bytes(QUEUE_BYTES)
            .slow_consumer(policy)
            .rate_limit_per_sec(0)
    }
}

/// Reads `MESSAGES` channel messages and checks they are seq 1..=MESSAGES.
/// Reports its progress on `progress`.
async fn read_everything(mut healthy: TestClient, progress: watch::Sender<u64>) -> TestClient {
    for expected in 1..=MESSAGES {
        let frame = healthy.recv().await;
        assert_eq!(
            frame["seq"], expected,
            "healthy subscriber: {}",
            frame["seq"]
        );
        assert_eq!(frame["payload"]["n"], expected);
        progress.send_replace(expected);
    }
    healthy
}

async fn publish_all(policy: SlowConsumerPolicy) -> Run {
    let server = TestServer::with(config(policy)).await;
    let mut publisher = server.connect().await;
    let mut healthy = server.connect().await;
    let mut stalled = server.connect().await;
    publisher.join("feed", "firehose").await;
    healthy.join("feed", "firehose").await;
    stalled.join("feed", "firehose").await;
    // From here on `stalled` is never polled until the publishing is over.

    let (progress_tx, mut progress) = watch::channel(0u64);
    let reader = tokio::spawn(read_everything(healthy, progress_tx));

    let pad = "x".repeat(PAD);
    let mut outstanding = std::collections::VecDeque::new();
    let mut last_delivered = Value::Null;
    for n in 1..=MESSAGES {
        let frame = envelope(
            "message",
            json!({"room": "feed", "channel": "firehose", "ack": true, "payload": {"n": n, "pad": pad}}),
        );
        tokio::time::timeout(
            Duration::from_secs(5),
            progress.wait_for(|&read| read + LEAD >= n),
        )
        .await
        .expect("the healthy subscriber keeps up")
        .expect("healthy reader alive");
        publisher.send_json(&frame).await;
        outstanding.push_back(frame["id"].clone());
        while outstanding.len() as u64 >= WINDOW || (n == MESSAGES && !outstanding.is_empty()) {
            let ack = publisher.recv().await;
            assert_eq!(
                ack["request_id"],
                outstanding.pop_front().expect("outstanding")
            );
            assert_eq!(ack["status"], "success", "{ack}");
            last_delivered = ack["payload"]["delivered"].clone();
        }
    }
    let healthy = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the healthy subscriber gets everything in time")
        .expect("healthy reader");
    drop(healthy);
    Run {
        server,
        publisher,
        stalled,
        last_delivered,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_subscriber_is_disconnected_with_4002() {
    let Run {
        server,
        mut publisher,
        mut stalled,
        last_delivered,
    } = publish_all(SlowConsumerPolicy::Disconnect).await;
    assert_eq!(last_delivered, 1, "only the healthy subscriber is left");

    let mut observer = server.connect().await;
    eventually(
        Duration::from_secs(5),
        "the slow consumer is gone",
        async || {
            let status = observer.status().await;
            // publisher + observer (the healthy one has disconnected too).
            status["clients"]["active"] == 2
        },
    )
    .await;
    let status = observer.status().await;
    assert_eq!(status["subscriptions"], 1, "{status}");
    assert_eq!(status["participants"]["channels"]["feed:firehose"], 1);

    // What it did get is a gapless prefix, then the close (or, when the
    // close frame could not be written into its full socket, the drop).
    let (ending, frames) = stalled.until_closed(Duration::from_secs(10)).await;
    match &ending {
        Ending::Closed(_) => assert_eq!(ending.code(), Some(4002), "{ending:?}"),
        Ending::Dropped => {}
    }
    assert!((frames.len() as u64) < MESSAGES, "it cannot have kept up");
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(frame["seq"], i as u64 + 1, "gapless prefix");
    }

    // The channel still works.
    let frame = envelope(
        "message",
        json!({"room": "feed", "channel": "firehose", "ack": true, "payload": {}}),
    );
    publisher.send_json(&frame).await;
    let ack = publisher.recv().await;
    assert_eq!(ack["payload"]["delivered"], 0);
    assert_eq!(ack["payload"]["seq"], MESSAGES + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_drop_a_stalled_subscriber_misses_messages_but_stays() {
    let Run {
        server,
        publisher: _publisher,
        mut stalled,
        last_delivered,
    } = publish_all(SlowConsumerPolicy::Drop).await;
    assert_eq!(last_delivered, 1, "the stalled queue is still full");

    let mut observer = server.connect().await;
    let status = observer.status().await;
    // publisher + stalled + observer (the healthy one has disconnected).
    eventually(
        Duration::from_secs(5),
        "the healthy one has left",
        async || observer.status().await["clients"]["active"] == 3,
    )
    .await;
    let dropped = status["messages"]["dropped"].as_u64().expect("dropped");
    assert!(dropped > 0, "{status}");

    // It is still connected: it reads its backlog (in order, with gaps
    // where messages were dropped), then a command works.
    let ping = stalled.send_command("ping", json!({})).await;
    let mut received = 0u64;
    let mut last_seq = 0;
    let mut lagged = 0;
    loop {
        let frame = stalled.recv().await;
        if frame["request_id"] == ping["id"] {
            assert_eq!(frame["status"], "success");
            break;
        }
        if frame["type"] == "system" {
            // The lagged notice of SPEC §16 counts what was dropped.
            assert_eq!(frame["payload"]["event"], "lagged", "{frame}");
            lagged += frame["payload"]["dropped"].as_u64().expect("dropped");
            continue;
        }
        let seq = frame["seq"].as_u64().expect("a channel message");
        assert!(seq > last_seq, "in order: {seq} after {last_seq}");
        last_seq = seq;
        received += 1;
    }
    assert!(received < MESSAGES);
    assert_eq!(
        received + dropped,
        MESSAGES,
        "every message was either delivered to it or counted as dropped"
    );
    assert!(
        lagged > 0 && lagged <= dropped,
        "lagged {lagged} of {dropped}"
    );
}
