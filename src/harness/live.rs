//! A run as it happens, for whoever watches: every completed second becomes
//! one `LiveRecord` (that second's figures, its latency histograms, the
//! totals so far and the thresholds as they stand), written as a line of
//! NDJSON (`--out-ndjson`), sent to the dashboard's pages (`--dashboard`)
//! and folded into the totals the metrics endpoint renders
//! (`--metrics-addr`). At the end the summary follows as the last record.
//!
//! The shards of a run (`--shards N`) write these lines to their parent,
//! which adds them up second by second: the histograms travel whole
//! (HdrHistogram V2, base64), so the whole run's percentiles are exact.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::metrics::{BotMetrics, CheckCount, Hist, Metric, new_hist};
use super::progress::Second;
use super::results::SavedSecond;
use super::summary::{RunFacts, ScenarioInfo, Summary};
use super::thresholds::{Threshold, followed_live};
use crate::sync::lock;

/// Percentiles of one latency histogram, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(hist: &Hist) -> Option<Percentiles> {
        let ms = |micros: u64| micros as f64 / 1000.0;
        (!hist.is_empty()).then(|| Percentiles {
            count: hist.len(),
            p50: ms(hist.value_at_quantile(0.5)),
            p90: ms(hist.value_at_quantile(0.9)),
            p99: ms(hist.value_at_quantile(0.99)),
            max: ms(hist.max()),
        })
    }
}

/// What the run has counted so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub sent: u64,
    pub received: u64,
    pub acked: u64,
    pub expected: u64,
    pub errors: u64,
    pub checks_passed: u64,
    pub checks_failed: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// received / expected so far.
    pub delivery_ratio: Option<f64>,
    pub delivery_ms: Option<Percentiles>,
    pub ack_ms: Option<Percentiles>,
}

/// A threshold as it stands: `passing` is `None` while it has no data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveThreshold {
    pub key: String,
    pub condition: String,
    pub observed: Option<f64>,
    pub passing: Option<bool>,
}

/// One line of `--out-ndjson`: one second of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveRecord {
    /// Always `"second"` (the last line is `"summary"`).
    #[serde(rename = "type")]
    pub kind: String,
    pub second: u32,
    pub phase: String,
    pub target_clients: u64,
    /// That second: counts, and its histograms (`delivery`, `ack`: base64
    /// HdrHistogram V2 in microseconds, mergeable).
    #[serde(flatten)]
    pub counts: SavedSecond,
    pub delivery_ms: Option<Percentiles>,
    pub ack_ms: Option<Percentiles>,
    pub totals: Totals,
    pub thresholds: Vec<LiveThreshold>,
}

/// The last NDJSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SummaryRecord {
    #[serde(rename = "type")]
    pub kind: String,
    pub summary: Summary,
    /// The terminal report.
    pub report: String,
}

/// Where the records go, and what the watchers read.
pub struct LiveFeed {
    info: ScenarioInfo,
    facts: RunFacts,
    thresholds: Vec<Threshold>,
    state: Mutex<LiveState>,
    /// Each record as JSON, to every dashboard page connected.
    updates: broadcast::Sender<Arc<str>>,
    /// `--out-ndjson`: a file or stdout.
    ndjson: Mutex<Option<Box<dyn Write + Send>>>,
}

/// What the feed has seen; short critical sections only, never across `.await`.
#[derive(Default)]
pub struct LiveState {
    pub totals: Totals,
    /// Every latency so far (for the metrics endpoint's histograms).
    pub delivery: Option<Hist>,
    pub ack: Option<Hist>,
    /// The last record's second, phase and connected clients.
    pub last: Option<(u32, String, u64)>,
    pub target_clients: u64,
    /// Every record so far, as JSON: a page that connects late catches up.
    pub records: Vec<Arc<str>>,
    /// The summary record, once the run is over.
    pub finished: Option<Arc<str>>,
}

impl LiveFeed {
    pub fn new(
        info: ScenarioInfo,
        facts: RunFacts,
        thresholds: Vec<Threshold>,
        ndjson: Option<Box<dyn Write + Send>>,
    ) -> Arc<LiveFeed> {
        let (updates, _) = broadcast::channel(64);
        let state = LiveState { target_clients: facts.planned_clients, ..LiveState::default() };
        Arc::new(LiveFeed { info, facts, thresholds, state: Mutex::new(state), updates, ndjson: Mutex::new(ndjson) })
    }

    /// The scenario's name.
    pub fn scenario(&self) -> &str {
        &self.info.name
    }

    /// Look at the state (briefly).
    pub fn with_state<T>(&self, read: impl FnOnce(&LiveState) -> T) -> T {
        read(&lock(&self.state))
    }

    /// Records from now on (after `catch_up`'s).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.updates.subscribe()
    }

    /// Every record so far (and the summary, if the run is over), and the
    /// receiver of those to come, taken together so none is missed or doubled.
    pub fn catch_up(&self) -> (Vec<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let state = lock(&self.state);
        let mut past = state.records.clone();
        past.extend(state.finished.clone());
        (past, self.updates.subscribe())
    }

    /// One completed second.
    pub fn publish(&self, second: u32, phase: &str, bucket: &Second) {
        let json = {
            let mut state = lock(&self.state);
            let record = self.record(&mut state, second, phase, bucket);
            let json: Arc<str> = serde_json::to_string(&record).unwrap_or_default().into();
            state.records.push(json.clone());
            json
        };
        self.emit(json);
    }

    /// The run is over: its summary and report, the last record.
    pub fn finish(&self, summary: &Summary, report: &str) {
        let record = SummaryRecord { kind: "summary".into(), summary: summary.clone(), report: report.to_string() };
        let json: Arc<str> = serde_json::to_string(&record).unwrap_or_default().into();
        lock(&self.state).finished = Some(json.clone());
        self.emit(json);
    }

    fn emit(&self, json: Arc<str>) {
        if let Some(out) = lock(&self.ndjson).as_mut() {
            // A closed stdout (a pipe whose reader left) must not stop the run.
            let _ = writeln!(out, "{json}").and_then(|()| out.flush());
        }
        let _ = self.updates.send(json);
    }

    fn record(&self, state: &mut LiveState, second: u32, phase: &str, bucket: &Second) -> LiveRecord {
        let t = &mut state.totals;
        t.sent += bucket.sent;
        t.received += bucket.received;
        t.acked += bucket.acked;
        t.expected += bucket.expected;
        t.errors += bucket.errors;
        t.checks_passed += bucket.checks_passed;
        t.checks_failed += bucket.checks_failed;
        t.bytes_sent += bucket.bytes_sent;
        t.bytes_received += bucket.bytes_received;
        t.delivery_ratio = (t.expected > 0).then(|| t.received as f64 / t.expected as f64);
        let delivery = state.delivery.get_or_insert_with(new_hist);
        let _ = delivery.add(&bucket.delivery);
        let ack = state.ack.get_or_insert_with(new_hist);
        let _ = ack.add(&bucket.ack);
        t.delivery_ms = Percentiles::of(delivery);
        t.ack_ms = Percentiles::of(ack);
        state.last = Some((second, phase.to_string(), bucket.connected));
        LiveRecord {
            kind: "second".into(),
            second,
            phase: phase.to_string(),
            target_clients: state.target_clients,
            counts: SavedSecond::of(bucket),
            delivery_ms: Percentiles::of(&bucket.delivery),
            ack_ms: Percentiles::of(&bucket.ack),
            thresholds: self.thresholds_now(state),
            totals: state.totals.clone(),
        }
    }

    /// The thresholds checked against the totals so far. What is not
    /// followed live (connect, lag, per group...) has no data until the end.
    fn thresholds_now(&self, state: &LiveState) -> Vec<LiveThreshold> {
        let t = &state.totals;
        let mut metrics = BotMetrics::default();
        let c = &mut metrics.counters;
        (c.sent_text, c.received_text, c.acked, c.expected) = (t.sent, t.received, t.acked, t.expected);
        (c.bytes_sent, c.bytes_received) = (t.bytes_sent, t.bytes_received);
        metrics.count_errors("errors", t.errors);
        if t.checks_passed + t.checks_failed > 0 {
            metrics.checks.insert(
                "checks".into(),
                CheckCount { passed: t.checks_passed, failed: t.checks_failed, ..CheckCount::default() },
            );
        }
        // No samples yet: no statistic (an empty histogram would read 0 ms and pass).
        if let Some(hist) = state.delivery.as_ref().filter(|h| !h.is_empty()) {
            metrics.set_hist(Metric::DeliveryText, hist.clone());
        }
        if let Some(hist) = state.ack.as_ref().filter(|h| !h.is_empty()) {
            metrics.set_hist(Metric::AckText, hist.clone());
        }
        let mut facts = self.facts.clone();
        facts.steady_secs = state.last.as_ref().map_or(1.0, |(s, _, _)| f64::from(*s + 1));
        // A shard's summary skips thresholds (they are for the merge): evaluate here.
        // No seconds: the throughput thresholds are not followed live.
        let no_seconds = std::collections::BTreeMap::new();
        let mut summary = Summary::build(self.info.clone(), &self.thresholds, facts, &metrics, &[], &[], &no_seconds);
        summary.evaluate(&self.thresholds);
        summary
            .thresholds
            .iter()
            .map(|r| {
                // Counted only at the end: no data yet, rather than a 0 that is not true.
                let observed = r.observed.filter(|_| followed_live(&r.key));
                LiveThreshold {
                    key: r.key.clone(),
                    condition: r.condition.clone(),
                    observed,
                    passing: observed.map(|_| r.passed),
                }
            })
            .collect()
    }
}

/// What a run shows while it goes, beyond the progress lines.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// `--out-ndjson FILE`, or `-` for stdout.
    pub ndjson: Option<PathBuf>,
    /// `--dashboard ADDR`.
    pub dashboard: Option<String>,
    /// `--metrics-addr ADDR`.
    pub metrics_addr: Option<String>,
}

impl WatchOptions {
    pub fn any(&self) -> bool {
        self.ndjson.is_some() || self.dashboard.is_some() || self.metrics_addr.is_some()
    }

    /// NDJSON goes to stdout (so the report goes to stderr).
    pub fn ndjson_to_stdout(&self) -> bool {
        self.ndjson.as_deref().is_some_and(|p| p == Path::new("-"))
    }
}

/// The feed and the servers watching a run.
pub struct Watching {
    pub feed: Arc<LiveFeed>,
    stop: CancellationToken,
    pages: TaskTracker,
}

impl Watching {
    /// Open the NDJSON output and start the dashboard and the metrics
    /// endpoint, as asked (`None` if nothing was).
    pub async fn start(
        options: &WatchOptions,
        info: ScenarioInfo,
        facts: RunFacts,
        thresholds: Vec<Threshold>,
    ) -> anyhow::Result<Option<Watching>> {
        if !options.any() {
            return Ok(None);
        }
        let ndjson: Option<Box<dyn Write + Send>> = match &options.ndjson {
            None => None,
            Some(path) if path == Path::new("-") => Some(Box::new(std::io::stdout())),
            Some(path) => Some(Box::new(std::io::BufWriter::new(
                std::fs::File::create(path).with_context(|| format!("cannot write --out-ndjson {}", path.display()))?,
            ))),
        };
        let target = facts.target.clone();
        let feed = LiveFeed::new(info, facts, thresholds, ndjson);
        let (stop, pages) = (CancellationToken::new(), TaskTracker::new());
        if let Some(addr) = &options.dashboard {
            let at = super::dashboard::start(addr, feed.clone(), target, stop.clone(), pages.clone()).await?;
            eprintln!("dashboard: http://{at}/");
        }
        if let Some(addr) = &options.metrics_addr {
            let at = super::openmetrics::start(addr, feed.clone(), stop.clone()).await?;
            eprintln!("metrics: http://{at}/metrics");
        }
        Ok(Some(Watching { feed, stop, pages }))
    }

    /// The run is over: the summary to every watcher, then the servers stop
    /// (the pages get a second to receive it).
    pub async fn finish(self, summary: &Summary, report: &str) {
        self.feed.finish(summary, report);
        self.stop.cancel();
        self.pages.close();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.pages.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed() -> Arc<LiveFeed> {
        let scenario = crate::harness::Scenario::parse(
            "duration = \"2s\"\n[[group]]\nclients = 2\n[thresholds]\n\"delivery.ratio\" = \"== 1.0\"\n\
             \"delivery.p99\" = \"< 5ms\"\n\"connect.p99\" = \"< 1s\"\n\"files.stored\" = \">= 1\"\n\
             \"connect.failed\" = \"== 0\"\n\"delivery.text.p99\" = \"< 5ms\"\n\"delivery.missing\" = \"== 0\"\n",
            "t.toml",
            "t",
        )
        .unwrap();
        let facts = RunFacts::planned(2, String::new(), true);
        let info = crate::harness::summary::scenario_info(&scenario, &facts, &[]);
        LiveFeed::new(info, facts, scenario.thresholds.clone(), None)
    }

    #[test]
    fn records_carry_the_second_the_totals_and_the_thresholds_as_they_stand() {
        let feed = feed();
        let mut bucket = Second::new();
        (bucket.sent, bucket.received, bucket.expected, bucket.connected) = (10, 9, 10, 2);
        for micros in [1_000, 2_000, 9_000] {
            bucket.delivery.record(micros).unwrap();
        }
        feed.publish(0, "steady", &bucket);
        let (past, _) = feed.catch_up();
        let record: LiveRecord = serde_json::from_str(&past[0]).unwrap();
        assert_eq!((record.second, record.phase.as_str(), record.counts.sent), (0, "steady", 10));
        assert_eq!(record.totals.delivery_ratio, Some(0.9));
        assert!((record.delivery_ms.unwrap().max - 9.0).abs() < 0.1);
        let by_key = |key: &str| record.thresholds.iter().find(|t| t.key == key).unwrap().clone();
        assert_eq!(by_key("delivery.ratio").passing, Some(false), "9 of 10 so far");
        assert_eq!(by_key("delivery.p99").passing, Some(false), "9 ms > 5 ms");
        for key in ["connect.p99", "files.stored", "connect.failed", "delivery.text.p99", "delivery.missing"] {
            assert_eq!((by_key(key).observed, by_key(key).passing), (None, None), "{key}: not followed live");
        }
        // The histogram travels whole: a parent adds seconds exactly.
        let back = record.counts.second().unwrap();
        assert_eq!(back.delivery.len(), 3);
        bucket.received = 1;
        bucket.sent = 0;
        bucket.expected = 0;
        feed.publish(1, "steady", &bucket);
        let totals = feed.with_state(|s| s.totals.clone());
        assert_eq!((totals.received, totals.delivery_ratio), (10, Some(1.0)));
    }
}
