//! The accept loop of one listener: TLS when configured, HTTP/1.1 on hyper
//! with upgrades, the peer address handed to axum, and the handshake
//! timeout (SPEC §2).
//!
//! The loop itself only accepts: each connection's TLS handshake and HTTP
//! run in the connection's own task, so a slow or silent peer never holds
//! up the next `accept`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::tls::Acceptor;

/// How long the loop pauses after a failed `accept` (for instance when the
/// process is out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// How long an open plain-HTTP connection gets to finish its request once
/// the listener stops. (Upgraded WebSockets are not affected: they run in
/// their own tasks.)
const HTTP_DRAIN: Duration = Duration::from_millis(500);

/// Accepts connections until `stop` is cancelled, each served in a task on
/// `tasks` (which shutdown waits for: after `stop`, a connection finishes
/// its request within [`HTTP_DRAIN`]). With `tls`, the TLS handshake and
/// then the HTTP request must both arrive within `handshake_timeout` of the
/// connection opening; a failed or late TLS handshake is logged at debug
/// and the connection dropped.
pub async fn accept_loop(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Acceptor>,
    handshake_timeout: Duration,
    tasks: TaskTracker,
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
        let opened = Instant::now();
        if let Err(err) = stream.set_nodelay(true) {
            debug!(error = %err, %peer, "cannot set TCP_NODELAY");
        }
        let router = router.clone();
        let stop = stop.clone();
        let Some(tls) = tls.clone() else {
            tasks.spawn(serve_http(stream, peer, router, handshake_timeout, stop));
            continue;
        };
        tasks.spawn(async move {
            let handshake = tokio::time::timeout(handshake_timeout, tls.inner().accept(stream));
            let stream = tokio::select! {
                () = stop.cancelled() => return,
                handshake = handshake => match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(err)) => {
                        debug!(error = %err, %peer, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(%peer, timeout = ?handshake_timeout, "TLS handshake timed out");
                        return;
                    }
                },
            };
            // What is left of the handshake time is for the HTTP request.
            let left = handshake_timeout.saturating_sub(opened.elapsed());
            serve_http(stream, peer, router, left.max(MIN_HEADER_READ), stop).await;
        });
    }
}

/// The least time the HTTP request gets after a TLS handshake that used
/// nearly all of the handshake timeout.
const MIN_HEADER_READ: Duration = Duration::from_millis(100);

/// Serves HTTP/1.1 (with upgrades) on one connection until it ends, or
/// until `stop` (then finishing the request in flight, briefly).
async fn serve_http<S>(
    stream: S,
    peer: SocketAddr,
    router: axum::Router,
    header_read_timeout: Duration,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request
            .extensions_mut()
            .insert(ConnectInfo::<SocketAddr>(peer));
        router.clone().oneshot(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
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
}
