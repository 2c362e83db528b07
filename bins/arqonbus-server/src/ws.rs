//! The WebSocket side of the bus listener (SPEC §2, §11): the upgrade
//! checks, then one reader loop and one writer task per connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arqon_commands::auth::{self, AuthError};
use arqon_commands::{Flow, Session};
use arqon_protocol::{
    ClientId, ClientType, MAX_AVATAR_LEN, MAX_PERSONALITY_LEN, MAX_SCREEN_NAME_LEN,
    check_profile_text, close,
};
use arqon_routing::{Batch, Client, CloseReason, Frames, Outbound, Profile};
use arqon_telemetry::metrics::{AbortReason, ConnectionGauge};
use arqon_telemetry::{AgentAction, Event};
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::json;
use tokio::time::{Duration, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
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
    reason: "connection closed",
    discard_pending: false,
};
/// Recorded when a write made no progress: the queue is freed, and no
/// close frame is attempted on a socket that does not drain.
pub(crate) const STALLED_CLOSE: CloseReason = CloseReason {
    code: close::GOING_AWAY,
    reason: "write timeout",
    discard_pending: true,
};
const INVALID_UTF8_CLOSE: CloseReason = CloseReason {
    code: close::INVALID_UTF8,
    reason: "text frame is not valid UTF-8",
    discard_pending: false,
};
const PROTOCOL_ERROR_CLOSE: CloseReason = CloseReason {
    code: close::PROTOCOL_ERROR,
    reason: "websocket protocol error",
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
const READ_BUFFER_BYTES: usize = 1024;
/// Frames are buffered up to this size before a socket write; the writer
/// flushes after each batch anyway.
const WRITE_BUFFER_BYTES: usize = 32 * 1024;
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

pub fn refuse(
    status: StatusCode,
    error: &'static str,
    field: Option<&str>,
    message: &str,
) -> Refusal {
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
                // An empty token is an invalid token (401 where tokens are
                // checked), not a malformed request (SPEC §18).
                params.token = Some(value.clone());
                continue;
            }
            "screen_name" => MAX_SCREEN_NAME_LEN,
            "avatar" => MAX_AVATAR_LEN,
            "personality" => MAX_PERSONALITY_LEN,
            _ => continue,
        };
        check_profile_text(value, limit).map_err(|err| invalid(name, &err.to_string()))?;
        let slot = match name.as_str() {
            "screen_name" => &mut params.profile.screen_name,
            "avatar" => &mut params.profile.avatar,
            _ => &mut params.profile.personality,
        };
        *slot = Some(value.clone());
    }
    Ok(params)
}

pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_owned()).filter(|t| !t.is_empty())
}

/// The checks every WebSocket upgrade passes first, on either listener: it
/// is an upgrade (426 with `hint` otherwise), the server is not draining
/// (503), and the Origin is allowed (403, SPEC §18).
pub fn admit(
    app: &App,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    headers: &HeaderMap,
    hint: &str,
) -> Result<WebSocketUpgrade, Refusal> {
    let upgrade = upgrade.map_err(|_| {
        refuse(
            StatusCode::UPGRADE_REQUIRED,
            "websocket upgrade required",
            None,
            hint,
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
    app.origins
        .check(headers)
        .map_err(|origin| forbidden_origin(&origin))?;
    Ok(upgrade)
}

/// The query string, or a 400 when it does not parse.
pub fn parsed_query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Refusal> {
    query.map(|Query(query)| query).map_err(|_| {
        refuse(
            StatusCode::BAD_REQUEST,
            "invalid query string",
            None,
            "the query string could not be parsed",
        )
    })
}

/// The 403 of an upgrade from a page on an origin that is not allowed.
pub fn forbidden_origin(origin: &str) -> Refusal {
    debug!(origin, "upgrade refused: origin not allowed");
    refuse(
        StatusCode::FORBIDDEN,
        "origin not allowed",
        Some("origin"),
        &format!("pages from {origin} may not connect; allow it with ARQONBUS_ALLOWED_ORIGINS"),
    )
}

pub fn unauthorized(err: &AuthError) -> Refusal {
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
    let upgrade = admit(
        &app,
        upgrade,
        &headers,
        "connect with a WebSocket client to ws://HOST:PORT/ or /ws",
    )?;
    let pairs = parsed_query(query)?;
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

/// Runs one connection to its end, removes it everywhere, and only then,
/// once the socket is closed, releases its slot (SPEC §18).
async fn run_connection(
    app: Arc<App>,
    socket: WebSocket,
    client: Arc<Client>,
    slot: ConnectionSlot,
) {
    let _gauge = ConnectionGauge::websocket();
    let (sink, stream) = socket.split();
    let writer_done = CancellationToken::new();
    let mut writer = AbortOnDropHandle::new(tokio::spawn(write_loop(
        sink,
        client.outbound().clone(),
        WriterSettings::of(&app),
        writer_done.clone(),
    )));
    let mut stream = stream;
    let reason = tokio::select! {
        reason = serve(&app, &mut stream, &client, &writer_done) => reason,
        () = app.abort.cancelled() => {
            // The grace period is over: no more waiting on this client.
            arqon_telemetry::metrics::connection_aborted(AbortReason::Shutdown);
            "aborted at shutdown"
        }
    };
    // The writer has finished by now, or is cut off here: either way its
    // half of the socket is gone before the slot is released.
    writer.abort();
    let _ = (&mut writer).await;
    drop(stream);
    cleanup(&app, &client, reason);
    drop(slot);
}

/// Registers the client, runs the reader until the connection ends, and
/// lets the writer finish what is queued. Returns why it ended.
///
/// # Cancel safety
/// Not cancel safe in the sense of finishing its work: when it is dropped
/// (shutdown abort), the caller still runs [`cleanup`].
async fn serve(
    app: &Arc<App>,
    stream: &mut SplitStream<WebSocket>,
    client: &Arc<Client>,
    writer_done: &CancellationToken,
) -> &'static str {
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
    app.bus.agent_activity(client, AgentAction::Connect, None);
    // Registered before the welcome, so that direct messages from any
    // node find the client as soon as it knows its id.
    app.bus.backplane().client_connected(client).await;
    let mut session = Session::new(app.bus.clone(), client.clone());
    session.welcome();

    let end = read_loop(app, stream, &mut session, writer_done).await;
    let reason = match end {
        ReaderEnd::PeerGone(reason) | ReaderEnd::PeerClosed(reason) => reason,
        ReaderEnd::ServerClosing => client
            .outbound()
            .close_reason()
            .map_or("closed by the server", |close| close.reason),
    };
    // Whatever ended the reader, the writer finishes what is queued and
    // closes (echoing the client's close frame, if it sent one); the grace
    // period bounds how long that may take.
    client.close(NORMAL_CLOSE);
    // The waits from here on are boxed: they run once, at the end, and
    // inline they would be part of every connection's task all along.
    if Box::pin(tokio::time::timeout(
        app.config.server.shutdown_grace,
        writer_done.cancelled(),
    ))
    .await
    .is_err()
    {
        warn!("writer did not finish within the grace period");
    }
    let stalled = client.outbound().close_reason() == Some(STALLED_CLOSE);
    match end {
        ReaderEnd::ServerClosing if !stalled => {
            // Complete the closing handshake: give the client a moment to
            // answer our close frame before the TCP connection goes.
            let _ = Box::pin(tokio::time::timeout(
                app.config.server.close_timeout,
                async {
                    while let Some(Ok(message)) = stream.next().await {
                        if matches!(message, Message::Close(_)) {
                            break;
                        }
                    }
                },
            ))
            .await;
        }
        ReaderEnd::PeerClosed(_) => {
            // The echo is written; RFC 6455 lets the client close the TCP
            // connection first, which browsers take as a clean close.
            let _ = Box::pin(tokio::time::timeout(
                app.config.server.close_timeout,
                async { while let Some(Ok(_)) = stream.next().await {} },
            ))
            .await;
        }
        ReaderEnd::ServerClosing | ReaderEnd::PeerGone(_) => {}
    }
    reason
}

/// Removes a finished connection from the router and the cluster, and
/// reports its end.
fn cleanup(app: &App, client: &Arc<Client>, reason: &'static str) {
    let joined = client.subscriptions();
    app.bus.router().unregister(client);
    app.bus.backplane().client_disconnected(client, joined);
    info!(reason, "client disconnected");
    let duration = arqon_protocol::now() - client.connected_at();
    app.bus.telemetry().emit(Event::ClientDisconnected {
        client_id: client.id().clone(),
        reason: reason.into(),
        duration_ms: u64::try_from(duration.num_milliseconds()).unwrap_or(0),
    });
    app.bus
        .agent_activity(client, AgentAction::Disconnect, None);
}

/// Why the reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReaderEnd {
    /// The client went away or the socket failed (with why).
    PeerGone(&'static str),
    /// The client sent a close frame; it is owed the echo.
    PeerClosed(&'static str),
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
    let mut last_frame = Instant::now();
    // One timer for the connection, re-armed only when it fires early: a
    // frame just moves `last_frame`, so reading costs no timer per frame.
    let mut idle = Box::pin(tokio::time::sleep_until(last_frame + idle_timeout));
    loop {
        let frame = tokio::select! {
            biased;
            () = app.shutdown.cancelled() => {
                client.close(SHUTDOWN_CLOSE);
                return ReaderEnd::ServerClosing;
            }
            () = writer_done.cancelled() => return ReaderEnd::ServerClosing,
            () = session.resolve_pending(), if session.has_pending() => continue,
            frame = stream.next(), if session.can_read() => frame,
            () = idle.as_mut(), if session.can_read() => {
                let deadline = last_frame + idle_timeout;
                if Instant::now() < deadline {
                    idle.as_mut().reset(deadline);
                    continue;
                }
                debug!("idle timeout");
                client.close(IDLE_CLOSE);
                return ReaderEnd::ServerClosing;
            }
        };
        let message = match frame {
            None => return ReaderEnd::PeerGone("connection lost"),
            Some(Err(err)) => {
                return match read_error_close(&err) {
                    Some(close) => {
                        debug!(error = %err, code = close.code, "closing on a bad frame");
                        client.close(close);
                        ReaderEnd::ServerClosing
                    }
                    None => {
                        debug!(error = %err, "websocket read failed");
                        ReaderEnd::PeerGone("connection lost")
                    }
                };
            }
            Some(Ok(message)) => message,
        };
        last_frame = Instant::now();
        let flow = match message {
            Message::Text(text) => session.on_text(text.as_str()),
            Message::Binary(_) => session.on_binary(),
            // Pings cost a token like any frame (SPEC §18); pongs answer
            // our own pings and only prove the client is alive.
            Message::Ping(_) => session.on_ping(),
            Message::Pong(_) => {
                client.touch();
                Flow::Continue
            }
            Message::Close(_) => return ReaderEnd::PeerClosed("client closed"),
        };
        if flow == Flow::Close {
            return ReaderEnd::ServerClosing;
        }
    }
}

/// The close a read error calls for (SPEC §2, §18): 1009 for a frame over
/// the size limit, 1007 for invalid UTF-8 in a text frame, 1002 for any
/// other framing violation; `None` when the connection itself failed.
pub(crate) fn read_error_close(err: &axum::Error) -> Option<CloseReason> {
    use std::error::Error as _;
    let mut source = err.source();
    while let Some(inner) = source {
        if let Some(ws_err) = inner.downcast_ref::<tungstenite::Error>() {
            return match ws_err {
                tungstenite::Error::Capacity(_) => Some(TOO_BIG_CLOSE),
                tungstenite::Error::Utf8(_) => Some(INVALID_UTF8_CLOSE),
                tungstenite::Error::Protocol(_) => Some(PROTOCOL_ERROR_CLOSE),
                _ => None,
            };
        }
        source = inner.source();
    }
    None
}

/// What a connection's writer needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterSettings {
    pub ping_interval: Duration,
    /// A write step that does not complete within this aborts the
    /// connection (SPEC §18).
    pub write_timeout: Duration,
    /// Channel messages for a connection written to less than this long
    /// ago are held until this long after that write, and go out together.
    pub coalesce: Duration,
}

impl WriterSettings {
    pub(crate) fn of(app: &App) -> Self {
        Self {
            ping_interval: app.config.server.ping_interval,
            write_timeout: app.config.server.write_timeout,
            coalesce: app.config.server.write_coalesce,
        }
    }
}

/// How a write attempt ended.
enum Written {
    Done,
    /// The queue was discarded meanwhile (a slow consumer): close now.
    Discarded(CloseReason),
    /// The socket failed, or the peer already closed.
    Failed,
    /// No progress within the write timeout.
    Stalled,
}

/// Owns the socket's write half: drains the queue in batches, pings on
/// schedule, and ends with the close handshake: our close frame, or the
/// echo of the client's (tungstenite queues it when the client's close
/// frame is read; closing the sink flushes it). A write step that makes no
/// progress for the write timeout aborts the connection instead: the queue
/// is freed and the socket dropped without waiting any further.
///
/// Write coalescing: a batch of channel messages only (no reply, direct
/// message or notice in it) for a busy connection — its last write carried
/// several frames and was less than `settings.coalesce` ago — waits until
/// that much time has passed since that write, gathering what is published
/// meanwhile, and goes out in one socket write. A connection that gets a
/// frame at a time is written to at once; a busy one at most once per
/// window, which under fan-out load saves a write (and the reader's
/// wake-up) per message (docs/architecture.md).
pub(crate) async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    outbound: Outbound,
    settings: WriterSettings,
    done: CancellationToken,
) {
    let ping_interval = settings.ping_interval;
    let mut pings = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let timeout = settings.write_timeout;
    // When the last batch was written, and whether it carried several
    // frames: only a connection that busy has its next batch held.
    let mut last_write: Option<(Instant, bool)> = None;
    let close = loop {
        let written = tokio::select! {
            next = outbound.next_batch() => match next {
                Batch::Frames { mut frames, urgent } => {
                    let window_end = last_write
                        .filter(|&(_, several)| several && !urgent)
                        .map(|(at, _)| at + settings.coalesce)
                        .filter(|end| Instant::now() < *end);
                    let write = async {
                        if let Some(end) = window_end {
                            outbound.gather_until(end, &mut frames).await;
                        }
                        let several = frames.len() > 1;
                        (write_batch(&mut sink, frames, timeout).await, several)
                    };
                    let (written, several) = match unless_discarded(&outbound, write).await {
                        Ok(written) => written,
                        Err(written) => (written, false),
                    };
                    last_write = Some((Instant::now(), several));
                    written
                }
                Batch::Close(reason) => break Some(reason),
            },
            _ = pings.tick() => {
                // Boxed, like the close below: rare steps whose futures
                // would otherwise be part of every idle connection's task.
                let ping = Box::pin(step(timeout, sink.send(Message::Ping(Bytes::new()))));
                unless_discarded(&outbound, ping).await.unwrap_or_else(|discarded| discarded)
            }
        };
        match written {
            Written::Done => {}
            Written::Discarded(reason) => break Some(reason),
            Written::Failed => break None,
            Written::Stalled => {
                debug!("write made no progress; aborting the connection");
                arqon_telemetry::metrics::connection_aborted(AbortReason::WriteTimeout);
                outbound.close(STALLED_CLOSE);
                done.cancel();
                return;
            }
        }
    };
    Box::pin(close_handshake(&mut sink, close)).await;
    done.cancel();
}

/// Sends our close frame, if we are the ones closing, then closes the sink
/// (which flushes the echo of the client's close frame if it closed first).
async fn close_handshake(sink: &mut SplitSink<WebSocket, Message>, close: Option<CloseReason>) {
    if let Some(reason) = close {
        let frame = CloseFrame {
            code: reason.code,
            reason: Utf8Bytes::from_static(reason.reason),
        };
        // Fails harmlessly when the client closed first: the close below
        // then flushes the echo of its frame instead.
        let _ =
            tokio::time::timeout(CLOSE_WRITE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
    }
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, sink.close()).await;
}

/// Races a write against the queue being discarded (a slow consumer cut
/// off while its socket does not drain).
///
/// # Cancel safety
/// Cancel safe as far as the queue goes; a write dropped halfway leaves
/// the socket unusable, which is why it is only dropped when closing.
async fn unless_discarded<T>(
    outbound: &Outbound,
    write: impl Future<Output = T>,
) -> Result<T, Written> {
    tokio::select! {
        written = write => Ok(written),
        reason = outbound.discarded() => Err(Written::Discarded(reason)),
    }
}

/// One write step, which must make progress within `timeout`. Most steps
/// complete on their first poll (the frame fits the write buffer, the
/// socket takes the bytes): the timer is armed only for a step that has to
/// wait, so a batch costs no clock read or timer per frame.
async fn step(timeout: Duration, write: impl Future<Output = Result<(), axum::Error>>) -> Written {
    let mut write = std::pin::pin!(write);
    let result = match write.as_mut().now_or_never() {
        Some(result) => result,
        // Boxed: the timer is rare, and inline it would be part of every
        // writer's task.
        None => match Box::pin(tokio::time::timeout(timeout, write)).await {
            Ok(result) => result,
            Err(_elapsed) => return Written::Stalled,
        },
    };
    match result {
        Ok(()) => Written::Done,
        Err(_) => Written::Failed,
    }
}

/// Writes a batch: each frame goes into the socket's write buffer (which
/// writes to the socket as it fills), then one flush. Each of those steps
/// must complete within `timeout`: that is what "no progress" means here.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    batch: Frames,
    timeout: Duration,
) -> Written {
    for frame in batch {
        // Every queued frame is JSON produced by serde_json: valid UTF-8.
        let Ok(text) = Utf8Bytes::try_from(frame) else {
            return Written::Failed;
        };
        match step(timeout, sink.feed(Message::Text(text))).await {
            Written::Done => {}
            other => return other,
        }
    }
    step(timeout, sink.flush()).await
}
