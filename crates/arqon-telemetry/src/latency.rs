//! Route latency: recorded per routed message, summarised per stats
//! interval (SPEC §8 `route_latency_p50_us`, `route_latency_p99_us`) and
//! exported as `arqonbus_message_routing_seconds` (SPEC §12).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::names;

/// Values below this many microseconds get one bucket each.
const LINEAR: u64 = 16;
/// Sub-buckets per power of two above [`LINEAR`]: 2^4 = 16, so a bucket is
/// at most 1/16 (6.25 %) of its value wide.
const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// The largest power of two with its own buckets: 2^40 µs is about 12.7
/// days; anything slower lands in the last bucket.
const MAX_EXP: u32 = 40;
const BUCKETS: usize = LINEAR as usize + (MAX_EXP - SUB_BITS + 1) as usize * SUB;

/// The bucket of a latency of `micros` microseconds.
fn bucket_of(micros: u64) -> usize {
    if micros < LINEAR {
        return micros as usize;
    }
    let exp = 63 - micros.leading_zeros();
    if exp > MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = (micros >> (exp - SUB_BITS)) as usize & (SUB - 1);
    LINEAR as usize + (exp - SUB_BITS) as usize * SUB + sub
}

/// The largest latency, in microseconds, that falls in `bucket`.
fn upper_bound(bucket: usize) -> u64 {
    if bucket < LINEAR as usize {
        return bucket as u64;
    }
    let offset = bucket - LINEAR as usize;
    let shift = (offset / SUB) as u32;
    let low = (SUB + offset % SUB) as u64;
    // [low << shift, (low + 1) << shift)
    ((low + 1) << shift) - 1
}

/// The latency recorder of routed messages: lock-free, one relaxed atomic
/// increment per sample in log-linear buckets (exact below 16 µs, then 16
/// buckets per power of two: at most 6.25 % wide), plus one sample into the
/// `arqonbus_message_routing_seconds` histogram.
///
/// [`RouteLatency::take`] drains the buckets: each stats interval reports
/// the latency of that interval only.
pub struct RouteLatency {
    buckets: Box<[AtomicU64]>,
    histogram: ::metrics::Histogram,
}

impl RouteLatency {
    /// An empty recorder. The Prometheus histogram handle is taken from the
    /// recorder installed *now*: create it after
    /// [`crate::metrics::install_recorder`] (before it, only the stats
    /// events see the samples).
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            histogram: ::metrics::histogram!(names::MESSAGE_ROUTING_SECONDS),
        }
    }

    /// Records the routing latency of one message: from the frame being
    /// decoded to its last delivery being queued.
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.histogram.record(latency.as_secs_f64());
    }

    /// The samples recorded since the last `take`, leaving the recorder
    /// empty. A sample recorded concurrently lands in this snapshot or in
    /// the next one, never in both or neither.
    pub fn take(&self) -> LatencySnapshot {
        let counts: Box<[u64]> = self
            .buckets
            .iter()
            .map(|bucket| bucket.swap(0, Ordering::Relaxed))
            .collect();
        let count = counts.iter().sum();
        LatencySnapshot { counts, count }
    }
}

impl Default for RouteLatency {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RouteLatency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteLatency")
            .field("buckets", &self.buckets.len())
            .finish_non_exhaustive()
    }
}

/// The latencies of one interval, as taken by [`RouteLatency::take`].
#[derive(Debug, Clone)]
pub struct LatencySnapshot {
    counts: Box<[u64]>,
    count: u64,
}

impl LatencySnapshot {
    /// How many samples the interval had.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (`0.5` for p50, `0.99` for p99) in microseconds:
    /// the upper bound of the bucket holding the sample of rank
    /// `ceil(q × count)`, so it is never below the true value and at most
    /// 6.25 % above it. `0` when the interval had no sample.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        // Ranks are at most 2^64, well within f64's exact range for this use.
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return upper_bound(bucket);
            }
        }
        upper_bound(BUCKETS - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_increasing() {
        let mut previous = None;
        for bucket in 0..BUCKETS {
            let upper = upper_bound(bucket);
            if let Some(previous) = previous {
                assert!(upper > previous, "bucket {bucket}");
                // The first value of this bucket maps back to it.
                assert_eq!(bucket_of(previous + 1), bucket);
            }
            assert_eq!(bucket_of(upper), bucket, "upper bound of {bucket}");
            previous = Some(upper);
        }
    }

    #[test]
    fn relative_error_is_bounded() {
        for micros in (0..100_000u64).chain([1 << 30, (1 << 35) + 12_345, 1 << 40]) {
            let upper = upper_bound(bucket_of(micros));
            assert!(upper >= micros);
            assert!(
                (upper - micros) as f64 <= micros as f64 / 16.0,
                "{micros} -> {upper}"
            );
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let latency = RouteLatency::new();
        // 90 samples at 10 µs, 9 at 100 µs, 1 at 5 ms.
        for _ in 0..90 {
            latency.record(Duration::from_micros(10));
        }
        for _ in 0..9 {
            latency.record(Duration::from_micros(100));
        }
        latency.record(Duration::from_millis(5));
        let snapshot = latency.take();
        assert_eq!(snapshot.count(), 100);
        assert_eq!(snapshot.quantile_us(0.5), 10);
        assert_eq!(snapshot.quantile_us(0.9), 10);
        let p99 = snapshot.quantile_us(0.99);
        assert!((100..=106).contains(&p99), "{p99}");
        let max = snapshot.quantile_us(1.0);
        assert!((5000..=5000 + 5000 / 16).contains(&max), "{max}");
        assert_eq!(snapshot.quantile_us(0.0), 10);
    }

    #[test]
    fn take_resets() {
        let latency = RouteLatency::new();
        latency.record(Duration::from_micros(3));
        assert_eq!(latency.take().count(), 1);
        let empty = latency.take();
        assert_eq!(empty.count(), 0);
        assert_eq!(empty.quantile_us(0.5), 0);
        assert_eq!(empty.quantile_us(0.99), 0);
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let latency = std::sync::Arc::new(RouteLatency::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let latency = latency.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        latency.record(Duration::from_micros(i * (t + 1)));
                    }
                })
            })
            .collect();
        let mut total = 0;
        for thread in threads {
            total += latency.take().count();
            thread.join().expect("thread");
        }
        total += latency.take().count();
        assert_eq!(total, 40_000);
    }
}
