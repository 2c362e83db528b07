//! Origin policy at the upgrade (SPEC §18): by default an upgrade without
//! `Origin`, or whose Origin's host and port equal the `Host` (whatever the
//! scheme), is allowed and any other Origin (`null` included) is refused
//! with HTTP 403 and a JSON body naming `origin`; `ARQONBUS_ALLOWED_ORIGINS`
//! adds listed origins, `https://*.example.com` wildcards (any depth, not
//! the bare domain) and `*`. The telemetry listener applies the same rule.

use std::net::SocketAddr;

use arqonbus_tests::{HttpResponse, TestServer, upgrade_request, upgrade_request_with};

async fn with_origin(addr: SocketAddr, origin: &str) -> HttpResponse {
    upgrade_request_with(addr, "/", &[("Origin", origin)]).await
}

fn assert_refused(response: &HttpResponse, origin: &str) {
    assert_eq!(response.status, 403, "{origin}: {response:?}");
    let body = response.json();
    assert_eq!(body["field"], "origin", "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains(origin)),
        "the body names the refused origin {origin}: {body}"
    );
}

/// The default rule, checked on one listener.
async fn default_rule_holds(addr: SocketAddr) {
    assert_eq!(upgrade_request(addr, "/").await.status, 101, "no Origin");
    let port = addr.port();
    for same in [
        format!("http://127.0.0.1:{port}"),
        format!("https://127.0.0.1:{port}"),
    ] {
        let response = with_origin(addr, &same).await;
        assert_eq!(response.status, 101, "same origin {same}: {response:?}");
    }
    for other in [
        "http://evil.example".to_owned(),
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{}", port.wrapping_add(1)),
    ] {
        assert_refused(&with_origin(addr, &other).await, &other);
    }
    assert_refused(&with_origin(addr, "null").await, "null");
}

#[tokio::test]
async fn the_bus_allows_no_origin_and_same_origin_and_refuses_others() {
    let server = TestServer::start().await;
    default_rule_holds(server.addr).await;
    // The `/ws` path is guarded too.
    let response =
        upgrade_request_with(server.addr, "/ws", &[("Origin", "http://evil.example")]).await;
    assert_eq!(response.status, 403, "{response:?}");
}

#[tokio::test]
async fn the_telemetry_listener_applies_the_same_rule() {
    let server = TestServer::full(|b| b).await;
    default_rule_holds(server.telemetry_addr.expect("telemetry")).await;
}

#[tokio::test]
async fn listed_origins_and_wildcards_are_added() {
    let server = TestServer::full(|b| {
        b.allowed_origins(vec![
            "https://app.example.org".to_owned(),
            "https://*.example.com".to_owned(),
        ])
    })
    .await;
    for addr in [server.addr, server.telemetry_addr.expect("telemetry")] {
        for allowed in [
            "https://app.example.org",
            "https://a.example.com",
            "https://a.b.example.com",
            "https://app.example.org:443",
            "HTTPS://APP.EXAMPLE.ORG",
        ] {
            let response = with_origin(addr, allowed).await;
            assert_eq!(response.status, 101, "{allowed}: {response:?}");
        }
        for refused in [
            "https://example.com",
            "https://evilexample.com",
            "http://app.example.org",
            "https://other.example.org",
            "https://app.example.org:8443",
            "null",
        ] {
            assert_refused(&with_origin(addr, refused).await, refused);
        }
        // No Origin and same origin stay allowed with a list.
        assert_eq!(upgrade_request(addr, "/").await.status, 101);
        let same = format!("http://{addr}");
        assert_eq!(with_origin(addr, &same).await.status, 101, "{same}");
    }
}

#[tokio::test]
async fn a_star_allows_every_origin() {
    let server = TestServer::full(|b| b.allowed_origins(vec!["*".to_owned()])).await;
    for addr in [server.addr, server.telemetry_addr.expect("telemetry")] {
        for origin in ["http://evil.example", "https://x.y.z", "null"] {
            let response = with_origin(addr, origin).await;
            assert_eq!(response.status, 101, "{origin}: {response:?}");
        }
    }
}

/// The list as an operator writes it in the environment: comma-separated,
/// spaces allowed.
#[tokio::test]
async fn the_list_parses_as_the_environment_spells_it() {
    let server = TestServer::with(|b| {
        b.set(
            "ARQONBUS_ALLOWED_ORIGINS",
            "https://app.example.org, https://*.example.com",
        )
        .expect("a valid list")
    })
    .await;
    assert_eq!(
        with_origin(server.addr, "https://app.example.org")
            .await
            .status,
        101
    );
    assert_eq!(
        with_origin(server.addr, "https://x.example.com")
            .await
            .status,
        101
    );
    assert_refused(
        &with_origin(server.addr, "https://example.com").await,
        "https://example.com",
    );
}
