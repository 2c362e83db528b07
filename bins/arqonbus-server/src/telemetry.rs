//! The telemetry listener (SPEC §1, §8) and the tasks that feed telemetry:
//! the forwarder that republishes events on the telemetry and dashboard
//! system channels of the bus, and the periodic `stats` event.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::net::SocketAddr;

use arqon_commands::auth::{self, AuthError};
use arqon_config::AuthMode;
use arqon_protocol::{ClientId, ClientType, Envelope, RawJson, SERVER_SENDER, close};
use arqon_routing::{CloseReason, Outbound, Publisher, PushError, Role};
use arqon_storage::StorageEvent;
use arqon_telemetry::metrics::{AbortReason, ConnectionGauge};
use arqon_telemetry::{
    Event, EventFilter, StatsDetail, StatsSnapshot, StorageState, run_stats_with,
};
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::debug;

use crate::app::{App, ConnectionSlot, VERSION};
use crate::ws::{
    Refusal, WriterSettings, admit, bearer_token, parsed_query, read_error_close, refuse,
    unauthorized, write_loop,
};

/// The telemetry listener: the WebSocket stream at `/`, and the dashboard
/// page (SPEC §19) for a `GET /` without an upgrade.
pub fn router(app: Arc<App>) -> Router {
    crate::http::finish(
        Router::new()
            .route("/", get(upgrade))
            .route_layer(axum::middleware::from_fn_with_state(
                app.clone(),
                crate::dashboard::page_or_next,
            ))
            .with_state(app),
    )
}

/// Inbound frames on the telemetry listener are ignored; larger ones than
/// this close the connection with 1009 (SPEC §18).
const MAX_INBOUND_FRAME: usize = 4096;

#[derive(Debug, serde::Deserialize)]
struct TelemetryQuery {
    #[serde(default)]
    events: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

async fn upgrade(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    query: Result<Query<TelemetryQuery>, QueryRejection>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Refusal> {
    let upgrade = admit(
        &app,
        upgrade,
        &headers,
        "connect with a WebSocket client to ws://HOST:TELEMETRY_PORT/",
    )?;
    let query = parsed_query(query)?;
    let filter = match query.events.as_deref() {
        None => EventFilter::all(),
        Some(list) => EventFilter::parse(list).map_err(|err| {
            refuse(
                StatusCode::BAD_REQUEST,
                "invalid query parameter",
                Some("events"),
                &err.to_string(),
            )
        })?,
    };
    // In token and jwt modes the telemetry stream is for operators only
    // (SPEC §18): it shows every client, channel and error.
    if app.config.auth.mode != AuthMode::None {
        let token = query.token.or_else(|| bearer_token(&headers));
        let identity = auth::authenticate(&app.config.auth, peer, token.as_deref())
            .map_err(|err| unauthorized(&err))?;
        if identity.role != Role::Admin {
            return Err(unauthorized(&AuthError::AdminRequired));
        }
    }
    let slot = app.reserve_telemetry_connection().ok_or_else(|| {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "connection limit reached",
            None,
            "the telemetry listener is at ARQONBUS_TELEMETRY_MAX_CONNECTIONS",
        )
    })?;
    Ok(upgrade
        .max_message_size(MAX_INBOUND_FRAME)
        .max_frame_size(MAX_INBOUND_FRAME)
        .on_upgrade(move |socket| {
            let tasks = app.tasks.clone();
            tasks.track_future(stream(app, socket, filter, slot))
        }))
}

/// The close sent to telemetry sockets on shutdown.
const SHUTDOWN_CLOSE: CloseReason = CloseReason {
    code: close::GOING_AWAY,
    reason: "server shutting down",
    discard_pending: false,
};

/// The close once the client closed or the stream ended.
const NORMAL_CLOSE: CloseReason = CloseReason {
    code: close::NORMAL,
    reason: "telemetry stream closed",
    discard_pending: false,
};

/// Sends `telemetry_connected`, then every event the filter selects, until
/// either side closes. Events go through the same bounded, byte-limited
/// queue and writer task as bus connections: when a slow reader's queue is
/// full, the event is dropped for that socket and counted at once in
/// `arqonbus_telemetry_dropped_total`; nothing upstream ever waits for it.
/// The slot is released once the socket is closed.
async fn stream(app: Arc<App>, socket: WebSocket, filter: EventFilter, slot: ConnectionSlot) {
    let _gauge = ConnectionGauge::telemetry();
    let telemetry = app.bus.telemetry();
    // Subscribe before the greeting so that no event falls in between.
    let mut events = telemetry.subscribe_with(filter);
    let router = app.bus.router();
    let (rooms, channels) = router.room_and_channel_counts();
    let greeting = telemetry.encode(&Event::TelemetryConnected {
        server_version: VERSION.into(),
        connections: router.client_count(),
        rooms,
        channels,
    });
    let outbound = Outbound::new(app.config.routing.client_queue_bytes);
    if outbound.push(greeting.frame).is_err() {
        return;
    }
    let (sink, mut incoming) = socket.split();
    let writer_done = CancellationToken::new();
    let mut writer = AbortOnDropHandle::new(tokio::spawn(write_loop(
        sink,
        outbound.clone(),
        WriterSettings::of(&app),
        writer_done.clone(),
    )));
    let pump = async {
        loop {
            tokio::select! {
                () = app.shutdown.cancelled() => {
                    outbound.close(SHUTDOWN_CLOSE);
                    break;
                }
                () = writer_done.cancelled() => break,
                event = events.recv() => {
                    let Some(event) = event else { break };
                    if let Err(PushError::Full) = outbound.push(event.frame.clone()) {
                        events.count_dropped(1);
                    }
                }
                message = incoming.next() => match message {
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => {}
                    Some(Err(err)) => {
                        if let Some(close) = read_error_close(&err) {
                            outbound.close(close);
                        }
                        break;
                    }
                },
            }
        }
        outbound.close(NORMAL_CLOSE);
        let _ =
            tokio::time::timeout(app.config.server.shutdown_grace, writer_done.cancelled()).await;
    };
    tokio::select! {
        () = pump => {}
        () = app.abort.cancelled() => {
            arqon_telemetry::metrics::connection_aborted(AbortReason::Shutdown);
        }
    }
    writer.abort();
    let _ = (&mut writer).await;
    drop(incoming);
    drop(slot);
}

/// Republishes every telemetry event on its bus channel (the telemetry
/// channel, or the dashboard channel for `agent_activity`) while that
/// channel has members (SPEC §8). Client events keep their sender.
pub async fn forward_to_channels(app: Arc<App>, stop: CancellationToken) {
    let telemetry = app.bus.telemetry().clone();
    let mut events = telemetry.subscribe();
    loop {
        let published = tokio::select! {
            () = stop.cancelled() => return,
            published = events.recv() => published,
        };
        let Some(published) = published else { return };
        let Some(key) = telemetry.channel_key(published.channel) else {
            continue;
        };
        let router = app.bus.router();
        if router
            .channel(key)
            .is_none_or(|channel| channel.member_count() == 0)
        {
            continue;
        }
        let Ok(envelope) = serde_json::from_slice::<Envelope<RawJson>>(&published.frame) else {
            continue;
        };
        let sender = envelope
            .sender
            .as_deref()
            .filter(|sender| *sender != SERVER_SENDER)
            .and_then(|sender| ClientId::new(sender).ok());
        let publisher = match &sender {
            Some(id) => Publisher::Relay(id),
            None => Publisher::Server,
        };
        if let Err(err) = router.publish(publisher, key, envelope, false) {
            debug!(error = %err, channel = %key, "telemetry event not republished");
        }
    }
}

/// Emits the `stats` event every `ARQONBUS_TELEMETRY_STATS_INTERVAL_MS`.
pub async fn emit_stats(app: Arc<App>, stop: CancellationToken) {
    let telemetry = app.bus.telemetry().clone();
    let interval = app.config.telemetry.stats_interval;
    let sample = {
        let app = app.clone();
        move || {
            let router = app.bus.router();
            let (rooms, channels) = router.room_and_channel_counts();
            StatsSnapshot {
                connections: router.client_count(),
                rooms,
                channels,
                messages_in: router.stats().received.load(Ordering::Relaxed),
                messages_out: router.stats().delivered.load(Ordering::Relaxed),
            }
        }
    };
    let detail = move || {
        let snapshot = app.bus.router().snapshot(StatsDetail::TOP_CHANNELS);
        let clients_by_type = ClientType::ALL
            .iter()
            .map(|kind| {
                let count = snapshot.clients_by_type.get(kind.as_str());
                (*kind, count.copied().unwrap_or(0))
            })
            .collect();
        let storage = app.bus.storage();
        StatsDetail {
            clients_by_type,
            top_channels: snapshot.largest_channels,
            storage: StorageState {
                backend: storage.backend(),
                degraded: storage.status().degraded,
            },
        }
    };
    run_stats_with(telemetry, interval, sample, detail, stop.cancelled_owned()).await;
}

/// Reports storage going degraded and recovering (SPEC §7, §8): telemetry
/// events, the `arqonbus_storage_degraded` gauge, and a log line.
pub async fn report_storage(app: Arc<App>, stop: CancellationToken) {
    let storage = app.bus.storage();
    let mut events = storage.events();
    let backend = storage.backend();
    // A degraded start happened before anyone could subscribe.
    if storage.status().degraded {
        tracing::warn!(
            backend = backend.as_str(),
            "storage degraded at startup: history is buffered in memory"
        );
        arqon_telemetry::metrics::set_storage_degraded(true);
        app.bus.telemetry().emit(Event::StorageDegraded {
            backend,
            reason: "unreachable at startup".into(),
        });
    }
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(StorageEvent::Degraded { backend, reason }) => {
                tracing::warn!(
                    backend = backend.as_str(),
                    reason = reason.as_str(),
                    "storage degraded: history is buffered in memory"
                );
                arqon_telemetry::metrics::set_storage_degraded(true);
                app.bus.telemetry().emit(Event::StorageDegraded {
                    backend,
                    reason: reason.as_str().into(),
                });
            }
            Ok(StorageEvent::Recovered { backend }) => {
                tracing::info!(backend = backend.as_str(), "storage recovered");
                arqon_telemetry::metrics::set_storage_degraded(false);
                app.bus.telemetry().emit(Event::StorageRecovered {
                    backend,
                    reason: "reconnected".into(),
                });
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
