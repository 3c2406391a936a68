//! The server's metrics, exported at `GET /metrics` in the Prometheus text
//! format: counters, gauges and histograms through the `metrics` crate,
//! rendered by `metrics-exporter-prometheus`, and the standard `process_*`
//! metrics (CPU, resident memory, open file descriptors, start time) from
//! `metrics-process`.
//!
//! Each server has its own recorder (not the process-wide one), so several
//! servers in one process (tests, the harness's embedded server) keep apart.
//! Every handle is registered once, at start: the hot path increments an
//! atomic through it and takes no lock. Histogram samples wait in a lock-free
//! queue until `upkeep` (every `UPKEEP_EVERY`, and at each scrape) folds
//! them into their buckets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use crate::sync::lock;

/// How often histogram samples are folded into their buckets.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Seconds, from a microsecond to ten seconds.
const SECONDS: &[f64] =
    &[1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0];
/// Counts, from one to a few thousand.
const COUNTS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

/// The server's metrics: handles to update, and the recorder that renders them.
pub struct Metrics {
    started: Instant,
    recorder: PrometheusRecorder,
    process: metrics_process::Collector,
    /// WebSocket sessions open now, also read by `/healthz`.
    sessions: Arc<AtomicU64>,
    sessions_gauge: Gauge,
    tcp_gauge: Gauge,
    rooms_gauge: Gauge,
    uptime_gauge: Gauge,
    /// WebSocket sessions opened since start.
    pub connections_total: Counter,
    /// Handshakes and connections refused (server full, bad request, origin, token...).
    pub handshakes_refused: Counter,
    /// Chat messages accepted from clients.
    pub chat_in: Counter,
    /// Binary messages accepted from clients.
    pub binary_in: Counter,
    /// Files shared (uploads completed and announced).
    pub file_in: Counter,
    /// Events queued to connections by fan-out (one per recipient).
    pub delivered: Counter,
    /// Requests answered with an `error` event.
    pub errors: Counter,
    /// Messages stored in history.
    pub history_stored: Counter,
    /// Messages whose storing failed (their senders got `storage_failed`).
    pub history_failed: Counter,
    /// `gap` events sent to connections that fell behind.
    pub gaps: Counter,
    /// Messages not queued to a connection because it was behind.
    pub lag_drops: Counter,
    /// Sessions ended, by reason; one counter per reason seen, made on
    /// first use (a session end is not a hot path).
    ended: Mutex<HashMap<&'static str, Counter>>,
    /// Seconds to queue one message to every recipient (under the room lock).
    pub fanout_seconds: Histogram,
    /// Seconds one history commit took (one transaction, one fsync with SQLite).
    pub history_commit_seconds: Histogram,
    /// Messages per history commit.
    pub history_batch_messages: Histogram,
    /// Seconds to answer one `history` request (waiting for the writer, reading, encoding).
    pub history_request_seconds: Histogram,
    /// Seconds from a WebSocket handshake request to its 101.
    pub handshake_seconds: Histogram,
    /// Items a connection's writer found queued when it woke (a sample of queue depth).
    pub outbox_depth: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("sessions", &self.sessions()).finish_non_exhaustive()
    }
}

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    /// A histogram with these bucket bounds.
    Histogram(&'static [f64]),
}

/// The metrics: name, kind, unit and what they measure.
const DESCRIPTIONS: &[(&str, Kind, Unit, &str)] = &[
    ("chorus_uptime_seconds", Kind::Gauge, Unit::Seconds, "Seconds since the server started."),
    ("chorus_connections", Kind::Gauge, Unit::Count, "WebSocket sessions open now."),
    ("chorus_tcp_connections", Kind::Gauge, Unit::Count, "TCP connections open now (what --max-connections bounds)."),
    ("chorus_rooms", Kind::Gauge, Unit::Count, "Rooms that exist now."),
    ("chorus_connections_total", Kind::Counter, Unit::Count, "WebSocket sessions opened since start."),
    ("chorus_handshakes_refused_total", Kind::Counter, Unit::Count, "Connections and WebSocket handshakes refused."),
    ("chorus_messages_received_total", Kind::Counter, Unit::Count, "Messages accepted from clients, by kind."),
    ("chorus_deliveries_total", Kind::Counter, Unit::Count, "Messages queued to recipients by fan-out."),
    ("chorus_errors_total", Kind::Counter, Unit::Count, "Requests answered with an error event."),
    ("chorus_history_stored_total", Kind::Counter, Unit::Count, "Messages stored in history."),
    (
        "chorus_history_failures_total",
        Kind::Counter,
        Unit::Count,
        "Messages that could not be stored (senders got storage_failed).",
    ),
    ("chorus_gaps_total", Kind::Counter, Unit::Count, "gap events sent to connections that fell behind."),
    (
        "chorus_lag_drops_total",
        Kind::Counter,
        Unit::Count,
        "Messages not queued to a connection that was behind (announced by gap).",
    ),
    ("chorus_disconnects_total", Kind::Counter, Unit::Count, "Connections ended, by reason."),
    ("chorus_fanout_seconds", Kind::Histogram(SECONDS), Unit::Seconds, "Time to queue one message to every recipient."),
    ("chorus_history_commit_seconds", Kind::Histogram(SECONDS), Unit::Seconds, "Time one history commit took."),
    ("chorus_history_batch_messages", Kind::Histogram(COUNTS), Unit::Count, "Messages stored per history commit."),
    ("chorus_history_request_seconds", Kind::Histogram(SECONDS), Unit::Seconds, "Time to answer one history request."),
    (
        "chorus_handshake_seconds",
        Kind::Histogram(SECONDS),
        Unit::Seconds,
        "Time from a WebSocket handshake request to its 101.",
    ),
    (
        "chorus_outbox_depth",
        Kind::Histogram(COUNTS),
        Unit::Count,
        "Items a connection's writer found queued when it woke.",
    ),
];

fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics with its own recorder.
    pub fn new() -> Metrics {
        let mut builder = PrometheusBuilder::new();
        for (name, kind, _, _) in DESCRIPTIONS {
            if let Kind::Histogram(bounds) = kind {
                // Fails only on an empty list of bounds.
                builder =
                    builder.set_buckets_for_metric(Matcher::Full((*name).to_string()), bounds).unwrap_or_default();
            }
        }
        let recorder = builder.build_recorder();
        for (name, kind, unit, help) in DESCRIPTIONS {
            let (name, help) = (SharedString::const_str(name), SharedString::const_str(help));
            match kind {
                Kind::Counter => recorder.describe_counter(name.into(), Some(*unit), help),
                Kind::Gauge => recorder.describe_gauge(name.into(), Some(*unit), help),
                Kind::Histogram(_) => recorder.describe_histogram(name.into(), Some(*unit), help),
            }
        }
        let process = metrics_process::Collector::default();
        metrics::with_local_recorder(&recorder, || process.describe());
        let counter = |name: &'static str| recorder.register_counter(&Key::from_static_name(name), &metadata());
        let gauge = |name: &'static str| recorder.register_gauge(&Key::from_static_name(name), &metadata());
        let histogram = |name: &'static str| recorder.register_histogram(&Key::from_static_name(name), &metadata());
        let received = |kind: &'static str| {
            let key = Key::from_static_parts("chorus_messages_received_total", &[])
                .with_extra_labels(vec![Label::new("kind", kind)]);
            recorder.register_counter(&key, &metadata())
        };
        Metrics {
            started: Instant::now(),
            sessions: Arc::default(),
            sessions_gauge: gauge("chorus_connections"),
            tcp_gauge: gauge("chorus_tcp_connections"),
            rooms_gauge: gauge("chorus_rooms"),
            uptime_gauge: gauge("chorus_uptime_seconds"),
            connections_total: counter("chorus_connections_total"),
            handshakes_refused: counter("chorus_handshakes_refused_total"),
            chat_in: received("chat"),
            binary_in: received("binary"),
            file_in: received("file"),
            delivered: counter("chorus_deliveries_total"),
            errors: counter("chorus_errors_total"),
            history_stored: counter("chorus_history_stored_total"),
            history_failed: counter("chorus_history_failures_total"),
            gaps: counter("chorus_gaps_total"),
            lag_drops: counter("chorus_lag_drops_total"),
            ended: Mutex::default(),
            fanout_seconds: histogram("chorus_fanout_seconds"),
            history_commit_seconds: histogram("chorus_history_commit_seconds"),
            history_batch_messages: histogram("chorus_history_batch_messages"),
            history_request_seconds: histogram("chorus_history_request_seconds"),
            handshake_seconds: histogram("chorus_handshake_seconds"),
            outbox_depth: histogram("chorus_outbox_depth"),
            process,
            recorder,
        }
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Count a session open until the returned guard is dropped.
    pub fn session_opened(&self) -> SessionGauge {
        let now = self.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        self.sessions_gauge.set(now as f64);
        SessionGauge { count: self.sessions.clone(), gauge: self.sessions_gauge.clone() }
    }

    /// WebSocket sessions open now.
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Count a session ended for `reason` (the `left` event's reason).
    pub fn record_end(&self, reason: &'static str) {
        let mut ended = lock(&self.ended);
        let counter = ended.entry(reason).or_insert_with(|| {
            let key = Key::from_static_parts("chorus_disconnects_total", &[])
                .with_extra_labels(vec![Label::new("reason", reason)]);
            self.recorder.register_counter(&key, &metadata())
        });
        counter.increment(1);
    }

    /// Fold waiting histogram samples into their buckets.
    pub fn upkeep(&self) {
        self.recorder.handle().run_upkeep();
    }

    /// The Prometheus text exposition; `rooms` and `tcp_connections` are the
    /// numbers now.
    pub fn render(&self, rooms: usize, tcp_connections: u64) -> String {
        self.rooms_gauge.set(rooms as f64);
        self.tcp_gauge.set(tcp_connections as f64);
        self.uptime_gauge.set(self.started.elapsed().as_secs_f64());
        metrics::with_local_recorder(&self.recorder, || self.process.collect());
        self.upkeep();
        self.recorder.handle().render()
    }
}

/// One open WebSocket session, counted until dropped.
#[derive(Debug)]
pub struct SessionGauge {
    count: Arc<AtomicU64>,
    gauge: Gauge,
}

impl Drop for SessionGauge {
    fn drop(&mut self) {
        let now = self.count.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        self.gauge.set(now as f64);
    }
}

/// Seconds since `started`, for a histogram.
pub fn since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The value of one sample line (`name` with its labels) in `text`.
    pub(crate) fn sample(text: &str, line_start: &str) -> Option<f64> {
        text.lines().find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
    }

    #[test]
    fn render_is_prometheus_text_with_histograms_and_process_metrics() {
        let metrics = Metrics::new();
        metrics.chat_in.increment(1);
        metrics.record_end("slow");
        metrics.fanout_seconds.record(0.000_02);
        let _open = metrics.session_opened();
        let text = metrics.render(3, 5);
        assert_eq!(sample(&text, "chorus_rooms "), Some(3.0), "{text}");
        assert_eq!(sample(&text, "chorus_tcp_connections "), Some(5.0));
        assert_eq!(sample(&text, "chorus_connections "), Some(1.0));
        assert_eq!(sample(&text, "chorus_messages_received_total{kind=\"chat\"} "), Some(1.0));
        assert_eq!(sample(&text, "chorus_disconnects_total{reason=\"slow\"} "), Some(1.0));
        assert!(text.contains("# TYPE chorus_fanout_seconds histogram"), "{text}");
        assert_eq!(sample(&text, "chorus_fanout_seconds_bucket{le=\"0.00005\"} "), Some(1.0), "{text}");
        assert_eq!(sample(&text, "chorus_fanout_seconds_count "), Some(1.0));
        assert!(text.contains("# TYPE chorus_connections gauge"), "{text}");
        assert!(text.contains("# HELP chorus_deliveries_total"), "{text}");
        #[cfg(target_os = "linux")]
        {
            assert!(sample(&text, "process_resident_memory_bytes ").is_some_and(|v| v > 0.0), "{text}");
            assert!(sample(&text, "process_open_fds ").is_some_and(|v| v > 0.0), "{text}");
            assert!(text.contains("process_cpu_seconds_total"), "{text}");
            assert!(text.contains("process_start_time_seconds"), "{text}");
        }
    }

    #[test]
    fn two_servers_keep_their_metrics_apart() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.errors.increment(2);
        assert_eq!(sample(&a.render(1, 0), "chorus_errors_total "), Some(2.0));
        assert_ne!(sample(&b.render(1, 0), "chorus_errors_total "), Some(2.0));
    }
}
