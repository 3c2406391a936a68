//! Watching a run as it happens: per-second NDJSON (to a file and to
//! stdout) and the OpenMetrics endpoint, scraped while the run goes. (The
//! dashboard, in a real browser, is tests/dashboard.rs.)
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use chorus::harness::live::{LiveRecord, SummaryRecord, WatchOptions};
use chorus::harness::{self, RunOptions, Scenario};
use common::process::{announced, chorus_run};

const SCENARIO: &str = "name = \"watched\"\nramp_up = \"500ms\"\nduration = \"2s\"\ndrain = \"500ms\"\n\
    [[group]]\nclients = 6\nrate = 20.0\nmix = { text = 9, binary = 1 }\n\
    [thresholds]\n\"delivery.ratio\" = \"== 1.0\"\n\"connect.p99\" = \"< 1s\"\n";

#[tokio::test]
async fn ndjson_has_one_line_a_second_that_add_up_to_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ndjson");
    let options = RunOptions {
        results: dir.path().to_path_buf(),
        watch: WatchOptions { ndjson: Some(path.clone()), ..WatchOptions::default() },
        ..RunOptions::default()
    };
    let scenario = Scenario::parse(SCENARIO, "watched.toml", "watched").unwrap();
    let outcome = harness::run(scenario, options, CancellationToken::new()).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (last, seconds) = lines.split_last().unwrap();
    let records: Vec<LiveRecord> = seconds.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let numbers: Vec<u32> = records.iter().map(|r| r.second).collect();
    assert_eq!(numbers, (0..records.len() as u32).collect::<Vec<_>>(), "one line per second, in order");
    assert!(records.len() >= 3, "{} lines", records.len());
    let s = &outcome.summary;
    let sum = |f: fn(&LiveRecord) -> u64| records.iter().map(f).sum::<u64>();
    assert_eq!(sum(|r| r.counts.received), s.messages.received, "every delivery in some second");
    assert_eq!(sum(|r| r.counts.sent), s.messages.sent);
    assert_eq!(sum(|r| r.counts.expected), s.delivery.expected);
    assert_eq!(sum(|r| r.counts.bytes_received), s.messages.bytes_received, "every byte read in some second");
    assert_eq!(sum(|r| r.counts.bytes_sent), s.messages.bytes_sent);
    let end = records.last().unwrap();
    assert_eq!(end.totals.received, s.messages.received, "the totals run along");
    assert_eq!(records[0].phase, "ramp");
    assert!(records.iter().any(|r| r.phase == "steady" && r.delivery_ms.is_some()));
    let connect = end.thresholds.iter().find(|t| t.key == "connect.p99").unwrap();
    assert_eq!(connect.passing, None, "not followed live: pending until the end");
    let ratio = end.thresholds.iter().find(|t| t.key == "delivery.ratio").unwrap();
    assert_eq!(ratio.passing, Some(true));
    // The histograms travel whole: the seconds' deliveries add up exactly.
    let merged: u64 = records.iter().map(|r| r.counts.second().unwrap().delivery.len()).sum();
    assert_eq!(merged, s.latency["delivery"].count);
    let summary: SummaryRecord = serde_json::from_str(last).unwrap();
    assert_eq!(summary.kind, "summary");
    assert_eq!((&summary.summary.messages, &summary.summary.delivery), (&s.messages, &s.delivery));
    assert!(summary.summary.passed);
    assert!(summary.report.contains("result: PASSED"), "{}", summary.report);
}

/// SCENARIO written to a temporary folder: (the folder, the file, an `--out` path in it).
fn scenario_file() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("watched.toml");
    std::fs::write(&file, SCENARIO).unwrap();
    let out = dir.path().join("out");
    (dir, file, out)
}

/// `chorus run SCENARIO ARGS...`, stdout and stderr piped.
fn spawn(scenario: &std::path::Path, args: &[&str]) -> Child {
    chorus_run(std::iter::once(scenario.to_str().unwrap()).chain(args.iter().copied()))
}

/// GET `url` (http://host:port/path) with an Accept header: (content type, body).
async fn get(url: &str, accept: &str) -> (String, Vec<u8>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let content_type = head.lines().find_map(|l| l.strip_prefix("content-type: ")).unwrap_or("").to_string();
    let mut body = response[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (content_type, body)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&body[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[line_end + 2..line_end + 2 + size]);
        body = &body[line_end + 2 + size + 2..];
    }
}

fn sample(text: &str, name: &str) -> f64 {
    let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_metrics_endpoint_counts_up_while_the_run_goes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("watched.toml");
    std::fs::write(&file, SCENARIO.replace("duration = \"2s\"", "duration = \"4s\"")).unwrap();
    let out = dir.path().join("out");
    let mut child = spawn(&file, &["--metrics-addr", "127.0.0.1:0", "--out", out.to_str().unwrap()]);
    let addr = announced(&mut child, "metrics: ").await;
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let (content_type, body) = get(&addr, "application/openmetrics-text").await;
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"), "{content_type}");
    let first = String::from_utf8(body).unwrap();
    assert!(first.ends_with("# EOF\n"), "{first}");
    let sent = |text: &str| sample(text, "chorus_harness_messages_sent_total{scenario=\"watched\"}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, body) = get(&addr, "text/plain").await;
    let second = String::from_utf8(body).unwrap();
    assert!(sent(&second) > sent(&first), "counters count up during the run:\n{first}\n{second}");
    let count = sample(&second, "chorus_harness_delivery_latency_seconds_count{scenario=\"watched\"}");
    let inf = sample(&second, "chorus_harness_delivery_latency_seconds_bucket{scenario=\"watched\",le=\"+Inf\"}");
    assert!(count > 0.0 && count == inf, "{second}");
    assert_eq!(sample(&second, "chorus_harness_target_clients{scenario=\"watched\"}"), 6.0);
    let protobuf = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";
    let (content_type, body) = get(&addr, protobuf).await;
    assert!(content_type.starts_with("application/vnd.google.protobuf"), "{content_type}");
    let name = b"chorus_harness_delivery_latency_seconds";
    assert!(body.windows(name.len()).any(|w| w == name), "the histogram family is there");
    assert!(body[0] > 0 && usize::from(body[0]) < body.len(), "length-delimited families");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn ndjson_to_stdout_leaves_stdout_to_ndjson_alone() {
    let (_dir, file, out) = scenario_file();
    let child = spawn(&file, &["--out-ndjson", "-", "--out", out.to_str().unwrap()]);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let kinds: Vec<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.len() >= 4 && kinds[..kinds.len() - 1].iter().all(|k| k == "second"), "{kinds:?}");
    assert_eq!(kinds.last().unwrap(), "summary");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("result: PASSED"), "the report goes to stderr: {stderr}");
}

/// `--dashboard` with an address apart or after `=`, or without one right
/// before the scenario (which it must not take for an address); a word that
/// is no address gets a clear error.
#[tokio::test]
async fn dashboard_takes_an_address_and_leaves_the_scenario_alone() {
    let (_dir, file, out) = scenario_file();
    let (file, out) = (file.to_str().unwrap(), out.to_str().unwrap());
    let finish = |child: Child| async {
        let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.unwrap().unwrap();
        (output.status.code(), String::from_utf8(output.stderr).unwrap())
    };
    let port = common::free_port();
    let apart = format!("127.0.0.1:{port}");
    for args in [
        vec!["--dashboard", file, "--duration", "1s", "--out", out],
        vec![file, "--dashboard=127.0.0.1:0", "--duration", "1s", "--out", out],
        vec![file, "--dashboard", &apart, "--duration", "1s", "--out", out],
    ] {
        let (code, stderr) = finish(chorus_run(&args)).await;
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(stderr.contains("dashboard: http://127.0.0.1:"), "{args:?}: {stderr}");
        if args.contains(&apart.as_str()) {
            assert!(stderr.contains(&format!("dashboard: http://{apart}/")), "{stderr}");
        }
    }
    let (code, stderr) = finish(chorus_run([file, "--dashboard", "nowhere"])).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--dashboard takes an address (host:port or a port), not \"nowhere\""), "{stderr}");
}
