//! Abuse as an attacker would try it (issue 11, SPEC §18 "Memory and
//! replies"): unauthenticated clients try to make the server hold memory.
//! Each test runs the real binary, records its resident memory (VmRSS from
//! `/proc`) before and after, and asserts the growth stays under a stated
//! bound — generous margins, no timing assertions. Without the bound under
//! test, each scenario would exceed its limit several times over.

#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const BIN: &str = env!("CARGO_BIN_EXE_arqonbus-server");
const MIB: u64 = 1 << 20;
const WAIT: Duration = Duration::from_secs(20);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Server {
    child: Child,
    bus: String,
}

impl Server {
    async fn start(env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(BIN);
        command
            .args(["--port", "0", "--telemetry-port", "0", "--print-addrs"])
            .env("ARQONBUS_LOG_LEVEL", "warn")
            .env("ARQONBUS_RATE_LIMIT_PER_SEC", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let line = tokio::time::timeout(WAIT, BufReader::new(stdout).lines().next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let addrs: Value = serde_json::from_str(&line).unwrap();
        Self {
            child,
            bus: addrs["bus"].as_str().unwrap().to_owned(),
        }
    }

    /// Resident memory of the server process, in bytes.
    fn rss(&self) -> u64 {
        let pid = self.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        kb * 1024
    }

    async fn connect(&self) -> Ws {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", self.bus))
            .await
            .unwrap();
        next_json(&mut ws).await; // the welcome
        ws
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn frame(kind: &str, extra: Value) -> Value {
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut frame = json!({"version": "1.0", "id": format!("arq_{n}"), "type": kind,
        "timestamp": "2026-12-04T00:00:00Z"});
    frame
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    frame
}

async fn send(ws: &mut Ws, frame: &Value) {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("ok");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

/// Sends `command` and waits for its reply.
async fn command(ws: &mut Ws, name: &str, args: Value) -> Value {
    let request = frame("command", json!({"command": name, "args": args}));
    send(ws, &request).await;
    loop {
        let reply = next_json(ws).await;
        if reply["request_id"] == request["id"] {
            return reply;
        }
    }
}

fn assert_grew_less(before: u64, after: u64, bound: u64, what: &str) {
    let grown = after.saturating_sub(before);
    assert!(
        grown < bound,
        "{what}: RSS grew {} MiB (from {} to {} MiB), bound {} MiB",
        grown / MIB,
        before / MIB,
        after / MIB,
        bound / MIB
    );
}

/// 3 clients × 3 channels × 40 messages of 1 MiB: memory history keeps at
/// most `ARQONBUS_HISTORY_MAX_BYTES` (4 MiB) per channel, not 500 messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_messages_do_not_pile_up_in_memory_history() {
    let server = Server::start(&[]).await;
    let before = server.rss();
    let payload = json!({"blob": "m".repeat(MIB as usize - 512)});
    let mut tasks = Vec::new();
    for c in 0..3 {
        let mut ws = server.connect().await;
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let channel = format!("big{c}");
            command(
                &mut ws,
                "join_channel",
                json!({"room": "abuse", "channel": channel}),
            )
            .await;
            for _ in 0..40 {
                let message = frame(
                    "message",
                    json!({"room": "abuse", "channel": channel, "payload": payload}),
                );
                send(&mut ws, &message).await;
            }
            command(&mut ws, "ping", json!({})).await;
            ws
        }));
    }
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.unwrap());
    }
    let status = command(&mut clients[0], "status", json!({})).await;
    let held = status["payload"]["storage"]["memory_bytes"]
        .as_u64()
        .unwrap();
    assert!(held <= 3 * 4 * MIB, "memory history holds {held} bytes");
    // 120 MiB were published; 3 × 4 MiB may stay.
    assert_grew_less(before, server.rss(), 48 * MIB, "memory history");
}

/// Thousands of join+leave pairs on distinct names: the empty channels are
/// reclaimed once idle, and the list shrinks back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_channels_are_reclaimed() {
    const CHANNELS: usize = 3000;
    let server = Server::start(&[("ARQONBUS_EMPTY_CHANNEL_TTL_SECS", "1")]).await;
    let mut ws = server.connect().await;
    for n in 0..CHANNELS {
        let args = json!({"room": "litter", "channel": format!("c{n}")});
        send(
            &mut ws,
            &frame("command", json!({"command": "join_channel", "args": args})),
        )
        .await;
        send(
            &mut ws,
            &frame("command", json!({"command": "leave_channel", "args": args})),
        )
        .await;
    }
    // Every reply read, the last one included.
    let mut replies = 0;
    while replies < 2 * CHANNELS {
        next_json(&mut ws).await;
        replies += 1;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let listed = command(&mut ws, "list_channels", json!({})).await;
        if listed["payload"]["total"] == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "idle channels not reclaimed: {}",
            listed["payload"]["total"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Six clients each ask for `history limit=1000` on a channel of 1 MiB
/// messages, again and again, and never read: each reply is cut to the
/// message size limit, and a connection stops being read once its queue
/// and its waiting replies hold a queue's worth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_their_history_replies_hold_little() {
    let server = Server::start(&[]).await;
    let mut writer = server.connect().await;
    command(
        &mut writer,
        "join_channel",
        json!({"room": "abuse", "channel": "hist"}),
    )
    .await;
    let payload = json!({"blob": "h".repeat(MIB as usize - 1024)});
    for _ in 0..4 {
        let message = frame(
            "message",
            json!({"room": "abuse", "channel": "hist", "payload": payload}),
        );
        send(&mut writer, &message).await;
    }
    command(&mut writer, "ping", json!({})).await;
    let before = server.rss();
    let mut readers = Vec::new();
    for _ in 0..6 {
        let mut ws = server.connect().await;
        for _ in 0..60 {
            let args = json!({"room": "abuse", "channel": "hist", "limit": 1000});
            // Sends may stall once the server stops reading: that is the point.
            let request = frame("command", json!({"command": "history", "args": args}));
            let sent =
                tokio::time::timeout(Duration::from_millis(500), send(&mut ws, &request)).await;
            if sent.is_err() {
                break;
            }
        }
        readers.push(ws);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Without the bounds: 360 replies of up to 4 MiB each.
    assert_grew_less(before, server.rss(), 96 * MIB, "unread history replies");
    drop(readers);
}
