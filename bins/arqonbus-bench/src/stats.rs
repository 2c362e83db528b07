//! Measurement: latency histograms, exact loss / duplicate / out-of-order
//! accounting from sequence numbers, and the server's CPU time and RSS
//! from `/proc/<pid>`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::time::Instant;

/// The bench's one monotonic clock: every latency is `now - sent`, both
/// read from here, in nanoseconds since the bench started.
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A latency histogram shared by many tasks; each task batches its
/// samples locally ([`LatencyBuf`]) to keep the lock off the hot path.
#[derive(Debug, Clone)]
pub struct Latencies {
    inner: Arc<Mutex<Histogram<u64>>>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        // 1 µs .. 120 s in nanoseconds, 3 significant digits.
        let histogram =
            Histogram::new_with_bounds(1_000, 120_000_000_000, 3).expect("valid histogram bounds");
        Self {
            inner: Arc::new(Mutex::new(histogram)),
        }
    }

    pub fn buffer(&self) -> LatencyBuf {
        LatencyBuf {
            target: self.clone(),
            samples: Vec::with_capacity(LatencyBuf::CAPACITY),
        }
    }

    fn record_all(&self, samples: &[u64]) {
        let mut histogram = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for &ns in samples {
            histogram.saturating_record(ns.max(1_000));
        }
    }

    pub fn count(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// p50/p90/p99/p99.9/max in microseconds.
    pub fn summary(&self) -> Value {
        let h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let us = |ns: u64| (ns as f64 / 1_000.0 * 10.0).round() / 10.0;
        if h.is_empty() {
            return json!({"count": 0});
        }
        json!({
            "count": h.len(),
            "p50_us": us(h.value_at_quantile(0.50)),
            "p90_us": us(h.value_at_quantile(0.90)),
            "p99_us": us(h.value_at_quantile(0.99)),
            "p999_us": us(h.value_at_quantile(0.999)),
            "max_us": us(h.max()),
            "mean_us": (h.mean() / 1_000.0 * 10.0).round() / 10.0,
        })
    }

    pub fn p99_ns(&self) -> u64 {
        let h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(0.99)
        }
    }
}

/// A task-local batch of latency samples; flushed when full and on drop.
#[derive(Debug)]
pub struct LatencyBuf {
    target: Latencies,
    samples: Vec<u64>,
}

impl LatencyBuf {
    const CAPACITY: usize = 512;

    pub fn record(&mut self, ns: u64) {
        self.samples.push(ns);
        if self.samples.len() == Self::CAPACITY {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        if !self.samples.is_empty() {
            self.target.record_all(&self.samples);
            self.samples.clear();
        }
    }
}

impl Drop for LatencyBuf {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Exact accounting of one ordered stream numbered from 1 (a channel's
/// `seq`, or one sender's counter): unique arrivals, duplicates, and
/// arrivals that came after a later number (out of order).
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    max_seen: u64,
    /// Holes below `max_seen`: start → end (inclusive).
    missing: BTreeMap<u64, u64>,
    pub unique: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

impl SeqTracker {
    pub fn observe(&mut self, seq: u64) {
        if seq > self.max_seen {
            if seq > self.max_seen + 1 {
                self.missing.insert(self.max_seen + 1, seq - 1);
            }
            self.max_seen = seq;
            self.unique += 1;
            return;
        }
        // At or below the highest seen: a late arrival or a repeat.
        let hole = self
            .missing
            .range(..=seq)
            .next_back()
            .map(|(&start, &end)| (start, end));
        match hole {
            Some((start, end)) if seq <= end => {
                self.missing.remove(&start);
                if start < seq {
                    self.missing.insert(start, seq - 1);
                }
                if seq < end {
                    self.missing.insert(seq + 1, end);
                }
                self.unique += 1;
                self.out_of_order += 1;
            }
            _ => self.duplicates += 1,
        }
    }

    /// Numbers in `1..=expected` never received.
    pub fn lost(&self, expected: u64) -> u64 {
        expected.saturating_sub(self.unique)
    }
}

/// Totals over many trackers.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

impl Tally {
    pub fn add(&mut self, tracker: &SeqTracker, expected: u64) {
        self.expected += expected;
        self.received += tracker.unique.min(expected);
        self.lost += tracker.lost(expected);
        self.duplicates += tracker.duplicates;
        self.out_of_order += tracker.out_of_order;
    }
}

/// Counters shared by every connection task, for progress and errors.
#[derive(Debug, Default)]
pub struct Counters {
    pub delivered: AtomicU64,
    pub published: AtomicU64,
    pub errors: Mutex<BTreeMap<String, u64>>,
    pub last_receive_ns: AtomicU64,
}

impl Counters {
    pub fn error(&self, code: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry(code.to_owned()).or_default() += 1;
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn received(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }
}

/// One reading of the server process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_kib: u64,
    pub at: Instant,
}

/// The server process, read from `/proc/<pid>`.
#[derive(Debug, Clone, Copy)]
pub struct ServerProc {
    pub pid: u32,
    pub clk_tck: u64,
}

impl ServerProc {
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            clk_tck: clock_ticks_per_sec(),
        }
    }

    pub fn sample(&self) -> Option<ProcSample> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // Fields after the `(comm)`, which may itself contain spaces.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the full line; `rest`
        // starts at field 3.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(ProcSample {
            cpu_ticks: utime + stime,
            rss_kib: self.rss_kib()?,
            at: Instant::now(),
        })
    }

    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The server's own open-file limit (`Max open files`, soft).
    pub fn nofile_limit(&self) -> Option<u64> {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid)).ok()?;
        limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse().ok())
    }

    /// CPU used between two samples, with per-delivery and utilisation.
    pub fn cpu_report(&self, before: &ProcSample, after: &ProcSample, deliveries: u64) -> Value {
        let ticks = after.cpu_ticks.saturating_sub(before.cpu_ticks);
        let cpu_s = ticks as f64 / self.clk_tck as f64;
        let wall = after.at.duration_since(before.at).as_secs_f64();
        let per_delivery_us = if deliveries > 0 {
            Some((cpu_s * 1e6 / deliveries as f64 * 1000.0).round() / 1000.0)
        } else {
            None
        };
        json!({
            "pid": self.pid,
            "cpu_ticks": ticks,
            "clk_tck": self.clk_tck,
            "cpu_seconds": (cpu_s * 1000.0).round() / 1000.0,
            "wall_seconds": (wall * 1000.0).round() / 1000.0,
            "cpu_utilisation": if wall > 0.0 { (cpu_s / wall * 1000.0).round() / 1000.0 } else { 0.0 },
            "cpu_us_per_delivery": per_delivery_us,
            "rss_kib_before": before.rss_kib,
            "rss_kib_after": after.rss_kib,
        })
    }
}

/// `getconf CLK_TCK`, or the Linux default of 100.
fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// CPU time over wall time between two samples of one process (the
/// bench reads itself, to show when it, not the server, is saturated).
pub fn utilisation(
    proc_: &ServerProc,
    before: Option<ProcSample>,
    after: Option<ProcSample>,
) -> Option<f64> {
    let (before, after) = (before?, after?);
    let wall = after.at.duration_since(before.at).as_secs_f64();
    if wall <= 0.0 {
        return None;
    }
    let cpu = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / proc_.clk_tck as f64;
    Some((cpu / wall * 1000.0).round() / 1000.0)
}

/// Rounds to one decimal.
pub fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_has_no_loss() {
        let mut t = SeqTracker::default();
        for s in 1..=100 {
            t.observe(s);
        }
        assert_eq!(
            (t.unique, t.duplicates, t.out_of_order, t.lost(100)),
            (100, 0, 0, 0)
        );
    }

    #[test]
    fn holes_late_arrivals_and_repeats_are_told_apart() {
        let mut t = SeqTracker::default();
        for s in [1, 2, 5, 3, 3, 9, 2, 8] {
            t.observe(s);
        }
        // unique: 1 2 5 3 9 8 ; late: 3, 8 ; repeats: 3, 2 ; missing: 4 6 7 10
        assert_eq!(t.unique, 6);
        assert_eq!(t.out_of_order, 2);
        assert_eq!(t.duplicates, 2);
        assert_eq!(t.lost(10), 4);
    }

    #[test]
    fn parses_proc_of_this_process() {
        let me = ServerProc::new(std::process::id());
        let sample = me.sample().expect("readable /proc/self");
        assert!(sample.rss_kib > 0);
        assert!(me.nofile_limit().is_some());
    }
}
