//! The [`Client`] handle: typed commands, publishing, subscriptions.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arqon_protocol::{ChannelKey, ClientId, Envelope, EnvelopeType, MessageId};
use futures_util::Stream;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::driver::{
    self, ConnectionState, Driver, Outlets, Request, Target, channel_args, command_frame, lock,
    message_frame, parse_payload,
};
use crate::error::{ClientError, ServerError, StopReason};
use crate::options::{ConnectOptions, Identity};
use crate::types::{
    Ack, ChannelInfo, ChannelList, ChannelRecord, ClientEvent, ClientRecord, Deleted,
    DirectMessage, History, HistoryQuery, JoinOptions, Joined, Left, Pong, Status,
    SubscriptionEvent, Welcome,
};

/// Capacity of the connection-event queue.
const EVENT_CAPACITY: usize = 256;

/// A connection to an ArqonBus server. Cheap to clone: every clone talks
/// through the same connection task, which ends when the last clone is
/// dropped or [`close`](Client::close) is called.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// The request timeout of this handle (see [`Client::with_timeout`]).
    timeout: Duration,
}

struct Inner {
    requests: mpsc::Sender<Request>,
    opts: Arc<ConnectOptions>,
    state: watch::Receiver<ConnectionState>,
    id_prefix: String,
    next_id: AtomicU64,
    direct: Mutex<Option<mpsc::Receiver<DirectMessage>>>,
    direct_taken: Arc<AtomicBool>,
    events: Mutex<Option<mpsc::Receiver<ClientEvent>>>,
    events_taken: Arc<AtomicBool>,
    identity: Arc<Mutex<Identity>>,
    stopped: Arc<Mutex<Option<StopReason>>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.opts.url())
            .field("state", &*self.inner.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects, reads the welcome frame, and starts the connection task.
    /// By default the first connection is not retried: an error here is
    /// returned as is, and reconnection applies to connections that drop
    /// later. With [`ConnectOptions::retry_first_connect`] it is retried
    /// with the [`ReconnectPolicy`](crate::ReconnectPolicy)'s backoff (up
    /// to its `max_attempts`, then the last error is returned), except
    /// after a permanent refusal (HTTP 400, 401, 403).
    ///
    /// For a `wss://` URL the TLS configuration is built here, once (see
    /// [`ConnectOptions`]'s TLS section), and reused by every reconnect.
    pub async fn connect(opts: ConnectOptions) -> Result<Self, ClientError> {
        let opts = opts.resolve_tls()?;
        let (ws, welcome) = first_connection(&opts).await?;
        let identity = Arc::new(Mutex::new(opts.identity.clone()));
        let stopped = Arc::new(Mutex::new(None));
        let opts = Arc::new(opts);
        let timeout = opts.request_timeout;
        let (requests_tx, requests_rx) = mpsc::channel(opts.queue_capacity);
        let (direct_tx, direct_rx) = mpsc::channel(opts.subscription_capacity);
        let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connected(welcome));
        let direct_taken = Arc::new(AtomicBool::new(false));
        let events_taken = Arc::new(AtomicBool::new(false));
        let id_prefix = format!("{:08x}", rand::random::<u32>());
        let outlets = Outlets {
            direct: direct_tx,
            direct_taken: direct_taken.clone(),
            events: events_tx,
            events_taken: events_taken.clone(),
            state: state_tx,
            identity: identity.clone(),
            stopped: stopped.clone(),
        };
        let driver = Driver::new(opts.clone(), requests_rx, outlets, id_prefix.clone());
        tokio::spawn(driver.run(ws));
        Ok(Self {
            inner: Arc::new(Inner {
                requests: requests_tx,
                opts,
                state: state_rx,
                id_prefix,
                next_id: AtomicU64::new(0),
                direct: Mutex::new(Some(direct_rx)),
                direct_taken,
                events: Mutex::new(Some(events_rx)),
                events_taken,
                identity,
                stopped,
            }),
            timeout,
        })
    }

    /// A handle on the same connection whose calls wait at most `timeout`
    /// for their reply (instead of [`ConnectOptions::request_timeout`]).
    /// Cheap; use it for one call or keep it:
    ///
    /// ```no_run
    /// # async fn run(client: arqon_client::Client) -> Result<(), arqon_client::ClientError> {
    /// use std::time::Duration;
    ///
    /// let status = client.with_timeout(Duration::from_millis(200)).status().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            inner: self.inner.clone(),
            timeout,
        }
    }

    /// The request timeout of this handle.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Why the client stopped for good, once it has (see
    /// [`ClientError::Stopped`]).
    pub fn stop_reason(&self) -> Option<StopReason> {
        lock(&self.inner.stopped).clone()
    }

    /// Where the connection stands now.
    pub fn state(&self) -> ConnectionState {
        self.inner.state.borrow().clone()
    }

    /// A receiver that sees every change of [`state`](Self::state).
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.clone()
    }

    /// The current connection's welcome frame, if connected.
    pub fn welcome(&self) -> Option<Welcome> {
        match &*self.inner.state.borrow() {
            ConnectionState::Connected(welcome) => Some(welcome.clone()),
            _ => None,
        }
    }

    /// The `client_id` the server assigned to the current connection.
    pub fn client_id(&self) -> Option<ClientId> {
        self.welcome().map(|w| w.client_id)
    }

    /// The stream of direct messages (SPEC §4.2). It can be taken once;
    /// until it is, direct messages are discarded.
    pub fn direct_messages(&self) -> Option<DirectMessages> {
        let rx = lock(&self.inner.direct).take()?;
        self.inner.direct_taken.store(true, Ordering::Relaxed);
        Some(DirectMessages { rx })
    }

    /// Connection events (disconnects, reconnects, gap reports, errors
    /// that answer no request). It can be taken once; until it is, events
    /// are discarded, and when its queue is full new events are dropped.
    pub fn events(&self) -> Option<mpsc::Receiver<ClientEvent>> {
        let rx = lock(&self.inner.events).take()?;
        self.inner.events_taken.store(true, Ordering::Relaxed);
        Some(rx)
    }

    /// Closes the connection (close frame 1000) and ends the connection
    /// task; subscriptions end and later calls fail with
    /// [`ClientError::Closed`].
    pub async fn close(&self) {
        let _ = self.inner.requests.send(Request::Close).await;
        let mut state = self.inner.state.clone();
        let _ = tokio::time::timeout(
            self.timeout,
            state.wait_for(|s| *s == ConnectionState::Closed),
        )
        .await;
    }

    // ---- commands (SPEC §5) ----

    /// `ping`.
    pub async fn ping(&self) -> Result<Pong, ClientError> {
        self.typed("ping", Map::new()).await
    }

    /// `status`.
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.typed("status", Map::new()).await
    }

    /// `identify`: updates what the server knows about this client. The
    /// fields it sets are remembered and sent as query parameters on every
    /// reconnect (on top of those of [`ConnectOptions`]).
    pub async fn identify(&self, identity: &Identity) -> Result<ClientRecord, ClientError> {
        identity.validate()?;
        let args = match serde_json::to_value(identity) {
            Ok(Value::Object(args)) => args,
            _ => Map::new(),
        };
        let record = self.typed("identify", args).await?;
        lock(&self.inner.identity).merge(identity);
        Ok(record)
    }

    /// `join_channel`, returning the channel's [`Subscription`]. Joining a
    /// channel again replaces its previous subscription (which ends).
    /// Dropping a subscription leaves the channel (a `leave_channel` sent
    /// in the background), unless a later join replaced it.
    pub async fn join_channel(
        &self,
        room: &str,
        channel: &str,
    ) -> Result<Subscription, ClientError> {
        self.join_channel_with(room, channel, JoinOptions::default())
            .await
    }

    /// `join_channel` with [`JoinOptions`]: `presence` (SPEC §15:
    /// [`SubscriptionEvent::Presence`] events, kept across reconnects) and
    /// `recover` (SPEC §14: when the server recovers the messages after
    /// the given position they come first on the subscription, marked
    /// `replayed`; [`Joined::recovered`] says whether it did).
    pub async fn join_channel_with(
        &self,
        room: &str,
        channel: &str,
        options: JoinOptions,
    ) -> Result<Subscription, ClientError> {
        let key = ChannelKey::new(room, channel)?;
        let id = self.next_id();
        let mut args = channel_args(&key);
        if options.presence {
            args.insert("presence".into(), true.into());
        }
        if let Some(recover) = &options.recover {
            let mut from = Map::new();
            from.insert("seq".into(), recover.seq.into());
            from.insert("epoch".into(), recover.epoch.clone().into());
            args.insert("recover".into(), Value::Object(from));
        }
        let frame = command_frame(&id, "join_channel", args);
        let (tx, rx) = oneshot::channel();
        let deadline = self.deadline();
        self.enqueue(
            Request::Join {
                key: key.clone(),
                id: id.clone(),
                frame,
                presence: options.presence,
                reply: tx,
            },
            deadline,
        )
        .await?;
        let (joined, events) = self.wait(rx, deadline, "join_channel reply").await??;
        Ok(Subscription {
            channel: key,
            joined,
            rx: events,
            leave: Some((self.inner.requests.downgrade(), id)),
        })
    }

    /// `leave_channel`; the channel's subscription ends.
    pub async fn leave_channel(&self, room: &str, channel: &str) -> Result<Left, ClientError> {
        let key = ChannelKey::new(room, channel)?;
        let id = self.next_id();
        let frame = command_frame(&id, "leave_channel", channel_args(&key));
        let (tx, rx) = oneshot::channel();
        let deadline = self.deadline();
        self.enqueue(
            Request::Leave {
                key,
                id,
                frame,
                reply: tx,
            },
            deadline,
        )
        .await?;
        let envelope = self.wait(rx, deadline, "leave_channel reply").await??;
        success(&envelope)?;
        parse_payload(&envelope)
    }

    /// `list_channels`, of one room or of all.
    pub async fn list_channels(&self, room: Option<&str>) -> Result<ChannelList, ClientError> {
        let mut args = Map::new();
        if let Some(room) = room {
            args.insert("room".into(), room.into());
        }
        self.typed("list_channels", args).await
    }

    /// `channel_info`.
    pub async fn channel_info(
        &self,
        room: &str,
        channel: &str,
    ) -> Result<ChannelInfo, ClientError> {
        let key = ChannelKey::new(room, channel)?;
        self.typed("channel_info", channel_args(&key)).await
    }

    /// `create_channel` (admin).
    pub async fn create_channel(
        &self,
        room: &str,
        channel: &str,
        description: Option<&str>,
        metadata: Option<Map<String, Value>>,
    ) -> Result<ChannelRecord, ClientError> {
        let key = ChannelKey::new(room, channel)?;
        let mut args = channel_args(&key);
        if let Some(description) = description {
            args.insert("description".into(), description.into());
        }
        if let Some(metadata) = metadata {
            args.insert("metadata".into(), Value::Object(metadata));
        }
        self.typed("create_channel", args).await
    }

    /// `delete_channel` (admin); with `force`, members are removed.
    pub async fn delete_channel(
        &self,
        room: &str,
        channel: &str,
        force: bool,
    ) -> Result<Deleted, ClientError> {
        let key = ChannelKey::new(room, channel)?;
        let mut args = channel_args(&key);
        if force {
            args.insert("force".into(), true.into());
        }
        self.typed("delete_channel", args).await
    }

    /// `history` of a channel.
    pub async fn history(
        &self,
        room: &str,
        channel: &str,
        query: &HistoryQuery,
    ) -> Result<History, ClientError> {
        let key = ChannelKey::new(room, channel)?;
        let mut args = channel_args(&key);
        query.to_args(&mut args);
        self.typed("history", args).await
    }

    /// Any command by name, for commands this crate does not type; returns
    /// the reply's payload.
    pub async fn command(
        &self,
        name: &str,
        args: Map<String, Value>,
    ) -> Result<Value, ClientError> {
        let envelope = self.call(name, args).await?;
        success(&envelope)?;
        Ok(envelope.payload.unwrap_or(Value::Null))
    }

    // ---- messages (SPEC §4) ----

    /// Publishes `payload` (a JSON object) to a joined channel, without
    /// waiting: an error the server sends back arrives as
    /// [`ClientEvent::ServerError`]. Returns the envelope id.
    pub async fn publish(
        &self,
        room: &str,
        channel: &str,
        payload: impl Serialize,
    ) -> Result<MessageId, ClientError> {
        let key = ChannelKey::new(room, channel)?;
        self.send_message(Target::Channel(&key), payload, None)
            .await
    }

    /// Publishes and waits for the acknowledgement (SPEC §4.3).
    pub async fn publish_with_ack(
        &self,
        room: &str,
        channel: &str,
        payload: impl Serialize,
    ) -> Result<Ack, ClientError> {
        let key = ChannelKey::new(room, channel)?;
        self.send_acked(Target::Channel(&key), payload, None).await
    }

    /// Publishes with `metadata` (relayed unchanged; `{"echo": true}` asks
    /// for the message back), optionally acknowledged.
    pub async fn publish_with_metadata(
        &self,
        room: &str,
        channel: &str,
        payload: impl Serialize,
        metadata: Map<String, Value>,
    ) -> Result<Ack, ClientError> {
        let key = ChannelKey::new(room, channel)?;
        self.send_acked(
            Target::Channel(&key),
            payload,
            Some(Value::Object(metadata)),
        )
        .await
    }

    /// Sends `payload` to one client (SPEC §4.2), without waiting.
    pub async fn send_direct(
        &self,
        to: &str,
        payload: impl Serialize,
    ) -> Result<MessageId, ClientError> {
        let to = ClientId::new(to)?;
        self.send_message(Target::Direct(to.as_str()), payload, None)
            .await
    }

    /// Sends `payload` to one client and waits for the acknowledgement
    /// (`TARGET_NOT_FOUND` when it is not connected).
    pub async fn send_direct_with_ack(
        &self,
        to: &str,
        payload: impl Serialize,
    ) -> Result<Ack, ClientError> {
        let to = ClientId::new(to)?;
        self.send_acked(Target::Direct(to.as_str()), payload, None)
            .await
    }

    // ---- plumbing ----

    async fn send_message(
        &self,
        target: Target<'_>,
        payload: impl Serialize,
        metadata: Option<Value>,
    ) -> Result<MessageId, ClientError> {
        let payload = object(payload)?;
        if !matches!(*self.inner.state.borrow(), ConnectionState::Connected(_)) {
            return Err(self.not_connected());
        }
        let id = self.next_id();
        let frame = message_frame(&id, target, payload, metadata, false);
        let message_id = MessageId::new(&id)?;
        self.enqueue(
            Request::Publish {
                id,
                frame,
                ack: None,
            },
            self.deadline(),
        )
        .await?;
        Ok(message_id)
    }

    async fn send_acked(
        &self,
        target: Target<'_>,
        payload: impl Serialize,
        metadata: Option<Value>,
    ) -> Result<Ack, ClientError> {
        let payload = object(payload)?;
        let id = self.next_id();
        let frame = message_frame(&id, target, payload, metadata, true);
        let (tx, rx) = oneshot::channel();
        let deadline = self.deadline();
        self.enqueue(
            Request::Publish {
                id,
                frame,
                ack: Some(tx),
            },
            deadline,
        )
        .await?;
        let envelope = self.wait(rx, deadline, "acknowledgement").await??;
        success(&envelope)?;
        parse_payload(&envelope)
    }

    async fn typed<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        args: Map<String, Value>,
    ) -> Result<T, ClientError> {
        let envelope = self.call(name, args).await?;
        success(&envelope)?;
        parse_payload(&envelope)
    }

    /// Sends a command and returns its reply envelope (success or error).
    async fn call(&self, name: &str, args: Map<String, Value>) -> Result<Envelope, ClientError> {
        let id = self.next_id();
        let frame = command_frame(&id, name, args);
        let (tx, rx) = oneshot::channel();
        let deadline = self.deadline();
        self.enqueue(
            Request::Command {
                id,
                frame,
                reply: tx,
            },
            deadline,
        )
        .await?;
        self.wait(rx, deadline, "command reply").await?
    }

    async fn enqueue(&self, request: Request, deadline: Instant) -> Result<(), ClientError> {
        match tokio::time::timeout_at(deadline, self.inner.requests.send(request)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.closed()),
            Err(_) => Err(ClientError::Timeout {
                what: "room in the send queue",
                after: self.timeout,
            }),
        }
    }

    async fn wait<T>(
        &self,
        rx: oneshot::Receiver<T>,
        deadline: Instant,
        what: &'static str,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(self.closed()),
            Err(_) => Err(ClientError::Timeout {
                what,
                after: self.timeout,
            }),
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// [`ClientError::Stopped`] when the client stopped for good, else
    /// [`ClientError::Closed`].
    fn closed(&self) -> ClientError {
        match self.stop_reason() {
            Some(reason) => ClientError::Stopped(reason),
            None => ClientError::Closed,
        }
    }

    fn next_id(&self) -> String {
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        format!("arq_{}_{n}", self.inner.id_prefix)
    }

    fn not_connected(&self) -> ClientError {
        match *self.inner.state.borrow() {
            ConnectionState::Closed => self.closed(),
            _ => ClientError::NotConnected,
        }
    }
}

/// The first connection, retried when the options say so.
async fn first_connection(opts: &ConnectOptions) -> Result<(driver::Ws, Welcome), ClientError> {
    let policy = opts.reconnect;
    let mut attempt = 0u32;
    loop {
        match driver::open(opts, &opts.identity).await {
            Ok(opened) => return Ok(opened),
            Err(e) => {
                attempt += 1;
                let permanent = StopReason::from_refusal(&e).is_some()
                    || matches!(
                        e,
                        ClientError::InvalidUrl { .. }
                            | ClientError::InvalidOption { .. }
                            | ClientError::Tls { .. }
                    );
                if !opts.retry_first_connect
                    || permanent
                    || policy.max_attempts.is_some_and(|max| attempt >= max)
                {
                    return Err(e);
                }
                tracing::debug!(error = %e, attempt, "first connection failed; retrying");
                tokio::time::sleep(policy.delay(attempt - 1)).await;
            }
        }
    }
}

fn object(payload: impl Serialize) -> Result<Value, ClientError> {
    match serde_json::to_value(payload) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(ClientError::PayloadNotObject),
    }
}

/// `Err` with the server's error when `envelope` is an `error`.
fn success(envelope: &Envelope) -> Result<(), ClientError> {
    if envelope.kind == EnvelopeType::Error {
        return Err(ServerError::from_envelope(envelope).into());
    }
    Ok(())
}

/// The messages of one joined channel, in `seq` order, with a
/// [`SubscriptionEvent::Gap`] after each reconnect. Ends (`None`) when the
/// channel is left or deleted, or the client is closed.
///
/// Dropping it leaves the channel: a `leave_channel` is sent in the
/// background (nothing is sent if the channel was left already, or if a
/// later [`join_channel`](Client::join_channel) of the same channel
/// replaced this subscription).
#[derive(Debug)]
pub struct Subscription {
    channel: ChannelKey,
    joined: Joined,
    rx: mpsc::Receiver<SubscriptionEvent>,
    /// The connection task (weakly: a subscription does not keep it
    /// alive) and the id of the join, to leave on drop.
    leave: Option<(mpsc::WeakSender<Request>, String)>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some((requests, join_id)) = self.leave.take()
            && let Some(requests) = requests.upgrade()
        {
            // Never waits: with the queue full the channel stays joined
            // (its messages are discarded) until the client closes.
            let _ = requests.try_send(Request::Unsubscribe {
                key: self.channel.clone(),
                join_id,
            });
        }
    }
}

impl Subscription {
    pub fn channel(&self) -> &ChannelKey {
        &self.channel
    }

    /// The `join_channel` reply (`seq` = where live messages start).
    pub fn joined(&self) -> &Joined {
        &self.joined
    }

    /// The next event.
    ///
    /// # Cancel safety
    /// Cancel safe: an event is never lost if the future is dropped.
    pub async fn recv(&mut self) -> Option<SubscriptionEvent> {
        self.rx.recv().await
    }

    /// The next message, skipping gap reports, presence and lag events.
    ///
    /// # Cancel safety
    /// Cancel safe, like [`recv`](Self::recv).
    pub async fn next_message(&mut self) -> Option<crate::ChannelMessage> {
        loop {
            match self.rx.recv().await? {
                SubscriptionEvent::Message(message) => return Some(message),
                SubscriptionEvent::Removed { .. } => return None,
                _ => {}
            }
        }
    }
}

impl Stream for Subscription {
    type Item = SubscriptionEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Direct messages to this client, from [`Client::direct_messages`].
#[derive(Debug)]
pub struct DirectMessages {
    rx: mpsc::Receiver<DirectMessage>,
}

impl DirectMessages {
    /// The next direct message; `None` once the client is closed.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<DirectMessage> {
        self.rx.recv().await
    }
}

impl Stream for DirectMessages {
    type Item = DirectMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
