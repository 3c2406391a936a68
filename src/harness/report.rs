//! Reports, pure functions of a `Summary`: the terminal report, and the side
//! by side comparison of two runs. (`html.rs` renders the HTML one.)

use std::fmt::Write as _;

use super::summary::{LatencyStats, Summary};
use crate::printable::printable;
use crate::units::{format_bytes, format_bytes_rate};

/// Latency rows shown, in order, when they have samples.
const ROWS: &[&str] = &[
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

/// Milliseconds with the digits they need.
pub(crate) fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

fn count_list(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_string();
    }
    // Error codes and close reasons come from the server: shown, never obeyed.
    map.iter().map(|(k, v)| format!("{}: {v}", printable(k))).collect::<Vec<_>>().join(", ")
}

/// The terminal report of a run.
pub fn text(s: &Summary) -> String {
    let mut out = String::new();
    header(&mut out, s);
    connections(&mut out, s);
    messages(&mut out, s);
    throughput(&mut out, s);
    latency_table(&mut out, s);
    delivery(&mut out, s);
    files_and_checks(&mut out, s);
    if s.groups.len() > 1 {
        groups_table(&mut out, s);
    }
    if s.targets.len() > 1 {
        targets_table(&mut out, s);
    }
    errors_and_generator(&mut out, s);
    thresholds(&mut out, s);
    out
}

/// What ran, against what, from where; whether it was interrupted.
fn header(out: &mut String, s: &Summary) {
    let sc = &s.scenario;
    let _ = writeln!(
        out,
        "chorus run: {}{}",
        sc.name,
        if sc.description.is_empty() { String::new() } else { format!(" — {}", sc.description) }
    );
    let where_ = match sc.targets.len() {
        _ if sc.embedded_server => "embedded server".to_string(),
        0 | 1 => "external server".to_string(),
        n => format!("{n} external servers, spread {}", if sc.spread.is_empty() { "round-robin" } else { &sc.spread }),
    };
    let shard = s.run.shard.as_ref().map(|sh| format!(" · shard {sh}")).unwrap_or_default();
    let merged = if s.run.merged_from > 1 { format!(" · {} shards merged", s.run.merged_from) } else { String::new() };
    let _ = writeln!(
        out,
        "target {} ({where_}) · protocol {} · seed {} · {} clients · {:.1}s (steady {:.1}s){shard}{merged}",
        sc.target, sc.protocol, sc.seed, sc.clients, s.run.duration_secs, s.run.steady_secs
    );
    if !sc.overrides.is_empty() {
        let _ = writeln!(out, "overrides {}", sc.overrides.join(" "));
    }
    if !s.run.sources.is_empty() {
        let _ = writeln!(out, "connected from {}", s.run.sources.join(", "));
    }
    if s.run.interrupted {
        let at = s.run.stopped_after_secs.map(|t| format!(" at {t:.1}s")).unwrap_or_default();
        let _ = writeln!(
            out,
            "INTERRUPTED (partial): stopped{at}; the figures cover only what ran, rates the {:.1}s spent sending",
            s.run.steady_secs
        );
    }
    let _ = writeln!(out);
}

fn connections(out: &mut String, s: &Summary) {
    let c = &s.connections;
    let connect = s
        .latency
        .get("connect")
        .map(|l| format!("  connect p50 {}ms  p99 {}ms", ms(l.p50_ms), ms(l.p99_ms)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "connections  {} of {} ok, {} failed{connect}  reconnects {}  dropped {}",
        c.ok, c.target, c.failed, c.reconnects, c.dropped
    );
}

/// Messages and bytes sent and received, and what went unanswered.
fn messages(out: &mut String, s: &Summary) {
    let m = &s.messages;
    let _ = writeln!(
        out,
        "messages     sent {} (text {}, binary {}, rename {}, file {})  acked {}  received {}  skipped {}",
        m.sent, m.sent_text, m.sent_binary, m.sent_rename, m.sent_file, m.acked, m.received, m.skipped
    );
    let _ = writeln!(
        out,
        "bytes        sent {}  received {}",
        format_bytes(m.bytes_sent as f64),
        format_bytes(m.bytes_received as f64)
    );
    if m.acked == 0 && m.sent > 0 && s.scenario.protocol != "raw" {
        let _ = writeln!(
            out,
            "WARNING      none of the {} sends was acknowledged: the server refused or ignored them",
            m.sent
        );
    }
    if m.unacked > 0 {
        let _ = writeln!(
            out,
            "             unacknowledged {} (the connection ended before the answer; what they delivered is not in expected)",
            m.unacked
        );
    }
    let _ = writeln!(out, "             foreign frames {}  echoes of our own {}", m.foreign, m.echoes);
}

fn throughput(out: &mut String, s: &Summary) {
    let t = &s.throughput;
    let (Some(sent), Some(delivered), Some(out_rate), Some(in_rate)) =
        (t.sent_per_sec, t.delivered_per_sec, t.sent_bytes_per_sec, t.received_bytes_per_sec)
    else {
        let _ = writeln!(out, "throughput   - (no whole second of a steady phase ran)\n");
        return;
    };
    // Results written before `throughput.seconds` existed (0 there) had rates over the steady time.
    let seconds = match t.seconds {
        0 => "steady phases".to_string(),
        1 => "the 1 second of steady phases".to_string(),
        n => format!("the {n} seconds of steady phases"),
    };
    let _ = writeln!(
        out,
        "throughput   {sent:.1} sent/s  {delivered:.1} delivered/s  {} out  {} in ({seconds})\n",
        format_bytes_rate(out_rate),
        format_bytes_rate(in_rate)
    );
}

/// Deliveries expected and what became of them.
fn delivery(out: &mut String, s: &Summary) {
    let d = &s.delivery;
    let _ = writeln!(out, "\ndelivery       expected   received       lost  duplicated  reordered     ratio");
    let ratio = d.ratio.map_or("-".to_string(), |r| format!("{r:.6}"));
    let _ = writeln!(
        out,
        "             {:>10} {:>10} {:>10} {:>11} {:>10} {:>9}",
        d.expected, d.received, d.lost, d.duplicated, d.reordered, ratio
    );
    if let Some(shard) = &s.run.shard {
        let _ = writeln!(
            out,
            "             (shard {shard}: expected counts every recipient of this shard's sends, received only \
             this shard's clients; lost, ratio and the groups' figures mean something on the merge)"
        );
    }
    if d.gaps > 0 || d.recovered > 0 {
        let _ = writeln!(
            out,
            "             fell behind: {} gap(s) announcing {} message(s), {} recovered through history; \
             sequence holes never filled {}",
            d.gaps, d.gap_messages, d.recovered, d.missing
        );
    } else if d.missing > 0 {
        let _ = writeln!(
            out,
            "             sequence holes never filled {} (messages of a sender its receivers never saw, though \
             no gap was announced)",
            d.missing
        );
    }
    if d.left_in_room > 0 {
        let _ = writeln!(out, "             {}", left_in_room_note(d.left_in_room));
    }
}

/// Why some deliveries to clients that left may be lost (`Delivery::left_in_room`).
pub(super) fn left_in_room_note(leaves: u64) -> String {
    format!(
        "{leaves} leave(s) closed from their room (the server refused their step out to a room of their own, \
         or did not confirm it in time): what was in flight to them is lost with them"
    )
}

/// Errors, closes by the server, and whether the generator kept up.
fn errors_and_generator(out: &mut String, s: &Summary) {
    let _ = writeln!(out, "\nerrors       {}", count_list(&s.errors));
    if !s.closes.is_empty() {
        let _ = writeln!(out, "closed by server  {}", count_list(&s.closes));
    }
    let cpu = format!("generator CPU {:.0}% of {} core(s)", s.run.generator_cpu_percent, s.run.cores);
    if s.run.suspect.is_empty() {
        let _ = writeln!(out, "generator    ok ({cpu}; scheduler kept up)");
    } else {
        let _ = writeln!(out, "SUSPECT      the load generator may have distorted this run ({cpu}):");
        for reason in &s.run.suspect {
            let _ = writeln!(out, "             - {reason}");
        }
    }
}

/// File uploads and script checks, when the run had any.
fn files_and_checks(out: &mut String, s: &Summary) {
    let f = &s.files;
    if f.sent > 0 {
        let speed = f.upload_mb_per_sec.map_or("-".to_string(), |v| format!("{v:.1} MB/s"));
        let announce = s
            .latency
            .get("delivery.file")
            .map(|l| format!("  announced at recipients p50 {}ms  p99 {}ms", ms(l.p50_ms), ms(l.p99_ms)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "
files        sent {}  stored {} ({})  upload {speed}  received by others {}{announce}",
            f.sent,
            f.stored,
            format_bytes(f.bytes as f64),
            f.received
        );
    }
    let c = &s.checks;
    if c.passed + c.failed + c.pending > 0 {
        let rate = c.rate.map_or("-".to_string(), |r| format!("{:.2}%", r * 100.0));
        let pending = match c.pending {
            0 => String::new(),
            n => format!("; {n} still waiting when the run ended, not counted"),
        };
        let _ = writeln!(
            out,
            "
checks       {rate} passed ({} of {}{pending})",
            c.passed,
            c.passed + c.failed
        );
        for check in &c.by_name {
            let mark = match (check.failed, check.passed) {
                (0, 0) => "-",
                (0, _) => "ok",
                _ => "FAILED",
            };
            let pending = match check.pending {
                0 => String::new(),
                n => format!("  pending {n}"),
            };
            let _ = writeln!(
                out,
                "  {mark:<6} {:<40} passed {}  failed {}{pending}",
                printable(&check.name),
                check.passed,
                check.failed
            );
        }
    }
}

fn latency_table(out: &mut String, s: &Summary) {
    let _ = writeln!(out, "latency (ms)          count       p50       p90       p99     p99.9       max");
    for name in ROWS {
        if let Some(l) = s.latency.get(*name) {
            latency_row(out, name, l);
        }
    }
}

fn latency_row(out: &mut String, name: &str, l: &LatencyStats) {
    let _ = writeln!(
        out,
        "  {name:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        l.count,
        ms(l.p50_ms),
        ms(l.p90_ms),
        ms(l.p99_ms),
        ms(l.p999_ms),
        ms(l.max_ms)
    );
}

fn groups_table(out: &mut String, s: &Summary) {
    let _ = writeln!(
        out,
        "\ngroups         clients      sent   expected   received       lost     ratio  delivery p99  errors  closed by server"
    );
    for g in &s.groups {
        let p99 = g.latency.get("delivery").map_or("-".to_string(), |l| format!("{}ms", ms(l.p99_ms)));
        let ratio = g.ratio.map_or("-".to_string(), |r| format!("{r:.6}"));
        let closed: u64 = g.closes.values().sum();
        let _ = writeln!(
            out,
            "  {:<12} {:>7} {:>9} {:>10} {:>10} {:>10} {:>9} {:>13} {:>7} {:>17}",
            g.name, g.clients, g.sent, g.expected, g.received, g.lost, ratio, p99, g.errors, closed
        );
    }
    let _ =
        writeln!(out, "               (lost: each group's share of the run's, what its clients never read included)");
}

fn targets_table(out: &mut String, s: &Summary) {
    let width = s.targets.iter().map(|t| t.url.len()).max().unwrap_or(0).max(12);
    let _ = writeln!(
        out,
        "\n{:<width$}  clients  connected  failed  dropped       sent   received  connect p99  delivery p99  errors",
        "targets",
        width = width + 2
    );
    for t in &s.targets {
        let p99 = |l: &Option<LatencyStats>| l.as_ref().map_or("-".to_string(), |l| format!("{}ms", ms(l.p99_ms)));
        let _ = writeln!(
            out,
            "  {:<width$}  {:>7}  {:>9}  {:>6}  {:>7}  {:>9}  {:>9}  {:>11}  {:>12}  {:>6}",
            printable(&t.url),
            t.clients,
            t.ok,
            t.failed,
            t.dropped,
            t.sent,
            t.received,
            p99(&t.connect),
            p99(&t.delivery),
            t.errors,
        );
    }
    let _ = writeln!(
        out,
        "{:width$}(received: what the clients on that server got, sent from any of them)",
        "",
        width = width + 4
    );
}

fn thresholds(out: &mut String, s: &Summary) {
    if s.run.shard.is_some() && !s.scenario.thresholds.is_empty() {
        let _ = writeln!(
            out,
            "\nthresholds   checked on the merged shards (chorus report --merge DIR...): one shard sees only part of the deliveries"
        );
        return;
    }
    if s.thresholds.is_empty() {
        let _ = writeln!(out, "\nthresholds   none set");
        return;
    }
    let _ = writeln!(out, "\nthresholds");
    for t in &s.thresholds {
        let mark = if t.passed { "pass" } else { "FAIL" };
        let is_latency = t.key.rsplit_once('.').is_some_and(|(metric, stat)| {
            ["p50", "p90", "p95", "p99", "p999", "max", "min", "mean"].contains(&stat) || metric.ends_with(".p99")
        });
        let observed = match t.observed {
            Some(v) if is_latency => format!("{}ms", ms(v)),
            Some(v) => format!("{v}"),
            None => "no data".to_string(),
        };
        let default = if t.implicit { "  (default: the scenario sets no errors threshold)" } else { "" };
        let _ = writeln!(out, "  {mark}  {:<32} {:<10} observed {observed}{default}", t.key, t.condition);
    }
    let failed = s.thresholds.iter().filter(|t| !t.passed).count();
    if s.run.interrupted {
        let passed = s.thresholds.len() - failed;
        let _ = writeln!(
            out,
            "\nresult: INTERRUPTED (partial): {passed} of {} threshold(s) held over what ran",
            s.thresholds.len()
        );
    } else if failed == 0 {
        let _ = writeln!(out, "\nresult: PASSED ({} threshold(s))", s.thresholds.len());
    } else {
        let _ = writeln!(out, "\nresult: FAILED ({failed} of {} threshold(s))", s.thresholds.len());
    }
}

/// Which way is better for a compared figure.
#[derive(Clone, Copy)]
enum Better {
    Lower,
    Higher,
}

/// A compared figure with the digits it needs: ratios to six decimals
/// (0.992835, not 0.99), counts whole, rates to one decimal.
fn figure(name: &str, v: f64, unit: &str) -> String {
    if unit == "ms" {
        format!("{}ms", ms(v))
    } else if name.contains("ratio") || name == "checks.rate" {
        format!("{v:.6}")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A run's result, as the comparison's first line gives it.
fn outcome(s: &Summary) -> String {
    match (&s.run.shard, s.run.interrupted) {
        (Some(shard), false) => format!("SHARD {shard} (thresholds not checked)"),
        (Some(shard), true) => format!("SHARD {shard}, INTERRUPTED (partial; thresholds not checked)"),
        (None, true) => "INTERRUPTED (partial)".to_string(),
        (None, false) if s.passed => "PASSED".to_string(),
        (None, false) => "FAILED".to_string(),
    }
}

/// The latency statistics compared; file and history rows take the first two.
const ALL_STATS: [&str; 4] = ["p50", "p99", "p99.9", "max"];

/// Two runs side by side, with deltas; regressions are marked.
pub fn compare(this: &Summary, base: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "chorus report: {} ({})  vs  baseline {} ({})",
        this.scenario.name, this.run.started_at, base.scenario.name, base.run.started_at
    );
    let _ = writeln!(out, "result: this {}, baseline {}", outcome(this), outcome(base));
    let _ = writeln!(out, "\n{:<24} {:>12} {:>12} {:>10}", "figure", "this", "baseline", "change");
    let mut regressions = 0;
    let mut row = |out: &mut String, name: &str, a: Option<f64>, b: Option<f64>, better: Better, unit: &str| {
        let show = |v: Option<f64>| v.map_or("-".to_string(), |v| figure(name, v, unit));
        let (change, mark) = match (a, b) {
            (Some(a), Some(b)) if b != 0.0 => {
                let pct = (a - b) / b.abs() * 100.0;
                let worse = match better {
                    Better::Lower => pct > 10.0 && (a - b) > if unit == "ms" { 0.1 } else { 0.0 },
                    Better::Higher => pct < -10.0 || (unit.is_empty() && name.contains("ratio") && a < b),
                };
                (format!("{pct:+.2}%"), if worse { "  ▲ regression" } else { "" })
            }
            (Some(a), Some(b)) if a > b && matches!(better, Better::Lower) => ("new".to_string(), "  ▲ regression"),
            _ => (String::new(), ""),
        };
        if !mark.is_empty() {
            regressions += 1;
        }
        let _ = writeln!(out, "{name:<24} {:>12} {:>12} {change:>10}{mark}", show(a), show(b));
    };
    // Files (an upload, offer to ack; its announcement at the others) and
    // history reads, where either run has them, by their median and p99.
    let latencies = [("delivery", &ALL_STATS[..]), ("ack", &ALL_STATS), ("connect", &ALL_STATS)]
        .into_iter()
        .chain(["ack.file", "delivery.file", "history"].map(|metric| (metric, &ALL_STATS[..2])));
    for (metric, stats) in latencies {
        for &stat in stats {
            let get = |s: &Summary| s.latency.get(metric).and_then(|l| l.stat(stat));
            if get(this).is_some() || get(base).is_some() {
                row(&mut out, &format!("{metric}.{stat}"), get(this), get(base), Better::Lower, "ms");
            }
        }
    }
    let (t, b) = (&this.throughput, &base.throughput);
    row(&mut out, "throughput sent/s", t.sent_per_sec, b.sent_per_sec, Better::Higher, "");
    row(&mut out, "throughput delivered/s", t.delivered_per_sec, b.delivered_per_sec, Better::Higher, "");
    let round = |rate: Option<f64>| rate.map(f64::round);
    row(&mut out, "bytes out/s", round(t.sent_bytes_per_sec), round(b.sent_bytes_per_sec), Better::Higher, "");
    row(&mut out, "bytes in/s", round(t.received_bytes_per_sec), round(b.received_bytes_per_sec), Better::Higher, "");
    row(&mut out, "delivery.ratio", this.delivery.ratio, base.delivery.ratio, Better::Higher, "");
    row(&mut out, "delivery.lost", Some(this.delivery.lost as f64), Some(base.delivery.lost as f64), Better::Lower, "");
    let errors = |s: &Summary| Some(s.errors.values().sum::<u64>() as f64);
    row(&mut out, "errors", errors(this), errors(base), Better::Lower, "");
    if this.checks.rate.is_some() || base.checks.rate.is_some() {
        row(&mut out, "checks.rate", this.checks.rate, base.checks.rate, Better::Higher, "");
    }
    let (f, g) = (&this.files, &base.files);
    if f.upload_mb_per_sec.is_some() || g.upload_mb_per_sec.is_some() {
        row(&mut out, "files upload MB/s", f.upload_mb_per_sec, g.upload_mb_per_sec, Better::Higher, "");
    }
    row(
        &mut out,
        "connect failures",
        Some(this.connections.failed as f64),
        Some(base.connections.failed as f64),
        Better::Lower,
        "",
    );
    let verdict =
        if regressions == 0 { "no regressions".to_string() } else { format!("{regressions} regression(s) marked ▲") };
    let _ =
        writeln!(out, "\n{verdict} (latency: worse by more than 10% and 0.1ms; throughput: lower by more than 10%)");
    compare_notes(&mut out, this, base);
    out
}

/// What makes two runs not like for like: other scenarios, a stop, a generator that fell behind.
fn compare_notes(out: &mut String, this: &Summary, base: &Summary) {
    if this.scenario.name != base.scenario.name {
        let _ = writeln!(
            out,
            "note: the runs are of different scenarios ({} and {}): the figures are not like for like",
            this.scenario.name, base.scenario.name
        );
    }
    for (which, s) in [("this run", this), ("the baseline", base)] {
        if s.run.interrupted {
            let _ = writeln!(out, "note: {which} was interrupted: its figures cover only what ran");
        }
        if let Some(shard) = &s.run.shard {
            let _ = writeln!(
                out,
                "note: {which} is one shard ({shard}) of a run: its throughput is its clients' share, and its \
                 delivery ratio counts deliveries to its clients against its own sends' recipients; compare \
                 merged results (chorus report --merge)"
            );
        }
    }
    if !this.run.suspect.is_empty() || !base.run.suspect.is_empty() {
        let _ =
            writeln!(out, "note: at least one run is marked SUSPECT (its generator fell behind); compare with care");
    }
}
