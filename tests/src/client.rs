//! For tests of `arqon-client` against a real server: servers that shut
//! down quickly, client options with short timeouts and fast reconnects, a
//! TCP proxy whose connections can be cut, and waits on the client's
//! connection state.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arqon_client::{ConnectOptions, ReconnectPolicy};
use arqon_config::{Config, ConfigBuilder};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::TestServer;

/// How long any single expected event may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// The shutdown grace of servers for client tests: short, so that `stop`
/// returns soon even when a client (behind a paused proxy) never closes.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

impl TestServer {
    /// A server for client tests ([`SHUTDOWN_GRACE`]) whose configuration
    /// `adjust` changes.
    pub async fn for_clients(adjust: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Self {
        Self::with_config(client_config(adjust)).await
    }

    /// [`for_clients`](Self::for_clients) on a given address, to restart
    /// "the same" server.
    pub async fn for_clients_on(
        addr: SocketAddr,
        adjust: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
    ) -> Self {
        Self::with_config_on(addr, client_config(adjust)).await
    }

    /// Options for this server: short timeouts, fast reconnects.
    pub fn options(&self) -> ConnectOptions {
        options(&self.url())
    }
}

fn client_config(adjust: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Config {
    adjust(
        Config::builder()
            .port(0)
            .telemetry_port(0)
            .shutdown_grace(SHUTDOWN_GRACE),
    )
    .build()
    .expect("valid test config")
}

/// Options for `url`: short timeouts, fast reconnects.
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
#[derive(Debug)]
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
