//! HTTP endpoints (SPEC §12) and the axum router of the bus listener.

use std::sync::Arc;

use arqon_commands::PRODUCT_NAME;
use arqon_protocol::{PROTOCOL_VERSION, now_rfc3339};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use arqon_telemetry::StatsSnapshot;
use arqon_telemetry::metrics::{
    RouterTotals, set_bus_gauges, set_process_gauges, set_router_totals,
};

use crate::app::{App, BUILD_DATE, GIT_COMMIT, VERSION};
use crate::ws;

/// The bus listener: WebSocket at `/` and `/ws`, plus the HTTP endpoints.
pub fn bus_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(ws::upgrade))
        .route("/ws", get(ws::upgrade))
        .merge(http_routes())
        .with_state(app)
        .layer(axum::middleware::map_response(allow_any_origin))
}

/// The HTTP endpoints alone, for the optional `ARQONBUS_HTTP_PORT` listener.
pub fn http_router(app: Arc<App>) -> Router {
    http_routes()
        .with_state(app)
        .layer(axum::middleware::map_response(allow_any_origin))
}

fn http_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
}

async fn allow_any_origin(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// Never waits on Redis: storage state is read from atomics.
async fn health(State(app): State<Arc<App>>) -> Response {
    let info = app.bus.info();
    let storage = app.bus.storage().status();
    axum::Json(json!({
        "status": if storage.degraded { "degraded" } else { "ok" },
        "timestamp": now_rfc3339(),
        "uptime_seconds": info.uptime_seconds(),
        "version": VERSION,
        "storage": {"backend": storage.backend, "degraded": storage.degraded},
    }))
    .into_response()
}

/// 200 while accepting connections; 503 while draining, and in strict
/// storage mode while storage is down.
async fn ready(State(app): State<Arc<App>>) -> Response {
    if app.is_ready() {
        return axum::Json(json!({"status": "ready"})).into_response();
    }
    let status = if app.is_draining() {
        "draining"
    } else {
        "storage_unavailable"
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"status": status})),
    )
        .into_response()
}

async fn version() -> Response {
    axum::Json(json!({
        "name": PRODUCT_NAME,
        "version": VERSION,
        "protocol": PROTOCOL_VERSION,
        "build": {"git_commit": GIT_COMMIT, "build_date": BUILD_DATE},
    }))
    .into_response()
}

/// `GET /metrics`: Prometheus text format 0.0.4. Gauges and the totals the
/// router keeps as atomics are brought up to date just before rendering.
async fn metrics(State(app): State<Arc<App>>) -> Response {
    let Some(handle) = &app.metrics else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "metrics are not enabled in this embedding"})),
        )
            .into_response();
    };
    let router = app.bus.router();
    let stats = router.stats();
    let (rooms, channels) = router.room_and_channel_counts();
    let load =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    set_bus_gauges(&StatsSnapshot {
        connections: router.client_count(),
        rooms,
        channels,
        messages_in: load(&stats.received),
        messages_out: load(&stats.delivered),
    });
    set_router_totals(RouterTotals {
        received: load(&stats.received),
        delivered: load(&stats.delivered),
        slow_disconnects: load(&stats.slow_disconnects),
        dropped: load(&stats.dropped),
    });
    set_process_gauges(std::time::Duration::from_secs(
        app.bus.info().uptime_seconds(),
    ));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}
