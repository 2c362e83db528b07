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
//!   backoff and jitter, re-joins its channels, and fills the gap with
//!   `history after_seq=<last seen seq>` when the channel's `epoch` is
//!   unchanged. Each channel then gets a [`GapReport`] saying whether the
//!   gap was filled (a changed epoch means the history restarted and the
//!   gap cannot be filled).
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
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod client;
mod driver;
mod error;
mod options;
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
