//! `idle`: N connections, each joined to one of C channels, then nothing.
//! Measures the server's RSS per connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::common::{Common, FileLimit, Notes, Progress, connection_report, open_many};
use crate::conn;
use crate::stats::{round1, secs};

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Connections to open.
    #[arg(long, default_value_t = 15_000)]
    pub connections: usize,
    /// Channels the connections are spread over (one join each).
    #[arg(long, default_value_t = 100)]
    pub channels: usize,
    /// Seconds to let the server settle before reading its RSS.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
}

pub async fn run(
    common: &Common,
    args: &IdleArgs,
    limit: &FileLimit,
    progress: &Progress,
) -> anyhow::Result<Value> {
    let target = common.target()?;
    let server = common.server();
    let mut notes = Notes::default();
    let baseline = server.and_then(|s| s.sample());
    let room: Arc<str> = Arc::from(format!("idle{}", rand_suffix()));
    let channels = args.channels.max(1);

    progress.phase("connecting");
    let setup_room = room.clone();
    let opened = open_many(
        &target,
        0,
        args.connections,
        common.connect_parallelism,
        progress,
        move |index, mut ws| {
            let room = setup_room.clone();
            async move {
                conn::join(&mut ws, &room, &format!("c{}", index % channels)).await?;
                Ok(ws)
            }
        },
    )
    .await;
    let connections = connection_report(args.connections, &opened, limit, &mut notes);
    let open_count = opened.conns.len() as u64;

    // Keep every connection read (pings are answered while reading).
    let dropped = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::with_capacity(opened.conns.len());
    for (_, mut ws, _) in opened.conns {
        let dropped = dropped.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(_)) = ws.next().await {}
            dropped.fetch_add(1, Ordering::Relaxed);
        }));
    }

    progress.phase("settling");
    tokio::time::sleep(Duration::from_secs_f64(args.settle.max(0.0))).await;
    let settled = server.and_then(|s| s.sample());
    progress.phase("holding");
    tokio::time::sleep(common.duration()).await;
    let held = server.and_then(|s| s.sample());

    let mut server_report = Value::Null;
    if let (Some(proc_), Some(before), Some(settled), Some(after)) =
        (server, baseline, settled, held)
    {
        let per_conn = |rss_kib: u64| {
            if open_count == 0 {
                0.0
            } else {
                round1(rss_kib as f64 * 1024.0 / open_count as f64)
            }
        };
        let delta_kib = after.rss_kib.saturating_sub(before.rss_kib);
        server_report = json!({
            "pid": proc_.pid,
            "rss_kib_before": before.rss_kib,
            "rss_kib_settled": settled.rss_kib,
            "rss_kib_after_hold": after.rss_kib,
            "rss_bytes_per_connection": per_conn(delta_kib),
            "rss_kib_per_connection": round1(per_conn(delta_kib) / 1024.0),
            "rss_total_bytes_per_connection": per_conn(after.rss_kib),
            "rss_growth_kib_during_hold": after.rss_kib as i64 - settled.rss_kib as i64,
            "cpu_seconds_during_hold":
                after.cpu_ticks.saturating_sub(settled.cpu_ticks) as f64 / proc_.clk_tck as f64,
            "nofile_limit": proc_.nofile_limit(),
        });
        if let Some(server_limit) = proc_.nofile_limit()
            && (args.connections as u64) + 16 > server_limit
        {
            notes.push(format!(
                "the server's own open-file limit ({server_limit}) is below {} connections plus its listeners",
                args.connections
            ));
        }
    } else {
        notes.push("no --server-pid: server RSS not measured");
    }

    progress.phase("closing");
    for reader in &readers {
        reader.abort();
    }
    Ok(json!({
        "workload": "idle",
        "params": {"connections": args.connections, "channels": channels, "room": &*room,
                   "settle_s": args.settle, "hold_s": common.duration, "source_addrs": target.sources.len()},
        "connections": connections,
        "dropped_during_hold": dropped.load(Ordering::Relaxed),
        "hold_seconds": secs(common.duration()),
        "server": server_report,
        "limits": limit.report(),
        "notes": notes.into_value(),
    }))
}

/// A short random suffix, so runs never share channels.
pub fn rand_suffix() -> String {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}",
        (wall as u64) ^ (u64::from(std::process::id()) << 44)
    )
}
