//! The telemetry listener (SPEC §1, §8). Today it greets each socket with
//! `telemetry_connected` and keeps it open until either side closes; the
//! event stream itself belongs to the observability work (`arqon-telemetry`).

use std::sync::Arc;

use arqon_protocol::{Envelope, EnvelopeType, close};
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures_util::StreamExt;
use serde_json::json;

use crate::app::{App, VERSION};

pub fn router(app: Arc<App>) -> Router {
    Router::new().route("/", get(upgrade)).with_state(app)
}

async fn upgrade(State(app): State<Arc<App>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| {
        let tasks = app.tasks.clone();
        tasks.track_future(stream(app, socket))
    })
}

async fn stream(app: Arc<App>, mut socket: WebSocket) {
    let snapshot = app.bus.router().snapshot(0);
    let mut greeting: Envelope = Envelope::from_server(EnvelopeType::Telemetry);
    if let Some(key) = app.bus.telemetry_channel() {
        greeting.room = Some(key.room().to_owned());
        greeting.channel = Some(key.channel().to_owned());
    }
    greeting.payload = Some(json!({
        "eventType": "telemetry_connected",
        "server_version": VERSION,
        "connections": snapshot.clients,
        "rooms": snapshot.rooms,
        "channels": snapshot.channels,
    }));
    let Ok(text) = Utf8Bytes::try_from(bytes::Bytes::from(greeting.to_json())) else {
        return;
    };
    if socket.send(Message::Text(text)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            () = app.shutdown.cancelled() => {
                let frame = CloseFrame { code: close::GOING_AWAY, reason: Utf8Bytes::from_static("server shutting down") };
                let _ = socket.send(Message::Close(Some(frame))).await;
                return;
            }
            message = socket.next() => match message {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
