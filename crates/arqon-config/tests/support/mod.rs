//! Helpers shared by the configuration tests: loading from each source,
//! a temporary TOML file, and error text checked to be one line.

// Each test file uses its own subset of these.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use arqon_config::{Config, ConfigError, KEYS, KeySpec, Secret, Sources, load};

/// A TOML file in the temp dir, removed on drop.
pub struct TempToml {
    pub path: PathBuf,
}

impl TempToml {
    pub fn new(contents: &str) -> Self {
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

pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn load_env(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    load(Sources {
        env: pairs(env),
        ..Sources::default()
    })
}

pub fn load_file(contents: &str) -> (TempToml, Result<Config, ConfigError>) {
    let file = TempToml::new(contents);
    let result = load(Sources {
        config_file: Some(file.path.clone()),
        ..Sources::default()
    });
    (file, result)
}

pub fn load_cli(cli: &[(&str, &str)]) -> Result<Config, ConfigError> {
    load(Sources {
        cli: pairs(cli),
        ..Sources::default()
    })
}

/// Every field, secrets exposed; the random node id pinned unless `keep_node_id`.
pub fn fingerprint(config: &Config, keep_node_id: bool) -> String {
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
pub fn message(err: &ConfigError) -> String {
    let text = err.to_string();
    assert!(!text.contains('\n'), "multi-line error: {text:?}");
    text
}

pub fn err_message(result: Result<Config, ConfigError>) -> String {
    message(&result.expect_err("expected a configuration error"))
}

pub fn spec_of(env: &str) -> &'static KeySpec {
    KEYS.iter().find(|k| k.env == env).unwrap()
}

/// Files that exist wherever the tests run, for the TLS path samples.
pub const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
pub const LIB_RS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs");
