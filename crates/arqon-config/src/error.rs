//! `ConfigError` and `Origin`: every error names the key as the user wrote it
//! and where, in one line.

use std::fmt;
use std::path::PathBuf;

use crate::types::{AuthMode, StorageBackend};

/// Where a setting came from, spelled the way the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The built-in default of a variable (canonical name). Shown as
    /// `ARQONBUS_STORAGE (default)`.
    Default {
        /// Canonical variable name.
        env: &'static str,
    },
    /// A value whose source is not known, e.g. a hand-built [`Config`](crate::Config)
    /// checked with [`Config::validate`](crate::Config::validate). Shown as the
    /// canonical variable name.
    Unspecified {
        /// Canonical variable name.
        env: &'static str,
    },
    /// A key of the TOML file. Shown as `port (in /etc/arqonbus.toml)`.
    File {
        /// The key as written in the file.
        key: String,
        /// The file.
        path: PathBuf,
    },
    /// An environment variable. Shown as its name, e.g. `ARQONBUS_SERVER_PORT`.
    Env {
        /// The variable name as set (canonical or alias).
        name: String,
    },
    /// A command-line flag. Shown as the flag, e.g. `--port`.
    Cli {
        /// The flag as given.
        flag: String,
    },
    /// Set in code through [`ConfigBuilder`](crate::ConfigBuilder). Shown as
    /// `port (set in code)`.
    Code {
        /// The key as passed to the builder (typed setters use the TOML key).
        key: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default { env } => write!(f, "{env} (default)"),
            Self::Unspecified { env } => f.write_str(env),
            Self::File { key, path } => write!(f, "{key} (in {})", path.display()),
            Self::Env { name } => f.write_str(name),
            Self::Cli { flag } => f.write_str(flag),
            Self::Code { key } => write!(f, "{key} (set in code)"),
        }
    }
}

/// Invalid configuration. `Display` is one line naming the key as the user
/// wrote it and where; the binary prints it and exits with
/// [`ConfigError::EXIT_CODE`] (64, `EX_USAGE`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file does not exist.
    #[error("config file {}: not found", path.display())]
    FileNotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// The configuration file exists but cannot be read (permissions, a
    /// directory, not UTF-8…).
    #[error("config file {}: cannot read: {reason}", path.display())]
    FileUnreadable {
        /// The path as given.
        path: PathBuf,
        /// The I/O error, one line.
        reason: String,
    },
    /// The configuration file is not valid TOML.
    #[error("config file {}: invalid TOML: {reason}", path.display())]
    FileSyntax {
        /// The path as given.
        path: PathBuf,
        /// The parser's message with position, one line.
        reason: String,
    },
    /// A TOML key, CLI flag or builder key that is not a configuration key.
    #[error("{origin}: unknown key{}", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    UnknownKey {
        /// Where the key was written.
        origin: Origin,
        /// A known key the user probably meant.
        suggestion: Option<String>,
    },
    /// A value that does not parse or is out of range. Secret values are
    /// reported as `<redacted>`.
    #[error("{origin}: invalid value {value:?}: expected {expected}")]
    InvalidValue {
        /// Where the value came from.
        origin: Origin,
        /// The value as written (or as stored, for rule violations).
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// `auth=token` without an admin token, or `auth=jwt` without a secret.
    #[error("{origin}: auth mode \"{mode}\" requires {required} to be set")]
    MissingSecret {
        /// Where the auth mode was set.
        origin: Origin,
        /// The auth mode.
        mode: AuthMode,
        /// The canonical variable that must be set.
        required: &'static str,
    },
    /// `cluster=redis` with a storage backend other than Redis (SPEC §10).
    #[error(
        "{origin}: cluster mode \"redis\" requires ARQONBUS_STORAGE=redis, but {storage_origin} is \"{storage}\""
    )]
    ClusterRequiresRedis {
        /// Where the cluster mode was set.
        origin: Origin,
        /// The configured backend.
        storage: StorageBackend,
        /// Where the backend was set.
        storage_origin: Origin,
    },
    /// Two listeners on the same host and non-zero port.
    #[error("{origin}: port {port} is already used by {other}")]
    PortConflict {
        /// The later listener's port setting.
        origin: Origin,
        /// The port.
        port: u16,
        /// The other listener's port setting.
        other: Origin,
    },
}

impl ConfigError {
    /// Process exit status for invalid configuration (`EX_USAGE` from
    /// `sysexits.h`, SPEC §13).
    pub const EXIT_CODE: i32 = 64;

    /// The process exit status for this error: always [`Self::EXIT_CODE`].
    pub const fn exit_code(&self) -> i32 {
        Self::EXIT_CODE
    }
}
