//! ArqonBus observability (SPEC §8 telemetry, §12 `/metrics`): the
//! telemetry events and their fan-out hub, route-latency statistics, and the
//! Prometheus metric families.
//!
//! This crate depends on `arqon-config` (its [`TelemetryConfig`] section),
//! `arqon-protocol` (the envelope and identifiers), tokio's `sync` and
//! `time`, and the `metrics` facade. It must not depend on routing, storage,
//! commands or axum: those crates depend on it and report into it. It owns
//! `metrics-exporter-prometheus`, but only the binary calls
//! [`metrics::install_recorder`]; libraries just use the facade.
//!
//! - [`Event`] is one SPEC §8 event with its exact payload fields; the hub
//!   encodes it into a `telemetry` envelope.
//! - [`Telemetry`] is the hub, cheap to clone: [`Telemetry::emit`] encodes an
//!   event once into [`Bytes`](bytes::Bytes) and broadcasts it to every
//!   [`Subscription`] (telemetry sockets, the bus forwarder) through one
//!   bounded `tokio::sync::broadcast`. It never blocks and never awaits.
//! - [`EventFilter`] is the `?events=a,b` filter of a telemetry socket.
//! - [`RouteLatency`] records the latency of every routed message (lock-free
//!   log-linear buckets, microsecond resolution); [`StatsSampler`] and
//!   [`run_stats`] turn counters and that latency into a `stats` event every
//!   interval.
//! - [`names`] holds every metric family name of SPEC §12; [`metrics`]
//!   describes and pre-registers them, and has typed helpers whose label
//!   values come from bounded sets only.
//!
//! Invariants: every queue is bounded (a slow subscriber misses events,
//! counted in `arqonbus_telemetry_dropped_total`, and never slows an
//! emitter); an event is serialized at most once whatever the number of
//! subscribers, and not at all when there is none; metric labels are never
//! rooms, channels or client ids.

mod error;
mod event;
mod filter;
mod hub;
mod latency;
pub mod metrics;
pub mod names;
mod stats;

pub use arqon_config::TelemetryConfig;
pub use error::TelemetryError;
pub use event::{AgentAction, ClientEvent, CommandStatus, Event, Stats, StatsDetail, StorageState};
pub use filter::EventFilter;
pub use hub::{ChannelTarget, DEFAULT_CAPACITY, Published, Subscription, Telemetry};
pub use latency::{LatencySnapshot, RouteLatency};
pub use stats::{StatsSampler, StatsSnapshot, run_stats, run_stats_with};
