//! `acks`: publish throughput with acknowledgements (SPEC §4.3). Each of C
//! connections publishes `--payload-bytes` messages with `ack: true` to its
//! own channel, keeping at most `--window` unacknowledged, for the measured
//! duration. Run it against a memory server and a Redis server to compare
//! what durable acks (`stored: true` only once the write is in Redis) cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{Common, FileLimit, Notes, Progress};
use crate::conn::{field_str, join, next_id, payload, publish_frame};
use crate::stats::{Latencies, now_ns, round1};

#[derive(Debug, Clone, Args)]
pub struct AcksArgs {
    /// Publishing connections, each on its own channel.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Unacknowledged messages allowed per connection.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
}

/// Totals over every connection.
#[derive(Debug, Default)]
struct Totals {
    acked: AtomicU64,
    stored: AtomicU64,
    errors: AtomicU64,
}

pub async fn run(
    common: &Common,
    args: &AcksArgs,
    limit: &FileLimit,
    progress: &Progress,
) -> anyhow::Result<Value> {
    let target = common.target()?;
    let server = common.server();
    let mut notes = Notes::default();
    progress.phase("connecting");
    let mut sockets = Vec::new();
    let run_id = next_id();
    for index in 0..args.connections.max(1) {
        let (mut ws, _) = target
            .connect(index)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let channel = format!("{}-{index}", run_id.trim_start_matches("arq_"));
        join(&mut ws, "acks", &channel).await.context("join")?;
        sockets.push((ws, channel));
        progress.connections.fetch_add(1, Ordering::Relaxed);
    }

    let latencies = Latencies::new();
    let totals = Arc::new(Totals::default());
    let body = payload(common.payload_bytes, 0, 0, 0);
    let end = Instant::now() + common.duration();
    progress.phase("publishing");
    let before = server.and_then(|s| s.sample());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (ws, channel) in sockets {
        let (mut sink, mut stream) = ws.split();
        let window_size = u32::try_from(args.window.max(1)).unwrap_or(u32::MAX);
        let window = Arc::new(Semaphore::new(window_size as usize));
        let totals = totals.clone();
        let counters = progress.counters.clone();
        let mut latency = latencies.buffer();
        let sent_at = Arc::new(std::sync::Mutex::new(
            std::collections::VecDeque::<u64>::new(),
        ));
        let body = body.clone();
        let reader_window = window.clone();
        let reader_sent = sent_at.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let text = text.as_str();
                if !text.contains("\"request_id\"") {
                    continue;
                }
                let sent = reader_sent
                    .lock()
                    .map(|mut q| q.pop_front())
                    .unwrap_or(None);
                if let Some(sent) = sent {
                    latency.record(now_ns().saturating_sub(sent));
                }
                if field_str(text, "\"error_code\":\"").is_some() {
                    totals.errors.fetch_add(1, Ordering::Relaxed);
                    counters.error(field_str(text, "\"error_code\":\"").unwrap_or("ERROR"));
                } else {
                    totals.acked.fetch_add(1, Ordering::Relaxed);
                    counters.received();
                    if text.contains("\"stored\":true") {
                        totals.stored.fetch_add(1, Ordering::Relaxed);
                    }
                }
                reader_window.add_permits(1);
            }
            latency.flush();
        });
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < end {
                let Ok(permit) = window.acquire().await else {
                    break;
                };
                permit.forget();
                let frame = publish_frame(&next_id(), "acks", &channel, &body).replacen(
                    "\"payload\":",
                    "\"ack\":true,\"payload\":",
                    1,
                );
                if let Ok(mut queue) = sent_at.lock() {
                    queue.push_back(now_ns());
                }
                if sink.send(Message::Text(frame.into())).await.is_err() {
                    break;
                }
                sent += 1;
            }
            // Wait for the acks still in flight, then stop the reader.
            let _ = tokio::time::timeout(Duration::from_secs(30), window.acquire_many(window_size))
                .await;
            let _ = sink.close().await;
            let _ = reader.await;
            sent
        }));
    }
    let mut sent = 0;
    for task in tasks {
        sent += task.await.unwrap_or(0);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = server.and_then(|s| s.sample());
    let acked = totals.acked.load(Ordering::Relaxed);
    let errors = progress.counters.errors();
    notes.check_errors(&errors);
    let server_report = match (server, before, after) {
        (Some(proc_), Some(before), Some(after)) => proc_.cpu_report(&before, &after, acked),
        _ => Value::Null,
    };
    Ok(json!({
        "workload": "acks",
        "params": {"connections": args.connections, "window": args.window,
                   "payload_bytes": common.payload_bytes, "duration_s": common.duration},
        "sent": sent,
        "acked": acked,
        "stored_true": totals.stored.load(Ordering::Relaxed),
        "acks_per_sec": round1(acked as f64 / elapsed),
        "ack_latency": latencies.summary(),
        "errors": errors,
        "server": server_report,
        "limits": limit.report(),
        "notes": notes.into_value(),
    }))
}
