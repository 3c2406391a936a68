//! Live progress while a run goes: phase, connected / target, sent/s,
//! delivered/s, rolling p99 and errors. A progress bar on a terminal, plain
//! periodic lines otherwise. It also keeps the per-second buckets that become
//! `timeseries.csv`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use super::bot::RunContext;
use super::metrics::Tick;

/// One second of the whole run.
#[derive(Debug, Clone)]
pub struct Second {
    pub sent: u64,
    pub received: u64,
    pub acked: u64,
    pub errors: u64,
    /// Connected clients at the end of the second, as progress saw it.
    pub connected: u64,
    pub delivery: Histogram<u64>,
}

impl Second {
    fn new() -> Second {
        Second {
            sent: 0,
            received: 0,
            acked: 0,
            errors: 0,
            connected: 0,
            delivery: Histogram::new(2).unwrap_or_else(|_| unreachable!("2 is valid")),
        }
    }
}

/// What progress collected: the time series, and ticks lost on a full channel.
#[derive(Debug, Default)]
pub struct Collected {
    pub seconds: BTreeMap<u32, Second>,
}

/// Fold ticks into seconds and show progress until the channel closes.
pub async fn run(mut ticks: mpsc::Receiver<Tick>, ctx: Arc<RunContext>, target_clients: usize) -> Collected {
    let total = ctx.timeline.end();
    let on_terminal = std::io::stderr().is_terminal();
    let bar = on_terminal.then(|| {
        let bar = ProgressBar::new(total.as_millis() as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:24}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    });
    // Plain lines: about 20 over the run, at least a second apart.
    let every = if on_terminal { Duration::from_millis(250) } else { (total / 20).max(Duration::from_secs(1)) };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut collected = Collected::default();
    loop {
        tokio::select! {
            received = ticks.recv() => match received {
                Some(t) => absorb(&mut collected, t),
                None => break,
            },
            _ = tick.tick() => {
                let second = ctx.epoch.elapsed().as_secs() as u32;
                let connected = ctx.connected.load(Ordering::Relaxed) as u64;
                collected.seconds.entry(second).or_insert_with(Second::new).connected = connected;
                let line = status(&collected, &ctx, target_clients);
                match &bar {
                    Some(bar) => {
                        bar.set_position(ctx.epoch.elapsed().as_millis().min(total.as_millis()) as u64);
                        bar.set_message(line);
                    }
                    None => eprintln!("{line}"),
                }
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    collected
}

fn absorb(collected: &mut Collected, tick: Tick) {
    let second = collected.seconds.entry(tick.second).or_insert_with(Second::new);
    second.sent += u64::from(tick.sent);
    second.received += u64::from(tick.received);
    second.acked += u64::from(tick.acked);
    second.errors += u64::from(tick.errors);
    if let Some(hist) = tick.delivery {
        let _ = second.delivery.add(&hist);
    }
}

/// The progress line for now: the last complete second (bots report a
/// second when their next one starts, so the one just past may be partial),
/// p99 over the last five.
fn status(collected: &Collected, ctx: &RunContext, target_clients: usize) -> String {
    let now = ctx.epoch.elapsed();
    let phase = ctx.timeline.phase_at(now).map_or("done", |s| s.phase.name());
    let connected = ctx.connected.load(Ordering::Relaxed);
    let current = now.as_secs() as u32;
    let last = current.saturating_sub(2);
    let (sent, delivered) = collected.seconds.get(&last).map_or((0, 0), |s| (s.sent, s.received));
    let mut recent = Histogram::<u64>::new(2).unwrap_or_else(|_| unreachable!("2 is valid"));
    let mut errors = 0;
    for (second, bucket) in &collected.seconds {
        errors += bucket.errors;
        if *second + 5 >= current {
            let _ = recent.add(&bucket.delivery);
        }
    }
    let p99 = if recent.is_empty() {
        "-".to_string()
    } else {
        crate::units::format_duration(Duration::from_micros(recent.value_at_quantile(0.99)))
    };
    format!(
        "{phase:<8} {connected}/{target_clients} connected  {sent} sent/s  {delivered} delivered/s  p99 {p99}  errors {errors}"
    )
}
