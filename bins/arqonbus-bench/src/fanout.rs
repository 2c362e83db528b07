//! `fanout`: one publisher (the client crate) → N subscribers (raw
//! sockets) on one channel, at a target rate; `--find-max` searches the
//! highest rate with zero loss and p99 under the limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arqon_client::{Client, ClientEvent, ConnectOptions, ReconnectPolicy};
use clap::Args;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{Common, FileLimit, Notes, Progress, connection_report, open_many};
use crate::conn::{self, Parsed};
use crate::idle::rand_suffix;
use crate::stats::{Latencies, SeqTracker, Tally, now_ns, round1, secs};

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Subscribers on the channel.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Messages published per second (deliveries/s = rate × subscribers).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Search the highest rate with zero loss and p99 < --p99-limit-ms.
    #[arg(long)]
    pub find_max: bool,
    /// The latency bound of a passing step.
    #[arg(long, default_value_t = 50.0)]
    pub p99_limit_ms: f64,
    /// First rate tried by --find-max (messages/s); it doubles until a
    /// step fails, then bisects.
    #[arg(long, default_value_t = 100.0)]
    pub start_rate: f64,
    /// Highest rate --find-max tries (messages/s).
    #[arg(long, default_value_t = 5000.0)]
    pub max_rate: f64,
    /// Bisection steps after the first failure.
    #[arg(long, default_value_t = 4)]
    pub refine_steps: u32,
    /// Connect the publisher here instead of `--url` (the subscribers stay
    /// on `--url`): cross-node fan-out through a cluster.
    #[arg(long)]
    pub publish_url: Option<String>,
    /// Extra subscribers that join and then never read (stalled
    /// consumers, with a 4 KiB socket receive buffer). They are not in the
    /// loss and latency figures, which stay those of the readers; the
    /// result says how the server ended them.
    #[arg(long, default_value_t = 0)]
    pub stalled: usize,
}

/// `SO_RCVBUF` of a stalled subscriber.
const STALLED_RECV_BUFFER: u32 = 4096;

/// The outcome of one fixed-rate run.
struct Step {
    report: Value,
    pass: bool,
    deliveries_per_sec: f64,
}

pub async fn run(
    common: &Common,
    args: &FanoutArgs,
    limit: &FileLimit,
    progress: &Progress,
) -> anyhow::Result<Value> {
    if !args.find_max {
        let step = step(common, args, args.rate, limit, progress).await?;
        let mut report = step.report;
        report["workload"] = json!("fanout");
        report["pass"] = json!(step.pass);
        return Ok(report);
    }

    // Exponential search, then bisection between the best pass and the
    // first failure.
    let mut steps = Vec::new();
    let mut best: Option<(f64, Value, f64)> = None;
    let mut failed_at: Option<f64> = None;
    let mut rate = args.start_rate.max(1.0);
    loop {
        progress.phase(&format!("rate {rate:.0}"));
        let step = step(common, args, rate, limit, progress).await?;
        steps.push(json!({"rate": rate, "pass": step.pass, "result": step.report.clone()}));
        if step.pass {
            best = Some((rate, step.report, step.deliveries_per_sec));
            if rate >= args.max_rate {
                break;
            }
            rate = (rate * 2.0).min(args.max_rate);
        } else {
            failed_at = Some(rate);
            break;
        }
    }
    if let Some(mut high) = failed_at {
        let mut low = best.as_ref().map_or(0.0, |b| b.0);
        for _ in 0..args.refine_steps {
            let mid = ((low + high) / 2.0).round();
            if mid <= low + 1.0 || mid >= high {
                break;
            }
            progress.phase(&format!("rate {mid:.0}"));
            let step = step(common, args, mid, limit, progress).await?;
            steps.push(json!({"rate": mid, "pass": step.pass, "result": step.report.clone()}));
            if step.pass {
                low = mid;
                best = Some((mid, step.report, step.deliveries_per_sec));
            } else {
                high = mid;
            }
        }
    }
    let (max_rate, best_report, best_dps) = match best {
        Some((rate, report, dps)) => (Some(rate), report, dps),
        None => (None, Value::Null, 0.0),
    };
    Ok(json!({
        "workload": "fanout",
        "find_max": true,
        "criteria": {"loss": 0, "duplicates": 0, "p99_ms_below": args.p99_limit_ms, "errors": 0},
        "max_rate_msgs_per_sec": max_rate,
        "max_deliveries_per_sec": round1(best_dps),
        "best": best_report,
        "steps": steps,
    }))
}

async fn step(
    common: &Common,
    args: &FanoutArgs,
    rate: f64,
    limit: &FileLimit,
    progress: &Progress,
) -> anyhow::Result<Step> {
    let target = common.target()?;
    let server = common.server();
    let mut notes = Notes::default();
    let room: Arc<str> = Arc::from("fanout");
    let channel: Arc<str> = Arc::from(format!("f{}", rand_suffix()));

    // The publisher: the client crate.
    let mut options = ConnectOptions::new(args.publish_url.as_deref().unwrap_or(&common.url))
        .reconnect(ReconnectPolicy::disabled())
        .request_timeout(Duration::from_secs(30))
        .queue_capacity(4096);
    if let Some(ip) = target.source_for(0) {
        options = options.local_addr(ip);
    }
    let publisher = Client::connect(options).await?;
    let mut publisher_events = publisher.events().expect("first take");
    // Held to the end: dropping a subscription leaves the channel.
    let _membership = publisher.join_channel(&room, &channel).await?;

    // The subscribers: raw sockets.
    progress.phase("connecting");
    let (r, c) = (room.clone(), channel.clone());
    let opened = open_many(
        &target,
        1,
        args.subscribers,
        common.connect_parallelism,
        progress,
        move |_, mut ws| {
            let (room, channel) = (r.clone(), c.clone());
            async move {
                conn::join(&mut ws, &room, &channel).await?;
                Ok(ws)
            }
        },
    )
    .await;
    let connections = connection_report(args.subscribers, &opened, limit, &mut notes);
    let subscribers = opened.conns.len();
    let stalled: Vec<conn::Ws> = if args.stalled > 0 {
        progress.phase("connecting stalled");
        let stalled_target = conn::Target {
            recv_buffer: Some(STALLED_RECV_BUFFER),
            ..target.clone()
        };
        let (r, c) = (room.clone(), channel.clone());
        let opened = open_many(
            &stalled_target,
            1 + args.subscribers,
            args.stalled,
            common.connect_parallelism,
            progress,
            move |_, mut ws| {
                let (room, channel) = (r.clone(), c.clone());
                async move {
                    conn::join(&mut ws, &room, &channel).await?;
                    Ok(ws)
                }
            },
        )
        .await;
        opened.conns.into_iter().map(|(_, ws, _)| ws).collect()
    } else {
        Vec::new()
    };

    let latencies = Latencies::new();
    let counters = progress.counters.clone();
    // Unique messages received, per subscriber (for the drain check).
    let progress_of: Arc<Vec<AtomicU64>> =
        Arc::new((0..subscribers).map(|_| AtomicU64::new(0)).collect());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut readers = Vec::with_capacity(subscribers);
    for (slot, (_, mut ws, _)) in opened.conns.into_iter().enumerate() {
        let mut latency = latencies.buffer();
        let counters = counters.clone();
        let progress_of = progress_of.clone();
        let mut stop = stop_rx.clone();
        readers.push(tokio::spawn(async move {
            let mut tracker = SeqTracker::default();
            loop {
                tokio::select! {
                    frame = ws.next() => match frame {
                        Some(Ok(Message::Text(text))) => match conn::parse(text.as_str()) {
                            Parsed::Delivery(d) => {
                                let now = now_ns();
                                latency.record(now.saturating_sub(d.sent_ns));
                                tracker.observe(d.seq);
                                counters.received();
                                counters.last_receive_ns.fetch_max(now, Ordering::Relaxed);
                                progress_of[slot].store(tracker.unique, Ordering::Relaxed);
                            }
                            Parsed::Error(code) => counters.error(code),
                            Parsed::Other => {}
                        },
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => {
                            counters.error("SUBSCRIBER_DISCONNECTED");
                            break;
                        }
                    },
                    _ = stop.changed() => break,
                }
            }
            latency.flush();
            tracker
        }));
    }

    // Publish at `rate` for the duration; the last message is acknowledged
    // and its `seq` is the number of messages every subscriber must get.
    progress.phase(&format!("publish {rate:.0}/s"));
    let before = server.and_then(|s| s.sample());
    let bench = crate::stats::ServerProc::new(std::process::id());
    let bench_before = bench.sample();
    let duration = common.duration();
    let planned = ((rate * duration.as_secs_f64()).round() as u64).max(1);
    let started = Instant::now();
    let first_send_ns = now_ns();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sent + 1 < planned {
        tick.tick().await;
        let due = ((rate * started.elapsed().as_secs_f64()) as u64).min(planned - 1);
        while sent < due {
            sent += 1;
            let payload = conn::payload(common.payload_bytes, now_ns(), 0, sent);
            let payload: Box<serde_json::value::RawValue> =
                serde_json::value::RawValue::from_string(payload)?;
            publisher.publish(&room, &channel, payload).await?;
            counters.published.fetch_add(1, Ordering::Relaxed);
        }
    }
    sent += 1;
    let payload = conn::payload(common.payload_bytes, now_ns(), 0, sent);
    let last = serde_json::value::RawValue::from_string(payload)?;
    let publish_seconds = started.elapsed().as_secs_f64();
    let expected = match publisher.publish_with_ack(&room, &channel, last).await {
        Ok(ack) => ack.seq.unwrap_or(sent),
        Err(e) => {
            notes.push(format!("the final acknowledged publish failed: {e}"));
            sent
        }
    };
    counters.published.fetch_add(1, Ordering::Relaxed);

    // Until every subscriber has every message, or the drain timeout.
    progress.phase("draining");
    let drain_deadline = Instant::now() + common.drain();
    let mut trackers = Vec::with_capacity(subscribers);
    while Instant::now() < drain_deadline
        && progress_of
            .iter()
            .any(|unique| unique.load(Ordering::Relaxed) < expected)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = server.and_then(|s| s.sample());
    let bench_after = bench.sample();
    let _ = stop_tx.send(true);
    let stalled_report = stalled_endings(stalled).await;
    for reader in readers {
        if let Ok(tracker) = reader.await {
            trackers.push(tracker);
        }
    }
    let mut tally = Tally::default();
    for tracker in &trackers {
        tally.add(tracker, expected);
    }
    // Subscribers whose task failed count as losing everything.
    tally.lost += (subscribers - trackers.len()) as u64 * expected;

    let mut errors = counters.errors();
    while let Ok(event) = publisher_events.try_recv() {
        if let ClientEvent::ServerError(err) = event {
            *errors.entry(err.error_code).or_default() += 1;
        }
    }
    notes.check_errors(&errors);
    publisher.close().await;
    // Reset the shared counters' error map for the next step.
    if let Ok(mut map) = counters.errors.lock() {
        map.clear();
    }

    let span_s = (counters
        .last_receive_ns
        .load(Ordering::Relaxed)
        .saturating_sub(first_send_ns)) as f64
        / 1e9;
    let deliveries_per_sec = if span_s > 0.0 {
        tally.received as f64 / span_s.max(publish_seconds)
    } else {
        0.0
    };
    let p99_ms = latencies.p99_ns() as f64 / 1e6;
    let pass = tally.lost == 0
        && tally.duplicates == 0
        && errors.is_empty()
        && subscribers == args.subscribers
        && p99_ms < args.p99_limit_ms;
    let server_report = match (server, before, after) {
        (Some(proc_), Some(before), Some(after)) => {
            let mut report = proc_.cpu_report(&before, &after, tally.received);
            if subscribers > 0 {
                report["rss_bytes_per_connection"] = json!(round1(
                    after.rss_kib as f64 * 1024.0 / (subscribers + 1) as f64
                ));
            }
            report
        }
        _ => Value::Null,
    };
    Ok(Step {
        report: json!({
            "params": {"subscribers": args.subscribers, "rate_msgs_per_sec": rate,
                       "offered_deliveries_per_sec": rate * args.subscribers as f64,
                       "duration_s": common.duration, "payload_bytes": common.payload_bytes,
                       "channel": format!("{room}:{channel}"),
                       "publish_url": args.publish_url.as_deref().unwrap_or(&common.url),
                       "stalled": args.stalled},
            "connections": connections,
            "published": expected,
            "publish_seconds": (publish_seconds * 1000.0).round() / 1000.0,
            "deliveries": tally.received,
            "expected_deliveries": tally.expected,
            "lost": tally.lost,
            "duplicates": tally.duplicates,
            "out_of_order": tally.out_of_order,
            "deliveries_per_sec": round1(deliveries_per_sec),
            "latency": latencies.summary(),
            "errors": errors,
            "server": server_report,
            "stalled": stalled_report,
            "bench_cpu_utilisation": crate::stats::utilisation(&bench, bench_before, bench_after),
            "drain_seconds": secs(common.drain()),
            "limits": limit.report(),
            "notes": notes.into_value(),
        }),
        pass,
        deliveries_per_sec,
    })
}

/// How the stalled subscribers ended: each is read (for at most 3 s in
/// all) until the server's close frame, the end of the stream, or the time
/// limit, and counted by close code or as still open.
async fn stalled_endings(stalled: Vec<conn::Ws>) -> Value {
    if stalled.is_empty() {
        return Value::Null;
    }
    let count = stalled.len();
    let deadline = Instant::now() + Duration::from_secs(3);
    let endings = futures_util::future::join_all(stalled.into_iter().map(|mut ws| async move {
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Err(_elapsed) => return "open".to_owned(),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return frame.map_or("close".to_owned(), |f| u16::from(f.code).to_string());
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => return "ended".to_owned(),
            }
        }
    }))
    .await;
    let mut by_ending = serde_json::Map::new();
    for ending in endings {
        let slot = by_ending.entry(ending).or_insert(json!(0));
        *slot = json!(slot.as_u64().unwrap_or(0) + 1);
    }
    json!({"count": count, "endings": by_ending})
}
