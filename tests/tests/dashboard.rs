//! The operator dashboard (SPEC §19) on the telemetry listener: `GET /`
//! without an upgrade serves one self-contained page, an upgrade on `/`
//! still opens the telemetry stream, and `stats` carries what the page
//! shows besides the counters (clients by type, the busiest channels with
//! their member counts, the storage state).

use std::time::Duration;

use arqon_config::AuthMode;
use arqonbus_tests::{TestServer, http_get};
use serde_json::{Value, json};

#[tokio::test]
async fn get_without_upgrade_serves_the_self_contained_page() {
    let server = TestServer::full(|b| b).await;
    let telemetry = server.telemetry_addr.expect("telemetry listener");
    let page = http_get(telemetry, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    for id in [
        "storage-banner",
        "connections",
        "rate-chart",
        "top-channels",
        "agent-feed",
    ] {
        assert!(page.body.contains(&format!("id=\"{id}\"")), "no #{id}");
    }
    assert!(
        page.body
            .contains(r#"<meta name="arqonbus-auth" content="none">"#)
    );
    assert!(!page.body.contains("src=\"http") && !page.body.contains("href=\"http"));
    // Other paths are still unknown.
    assert_eq!(http_get(telemetry, "/nope").await.status, 404);
    // The WebSocket on the same path is unchanged.
    let (_socket, first) = server.telemetry("").await;
    assert_eq!(first["payload"]["eventType"], "telemetry_connected");
}

#[tokio::test]
async fn the_page_knows_when_a_credential_is_needed() {
    let server = TestServer::full(|b| b.auth(AuthMode::Token).admin_token("s3cret-admin")).await;
    let telemetry = server.telemetry_addr.expect("telemetry listener");
    let page = http_get(telemetry, "/").await;
    assert_eq!(page.status, 200, "the page itself is public");
    assert!(
        page.body
            .contains(r#"<meta name="arqonbus-auth" content="token">"#)
    );
    assert!(!page.body.contains("s3cret-admin"));
}

#[tokio::test]
async fn stats_carry_clients_by_type_top_channels_and_storage() {
    let server = TestServer::full(|b| b.telemetry_stats_interval(Duration::from_millis(100))).await;
    let (mut socket, _) = server.telemetry("events=stats").await;
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    let mut c = server.connect().await;
    a.join("lobby", "busy").await;
    b.join("lobby", "busy").await;
    c.join("lobby", "busy").await;
    a.join("lobby", "quiet").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let stats: Value = loop {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = socket.try_recv(wait).await.expect("stats in time");
        let payload = frame["payload"].clone();
        if payload["connections"] == 3 && payload["top_channels"][1]["members"] == 1 {
            break payload;
        }
    };
    assert_eq!(stats["clients_by_type"]["human"], 3);
    assert_eq!(stats["clients_by_type"]["ai-agent"], 0);
    assert_eq!(
        stats["top_channels"][0],
        json!({"room": "lobby", "channel": "busy", "members": 3})
    );
    assert_eq!(
        stats["top_channels"][1],
        json!({"room": "lobby", "channel": "quiet", "members": 1})
    );
    assert!(stats["top_channels"].as_array().expect("array").len() <= 10);
    assert_eq!(
        stats["storage"],
        json!({"backend": "memory", "degraded": false})
    );
}
