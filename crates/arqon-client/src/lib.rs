//! An async Rust client for ArqonBus (tokio + tokio-tungstenite), speaking
//! the protocol of `docs/protocol.md` with the envelope types of
//! [`arqon_protocol`].
//!
//! - [`Client::connect`] takes [`ConnectOptions`]: the URL, the identity
//!   query parameters (`client_type`, `screen_name`, `avatar`,
//!   `personality`), a token (sent as `Authorization: Bearer`), the
//!   request timeout and the [`ReconnectPolicy`].
//! - Every command of SPEC §5 is a typed `async fn` ([`Client::ping`],
//!   [`Client::status`], [`Client::join_channel`], [`Client::history`]…);
//!   replies are matched to requests by envelope `id`, and each call fails
//!   with [`ClientError::Timeout`] when no reply comes in time. A server
//!   `error` becomes [`ClientError::Server`], whose
//!   [`code`](ClientError::code) is the wire [`ErrorCode`].
//! - [`Client::publish`] / [`Client::publish_with_ack`] (→ [`Ack`]) and
//!   [`Client::send_direct`]; each joined channel is a [`Subscription`]
//!   stream of [`ChannelMessage`]s (with `seq`, `epoch`, `sender`), and
//!   [`Client::direct_messages`] is the stream of direct messages.
//! - When the connection drops, the client reconnects with exponential
//!   backoff and jitter and re-joins its channels, each with
//!   `recover: {seq, epoch}` — the last `seq` and `epoch` it delivered
//!   (SPEC §14). When the server answers `recovered: true`, the reply's
//!   `publications` are delivered (marked `replayed`, deduplicated by
//!   `seq`) before the live messages that follow; when it answers
//!   `recovered: false` (too many missed, history trimmed) or is older
//!   than §14, the client pages through `history after_seq=<last seen
//!   seq>` instead, as long as the channel's `epoch` is unchanged. Each
//!   channel then gets a [`GapReport`] saying whether the gap was filled
//!   and [how](GapFill) (a changed epoch means the history restarted and
//!   the gap cannot be filled).
//! - Reconnecting stops for good when the server says retrying cannot
//!   help: HTTP 400, 401 or 403 at the upgrade, close code 4000 (replaced
//!   by a newer connection with the same JWT `sub`) or 4003 (disconnected
//!   by an operator, SPEC §17). The reason is reported as
//!   [`ClientEvent::Stopped`] (then [`ClientEvent::Closed`]), in each
//!   subscription's final [`SubscriptionEvent::Removed`], by
//!   [`Client::stop_reason`], and as [`ClientError::Stopped`] from pending
//!   and later calls.
//! - Every (re)connect sends the identity as query parameters: the
//!   options' fields, updated by every successful [`Client::identify`].
//!   [`ConnectOptions::token_provider`] is awaited for a fresh token before
//!   each attempt. [`ConnectOptions::retry_first_connect`] applies the
//!   reconnect policy to the first connection too.
//! - Each call waits at most [`ConnectOptions::request_timeout`];
//!   [`Client::with_timeout`] gives a handle with another timeout.
//! - Dropping a [`Subscription`] leaves its channel (a `leave_channel` in
//!   the background), unless a later join of that channel replaced it.
//! - [`Client::join_channel_with`] takes [`JoinOptions`]: `presence`
//!   (SPEC §15) adds [`SubscriptionEvent::Presence`] events when others join
//!   or leave; `recover` asks for the messages after a known position.
//!   A `lagged` notice (SPEC §16: the server dropped messages for this slow
//!   client) becomes a [`SubscriptionEvent::Lagged`] on each affected
//!   subscription; with [`ConnectOptions::refill_on_lag`] the dropped
//!   messages are then fetched from history and delivered once each.
//!
//! - `wss://` URLs connect over TLS with rustls (ring provider, no
//!   OpenSSL). The server's certificate is checked against the operating
//!   system's root certificates unless
//!   [`ConnectOptions::tls_roots`] / [`ConnectOptions::add_root_certificate_pem`]
//!   name other roots (a private CA, a self-signed certificate) or
//!   [`ConnectOptions::tls_config`] gives a complete [`rustls`]
//!   configuration. It is built once per [`Client`]; reconnects reuse it.
//!
//! One background task owns the socket: it writes queued requests (batched
//! into one flush), reads every frame and routes it to the waiting request,
//! the subscription, or the direct-message stream. Every queue is bounded;
//! a full subscription queue makes the task stop reading (backpressure)
//! rather than drop messages, so keep consuming the subscriptions you hold.
//!
//! This crate depends on `arqon-protocol` and on tokio, tokio-tungstenite,
//! rustls, serde and thiserror; never on the server crates.
//!
//! ```no_run
//! use arqon_client::{Client, ConnectOptions, SubscriptionEvent};
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), arqon_client::ClientError> {
//! let client = Client::connect(ConnectOptions::new("ws://127.0.0.1:9100/").screen_name("ada")).await?;
//! let mut science = client.join_channel("science", "explore").await?;
//! let ack = client
//!     .publish_with_ack("science", "explore", json!({"text": "found a comet"}))
//!     .await?;
//! println!("published as seq {:?} to {} members", ack.seq, ack.delivered);
//! while let Some(event) = science.recv().await {
//!     match event {
//!         SubscriptionEvent::Message(message) => {
//!             println!("#{:?} {:?}: {}", message.seq, message.sender, message.payload)
//!         }
//!         SubscriptionEvent::Gap(gap) if !gap.filled => eprintln!("missed messages: {gap:?}"),
//!         SubscriptionEvent::Gap(_) => {}
//!         SubscriptionEvent::Removed { reason } => eprintln!("{reason}"),
//!         SubscriptionEvent::Lagged(lag) => eprintln!("lost {} messages", lag.dropped),
//!         _ => {} // presence events (when asked for), later kinds
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod client;
mod driver;
mod error;
mod options;
mod resync;
mod types;

pub use arqon_protocol::{
    ChannelKey, ClientId, ClientType, Envelope, EnvelopeType, ErrorCode, FieldError, MessageId,
};
pub use client::{Client, DirectMessages, Subscription};
pub use driver::ConnectionState;
pub use error::{ClientError, ServerError, StopReason, TokenError};
pub use options::{ConnectOptions, Identity, ReconnectPolicy};
/// The TLS library behind `wss://`, for [`ConnectOptions::tls_config`].
pub use rustls;
/// A DER certificate, for [`ConnectOptions::tls_roots`].
pub use rustls::pki_types::CertificateDer;
pub use types::{
    Ack, ChannelInfo, ChannelList, ChannelMessage, ChannelRecord, ClientCounts, ClientEvent,
    ClientRecord, Deleted, DirectMessage, GapFill, GapReport, History, HistoryQuery, JoinOptions,
    Joined, LagReport, Left, Limits, MessageCounts, Participant, ParticipantCounts, Pong,
    PresenceEvent, RecoverFrom, ServerInfo, Status, StorageInfo, SubscriptionEvent, Welcome,
};
