#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;

use crate::*;

// ---------------------------------------------------------------- helpers

/// A TOML file in the temp dir, removed on drop.
struct TempToml {
    path: PathBuf,
}

impl TempToml {
    fn new(contents: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("arqon-config-test-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        Self { path }
    }
}

impl Drop for TempToml {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load_env(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    load(Sources {
        env: pairs(env),
        ..Sources::default()
    })
}

fn load_file(contents: &str) -> (TempToml, Result<Config, ConfigError>) {
    let file = TempToml::new(contents);
    let result = load(Sources {
        config_file: Some(file.path.clone()),
        ..Sources::default()
    });
    (file, result)
}

fn load_cli(cli: &[(&str, &str)]) -> Result<Config, ConfigError> {
    load(Sources {
        cli: pairs(cli),
        ..Sources::default()
    })
}

/// Every field, secrets exposed; the random node id pinned unless `keep_node_id`.
fn fingerprint(config: &Config, keep_node_id: bool) -> String {
    let mut config = config.clone();
    if !keep_node_id {
        config.cluster.node_id = "pinned".to_owned();
    }
    format!(
        "{config:?} admin={:?} jwt={:?} api={:?}",
        config.auth.admin_token.as_ref().map(Secret::expose),
        config.auth.jwt_secret.as_ref().map(Secret::expose),
        config.auth.api_key.as_ref().map(Secret::expose),
    )
}

/// The error's text, checked to be one line.
fn message(err: &ConfigError) -> String {
    let text = err.to_string();
    assert!(!text.contains('\n'), "multi-line error: {text:?}");
    text
}

fn err_message(result: Result<Config, ConfigError>) -> String {
    message(&result.expect_err("expected a configuration error"))
}

fn spec_of(env: &str) -> &'static KeySpec {
    KEYS.iter().find(|k| k.env == env).unwrap()
}

// ---------------------------------------------------------------- defaults

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
    assert_eq!(StorageBackend::parse("REDIS"), Some(StorageBackend::Redis));
    assert_eq!(AuthMode::parse("bearer"), None);
}

// ---------------------------------------------------------------- registry

/// Every `ARQONBUS_*` variable of SPEC.md except `ARQONBUS_CONFIG` (the file
/// path, handled before keys are read).
const SPEC_VARIABLES: &[&str] = &[
    "ARQONBUS_ADMIN_TOKEN",
    "ARQONBUS_AUTH",
    "ARQONBUS_AUTH_JWT_SECRET",
    "ARQONBUS_AUTO_CREATE_CHANNELS",
    "ARQONBUS_CLIENT_QUEUE_BYTES",
    "ARQONBUS_CLUSTER",
    "ARQONBUS_DASHBOARD_CHANNEL",
    "ARQONBUS_HISTORY_SIZE",
    "ARQONBUS_HISTORY_TTL_SECS",
    "ARQONBUS_HOST",
    "ARQONBUS_HTTP_PORT",
    "ARQONBUS_IDLE_TIMEOUT_SECS",
    "ARQONBUS_JWT_SECRET",
    "ARQONBUS_MAX_CHANNEL_MEMBERS",
    "ARQONBUS_MAX_CONNECTIONS",
    "ARQONBUS_MAX_HISTORY_SIZE",
    "ARQONBUS_MAX_MESSAGE_SIZE",
    "ARQONBUS_MAX_SUBSCRIPTIONS",
    "ARQONBUS_MAX_VIOLATIONS",
    "ARQONBUS_NODE_ID",
    "ARQONBUS_PING_INTERVAL_SECS",
    "ARQONBUS_PORT",
    "ARQONBUS_PUBLISH_REQUIRES_JOIN",
    "ARQONBUS_RATE_LIMIT_BURST",
    "ARQONBUS_RATE_LIMIT_PER_SEC",
    "ARQONBUS_REDIS_STREAM_MAXLEN",
    "ARQONBUS_REDIS_URL",
    "ARQONBUS_SERVER_HOST",
    "ARQONBUS_SERVER_PORT",
    "ARQONBUS_SHUTDOWN_GRACE_SECS",
    "ARQONBUS_SLOW_CONSUMER",
    "ARQONBUS_STORAGE",
    "ARQONBUS_STORAGE_BACKEND",
    "ARQONBUS_STORAGE_MODE",
    "ARQONBUS_SYSTEM_CHANNELS",
    "ARQONBUS_TELEMETRY_CHANNEL",
    "ARQONBUS_TELEMETRY_HOST",
    "ARQONBUS_TELEMETRY_PORT",
    "ARQONBUS_TELEMETRY_STATS_INTERVAL_MS",
    // Brief additions (the CLI flags' variables).
    "ARQONBUS_HANDSHAKE_TIMEOUT_SECS",
    "ARQONBUS_VIOLATION_WINDOW_SECS",
    "ARQONBUS_LOG_LEVEL",
    "ARQONBUS_LOG_FORMAT",
];

#[test]
fn every_spec_variable_is_a_key_or_alias() {
    for name in SPEC_VARIABLES {
        assert!(
            KEYS.iter().any(|k| k.names().any(|n| n == *name)),
            "{name} is not in KEYS"
        );
    }
}

#[test]
fn registry_names_are_unique_and_well_formed() {
    let mut seen = std::collections::HashSet::new();
    for spec in KEYS {
        for name in spec.names() {
            assert!(name.starts_with(ENV_PREFIX), "{name}");
            assert!(seen.insert(name), "{name} listed twice");
        }
        assert!(!spec.help.is_empty() && !spec.help.contains('\n'));
    }
    let flags: Vec<_> = KEYS.iter().filter_map(|k| k.cli).collect();
    assert_eq!(
        flags,
        [
            "--host",
            "--port",
            "--telemetry-port",
            "--storage",
            "--redis-url",
            "--log-level",
            "--log-format"
        ]
    );
    assert_eq!(spec_of("ARQONBUS_PORT").toml_key(), "port");
    assert_eq!(spec_of("ARQONBUS_PORT").name(), "PORT");
}

#[test]
fn help_table_mentions_every_key_flag_alias_and_default() {
    let help = help_table();
    for spec in KEYS {
        for name in spec.names() {
            assert!(help.contains(name), "{name} missing from help");
        }
        if let Some(flag) = spec.cli {
            assert!(help.contains(flag), "{flag} missing from help");
        }
        assert!(
            help.contains(&format!("[default: {}]", spec.default)),
            "default of {} missing from help",
            spec.env
        );
        assert!(help.contains(spec.help));
    }
    assert!(help.contains(CONFIG_FILE_ENV) && help.contains(CONFIG_FILE_FLAG));
}

#[test]
fn docs_list_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let docs = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(docs.contains(CONFIG_FILE_ENV));
    for spec in KEYS {
        for name in spec.names() {
            assert!(
                docs.contains(name),
                "{name} missing from {}",
                path.display()
            );
        }
        // The table row of the key names its TOML key, flag and default.
        let row_start = format!("| `{}` |", spec.env);
        let row = docs
            .lines()
            .find(|line| line.starts_with(&row_start))
            .unwrap_or_else(|| panic!("no table row for {}", spec.env));
        assert!(
            row.contains(&format!("`{}`", spec.toml_key())),
            "{row}: TOML key"
        );
        if let Some(flag) = spec.cli {
            assert!(row.contains(&format!("`{flag}`")), "{row}: flag");
        }
        assert!(
            row.contains(&format!("`{}`", spec.default)),
            "{row}: default {}",
            spec.default
        );
    }
}

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

// ---------------------------------------------------------------- values

#[test]
fn booleans_accept_the_usual_spellings() {
    for (input, value) in [
        ("true", true),
        ("TRUE", true),
        ("1", true),
        ("yes", true),
        ("Yes", true),
        ("false", false),
        ("False", false),
        ("0", false),
        ("no", false),
        ("NO", false),
    ] {
        let c = load_env(&[("ARQONBUS_PUBLISH_REQUIRES_JOIN", input)]).unwrap();
        assert_eq!(c.routing.publish_requires_join, value, "{input}");
    }
}

/// Files that exist wherever the tests run, for the TLS path samples.
const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
const LIB_RS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs");

#[test]
fn blank_secrets_are_invalid_in_every_auth_mode() {
    for key in [
        "ARQONBUS_ADMIN_TOKEN",
        "ARQONBUS_JWT_SECRET",
        "ARQONBUS_API_KEY",
    ] {
        for blank in ["", "   ", "\t"] {
            let text = err_message(load_env(&[(key, blank)]));
            assert!(text.starts_with(key), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
    }
    // Set in code, too.
    let text = err_message(Config::builder().admin_token(" ").build());
    assert!(text.contains("admin_token"), "{text}");
}

#[test]
fn redis_url_passwords_never_reach_errors() {
    let text = err_message(load_env(&[(
        "ARQONBUS_REDIS_URL",
        "http://:hunter2@host:6379",
    )]));
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("http://:***@host:6379"), "{text}");
    let text = err_message(
        Config::builder()
            .redis_url("postgres://user:hunter2@host")
            .build(),
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert_eq!(
        crate::redact_url("redis://user:p@ss@host:6379/1"),
        "redis://user:***@host:6379/1"
    );
    assert_eq!(crate::redact_url("redis://secret@h"), "redis://***@h");
    // Unencoded `/`, `?` or `#` in a password still hide it all.
    for url in [
        "redis://:hunt/er2@host:6379/0",
        "redis://:hunt?er2@host:6379",
        "redis://:hunt#er2@host:6379",
        "redis://u:a/b@c@host:6379",
    ] {
        let shown = crate::redact_url(url);
        assert!(
            !shown.contains("er2") && !shown.contains("a/b"),
            "{url} → {shown}"
        );
        assert!(
            shown.ends_with("@host:6379/0") || shown.ends_with("@host:6379"),
            "{shown}"
        );
    }
    assert_eq!(crate::redact_url("redis://h:1"), "redis://h:1");
}

#[test]
fn tls_needs_both_readable_files() {
    let text = err_message(load_env(&[("ARQONBUS_TLS_CERT", MANIFEST)]));
    assert!(text.starts_with("ARQONBUS_TLS_KEY"), "{text}");
    let text = err_message(load_env(&[("ARQONBUS_TLS_KEY", MANIFEST)]));
    assert!(text.starts_with("ARQONBUS_TLS_CERT"), "{text}");
    let text = err_message(load_env(&[
        ("ARQONBUS_TLS_CERT", "/nonexistent/cert.pem"),
        ("ARQONBUS_TLS_KEY", MANIFEST),
    ]));
    assert!(text.starts_with("ARQONBUS_TLS_CERT"), "{text}");
    assert!(text.contains("/nonexistent/cert.pem"), "{text}");
    let c = load_env(&[
        ("ARQONBUS_TLS_CERT", MANIFEST),
        ("ARQONBUS_TLS_KEY", LIB_RS),
    ])
    .unwrap();
    let tls = c.server.tls().unwrap();
    assert_eq!(tls.cert, Path::new(MANIFEST));
    assert_eq!(tls.key, Path::new(LIB_RS));
}

#[test]
fn origin_patterns_are_checked() {
    let c = load_env(&[(
        "ARQONBUS_ALLOWED_ORIGINS",
        "https://app.example.com, http://localhost:8080,https://*.example.com",
    )])
    .unwrap();
    assert_eq!(c.server.allowed_origins.len(), 3);
    for bad in [
        "app.example.com",
        "https://",
        "https://a.example:99999",
        "*.x",
    ] {
        let text = err_message(load_env(&[("ARQONBUS_ALLOWED_ORIGINS", bad)]));
        assert!(
            text.starts_with("ARQONBUS_ALLOWED_ORIGINS"),
            "{bad}: {text}"
        );
    }
}

#[test]
fn empty_optional_env_values_are_unset() {
    let c = load_env(&[("ARQONBUS_HTTP_PORT", ""), ("ARQONBUS_NODE_ID", "")]).unwrap();
    assert_eq!(c.server.http_port, None);
    assert!(c.cluster.node_id.starts_with("node-"));

    let c = load_env(&[
        ("ARQONBUS_HTTP_PORT", "9102"),
        ("ARQONBUS_NODE_ID", "edge-1"),
    ])
    .unwrap();
    assert_eq!(c.server.http_port, Some(9102));
    assert_eq!(c.cluster.node_id, "edge-1");
}

#[test]
fn zero_ttl_means_never() {
    let c = load_env(&[("ARQONBUS_HISTORY_TTL_SECS", "0")]).unwrap();
    assert_eq!(c.storage.history_ttl, None);
    let c = load_env(&[("ARQONBUS_HISTORY_TTL_SECS", "30")]).unwrap();
    assert_eq!(c.storage.history_ttl, Some(Duration::from_secs(30)));
}

#[test]
fn storage_buffer_messages_from_every_source() {
    let c = load_env(&[("ARQONBUS_STORAGE_BUFFER_MESSAGES", "250")]).unwrap();
    assert_eq!(c.storage.buffer_messages, 250);
    let (_file, result) = load_file("storage_buffer_messages = 7\n");
    assert_eq!(result.unwrap().storage.buffer_messages, 7);
    let c = Config::builder()
        .storage_buffer_messages(9)
        .build()
        .unwrap();
    assert_eq!(c.storage.buffer_messages, 9);
    assert_eq!(
        err_message(load_env(&[("ARQONBUS_STORAGE_BUFFER_MESSAGES", "-1")])),
        "ARQONBUS_STORAGE_BUFFER_MESSAGES: invalid value \"-1\": expected a non-negative integer"
    );
    assert_eq!(
        err_message(Config::builder().storage_buffer_messages(0).build()),
        "storage_buffer_messages (set in code): invalid value \"0\": expected an integer of at least 1"
    );
}

#[test]
fn unknown_and_foreign_env_vars_are_ignored() {
    let c = load_env(&[
        ("ARQONBUS_REQUIRE_REDIS", "1"),
        ("ARQONBUS_SOMETHING_ELSE", "garbage"),
        ("PORT", "abc"),
        ("arqonbus_port", "abc"),
    ])
    .unwrap();
    assert_eq!(c.server.port, 9100);
}

#[test]
fn bad_values_name_the_key_as_written() {
    let port = "expected an integer from 0 to 65535";
    assert_eq!(
        err_message(load_env(&[("ARQONBUS_PORT", "abc")])),
        format!("ARQONBUS_PORT: invalid value \"abc\": {port}")
    );
    assert_eq!(
        err_message(load_env(&[("ARQONBUS_SERVER_PORT", "abc")])),
        format!("ARQONBUS_SERVER_PORT: invalid value \"abc\": {port}")
    );
    assert_eq!(
        err_message(load_env(&[("ARQONBUS_PORT", "70000")])),
        format!("ARQONBUS_PORT: invalid value \"70000\": {port}")
    );
    assert_eq!(
        err_message(load_cli(&[("--port", "-1")])),
        format!("--port: invalid value \"-1\": {port}")
    );
    let (file, result) = load_file("port = \"abc\"\n");
    assert_eq!(
        err_message(result),
        format!(
            "port (in {}): invalid value \"abc\": {port}",
            file.path.display()
        )
    );
    let (file, result) = load_file("server_port = 70000\n");
    assert_eq!(
        err_message(result),
        format!(
            "server_port (in {}): invalid value \"70000\": {port}",
            file.path.display()
        )
    );
    let (file, result) = load_file("port = 1.5\n");
    assert_eq!(
        err_message(result),
        format!(
            "port (in {}): invalid value \"1.5\": {port}",
            file.path.display()
        )
    );

    assert_eq!(
        err_message(load_env(&[("ARQONBUS_PUBLISH_REQUIRES_JOIN", "maybe")])),
        "ARQONBUS_PUBLISH_REQUIRES_JOIN: invalid value \"maybe\": expected true, false, 1, 0, yes or no"
    );
    let (file, result) = load_file("auto_create_channels = \"sure\"\n");
    assert_eq!(
        err_message(result),
        format!(
            "auto_create_channels (in {}): invalid value \"sure\": expected true, false, 1, 0, yes or no",
            file.path.display()
        )
    );

    assert_eq!(
        err_message(load_env(&[("ARQONBUS_STORAGE_BACKEND", "mongo")])),
        "ARQONBUS_STORAGE_BACKEND: invalid value \"mongo\": expected one of memory, redis, redis_streams"
    );
    assert_eq!(
        err_message(load_cli(&[("--log-format", "xml")])),
        "--log-format: invalid value \"xml\": expected one of text, json"
    );
    assert_eq!(
        message(&Config::builder().set("slow_consumer", "block").unwrap_err()),
        "slow_consumer (set in code): invalid value \"block\": expected one of disconnect, drop"
    );
    let (file, result) = load_file("system_channels = [1, 2]\n");
    assert!(err_message(result).starts_with(&format!(
        "system_channels (in {}): invalid value \"[1, 2]\"",
        file.path.display()
    )));
}

#[test]
fn secrets_are_redacted_in_value_errors() {
    let (_file, result) = load_file("jwt_secret = [\"hunter2\"]\n");
    let text = err_message(result);
    assert!(text.contains("<redacted>"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

// ---------------------------------------------------------------- files, flags

#[test]
fn missing_file_is_an_error() {
    let path = PathBuf::from("/nonexistent/arqonbus.toml");
    let err = load(Sources {
        config_file: Some(path.clone()),
        ..Sources::default()
    })
    .unwrap_err();
    assert_eq!(err, ConfigError::FileNotFound { path });
    assert_eq!(
        message(&err),
        "config file /nonexistent/arqonbus.toml: not found"
    );
    assert_eq!(err.exit_code(), 64);
    assert_eq!(ConfigError::EXIT_CODE, 64);
}

#[test]
fn config_env_names_the_file_when_no_path_is_given() {
    assert_eq!(
        err_message(load_env(&[("ARQONBUS_CONFIG", "/nonexistent/a.toml")])),
        "config file /nonexistent/a.toml: not found"
    );
    let file = TempToml::new("port = 9555\n");
    let c = load_env(&[("ARQONBUS_CONFIG", file.path.to_str().unwrap())]).unwrap();
    assert_eq!(c.server.port, 9555);
    // An explicit path wins over ARQONBUS_CONFIG.
    let c = load(Sources {
        config_file: Some(file.path.clone()),
        env: pairs(&[("ARQONBUS_CONFIG", "/nonexistent/a.toml")]),
        cli: Vec::new(),
    })
    .unwrap();
    assert_eq!(c.server.port, 9555);
}

#[test]
fn unreadable_file_is_an_error() {
    let dir = std::env::temp_dir();
    let text = err_message(load(Sources {
        config_file: Some(dir.clone()),
        ..Sources::default()
    }));
    assert!(
        text.starts_with(&format!("config file {}: cannot read: ", dir.display())),
        "{text}"
    );
}

#[test]
fn invalid_toml_is_one_line_with_position() {
    let (file, result) = load_file("port = 9100\nhost = \n");
    let text = err_message(result);
    assert!(
        text.starts_with(&format!(
            "config file {}: invalid TOML: ",
            file.path.display()
        )),
        "{text}"
    );
    assert!(text.contains("line 2"), "{text}");
}

#[test]
fn unknown_toml_key_is_an_error() {
    let (file, result) = load_file("port = 1\nprot = 2\n");
    assert_eq!(
        err_message(result),
        format!("prot (in {}): unknown key", file.path.display())
    );
    let (file, result) = load_file("redis-url = \"redis://x\"\n");
    assert_eq!(
        err_message(result),
        format!(
            "redis-url (in {}): unknown key (did you mean redis_url?)",
            file.path.display()
        )
    );
    let (file, result) = load_file("PORT = 1\n");
    assert_eq!(
        err_message(result),
        format!(
            "PORT (in {}): unknown key (did you mean port?)",
            file.path.display()
        )
    );
    let (file, result) = load_file("[server]\nport = 1\n");
    assert_eq!(
        err_message(result),
        format!("server (in {}): unknown key", file.path.display())
    );
}

#[test]
fn unknown_cli_flag_is_an_error() {
    assert_eq!(
        err_message(load_cli(&[("--history-size", "5")])),
        "--history-size: unknown key"
    );
}

#[test]
fn every_cli_flag_is_read() {
    let c = load_cli(&[
        ("--host", "0.0.0.0"),
        ("--port", "1"),
        ("--telemetry-port", "2"),
        ("--storage", "redis"),
        ("--redis-url", "redis://r:1"),
        ("--log-level", "debug"),
        ("--log-format", "json"),
    ])
    .unwrap();
    assert_eq!(c.server.host, "0.0.0.0");
    assert_eq!(c.server.port, 1);
    assert_eq!(c.server.telemetry_port, 2);
    assert_eq!(c.storage.backend, StorageBackend::Redis);
    assert_eq!(c.storage.redis_url, "redis://r:1");
    assert_eq!(c.log.level, "debug");
    assert_eq!(c.log.format, LogFormat::Json);
}

// ---------------------------------------------------------------- cross-field rules

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

// ---------------------------------------------------------------- builder

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

// ---------------------------------------------------------------- secrets

#[test]
fn secrets_never_show_in_debug() {
    let secret = Secret::new("hunter2");
    assert_eq!(format!("{secret:?}"), "<redacted>");
    assert_eq!(secret.to_string(), "<redacted>");
    assert_eq!(secret.expose(), "hunter2");

    let c = load_env(&[
        ("ARQONBUS_AUTH", "jwt"),
        ("ARQONBUS_JWT_SECRET", "hunter2"),
        ("ARQONBUS_ADMIN_TOKEN", "sesame"),
    ])
    .unwrap();
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("sesame"),
        "{debug}"
    );

    let sources = Sources {
        env: pairs(&[("ARQONBUS_JWT_SECRET", "hunter2"), ("HOME", "/root")]),
        ..Sources::default()
    };
    let debug = format!("{sources:?}");
    assert!(
        debug.contains("ARQONBUS_JWT_SECRET") && !debug.contains("hunter2"),
        "{debug}"
    );
}

#[test]
fn secrets_are_kept_byte_for_byte() {
    let c = load_env(&[("ARQONBUS_ADMIN_TOKEN", " with spaces ")]).unwrap();
    assert_eq!(c.auth.admin_token.unwrap().expose(), " with spaces ");
}

// ---------------------------------------------------------------- robustness

proptest! {
    #[test]
    fn any_text_for_any_key_never_panics(index in 0..KEYS.len(), value in any::<String>()) {
        let spec = &KEYS[index];
        if let Err(err) = Config::builder().set(spec.env, &value).and_then(ConfigBuilder::build) {
            prop_assert!(!err.to_string().contains('\n'));
        }
        if let Err(err) = load_env(&[(spec.env, &value)]) {
            prop_assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn any_file_never_panics(contents in "[a-z_=\"\\[\\], 0-9.\n#:-]{0,80}") {
        let (_file, result) = load_file(&contents);
        if let Err(err) = result {
            prop_assert!(!err.to_string().contains('\n'), "{}", err);
        }
    }
}
