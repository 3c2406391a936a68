//! `report.html`: one self-contained file (no scripts, no external assets)
//! with the summary tables and SVG charts: latency by percentile, throughput
//! over time and p99 over time.

use std::fmt::Write as _;

use super::report;
use super::summary::Summary;

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// What the charts need beyond the summary.
pub struct ChartData {
    /// Latency percentile curves: (1/(1-q), ms).
    pub percentiles: Vec<Series>,
    /// Per second: sent/s and delivered/s.
    pub throughput: Vec<Series>,
    /// Per second: delivery p99 in ms.
    pub p99: Vec<Series>,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A line chart as inline SVG; `log_x` plots x on a log10 scale.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series], log_x: bool) -> String {
    const W: f64 = 640.0;
    const H: f64 = 280.0;
    const L: f64 = 60.0;
    const R: f64 = 20.0;
    const T: f64 = 30.0;
    const B: f64 = 40.0;
    let fx = |x: f64| if log_x { x.max(1.0).log10() } else { x };
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for (x, y) in points {
        x0 = x0.min(fx(*x));
        x1 = x1.max(fx(*x));
        y1 = y1.max(*y);
    }
    let mut svg = format!(
        "<svg viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{t}\">\
         <text x=\"{L}\" y=\"18\" font-weight=\"bold\">{t}</text>",
        t = escape(title)
    );
    if x0 > x1 {
        svg.push_str("<text x=\"60\" y=\"140\">no data</text></svg>");
        return svg;
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.1 };
    let px = |x: f64| L + (fx(x) - x0) / (x1 - x0) * (W - L - R);
    let py = |y: f64| H - B - y / y1 * (H - T - B);
    let _ = write!(
        svg,
        "<line x1=\"{L}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/><line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{b}\" stroke=\"#999\"/>",
        b = H - B,
        r = W - R
    );
    for i in 0..=4 {
        let y = y1 * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            L - 4.0,
            py(y) + 4.0,
            short(y)
        );
    }
    // Log axes tick at the nines (0%, 90%, 99%, 99.9%...); linear ones at quarters.
    let ticks: Vec<f64> = if log_x {
        (0..=8).map(f64::from).filter(|x| *x >= x0 - 1e-9 && *x <= x1 + 1e-9).collect()
    } else {
        (0..=4).map(|i| x0 + (x1 - x0) * f64::from(i) / 4.0).collect()
    };
    for x in ticks {
        let label = if log_x { percentile_label(10f64.powf(x)) } else { short(x) };
        let xpos = L + (x - x0) / (x1 - x0) * (W - L - R);
        let _ = write!(
            svg,
            "<text x=\"{xpos:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{label}</text>",
            H - B + 16.0
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\
         <text x=\"12\" y=\"{}\" font-size=\"11\" transform=\"rotate(-90 12 {})\" text-anchor=\"middle\">{}</text>",
        (L + W - R) / 2.0,
        H - 6.0,
        escape(x_label),
        H / 2.0,
        H / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let path: Vec<String> = s.points.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\" points=\"{}\"/>",
            s.color,
            path.join(" ")
        );
        let ly = T + 14.0 * i as f64;
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"3\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>",
            W - R - 150.0,
            ly - 4.0,
            s.color,
            W - R - 136.0,
            ly,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// 1/(1-q) back as a percentile label: 10 -> 90%, 100 -> 99%.
fn percentile_label(inverse: f64) -> String {
    let q = (1.0 - 1.0 / inverse.max(1.0)) * 100.0;
    let text = format!("{q:.3}");
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

/// The whole report page.
pub fn render(summary: &Summary, charts: &ChartData) -> String {
    let title = format!("chorus run: {}", summary.scenario.name);
    let verdict = if summary.run.interrupted {
        "INTERRUPTED (partial)".to_string()
    } else if summary.thresholds.is_empty() {
        "no thresholds".to_string()
    } else if summary.passed {
        "PASSED".to_string()
    } else {
        "FAILED".to_string()
    };
    let mut page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>\
         body{{font:14px/1.45 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}}\
         pre{{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12.5px}}\
         .charts svg{{background:#fcfcfc;border:1px solid #eee;margin:.5em 0;max-width:100%;height:auto}}\
         .verdict{{font-weight:bold}} .FAILED{{color:#b00}} .PASSED{{color:#070}}</style></head><body>\
         <h1>{t}</h1><p>{d}</p><p class=\"verdict {verdict}\">{verdict}</p><div class=\"charts\">",
        t = escape(&title),
        d = escape(&summary.scenario.description),
    );
    page.push_str(&line_chart("Latency by percentile", "percentile", "ms", &charts.percentiles, true));
    page.push_str(&line_chart("Throughput over time", "seconds", "messages/s", &charts.throughput, false));
    page.push_str(&line_chart("Delivery p99 over time", "seconds", "ms", &charts.p99, false));
    let _ = write!(page, "</div><h2>Summary</h2><pre>{}</pre>", escape(&report::text(summary)));
    page.push_str("<p>Files beside this one: summary.json (schema in the chorus README), metrics.json, timeseries.csv, hdr/*.hgrm.</p></body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_a_line_per_series() {
        let series = vec![
            Series { name: "sent/s".into(), color: "#36c", points: vec![(0.0, 10.0), (1.0, 12.0), (2.0, 11.0)] },
            Series { name: "delivered/s".into(), color: "#c63", points: vec![(0.0, 90.0), (1.0, 99.0)] },
        ];
        let svg = line_chart("Throughput <now>", "s", "msg/s", &series, false);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("Throughput &lt;now&gt;"), "titles are escaped");
        assert!(line_chart("empty", "x", "y", &[], false).contains("no data"));
    }

    #[test]
    fn percentile_labels() {
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
    }
}
