//! Routing for ArqonBus (SPEC §4, §11): the registry of connected clients,
//! rooms and channels, subscriptions, and delivery to channels and to
//! single clients.
//!
//! May depend on `arqon-protocol` and `arqon-config` (and later
//! `arqon-telemetry`), and the `tracing` facade; never on storage, axum,
//! a Redis client or any socket type. The
//! router moves encoded frames ([`bytes::Bytes`]) into per-connection
//! [`Outbound`] queues; the server's writer tasks own the sockets.
//!
//! Key types: [`Router`], [`Client`], [`Channel`], [`Outbound`], and the
//! [`Backplane`] seam: what a node shares with the other nodes of a
//! cluster ([`backplane::Local`] for a single node; `arqon-cluster`
//! implements it over Redis).
//!
//! Invariants:
//! - a publish encodes its envelope once and queues clones of the same
//!   bytes; it never awaits, and a full queue triggers the slow-consumer
//!   policy for that subscriber only;
//! - `seq` is assigned and the fan-out done under the channel's member
//!   lock, so every member of a channel sees its messages in `seq` order;
//! - locks are short, never held across `.await`, and taken in the order
//!   channel map → channel members → client subscriptions;
//! - every queue is bounded in bytes (`ARQONBUS_CLIENT_QUEUE_BYTES`);
//! - a [`Backplane`] never blocks its caller; `None` from it means "this
//!   node's own view is the answer", so callers have one code path.

pub mod backplane;
mod channel;
mod client;
mod error;
mod outbound;
mod router;

pub use backplane::{Backplane, OPERATOR_CLOSE};
pub use channel::{Channel, ChannelKind, ChannelSpec};
pub use client::{Client, Profile, Role};
pub use error::RoutingError;
pub use outbound::{Batch, CloseReason, Frames, Outbound, PushError};
pub use router::{
    Delivery, JoinOptions, Joined, PresenceEvent, Publisher, Router, SLOW_CONSUMER_CLOSE,
    Sequenced, Snapshot, Stats,
};
