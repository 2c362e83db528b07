//! Loading: defaults < TOML file < `ARQONBUS_*` environment < CLI flags.

use std::fmt;
use std::path::{Path, PathBuf};

use config::{File, FileFormat, Value};

use crate::error::{ConfigError, Origin};
use crate::keys::{self, CONFIG_FILE_ENV, ENV_PREFIX, KEYS};
use crate::parse::{RawValue, apply};
use crate::types::Config;
use crate::validate::{Origins, validate};

/// Everything [`load`] reads. It never reads the process environment or
/// arguments itself: the binary passes them in, tests pass what they like.
#[derive(Clone, Default)]
pub struct Sources {
    /// The TOML file (`--config PATH`). When `None`, a non-empty
    /// `ARQONBUS_CONFIG` in `env` names it; when neither is set there is no file.
    pub config_file: Option<PathBuf>,
    /// Environment variables, e.g. `std::env::vars()`. Names not starting with
    /// `ARQONBUS_`, and unknown `ARQONBUS_*` names, are ignored.
    pub env: Vec<(String, String)>,
    /// Command-line flags with their values, e.g. `("--port", "9100")`.
    pub cli: Vec<(String, String)>,
}

impl fmt::Debug for Sources {
    /// Lists variable names only: values may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: Vec<&str> = self
            .env
            .iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .map(|(name, _)| name.as_str())
            .collect();
        f.debug_struct("Sources")
            .field("config_file", &self.config_file)
            .field("env", &env)
            .field("cli", &self.cli)
            .finish()
    }
}

/// Builds the configuration from `sources` and validates it.
///
/// Precedence, per key: built-in defaults < TOML file < environment < CLI
/// flags. Within one source a canonical name beats its alias. A missing or
/// unparsable file, an unknown TOML key or CLI flag, a value that does not
/// parse, and a broken cross-field rule are errors; the error's `Display`
/// names the key as written and where.
pub fn load(sources: Sources) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    let mut origins = Origins::tracked();

    let file = sources.config_file.clone().or_else(|| {
        sources
            .env
            .iter()
            .rev()
            .find(|(name, value)| name == CONFIG_FILE_ENV && !value.is_empty())
            .map(|(_, value)| PathBuf::from(value))
    });
    if let Some(path) = file {
        let layer = file_layer(&path)?;
        layer.apply(&mut config, &mut origins)?;
    }
    env_layer(&sources.env).apply(&mut config, &mut origins)?;
    cli_layer(&sources.cli)?.apply(&mut config, &mut origins)?;

    validate(&config, &origins)?;
    Ok(config)
}

/// The values one source sets: at most one per key, the best-ranked name
/// winning (canonical before aliases; later beats earlier at equal rank).
pub(crate) struct Layer {
    chosen: Vec<Option<(usize, Origin, RawValue)>>,
}

impl Layer {
    pub(crate) fn new() -> Self {
        Self {
            chosen: vec![None; KEYS.len()],
        }
    }

    pub(crate) fn offer(&mut self, index: usize, rank: usize, origin: Origin, raw: RawValue) {
        let Some(slot) = self.chosen.get_mut(index) else {
            return;
        };
        if slot.as_ref().is_none_or(|(held, _, _)| rank <= *held) {
            *slot = Some((rank, origin, raw));
        }
    }

    /// Parses every chosen value into `config`, in `KEYS` order.
    pub(crate) fn apply(
        self,
        config: &mut Config,
        origins: &mut Origins,
    ) -> Result<(), ConfigError> {
        for (spec, chosen) in KEYS.iter().zip(self.chosen) {
            if let Some((_, origin, raw)) = chosen {
                apply(config, spec, &raw, &origin)?;
                origins.record(spec.env, origin);
            }
        }
        Ok(())
    }
}

fn file_layer(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => ConfigError::FileNotFound {
            path: path.to_owned(),
        },
        _ => ConfigError::FileUnreadable {
            path: path.to_owned(),
            reason: one_line(&err.to_string()),
        },
    })?;
    let table = config::Config::builder()
        .add_source(File::from_str(&text, FileFormat::Toml))
        .build()
        .and_then(|parsed| parsed.cache.into_table())
        .map_err(|err| ConfigError::FileSyntax {
            path: path.to_owned(),
            reason: match err {
                config::ConfigError::FileParse { cause, .. } => one_line(&cause.to_string()),
                other => one_line(&other.to_string()),
            },
        })?;

    // Sorted so that, of several bad keys, the same one is always reported.
    let mut entries: Vec<(String, Value)> = table.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));

    let mut layer = Layer::new();
    for (key, value) in entries {
        let origin = Origin::File {
            key: key.clone(),
            path: path.to_owned(),
        };
        let Some((index, rank)) = keys::by_toml(&key) else {
            return Err(ConfigError::UnknownKey {
                suggestion: keys::suggest(&key),
                origin,
            });
        };
        layer.offer(index, rank, origin, RawValue::Toml(value));
    }
    Ok(layer)
}

fn env_layer(env: &[(String, String)]) -> Layer {
    let mut layer = Layer::new();
    for (name, value) in env {
        if let Some((index, rank)) = keys::by_env(name) {
            let origin = Origin::Env { name: name.clone() };
            layer.offer(index, rank, origin, RawValue::Text(value.clone()));
        }
    }
    layer
}

fn cli_layer(cli: &[(String, String)]) -> Result<Layer, ConfigError> {
    let mut layer = Layer::new();
    for (flag, value) in cli {
        let origin = Origin::Cli { flag: flag.clone() };
        let Some(index) = keys::by_cli(flag) else {
            return Err(ConfigError::UnknownKey {
                suggestion: None,
                origin,
            });
        };
        layer.offer(index, 0, origin, RawValue::Text(value.clone()));
    }
    Ok(layer)
}

/// Collapses a multi-line message (TOML errors draw the offending line) to
/// one line: the text lines joined with `: `, the source excerpt dropped.
fn one_line(message: &str) -> String {
    let is_excerpt = |line: &str| {
        let line = line.trim_start();
        line.starts_with('|')
            || line.split_once('|').is_some_and(|(number, _)| {
                let number = number.trim();
                !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
            })
    };
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !is_excerpt(line))
        .collect::<Vec<_>>()
        .join(": ")
}
