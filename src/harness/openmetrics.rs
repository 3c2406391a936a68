//! `chorus run --metrics-addr ADDR`: the harness's own counters and latency
//! histograms at `GET /metrics` while it runs, for Prometheus to scrape.
//!
//! Two expositions of the same figures, chosen by the scraper's `Accept`:
//! - OpenMetrics text (the default): counters, gauges, and the latency
//!   histograms with classic `le` buckets;
//! - Prometheus protobuf (`application/vnd.google.protobuf;
//!   proto=io.prometheus.client.MetricFamily; encoding=delimited`, what a
//!   Prometheus with native histograms asks for): the same, the histograms
//!   with native (exponential, schema 3: 8 buckets per doubling) buckets.
//!
//! Why written here rather than through `metrics-exporter-prometheus`: that
//! crate renders native histograms only with its `protobuf` feature, whose
//! build script runs `protoc`, which every machine building chorus would
//! then need; `prometheus-client` has no native histograms. The harness
//! already keeps every latency in an HdrHistogram (values within 1 %), so
//! the endpoint converts those at scrape time: a few message types of
//! protobuf, encoded by hand below. Buckets are counts, never precomputed
//! percentiles; sums are HdrHistogram's (within 1 %).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::live::{LiveFeed, LiveState};
use super::metrics::Hist;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROTOBUF: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Classic bucket bounds, in seconds.
const BOUNDS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];
/// Native histogram schema: 2^3 buckets per power of two (each about 9 % wide).
const SCHEMA: i32 = 3;

/// Start the endpoint; its address comes back.
pub async fn start(addr: &str, feed: Arc<LiveFeed>, stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    let router = Router::new().route("/metrics", get(scrape)).with_state(feed);
    super::dashboard::serve(addr, router, stop, "metrics endpoint").await
}

async fn scrape(State(feed): State<Arc<LiveFeed>>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let families = feed.with_state(|state| families(feed.scenario(), state));
    if accept.contains("application/vnd.google.protobuf") {
        ([(header::CONTENT_TYPE, PROTOBUF)], protobuf(&families)).into_response()
    } else {
        ([(header::CONTENT_TYPE, OPENMETRICS)], text(&families)).into_response()
    }
}

/// One metric family, exposition-neutral.
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    /// (extra label, value) for counters and gauges.
    samples: Vec<(Option<(&'static str, String)>, f64)>,
    hist: Option<Hist>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every family, from the feed's state.
pub fn families(scenario: &str, state: &LiveState) -> (String, Vec<Family>) {
    let t = &state.totals;
    let counter = |name, help, value: u64| Family {
        name,
        help,
        kind: Kind::Counter,
        samples: vec![(None, value as f64)],
        hist: None,
    };
    let (second, phase, connected) = state.last.clone().unwrap_or((0, "starting".into(), 0));
    let families = vec![
        counter("chorus_harness_messages_sent", "Messages sent, every kind.", t.sent),
        counter("chorus_harness_deliveries", "Messages received by another client (deliveries).", t.received),
        counter("chorus_harness_acks", "Acknowledgements received.", t.acked),
        counter("chorus_harness_expected_deliveries", "Deliveries the acks announced (sum of recipients).", t.expected),
        counter("chorus_harness_errors", "Errors of every kind.", t.errors),
        counter("chorus_harness_sent_bytes", "WebSocket payload bytes sent.", t.bytes_sent),
        counter("chorus_harness_received_bytes", "WebSocket payload bytes received.", t.bytes_received),
        Family {
            name: "chorus_harness_checks",
            help: "Script checks, by result.",
            kind: Kind::Counter,
            samples: vec![
                (Some(("result", "passed".into())), t.checks_passed as f64),
                (Some(("result", "failed".into())), t.checks_failed as f64),
            ],
            hist: None,
        },
        Family {
            name: "chorus_harness_connected_clients",
            help: "Clients connected at the last completed second.",
            kind: Kind::Gauge,
            samples: vec![(None, connected as f64)],
            hist: None,
        },
        Family {
            name: "chorus_harness_target_clients",
            help: "Clients the run (or this shard) plans.",
            kind: Kind::Gauge,
            samples: vec![(None, state.target_clients as f64)],
            hist: None,
        },
        Family {
            name: "chorus_harness_elapsed_seconds",
            help: "Seconds of the run completed, by the phase running.",
            kind: Kind::Gauge,
            samples: vec![(Some(("phase", phase)), f64::from(second + u32::from(state.last.is_some())))],
            hist: None,
        },
        Family {
            name: "chorus_harness_delivery_latency_seconds",
            help: "Delivery latency: arrival at another client minus the intended send time.",
            kind: Kind::Histogram,
            samples: Vec::new(),
            hist: state.delivery.clone(),
        },
        Family {
            name: "chorus_harness_ack_latency_seconds",
            help: "Ack latency: the sender's ack minus the intended send time.",
            kind: Kind::Histogram,
            samples: Vec::new(),
            hist: state.ack.clone(),
        },
    ];
    (scenario.to_string(), families)
}

/// OpenMetrics label value escaping.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The OpenMetrics text exposition.
pub fn text((scenario, families): &(String, Vec<Family>)) -> String {
    let mut out = String::new();
    let base = format!("scenario=\"{}\"", escape(scenario));
    for f in families {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# TYPE {} {kind}\n# HELP {} {}", f.name, f.name, f.help);
        match f.kind {
            Kind::Histogram => {
                let _ = writeln!(out, "# UNIT {} seconds", f.name);
                histogram_text(&mut out, f.name, &base, f.hist.as_ref());
            }
            _ => {
                let suffix = if f.kind == Kind::Counter { "_total" } else { "" };
                for (label, value) in &f.samples {
                    let extra = label.as_ref().map(|(k, v)| format!(",{k}=\"{}\"", escape(v))).unwrap_or_default();
                    let _ = writeln!(out, "{}{suffix}{{{base}{extra}}} {value}", f.name);
                }
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

fn histogram_text(out: &mut String, name: &str, base: &str, hist: Option<&Hist>) {
    let count = hist.map_or(0, |h| h.len());
    for bound in BOUNDS {
        let upto = hist.map_or(0, |h| h.count_between(0, (bound * 1e6) as u64));
        let _ = writeln!(out, "{name}_bucket{{{base},le=\"{bound}\"}} {upto}");
    }
    let _ = writeln!(out, "{name}_bucket{{{base},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_count{{{base}}} {count}");
    let _ = writeln!(out, "{name}_sum{{{base}}} {}", sum_seconds(hist));
}

fn sum_seconds(hist: Option<&Hist>) -> f64 {
    hist.map_or(0.0, |h| h.mean() * h.len() as f64 / 1e6)
}

/// Native bucket index of `seconds` (bucket i holds (base^(i-1), base^i]).
fn native_index(seconds: f64) -> i32 {
    (seconds.log2() * f64::from(1 << SCHEMA)).ceil() as i32
}

/// Native buckets of a histogram: index -> count.
fn native_buckets(hist: &Hist) -> BTreeMap<i32, u64> {
    let mut buckets = BTreeMap::new();
    for value in hist.iter_recorded() {
        let seconds = value.value_iterated_to().max(1) as f64 / 1e6;
        *buckets.entry(native_index(seconds)).or_insert(0) += value.count_at_value();
    }
    buckets
}

/// The protobuf exposition: each `MetricFamily` length-delimited.
pub fn protobuf((scenario, families): &(String, Vec<Family>)) -> Vec<u8> {
    let mut out = Vec::new();
    for f in families {
        let mut family = Vec::new();
        pb::string(&mut family, 1, f.name);
        pb::string(&mut family, 2, f.help);
        let kind = match f.kind {
            Kind::Counter => 0,
            Kind::Gauge => 1,
            Kind::Histogram => 4,
        };
        pb::uint(&mut family, 3, kind);
        let label = |metric: &mut Vec<u8>, name: &str, value: &str| {
            let mut pair = Vec::new();
            pb::string(&mut pair, 1, name);
            pb::string(&mut pair, 2, value);
            pb::message(metric, 1, &pair);
        };
        if f.kind == Kind::Histogram {
            let mut metric = Vec::new();
            label(&mut metric, "scenario", scenario);
            pb::message(&mut metric, 7, &native_histogram(f.hist.as_ref()));
            pb::message(&mut family, 4, &metric);
        }
        for (extra, value) in &f.samples {
            let mut metric = Vec::new();
            label(&mut metric, "scenario", scenario);
            if let Some((k, v)) = extra {
                label(&mut metric, k, v);
            }
            let mut inner = Vec::new();
            pb::double(&mut inner, 1, *value);
            pb::message(&mut metric, if f.kind == Kind::Counter { 3 } else { 2 }, &inner);
            pb::message(&mut family, 4, &metric);
        }
        pb::varint(&mut out, family.len() as u64);
        out.extend_from_slice(&family);
    }
    out
}

/// A `Histogram` message with native buckets: spans of consecutive
/// indexes, and each bucket's count as a delta from the one before.
fn native_histogram(hist: Option<&Hist>) -> Vec<u8> {
    let mut out = Vec::new();
    pb::uint(&mut out, 1, hist.map_or(0, |h| h.len()));
    pb::double(&mut out, 2, sum_seconds(hist));
    pb::sint(&mut out, 5, i64::from(SCHEMA));
    pb::double(&mut out, 6, 2f64.powi(-128));
    pb::uint(&mut out, 7, 0);
    let buckets = hist.map(native_buckets).unwrap_or_default();
    let mut spans: Vec<(i32, u32)> = Vec::new();
    let mut previous: Option<i32> = None;
    for &index in buckets.keys() {
        match (previous, spans.last_mut()) {
            (Some(p), Some(span)) if index == p + 1 => span.1 += 1,
            (Some(p), _) => spans.push((index - p - 1, 1)),
            (None, _) => spans.push((index, 1)),
        }
        previous = Some(index);
    }
    for (offset, length) in spans {
        let mut span = Vec::new();
        pb::sint(&mut span, 1, i64::from(offset));
        pb::uint(&mut span, 2, u64::from(length));
        pb::message(&mut out, 12, &span);
    }
    let mut last = 0i64;
    for count in buckets.values() {
        let count = *count as i64;
        pb::sint(&mut out, 13, count - last);
        last = count;
    }
    out
}

/// Protocol buffers encoding, the few wire types the exposition needs.
mod pb {
    pub(super) fn varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
        varint(out, (u64::from(field) << 3) | u64::from(wire));
    }

    pub(super) fn uint(out: &mut Vec<u8>, field: u32, value: u64) {
        key(out, field, 0);
        varint(out, value);
    }

    /// `sint32` / `sint64`: zigzag.
    pub(super) fn sint(out: &mut Vec<u8>, field: u32, value: i64) {
        key(out, field, 0);
        varint(out, ((value << 1) ^ (value >> 63)) as u64);
    }

    pub(super) fn double(out: &mut Vec<u8>, field: u32, value: f64) {
        key(out, field, 1);
        out.extend_from_slice(&value.to_le_bytes());
    }

    pub(super) fn message(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
        key(out, field, 2);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    pub(super) fn string(out: &mut Vec<u8>, field: u32, text: &str) {
        message(out, field, text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::live::Totals;
    use crate::harness::metrics::new_hist;

    fn state() -> LiveState {
        let mut delivery = new_hist();
        for micros in [300, 800, 1_500, 1_500, 40_000] {
            delivery.record(micros).unwrap();
        }
        LiveState {
            totals: Totals { sent: 7, received: 5, checks_passed: 2, ..Totals::default() },
            delivery: Some(delivery),
            last: Some((3, "steady".into(), 4)),
            target_clients: 4,
            ..LiveState::default()
        }
    }

    #[test]
    fn text_has_counters_and_cumulative_buckets() {
        let out = text(&families("smoke", &state()));
        assert!(out.contains("chorus_harness_messages_sent_total{scenario=\"smoke\"} 7\n"), "{out}");
        assert!(out.contains("chorus_harness_checks_total{scenario=\"smoke\",result=\"passed\"} 2\n"));
        assert!(out.contains("chorus_harness_connected_clients{scenario=\"smoke\"} 4\n"));
        let bucket =
            |le: &str| format!("chorus_harness_delivery_latency_seconds_bucket{{scenario=\"smoke\",le=\"{le}\"}}");
        assert!(out.contains(&format!("{} 1\n", bucket("0.0005"))), "{out}");
        assert!(out.contains(&format!("{} 4\n", bucket("0.002"))), "{out}");
        assert!(out.contains(&format!("{} 5\n", bucket("+Inf"))), "{out}");
        assert!(out.contains("chorus_harness_ack_latency_seconds_count{scenario=\"smoke\"} 0\n"));
        assert!(out.ends_with("# EOF\n"));
    }

    /// Read a varint at `at`, moving it past.
    fn read_varint(bytes: &[u8], at: &mut usize) -> u64 {
        let (mut value, mut shift) = (0u64, 0);
        loop {
            let byte = bytes[*at];
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return value;
            }
            shift += 7;
        }
    }

    /// The fields of one message: (field, wire type, varint value or bytes).
    fn fields(bytes: &[u8]) -> Vec<(u64, u64, u64, Vec<u8>)> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < bytes.len() {
            let key = read_varint(bytes, &mut at);
            let (field, wire) = (key >> 3, key & 7);
            match wire {
                0 => out.push((field, wire, read_varint(bytes, &mut at), Vec::new())),
                1 => {
                    out.push((field, wire, 0, bytes[at..at + 8].to_vec()));
                    at += 8;
                }
                2 => {
                    let len = read_varint(bytes, &mut at) as usize;
                    out.push((field, wire, 0, bytes[at..at + len].to_vec()));
                    at += len;
                }
                other => panic!("wire type {other}"),
            }
        }
        out
    }

    #[test]
    fn protobuf_histograms_have_native_buckets_that_add_up() {
        let bytes = protobuf(&families("smoke", &state()));
        let mut at = 0;
        let mut delivery = None;
        while at < bytes.len() {
            let len = read_varint(&bytes, &mut at) as usize;
            let family = fields(&bytes[at..at + len]);
            at += len;
            if family.iter().any(|f| f.0 == 1 && f.3 == b"chorus_harness_delivery_latency_seconds") {
                delivery = Some(family);
            }
        }
        let family = delivery.expect("the delivery histogram family");
        assert!(family.iter().any(|f| f.0 == 3 && f.2 == 4), "type HISTOGRAM");
        let metric = fields(&family.iter().find(|f| f.0 == 4).unwrap().3);
        let hist = fields(&metric.iter().find(|f| f.0 == 7).unwrap().3);
        let count = hist.iter().find(|f| f.0 == 1).unwrap().2;
        assert_eq!(count, 5);
        let schema = hist.iter().find(|f| f.0 == 5).unwrap().2;
        assert_eq!(schema, 6, "zigzag of 3");
        let unzig = |v: u64| ((v >> 1) as i64) ^ -((v & 1) as i64);
        let mut total = 0i64;
        let mut running = 0i64;
        for delta in hist.iter().filter(|f| f.0 == 13) {
            running += unzig(delta.2);
            total += running;
        }
        assert_eq!(total, 5, "the buckets hold every sample");
        let spans: u64 =
            hist.iter().filter(|f| f.0 == 12).map(|f| fields(&f.3).iter().find(|s| s.0 == 2).unwrap().2).sum();
        assert_eq!(spans, hist.iter().filter(|f| f.0 == 13).count() as u64, "one delta per bucket in the spans");
        // 300 µs: 2^-11.7, so index ceil(-11.7 * 8) = -93.
        assert_eq!(native_index(0.0003), -93);
    }
}
