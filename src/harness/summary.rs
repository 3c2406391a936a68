//! The result of a run: `Summary` is what `summary.json` holds (a documented,
//! versioned schema; see the README), built from the merged measurements.
//! Thresholds are evaluated against it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::metrics::{BotMetrics, Counters, GroupMetrics, Hist, Metric};
use super::progress::Second;
use super::scenario::{Arrival, Phase, Scenario};
use super::thresholds::{Quantity, Threshold};

/// The version of the `summary.json` schema. Bump on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub schema_version: u32,
    pub chorus_version: String,
    pub scenario: ScenarioInfo,
    pub run: RunInfo,
    pub connections: Connections,
    pub messages: Messages,
    pub throughput: Throughput,
    /// By metric name (`delivery`, `delivery.text`, `ack`, `connect`, `lag`, ...).
    pub latency: BTreeMap<String, LatencyStats>,
    pub delivery: Delivery,
    /// Errors by kind: server `error` codes, connect failures, connection errors.
    pub errors: BTreeMap<String, u64>,
    /// Connections the server closed, by "code reason".
    pub closes: BTreeMap<String, u64>,
    pub groups: Vec<GroupSummary>,
    /// File uploads (absent from summaries written before files existed).
    #[serde(default)]
    pub files: Files,
    /// Script checks (`wait_for`): totals and each by name.
    #[serde(default)]
    pub checks: Checks,
    /// Connections and traffic per server, in the order of `scenario.targets`
    /// (one entry for a single target or the embedded server).
    #[serde(default)]
    pub targets: Vec<TargetSummary>,
    pub thresholds: Vec<ThresholdResult>,
    /// Every threshold passed.
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioInfo {
    pub name: String,
    pub description: String,
    pub file: String,
    pub seed: u64,
    pub protocol: String,
    /// Every target, joined with ", " (see `targets`).
    pub target: String,
    /// The servers loaded (the embedded server's URL when there was none).
    #[serde(default)]
    pub targets: Vec<String>,
    /// How clients spread over several targets: "round-robin" or "group".
    #[serde(default)]
    pub spread: String,
    pub embedded_server: bool,
    pub clients: u64,
    pub phases: Vec<PhaseInfo>,
    pub groups: Vec<GroupInfo>,
    /// As written in the file: key -> condition.
    pub thresholds: BTreeMap<String, String>,
    /// What the command line changed (`--duration 3s`, `--set ramp_up=1s`...).
    #[serde(default)]
    pub overrides: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseInfo {
    pub name: String,
    pub kind: String,
    pub seconds: f64,
    /// Rate multiplier at the start and end of the phase.
    pub rate: [f64; 2],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    pub clients: u64,
    pub rooms: Vec<String>,
    pub rate: f64,
    pub arrival: String,
    pub mix: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub started_at: String,
    pub duration_secs: f64,
    pub steady_secs: f64,
    /// Stopped early with ctrl-c: the figures cover only what ran.
    pub interrupted: bool,
    /// When it was stopped, in seconds from the start (interrupted runs).
    #[serde(default)]
    pub stopped_after_secs: Option<f64>,
    /// `"i/n"` for one shard of a sharded run.
    pub shard: Option<String>,
    /// How many result folders were merged into this one (1: a plain run).
    pub merged_from: u32,
    /// The local addresses clients connected from, when bound (`--shards`,
    /// `--source-addresses`, big runs); empty: the system's choice.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Reasons not to trust the figures (empty: none found).
    pub suspect: Vec<String>,
    /// CPU the load generator used, in percent of one core.
    pub generator_cpu_percent: f64,
    pub cores: u64,
}

impl RunInfo {
    fn of(facts: RunFacts) -> RunInfo {
        RunInfo {
            started_at: facts.started_at,
            duration_secs: facts.duration_secs,
            steady_secs: facts.steady_secs,
            interrupted: facts.interrupted,
            stopped_after_secs: facts.stopped_after_secs,
            shard: facts.shard,
            sources: facts.sources,
            merged_from: facts.merged_from,
            suspect: facts.suspect,
            generator_cpu_percent: facts.generator_cpu_percent,
            cores: facts.cores,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connections {
    pub target: u64,
    pub ok: u64,
    pub failed: u64,
    pub reconnects: u64,
    /// Connections lost before the end (closed by the server or failed), churn excluded.
    pub dropped: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Messages {
    pub sent_text: u64,
    pub sent_binary: u64,
    pub sent_rename: u64,
    #[serde(default)]
    pub sent_file: u64,
    pub sent: u64,
    pub acked: u64,
    /// Sends skipped while the client was disconnected (churn).
    pub skipped: u64,
    /// Sends whose answer never came (the connection ended first).
    #[serde(default)]
    pub unacked: u64,
    pub received_text: u64,
    pub received_binary: u64,
    #[serde(default)]
    pub received_file: u64,
    pub received: u64,
    /// Frames without this run's stamp.
    pub foreign: u64,
    /// Our own messages sent back to us.
    pub echoes: u64,
    /// WebSocket payload bytes of every frame sent and received.
    #[serde(default)]
    pub bytes_sent: u64,
    #[serde(default)]
    pub bytes_received: u64,
}

impl Messages {
    fn of(c: &Counters) -> Messages {
        Messages {
            sent_text: c.sent_text,
            sent_binary: c.sent_binary,
            sent_rename: c.sent_rename,
            sent_file: c.sent_file,
            sent: c.sent(),
            acked: c.acked,
            skipped: c.skipped,
            unacked: c.unacked,
            received_text: c.received_text,
            received_binary: c.received_binary,
            received_file: c.received_file,
            received: c.received(),
            foreign: c.foreign,
            echoes: c.echoes,
            bytes_sent: c.bytes_sent,
            bytes_received: c.bytes_received,
        }
    }
}

/// File uploads of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Files {
    /// Offered, stored (acked), and `file` events received by the others.
    pub sent: u64,
    pub stored: u64,
    pub received: u64,
    /// Bytes of the stored files.
    pub bytes: u64,
    /// Upload throughput: stored bytes over the time their uploads took
    /// (offer to ack), in MB/s (10^6 bytes); none without a stored file.
    pub upload_mb_per_sec: Option<f64>,
}

/// Checks of a run (k6's word): `wait_for` steps that got their message in time or not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checks {
    pub passed: u64,
    pub failed: u64,
    /// Still waiting when the run ended: neither passed nor failed, and not
    /// in `rate` (a newcomer who arrived in the last seconds had not failed).
    #[serde(default)]
    pub pending: u64,
    /// passed / (passed + failed); none without a check.
    pub rate: Option<f64>,
    pub by_name: Vec<CheckResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: u64,
    pub failed: u64,
    #[serde(default)]
    pub pending: u64,
}

impl Checks {
    fn of(metrics: &BotMetrics) -> Checks {
        let total = metrics.check_total();
        Checks {
            passed: total.passed,
            failed: total.failed,
            pending: total.pending,
            rate: ratio(total.passed, total.passed + total.failed),
            by_name: metrics
                .checks
                .iter()
                .map(|(name, c)| CheckResult {
                    name: name.clone(),
                    passed: c.passed,
                    failed: c.failed,
                    pending: c.pending,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// The whole seconds of steady phases the rates are over (those that ran
    /// entirely inside a steady phase, before any stop); none: no rates.
    #[serde(default)]
    pub seconds: u32,
    /// Messages sent a second (texts, binaries, renames, file offers).
    pub sent_per_sec: Option<f64>,
    /// Deliveries received a second (messages and files).
    pub delivered_per_sec: Option<f64>,
    /// WebSocket payload bytes per second, sent and received.
    #[serde(default)]
    pub sent_bytes_per_sec: Option<f64>,
    #[serde(default)]
    pub received_bytes_per_sec: Option<f64>,
}

impl Throughput {
    /// The rates over the whole seconds of the steady phases that ran
    /// (`until`: the run's end, or its stop): the seconds' own counts, so a
    /// ramp, a drain or a second cut by a phase change counts for nothing.
    pub fn of_steady(seconds: &BTreeMap<u32, Second>, phases: &[PhaseInfo], until: f64) -> Throughput {
        let mut whole = Vec::new();
        let mut start = 0.0;
        for phase in phases {
            let end = (start + phase.seconds).min(until);
            if phase.kind == "steady" {
                // Whole seconds s with start <= s and s + 1 <= end.
                let (first, last) = (start.ceil() as u32, end.floor() as u32);
                whole.extend(first..last);
            }
            start += phase.seconds;
        }
        let n = whole.len() as u32;
        let rate = |count: fn(&Second) -> u64| {
            let total: u64 = whole.iter().filter_map(|s| seconds.get(s)).map(count).sum();
            (n > 0).then(|| total as f64 / f64::from(n))
        };
        Throughput {
            seconds: n,
            sent_per_sec: rate(|s| s.sent),
            delivered_per_sec: rate(|s| s.received),
            sent_bytes_per_sec: rate(|s| s.bytes_sent),
            received_bytes_per_sec: rate(|s| s.bytes_received),
        }
    }
}

/// Latency statistics in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencyStats {
    pub fn of(hist: &Hist) -> LatencyStats {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let at = |q: f64| ms(hist.value_at_quantile(q));
        LatencyStats {
            count: hist.len(),
            min_ms: ms(hist.min()),
            mean_ms: hist.mean() / 1000.0,
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: ms(hist.max()),
        }
    }

    /// A statistic by its threshold name.
    pub fn stat(&self, stat: &str) -> Option<f64> {
        Some(match stat {
            "p50" => self.p50_ms,
            "p90" => self.p90_ms,
            "p95" => self.p95_ms,
            "p99" => self.p99_ms,
            "p99.9" => self.p999_ms,
            "max" => self.max_ms,
            "min" => self.min_ms,
            "mean" => self.mean_ms,
            "count" => self.count as f64,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Sum of `ack.recipients` (raw mode: other clients connected at each send).
    /// A member that was behind and missed a message is not among its recipients.
    pub expected: u64,
    /// Delivered live.
    pub received: u64,
    /// expected - received (never below 0).
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Holes receivers saw in senders' sequences and never filled.
    pub missing: u64,
    /// `gap` events: a client fell behind and missed messages, announced.
    pub gaps: u64,
    /// Messages those gaps announced (the sum of their seq ranges); absent
    /// from summaries written before it existed.
    #[serde(default)]
    pub gap_messages: u64,
    /// Messages fetched back with `history` after a `gap`.
    pub recovered: u64,
    /// Scripted `leave`s that closed from their room (the server refused, or
    /// did not confirm in time, their step out to a room of their own):
    /// what was in flight to them is in `lost`.
    #[serde(default)]
    pub left_in_room: u64,
    /// received / expected; none when nothing was expected.
    pub ratio: Option<f64>,
}

impl Delivery {
    fn of(c: &Counters) -> Delivery {
        Delivery {
            expected: c.expected,
            received: c.received(),
            lost: c.expected.saturating_sub(c.received()),
            duplicated: c.duplicated,
            reordered: c.reordered,
            missing: c.missing,
            gaps: c.gaps,
            gap_messages: c.gap_messages,
            recovered: c.recovered,
            left_in_room: c.left_in_room,
            ratio: ratio(c.received(), c.expected),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub name: String,
    pub clients: u64,
    pub sent: u64,
    pub received: u64,
    pub acked: u64,
    /// Deliveries owed to this group's clients: received + lost.
    #[serde(default)]
    pub expected: u64,
    /// This group's share of the run's lost deliveries, the tail its
    /// clients never read included: the groups' figures add up to the run's.
    #[serde(default)]
    pub lost: u64,
    /// received / expected; none when nothing was owed.
    #[serde(default)]
    pub ratio: Option<f64>,
    /// Sequence holes this group's receivers saw.
    pub missing: u64,
    /// received / (received + missing), from what this group saw; none if it received nothing.
    pub observed_ratio: Option<f64>,
    pub errors: u64,
    pub dropped: u64,
    pub closes: BTreeMap<String, u64>,
    pub latency: BTreeMap<String, LatencyStats>,
    /// This group's script checks.
    #[serde(default)]
    pub checks_passed: u64,
    #[serde(default)]
    pub checks_failed: u64,
    #[serde(default)]
    pub checks_pending: u64,
}

/// One server of a run: its clients' connections and traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSummary {
    pub url: String,
    /// Clients planned on it.
    pub clients: u64,
    /// Connections opened (reconnects excluded), failed, reconnects, lost
    /// before the end: as `connections` counts them for the run.
    pub ok: u64,
    pub failed: u64,
    pub reconnects: u64,
    pub dropped: u64,
    /// Messages its clients sent, and deliveries they received (from any target).
    pub sent: u64,
    pub received: u64,
    pub errors: u64,
    pub closes: BTreeMap<String, u64>,
    /// Its clients' connect latency, and the delivery latency of what they received.
    pub connect: Option<LatencyStats>,
    pub delivery: Option<LatencyStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    pub key: String,
    pub condition: String,
    pub observed: Option<f64>,
    pub passed: bool,
    /// Not written in the scenario: the default `errors == 0` check.
    #[serde(default)]
    pub implicit: bool,
}

/// The reported latency metrics and what each merges.
pub const REPORTED: &[(&str, &[Metric])] = &[
    ("delivery", &[Metric::DeliveryText, Metric::DeliveryBinary]),
    ("delivery.text", &[Metric::DeliveryText]),
    ("delivery.binary", &[Metric::DeliveryBinary]),
    ("delivery_raw", &[Metric::DeliveryRaw]),
    ("ack", &[Metric::AckText, Metric::AckBinary, Metric::AckRename]),
    // Uploads take as long as their size needs: `ack.file`, apart.
    ("ack.text", &[Metric::AckText]),
    ("ack.binary", &[Metric::AckBinary]),
    ("ack.rename", &[Metric::AckRename]),
    ("ack_raw", &[Metric::AckRaw]),
    ("connect", &[Metric::Connect]),
    ("lag", &[Metric::Lag]),
    ("recovery", &[Metric::Recovery]),
    ("loop_lag", &[Metric::LoopLag]),
    ("delivery.file", &[Metric::DeliveryFile]),
    ("ack.file", &[Metric::AckFile]),
    ("history", &[Metric::History]),
];

/// Latency statistics of every metric that has samples.
pub fn latency_table(metrics: &BotMetrics) -> BTreeMap<String, LatencyStats> {
    REPORTED
        .iter()
        .filter_map(|(name, parts)| metrics.combined(parts).map(|h| (name.to_string(), LatencyStats::of(&h))))
        .collect()
}

fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// Everything about a run that is not a measurement.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// Clients this process ran (all of them, or one shard's share).
    pub planned_clients: u64,
    pub started_at: String,
    pub duration_secs: f64,
    pub steady_secs: f64,
    pub interrupted: bool,
    pub stopped_after_secs: Option<f64>,
    pub shard: Option<String>,
    pub sources: Vec<String>,
    pub merged_from: u32,
    pub suspect: Vec<String>,
    pub generator_cpu_percent: f64,
    pub cores: u64,
    pub target: String,
    pub embedded_server: bool,
}

impl RunFacts {
    /// What is known before a run starts (the rest filled in at the end).
    pub fn planned(planned_clients: u64, target: String, embedded_server: bool) -> RunFacts {
        RunFacts {
            planned_clients,
            started_at: crate::ids::now_ts(),
            duration_secs: 0.0,
            steady_secs: 0.0,
            interrupted: false,
            stopped_after_secs: None,
            shard: None,
            sources: Vec::new(),
            merged_from: 1,
            suspect: Vec::new(),
            generator_cpu_percent: 0.0,
            cores: 1,
            target,
            embedded_server,
        }
    }
}

impl Summary {
    /// Build the summary of a run from its merged measurements.
    pub fn build(
        scenario: ScenarioInfo,
        thresholds: &[Threshold],
        facts: RunFacts,
        total: &BotMetrics,
        groups: &[GroupMetrics],
        targets: &[GroupMetrics],
        seconds: &BTreeMap<u32, Second>,
    ) -> Summary {
        let c = &total.counters;
        let until = facts.stopped_after_secs.unwrap_or(facts.duration_secs).min(facts.duration_secs);
        let throughput = Throughput::of_steady(seconds, &scenario.phases, until);
        let mut summary = Summary {
            schema_version: SCHEMA_VERSION,
            chorus_version: env!("CARGO_PKG_VERSION").to_string(),
            connections: Connections {
                target: facts.planned_clients,
                ok: c.connects_ok.saturating_sub(c.reconnects),
                failed: c.connects_failed,
                reconnects: c.reconnects,
                dropped: c.dropped,
            },
            messages: Messages::of(c),
            throughput,
            latency: latency_table(total),
            delivery: Delivery::of(c),
            errors: total.errors.clone(),
            closes: total.closes.clone(),
            groups: group_summaries(groups, c.expected.saturating_sub(c.received())),
            files: Files {
                sent: c.sent_file,
                stored: c.files_acked,
                received: c.received_file,
                bytes: c.file_bytes,
                upload_mb_per_sec: (c.upload_us > 0).then(|| c.file_bytes as f64 / c.upload_us as f64),
            },
            checks: Checks::of(total),
            targets: targets.iter().map(|(url, clients, m)| target_summary(url, *clients, m)).collect(),
            thresholds: Vec::new(),
            passed: true,
            run: RunInfo::of(facts),
            scenario,
        };
        // A shard sees only part of the deliveries its acks announce:
        // thresholds are checked on the merged result.
        if summary.run.shard.is_none() {
            summary.evaluate(thresholds);
        }
        summary
    }

    /// Check every threshold and set `passed`. Without any threshold on
    /// errors, `errors == 0` applies: connections the server closed and sends
    /// it never answered are errors, so a run it refused cannot pass. An
    /// interrupted run does not pass either: it is partial.
    pub fn evaluate(&mut self, thresholds: &[Threshold]) {
        let default = Threshold::default_errors();
        let implicit = !thresholds.iter().any(|t| matches!(&t.quantity, Quantity::Counter(k) if k == "errors"));
        let checks = thresholds.iter().map(|t| (t, false)).chain(implicit.then_some((&default, true)));
        self.thresholds = checks
            .map(|(t, implicit)| {
                let observed = self.observe(t);
                ThresholdResult {
                    key: t.key.clone(),
                    condition: t.condition.clone(),
                    observed,
                    passed: t.passes(observed),
                    implicit,
                }
            })
            .collect();
        self.passed = !self.run.interrupted && self.thresholds.iter().all(|t| t.passed);
    }

    /// The value a threshold looks at.
    pub fn observe(&self, threshold: &Threshold) -> Option<f64> {
        if let Some(name) = &threshold.group {
            let group = self.groups.iter().find(|g| &g.name == name)?;
            return match &threshold.quantity {
                Quantity::Latency { metric, stat } => match group.latency.get(metric) {
                    Some(stats) => stats.stat(stat),
                    None if stat == "count" => Some(0.0),
                    None => None,
                },
                Quantity::Counter(key) => match key.as_str() {
                    "delivery.ratio" => group.ratio,
                    "delivery.lost" => Some(group.lost as f64),
                    "delivery.missing" => Some(group.missing as f64),
                    "errors" => Some(group.errors as f64),
                    "messages.sent" => Some(group.sent as f64),
                    "messages.received" => Some(group.received as f64),
                    "checks.rate" => ratio(group.checks_passed, group.checks_passed + group.checks_failed),
                    "checks.passed" => Some(group.checks_passed as f64),
                    "checks.failed" => Some(group.checks_failed as f64),
                    "checks.pending" => Some(group.checks_pending as f64),
                    _ => None,
                },
            };
        }
        match &threshold.quantity {
            Quantity::Latency { metric, stat } => match self.latency.get(metric) {
                Some(stats) => stats.stat(stat),
                None if stat == "count" => Some(0.0),
                None => None,
            },
            Quantity::Counter(key) => {
                let d = &self.delivery;
                Some(match key.as_str() {
                    "delivery.ratio" => return d.ratio,
                    "delivery.lost" => d.lost as f64,
                    "delivery.duplicated" => d.duplicated as f64,
                    "delivery.reordered" => d.reordered as f64,
                    "delivery.missing" => d.missing as f64,
                    "delivery.recovered" => d.recovered as f64,
                    "gaps" => d.gaps as f64,
                    "errors" => self.errors.values().sum::<u64>() as f64,
                    "connect.failed" => self.connections.failed as f64,
                    "messages.sent" => self.messages.sent as f64,
                    "messages.received" => self.messages.received as f64,
                    "throughput.sent" => return self.throughput.sent_per_sec,
                    "throughput.delivered" => return self.throughput.delivered_per_sec,
                    "checks.rate" => return self.checks.rate,
                    "checks.passed" => self.checks.passed as f64,
                    "checks.failed" => self.checks.failed as f64,
                    "checks.pending" => self.checks.pending as f64,
                    "files.stored" => self.files.stored as f64,
                    "files.upload_mb_per_sec" => return self.files.upload_mb_per_sec,
                    _ => return None,
                })
            }
        }
    }
}

/// Each group's summary, the run's `lost` shared out among them by their
/// clients' tail estimates (by client count if nothing was estimated),
/// largest remainder first, so the groups add up to the run exactly.
fn group_summaries(groups: &[GroupMetrics], lost: u64) -> Vec<GroupSummary> {
    let estimates: Vec<u64> = groups.iter().map(|(_, _, m)| m.counters.tail_estimate).collect();
    let weights = if estimates.iter().sum::<u64>() > 0 {
        estimates
    } else {
        groups.iter().map(|(_, clients, _)| *clients).collect()
    };
    let shares = share_out(lost, &weights);
    groups.iter().zip(shares).map(|((name, clients, m), lost)| group_summary(name, *clients, m, lost)).collect()
}

/// `total` split in proportion to `weights`, in whole units that add up to `total`.
pub fn share_out(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|w| u128::from(*w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<(u64, u128)> = weights
        .iter()
        .map(|w| {
            let scaled = u128::from(total) * u128::from(*w);
            ((scaled / sum) as u64, scaled % sum)
        })
        .collect();
    let mut shares: Vec<u64> = exact.iter().map(|(whole, _)| *whole).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|a, b| exact[*b].1.cmp(&exact[*a].1));
    let left = total - shares.iter().sum::<u64>();
    for i in order.into_iter().take(left as usize) {
        shares[i] += 1;
    }
    shares
}

fn group_summary(name: &str, clients: u64, m: &BotMetrics, lost: u64) -> GroupSummary {
    let (c, checks) = (&m.counters, m.check_total());
    GroupSummary {
        name: name.to_string(),
        clients,
        sent: c.sent(),
        received: c.received(),
        acked: c.acked,
        expected: c.received() + lost,
        lost,
        ratio: ratio(c.received(), c.received() + lost),
        missing: c.missing,
        observed_ratio: ratio(c.received(), c.received() + c.missing),
        errors: m.error_total(),
        dropped: c.dropped,
        closes: m.closes.clone(),
        latency: latency_table(m),
        checks_passed: checks.passed,
        checks_failed: checks.failed,
        checks_pending: checks.pending,
    }
}

fn target_summary(url: &str, clients: u64, m: &BotMetrics) -> TargetSummary {
    let c = &m.counters;
    let latency = latency_table(m);
    TargetSummary {
        url: url.to_string(),
        clients,
        ok: c.connects_ok.saturating_sub(c.reconnects),
        failed: c.connects_failed,
        reconnects: c.reconnects,
        dropped: c.dropped,
        sent: c.sent(),
        received: c.received(),
        errors: m.error_total(),
        closes: m.closes.clone(),
        connect: latency.get("connect").cloned(),
        delivery: latency.get("delivery").cloned(),
    }
}

/// What a summary says about the scenario it ran, against `targets`.
pub fn scenario_info(scenario: &Scenario, facts: &RunFacts, targets: &[String]) -> ScenarioInfo {
    ScenarioInfo {
        name: scenario.name.clone(),
        description: scenario.description.clone(),
        file: scenario.file.clone(),
        seed: scenario.seed,
        protocol: scenario.protocol.as_str().to_string(),
        target: facts.target.clone(),
        targets: targets.to_vec(),
        spread: scenario.spread.as_str().to_string(),
        embedded_server: facts.embedded_server,
        clients: scenario.total_clients() as u64,
        phases: scenario
            .phases
            .iter()
            .map(|p| PhaseInfo {
                name: p.name().to_string(),
                kind: match p {
                    Phase::Ramp(_) => "ramp",
                    Phase::Steady(_) => "steady",
                    Phase::Drain(_) => "drain",
                }
                .to_string(),
                seconds: p.duration().as_secs_f64(),
                rate: [p.rate().0, p.rate().1],
            })
            .collect(),
        groups: scenario
            .groups
            .iter()
            .map(|g| GroupInfo {
                name: g.name.clone(),
                clients: g.clients as u64,
                rooms: g.rooms.clone(),
                rate: g.rate,
                arrival: match g.arrival {
                    Arrival::Poisson => "poisson",
                    Arrival::Uniform => "uniform",
                    Arrival::Closed => "closed",
                }
                .to_string(),
                mix: [("text", g.mix.text), ("binary", g.mix.binary), ("rename", g.mix.rename), ("file", g.mix.file)]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            })
            .collect(),
        thresholds: scenario.thresholds.iter().map(|t| (t.key.clone(), t.condition.clone())).collect(),
        overrides: scenario.overrides.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_is_the_mean_of_whole_steady_seconds() {
        let phase = |kind: &str, seconds| PhaseInfo { name: kind.into(), kind: kind.into(), seconds, rate: [1.0, 1.0] };
        let phases = [phase("ramp", 0.5), phase("steady", 3.0), phase("drain", 0.5)];
        let mut seconds = BTreeMap::new();
        for (s, sent) in [(0, 100), (1, 10), (2, 20), (3, 30), (4, 1000)] {
            let mut second = Second::new();
            second.sent = sent;
            seconds.insert(s, second);
        }
        // Steady from 0.5 s to 3.5 s: seconds 1 and 2 lie wholly inside it.
        let t = Throughput::of_steady(&seconds, &phases, 4.0);
        assert_eq!((t.seconds, t.sent_per_sec), (2, Some(15.0)));
        // Stopped at 2.9 s: second 2 was cut.
        let t = Throughput::of_steady(&seconds, &phases, 2.9);
        assert_eq!((t.seconds, t.sent_per_sec), (1, Some(10.0)));
        let t = Throughput::of_steady(&seconds, &phases, 1.5);
        assert_eq!((t.seconds, t.sent_per_sec, t.received_bytes_per_sec), (0, None, None));
    }

    #[test]
    fn shares_add_up_to_the_total() {
        assert_eq!(share_out(10, &[1, 1, 1]).iter().sum::<u64>(), 10);
        assert_eq!(share_out(2942, &[0, 2900]), [0, 2942]);
        assert_eq!(share_out(5, &[0, 0]), [0, 0]);
        assert_eq!(share_out(7, &[3, 1]), [5, 2]);
    }

    #[test]
    fn a_tail_never_read_is_lost_by_the_group_that_did_not_read_it() {
        // The stall case: two readers that never caught up before the end.
        let group = |name: &str, clients, received, tail| {
            let mut m = BotMetrics::default();
            m.counters.received_text = received;
            m.counters.tail_estimate = tail;
            (name.to_string(), clients, m)
        };
        let groups = [group("talkers", 40, 394_719, 0), group("stallers", 2, 10_178, 2_900)];
        let summaries = group_summaries(&groups, 2_922);
        let (talkers, stallers) = (&summaries[0], &summaries[1]);
        assert_eq!((talkers.lost, talkers.ratio), (0, Some(1.0)));
        assert_eq!(stallers.lost, 2_922, "the run's lost, all of it");
        assert_eq!(stallers.expected, 10_178 + 2_922);
        assert!(stallers.ratio.unwrap() < 0.78);
        let expected: u64 = summaries.iter().map(|g| g.expected).sum();
        assert_eq!(expected, 394_719 + 10_178 + 2_922, "the groups add up to the run");
    }
}
