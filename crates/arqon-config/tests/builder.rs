//! `Config::builder()`: typed setters, `set` by any name, and validation
//! naming the setter.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use arqon_config::*;
use support::*;

#[test]
fn builder_typed_setters() {
    let c = Config::builder()
        .host("0.0.0.0")
        .port(0)
        .telemetry_port(0)
        .http_port(Some(0))
        .rate_limit_per_sec(5)
        .rate_limit_burst(5)
        .max_violations(3)
        .client_queue_bytes(4096)
        .slow_consumer(SlowConsumerPolicy::Drop)
        .max_message_size(1024)
        .idle_timeout(Duration::from_millis(500))
        .ping_interval(Duration::from_millis(100))
        .storage(StorageBackend::Redis)
        .cluster(ClusterMode::Redis)
        .auth(AuthMode::Token)
        .admin_token("adm")
        .system_channels(vec!["a:b".to_owned()])
        .build()
        .unwrap();
    assert_eq!(c.server.host, "0.0.0.0");
    assert_eq!((c.server.port, c.server.telemetry_port), (0, 0));
    assert_eq!(c.limits.rate_limit_per_sec, 5);
    assert_eq!(c.limits.max_violations, 3);
    assert_eq!(c.routing.client_queue_bytes, 4096);
    assert_eq!(c.routing.slow_consumer, SlowConsumerPolicy::Drop);
    assert_eq!(c.server.max_message_size, 1024);
    assert_eq!(c.auth.admin_token.unwrap().expose(), "adm");
}

#[test]
fn builder_set_accepts_env_and_toml_names() {
    let c = Config::builder()
        .set("ARQONBUS_PORT", "1234")
        .unwrap()
        .set("max_subscriptions", "7")
        .unwrap()
        .set("storage_backend", "redis_streams")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(c.server.port, 1234);
    assert_eq!(c.routing.max_subscriptions, 7);
    assert_eq!(c.storage.backend, StorageBackend::Redis);

    let err = Config::builder().set("ARQONBUS_PROT", "1").unwrap_err();
    assert_eq!(message(&err), "ARQONBUS_PROT (set in code): unknown key");
    let err = Config::builder().set("ARQONBUS_PORT", "x").unwrap_err();
    assert_eq!(
        message(&err),
        "ARQONBUS_PORT (set in code): invalid value \"x\": expected an integer from 0 to 65535"
    );
}

#[test]
fn builder_build_validates_and_names_the_setter() {
    let err = Config::builder().client_queue_bytes(0).build().unwrap_err();
    assert_eq!(
        message(&err),
        "client_queue_bytes (set in code): invalid value \"0\": expected an integer of at least 1"
    );
    let err = Config::builder()
        .cluster(ClusterMode::Redis)
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::ClusterRequiresRedis { .. }));
}

#[test]
fn hand_built_config_validates_with_canonical_names() {
    let mut config = Config::default();
    config.server.ping_interval = Duration::ZERO;
    assert_eq!(
        message(&config.validate().unwrap_err()),
        "ARQONBUS_PING_INTERVAL_SECS: invalid value \"0\": expected a whole number of seconds of at least 1"
    );
    let mut config = Config::default();
    config.auth.mode = AuthMode::Jwt;
    assert_eq!(
        message(&config.validate().unwrap_err()),
        "ARQONBUS_AUTH: auth mode \"jwt\" requires ARQONBUS_JWT_SECRET to be set"
    );
}

#[test]
fn builders_are_independent() {
    let a = Config::builder().port(1).build().unwrap();
    let b = Config::builder().port(2).build().unwrap();
    assert_eq!((a.server.port, b.server.port), (1, 2));
    let c = ConfigBuilder::from(a.clone())
        .telemetry_port(3)
        .build()
        .unwrap();
    assert_eq!((c.server.port, c.server.telemetry_port), (1, 3));
}
