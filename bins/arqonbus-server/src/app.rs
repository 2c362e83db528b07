//! What every request and connection of one server shares.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arqon_commands::Bus;
use arqon_config::{Config, StorageMode};
use arqon_protocol::ClientId;
use arqon_routing::{Client, Profile, Role};
use arqon_telemetry::metrics::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::origin::OriginPolicy;

/// The server's version, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit the server was built from (`unknown` outside a git checkout).
pub const GIT_COMMIT: &str = env!("ARQONBUS_GIT_COMMIT");
/// When the server was built (RFC 3339 UTC).
pub const BUILD_DATE: &str = env!("ARQONBUS_BUILD_DATE");

/// Shared server state. Each part has one owner and its own
/// synchronization; there is no lock around the whole.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub bus: Arc<Bus>,
    /// Open WebSocket connections (reserved at the upgrade).
    connections: AtomicUsize,
    /// Set once shutdown starts: `/ready` turns 503, upgrades get 503.
    draining: AtomicBool,
    /// Cancelled when shutdown starts; every connection watches it.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown grace period is over: connections still
    /// open are cut off where they stand (SPEC §18).
    pub abort: CancellationToken,
    /// Which browser origins may open a WebSocket (SPEC §18).
    pub origins: OriginPolicy,
    /// Open telemetry connections (reserved at the upgrade).
    telemetry_connections: AtomicUsize,
    /// Every connection task, so that shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Renders `/metrics`; `None` when no recorder was installed (an
    /// embedder that did not ask for metrics).
    pub metrics: Option<PrometheusHandle>,
    /// The client the HTTP server API runs commands as (SPEC §17): admin,
    /// no channel restrictions, never registered with the router. Its id
    /// starts with `arqonbus`, reserved for the server, so no real client
    /// has it.
    pub operator: Arc<Client>,
}

/// The HTTP server API's client id.
pub const OPERATOR_ID: &str = "arqonbus-api";
/// The operator's outbound queue: never written to (it joins nothing).
const OPERATOR_QUEUE_BYTES: usize = 4096;

impl App {
    pub fn new(config: Config, metrics: Option<PrometheusHandle>, bus: Bus) -> Arc<Self> {
        let bus = Arc::new(bus);
        let origins = OriginPolicy::new(&config.server.allowed_origins);
        let operator = Arc::new(Client::new(
            ClientId::new(OPERATOR_ID).expect("a valid client id"),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Role::Admin,
            Profile::default(),
            OPERATOR_QUEUE_BYTES,
        ));
        Arc::new(Self {
            config,
            bus,
            connections: AtomicUsize::new(0),
            telemetry_connections: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            origins,
            tasks: TaskTracker::new(),
            metrics,
            operator,
        })
    }

    /// Whether `/ready` should say 503: draining, or strict storage mode
    /// while storage is down (SPEC §12).
    pub fn is_ready(&self) -> bool {
        let storage_down =
            self.config.storage.mode == StorageMode::Strict && !self.bus.storage().is_available();
        !self.is_draining() && !storage_down
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.shutdown.cancel();
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Reserves a bus connection slot, or `None` at
    /// `ARQONBUS_MAX_CONNECTIONS`.
    pub fn reserve_connection(self: &Arc<Self>) -> Option<ConnectionSlot> {
        self.reserve(Listener::Bus)
    }

    /// Reserves a telemetry connection slot, or `None` at
    /// `ARQONBUS_TELEMETRY_MAX_CONNECTIONS`.
    pub fn reserve_telemetry_connection(self: &Arc<Self>) -> Option<ConnectionSlot> {
        self.reserve(Listener::Telemetry)
    }

    fn counter(&self, listener: Listener) -> (&AtomicUsize, usize) {
        let server = &self.config.server;
        match listener {
            Listener::Bus => (&self.connections, server.max_connections),
            Listener::Telemetry => (
                &self.telemetry_connections,
                server.telemetry_max_connections,
            ),
        }
    }

    fn reserve(self: &Arc<Self>, listener: Listener) -> Option<ConnectionSlot> {
        let (open, max) = self.counter(listener);
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
            (open < max).then_some(open + 1)
        })
        .ok()
        .map(|_| ConnectionSlot {
            app: self.clone(),
            listener,
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Listener {
    Bus,
    Telemetry,
}

/// One reserved connection; dropping it frees the slot. Connection tasks
/// drop it only once their socket is closed.
#[derive(Debug)]
pub struct ConnectionSlot {
    app: Arc<App>,
    listener: Listener,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let (open, _) = self.app.counter(self.listener);
        open.fetch_sub(1, Ordering::AcqRel);
    }
}
