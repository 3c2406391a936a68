//! Watching the generator itself while it runs: how late its event loop
//! wakes up (a saturated generator delays every receive, not only sends), and
//! how much CPU it uses during the steady phases. Both feed the SUSPECT verdict.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::bot::RunContext;
use super::metrics::{Hist, new_hist};
use super::scenario::Phase;

/// How often the probe wakes.
const TICK: Duration = Duration::from_millis(10);

/// What the probe saw.
#[derive(Debug, Clone)]
pub struct Observed {
    /// How late each wake-up was, in microseconds.
    pub loop_lag: Hist,
    /// CPU time and wall time of the steady phases (what ran of them).
    pub steady_cpu: Duration,
    pub steady_wall: Duration,
}

impl Observed {
    /// CPU use during the steady phases, in percent of one core.
    pub fn steady_cpu_percent(&self) -> Option<f64> {
        (!self.steady_wall.is_zero()).then(|| self.steady_cpu.as_secs_f64() / self.steady_wall.as_secs_f64() * 100.0)
    }
}

/// Run until the run ends (or is stopped), sampling loop lag and the CPU
/// used while a steady phase runs.
pub async fn watch(ctx: Arc<RunContext>) -> Observed {
    let mut observed = Observed { loop_lag: new_hist(), steady_cpu: Duration::ZERO, steady_wall: Duration::ZERO };
    let end = ctx.at(ctx.timeline.end());
    let mut steady_since: Option<(Instant, Duration)> = None;
    let mut expected = Instant::now() + TICK;
    loop {
        tokio::select! {
            () = ctx.stop.cancelled() => break,
            () = tokio::time::sleep_until(expected) => {}
        }
        let now = Instant::now();
        let late = now.saturating_duration_since(expected);
        if observed.loop_lag.record(late.as_micros() as u64).is_err() {
            observed.loop_lag.saturating_record(late.as_micros() as u64);
        }
        let steady = ctx
            .timeline
            .phase_at(now.saturating_duration_since(ctx.epoch))
            .is_some_and(|span| matches!(span.phase, Phase::Steady(_)));
        match (steady, steady_since) {
            (true, None) => steady_since = Some((now, cpu_time())),
            (false, Some((since, cpu))) => {
                observed.steady_wall += now - since;
                observed.steady_cpu += cpu_time().saturating_sub(cpu);
                steady_since = None;
            }
            _ => {}
        }
        if now >= end {
            break;
        }
        expected = now + TICK;
    }
    if let Some((since, cpu)) = steady_since {
        observed.steady_wall += since.elapsed();
        observed.steady_cpu += cpu_time().saturating_sub(cpu);
    }
    observed
}

/// User plus system CPU time of this process so far.
pub fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::new(tv.tv_sec().max(0) as u64, (tv.tv_usec().max(0) as u32) * 1000)
            };
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or_default()
}
