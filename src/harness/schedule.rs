//! Time in a run: where each phase starts and ends, when each client
//! connects, and each client's send times, fixed in advance from the seed (the
//! open model: a slow server does not slow the schedule down, so latency is
//! measured from the intended send time, as wrk2 does).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::scenario::{Arrival, Phase};

/// One phase placed on the run's clock.
#[derive(Debug, Clone)]
pub struct Span {
    pub phase: Phase,
    pub start: Duration,
    pub end: Duration,
}

/// The phases of a run, end to end.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub spans: Vec<Span>,
}

impl Timeline {
    pub fn new(phases: &[Phase]) -> Timeline {
        let mut start = Duration::ZERO;
        let spans = phases
            .iter()
            .map(|phase| {
                let end = start + phase.duration();
                let span = Span { phase: phase.clone(), start, end };
                start = end;
                span
            })
            .collect();
        Timeline { spans }
    }

    /// When the run ends.
    pub fn end(&self) -> Duration {
        self.spans.last().map_or(Duration::ZERO, |s| s.end)
    }

    /// When sending stops (the start of the drain, or the end).
    pub fn send_end(&self) -> Duration {
        self.spans.iter().find(|s| matches!(s.phase, Phase::Drain(_))).map_or(self.end(), |s| s.start)
    }

    /// When the first steady phase starts.
    pub fn steady_start(&self) -> Duration {
        self.spans.iter().find(|s| matches!(s.phase, Phase::Steady(_))).map_or(Duration::ZERO, |s| s.start)
    }

    /// The total length of the steady phases.
    pub fn steady_duration(&self) -> Duration {
        self.spans.iter().filter(|s| matches!(s.phase, Phase::Steady(_))).map(|s| s.end - s.start).sum()
    }

    /// When client `index` of `total` connects: spread evenly over the ramp, or all at 0.
    pub fn connect_at(&self, index: usize, total: usize) -> Duration {
        match self.spans.first() {
            Some(Span { phase: Phase::Ramp(ramp), .. }) if total > 0 => {
                ramp.duration.mul_f64(index as f64 / total as f64)
            }
            _ => Duration::ZERO,
        }
    }

    /// The phase running at `t`.
    pub fn phase_at(&self, t: Duration) -> Option<&Span> {
        self.spans.iter().find(|s| t >= s.start && t < s.end)
    }
}

/// A client's send times, as offsets from the start of the run.
#[derive(Debug, Clone)]
pub struct SendSchedule {
    rng: StdRng,
    arrival: Arrival,
    /// Messages per second at rate multiplier 1.
    rate: f64,
    /// (start, end, multiplier at start, multiplier at end), in seconds.
    spans: Vec<(f64, f64, f64, f64)>,
    /// The last send time handed out, in seconds.
    t: f64,
    first: bool,
}

impl SendSchedule {
    pub fn new(timeline: &Timeline, rate: f64, arrival: Arrival, seed: u64) -> SendSchedule {
        let spans = timeline
            .spans
            .iter()
            .map(|s| {
                let (from, to) = s.phase.rate();
                (s.start.as_secs_f64(), s.end.as_secs_f64(), from, to)
            })
            .collect();
        SendSchedule { rng: StdRng::seed_from_u64(seed), arrival, rate, spans, t: 0.0, first: true }
    }

    /// The time at which `need` more sends are due, counting from `self.t`:
    /// solves integral(rate, t, t') = need over the piecewise linear rate.
    fn advance(&self, mut need: f64) -> Option<f64> {
        for &(start, end, from, to) in &self.spans {
            if end <= self.t || end <= start {
                continue;
            }
            let t0 = self.t.max(start);
            let slope = self.rate * (to - from) / (end - start);
            let r0 = self.rate * from + slope * (t0 - start);
            let r1 = self.rate * to;
            let area = (r0 + r1) / 2.0 * (end - t0);
            if area >= need && area > 0.0 {
                // r0 * x + slope / 2 * x^2 = need
                let x = if slope.abs() < 1e-12 {
                    need / r0
                } else {
                    (-r0 + (r0 * r0 + 2.0 * slope * need).max(0.0).sqrt()) / slope
                };
                return Some((t0 + x).min(end));
            }
            need -= area;
        }
        None
    }
}

impl Iterator for SendSchedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.arrival == Arrival::Closed || self.rate <= 0.0 {
            return None;
        }
        let need = match self.arrival {
            // Uniform clients start at a random point of their period, so a
            // group does not send in lock-step.
            Arrival::Uniform if self.first => self.rng.random_range(0.0..1.0),
            Arrival::Uniform | Arrival::Closed => 1.0,
            Arrival::Poisson => -self.rng.random_range(f64::EPSILON..1.0).ln(),
        };
        self.first = false;
        let next = self.advance(need)?;
        self.t = next;
        Some(Duration::from_secs_f64(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::scenario::{Drain, Ramp, Steady};

    fn timeline() -> Timeline {
        Timeline::new(&[
            Phase::Ramp(Ramp { duration: Duration::from_secs(2), rate: (0.0, 0.0) }),
            Phase::Steady(Steady { name: "s".into(), duration: Duration::from_secs(10), rate: (1.0, 1.0) }),
            Phase::Drain(Drain { duration: Duration::from_secs(1) }),
        ])
    }

    #[test]
    fn phases_are_placed_end_to_end() {
        let t = timeline();
        assert_eq!(t.end(), Duration::from_secs(13));
        assert_eq!(t.send_end(), Duration::from_secs(12));
        assert_eq!(t.steady_start(), Duration::from_secs(2));
        assert_eq!(t.connect_at(50, 100), Duration::from_secs(1));
        assert_eq!(t.phase_at(Duration::from_secs(5)).unwrap().phase.name(), "s");
    }

    #[test]
    fn uniform_sends_at_the_rate_inside_sending_phases_only() {
        let sends: Vec<Duration> = SendSchedule::new(&timeline(), 10.0, Arrival::Uniform, 7).collect();
        assert!((99..=101).contains(&sends.len()), "{}", sends.len());
        assert!(sends.iter().all(|t| *t >= Duration::from_secs(2) && *t < Duration::from_secs(12)));
        let gaps: Vec<f64> = sends.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        assert!(gaps.iter().all(|g| (g - 0.1).abs() < 1e-6));
    }

    #[test]
    fn poisson_averages_the_rate_and_is_deterministic_per_seed() {
        let a: Vec<Duration> = SendSchedule::new(&timeline(), 100.0, Arrival::Poisson, 1).collect();
        let b: Vec<Duration> = SendSchedule::new(&timeline(), 100.0, Arrival::Poisson, 1).collect();
        let c: Vec<Duration> = SendSchedule::new(&timeline(), 100.0, Arrival::Poisson, 2).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!((900..1100).contains(&a.len()), "{}", a.len());
    }

    #[test]
    fn rates_ramp_linearly() {
        let t = Timeline::new(&[Phase::Steady(Steady {
            name: "up".into(),
            duration: Duration::from_secs(10),
            rate: (0.0, 2.0),
        })]);
        let sends: Vec<Duration> = SendSchedule::new(&t, 10.0, Arrival::Uniform, 3).collect();
        let first_half = sends.iter().filter(|s| s.as_secs_f64() < 5.0).count();
        let second_half = sends.len() - first_half;
        assert!(second_half > 2 * first_half, "{first_half} then {second_half}");
        assert!((90..=110).contains(&sends.len()), "{}", sends.len());
    }

    #[test]
    fn listeners_and_closed_clients_have_no_schedule() {
        assert_eq!(SendSchedule::new(&timeline(), 0.0, Arrival::Poisson, 1).count(), 0);
        assert_eq!(SendSchedule::new(&timeline(), 5.0, Arrival::Closed, 1).count(), 0);
    }
}
