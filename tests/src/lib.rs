//! The workspace's test support: start a real server in-process on
//! `127.0.0.1:0`, talk to it with real WebSocket clients over real sockets
//! (this module), or with `arqon-client` ([`client`]); a throw-away
//! `redis-server` ([`redis`]). Every receive is wrapped in a timeout so that
//! a hang fails the test instead of stalling the suite.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub mod client;

/// A throw-away `redis-server` on a free port, and a RESP client to inspect
/// it. The code lives in `arqon-storage` (feature `testing`), whose own tests
/// use it and which cannot depend on this crate.
pub mod redis {
    pub use arqon_storage::testing::*;
}

use arqon_config::{Config, ConfigBuilder};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use tokio_tungstenite::tungstenite::Error as WsError;

/// How long any single expected frame may take.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// A server running in this process.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    /// The telemetry listener, for servers started with [`TestServer::full`].
    pub telemetry_addr: Option<SocketAddr>,
    /// The separate HTTP listener (`ARQONBUS_HTTP_PORT`), when configured.
    pub http_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

/// The process-wide Prometheus recorder, installed by the first
/// [`TestServer::full`] (as `main` does for the real binary).
fn metrics_handle() -> arqon_telemetry::metrics::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<arqon_telemetry::metrics::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            arqon_telemetry::metrics::install_recorder()
                .expect("first recorder of this test binary")
        })
        .clone()
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
        Self::serve(listener, config)
    }

    /// A server on a given address (to restart "the same" server); retries
    /// the bind while the previous listener's port is being released.
    pub async fn with_config_on(addr: SocketAddr, config: Config) -> Self {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot bind {addr} again: {e}"),
            }
        };
        Self::serve(listener, config)
    }

    fn serve(listener: tokio::net::TcpListener, config: Config) -> Self {
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
            telemetry_addr: None,
            http_addr: None,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// A server with every listener of the configuration (bus and
    /// telemetry on free ports) and `/metrics`, as the binary runs it.
    pub async fn full(adjust: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Self {
        let config = adjust(Config::builder().port(0).telemetry_port(0))
            .build()
            .expect("valid test config");
        let handle = metrics_handle();
        let server = arqonbus_server::Server::bind(config)
            .await
            .expect("bind")
            .with_metrics(handle);
        let addrs = server.local_addrs().expect("addrs");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .expect("server ran");
        });
        Self {
            addr: addrs.bus,
            telemetry_addr: addrs.telemetry,
            http_addr: addrs.http,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Opens a telemetry socket (`query` as in `events=a,b`) on a server
    /// started with [`TestServer::full`], and reads its first frame.
    pub async fn telemetry(&self, query: &str) -> (TestClient, Value) {
        let addr = self.telemetry_addr.expect("started with TestServer::full");
        let url = if query.is_empty() {
            format!("ws://{addr}/")
        } else {
            format!("ws://{addr}/?{query}")
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
        let first = client.recv().await;
        (client, first)
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
        let target = if query.is_empty() {
            "/".to_owned()
        } else {
            format!("/?{query}")
        };
        self.try_connect(&target).await.expect("connect")
    }

    /// Connects to `target` (a path with an optional query, `"/ws?x=y"`) and
    /// reads the welcome frame; a refused handshake is returned, not a panic.
    pub async fn try_connect(&self, target: &str) -> Result<TestClient, WsError> {
        let url = format!("ws://{}{target}", self.addr);
        self.try_connect_request(url.into_client_request()?).await
    }

    /// Like [`try_connect`](Self::try_connect), with a prepared request (to
    /// add headers such as `Authorization`).
    pub async fn try_connect_request(
        &self,
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Result<TestClient, WsError> {
        let (ws, _) = tokio::time::timeout(RECV_TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
            .expect("handshake ends in time")?;
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
        Ok(client)
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

    /// The next text frame as sent, unparsed (to check its size).
    pub async fn ws_next_text(&mut self) -> String {
        loop {
            let message = tokio::time::timeout(RECV_TIMEOUT, self.ws.next())
                .await
                .expect("a frame arrives in time");
            match message {
                Some(Ok(Message::Text(text))) => return text.as_str().to_owned(),
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

    pub async fn send_binary(&mut self, bytes: impl Into<Vec<u8>>) {
        self.ws
            .send(Message::Binary(bytes.into().into()))
            .await
            .expect("send");
    }

    /// Sends `command` without waiting for the reply; returns the frame sent.
    pub async fn send_command(&mut self, name: &str, args: Value) -> Value {
        let frame = envelope("command", json!({"command": name, "args": args}));
        self.send_json(&frame).await;
        frame
    }

    /// The payload of a successful `status` reply.
    pub async fn status(&mut self) -> Value {
        let reply = self.command("status", json!({})).await;
        assert_eq!(reply["status"], "success", "status failed: {reply}");
        reply["payload"].clone()
    }

    /// Reads frames until one answers `request_id`, skipping the others.
    pub async fn recv_reply_to(&mut self, request_id: &Value) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["request_id"] == *request_id {
                return frame;
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

/// Sends a WebSocket upgrade request for `target` (path and query) with
/// every header a real client sends, and reads the response head plus a
/// `Content-Length` body. Does not need the server to close the socket.
pub async fn upgrade_request(addr: SocketAddr, target: &str) -> HttpResponse {
    upgrade_request_with(addr, target, &[]).await
}

/// Like [`upgrade_request`], with extra request headers (`Origin`,
/// `Authorization`…).
pub async fn upgrade_request_with(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    raw_upgrade(addr, target, headers).await.0
}

/// Sends a WebSocket upgrade request by hand over a fresh TCP connection
/// and reads the response head (plus a `Content-Length` body when it is
/// not a 101). After a 101 the returned [`RawSocket`] speaks raw frames:
/// tests build exactly the bytes they mean, valid or not.
pub async fn raw_upgrade(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> (HttpResponse, RawSocket) {
    let mut request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let read_response = async {
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).into_owned();
                let switching = head.starts_with("HTTP/1.1 101");
                let length = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                // After a 101 the bytes are WebSocket frames, not a body.
                let body_end = if switching { end + 4 } else { end + 4 + length };
                if raw.len() >= body_end {
                    let body = raw[end + 4..body_end].to_vec();
                    let rest = raw[body_end..].to_vec();
                    return (head, body, rest);
                }
            }
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed mid-response: {raw:?}");
            raw.extend_from_slice(&chunk[..n]);
        }
    };
    let (head, body, rest) = tokio::time::timeout(RECV_TIMEOUT, read_response)
        .await
        .expect("response in time");
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
    let response = HttpResponse {
        status,
        headers,
        body: String::from_utf8(body).expect("utf8 body"),
    };
    (
        response,
        RawSocket {
            stream,
            buffered: rest,
        },
    )
}

/// A WebSocket frame as it travelled on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    /// The three reserved bits, `RSV1` highest.
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code and reason of a close frame (`None` for an empty
    /// close payload).
    pub fn close(&self) -> Option<(u16, String)> {
        assert_eq!(self.opcode, 0x8, "not a close frame: {self:?}");
        if self.payload.len() < 2 {
            return None;
        }
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        let reason = String::from_utf8(self.payload[2..].to_vec()).expect("UTF-8 close reason");
        Some((code, reason))
    }
}

/// A TCP connection after a hand-made upgrade: frames are built and parsed
/// here, byte by byte.
#[derive(Debug)]
pub struct RawSocket {
    pub stream: TcpStream,
    /// Bytes read past the response head.
    pub buffered: Vec<u8>,
}

impl RawSocket {
    /// Writes one frame: `first` is the whole first byte (FIN, RSV bits,
    /// opcode), `mask` whether to mask the payload as clients must.
    pub async fn send_frame(&mut self, first: u8, mask: bool, payload: &[u8]) {
        let mut frame = vec![first];
        let mask_bit = if mask { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n <= usize::from(u16::MAX) => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if mask {
            let key = [0x37, 0xfa, 0x21, 0x3d];
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).await.expect("write frame");
    }

    /// A masked, final text frame carrying `payload` (valid UTF-8 or not).
    pub async fn send_text_bytes(&mut self, payload: &[u8]) {
        self.send_frame(0x81, true, payload).await;
    }

    /// A masked close frame with `code` and `reason`.
    pub async fn send_close(&mut self, code: u16, reason: &str) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        self.send_frame(0x88, true, &payload).await;
    }

    async fn fill(&mut self, wanted: usize) -> bool {
        let mut chunk = [0u8; 4096];
        while self.buffered.len() < wanted {
            let n = self.stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return false;
            }
            self.buffered.extend_from_slice(&chunk[..n]);
        }
        true
    }

    async fn read_frame_now(&mut self) -> Option<RawFrame> {
        if !self.fill(2).await {
            return None;
        }
        let (b0, b1) = (self.buffered[0], self.buffered[1]);
        let masked = b1 & 0x80 != 0;
        let (len, mut at) = match b1 & 0x7f {
            126 => {
                if !self.fill(4).await {
                    return None;
                }
                (
                    usize::from(u16::from_be_bytes([self.buffered[2], self.buffered[3]])),
                    4,
                )
            }
            127 => {
                if !self.fill(10).await {
                    return None;
                }
                let bytes: [u8; 8] = self.buffered[2..10].try_into().unwrap();
                (usize::try_from(u64::from_be_bytes(bytes)).unwrap(), 10)
            }
            n => (usize::from(n), 2),
        };
        let key = if masked {
            if !self.fill(at + 4).await {
                return None;
            }
            let key: [u8; 4] = self.buffered[at..at + 4].try_into().unwrap();
            at += 4;
            Some(key)
        } else {
            None
        };
        if !self.fill(at + len).await {
            return None;
        }
        let mut payload: Vec<u8> = self.buffered[at..at + len].to_vec();
        if let Some(key) = key {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
        }
        self.buffered.drain(..at + len);
        Some(RawFrame {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x7,
            opcode: b0 & 0x0f,
            masked,
            payload,
        })
    }

    /// The next frame, or `None` once the server ended the TCP connection;
    /// panics if nothing happens within [`RECV_TIMEOUT`].
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        tokio::time::timeout(RECV_TIMEOUT, self.read_frame_now())
            .await
            .expect("a frame or the end of the connection in time")
    }

    /// Reads frames until a close frame, skipping data and ping frames;
    /// panics if the connection ends without one.
    pub async fn read_close(&mut self) -> RawFrame {
        loop {
            let frame = self
                .read_frame()
                .await
                .expect("a close frame before the connection ends");
            if frame.opcode == 0x8 {
                return frame;
            }
        }
    }

    /// Whether the server ended the TCP connection within `wait` (reads and
    /// discards anything before that).
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        let mut chunk = [0u8; 4096];
        tokio::time::timeout(wait, async {
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }
}

/// The HTTP status of a refused WebSocket handshake, if that is what `err` is.
pub fn http_status(err: &WsError) -> Option<u16> {
    match err {
        WsError::Http(response) => Some(response.status().as_u16()),
        _ => None,
    }
}

/// Polls `check` every 50 ms until it holds; panics naming `what` once
/// `wait` has passed.
pub async fn eventually(wait: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {wait:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts `text` is RFC 3339 UTC with milliseconds and `Z`
/// (`2026-11-26T12:00:00.000Z`), as the server writes every time.
pub fn assert_server_time(text: &str) {
    let shape = text
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect::<String>();
    assert_eq!(
        shape, "9999-99-99T99:99:99.999Z",
        "not a server time: {text:?}"
    );
}

/// The HTTP-like `payload.code` of each error code (SPEC §6).
pub fn http_code_of(code: &str) -> u16 {
    match code {
        "VALIDATION_ERROR" | "UNSUPPORTED_VERSION" | "INVALID_ARGUMENT" => 400,
        "UNAUTHORIZED" => 401,
        "FORBIDDEN" | "NOT_SUBSCRIBED" => 403,
        "UNKNOWN_COMMAND" | "CHANNEL_NOT_FOUND" | "ROOM_NOT_FOUND" | "TARGET_NOT_FOUND" => 404,
        "CHANNEL_EXISTS" | "CHANNEL_NOT_EMPTY" | "CHANNEL_FULL" | "SUBSCRIPTION_LIMIT" => 409,
        "RATE_LIMITED" | "TOO_MANY_VIOLATIONS" => 429,
        "INTERNAL_ERROR" => 500,
        "STORAGE_UNAVAILABLE" => 503,
        other => panic!("not a SPEC §6 code: {other}"),
    }
}

/// Asserts `frame` is a complete SPEC §6 error: `code` with its HTTP-like
/// number, a details array, `request_id` (`None` = `null`), and `command`
/// when the error answers a command (absent otherwise).
pub fn assert_error(frame: &Value, code: &str, request_id: Option<&Value>, command: Option<&str>) {
    assert_eq!(frame["version"], "1.0", "{frame}");
    assert!(
        frame["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("arq_")),
        "error id: {frame}"
    );
    assert_eq!(frame["type"], "error", "{frame}");
    assert_server_time(frame["timestamp"].as_str().expect("timestamp"));
    assert_eq!(frame["sender"], "arqonbus", "{frame}");
    assert_eq!(frame["status"], "error", "{frame}");
    assert_eq!(frame["error_code"], code, "{frame}");
    assert!(
        frame["error"].as_str().is_some_and(|text| !text.is_empty()),
        "error text: {frame}"
    );
    assert_eq!(frame["payload"]["code"], http_code_of(code), "{frame}");
    assert!(frame["payload"]["details"].is_array(), "details: {frame}");
    let object = frame.as_object().expect("object");
    assert!(
        object.contains_key("request_id"),
        "request_id present: {frame}"
    );
    assert_eq!(
        frame["request_id"],
        request_id.cloned().unwrap_or(Value::Null),
        "request_id: {frame}"
    );
    match command {
        Some(name) => assert_eq!(frame["command"], name, "command: {frame}"),
        None => assert!(frame["command"].is_null(), "no command: {frame}"),
    }
}

/// The fields named in an error's `payload.details`.
pub fn detail_fields(frame: &Value) -> Vec<String> {
    frame["payload"]["details"]
        .as_array()
        .expect("details array")
        .iter()
        .filter_map(|d| d["field"].as_str().or(d.as_str()).map(str::to_owned))
        .collect()
}
