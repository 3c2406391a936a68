//! Thresholds: `"delivery.p99" = "< 50ms"`, `"delivery.ratio" = ">= 1.0"`,
//! `"group.talkers.ack.p99" = "< 20ms"`. They decide the exit code, as in k6.

use std::fmt;

use super::scenario::Protocol;

/// Latency metrics, each a histogram in the results.
pub const LATENCY_METRICS: &[&str] = &[
    "delivery",
    "delivery.text",
    "delivery.binary",
    "delivery_raw",
    "ack",
    "ack.text",
    "ack.binary",
    "ack.rename",
    "ack_raw",
    "connect",
    "lag",
    "recovery",
    "loop_lag",
    "delivery.file",
    "ack.file",
    "history",
];

/// Statistics of a latency metric.
pub const STATS: &[&str] = &["p50", "p90", "p95", "p99", "p99.9", "p999", "max", "min", "mean", "count"];

/// Counters and ratios; the first `LIVE_COUNTERS` are also in the live
/// per-second figures (see `followed_live`).
pub const COUNTERS: &[&str] = &[
    "delivery.ratio",
    "delivery.lost",
    "errors",
    "messages.sent",
    "messages.received",
    "checks.rate",
    "checks.passed",
    "checks.failed",
    "throughput.sent",
    "throughput.delivered",
    "delivery.duplicated",
    "delivery.reordered",
    "delivery.missing",
    "delivery.recovered",
    "gaps",
    "connect.failed",
    "files.stored",
    "files.upload_mb_per_sec",
    "checks.pending",
];

/// How many of `COUNTERS`, from the first, the live figures carry.
const LIVE_COUNTERS: usize = 8;

/// Whether the live per-second figures carry what threshold `key` reads:
/// the run's counts of sends, deliveries, acks, errors and checks, and the
/// `delivery` and `ack` latencies as a whole. Files, connection failures,
/// sequence holes and recoveries, latency by kind and per-group keys are
/// known only at the end.
pub fn followed_live(key: &str) -> bool {
    match parse_quantity(key) {
        Ok(Quantity::Counter(name)) => COUNTERS[..LIVE_COUNTERS].contains(&name.as_str()),
        Ok(Quantity::Latency { metric, .. }) => metric == "delivery" || metric == "ack",
        // `group.<name>.*`, or a key that is no threshold.
        Err(_) => false,
    }
}

/// What a threshold looks at.
#[derive(Debug, Clone, PartialEq)]
pub enum Quantity {
    /// A statistic of a latency histogram, in milliseconds (`count`: a number).
    Latency { metric: String, stat: String },
    /// A counter or ratio by its key.
    Counter(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn holds(self, observed: f64, limit: f64) -> bool {
        match self {
            Op::Lt => observed < limit,
            Op::Le => observed <= limit,
            Op::Gt => observed > limit,
            Op::Ge => observed >= limit,
            Op::Eq => (observed - limit).abs() < 1e-9,
            Op::Ne => (observed - limit).abs() >= 1e-9,
        }
    }
}

/// One threshold from the `[thresholds]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// As written, e.g. `group.talkers.delivery.p99`.
    pub key: String,
    /// As written, e.g. `< 50ms`.
    pub condition: String,
    /// `None`: the whole run; `Some(name)`: one group.
    pub group: Option<String>,
    pub quantity: Quantity,
    pub op: Op,
    /// The limit; milliseconds for latencies.
    pub limit: f64,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key, self.condition)
    }
}

impl Threshold {
    /// Parse a key and its condition; the error says what is accepted.
    pub fn parse(key: &str, condition: &str, protocol: Protocol, groups: &[&str]) -> Result<Threshold, String> {
        let (group, rest) = match key.strip_prefix("group.") {
            Some(rest) => {
                let Some((name, rest)) = rest.split_once('.') else {
                    return Err("group thresholds are written group.<name>.<metric>".into());
                };
                if !groups.contains(&name) {
                    return Err(format!("names no group {name:?}; groups are {}", groups.join(", ")));
                }
                (Some(name.to_string()), rest)
            }
            None => (None, key),
        };
        let quantity = parse_quantity(rest)?;
        if protocol == Protocol::Raw
            && let Quantity::Latency { metric, .. } = &quantity
            && metric.starts_with("ack")
        {
            return Err("raw servers send no acks: use delivery.* thresholds".into());
        }
        let (op, value) = parse_condition(condition)?;
        let limit = match &quantity {
            Quantity::Latency { stat, .. } if stat != "count" => parse_millis(value)?,
            _ => value.parse::<f64>().map_err(|_| format!("{value:?} is not a number"))?,
        };
        Ok(Threshold { key: key.to_string(), condition: condition.trim().to_string(), group, quantity, op, limit })
    }

    /// `errors == 0`, the check a scenario gets when it sets none on errors.
    pub fn default_errors() -> Threshold {
        Threshold {
            key: "errors".into(),
            condition: "== 0".into(),
            group: None,
            quantity: Quantity::Counter("errors".into()),
            op: Op::Eq,
            limit: 0.0,
        }
    }

    /// Does the observed value pass? A missing value (no samples) fails.
    pub fn passes(&self, observed: Option<f64>) -> bool {
        observed.is_some_and(|v| self.op.holds(v, self.limit))
    }
}

fn parse_quantity(key: &str) -> Result<Quantity, String> {
    if COUNTERS.contains(&key) {
        return Ok(Quantity::Counter(key.to_string()));
    }
    for stat in STATS {
        if let Some(metric) = key.strip_suffix(stat).and_then(|m| m.strip_suffix('.'))
            && LATENCY_METRICS.contains(&metric)
        {
            let stat = if *stat == "p999" { "p99.9" } else { stat };
            return Ok(Quantity::Latency { metric: metric.to_string(), stat: stat.to_string() });
        }
    }
    Err(format!(
        "is not a known threshold; use <metric>.<stat> with metric one of {} and stat one of {}, or one of {}",
        LATENCY_METRICS.join(", "),
        STATS.join(", "),
        COUNTERS.join(", ")
    ))
}

fn parse_condition(condition: &str) -> Result<(Op, &str), String> {
    let condition = condition.trim();
    let ops = [("<=", Op::Le), (">=", Op::Ge), ("==", Op::Eq), ("!=", Op::Ne), ("<", Op::Lt), (">", Op::Gt)];
    for (symbol, op) in ops {
        if let Some(value) = condition.strip_prefix(symbol) {
            return Ok((op, value.trim()));
        }
    }
    Err(format!("condition {condition:?} must start with <, <=, >, >=, == or != (e.g. \"< 50ms\")"))
}

/// A latency limit in milliseconds: `50ms`, `1.5s`, `800us`, or a bare number of ms.
fn parse_millis(value: &str) -> Result<f64, String> {
    let split = value.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("{value:?} is not a duration like 50ms"))?;
    let factor = match unit.trim() {
        "" | "ms" => 1.0,
        "s" => 1000.0,
        "us" | "µs" => 0.001,
        other => return Err(format!("unknown unit {other:?} in {value:?}; use us, ms or s")),
    };
    Ok(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(key: &str, condition: &str) -> Result<Threshold, String> {
        Threshold::parse(key, condition, Protocol::Chorus, &["talkers"])
    }

    #[test]
    fn latency_thresholds() {
        let t = parse("delivery.p99", "< 50ms").unwrap();
        assert_eq!(t.quantity, Quantity::Latency { metric: "delivery".into(), stat: "p99".into() });
        assert_eq!((t.op, t.limit), (Op::Lt, 50.0));
        assert!(t.passes(Some(49.9)));
        assert!(!t.passes(Some(50.0)));
        assert!(!t.passes(None), "no samples fails");
        assert_eq!(parse("ack.p99.9", "<= 1.5s").unwrap().limit, 1500.0);
        assert_eq!(parse("connect.p999", "< 800us").unwrap().limit, 0.8);
        let t = parse("group.talkers.delivery.text.max", "< 2").unwrap();
        assert_eq!(t.group.as_deref(), Some("talkers"));
    }

    #[test]
    fn counters() {
        let t = parse("delivery.ratio", ">= 1.0").unwrap();
        assert!(t.passes(Some(1.0)));
        assert!(!t.passes(Some(0.999)));
        assert!(parse("errors", "== 0").unwrap().passes(Some(0.0)));
    }

    #[test]
    fn errors_say_what_is_accepted() {
        assert!(parse("latency.p99", "< 5ms").unwrap_err().contains("delivery"));
        assert!(parse("delivery.p99", "fast").unwrap_err().contains("must start with"));
        assert!(parse("delivery.p99", "< 5 lightyears").unwrap_err().contains("unknown unit"));
        assert!(parse("group.nobody.errors", "== 0").unwrap_err().contains("talkers"));
        let raw = Threshold::parse("ack.p99", "< 5ms", Protocol::Raw, &[]).unwrap_err();
        assert!(raw.contains("raw servers send no acks"));
    }
}
