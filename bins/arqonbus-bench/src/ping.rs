//! `ping`: command round-trip latency through the client crate (its
//! request/response correlation included), on C connections.

use std::sync::atomic::Ordering;
use std::time::Duration;

use arqon_client::{Client, ConnectOptions, ReconnectPolicy};
use clap::Args;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::common::{Common, FileLimit, Notes, Progress};
use crate::stats::{Latencies, now_ns, round1};

#[derive(Debug, Clone, Args)]
pub struct PingArgs {
    /// Connections, each pinging in a loop.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Pause between a reply and the next ping on a connection, in ms
    /// (0 = back to back).
    #[arg(long, default_value_t = 1.0)]
    pub interval_ms: f64,
    /// Seconds of pings not measured at the start.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
}

pub async fn run(
    common: &Common,
    args: &PingArgs,
    limit: &FileLimit,
    progress: &Progress,
) -> anyhow::Result<Value> {
    let target = common.target()?;
    let server = common.server();
    let mut notes = Notes::default();
    progress.phase("connecting");
    let mut clients = Vec::new();
    for index in 0..args.connections.max(1) {
        let mut options = ConnectOptions::new(&common.url)
            .reconnect(ReconnectPolicy::disabled())
            .request_timeout(Duration::from_secs(5));
        if let Some(ip) = target.source_for(index) {
            options = options.local_addr(ip);
        }
        clients.push(Client::connect(options).await?);
        progress.connections.fetch_add(1, Ordering::Relaxed);
    }

    let latencies = Latencies::new();
    let measure_from = Instant::now() + Duration::from_secs_f64(args.warmup.max(0.0));
    let end = measure_from + common.duration();
    let pause = Duration::from_secs_f64(args.interval_ms.max(0.0) / 1000.0);
    progress.phase("pinging");
    let mut before = None;
    let mut tasks = Vec::new();
    for client in &clients {
        let client = client.clone();
        let mut latency = latencies.buffer();
        let counters = progress.counters.clone();
        tasks.push(tokio::spawn(async move {
            let mut failures = 0u64;
            while Instant::now() < end {
                let sent = now_ns();
                match client.ping().await {
                    Ok(_) => {
                        if Instant::now() >= measure_from {
                            latency.record(now_ns() - sent);
                        }
                        counters.received();
                    }
                    Err(e) => {
                        failures += 1;
                        counters.error(
                            &e.code()
                                .map_or_else(|| "CLIENT_ERROR".to_owned(), |c| c.to_string()),
                        );
                    }
                }
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            latency.flush();
            failures
        }));
    }
    tokio::time::sleep_until(measure_from).await;
    if let Some(s) = server {
        before = s.sample();
    }
    let mut failures = 0;
    for task in tasks {
        failures += task.await.unwrap_or(1);
    }
    let after = server.and_then(|s| s.sample());
    for client in &clients {
        client.close().await;
    }
    let errors = progress.counters.errors();
    notes.check_errors(&errors);
    let count = latencies.count();
    let server_report = match (server, before, after) {
        (Some(proc_), Some(before), Some(after)) => proc_.cpu_report(&before, &after, count),
        _ => Value::Null,
    };
    Ok(json!({
        "workload": "ping",
        "params": {"connections": clients.len(), "interval_ms": args.interval_ms,
                   "warmup_s": args.warmup, "duration_s": common.duration},
        "round_trips": count,
        "round_trips_per_sec": round1(count as f64 / common.duration().as_secs_f64()),
        "failures": failures,
        "latency": latencies.summary(),
        "errors": errors,
        "server": server_report,
        "limits": limit.report(),
        "notes": notes.into_value(),
    }))
}
