//! The driver of a run: starts the embedded server (unless there is a
//! target), plans and spawns the bots, shows progress, stops them on the
//! caller's token, merges their measurements and writes the results.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::bot::{self, BotPlan, RunContext};
use super::html::{self, ChartData, Moment, Series};
use super::live::{WatchOptions, Watching};
use super::metrics::{BotMetrics, GroupMetrics, Metric};
use super::probe::{self, cpu_time};
use super::progress::{self, Collected};
use super::report;
use super::results::{self, SavedRun};
use super::scenario::{Protocol, Scenario, Spread};
use super::schedule::Timeline;
use super::stamp::run_tag;
use super::summary::{REPORTED, RunFacts, Summary, scenario_info};
use crate::client::connection::{ConnectOptions, connect, normalize_url};
use crate::protocol::EventHeader;
use crate::server::ServerHandle;

/// Connections per source address before the next one is used (the
/// ephemeral port range allows about 28k per address and destination).
const PER_SOURCE_ADDRESS: usize = 25_000;

/// One shard of a run split over several processes: `index` of `count`, from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(text: &str) -> Result<Shard, String> {
        let bad = || format!("--shard takes i/n with 1 <= i <= n, like 1/4 (got {text:?})");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let shard = Shard { index: i.trim().parse().map_err(|_| bad())?, count: n.trim().parse().map_err(|_| bad())? };
        if shard.index == 0 || shard.index > shard.count {
            return Err(bad());
        }
        Ok(shard)
    }
}

/// How to run a scenario, beyond the file itself.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Overrides the scenario's `target` / `targets` (empty: the scenario's).
    pub targets: Vec<String>,
    /// Where result folders go (`results/`).
    pub results: PathBuf,
    /// An exact folder for this run's results instead.
    pub out: Option<PathBuf>,
    pub shard: Option<Shard>,
    /// Wait until then before starting (aligns the shards of a run).
    pub start_at: Option<SystemTime>,
    /// Connect from 127.0.0.1 ..= 127.0.0.N, round-robin (loopback targets).
    pub source_addresses: Option<u8>,
    /// Source addresses are 127.0.`source_net`.n: each shard of `--shards` its own
    /// (0: 127.0.0.n, bound only when asked or past 25,000 clients).
    pub source_net: u8,
    pub connect: ConnectOptions,
    /// NDJSON, dashboard, metrics endpoint.
    pub watch: WatchOptions,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            targets: Vec::new(),
            results: PathBuf::from("results"),
            out: None,
            shard: None,
            start_at: None,
            source_addresses: None,
            source_net: 0,
            connect: ConnectOptions::default(),
            watch: WatchOptions::default(),
        }
    }
}

/// A finished run.
#[derive(Debug)]
pub struct RunOutcome {
    pub summary: Summary,
    pub dir: PathBuf,
    /// The terminal report.
    pub report: String,
}

/// Run a scenario. `stop` ends it early (ctrl-c): sending stops, in-flight
/// messages drain, and the partial results are written.
pub async fn run(scenario: Scenario, options: RunOptions, stop: CancellationToken) -> anyhow::Result<RunOutcome> {
    if let Some(out) = &options.out {
        // Before anything can fail: an earlier run's files must not pass for this one's.
        results::clear_out(out)?;
    }
    let scenario = Arc::new(scenario);
    let targets = check_targets(&scenario, &options)?;
    let mut target = Target::start(&scenario, targets).await?;
    let embedded = target.server.is_some();
    check_source_addresses(&target.urls, &options)?;
    let mut connect_options = options.connect.clone();
    connect_options.timeout = scenario.connect_timeout;
    for url in &target.urls {
        preflight(url, &connect_options, scenario.protocol).await?;
    }
    if let Some(at) = options.start_at {
        wait_until(at).await;
    }
    let timeline = Timeline::new(&scenario.phases);
    let sources = Sources { count: options.source_addresses, net: options.source_net };
    let plans = plan_bots(&scenario, &timeline, options.shard, &target.urls, sources);
    let addresses = source_ips(&plans);
    let ctx = run_context(&scenario, timeline, target.urls.clone(), connect_options, &stop);
    let planned = RunFacts::planned(plans.len() as u64, target.urls.join(", "), embedded);
    let info = scenario_info(&scenario, &planned, &target.urls);
    let watching = Watching::start(&options.watch, info, planned, scenario.thresholds.clone()).await?;
    let ran = Ran::run(plans, &ctx, &stop, watching.as_ref()).await;
    target.stop().await?;
    let facts = ran.facts(&ctx, &options, addresses, stop.is_cancelled(), embedded);
    let info = scenario_info(&scenario, &facts, &target.urls);
    let Measured { total, groups, targets } = &ran.measured;
    let summary = Summary::build(info, &scenario.thresholds, facts, total, groups, targets, &ran.collected.seconds);
    let saved = SavedRun::new(total, groups, targets, &ran.collected.seconds);
    let dir =
        results::make_dir(&options.results, options.out.as_deref(), &scenario.name, summary.run.shard.as_deref())?;
    let outcome = finish(summary, &saved, &ran.collected, dir)?;
    if let Some(watching) = watching {
        watching.finish(&outcome.summary, &outcome.report).await;
    }
    Ok(outcome)
}

/// The targets asked for, normalized: the options', else the scenario's.
pub(super) fn given_targets(scenario: &Scenario, options: &RunOptions) -> Vec<String> {
    if options.targets.is_empty() { &scenario.targets } else { &options.targets }
        .iter()
        .map(|t| normalize_url(t))
        .collect()
}

/// The given targets (none: the embedded server), once each and able to
/// carry what the scenario and the options ask of them.
fn check_targets(scenario: &Scenario, options: &RunOptions) -> anyhow::Result<Vec<String>> {
    let targets = given_targets(scenario, options);
    if let Some((i, url)) = targets.iter().enumerate().find(|(i, url)| targets[..*i].contains(url)) {
        bail!("target {} ({url}) is listed twice: each server once", i + 1);
    }
    let external = !targets.is_empty();
    if scenario.protocol == Protocol::Raw && !external {
        bail!(
            "protocol = \"raw\" needs a target (the embedded server speaks chorus): set target = \"ws://...\" or pass --target URL"
        );
    }
    if options.shard.is_some() && !external {
        bail!(
            "--shard needs an external target (--target URL or target = in the scenario): every shard must load the same server"
        );
    }
    check_group_targets(scenario, targets.len().max(1))?;
    if external && scenario.has_server_table {
        eprintln!("note: the scenario's [server] settings are ignored when a target is given");
    }
    Ok(targets)
}

/// What a run loads: the given targets, or an embedded server started here.
pub(super) struct Target {
    pub(super) urls: Vec<String>,
    pub(super) server: Option<ServerHandle>,
    /// The embedded server's temporary data directory, removed at the end.
    _cleanup: RemoveOnDrop,
}

impl Target {
    /// The targets `urls` (normalized), or the embedded server when there are none.
    pub(super) async fn start(scenario: &Scenario, urls: Vec<String>) -> anyhow::Result<Target> {
        if !urls.is_empty() {
            return Ok(Target { urls, server: None, _cleanup: RemoveOnDrop(None) });
        }
        let temporary_data = scenario.temporary_data.then(|| scenario.server.data_dir.clone());
        if let Some(data) = &temporary_data {
            std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
        }
        let cleanup = RemoveOnDrop(temporary_data);
        let server = ServerHandle::start("127.0.0.1:0", scenario.server.clone())
            .await
            .context("starting the embedded server")?;
        Ok(Target { urls: vec![server.url()], server: Some(server), _cleanup: cleanup })
    }

    /// Stop the embedded server, if there is one (its temporary data goes
    /// when the target is dropped).
    pub(super) async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(server) = self.server.take() {
            server.shutdown().await.context("stopping the embedded server")?;
        }
        Ok(())
    }
}

/// `--source-addresses` binds 127.0.0.x: every target must be on IPv4 loopback.
fn check_source_addresses(urls: &[String], options: &RunOptions) -> anyhow::Result<()> {
    if let Some(url) = urls.iter().find(|url| !url_is_loopback_v4(url))
        && options.source_addresses.is_some()
    {
        bail!(
            "--source-addresses spreads connections over 127.0.0.1 to 127.0.0.N, so it needs an IPv4 loopback target \
             (ws://127.0.0.1:PORT/ or ws://localhost:PORT/; IPv6 loopback is the one address ::1); got {url}"
        );
    }
    Ok(())
}

/// Wait for the agreed start time (the shards of a run start together).
async fn wait_until(at: SystemTime) {
    match at.duration_since(SystemTime::now()) {
        Ok(wait) => {
            eprintln!("waiting {:.1}s for the agreed start time", wait.as_secs_f64());
            tokio::time::sleep(wait).await;
        }
        // Past by more than a moment: this shard starts late, out of step with the others.
        Err(past) if past.duration() > std::time::Duration::from_millis(500) => eprintln!(
            "warning: the agreed start time (--start-at) passed {:.1}s ago: starting now, that late against \
             the shards that started on time (give a time further ahead)",
            past.duration().as_secs_f64()
        ),
        Err(_) => {}
    }
}

/// The source addresses the plans bind, sorted, once each.
fn source_ips(plans: &[BotPlan]) -> Vec<String> {
    let mut ips: Vec<String> = plans.iter().filter_map(|p| p.bind.map(|b| b.ip().to_string())).collect();
    ips.sort();
    ips.dedup();
    ips
}

/// What every bot of the run shares.
fn run_context(
    scenario: &Arc<Scenario>,
    timeline: Timeline,
    targets: Vec<String>,
    connect: ConnectOptions,
    stop: &CancellationToken,
) -> Arc<RunContext> {
    Arc::new(RunContext {
        filler: filler(scenario),
        tag: run_tag(&scenario.name, scenario.seed),
        timeline,
        targets,
        connect,
        epoch: Instant::now(),
        epoch_wall_us: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64),
        stop: stop.clone(),
        drain_after_stop: drain_of(scenario),
        connected: AtomicUsize::new(0),
        rooms: scenario.rooms().into_iter().map(|r| (r, AtomicU64::new(0))).collect(),
        scenario: scenario.clone(),
    })
}

/// The bots' part of a run: what they measured, and how it went.
struct Ran {
    /// Clients planned (this shard's).
    planned: usize,
    started_at: String,
    measured: Measured,
    collected: Collected,
    elapsed: Duration,
    /// The process's CPU time over the run.
    cpu: Duration,
    observed: Option<probe::Observed>,
    /// When `stop` came, if it did.
    stopped_after: Option<Duration>,
}

impl Ran {
    /// Spawn the bots, with the progress lines and the probe beside them,
    /// and wait for them all.
    async fn run(
        plans: Vec<BotPlan>,
        ctx: &Arc<RunContext>,
        stop: &CancellationToken,
        watching: Option<&Watching>,
    ) -> Ran {
        let planned = plans.len();
        let started_at = crate::ids::now_ts();
        let cpu_before = cpu_time();
        let (tick_tx, tick_rx) = mpsc::channel(16 * 1024);
        let feed = watching.map(|w| w.feed.clone());
        let progress = tokio::spawn(progress::run(tick_rx, ctx.clone(), planned, feed));
        let watcher = tokio::spawn(probe::watch(ctx.clone()));
        let stopped = {
            let (stop, epoch) = (stop.clone(), ctx.epoch);
            tokio::spawn(async move {
                stop.cancelled().await;
                epoch.elapsed()
            })
        };
        let mut measured = run_bots(plans, ctx, tick_tx).await;
        let stopped_after = if stop.is_cancelled() {
            stopped.await.ok()
        } else {
            stopped.abort();
            None
        };
        let collected = progress.await.unwrap_or_default();
        let elapsed = ctx.epoch.elapsed();
        let cpu = cpu_time().saturating_sub(cpu_before);
        let observed = watcher.await.ok();
        if let Some(observed) = &observed {
            measured.total.set_hist(Metric::LoopLag, observed.loop_lag.clone());
        }
        Ran { planned, started_at, measured, collected, elapsed, cpu, observed, stopped_after }
    }

    /// The facts of the run for its summary.
    fn facts(
        &self,
        ctx: &RunContext,
        options: &RunOptions,
        sources: Vec<String>,
        interrupted: bool,
        embedded: bool,
    ) -> RunFacts {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        // The steady phases are what counts: ramps and drains dilute the average.
        let cpu_percent = self
            .observed
            .as_ref()
            .and_then(probe::Observed::steady_cpu_percent)
            .unwrap_or_else(|| self.cpu.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9) * 100.0);
        RunFacts {
            planned_clients: self.planned as u64,
            started_at: self.started_at.clone(),
            duration_secs: self.elapsed.as_secs_f64(),
            steady_secs: steady_secs(ctx, self.stopped_after.map_or(self.elapsed, |at| at.min(self.elapsed))),
            interrupted,
            stopped_after_secs: self.stopped_after.map(|at| at.as_secs_f64()),
            shard: options.shard.map(|s| format!("{}/{}", s.index, s.count)),
            sources,
            merged_from: 1,
            suspect: suspicions(&self.measured.total, cpu_percent, cores, embedded),
            generator_cpu_percent: cpu_percent,
            cores,
            target: ctx.targets.join(", "),
            embedded_server: embedded,
        }
    }
}

/// Removes a temporary data directory when the run is over.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Render and write the results of a run (or of a merge).
pub fn finish(summary: Summary, saved: &SavedRun, collected: &Collected, dir: PathBuf) -> anyhow::Result<RunOutcome> {
    let report = report::text(&summary);
    let (total, _) = saved.metrics()?;
    let html = html::render(&summary, &chart_data(&total, collected));
    results::write(&dir, &summary, saved, &report, &html)?;
    Ok(RunOutcome { summary, dir, report })
}

/// Connect once before the run, so an unreachable target is one clear error.
async fn preflight(url: &str, options: &ConnectOptions, protocol: Protocol) -> anyhow::Result<()> {
    let mut ws = connect(url, options).await.with_context(|| format!("the target {url} is not usable"))?;
    if protocol.speaks_chorus() {
        let welcome = tokio::time::timeout(options.timeout, ws.next()).await;
        let ok = matches!(&welcome, Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))))
            if EventHeader::decode(t).is_ok_and(|h| h.kind == "welcome"));
        if !ok {
            bail!("{url} did not greet with a chorus `welcome`; for another kind of server use protocol = \"raw\"");
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    Ok(())
}

/// Where clients connect from: 127.0.`net`.1 ..= 127.0.`net`.`count`.
#[derive(Debug, Clone, Copy, Default)]
struct Sources {
    count: Option<u8>,
    net: u8,
}

/// A group's `target = N` must name one of the targets (`count` of them;
/// the embedded server is one).
fn check_group_targets(scenario: &Scenario, count: usize) -> anyhow::Result<()> {
    for group in &scenario.groups {
        if let Some(n) = group.target
            && n >= count
        {
            bail!(
                "group {:?} asks for target {} but there {}: pass more --target URLs or fix its target",
                group.name,
                n + 1,
                if count == 1 { "is one".to_string() } else { format!("are {count}") }
            );
        }
    }
    Ok(())
}

/// Which target client `id` of group `g` connects to: the group's own, else
/// by the scenario's spread. Deterministic from the id, so every shard of a
/// run agrees.
fn target_of(scenario: &Scenario, g: usize, id: usize, targets: usize) -> usize {
    match (scenario.groups[g].target, scenario.spread) {
        (Some(n), _) => n,
        (None, Spread::RoundRobin) => id % targets,
        (None, Spread::Group) => g % targets,
    }
}

/// Who connects when, from where, to which target and room.
fn plan_bots(
    scenario: &Scenario,
    timeline: &Timeline,
    shard: Option<Shard>,
    urls: &[String],
    sources: Sources,
) -> Vec<BotPlan> {
    let total = scenario.total_clients();
    let loopback = urls.iter().all(|url| url_is_loopback_v4(url));
    let targets = urls.len().max(1);
    let mut plans = Vec::new();
    let mut id = 0usize;
    for (g, group) in scenario.groups.iter().enumerate() {
        for i in 0..group.clients {
            let mine = shard.is_none_or(|s| id % s.count as usize == (s.index - 1) as usize);
            if mine {
                // Asked for: round-robin over 127.0.0.1..=N. Otherwise, only
                // when one address could run out of ports: 25,000 each.
                let source = match sources.count {
                    Some(n) => Some(1 + (id % usize::from(n)) as u8),
                    None if loopback && (total > PER_SOURCE_ADDRESS || sources.net > 0) => {
                        Some((id / PER_SOURCE_ADDRESS + 1).min(254) as u8)
                    }
                    None => None,
                };
                let bind = source.map(|n| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, sources.net, n)), 0));
                plans.push(BotPlan {
                    id: id as u32,
                    group: g,
                    target: target_of(scenario, g, id, targets),
                    room: group.rooms[i % group.rooms.len()].clone(),
                    connect_at: timeline.connect_at(id, total),
                    seed: splitmix(scenario.seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                    bind,
                });
            }
            id += 1;
        }
    }
    plans
}

fn url_is_loopback_v4(url: &str) -> bool {
    let host = url.split("://").nth(1).and_then(|rest| rest.split(['/', ':']).next()).unwrap_or("");
    host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback()) || host == "localhost"
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What the bots measured, merged: in all, per group, per target.
struct Measured {
    total: BotMetrics,
    groups: Vec<GroupMetrics>,
    targets: Vec<GroupMetrics>,
}

/// Spawn every bot and merge what they measured.
async fn run_bots(plans: Vec<BotPlan>, ctx: &Arc<RunContext>, ticks: mpsc::Sender<super::metrics::Tick>) -> Measured {
    let empty = |name: &String| (name.clone(), 0, BotMetrics::default());
    let mut groups: Vec<GroupMetrics> = ctx.scenario.groups.iter().map(|g| empty(&g.name)).collect();
    let mut targets: Vec<GroupMetrics> = ctx.targets.iter().map(empty).collect();
    let handles: Vec<(usize, usize, tokio::task::JoinHandle<BotMetrics>)> = plans
        .into_iter()
        .map(|plan| (plan.group, plan.target, tokio::spawn(bot::run(plan, ctx.clone(), ticks.clone()))))
        .collect();
    drop(ticks);
    let mut total = BotMetrics::default();
    for (group, target, handle) in handles {
        let metrics = handle.await.unwrap_or_else(|err| {
            tracing::error!("a bot task failed: {err}");
            let mut failed = BotMetrics::default();
            failed.count_error("bot task failed");
            failed
        });
        for entry in [&mut groups[group], &mut targets[target]] {
            entry.1 += 1;
            entry.2.merge(&metrics);
        }
        total.merge(&metrics);
    }
    Measured { total, groups, targets }
}

/// Random letters, as much as the longest text needs.
fn filler(scenario: &Scenario) -> String {
    let longest = scenario.groups.iter().map(|g| g.text_size.max).max().unwrap_or(0).max(64);
    let mut rng = StdRng::seed_from_u64(scenario.seed);
    (0..longest).map(|_| char::from(rng.random_range(b'a'..=b'z'))).collect()
}

fn drain_of(scenario: &Scenario) -> Duration {
    match scenario.phases.last() {
        Some(super::scenario::Phase::Drain(d)) => d.duration,
        _ => Duration::from_secs(2),
    }
}

/// Seconds of steady phases that ran before `until` (all of them unless
/// interrupted: after a stop nothing is sent, so nothing after it is steady).
fn steady_secs(ctx: &RunContext, until: Duration) -> f64 {
    ctx.timeline
        .spans
        .iter()
        .filter(|s| matches!(s.phase, super::scenario::Phase::Steady(_)))
        .map(|s| until.min(s.end).saturating_sub(s.start).as_secs_f64())
        .sum()
}

/// Reasons to distrust the figures: the generator could not keep up.
fn suspicions(total: &BotMetrics, cpu_percent: f64, cores: u64, embedded: bool) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(lag) = total.hist(Metric::Lag) {
        let p99 = lag.value_at_quantile(0.99) as f64 / 1000.0;
        let max = lag.max() as f64 / 1000.0;
        if p99 > 10.0 || max > 1000.0 {
            reasons.push(format!(
                "the generator fell behind its schedule (scheduler lag p99 {p99:.1}ms, max {max:.1}ms); latencies include that delay"
            ));
        }
    }
    if let Some(lag) = total.hist(Metric::LoopLag) {
        let p99 = lag.value_at_quantile(0.99) as f64 / 1000.0;
        if p99 > 10.0 {
            reasons.push(format!(
                "the generator's event loop ran late (p99 {p99:.1}ms): deliveries were read late, and their latencies include that"
            ));
        }
    }
    if cpu_percent > 90.0 * cores as f64 {
        let who = if embedded { "the generator and the embedded server" } else { "the generator" };
        reasons.push(format!("{who} used {cpu_percent:.0}% CPU of {cores} core(s): CPU-bound"));
    }
    reasons
}

/// The series the HTML charts draw.
fn chart_data(total: &BotMetrics, collected: &Collected) -> ChartData {
    let curve = |name: &str, color| {
        let parts = REPORTED.iter().find(|(n, _)| *n == name).map(|(_, p)| *p).unwrap_or(&[]);
        total.combined(parts).map(|hist| Series {
            name: name.to_string(),
            color,
            points: hist
                .iter_quantiles(4)
                .filter(|v| v.quantile_iterated_to() < 0.99999)
                .map(|v| (1.0 / (1.0 - v.quantile_iterated_to()), (v.value_iterated_to() as f64 / 1000.0).max(0.001)))
                .collect(),
        })
    };
    let percentiles = [curve("delivery", html::RED), curve("ack", html::BLUE), curve("connect", html::PURPLE)]
        .into_iter()
        .flatten()
        .collect();
    let seconds = collected
        .seconds
        .iter()
        .map(|(second, b)| Moment {
            second: *second,
            sent: b.sent,
            delivered: b.received,
            connected: b.connected,
            errors: b.errors,
            bytes_sent: b.bytes_sent,
            bytes_received: b.bytes_received,
            p99_ms: (!b.delivery.is_empty()).then(|| b.delivery.value_at_quantile(0.99) as f64 / 1000.0),
        })
        .collect();
    ChartData { percentiles, seconds }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(clients: usize) -> Scenario {
        let text = format!("duration = \"1s\"\n[[group]]\nclients = {clients}\nrooms = [\"a\", \"b\"]\n");
        Scenario::parse(&text, "t.toml", "t").unwrap()
    }

    #[test]
    fn plans_spread_rooms_shards_and_source_addresses() {
        let s = scenario(6);
        let timeline = Timeline::new(&s.phases);
        let url = &["ws://127.0.0.1:9/".to_string()];
        let three = Sources { count: Some(3), net: 0 };
        let all = plan_bots(&s, &timeline, None, url, three);
        let sources: Vec<String> = all.iter().map(|p| p.bind.unwrap().ip().to_string()).collect();
        assert_eq!(sources, ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1", "127.0.0.2", "127.0.0.3"]);
        assert_eq!(all.iter().map(|p| p.room.as_str()).collect::<Vec<_>>(), ["a", "b", "a", "b", "a", "b"]);
        assert!(
            plan_bots(&s, &timeline, None, url, Sources::default()).iter().all(|p| p.bind.is_none()),
            "few clients: no binding"
        );
        let shard = plan_bots(&s, &timeline, Some(Shard { index: 2, count: 3 }), url, Sources { count: None, net: 2 });
        assert_eq!(shard.iter().map(|p| p.id).collect::<Vec<_>>(), [1, 4]);
        let from: Vec<String> = shard.iter().map(|p| p.bind.unwrap().ip().to_string()).collect();
        assert_eq!(from, ["127.0.2.1", "127.0.2.1"], "a shard of --shards: its own address");
        let big = scenario(60_000);
        let plans = plan_bots(&big, &Timeline::new(&big.phases), None, url, Sources::default());
        assert_eq!(plans[30_000].bind.unwrap().ip().to_string(), "127.0.0.2", "25,000 per address past 25,000");
    }

    fn targets_of(text: &str, urls: usize, shard: Option<Shard>) -> Vec<(usize, usize)> {
        let s = Scenario::parse(text, "t.toml", "t").unwrap();
        let urls: Vec<String> = (1..=urls).map(|i| format!("ws://127.0.0.1:{i}/")).collect();
        let plans = plan_bots(&s, &Timeline::new(&s.phases), shard, &urls, Sources::default());
        plans.iter().map(|p| (p.group, p.target)).collect()
    }

    const TWO_GROUPS: &str =
        "duration = \"1s\"\n[[group]]\nname = \"a\"\nclients = 3\n[[group]]\nname = \"b\"\nclients = 3\n";

    #[test]
    fn clients_spread_over_targets_round_robin_by_id_in_every_shard() {
        assert_eq!(targets_of(TWO_GROUPS, 3, None), [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]);
        // Shard 2 of 2 holds ids 1, 3, 5: the same targets as in the whole run.
        assert_eq!(targets_of(TWO_GROUPS, 3, Some(Shard { index: 2, count: 2 })), [(0, 1), (1, 0), (1, 2)]);
    }

    #[test]
    fn spread_group_puts_each_group_on_one_target_and_a_group_target_wins() {
        let by_group = format!("spread = \"group\"\n{TWO_GROUPS}");
        assert_eq!(targets_of(&by_group, 2, None), [(0, 0), (0, 0), (0, 0), (1, 1), (1, 1), (1, 1)]);
        let pinned = TWO_GROUPS.replace("name = \"b\"", "name = \"b\"\ntarget = 3");
        assert_eq!(targets_of(&pinned, 3, None), [(0, 0), (0, 1), (0, 2), (1, 2), (1, 2), (1, 2)]);
        let s = Scenario::parse(&pinned, "t.toml", "t").unwrap();
        let err = check_group_targets(&s, 2).unwrap_err().to_string();
        assert!(err.contains("group \"b\" asks for target 3 but there are 2"), "{err}");
    }
}
