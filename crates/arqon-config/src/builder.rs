//! In-code configuration for tests and embedders: defaults plus overrides, no
//! environment, no files, no global state.

use std::time::Duration;

use crate::error::{ConfigError, Origin};
use crate::keys::names::*;
use crate::keys::{self, KEYS, toml_key_of};
use crate::parse::{RawValue, apply};
use crate::types::{
    AuthMode, ClusterMode, Config, LogFormat, Secret, SlowConsumerPolicy, StorageBackend,
    StorageMode,
};
use crate::validate::{Origins, validate};

impl Config {
    /// Starts from the defaults. Nothing is read from the environment.
    ///
    /// ```
    /// use arqon_config::{Config, SlowConsumerPolicy};
    ///
    /// let config = Config::builder()
    ///     .port(0)
    ///     .telemetry_port(0)
    ///     .slow_consumer(SlowConsumerPolicy::Drop)
    ///     .set("ARQONBUS_MAX_SUBSCRIPTIONS", "5")?
    ///     .build()?;
    /// assert_eq!(config.routing.max_subscriptions, 5);
    /// # Ok::<(), arqon_config::ConfigError>(())
    /// ```
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::from(Config::default())
    }

    /// Checks every rule [`load`](crate::load) checks. Errors name keys by
    /// their canonical variable, since the origin of each value is unknown.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate(self, &Origins::untracked())
    }
}

/// Fluent, validated construction of a [`Config`]. See [`Config::builder`].
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    config: Config,
    origins: Origins,
}

impl From<Config> for ConfigBuilder {
    /// Continues from an existing configuration; its values count as defaults
    /// in error messages.
    fn from(config: Config) -> Self {
        Self {
            config,
            origins: Origins::tracked(),
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($ty:ty) => $env:ident, |$c:ident, $v:ident| $assign:expr;)+) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $name(mut self, value: $ty) -> Self {
                let $c = &mut self.config;
                let $v = value;
                $assign;
                self.origins.record($env, Origin::Code { key: toml_key_of($env) });
                self
            }
        )+
    };
}

impl ConfigBuilder {
    /// Sets a key from text, parsed exactly as the environment would be.
    /// `key` is a variable name (`ARQONBUS_PORT`, aliases too) or a TOML key
    /// (`port`). An empty value unsets an optional key.
    pub fn set(mut self, key: &str, value: &str) -> Result<Self, ConfigError> {
        let origin = Origin::Code {
            key: key.to_owned(),
        };
        let Some((index, _)) = keys::by_env(key).or_else(|| keys::by_toml(key)) else {
            return Err(ConfigError::UnknownKey {
                suggestion: keys::suggest(key),
                origin,
            });
        };
        let spec = &KEYS[index];
        apply(
            &mut self.config,
            spec,
            &RawValue::Text(value.to_owned()),
            &origin,
        )?;
        self.origins.record(spec.env, origin);
        Ok(self)
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<Config, ConfigError> {
        validate(&self.config, &self.origins)?;
        Ok(self.config)
    }

    setters! {
        /// Bus listener address.
        host(impl Into<String>) => HOST, |c, v| c.server.host = v.into();
        /// Bus listener port; `0` picks a free one.
        port(u16) => PORT, |c, v| c.server.port = v;
        /// Telemetry listener address.
        telemetry_host(impl Into<String>) => TELEMETRY_HOST, |c, v| c.server.telemetry_host = v.into();
        /// Telemetry listener port; `0` picks a free one.
        telemetry_port(u16) => TELEMETRY_PORT, |c, v| c.server.telemetry_port = v;
        /// Extra HTTP endpoints port, or `None`.
        http_port(Option<u16>) => HTTP_PORT, |c, v| c.server.http_port = v;
        /// Concurrent bus connections.
        max_connections(usize) => MAX_CONNECTIONS, |c, v| c.server.max_connections = v;
        /// Largest accepted frame, in bytes.
        max_message_size(usize) => MAX_MESSAGE_SIZE, |c, v| c.server.max_message_size = v;
        /// Interval between server pings.
        ping_interval(Duration) => PING_INTERVAL_SECS, |c, v| c.server.ping_interval = v;
        /// Idle connections are closed after this long.
        idle_timeout(Duration) => IDLE_TIMEOUT_SECS, |c, v| c.server.idle_timeout = v;
        /// Time allowed for the WebSocket handshake.
        handshake_timeout(Duration) => HANDSHAKE_TIMEOUT_SECS, |c, v| c.server.handshake_timeout = v;
        /// Time allowed for graceful shutdown.
        shutdown_grace(Duration) => SHUTDOWN_GRACE_SECS, |c, v| c.server.shutdown_grace = v;
        /// A write making no progress this long aborts the connection.
        write_timeout(Duration) => WRITE_TIMEOUT_SECS, |c, v| c.server.write_timeout = v;
        /// How long a busy connection may hold channel messages to batch them.
        write_coalesce(Duration) => WRITE_COALESCE_MS, |c, v| c.server.write_coalesce = v;
        /// Each step of a WebSocket close handshake may take this long.
        close_timeout(Duration) => CLOSE_TIMEOUT_MS, |c, v| c.server.close_timeout = v;
        /// Concurrent telemetry connections.
        telemetry_max_connections(usize) => TELEMETRY_MAX_CONNECTIONS, |c, v| c.server.telemetry_max_connections = v;
        /// Browser origins allowed besides same-origin ones.
        allowed_origins(Vec<String>) => ALLOWED_ORIGINS, |c, v| c.server.allowed_origins = v;
        /// PEM certificate chain for TLS.
        tls_cert(impl Into<std::path::PathBuf>) => TLS_CERT, |c, v| c.server.tls_cert = Some(v.into());
        /// PEM private key for TLS.
        tls_key(impl Into<std::path::PathBuf>) => TLS_KEY, |c, v| c.server.tls_key = Some(v.into());
        /// Frames per second per connection; `0` turns rate limiting off.
        rate_limit_per_sec(u32) => RATE_LIMIT_PER_SEC, |c, v| c.limits.rate_limit_per_sec = v;
        /// Token bucket capacity.
        rate_limit_burst(u32) => RATE_LIMIT_BURST, |c, v| c.limits.rate_limit_burst = v;
        /// Violations within the window before the connection is closed.
        max_violations(u32) => MAX_VIOLATIONS, |c, v| c.limits.max_violations = v;
        /// Sliding window for counting violations.
        violation_window(Duration) => VIOLATION_WINDOW_SECS, |c, v| c.limits.violation_window = v;
        /// Outbound queue bound per connection, in bytes.
        client_queue_bytes(usize) => CLIENT_QUEUE_BYTES, |c, v| c.routing.client_queue_bytes = v;
        /// What happens when a subscriber's queue is full.
        slow_consumer(SlowConsumerPolicy) => SLOW_CONSUMER, |c, v| c.routing.slow_consumer = v;
        /// Whether publishing requires being subscribed.
        publish_requires_join(bool) => PUBLISH_REQUIRES_JOIN, |c, v| c.routing.publish_requires_join = v;
        /// Whether `join_channel` creates missing channels.
        auto_create_channels(bool) => AUTO_CREATE_CHANNELS, |c, v| c.routing.auto_create_channels = v;
        /// Members per channel; `0` = unlimited.
        max_channel_members(usize) => MAX_CHANNEL_MEMBERS, |c, v| c.routing.max_channel_members = v;
        /// Channels one client may join.
        max_subscriptions(usize) => MAX_SUBSCRIPTIONS, |c, v| c.routing.max_subscriptions = v;
        /// System channels, `"room:channel"` each.
        system_channels(Vec<String>) => SYSTEM_CHANNELS, |c, v| c.routing.system_channels = v;
        /// Idle auto-created channels are removed after this; `None` = never.
        empty_channel_ttl(Option<Duration>) => EMPTY_CHANNEL_TTL_SECS, |c, v| c.routing.empty_channel_ttl = v;
        /// Most messages one recovering join returns.
        recovery_max(usize) => RECOVERY_MAX, |c, v| c.routing.recovery_max = v;
        /// History backend.
        storage(StorageBackend) => STORAGE, |c, v| c.storage.backend = v;
        /// Behaviour while Redis is down.
        storage_mode(StorageMode) => STORAGE_MODE, |c, v| c.storage.mode = v;
        /// Messages kept per channel in memory.
        history_size(usize) => HISTORY_SIZE, |c, v| c.storage.history_size = v;
        /// Bytes of memory history per channel.
        history_max_bytes(usize) => HISTORY_MAX_BYTES, |c, v| c.storage.history_max_bytes = v;
        /// Bytes of memory history in all channels.
        history_memory_bytes(usize) => HISTORY_MEMORY_BYTES, |c, v| c.storage.history_memory_bytes = v;
        /// Redis URL.
        redis_url(impl Into<String>) => REDIS_URL, |c, v| c.storage.redis_url = v.into();
        /// Approximate cap of each channel's stream.
        redis_stream_maxlen(u64) => REDIS_STREAM_MAXLEN, |c, v| c.storage.redis_stream_maxlen = v;
        /// Redis history expiry; `None` = never.
        history_ttl(Option<Duration>) => HISTORY_TTL_SECS, |c, v| c.storage.history_ttl = v;
        /// Messages buffered in memory while waiting for Redis.
        storage_buffer_messages(usize) => STORAGE_BUFFER_MESSAGES, |c, v| c.storage.buffer_messages = v;
        /// Wait for a Redis connection.
        redis_connect_timeout(Duration) => REDIS_CONNECT_TIMEOUT_MS, |c, v| c.storage.redis_connect_timeout = v;
        /// Wait for a Redis command before the connection counts as broken.
        redis_command_timeout(Duration) => REDIS_COMMAND_TIMEOUT_MS, |c, v| c.storage.redis_command_timeout = v;
        /// Authentication mode.
        auth(AuthMode) => AUTH, |c, v| c.auth.mode = v;
        /// Admin token (`auth=token`).
        admin_token(impl Into<Secret>) => ADMIN_TOKEN, |c, v| c.auth.admin_token = Some(v.into());
        /// HS256 secret (`auth=jwt`).
        jwt_secret(impl Into<Secret>) => JWT_SECRET, |c, v| c.auth.jwt_secret = Some(v.into());
        /// Bearer key of the HTTP server API.
        api_key(impl Into<Secret>) => API_KEY, |c, v| c.auth.api_key = Some(v.into());
        /// Telemetry system channel.
        telemetry_channel(impl Into<String>) => TELEMETRY_CHANNEL, |c, v| c.telemetry.channel = v.into();
        /// Agent activity channel.
        dashboard_channel(impl Into<String>) => DASHBOARD_CHANNEL, |c, v| c.telemetry.dashboard_channel = v.into();
        /// Interval between `stats` events.
        telemetry_stats_interval(Duration) => TELEMETRY_STATS_INTERVAL_MS, |c, v| c.telemetry.stats_interval = v;
        /// Cluster mode.
        cluster(ClusterMode) => CLUSTER, |c, v| c.cluster.mode = v;
        /// This node's id.
        node_id(impl Into<String>) => NODE_ID, |c, v| c.cluster.node_id = v.into();
        /// How often a cluster node renews its presence.
        cluster_heartbeat(Duration) => CLUSTER_HEARTBEAT_MS, |c, v| c.cluster.heartbeat = v;
        /// How long a node counts as alive after its last heartbeat.
        cluster_node_ttl(Duration) => CLUSTER_NODE_TTL_MS, |c, v| c.cluster.node_ttl = v;
        /// How long startup waits for the cluster's Redis.
        cluster_connect_timeout(Duration) => CLUSTER_CONNECT_TIMEOUT_MS, |c, v| c.cluster.connect_timeout = v;
        /// How long a cluster Redis command may take.
        cluster_command_timeout(Duration) => CLUSTER_COMMAND_TIMEOUT_MS, |c, v| c.cluster.command_timeout = v;
        /// Bound of each cluster queue.
        cluster_queue_capacity(usize) => CLUSTER_QUEUE_CAPACITY, |c, v| c.cluster.queue_capacity = v;
        /// Most publishes in one Redis pipeline.
        cluster_publish_batch(usize) => CLUSTER_PUBLISH_BATCH, |c, v| c.cluster.publish_batch = v;
        /// Log level or filter directive.
        log_level(impl Into<String>) => LOG_LEVEL, |c, v| c.log.level = v.into();
        /// Log output format.
        log_format(LogFormat) => LOG_FORMAT, |c, v| c.log.format = v;
    }
}
