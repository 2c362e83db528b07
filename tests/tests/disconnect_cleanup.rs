//! A client whose TCP connection goes away without a WebSocket close
//! handshake (dropped, or reset) is removed everywhere: from every channel
//! it joined (`channel_info`, `status` participants and subscriptions) and
//! from the client count; publishing afterwards works and an ack's
//! `delivered` no longer counts it.

use std::time::Duration;

use arqonbus_tests::{TestClient, TestServer, envelope, eventually};
use serde_json::{Value, json};

const CLEANUP: Duration = Duration::from_secs(5);

async fn participant_count(observer: &mut TestClient, room: &str, channel: &str) -> Value {
    let info = observer
        .command("channel_info", json!({"room": room, "channel": channel}))
        .await;
    assert_eq!(info["status"], "success", "{info}");
    info["payload"]["participant_count"].clone()
}

async fn publish_with_ack(sender: &mut TestClient, room: &str, channel: &str) -> Value {
    let frame = envelope(
        "message",
        json!({"room": room, "channel": channel, "payload": {}, "ack": true}),
    );
    sender.send_json(&frame).await;
    let ack = sender.recv().await;
    assert_eq!(ack["request_id"], frame["id"], "{ack}");
    assert_eq!(ack["status"], "success", "{ack}");
    ack
}

/// Runs the scenario; `vanish` takes the doomed client away.
async fn cleanup_after(vanish: impl FnOnce(TestClient)) {
    let server = TestServer::start().await;
    let mut observer = server.connect().await;
    let mut sender = server.connect().await;
    let mut doomed = server.connect().await;
    observer.join("lab", "one").await;
    sender.join("lab", "one").await;
    doomed.join("lab", "one").await;
    doomed.join("lab", "two").await;
    let doomed_id = doomed.client_id.clone();

    let status = observer.status().await;
    assert_eq!(status["clients"]["active"], 3);
    assert_eq!(status["subscriptions"], 4);
    assert_eq!(status["participants"]["channels"]["lab:one"], 3);
    assert_eq!(status["participants"]["channels"]["lab:two"], 1);
    assert_eq!(participant_count(&mut observer, "lab", "one").await, 3);
    let ack = publish_with_ack(&mut sender, "lab", "one").await;
    assert_eq!(ack["payload"]["delivered"], 2);
    observer.recv().await;

    vanish(doomed);

    eventually(CLEANUP, "the client leaves lab:one", async || {
        participant_count(&mut observer, "lab", "one").await == 2
    })
    .await;
    eventually(CLEANUP, "the client leaves lab:two", async || {
        participant_count(&mut observer, "lab", "two").await == 0
    })
    .await;
    eventually(CLEANUP, "status forgets the client", async || {
        let status = observer.status().await;
        status["clients"]["active"] == 2 && status["subscriptions"] == 2
    })
    .await;

    let status = observer.status().await;
    assert_eq!(status["participants"]["channels"]["lab:one"], 2);
    assert_eq!(status["participants"]["channels"]["lab:two"], 0);

    let info = observer
        .command("channel_info", json!({"room": "lab", "channel": "one"}))
        .await;
    let participants = info["payload"]["participants"]
        .as_array()
        .expect("participants");
    assert_eq!(participants.len(), 2);
    assert!(
        participants
            .iter()
            .all(|p| p["client_id"] != doomed_id.as_str())
    );

    // Publishing still works and the ack counts only who is left.
    let ack = publish_with_ack(&mut sender, "lab", "one").await;
    assert_eq!(ack["payload"]["delivered"], 1);
    assert_eq!(ack["payload"]["seq"], 2);
    let got = observer.recv().await;
    assert_eq!(got["seq"], 2);

    // A direct message to it now finds no one.
    let frame = envelope("message", json!({"to_client": doomed_id, "payload": {}}));
    sender.send_json(&frame).await;
    assert_eq!(sender.recv().await["error_code"], "TARGET_NOT_FOUND");
}

#[tokio::test]
async fn a_dropped_connection_is_removed_everywhere() {
    cleanup_after(drop).await;
}

#[tokio::test]
async fn a_reset_connection_is_removed_everywhere() {
    cleanup_after(|client| {
        if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = client.ws.get_ref() {
            // SO_LINGER 0: closing sends RST instead of FIN.
            tcp.set_zero_linger().expect("set linger");
        }
        drop(client);
    })
    .await;
}

#[tokio::test]
async fn a_client_that_closes_cleanly_is_removed_too() {
    let server = TestServer::start().await;
    let mut observer = server.connect().await;
    let mut leaver = server.connect().await;
    observer.join("lab", "one").await;
    leaver.join("lab", "one").await;
    leaver.ws.close(None).await.expect("close");
    eventually(CLEANUP, "the client leaves lab:one", async || {
        participant_count(&mut observer, "lab", "one").await == 1
    })
    .await;
    let status = observer.status().await;
    assert_eq!(status["clients"]["active"], 1);
    assert_eq!(status["subscriptions"], 1);
}
