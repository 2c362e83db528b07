//! Every key can be set from the file, the environment and the command
//! line, each layer beating the one below; an alias works wherever its key
//! does, and the canonical name beats it within a layer.

#![allow(clippy::unwrap_used)]

mod support;

use arqon_config::*;
use support::*;

// ---------------------------------------------------------------- precedence

type Sample = (
    &'static str,
    [&'static str; 3],
    &'static [(&'static str, &'static str)],
);

/// Three values per key (file, env, cli) so that each layer changes the
/// result, plus settings the values need to be valid.
const SAMPLES: &[Sample] = &[
    ("ARQONBUS_HOST", ["10.0.0.1", "10.0.0.2", "10.0.0.3"], &[]),
    ("ARQONBUS_PORT", ["1000", "2000", "3000"], &[]),
    (
        "ARQONBUS_TELEMETRY_HOST",
        ["10.0.0.4", "10.0.0.5", "10.0.0.6"],
        &[],
    ),
    ("ARQONBUS_TELEMETRY_PORT", ["4000", "5000", "6000"], &[]),
    ("ARQONBUS_HTTP_PORT", ["7000", "7001", "7002"], &[]),
    ("ARQONBUS_MAX_CONNECTIONS", ["1", "2", "3"], &[]),
    ("ARQONBUS_MAX_MESSAGE_SIZE", ["10", "20", "30"], &[]),
    ("ARQONBUS_PING_INTERVAL_SECS", ["1", "2", "3"], &[]),
    ("ARQONBUS_IDLE_TIMEOUT_SECS", ["4", "5", "6"], &[]),
    ("ARQONBUS_HANDSHAKE_TIMEOUT_SECS", ["1", "2", "3"], &[]),
    ("ARQONBUS_SHUTDOWN_GRACE_SECS", ["0", "1", "2"], &[]),
    ("ARQONBUS_RATE_LIMIT_PER_SEC", ["0", "5", "6"], &[]),
    ("ARQONBUS_RATE_LIMIT_BURST", ["1", "2", "3"], &[]),
    ("ARQONBUS_MAX_VIOLATIONS", ["1", "2", "3"], &[]),
    ("ARQONBUS_VIOLATION_WINDOW_SECS", ["1", "2", "3"], &[]),
    ("ARQONBUS_CLIENT_QUEUE_BYTES", ["1", "2", "3"], &[]),
    (
        "ARQONBUS_SLOW_CONSUMER",
        ["drop", "disconnect", "drop"],
        &[],
    ),
    ("ARQONBUS_PUBLISH_REQUIRES_JOIN", ["false", "yes", "0"], &[]),
    ("ARQONBUS_AUTO_CREATE_CHANNELS", ["no", "TRUE", "0"], &[]),
    ("ARQONBUS_MAX_CHANNEL_MEMBERS", ["5", "6", "7"], &[]),
    ("ARQONBUS_MAX_SUBSCRIPTIONS", ["5", "6", "7"], &[]),
    ("ARQONBUS_SYSTEM_CHANNELS", ["a:b", "c:d, e:f", "g:h"], &[]),
    ("ARQONBUS_EMPTY_CHANNEL_TTL_SECS", ["0", "5", "6"], &[]),
    ("ARQONBUS_RECOVERY_MAX", ["1", "2", "3"], &[]),
    ("ARQONBUS_WRITE_TIMEOUT_SECS", ["1", "2", "3"], &[]),
    ("ARQONBUS_WRITE_COALESCE_MS", ["0", "5", "1000"], &[]),
    ("ARQONBUS_CLOSE_TIMEOUT_MS", ["1", "2", "3"], &[]),
    ("ARQONBUS_TELEMETRY_MAX_CONNECTIONS", ["1", "2", "3"], &[]),
    (
        "ARQONBUS_ALLOWED_ORIGINS",
        [
            "*",
            "https://a.example, http://b:8080",
            "https://*.c.example",
        ],
        &[],
    ),
    (
        "ARQONBUS_TLS_CERT",
        [MANIFEST, LIB_RS, MANIFEST],
        &[("ARQONBUS_TLS_KEY", MANIFEST)],
    ),
    (
        "ARQONBUS_TLS_KEY",
        [LIB_RS, MANIFEST, LIB_RS],
        &[("ARQONBUS_TLS_CERT", MANIFEST)],
    ),
    (
        "ARQONBUS_STORAGE",
        ["redis", "memory", "redis_streams"],
        &[],
    ),
    (
        "ARQONBUS_STORAGE_MODE",
        ["strict", "degraded", "strict"],
        &[],
    ),
    ("ARQONBUS_HISTORY_SIZE", ["1", "2", "3"], &[]),
    ("ARQONBUS_HISTORY_MAX_BYTES", ["1", "2", "3"], &[]),
    ("ARQONBUS_HISTORY_MEMORY_BYTES", ["1", "2", "3"], &[]),
    (
        "ARQONBUS_REDIS_URL",
        ["redis://a:1", "rediss://b:2", "redis-cluster://c:3,d:4"],
        &[],
    ),
    ("ARQONBUS_REDIS_STREAM_MAXLEN", ["1", "2", "3"], &[]),
    ("ARQONBUS_HISTORY_TTL_SECS", ["0", "5", "6"], &[]),
    ("ARQONBUS_STORAGE_BUFFER_MESSAGES", ["1", "2", "3"], &[]),
    ("ARQONBUS_REDIS_CONNECT_TIMEOUT_MS", ["1", "2", "3"], &[]),
    ("ARQONBUS_REDIS_COMMAND_TIMEOUT_MS", ["1", "2", "3"], &[]),
    (
        "ARQONBUS_AUTH",
        ["token", "jwt", "none"],
        &[("ARQONBUS_ADMIN_TOKEN", "t"), ("ARQONBUS_JWT_SECRET", "s")],
    ),
    ("ARQONBUS_ADMIN_TOKEN", ["a", "b", "c"], &[]),
    ("ARQONBUS_JWT_SECRET", ["a", "b", "c"], &[]),
    ("ARQONBUS_API_KEY", ["a", "b", "c"], &[]),
    ("ARQONBUS_TELEMETRY_CHANNEL", ["a:b", "c:d", "e:f"], &[]),
    ("ARQONBUS_DASHBOARD_CHANNEL", ["a:b", "c:d", "e:f"], &[]),
    ("ARQONBUS_TELEMETRY_STATS_INTERVAL_MS", ["1", "2", "3"], &[]),
    (
        "ARQONBUS_CLUSTER",
        ["redis", "none", "redis"],
        &[("ARQONBUS_STORAGE", "redis")],
    ),
    ("ARQONBUS_NODE_ID", ["n1", "n2", "n3"], &[]),
    (
        "ARQONBUS_CLUSTER_HEARTBEAT_MS",
        ["1000", "2000", "3000"],
        &[],
    ),
    (
        "ARQONBUS_CLUSTER_NODE_TTL_MS",
        ["16000", "20000", "30000"],
        &[],
    ),
    (
        "ARQONBUS_CLUSTER_CONNECT_TIMEOUT_MS",
        ["100", "200", "300"],
        &[],
    ),
    (
        "ARQONBUS_CLUSTER_COMMAND_TIMEOUT_MS",
        ["100", "200", "300"],
        &[],
    ),
    ("ARQONBUS_CLUSTER_QUEUE_CAPACITY", ["1", "2", "3"], &[]),
    ("ARQONBUS_CLUSTER_PUBLISH_BATCH", ["1", "2", "3"], &[]),
    ("ARQONBUS_LOG_LEVEL", ["debug", "warn", "error"], &[]),
    ("ARQONBUS_LOG_FORMAT", ["json", "text", "json"], &[]),
];

/// What the builder makes of `extras` plus `key = value`.
fn expected(key: &str, value: &str, extras: &[(&str, &str)]) -> String {
    let mut builder = Config::builder();
    for (k, v) in extras {
        builder = builder.set(k, v).unwrap();
    }
    let config = builder.set(key, value).unwrap().build().unwrap();
    fingerprint(&config, key == "ARQONBUS_NODE_ID")
}

#[test]
fn samples_cover_every_key() {
    for spec in KEYS {
        assert!(
            SAMPLES.iter().any(|(env, _, _)| *env == spec.env),
            "no precedence sample for {}",
            spec.env
        );
    }
}

#[test]
fn toml_then_env_then_cli_per_key() {
    for &(env, [file_value, env_value, cli_value], extras) in SAMPLES {
        let spec = spec_of(env);
        let keep_node_id = env == "ARQONBUS_NODE_ID";
        let file = TempToml::new(&format!("{} = \"{file_value}\"\n", spec.toml_key()));
        let mut sources = Sources {
            config_file: Some(file.path.clone()),
            env: pairs(extras),
            cli: Vec::new(),
        };

        let from_file = load(sources.clone()).unwrap_or_else(|e| panic!("{env}: {e}"));
        let from_file = fingerprint(&from_file, keep_node_id);
        assert_eq!(from_file, expected(env, file_value, extras), "{env}: file");

        sources.env.push((env.to_owned(), env_value.to_owned()));
        let from_env = load(sources.clone()).unwrap_or_else(|e| panic!("{env}: {e}"));
        let from_env = fingerprint(&from_env, keep_node_id);
        assert_eq!(
            from_env,
            expected(env, env_value, extras),
            "{env}: env beats file"
        );
        assert_ne!(from_env, from_file, "{env}: sample values do not differ");

        if let Some(flag) = spec.cli {
            sources.cli.push((flag.to_owned(), cli_value.to_owned()));
            let from_cli = load(sources).unwrap_or_else(|e| panic!("{env}: {e}"));
            let from_cli = fingerprint(&from_cli, keep_node_id);
            assert_eq!(
                from_cli,
                expected(env, cli_value, extras),
                "{env}: cli beats env"
            );
            assert_ne!(from_cli, from_env, "{env}: sample values do not differ");
        }
    }
}

#[test]
fn toml_native_types() {
    let (_file, result) = load_file(
        r#"
port = 9200
publish_requires_join = false
auto_create_channels = 0
system_channels = ["a:b", "c:d"]
history_ttl_secs = 0
http_port = 9300
log_format = "json"
"#,
    );
    let c = result.unwrap();
    assert_eq!(c.server.port, 9200);
    assert!(!c.routing.publish_requires_join);
    assert!(!c.routing.auto_create_channels);
    assert_eq!(c.routing.system_channels, ["a:b", "c:d"]);
    assert_eq!(c.storage.history_ttl, None);
    assert_eq!(c.server.http_port, Some(9300));
    assert_eq!(c.log.format, LogFormat::Json);
}

#[test]
fn toml_comma_string_and_env_list_for_system_channels() {
    let (_file, result) = load_file("system_channels = \"a:b, c:d,,a:b\"\n");
    assert_eq!(result.unwrap().routing.system_channels, ["a:b", "c:d"]);
    let c = load_env(&[("ARQONBUS_SYSTEM_CHANNELS", " x:y ,z:w ")]).unwrap();
    assert_eq!(c.routing.system_channels, ["x:y", "z:w"]);
    let c = load_env(&[("ARQONBUS_SYSTEM_CHANNELS", "")]).unwrap();
    assert!(c.routing.system_channels.is_empty());
}

// ---------------------------------------------------------------- aliases

#[test]
fn every_alias_maps_to_its_key() {
    let samples = [
        ("ARQONBUS_SERVER_HOST", "0.0.0.0"),
        ("ARQONBUS_SERVER_PORT", "9200"),
        ("ARQONBUS_MAX_HISTORY_SIZE", "42"),
        ("ARQONBUS_STORAGE_BACKEND", "redis"),
        ("ARQONBUS_AUTH_JWT_SECRET", "s3cret"),
    ];
    let mut covered = 0;
    for spec in KEYS {
        for alias in spec.aliases {
            let (_, value) = samples
                .iter()
                .find(|(name, _)| name == alias)
                .unwrap_or_else(|| panic!("no sample for alias {alias}"));
            let canonical = expected(spec.env, value, &[]);
            // Environment.
            let via_env = load_env(&[(alias, value)]).unwrap();
            assert_eq!(fingerprint(&via_env, false), canonical, "{alias}");
            // TOML.
            let toml_alias = alias.strip_prefix(ENV_PREFIX).unwrap().to_ascii_lowercase();
            let (_file, via_file) = load_file(&format!("{toml_alias} = \"{value}\"\n"));
            assert_eq!(
                fingerprint(&via_file.unwrap(), false),
                canonical,
                "{toml_alias}"
            );
            // Builder.
            let via_builder = Config::builder()
                .set(alias, value)
                .unwrap()
                .build()
                .unwrap();
            assert_eq!(
                fingerprint(&via_builder, false),
                canonical,
                "{alias} builder"
            );
            covered += 1;
        }
    }
    assert_eq!(covered, samples.len());
}

#[test]
fn canonical_name_beats_alias_in_any_order() {
    for env in [
        [("ARQONBUS_PORT", "1111"), ("ARQONBUS_SERVER_PORT", "2222")],
        [("ARQONBUS_SERVER_PORT", "2222"), ("ARQONBUS_PORT", "1111")],
    ] {
        assert_eq!(load_env(&env).unwrap().server.port, 1111);
    }
    let c = load_env(&[
        ("ARQONBUS_STORAGE", "memory"),
        ("ARQONBUS_STORAGE_BACKEND", "redis"),
    ])
    .unwrap();
    assert_eq!(c.storage.backend, StorageBackend::Memory);

    let (_file, result) = load_file("max_history_size = 7\nhistory_size = 8\n");
    assert_eq!(result.unwrap().storage.history_size, 8);
    let (_file, result) = load_file("history_size = 8\nmax_history_size = 7\n");
    assert_eq!(result.unwrap().storage.history_size, 8);
}

#[test]
fn alias_in_a_higher_layer_beats_canonical_in_a_lower_one() {
    let file = TempToml::new("port = 1111\n");
    let c = load(Sources {
        config_file: Some(file.path.clone()),
        env: pairs(&[("ARQONBUS_SERVER_PORT", "2222")]),
        cli: Vec::new(),
    })
    .unwrap();
    assert_eq!(c.server.port, 2222);
}

#[test]
fn redis_streams_is_redis() {
    for input in ["redis_streams", "REDIS_STREAMS", "redis"] {
        let c = load_env(&[("ARQONBUS_STORAGE", input)]).unwrap();
        assert_eq!(c.storage.backend, StorageBackend::Redis, "{input}");
        assert_eq!(c.storage.backend.as_str(), "redis");
    }
    let c = load_cli(&[("--storage", "redis_streams")]).unwrap();
    assert_eq!(c.storage.backend, StorageBackend::Redis);
}
