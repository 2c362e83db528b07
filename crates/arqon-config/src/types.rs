//! The typed configuration tree. `Default` is the SPEC default of every field.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration of one ArqonBus server.
///
/// Build it with [`load`](crate::load) (file, environment, flags) or
/// [`Config::builder`] (in code); both validate. A `Config` built by hand can
/// be checked with [`Config::validate`].
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Listeners, connection limits and timeouts (SPEC §1, §2, §11).
    pub server: ServerConfig,
    /// Per-connection rate limit and violation policy (SPEC §6).
    pub limits: LimitsConfig,
    /// Channels, subscriptions and slow consumers (SPEC §4, §5, §11).
    pub routing: RoutingConfig,
    /// History backend (SPEC §7).
    pub storage: StorageConfig,
    /// Authentication (SPEC §9).
    pub auth: AuthConfig,
    /// Telemetry channels and stats cadence (SPEC §8).
    pub telemetry: TelemetryConfig,
    /// Scale-out through Redis (SPEC §10).
    pub cluster: ClusterConfig,
    /// Logging, installed by the binary.
    pub log: LogConfig,
}

/// Listeners, connection limits and timeouts.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Bus listener address (`ARQONBUS_HOST`).
    pub host: String,
    /// Bus listener port, `0` picks a free one (`ARQONBUS_PORT`).
    pub port: u16,
    /// Telemetry listener address (`ARQONBUS_TELEMETRY_HOST`).
    pub telemetry_host: String,
    /// Telemetry listener port, `0` picks a free one (`ARQONBUS_TELEMETRY_PORT`).
    pub telemetry_port: u16,
    /// Optional extra port that also serves the HTTP endpoints, on `host`
    /// (`ARQONBUS_HTTP_PORT`).
    pub http_port: Option<u16>,
    /// Concurrent bus connections; beyond it upgrades get HTTP 503.
    pub max_connections: usize,
    /// Largest accepted frame in bytes; larger ones get close 1009.
    pub max_message_size: usize,
    /// Interval between server pings.
    pub ping_interval: Duration,
    /// A connection silent this long is closed with 1001.
    pub idle_timeout: Duration,
    /// Time allowed for the WebSocket handshake.
    pub handshake_timeout: Duration,
    /// Time allowed for draining clients and flushing storage on shutdown.
    pub shutdown_grace: Duration,
    /// A socket write that makes no progress this long aborts the connection.
    pub write_timeout: Duration,
    /// How long a connection's writer may hold channel messages to send
    /// them in one socket write, when it wrote less than this long ago;
    /// zero writes every batch at once.
    pub write_coalesce: Duration,
    /// How long each step of a WebSocket close handshake may take: the
    /// client's reply to the server's close frame, or the client seeing the
    /// echo of its own, before the TCP connection is dropped.
    pub close_timeout: Duration,
    /// Concurrent telemetry connections; beyond it upgrades get HTTP 503.
    pub telemetry_max_connections: usize,
    /// Browser origins allowed besides same-origin and no-Origin upgrades
    /// (SPEC §18), validated: `scheme://host[:port]`, with `*.` allowed
    /// before the host, or `*`.
    pub allowed_origins: Vec<String>,
    /// PEM certificate chain (`ARQONBUS_TLS_CERT`); with `tls_key`, every
    /// listener serves TLS. Validation requires both or neither.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (`ARQONBUS_TLS_KEY`).
    pub tls_key: Option<PathBuf>,
}

impl ServerConfig {
    /// TLS for every listener, when both files are configured; `None`
    /// serves plain `ws://` and `http://`.
    pub fn tls(&self) -> Option<TlsConfig> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }
}

/// PEM files of the server's certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Certificate chain (`ARQONBUS_TLS_CERT`).
    pub cert: PathBuf,
    /// Private key (`ARQONBUS_TLS_KEY`).
    pub key: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 9100,
            telemetry_host: "127.0.0.1".to_owned(),
            telemetry_port: 9101,
            http_port: None,
            max_connections: 100_000,
            max_message_size: 1_048_576,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            write_coalesce: Duration::from_millis(10),
            close_timeout: Duration::from_secs(1),
            telemetry_max_connections: 100,
            allowed_origins: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// Per-connection rate limit and protocol-violation policy.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Token-bucket refill per second; `0` turns rate limiting off.
    pub rate_limit_per_sec: u32,
    /// Token-bucket capacity.
    pub rate_limit_burst: u32,
    /// The N-th violation within `violation_window` closes the connection (1008).
    pub max_violations: u32,
    /// Sliding window for counting violations.
    pub violation_window: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            rate_limit_per_sec: 1000,
            rate_limit_burst: 2000,
            max_violations: 10,
            violation_window: Duration::from_secs(60),
        }
    }
}

/// Channels, subscriptions and slow-consumer handling.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// Bound of each connection's outbound queue, in bytes.
    pub client_queue_bytes: usize,
    /// What happens when a subscriber's queue is full.
    pub slow_consumer: SlowConsumerPolicy,
    /// Publishing to a channel requires being subscribed to it.
    pub publish_requires_join: bool,
    /// `join_channel` creates a missing channel.
    pub auto_create_channels: bool,
    /// Members per channel; `0` = unlimited.
    pub max_channel_members: usize,
    /// Channels one client may be subscribed to.
    pub max_subscriptions: usize,
    /// System channels as `"room:channel"` strings, validated; created at
    /// startup and never deletable.
    pub system_channels: Vec<String>,
    /// An auto-created channel without members this long is removed with
    /// its memory history; `None` = never.
    pub empty_channel_ttl: Option<Duration>,
    /// Most messages one `join_channel` with `recover` returns (SPEC §14).
    pub recovery_max: usize,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            client_queue_bytes: 1_048_576,
            slow_consumer: SlowConsumerPolicy::default(),
            publish_requires_join: true,
            auto_create_channels: true,
            max_channel_members: 0,
            max_subscriptions: 1000,
            system_channels: vec![
                DEFAULT_TELEMETRY_CHANNEL.to_owned(),
                DEFAULT_DASHBOARD_CHANNEL.to_owned(),
            ],
            empty_channel_ttl: Some(Duration::from_secs(600)),
            recovery_max: 1000,
        }
    }
}

pub(crate) const DEFAULT_TELEMETRY_CHANNEL: &str = "integriguard:telemetry-stream";
pub(crate) const DEFAULT_DASHBOARD_CHANNEL: &str = "integriguard:dashboard-events";

/// What happens when a subscriber's outbound queue is full (SPEC §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SlowConsumerPolicy {
    /// Close the slow connection with code 4002.
    #[default]
    Disconnect,
    /// Drop the message for that client and count it.
    Drop,
}

/// History backend (SPEC §7).
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Memory ring buffers or Redis Streams.
    pub backend: StorageBackend,
    /// Degraded (keep running without Redis) or strict.
    pub mode: StorageMode,
    /// Messages kept per channel by the memory backend.
    pub history_size: usize,
    /// Bytes of encoded envelopes kept per channel by the memory backend.
    pub history_max_bytes: usize,
    /// Bytes of memory history across all channels; beyond it the least
    /// recently written channel loses its oldest messages first.
    pub history_memory_bytes: usize,
    /// Redis URL (`redis://`, `rediss://`, `redis-cluster://host:port,…`).
    pub redis_url: String,
    /// Approximate cap of each channel's stream.
    pub redis_stream_maxlen: u64,
    /// Redis history expires after this long without writes; `None` = never.
    pub history_ttl: Option<Duration>,
    /// Bound of the in-memory buffer of messages waiting to be written to
    /// Redis (while it is slow or unreachable); beyond it, messages are
    /// delivered but dropped from history, and counted.
    pub buffer_messages: usize,
    /// Wait for a Redis connection, at startup and on each reconnect.
    pub redis_connect_timeout: Duration,
    /// Wait for a Redis command or pipeline before the connection counts
    /// as broken.
    pub redis_command_timeout: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: StorageBackend::default(),
            mode: StorageMode::default(),
            history_size: 500,
            history_max_bytes: 4_194_304,
            history_memory_bytes: 268_435_456,
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            redis_stream_maxlen: 10_000,
            history_ttl: Some(Duration::from_secs(86_400)),
            buffer_messages: 100_000,
            redis_connect_timeout: Duration::from_secs(2),
            redis_command_timeout: Duration::from_secs(5),
        }
    }
}

/// Where channel history lives. The input spelling `redis_streams` is read as
/// [`StorageBackend::Redis`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StorageBackend {
    /// A ring buffer per channel, in process.
    #[default]
    Memory,
    /// One Redis Stream per channel.
    Redis,
}

/// Behaviour while Redis is unreachable (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StorageMode {
    /// Keep routing, buffer writes in memory, flush when Redis is back.
    #[default]
    Degraded,
    /// Refuse to start without Redis; answer publishes with
    /// `STORAGE_UNAVAILABLE` while it is down.
    Strict,
}

/// Authentication (SPEC §9).
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// none, token or jwt.
    pub mode: AuthMode,
    /// The admin token; required when `mode` is [`AuthMode::Token`].
    pub admin_token: Option<Secret>,
    /// HS256 secret; required when `mode` is [`AuthMode::Jwt`].
    pub jwt_secret: Option<Secret>,
    /// Bearer key of the HTTP server API; `None` disables `/api/*`.
    pub api_key: Option<Secret>,
}

/// Authentication mode (SPEC §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AuthMode {
    /// Anyone connects; admin commands only from loopback peers.
    #[default]
    None,
    /// A shared admin token makes a connection admin.
    Token,
    /// An HS256 JWT is required to connect.
    Jwt,
}

/// A secret string. `Debug` and `Display` print `<redacted>`; read it with
/// [`Secret::expose`] only where it is used. Deliberately not `PartialEq`:
/// compare secrets in constant time where they are checked.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// A URL fit for logs and error messages: the password of its user info is
/// replaced by `***` (`redis://:secret@host:6379/0` →
/// `redis://:***@host:6379/0`; a user info without `:` is hidden whole).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparsable URL>".to_owned();
    };
    // Credentials end at the last `@`, even past a `/`, `?` or `#`: people
    // write passwords unencoded (`redis://:pa/ss@host`), and hiding too much
    // of a URL beats showing any of a password.
    match rest.rsplit_once('@') {
        None => url.to_owned(),
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("***", |(user, _)| user);
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{hidden}@{host}")
        }
    }
}

/// Telemetry channels and stats cadence (SPEC §8).
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// System channel telemetry events are published to (`room:channel`).
    pub channel: String,
    /// Channel `agent_activity` events are published to (`room:channel`).
    pub dashboard_channel: String,
    /// Interval between `stats` events.
    pub stats_interval: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            channel: DEFAULT_TELEMETRY_CHANNEL.to_owned(),
            dashboard_channel: DEFAULT_DASHBOARD_CHANNEL.to_owned(),
            stats_interval: Duration::from_millis(1000),
        }
    }
}

/// Scale-out (SPEC §10).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// none or redis.
    pub mode: ClusterMode,
    /// This node's id; unique per cluster.
    pub node_id: String,
    /// How often the node renews its presence in Redis (5 s).
    pub heartbeat: Duration,
    /// How long a node counts as alive after its last heartbeat, and how
    /// long its presence keys live (15 s; SPEC §10 asks at most 30 s).
    pub node_ttl: Duration,
    /// How long startup waits for Redis (2 s; the node serves its own
    /// clients meanwhile and keeps reconnecting).
    pub connect_timeout: Duration,
    /// How long any Redis command may take (2 s): a publish that times
    /// out is routed on this node alone, a client registration is retried
    /// by the heartbeat.
    pub command_timeout: Duration,
    /// Bound of each cluster queue (65536): publishes waiting for Redis,
    /// Pub/Sub messages waiting for the node, subscription changes.
    pub queue_capacity: usize,
    /// Publishes sent to Redis in one pipeline at most (256).
    pub publish_batch: usize,
}

impl Default for ClusterConfig {
    /// `node_id` is a fresh random `node-` + 12 lowercase hex digits.
    fn default() -> Self {
        Self {
            mode: ClusterMode::default(),
            node_id: random_node_id(),
            heartbeat: Duration::from_secs(5),
            node_ttl: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            queue_capacity: 65_536,
            publish_batch: 256,
        }
    }
}

/// A random `node-` + 12 lowercase hex digits.
pub(crate) fn random_node_id() -> String {
    let bits: u64 = rand::random::<u64>() & 0xffff_ffff_ffff;
    format!("node-{bits:012x}")
}

/// Cluster mode (SPEC §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ClusterMode {
    /// A single node.
    #[default]
    None,
    /// Nodes share channels, sequences and history through Redis.
    Redis,
}

/// Logging, installed by the binary.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `trace`, `debug`, `info`, `warn`, `error`, `off`, or a filter
    /// directive such as `info,arqon_routing=debug`.
    pub level: String,
    /// Text or JSON lines.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::default(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `as_str`, `Display` and the accepted input spellings of the config enums.
macro_rules! spelled_enum {
    ($ty:ident { $($variant:ident => $canonical:literal $(| $alias:literal)*),+ $(,)? }) => {
        impl $ty {
            /// The canonical lowercase spelling, as accepted on input and reported.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $canonical,)+
                }
            }

            /// Parses a spelling, case-insensitively, aliases included.
            pub(crate) fn parse(input: &str) -> Option<Self> {
                $(
                    if input.eq_ignore_ascii_case($canonical)
                        $(|| input.eq_ignore_ascii_case($alias))*
                    {
                        return Some(Self::$variant);
                    }
                )+
                None
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

spelled_enum!(SlowConsumerPolicy { Disconnect => "disconnect", Drop => "drop" });
spelled_enum!(StorageBackend { Memory => "memory", Redis => "redis" | "redis_streams" });
spelled_enum!(StorageMode { Degraded => "degraded", Strict => "strict" });
spelled_enum!(AuthMode { None => "none", Token => "token", Jwt => "jwt" });
spelled_enum!(ClusterMode { None => "none", Redis => "redis" });
spelled_enum!(LogFormat { Text => "text", Json => "json" });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_parse_case_insensitively() {
        assert_eq!(StorageBackend::parse("REDIS"), Some(StorageBackend::Redis));
        assert_eq!(AuthMode::parse("bearer"), None);
    }
}
