//! The telemetry hub: events in, encoded frames out to every subscriber,
//! through one bounded broadcast queue (SPEC §8 delivery).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arqon_config::TelemetryConfig;
use arqon_protocol::ChannelKey;
use bytes::Bytes;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::filter::EventFilter;
use crate::latency::RouteLatency;
use crate::{Event, names};

/// Events the hub keeps for its slowest subscriber before that subscriber
/// starts missing them.
pub const DEFAULT_CAPACITY: usize = 4096;

/// Which configured channel an event is published to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelTarget {
    /// `TelemetryConfig::channel` (`integriguard:telemetry-stream`).
    Telemetry,
    /// `TelemetryConfig::dashboard_channel` (`integriguard:dashboard-events`):
    /// `agent_activity` only.
    Dashboard,
}

/// One encoded event, shared by every subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The `eventType` (`custom` for client-sent events), for filtering.
    pub kind: &'static str,
    /// Where the event belongs on the bus.
    pub channel: ChannelTarget,
    /// The whole `telemetry` envelope, as JSON text: send it as is.
    pub frame: Bytes,
}

/// The telemetry hub. Cheap to clone: every clone is the same hub.
///
/// It also carries the [`RouteLatency`] recorder, so the router and the
/// stats task share one handle.
#[derive(Debug, Clone)]
pub struct Telemetry {
    inner: Arc<Hub>,
}

#[derive(Debug)]
struct Hub {
    events: broadcast::Sender<Arc<Published>>,
    telemetry_channel: Option<ChannelKey>,
    dashboard_channel: Option<ChannelKey>,
    latency: RouteLatency,
    dropped: Arc<AtomicU64>,
}

impl Telemetry {
    /// A hub for `config`'s channels with [`DEFAULT_CAPACITY`].
    ///
    /// Create it after the binary installed its metrics recorder, so the
    /// route-latency histogram handle it takes is the real one.
    pub fn new(config: &TelemetryConfig) -> Self {
        Self::with_capacity(config, DEFAULT_CAPACITY)
    }

    /// A hub keeping `capacity` (at least 1) events for slow subscribers.
    pub fn with_capacity(config: &TelemetryConfig, capacity: usize) -> Self {
        let (events, _) = broadcast::channel(capacity.max(1));
        let key = |text: &str, what: &str| match ChannelKey::parse(text) {
            Ok(key) => Some(key),
            Err(_) => {
                // Config validation rejects this; never panic over it.
                tracing::warn!(
                    channel = text,
                    what,
                    "invalid telemetry channel, events will carry no room/channel"
                );
                None
            }
        };
        Self {
            inner: Arc::new(Hub {
                events,
                telemetry_channel: key(&config.channel, "channel"),
                dashboard_channel: key(&config.dashboard_channel, "dashboard_channel"),
                latency: RouteLatency::new(),
                dropped: Arc::new(AtomicU64::new(0)),
            }),
        }
    }

    /// Publishes `event` to every current subscriber. Never blocks, never
    /// waits for a subscriber: the event is encoded once and queued in the
    /// bounded broadcast buffer, where a subscriber that fell too far
    /// behind loses its oldest events. With no subscriber the event is
    /// dropped without being encoded.
    pub fn emit(&self, event: Event) {
        if self.is_observed() {
            self.send(&event);
        }
    }

    /// Like [`Telemetry::emit`], building the event only when someone
    /// listens: for call sites where building it allocates.
    pub fn emit_with(&self, make: impl FnOnce() -> Event) {
        if self.is_observed() {
            self.send(&make());
        }
    }

    fn send(&self, event: &Event) {
        let published = Arc::new(self.encode(event));
        // An error only means the last subscriber went away meanwhile.
        let _ = self.inner.events.send(published);
    }

    /// Whether anyone subscribes now.
    pub fn is_observed(&self) -> bool {
        self.inner.events.receiver_count() > 0
    }

    /// How many subscriptions exist now.
    pub fn subscribers(&self) -> usize {
        self.inner.events.receiver_count()
    }

    /// Encodes `event` without publishing it: for the `telemetry_connected`
    /// greeting a telemetry socket sends only to its own client.
    pub fn encode(&self, event: &Event) -> Published {
        let channel = event.target();
        Published {
            kind: event.kind(),
            channel,
            frame: Bytes::from(event.to_json(self.channel_key(channel))),
        }
    }

    /// Subscribes to every event emitted from now on.
    pub fn subscribe(&self) -> Subscription {
        self.subscribe_with(EventFilter::all())
    }

    /// Subscribes to the events `filter` selects.
    pub fn subscribe_with(&self, filter: EventFilter) -> Subscription {
        Subscription {
            receiver: self.inner.events.subscribe(),
            filter,
            dropped: self.inner.dropped.clone(),
        }
    }

    /// The configured channel of `target`; `None` only if the configuration
    /// held an invalid `room:channel` (which config validation refuses).
    pub fn channel_key(&self, target: ChannelTarget) -> Option<&ChannelKey> {
        match target {
            ChannelTarget::Telemetry => self.inner.telemetry_channel.as_ref(),
            ChannelTarget::Dashboard => self.inner.dashboard_channel.as_ref(),
        }
    }

    /// The route-latency recorder the stats task reads.
    pub fn route_latency(&self) -> &RouteLatency {
        &self.inner.latency
    }

    /// Records the routing latency of one message (see [`RouteLatency::record`]).
    pub fn record_route(&self, latency: Duration) {
        self.inner.latency.record(latency);
    }

    /// Events subscribers of this hub missed because they lagged, since it
    /// was created (the same count is added to
    /// `arqonbus_telemetry_dropped_total`).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }
}

/// A subscriber's view of the hub: the events emitted since it subscribed,
/// as selected by its [`EventFilter`].
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Published>>,
    filter: EventFilter,
    dropped: Arc<AtomicU64>,
}

impl Subscription {
    /// The next event the filter selects; `None` once every [`Telemetry`]
    /// handle is gone.
    ///
    /// A subscriber that fell more than the hub's capacity behind skips to
    /// the oldest event still queued; the events it missed are counted in
    /// `arqonbus_telemetry_dropped_total` (including any its filter would
    /// have skipped: the hub cannot tell them apart any more).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if it is cancelled (in a `select!`), no event is lost;
    /// the next call returns it.
    pub async fn recv(&mut self) -> Option<Arc<Published>> {
        loop {
            match self.receiver.recv().await {
                Ok(published) => {
                    if self.filter.matches(published.kind) {
                        return Some(published);
                    }
                }
                Err(RecvError::Lagged(missed)) => self.missed(missed),
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Counts events this subscriber received but could not pass on (its
    /// own bounded queue to a slow socket was full).
    pub fn count_dropped(&self, missed: u64) {
        self.missed(missed);
    }

    fn missed(&self, missed: u64) {
        self.dropped.fetch_add(missed, Ordering::Relaxed);
        ::metrics::counter!(names::TELEMETRY_DROPPED_TOTAL).increment(missed);
        tracing::debug!(missed, "telemetry subscriber lagged");
    }

    /// The filter this subscription applies.
    pub fn filter(&self) -> EventFilter {
        self.filter
    }
}

#[cfg(test)]
mod tests {
    use arqon_protocol::{ClientId, ErrorCode};
    use metrics_exporter_prometheus::PrometheusBuilder;
    use serde_json::Value;

    use super::*;
    use crate::{AgentAction, Stats};

    fn hub(capacity: usize) -> Telemetry {
        Telemetry::with_capacity(&TelemetryConfig::default(), capacity)
    }

    fn error_event() -> Event {
        Event::Error {
            client_id: None,
            error_code: ErrorCode::InternalError,
        }
    }

    fn stats_event(connections: usize) -> Event {
        Event::Stats(Stats {
            connections,
            ..Stats::default()
        })
    }

    fn json(published: &Published) -> Value {
        serde_json::from_slice(&published.frame).expect("json")
    }

    /// Receives with a timeout so a hang fails fast.
    async fn next(subscription: &mut Subscription) -> Arc<Published> {
        tokio::time::timeout(Duration::from_secs(5), subscription.recv())
            .await
            .expect("an event within 5 s")
            .expect("hub open")
    }

    #[tokio::test]
    async fn every_subscriber_gets_the_same_encoded_frame() {
        let telemetry = hub(16);
        let mut a = telemetry.subscribe();
        let mut b = telemetry.subscribe();
        telemetry.emit(error_event());
        let (first, second) = (next(&mut a).await, next(&mut b).await);
        assert!(Arc::ptr_eq(&first, &second), "encoded once, shared");
        assert_eq!(first.kind, "error");
        assert_eq!(first.channel, ChannelTarget::Telemetry);
        let json = json(&first);
        assert_eq!(json["room"], "integriguard");
        assert_eq!(json["channel"], "telemetry-stream");
        assert_eq!(json["payload"]["error_code"], "INTERNAL_ERROR");
    }

    #[tokio::test]
    async fn agent_activity_is_addressed_to_the_dashboard_channel() {
        let telemetry = hub(16);
        let mut subscription = telemetry.subscribe();
        telemetry.emit(Event::AgentActivity {
            client_id: ClientId::generate(),
            screen_name: None,
            personality: None,
            action: AgentAction::Message,
            channel: None,
        });
        let published = next(&mut subscription).await;
        assert_eq!(published.channel, ChannelTarget::Dashboard);
        let json = json(&published);
        assert_eq!(json["room"], "integriguard");
        assert_eq!(json["channel"], "dashboard-events");
        assert_eq!(json["payload"]["action"], "message");
    }

    #[tokio::test]
    async fn events_without_subscribers_are_not_built() {
        let telemetry = hub(16);
        assert!(!telemetry.is_observed());
        let mut built = false;
        telemetry.emit_with(|| {
            built = true;
            error_event()
        });
        assert!(!built);
        telemetry.emit(error_event());
        // A later subscriber sees only what is emitted after it subscribed.
        let mut subscription = telemetry.subscribe();
        assert!(telemetry.is_observed());
        telemetry.emit_with(|| stats_event(7));
        let published = next(&mut subscription).await;
        assert_eq!(published.kind, "stats");
        assert_eq!(json(&published)["payload"]["connections"], 7);
    }

    #[tokio::test]
    async fn the_filter_selects_events() {
        let telemetry = hub(16);
        let mut subscription =
            telemetry.subscribe_with(EventFilter::parse("stats").expect("valid"));
        telemetry.emit(error_event());
        telemetry.emit(stats_event(1));
        let published = next(&mut subscription).await;
        assert_eq!(published.kind, "stats");
        assert_eq!(telemetry.dropped(), 0, "filtered out is not dropped");
    }

    #[test]
    fn a_subscriber_that_never_reads_does_not_block_emit_and_its_misses_are_counted() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _guard = ::metrics::set_default_local_recorder(&recorder);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let telemetry = hub(8);
            let mut stalled = telemetry.subscribe();
            let mut reader = telemetry.subscribe();
            // Synchronous emits: if one blocked on the stalled subscriber,
            // this test would hang instead of finishing.
            for connections in 0..100 {
                telemetry.emit(stats_event(connections));
                // The reader keeps up.
                let published = next(&mut reader).await;
                assert_eq!(json(&published)["payload"]["connections"], connections);
            }
            assert_eq!(telemetry.dropped(), 0, "nobody noticed a loss yet");
            // The stalled subscriber skips to the 8 events still queued.
            let first = next(&mut stalled).await;
            assert_eq!(json(&first)["payload"]["connections"], 92);
            assert_eq!(telemetry.dropped(), 92);
            for connections in 93..100 {
                let published = next(&mut stalled).await;
                assert_eq!(json(&published)["payload"]["connections"], connections);
            }
        });
        let rendered = handle.render();
        assert!(
            rendered.contains(&format!("{} 92\n", names::TELEMETRY_DROPPED_TOTAL)),
            "{rendered}"
        );
    }

    #[tokio::test]
    async fn recv_ends_when_the_hub_is_gone() {
        let telemetry = hub(4);
        let mut subscription = telemetry.subscribe();
        telemetry.emit(error_event());
        drop(telemetry);
        assert!(subscription.recv().await.is_some(), "queued events first");
        assert!(subscription.recv().await.is_none());
    }

    #[test]
    fn encode_does_not_publish() {
        let telemetry = hub(4);
        let subscription = telemetry.subscribe();
        let greeting = telemetry.encode(&Event::TelemetryConnected {
            server_version: "1.2.3".into(),
            connections: 0,
            rooms: 0,
            channels: 0,
        });
        assert_eq!(greeting.kind, "telemetry_connected");
        assert_eq!(json(&greeting)["payload"]["server_version"], "1.2.3");
        assert_eq!(subscription.receiver.len(), 0);
    }

    #[test]
    fn an_invalid_channel_only_omits_room_and_channel() {
        let config = TelemetryConfig {
            channel: "no-colon".to_owned(),
            ..TelemetryConfig::default()
        };
        let telemetry = Telemetry::new(&config);
        assert!(telemetry.channel_key(ChannelTarget::Telemetry).is_none());
        assert!(telemetry.channel_key(ChannelTarget::Dashboard).is_some());
        let json = json(&telemetry.encode(&error_event()));
        assert!(json.get("room").is_none());
    }
}
