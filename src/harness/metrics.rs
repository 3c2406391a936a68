//! What bots measure. Each bot owns a `BotMetrics` (HDR histograms, created
//! on first use, and counters) and records into it without any lock; the
//! driver merges them at the end (`Histogram::add` is lossless). Only small
//! per-second `Tick`s travel over a channel, for live progress and the time
//! series.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use tokio::sync::mpsc;

/// Latencies are recorded in microseconds.
pub type Hist = Histogram<u64>;

/// A histogram that grows as needed, with 2 significant figures: values
/// within 1 % (exact below 256 µs). Each simulated client keeps several, so
/// they must stay small: about 16 KB each even after a 10-second latency,
/// where 3 figures would take 8 times that.
pub fn new_hist() -> Hist {
    // new() only fails for sigfig > 5.
    Histogram::new(2).unwrap_or_else(|_| unreachable!("2 significant figures is valid"))
}

/// Every histogram a bot keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Receive time minus intended send time, text messages.
    DeliveryText,
    /// The same for binary messages.
    DeliveryBinary,
    /// Receive time minus actual send time (no coordinated-omission correction).
    DeliveryRaw,
    /// Ack time minus intended send time, by kind.
    AckText,
    AckBinary,
    AckRename,
    /// Ack time minus actual send time.
    AckRaw,
    /// TCP connect plus WebSocket handshake plus welcome.
    Connect,
    /// How late the generator sent, against the schedule.
    Lag,
    /// Receive time of a message recovered through `history` after a `gap`.
    Recovery,
    /// How late the generator's event loop woke up (one probe for the run).
    LoopLag,
    /// A `file` event at a recipient minus the intended offer time (upload included).
    DeliveryFile,
    /// The upload's `ack` minus the intended offer time: the whole upload.
    AckFile,
    /// A script's `history` read: request to answer.
    History,
}

impl Metric {
    pub const ALL: [Metric; 14] = [
        Metric::DeliveryText,
        Metric::DeliveryBinary,
        Metric::DeliveryRaw,
        Metric::AckText,
        Metric::AckBinary,
        Metric::AckRename,
        Metric::AckRaw,
        Metric::Connect,
        Metric::Lag,
        Metric::Recovery,
        Metric::LoopLag,
        Metric::DeliveryFile,
        Metric::AckFile,
        Metric::History,
    ];

    /// The name in reports and thresholds.
    pub fn name(self) -> &'static str {
        match self {
            Metric::DeliveryText => "delivery.text",
            Metric::DeliveryBinary => "delivery.binary",
            Metric::DeliveryRaw => "delivery_raw",
            Metric::AckText => "ack.text",
            Metric::AckBinary => "ack.binary",
            Metric::AckRename => "ack.rename",
            Metric::AckRaw => "ack_raw",
            Metric::Connect => "connect",
            Metric::Lag => "lag",
            Metric::Recovery => "recovery",
            Metric::LoopLag => "loop_lag",
            Metric::DeliveryFile => "delivery.file",
            Metric::AckFile => "ack.file",
            Metric::History => "history",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Message kinds a bot sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Binary,
    Rename,
    File,
}

impl Kind {
    pub fn ack_metric(self) -> Metric {
        match self {
            Kind::Text => Metric::AckText,
            Kind::Binary => Metric::AckBinary,
            Kind::Rename => Metric::AckRename,
            Kind::File => Metric::AckFile,
        }
    }
}

/// Plain counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub sent_text: u64,
    pub sent_binary: u64,
    pub sent_rename: u64,
    /// Sends skipped because the client was disconnected (churn).
    pub skipped: u64,
    /// Sends never answered: the connection ended first. Their deliveries
    /// may have been received without being counted as expected.
    #[serde(default)]
    pub unacked: u64,
    /// Acks (and rename confirmations) received.
    pub acked: u64,
    /// Sum of `ack.recipients` (raw mode: other clients connected at send time).
    pub expected: u64,
    pub received_text: u64,
    pub received_binary: u64,
    /// Messages fetched with `history` after a `gap`.
    pub recovered: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Seq holes a receiver saw in a sender's stream and never filled.
    pub missing: u64,
    /// `gap` events received.
    pub gaps: u64,
    /// Messages those gaps announced as missed (the sum of their seq ranges).
    #[serde(default)]
    pub gap_messages: u64,
    pub connects_ok: u64,
    pub connects_failed: u64,
    /// Connections that ended before the run did (churn excluded).
    pub dropped: u64,
    /// Churn reconnections.
    pub reconnects: u64,
    /// Messages without this run's stamp (other traffic on the target).
    pub foreign: u64,
    /// Our own messages sent back to us (a relay that echoes to the sender).
    pub echoes: u64,
    /// WebSocket payload bytes sent and received (every frame).
    #[serde(default)]
    pub bytes_sent: u64,
    #[serde(default)]
    pub bytes_received: u64,
    /// Deliveries this client's connections were owed but never read, by
    /// estimate (room traffic while connected, less what it sent, what was
    /// announced missed and what it received): how a run's lost messages are
    /// shared out among groups.
    #[serde(default)]
    pub tail_estimate: u64,
    /// File uploads offered, and `file` events received.
    #[serde(default)]
    pub sent_file: u64,
    #[serde(default)]
    pub received_file: u64,
    /// Uploads stored (acked), their bytes, and the microseconds they took
    /// from the offer to the ack (for the upload throughput).
    #[serde(default)]
    pub files_acked: u64,
    #[serde(default)]
    pub file_bytes: u64,
    #[serde(default)]
    pub upload_us: u64,
    /// Scripted `history` reads answered, and the messages they returned.
    #[serde(default)]
    pub history_reads: u64,
    #[serde(default)]
    pub history_messages: u64,
    /// Scripted `leave`s that closed from their room: the server refused
    /// (or did not confirm in time: 2 s at most) the step out to a room of their own,
    /// so what was in flight to them is in `lost`.
    #[serde(default)]
    pub left_in_room: u64,
}

impl Counters {
    pub fn sent(&self) -> u64 {
        self.sent_text + self.sent_binary + self.sent_rename + self.sent_file
    }

    /// Deliveries of every kind (files included).
    pub fn received(&self) -> u64 {
        self.received_text + self.received_binary + self.received_file
    }

    /// Messages of ours that took a seq in a room (for the tail estimate).
    pub fn room_messages(&self) -> u64 {
        self.sent_text + self.sent_binary + self.files_acked
    }

    fn add(&mut self, o: &Counters) {
        self.sent_text += o.sent_text;
        self.sent_binary += o.sent_binary;
        self.sent_rename += o.sent_rename;
        self.skipped += o.skipped;
        self.unacked += o.unacked;
        self.acked += o.acked;
        self.expected += o.expected;
        self.received_text += o.received_text;
        self.received_binary += o.received_binary;
        self.recovered += o.recovered;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.missing += o.missing;
        self.gaps += o.gaps;
        self.gap_messages += o.gap_messages;
        self.connects_ok += o.connects_ok;
        self.connects_failed += o.connects_failed;
        self.dropped += o.dropped;
        self.reconnects += o.reconnects;
        self.foreign += o.foreign;
        self.echoes += o.echoes;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.tail_estimate += o.tail_estimate;
        self.sent_file += o.sent_file;
        self.received_file += o.received_file;
        self.files_acked += o.files_acked;
        self.file_bytes += o.file_bytes;
        self.upload_us += o.upload_us;
        self.history_reads += o.history_reads;
        self.history_messages += o.history_messages;
        self.left_in_room += o.left_in_room;
    }
}

/// One bot's (or, merged, one group's or the run's) measurements.
#[derive(Debug, Clone, Default)]
pub struct BotMetrics {
    hists: [Option<Hist>; Metric::ALL.len()],
    pub counters: Counters,
    /// Errors by kind (`error` codes from the server, connect failures, ...).
    pub errors: BTreeMap<String, u64>,
    /// Connections closed by the server, by close code and reason.
    pub closes: BTreeMap<String, u64>,
    /// Script checks (`wait_for`) by name.
    pub checks: BTreeMap<String, CheckCount>,
}

/// How often one check passed and failed, and how often the run ended
/// while it was still waiting (neither: it had not failed yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckCount {
    pub passed: u64,
    pub failed: u64,
    #[serde(default)]
    pub pending: u64,
}

impl CheckCount {
    fn add(&mut self, o: &CheckCount) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.pending += o.pending;
    }
}

impl BotMetrics {
    /// Record a latency in microseconds.
    pub fn record(&mut self, metric: Metric, micros: u64) {
        let hist = self.hists[metric.index()].get_or_insert_with(new_hist);
        if hist.record(micros.max(1)).is_err() {
            hist.saturating_record(micros.max(1));
        }
    }

    pub fn hist(&self, metric: Metric) -> Option<&Hist> {
        self.hists[metric.index()].as_ref()
    }

    /// Several metrics merged into one (for example delivery = text + binary).
    pub fn combined(&self, metrics: &[Metric]) -> Option<Hist> {
        let mut out: Option<Hist> = None;
        for metric in metrics {
            if let Some(hist) = self.hist(*metric) {
                let merged = out.get_or_insert_with(new_hist);
                let _ = merged.add(hist);
            }
        }
        out
    }

    pub fn count_error(&mut self, kind: &str) {
        self.count_errors(kind, 1);
    }

    pub fn count_errors(&mut self, kind: &str, n: u64) {
        if n > 0 {
            *self.errors.entry(kind.to_string()).or_default() += n;
        }
    }

    /// The server closed a connection: an error (a run the server refused
    /// cannot pass), with the code and reason kept in `closes`.
    pub fn count_close(&mut self, what: String) {
        self.count_error("connection closed by the server");
        *self.closes.entry(what).or_default() += 1;
    }

    /// Count one check's outcome.
    pub fn check(&mut self, name: &str, passed: bool) {
        let count = self.checks.entry(name.to_string()).or_default();
        if passed {
            count.passed += 1;
        } else {
            count.failed += 1;
        }
    }

    /// A check still waiting when the run ended.
    pub fn check_pending(&mut self, name: &str) {
        self.checks.entry(name.to_string()).or_default().pending += 1;
    }

    /// Every check's outcomes added up.
    pub fn check_total(&self) -> CheckCount {
        let mut total = CheckCount::default();
        self.checks.values().for_each(|c| total.add(c));
        total
    }

    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Fold `other` into this one.
    pub fn merge(&mut self, other: &BotMetrics) {
        for (mine, theirs) in self.hists.iter_mut().zip(&other.hists) {
            if let Some(theirs) = theirs {
                let _ = mine.get_or_insert_with(new_hist).add(theirs);
            }
        }
        self.counters.add(&other.counters);
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        for (kind, n) in &other.closes {
            *self.closes.entry(kind.clone()).or_default() += n;
        }
        for (name, c) in &other.checks {
            self.checks.entry(name.clone()).or_default().add(c);
        }
    }

    /// Replace a histogram (used when loading saved results).
    pub fn set_hist(&mut self, metric: Metric, hist: Hist) {
        self.hists[metric.index()] = Some(hist);
    }
}

/// A group's merged measurements: (name, clients, metrics).
pub type GroupMetrics = (String, u64, BotMetrics);

/// One second of one bot's activity, for live progress and the time series.
#[derive(Debug, Clone)]
pub struct Tick {
    /// Seconds since the run started.
    pub second: u32,
    pub sent: u32,
    pub received: u32,
    pub acked: u32,
    pub errors: u32,
    /// Deliveries the acks of this second announced (`ack.recipients`).
    pub expected: u64,
    pub checks_passed: u32,
    pub checks_failed: u32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Delivery latency this second (2 significant figures: it is only for progress and charts).
    pub delivery: Option<Histogram<u64>>,
    /// Ack latency this second.
    pub ack: Option<Histogram<u64>>,
}

impl Tick {
    /// An empty tick for `second`.
    pub(super) fn new(second: u32) -> Tick {
        Tick {
            second,
            sent: 0,
            received: 0,
            acked: 0,
            errors: 0,
            expected: 0,
            checks_passed: 0,
            checks_failed: 0,
            bytes_sent: 0,
            bytes_received: 0,
            delivery: None,
            ack: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.sent == 0
            && self.received == 0
            && self.acked == 0
            && self.errors == 0
            && self.bytes_received == 0
            && self.expected == 0
            && self.checks_passed + self.checks_failed == 0
    }
}

/// Record `micros` into a live histogram, made on first use.
fn record_live(hist: &mut Option<Histogram<u64>>, micros: u64) {
    let hist = hist.get_or_insert_with(new_hist);
    if hist.record(micros.max(1)).is_err() {
        hist.saturating_record(micros.max(1));
    }
}

/// A bot's current `Tick`, sent to the driver when the second changes.
#[derive(Debug)]
pub struct LiveWindow {
    tick: Tick,
    tx: mpsc::Sender<Tick>,
}

/// What a bot counts in its live window.
#[derive(Debug, Clone, Copy)]
pub enum Live {
    /// A message of this many bytes went out.
    Sent(u64),
    /// More bytes of a message already counted (an upload's chunks).
    SentBytes(u64),
    /// A file arrived (its latency includes the upload: not in the live delivery figures).
    ReceivedFile,
    /// A delivery, this many microseconds after its intended send.
    Received(u64),
    /// An ack, this many microseconds after its intended send.
    Acked(u64),
    /// An upload's ack (its latency is the whole upload: not in the live ack figures).
    AckedFile,
    /// An ack announced this many deliveries.
    Expected(u64),
    /// A script check passed (true) or failed.
    Check(bool),
    Error,
}

impl LiveWindow {
    pub fn new(tx: mpsc::Sender<Tick>) -> LiveWindow {
        LiveWindow { tick: Tick::new(0), tx }
    }

    /// Count one event at `second` (seconds since the start of the run).
    pub fn count(&mut self, second: u32, what: Live) {
        if second != self.tick.second {
            self.flush();
            self.tick = Tick::new(second);
        }
        match what {
            Live::Sent(bytes) => {
                self.tick.sent += 1;
                self.tick.bytes_sent += bytes;
            }
            Live::Acked(micros) => {
                self.tick.acked += 1;
                record_live(&mut self.tick.ack, micros);
            }
            Live::AckedFile => self.tick.acked += 1,
            Live::SentBytes(bytes) => self.tick.bytes_sent += bytes,
            Live::ReceivedFile => self.tick.received += 1,
            Live::Expected(n) => self.tick.expected += n,
            Live::Check(true) => self.tick.checks_passed += 1,
            Live::Check(false) => self.tick.checks_failed += 1,
            Live::Error => self.tick.errors += 1,
            Live::Received(micros) => {
                self.tick.received += 1;
                record_live(&mut self.tick.delivery, micros);
            }
        }
    }

    /// The second whose counts wait to be sent, if any.
    pub fn pending_second(&self) -> Option<u32> {
        (!self.tick.is_empty()).then_some(self.tick.second)
    }

    /// Bytes read from the socket, counted in the current second (no clock read per frame).
    pub fn received_bytes(&mut self, bytes: u64) {
        self.tick.bytes_received += bytes;
    }

    /// Send the current tick to the driver (dropped if the driver is behind).
    pub fn flush(&mut self) {
        if !self.tick.is_empty() {
            let second = self.tick.second;
            let tick = std::mem::replace(&mut self.tick, Tick::new(second));
            let _ = self.tx.try_send(tick);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_is_lossless() {
        let mut a = BotMetrics::default();
        let mut b = BotMetrics::default();
        for v in 1..=100 {
            a.record(Metric::DeliveryText, v);
            b.record(Metric::DeliveryText, v + 100);
        }
        b.record(Metric::DeliveryBinary, 5000);
        a.counters.sent_text = 3;
        b.counters.sent_text = 4;
        b.count_error("rate_limited");
        let mut all = BotMetrics::default();
        all.merge(&a);
        all.merge(&b);
        let delivery = all.hist(Metric::DeliveryText).unwrap();
        assert_eq!(delivery.len(), 200);
        assert_eq!(delivery.max(), 200);
        assert_eq!(all.counters.sent(), 7);
        assert_eq!(all.errors["rate_limited"], 1);
        let combined = all.combined(&[Metric::DeliveryText, Metric::DeliveryBinary]).unwrap();
        assert_eq!(combined.len(), 201);
        assert!(all.hist(Metric::Connect).is_none(), "histograms exist only once used");
    }

    #[test]
    fn large_latencies_are_kept_not_clamped() {
        let mut m = BotMetrics::default();
        m.record(Metric::DeliveryText, 300);
        m.record(Metric::DeliveryText, 5_000_000);
        let hist = m.hist(Metric::DeliveryText).unwrap();
        assert!(hist.max() >= 4_990_000, "a 5 s latency stays 5 s: {}", hist.max());
    }

    #[tokio::test]
    async fn live_windows_flush_per_second() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut live = LiveWindow::new(tx);
        live.count(0, Live::Sent(10));
        live.count(0, Live::Received(1500));
        live.count(1, Live::Acked(700));
        live.count(1, Live::AckedFile);
        let first = rx.recv().await.unwrap();
        assert_eq!((first.second, first.sent, first.received), (0, 1, 1));
        assert_eq!(first.delivery.unwrap().len(), 1);
        live.flush();
        let second = rx.recv().await.unwrap();
        assert_eq!((second.second, second.acked), (1, 2));
        assert_eq!(second.ack.unwrap().len(), 1, "an upload's ack is counted, not in the ack latency");
    }
}
