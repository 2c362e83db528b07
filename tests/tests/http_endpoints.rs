//! The HTTP endpoints of the bus listener (SPEC §12): `/health`, `/ready`
//! and `/version` answer JSON with `Access-Control-Allow-Origin: *`; a plain
//! GET of the WebSocket path gets 426 with a JSON body; unknown paths 404.

use arqonbus_tests::{HttpResponse, TestServer, assert_server_time, http_get};

fn assert_json_with_cors(response: &HttpResponse) {
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("*"),
        "{:?}",
        response.headers
    );
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        response.headers
    );
}

#[tokio::test]
async fn health() {
    let server = TestServer::start().await;
    let response = http_get(server.addr, "/health").await;
    assert_eq!(response.status, 200);
    assert_json_with_cors(&response);
    let body = response.json();
    assert_eq!(body["status"], "ok");
    assert_server_time(body["timestamp"].as_str().expect("timestamp"));
    assert!(body["uptime_seconds"].is_u64(), "{body}");
    assert!(body["version"].as_str().is_some_and(|v| !v.is_empty()));
    assert_eq!(
        body["storage"],
        serde_json::json!({"backend": "memory", "degraded": false})
    );
}

#[tokio::test]
async fn ready() {
    let server = TestServer::start().await;
    let response = http_get(server.addr, "/ready").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn version() {
    let server = TestServer::start().await;
    let response = http_get(server.addr, "/version").await;
    assert_eq!(response.status, 200);
    assert_json_with_cors(&response);
    let body = response.json();
    assert_eq!(body["name"], "ArqonBus");
    assert!(body["version"].as_str().is_some_and(|v| !v.is_empty()));
    assert_eq!(body["protocol"], "1.0");
    assert!(
        body["build"]["git_commit"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{body}"
    );
    assert!(
        body["build"]["build_date"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{body}"
    );

    // The same version everywhere it is reported.
    let health = http_get(server.addr, "/health").await.json();
    assert_eq!(health["version"], body["version"]);
    let client = server.connect().await;
    assert_eq!(client.welcome["payload"]["server_version"], body["version"]);
}

#[tokio::test]
async fn a_plain_get_of_the_websocket_path_is_426() {
    let server = TestServer::start().await;
    for path in ["/", "/ws"] {
        let response = http_get(server.addr, path).await;
        assert_eq!(response.status, 426, "{path}");
        assert_json_with_cors(&response);
        assert!(response.json().is_object(), "{}", response.body);
    }
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let server = TestServer::start().await;
    for path in ["/nope", "/health/extra", "/ws/deeper"] {
        let response = http_get(server.addr, path).await;
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    }
}
