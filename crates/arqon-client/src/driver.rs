//! The connection task: the only owner of the socket. It writes what the
//! [`Client`](crate::Client) handles queue, reads every frame, matches
//! replies to requests by `id`, feeds subscriptions, and reconnects.
//!
//! Reconnect and gap filling, per joined channel:
//! 1. while disconnected, remember the last delivered `seq` and `epoch`;
//! 2. after reconnecting, send `join_channel` with
//!    `recover: {seq: <last delivered>, epoch}` (SPEC §14) and the
//!    channel's `presence` flag; live messages that arrive from then on
//!    are buffered (bounded);
//! 3. the join reply names the channel's current `seq` and `epoch`. With
//!    `recovered: true` its `publications` are the missed messages:
//!    deliver them (marked `replayed`, deduplicated by `seq`). Otherwise
//!    (`recovered: false`, or a server without §14), same epoch and a
//!    higher `seq`: page through `history after_seq=<last>` and deliver
//!    what it returns, marked `replayed`. A different epoch: the history
//!    restarted, nothing can be recovered;
//! 4. deliver a [`GapReport`](crate::GapReport), then the buffered live messages (skipping
//!    any `seq` already delivered).
//!
//! Steps 2-4 are the state machine in [`resync`](crate::resync); this task
//! sends its requests and delivers what it hands back.
//!
//! A reconnect is not attempted after a permanent refusal (HTTP 400, 401,
//! 403) or close code 4000 / 4003: the task ends with a [`StopReason`].
//!
//! Refill on lag (when enabled): live delivery remembers the seqs it
//! skipped (bounded); a `lagged` notice starts a `history after_seq` read
//! from its `first_dropped_seq`, paged up to the reply's `last_seq`, that
//! delivers only seqs skipped or not yet seen.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arqon_protocol::{ChannelKey, Envelope, EnvelopeType, SERVER_SENDER, close};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, warn};

use crate::error::{ClientError, ServerError, StopReason};
use crate::options::{ConnectOptions, Identity};
use crate::resync::{Next, Position, Resync};
use crate::types::{
    ChannelMessage, ClientEvent, DirectMessage, History, Joined, LagReport, PresenceEvent,
    Recovery, SubscriptionEvent, Welcome,
};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub(crate) type Reply = oneshot::Sender<Result<Envelope, ClientError>>;
pub(crate) type JoinReply =
    oneshot::Sender<Result<(Joined, mpsc::Receiver<SubscriptionEvent>), ClientError>>;

/// Largest `history` page the server allows.
const HISTORY_PAGE: u64 = 1000;
/// Seqs remembered per channel as skipped by live delivery (dropped by the
/// server), for [`ConnectOptions::refill_on_lag`].
const MISSING_CAP: usize = 65_536;
/// Requests taken from the queue before the writes are flushed.
const WRITE_BATCH: usize = 256;

/// Where the connection stands, as [`Client::state`](crate::Client::state)
/// reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionState {
    Connected(Welcome),
    /// Waiting before (or making) reconnect attempt `attempt` (from 0).
    Reconnecting {
        attempt: u32,
    },
    Closed,
}

/// What a [`Client`](crate::Client) handle asks of the connection task.
#[derive(Debug)]
pub(crate) enum Request {
    /// Any command; the reply envelope (response or error) is returned.
    Command {
        id: String,
        frame: String,
        reply: Reply,
    },
    Join {
        key: ChannelKey,
        id: String,
        frame: String,
        presence: bool,
        reply: JoinReply,
    },
    /// A [`Subscription`](crate::Subscription) was dropped: leave its
    /// channel unless a later join (another id) replaced it.
    Unsubscribe {
        key: ChannelKey,
        join_id: String,
    },
    Leave {
        key: ChannelKey,
        id: String,
        frame: String,
        reply: Reply,
    },
    /// A publish or direct message; with `ack`, its acknowledgement.
    Publish {
        id: String,
        frame: String,
        ack: Option<Reply>,
    },
    Close,
}

/// A request waiting for its reply, by envelope id.
enum Pending {
    User(Reply),
    Join {
        key: ChannelKey,
        reply: JoinReply,
        rx: mpsc::Receiver<SubscriptionEvent>,
    },
    Leave {
        key: ChannelKey,
        reply: Reply,
    },
    /// Internal: re-join after a reconnect.
    Rejoin {
        key: ChannelKey,
    },
    /// Internal: a page of gap-filling history.
    History {
        key: ChannelKey,
    },
    /// Internal: a page of history refilling what a slow client lost.
    Refill {
        key: ChannelKey,
    },
    /// Internal: a reply nobody waits for (the leave of a dropped
    /// subscription).
    Ignore,
}

struct ChannelState {
    tx: mpsc::Sender<SubscriptionEvent>,
    /// Whether the server confirmed the join (only those are re-joined).
    confirmed: bool,
    /// The last delivered `seq` and its epoch.
    position: Position,
    /// The gap fill after a reconnect, while it runs.
    resync: Option<Resync>,
    /// Whether the join asked for presence events (kept on re-joins).
    presence: bool,
    /// The id of the join request behind the live subscription.
    join_id: String,
    /// Refill on lag: seqs live delivery skipped (dropped by the server).
    missing: BTreeSet<u64>,
    /// Refill on lag: a history read is in flight.
    refilling: bool,
    /// Refill on lag: a notice came during the refill; start again from it.
    refill_again: Option<u64>,
}

/// Queues shared with the client handles.
pub(crate) struct Outlets {
    pub direct: mpsc::Sender<DirectMessage>,
    pub direct_taken: Arc<AtomicBool>,
    pub events: mpsc::Sender<ClientEvent>,
    pub events_taken: Arc<AtomicBool>,
    pub state: watch::Sender<ConnectionState>,
    /// The identity sent on each (re)connect: the options' one, updated by
    /// every successful `identify`.
    pub identity: Arc<Mutex<Identity>>,
    /// Set when the client stopped for good.
    pub stopped: Arc<Mutex<Option<StopReason>>>,
}

enum Exit {
    /// The client asked to close, or every handle is gone.
    Closed,
    /// The connection dropped.
    Lost(String),
    /// The server said not to come back: 4000 (a newer connection with
    /// the same identity replaced this one, reconnecting would only fight
    /// it) or 4003 (an operator's disconnect).
    Stopped(StopReason),
}

pub(crate) struct Driver {
    opts: Arc<ConnectOptions>,
    requests: mpsc::Receiver<Request>,
    outlets: Outlets,
    channels: HashMap<ChannelKey, ChannelState>,
    pending: HashMap<String, Pending>,
    outbox: VecDeque<String>,
    next_internal: u64,
    id_prefix: String,
}

/// Opens a connection (TLS for `wss://`, with the configuration
/// [resolved](ConnectOptions::resolve_tls) when the client connected) and
/// reads the welcome frame.
pub(crate) async fn open(
    opts: &ConnectOptions,
    identity: &Identity,
) -> Result<(Ws, Welcome), ClientError> {
    let token = opts.current_token().await?;
    let request = opts.request_with(identity, token.as_deref())?;
    let uri = request.uri().clone();
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: opts.url.clone(),
        reason: reason.to_owned(),
    };
    let (connector, default_port) = match uri.scheme_str() {
        Some("ws") => (Connector::Plain, 80),
        Some("wss") => {
            let config = match opts.tls_client_config() {
                Some(config) => config,
                None => opts
                    .clone()
                    .resolve_tls()?
                    .tls_client_config()
                    .ok_or_else(|| ClientError::Tls {
                        reason: "no TLS configuration".to_owned(),
                    })?,
            };
            (Connector::Rustls(config), 443)
        }
        _ => return Err(invalid("only ws:// and wss:// URLs are supported")),
    };
    let host = uri
        .host()
        .ok_or_else(|| invalid("no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(default_port);
    let url = opts.url.clone();
    let connect_error = |source: tungstenite::Error| match source {
        tungstenite::Error::Http(response) => ClientError::Refused {
            status: response.status().as_u16(),
            body: response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        },
        source => ClientError::Connect {
            url: url.clone(),
            source: Box::new(source),
        },
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(opts.read_buffer_size)
        .write_buffer_size(opts.read_buffer_size);
    let attempt = async {
        let stream = tcp_connect(&host, port, opts.local_addr)
            .await
            .map_err(|e| connect_error(tungstenite::Error::Io(e)))?;
        let (mut ws, _response) = tokio_tungstenite::client_async_tls_with_config(
            request,
            stream,
            Some(config),
            Some(connector),
        )
        .await
        .map_err(connect_error)?;
        let welcome = loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let envelope: Envelope = serde_json::from_str(text.as_str())
                        .map_err(|e| ClientError::protocol(format!("welcome frame: {e}")))?;
                    break Welcome::from_envelope(&envelope)?;
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(ClientError::protocol(format!(
                        "closed before the welcome frame: {frame:?}"
                    )));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(connect_error(e)),
                None => return Err(ClientError::protocol("closed before the welcome frame")),
            }
        };
        Ok((ws, welcome))
    };
    tokio::time::timeout(opts.connect_timeout, attempt)
        .await
        .map_err(|_| ClientError::Timeout {
            what: "connection and welcome frame",
            after: opts.connect_timeout,
        })?
}

async fn tcp_connect(
    host: &str,
    port: u16,
    local: Option<std::net::IpAddr>,
) -> std::io::Result<TcpStream> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(ip) = local {
            if ip.is_ipv4() != addr.is_ipv4() {
                continue;
            }
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        match socket.connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error
        .unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no usable address")))
}

impl Driver {
    pub(crate) fn new(
        opts: Arc<ConnectOptions>,
        requests: mpsc::Receiver<Request>,
        outlets: Outlets,
        id_prefix: String,
    ) -> Self {
        Self {
            opts,
            requests,
            outlets,
            channels: HashMap::new(),
            pending: HashMap::new(),
            outbox: VecDeque::new(),
            next_internal: 0,
            id_prefix,
        }
    }

    /// Runs the connection until the client is closed or gives up.
    pub(crate) async fn run(mut self, mut ws: Ws) {
        loop {
            match self.serve(&mut ws).await {
                Exit::Closed => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    break;
                }
                Exit::Stopped(reason) => {
                    self.on_disconnect();
                    self.emit(ClientEvent::Disconnected {
                        reason: reason.to_string(),
                    });
                    self.stop(reason);
                    break;
                }
                Exit::Lost(reason) => {
                    debug!(%reason, "connection lost");
                    self.on_disconnect();
                    self.emit(ClientEvent::Disconnected { reason });
                    if !self.opts.reconnect.enabled {
                        break;
                    }
                    match self.reconnect().await {
                        Ok(new_ws) => {
                            ws = new_ws;
                            self.resubscribe();
                        }
                        Err(Some(reason)) => {
                            self.stop(reason);
                            break;
                        }
                        Err(None) => break,
                    }
                }
            }
        }
        let stopped = lock(&self.outlets.stopped).clone();
        let error = || match &stopped {
            Some(reason) => ClientError::Stopped(reason.clone()),
            None => ClientError::Closed,
        };
        self.outlets.state.send_replace(ConnectionState::Closed);
        let reason = match &stopped {
            Some(reason) => reason.to_string(),
            None => "client closed".to_owned(),
        };
        for (_, state) in self.channels.drain() {
            let _ = state.tx.try_send(SubscriptionEvent::Removed {
                reason: reason.clone(),
            });
        }
        self.fail_pending(error);
        self.emit(ClientEvent::Closed);
        // Answer whatever is still queued so no caller waits for a timeout.
        self.requests.close();
        while let Ok(request) = self.requests.try_recv() {
            refuse(request, error);
        }
    }

    /// Records why the client stops for good and reports it.
    fn stop(&mut self, reason: StopReason) {
        warn!(%reason, "not reconnecting");
        *lock(&self.outlets.stopped) = Some(reason.clone());
        self.emit(ClientEvent::Stopped(reason));
    }

    async fn serve(&mut self, ws: &mut Ws) -> Exit {
        if let Err(e) = self.flush_outbox(ws).await {
            return Exit::Lost(e.to_string());
        }
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
                    Some(Ok(Message::Close(frame))) => {
                        return match frame {
                            Some(f) if u16::from(f.code) == close::REPLACED => {
                                Exit::Stopped(StopReason::Replaced {
                                    reason: f.reason.to_string(),
                                })
                            }
                            Some(f) if u16::from(f.code) == close::DISCONNECTED => {
                                Exit::Stopped(StopReason::DisconnectedByOperator {
                                    reason: f.reason.to_string(),
                                })
                            }
                            Some(f) => Exit::Lost(format!(
                                "closed by the server: {} {}",
                                u16::from(f.code),
                                f.reason
                            )),
                            None => Exit::Lost("closed by the server".to_owned()),
                        };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Exit::Lost(e.to_string()),
                    None => return Exit::Lost("connection closed".to_owned()),
                },
                request = self.requests.recv() => {
                    let Some(request) = request else { return Exit::Closed };
                    if self.on_request(request) {
                        return Exit::Closed;
                    }
                    for _ in 1..WRITE_BATCH {
                        match self.requests.try_recv() {
                            Ok(request) => {
                                if self.on_request(request) {
                                    return Exit::Closed;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                _ = sweep.tick() => self.sweep(),
            }
            if !self.outbox.is_empty()
                && let Err(e) = self.flush_outbox(ws).await
            {
                return Exit::Lost(e.to_string());
            }
        }
    }

    async fn flush_outbox(&mut self, ws: &mut Ws) -> Result<(), tungstenite::Error> {
        while let Some(frame) = self.outbox.pop_front() {
            ws.feed(Message::Text(frame.into())).await?;
        }
        ws.flush().await
    }

    /// Queues a request's frame; `true` when the client asked to close.
    fn on_request(&mut self, request: Request) -> bool {
        match request {
            Request::Close => return true,
            Request::Command { id, frame, reply } => {
                if reply.is_closed() {
                    return false;
                }
                self.outbox.push_back(frame);
                self.pending.insert(id, Pending::User(reply));
            }
            Request::Publish { id, frame, ack } => {
                self.outbox.push_back(frame);
                if let Some(reply) = ack {
                    self.pending.insert(id, Pending::User(reply));
                }
            }
            Request::Join {
                key,
                id,
                frame,
                presence,
                reply,
            } => {
                if reply.is_closed() {
                    return false;
                }
                let (tx, rx) = mpsc::channel(self.opts.subscription_capacity);
                // Registered now: a message routed right after the join may
                // arrive before the join's reply.
                let state = self.channels.entry(key.clone()).or_insert(ChannelState {
                    tx: tx.clone(),
                    confirmed: false,
                    position: Position::default(),
                    resync: None,
                    presence,
                    join_id: id.clone(),
                    missing: BTreeSet::new(),
                    refilling: false,
                    refill_again: None,
                });
                state.tx = tx;
                state.presence = presence;
                state.join_id.clone_from(&id);
                self.outbox.push_back(frame);
                self.pending.insert(id, Pending::Join { key, reply, rx });
            }
            Request::Leave {
                key,
                id,
                frame,
                reply,
            } => {
                self.outbox.push_back(frame);
                self.pending.insert(id, Pending::Leave { key, reply });
            }
            Request::Unsubscribe { key, join_id } => {
                if self.forget(&key, &join_id) {
                    let id = self.internal_id();
                    self.outbox
                        .push_back(command_frame(&id, "leave_channel", channel_args(&key)));
                    self.pending.insert(id, Pending::Ignore);
                }
            }
        }
        false
    }

    /// Forgets a channel whose subscription (joined by `join_id`) was
    /// dropped; `false` when a later join replaced that subscription.
    fn forget(&mut self, key: &ChannelKey, join_id: &str) -> bool {
        if self.channels.get(key).is_some_and(|s| s.join_id == join_id) {
            self.channels.remove(key);
            true
        } else {
            false
        }
    }

    /// Drops requests whose caller stopped waiting (timed out).
    fn sweep(&mut self) {
        self.pending.retain(|_, pending| match pending {
            Pending::User(reply) | Pending::Leave { reply, .. } => !reply.is_closed(),
            Pending::Join { reply, .. } => !reply.is_closed(),
            _ => true,
        });
    }

    async fn on_text(&mut self, text: &str) {
        let envelope: Envelope = match serde_json::from_str(text) {
            Ok(envelope) => envelope,
            Err(e) => {
                warn!(error = %e, "ignoring a frame that is not an envelope");
                return;
            }
        };
        let from_server = envelope.sender.as_deref() == Some(SERVER_SENDER);
        match envelope.kind {
            EnvelopeType::Response | EnvelopeType::Error if from_server => {
                let request_id = envelope.request_id.clone().flatten();
                match request_id.and_then(|id| self.pending.remove(&id)) {
                    Some(pending) => self.resolve(pending, envelope).await,
                    None if envelope.kind == EnvelopeType::Error => {
                        self.emit(ClientEvent::ServerError(Box::new(
                            ServerError::from_envelope(&envelope),
                        )));
                    }
                    None => {}
                }
            }
            EnvelopeType::System => self.on_system(envelope).await,
            EnvelopeType::Command => {}
            _ => match channel_of(&envelope) {
                Some(key) => self.on_channel_message(key, envelope).await,
                None => self.on_direct(envelope).await,
            },
        }
    }

    async fn on_direct(&mut self, envelope: Envelope) {
        if self.outlets.direct_taken.load(Ordering::Relaxed) {
            let _ = self
                .outlets
                .direct
                .send(DirectMessage::from_envelope(envelope))
                .await;
        }
    }

    async fn on_system(&mut self, envelope: Envelope) {
        let event = envelope
            .payload
            .as_ref()
            .and_then(|p| p.get("event"))
            .and_then(Value::as_str);
        if matches!(event, Some("join" | "leave"))
            && let Some(key) = channel_of(&envelope)
        {
            if let Some(state) = self.channels.get(&key)
                && let Some(presence) = PresenceEvent::from_envelope(key, &envelope)
            {
                let _ = state.tx.send(SubscriptionEvent::Presence(presence)).await;
            }
            return;
        }
        if event == Some("lagged") {
            self.on_lagged(&envelope).await;
        }
        let deleted = event == Some("channel_deleted");
        if deleted
            && let Some(key) = channel_of(&envelope)
            && let Some(state) = self.channels.remove(&key)
        {
            let reason = envelope
                .payload
                .as_ref()
                .and_then(|p| p.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("channel deleted")
                .to_owned();
            let _ = state.tx.send(SubscriptionEvent::Removed { reason }).await;
        }
        self.emit(ClientEvent::System(Box::new(envelope)));
    }

    /// A §16 notice: one [`SubscriptionEvent::Lagged`] per affected
    /// subscription.
    async fn on_lagged(&mut self, envelope: &Envelope) {
        let channels = envelope
            .payload
            .as_ref()
            .and_then(|p| p.get("channels"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for entry in channels {
            let room = entry.get("room").and_then(Value::as_str);
            let channel = entry.get("channel").and_then(Value::as_str);
            let Some(key) = room
                .zip(channel)
                .and_then(|(r, c)| ChannelKey::new(r, c).ok())
            else {
                continue;
            };
            let Some(state) = self.channels.get(&key) else {
                continue;
            };
            let report = LagReport {
                channel: key.clone(),
                dropped: entry.get("dropped").and_then(Value::as_u64).unwrap_or(0),
                first_dropped_seq: entry.get("first_dropped_seq").and_then(Value::as_u64),
            };
            let first = report.first_dropped_seq;
            let _ = state.tx.send(SubscriptionEvent::Lagged(report)).await;
            if self.opts.refill_on_lag
                && let Some(first) = first
            {
                self.start_refill(key, first);
            }
        }
    }

    /// Refill on lag: reads `history` from `first` (the first dropped seq)
    /// on, unless a read is in flight (then once it ends) or a reconnect's
    /// gap fill is running (it covers the same ground).
    fn start_refill(&mut self, key: ChannelKey, first: u64) {
        let Some(state) = self.channels.get_mut(&key) else {
            return;
        };
        if state.resync.is_some() {
            return;
        }
        if state.refilling {
            state.refill_again = Some(state.refill_again.map_or(first, |f| f.min(first)));
            return;
        }
        let from = state.missing.first().map_or(first, |&m| m.min(first));
        state.refilling = true;
        let after = from.saturating_sub(1);
        self.request_page(key, after, HISTORY_PAGE, true);
    }

    /// A page of refill history: delivers each seq not delivered yet (the
    /// ones live delivery skipped, and any past the last one seen), up to
    /// the channel's `last_seq` as the reply names it.
    async fn on_refill(&mut self, key: ChannelKey, history: Option<History>) {
        let Some(state) = self.channels.get_mut(&key) else {
            return;
        };
        let mut next = None;
        // What this refill read through (the channel's `last_seq` when the
        // server read it): skipped seqs up to it that are still missing are
        // no longer in history. An unusable reply gives up on all of them.
        let mut covered = state.position.last_seq;
        if let Some(history) = history
            && history.epoch == state.position.epoch
        {
            covered = history.last_seq;
            let mut page_max = None;
            for envelope in history.messages {
                let Some(seq) = envelope.seq else { continue };
                page_max = Some(seq);
                let fresh = seq > state.position.last_seq;
                if !fresh && !state.missing.remove(&seq) {
                    continue;
                }
                if fresh {
                    for lost in state.position.last_seq + 1..seq {
                        if state.missing.len() < MISSING_CAP {
                            state.missing.insert(lost);
                        }
                    }
                    state.position.last_seq = seq;
                }
                if !state.tx.is_closed() {
                    let message = ChannelMessage::from_envelope(key.clone(), envelope, true);
                    let _ = state.tx.send(SubscriptionEvent::Message(message)).await;
                }
            }
            // A truncated page (SPEC §5) is continued from its last seq.
            if let Some(max) = page_max
                && max < history.last_seq
            {
                next = Some(max);
            }
        }
        if let Some(after) = next {
            self.request_page(key, after, HISTORY_PAGE, true);
            return;
        }
        state.refilling = false;
        // What history no longer holds cannot come back; seqs skipped past
        // `covered` (live delivery went on meanwhile) get another read.
        state.missing = state.missing.split_off(&(covered + 1));
        let again = match (state.refill_again.take(), state.missing.first()) {
            (Some(first), Some(&m)) => Some(first.min(m)),
            (again, missing) => again.or(missing.copied()),
        };
        if let Some(first) = again {
            self.start_refill(key, first);
        }
    }

    async fn on_channel_message(&mut self, key: ChannelKey, envelope: Envelope) {
        let Some(state) = self.channels.get_mut(&key) else {
            return;
        };
        if let Some(resync) = &mut state.resync {
            resync.buffer(envelope);
            return;
        }
        deliver_live(state, key, envelope, self.opts.refill_on_lag).await;
    }

    async fn resolve(&mut self, pending: Pending, envelope: Envelope) {
        let failed = envelope.kind == EnvelopeType::Error;
        match pending {
            Pending::User(reply) => {
                let _ = reply.send(Ok(envelope));
            }
            Pending::Ignore => {}
            Pending::Refill { key } => {
                let history = if failed {
                    None
                } else {
                    parse_payload::<History>(&envelope).ok()
                };
                self.on_refill(key, history).await;
            }
            Pending::Leave { key, reply } => {
                if !failed && let Some(state) = self.channels.remove(&key) {
                    let _ = state.tx.try_send(SubscriptionEvent::Removed {
                        reason: "left the channel".to_owned(),
                    });
                }
                let _ = reply.send(Ok(envelope));
            }
            Pending::Join { key, reply, rx } => {
                let joined = if failed {
                    Err(ServerError::from_envelope(&envelope).into())
                } else {
                    parse_payload::<Joined>(&envelope)
                };
                match joined {
                    Ok(joined) => {
                        let recovery = recovery_of(&envelope);
                        let _ = reply.send(Ok((joined.clone(), rx)));
                        if let Some(state) = self.channels.get_mut(&key) {
                            state.confirmed = true;
                            if recovery.recovered == Some(true) {
                                // Asked for with `JoinOptions::recover`:
                                // the missed messages come first.
                                state.position.epoch.clone_from(&joined.epoch);
                                let recovered = state.position.unseen(recovery.publications);
                                deliver_replayed(state, &key, recovered).await;
                            }
                            if state.position.epoch.is_none()
                                || state.position.epoch != joined.epoch
                            {
                                state.position.epoch.clone_from(&joined.epoch);
                                state.position.last_seq = joined.seq;
                            } else {
                                state.position.last_seq = state.position.last_seq.max(joined.seq);
                            }
                        }
                    }
                    Err(err) => {
                        if self.channels.get(&key).is_some_and(|s| !s.confirmed) {
                            self.channels.remove(&key);
                        }
                        let _ = reply.send(Err(err));
                    }
                }
            }
            Pending::Rejoin { key } => {
                if failed {
                    let err = ServerError::from_envelope(&envelope);
                    if let Some(state) = self.channels.remove(&key) {
                        let _ = state
                            .tx
                            .send(SubscriptionEvent::Removed {
                                reason: format!(
                                    "re-joining after a reconnect failed: {} {}",
                                    err.error_code, err.message
                                ),
                            })
                            .await;
                    }
                    return;
                }
                match parse_payload::<Joined>(&envelope) {
                    Ok(joined) => {
                        let recovery = recovery_of(&envelope);
                        self.on_rejoined(key, joined, recovery).await;
                    }
                    Err(e) => {
                        warn!(error = %e, channel = %key, "unreadable join reply");
                        self.finish_resync(key, false).await;
                    }
                }
            }
            Pending::History { key } => {
                let history = if failed {
                    let err = ServerError::from_envelope(&envelope);
                    debug!(code = %err.error_code, channel = %key, "history unavailable; gap not filled");
                    None
                } else {
                    parse_payload::<History>(&envelope).ok()
                };
                match history {
                    Some(history) => self.on_history(key, history).await,
                    None => self.finish_resync(key, false).await,
                }
            }
        }
    }

    async fn on_rejoined(&mut self, key: ChannelKey, joined: Joined, recovery: Recovery) {
        let Some(state) = self.channels.get_mut(&key) else {
            return;
        };
        let Some(resync) = &mut state.resync else {
            return;
        };
        let (recovered, next) = resync.on_rejoined(&mut state.position, &joined, recovery);
        deliver_replayed(state, &key, recovered).await;
        self.resync_next(key, next).await;
    }

    /// Does what the gap fill asks next.
    async fn resync_next(&mut self, key: ChannelKey, next: Next) {
        match next {
            Next::ReadHistory { after_seq, wanted } => self.request_history(key, after_seq, wanted),
            Next::Finish { filled } => self.finish_resync(key, filled).await,
        }
    }

    fn request_history(&mut self, key: ChannelKey, after_seq: u64, wanted: u64) {
        self.request_page(key, after_seq, wanted, false);
    }

    /// Asks for `history after_seq`, for a gap fill or (`refill`) a refill.
    fn request_page(&mut self, key: ChannelKey, after_seq: u64, wanted: u64, refill: bool) {
        let mut args = Map::new();
        args.insert("room".into(), key.room().into());
        args.insert("channel".into(), key.channel().into());
        args.insert("after_seq".into(), after_seq.into());
        args.insert("limit".into(), wanted.clamp(1, HISTORY_PAGE).into());
        let id = self.internal_id();
        self.outbox.push_back(command_frame(&id, "history", args));
        let pending = if refill {
            Pending::Refill { key }
        } else {
            Pending::History { key }
        };
        self.pending.insert(id, pending);
    }

    async fn on_history(&mut self, key: ChannelKey, history: History) {
        let Some(state) = self.channels.get_mut(&key) else {
            return;
        };
        let Some(resync) = &mut state.resync else {
            return;
        };
        let (filling, next) = resync.on_history(&mut state.position, history);
        deliver_replayed(state, &key, filling).await;
        self.resync_next(key, next).await;
    }

    async fn finish_resync(&mut self, key: ChannelKey, filled: bool) {
        let Some(state) = self.channels.get_mut(&key) else {
            return;
        };
        let Some(resync) = state.resync.take() else {
            return;
        };
        let (report, buffered) = resync.finish(&key, &mut state.position, filled);
        if !state.tx.is_closed() {
            let _ = state.tx.send(SubscriptionEvent::Gap(report.clone())).await;
        }
        for envelope in buffered {
            deliver_live(state, key.clone(), envelope, self.opts.refill_on_lag).await;
        }
        self.emit(ClientEvent::Gap(report));
    }

    /// Fails what was in flight; keeps channel positions for the re-join.
    fn on_disconnect(&mut self) {
        self.outbox.clear();
        self.fail_pending(|| ClientError::Disconnected);
        self.channels.retain(|_, state| state.confirmed);
        for state in self.channels.values_mut() {
            // An interrupted gap fill starts over from what was delivered;
            // the re-join's recovery supersedes a refill.
            state.resync = None;
            state.refilling = false;
            state.refill_again = None;
            state.missing.clear();
        }
    }

    fn fail_pending(&mut self, error: impl Fn() -> ClientError) {
        for (_, pending) in self.pending.drain() {
            match pending {
                Pending::User(reply) | Pending::Leave { reply, .. } => {
                    let _ = reply.send(Err(error()));
                }
                Pending::Join { reply, .. } => {
                    let _ = reply.send(Err(error()));
                }
                _ => {}
            }
        }
    }

    /// The identity to present on the next connection.
    fn identity(&self) -> Identity {
        lock(&self.outlets.identity).clone()
    }

    /// Reconnects with backoff. `Err(None)`: closed or out of attempts;
    /// `Err(Some(_))`: a permanent refusal.
    async fn reconnect(&mut self) -> Result<Ws, Option<StopReason>> {
        let policy = self.opts.reconnect;
        let mut attempt = 0u32;
        loop {
            if policy.max_attempts.is_some_and(|max| attempt >= max) {
                return Err(None);
            }
            self.outlets
                .state
                .send_replace(ConnectionState::Reconnecting { attempt });
            let sleep = tokio::time::sleep(policy.delay(attempt));
            tokio::pin!(sleep);
            let identity = self.identity();
            let opts = self.opts.clone();
            let opening = async {
                (&mut sleep).await;
                open(&opts, &identity).await
            };
            tokio::pin!(opening);
            let opened = loop {
                tokio::select! {
                    opened = &mut opening => break opened,
                    request = self.requests.recv() => match request {
                        None | Some(Request::Close) => return Err(None),
                        Some(Request::Unsubscribe { key, join_id }) => {
                            // Not re-joined, so nothing to leave.
                            self.forget(&key, &join_id);
                        }
                        Some(request) => refuse(request, || ClientError::NotConnected),
                    },
                }
            };
            attempt += 1;
            match opened {
                Ok((ws, welcome)) => {
                    self.outlets
                        .state
                        .send_replace(ConnectionState::Connected(welcome.clone()));
                    self.emit(ClientEvent::Reconnected {
                        welcome,
                        attempts: attempt,
                    });
                    return Ok(ws);
                }
                Err(e) => {
                    if let Some(reason) = StopReason::from_refusal(&e) {
                        return Err(Some(reason));
                    }
                    debug!(error = %e, attempt, "reconnect attempt failed");
                }
            }
        }
    }

    /// Re-joins every confirmed channel; live messages are buffered until
    /// its gap is settled.
    fn resubscribe(&mut self) {
        let keys: Vec<ChannelKey> = self.channels.keys().cloned().collect();
        for key in keys {
            let Some(state) = self.channels.get_mut(&key) else {
                continue;
            };
            state.resync = Some(Resync::start(&state.position));
            let mut args = channel_args(&key);
            if let Some(epoch) = &state.position.epoch {
                let mut recover = Map::new();
                recover.insert("seq".into(), state.position.last_seq.into());
                recover.insert("epoch".into(), epoch.clone().into());
                args.insert("recover".into(), Value::Object(recover));
            }
            if state.presence {
                args.insert("presence".into(), true.into());
            }
            let id = self.internal_id();
            self.outbox
                .push_back(command_frame(&id, "join_channel", args));
            self.pending.insert(id, Pending::Rejoin { key });
        }
    }

    fn internal_id(&mut self) -> String {
        self.next_internal += 1;
        format!("arq_{}_i{}", self.id_prefix, self.next_internal)
    }

    fn emit(&self, event: ClientEvent) {
        if self.outlets.events_taken.load(Ordering::Relaxed) {
            let _ = self.outlets.events.try_send(event);
        }
    }
}

/// Delivers a live channel message, dropping one already delivered.
async fn deliver_live(state: &mut ChannelState, key: ChannelKey, envelope: Envelope, track: bool) {
    if let Some(seq) = envelope.seq {
        if envelope.epoch == state.position.epoch {
            if seq <= state.position.last_seq {
                return;
            }
            if track && state.position.last_seq > 0 {
                // What the server dropped in between, to refill on lag.
                for lost in state.position.last_seq + 1..seq {
                    if state.missing.len() >= MISSING_CAP {
                        break;
                    }
                    state.missing.insert(lost);
                }
            }
        } else if envelope.epoch.is_some() {
            state.position.epoch.clone_from(&envelope.epoch);
        }
        state.position.last_seq = seq;
    }
    if state.tx.is_closed() {
        return;
    }
    let message = ChannelMessage::from_envelope(key, envelope, false);
    let _ = state.tx.send(SubscriptionEvent::Message(message)).await;
}

/// Delivers messages fetched to fill a gap (marked `replayed`).
async fn deliver_replayed(state: &ChannelState, key: &ChannelKey, messages: Vec<Envelope>) {
    for envelope in messages {
        if state.tx.is_closed() {
            return;
        }
        let message = ChannelMessage::from_envelope(key.clone(), envelope, true);
        let _ = state.tx.send(SubscriptionEvent::Message(message)).await;
    }
}

/// The §14 fields of a `join_channel` reply (absent from older servers).
fn recovery_of(envelope: &Envelope) -> Recovery {
    envelope
        .payload
        .as_ref()
        .and_then(|p| serde_json::from_value(p.clone()).ok())
        .unwrap_or_default()
}

pub(crate) fn channel_args(key: &ChannelKey) -> Map<String, Value> {
    let mut args = Map::new();
    args.insert("room".into(), key.room().into());
    args.insert("channel".into(), key.channel().into());
    args
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn refuse(request: Request, error: impl Fn() -> ClientError) {
    match request {
        Request::Command { reply, .. } | Request::Leave { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
        Request::Join { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
        Request::Publish {
            ack: Some(reply), ..
        } => {
            let _ = reply.send(Err(error()));
        }
        Request::Publish { ack: None, .. } | Request::Close | Request::Unsubscribe { .. } => {}
    }
}

fn channel_of(envelope: &Envelope) -> Option<ChannelKey> {
    let room = envelope.room.as_deref()?;
    let channel = envelope.channel.as_deref()?;
    ChannelKey::new(room, channel).ok()
}

pub(crate) fn parse_payload<T: serde::de::DeserializeOwned>(
    envelope: &Envelope,
) -> Result<T, ClientError> {
    let payload = envelope.payload.clone().unwrap_or(Value::Null);
    serde_json::from_value(payload).map_err(|e| {
        ClientError::protocol(format!(
            "{} reply: {e}",
            envelope.command.as_deref().unwrap_or("response")
        ))
    })
}

/// A `command` envelope's JSON text.
pub(crate) fn command_frame(id: &str, command: &str, args: Map<String, Value>) -> String {
    let mut envelope = Envelope::<Value>::new(EnvelopeType::Command);
    envelope.id = id.to_owned();
    envelope.command = Some(command.to_owned());
    envelope.args = Some(args);
    String::from_utf8(envelope.to_json()).expect("serde_json writes UTF-8")
}

/// A `message` envelope's JSON text.
pub(crate) fn message_frame(
    id: &str,
    target: Target<'_>,
    payload: Value,
    metadata: Option<Value>,
    ack: bool,
) -> String {
    let mut envelope = Envelope::<Value>::new(EnvelopeType::Message);
    envelope.id = id.to_owned();
    match target {
        Target::Channel(key) => {
            envelope.room = Some(key.room().to_owned());
            envelope.channel = Some(key.channel().to_owned());
        }
        Target::Direct(to) => envelope.to_client = Some(to.to_owned()),
    }
    envelope.payload = Some(payload);
    envelope.metadata = metadata;
    if ack {
        envelope.ack = Some(true);
    }
    String::from_utf8(envelope.to_json()).expect("serde_json writes UTF-8")
}

pub(crate) enum Target<'a> {
    Channel(&'a ChannelKey),
    Direct(&'a str),
}
