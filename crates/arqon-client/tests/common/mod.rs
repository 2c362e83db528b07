//! Shared test helpers: a real ArqonBus server in-process on 127.0.0.1,
//! and client options with short timeouts and fast reconnects.

#![allow(dead_code, clippy::unwrap_used, clippy::missing_panics_doc)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arqon_client::{ConnectOptions, ReconnectPolicy};
use arqon_config::{Config, ConfigBuilder};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any single expected event may take.
pub const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with(|b| b).await
    }

    pub async fn with(adjust: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(listener, adjust)
    }

    /// A server on a given address (to restart "the same" server); retries
    /// the bind while the previous listener's port is being released.
    pub async fn start_on(addr: SocketAddr) -> Self {
        Self::start_on_with(addr, |b| b).await
    }

    /// [`start_on`](Self::start_on) with a configuration.
    pub async fn start_on_with(
        addr: SocketAddr,
        adjust: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
    ) -> Self {
        let deadline = tokio::time::Instant::now() + WAIT;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot bind {addr} again: {e}"),
            }
        };
        Self::serve(listener, adjust)
    }

    fn serve(listener: TcpListener, adjust: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Self {
        let config = adjust(
            Config::builder()
                .port(0)
                .telemetry_port(0)
                .shutdown_grace(Duration::from_secs(2)),
        )
        .build()
        .expect("valid test config");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            arqonbus_server::serve(listener, config, async {
                let _ = rx.await;
            })
            .await
            .expect("server ran");
        });
        Self {
            addr,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Options for this server: short timeouts, fast reconnects.
    pub fn options(&self) -> ConnectOptions {
        options(&self.url())
    }

    /// Shuts down (clients get close 1001) and waits until it has.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(15), handle)
                .await
                .expect("server stops in time")
                .expect("server task");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn options(url: &str) -> ConnectOptions {
    ConnectOptions::new(url)
        .request_timeout(WAIT)
        .connect_timeout(WAIT)
        .reconnect(ReconnectPolicy {
            enabled: true,
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(400),
            max_attempts: Some(100),
        })
}

/// `future`, or a panic naming `what` after [`WAIT`].
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("not within {WAIT:?}: {what}"))
}

/// A TCP proxy whose connections can be cut while the server stays up.
pub struct Proxy {
    pub addr: SocketAddr,
    paused: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let paused = Arc::new(AtomicBool::new(false));
        let links = Arc::new(Mutex::new(Vec::new()));
        let (p, l) = (paused.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if p.load(Ordering::SeqCst) {
                    continue; // dropped: the client's attempt fails
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                l.lock().unwrap().push(link);
            }
        });
        Self {
            addr,
            paused,
            links,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.paused.store(true, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    /// Refuses new connections (open ones stay).
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

/// Waits until the client has noticed a dropped connection.
pub async fn wait_reconnecting(client: &arqon_client::Client) {
    let mut state = client.watch_state();
    within(
        "the client notices the drop",
        state.wait_for(|s| matches!(s, arqon_client::ConnectionState::Reconnecting { .. })),
    )
    .await
    .unwrap();
}

/// Waits until the client is connected (again).
pub async fn wait_connected(client: &arqon_client::Client) {
    let mut state = client.watch_state();
    within(
        "the client is connected",
        state.wait_for(|s| matches!(s, arqon_client::ConnectionState::Connected(_))),
    )
    .await
    .unwrap();
}
