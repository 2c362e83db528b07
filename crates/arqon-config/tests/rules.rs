//! Rules across keys and ranges (auth needs its secret, cluster needs
//! Redis, listener ports differ, limits are positive) name the key at
//! fault.

#![allow(clippy::unwrap_used)]

mod support;

use arqon_config::*;
use support::*;

#[test]
fn jwt_without_secret_is_an_error() {
    let err = load_env(&[("ARQONBUS_AUTH", "jwt")]).unwrap_err();
    assert_eq!(
        message(&err),
        "ARQONBUS_AUTH: auth mode \"jwt\" requires ARQONBUS_JWT_SECRET to be set"
    );
    assert!(matches!(
        err,
        ConfigError::MissingSecret {
            mode: AuthMode::Jwt,
            ..
        }
    ));

    let (file, result) = load_file("auth = \"jwt\"\n");
    assert_eq!(
        err_message(result),
        format!(
            "auth (in {}): auth mode \"jwt\" requires ARQONBUS_JWT_SECRET to be set",
            file.path.display()
        )
    );
    let c = load_env(&[("ARQONBUS_AUTH", "jwt"), ("ARQONBUS_AUTH_JWT_SECRET", "k")]).unwrap();
    assert_eq!(c.auth.mode, AuthMode::Jwt);
    assert_eq!(c.auth.jwt_secret.unwrap().expose(), "k");
    // A token does not stand in for the JWT secret.
    assert!(load_env(&[("ARQONBUS_AUTH", "jwt"), ("ARQONBUS_ADMIN_TOKEN", "t")]).is_err());
    // Nor does an empty secret set in code.
    assert!(
        Config::builder()
            .auth(AuthMode::Jwt)
            .jwt_secret("")
            .build()
            .is_err()
    );
}

#[test]
fn token_without_admin_token_is_an_error() {
    assert_eq!(
        err_message(load_env(&[("ARQONBUS_AUTH", "token")])),
        "ARQONBUS_AUTH: auth mode \"token\" requires ARQONBUS_ADMIN_TOKEN to be set"
    );
    let c = load_env(&[("ARQONBUS_AUTH", "token"), ("ARQONBUS_ADMIN_TOKEN", "t")]).unwrap();
    assert_eq!(c.auth.admin_token.unwrap().expose(), "t");
}

#[test]
fn cluster_requires_redis_storage() {
    let err = load_env(&[("ARQONBUS_CLUSTER", "redis")]).unwrap_err();
    assert_eq!(
        message(&err),
        "ARQONBUS_CLUSTER: cluster mode \"redis\" requires ARQONBUS_STORAGE=redis, \
         but ARQONBUS_STORAGE (default) is \"memory\""
    );
    assert_eq!(
        err_message(load(Sources {
            env: pairs(&[("ARQONBUS_CLUSTER", "redis")]),
            cli: pairs(&[("--storage", "memory")]),
            ..Sources::default()
        })),
        "ARQONBUS_CLUSTER: cluster mode \"redis\" requires ARQONBUS_STORAGE=redis, \
         but --storage is \"memory\""
    );
    let c = load_env(&[
        ("ARQONBUS_CLUSTER", "redis"),
        ("ARQONBUS_STORAGE_BACKEND", "redis_streams"),
    ])
    .unwrap();
    assert_eq!(c.cluster.mode, ClusterMode::Redis);
}

#[test]
fn range_rules_name_the_key() {
    for (env, value, expected) in [
        (
            "ARQONBUS_PING_INTERVAL_SECS",
            "0",
            "a whole number of seconds of at least 1",
        ),
        (
            "ARQONBUS_IDLE_TIMEOUT_SECS",
            "0",
            "a whole number of seconds of at least 1",
        ),
        (
            "ARQONBUS_HANDSHAKE_TIMEOUT_SECS",
            "0",
            "a whole number of seconds of at least 1",
        ),
        (
            "ARQONBUS_VIOLATION_WINDOW_SECS",
            "0",
            "a whole number of seconds of at least 1",
        ),
        ("ARQONBUS_MAX_MESSAGE_SIZE", "0", "an integer of at least 1"),
        ("ARQONBUS_MAX_CONNECTIONS", "0", "an integer of at least 1"),
        (
            "ARQONBUS_CLIENT_QUEUE_BYTES",
            "0",
            "an integer of at least 1",
        ),
        ("ARQONBUS_RATE_LIMIT_BURST", "0", "an integer of at least 1"),
        ("ARQONBUS_MAX_VIOLATIONS", "0", "an integer of at least 1"),
        (
            "ARQONBUS_MAX_SUBSCRIPTIONS",
            "0",
            "an integer of at least 1",
        ),
        ("ARQONBUS_HISTORY_SIZE", "0", "an integer of at least 1"),
        (
            "ARQONBUS_STORAGE_BUFFER_MESSAGES",
            "0",
            "an integer of at least 1",
        ),
        (
            "ARQONBUS_REDIS_STREAM_MAXLEN",
            "0",
            "an integer of at least 1",
        ),
        (
            "ARQONBUS_TELEMETRY_STATS_INTERVAL_MS",
            "0",
            "a whole number of milliseconds of at least 1",
        ),
        (
            "ARQONBUS_CLOSE_TIMEOUT_MS",
            "0",
            "a whole number of milliseconds of at least 1",
        ),
        (
            "ARQONBUS_REDIS_CONNECT_TIMEOUT_MS",
            "0",
            "a whole number of milliseconds of at least 1",
        ),
        (
            "ARQONBUS_REDIS_COMMAND_TIMEOUT_MS",
            "0",
            "a whole number of milliseconds of at least 1",
        ),
    ] {
        assert_eq!(
            err_message(load_env(&[(env, value)])),
            format!("{env}: invalid value \"{value}\": expected {expected}")
        );
    }
    // A zero burst is fine while rate limiting is off.
    let c = load_env(&[
        ("ARQONBUS_RATE_LIMIT_PER_SEC", "0"),
        ("ARQONBUS_RATE_LIMIT_BURST", "0"),
    ])
    .unwrap();
    assert_eq!(c.limits.rate_limit_per_sec, 0);
    // Zero grace and zero channel members (unlimited) are fine.
    load_env(&[
        ("ARQONBUS_SHUTDOWN_GRACE_SECS", "0"),
        ("ARQONBUS_MAX_CHANNEL_MEMBERS", "0"),
    ])
    .unwrap();
}

#[test]
fn channel_names_are_checked() {
    let rule = "expected \"room:channel\" with each side 1-64 characters of [A-Za-z0-9_.-]";
    for bad in [
        "nocolon",
        ":x",
        "x:",
        "a b:c",
        "a:b:c",
        &format!("{}:x", "r".repeat(65)),
    ] {
        assert_eq!(
            err_message(load_env(&[(
                "ARQONBUS_SYSTEM_CHANNELS",
                &format!("ok:fine,{bad}")
            )])),
            format!("ARQONBUS_SYSTEM_CHANNELS: invalid value \"{bad}\": {rule}")
        );
        assert_eq!(
            err_message(load_env(&[("ARQONBUS_TELEMETRY_CHANNEL", bad)])),
            format!(
                "ARQONBUS_TELEMETRY_CHANNEL: invalid value \"{}\": {rule}",
                bad.trim()
            )
        );
    }
    let (file, result) = load_file("dashboard_channel = \"dash\"\n");
    assert_eq!(
        err_message(result),
        format!(
            "dashboard_channel (in {}): invalid value \"dash\": {rule}",
            file.path.display()
        )
    );
    let long = format!("{}:{}", "r".repeat(64), "c".repeat(64));
    load_env(&[
        ("ARQONBUS_TELEMETRY_CHANNEL", &long),
        ("ARQONBUS_SYSTEM_CHANNELS", "A-1.b_:C"),
    ])
    .unwrap();
}

#[test]
fn listener_ports_must_not_clash() {
    assert_eq!(
        err_message(load_env(&[("ARQONBUS_TELEMETRY_PORT", "9100")])),
        "ARQONBUS_TELEMETRY_PORT: port 9100 is already used by ARQONBUS_PORT (default)"
    );
    assert_eq!(
        err_message(load(Sources {
            env: pairs(&[("ARQONBUS_HTTP_PORT", "9200")]),
            cli: pairs(&[("--port", "9200")]),
            ..Sources::default()
        })),
        "ARQONBUS_HTTP_PORT: port 9200 is already used by --port"
    );
    // Port 0 never clashes; different hosts do not clash.
    load_cli(&[("--port", "0"), ("--telemetry-port", "0")]).unwrap();
    load_env(&[
        ("ARQONBUS_TELEMETRY_PORT", "9100"),
        ("ARQONBUS_TELEMETRY_HOST", "127.0.0.2"),
    ])
    .unwrap();
}

#[test]
fn other_value_rules() {
    assert_eq!(
        err_message(load_env(&[("ARQONBUS_LOG_LEVEL", "verbose")])),
        "ARQONBUS_LOG_LEVEL: invalid value \"verbose\": expected trace, debug, info, warn, error, off, \
         or a directive such as info,arqon_routing=debug"
    );
    for good in [
        "TRACE",
        "warn",
        "info,arqon_routing=debug",
        "arqon_storage::redis=trace,warn",
    ] {
        assert_eq!(
            load_env(&[("ARQONBUS_LOG_LEVEL", good)]).unwrap().log.level,
            good
        );
    }
    assert!(load_env(&[("ARQONBUS_NODE_ID", "has space")]).is_err());
    assert!(load_env(&[("ARQONBUS_NODE_ID", &"n".repeat(65))]).is_err());
    assert!(load_env(&[("ARQONBUS_REDIS_URL", "localhost:6379")]).is_err());
    assert!(load_env(&[("ARQONBUS_REDIS_URL", "http://x")]).is_err());
    assert!(load_env(&[("ARQONBUS_HOST", "   ")]).is_err());
}
