//! Raw WebSocket connections for the load side, where the client crate's
//! per-message work (a full envelope parse, a task hop per message) would
//! distort the measurement: sockets bound to spread source addresses,
//! small buffers, frames read with tokio-tungstenite and parsed minimally.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws = WebSocketStream<TcpStream>;

/// Where to connect, and how to spread the client sockets.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub server: SocketAddr,
    /// Source addresses used round-robin (bind before connect).
    pub sources: Vec<IpAddr>,
    pub read_buffer: usize,
    /// The sockets' kernel receive buffer (`SO_RCVBUF`), when set: a small
    /// one makes a client that stops reading back up to the server soon.
    pub recv_buffer: Option<u32>,
}

impl Target {
    pub fn new(url: &str, source_count: u8, read_buffer: usize) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow!("only ws:// URLs are supported: {url}"))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let server: SocketAddr = authority
            .parse()
            .with_context(|| format!("the URL must name an IP:port, got {authority:?}"))?;
        let sources = if server.ip().is_loopback() && server.is_ipv4() && source_count > 0 {
            (0..source_count)
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i)))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            url: url.to_owned(),
            server,
            sources,
            read_buffer,
            recv_buffer: None,
        })
    }

    pub fn source_for(&self, index: usize) -> Option<IpAddr> {
        if self.sources.is_empty() {
            None
        } else {
            Some(self.sources[index % self.sources.len()])
        }
    }

    /// Opens connection number `index` and reads the welcome frame;
    /// returns the socket and the assigned client id.
    pub async fn connect(&self, index: usize) -> Result<(Ws, String), ConnectError> {
        tokio::time::timeout(Duration::from_secs(15), self.connect_now(index))
            .await
            .unwrap_or_else(|_| Err(ConnectError::Other("connect timed out after 15 s".into())))
    }

    async fn connect_now(&self, index: usize) -> Result<(Ws, String), ConnectError> {
        let socket = TcpSocket::new_v4().map_err(ConnectError::io)?;
        if let Some(bytes) = self.recv_buffer {
            socket
                .set_recv_buffer_size(bytes)
                .map_err(ConnectError::io)?;
        }
        if let Some(ip) = self.source_for(index) {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(ConnectError::io)?;
        }
        let stream = socket
            .connect(self.server)
            .await
            .map_err(ConnectError::io)?;
        stream.set_nodelay(true).map_err(ConnectError::io)?;
        let config = WebSocketConfig::default()
            .read_buffer_size(self.read_buffer)
            .write_buffer_size(0);
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(self.url.as_str(), stream, Some(config))
                .await
                .map_err(|e| ConnectError::Other(e.to_string()))?;
        let welcome = next_text(&mut ws, Duration::from_secs(10))
            .await
            .map_err(|e| ConnectError::Other(e.to_string()))?;
        let client_id = field_str(&welcome, "\"client_id\":\"")
            .ok_or_else(|| ConnectError::Other("welcome frame without client_id".into()))?
            .to_owned();
        Ok((ws, client_id))
    }
}

/// Why a connection could not be opened; `Emfile` means the open-file
/// limit binds.
#[derive(Debug)]
pub enum ConnectError {
    Emfile,
    Io(io::Error),
    Other(String),
}

impl ConnectError {
    fn io(e: io::Error) -> Self {
        if e.raw_os_error() == Some(24) {
            ConnectError::Emfile
        } else {
            ConnectError::Io(e)
        }
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Emfile => f.write_str("too many open files (RLIMIT_NOFILE)"),
            ConnectError::Io(e) => write!(f, "{e}"),
            ConnectError::Other(e) => f.write_str(e),
        }
    }
}

/// The next text frame, within `wait`.
pub async fn next_text(ws: &mut Ws, wait: Duration) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => bail!("no frame within {wait:?}"),
            Ok(Some(Ok(Message::Text(text)))) => return Ok(text.as_str().to_owned()),
            Ok(Some(Ok(Message::Close(frame)))) => bail!("closed: {frame:?}"),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => bail!("read: {e}"),
            Ok(None) => bail!("connection closed"),
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub fn next_id() -> String {
    format!("arq_b{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// A command frame (`args` is a JSON object text).
pub fn command_frame(id: &str, command: &str, args: &str) -> String {
    format!(
        r#"{{"version":"1.0","id":"{id}","type":"command","timestamp":"2026-01-01T00:00:00Z","command":"{command}","args":{args}}}"#
    )
}

/// A channel message frame (`payload` is a JSON object text).
pub fn publish_frame(id: &str, room: &str, channel: &str, payload: &str) -> String {
    format!(
        r#"{{"version":"1.0","id":"{id}","type":"message","timestamp":"2026-01-01T00:00:00Z","room":"{room}","channel":"{channel}","payload":{payload}}}"#
    )
}

/// Sends a command and waits for its reply (other frames are skipped);
/// `Err` carries the `error_code` of an error reply.
pub async fn command(ws: &mut Ws, name: &str, args: &str) -> anyhow::Result<String> {
    let id = next_id();
    ws.send(Message::Text(command_frame(&id, name, args).into()))
        .await
        .context("send")?;
    let needle = format!("\"request_id\":\"{id}\"");
    loop {
        let frame = next_text(ws, Duration::from_secs(30)).await?;
        if frame.contains(&needle) {
            if let Some(code) = field_str(&frame, "\"error_code\":\"") {
                bail!("{name} failed: {code}");
            }
            return Ok(frame);
        }
    }
}

/// Joins `room:channel`; returns the reply's `seq`.
pub async fn join(ws: &mut Ws, room: &str, channel: &str) -> anyhow::Result<u64> {
    let reply = command(
        ws,
        "join_channel",
        &format!(r#"{{"room":"{room}","channel":"{channel}"}}"#),
    )
    .await?;
    Ok(field_u64(&reply, "\"seq\":").unwrap_or(0))
}

/// The digits after `key` (`"seq":`), parsed.
pub fn field_u64(frame: &str, key: &str) -> Option<u64> {
    let start = frame.find(key)? + key.len();
    let digits = &frame.as_bytes()[start..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// The string after `key` (`"error_code":"`), up to the next quote.
pub fn field_str<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    let start = frame.find(key)? + key.len();
    let rest = &frame[start..];
    Some(&rest[..rest.find('"')?])
}

/// What the load side needs from a delivered channel message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub seq: u64,
    /// Send time (bench clock, ns).
    pub sent_ns: u64,
    /// Sender index.
    pub sender: u64,
    /// Sender's counter.
    pub n: u64,
}

/// Parses a frame minimally: an error's code, or a bench message's
/// numbers. The payload is ours (`{"t":…,"s":…,"n":…,"p":"xx…"}`, keys in
/// any order: the client crate sorts them), and the server writes `seq`
/// outside it, so plain searches suffice.
pub enum Parsed<'a> {
    Delivery(Delivery),
    Error(&'a str),
    Other,
}

pub fn parse(frame: &str) -> Parsed<'_> {
    if let Some(code) = field_str(frame, "\"error_code\":\"") {
        return Parsed::Error(code);
    }
    let Some(payload_at) = frame.find("\"payload\":{") else {
        return Parsed::Other;
    };
    let (head, rest) = frame.split_at(payload_at);
    let payload_end = rest.find('}').unwrap_or(rest.len());
    let (payload, tail) = rest.split_at(payload_end);
    let seq = field_u64(head, "\"seq\":").or_else(|| field_u64(tail, "\"seq\":"));
    match (
        seq,
        field_u64(payload, "\"t\":"),
        field_u64(payload, "\"s\":"),
        field_u64(payload, "\"n\":"),
    ) {
        (Some(seq), Some(sent_ns), Some(sender), Some(n)) => Parsed::Delivery(Delivery {
            seq,
            sent_ns,
            sender,
            n,
        }),
        _ => Parsed::Other,
    }
}

/// A bench payload of exactly `size` bytes of JSON (when `size` is large
/// enough for the numbers): `{"t":…,"s":…,"n":…,"p":"xxx…"}`.
pub fn payload(size: usize, sent_ns: u64, sender: u64, n: u64) -> String {
    let mut text = format!(r#"{{"t":{sent_ns},"s":{sender},"n":{n},"p":""#);
    let pad = size.saturating_sub(text.len() + 2);
    text.extend(std::iter::repeat_n('x', pad));
    text.push_str("\"}");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_requested_size_and_parse_back() {
        let p = payload(100, 123_456_789, 7, 42);
        assert_eq!(p.len(), 100);
        let sorted = r#"{"n":42,"p":"xx","s":7,"t":123456789}"#;
        let frame = format!(r#"{{"type":"message","seq":3,"payload":{sorted},"metadata":{{}}}}"#);
        assert!(matches!(
            parse(&frame),
            Parsed::Delivery(Delivery { seq: 3, n: 42, .. })
        ));
        let value: serde_json::Value = serde_json::from_str(&p).expect("json");
        assert_eq!(value["t"], 123_456_789);
        let frame = format!(
            r#"{{"version":"1.0","id":"arq_1","type":"message","timestamp":"x","room":"r","channel":"c","sender":"arq_client_1","seq":17,"epoch":"e","payload":{p},"metadata":{{}}}}"#
        );
        match parse(&frame) {
            Parsed::Delivery(d) => assert_eq!(
                d,
                Delivery {
                    seq: 17,
                    sent_ns: 123_456_789,
                    sender: 7,
                    n: 42
                }
            ),
            _ => panic!("not parsed"),
        }
        let error = r#"{"type":"error","error_code":"RATE_LIMITED","request_id":null}"#;
        assert!(matches!(parse(error), Parsed::Error("RATE_LIMITED")));
    }
}
