//! ArqonBus configuration (SPEC §13): the typed settings of one server, their
//! defaults, how they are read, and the rules they must satisfy.
//!
//! # Sources and precedence
//!
//! Built-in defaults < TOML file (`--config PATH` or `ARQONBUS_CONFIG`) <
//! `ARQONBUS_*` environment < command-line flags (`--host`, `--port`,
//! `--telemetry-port`, `--storage`, `--redis-url`, `--log-level`,
//! `--log-format`). [`load`] takes all of them as plain data in [`Sources`]
//! and never reads the process environment itself; [`Config::builder`] builds
//! a configuration in code from the defaults, so tests and embedders can run
//! several servers in one process without global state.
//!
//! Every key has one canonical variable (`ARQONBUS_PORT`), maybe aliases
//! (`ARQONBUS_SERVER_PORT`; the canonical name wins when both are set in one
//! source), a flat TOML key (`port`: the name without `ARQONBUS_`,
//! lower-cased) and maybe a flag. All of them go through the same parser. The
//! registry [`KEYS`] lists them; [`help_table`] renders it for `--help`, and
//! `docs/configuration.md` documents it (a test keeps the two in step).
//!
//! # Errors
//!
//! [`ConfigError`]'s `Display` is one line naming the key exactly as the user
//! wrote it and where (`ARQONBUS_SERVER_PORT: invalid value "abc": expected an
//! integer from 0 to 65535`, `port (in /etc/arqonbus.toml): …`, `--port: …`,
//! `config file /nope.toml: not found`). The binary prints it and exits with
//! [`ConfigError::EXIT_CODE`] (64). Unknown TOML keys and flags are errors;
//! unknown `ARQONBUS_*` variables are ignored (other tools share the prefix).
//!
//! # Key types
//!
//! [`Config`] and its sections ([`ServerConfig`], [`LimitsConfig`],
//! [`RoutingConfig`], [`StorageConfig`], [`AuthConfig`], [`TelemetryConfig`],
//! [`ClusterConfig`], [`LogConfig`]); each library crate takes its own section.
//! [`Secret`] wraps tokens and keys so they never reach `Debug` or logs.
//!
//! # Invariants
//!
//! A `Config` returned by [`load`] or [`ConfigBuilder::build`] has passed
//! [`Config::validate`]: listeners do not clash, limits and intervals that
//! must be positive are, channel names are valid `room:channel`, `auth=token`
//! / `auth=jwt` have their secret, `cluster=redis` has `storage=redis`.
//!
//! # Dependencies
//!
//! A leaf crate: `config` (TOML reading), `thiserror`, `rand` (default node
//! id). No other ArqonBus crate, no tokio, no tracing, no I/O besides reading
//! the configuration file in [`load`].

mod builder;
mod error;
mod keys;
mod load;
mod parse;
mod types;
mod validate;

pub use builder::ConfigBuilder;
pub use error::{ConfigError, Origin};
pub use keys::{CONFIG_FILE_ENV, CONFIG_FILE_FLAG, ENV_PREFIX, KEYS, KeySpec, help_table};
pub use load::{Sources, load};
pub use types::{
    AuthConfig, AuthMode, ClusterConfig, ClusterMode, Config, LimitsConfig, LogConfig, LogFormat,
    RoutingConfig, Secret, ServerConfig, SlowConsumerPolicy, StorageBackend, StorageConfig,
    StorageMode, TelemetryConfig, TlsConfig, redact_url,
};
