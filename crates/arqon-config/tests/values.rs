//! Values are parsed as their key expects; a bad value is one line naming
//! the key as written, and never shows a secret.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use arqon_config::*;
use support::*;

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
        arqon_config::redact_url("redis://user:p@ss@host:6379/1"),
        "redis://user:***@host:6379/1"
    );
    assert_eq!(
        arqon_config::redact_url("redis://secret@h"),
        "redis://***@h"
    );
    // Unencoded `/`, `?` or `#` in a password still hide it all.
    for url in [
        "redis://:hunt/er2@host:6379/0",
        "redis://:hunt?er2@host:6379",
        "redis://:hunt#er2@host:6379",
        "redis://u:a/b@c@host:6379",
    ] {
        let shown = arqon_config::redact_url(url);
        assert!(
            !shown.contains("er2") && !shown.contains("a/b"),
            "{url} → {shown}"
        );
        assert!(
            shown.ends_with("@host:6379/0") || shown.ends_with("@host:6379"),
            "{shown}"
        );
    }
    assert_eq!(arqon_config::redact_url("redis://h:1"), "redis://h:1");
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
