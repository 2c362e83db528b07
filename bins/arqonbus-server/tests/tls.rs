//! With `ARQONBUS_TLS_CERT` and `ARQONBUS_TLS_KEY`, every listener (bus,
//! telemetry, the separate HTTP port) speaks TLS: `wss://` upgrades and
//! `https://` endpoints work for a client that trusts the certificate,
//! plain `ws://` to the same port fails, a peer that never starts its
//! handshake neither blocks other connections nor stays open past the
//! handshake timeout, and unusable TLS files are invalid configuration
//! (exit 64, one line naming the variable).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arqon_config::{Config, ConfigBuilder};
use arqonbus_server::{Addrs, Server, ServerError, TlsError};
use futures_util::StreamExt;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;

/// How long any single expected event may take.
const WAIT: Duration = Duration::from_secs(5);
const BIN: &str = env!("CARGO_BIN_EXE_arqonbus-server");

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as
/// PEM files into a directory of its own.
struct Certs {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl Certs {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("arqonbus-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        Self {
            dir,
            cert,
            key,
            der: generated.cert.der().clone(),
        }
    }

    /// Another file in the same directory.
    fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn builder(&self) -> ConfigBuilder {
        Config::builder()
            .port(0)
            .telemetry_port(0)
            .shutdown_grace(Duration::from_secs(2))
            .tls_cert(&self.cert)
            .tls_key(&self.key)
    }

    /// A client configuration that trusts this certificate only.
    fn client(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Running {
    addrs: Addrs,
    _shutdown: oneshot::Sender<()>,
}

async fn start(config: Config) -> Running {
    let server = Server::bind(config).await.expect("bind with TLS");
    let addrs = server.local_addrs().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running {
        addrs,
        _shutdown: tx,
    }
}

async fn tls_connect(certs: &Certs, addr: SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, certs.client().connect(name, tcp))
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake")
}

/// `GET path` over TLS; the whole response as text.
async fn https_get(certs: &Certs, addr: SocketAddr, path: &str) -> String {
    let mut stream = tls_connect(certs, addr).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // The server may end without close_notify once it has answered.
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("response in time");
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn https_endpoints_on_the_bus_and_the_http_port() {
    let certs = Certs::new("https");
    let server = start(certs.builder().http_port(Some(0)).build().unwrap()).await;
    for addr in [server.addrs.bus, server.addrs.http.unwrap()] {
        let response = https_get(&certs, addr, "/health").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{addr}: {response}");
        assert!(response.contains("\"status\""), "{response}");
    }
}

#[tokio::test]
async fn wss_upgrades_on_the_bus_and_the_telemetry_listener() {
    let certs = Certs::new("wss");
    let server = start(certs.builder().build().unwrap()).await;
    let bus = server.addrs.bus;
    let stream = tls_connect(&certs, bus).await;
    let url = format!("wss://localhost:{}/", bus.port());
    let (mut ws, response) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("wss upgrade on the bus");
    assert_eq!(response.status(), 101);
    let welcome = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("welcome in time")
        .expect("a frame")
        .unwrap();
    let Message::Text(text) = welcome else {
        panic!("welcome is text: {welcome:?}")
    };
    assert!(text.contains("Connected to ArqonBus"), "{text}");

    let telemetry = server.addrs.telemetry.unwrap();
    let stream = tls_connect(&certs, telemetry).await;
    let url = format!("wss://localhost:{}/", telemetry.port());
    let (_ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("upgrade in time")
        .expect("wss upgrade on the telemetry listener");
    assert_eq!(response.status(), 101);
}

#[tokio::test]
async fn plain_connections_to_a_tls_port_fail() {
    let certs = Certs::new("plain");
    let server = start(certs.builder().build().unwrap()).await;
    for addr in [server.addrs.bus, server.addrs.telemetry.unwrap()] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let upgrade = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp),
        )
        .await
        .expect("refused in time");
        assert!(upgrade.is_err(), "plain ws:// to {addr} must fail");

        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
            .await
            .expect("closed in time");
        assert!(
            !response.starts_with(b"HTTP/1.1 200"),
            "plain HTTP to {addr} must not be served"
        );
    }
}

#[tokio::test]
async fn a_silent_peer_blocks_nobody_and_is_dropped_after_the_handshake_timeout() {
    let certs = Certs::new("silent");
    let config = certs
        .builder()
        .handshake_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let server = start(config).await;
    let mut silent = TcpStream::connect(server.addrs.bus).await.unwrap();
    // Another client is served while the first one says nothing.
    let response = https_get(&certs, server.addrs.bus, "/health").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, silent.read(&mut buf))
        .await
        .expect("the silent connection is closed after the handshake timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn unusable_tls_files_name_the_variable() {
    let certs = Certs::new("invalid");
    let garbage = certs.file("garbage.pem", "this is not PEM\n");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other_key = certs.file("other-key.pem", other.signing_key.serialize_pem());

    let bind = |cert: &PathBuf, key: &PathBuf| {
        let config = Config::builder()
            .port(0)
            .telemetry_port(0)
            .tls_cert(cert)
            .tls_key(key)
            .build()
            .unwrap();
        Server::bind(config)
    };
    let err = bind(&garbage, &certs.key).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ServerError::Tls {
                key: "ARQONBUS_TLS_CERT",
                reason: TlsError::NoCertificate,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "ARQONBUS_TLS_CERT: {}: no PEM certificate found",
            garbage.display()
        )
    );
    // The certificate where the key should be: no private key in it.
    let err = bind(&certs.cert, &certs.cert).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ServerError::Tls {
                key: "ARQONBUS_TLS_KEY",
                reason: TlsError::NoPrivateKey,
                ..
            }
        ),
        "{err:?}"
    );
    let err = bind(&certs.cert, &other_key).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ServerError::Tls {
                key: "ARQONBUS_TLS_KEY",
                reason: TlsError::KeyMismatch,
                ..
            }
        ),
        "{err:?}"
    );
    // `serve` checks them too.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = Config::builder()
        .tls_cert(&garbage)
        .tls_key(&certs.key)
        .build()
        .unwrap();
    let served = tokio::time::timeout(
        WAIT,
        arqonbus_server::serve(listener, config, std::future::pending()),
    )
    .await
    .expect("refused at once");
    assert!(matches!(served, Err(ServerError::Tls { .. })), "{served:?}");
}

#[test]
fn the_binary_exits_64_on_unusable_tls_files() {
    let certs = Certs::new("binary");
    let garbage = certs.file("garbage.pem", "-----BEGIN NOTHING-----\nxx\n");
    let cases = [
        (&garbage, &certs.key, "ARQONBUS_TLS_CERT"),
        (&certs.cert, &garbage, "ARQONBUS_TLS_KEY"),
    ];
    for (cert, key, named) in cases {
        let output = Command::new(BIN)
            .env_clear()
            .env("ARQONBUS_PORT", "0")
            .env("ARQONBUS_TELEMETRY_PORT", "0")
            .env("ARQONBUS_TLS_CERT", cert)
            .env("ARQONBUS_TLS_KEY", key)
            .stdin(Stdio::null())
            .output()
            .expect("run arqonbus-server");
        assert_eq!(output.status.code(), Some(64), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.trim_end().lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(
            lines[0].starts_with(&format!(
                "arqonbus-server: invalid configuration: {named}: "
            )),
            "{stderr}"
        );
    }
}
