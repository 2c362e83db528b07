//! The WebSocket side of the bus listener (SPEC §2, §11): the upgrade
//! checks, then one reader loop and one writer task per connection.

use std::net::SocketAddr;
use std::sync::Arc;

use arqon_commands::auth::{self, AuthError};
use arqon_commands::{Flow, Session};
use arqon_protocol::{
    ClientId, ClientType, MAX_AVATAR_LEN, MAX_PERSONALITY_LEN, MAX_SCREEN_NAME_LEN, close,
};
use arqon_routing::{Batch, Client, CloseReason, Outbound, Profile};
use arqon_telemetry::metrics::ConnectionGauge;
use arqon_telemetry::{AgentAction, Event};
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::time::{Duration, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::app::{App, ConnectionSlot};

const SHUTDOWN_CLOSE: CloseReason = CloseReason {
    code: close::GOING_AWAY,
    reason: "server shutting down",
    discard_pending: false,
};
const IDLE_CLOSE: CloseReason = CloseReason {
    code: close::GOING_AWAY,
    reason: "idle timeout",
    discard_pending: false,
};
const TOO_BIG_CLOSE: CloseReason = CloseReason {
    code: close::TOO_BIG,
    reason: "message too big",
    discard_pending: false,
};
const NORMAL_CLOSE: CloseReason = CloseReason {
    code: close::NORMAL,
    reason: "",
    discard_pending: false,
};
const REPLACED_CLOSE: CloseReason = CloseReason {
    code: close::REPLACED,
    reason: "replaced by a newer connection",
    discard_pending: false,
};
/// Per-connection read buffer, and the most read in one syscall.
/// tungstenite allocates it up front (128 KiB by default), which dominated
/// an idle connection's memory: 4 KiB gave 9.3 KiB RSS per idle connection,
/// 2 KiB gives 7.1 KiB (docs/benchmarks.md). Larger frames still arrive:
/// the buffer grows for them, they just take more reads.
const READ_BUFFER_BYTES: usize = 2 * 1024;
/// Frames are buffered up to this size before a socket write; the writer
/// flushes after each batch anyway.
const WRITE_BUFFER_BYTES: usize = 32 * 1024;
/// How long the server waits for a client's reply to its close frame.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(1);
/// How long a close frame may take to write before the socket is dropped.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// A refused upgrade: HTTP status plus a JSON body naming the problem
/// (`{"error", "field", "message"}`).
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    error: &'static str,
    field: Option<String>,
    message: String,
}

fn refuse(status: StatusCode, error: &'static str, field: Option<&str>, message: &str) -> Refusal {
    Refusal {
        status,
        error,
        field: field.map(str::to_owned),
        message: message.to_owned(),
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "field": self.field, "message": self.message});
        (self.status, axum::Json(body)).into_response()
    }
}

/// Who is connecting, from the query string (SPEC §2).
#[derive(Debug, Default)]
struct ConnectParams {
    profile: Profile,
    token: Option<String>,
}

fn parse_params(pairs: &[(String, String)]) -> Result<ConnectParams, Refusal> {
    let mut params = ConnectParams::default();
    let invalid = |field: &str, message: &str| {
        refuse(
            StatusCode::BAD_REQUEST,
            "invalid query parameter",
            Some(field),
            message,
        )
    };
    for (name, value) in pairs {
        let limit = match name.as_str() {
            "client_type" => {
                params.profile.client_type = value
                    .parse::<ClientType>()
                    .map_err(|err| invalid("client_type", &err.to_string()))?;
                continue;
            }
            "token" => {
                if value.is_empty() {
                    return Err(invalid("token", "must not be empty"));
                }
                params.token = Some(value.clone());
                continue;
            }
            "screen_name" => MAX_SCREEN_NAME_LEN,
            "avatar" => MAX_AVATAR_LEN,
            "personality" => MAX_PERSONALITY_LEN,
            _ => continue,
        };
        if value.is_empty() || value.chars().count() > limit {
            return Err(invalid(name, &format!("must be 1-{limit} characters")));
        }
        let slot = match name.as_str() {
            "screen_name" => &mut params.profile.screen_name,
            "avatar" => &mut params.profile.avatar,
            _ => &mut params.profile.personality,
        };
        *slot = Some(value.clone());
    }
    Ok(params)
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_owned()).filter(|t| !t.is_empty())
}

fn unauthorized(err: &AuthError) -> Refusal {
    refuse(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        Some("token"),
        &err.to_string(),
    )
}

/// `GET /` and `/ws`: checks the request, then upgrades.
pub async fn upgrade(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Refusal> {
    let upgrade = upgrade.map_err(|_| {
        refuse(
            StatusCode::UPGRADE_REQUIRED,
            "websocket upgrade required",
            None,
            "connect with a WebSocket client to ws://HOST:PORT/ or /ws",
        )
    })?;
    if app.is_draining() {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "server shutting down",
            None,
            "try another node or later",
        ));
    }
    let Query(pairs) = query.map_err(|_| {
        refuse(
            StatusCode::BAD_REQUEST,
            "invalid query string",
            None,
            "the query string could not be parsed",
        )
    })?;
    let params = parse_params(&pairs)?;
    let token = params.token.clone().or_else(|| bearer_token(&headers));
    let identity = auth::authenticate(&app.config.auth, peer, token.as_deref()).map_err(|err| {
        debug!(%peer, error = %err, "upgrade refused");
        unauthorized(&err)
    })?;
    let slot = app.reserve_connection().ok_or_else(|| {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "connection limit reached",
            None,
            "the server is at ARQONBUS_MAX_CONNECTIONS",
        )
    })?;
    let max = app.config.server.max_message_size;
    let mut profile = params.profile;
    if let Some(kind) = identity.client_type {
        profile.client_type = kind;
    }
    if identity.screen_name.is_some() {
        profile.screen_name = identity.screen_name;
    }
    let client = Client::new(
        identity.client_id.unwrap_or_else(ClientId::generate),
        peer,
        identity.role,
        profile,
        app.config.routing.client_queue_bytes,
    )
    .with_allowed_channels(identity.channels);
    let client = Arc::new(client);
    Ok(upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|err| debug!(error = %err, "websocket upgrade failed"))
        .on_upgrade(move |socket| {
            let span = info_span!("connection", client_id = %client.id(), %peer);
            let tasks = app.tasks.clone();
            tasks.track_future(run_connection(app, socket, client, slot).instrument(span))
        }))
}

/// How long a new connection waits for its cluster registration.
const CLUSTER_REGISTER_WAIT: Duration = Duration::from_secs(2);

/// Runs one connection to its end, then removes it everywhere.
async fn run_connection(
    app: Arc<App>,
    socket: WebSocket,
    client: Arc<Client>,
    _slot: ConnectionSlot,
) {
    let _gauge = ConnectionGauge::websocket();
    let router = app.bus.router();
    let telemetry = app.bus.telemetry();
    if let Some(replaced) = router.register(client.clone()) {
        replaced.close(REPLACED_CLOSE);
    }
    info!(client_type = %client.client_type(), "client connected");
    telemetry.emit_with(|| Event::ClientConnected {
        client_id: client.id().clone(),
        client_type: client.client_type(),
        screen_name: client.profile().screen_name,
    });
    app.bus.agent_activity(&client, AgentAction::Connect, None);
    if let Some(cluster) = app.bus.cluster() {
        // Registered before the welcome, so that direct messages from any
        // node find the client as soon as it knows its id.
        let registered =
            cluster.client_connected(client.id().as_str(), client.client_type().as_str());
        match tokio::time::timeout(CLUSTER_REGISTER_WAIT, registered).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                warn!(%error, "cluster: client not registered yet; the heartbeat retries")
            }
            Err(_elapsed) => warn!("cluster: client registration timed out; the heartbeat retries"),
        }
    }
    let mut session = Session::new(app.bus.clone(), client.clone());
    session.welcome();

    let (sink, stream) = socket.split();
    let writer_done = CancellationToken::new();
    let writer = tokio::spawn(write_loop(
        sink,
        client.outbound().clone(),
        app.config.server.ping_interval,
        writer_done.clone(),
    ));
    let mut stream = stream;
    let end = read_loop(&app, &mut stream, &mut session, &writer_done).await;
    let reason = match end {
        ReaderEnd::PeerGone(reason) => reason,
        ReaderEnd::ServerClosing => client
            .outbound()
            .close_reason()
            .map_or("closed by the server", |close| close.reason),
    };

    // Whatever ended the reader, the writer finishes what is queued and
    // closes; the grace period bounds how long that may take.
    client.close(NORMAL_CLOSE);
    if tokio::time::timeout(app.config.server.shutdown_grace, writer)
        .await
        .is_err()
    {
        warn!("writer did not finish within the grace period");
    }
    let joined = client.subscriptions();
    router.unregister(&client);
    if let Some(cluster) = app.bus.cluster() {
        cluster.client_disconnected(client.id().as_str(), joined);
    }
    if end == ReaderEnd::ServerClosing {
        // Complete the closing handshake: give the client a moment to
        // answer our close frame before the TCP connection goes.
        let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, async {
            while let Some(Ok(message)) = stream.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    info!(reason, "client disconnected");
    let duration = arqon_protocol::now() - client.connected_at();
    telemetry.emit(Event::ClientDisconnected {
        client_id: client.id().clone(),
        reason: reason.into(),
        duration_ms: u64::try_from(duration.num_milliseconds()).unwrap_or(0),
    });
    app.bus
        .agent_activity(&client, AgentAction::Disconnect, None);
}

/// Why the reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReaderEnd {
    /// The client closed, went away, or the socket failed (with why).
    PeerGone(&'static str),
    /// The server decided to close (shutdown, idle, a limit, a violation,
    /// a slow consumer, a replacement): the client still owes a close reply.
    ServerClosing,
}

async fn read_loop(
    app: &App,
    stream: &mut SplitStream<WebSocket>,
    session: &mut Session,
    writer_done: &CancellationToken,
) -> ReaderEnd {
    let idle_timeout = app.config.server.idle_timeout;
    let client = session.client().clone();
    let mut deadline = Instant::now() + idle_timeout;
    loop {
        let frame = tokio::select! {
            biased;
            () = app.shutdown.cancelled() => {
                client.close(SHUTDOWN_CLOSE);
                return ReaderEnd::ServerClosing;
            }
            () = writer_done.cancelled() => return ReaderEnd::ServerClosing,
            () = session.resolve_pending(), if session.has_pending() => continue,
            frame = tokio::time::timeout_at(deadline, stream.next()), if session.can_read() => frame,
        };
        let message = match frame {
            Err(_elapsed) => {
                debug!("idle timeout");
                client.close(IDLE_CLOSE);
                return ReaderEnd::ServerClosing;
            }
            Ok(None) => return ReaderEnd::PeerGone("connection lost"),
            Ok(Some(Err(err))) => {
                if is_too_big(&err) {
                    debug!("frame over the size limit");
                    client.close(TOO_BIG_CLOSE);
                    return ReaderEnd::ServerClosing;
                }
                debug!(error = %err, "websocket read failed");
                return ReaderEnd::PeerGone("connection lost");
            }
            Ok(Some(Ok(message))) => message,
        };
        deadline = Instant::now() + idle_timeout;
        let flow = match message {
            Message::Text(text) => session.on_text(text.as_str()),
            Message::Binary(_) => session.on_binary(),
            Message::Ping(_) | Message::Pong(_) => {
                client.touch();
                Flow::Continue
            }
            Message::Close(_) => return ReaderEnd::PeerGone("client closed"),
        };
        if flow == Flow::Close {
            return ReaderEnd::ServerClosing;
        }
    }
}

/// Whether a read error is the frame-size limit (close 1009).
fn is_too_big(err: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source = err.source();
    while let Some(inner) = source {
        if let Some(ws_err) = inner.downcast_ref::<tungstenite::Error>() {
            return matches!(ws_err, tungstenite::Error::Capacity(_));
        }
        source = inner.source();
    }
    false
}

/// Owns the socket's write half: drains the queue in batches, pings on
/// schedule, and sends the close frame.
pub(crate) async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    outbound: Outbound,
    ping_interval: Duration,
    done: CancellationToken,
) {
    let mut batch: Vec<Bytes> = Vec::new();
    let mut pings = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let reason = tokio::select! {
            next = outbound.next_batch(&mut batch) => match next {
                Batch::Frames => {
                    let written = tokio::select! {
                        result = write_batch(&mut sink, &mut batch) => result.map(|()| None),
                        reason = outbound.discarded() => Ok(Some(reason)),
                    };
                    match written {
                        Ok(None) => continue,
                        Ok(Some(reason)) => reason,
                        Err(()) => break,
                    }
                }
                Batch::Close(reason) => reason,
            },
            _ = pings.tick() => {
                let ping = tokio::select! {
                    result = sink.send(Message::Ping(Bytes::new())) => result.map(|()| None).map_err(|_| ()),
                    reason = outbound.discarded() => Ok(Some(reason)),
                };
                match ping {
                    Ok(None) => continue,
                    Ok(Some(reason)) => reason,
                    Err(()) => break,
                }
            }
        };
        let frame = CloseFrame {
            code: reason.code,
            reason: Utf8Bytes::from_static(reason.reason),
        };
        let _ =
            tokio::time::timeout(CLOSE_WRITE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
        break;
    }
    done.cancel();
}

async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    batch: &mut Vec<Bytes>,
) -> Result<(), ()> {
    for frame in batch.drain(..) {
        // Every queued frame is JSON produced by serde_json: valid UTF-8.
        let text = Utf8Bytes::try_from(frame).map_err(|_| ())?;
        sink.feed(Message::Text(text)).await.map_err(|_| ())?;
    }
    sink.flush().await.map_err(|_| ())
}
