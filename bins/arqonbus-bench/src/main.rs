//! `arqonbus-bench`: the ArqonBus load generator.
//!
//! Workloads (`idle`, `fanout`, `chat`, `ping`, `acks`) run against a live server
//! and print exactly one JSON result line on stdout; progress goes to
//! stderr. Every run is bounded: `--duration`, a drain timeout, and a hard
//! `--deadline` after which whatever was measured is printed and the
//! process exits.
//!
//! Measurement: latency is `receive - send` on one monotonic clock (the
//! send time, in nanoseconds since the bench started, travels in the
//! payload), so the bench both sends and receives. Loss, duplicates and
//! out-of-order arrivals are exact, from the channel `seq` (fan-out) or
//! each sender's counter (chat). With `--server-pid`, the server's CPU time
//! (utime + stime from `/proc/<pid>/stat`) and RSS (`VmRSS`) are read
//! around the measured window.
//!
//! The publishing side and `ping` use the `arqon-client` crate. The
//! receiving side of `fanout` and `chat`, and the `idle` connections, read
//! frames with tokio-tungstenite directly and parse only `seq` and the
//! payload's numbers: a full envelope parse and a task hop per message
//! would make the bench, not the server, the bottleneck.
//!
//! Many connections: the soft `RLIMIT_NOFILE` is raised to the hard limit
//! at startup, and client sockets are bound round-robin to 127.0.0.2,
//! 127.0.0.3, … before connecting, so that no source address runs out of
//! ephemeral ports. When the file limit stops the bench short, the result
//! says so in `notes`.

mod acks;
mod chat;
mod common;
mod conn;
mod fanout;
mod idle;
mod ping;
mod stats;

use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::common::{Common, FileLimit, Progress};

#[derive(Debug, Parser)]
#[command(
    name = "arqonbus-bench",
    version,
    about = "Load generator for ArqonBus"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// N idle connections, each joined to one of C channels: server RSS per connection.
    Idle(idle::IdleArgs),
    /// One publisher to N subscribers on one channel at a target rate (or --find-max).
    Fanout(fanout::FanoutArgs),
    /// R rooms × M members, each publishing F messages/s to its room.
    Chat(chat::ChatArgs),
    /// Command round-trip latency.
    Ping(ping::PingArgs),
    /// Publish throughput with acks (compare memory and Redis storage).
    Acks(acks::AcksArgs),
}

impl Workload {
    fn name(&self) -> &'static str {
        match self {
            Workload::Idle(_) => "idle",
            Workload::Fanout(_) => "fanout",
            Workload::Chat(_) => "chat",
            Workload::Ping(_) => "ping",
            Workload::Acks(_) => "acks",
        }
    }

    /// The default hard deadline: enough for setup, the measured part and
    /// the drain, with a wide margin.
    fn default_deadline(&self, common: &Common) -> f64 {
        let base = common.duration + common.drain + 120.0;
        match self {
            Workload::Fanout(args) if args.find_max => {
                // Doubling from start to max, plus the bisection steps.
                let doublings = (args.max_rate / args.start_rate.max(1.0))
                    .log2()
                    .ceil()
                    .max(0.0)
                    + 1.0;
                (doublings + f64::from(args.refine_steps)) * (common.duration + common.drain + 30.0)
                    + 60.0
            }
            _ => base,
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let limit = FileLimit::raise();
    let threads = cli.common.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            emit(&json!({"ok": false, "error": format!("cannot start the runtime: {e}")}));
            return std::process::ExitCode::from(2);
        }
    };
    stats::now_ns(); // starts the bench clock
    let deadline = cli
        .common
        .deadline
        .unwrap_or_else(|| cli.workload.default_deadline(&cli.common));
    let name = cli.workload.name();
    let (mut result, code) = runtime.block_on(async {
        let progress = Progress::start(name, cli.common.quiet);
        let work = async {
            match &cli.workload {
                Workload::Idle(args) => idle::run(&cli.common, args, &limit, &progress).await,
                Workload::Fanout(args) => fanout::run(&cli.common, args, &limit, &progress).await,
                Workload::Chat(args) => chat::run(&cli.common, args, &limit, &progress).await,
                Workload::Ping(args) => ping::run(&cli.common, args, &limit, &progress).await,
                Workload::Acks(args) => acks::run(&cli.common, args, &limit, &progress).await,
            }
        };
        let outcome = tokio::time::timeout(Duration::from_secs_f64(deadline), work).await;
        progress.finish();
        match outcome {
            Ok(Ok(result)) => (result, 0),
            Ok(Err(e)) => (json!({"workload": name, "ok": false, "error": format!("{e:#}")}), 1),
            Err(_) => (
                json!({"workload": name, "ok": false,
                       "error": format!("hard deadline of {deadline:.0} s reached"),
                       "delivered_so_far": progress.counters.delivered.load(std::sync::atomic::Ordering::Relaxed)}),
                2,
            ),
        }
    });
    if result.get("ok").is_none() {
        result["ok"] = json!(true);
    }
    result["bench"] =
        json!({"version": env!("CARGO_PKG_VERSION"), "threads": threads, "deadline_s": deadline});
    emit(&result);
    // Connection tasks may still be winding down: do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(200));
    std::process::ExitCode::from(code)
}

/// The one JSON line on stdout.
#[allow(clippy::print_stdout)]
fn emit(result: &Value) {
    println!("{result}");
}
