//! `chat`: R rooms × M members, every member publishing F messages/s to its
//! room's channel and reading everyone else's (raw sockets). Loss is
//! counted per (receiver, sender) from the sender's own counter.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{Common, FileLimit, Notes, Progress, connection_report, open_many};
use crate::conn::{self, Parsed};
use crate::idle::rand_suffix;
use crate::stats::{Latencies, SeqTracker, Tally, now_ns, round1, secs};

#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// Rooms (one channel each).
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Members per room.
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Messages per second each member publishes.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// The latency bound of a passing run.
    #[arg(long, default_value_t = 50.0)]
    pub p99_limit_ms: f64,
}

struct MemberResult {
    index: usize,
    /// Per sender index: that sender's counter stream as received.
    trackers: HashMap<u64, SeqTracker>,
    /// Channel `seq` went backwards.
    seq_regressions: u64,
}

pub async fn run(
    common: &Common,
    args: &ChatArgs,
    limit: &FileLimit,
    progress: &Progress,
) -> anyhow::Result<Value> {
    let target = common.target()?;
    let server = common.server();
    let mut notes = Notes::default();
    let members = args.members.max(2);
    let total = args.rooms.max(1) * members;
    let room: Arc<str> = Arc::from(format!("chat{}", rand_suffix()));

    progress.phase("connecting");
    let r = room.clone();
    let opened = open_many(
        &target,
        0,
        total,
        common.connect_parallelism,
        progress,
        move |index, mut ws| {
            let room = r.clone();
            async move {
                conn::join(&mut ws, &room, &format!("r{}", index / members)).await?;
                Ok(ws)
            }
        },
    )
    .await;
    let connections = connection_report(total, &opened, limit, &mut notes);

    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let latencies = Latencies::new();
    let counters = progress.counters.clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    let period = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + common.duration();
    let payload_bytes = common.payload_bytes;

    let mut tasks = Vec::with_capacity(opened.conns.len());
    for (index, mut ws, _) in opened.conns {
        let mut latency = latencies.buffer();
        let counters = counters.clone();
        let sent = sent.clone();
        let mut stop = stop_rx.clone();
        let room = room.clone();
        let channel = format!("r{}", index / members);
        // Members start spread over one period.
        let spread = (index % members) as f64 / members as f64 + (index / members) as f64 * 0.618;
        let phase = period.mul_f64(spread.fract());
        tasks.push(tokio::spawn(async move {
            let mut result = MemberResult {
                index,
                trackers: HashMap::new(),
                seq_regressions: 0,
            };
            let mut last_seq = 0u64;
            let mut next_send = start + phase;
            let mut n = 0u64;
            let mut publishing = true;
            loop {
                tokio::select! {
                    frame = ws.next() => match frame {
                        Some(Ok(Message::Text(text))) => match conn::parse(text.as_str()) {
                            Parsed::Delivery(d) => {
                                let now = now_ns();
                                latency.record(now.saturating_sub(d.sent_ns));
                                result.trackers.entry(d.sender).or_default().observe(d.n);
                                if d.seq < last_seq {
                                    result.seq_regressions += 1;
                                }
                                last_seq = d.seq;
                                counters.received();
                            }
                            Parsed::Error(code) => counters.error(code),
                            Parsed::Other => {}
                        },
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => {
                            counters.error("MEMBER_DISCONNECTED");
                            break;
                        }
                    },
                    _ = tokio::time::sleep_until(next_send), if publishing => {
                        if next_send >= end {
                            publishing = false;
                            continue;
                        }
                        n += 1;
                        let id = conn::next_id();
                        let payload = conn::payload(payload_bytes, now_ns(), index as u64, n);
                        let frame = conn::publish_frame(&id, &room, &channel, &payload);
                        if ws.send(Message::Text(frame.into())).await.is_err() {
                            counters.error("MEMBER_DISCONNECTED");
                            break;
                        }
                        sent[index].fetch_add(1, Ordering::Relaxed);
                        counters.published.fetch_add(1, Ordering::Relaxed);
                        next_send += period;
                    }
                    _ = stop.changed() => break,
                }
            }
            latency.flush();
            result
        }));
    }

    tokio::time::sleep_until(start).await;
    progress.phase("chatting");
    let before = server.and_then(|s| s.sample());
    let bench = crate::stats::ServerProc::new(std::process::id());
    let bench_before = bench.sample();
    tokio::time::sleep_until(end).await;

    // Drain: until every expected delivery arrived, or the drain timeout.
    progress.phase("draining");
    let expected_total = |sent: &[AtomicU64]| -> u64 {
        sent.chunks(members)
            .map(|room| {
                let room_sent: u64 = room.iter().map(|s| s.load(Ordering::Relaxed)).sum();
                room_sent * (members as u64 - 1)
            })
            .sum()
    };
    let drain_deadline = Instant::now() + common.drain();
    tokio::time::sleep(Duration::from_millis(50)).await;
    while Instant::now() < drain_deadline
        && counters.delivered.load(Ordering::Relaxed) < expected_total(&sent)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = server.and_then(|s| s.sample());
    let bench_after = bench.sample();
    let _ = stop_tx.send(true);

    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(result) = task.await {
            results.push(result);
        }
    }
    let mut tally = Tally::default();
    let mut seq_regressions = 0;
    let mut missing_members = 0u64;
    let mut reported = vec![false; total];
    for result in &results {
        reported[result.index] = true;
        seq_regressions += result.seq_regressions;
        let room_start = result.index / members * members;
        for sender in room_start..room_start + members {
            if sender == result.index {
                continue;
            }
            let expected = sent[sender].load(Ordering::Relaxed);
            let empty = SeqTracker::default();
            let tracker = result.trackers.get(&(sender as u64)).unwrap_or(&empty);
            tally.add(tracker, expected);
        }
    }
    // Members that never came up or whose task failed receive nothing.
    for (index, came_up) in reported.iter().enumerate() {
        if !came_up {
            missing_members += 1;
            let room_start = index / members * members;
            for sender in room_start..room_start + members {
                if sender != index {
                    let expected = sent[sender].load(Ordering::Relaxed);
                    tally.expected += expected;
                    tally.lost += expected;
                }
            }
        }
    }

    let errors = counters.errors();
    notes.check_errors(&errors);
    let published: u64 = sent.iter().map(|s| s.load(Ordering::Relaxed)).sum();
    let duration_s = common.duration().as_secs_f64();
    let p99_ms = latencies.p99_ns() as f64 / 1e6;
    let pass = tally.lost == 0
        && tally.duplicates == 0
        && errors.is_empty()
        && missing_members == 0
        && p99_ms < args.p99_limit_ms;
    let server_report = match (server, before, after) {
        (Some(proc_), Some(before), Some(after)) => {
            let mut report = proc_.cpu_report(&before, &after, tally.received);
            report["rss_bytes_per_connection"] =
                json!(round1(after.rss_kib as f64 * 1024.0 / total.max(1) as f64));
            report
        }
        _ => Value::Null,
    };
    Ok(json!({
        "workload": "chat",
        "pass": pass,
        "params": {"rooms": args.rooms, "members": members, "rate_per_member": args.rate,
                   "offered_deliveries_per_sec": (args.rooms * members) as f64 * args.rate * (members - 1) as f64,
                   "duration_s": common.duration, "payload_bytes": common.payload_bytes, "room": &*room},
        "connections": connections,
        "published": published,
        "deliveries": tally.received,
        "expected_deliveries": tally.expected,
        "lost": tally.lost,
        "duplicates": tally.duplicates,
        "out_of_order": tally.out_of_order,
        "seq_regressions": seq_regressions,
        "deliveries_per_sec": round1(tally.received as f64 / duration_s),
        "latency": latencies.summary(),
        "errors": errors,
        "server": server_report,
        "bench_cpu_utilisation": crate::stats::utilisation(&bench, bench_before, bench_after),
        "drain_seconds": secs(common.drain()),
        "limits": limit.report(),
        "notes": notes.into_value(),
    }))
}
