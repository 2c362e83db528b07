//! WebSocket pings cost rate-limit tokens like any inbound frame (SPEC §6,
//! §18): a ping flood past the burst gets `RATE_LIMITED` errors (with
//! `retry_after_ms`, `request_id` null), and enough of them close the
//! connection with 1008 like any other violations.

use std::time::Duration;

use arqonbus_tests::{Ending, TestServer, assert_error};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_ping_flood_is_rate_limited() {
    let server = TestServer::with(|b| {
        b.rate_limit_per_sec(1)
            .rate_limit_burst(3)
            .max_violations(100)
    })
    .await;
    let mut client = server.connect().await;
    for _ in 0..10 {
        client
            .ws
            .send(Message::Ping(b"hi".to_vec().into()))
            .await
            .expect("ping");
    }
    let first = client.recv().await;
    assert_error(&first, "RATE_LIMITED", None, None);
    assert!(
        first["payload"]["retry_after_ms"].is_u64(),
        "retry_after_ms: {first}"
    );
}

#[tokio::test]
async fn a_ping_flood_ends_in_1008() {
    let server = TestServer::with(|b| {
        b.rate_limit_per_sec(1)
            .rate_limit_burst(2)
            .max_violations(3)
    })
    .await;
    let mut client = server.connect().await;
    for _ in 0..8 {
        client
            .ws
            .send(Message::Ping(Vec::new().into()))
            .await
            .expect("ping");
    }
    let (ending, frames) = client.until_closed(Duration::from_secs(5)).await;
    let codes: Vec<&str> = frames
        .iter()
        .filter_map(|f| f["error_code"].as_str())
        .collect();
    assert_eq!(codes.last(), Some(&"TOO_MANY_VIOLATIONS"), "{frames:?}");
    match ending {
        Ending::Closed(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
            assert!(!frame.reason.is_empty(), "{frame:?}");
        }
        other => panic!("expected close 1008, got {other:?}"),
    }
}
