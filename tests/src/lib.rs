//! Test harness: start a real server in-process on `127.0.0.1:0`, talk to
//! it with real WebSocket clients over real sockets. Every receive is
//! wrapped in a timeout so that a hang fails the test instead of stalling
//! the suite.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arqon_config::{Config, ConfigBuilder};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected frame may take.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// A server running in this process.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server with the default configuration (on a free port).
    pub async fn start() -> Self {
        Self::with(|b| b).await
    }

    /// A server whose configuration `adjust` changes from the defaults.
    pub async fn with(adjust: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Self {
        let config = adjust(Config::builder().port(0).telemetry_port(0))
            .build()
            .expect("valid test config");
        Self::with_config(config).await
    }

    pub async fn with_config(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            arqonbus_server::serve(listener, config, async {
                let _ = rx.await;
            })
            .await
            .expect("server ran");
        });
        Self {
            addr,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Connects and reads the welcome frame.
    pub async fn connect(&self) -> TestClient {
        self.connect_query("").await
    }

    /// Connects with a query string (`"client_type=service&screen_name=x"`).
    pub async fn connect_query(&self, query: &str) -> TestClient {
        let url = if query.is_empty() {
            self.url()
        } else {
            format!("{}?{query}", self.url())
        };
        let (ws, _) = tokio::time::timeout(RECV_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("connect");
        let mut client = TestClient {
            ws,
            client_id: String::new(),
            welcome: Value::Null,
        };
        let welcome = client.recv().await;
        client.client_id = welcome["payload"]["client_id"]
            .as_str()
            .expect("welcome has client_id")
            .to_owned();
        client.welcome = welcome;
        client
    }

    /// Starts shutdown (as SIGTERM would) without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts down and waits until `serve` has returned.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(15), handle)
                .await
                .expect("server stops in time")
                .expect("server task");
        }
    }

    /// Whether `serve` has returned.
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh valid envelope id.
pub fn next_id() -> String {
    format!("arq_test_{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// A valid envelope of `kind` with a fresh id and a timestamp; `extra`
/// fields are merged in (a `null` removes the field).
pub fn envelope(kind: &str, extra: Value) -> Value {
    let mut frame = json!({
        "version": "1.0",
        "id": next_id(),
        "type": kind,
        "timestamp": "2026-11-26T12:00:00.000Z",
    });
    let map = frame.as_object_mut().unwrap();
    for (key, value) in extra.as_object().expect("extra is an object") {
        if value.is_null() {
            map.remove(key);
        } else {
            map.insert(key.clone(), value.clone());
        }
    }
    frame
}

/// What ended a connection, as the client saw it.
#[derive(Debug)]
pub enum Ending {
    Closed(Option<CloseFrame>),
    Dropped,
}

impl Ending {
    pub fn code(&self) -> Option<u16> {
        match self {
            Ending::Closed(Some(frame)) => Some(frame.code.into()),
            _ => None,
        }
    }
}

/// A WebSocket client on a real socket.
#[derive(Debug)]
pub struct TestClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub client_id: String,
    pub welcome: Value,
}

impl TestClient {
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::Text(text.into().into()))
            .await
            .expect("send");
    }

    pub async fn send_json(&mut self, frame: &Value) {
        self.send_text(frame.to_string()).await;
    }

    /// The next JSON frame (pings and pongs skipped); panics on timeout,
    /// close, or anything that is not a JSON text frame.
    pub async fn recv(&mut self) -> Value {
        self.try_recv(RECV_TIMEOUT)
            .await
            .expect("a frame arrives in time")
    }

    /// The next JSON frame within `wait`, or `None` if nothing came.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Some(serde_json::from_str(text.as_str()).expect("server sends JSON"));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Asserts nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(frame) = self.try_recv(wait).await {
            panic!("expected no frame, got {frame}");
        }
    }

    /// Reads until the connection ends; returns how, with the frames seen
    /// before it.
    pub async fn until_closed(&mut self, wait: Duration) -> (Ending, Vec<Value>) {
        let mut frames = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("connection ends in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    frames.push(serde_json::from_str(text.as_str()).expect("json"))
                }
                Some(Ok(Message::Close(frame))) => return (Ending::Closed(frame), frames),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (Ending::Dropped, frames),
            }
        }
    }

    /// Sends `command` and returns its reply (the next frame).
    pub async fn command(&mut self, name: &str, args: Value) -> Value {
        let frame = envelope("command", json!({"command": name, "args": args}));
        self.send_json(&frame).await;
        let reply = self.recv().await;
        assert_eq!(
            reply["request_id"], frame["id"],
            "reply answers the command: {reply}"
        );
        reply
    }

    /// Joins `room:channel`, asserting success.
    pub async fn join(&mut self, room: &str, channel: &str) -> Value {
        let reply = self
            .command("join_channel", json!({"room": room, "channel": channel}))
            .await;
        assert_eq!(reply["status"], "success", "join failed: {reply}");
        reply
    }

    /// Publishes `payload` to `room:channel` (no ack); returns the frame sent.
    pub async fn publish(&mut self, room: &str, channel: &str, payload: Value) -> Value {
        let frame = envelope(
            "message",
            json!({"room": room, "channel": channel, "payload": payload}),
        );
        self.send_json(&frame).await;
        frame
    }
}

/// A minimal HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub async fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Sends raw request bytes and reads the response until the server closes.
pub async fn http_request(addr: SocketAddr, request: &str) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(RECV_TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8(raw).expect("utf8");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}
