//! Prometheus metrics (SPEC §12) through the `metrics` facade.
//!
//! Libraries call the typed helpers here (or the facade macros with the
//! [`names`] constants); their label values come from bounded sets only.
//! The binary alone calls [`install_recorder`], which installs the
//! Prometheus recorder globally, describes every family and pre-registers
//! every family and label value, so that the first scrape of `/metrics`
//! already shows `# HELP` and `# TYPE` for all of them.
//!
//! What the exporter renders, and why [`register_all`] exists: a family
//! appears only once one of its series is registered (a registered counter
//! or gauge renders `0`, a registered histogram renders its buckets with
//! zero counts); a labelled family with no label set yet does not appear at
//! all, and `# HELP` is written only for described families.

use std::future::Future;
use std::time::Duration;

use ::metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use arqon_config::SlowConsumerPolicy;
use arqon_protocol::ErrorCode;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

pub use metrics_exporter_prometheus::PrometheusHandle;

use crate::error::TelemetryError;
use crate::names;
use crate::stats::StatsSnapshot;

/// Bucket upper bounds of `arqonbus_message_routing_seconds`: 10 µs to 1 s.
pub const ROUTING_BUCKETS: [f64; 16] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Bucket upper bounds of `arqonbus_command_duration_seconds`: 100 µs to 5 s.
pub const COMMAND_BUCKETS: [f64; 15] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0,
];

/// How often [`run_upkeep`] should drain histogram samples when nobody
/// scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The exporter configuration: true histograms (not summaries) with
/// [`ROUTING_BUCKETS`] and [`COMMAND_BUCKETS`], names exactly as in
/// [`names`] (no unit suffix added), no idle expiry.
pub fn prometheus_builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::MESSAGE_ROUTING_SECONDS.to_owned()),
            &ROUTING_BUCKETS,
        )
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Full(names::COMMAND_DURATION_SECONDS.to_owned()),
                &COMMAND_BUCKETS,
            )
        })
        .expect("the bucket lists are non-empty constants")
}

/// A recorder built from [`prometheus_builder`], not installed: for tests
/// (with `metrics::with_local_recorder`) and for callers that compose
/// recorders themselves.
pub fn prometheus_recorder() -> PrometheusRecorder {
    prometheus_builder().build_recorder()
}

/// For the binary only: installs the Prometheus recorder as the global
/// `metrics` recorder, then [`describe_all`], [`register_all`] and a first
/// [`set_process_gauges`]. Serve `/metrics` with
/// [`PrometheusHandle::render`] on the returned handle, and spawn
/// [`run_upkeep`] with it.
///
/// Call it before building anything that takes metric handles (the
/// [`crate::Telemetry`] hub, the router). Fails if a global recorder is
/// already installed.
pub fn install_recorder() -> Result<PrometheusHandle, TelemetryError> {
    let handle = prometheus_builder()
        .install_recorder()
        .map_err(|source| TelemetryError::Recorder { source })?;
    describe_all();
    register_all();
    set_process_gauges(Duration::ZERO);
    Ok(handle)
}

/// Drains histogram samples into their buckets every `every` until
/// `shutdown` completes, so memory stays bounded between scrapes (a scrape
/// drains them too).
pub async fn run_upkeep<S>(handle: PrometheusHandle, every: Duration, shutdown: S)
where
    S: Future<Output = ()>,
{
    let mut shutdown = std::pin::pin!(shutdown);
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            _ = ticker.tick() => handle.run_upkeep(),
        }
    }
}

/// Gives every family of SPEC §12 its `# HELP` text (on the current
/// recorder).
pub fn describe_all() {
    describe_gauge!(names::ACTIVE_CLIENTS, Unit::Count, "Connected bus clients.");
    describe_gauge!(
        names::ROOMS,
        Unit::Count,
        "Rooms that exist (a room exists while it has a channel)."
    );
    describe_gauge!(
        names::CHANNELS,
        Unit::Count,
        "Channels that exist, system channels included."
    );
    describe_gauge!(
        names::UPTIME_SECONDS,
        Unit::Seconds,
        "Seconds since the server started."
    );
    describe_gauge!(
        names::MEMORY_USAGE_BYTES,
        Unit::Bytes,
        "Resident set size of the server process."
    );
    describe_gauge!(
        names::WEBSOCKET_CONNECTIONS,
        Unit::Count,
        "Open WebSocket connections on the bus listener."
    );
    describe_gauge!(
        names::TELEMETRY_CONNECTIONS,
        Unit::Count,
        "Open WebSocket connections on the telemetry listener."
    );
    describe_gauge!(
        names::STORAGE_DEGRADED,
        "1 while storage is degraded (Redis unreachable, writes buffered in memory), else 0."
    );
    describe_gauge!(
        names::HISTORY_MEMORY_BYTES,
        Unit::Bytes,
        "Bytes of encoded envelopes held in memory for channel history (memory rings, or the Redis outage buffer)."
    );
    describe_counter!(
        names::MESSAGES_SENT_TOTAL,
        Unit::Count,
        "Messages delivered to clients, one per recipient: channel and direct messages and server notices, not replies to commands."
    );
    describe_counter!(
        names::MESSAGES_RECEIVED_TOTAL,
        Unit::Count,
        "Frames received from clients."
    );
    describe_counter!(
        names::ERRORS_TOTAL,
        Unit::Count,
        "Error envelopes sent to clients, by error code."
    );
    describe_counter!(
        names::SLOW_CONSUMER_TOTAL,
        Unit::Count,
        "Deliveries to a full client queue, by action taken (disconnect or drop)."
    );
    describe_counter!(
        names::RATE_LIMITED_TOTAL,
        Unit::Count,
        "Frames refused by the per-connection rate limit."
    );
    describe_counter!(
        names::VIOLATIONS_TOTAL,
        Unit::Count,
        "Protocol violations counted towards closing the connection."
    );
    describe_counter!(
        names::STORAGE_WRITES_TOTAL,
        Unit::Count,
        "Channel history writes, by result (ok, error, buffered, dropped)."
    );
    describe_counter!(
        names::TELEMETRY_DROPPED_TOTAL,
        Unit::Count,
        "Telemetry events missed by slow telemetry subscribers."
    );
    describe_counter!(
        names::CONNECTIONS_ABORTED_TOTAL,
        Unit::Count,
        "Connections cut off without a close handshake, by reason (write_timeout, shutdown)."
    );
    describe_histogram!(
        names::MESSAGE_ROUTING_SECONDS,
        Unit::Seconds,
        "Time to route one message, from decoded to queued for every recipient."
    );
    describe_histogram!(
        names::COMMAND_DURATION_SECONDS,
        Unit::Seconds,
        "Time to answer a command, by command."
    );
}

/// Registers every family of SPEC §12, and every labelled family with
/// each value of its bounded label set, so that all are exported from the
/// first scrape. Registration does not change a value: calling it again,
/// or after samples were recorded, is harmless.
pub fn register_all() {
    for name in names::GAUGES {
        let _registered = gauge!(name);
    }
    for name in [
        names::MESSAGES_SENT_TOTAL,
        names::MESSAGES_RECEIVED_TOTAL,
        names::RATE_LIMITED_TOTAL,
        names::VIOLATIONS_TOTAL,
        names::TELEMETRY_DROPPED_TOTAL,
    ] {
        let _registered = counter!(name);
    }
    for code in names::ERROR_CODES {
        let _registered = counter!(names::ERRORS_TOTAL, names::LABEL_CODE => code);
    }
    for action in names::SLOW_CONSUMER_ACTIONS {
        let _registered = counter!(names::SLOW_CONSUMER_TOTAL, names::LABEL_ACTION => action);
    }
    for result in names::STORAGE_WRITE_RESULTS {
        let _registered = counter!(names::STORAGE_WRITES_TOTAL, names::LABEL_RESULT => result);
    }
    for reason in names::ABORT_REASONS {
        let _registered = counter!(names::CONNECTIONS_ABORTED_TOTAL, names::LABEL_REASON => reason);
    }
    let _registered = histogram!(names::MESSAGE_ROUTING_SECONDS);
    for command in names::COMMANDS {
        let _registered =
            histogram!(names::COMMAND_DURATION_SECONDS, names::LABEL_COMMAND => command);
    }
}

/// One frame received from a client.
pub fn message_received() {
    counter!(names::MESSAGES_RECEIVED_TOTAL).increment(1);
}

/// `count` deliveries to clients (one publish fanned out to `count`
/// recipients is one call).
pub fn messages_sent(count: u64) {
    counter!(names::MESSAGES_SENT_TOTAL).increment(count);
}

/// One `error` envelope with `code` sent to a client.
pub fn error(code: ErrorCode) {
    counter!(names::ERRORS_TOTAL, names::LABEL_CODE => code.as_str()).increment(1);
}

/// One delivery found a full client queue and `policy` was applied.
pub fn slow_consumer(policy: SlowConsumerPolicy) {
    counter!(names::SLOW_CONSUMER_TOTAL, names::LABEL_ACTION => policy.as_str()).increment(1);
}

/// Why a connection was aborted (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AbortReason {
    /// A socket write made no progress for `ARQONBUS_WRITE_TIMEOUT_SECS`.
    WriteTimeout,
    /// Still open when the shutdown grace period ended.
    Shutdown,
}

impl AbortReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            AbortReason::WriteTimeout => "write_timeout",
            AbortReason::Shutdown => "shutdown",
        }
    }
}

/// One connection aborted for `reason`.
pub fn connection_aborted(reason: AbortReason) {
    counter!(names::CONNECTIONS_ABORTED_TOTAL, names::LABEL_REASON => reason.as_str()).increment(1);
}

/// One frame refused by the rate limit.
pub fn rate_limited() {
    counter!(names::RATE_LIMITED_TOTAL).increment(1);
}

/// One protocol violation counted for a connection.
pub fn violation() {
    counter!(names::VIOLATIONS_TOTAL).increment(1);
}

/// The outcome of one history write (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageWriteResult {
    /// Written to the backend.
    Ok,
    /// The backend failed and the write was not kept.
    Error,
    /// Kept in memory while degraded, to be flushed later.
    Buffered,
    /// Lost (the degraded buffer was full).
    Dropped,
}

impl StorageWriteResult {
    pub const fn as_str(self) -> &'static str {
        match self {
            StorageWriteResult::Ok => "ok",
            StorageWriteResult::Error => "error",
            StorageWriteResult::Buffered => "buffered",
            StorageWriteResult::Dropped => "dropped",
        }
    }
}

/// One history write with `result`.
pub fn storage_write(result: StorageWriteResult) {
    storage_writes(result, 1);
}

/// `count` history writes with `result` (a batch flush is one call).
pub fn storage_writes(result: StorageWriteResult, count: u64) {
    counter!(names::STORAGE_WRITES_TOTAL, names::LABEL_RESULT => result.as_str()).increment(count);
}

/// Sets `arqonbus_storage_degraded` to 1 or 0.
pub fn set_storage_degraded(degraded: bool) {
    gauge!(names::STORAGE_DEGRADED).set(if degraded { 1.0 } else { 0.0 });
}

/// Sets `arqonbus_history_memory_bytes`.
pub fn set_history_memory_bytes(bytes: usize) {
    gauge!(names::HISTORY_MEMORY_BYTES).set(bytes as f64);
}

/// Records how long command `command` took. A name outside the SPEC §5
/// commands (an unknown command) is not recorded: labels stay bounded.
pub fn command_duration(command: &str, elapsed: Duration) {
    if let Some(command) = names::COMMANDS.iter().find(|known| **known == command) {
        histogram!(names::COMMAND_DURATION_SECONDS, names::LABEL_COMMAND => *command)
            .record(elapsed.as_secs_f64());
    }
}

/// Sets the clients, rooms and channels gauges ([`crate::run_stats`] does
/// it every tick).
pub fn set_bus_gauges(snapshot: &StatsSnapshot) {
    gauge!(names::ACTIVE_CLIENTS).set(snapshot.connections as f64);
    gauge!(names::ROOMS).set(snapshot.rooms as f64);
    gauge!(names::CHANNELS).set(snapshot.channels as f64);
}

/// Sets the uptime and memory gauges: call it from the `/metrics` handler
/// just before rendering.
pub fn set_process_gauges(uptime: Duration) {
    gauge!(names::UPTIME_SECONDS).set(uptime.as_secs_f64());
    if let Some(rss) = read_rss_bytes() {
        gauge!(names::MEMORY_USAGE_BYTES).set(rss as f64);
    }
}

/// Totals the router keeps as plain atomics (so the delivery path pays
/// nothing for metrics), copied into their counters just before a scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterTotals {
    pub received: u64,
    pub delivered: u64,
    pub slow_disconnects: u64,
    pub dropped: u64,
}

/// Sets the counters that mirror [`RouterTotals`].
pub fn set_router_totals(totals: RouterTotals) {
    counter!(names::MESSAGES_RECEIVED_TOTAL).absolute(totals.received);
    counter!(names::MESSAGES_SENT_TOTAL).absolute(totals.delivered);
    counter!(names::SLOW_CONSUMER_TOTAL, names::LABEL_ACTION => SlowConsumerPolicy::Disconnect.as_str())
        .absolute(totals.slow_disconnects);
    counter!(names::SLOW_CONSUMER_TOTAL, names::LABEL_ACTION => SlowConsumerPolicy::Drop.as_str())
        .absolute(totals.dropped);
}

/// One open WebSocket connection, counted in its gauge for as long as the
/// guard lives: hold it in the connection task, so every way out of the
/// task (close, error, panic) decrements it exactly once.
#[derive(Debug)]
#[must_use = "the connection is counted only while the guard lives"]
pub struct ConnectionGauge {
    gauge: ::metrics::Gauge,
}

impl ConnectionGauge {
    /// Counts a bus connection in `arqonbus_websocket_connections`.
    pub fn websocket() -> Self {
        Self::open(gauge!(names::WEBSOCKET_CONNECTIONS))
    }

    /// Counts a telemetry connection in `arqonbus_telemetry_connections`.
    pub fn telemetry() -> Self {
        Self::open(gauge!(names::TELEMETRY_CONNECTIONS))
    }

    fn open(gauge: ::metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self { gauge }
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

/// The resident set size of this process, from `/proc/self/status`
/// (`VmRSS`, in kB: unlike `/proc/self/statm` it needs no page size, which
/// std cannot tell us). `None` on other systems or if it cannot be read.
pub fn read_rss_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        parse_vm_rss(&status)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// `VmRSS:   12345 kB` → bytes.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    let scale = match fields.next() {
        Some("kB") | None => 1024,
        Some("mB") => 1024 * 1024,
        Some(_) => return None,
    };
    value.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::io::Write;
    use std::process::{Command, Stdio};

    use super::*;

    /// A recorder as the binary configures it, with every family
    /// registered and a few samples, rendered.
    fn rendered(samples: impl FnOnce()) -> String {
        let recorder = prometheus_recorder();
        ::metrics::with_local_recorder(&recorder, || {
            describe_all();
            register_all();
            samples();
        });
        recorder.handle().render()
    }

    fn some_samples() {
        message_received();
        messages_sent(3);
        error(ErrorCode::ChannelNotFound);
        slow_consumer(SlowConsumerPolicy::Drop);
        rate_limited();
        violation();
        storage_write(StorageWriteResult::Buffered);
        set_storage_degraded(true);
        command_duration("join_channel", Duration::from_micros(250));
        command_duration("no_such_command", Duration::from_micros(250));
        set_bus_gauges(&StatsSnapshot {
            connections: 2,
            rooms: 1,
            channels: 3,
            messages_in: 0,
            messages_out: 0,
        });
        set_process_gauges(Duration::from_secs(42));
        let latency = crate::RouteLatency::new();
        latency.record(Duration::from_micros(30));
        // One bus connection still open at render time, one telemetry
        // connection come and gone.
        std::mem::forget(ConnectionGauge::websocket());
        drop(ConnectionGauge::telemetry());
    }

    /// `(kind, name)` of every family in the text, from its `# TYPE` line.
    fn families(text: &str) -> BTreeSet<(String, String)> {
        text.lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .map(|rest| {
                let (name, kind) = rest.split_once(' ').expect("name and type");
                (kind.to_owned(), name.to_owned())
            })
            .collect()
    }

    fn expected_families() -> BTreeSet<(String, String)> {
        let typed = |kind: &str, names: &[&str]| {
            names
                .iter()
                .map(|name| (kind.to_owned(), (*name).to_owned()))
                .collect::<Vec<_>>()
        };
        typed("gauge", &names::GAUGES)
            .into_iter()
            .chain(typed("counter", &names::COUNTERS))
            .chain(typed("histogram", &names::HISTOGRAMS))
            .collect()
    }

    #[test]
    fn every_family_has_help_and_type_from_the_first_scrape() {
        let text = rendered(|| {});
        assert_eq!(families(&text), expected_families(), "{text}");
        for name in names::GAUGES
            .iter()
            .chain(&names::COUNTERS)
            .chain(&names::HISTOGRAMS)
        {
            assert!(text.contains(&format!("# HELP {name} ")), "HELP {name}");
        }
        // Unlabelled families at zero; every bounded label value present.
        assert!(text.contains(&format!("\n{} 0\n", names::MESSAGES_SENT_TOTAL)));
        assert!(text.contains(&format!("\n{} 0\n", names::STORAGE_DEGRADED)));
        for code in names::ERROR_CODES {
            assert!(text.contains(&format!("{}{{code=\"{code}\"}} 0\n", names::ERRORS_TOTAL)));
        }
        for action in names::SLOW_CONSUMER_ACTIONS {
            assert!(text.contains(&format!(
                "{}{{action=\"{action}\"}} 0\n",
                names::SLOW_CONSUMER_TOTAL
            )));
        }
        for result in names::STORAGE_WRITE_RESULTS {
            assert!(text.contains(&format!(
                "{}{{result=\"{result}\"}} 0\n",
                names::STORAGE_WRITES_TOTAL
            )));
        }
        for command in names::COMMANDS {
            assert!(text.contains(&format!(
                "{}_count{{command=\"{command}\"}} 0\n",
                names::COMMAND_DURATION_SECONDS
            )));
        }
        assert!(text.contains(&format!("{}_count 0\n", names::MESSAGE_ROUTING_SECONDS)));
    }

    #[test]
    fn histograms_use_the_configured_buckets() {
        let text = rendered(some_samples);
        for (name, buckets) in [
            (names::MESSAGE_ROUTING_SECONDS, &ROUTING_BUCKETS[..]),
            (names::COMMAND_DURATION_SECONDS, &COMMAND_BUCKETS[..]),
        ] {
            let series: Vec<&str> = text
                .lines()
                .filter(|line| line.starts_with(&format!("{name}_bucket")))
                .filter(|line| !line.contains("command=") || line.contains("join_channel"))
                .collect();
            assert_eq!(series.len(), buckets.len() + 1, "{name}: {series:?}");
            assert!(
                series
                    .last()
                    .is_some_and(|line| line.contains("le=\"+Inf\""))
            );
        }
        // 30 µs falls in the 50 µs bucket, not the 25 µs one.
        assert!(text.contains(&format!(
            "{}_bucket{{le=\"0.000025\"}} 0\n",
            names::MESSAGE_ROUTING_SECONDS
        )));
        assert!(text.contains(&format!(
            "{}_bucket{{le=\"0.00005\"}} 1\n",
            names::MESSAGE_ROUTING_SECONDS
        )));
    }

    #[test]
    fn samples_show_up_and_labels_stay_bounded() {
        let text = rendered(some_samples);
        assert_eq!(families(&text), expected_families());
        for line in [
            format!("{} 1\n", names::MESSAGES_RECEIVED_TOTAL),
            format!("{} 3\n", names::MESSAGES_SENT_TOTAL),
            format!("{}{{code=\"CHANNEL_NOT_FOUND\"}} 1\n", names::ERRORS_TOTAL),
            format!("{}{{action=\"drop\"}} 1\n", names::SLOW_CONSUMER_TOTAL),
            format!("{}{{result=\"buffered\"}} 1\n", names::STORAGE_WRITES_TOTAL),
            format!("{} 1\n", names::STORAGE_DEGRADED),
            format!("{} 2\n", names::ACTIVE_CLIENTS),
            format!("{} 3\n", names::CHANNELS),
            format!("{} 42\n", names::UPTIME_SECONDS),
            format!("{} 1\n", names::WEBSOCKET_CONNECTIONS),
            format!("{} 0\n", names::TELEMETRY_CONNECTIONS),
            format!(
                "{}_count{{command=\"join_channel\"}} 1\n",
                names::COMMAND_DURATION_SECONDS
            ),
            format!("{}_count 1\n", names::MESSAGE_ROUTING_SECONDS),
        ] {
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("no_such_command"));
        #[cfg(target_os = "linux")]
        assert!(!text.contains(&format!("{} 0\n", names::MEMORY_USAGE_BYTES)));
    }

    #[test]
    fn connection_gauge_counts_while_alive() {
        let recorder = prometheus_recorder();
        let text = ::metrics::with_local_recorder(&recorder, || {
            let a = ConnectionGauge::websocket();
            let _b = ConnectionGauge::websocket();
            drop(a);
            recorder.handle().render()
        });
        assert!(
            text.contains(&format!("{} 1\n", names::WEBSOCKET_CONNECTIONS)),
            "{text}"
        );
    }

    #[test]
    fn promtool_finds_nothing_to_complain_about() {
        let text = rendered(some_samples);
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("skipped: promtool not installed (apt-get install prometheus)");
                return;
            }
            Err(err) => panic!("cannot run promtool: {err}"),
        };
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(text.as_bytes())
            .expect("write to promtool");
        let output = child.wait_with_output().expect("promtool output");
        let complaints = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success() && complaints.trim().is_empty(),
            "promtool check metrics:\n{complaints}\non:\n{text}"
        );
    }

    #[test]
    fn vm_rss_is_parsed_in_bytes() {
        let status = "Name:\tarqonbus\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("VmRSS: lots kB\n"), None);
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        #[cfg(target_os = "linux")]
        assert!(read_rss_bytes().is_some_and(|rss| rss > 0));
    }
}
