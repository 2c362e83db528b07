//! The accept loop of one listener: HTTP/1.1 on hyper with upgrades, the
//! peer address handed to axum, and the handshake timeout (SPEC §2).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, warn};

/// How long the loop pauses after a failed `accept` (for instance when the
/// process is out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// How long an open plain-HTTP connection gets to finish its request once
/// the listener stops. (Upgraded WebSockets are not affected: they run in
/// their own tasks.)
const HTTP_DRAIN: Duration = Duration::from_millis(500);

/// Accepts connections until `stop` is cancelled. A request must arrive
/// within `handshake_timeout` of the connection opening.
pub async fn accept_loop(
    listener: TcpListener,
    router: axum::Router,
    handshake_timeout: Duration,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        if let Err(err) = stream.set_nodelay(true) {
            debug!(error = %err, %peer, "cannot set TCP_NODELAY");
        }
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            router.clone().oneshot(request)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(handshake_timeout)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(HTTP_DRAIN, connection).await.unwrap_or(Ok(()))
                }
            };
            if let Err(err) = result {
                debug!(error = %err, %peer, "http connection ended with an error");
            }
        });
    }
}
