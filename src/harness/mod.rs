//! The load harness: `chorus run <scenario.toml>` and `chorus report`.
//!
//! - `scenario`: TOML -> validated `Scenario`; `thresholds`: pass / fail rules.
//! - `schedule`: phases on the clock, connect times, open-model send times.
//! - `driver`: runs a scenario; `bot` and `receive`: one simulated client;
//!   `tracker`: pending acks and per-sender sequences; `stamp`: what each
//!   message carries.
//! - `metrics`: per-bot HDR histograms and counters; `progress`: live view and
//!   time series; `summary`: the `summary.json` schema; `report`, `html`:
//!   rendering; `results`: the results folder, reading it back, merging shards.

pub mod bot;
pub mod dashboard;
pub mod driver;
pub mod html;
pub mod live;
pub mod metrics;
pub mod openmetrics;
pub mod probe;
pub mod progress;
mod receive;
pub mod report;
pub mod results;
pub mod scenario;
pub mod schedule;
pub mod script;
mod scripted;
pub mod shards;
pub mod stamp;
pub mod summary;
pub mod thresholds;
pub mod tracker;
mod upload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

pub use driver::{RunOptions, RunOutcome, Shard, run};
pub use scenario::{Scenario, ScenarioError};

use metrics::{BotMetrics, GroupMetrics};
use progress::Collected;
use results::SavedRun;
use summary::{RunFacts, ScenarioInfo, Summary};
use thresholds::Threshold;

/// Exit code: every threshold passed.
pub const EXIT_OK: u8 = 0;
/// Exit code: an error (bad scenario, unreachable target, unreadable results).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: the run finished but at least one threshold failed.
pub const EXIT_THRESHOLDS_FAILED: u8 = 3;
/// Exit code: the run was interrupted (ctrl-c); partial results were written.
pub const EXIT_INTERRUPTED: u8 = 4;

/// The exit code a finished run deserves.
pub fn exit_code(summary: &Summary) -> u8 {
    if summary.run.interrupted {
        EXIT_INTERRUPTED
    } else if !summary.passed {
        EXIT_THRESHOLDS_FAILED
    } else {
        EXIT_OK
    }
}

/// `chorus report DIR [BASELINE]`: the saved report, or two runs compared.
pub fn report(dir: &Path, baseline: Option<&Path>) -> anyhow::Result<(String, Summary)> {
    let (summary, _) = results::read(dir)?;
    let text = match baseline {
        None => report::text(&summary),
        Some(base) => {
            let (base, _) = results::read(base)?;
            report::compare(&summary, &base)
        }
    };
    Ok((text, summary))
}

/// `chorus report --merge DIR...`: combine the shards of one run, exactly
/// (counters add, histograms merge losslessly), and write the merged results.
pub fn merge(dirs: &[PathBuf], results_base: &Path, out: Option<&Path>) -> anyhow::Result<RunOutcome> {
    if dirs.len() < 2 {
        bail!("--merge needs at least two result folders");
    }
    let mut runs = Vec::new();
    for dir in dirs {
        runs.push(results::read(dir)?);
    }
    // Refused before a results folder is made for it.
    check_one_run(&runs, dirs)?;
    let name = format!("{}-merged", runs[0].0.scenario.name);
    let dir = results::make_dir(results_base, out, &name, None)?;
    merge_runs(&runs, dirs, dir)
}

/// Merge the results of a run's shards (read from `dirs`) into `dir`.
pub fn merge_runs(runs: &[(Summary, SavedRun)], dirs: &[PathBuf], dir: PathBuf) -> anyhow::Result<RunOutcome> {
    check_one_run(runs, dirs)?;
    let info = runs[0].0.scenario.clone();
    let order: Vec<String> = info.groups.iter().map(|g| g.name.clone()).collect();
    let Merged { total, groups, targets, collected } = Merged::add_up(runs, &order)?;
    let thresholds = thresholds_of(&info, &order)?;
    let summaries: Vec<&Summary> = runs.iter().map(|(s, _)| s).collect();
    let facts = merged_facts(&summaries, &info, &targets);
    let mut merged_info = info;
    merged_info.clients = summaries.iter().map(|s| s.scenario.clients).max().unwrap_or(0);
    if !targets.is_empty() {
        merged_info.target = facts.target.clone();
        merged_info.targets = targets.iter().map(|(url, _, _)| url.clone()).collect();
    }
    let summary = Summary::build(merged_info, &thresholds, facts, &total, &groups, &targets, &collected.seconds);
    let saved = SavedRun::new(&total, &groups, &targets, &collected.seconds);
    driver::finish(summary, &saved, &collected, dir)
}

/// Only shards of one run merge: the same scenario, the same seed.
fn check_one_run(runs: &[(Summary, SavedRun)], dirs: &[PathBuf]) -> anyhow::Result<()> {
    check_shards(runs, dirs)?;
    let (first, _) = &runs[0];
    for (other, dir) in runs.iter().map(|(s, _)| s).zip(dirs).skip(1) {
        if other.scenario.name != first.scenario.name || other.scenario.seed != first.scenario.seed {
            bail!(
                "{} is a run of {} (seed {}), not of {} (seed {}): only shards of one run merge",
                dir.display(),
                other.scenario.name,
                other.scenario.seed,
                first.scenario.name,
                first.scenario.seed
            );
        }
    }
    Ok(())
}

/// Every folder is one shard (`--shard i/N`) of the same N, each shard once,
/// all N of them: anything else would count clients twice or not at all.
fn check_shards(runs: &[(Summary, SavedRun)], dirs: &[PathBuf]) -> anyhow::Result<()> {
    let mut seen: BTreeMap<usize, &PathBuf> = BTreeMap::new();
    let mut count = None;
    for ((summary, _), dir) in runs.iter().zip(dirs) {
        let shard = summary.run.shard.as_deref().and_then(|s| s.split_once('/'));
        let Some((index, of)) = shard.and_then(|(i, n)| i.parse::<usize>().ok().zip(n.parse::<usize>().ok())) else {
            bail!("{} is not a shard (a run without --shard i/N): only the shards of one run merge", dir.display());
        };
        if *count.get_or_insert(of) != of {
            bail!(
                "{} is shard {index}/{of}, the others are of {}: only the shards of one run merge",
                dir.display(),
                count.unwrap_or(of)
            );
        }
        if let Some(earlier) = seen.insert(index, dir) {
            bail!(
                "shard {index}/{of} is given twice ({} and {}): give each shard once",
                earlier.display(),
                dir.display()
            );
        }
    }
    let of = count.unwrap_or(0);
    let missing: Vec<String> = (1..=of).filter(|i| !seen.contains_key(i)).map(|i| format!("{i}/{of}")).collect();
    if !missing.is_empty() {
        bail!("shard(s) {} missing: merge all {of} shards of the run", missing.join(", "));
    }
    Ok(())
}

/// The shards' measurements added up: in all, per group, per target, per second.
struct Merged {
    total: BotMetrics,
    groups: Vec<GroupMetrics>,
    targets: Vec<GroupMetrics>,
    collected: Collected,
}

impl Merged {
    /// Add up `runs`; the groups in the scenario's `order`.
    fn add_up(runs: &[(Summary, SavedRun)], order: &[String]) -> anyhow::Result<Merged> {
        let mut total = BotMetrics::default();
        let mut groups: BTreeMap<String, (u64, BotMetrics)> = BTreeMap::new();
        let mut targets: Vec<GroupMetrics> = Vec::new();
        let mut collected = Collected::default();
        for (_, saved) in runs {
            let (t, gs) = saved.metrics()?;
            total.merge(&t);
            for (name, clients, m) in gs {
                let entry = groups.entry(name).or_insert_with(|| (0, BotMetrics::default()));
                entry.0 += clients;
                entry.1.merge(&m);
            }
            // Shards may list different targets: by URL, in order of appearance.
            for (url, clients, m) in saved.target_metrics()? {
                match targets.iter_mut().find(|(u, _, _)| *u == url) {
                    Some(entry) => {
                        entry.1 += clients;
                        entry.2.merge(&m);
                    }
                    None => targets.push((url, clients, m)),
                }
            }
            add_seconds(&mut collected, saved)?;
        }
        let groups = order.iter().filter_map(|name| groups.remove(name).map(|(c, m)| (name.clone(), c, m))).collect();
        Ok(Merged { total, groups, targets, collected })
    }
}

/// The run's thresholds, parsed again from its summary.
fn thresholds_of(info: &ScenarioInfo, order: &[String]) -> anyhow::Result<Vec<Threshold>> {
    let group_names: Vec<&str> = order.iter().map(String::as_str).collect();
    let protocol = scenario::Protocol::from_name(&info.protocol).unwrap_or(scenario::Protocol::Chorus);
    info.thresholds
        .iter()
        .map(|(k, c)| Threshold::parse(k, c, protocol, &group_names).map_err(|e| anyhow::anyhow!("threshold {k}: {e}")))
        .collect()
}

/// The facts of the whole run, from its shards'.
fn merged_facts(summaries: &[&Summary], info: &ScenarioInfo, targets: &[GroupMetrics]) -> RunFacts {
    RunFacts {
        planned_clients: summaries.iter().map(|s| s.connections.target).sum(),
        started_at: summaries.iter().map(|s| s.run.started_at.clone()).min().unwrap_or_default(),
        duration_secs: summaries.iter().map(|s| s.run.duration_secs).fold(0.0, f64::max),
        steady_secs: summaries.iter().map(|s| s.run.steady_secs).fold(0.0, f64::max),
        interrupted: summaries.iter().any(|s| s.run.interrupted),
        stopped_after_secs: summaries.iter().filter_map(|s| s.run.stopped_after_secs).reduce(f64::max),
        shard: None,
        sources: {
            let mut all: Vec<String> = summaries.iter().flat_map(|s| s.run.sources.iter().cloned()).collect();
            all.sort();
            all.dedup();
            all
        },
        merged_from: summaries.iter().map(|s| s.run.merged_from).sum(),
        suspect: summaries
            .iter()
            .flat_map(|s| {
                let shard = s.run.shard.clone().unwrap_or_default();
                s.run.suspect.iter().map(move |r| format!("shard {shard}: {r}"))
            })
            .collect(),
        generator_cpu_percent: summaries.iter().map(|s| s.run.generator_cpu_percent).sum(),
        cores: summaries.iter().map(|s| s.run.cores).max().unwrap_or(1),
        target: if targets.is_empty() {
            info.target.clone()
        } else {
            targets.iter().map(|(url, _, _)| url.as_str()).collect::<Vec<_>>().join(", ")
        },
        embedded_server: info.embedded_server,
    }
}

fn add_seconds(collected: &mut Collected, saved: &SavedRun) -> anyhow::Result<()> {
    for (second, bucket) in saved.seconds().context("reading a time series")? {
        match collected.seconds.get_mut(&second) {
            None => {
                collected.seconds.insert(second, bucket);
            }
            Some(mine) => mine.add(&bucket),
        }
    }
    Ok(())
}
