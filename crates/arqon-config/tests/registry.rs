//! The key registry holds every SPEC variable once under a well-formed
//! name, and `--help` and docs/configuration.md show every key, alias,
//! flag and default.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use arqon_config::*;
use support::*;

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
