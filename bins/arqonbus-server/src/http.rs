//! HTTP endpoints (SPEC §12), the server API's routes (§17, in `api`), and
//! the axum router of the bus listener.

use std::sync::Arc;

use arqon_commands::PRODUCT_NAME;
use arqon_protocol::{PROTOCOL_VERSION, now_rfc3339};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use arqon_telemetry::StatsSnapshot;
use arqon_telemetry::metrics::{
    RouterTotals, set_bus_gauges, set_process_gauges, set_router_totals,
};

use crate::app::{App, BUILD_DATE, GIT_COMMIT, VERSION};
use crate::{api, ws};

/// The bus listener: WebSocket at `/` and `/ws`, plus the HTTP endpoints.
pub fn bus_router(app: Arc<App>) -> Router {
    finish(
        Router::new()
            .route("/", get(ws::upgrade))
            .route("/ws", get(ws::upgrade))
            .merge(http_routes(&app))
            .with_state(app),
    )
}

/// The HTTP endpoints alone, for the optional `ARQONBUS_HTTP_PORT` listener.
pub fn http_router(app: Arc<App>) -> Router {
    finish(http_routes(&app).with_state(app))
}

/// What every listener's router shares (SPEC §12, §18): JSON bodies for
/// unknown paths and methods, CORS preflights answered on every path, and
/// `Access-Control-Allow-Origin: *` on every response. (CORS does not
/// govern WebSocket upgrades: those are checked against the Origin policy.)
pub fn finish(router: Router) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(preflight))
        .layer(axum::middleware::map_response(allow_any_origin))
}

/// Methods and headers a preflight allows.
const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "Authorization, Content-Type";
/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// Answers `OPTIONS` on any path with 204 and the CORS headers.
async fn preflight(request: Request, next: Next) -> Response {
    if request.method() != Method::OPTIONS {
        return next.run(request).await;
    }
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS),
            (header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE),
        ],
    )
        .into_response()
}

async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({
            "error": "not found",
            "field": null,
            "message": format!("no endpoint at {}", uri.path()),
        })),
    )
        .into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(json!({
            "error": "method not allowed",
            "field": null,
            "message": format!("{method} is not served at {}", uri.path()),
        })),
    )
        .into_response()
}

/// The §12 endpoints, and the §17 server API when it is enabled.
fn http_routes(app: &Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .merge(api::routes(app))
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
