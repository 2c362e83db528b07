//! The command line (SPEC §19), declared with clap.

use std::path::PathBuf;

use arqon_client::{ChannelKey, ClientId};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value};

/// The ArqonBus command line: publish, subscribe, send, tail telemetry,
/// and query a server.
#[derive(Debug, Parser)]
#[command(name = "arqon", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes, before or after its name.
#[derive(Debug, Args)]
pub struct Global {
    /// The bus WebSocket URL.
    #[arg(
        long,
        global = true,
        env = "ARQONBUS_URL",
        default_value = "ws://127.0.0.1:9100/",
        value_name = "URL"
    )]
    pub url: String,
    /// Token (ARQONBUS_AUTH=token: the admin token; jwt: a JWT), sent as
    /// `Authorization: Bearer`.
    #[arg(long, global = true, env = "ARQONBUS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// One JSON object per line (the default when stdout is not a terminal).
    #[arg(long, global = true, conflicts_with = "human")]
    pub json: bool,
    /// Human-readable output even when stdout is not a terminal.
    #[arg(long, global = true)]
    pub human: bool,
    /// Seconds to wait for the connection and for each reply.
    #[arg(long, global = true, default_value_t = 10, value_name = "SECS")]
    pub timeout: u64,
    /// Trust this PEM certificate (a private CA or self-signed server) for
    /// `wss://` URLs, besides the system roots.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish a JSON object to a channel (joins it first) and wait for the ack.
    Pub {
        /// ROOM:CHANNEL
        #[arg(value_parser = channel_key)]
        channel: ChannelKey,
        /// The payload: a JSON object.
        #[arg(value_parser = json_object)]
        payload: Map<String, Value>,
    },
    /// Subscribe to channels and print their messages until Ctrl-C.
    Sub {
        /// ROOM:CHANNEL, one or more.
        #[arg(value_parser = channel_key, required = true, num_args = 1..)]
        channels: Vec<ChannelKey>,
        /// When the connection drops, reconnect and fill the gap from the
        /// channel history (reported as a `gap` line). Without it, a lost
        /// connection ends the command with exit code 3.
        #[arg(long)]
        recover: bool,
    },
    /// Send a JSON object to one client and wait for the ack.
    Send {
        /// The target's client_id.
        #[arg(value_parser = client_id)]
        client_id: ClientId,
        /// The payload: a JSON object.
        #[arg(value_parser = json_object)]
        payload: Map<String, Value>,
    },
    /// Follow the telemetry stream (the system channel
    /// integriguard:telemetry-stream) until Ctrl-C.
    Tail {
        /// Only these event types, comma-separated (stats,error,…).
        #[arg(long, value_delimiter = ',', value_name = "a,b")]
        events: Option<Vec<String>>,
        /// The telemetry channel, if the server uses another one
        /// (ARQONBUS_TELEMETRY_CHANNEL).
        #[arg(long, default_value = "integriguard:telemetry-stream", value_parser = channel_key)]
        channel: ChannelKey,
    },
    /// The server's status: clients, channels, messages, storage.
    Status,
    /// Every channel with its member count.
    Channels {
        /// Only the channels of this room.
        #[arg(long)]
        room: Option<String>,
    },
    /// Stored messages of a channel, oldest first.
    History {
        /// ROOM:CHANNEL
        #[arg(value_parser = channel_key)]
        channel: ChannelKey,
        /// How many messages (1–1000; the server's default is 50).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
        /// Only messages after this seq (the oldest first).
        #[arg(long, value_name = "S")]
        after_seq: Option<u64>,
    },
    /// Round trip to the server.
    Ping,
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// `ROOM:CHANNEL`, validated as the server would.
fn channel_key(value: &str) -> Result<ChannelKey, String> {
    let (room, channel) = value
        .split_once(':')
        .ok_or_else(|| format!("{value:?} is not ROOM:CHANNEL"))?;
    ChannelKey::new(room, channel).map_err(|err| err.to_string())
}

/// A client id, validated as the server would.
fn client_id(value: &str) -> Result<ClientId, String> {
    ClientId::new(value).map_err(|err| err.to_string())
}

/// A JSON object argument.
fn json_object(value: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(value) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the payload must be a JSON object, e.g. '{\"text\":\"hi\"}'".to_owned()),
        Err(err) => Err(format!("invalid JSON: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn arguments_are_checked_before_connecting() {
        assert!(channel_key("lobby:general").is_ok());
        assert!(channel_key("lobby").is_err());
        assert!(channel_key("lo bby:general").is_err());
        assert!(json_object("{\"a\":1}").is_ok());
        assert!(json_object("[1]").is_err());
        assert!(json_object("{").is_err());
    }
}
