//! The ArqonBus server: binds the listeners of SPEC §1, serves the
//! WebSocket bus and the HTTP endpoints with axum on hyper, and shuts down
//! gracefully (SPEC §11).
//!
//! This crate is wiring. Protocol rules live in `arqon-protocol`, routing
//! in `arqon-routing`, per-connection behaviour and commands in
//! `arqon-commands`; here are only the transport (upgrade checks, the
//! reader loop and the writer task of each connection), the HTTP handlers,
//! and the accept loops.
//!
//! Embedders and tests use [`serve`] (one bus listener) or [`Server`]
//! (every listener the configuration asks for):
//!
//! ```no_run
//! # async fn run() -> Result<(), arqonbus_server::ServerError> {
//! let config = arqon_config::Config::builder().port(0).build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let shutdown = async { tokio::signal::ctrl_c().await.ok(); };
//! arqonbus_server::serve(listener, config, shutdown).await
//! # }
//! ```
//!
//! With `ARQONBUS_TLS_CERT` and `ARQONBUS_TLS_KEY` every listener serves
//! TLS (`wss://`, `https://`) with rustls: the files are loaded and checked
//! once, in [`Server::bind`] (or when [`serve`] starts), and each accepted
//! connection completes its TLS handshake in its own task, within the
//! handshake timeout, before HTTP is read.
//!
//! Several servers can run in one process: nothing here touches global
//! state (the tracing subscriber is installed by `main.rs` only).

mod accept;
mod api;
mod app;
mod dashboard;
mod http;
mod origin;
mod telemetry;
mod tls;
mod ws;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arqon_cluster::ClusterError;
use arqon_commands::Bus;
use arqon_config::{Config, ConfigError};
use arqon_storage::{Storage, StorageError, StorageEvent};
use arqon_telemetry::metrics::{PrometheusHandle, UPKEEP_INTERVAL, run_upkeep};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use app::{BUILD_DATE, GIT_COMMIT, VERSION};
pub use tls::TlsError;

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} ({listener}): {source}")]
    Bind {
        listener: &'static str,
        addr: String,
        source: io::Error,
    },
    /// A configured feature this version cannot provide; starting anyway
    /// would silently behave differently from what was asked.
    #[error("{setting}: {reason}")]
    Unsupported {
        setting: &'static str,
        reason: &'static str,
    },
    /// Strict storage mode and Redis is unreachable (SPEC §7), or the
    /// Redis URL is unusable.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// Cluster mode cannot start (an unusable Redis URL).
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    /// A TLS file (`key` is `ARQONBUS_TLS_CERT` or `ARQONBUS_TLS_KEY`) is
    /// unusable: invalid configuration.
    #[error("{key}: {}: {reason}", path.display())]
    Tls {
        key: &'static str,
        path: PathBuf,
        reason: TlsError,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The addresses the server listens on, as `--print-addrs` prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Addrs {
    pub bus: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
}

/// A server with its listeners bound, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    config: Config,
    bus: TcpListener,
    telemetry: Option<TcpListener>,
    http: Option<TcpListener>,
    metrics: Option<PrometheusHandle>,
    storage: Option<Storage>,
    tls: Option<tls::Acceptor>,
}

async fn bind(listener: &'static str, host: &str, port: u16) -> Result<TcpListener, ServerError> {
    TcpListener::bind((host, port))
        .await
        .map_err(|source| ServerError::Bind {
            listener,
            addr: format!("{host}:{port}"),
            source,
        })
}

impl Server {
    /// Opens storage (in strict mode, failing when Redis is unreachable)
    /// and binds every listener the configuration names: the bus, the
    /// telemetry stream, and the optional separate HTTP port. With TLS
    /// files configured, loads them first: a file that is not a PEM
    /// certificate chain or private key, or a key that does not match the
    /// certificate, is [`ServerError::Tls`].
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        check_supported(&config)?;
        let tls = tls::Acceptor::from_config(&config.server)?;
        let storage = Storage::open(&config.storage).await?;
        let server = &config.server;
        let bus = bind("bus", &server.host, server.port).await?;
        let telemetry = bind("telemetry", &server.telemetry_host, server.telemetry_port).await?;
        let http = match server.http_port {
            Some(port) => Some(bind("http", &server.host, port).await?),
            None => None,
        };
        Ok(Self {
            config,
            bus,
            telemetry: Some(telemetry),
            http,
            metrics: None,
            storage: Some(storage),
            tls,
        })
    }

    /// A server on an already bound bus listener, with no other listener.
    /// TLS files in `config` are loaded when it [runs](Server::run).
    pub fn from_listener(listener: TcpListener, config: Config) -> Self {
        Self {
            config,
            bus: listener,
            telemetry: None,
            http: None,
            metrics: None,
            storage: None,
            tls: None,
        }
    }

    /// Serves `/metrics` from `handle` (see
    /// `arqon_telemetry::metrics::install_recorder`). Without it `/metrics`
    /// answers 404: the metrics recorder is process-global, so only the
    /// program that owns the process installs it.
    #[must_use]
    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    pub fn local_addrs(&self) -> io::Result<Addrs> {
        Ok(Addrs {
            bus: self.bus.local_addr()?,
            telemetry: self
                .telemetry
                .as_ref()
                .map(TcpListener::local_addr)
                .transpose()?,
            http: self
                .http
                .as_ref()
                .map(TcpListener::local_addr)
                .transpose()?,
        })
    }

    /// Serves until `shutdown` resolves, then drains (SPEC §11): `/ready`
    /// and new upgrades answer 503, every client gets close 1001, and the
    /// call returns once connections are gone or the grace period ends.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let addrs = self.local_addrs()?;
        let tls = match self.tls {
            Some(tls) => Some(tls),
            None => tls::Acceptor::from_config(&self.config.server)?,
        };
        let storage = match self.storage {
            Some(storage) => storage,
            None => Storage::open(&self.config.storage).await?,
        };
        // Channels whose history outlived the last run continue their seq.
        let restored = storage.restore().await;
        let bus = Bus::new(&self.config, VERSION, storage.clone());
        // What other nodes publish reaches this node's clients inside the
        // backplane, which delivers to the router.
        let backplane = arqon_cluster::open(
            &self.config.cluster,
            &self.config.storage,
            storage,
            bus.shared_router(),
            bus.tasks(),
            bus.stopping(),
        )
        .await?;
        let app = app::App::new(self.config, self.metrics, bus.with_backplane(backplane));
        for channel in restored {
            app.bus
                .router()
                .restore_channel(channel.key, channel.epoch.into(), channel.last_seq);
        }
        let stop_accepting = CancellationToken::new();
        let stop_background = CancellationToken::new();
        // The background loops, the accept loops and their plain-HTTP
        // connections; shutdown waits for all of them. (WebSocket
        // connections are on `app.tasks`, drained first.)
        let background = TaskTracker::new();
        background.spawn(telemetry::forward_to_channels(
            app.clone(),
            stop_background.clone(),
        ));
        background.spawn(telemetry::emit_stats(app.clone(), stop_background.clone()));
        background.spawn(telemetry::report_storage(
            app.clone(),
            stop_background.clone(),
        ));
        background.spawn(restart_lost_epochs(app.clone(), stop_background.clone()));
        if let Some(ttl) = app.config.routing.empty_channel_ttl {
            background.spawn(reclaim_idle_channels(
                app.clone(),
                ttl,
                stop_background.clone(),
            ));
        }
        if let Some(handle) = app.metrics.clone() {
            background.spawn(run_upkeep(
                handle,
                UPKEEP_INTERVAL,
                stop_background.clone().cancelled_owned(),
            ));
        }
        let handshake_timeout = app.config.server.handshake_timeout;

        let listen = |listener: TcpListener, router: axum::Router| {
            background.spawn(accept::accept_loop(
                listener,
                router,
                tls.clone(),
                handshake_timeout,
                background.clone(),
                stop_accepting.clone(),
            ));
        };
        listen(self.bus, http::bus_router(app.clone()));
        if let Some(listener) = self.telemetry {
            listen(listener, telemetry::router(app.clone()));
        }
        if let Some(listener) = self.http {
            listen(listener, http::http_router(app.clone()));
        }
        info!(bus = %addrs.bus, telemetry = ?addrs.telemetry, http = ?addrs.http, tls = tls.is_some(), "ArqonBus listening");

        shutdown.await;
        let started = tokio::time::Instant::now();
        drain(&app).await;
        // Nothing acknowledged is lost: pending history writes go to Redis
        // within what is left of the grace period.
        let grace = app.config.server.shutdown_grace;
        let report = app
            .bus
            .storage()
            .flush(grace.saturating_sub(started.elapsed()))
            .await;
        if report.is_complete() {
            info!(written = report.written, "storage flushed");
        } else {
            tracing::warn!(
                remaining = report.remaining,
                "storage not fully flushed before the grace period ended"
            );
        }
        stop_accepting.cancel();
        stop_background.cancel();
        background.close();
        background.wait().await;
        // The bus's own tasks (the backplane's, and publishes still waiting
        // on it) end with it; then the storage's.
        if !app.bus.stop_tasks(ABORT_WAIT).await {
            tracing::warn!("background tasks still running after shutdown");
        }
        app.bus.storage().close().await;
        info!("ArqonBus stopped");
        Ok(())
    }
}

/// Every so often, removes the auto-created channels left empty for `ttl`
/// (SPEC §18). Checks four times per `ttl` (between 100 ms and 30 s), so
/// a channel goes between `ttl` and `ttl` plus that interval after its
/// last member left.
async fn reclaim_idle_channels(
    app: Arc<app::App>,
    ttl: std::time::Duration,
    stop: CancellationToken,
) {
    let every = (ttl / 4).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(30),
    );
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {
                app.bus.reclaim_idle_channels(ttl);
            }
        }
    }
}

/// How long aborted connection tasks get to finish.
const ABORT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts draining and waits for the connections to close, within the
/// grace period (less a margin for the rest of the shutdown).
/// Storage found a channel's Redis history gone behind the server's back
/// (SPEC §18): the channel starts a new epoch, so clients can tell that
/// history restarted. Each loss is reported until storage stops seeing
/// entries of the lost epoch; the router acts once per loss.
async fn restart_lost_epochs(app: Arc<app::App>, stop: CancellationToken) {
    use tokio::sync::broadcast::error::RecvError;
    let mut events = app.bus.storage().events();
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(StorageEvent::HistoryLost { key, epoch }) => {
                if let Some(fresh) = app.bus.router().restart_epoch(&key, &epoch) {
                    tracing::warn!(
                        channel = %key,
                        lost_epoch = %epoch,
                        epoch = %fresh,
                        "channel history lost in Redis: new epoch, seq restarts at 1"
                    );
                }
            }
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

async fn drain(app: &Arc<app::App>) {
    info!(connections = app.connection_count(), "shutting down");
    app.start_draining();
    app.tasks.close();
    let grace = app.config.server.shutdown_grace;
    let wait = grace.saturating_sub(grace / 10);
    if tokio::time::timeout(wait, app.tasks.wait()).await.is_err() {
        info!(
            connections = app.connection_count(),
            "grace period over; aborting the remaining connections"
        );
        // Every connection task gives up where it stands and closes its
        // socket; none is left running behind the server's back.
        app.abort.cancel();
        if tokio::time::timeout(ABORT_WAIT, app.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("connection tasks still running after the abort");
        }
    }
}

/// Serves the bus (WebSocket and HTTP endpoints) on `listener` until
/// `shutdown` resolves. The telemetry and separate HTTP listeners of the
/// configuration are not opened: use [`Server::bind`] for those.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    check_supported(&config)?;
    Server::from_listener(listener, config).run(shutdown).await
}

/// Validates `config`.
fn check_supported(config: &Config) -> Result<(), ServerError> {
    config.validate()?;
    Ok(())
}
