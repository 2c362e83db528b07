//! The static registry of configuration keys and the `--help` table.

use std::fmt::Write as _;

/// Prefix of every environment variable.
pub const ENV_PREFIX: &str = "ARQONBUS_";

/// Environment variable holding the configuration file path (read by the
/// binary, and by [`load`](crate::load) when `Sources::config_file` is unset).
pub const CONFIG_FILE_ENV: &str = "ARQONBUS_CONFIG";

/// Command-line flag holding the configuration file path.
pub const CONFIG_FILE_FLAG: &str = "--config";

/// One configuration variable: its names in every source, default and meaning.
///
/// The TOML key is [`KeySpec::toml_key`]: `env` without `ARQONBUS_`,
/// lower-cased; aliases have TOML keys the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeySpec {
    /// Canonical environment variable, e.g. `ARQONBUS_PORT`.
    pub env: &'static str,
    /// Alias variable names; the canonical name wins when both are set.
    pub aliases: &'static [&'static str],
    /// Command-line flag, e.g. `--port`, for the few keys that have one.
    pub cli: Option<&'static str>,
    /// The default as a user would write it; `(unset)` for optional keys.
    pub default: &'static str,
    /// One-line meaning.
    pub help: &'static str,
}

impl KeySpec {
    /// The variable name without the `ARQONBUS_` prefix, e.g. `PORT`.
    pub fn name(&self) -> &'static str {
        self.env.strip_prefix(ENV_PREFIX).unwrap_or(self.env)
    }

    /// The TOML key, e.g. `port`.
    pub fn toml_key(&self) -> String {
        toml_key_of(self.env)
    }

    /// All names: canonical first, then aliases.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.env).chain(self.aliases.iter().copied())
    }
}

/// `ARQONBUS_SERVER_PORT` → `server_port`.
pub(crate) fn toml_key_of(env: &str) -> String {
    env.strip_prefix(ENV_PREFIX)
        .unwrap_or(env)
        .to_ascii_lowercase()
}

/// Canonical variable names, used by the registry, the parser and validation.
pub(crate) mod names {
    pub(crate) const HOST: &str = "ARQONBUS_HOST";
    pub(crate) const PORT: &str = "ARQONBUS_PORT";
    pub(crate) const TELEMETRY_HOST: &str = "ARQONBUS_TELEMETRY_HOST";
    pub(crate) const TELEMETRY_PORT: &str = "ARQONBUS_TELEMETRY_PORT";
    pub(crate) const HTTP_PORT: &str = "ARQONBUS_HTTP_PORT";
    pub(crate) const MAX_CONNECTIONS: &str = "ARQONBUS_MAX_CONNECTIONS";
    pub(crate) const MAX_MESSAGE_SIZE: &str = "ARQONBUS_MAX_MESSAGE_SIZE";
    pub(crate) const PING_INTERVAL_SECS: &str = "ARQONBUS_PING_INTERVAL_SECS";
    pub(crate) const IDLE_TIMEOUT_SECS: &str = "ARQONBUS_IDLE_TIMEOUT_SECS";
    pub(crate) const HANDSHAKE_TIMEOUT_SECS: &str = "ARQONBUS_HANDSHAKE_TIMEOUT_SECS";
    pub(crate) const SHUTDOWN_GRACE_SECS: &str = "ARQONBUS_SHUTDOWN_GRACE_SECS";
    pub(crate) const WRITE_TIMEOUT_SECS: &str = "ARQONBUS_WRITE_TIMEOUT_SECS";
    pub(crate) const WRITE_COALESCE_MS: &str = "ARQONBUS_WRITE_COALESCE_MS";
    pub(crate) const CLOSE_TIMEOUT_MS: &str = "ARQONBUS_CLOSE_TIMEOUT_MS";
    pub(crate) const TELEMETRY_MAX_CONNECTIONS: &str = "ARQONBUS_TELEMETRY_MAX_CONNECTIONS";
    pub(crate) const ALLOWED_ORIGINS: &str = "ARQONBUS_ALLOWED_ORIGINS";
    pub(crate) const TLS_CERT: &str = "ARQONBUS_TLS_CERT";
    pub(crate) const TLS_KEY: &str = "ARQONBUS_TLS_KEY";
    pub(crate) const RATE_LIMIT_PER_SEC: &str = "ARQONBUS_RATE_LIMIT_PER_SEC";
    pub(crate) const RATE_LIMIT_BURST: &str = "ARQONBUS_RATE_LIMIT_BURST";
    pub(crate) const MAX_VIOLATIONS: &str = "ARQONBUS_MAX_VIOLATIONS";
    pub(crate) const VIOLATION_WINDOW_SECS: &str = "ARQONBUS_VIOLATION_WINDOW_SECS";
    pub(crate) const CLIENT_QUEUE_BYTES: &str = "ARQONBUS_CLIENT_QUEUE_BYTES";
    pub(crate) const SLOW_CONSUMER: &str = "ARQONBUS_SLOW_CONSUMER";
    pub(crate) const PUBLISH_REQUIRES_JOIN: &str = "ARQONBUS_PUBLISH_REQUIRES_JOIN";
    pub(crate) const AUTO_CREATE_CHANNELS: &str = "ARQONBUS_AUTO_CREATE_CHANNELS";
    pub(crate) const MAX_CHANNEL_MEMBERS: &str = "ARQONBUS_MAX_CHANNEL_MEMBERS";
    pub(crate) const MAX_SUBSCRIPTIONS: &str = "ARQONBUS_MAX_SUBSCRIPTIONS";
    pub(crate) const SYSTEM_CHANNELS: &str = "ARQONBUS_SYSTEM_CHANNELS";
    pub(crate) const EMPTY_CHANNEL_TTL_SECS: &str = "ARQONBUS_EMPTY_CHANNEL_TTL_SECS";
    pub(crate) const RECOVERY_MAX: &str = "ARQONBUS_RECOVERY_MAX";
    pub(crate) const STORAGE: &str = "ARQONBUS_STORAGE";
    pub(crate) const STORAGE_MODE: &str = "ARQONBUS_STORAGE_MODE";
    pub(crate) const HISTORY_SIZE: &str = "ARQONBUS_HISTORY_SIZE";
    pub(crate) const HISTORY_MAX_BYTES: &str = "ARQONBUS_HISTORY_MAX_BYTES";
    pub(crate) const HISTORY_MEMORY_BYTES: &str = "ARQONBUS_HISTORY_MEMORY_BYTES";
    pub(crate) const REDIS_URL: &str = "ARQONBUS_REDIS_URL";
    pub(crate) const REDIS_STREAM_MAXLEN: &str = "ARQONBUS_REDIS_STREAM_MAXLEN";
    pub(crate) const HISTORY_TTL_SECS: &str = "ARQONBUS_HISTORY_TTL_SECS";
    pub(crate) const STORAGE_BUFFER_MESSAGES: &str = "ARQONBUS_STORAGE_BUFFER_MESSAGES";
    pub(crate) const REDIS_CONNECT_TIMEOUT_MS: &str = "ARQONBUS_REDIS_CONNECT_TIMEOUT_MS";
    pub(crate) const REDIS_COMMAND_TIMEOUT_MS: &str = "ARQONBUS_REDIS_COMMAND_TIMEOUT_MS";
    pub(crate) const AUTH: &str = "ARQONBUS_AUTH";
    pub(crate) const ADMIN_TOKEN: &str = "ARQONBUS_ADMIN_TOKEN";
    pub(crate) const JWT_SECRET: &str = "ARQONBUS_JWT_SECRET";
    pub(crate) const API_KEY: &str = "ARQONBUS_API_KEY";
    pub(crate) const TELEMETRY_CHANNEL: &str = "ARQONBUS_TELEMETRY_CHANNEL";
    pub(crate) const DASHBOARD_CHANNEL: &str = "ARQONBUS_DASHBOARD_CHANNEL";
    pub(crate) const TELEMETRY_STATS_INTERVAL_MS: &str = "ARQONBUS_TELEMETRY_STATS_INTERVAL_MS";
    pub(crate) const CLUSTER: &str = "ARQONBUS_CLUSTER";
    pub(crate) const NODE_ID: &str = "ARQONBUS_NODE_ID";
    pub(crate) const CLUSTER_HEARTBEAT_MS: &str = "ARQONBUS_CLUSTER_HEARTBEAT_MS";
    pub(crate) const CLUSTER_NODE_TTL_MS: &str = "ARQONBUS_CLUSTER_NODE_TTL_MS";
    pub(crate) const CLUSTER_CONNECT_TIMEOUT_MS: &str = "ARQONBUS_CLUSTER_CONNECT_TIMEOUT_MS";
    pub(crate) const CLUSTER_COMMAND_TIMEOUT_MS: &str = "ARQONBUS_CLUSTER_COMMAND_TIMEOUT_MS";
    pub(crate) const CLUSTER_QUEUE_CAPACITY: &str = "ARQONBUS_CLUSTER_QUEUE_CAPACITY";
    pub(crate) const CLUSTER_PUBLISH_BATCH: &str = "ARQONBUS_CLUSTER_PUBLISH_BATCH";
    pub(crate) const LOG_LEVEL: &str = "ARQONBUS_LOG_LEVEL";
    pub(crate) const LOG_FORMAT: &str = "ARQONBUS_LOG_FORMAT";
}

use names::*;

const fn key(
    env: &'static str,
    aliases: &'static [&'static str],
    cli: Option<&'static str>,
    default: &'static str,
    help: &'static str,
) -> KeySpec {
    KeySpec {
        env,
        aliases,
        cli,
        default,
        help,
    }
}

/// Every configuration variable, in documentation order.
pub const KEYS: &[KeySpec] = &[
    key(
        HOST,
        &["ARQONBUS_SERVER_HOST"],
        Some("--host"),
        "127.0.0.1",
        "Address the bus listener (WebSocket and HTTP endpoints) binds to.",
    ),
    key(
        PORT,
        &["ARQONBUS_SERVER_PORT"],
        Some("--port"),
        "9100",
        "Bus listener port; 0 picks a free port.",
    ),
    key(
        TELEMETRY_HOST,
        &[],
        None,
        "127.0.0.1",
        "Address the telemetry WebSocket listener binds to.",
    ),
    key(
        TELEMETRY_PORT,
        &[],
        Some("--telemetry-port"),
        "9101",
        "Telemetry listener port; 0 picks a free port.",
    ),
    key(
        HTTP_PORT,
        &[],
        None,
        "(unset)",
        "Extra port on the bus host that also serves /health, /ready, /version, /metrics.",
    ),
    key(
        MAX_CONNECTIONS,
        &[],
        None,
        "100000",
        "Concurrent bus connections; beyond it upgrades get HTTP 503.",
    ),
    key(
        MAX_MESSAGE_SIZE,
        &[],
        None,
        "1048576",
        "Largest accepted frame in bytes; larger frames get close code 1009.",
    ),
    key(
        PING_INTERVAL_SECS,
        &[],
        None,
        "20",
        "Seconds between server WebSocket pings.",
    ),
    key(
        IDLE_TIMEOUT_SECS,
        &[],
        None,
        "60",
        "Close a connection that sent nothing for this many seconds (code 1001).",
    ),
    key(
        HANDSHAKE_TIMEOUT_SECS,
        &[],
        None,
        "10",
        "Seconds allowed for the WebSocket handshake.",
    ),
    key(
        SHUTDOWN_GRACE_SECS,
        &[],
        None,
        "10",
        "Seconds allowed to close clients and flush storage on SIGTERM/SIGINT.",
    ),
    key(
        WRITE_TIMEOUT_SECS,
        &[],
        None,
        "10",
        "A socket write that makes no progress for this many seconds aborts the connection.",
    ),
    key(
        WRITE_COALESCE_MS,
        &[],
        None,
        "10",
        "Milliseconds a busy connection may hold channel messages to send them in one write (0 = off).",
    ),
    key(
        CLOSE_TIMEOUT_MS,
        &[],
        None,
        "1000",
        "Milliseconds the server waits for each step of a WebSocket close handshake before dropping the TCP connection.",
    ),
    key(
        TELEMETRY_MAX_CONNECTIONS,
        &[],
        None,
        "100",
        "Concurrent telemetry WebSocket connections; beyond it upgrades get HTTP 503.",
    ),
    key(
        ALLOWED_ORIGINS,
        &[],
        None,
        "(unset)",
        "Comma-separated browser origins allowed to connect besides same-origin: https://app.example.com, https://*.example.com or *.",
    ),
    key(
        TLS_CERT,
        &[],
        None,
        "(unset)",
        "PEM certificate chain; with ARQONBUS_TLS_KEY every listener serves wss:// and https://.",
    ),
    key(
        TLS_KEY,
        &[],
        None,
        "(unset)",
        "PEM private key of ARQONBUS_TLS_CERT.",
    ),
    key(
        RATE_LIMIT_PER_SEC,
        &[],
        None,
        "1000",
        "Inbound frames per second per connection (token bucket); 0 turns it off.",
    ),
    key(
        RATE_LIMIT_BURST,
        &[],
        None,
        "2000",
        "Token bucket capacity per connection.",
    ),
    key(
        MAX_VIOLATIONS,
        &[],
        None,
        "10",
        "The N-th protocol violation within the window gets TOO_MANY_VIOLATIONS and close 1008.",
    ),
    key(
        VIOLATION_WINDOW_SECS,
        &[],
        None,
        "60",
        "Sliding window, in seconds, for counting violations.",
    ),
    key(
        CLIENT_QUEUE_BYTES,
        &[],
        None,
        "1048576",
        "Bound of each connection's outbound queue, in bytes.",
    ),
    key(
        SLOW_CONSUMER,
        &[],
        None,
        "disconnect",
        "Full queue: disconnect (close 4002) or drop (drop the message for that client).",
    ),
    key(
        PUBLISH_REQUIRES_JOIN,
        &[],
        None,
        "true",
        "Publishing to a channel requires being subscribed to it.",
    ),
    key(
        AUTO_CREATE_CHANNELS,
        &[],
        None,
        "true",
        "join_channel creates a missing channel.",
    ),
    key(
        MAX_CHANNEL_MEMBERS,
        &[],
        None,
        "0",
        "Members per channel (CHANNEL_FULL beyond); 0 = unlimited.",
    ),
    key(
        MAX_SUBSCRIPTIONS,
        &[],
        None,
        "1000",
        "Channels one client may join (SUBSCRIPTION_LIMIT beyond).",
    ),
    key(
        SYSTEM_CHANNELS,
        &[],
        None,
        "integriguard:telemetry-stream,integriguard:dashboard-events",
        "Comma-separated room:channel list that exists from startup and cannot be deleted.",
    ),
    key(
        EMPTY_CHANNEL_TTL_SECS,
        &[],
        None,
        "600",
        "An auto-created channel without members for this many seconds is removed with its memory history; 0 = never.",
    ),
    key(
        RECOVERY_MAX,
        &[],
        None,
        "1000",
        "Most messages a join_channel with recover may return.",
    ),
    key(
        STORAGE,
        &["ARQONBUS_STORAGE_BACKEND"],
        Some("--storage"),
        "memory",
        "History backend: memory or redis (redis_streams is read as redis).",
    ),
    key(
        STORAGE_MODE,
        &[],
        None,
        "degraded",
        "degraded: run on without Redis; strict: refuse to start and refuse publishes while it is down.",
    ),
    key(
        HISTORY_SIZE,
        &["ARQONBUS_MAX_HISTORY_SIZE"],
        None,
        "500",
        "Messages kept per channel by the memory backend.",
    ),
    key(
        HISTORY_MAX_BYTES,
        &[],
        None,
        "4194304",
        "Bytes of encoded messages kept per channel by the memory backend; the oldest are evicted beyond it.",
    ),
    key(
        HISTORY_MEMORY_BYTES,
        &[],
        None,
        "268435456",
        "Bytes of memory history in all channels; beyond it the least recently written channel loses its oldest messages.",
    ),
    key(
        REDIS_URL,
        &[],
        Some("--redis-url"),
        "redis://127.0.0.1:6379",
        "Redis URL: redis://, rediss:// or redis-cluster://host:port,...",
    ),
    key(
        REDIS_STREAM_MAXLEN,
        &[],
        None,
        "10000",
        "Approximate cap of each channel's Redis Stream.",
    ),
    key(
        HISTORY_TTL_SECS,
        &[],
        None,
        "86400",
        "Redis history expires after this many seconds without writes; 0 = never.",
    ),
    key(
        STORAGE_BUFFER_MESSAGES,
        &[],
        None,
        "100000",
        "Messages held in memory while waiting to be written to Redis; beyond it new ones are dropped from history and counted.",
    ),
    key(
        REDIS_CONNECT_TIMEOUT_MS,
        &[],
        None,
        "2000",
        "Milliseconds to wait for a Redis connection, at startup and on each reconnect.",
    ),
    key(
        REDIS_COMMAND_TIMEOUT_MS,
        &[],
        None,
        "5000",
        "Milliseconds to wait for a Redis command or pipeline before the connection counts as broken.",
    ),
    key(
        AUTH,
        &[],
        None,
        "none",
        "Authentication: none, token or jwt.",
    ),
    key(
        ADMIN_TOKEN,
        &[],
        None,
        "(unset)",
        "Token that makes a connection admin; required with auth=token.",
    ),
    key(
        JWT_SECRET,
        &["ARQONBUS_AUTH_JWT_SECRET"],
        None,
        "(unset)",
        "HS256 secret for tokens; required with auth=jwt.",
    ),
    key(
        API_KEY,
        &[],
        None,
        "(unset)",
        "Bearer key of the HTTP server API (/api/*).",
    ),
    key(
        TELEMETRY_CHANNEL,
        &[],
        None,
        "integriguard:telemetry-stream",
        "System channel that receives telemetry events (room:channel).",
    ),
    key(
        DASHBOARD_CHANNEL,
        &[],
        None,
        "integriguard:dashboard-events",
        "Channel that receives agent_activity events (room:channel).",
    ),
    key(
        TELEMETRY_STATS_INTERVAL_MS,
        &[],
        None,
        "1000",
        "Milliseconds between stats telemetry events.",
    ),
    key(
        CLUSTER,
        &[],
        None,
        "none",
        "Scale-out: none or redis (requires storage=redis).",
    ),
    key(
        NODE_ID,
        &[],
        None,
        "(random node-<12 hex>)",
        "This node's id, unique in a cluster: 1-64 chars of [A-Za-z0-9_.:-].",
    ),
    key(
        CLUSTER_HEARTBEAT_MS,
        &[],
        None,
        "5000",
        "Milliseconds between a cluster node's heartbeats (renewing its presence in Redis).",
    ),
    key(
        CLUSTER_NODE_TTL_MS,
        &[],
        None,
        "15000",
        "Milliseconds a cluster node counts as alive after its last heartbeat (more than the heartbeat, at most 30000).",
    ),
    key(
        CLUSTER_CONNECT_TIMEOUT_MS,
        &[],
        None,
        "2000",
        "Milliseconds startup waits for the cluster's Redis before serving its own clients alone.",
    ),
    key(
        CLUSTER_COMMAND_TIMEOUT_MS,
        &[],
        None,
        "2000",
        "Milliseconds a cluster Redis command may take; a publish that times out is routed on this node alone.",
    ),
    key(
        CLUSTER_QUEUE_CAPACITY,
        &[],
        None,
        "65536",
        "Bound of each cluster queue (publishes waiting for Redis, Pub/Sub messages waiting for the node, subscription changes).",
    ),
    key(
        CLUSTER_PUBLISH_BATCH,
        &[],
        None,
        "256",
        "Most publishes sent to Redis in one pipeline.",
    ),
    key(
        LOG_LEVEL,
        &[],
        Some("--log-level"),
        "info",
        "trace, debug, info, warn, error, off, or a directive like info,arqon_routing=debug.",
    ),
    key(
        LOG_FORMAT,
        &[],
        Some("--log-format"),
        "text",
        "Log output: text or json.",
    ),
];

/// Looks up an environment variable name: the spec and the name's rank
/// (0 = canonical, 1.. = alias).
pub(crate) fn by_env(name: &str) -> Option<(usize, usize)> {
    KEYS.iter().enumerate().find_map(|(index, spec)| {
        spec.names()
            .position(|n| n == name)
            .map(|rank| (index, rank))
    })
}

/// Looks up a TOML key (canonical or alias, lower-case): index and rank.
pub(crate) fn by_toml(key: &str) -> Option<(usize, usize)> {
    KEYS.iter().enumerate().find_map(|(index, spec)| {
        spec.names()
            .position(|n| toml_key_of(n) == key)
            .map(|rank| (index, rank))
    })
}

/// Looks up a CLI flag: index.
pub(crate) fn by_cli(flag: &str) -> Option<usize> {
    KEYS.iter().position(|spec| spec.cli == Some(flag))
}

/// A known spelling for a mistyped key: the TOML key when `written`, folded to
/// lower case with `-` as `_` and any `ARQONBUS_` prefix dropped, names one.
pub(crate) fn suggest(written: &str) -> Option<String> {
    let folded = written
        .trim_start_matches("--")
        .replace('-', "_")
        .to_ascii_lowercase();
    let folded = folded.strip_prefix("arqonbus_").unwrap_or(&folded);
    by_toml(folded).map(|(index, rank)| {
        let name = KEYS[index].names().nth(rank).unwrap_or(KEYS[index].env);
        toml_key_of(name)
    })
}

/// Every key with its default and meaning, for `arqonbus-server --help`.
///
/// ```text
///   ARQONBUS_PORT  --port  (alias ARQONBUS_SERVER_PORT)
///       Bus listener port; 0 picks a free port. [default: 9100]
/// ```
pub fn help_table() -> String {
    let mut out = String::from(
        "Configuration: built-in defaults < TOML file (--config PATH or ARQONBUS_CONFIG) \
         < ARQONBUS_* environment < command-line flags.\n\
         TOML keys are the variable names without ARQONBUS_, lower-cased (port = 9100).\n\
         Invalid configuration exits with status 64.\n\n",
    );
    for spec in KEYS {
        let _ = write!(out, "  {}", spec.env);
        if let Some(flag) = spec.cli {
            let _ = write!(out, "  {flag}");
        }
        if !spec.aliases.is_empty() {
            let _ = write!(out, "  (alias {})", spec.aliases.join(", "));
        }
        let _ = writeln!(out, "\n      {} [default: {}]", spec.help, spec.default);
    }
    out
}
