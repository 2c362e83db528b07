//! Typed parsing of one raw value into its field. Every source (file,
//! environment, flags, builder) goes through [`apply`], so a value means the
//! same thing wherever it is written.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use config::{Value, ValueKind};

use crate::error::{ConfigError, Origin};
use crate::keys::KeySpec;
use crate::keys::names::*;
use crate::types::{
    AuthMode, ClusterMode, Config, LogFormat, Secret, SlowConsumerPolicy, StorageBackend,
    StorageMode, redact_url,
};

/// A value as read from a source.
#[derive(Debug, Clone)]
pub(crate) enum RawValue {
    /// Environment, command line, builder.
    Text(String),
    /// A TOML value (native type) from the file.
    Toml(Value),
}

const EXPECT_PORT: &str = "an integer from 0 to 65535";
const EXPECT_U32: &str = "an integer from 0 to 4294967295";
const EXPECT_UINT: &str = "a non-negative integer";
const EXPECT_SECS: &str = "a whole number of seconds";
const EXPECT_MS: &str = "a whole number of milliseconds";
const EXPECT_BOOL: &str = "true, false, 1, 0, yes or no";
const EXPECT_STRING: &str = "a string";
const EXPECT_SECRET: &str = "a non-blank secret (unset the variable instead of leaving it empty)";
const EXPECT_PATH: &str = "a file path";
const EXPECT_ORIGINS: &str = "a comma-separated list of origins";
const EXPECT_CHANNELS: &str = "a comma-separated list or array of \"room:channel\" names";

/// One value on its way into the config: the raw input and where it came from.
struct Input<'a> {
    raw: &'a RawValue,
    origin: &'a Origin,
    secret: bool,
    /// A URL that may carry a password: shown with it hidden.
    url: bool,
}

impl Input<'_> {
    /// The value as the user wrote it, for error messages.
    fn shown(&self) -> String {
        if self.secret {
            return "<redacted>".to_owned();
        }
        let shown = match self.raw {
            RawValue::Text(text) => text.clone(),
            RawValue::Toml(value) => render(value),
        };
        if self.url { redact_url(&shown) } else { shown }
    }

    fn invalid(&self, expected: &'static str) -> ConfigError {
        ConfigError::InvalidValue {
            origin: self.origin.clone(),
            value: self.shown(),
            expected,
        }
    }

    /// The value as text: environment text as is, TOML scalars in their TOML
    /// spelling. Arrays and tables are not text.
    fn text(&self, expected: &'static str) -> Result<Cow<'_, str>, ConfigError> {
        match self.raw {
            RawValue::Text(text) => Ok(Cow::Borrowed(text)),
            RawValue::Toml(value) => match &value.kind {
                ValueKind::String(text) => Ok(Cow::Borrowed(text)),
                ValueKind::Boolean(_)
                | ValueKind::I64(_)
                | ValueKind::I128(_)
                | ValueKind::U64(_)
                | ValueKind::U128(_)
                | ValueKind::Float(_) => Ok(Cow::Owned(render(value))),
                ValueKind::Nil | ValueKind::Table(_) | ValueKind::Array(_) => {
                    Err(self.invalid(expected))
                }
            },
        }
    }

    /// Trimmed text; `None` when empty (an optional key left unset).
    fn optional_text(&self, expected: &'static str) -> Result<Option<String>, ConfigError> {
        let text = self.text(expected)?;
        let trimmed = text.trim();
        Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
    }

    fn string(&self) -> Result<String, ConfigError> {
        Ok(self.text(EXPECT_STRING)?.trim().to_owned())
    }

    fn uint<T: TryFrom<u64>>(&self, expected: &'static str) -> Result<T, ConfigError> {
        let text = self.text(expected)?;
        text.trim()
            .parse::<u64>()
            .ok()
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| self.invalid(expected))
    }

    fn port(&self) -> Result<u16, ConfigError> {
        self.uint(EXPECT_PORT)
    }

    fn optional_port(&self) -> Result<Option<u16>, ConfigError> {
        match self.optional_text(EXPECT_PORT)? {
            None => Ok(None),
            Some(text) => text
                .parse::<u16>()
                .map(Some)
                .map_err(|_| self.invalid(EXPECT_PORT)),
        }
    }

    fn secs(&self) -> Result<Duration, ConfigError> {
        self.uint::<u64>(EXPECT_SECS).map(Duration::from_secs)
    }

    fn millis(&self) -> Result<Duration, ConfigError> {
        self.uint::<u64>(EXPECT_MS).map(Duration::from_millis)
    }

    fn boolean(&self) -> Result<bool, ConfigError> {
        let text = self.text(EXPECT_BOOL)?;
        let text = text.trim();
        if ["true", "1", "yes"]
            .iter()
            .any(|t| text.eq_ignore_ascii_case(t))
        {
            Ok(true)
        } else if ["false", "0", "no"]
            .iter()
            .any(|t| text.eq_ignore_ascii_case(t))
        {
            Ok(false)
        } else {
            Err(self.invalid(EXPECT_BOOL))
        }
    }

    fn choice<T>(
        &self,
        parse: fn(&str) -> Option<T>,
        expected: &'static str,
    ) -> Result<T, ConfigError> {
        let text = self.text(expected)?;
        parse(text.trim()).ok_or_else(|| self.invalid(expected))
    }

    /// A secret, kept byte for byte. Set but empty or blank is invalid
    /// (SPEC §18): a blank credential is a mistake, never "no credential".
    fn secret(&self) -> Result<Option<Secret>, ConfigError> {
        let text = self.text(EXPECT_SECRET)?;
        if text.trim().is_empty() {
            return Err(self.invalid(EXPECT_SECRET));
        }
        Ok(Some(Secret::new(text.into_owned())))
    }

    /// A comma-separated string or an array of strings (each of which may
    /// hold commas too); entries trimmed, empty entries skipped.
    fn list(&self, expected: &'static str) -> Result<Vec<String>, ConfigError> {
        let mut entries = Vec::new();
        let mut push = |entry: &str| {
            let entry = entry.trim();
            if !entry.is_empty() {
                entries.push(entry.to_owned());
            }
        };
        match self.raw {
            RawValue::Toml(Value {
                kind: ValueKind::Array(items),
                ..
            }) => {
                for item in items {
                    match &item.kind {
                        ValueKind::String(text) => text.split(',').for_each(&mut push),
                        _ => return Err(self.invalid(expected)),
                    }
                }
            }
            _ => self.text(expected)?.split(',').for_each(&mut push),
        }
        Ok(entries)
    }

    /// A file path; empty = unset.
    fn optional_path(&self) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.optional_text(EXPECT_PATH)?.map(PathBuf::from))
    }

    /// A list of channel names ([`Input::list`]) with duplicates dropped.
    /// Names are checked by validation.
    fn channels(&self) -> Result<Vec<String>, ConfigError> {
        let mut entries = self.list(EXPECT_CHANNELS)?;
        let mut seen = std::collections::HashSet::new();
        entries.retain(|entry| seen.insert(entry.clone()));
        Ok(entries)
    }
}

/// Renders a TOML value the way it is written.
fn render(value: &Value) -> String {
    match &value.kind {
        ValueKind::Nil => String::new(),
        ValueKind::String(text) => text.clone(),
        ValueKind::Array(items) => {
            let items: Vec<String> = items.iter().map(render).collect();
            format!("[{}]", items.join(", "))
        }
        ValueKind::Table(_) => "{table}".to_owned(),
        other => other.to_string(),
    }
}

/// Parses `raw` for the key `spec` and stores it in `config`.
pub(crate) fn apply(
    config: &mut Config,
    spec: &KeySpec,
    raw: &RawValue,
    origin: &Origin,
) -> Result<(), ConfigError> {
    let input = Input {
        raw,
        origin,
        secret: matches!(spec.env, ADMIN_TOKEN | JWT_SECRET | API_KEY),
        url: spec.env == REDIS_URL,
    };
    let server = &mut config.server;
    let limits = &mut config.limits;
    let routing = &mut config.routing;
    let storage = &mut config.storage;
    match spec.env {
        HOST => server.host = input.string()?,
        PORT => server.port = input.port()?,
        TELEMETRY_HOST => server.telemetry_host = input.string()?,
        TELEMETRY_PORT => server.telemetry_port = input.port()?,
        HTTP_PORT => server.http_port = input.optional_port()?,
        MAX_CONNECTIONS => server.max_connections = input.uint(EXPECT_UINT)?,
        MAX_MESSAGE_SIZE => server.max_message_size = input.uint(EXPECT_UINT)?,
        PING_INTERVAL_SECS => server.ping_interval = input.secs()?,
        IDLE_TIMEOUT_SECS => server.idle_timeout = input.secs()?,
        HANDSHAKE_TIMEOUT_SECS => server.handshake_timeout = input.secs()?,
        SHUTDOWN_GRACE_SECS => server.shutdown_grace = input.secs()?,
        WRITE_TIMEOUT_SECS => server.write_timeout = input.secs()?,
        WRITE_COALESCE_MS => server.write_coalesce = input.millis()?,
        CLOSE_TIMEOUT_MS => server.close_timeout = input.millis()?,
        TELEMETRY_MAX_CONNECTIONS => server.telemetry_max_connections = input.uint(EXPECT_UINT)?,
        ALLOWED_ORIGINS => server.allowed_origins = input.list(EXPECT_ORIGINS)?,
        TLS_CERT => server.tls_cert = input.optional_path()?,
        TLS_KEY => server.tls_key = input.optional_path()?,
        RATE_LIMIT_PER_SEC => limits.rate_limit_per_sec = input.uint(EXPECT_U32)?,
        RATE_LIMIT_BURST => limits.rate_limit_burst = input.uint(EXPECT_U32)?,
        MAX_VIOLATIONS => limits.max_violations = input.uint(EXPECT_U32)?,
        VIOLATION_WINDOW_SECS => limits.violation_window = input.secs()?,
        CLIENT_QUEUE_BYTES => routing.client_queue_bytes = input.uint(EXPECT_UINT)?,
        SLOW_CONSUMER => {
            routing.slow_consumer =
                input.choice(SlowConsumerPolicy::parse, "one of disconnect, drop")?;
        }
        PUBLISH_REQUIRES_JOIN => routing.publish_requires_join = input.boolean()?,
        AUTO_CREATE_CHANNELS => routing.auto_create_channels = input.boolean()?,
        MAX_CHANNEL_MEMBERS => routing.max_channel_members = input.uint(EXPECT_UINT)?,
        MAX_SUBSCRIPTIONS => routing.max_subscriptions = input.uint(EXPECT_UINT)?,
        SYSTEM_CHANNELS => routing.system_channels = input.channels()?,
        EMPTY_CHANNEL_TTL_SECS => {
            let ttl = input.secs()?;
            routing.empty_channel_ttl = (!ttl.is_zero()).then_some(ttl);
        }
        RECOVERY_MAX => routing.recovery_max = input.uint(EXPECT_UINT)?,
        STORAGE => {
            storage.backend =
                input.choice(StorageBackend::parse, "one of memory, redis, redis_streams")?;
        }
        STORAGE_MODE => {
            storage.mode = input.choice(StorageMode::parse, "one of degraded, strict")?;
        }
        HISTORY_SIZE => storage.history_size = input.uint(EXPECT_UINT)?,
        HISTORY_MAX_BYTES => storage.history_max_bytes = input.uint(EXPECT_UINT)?,
        HISTORY_MEMORY_BYTES => storage.history_memory_bytes = input.uint(EXPECT_UINT)?,
        REDIS_URL => storage.redis_url = input.string()?,
        REDIS_STREAM_MAXLEN => storage.redis_stream_maxlen = input.uint(EXPECT_UINT)?,
        HISTORY_TTL_SECS => {
            let ttl = input.secs()?;
            storage.history_ttl = (!ttl.is_zero()).then_some(ttl);
        }
        STORAGE_BUFFER_MESSAGES => storage.buffer_messages = input.uint(EXPECT_UINT)?,
        REDIS_CONNECT_TIMEOUT_MS => storage.redis_connect_timeout = input.millis()?,
        REDIS_COMMAND_TIMEOUT_MS => storage.redis_command_timeout = input.millis()?,
        AUTH => config.auth.mode = input.choice(AuthMode::parse, "one of none, token, jwt")?,
        ADMIN_TOKEN => config.auth.admin_token = input.secret()?,
        JWT_SECRET => config.auth.jwt_secret = input.secret()?,
        API_KEY => config.auth.api_key = input.secret()?,
        TELEMETRY_CHANNEL => config.telemetry.channel = input.string()?,
        DASHBOARD_CHANNEL => config.telemetry.dashboard_channel = input.string()?,
        TELEMETRY_STATS_INTERVAL_MS => config.telemetry.stats_interval = input.millis()?,
        CLUSTER => {
            config.cluster.mode = input.choice(ClusterMode::parse, "one of none, redis")?;
        }
        NODE_ID => {
            // Empty = unset: keep the (random) default.
            if let Some(id) = input.optional_text(EXPECT_STRING)? {
                config.cluster.node_id = id;
            }
        }
        CLUSTER_HEARTBEAT_MS => config.cluster.heartbeat = input.millis()?,
        CLUSTER_NODE_TTL_MS => config.cluster.node_ttl = input.millis()?,
        CLUSTER_CONNECT_TIMEOUT_MS => config.cluster.connect_timeout = input.millis()?,
        CLUSTER_COMMAND_TIMEOUT_MS => config.cluster.command_timeout = input.millis()?,
        CLUSTER_QUEUE_CAPACITY => config.cluster.queue_capacity = input.uint(EXPECT_UINT)?,
        CLUSTER_PUBLISH_BATCH => config.cluster.publish_batch = input.uint(EXPECT_UINT)?,
        LOG_LEVEL => config.log.level = input.string()?,
        LOG_FORMAT => config.log.format = input.choice(LogFormat::parse, "one of text, json")?,
        // `KEYS` and this match are kept in step by a test; a key without a
        // parser is reported rather than silently ignored.
        _ => {
            return Err(ConfigError::UnknownKey {
                origin: origin.clone(),
                suggestion: None,
            });
        }
    }
    Ok(())
}
