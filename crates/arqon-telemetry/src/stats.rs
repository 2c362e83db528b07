//! The periodic `stats` event (SPEC §8): rates over the real elapsed
//! interval and the route latency of that interval.

use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::latency::LatencySnapshot;
use crate::{Event, Stats, StatsDetail, Telemetry};

/// What the server reports at each stats tick: cumulative counters (since
/// startup) and current gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Connected bus clients.
    pub connections: usize,
    pub rooms: usize,
    pub channels: usize,
    /// Messages received from clients since startup.
    pub messages_in: u64,
    /// Deliveries to clients since startup.
    pub messages_out: u64,
}

/// Turns successive [`StatsSnapshot`]s into `stats` events: per-second
/// rates over the time that really elapsed between two samples (a late
/// tick does not inflate them), gauges as sampled.
#[derive(Debug, Clone)]
pub struct StatsSampler {
    at: Instant,
    messages_in: u64,
    messages_out: u64,
}

impl StatsSampler {
    /// Starts measuring at `at` from the counters of `baseline`.
    pub fn new(at: Instant, baseline: &StatsSnapshot) -> Self {
        Self {
            at,
            messages_in: baseline.messages_in,
            messages_out: baseline.messages_out,
        }
    }

    /// The `stats` of the interval that ends at `at` with `now`'s counters
    /// and `latency` (the route latencies of the same interval). Rates are
    /// rounded to 0.01/s; they are 0 when no time elapsed, and a counter
    /// that went backwards counts as no traffic.
    pub fn sample(&mut self, at: Instant, now: &StatsSnapshot, latency: &LatencySnapshot) -> Stats {
        let elapsed = at.saturating_duration_since(self.at).as_secs_f64();
        let rate = |current: u64, previous: u64| {
            if elapsed > 0.0 {
                let per_sec = current.saturating_sub(previous) as f64 / elapsed;
                (per_sec * 100.0).round() / 100.0
            } else {
                0.0
            }
        };
        let stats = Stats {
            connections: now.connections,
            messages_in_per_sec: rate(now.messages_in, self.messages_in),
            messages_out_per_sec: rate(now.messages_out, self.messages_out),
            route_latency_p50_us: latency.quantile_us(0.50),
            route_latency_p99_us: latency.quantile_us(0.99),
            rooms: now.rooms,
            channels: now.channels,
            detail: None,
        };
        self.at = at;
        self.messages_in = now.messages_in;
        self.messages_out = now.messages_out;
        stats
    }
}

/// The stats task: every `every` (`TelemetryConfig::stats_interval`; at
/// least 1 ms), calls `sample`, updates the `arqonbus_active_clients`,
/// `arqonbus_rooms` and `arqonbus_channels` gauges, and emits a `stats`
/// event with the interval's rates and route latency (taken from
/// `telemetry`'s [`crate::RouteLatency`], which it resets). Returns when
/// `shutdown` completes.
///
/// The server spawns it once:
///
/// ```no_run
/// # async fn example(config: arqon_telemetry::TelemetryConfig) {
/// use arqon_telemetry::{StatsSnapshot, Telemetry, run_stats};
///
/// let telemetry = Telemetry::new(&config);
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// tokio::spawn(run_stats(
///     telemetry.clone(),
///     config.stats_interval,
///     // In the server: the router's client/room/channel counts and its
///     // cumulative received/delivered counters.
///     || StatsSnapshot::default(),
///     async move {
///         let _ = stopped.await;
///     },
/// ));
/// // … on shutdown:
/// let _ = stop.send(());
/// # }
/// ```
///
/// `sample` runs on the task, once per tick: keep it to a few atomic loads
/// and short lock-free reads. A late tick is not caught up (the next one
/// is scheduled `every` after it); rates use the real elapsed time. Uses
/// tokio time, so tests can pause it.
pub async fn run_stats<F, S>(telemetry: Telemetry, every: Duration, sample: F, shutdown: S)
where
    F: FnMut() -> StatsSnapshot,
    S: Future<Output = ()>,
{
    run_stats_inner(
        telemetry,
        every,
        sample,
        None::<fn() -> StatsDetail>,
        shutdown,
    )
    .await;
}

/// [`run_stats`], with the dashboard fields of SPEC §19 in every `stats`
/// event: `detail` runs once per tick, after `sample` (the server takes a
/// router snapshot: clients by type, the
/// [`StatsDetail::TOP_CHANNELS`] largest channels, and the storage state).
pub async fn run_stats_with<F, D, S>(
    telemetry: Telemetry,
    every: Duration,
    sample: F,
    detail: D,
    shutdown: S,
) where
    F: FnMut() -> StatsSnapshot,
    D: FnMut() -> StatsDetail,
    S: Future<Output = ()>,
{
    run_stats_inner(telemetry, every, sample, Some(detail), shutdown).await;
}

async fn run_stats_inner<F, D, S>(
    telemetry: Telemetry,
    every: Duration,
    mut sample: F,
    mut detail: Option<D>,
    shutdown: S,
) where
    F: FnMut() -> StatsSnapshot,
    D: FnMut() -> StatsDetail,
    S: Future<Output = ()>,
{
    let every = every.max(Duration::from_millis(1));
    let mut shutdown = std::pin::pin!(shutdown);
    let start = Instant::now();
    let mut sampler = StatsSampler::new(start, &sample());
    // The first interval starts now.
    drop(telemetry.route_latency().take());
    let mut ticker = tokio::time::interval_at(start + every, every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        let now = sample();
        crate::metrics::set_bus_gauges(&now);
        let latency = telemetry.route_latency().take();
        let mut stats = sampler.sample(Instant::now(), &now, &latency);
        stats.detail = detail.as_mut().map(|detail| detail());
        telemetry.emit(Event::Stats(stats));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use arqon_config::TelemetryConfig;
    use serde_json::Value;
    use tokio::sync::oneshot;

    use super::*;
    use crate::RouteLatency;

    fn counters(messages_in: u64, messages_out: u64) -> StatsSnapshot {
        StatsSnapshot {
            connections: 5,
            rooms: 2,
            channels: 3,
            messages_in,
            messages_out,
        }
    }

    #[test]
    fn rates_use_the_real_elapsed_time() {
        let start = Instant::now();
        let latency = RouteLatency::new();
        let mut sampler = StatsSampler::new(start, &counters(1000, 50));
        // A 2 s interval (a late tick): 300 in, 1000 out.
        let stats = sampler.sample(
            start + Duration::from_secs(2),
            &counters(1300, 1050),
            &latency.take(),
        );
        assert_eq!(stats.messages_in_per_sec, 150.0);
        assert_eq!(stats.messages_out_per_sec, 500.0);
        assert_eq!((stats.connections, stats.rooms, stats.channels), (5, 2, 3));
        // The next interval is measured from the previous sample: 250 ms, 1 in.
        let stats = sampler.sample(
            start + Duration::from_millis(2250),
            &counters(1301, 1050),
            &latency.take(),
        );
        assert_eq!(stats.messages_in_per_sec, 4.0);
        assert_eq!(stats.messages_out_per_sec, 0.0);
        // 3 messages in 7 ms: 428.571… rounded to 0.01.
        let stats = sampler.sample(
            start + Duration::from_millis(2257),
            &counters(1304, 1050),
            &latency.take(),
        );
        assert_eq!(stats.messages_in_per_sec, 428.57);
    }

    #[test]
    fn degenerate_intervals_report_no_traffic() {
        let start = Instant::now();
        let latency = RouteLatency::new();
        let mut sampler = StatsSampler::new(start, &counters(10, 10));
        let stats = sampler.sample(start, &counters(20, 20), &latency.take());
        assert_eq!(stats.messages_in_per_sec, 0.0, "no time elapsed");
        let stats = sampler.sample(
            start + Duration::from_secs(1),
            &counters(5, 5),
            &latency.take(),
        );
        assert_eq!(stats.messages_in_per_sec, 0.0, "counter went backwards");
        assert_eq!(stats.route_latency_p50_us, 0, "no sample");
        assert_eq!(stats.route_latency_p99_us, 0);
    }

    #[test]
    fn percentiles_come_from_the_interval() {
        let start = Instant::now();
        let latency = RouteLatency::new();
        let mut sampler = StatsSampler::new(start, &counters(0, 0));
        for _ in 0..98 {
            latency.record(Duration::from_micros(20));
        }
        latency.record(Duration::from_micros(700));
        latency.record(Duration::from_micros(900));
        let stats = sampler.sample(
            start + Duration::from_secs(1),
            &counters(100, 100),
            &latency.take(),
        );
        assert_eq!(stats.route_latency_p50_us, 20);
        assert!(
            (700..=743).contains(&stats.route_latency_p99_us),
            "{stats:?}"
        );
        // The next interval starts empty.
        latency.record(Duration::from_micros(3));
        let stats = sampler.sample(
            start + Duration::from_secs(2),
            &counters(100, 100),
            &latency.take(),
        );
        assert_eq!(stats.route_latency_p50_us, 3);
        assert_eq!(stats.route_latency_p99_us, 3);
    }

    /// The payload of the next event, which must be a `stats`.
    async fn next_stats(subscription: &mut crate::Subscription) -> Value {
        let published = tokio::time::timeout(Duration::from_secs(60), subscription.recv())
            .await
            .expect("a stats event")
            .expect("hub open");
        assert_eq!(published.kind, "stats");
        let json: Value = serde_json::from_slice(&published.frame).expect("json");
        json["payload"].clone()
    }

    #[tokio::test(start_paused = true)]
    async fn run_stats_emits_every_interval_until_shutdown() {
        let telemetry = Telemetry::new(&TelemetryConfig::default());
        let mut subscription = telemetry.subscribe();
        let messages_in = Arc::new(AtomicU64::new(1000));
        let messages_out = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = oneshot::channel::<()>();
        let sample = {
            let (messages_in, messages_out) = (messages_in.clone(), messages_out.clone());
            move || StatsSnapshot {
                connections: 4,
                rooms: 1,
                channels: 2,
                messages_in: messages_in.load(Ordering::Relaxed),
                messages_out: messages_out.load(Ordering::Relaxed),
            }
        };
        let start = Instant::now();
        let task = tokio::spawn(run_stats(
            telemetry.clone(),
            Duration::from_millis(500),
            sample,
            async {
                let _ = stopped.await;
            },
        ));

        // First interval: no traffic since the baseline.
        let stats = next_stats(&mut subscription).await;
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        assert_eq!(stats["messages_in_per_sec"], 0.0);
        assert_eq!(stats["connections"], 4);
        assert_eq!(stats["rooms"], 1);
        assert_eq!(stats["channels"], 2);

        // Second interval: 100 in, 250 out in 0.5 s, and some latencies.
        messages_in.fetch_add(100, Ordering::Relaxed);
        messages_out.fetch_add(250, Ordering::Relaxed);
        for _ in 0..99 {
            telemetry.record_route(Duration::from_micros(12));
        }
        telemetry.record_route(Duration::from_micros(2000));
        let stats = next_stats(&mut subscription).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(stats["messages_in_per_sec"], 200.0);
        assert_eq!(stats["messages_out_per_sec"], 500.0);
        assert_eq!(stats["route_latency_p50_us"], 12);
        assert_eq!(stats["route_latency_p99_us"], 12);

        // Third interval: latency was reset.
        let stats = next_stats(&mut subscription).await;
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
        assert_eq!(stats["route_latency_p50_us"], 0);
        assert_eq!(stats["messages_in_per_sec"], 0.0);

        stop.send(()).expect("task alive");
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("stops on shutdown")
            .expect("no panic");
        // Nothing else was emitted after the shutdown.
        drop(telemetry);
        assert!(subscription.recv().await.is_none());
    }
}
