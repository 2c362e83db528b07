//! Gap filling after a reconnect, against a scripted server that speaks
//! `history` exactly as SPEC §5 describes it (`after_seq`, `limit`,
//! `epoch`, `last_seq`), so the client's side is tested whatever the real
//! server supports: missed messages are replayed in order (paged), live
//! messages that arrive meanwhile follow them without duplicates, and the
//! report says whether the gap was filled.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arqon_client::{Client, SubscriptionEvent};
use arqonbus_tests::client::{self, within};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// The channel as the scripted server knows it.
struct Script {
    epoch: String,
    /// Seqs still in its history (a ring may have lost the oldest).
    stored: Vec<u64>,
    last_seq: u64,
    /// Largest history page it answers with (to make the client page).
    page: usize,
    connections: u32,
}

fn frame(kind: &str, extra: Value) -> String {
    let mut f = json!({"version": "1.0", "id": format!("arq_s{}", rand_id()), "type": kind,
                       "timestamp": "2026-01-01T00:00:00.000Z", "sender": "arqonbus"});
    for (k, v) in extra.as_object().unwrap() {
        f[k] = v.clone();
    }
    f.to_string()
}

fn rand_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn message(seq: u64, epoch: &str) -> Value {
    json!({"version": "1.0", "id": format!("arq_m{seq}"), "type": "message",
           "timestamp": "2026-01-01T00:00:00.000Z", "room": "g", "channel": "c",
           "sender": "arq_client_publisher", "seq": seq, "epoch": epoch, "payload": {"n": seq}})
}

/// First connection: join at `last_seq`, then live messages up to 5, then
/// the connection drops. Later connections: join at 8 (6..=8 were missed),
/// a live 9 right after the join reply, and `history` answered in pages.
async fn scripted_server(script: Arc<Mutex<Script>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let script = script.clone();
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                let connection = {
                    let mut s = script.lock().unwrap();
                    s.connections += 1;
                    s.connections
                };
                let welcome = frame(
                    "message",
                    json!({"payload": {"welcome": "hi",
                    "client_id": format!("arq_client_{connection:032x}"), "server_version": "test",
                    "protocol": "1.0", "limits": {}}}),
                );
                ws.send(Message::Text(welcome.into())).await.unwrap();
                while let Some(Ok(Message::Text(text))) = ws.next().await {
                    let request: Value = serde_json::from_str(text.as_str()).unwrap();
                    let id = request["id"].clone();
                    let command = request["command"].as_str().unwrap_or("").to_owned();
                    let (reply, after): (Value, Vec<Value>) = {
                        let s = script.lock().unwrap();
                        match command.as_str() {
                            "join_channel" if connection == 1 => (
                                json!({"room": "g", "channel": "c", "participant_count": 2, "seq": 3, "epoch": s.epoch}),
                                vec![message(4, &s.epoch), message(5, &s.epoch)],
                            ),
                            "join_channel" => (
                                json!({"room": "g", "channel": "c", "participant_count": 2, "seq": s.last_seq, "epoch": s.epoch}),
                                vec![message(s.last_seq + 1, &s.epoch)],
                            ),
                            "history" => {
                                let after_seq = request["args"]["after_seq"].as_u64().unwrap();
                                let limit = request["args"]["limit"].as_u64().unwrap() as usize;
                                let messages: Vec<Value> = s
                                    .stored
                                    .iter()
                                    .filter(|&&seq| seq > after_seq && seq <= s.last_seq)
                                    .take(limit.min(s.page))
                                    .map(|&seq| message(seq, &s.epoch))
                                    .collect();
                                (
                                    json!({"room": "g", "channel": "c", "count": messages.len(), "messages": messages,
                                           "backend": "memory", "epoch": s.epoch, "last_seq": s.last_seq}),
                                    vec![],
                                )
                            }
                            _ => (json!({}), vec![]),
                        }
                    };
                    let response = frame(
                        "response",
                        json!({"request_id": id, "status": "success", "command": command, "payload": reply}),
                    );
                    ws.send(Message::Text(response.into())).await.unwrap();
                    for live in after {
                        ws.send(Message::Text(live.to_string().into()))
                            .await
                            .unwrap();
                    }
                    if connection == 1 && command == "join_channel" {
                        // Drop the first connection right after its live messages.
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Every subscription event as `(n, replayed)` for messages, until the gap
/// report and one live message after it.
async fn events(stored: Vec<u64>) -> (Vec<(u64, bool)>, arqon_client::GapReport, u64) {
    let script = Arc::new(Mutex::new(Script {
        epoch: "e1".into(),
        stored,
        last_seq: 8,
        page: 2,
        connections: 0,
    }));
    let addr = scripted_server(script).await;
    let client = Client::connect(client::options(&format!("ws://{addr}/")))
        .await
        .unwrap();
    let mut sub = client.join_channel("g", "c").await.unwrap();
    let mut seen = Vec::new();
    let gap = loop {
        match within("events", sub.recv()).await.unwrap() {
            SubscriptionEvent::Message(m) => seen.push((m.seq.unwrap(), m.replayed)),
            SubscriptionEvent::Gap(gap) => break gap,
            SubscriptionEvent::Removed { reason } => panic!("{reason}"),
            other => panic!("unexpected {other:?}"),
        }
    };
    let live = within("live after the gap", sub.next_message())
        .await
        .unwrap();
    assert!(!live.replayed);
    (seen, gap, live.seq.unwrap())
}

#[tokio::test]
async fn missed_messages_are_replayed_in_pages_then_live_ones_follow() {
    let (seen, gap, live) = events((1..=8).collect()).await;
    assert_eq!(
        seen,
        [(4, false), (5, false), (6, true), (7, true), (8, true)]
    );
    assert_eq!((gap.from_seq, gap.to_seq, gap.recovered), (6, 8, 3));
    assert!(gap.filled && !gap.epoch_changed, "{gap:?}");
    // A server without SPEC §14 (no `recovered`): history fills the gap.
    assert_eq!(gap.via, arqon_client::GapFill::History);
    assert_eq!(gap.old_epoch.as_deref(), Some("e1"));
    assert_eq!(live, 9, "the live message buffered during the fill");
}

#[tokio::test]
async fn a_gap_older_than_the_history_is_reported_unfilled() {
    // The ring no longer holds seq 6.
    let (seen, gap, live) = events(vec![7, 8]).await;
    assert_eq!(seen, [(4, false), (5, false), (7, true), (8, true)]);
    assert_eq!((gap.from_seq, gap.to_seq, gap.recovered), (6, 8, 2));
    assert!(!gap.filled && !gap.epoch_changed, "{gap:?}");
    assert_eq!(live, 9);
}
