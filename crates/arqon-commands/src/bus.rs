//! The bus core one server process runs: the router plus what commands
//! need to know about the server.

use std::time::Instant;

use arqon_config::{Config, LimitsConfig};
use arqon_protocol::{ChannelKey, Timestamp};
use arqon_routing::Router;

/// Product name reported by `status` and `/version`.
pub const PRODUCT_NAME: &str = "ArqonBus";

/// Facts about this server process.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub node_id: String,
    pub started_at: Timestamp,
    started: Instant,
}

impl ServerInfo {
    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// Everything the sessions of one server share. Cheap to reach through an
/// `Arc`; holds no lock of its own.
#[derive(Debug)]
pub struct Bus {
    router: Router,
    info: ServerInfo,
    limits: LimitsConfig,
    max_message_size: usize,
    telemetry_channel: Option<ChannelKey>,
    storage_backend: &'static str,
}

impl Bus {
    /// A bus for `config`, with its system channels created. `version` is
    /// the server's version string.
    pub fn new(config: &Config, version: impl Into<String>) -> Self {
        let mut system: Vec<ChannelKey> = config
            .routing
            .system_channels
            .iter()
            .filter_map(|text| ChannelKey::parse(text).ok())
            .collect();
        let telemetry_channel = ChannelKey::parse(&config.telemetry.channel).ok();
        // The telemetry and dashboard channels are always system channels.
        for extra in [
            &config.telemetry.channel,
            &config.telemetry.dashboard_channel,
        ] {
            if let Ok(key) = ChannelKey::parse(extra)
                && !system.contains(&key)
            {
                system.push(key);
            }
        }
        Self {
            router: Router::new(&config.routing, &system),
            info: ServerInfo {
                version: version.into(),
                node_id: config.cluster.node_id.clone(),
                started_at: arqon_protocol::now(),
                started: Instant::now(),
            },
            limits: config.limits.clone(),
            max_message_size: config.server.max_message_size,
            telemetry_channel,
            storage_backend: config.storage.backend.as_str(),
        }
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    pub fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// The system channel client `telemetry` envelopes are rebroadcast to.
    pub fn telemetry_channel(&self) -> Option<&ChannelKey> {
        self.telemetry_channel.as_ref()
    }

    pub fn storage_backend(&self) -> &'static str {
        self.storage_backend
    }
}
