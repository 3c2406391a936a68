//! Live progress while a run goes: one line per second of the run (a
//! progress bar's message on a terminal, plain lines otherwise), each naming
//! its second and the phase that second belongs to, with that second's
//! figures: connected / target, sent/s, delivered/s, bytes/s, p99 over the
//! last five seconds and errors so far. It also keeps the per-second
//! buckets that become `timeseries.csv`.
//!
//! Bots report a second when their next one starts (or at the end), so a
//! second is shown once the clock is a full second past it.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use super::bot::RunContext;
use super::live::LiveFeed;
use super::metrics::{Tick, new_hist};
use super::schedule::Timeline;

/// One second of the whole run.
#[derive(Debug, Clone)]
pub struct Second {
    pub sent: u64,
    pub received: u64,
    pub acked: u64,
    pub errors: u64,
    /// Connected clients at the end of the second, as progress saw it.
    pub connected: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Deliveries this second's acks announced.
    pub expected: u64,
    pub checks_passed: u64,
    pub checks_failed: u64,
    pub delivery: Histogram<u64>,
    pub ack: Histogram<u64>,
}

impl Second {
    pub fn new() -> Second {
        Second {
            sent: 0,
            received: 0,
            acked: 0,
            errors: 0,
            connected: 0,
            bytes_sent: 0,
            bytes_received: 0,
            expected: 0,
            checks_passed: 0,
            checks_failed: 0,
            delivery: new_hist(),
            ack: new_hist(),
        }
    }

    /// Add another process's (or bot's) counts of the same second.
    pub fn add(&mut self, other: &Second) {
        self.sent += other.sent;
        self.received += other.received;
        self.acked += other.acked;
        self.errors += other.errors;
        self.connected += other.connected;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.expected += other.expected;
        self.checks_passed += other.checks_passed;
        self.checks_failed += other.checks_failed;
        let _ = self.delivery.add(&other.delivery);
        let _ = self.ack.add(&other.ack);
    }
}

impl Default for Second {
    fn default() -> Second {
        Second::new()
    }
}

/// What progress collected: the time series.
#[derive(Debug, Default)]
pub struct Collected {
    pub seconds: BTreeMap<u32, Second>,
}

/// Where progress lines go (and the live feed, second by second).
pub struct View {
    bar: Option<ProgressBar>,
    /// Plain lines: one every `every` seconds.
    every: u32,
    /// Seconds shown so far.
    shown: u32,
    target_clients: usize,
    /// The second in which the run was stopped (ctrl-c), once seen.
    pub stopped: Option<u32>,
    /// NDJSON, dashboard and metrics endpoint, when asked for.
    live: Option<Arc<LiveFeed>>,
    total: Duration,
}

impl View {
    /// A view of a run of `total` (a progress bar on a terminal, plain lines otherwise).
    pub fn new(total: Duration, target_clients: usize, live: Option<Arc<LiveFeed>>) -> View {
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
        // Plain lines: every second for runs up to a minute, about 60 lines for longer ones.
        let every = (total.as_secs() / 60).max(1) as u32;
        View { bar, every, shown: 0, target_clients, stopped: None, live, total }
    }

    /// The clock is `now` into the run.
    pub fn at(&self, now: Duration) {
        if let Some(bar) = &self.bar {
            bar.set_position(now.as_millis().min(self.total.as_millis()) as u64);
        }
    }

    /// Everything is in: show the rest.
    pub fn finish(mut self, collected: &Collected, timeline: &Timeline) {
        let last = collected.seconds.keys().next_back().map_or(0, |s| s + 1);
        self.show_until(collected, timeline, last);
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Fold ticks into seconds and show progress until the channel closes.
pub async fn run(
    mut ticks: mpsc::Receiver<Tick>,
    ctx: Arc<RunContext>,
    target_clients: usize,
    live: Option<Arc<LiveFeed>>,
) -> Collected {
    let mut view = View::new(ctx.timeline.end(), target_clients, live);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut collected = Collected::default();
    loop {
        tokio::select! {
            received = ticks.recv() => match received {
                Some(t) => absorb(&mut collected, t, view.shown),
                None => break,
            },
            // The second the interrupt fell in, as the summary and timeseries.csv
            // count it (not the second of the next 250 ms tick).
            () = ctx.stop.cancelled(), if view.stopped.is_none() => {
                view.stopped = Some(ctx.epoch.elapsed().as_secs() as u32);
            },
            _ = tick.tick() => {
                let now = ctx.epoch.elapsed();
                let second = now.as_secs() as u32;
                if ctx.stop.is_cancelled() && view.stopped.is_none() {
                    view.stopped = Some(second);
                }
                let connected = ctx.connected.load(Ordering::Relaxed) as u64;
                collected.seconds.entry(second).or_default().connected = connected;
                view.at(now);
                // A second is complete once the clock is a full second past it.
                view.show_until(&collected, &ctx.timeline, second.saturating_sub(1));
            }
        }
    }
    view.finish(&collected, &ctx.timeline);
    collected
}

impl View {
    /// Show the seconds before `end` not shown yet.
    pub fn show_until(&mut self, collected: &Collected, timeline: &Timeline, end: u32) {
        while self.shown < end {
            let second = self.shown;
            self.shown += 1;
            let line = status(collected, timeline, second, self.target_clients, self.stopped);
            if let Some(live) = &self.live {
                let empty = Second::new();
                let bucket = collected.seconds.get(&second).unwrap_or(&empty);
                live.publish(second, phase_name(timeline, second, self.stopped), bucket);
            }
            match &self.bar {
                Some(bar) => bar.set_message(line),
                None if second.is_multiple_of(self.every) || self.shown == end => eprintln!("{line}"),
                None => {}
            }
        }
    }
}

/// Add a bot's tick to its second. A tick for a second already shown (and
/// published to NDJSON, the dashboard and /metrics) goes to the first one
/// not shown yet, so the live figures and timeseries.csv add up alike: a bot
/// counts the bytes it reads into its current tick without reading the
/// clock, and a bot that has counted nothing else for a while still holds
/// an old second.
fn absorb(collected: &mut Collected, tick: Tick, shown: u32) {
    let second = collected.seconds.entry(tick.second.max(shown)).or_default();
    second.sent += u64::from(tick.sent);
    second.received += u64::from(tick.received);
    second.acked += u64::from(tick.acked);
    second.errors += u64::from(tick.errors);
    second.bytes_sent += tick.bytes_sent;
    second.bytes_received += tick.bytes_received;
    second.expected += tick.expected;
    second.checks_passed += u64::from(tick.checks_passed);
    second.checks_failed += u64::from(tick.checks_failed);
    if let Some(hist) = tick.delivery {
        let _ = second.delivery.add(&hist);
    }
    if let Some(hist) = tick.ack {
        let _ = second.ack.add(&hist);
    }
}

/// The name of the phase second `second` starts in (`stopped` from the
/// second a ctrl-c came, `done` past the end).
pub fn phase_name(timeline: &Timeline, second: u32, stopped: Option<u32>) -> &str {
    if stopped.is_some_and(|at| second >= at) {
        return "stopped";
    }
    timeline.phase_at(Duration::from_secs(u64::from(second))).map_or("done", |s| s.phase.name())
}

/// The progress line of one second: its phase, its figures, p99 over it
/// and the four before, errors up to it.
pub fn status(
    collected: &Collected,
    timeline: &Timeline,
    second: u32,
    target_clients: usize,
    stopped: Option<u32>,
) -> String {
    let phase = phase_name(timeline, second, stopped);
    let empty = Second::new();
    let bucket = collected.seconds.get(&second).unwrap_or(&empty);
    let mut recent = Histogram::<u64>::new(2).unwrap_or_else(|_| unreachable!("2 is valid"));
    let mut errors = 0;
    for (s, b) in collected.seconds.range(..=second) {
        errors += b.errors;
        if s + 5 > second {
            let _ = recent.add(&b.delivery);
        }
    }
    let p99 = if recent.is_empty() {
        "-".to_string()
    } else {
        crate::units::format_duration(Duration::from_micros(recent.value_at_quantile(0.99)))
    };
    let rate = |bytes: u64| crate::units::format_bytes_rate(bytes as f64);
    format!(
        "[{second:>4}s] {phase:<8} {}/{target_clients} connected  {} sent/s  {} delivered/s  {} out  {} in  p99 {p99}  errors {errors}",
        bucket.connected,
        bucket.sent,
        bucket.received,
        rate(bucket.bytes_sent),
        rate(bucket.bytes_received),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::scenario::{Drain, Phase, Steady};

    #[test]
    fn a_line_shows_its_own_second_and_the_phase_of_that_second() {
        let timeline = Timeline::new(&[
            Phase::Steady(Steady { name: "steady".into(), duration: Duration::from_secs(2), rate: (1.0, 1.0) }),
            Phase::Drain(Drain { duration: Duration::from_secs(2) }),
        ]);
        let mut collected = Collected::default();
        for (second, sent) in [(0, 90), (1, 88), (2, 0)] {
            let mut bucket = Second::new();
            bucket.sent = sent;
            bucket.connected = 4;
            collected.seconds.insert(second, bucket);
        }
        let line = status(&collected, &timeline, 1, 4, None);
        assert!(line.starts_with("[   1s] steady   4/4 connected  88 sent/s"), "{line}");
        let line = status(&collected, &timeline, 2, 4, None);
        assert!(line.starts_with("[   2s] drain    4/4 connected  0 sent/s"), "{line}");
        assert!(status(&collected, &timeline, 1, 4, Some(1)).contains("stopped"));
    }

    #[test]
    fn a_tick_for_a_second_already_shown_counts_in_the_next_one() {
        let tick = |second, bytes_received| Tick { sent: 1, bytes_received, ..Tick::new(second) };
        let mut collected = Collected::default();
        absorb(&mut collected, tick(2, 100), 2);
        absorb(&mut collected, tick(1, 40), 2);
        absorb(&mut collected, tick(3, 5), 2);
        assert!(!collected.seconds.contains_key(&1), "second 1 was shown: nothing changes under it");
        assert_eq!((collected.seconds[&2].sent, collected.seconds[&2].bytes_received), (2, 140));
        assert_eq!(collected.seconds[&3].bytes_received, 5);
    }
}
