//! `report.html`: one self-contained file (no scripts, no external assets,
//! opens offline) with the summary as tables and charts drawn by `plotters`
//! with its SVG backend only: latency by percentile on HdrHistogram's log
//! "1 - p" axis, then over time (phases marked): sent/s and delivered/s on
//! their own scales, bytes/s, connected clients and errors, delivery p99.

use std::fmt::Write as _;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::ms;
use super::summary::{LatencyStats, Summary};
use crate::printable::printable;
use crate::units::{format_bytes, format_bytes_rate};

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
}

/// One second of the run, as the charts need it.
#[derive(Debug, Clone, Default)]
pub struct Moment {
    pub second: u32,
    pub sent: u64,
    pub delivered: u64,
    pub connected: u64,
    pub errors: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Delivery p99 that second, in ms.
    pub p99_ms: Option<f64>,
}

/// What the charts need beyond the summary.
pub struct ChartData {
    /// Latency percentile curves: (1/(1-q), ms).
    pub percentiles: Vec<Series>,
    pub seconds: Vec<Moment>,
}

const W: u32 = 960;
const H: u32 = 300;
pub const RED: RGBColor = RGBColor(0xc0, 0x39, 0x2b);
pub const BLUE: RGBColor = RGBColor(0x2e, 0x86, 0xc1);
pub const GREEN: RGBColor = RGBColor(0x27, 0xae, 0x60);
pub const PURPLE: RGBColor = RGBColor(0x7d, 0x3c, 0x98);

/// Script checks by name, and the total with its rate (pending: still
/// waiting when the run ended, not in the rate).
fn checks_table(out: &mut String, s: &Summary) {
    let c = &s.checks;
    if c.passed + c.failed + c.pending == 0 {
        return;
    }
    let rate = c.rate.map_or("-".to_string(), |r| format!("{:.2}%", r * 100.0));
    let rows: Vec<Vec<String>> = c
        .by_name
        .iter()
        .map(|k| {
            vec![escape(&k.name), k.passed.to_string(), k.failed.to_string(), k.pending.to_string(), String::new()]
        })
        .chain([vec!["all".into(), c.passed.to_string(), c.failed.to_string(), c.pending.to_string(), rate]])
        .collect();
    out.push_str("<h2>Checks</h2>");
    out.push_str(&table(&["check", "passed", "failed", "pending", "rate"], &rows));
}

fn escape(text: &str) -> String {
    printable(text).replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Draw with `plotters` into an SVG string that scales to the page's width.
fn svg(draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>) -> String {
    let mut out = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut out, (W, H)).into_drawing_area();
        let drawn = root.fill(&WHITE).map_err(|e| e.to_string()).and_then(|()| draw(&root));
        drawn.and_then(|()| root.present().map_err(|e| e.to_string()))
    };
    match result {
        // Only the viewBox: without a fixed size the chart takes the page's width.
        Ok(()) => match out.find('>') {
            Some(end) if out.starts_with("<svg") => {
                format!("<svg viewBox=\"0 0 {W} {H}\" xmlns=\"http://www.w3.org/2000/svg\">{}", &out[end + 1..])
            }
            _ => out,
        },
        Err(err) => format!("<p>chart not drawn: {}</p>", escape(&err)),
    }
}

/// 1/(1-q) as a percentile label: 10 -> 90%, 100 -> 99%.
pub fn percentile_label(inverse: f64) -> String {
    let q = (1.0 - 1.0 / inverse.max(1.0)) * 100.0;
    let text = format!("{q:.4}");
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

/// Latency by percentile, x on HdrHistogram's log "1 - p" axis.
pub fn percentile_chart(series: &[Series]) -> String {
    let points = || series.iter().flat_map(|s| s.points.iter());
    let x_max = points().map(|p| p.0).fold(10.0, f64::max).max(10.0);
    let y_max = points().map(|p| p.1).fold(0.0, f64::max).max(0.01) * 1.1;
    let y_min = points().map(|p| p.1).fold(f64::MAX, f64::min).clamp(0.001, y_max / 10.0);
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Latency by percentile", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d((1.0..x_max).log_scale(), (y_min..y_max).log_scale())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("ms (log)")
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| short(*y))
            .draw()
            .map_err(|e| e.to_string())?;
        for s in series {
            draw_line(&mut chart, s)?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })
}

fn draw_line<'a, DB: DrawingBackend + 'a, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    s: &Series,
) -> Result<(), String>
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    let color = s.color;
    chart
        .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
        .map_err(|e| e.to_string())?
        .label(s.name.clone())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    Ok(())
}

fn legend<'a, DB: DrawingBackend + 'a, X: plotters::coord::ranged1d::Ranged, Y: plotters::coord::ranged1d::Ranged>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .position(position)
        .draw()
        .map_err(|e| e.to_string())
}

/// A chart over the run's seconds: `left` on the left axis, `right` (if
/// any) on its own right axis, phase boundaries as dashed lines.
pub fn time_chart(
    title: &str,
    phases: &[(f64, String)],
    left: (&str, &[Series]),
    right: Option<(&str, &[Series])>,
) -> String {
    let end = left.1.iter().chain(right.iter().flat_map(|r| r.1.iter())).flat_map(|s| s.points.iter()).map(|p| p.0);
    let x_max = end.fold(1.0, f64::max).max(phases.last().map_or(1.0, |p| p.0)) + 1.0;
    let top = |series: &[Series]| series.iter().flat_map(|s| s.points.iter()).map(|p| p.1).fold(0.0, f64::max);
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .right_y_label_area_size(if right.is_some() { 60 } else { 0 })
            .build_cartesian_2d(0.0..x_max, 0.0..(top(left.1) * 1.1).max(1.0))
            .map_err(|e| e.to_string())?
            .set_secondary_coord(0.0..x_max, 0.0..right.map_or(1.0, |r| (top(r.1) * 1.1).max(1.0)));
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(left.0)
            .y_label_formatter(&|y| short(*y))
            .draw()
            .map_err(|e| e.to_string())?;
        mark_phases(&mut chart, phases)?;
        for s in left.1 {
            draw_line(&mut chart, s)?;
        }
        if let Some((desc, series)) = right {
            chart
                .configure_secondary_axes()
                .y_desc(desc)
                .y_label_formatter(&|y| short(*y))
                .draw()
                .map_err(|e| e.to_string())?;
            for s in series {
                let color = s.color;
                chart
                    .draw_secondary_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(format!("{} (right axis)", s.name))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
            }
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// Dashed vertical lines where phases start, with their names.
fn mark_phases<'a, DB: DrawingBackend + 'a, X: plotters::coord::ranged1d::Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, plotters::coord::types::RangedCoordf64>>,
    phases: &[(f64, String)],
) -> Result<(), String> {
    let (_, y_range) = (chart.x_range(), chart.y_range());
    let top = y_range.end;
    for (start, name) in phases {
        let style = BLACK.mix(0.35).stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new([(*start, 0.0), (*start, top)], 4, 4, style))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series([Text::new(
                name.clone(),
                (*start, top),
                ("sans-serif", 12).into_font().color(&BLACK.mix(0.6)),
            )])
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn short(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Where each phase starts, from the summary.
fn phase_starts(summary: &Summary) -> Vec<(f64, String)> {
    let mut start = 0.0;
    let mut out = Vec::new();
    for phase in &summary.scenario.phases {
        out.push((start, phase.name.clone()));
        start += phase.seconds;
    }
    if let Some(at) = summary.run.stopped_after_secs {
        out.push((at, "stopped".to_string()));
    }
    out
}

/// The charts over time.
fn time_charts(summary: &Summary, seconds: &[Moment]) -> String {
    let phases = phase_starts(summary);
    let line = |name: &str, color, f: &dyn Fn(&Moment) -> Option<f64>| Series {
        name: name.to_string(),
        color,
        points: seconds.iter().filter_map(|m| f(m).map(|v| (f64::from(m.second), v))).collect(),
    };
    let sent = [line("sent/s", BLUE, &|m| Some(m.sent as f64))];
    let delivered = [line("delivered/s", GREEN, &|m| Some(m.delivered as f64))];
    let out = [line("bytes out/s", BLUE, &|m| Some(m.bytes_sent as f64))];
    let inn = [line("bytes in/s", GREEN, &|m| Some(m.bytes_received as f64))];
    let connected = [line("connected", PURPLE, &|m| Some(m.connected as f64))];
    let errors = [line("errors/s", RED, &|m| Some(m.errors as f64))];
    let p99 = [line("delivery p99", RED, &|m| m.p99_ms)];
    [
        time_chart("Messages over time", &phases, ("sent/s", &sent), Some(("delivered/s", &delivered))),
        time_chart("Bytes over time", &phases, ("bytes out/s", &out), Some(("bytes in/s", &inn))),
        time_chart("Clients and errors over time", &phases, ("connected", &connected), Some(("errors/s", &errors))),
        time_chart("Delivery p99 over time", &phases, ("ms", &p99), None),
    ]
    .concat()
}

/// A table from a header and rows of cells (already escaped).
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table><tr>");
    for h in head {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

fn latency_rows(latency: &std::collections::BTreeMap<String, LatencyStats>) -> Vec<Vec<String>> {
    latency
        .iter()
        .map(|(name, l)| {
            let mut row = vec![escape(name), l.count.to_string()];
            row.extend([l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms].map(ms));
            row
        })
        .collect()
}

/// The summary as tables.
fn tables(s: &Summary) -> String {
    let (m, c, d, t) = (&s.messages, &s.connections, &s.delivery, &s.throughput);
    let mut out = String::from("<h2>Run</h2>");
    let ratio = d.ratio.map_or("-".to_string(), |r| format!("{r:.6}"));
    out.push_str(&table(
        &[
            "connections ok",
            "failed",
            "sent",
            "acked",
            "received",
            "bytes out",
            "bytes in",
            "sent/s",
            "delivered/s",
            "bytes out/s",
            "bytes in/s",
        ],
        &[vec![
            format!("{} of {}", c.ok, c.target),
            c.failed.to_string(),
            m.sent.to_string(),
            m.acked.to_string(),
            m.received.to_string(),
            format_bytes(m.bytes_sent as f64),
            format_bytes(m.bytes_received as f64),
            t.sent_per_sec.map_or("-".into(), |r| format!("{r:.1}")),
            t.delivered_per_sec.map_or("-".into(), |r| format!("{r:.1}")),
            t.sent_bytes_per_sec.map_or("-".into(), format_bytes_rate),
            t.received_bytes_per_sec.map_or("-".into(), format_bytes_rate),
        ]],
    ));
    out.push_str("<h2>Delivery</h2>");
    out.push_str(&table(
        &["expected", "received", "lost", "duplicated", "reordered", "gaps", "recovered", "ratio"],
        &[[d.expected, d.received, d.lost, d.duplicated, d.reordered, d.gaps, d.recovered]
            .iter()
            .map(u64::to_string)
            .chain([ratio])
            .collect()],
    ));
    if d.left_in_room > 0 {
        out.push_str(&format!("<p>{}</p>", escape(&super::report::left_in_room_note(d.left_in_room))));
    }
    checks_table(&mut out, s);
    out.push_str("<h2>Latency (ms)</h2>");
    out.push_str(&table(&["metric", "count", "p50", "p90", "p99", "p99.9", "max"], &latency_rows(&s.latency)));
    out.push_str(&group_table(s));
    if s.targets.len() > 1 {
        out.push_str(&target_table(s));
    }
    out.push_str(&threshold_table(s));
    out
}

fn target_table(s: &Summary) -> String {
    let p99 = |l: &Option<super::summary::LatencyStats>| l.as_ref().map_or("-".to_string(), |l| ms(l.p99_ms));
    let rows: Vec<Vec<String>> = s
        .targets
        .iter()
        .map(|t| {
            vec![
                escape(&t.url),
                t.clients.to_string(),
                t.ok.to_string(),
                t.failed.to_string(),
                t.dropped.to_string(),
                t.sent.to_string(),
                t.received.to_string(),
                p99(&t.connect),
                p99(&t.delivery),
                t.errors.to_string(),
            ]
        })
        .collect();
    let head = [
        "target",
        "clients",
        "connected",
        "failed",
        "dropped",
        "sent",
        "received",
        "connect p99 (ms)",
        "delivery p99 (ms)",
        "errors",
    ];
    format!("<h2>Targets</h2>{}", table(&head, &rows))
}

fn group_table(s: &Summary) -> String {
    let rows: Vec<Vec<String>> = s
        .groups
        .iter()
        .map(|g| {
            let p99 = g.latency.get("delivery").map_or("-".to_string(), |l| ms(l.p99_ms));
            vec![
                escape(&g.name),
                g.clients.to_string(),
                g.sent.to_string(),
                g.expected.to_string(),
                g.received.to_string(),
                g.lost.to_string(),
                g.ratio.map_or("-".to_string(), |r| format!("{r:.6}")),
                p99,
                g.errors.to_string(),
                g.closes.values().sum::<u64>().to_string(),
            ]
        })
        .collect();
    let head = [
        "group",
        "clients",
        "sent",
        "expected",
        "received",
        "lost",
        "ratio",
        "delivery p99 (ms)",
        "errors",
        "closed by server",
    ];
    format!("<h2>Groups</h2>{}", table(&head, &rows))
}

fn threshold_table(s: &Summary) -> String {
    let count = |map: &std::collections::BTreeMap<String, u64>| {
        map.iter().map(|(k, v)| format!("{}: {v}", escape(k))).collect::<Vec<_>>().join(", ")
    };
    let mut out =
        format!("<h2>Errors</h2><p>{}</p>", if s.errors.is_empty() { "none".into() } else { count(&s.errors) });
    if !s.closes.is_empty() {
        let _ = write!(out, "<p>closed by server: {}</p>", count(&s.closes));
    }
    for reason in &s.run.suspect {
        let _ = write!(out, "<p class=\"FAILED\">SUSPECT: {}</p>", escape(reason));
    }
    let rows: Vec<Vec<String>> = s
        .thresholds
        .iter()
        .map(|t| {
            let mark =
                if t.passed { "<span class=\"PASSED\">pass</span>" } else { "<span class=\"FAILED\">FAIL</span>" };
            let observed = t.observed.map_or("no data".to_string(), |v| format!("{v}"));
            let key = if t.implicit { format!("{} (default)", escape(&t.key)) } else { escape(&t.key) };
            vec![mark.to_string(), key, escape(&t.condition), observed]
        })
        .collect();
    let _ = write!(out, "<h2>Thresholds</h2>{}", table(&["", "threshold", "condition", "observed"], &rows));
    out
}

/// The whole report page.
pub fn render(summary: &Summary, charts: &ChartData) -> String {
    let title = format!("chorus run: {}", summary.scenario.name);
    let verdict = if summary.run.interrupted {
        "INTERRUPTED (partial)"
    } else if summary.passed {
        "PASSED"
    } else {
        "FAILED"
    };
    let sc = &summary.scenario;
    let mut page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>\
         body{{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}\
         svg{{width:100%;height:auto;display:block;margin:.8em 0}}\
         table{{border-collapse:collapse;margin:.4em 0}} th,td{{padding:.2em .7em;border-bottom:1px solid #ddd;text-align:right}}\
         th{{background:#f4f4f4}} td:first-child,th:first-child{{text-align:left}}\
         .verdict{{font-weight:bold;font-size:1.2em}} .FAILED{{color:#b00}} .PASSED{{color:#070}} .INTERRUPTED{{color:#a60}}</style></head><body>\
         <h1>{t}</h1><p>{d}</p><p>target {target} · protocol {protocol} · seed {seed} · {clients} clients · {secs:.1}s (steady {steady:.1}s){over}</p>\
         <p class=\"verdict {class}\">{verdict}</p>",
        t = escape(&title),
        d = escape(&sc.description),
        target = escape(&sc.target),
        protocol = escape(&sc.protocol),
        seed = sc.seed,
        clients = sc.clients,
        secs = summary.run.duration_secs,
        steady = summary.run.steady_secs,
        over = if sc.overrides.is_empty() {
            String::new()
        } else {
            format!(" · overrides {}", escape(&sc.overrides.join(" ")))
        },
        class = verdict.split(' ').next().unwrap_or(verdict),
    );
    page.push_str(&percentile_chart(&charts.percentiles));
    page.push_str(&time_charts(summary, &charts.seconds));
    page.push_str(&tables(summary));
    page.push_str("<p>Files beside this one: summary.json (schema in the chorus README), metrics.json, timeseries.csv, hdr/*.hgrm.</p></body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_scalable_svg_with_a_line_per_series_and_phases_marked() {
        let sent = [Series { name: "sent/s".into(), color: BLUE, points: vec![(0.0, 10.0), (1.0, 12.0), (2.0, 11.0)] }];
        let delivered =
            [Series { name: "delivered/s".into(), color: GREEN, points: vec![(0.0, 9000.0), (1.0, 9900.0)] }];
        let phases = [(0.0, "ramp".to_string()), (1.0, "steady".to_string())];
        let svg = time_chart("Messages", &phases, ("sent/s", &sent), Some(("delivered/s", &delivered)));
        assert!(svg.contains("delivered/s (right axis)"), "its own scale");
        assert!(svg.contains("\nsteady\n"), "phases are marked");
        assert!(svg.starts_with("<svg viewBox=\"0 0 960 300\" xmlns="), "no fixed size: it scales to the page");
        assert!(svg.matches("<polyline").count() >= 2);
    }

    #[test]
    fn percentile_labels() {
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
    }
}
