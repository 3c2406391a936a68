//! `chorus run --shards N`: one run in N harness processes on this machine.
//! The parent starts the embedded server (unless there is a target), picks
//! a start time a few seconds ahead, and starts `chorus run --shard i/N
//! --start-at T` N times, each connecting from its own addresses
//! (127.0.i.x) when the target is on loopback, each writing its results
//! under the run's folder (`shard-i/`, its log `shard-i.log`) and its
//! seconds as NDJSON on its stdout. The parent adds those seconds up for
//! the progress lines, the dashboard, the NDJSON and the metrics endpoint,
//! and at the end merges the shards' results exactly (`chorus report
//! --merge`'s code) into the run's folder.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::driver::{RunOptions, RunOutcome, Target, given_targets};
use super::live::{LiveRecord, Watching};
use super::progress::{Collected, Second, View};
use super::results;
use super::scenario::Scenario;
use super::schedule::Timeline;
use super::summary::{RunFacts, scenario_info};

/// How far ahead the shards are told to start: time to launch and connect.
const LEAD: Duration = Duration::from_secs(3);

/// Run `scenario` (read from `file`) in `count` processes; `args` are the
/// command-line options each shard repeats (overrides, TLS, token).
pub async fn run(
    scenario: Scenario,
    file: &Path,
    count: u32,
    options: RunOptions,
    args: Vec<String>,
    stop: CancellationToken,
) -> anyhow::Result<RunOutcome> {
    if !(2..=250).contains(&count) {
        bail!("--shards takes 2 to 250 processes (got {count})");
    }
    let dir = results::make_dir(&options.results, options.out.as_deref(), &scenario.name, None)?;
    let mut target = Target::start(&scenario, given_targets(&scenario, &options)).await?;
    let start_at = SystemTime::now() + LEAD;
    let launch = Launch { file, count, args: &args, dir: &dir, urls: &target.urls, start_at, options: &options };
    let mut children = (1..=count).map(|index| launch.shard(index)).collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!(
        "{count} shards of {} ({} clients) against {}, starting together in {:.0}s; logs in {}/shard-*.log",
        scenario.name,
        scenario.total_clients(),
        target.urls.join(", "),
        LEAD.as_secs_f64(),
        dir.display()
    );
    let planned = RunFacts::planned(scenario.total_clients() as u64, target.urls.join(", "), target.server.is_some());
    let info = scenario_info(&scenario, &planned, &target.urls);
    let watching = Watching::start(&options.watch, info, planned, scenario.thresholds.clone()).await?;
    let timeline = Timeline::new(&scenario.phases);
    let mut view = View::new(timeline.end(), scenario.total_clients(), watching.as_ref().map(|w| w.feed.clone()));
    let (tx, rx) = mpsc::channel(1024);
    let readers: Vec<_> = children.iter_mut().enumerate().map(|(i, c)| read_seconds(c, tx.clone(), i + 1)).collect();
    drop(tx);
    let collected = follow(rx, &mut view, &timeline, start_at, &stop, &mut children).await;
    view.finish(&collected, &timeline);
    wait_all(&mut children, &dir).await?;
    for reader in readers {
        let _ = reader.await;
    }
    let embedded = target.server.is_some();
    target.stop().await?;
    drop(target);
    let shard_dirs: Vec<PathBuf> = (1..=count).map(|i| dir.join(format!("shard-{i}"))).collect();
    let mut runs = shard_dirs.iter().map(|d| results::read(d)).collect::<anyhow::Result<Vec<_>>>()?;
    // Each shard was given the URL; the server is still the one started here.
    for (summary, _) in &mut runs {
        summary.scenario.embedded_server = embedded;
    }
    let outcome = super::merge_runs(&runs, &shard_dirs, dir)?;
    if let Some(watching) = watching {
        watching.finish(&outcome.summary, &outcome.report).await;
    }
    Ok(outcome)
}

/// How each shard is started.
struct Launch<'a> {
    file: &'a Path,
    count: u32,
    args: &'a [String],
    dir: &'a Path,
    urls: &'a [String],
    start_at: SystemTime,
    options: &'a RunOptions,
}

impl Launch<'_> {
    /// Start shard `index`: NDJSON on a pipe, everything else into its log.
    fn shard(&self, index: u32) -> anyhow::Result<Child> {
        let start_secs = self.start_at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let mut command = Command::new(std::env::current_exe().context("finding the chorus executable")?);
        command.arg("run").arg(self.file).args(self.args);
        command.args(["--shard", &format!("{index}/{}", self.count), "--start-at", &format!("{start_secs:.6}")]);
        // Every target, in order: each shard spreads its clients as the whole run would.
        for url in self.urls {
            command.args(["--target", url]);
        }
        command.args(["--out-ndjson", "-"]).arg("--out").arg(self.dir.join(format!("shard-{index}")));
        // On loopback each shard connects from its own addresses.
        if self.urls.iter().all(|url| url.contains("://127.") || url.contains("://localhost")) {
            command.args(["--source-net", &index.to_string()]);
        }
        if let Some(token) = &self.options.connect.token {
            command.env("CHORUS_TOKEN", token);
        }
        spawn(command, &self.dir.join(format!("shard-{index}.log")))
    }
}

/// Wait for every shard; one that failed (not a finished, failed-thresholds
/// or interrupted run) is an error quoting the end of its log.
async fn wait_all(children: &mut [Child], dir: &Path) -> anyhow::Result<()> {
    for (i, child) in children.iter_mut().enumerate() {
        let status = child.wait().await.context("waiting for a shard")?;
        if !matches!(status.code(), Some(0 | 3 | 4)) {
            let log = std::fs::read_to_string(dir.join(format!("shard-{}.log", i + 1))).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(5)..].join("\n");
            bail!("shard {} of {} failed ({status}); its log ends:\n{tail}", i + 1, children.len());
        }
    }
    Ok(())
}

/// Start one shard: NDJSON on a pipe, everything else into its log.
fn spawn(mut command: Command, log: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log).with_context(|| format!("cannot write {}", log.display()))?;
    command
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting a shard")
}

/// Read a shard's NDJSON seconds into `tx` until it closes its stdout.
fn read_seconds(child: &mut Child, tx: mpsc::Sender<(u32, Second)>, shard: usize) -> tokio::task::JoinHandle<()> {
    let stdout = child.stdout.take();
    tokio::spawn(async move {
        let Some(stdout) = stdout else { return };
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(record) = serde_json::from_str::<LiveRecord>(&line) else { continue };
            match record.counts.second() {
                Ok(second) => {
                    let _ = tx.send((record.second, second)).await;
                }
                Err(err) => tracing::warn!("shard {shard} sent an unreadable second: {err:#}"),
            }
        }
    })
}

/// Add the shards' seconds up and show each second once the clock is two
/// past it (a shard reports a second when it ends); on `stop`, pass the
/// interrupt on to every shard.
async fn follow(
    mut rx: mpsc::Receiver<(u32, Second)>,
    view: &mut View,
    timeline: &Timeline,
    start_at: SystemTime,
    stop: &CancellationToken,
    children: &mut [Child],
) -> Collected {
    let mut collected = Collected::default();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut interrupted = false;
    loop {
        tokio::select! {
            received = rx.recv() => match received {
                Some((second, bucket)) => collected.seconds.entry(second).or_default().add(&bucket),
                None => break,
            },
            () = stop.cancelled(), if !interrupted => {
                interrupted = true;
                // Each shard stops as after a ctrl-c: drains, writes its partial results.
                for pid in children.iter().filter_map(Child::id) {
                    let _ = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status();
                }
            }
            _ = tick.tick() => {
                let now = SystemTime::now().duration_since(start_at).unwrap_or_default();
                if interrupted && view.stopped.is_none() {
                    view.stopped = Some(now.as_secs() as u32);
                }
                view.at(now);
                view.show_until(&collected, timeline, (now.as_secs() as u32).saturating_sub(2));
            }
        }
    }
    collected
}
