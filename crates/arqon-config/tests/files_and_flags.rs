//! The configuration file and command-line flags: a missing, unreadable or
//! invalid file, and unknown keys or flags, are errors naming them.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;

use arqon_config::*;
use support::*;

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
