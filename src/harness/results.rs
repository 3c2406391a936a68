//! The results folder of a run: `summary.json`, `metrics.json` (the raw,
//! losslessly mergeable measurements), `hdr/*.hgrm` (HdrHistogram percentile
//! distributions), `timeseries.csv`, `report.txt` and `report.html`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use super::metrics::{BotMetrics, CheckCount, Counters, GroupMetrics, Hist, Metric};
use super::progress::Second;
use super::summary::{REPORTED, SCHEMA_VERSION, Summary};

/// One `BotMetrics`, as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedMetrics {
    counters: Counters,
    errors: BTreeMap<String, u64>,
    closes: BTreeMap<String, u64>,
    #[serde(default)]
    checks: BTreeMap<String, CheckCount>,
    /// Metric name -> base64 of the HdrHistogram V2 deflate encoding.
    histograms: BTreeMap<String, String>,
}

/// One second of the time series, as saved (and as each NDJSON line carries it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedSecond {
    pub sent: u64,
    pub received: u64,
    pub acked: u64,
    pub errors: u64,
    pub connected: u64,
    #[serde(default)]
    pub bytes_sent: u64,
    #[serde(default)]
    pub bytes_received: u64,
    /// Deliveries that second's acks announced.
    #[serde(default)]
    pub expected: u64,
    #[serde(default)]
    pub checks_passed: u64,
    #[serde(default)]
    pub checks_failed: u64,
    /// Delivery latency that second (base64 HdrHistogram V2).
    pub delivery: String,
    /// Ack latency that second (base64 HdrHistogram V2).
    #[serde(default)]
    pub ack: Option<String>,
}

impl SavedSecond {
    pub fn of(b: &Second) -> SavedSecond {
        SavedSecond {
            sent: b.sent,
            received: b.received,
            acked: b.acked,
            errors: b.errors,
            connected: b.connected,
            bytes_sent: b.bytes_sent,
            bytes_received: b.bytes_received,
            expected: b.expected,
            checks_passed: b.checks_passed,
            checks_failed: b.checks_failed,
            delivery: encode_hist(&b.delivery),
            ack: (!b.ack.is_empty()).then(|| encode_hist(&b.ack)),
        }
    }

    pub fn second(&self) -> anyhow::Result<Second> {
        Ok(Second {
            sent: self.sent,
            received: self.received,
            acked: self.acked,
            errors: self.errors,
            connected: self.connected,
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            expected: self.expected,
            checks_passed: self.checks_passed,
            checks_failed: self.checks_failed,
            delivery: decode_hist(&self.delivery)?,
            ack: match &self.ack {
                Some(text) => decode_hist(text)?,
                None => super::metrics::new_hist(),
            },
        })
    }
}

/// Everything measured in a run, losslessly: what `--merge` combines.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedRun {
    schema_version: u32,
    total: SavedMetrics,
    groups: Vec<(String, u64, SavedMetrics)>,
    /// Per target URL (absent from results written before several targets).
    #[serde(default)]
    targets: Vec<(String, u64, SavedMetrics)>,
    pub seconds: BTreeMap<u32, SavedSecond>,
}

pub fn encode_hist(hist: &Hist) -> String {
    let mut bytes = Vec::new();
    let _ = V2DeflateSerializer::new().serialize(hist, &mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn decode_hist(text: &str) -> anyhow::Result<Hist> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).context("histogram is not base64")?;
    let mut hist: Hist =
        Deserializer::new().deserialize(&mut bytes.as_slice()).map_err(|e| anyhow::anyhow!("bad histogram: {e:?}"))?;
    // A decoded histogram covers only the values it held; merging larger
    // ones into it (another shard's second) must grow it, not fail.
    hist.auto(true);
    Ok(hist)
}

fn save_metrics(m: &BotMetrics) -> SavedMetrics {
    SavedMetrics {
        counters: m.counters.clone(),
        errors: m.errors.clone(),
        closes: m.closes.clone(),
        checks: m.checks.clone(),
        histograms: Metric::ALL
            .iter()
            .filter_map(|metric| m.hist(*metric).map(|h| (metric.name().to_string(), encode_hist(h))))
            .collect(),
    }
}

fn load_list(list: &[(String, u64, SavedMetrics)]) -> anyhow::Result<Vec<GroupMetrics>> {
    list.iter().map(|(n, c, m)| Ok((n.clone(), *c, load_metrics(m)?))).collect()
}

fn load_metrics(saved: &SavedMetrics) -> anyhow::Result<BotMetrics> {
    let mut m = BotMetrics::default();
    m.counters = saved.counters.clone();
    m.errors = saved.errors.clone();
    m.closes = saved.closes.clone();
    m.checks = saved.checks.clone();
    for (name, text) in &saved.histograms {
        let Some(metric) = Metric::ALL.iter().find(|m| m.name() == name) else {
            bail!("unknown histogram {name:?}");
        };
        m.set_hist(*metric, decode_hist(text)?);
    }
    Ok(m)
}

impl SavedRun {
    pub fn new(
        total: &BotMetrics,
        groups: &[GroupMetrics],
        targets: &[GroupMetrics],
        seconds: &BTreeMap<u32, Second>,
    ) -> SavedRun {
        let save = |list: &[GroupMetrics]| list.iter().map(|(n, c, m)| (n.clone(), *c, save_metrics(m))).collect();
        SavedRun {
            schema_version: SCHEMA_VERSION,
            total: save_metrics(total),
            groups: save(groups),
            targets: save(targets),
            seconds: seconds.iter().map(|(s, b)| (*s, SavedSecond::of(b))).collect(),
        }
    }

    /// The measurements back: (total, groups).
    pub fn metrics(&self) -> anyhow::Result<(BotMetrics, Vec<GroupMetrics>)> {
        Ok((load_metrics(&self.total)?, load_list(&self.groups)?))
    }

    /// The measurements per target back (none in older results).
    pub fn target_metrics(&self) -> anyhow::Result<Vec<GroupMetrics>> {
        load_list(&self.targets)
    }

    /// The time series back.
    pub fn seconds(&self) -> anyhow::Result<BTreeMap<u32, Second>> {
        self.seconds.iter().map(|(s, saved)| Ok((*s, saved.second()?))).collect()
    }
}

/// Every file a run writes in its folder (besides `hdr/`).
const FILES: [&str; 5] = ["summary.json", "metrics.json", "timeseries.csv", "report.txt", "report.html"];

/// Make `out` ready for a new run before anything else happens, so a
/// folder never holds two runs' files, and a run that fails to start leaves
/// no earlier run's summary behind to be taken for its own: an earlier
/// run's files are removed; a folder holding anything else is refused.
pub fn clear_out(out: &Path) -> anyhow::Result<()> {
    let Ok(entries) = fs::read_dir(out) else { return Ok(()) };
    // `shard-N` folders and logs: the shards of a `--shards` run.
    let ours = |name: &str| FILES.contains(&name) || name == "hdr" || name.starts_with("shard-");
    let names: Vec<String> =
        entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    if let Some(other) = names.iter().find(|n| !ours(n)) {
        bail!(
            "--out {} holds {other:?}, which is not part of a chorus results folder; give an empty or new folder",
            out.display()
        );
    }
    for name in names {
        let path = out.join(&name);
        let removed = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        removed.with_context(|| format!("cannot clear the earlier run's {}", path.display()))?;
    }
    Ok(())
}

/// A fresh folder `<base>/<name>-<timestamp>[-shard]` (or `out` as given).
pub fn make_dir(base: &Path, out: Option<&Path>, name: &str, shard: Option<&str>) -> anyhow::Result<PathBuf> {
    let dir = match out {
        Some(out) => {
            clear_out(out)?;
            out.to_path_buf()
        }
        None => {
            let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
            let suffix = shard.map(|s| format!("-shard{}", s.replace('/', "of"))).unwrap_or_default();
            let mut dir = base.join(format!("{name}-{stamp}{suffix}"));
            let mut n = 2;
            while dir.exists() {
                dir = base.join(format!("{name}-{stamp}{suffix}-{n}"));
                n += 1;
            }
            dir
        }
    };
    fs::create_dir_all(dir.join("hdr")).with_context(|| format!("cannot create results folder {}", dir.display()))?;
    Ok(dir)
}

/// Write every file of a run's results.
pub fn write(dir: &Path, summary: &Summary, saved: &SavedRun, text_report: &str, html: &str) -> anyhow::Result<()> {
    let (total, _) = saved.metrics()?;
    let write = |name: &str, contents: &[u8]| {
        fs::write(dir.join(name), contents).with_context(|| format!("cannot write {}", dir.join(name).display()))
    };
    write("summary.json", serde_json::to_string_pretty(summary)?.as_bytes())?;
    write("metrics.json", serde_json::to_string(saved)?.as_bytes())?;
    write("timeseries.csv", timeseries_csv(&saved.seconds()?, summary).as_bytes())?;
    write("report.txt", text_report.as_bytes())?;
    write("report.html", html.as_bytes())?;
    for (name, parts) in REPORTED {
        if let Some(hist) = total.combined(parts) {
            write(&format!("hdr/{name}.hgrm"), percentile_distribution(&hist).as_bytes())?;
        }
    }
    Ok(())
}

/// Read a results folder back.
pub fn read(dir: &Path) -> anyhow::Result<(Summary, SavedRun)> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read_to_string(&path)
            .with_context(|| format!("cannot read {} (is {} a results folder?)", path.display(), dir.display()))
    };
    let summary: Summary = serde_json::from_str(&read("summary.json")?)
        .with_context(|| format!("{}/summary.json is not a chorus summary", dir.display()))?;
    if summary.schema_version != SCHEMA_VERSION {
        bail!(
            "{}/summary.json has schema version {}, this chorus reads version {SCHEMA_VERSION}",
            dir.display(),
            summary.schema_version
        );
    }
    let saved: SavedRun = serde_json::from_str(&read("metrics.json")?)
        .with_context(|| format!("{}/metrics.json is not a chorus metrics file", dir.display()))?;
    Ok((summary, saved))
}

/// HdrHistogram's percentile distribution format, values in milliseconds.
pub fn percentile_distribution(hist: &Hist) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    let mut total = 0u64;
    for value in hist.iter_quantiles(5) {
        total += value.count_since_last_iteration();
        let q = value.quantile_iterated_to();
        let inverse = if q < 1.0 { format!("{:14.2}", 1.0 / (1.0 - q)) } else { String::new() };
        let _ = writeln!(out, "{:12.3} {:14.12} {:10} {inverse}", value.value_iterated_to() as f64 / 1000.0, q, total);
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]",
        hist.mean() / 1000.0,
        hist.stdev() / 1000.0,
        hist.max() as f64 / 1000.0,
        hist.len()
    );
    out
}

fn timeseries_csv(seconds: &BTreeMap<u32, Second>, summary: &Summary) -> String {
    let mut out = String::from(
        "second,phase,connected,sent,delivered,acked,errors,delivery_p50_ms,delivery_p99_ms,sent_bytes,received_bytes\n",
    );
    let last = seconds.keys().next_back().copied().unwrap_or(0);
    let mut connected = 0;
    for second in 0..=last {
        let phase = phase_at(summary, f64::from(second));
        let Some(bucket) = seconds.get(&second) else {
            let _ = writeln!(out, "{second},{phase},{connected},0,0,0,0,,,0,0");
            continue;
        };
        if bucket.connected > 0 {
            connected = bucket.connected;
        }
        let (p50, p99) = if bucket.delivery.is_empty() {
            (String::new(), String::new())
        } else {
            let at = |q| format!("{:.3}", bucket.delivery.value_at_quantile(q) as f64 / 1000.0);
            (at(0.5), at(0.99))
        };
        let _ = writeln!(
            out,
            "{second},{phase},{connected},{},{},{},{},{p50},{p99},{},{}",
            bucket.sent, bucket.received, bucket.acked, bucket.errors, bucket.bytes_sent, bucket.bytes_received
        );
    }
    out
}

/// The name of the phase running `second` seconds into the run
/// (`stopped` once an interrupted run was stopped, `done` after the last
/// phase: the names of the progress lines).
pub fn phase_at(summary: &Summary, second: f64) -> String {
    if summary.run.stopped_after_secs.is_some_and(|at| second >= at.floor()) {
        return "stopped".to_string();
    }
    let mut start = 0.0;
    for phase in &summary.scenario.phases {
        if second < start + phase.seconds {
            return phase.name.clone();
        }
        start += phase.seconds;
    }
    "done".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decoded_histogram_takes_in_larger_values() {
        // One shard's second held 5 ms at most, the other's 5 s: merged, both count.
        let (mut small, mut large) = (super::super::metrics::new_hist(), super::super::metrics::new_hist());
        small.record(5_000).unwrap();
        large.record(5_000_000).unwrap();
        let mut merged = decode_hist(&encode_hist(&small)).unwrap();
        merged.add(decode_hist(&encode_hist(&large)).unwrap()).unwrap();
        assert_eq!(merged.len(), 2);
        assert!(merged.max() >= 4_990_000, "{}", merged.max());
    }

    #[test]
    fn histograms_survive_the_round_trip() {
        let mut m = BotMetrics::default();
        for v in [10, 200, 3000, 40_000] {
            m.record(Metric::DeliveryText, v);
        }
        m.counters.sent_text = 4;
        m.count_error("rate_limited");
        let saved = save_metrics(&m);
        let back = load_metrics(&saved).unwrap();
        assert_eq!(back.hist(Metric::DeliveryText), m.hist(Metric::DeliveryText));
        assert_eq!(back.counters, m.counters);
        assert_eq!(back.errors, m.errors);
    }

    #[test]
    fn percentile_output_has_the_hdr_layout() {
        let mut m = BotMetrics::default();
        for v in 1..=1000 {
            m.record(Metric::Connect, v * 10);
        }
        let text = percentile_distribution(m.hist(Metric::Connect).unwrap());
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert!(text.contains("#[Max     =       10.0"), "{text}");
        assert!(text.contains("Total count    =         1000]"));
    }
}
