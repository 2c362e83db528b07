//! What every workload shares: options, the open-file limit, opening many
//! connections in parallel, the progress line, and the result notes.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::conn::{ConnectError, Target, Ws};
use crate::stats::{Counters, ServerProc};

/// Options of every workload.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Server URL (an IP literal and port).
    #[arg(long, default_value = "ws://127.0.0.1:9100/", global = true)]
    pub url: String,
    /// PID of the server process, to read its CPU time and RSS from /proc.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Measured duration in seconds.
    #[arg(long, default_value_t = 10.0, global = true)]
    pub duration: f64,
    /// Hard deadline for the whole run in seconds (default: a generous
    /// multiple of --duration); the bench prints its result and exits then.
    #[arg(long, global = true)]
    pub deadline: Option<f64>,
    /// Payload size in bytes (JSON text of the payload object).
    #[arg(long, default_value_t = 100, global = true)]
    pub payload_bytes: usize,
    /// How many 127.0.0.x source addresses to spread client sockets over
    /// (from 127.0.0.2); 0 = let the kernel choose.
    #[arg(long, default_value_t = 8, global = true)]
    pub source_addrs: u8,
    /// Connections opened in parallel during setup.
    #[arg(long, default_value_t = 128, global = true)]
    pub connect_parallelism: usize,
    /// WebSocket read buffer per bench connection, bytes.
    #[arg(long, default_value_t = 8192, global = true)]
    pub read_buffer: usize,
    /// Seconds to wait for in-flight messages after publishing stops.
    #[arg(long, default_value_t = 5.0, global = true)]
    pub drain: f64,
    /// Tokio worker threads (default: the CPUs this process may run on).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// No progress line on stderr.
    #[arg(long, global = true)]
    pub quiet: bool,
}

impl Common {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.max(0.1))
    }

    pub fn drain(&self) -> Duration {
        Duration::from_secs_f64(self.drain.max(0.0))
    }

    pub fn target(&self) -> anyhow::Result<Target> {
        Target::new(&self.url, self.source_addrs, self.read_buffer.max(256))
    }

    pub fn server(&self) -> Option<ServerProc> {
        self.server_pid.map(ServerProc::new)
    }
}

/// The open-file limit, raised to the hard limit at startup.
#[derive(Debug, Clone, Copy)]
pub struct FileLimit {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

impl FileLimit {
    pub fn raise() -> Self {
        let (soft_before, hard) = rlimit::Resource::NOFILE.get().unwrap_or((1024, 1024));
        let soft = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(soft_before);
        Self {
            soft_before,
            soft,
            hard,
        }
    }

    /// Sockets the bench can open for connections (a margin is kept for
    /// the runtime, stdio and /proc reads).
    pub fn usable(&self) -> u64 {
        self.soft.saturating_sub(64)
    }

    pub fn report(&self) -> Value {
        json!({"nofile_soft_at_start": self.soft_before, "nofile_soft": self.soft, "nofile_hard": self.hard})
    }
}

/// Notes attached to the result (limits that bound, hints).
#[derive(Debug, Default)]
pub struct Notes(Vec<String>);

impl Notes {
    pub fn push(&mut self, note: impl Into<String>) {
        self.0.push(note.into());
    }

    pub fn into_value(self) -> Value {
        json!(self.0)
    }

    /// Adds the hint about the rate limit when errors say it binds.
    pub fn check_errors(&mut self, errors: &std::collections::BTreeMap<String, u64>) {
        if errors.contains_key("RATE_LIMITED") {
            self.push(
                "the server answered RATE_LIMITED: run it with ARQONBUS_RATE_LIMIT_PER_SEC=0 for load workloads",
            );
        }
    }
}

/// One opened connection: its index, socket and client id.
pub type OpenConn = (usize, Ws, String);

/// The result of opening many connections.
pub struct Opened {
    /// `(index, socket, client_id)` of each connection that came up.
    pub conns: Vec<OpenConn>,
    pub failed: u64,
    pub emfile: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

/// Opens `count` connections (numbered from `first`), `parallelism` at a
/// time; each is set up by `setup` (a join…) before it counts as open.
pub async fn open_many<F, Fut>(
    target: &Target,
    first: usize,
    count: usize,
    parallelism: usize,
    progress: &Progress,
    setup: F,
) -> Opened
where
    F: Fn(usize, Ws) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<Ws>> + Send,
{
    let started = Instant::now();
    let semaphore = Arc::new(Semaphore::new(parallelism.max(1)));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks: Vec<JoinHandle<Result<OpenConn, ConnectError>>> = Vec::with_capacity(count);
    for index in first..first + count {
        let permit = semaphore
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let target = target.clone();
        let setup = setup.clone();
        let stop = stop.clone();
        let opened = progress.connections.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let result = async {
                let (ws, id) = target.connect(index).await?;
                let ws = setup(index, ws)
                    .await
                    .map_err(|e| ConnectError::Other(e.to_string()))?;
                Ok((index, ws, id))
            }
            .await;
            match &result {
                Ok(_) => {
                    opened.fetch_add(1, Ordering::Relaxed);
                }
                Err(ConnectError::Emfile) => stop.store(true, Ordering::Relaxed),
                Err(_) => {}
            }
            result
        }));
    }
    let mut opened = Opened {
        conns: Vec::with_capacity(count),
        failed: 0,
        emfile: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        match task.await {
            Ok(Ok(conn)) => opened.conns.push(conn),
            Ok(Err(err)) => {
                if matches!(err, ConnectError::Emfile) {
                    opened.emfile += 1;
                }
                opened.failed += 1;
                opened.first_error.get_or_insert_with(|| err.to_string());
            }
            Err(e) => {
                opened.failed += 1;
                opened.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    // Connections never attempted (after EMFILE) count as failed too.
    opened.failed = (count - opened.conns.len()) as u64;
    opened.elapsed = started.elapsed();
    opened
}

/// A one-line progress display on stderr, refreshed every second.
#[derive(Debug, Clone)]
pub struct Progress {
    pub connections: Arc<AtomicU64>,
    pub counters: Arc<Counters>,
    phase: Arc<std::sync::Mutex<String>>,
    stop: Arc<AtomicBool>,
}

impl Progress {
    pub fn start(workload: &'static str, quiet: bool) -> Self {
        let progress = Self {
            connections: Arc::new(AtomicU64::new(0)),
            counters: Arc::new(Counters::default()),
            phase: Arc::new(std::sync::Mutex::new("setup".into())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        if !quiet {
            let p = progress.clone();
            let tty = std::io::stderr().is_terminal();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut last = (Instant::now(), 0u64);
                let mut interval = tokio::time::interval(Duration::from_secs(1));
                let mut ticks = 0u64;
                while !p.stop.load(Ordering::Relaxed) {
                    interval.tick().await;
                    ticks += 1;
                    let delivered = p.counters.delivered.load(Ordering::Relaxed);
                    let rate = (delivered - last.1) as f64 / last.0.elapsed().as_secs_f64();
                    last = (Instant::now(), delivered);
                    let phase = p.phase.lock().map(|s| s.clone()).unwrap_or_default();
                    let line = format!(
                        "[{workload}] {:>6.1}s {phase:<12} conns {:>6}  published {:>10}  delivered {:>12}  {:>10.0}/s",
                        started.elapsed().as_secs_f64(),
                        p.connections.load(Ordering::Relaxed),
                        p.counters.published.load(Ordering::Relaxed),
                        delivered,
                        rate,
                    );
                    let mut err = std::io::stderr().lock();
                    if tty {
                        let _ = write!(err, "\r{line}\x1b[K");
                    } else if ticks.is_multiple_of(5) {
                        let _ = writeln!(err, "{line}");
                    }
                    let _ = err.flush();
                }
                if tty {
                    let _ = writeln!(std::io::stderr());
                }
            });
        }
        progress
    }

    pub fn phase(&self, phase: &str) {
        if let Ok(mut current) = self.phase.lock() {
            phase.clone_into(&mut current);
        }
    }

    pub fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The common part of every result: connections, limits, and why they
/// may have stopped short.
pub fn connection_report(
    wanted: usize,
    opened: &Opened,
    limit: &FileLimit,
    notes: &mut Notes,
) -> Value {
    if opened.emfile > 0 || (wanted as u64) > limit.usable() {
        notes.push(format!(
            "the open-file limit binds: RLIMIT_NOFILE soft {} / hard {} allows about {} bench sockets; {} of {} connections opened",
            limit.soft,
            limit.hard,
            limit.usable(),
            opened.conns.len(),
            wanted
        ));
    }
    json!({
        "wanted": wanted,
        "opened": opened.conns.len(),
        "failed": opened.failed,
        "failed_emfile": opened.emfile,
        "first_error": opened.first_error,
        "setup_seconds": crate::stats::secs(opened.elapsed),
    })
}
