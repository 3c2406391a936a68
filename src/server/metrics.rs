//! Server counters, exported at `GET /metrics` in the Prometheus text format.
//!
//! Plain relaxed atomics: each is updated on its own, nobody reads two of
//! them as one consistent snapshot, and the hot path takes no lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::sync::lock;

#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// WebSocket sessions open right now (see `session_opened`).
    connections: Arc<AtomicU64>,
    /// WebSocket sessions opened since start.
    pub connections_total: AtomicU64,
    /// Handshakes refused (server full, bad request, bad origin, no token...).
    pub handshakes_refused: AtomicU64,
    /// Chat messages accepted from clients.
    pub chat_in: AtomicU64,
    /// Binary messages accepted from clients.
    pub binary_in: AtomicU64,
    /// Events queued to connections by fan-out (one per recipient).
    pub delivered: AtomicU64,
    /// Requests answered with an `error` event.
    pub errors: AtomicU64,
    /// Sessions ended, by reason; taken once per session end.
    ended: Mutex<BTreeMap<&'static str, u64>>,
    /// Messages stored in history.
    pub history_stored: AtomicU64,
    /// Messages whose storing failed (their senders got `storage_failed`).
    pub history_failed: AtomicU64,
    /// `gap` events sent to connections that fell behind.
    pub gaps: AtomicU64,
    /// Messages not queued to a connection because it was behind.
    pub lag_drops: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            connections: Arc::default(),
            connections_total: AtomicU64::new(0),
            handshakes_refused: AtomicU64::new(0),
            chat_in: AtomicU64::new(0),
            binary_in: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            ended: Default::default(),
            history_stored: AtomicU64::new(0),
            history_failed: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            lag_drops: AtomicU64::new(0),
        }
    }
}

/// Add one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One open WebSocket session, counted until dropped.
#[derive(Debug)]
pub struct SessionGauge(Arc<AtomicU64>);

impl Drop for SessionGauge {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Count a session open until the returned guard is dropped.
    pub fn session_opened(&self) -> SessionGauge {
        self.connections.fetch_add(1, Ordering::Relaxed);
        SessionGauge(self.connections.clone())
    }

    /// WebSocket sessions open now.
    pub fn sessions(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// How long a WebSocket handshake took, from its request to the 101.
    pub fn observe_handshake(&self, _took: std::time::Duration) {}

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Count a session ended for `reason` (the `left` event's reason).
    pub fn record_end(&self, reason: &'static str) {
        *lock(&self.ended).entry(reason).or_default() += 1;
    }

    /// The Prometheus text exposition. `rooms` is the number of rooms now.
    pub fn render(&self, rooms: usize) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        metric("chorus_uptime_seconds", "gauge", "Seconds since the server started.", self.uptime_secs());
        metric("chorus_connections", "gauge", "WebSocket connections open now.", get(&self.connections));
        metric(
            "chorus_connections_total",
            "counter",
            "WebSocket connections accepted since start.",
            get(&self.connections_total),
        );
        metric(
            "chorus_handshakes_refused_total",
            "counter",
            "HTTP upgrade requests refused.",
            get(&self.handshakes_refused),
        );
        metric("chorus_rooms", "gauge", "Rooms that exist now.", rooms as u64);
        metric("chorus_errors_total", "counter", "Requests answered with an error event.", get(&self.errors));
        metric("chorus_deliveries_total", "counter", "Messages queued to recipients by fan-out.", get(&self.delivered));
        metric("chorus_history_stored_total", "counter", "Messages stored in history.", get(&self.history_stored));
        metric(
            "chorus_history_failures_total",
            "counter",
            "Messages that could not be stored (senders got storage_failed).",
            get(&self.history_failed),
        );
        metric("chorus_gaps_total", "counter", "gap events sent to connections that fell behind.", get(&self.gaps));
        metric(
            "chorus_lag_drops_total",
            "counter",
            "Messages not queued to a connection that was behind (announced by gap).",
            get(&self.lag_drops),
        );
        let _ = writeln!(
            out,
            "# HELP chorus_messages_received_total Messages accepted from clients, by kind.\n\
             # TYPE chorus_messages_received_total counter\n\
             chorus_messages_received_total{{kind=\"chat\"}} {}\n\
             chorus_messages_received_total{{kind=\"binary\"}} {}",
            get(&self.chat_in),
            get(&self.binary_in)
        );
        let _ = writeln!(
            out,
            "# HELP chorus_disconnects_total Connections ended, by reason.\n# TYPE chorus_disconnects_total counter"
        );
        for (reason, count) in lock(&self.ended).iter() {
            let _ = writeln!(out, "chorus_disconnects_total{{reason=\"{reason}\"}} {count}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_is_prometheus_text() {
        let metrics = Metrics::default();
        bump(&metrics.chat_in);
        metrics.record_end("slow");
        let text = metrics.render(3);
        assert!(text.contains("chorus_rooms 3\n"));
        assert!(text.contains("chorus_messages_received_total{kind=\"chat\"} 1\n"));
        assert!(text.contains("chorus_disconnects_total{reason=\"slow\"} 1\n"));
        assert!(text.contains("# TYPE chorus_connections gauge\n"));
    }
}
