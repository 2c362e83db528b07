//! With nothing set, the configuration is SPEC §13's defaults, and every
//! default in the key registry parses to the same value.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use arqon_config::*;
use support::*;

#[test]
fn defaults_equal_the_spec() {
    let c = Config::default();
    assert_eq!(c.server.host, "127.0.0.1");
    assert_eq!(c.server.port, 9100);
    assert_eq!(c.server.telemetry_host, "127.0.0.1");
    assert_eq!(c.server.telemetry_port, 9101);
    assert_eq!(c.server.http_port, None);
    assert_eq!(c.server.max_connections, 100_000);
    assert_eq!(c.server.max_message_size, 1_048_576);
    assert_eq!(c.server.ping_interval, Duration::from_secs(20));
    assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.server.handshake_timeout, Duration::from_secs(10));
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(10));
    assert_eq!(c.server.close_timeout, Duration::from_secs(1));
    assert_eq!(c.limits.rate_limit_per_sec, 1000);
    assert_eq!(c.limits.rate_limit_burst, 2000);
    assert_eq!(c.limits.max_violations, 10);
    assert_eq!(c.limits.violation_window, Duration::from_secs(60));
    assert_eq!(c.routing.client_queue_bytes, 1_048_576);
    assert_eq!(c.routing.slow_consumer, SlowConsumerPolicy::Disconnect);
    assert!(c.routing.publish_requires_join);
    assert!(c.routing.auto_create_channels);
    assert_eq!(c.routing.max_channel_members, 0);
    assert_eq!(c.routing.max_subscriptions, 1000);
    assert_eq!(
        c.routing.system_channels,
        [
            "integriguard:telemetry-stream",
            "integriguard:dashboard-events"
        ]
    );
    assert_eq!(c.storage.backend, StorageBackend::Memory);
    assert_eq!(c.storage.mode, StorageMode::Degraded);
    assert_eq!(c.storage.history_size, 500);
    assert_eq!(c.storage.redis_url, "redis://127.0.0.1:6379");
    assert_eq!(c.storage.redis_stream_maxlen, 10_000);
    assert_eq!(c.storage.history_ttl, Some(Duration::from_secs(86_400)));
    assert_eq!(c.storage.buffer_messages, 100_000);
    assert_eq!(c.storage.redis_connect_timeout, Duration::from_secs(2));
    assert_eq!(c.storage.redis_command_timeout, Duration::from_secs(5));
    assert_eq!(c.auth.mode, AuthMode::None);
    assert!(c.auth.admin_token.is_none());
    assert!(c.auth.jwt_secret.is_none());
    assert_eq!(c.telemetry.channel, "integriguard:telemetry-stream");
    assert_eq!(
        c.telemetry.dashboard_channel,
        "integriguard:dashboard-events"
    );
    assert_eq!(c.telemetry.stats_interval, Duration::from_millis(1000));
    assert_eq!(c.cluster.mode, ClusterMode::None);
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Text);
    c.validate().unwrap();
}

#[test]
fn default_node_id_is_random_node_and_12_hex() {
    let a = Config::default().cluster.node_id;
    let b = Config::default().cluster.node_id;
    for id in [&a, &b] {
        let hex = id.strip_prefix("node-").unwrap();
        assert_eq!(hex.len(), 12, "{id}");
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{id}"
        );
    }
    assert_ne!(a, b, "two defaults drew the same node id");
}

#[test]
fn loading_nothing_gives_the_defaults() {
    let loaded = load(Sources::default()).unwrap();
    assert_eq!(
        fingerprint(&loaded, false),
        fingerprint(&Config::default(), false)
    );
}

#[test]
fn registry_defaults_parse_to_the_struct_defaults() {
    let expected = fingerprint(&Config::builder().build().unwrap(), false);
    for spec in KEYS {
        if spec.default.starts_with('(') {
            continue; // (unset), (random …)
        }
        let config = Config::builder()
            .set(spec.env, spec.default)
            .and_then(ConfigBuilder::build)
            .unwrap_or_else(|e| panic!("{}: {e}", spec.env));
        assert_eq!(fingerprint(&config, false), expected, "{}", spec.env);
    }
}

#[test]
fn enum_spellings() {
    assert_eq!(SlowConsumerPolicy::Drop.as_str(), "drop");
    assert_eq!(StorageBackend::Redis.as_str(), "redis");
    assert_eq!(StorageMode::Strict.to_string(), "strict");
    assert_eq!(AuthMode::Jwt.as_str(), "jwt");
    assert_eq!(ClusterMode::Redis.as_str(), "redis");
    assert_eq!(LogFormat::Json.as_str(), "json");
}
