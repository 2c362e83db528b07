//! CORS on every HTTP listener (SPEC §12, §18): `OPTIONS` on any path is a
//! preflight answered 204 with `Access-Control-Allow-Methods`,
//! `Access-Control-Allow-Headers` (including `Authorization` and
//! `Content-Type`) and `Access-Control-Allow-Origin: *`; an unknown path is
//! 404 with a JSON body, a known path with a method it does not serve 405
//! with a JSON body. Holds on the bus port, the separate HTTP port and
//! the telemetry listener.

use std::net::SocketAddr;

use arqonbus_tests::{HttpResponse, TestServer, http_get, http_request};

async fn options(addr: SocketAddr, path: &str) -> HttpResponse {
    http_request(
        addr,
        &format!(
            "OPTIONS {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://app.example.com\r\n\
             Access-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: authorization, content-type\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .await
}

fn list_contains(list: Option<&str>, wanted: &str) -> bool {
    list.is_some_and(|list| {
        list.split(',')
            .any(|item| item.trim().eq_ignore_ascii_case(wanted))
    })
}

async fn assert_preflight(addr: SocketAddr, path: &str) {
    let response = options(addr, path).await;
    assert_eq!(response.status, 204, "OPTIONS {path}: {response:?}");
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("*"),
        "OPTIONS {path}: {:?}",
        response.headers
    );
    let methods = response.header("access-control-allow-methods");
    for method in ["GET", "POST", "OPTIONS"] {
        assert!(
            list_contains(methods, method),
            "OPTIONS {path}: methods {methods:?} lack {method}"
        );
    }
    let headers = response.header("access-control-allow-headers");
    for header in ["Authorization", "Content-Type"] {
        assert!(
            list_contains(headers, header),
            "OPTIONS {path}: headers {headers:?} lack {header}"
        );
    }
}

async fn assert_json_404(addr: SocketAddr, path: &str) {
    let response = http_get(addr, path).await;
    assert_eq!(response.status, 404, "GET {path}: {response:?}");
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        response.headers
    );
    let body = response.json();
    assert!(body.is_object(), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains(path)),
        "the body names the path: {body}"
    );
}

const PATHS: [&str; 6] = [
    "/health",
    "/ready",
    "/metrics",
    "/api/whatever",
    "/api/channels",
    "/no/such/endpoint",
];

#[tokio::test]
async fn the_bus_port_answers_preflights_and_json_404s() {
    let server = TestServer::full(|b| b).await;
    for path in PATHS {
        assert_preflight(server.addr, path).await;
    }
    assert_json_404(server.addr, "/no/such/endpoint").await;
    assert_json_404(server.addr, "/api/whatever").await;
}

#[tokio::test]
async fn the_http_port_answers_preflights_and_json_404s() {
    let server = TestServer::full(|b| b.http_port(Some(0))).await;
    let http = server.http_addr.expect("http listener");
    for path in PATHS {
        assert_preflight(http, path).await;
    }
    assert_json_404(http, "/no/such/endpoint").await;
}

#[tokio::test]
async fn the_telemetry_listener_answers_preflights_and_json_404s() {
    let server = TestServer::full(|b| b).await;
    let telemetry = server.telemetry_addr.expect("telemetry listener");
    for path in ["/", "/health", "/no/such/endpoint"] {
        assert_preflight(telemetry, path).await;
    }
    assert_json_404(telemetry, "/no/such/endpoint").await;
}

/// The preflight stays open when the server API is on: OPTIONS needs no
/// bearer key (browsers never send credentials on a preflight).
#[tokio::test]
async fn preflights_need_no_credentials_with_the_api_on() {
    let server = TestServer::full(|b| b.api_key("k3y-for-tests")).await;
    for path in ["/api/publish", "/api/channels", "/api/channels/a/b"] {
        assert_preflight(server.addr, path).await;
    }
}

#[tokio::test]
async fn unserved_methods_get_a_json_405_with_cors() {
    let server = TestServer::full(|b| b).await;
    for path in ["/health", "/metrics", "/version"] {
        let response = http_request(
            server.addr,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                server.addr
            ),
        )
        .await;
        assert_eq!(response.status, 405, "POST {path}: {response:?}");
        assert_eq!(response.header("access-control-allow-origin"), Some("*"));
        assert!(response.json().is_object(), "{response:?}");
    }
}
