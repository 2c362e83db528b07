//! Graceful shutdown (SPEC §11): once it starts, every client gets close
//! code 1001, new upgrades are refused (503 while draining, then the
//! listener is gone), `/ready` answers 503, and the server finishes within
//! `ARQONBUS_SHUTDOWN_GRACE_SECS` even when a client never reads.

use std::time::Duration;

use arqon_config::SlowConsumerPolicy;
use arqonbus_tests::{TestServer, envelope, http_get, http_status, upgrade_request};
use serde_json::json;

#[tokio::test]
async fn clients_get_1001_and_new_connections_are_refused() {
    let grace = Duration::from_secs(5);
    let mut server = TestServer::with(|b| b.shutdown_grace(grace)).await;
    let mut first = server.connect().await;
    let mut second = server.connect().await;
    first.join("r", "c").await;
    second.join("r", "c").await;

    server.begin_shutdown();
    for client in [&mut first, &mut second] {
        let (ending, frames) = client.until_closed(Duration::from_secs(5)).await;
        assert!(frames.is_empty(), "{frames:?}");
        assert_eq!(ending.code(), Some(1001), "{ending:?}");
    }

    // Draining (503) or already closed (connection refused): either way, no.
    match server.try_connect("/").await {
        Ok(client) => panic!("connected during shutdown: {}", client.client_id),
        Err(err) => {
            if let Some(status) = http_status(&err) {
                assert_eq!(status, 503, "{err:?}");
            }
        }
    }

    let addr = server.addr;
    tokio::time::timeout(grace, server.stop())
        .await
        .expect("the server stops within the grace period");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn a_client_that_never_reads_cannot_hold_shutdown_past_the_grace_period() {
    let grace = Duration::from_secs(3);
    let mut server = TestServer::with(|b| {
        b.shutdown_grace(grace)
            .slow_consumer(SlowConsumerPolicy::Drop)
            .client_queue_bytes(64 * 1024)
    })
    .await;
    let mut publisher = server.connect().await;
    let mut watcher = server.connect().await;
    let stuck = server.connect().await;
    publisher.join("big", "data").await;
    // `stuck` joins through a command it never reads the reply to.
    let mut stuck = stuck;
    stuck
        .send_command("join_channel", json!({"room": "big", "channel": "data"}))
        .await;
    let mut observer = server.connect().await;
    arqonbus_tests::eventually(Duration::from_secs(5), "stuck has joined", async || {
        let info = observer
            .command("channel_info", json!({"room": "big", "channel": "data"}))
            .await;
        info["payload"]["participant_count"] == 2
    })
    .await;

    // About 10 MiB for a client that reads nothing: its socket buffers fill
    // and its writer blocks.
    let pad = "x".repeat(256 * 1024);
    for n in 0..40 {
        let frame = envelope(
            "message",
            json!({"room": "big", "channel": "data", "ack": true, "payload": {"n": n, "pad": pad}}),
        );
        publisher.send_json(&frame).await;
        let ack = publisher.recv().await;
        assert_eq!(ack["request_id"], frame["id"]);
        assert_eq!(ack["status"], "success", "{ack}");
    }
    let status = observer.status().await;
    assert!(
        status["messages"]["dropped"].as_u64().expect("dropped") > 0,
        "the stuck client's queue overflowed: {status}"
    );

    server.begin_shutdown();
    let (ending, _) = watcher.until_closed(Duration::from_secs(5)).await;
    assert_eq!(ending.code(), Some(1001), "{ending:?}");

    // The stuck client keeps the server draining: not ready, no upgrades.
    let ready = http_get(server.addr, "/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    let refused = upgrade_request(server.addr, "/").await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    let err = server.try_connect("/ws").await.expect_err("draining");
    assert_eq!(http_status(&err), Some(503), "{err:?}");

    tokio::time::timeout(grace, server.stop())
        .await
        .expect("the server stops within the grace period");
    drop(stuck);
}
