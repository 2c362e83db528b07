//! The bus core one server process runs: the router plus what commands
//! need to know about the server.

use std::time::Instant;

use arqon_config::{Config, LimitsConfig, StorageMode};
use arqon_protocol::{ChannelKey, Timestamp};
use arqon_routing::{Client, Router};
use arqon_storage::Storage;
use arqon_telemetry::{AgentAction, Event, Telemetry};

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
    storage: Storage,
    strict_storage: bool,
    telemetry: Telemetry,
}

impl Bus {
    /// A bus for `config` over `storage` (see `Storage::open`), with its
    /// system channels created. `version` is the server's version string.
    /// Create it after any metrics recorder is installed: the telemetry hub
    /// takes its metric handles then.
    pub fn new(config: &Config, version: impl Into<String>, storage: Storage) -> Self {
        let mut system: Vec<ChannelKey> = config
            .routing
            .system_channels
            .iter()
            .filter_map(|text| ChannelKey::parse(text).ok())
            .collect();
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
            storage,
            strict_storage: config.storage.mode == StorageMode::Strict,
            telemetry: Telemetry::new(&config.telemetry),
        }
    }

    /// The telemetry hub events are emitted to.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Emits `agent_activity` when `client` is an AI agent (SPEC §8).
    pub fn agent_activity(
        &self,
        client: &Client,
        action: AgentAction,
        channel: Option<&ChannelKey>,
    ) {
        if client.client_type() != arqon_protocol::ClientType::AiAgent {
            return;
        }
        self.telemetry.emit_with(|| {
            let profile = client.profile();
            Event::AgentActivity {
                client_id: client.id().clone(),
                screen_name: profile.screen_name,
                personality: profile.personality,
                action,
                channel: channel.cloned(),
            }
        });
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

    /// Channel history.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Whether publishes must be refused with `STORAGE_UNAVAILABLE` now:
    /// strict storage mode while Redis is down (SPEC §7).
    pub fn storage_refuses_writes(&self) -> bool {
        self.strict_storage && !self.storage.is_available()
    }
}
