//! The application layer of ArqonBus: what happens to each frame a client
//! sends, and the built-in commands of SPEC §5.
//!
//! May depend on `arqon-protocol`, `arqon-routing`, `arqon-storage`,
//! `arqon-config` and `arqon-telemetry`; never on axum, sockets, or the
//! cluster's Redis client: cluster mode reaches it only through the
//! [`Backplane`](arqon_routing::Backplane) trait, which `arqon-cluster`
//! implements. No command branches on the deployment: each calls the
//! backplane once, and a single node's backplane has nothing to add. The
//! server feeds a [`Session`] the text and binary frames of one
//! connection; the session replies through the client's outbound queue.
//!
//! Key types: [`Bus`] (what all sessions of a server share, and the one
//! publish path: [`Bus::publish`], [`Bus::send_direct`]), [`Session`]
//! (per connection: rate limit, violation window, publish, acks, command
//! dispatch), [`CommandError`], and the handler table [`COMMANDS`]. The
//! HTTP server API's publish, send and disconnect (SPEC §17) are `Bus`
//! methods in `operator.rs`, next to the session's own publish path.
//!
//! Invariants: every command gets exactly one reply, in the order the
//! commands arrived (replies are queued synchronously while the frame is
//! handled); invalid input gets an error envelope and never a panic; the
//! `ARQONBUS_MAX_VIOLATIONS`-th violation within the window is answered
//! with `TOO_MANY_VIOLATIONS` and a 1008 close.

mod args;
pub mod auth;
mod bus;
mod commands;
mod error;
mod limits;
mod operator;
mod session;

pub use args::Args;
pub use bus::{Bus, Later, PRODUCT_NAME, Routed, Sent, ServerInfo, Settled};
pub use commands::{COMMANDS, CommandFuture, Ctx, Dispatched, Handler, dispatch};
pub use error::CommandError;
pub use limits::{TokenBucket, ViolationWindow};
pub use operator::{OPERATOR_CLOSE, ServerPublished};
pub use session::{Flow, MAX_PENDING_REPLIES, Session, VIOLATIONS_CLOSE};
