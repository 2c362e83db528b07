//! `GET /metrics` (SPEC §12): Prometheus text with `# HELP` and `# TYPE`
//! for every family from startup, counters that move with traffic, only
//! bounded labels, CORS, the same endpoints on `ARQONBUS_HTTP_PORT`, and
//! `promtool check metrics` finding nothing to complain about.

use std::collections::HashMap;
use std::process::{Command, Stdio};

use arqonbus_tests::{TestServer, envelope, http_get};
use serde_json::json;

const GAUGES: [&str; 9] = [
    "arqonbus_active_clients",
    "arqonbus_rooms",
    "arqonbus_channels",
    "arqonbus_uptime_seconds",
    "arqonbus_memory_usage_bytes",
    "arqonbus_websocket_connections",
    "arqonbus_telemetry_connections",
    "arqonbus_storage_degraded",
    "arqonbus_history_memory_bytes",
];
const COUNTERS: [&str; 8] = [
    "arqonbus_messages_sent_total",
    "arqonbus_messages_received_total",
    "arqonbus_errors_total",
    "arqonbus_slow_consumer_total",
    "arqonbus_rate_limited_total",
    "arqonbus_violations_total",
    "arqonbus_storage_writes_total",
    "arqonbus_telemetry_dropped_total",
];
const HISTOGRAMS: [&str; 2] = [
    "arqonbus_message_routing_seconds",
    "arqonbus_command_duration_seconds",
];

/// `# TYPE` of each family in the exposition.
fn types(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

/// The value of the sample `series` (name plus labels, as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.split_whitespace().next() == Some(series))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn every_family_is_exported_from_startup_with_help_and_type() {
    let server = TestServer::full(|b| b).await;
    let response = http_get(server.addr, "/metrics").await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4"))
    );
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    let types = types(&response.body);
    for (families, kind) in [
        (&GAUGES[..], "gauge"),
        (&COUNTERS[..], "counter"),
        (&HISTOGRAMS[..], "histogram"),
    ] {
        for family in families {
            assert_eq!(
                types.get(*family).map(String::as_str),
                Some(kind),
                "{family} TYPE"
            );
            assert!(
                response.body.contains(&format!("# HELP {family} ")),
                "{family} HELP"
            );
        }
    }
    // Labels come from bounded sets only.
    let allowed = [
        "code", "action", "result", "command", "reason", "le", "quantile",
    ];
    for line in response.body.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, labels)) = line.split_once('{') else {
            continue;
        };
        let labels = labels.split_once('}').map_or(labels, |(inside, _)| inside);
        for label in labels.split(',').filter(|l| !l.is_empty()) {
            let name = label.split('=').next().unwrap_or_default();
            assert!(allowed.contains(&name), "unexpected label {name} in {line}");
        }
    }
}

#[tokio::test]
async fn counters_and_gauges_move_with_traffic() {
    let server = TestServer::full(|b| b).await;
    let before = http_get(server.addr, "/metrics").await.body;
    let received_before = sample(&before, "arqonbus_messages_received_total").unwrap_or(0.0);
    let unknown_before =
        sample(&before, "arqonbus_errors_total{code=\"UNKNOWN_COMMAND\"}").unwrap_or(0.0);

    let mut a = server.connect().await;
    let mut b = server.connect().await;
    a.join("m", "x").await;
    b.join("m", "x").await;
    for i in 0..5 {
        a.publish("m", "x", json!({"i": i})).await;
        b.recv().await;
    }
    a.send_json(&envelope("command", json!({"command": "nope"})))
        .await;
    a.recv().await;

    let after = http_get(server.addr, "/metrics").await.body;
    // Other tests in this binary share the process-wide recorder, so
    // compare with what this test added, not absolute values.
    let received_after = sample(&after, "arqonbus_messages_received_total").expect("received");
    assert!(
        received_after >= received_before + 8.0,
        "{received_before} -> {received_after}"
    );
    let unknown_after =
        sample(&after, "arqonbus_errors_total{code=\"UNKNOWN_COMMAND\"}").expect("errors");
    assert!(unknown_after >= unknown_before + 1.0);
    assert!(sample(&after, "arqonbus_messages_sent_total").expect("sent") >= 5.0);
    assert!(
        sample(&after, "arqonbus_message_routing_seconds_count").expect("routing count") >= 5.0
    );
    assert!(
        sample(
            &after,
            "arqonbus_command_duration_seconds_count{command=\"join_channel\"}"
        )
        .expect("join")
            >= 2.0
    );
    assert!(sample(&after, "arqonbus_websocket_connections").expect("connections") >= 2.0);
    assert!(sample(&after, "arqonbus_memory_usage_bytes").expect("rss") > 0.0);
}

#[tokio::test]
async fn the_http_port_serves_the_same_endpoints() {
    let server = TestServer::full(|b| b.http_port(Some(0))).await;
    let http = server.http_addr.expect("http listener");
    for path in ["/health", "/ready", "/version", "/metrics"] {
        let response = http_get(http, path).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(
            response.header("access-control-allow-origin"),
            Some("*"),
            "{path}"
        );
    }
    // Only HTTP there: no WebSocket bus.
    assert_eq!(arqonbus_tests::upgrade_request(http, "/").await.status, 404);
}

#[tokio::test]
async fn promtool_finds_nothing_to_complain_about() {
    let available = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !available {
        if std::env::var("ARQONBUS_REQUIRE_PROMTOOL").as_deref() == Ok("1") {
            panic!("promtool is required (ARQONBUS_REQUIRE_PROMTOOL=1) but not installed");
        }
        eprintln!("skipping: promtool not found (install the Debian package `prometheus`)");
        return;
    }
    let server = TestServer::full(|b| b).await;
    let mut client = server.connect().await;
    client.join("p", "q").await;
    client.command("nope", json!({})).await;
    let body = http_get(server.addr, "/metrics").await.body;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("promtool ran");
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "promtool: {complaints}"
    );
}
