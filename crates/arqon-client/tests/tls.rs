//! `wss://`: against a server with `ARQONBUS_TLS_CERT`/`ARQONBUS_TLS_KEY`,
//! a client that trusts the (self-signed) certificate joins, publishes and
//! receives; one that does not trust it, or speaks plain `ws://`, fails to
//! connect; and after the server restarts the client reconnects over TLS
//! with the same configuration and keeps receiving.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use arqon_client::{CertificateDer, Client, ClientError, ClientEvent};
use arqon_config::Config;
use arqonbus_tests::client::{options, within};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A self-signed certificate for `localhost` and `127.0.0.1`, as PEM files.
struct Certs {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    pem: String,
    der: CertificateDer<'static>,
}

impl Certs {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("arqon-client-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let pem = generated.cert.pem();
        std::fs::write(&cert, &pem).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        Self {
            dir,
            cert,
            key,
            pem,
            der: generated.cert.der().clone(),
        }
    }

    fn config(&self) -> Config {
        Config::builder()
            .port(0)
            .telemetry_port(0)
            .shutdown_grace(Duration::from_secs(2))
            .tls_cert(&self.cert)
            .tls_key(&self.key)
            .build()
            .unwrap()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS server on `listener` (its address bound already).
struct TlsServer {
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<()>,
}

impl TlsServer {
    fn serve(listener: TcpListener, config: Config) -> Self {
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            arqonbus_server::serve(listener, config, async {
                let _ = rx.await;
            })
            .await
            .expect("server ran");
        });
        Self {
            shutdown: Some(tx),
            handle,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        within("the server stops", self.handle).await.unwrap();
    }
}

/// Binds `addr` again, retrying while the old listener's port is released.
async fn bind_again(addr: SocketAddr) -> TcpListener {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot bind {addr} again: {e}"),
        }
    }
}

fn wss(addr: SocketAddr) -> String {
    format!("wss://localhost:{}/", addr.port())
}

#[tokio::test]
async fn a_client_that_trusts_the_certificate_publishes_and_receives_over_wss() {
    let certs = Certs::new("roundtrip");
    let server = arqonbus_server::Server::bind(certs.config()).await.unwrap();
    let addr = server.local_addrs().unwrap().bus;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let trusted = || {
        options(&wss(addr))
            .add_root_certificate_pem(certs.pem.as_bytes())
            .unwrap()
    };
    let reader = within("connect over wss", Client::connect(trusted()))
        .await
        .unwrap();
    let mut sub = reader.join_channel("secure", "room").await.unwrap();
    let writer = within("connect over wss", Client::connect(trusted()))
        .await
        .unwrap();
    let _joined = writer.join_channel("secure", "room").await.unwrap();
    let ack = writer
        .publish_with_ack("secure", "room", json!({"text": "over TLS"}))
        .await
        .unwrap();
    assert!(ack.delivered >= 1, "{ack:?}");
    let message = within("the message", sub.next_message()).await.unwrap();
    assert_eq!(message.payload["text"], "over TLS");

    // Without the certificate among its roots, the client refuses the
    // server (or has no system roots at all on this machine).
    let untrusted = Client::connect(options(&wss(addr))).await;
    assert!(
        matches!(
            untrusted,
            Err(ClientError::Connect { .. } | ClientError::Tls { .. })
        ),
        "{untrusted:?}"
    );
    // Plain ws:// to a TLS port fails.
    let plain = Client::connect(options(&format!("ws://{addr}/"))).await;
    assert!(plain.is_err(), "{plain:?}");
    let _ = stop.send(());
}

#[tokio::test]
async fn reconnects_over_wss_with_the_same_roots() {
    let certs = Certs::new("reconnect");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let first = TlsServer::serve(listener, certs.config());

    let connect = options(&wss(addr)).tls_roots([certs.der.clone()]);
    let client = within("connect over wss", Client::connect(connect))
        .await
        .unwrap();
    let mut events = client.events().unwrap();
    let mut sub = client.join_channel("secure", "again").await.unwrap();

    first.stop().await;
    let second = TlsServer::serve(bind_again(addr).await, certs.config());
    loop {
        match within("a reconnect over wss", events.recv()).await {
            Some(ClientEvent::Reconnected { .. }) => break,
            Some(_) => {}
            None => panic!("client closed"),
        }
    }
    let publisher = within(
        "connect over wss",
        Client::connect(options(&wss(addr)).tls_roots([certs.der.clone()])),
    )
    .await
    .unwrap();
    let _joined = publisher.join_channel("secure", "again").await.unwrap();
    // The re-join may still be settling: publish until the message arrives.
    let received = within("a message after the reconnect", async {
        loop {
            publisher
                .publish_with_ack("secure", "again", json!({"text": "still TLS"}))
                .await
                .unwrap();
            let next = tokio::time::timeout(Duration::from_millis(500), sub.next_message()).await;
            if let Ok(Some(message)) = next {
                break message;
            }
        }
    })
    .await;
    assert_eq!(received.payload["text"], "still TLS");
    second.stop().await;
}
