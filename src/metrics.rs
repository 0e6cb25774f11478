//! Operations counters: `GET /metrics` (Prometheus text format) and the
//! admin's `GET /api/v1/stats`.
//!
//! Counts that other parts already keep (the hub's `HubStats`, the stream
//! limits' open streams) are read when scraped; what only a stream sees
//! (replayed events, commit-to-send latency) is recorded here.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::engine::StreamMetrics;
use crate::hub::HubStats;
use crate::limits::OpenCounts;

/// How far back `events per second` looks.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Counters recorded by streams, and samples for rates.
/// What `/metrics` says of ingest.
#[derive(Debug, Default)]
pub struct Ingest {
    pub backlog: crate::store::Backlog,
    /// Writes refused for the backlog so far.
    pub overloaded: u64,
}

pub struct Metrics {
    /// What the engine's streams count (replays, commit-to-send latency).
    pub streams: StreamMetrics,
    /// Requests for change pages that reached this node (a cache in front
    /// answers the rest).
    pub change_page_requests: Counter,
    started: Instant,
    /// `(when, published, delivered)`, one a second, for rates.
    samples: Mutex<VecDeque<(Instant, u64, u64)>>,
}

impl Metrics {
    pub fn new(streams: StreamMetrics) -> Metrics {
        Metrics {
            streams,
            change_page_requests: Counter::default(),
            started: Instant::now(),
            samples: Mutex::new(VecDeque::new()),
        }
    }
}

/// Events per second over the last [`RATE_WINDOW`].
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Rates {
    pub published: f64,
    pub delivered: f64,
}

impl Metrics {
    /// Records the hub's counters now (called once a second), keeping the
    /// samples of the last [`RATE_WINDOW`].
    pub fn sample(&self, stats: &HubStats) {
        let now = Instant::now();
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.push_back((
            now,
            stats.events_published.load(Ordering::Relaxed),
            stats.events_delivered.load(Ordering::Relaxed),
        ));
        while samples
            .front()
            .is_some_and(|(at, _, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            samples.pop_front();
        }
    }

    /// Events per second between the oldest and newest samples (zero until
    /// there are two).
    pub fn rates(&self) -> Rates {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        match (samples.front(), samples.back()) {
            (Some(first), Some(last)) if last.0 > first.0 => {
                let seconds = last.0.duration_since(first.0).as_secs_f64();
                Rates {
                    published: (last.1 - first.1) as f64 / seconds,
                    delivered: (last.2 - first.2) as f64 / seconds,
                }
            }
            _ => Rates {
                published: 0.0,
                delivered: 0.0,
            },
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(
        &self,
        stats: &HubStats,
        open: &OpenCounts,
        subscriptions: usize,
        ingest: &Ingest,
    ) -> String {
        let mut registry = Registry::with_prefix("livehub");
        registry.register(
            "ingest_backlog_events",
            "Changes this node accepted that the feed has not yet brought to its streams",
            ConstGauge::new(ingest.backlog.events as i64),
        );
        registry.register(
            "ingest_backlog_bytes",
            "Bytes of those changes",
            ConstGauge::new(ingest.backlog.bytes as i64),
        );
        registry.register(
            "writes_overloaded",
            "Record writes and channel messages refused with 503 for the backlog",
            ConstCounter::new(ingest.overloaded),
        );
        let read = |counter: &std::sync::atomic::AtomicU64| {
            ConstCounter::new(counter.load(Ordering::Relaxed))
        };
        registry.register(
            "streams_open",
            "Open SSE streams",
            ConstGauge::new(open.total as i64),
        );
        registry.register(
            "streams_authenticated",
            "Open streams of signed-in callers",
            ConstGauge::new(open.authenticated as i64),
        );
        registry.register(
            "subscriptions",
            "Subscriptions (collections and channels) over all streams",
            ConstGauge::new(subscriptions as i64),
        );
        registry.register(
            "events_published",
            "Events the feed published to the hub",
            read(&stats.events_published),
        );
        registry.register(
            "events_delivered",
            "Events queued to live streams",
            read(&stats.events_delivered),
        );
        registry.register(
            "events_replayed",
            "Events sent to streams from a replay",
            self.streams.replayed.clone(),
        );
        registry.register(
            "lagging_closes",
            "Streams closed because their client read too slowly (they resume)",
            read(&stats.lagging_closes),
        );
        registry.register(
            "late_changes",
            "Changes from other writers that became visible after the feed passed them",
            read(&stats.late_changes),
        );
        registry.register(
            "change_page_requests",
            "Requests for change pages that reached this node (not answered by a cache in front)",
            self.change_page_requests.clone(),
        );
        registry.register_with_unit(
            "commit_to_send",
            "Time from an event's commit to its write to a stream",
            prometheus_client::registry::Unit::Seconds,
            self.streams.commit_to_send.clone(),
        );
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_samples_in_the_window() {
        let metrics = Metrics::new(StreamMetrics::default());
        let stats = HubStats::default();
        assert_eq!(metrics.rates().published, 0.0);
        metrics.sample(&stats);
        stats.events_published.store(100, Ordering::Relaxed);
        stats.events_delivered.store(1000, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        metrics.sample(&stats);
        let rates = metrics.rates();
        assert!(rates.published > 0.0, "{rates:?}");
        // The same interval divides both counts: ten times as many delivered
        // (up to rounding).
        let ratio = rates.delivered / rates.published;
        assert!((ratio - 10.0).abs() < 1e-9, "{rates:?}");
    }

    #[test]
    fn the_exposition_names_every_metric() {
        let metrics = Metrics::new(StreamMetrics::default());
        metrics.streams.commit_to_send.observe(0.004);
        metrics.streams.replayed.inc();
        let text = metrics.render(
            &HubStats::default(),
            &OpenCounts::default(),
            0,
            &Ingest::default(),
        );
        for line in [
            "livehub_streams_open 0",
            "livehub_events_replayed_total 1",
            "livehub_commit_to_send_seconds_count 1",
            "livehub_commit_to_send_seconds_bucket{le=\"0.004\"} 1",
            "livehub_late_changes_total 0",
            "livehub_change_page_requests_total 0",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }
}
