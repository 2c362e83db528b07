//! Rules that hold after merging every source: ranges, names, and the
//! cross-field rules of SPEC §7, §9, §10.

use std::collections::HashMap;
use std::time::Duration;

use crate::error::{ConfigError, Origin};
use crate::keys::names::*;
use crate::types::{AuthMode, ClusterMode, Config, ServerConfig, StorageBackend, redact_url};

/// Where each key's current value came from, by canonical name.
#[derive(Debug, Clone)]
pub(crate) struct Origins {
    set: HashMap<&'static str, Origin>,
    /// Whether keys never set are known to hold their default.
    tracked: bool,
}

impl Origins {
    /// Origins of a configuration built from defaults up.
    pub(crate) fn tracked() -> Self {
        Self {
            set: HashMap::new(),
            tracked: true,
        }
    }

    /// Origins of a configuration of unknown history.
    pub(crate) fn untracked() -> Self {
        Self {
            set: HashMap::new(),
            tracked: false,
        }
    }

    pub(crate) fn record(&mut self, env: &'static str, origin: Origin) {
        self.set.insert(env, origin);
    }

    pub(crate) fn of(&self, env: &'static str) -> Origin {
        match self.set.get(env) {
            Some(origin) => origin.clone(),
            None if self.tracked => Origin::Default { env },
            None => Origin::Unspecified { env },
        }
    }
}

const CHANNEL_RULE: &str = "\"room:channel\" with each side 1-64 characters of [A-Za-z0-9_.-]";
const NODE_ID_RULE: &str = "1-64 characters of [A-Za-z0-9_.:-]";
const HOST_RULE: &str = "a host name or IP address";
const AT_LEAST_ONE: &str = "an integer of at least 1";
const AT_LEAST_ONE_SEC: &str = "a whole number of seconds of at least 1";
const AT_LEAST_ONE_MS: &str = "a whole number of milliseconds of at least 1";
const REDIS_URL_RULE: &str =
    "a URL such as redis://host:port, rediss://… or redis-cluster://host:port,…";
const ORIGIN_RULE: &str = "an origin such as https://app.example.com or http://localhost:8080, a host wildcard such as https://*.example.com, or *";
const SECRET_RULE: &str = "a non-blank secret (unset it instead)";
const LOG_LEVEL_RULE: &str =
    "trace, debug, info, warn, error, off, or a directive such as info,arqon_routing=debug";

/// Checks every rule; the first violation, in `KEYS` order, is returned.
/// SPEC §10: a dead node's members are gone within 30 s.
const MAX_NODE_TTL: Duration = Duration::from_secs(30);
/// The longest write-coalescing window: beyond it, batching is latency.
const MAX_WRITE_COALESCE: Duration = Duration::from_secs(1);

pub(crate) fn validate(config: &Config, origins: &Origins) -> Result<(), ConfigError> {
    let invalid = |env: &'static str, value: String, expected: &'static str| {
        Err(ConfigError::InvalidValue {
            origin: origins.of(env),
            value,
            expected,
        })
    };
    let at_least_one = |env: &'static str, value: u64| {
        if value == 0 {
            invalid(env, value.to_string(), AT_LEAST_ONE)
        } else {
            Ok(())
        }
    };
    let positive_secs = |env: &'static str, value: Duration| {
        if value.is_zero() {
            invalid(env, "0".to_owned(), AT_LEAST_ONE_SEC)
        } else {
            Ok(())
        }
    };
    let positive_millis = |env: &'static str, value: Duration| {
        if value.is_zero() {
            invalid(env, "0".to_owned(), AT_LEAST_ONE_MS)
        } else {
            Ok(())
        }
    };

    let server = &config.server;
    for (env, host) in [
        (HOST, &server.host),
        (TELEMETRY_HOST, &server.telemetry_host),
    ] {
        if host.is_empty() || host.chars().any(char::is_whitespace) {
            return invalid(env, host.clone(), HOST_RULE);
        }
    }
    check_ports(config, origins)?;
    at_least_one(MAX_CONNECTIONS, widen(server.max_connections))?;
    at_least_one(MAX_MESSAGE_SIZE, widen(server.max_message_size))?;
    positive_secs(PING_INTERVAL_SECS, server.ping_interval)?;
    positive_secs(IDLE_TIMEOUT_SECS, server.idle_timeout)?;
    positive_secs(HANDSHAKE_TIMEOUT_SECS, server.handshake_timeout)?;
    positive_secs(WRITE_TIMEOUT_SECS, server.write_timeout)?;
    if server.write_coalesce > MAX_WRITE_COALESCE {
        return invalid(
            WRITE_COALESCE_MS,
            server.write_coalesce.as_millis().to_string(),
            "a whole number of milliseconds from 0 to 1000",
        );
    }
    positive_millis(CLOSE_TIMEOUT_MS, server.close_timeout)?;
    at_least_one(
        TELEMETRY_MAX_CONNECTIONS,
        widen(server.telemetry_max_connections),
    )?;
    for origin in &server.allowed_origins {
        if !is_origin_pattern(origin) {
            return invalid(ALLOWED_ORIGINS, origin.clone(), ORIGIN_RULE);
        }
    }
    check_tls(server, origins)?;

    let limits = &config.limits;
    if limits.rate_limit_per_sec > 0 {
        at_least_one(RATE_LIMIT_BURST, u64::from(limits.rate_limit_burst))?;
    }
    at_least_one(MAX_VIOLATIONS, u64::from(limits.max_violations))?;
    positive_secs(VIOLATION_WINDOW_SECS, limits.violation_window)?;

    let routing = &config.routing;
    at_least_one(CLIENT_QUEUE_BYTES, widen(routing.client_queue_bytes))?;
    at_least_one(MAX_SUBSCRIPTIONS, widen(routing.max_subscriptions))?;
    at_least_one(RECOVERY_MAX, widen(routing.recovery_max))?;
    if routing.empty_channel_ttl.is_some_and(|ttl| ttl.is_zero()) {
        // 0 means "never" on input and is stored as `None`.
        return invalid(
            EMPTY_CHANNEL_TTL_SECS,
            "0".to_owned(),
            "None for \"never\", or at least 1 second",
        );
    }
    for channel in &routing.system_channels {
        if !is_channel_name(channel) {
            return invalid(SYSTEM_CHANNELS, channel.clone(), CHANNEL_RULE);
        }
    }

    let storage = &config.storage;
    at_least_one(HISTORY_SIZE, widen(storage.history_size))?;
    at_least_one(HISTORY_MAX_BYTES, widen(storage.history_max_bytes))?;
    at_least_one(HISTORY_MEMORY_BYTES, widen(storage.history_memory_bytes))?;
    if !is_redis_url(&storage.redis_url) {
        return invalid(REDIS_URL, redact_url(&storage.redis_url), REDIS_URL_RULE);
    }
    at_least_one(REDIS_STREAM_MAXLEN, storage.redis_stream_maxlen)?;
    at_least_one(STORAGE_BUFFER_MESSAGES, widen(storage.buffer_messages))?;
    if storage.history_ttl.is_some_and(|ttl| ttl.is_zero()) {
        // 0 means "never" on input and is stored as `None`.
        return invalid(
            HISTORY_TTL_SECS,
            "0".to_owned(),
            "None for \"never\", or at least 1 second",
        );
    }
    positive_millis(REDIS_CONNECT_TIMEOUT_MS, storage.redis_connect_timeout)?;
    positive_millis(REDIS_COMMAND_TIMEOUT_MS, storage.redis_command_timeout)?;

    let auth = &config.auth;
    // Set but blank is a mistake in every auth mode (SPEC §18).
    for (env, secret) in [
        (ADMIN_TOKEN, &auth.admin_token),
        (JWT_SECRET, &auth.jwt_secret),
        (API_KEY, &auth.api_key),
    ] {
        if secret
            .as_ref()
            .is_some_and(|s| s.expose().trim().is_empty())
        {
            return invalid(env, "<redacted>".to_owned(), SECRET_RULE);
        }
    }
    let (secret, required) = match auth.mode {
        AuthMode::None => (None, ""),
        AuthMode::Token => (Some(&auth.admin_token), ADMIN_TOKEN),
        AuthMode::Jwt => (Some(&auth.jwt_secret), JWT_SECRET),
    };
    if let Some(secret) = secret
        && secret.as_ref().is_none_or(|s| s.is_empty())
    {
        return Err(ConfigError::MissingSecret {
            origin: origins.of(AUTH),
            mode: auth.mode,
            required,
        });
    }

    let telemetry = &config.telemetry;
    for (env, channel) in [
        (TELEMETRY_CHANNEL, &telemetry.channel),
        (DASHBOARD_CHANNEL, &telemetry.dashboard_channel),
    ] {
        if !is_channel_name(channel) {
            return invalid(env, channel.clone(), CHANNEL_RULE);
        }
    }
    positive_millis(TELEMETRY_STATS_INTERVAL_MS, telemetry.stats_interval)?;

    let cluster = &config.cluster;
    if cluster.mode == ClusterMode::Redis && storage.backend != StorageBackend::Redis {
        return Err(ConfigError::ClusterRequiresRedis {
            origin: origins.of(CLUSTER),
            storage: storage.backend,
            storage_origin: origins.of(STORAGE),
        });
    }
    if !is_node_id(&cluster.node_id) {
        return invalid(NODE_ID, cluster.node_id.clone(), NODE_ID_RULE);
    }
    positive_millis(CLUSTER_HEARTBEAT_MS, cluster.heartbeat)?;
    positive_millis(CLUSTER_CONNECT_TIMEOUT_MS, cluster.connect_timeout)?;
    positive_millis(CLUSTER_COMMAND_TIMEOUT_MS, cluster.command_timeout)?;
    // SPEC §10: a dead node's members go within 30 s; a TTL at or under
    // the heartbeat would let live nodes expire between two heartbeats.
    if cluster.node_ttl <= cluster.heartbeat || cluster.node_ttl > MAX_NODE_TTL {
        return invalid(
            CLUSTER_NODE_TTL_MS,
            cluster.node_ttl.as_millis().to_string(),
            "milliseconds above ARQONBUS_CLUSTER_HEARTBEAT_MS and at most 30000",
        );
    }
    at_least_one(CLUSTER_QUEUE_CAPACITY, widen(cluster.queue_capacity))?;
    at_least_one(CLUSTER_PUBLISH_BATCH, widen(cluster.publish_batch))?;

    if !is_log_filter(&config.log.level) {
        return invalid(LOG_LEVEL, config.log.level.clone(), LOG_LEVEL_RULE);
    }
    Ok(())
}

/// Both TLS files or neither, each a readable file.
fn check_tls(server: &ServerConfig, origins: &Origins) -> Result<(), ConfigError> {
    let files = [(TLS_CERT, &server.tls_cert), (TLS_KEY, &server.tls_key)];
    for ((env, file), (other_env, other)) in files.iter().zip(files.iter().rev()) {
        match file {
            Some(path) => {
                if let Err(err) = std::fs::File::open(path) {
                    return Err(ConfigError::InvalidValue {
                        origin: origins.of(env),
                        value: path.display().to_string(),
                        expected: if err.kind() == std::io::ErrorKind::NotFound {
                            "an existing PEM file"
                        } else {
                            "a readable PEM file"
                        },
                    });
                }
            }
            None if other.is_some() => {
                return Err(ConfigError::InvalidValue {
                    origin: origins.of(env),
                    value: String::new(),
                    expected: if *other_env == TLS_CERT {
                        "a PEM private key file, since ARQONBUS_TLS_CERT is set"
                    } else {
                        "a PEM certificate file, since ARQONBUS_TLS_KEY is set"
                    },
                });
            }
            None => {}
        }
    }
    Ok(())
}

/// `*`, or `scheme://host[:port]` where the host may start with `*.`.
fn is_origin_pattern(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let scheme_ok = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-'));
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || port.is_empty() => (host, Some(port)),
        _ => (rest, None),
    };
    let host = host.strip_prefix("*.").unwrap_or(host);
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
    scheme_ok && host_ok && port_ok
}

/// Two listeners on one host cannot share a non-zero port. The HTTP port
/// listens on the bus host.
fn check_ports(config: &Config, origins: &Origins) -> Result<(), ConfigError> {
    let server = &config.server;
    let mut listeners = vec![
        (PORT, server.host.as_str(), server.port),
        (
            TELEMETRY_PORT,
            server.telemetry_host.as_str(),
            server.telemetry_port,
        ),
    ];
    if let Some(http_port) = server.http_port {
        listeners.push((HTTP_PORT, server.host.as_str(), http_port));
    }
    for (later, &(env, host, port)) in listeners.iter().enumerate() {
        let clash = listeners[..later]
            .iter()
            .find(|&&(_, other_host, other_port)| {
                port != 0 && port == other_port && host == other_host
            });
        if let Some(&(other_env, _, _)) = clash {
            return Err(ConfigError::PortConflict {
                origin: origins.of(env),
                port,
                other: origins.of(other_env),
            });
        }
    }
    Ok(())
}

fn widen(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// `room:channel`, each side 1–64 chars of `[A-Za-z0-9_.-]` (SPEC §3).
pub(crate) fn is_channel_name(name: &str) -> bool {
    let segment = |s: &str| {
        (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    };
    name.split_once(':')
        .is_some_and(|(room, channel)| segment(room) && segment(channel))
}

fn is_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// `redis…://` followed by something.
fn is_redis_url(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, rest)| {
        scheme.starts_with("redis") && !rest.is_empty() && !url.chars().any(char::is_whitespace)
    })
}

/// A level, or comma-separated `level` / `target=level` directives.
fn is_log_filter(filter: &str) -> bool {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let level = |s: &str| LEVELS.iter().any(|l| s.eq_ignore_ascii_case(l));
    let target = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-'))
    };
    !filter.is_empty()
        && filter
            .split(',')
            .all(|directive| match directive.split_once('=') {
                Some((t, l)) => target(t) && level(l),
                None => level(directive),
            })
}
