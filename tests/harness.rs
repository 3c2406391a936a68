//! The load harness end to end: real runs against the embedded server, an
//! external chorus server, and a tiny raw relay written here.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use chorus::harness::{self, RunOptions, Scenario};

fn scenario(text: &str) -> Scenario {
    Scenario::parse(text, "inline.toml", "inline").unwrap()
}

fn options(dir: &Path) -> RunOptions {
    RunOptions { results: dir.to_path_buf(), ..RunOptions::default() }
}

fn chorus() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chorus"));
    command.env("NO_COLOR", "1").env_remove("RUST_LOG").stdin(Stdio::null());
    command
}

/// Run the binary off the async runtime: (exit code, stdout, stderr).
async fn run_chorus(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let output = chorus().args(&args).output().unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_smoke_scenario_delivers_everything_with_no_errors() {
    let results = tempfile::tempdir().unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml");
    let scenario = Scenario::load(&path).unwrap();
    let outcome = harness::run(scenario, options(results.path()), CancellationToken::new()).await.unwrap();
    let s = &outcome.summary;
    assert_eq!(s.connections.ok, 20);
    assert!(s.messages.sent > 100, "{}", outcome.report);
    assert_eq!(s.delivery.ratio, Some(1.0), "{}", outcome.report);
    assert_eq!(s.delivery.lost + s.delivery.duplicated + s.delivery.reordered, 0);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert!(s.messages.sent_binary > 0 && s.messages.sent_rename > 0, "the mix sends every kind");
    assert_eq!(s.messages.acked, s.messages.sent, "every message and rename was answered");
    // Latency thresholds are not asserted: speed is for benchmarks, and tests share the CPU.
    for t in s.thresholds.iter().filter(|t| !t.key.contains(".p")) {
        assert!(t.passed, "{} {} (observed {:?})\n{}", t.key, t.condition, t.observed, outcome.report);
    }
    assert!(s.latency["delivery"].count > 0 && s.latency["delivery"].p99_ms > 0.0);
    for file in ["summary.json", "metrics.json", "timeseries.csv", "report.html", "report.txt", "hdr/delivery.hgrm"] {
        assert!(outcome.dir.join(file).is_file(), "{file} is written");
    }
    let html = std::fs::read_to_string(outcome.dir.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 5, "percentiles; messages, bytes, clients and errors, p99 over time");
    assert!(html.contains("viewBox=") && html.contains("<table") && !html.contains("<pre>"), "charts scale, tables");
    assert!(html.contains("delivered/s (right axis)") && html.contains("\nsteady\n"), "own scales, phases marked");
    assert!(html.contains("bytes in/s"), "bytes per second are charted");
    assert!(!html.contains("src=") && !html.contains("<link") && !html.contains("<script"), "self-contained");
    let csv = std::fs::read_to_string(outcome.dir.join("timeseries.csv")).unwrap();
    assert!(csv.starts_with("second,phase,connected,sent,delivered"));
    assert!(csv.lines().next().unwrap().ends_with(",sent_bytes,received_bytes"));
    assert!(s.messages.bytes_sent > 0 && s.messages.bytes_received > s.messages.bytes_sent);
    assert!(s.throughput.received_bytes_per_sec.unwrap() > 0.0);
    assert!(outcome.report.contains(" in (the 3 seconds of steady phases)"), "{}", outcome.report);
    assert!(csv.lines().count() >= 5);
}

const FAST: &str = r#"
name = "fast"
duration = "1s"
drain = "500ms"
[[group]]
name = "talkers"
clients = 4
rate = 20.0
"#;

#[tokio::test]
async fn a_failing_threshold_sets_exit_code_3_and_report_rereads_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strict.toml");
    std::fs::write(&file, format!("{FAST}[thresholds]\n\"delivery.p99\" = \"< 1us\"\n\"errors\" = \"== 0\"\n"))
        .unwrap();
    let out = dir.path().join("run");
    let args = ["run", file.to_str().unwrap(), "--out", out.to_str().unwrap()].map(String::from).to_vec();
    let (code, stdout, stderr) = run_chorus(args).await;
    assert_eq!(code, 3, "failed thresholds exit with 3\n{stdout}\n{stderr}");
    assert!(stdout.contains("FAIL  delivery.p99"), "{stdout}");
    assert!(stdout.contains("pass  errors"), "{stdout}");
    assert!(stdout.contains("result: FAILED (1 of 2 threshold(s))"), "{stdout}");

    // summary.json round trip: `chorus report DIR` prints the same report and exit code.
    let (code, again, _) = run_chorus(["report", out.to_str().unwrap()].map(String::from).to_vec()).await;
    assert_eq!(code, 3);
    let report_part = stdout.split("results:").next().unwrap().trim();
    assert_eq!(again.trim(), report_part);

    // Comparing a run with itself shows no regression.
    let (code, compared, _) =
        run_chorus(["report", out.to_str().unwrap(), out.to_str().unwrap()].map(String::from).to_vec()).await;
    assert_eq!(code, 3);
    assert!(compared.contains("delivery.p99") && compared.contains("no regressions"), "{compared}");
    assert!(compared.contains("result: this FAILED, baseline FAILED"), "{compared}");
    assert!(!compared.contains("note: the runs are of different scenarios"), "{compared}");
}

#[tokio::test]
async fn bad_input_exits_1_with_one_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "duration = \"5s\"\n[[group]]\nclients = 1\nrate = -2\n").unwrap();
    let (code, _, stderr) = run_chorus(vec!["run".into(), file.display().to_string()]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("bad.toml: group[0].rate must be >= 0 (got -2)"), "{stderr}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(&file, FAST).unwrap();
    let target = format!("ws://127.0.0.1:{port}/");
    let (code, _, stderr) = run_chorus(vec!["run".into(), file.display().to_string(), "--target".into(), target]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("is not usable") && stderr.contains("could not reach"), "{stderr}");

    std::fs::write(&file, format!("protocol = \"raw\"\n{FAST}")).unwrap();
    let (code, _, stderr) = run_chorus(vec!["run".into(), file.display().to_string()]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("protocol = \"raw\" needs a target"), "{stderr}");

    let (code, _, stderr) = run_chorus(vec!["report".into(), dir.path().display().to_string()]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("summary.json"), "{stderr}");
}

/// A minimal broadcast relay: every text or binary frame goes, verbatim, to
/// every other connection. What `protocol = "raw"` is for.
async fn tiny_relay() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peers: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>> = Arc::default();
    tokio::spawn(async move {
        let mut next = 0u64;
        while let Ok((tcp, _)) = listener.accept().await {
            next += 1;
            let id = next;
            let peers = peers.clone();
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                let (mut sink, mut stream) = ws.split();
                let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
                peers.lock().unwrap().insert(id, tx);
                let writer = tokio::spawn(async move {
                    while let Some(message) = rx.recv().await {
                        if sink.send(message).await.is_err() {
                            break;
                        }
                    }
                });
                while let Some(Ok(message)) = stream.next().await {
                    if message.is_text() || message.is_binary() {
                        for (other, tx) in peers.lock().unwrap().iter() {
                            if *other != id {
                                let _ = tx.send(message.clone());
                            }
                        }
                    }
                }
                peers.lock().unwrap().remove(&id);
                writer.abort();
            });
        }
    });
    addr
}

#[tokio::test]
async fn raw_mode_measures_any_broadcast_relay() {
    let relay = tiny_relay().await;
    let results = tempfile::tempdir().unwrap();
    let text = format!(
        "name = \"raw\"\nprotocol = \"raw\"\ntarget = \"ws://{relay}/\"\nramp_up = \"300ms\"\nduration = \"1s\"\ndrain = \"500ms\"\n\
         [[group]]\nclients = 5\nrate = 20.0\nmix = {{ text = 3, binary = 1 }}\ntext_size = [80, 200]\n\
         [thresholds]\n\"delivery.ratio\" = \"== 1.0\"\n"
    );
    let outcome = harness::run(scenario(&text), options(results.path()), CancellationToken::new()).await.unwrap();
    let s = &outcome.summary;
    assert!(s.messages.sent > 50, "{}", outcome.report);
    assert_eq!(s.delivery.expected, s.messages.sent * 4, "each message is expected by the 4 others");
    assert_eq!(s.delivery.ratio, Some(1.0), "{}", outcome.report);
    assert_eq!(s.messages.received_binary, s.messages.sent_binary * 4);
    assert!(s.latency.contains_key("delivery") && !s.latency.contains_key("ack"), "no acks in raw mode");
    assert!(s.passed);
}

#[tokio::test]
async fn two_shards_merge_into_exactly_the_sum_of_their_parts() {
    let server = common::server().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sharded.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"sharded\"\ntarget = \"{}\"\nduration = \"1s\"\ndrain = \"500ms\"\n[[group]]\nname = \"all\"\nclients = 6\nrate = 10.0\n\
             [thresholds]\n\"delivery.ratio\" = \"== 1.0\"\n",
            server.url()
        ),
    )
    .unwrap();
    let start = (std::time::SystemTime::now() + Duration::from_secs(2))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        .to_string();
    let shard = |i: &str| {
        let out = dir.path().join(format!("shard{i}"));
        let args = [
            "run",
            file.to_str().unwrap(),
            "--shard",
            &format!("{i}/2"),
            "--start-at",
            &start,
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        (out, run_chorus(args))
    };
    let (out1, run1) = shard("1");
    let (out2, run2) = shard("2");
    let ((code1, report1, err1), (code2, _, err2)) = tokio::join!(run1, run2);
    assert_eq!((code1, code2), (0, 0), "{report1}\n{err1}\n{err2}");
    let merged = dir.path().join("merged");
    let args = ["report", "--merge", out1.to_str().unwrap(), out2.to_str().unwrap(), "--out", merged.to_str().unwrap()];
    let (code, report, stderr) = run_chorus(args.map(String::from).to_vec()).await;
    assert_eq!(code, 0, "{report}\n{stderr}");
    // A shard given twice would count its clients twice.
    let refused = dir.path().join("refused");
    let twice =
        ["report", "--merge", out1.to_str().unwrap(), out1.to_str().unwrap(), "--out", refused.to_str().unwrap()];
    let (code, _, stderr) = run_chorus(twice.map(String::from).to_vec()).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("shard 1/2 is given twice"), "{stderr}");
    assert!(!refused.exists(), "no results folder for a refused merge");
    let read = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
    };
    let (a, b, m) = (read(&out1), read(&out2), read(&merged));
    assert_eq!(a["run"]["shard"], "1/2");
    assert_eq!(a["connections"]["ok"].as_u64().unwrap(), 3, "each shard runs half of the clients");
    assert_eq!(a["connections"]["target"].as_u64().unwrap(), 3);
    assert!(report1.contains("checked on the merged shards"), "{report1}");
    for path in [
        ["messages", "sent"],
        ["messages", "received"],
        ["delivery", "expected"],
        ["delivery", "received"],
        ["connections", "ok"],
    ] {
        let get = |v: &serde_json::Value| v[path[0]][path[1]].as_u64().unwrap();
        assert_eq!(get(&m), get(&a) + get(&b), "{path:?}");
    }
    let count = |v: &serde_json::Value| v["latency"]["delivery"]["count"].as_u64().unwrap();
    assert_eq!(count(&m), count(&a) + count(&b), "histograms merge losslessly");
    let max = |v: &serde_json::Value| v["latency"]["delivery"]["max_ms"].as_f64().unwrap();
    assert_eq!(max(&m), max(&a).max(max(&b)));
    assert_eq!(m["delivery"]["ratio"], 1.0, "across shards every delivery is accounted for");
    assert_eq!(m["run"]["merged_from"], 2);
    shard_reports_say_what_they_are(&out1, &merged, &report1).await;
    server.shutdown().await.unwrap();
}

/// A shard's report, and a comparison of a shard with the merge, say what a
/// shard's figures are (it checks no thresholds; it sees only its clients).
async fn shard_reports_say_what_they_are(shard: &Path, merged: &Path, report: &str) {
    assert!(report.contains("(shard 1/2: expected counts every recipient of this shard's sends"), "{report}");
    let args = ["report", shard.to_str().unwrap(), merged.to_str().unwrap()].map(String::from).to_vec();
    let (code, compared, stderr) = run_chorus(args).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(compared.contains("result: this SHARD 1/2 (thresholds not checked), baseline PASSED"), "{compared}");
    assert!(compared.contains("note: this run is one shard (1/2) of a run"), "{compared}");
}

#[tokio::test]
async fn ctrl_c_stops_sending_and_writes_a_partial_report() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("long.toml");
    std::fs::write(&file, FAST.replace("duration = \"1s\"", "duration = \"60s\"")).unwrap();
    let out = dir.path().join("partial");
    let mut child = chorus()
        .args(["run", file.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let started = std::time::Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        let _ = child.stdin.take();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "it stops promptly");
    assert_eq!(output.status.code(), Some(4), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("result: INTERRUPTED (partial)"), "{stdout}");
    assert!(!stdout.contains("PASSED"), "an interrupted run never passes: {stdout}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["run"]["interrupted"], true);
    assert_eq!(summary["passed"], false);
    // After the stop nothing is sent: the rates are over the time spent sending.
    let stopped = summary["run"]["stopped_after_secs"].as_f64().unwrap();
    let steady = summary["run"]["steady_secs"].as_f64().unwrap();
    assert!(steady <= stopped, "steady {steady}s counted past the stop at {stopped}s");
    let csv = std::fs::read_to_string(out.join("timeseries.csv")).unwrap();
    // The rates are over the whole steady seconds before the stop, from those seconds' counts.
    let steady_sent: Vec<f64> = csv
        .lines()
        .filter(|l| l.split(',').nth(1) == Some("steady"))
        .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
        .collect();
    assert!(!steady_sent.is_empty(), "{csv}");
    assert_eq!(summary["throughput"]["seconds"].as_u64().unwrap() as usize, steady_sent.len(), "{csv}");
    let mean = steady_sent.iter().sum::<f64>() / steady_sent.len() as f64;
    assert!((summary["throughput"]["sent_per_sec"].as_f64().unwrap() - mean).abs() < 1e-6, "{csv}");
    assert!(csv.lines().last().unwrap().contains(",stopped,"), "{csv}");
    // Each second's phase is the same in the progress lines and the CSV.
    let csv_phase: HashMap<&str, &str> =
        csv.lines().skip(1).filter_map(|l| l.split(',').next().zip(l.split(',').nth(1))).collect();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut compared = 0;
    for line in stderr.lines().filter(|l| l.starts_with('[')) {
        let second = line[1..].split('s').next().unwrap().trim();
        let phase = line.split(']').nth(1).unwrap().split_whitespace().next().unwrap();
        if let Some(&in_csv) = csv_phase.get(second) {
            assert_eq!(phase, in_csv, "second {second}: {line}\n{csv}");
            compared += 1;
        }
    }
    assert!(compared >= 2, "progress lines for the seconds before the stop: {stderr}");
    assert!(summary["messages"]["sent"].as_u64().unwrap() > 0);
    assert_eq!(summary["delivery"]["ratio"], 1.0, "in-flight messages were drained");
}

#[tokio::test]
async fn plain_text_senders_are_measured_like_json_ones() {
    let results = tempfile::tempdir().unwrap();
    let text = "name = \"plain\"\nprotocol = \"chorus-plain\"\nduration = \"1s\"\ndrain = \"500ms\"\n\
                [[group]]\nclients = 4\nrate = 20.0\nmix = { text = 8, binary = 1, rename = 1 }\n\
                [thresholds]\n\"delivery.ratio\" = \"== 1.0\"\n\"errors\" = \"== 0\"\n";
    let outcome = harness::run(scenario(text), options(results.path()), CancellationToken::new()).await.unwrap();
    let s = &outcome.summary;
    assert!(s.messages.sent_text > 30, "{}", outcome.report);
    assert_eq!(s.messages.acked, s.messages.sent, "acks without client_id are matched in order");
    assert_eq!(s.delivery.received, s.delivery.expected);
    assert_eq!(s.messages.foreign, 0, "stamps are found at the start of the chat text");
    assert!(s.passed, "{}", outcome.report);
}

#[tokio::test]
async fn stalled_readers_get_gaps_and_recover_through_history() {
    let results = tempfile::tempdir().unwrap();
    let text = r#"
name = "stall-test"
ramp_up = "300ms"
duration = "5s"
drain = "4s"
[server]
history = "memory"
max_queue_bytes = "512KiB"
[[group]]
name = "talkers"
clients = 20
rate = 10.0
text_size = 8192
[[group]]
name = "stallers"
clients = 2
rate = 0
stop_reading_after = "300ms"
resume_reading_after = "4300ms"
recv_buffer = "4KiB"
"#;
    let outcome = harness::run(scenario(text), options(results.path()), CancellationToken::new()).await.unwrap();
    let d = &outcome.summary.delivery;
    assert!(d.gaps >= 1, "the stalled readers were told they missed messages\n{}", outcome.report);
    assert!(d.recovered > 0 && d.recovered <= d.gap_messages, "{}", outcome.report);
    assert_eq!(d.missing, 0, "every hole was filled by history\n{}", outcome.report);
    assert_eq!(d.ratio, Some(1.0), "{}", outcome.report);
    assert!(outcome.summary.latency.contains_key("recovery"));
    assert!(outcome.report.contains("recovered through history"));
}

#[tokio::test]
async fn clients_can_connect_from_several_loopback_addresses() {
    let results = tempfile::tempdir().unwrap();
    // Two connections per address at most: 6 clients get in only from 3 addresses.
    let text = "name = \"sources\"\nduration = \"1s\"\ndrain = \"300ms\"\n[server]\nmax_connections_per_ip = 2\n\
                [[group]]\nclients = 6\nrate = 5.0\n";
    let options = RunOptions { source_addresses: Some(3), ..options(results.path()) };
    let outcome = harness::run(scenario(text), options, CancellationToken::new()).await.unwrap();
    assert_eq!(outcome.summary.connections.ok, 6, "{}", outcome.report);
    assert_eq!(outcome.summary.delivery.ratio, Some(1.0));
}

#[tokio::test]
async fn a_run_the_server_refuses_cannot_pass() {
    let results = tempfile::tempdir().unwrap();
    // No thresholds at all; the server closes every connection for flooding.
    let text = "name = \"refused\"\nduration = \"1s\"\ndrain = \"500ms\"\n[server]\nrate_limit = \"2/s\"\nrate_burst = 2\n\
                [[group]]\nclients = 3\nrate = 300.0\n";
    let outcome = harness::run(scenario(text), options(results.path()), CancellationToken::new()).await.unwrap();
    let s = &outcome.summary;
    assert!(!s.passed, "{}", outcome.report);
    assert_eq!(harness::exit_code(s), harness::EXIT_THRESHOLDS_FAILED);
    assert!(s.errors.values().sum::<u64>() > 0, "{}", outcome.report);
    assert!(outcome.report.contains("(default: the scenario sets no errors threshold)"), "{}", outcome.report);
    assert!(outcome.report.contains("result: FAILED"), "{}", outcome.report);
}

#[tokio::test]
async fn progress_lines_show_each_second_under_its_own_phase() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fast.toml");
    std::fs::write(&file, FAST.replace("drain = \"500ms\"", "drain = \"2s\"")).unwrap();
    let out = dir.path().join("run");
    let args = ["run", file.to_str().unwrap(), "--out", out.to_str().unwrap()].map(String::from).to_vec();
    let (code, stdout, stderr) = run_chorus(args).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with('[')).collect();
    for (second, phase) in [(0, "steady"), (1, "drain"), (2, "drain")] {
        let line =
            lines.iter().find(|l| l.starts_with(&format!("[{second:>4}s]"))).unwrap_or_else(|| panic!("{stderr}"));
        assert!(line.contains(phase), "second {second} is {phase}: {line}");
        if phase == "drain" {
            assert!(line.contains(" 0 sent/s"), "nothing is sent while draining: {line}");
        }
    }
}

#[tokio::test]
async fn a_reused_results_folder_holds_only_the_last_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.toml");
    let out = dir.path().join("out");
    let run_with = |text: String, extra: Vec<String>| {
        std::fs::write(&file, text).unwrap();
        let mut args = vec!["run".to_string(), file.display().to_string(), "--out".into(), out.display().to_string()];
        args.extend(extra);
        run_chorus(args)
    };
    let (code, _, stderr) = run_with(format!("{FAST}mix = {{ text = 1, binary = 1 }}\n"), vec![]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(out.join("hdr/delivery.binary.hgrm").is_file());
    let (code, _, stderr) = run_with(FAST.to_string(), vec![]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(!out.join("hdr/delivery.binary.hgrm").exists(), "no file of the earlier run is left");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let target = vec!["--target".to_string(), format!("ws://127.0.0.1:{port}/")];
    let (code, _, _) = run_with(FAST.to_string(), target).await;
    assert_eq!(code, 1, "the target is unreachable");
    let (code, stdout, _) = run_chorus(vec!["report".into(), out.display().to_string()]).await;
    assert_eq!(code, 1, "a run that failed to start has no report, not the earlier run's: {stdout}");
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let (code, _, stderr) = run_with(FAST.to_string(), vec![]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("notes.txt") && stderr.contains("not part of a chorus results folder"), "{stderr}");
}

#[tokio::test]
async fn source_addresses_with_an_ipv6_target_say_ipv4_loopback_is_needed() {
    let results = tempfile::tempdir().unwrap();
    let options =
        RunOptions { targets: vec!["ws://[::1]:9/".into()], source_addresses: Some(2), ..options(results.path()) };
    let err = harness::run(scenario(FAST), options, CancellationToken::new()).await.unwrap_err().to_string();
    assert!(err.contains("needs an IPv4 loopback target"), "{err}");
}

#[tokio::test]
async fn groups_add_up_to_the_run_with_a_stuck_reader() {
    let results = tempfile::tempdir().unwrap();
    let text = r#"
name = "stuck"
duration = "3s"
drain = "1s"
[server]
history = "off"
max_queue_bytes = "64KiB"
[[group]]
name = "talkers"
clients = 10
rate = 25.0
text_size = 2048
[[group]]
name = "stuck"
clients = 1
rate = 0
stop_reading_after = "200ms"
recv_buffer = "4KiB"
"#;
    let outcome = harness::run(scenario(text), options(results.path()), CancellationToken::new()).await.unwrap();
    let s = &outcome.summary;
    let sum = |f: fn(&chorus::harness::summary::GroupSummary) -> u64| s.groups.iter().map(f).sum::<u64>();
    assert_eq!(sum(|g| g.lost), s.delivery.lost, "{}", outcome.report);
    assert_eq!(sum(|g| g.expected), s.delivery.expected, "{}", outcome.report);
    assert_eq!(sum(|g| g.received), s.delivery.received);
    let talkers = s.groups.iter().find(|g| g.name == "talkers").unwrap();
    assert!(talkers.lost <= s.delivery.lost / 10, "the readers lost (nearly) nothing\n{}", outcome.report);
}

#[tokio::test]
async fn scripted_clients_talk_read_history_share_files_and_check() {
    let results = tempfile::tempdir().unwrap();
    let text = r#"name = "scripted"
duration = "2s"
drain = "1s"
[[group]]
name = "hosts"
clients = 2
room = "den"
script = [
  { history = 10 },
  { loop = 40, do = [ { say = "welcome, {bot} speaking" }, { think = "50ms" } ] },
]
[[group]]
name = "guests"
clients = 3
room = "den"
script = [
  { think = "100ms" },
  { connect = true },
  { say = "hi from {bot} in {room}" },
  { wait_for = "welcome", timeout = "1500ms", check = "welcomed" },
  { wait_for = "nobody says this", timeout = "200ms", check = "never" },
  { file = "100KiB", name = "note-{bot}.txt" },
  { rename = "guest-{bot}" },
  { leave = true },
  { think = "100ms" },
  { connect = true },
  { join = "elsewhere" },
  { binary = 64 },
]
[[group]]
name = "sharers"
clients = 1
room = "den"
rate = 5.0
mix = { text = 1, file = 1 }
file_size = ["1KiB", "200KiB"]
[thresholds]
"delivery.ratio" = "== 1.0"
"checks.failed" = "== 3"
"group.guests.checks.rate" = "== 0.5"
"errors" = "== 0"
"#;
    let outcome = harness::run(scenario(text), options(results.path()), CancellationToken::new()).await.unwrap();
    let s = &outcome.summary;
    let report = &outcome.report;
    assert!(s.passed, "{report}");
    assert_eq!(s.checks.passed, 3, "each guest heard a host's welcome: {report}");
    let names: Vec<&str> = s.checks.by_name.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["never", "welcomed"]);
    assert!(s.files.stored >= 4, "three guests' files and the sharer's: {report}");
    assert_eq!(s.files.stored, s.files.sent, "{report}");
    assert!(s.files.bytes >= 3 * 100 * 1024, "{report}");
    assert!(s.files.upload_mb_per_sec.unwrap() > 0.0);
    assert!(s.files.received > 0 && s.latency.contains_key("delivery.file"), "files are deliveries: {report}");
    assert_eq!(s.messages.sent_rename, 3);
    assert_eq!(s.messages.sent_binary, 3, "after joining elsewhere");
    assert_eq!(s.latency["history"].count, 2, "the hosts read the room's past");
    assert_eq!(s.connections.reconnects, 3, "each guest left and came back");
    assert_eq!(s.messages.unacked, 0, "leave waits for the answers: {report}");
    assert_eq!(s.delivery.received, s.delivery.expected, "{report}");
    assert!(report.contains("checks       50.00% passed (3 of 6)"), "{report}");
    assert!(report.contains("files        sent"), "{report}");
}

/// Clients that leave while the room talks: the server counts a message for
/// every member it queues it to, and drops what is still queued when it reads
/// a close frame; a `leave` steps out of the room first, so nothing it was
/// counted for is in flight when it closes. Before that, a run like this one
/// lost about one message in 25 leaves.
#[tokio::test]
async fn leaving_while_the_room_talks_loses_nothing() {
    let results = tempfile::tempdir().unwrap();
    let text = |target: &str, room: &str| {
        format!(
            "name = \"leavers\"\n{target}ramp_up = \"300ms\"\nduration = \"3s\"\ndrain = \"1s\"\n\
             [[group]]\nname = \"talkers\"\nclients = 10\nroom = \"{room}\"\nrate = 20.0\n\
             [[group]]\nname = \"leavers\"\nclients = 6\nroom = \"{room}\"\nscript = [{{ loop = 1000, do = [\
             {{ think = [\"20ms\", \"80ms\"] }}, {{ leave = true }}, {{ think = \"20ms\" }}, {{ connect = true }} ] }}]\n\
             [[group]]\nname = \"mixed\"\nclients = 4\nroom = \"{room}\"\nrate = 20.0\n\
             mix = {{ text = 1, file = 1 }}\nfile_size = [\"8KiB\", \"64KiB\"]\nscript = [{{ loop = 1000, do = [\
             {{ think = [\"50ms\", \"150ms\"] }}, {{ leave = true }}, {{ connect = true }} ] }}]\n"
        )
    };
    let outcome =
        harness::run(scenario(&text("", "den")), options(results.path()), CancellationToken::new()).await.unwrap();
    let (s, report) = (&outcome.summary, &outcome.report);
    assert!(s.connections.reconnects >= 60, "the leavers came and went: {report}");
    assert!(s.delivery.expected > 3_000, "{report}");
    assert_eq!((s.delivery.lost, s.delivery.left_in_room), (0, 0), "{report}");
    // The rate-driven sends of a group that also leaves wait while it does,
    // and the leave waits for its files still queued behind an upload.
    assert_eq!((s.delivery.missing, s.messages.unacked), (0, 0), "{report}");
    assert!(s.files.stored > 0 && s.files.stored == s.files.sent, "{report}");
    assert_eq!(s.delivery.received, s.delivery.expected, "{report}");
    assert!(s.errors.is_empty(), "{report}");

    // A server that refuses the room of their own (one room at most): the
    // leavers close from the lobby, what was in flight is lost and the
    // report says why; that is not an error of the run.
    let mut config = common::quick_close();
    config.max_rooms = 1;
    let server = common::server_with(config).await;
    let target = format!("target = \"{}\"\n", server.url());
    let outcome = harness::run(scenario(&text(&target, "lobby")), options(results.path()), CancellationToken::new())
        .await
        .unwrap();
    let (s, report) = (&outcome.summary, &outcome.report);
    assert!(s.delivery.left_in_room >= s.connections.reconnects.max(1), "every leave was refused its room: {report}");
    assert!(s.errors.is_empty(), "a refused step out is not an error: {report}");
    assert!(report.contains("leave(s) closed from their room (the server refused their step out"), "{report}");
}

/// A `wait_for` still waiting when the run ends had not failed: pending,
/// apart from the rate; one whose connection the server dropped failed.
#[tokio::test]
async fn checks_still_waiting_at_the_end_are_pending_and_dropped_ones_fail() {
    let results = tempfile::tempdir().unwrap();
    let text = "ramp_up = \"200ms\"\nduration = \"1s\"\ndrain = \"200ms\"\n[[group]]\nname = \"waiters\"\nclients = 3\n\
        script = [{ wait_for = \"nobody says this\", timeout = \"30s\", check = \"heard\" }]\n\
        [thresholds]\n\"checks.pending\" = \"== 3\"\n";
    let outcome = harness::run(scenario(text), options(results.path()), CancellationToken::new()).await.unwrap();
    let (s, report) = (&outcome.summary, &outcome.report);
    assert_eq!((s.checks.passed, s.checks.failed, s.checks.pending, s.checks.rate), (0, 0, 3, None), "{report}");
    assert!(s.passed, "{report}");
    assert!(
        report.contains("checks       - passed (0 of 0; 3 still waiting when the run ended, not counted)"),
        "{report}"
    );
    assert!(report.contains("pending 3"), "{report}");
    let html = std::fs::read_to_string(outcome.dir.join("report.html")).unwrap();
    assert!(html.contains("<h2>Checks</h2>") && html.contains("<td>heard</td>"), "{html}");

    // A server that closes every connection 300 ms after the handshake.
    let url = common::ws_server(|mut ws| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    let dropped = format!("protocol = \"raw\"\ntarget = \"{url}\"\n{text}");
    let outcome = harness::run(scenario(&dropped), options(results.path()), CancellationToken::new()).await.unwrap();
    let (s, report) = (&outcome.summary, &outcome.report);
    assert_eq!((s.checks.failed, s.checks.pending), (3, 0), "the message can no longer come: {report}");
    assert!(!s.passed, "{report}");
}

/// A scenario for the `--shards` tests: one group of `clients` at 10 msg/s
/// for `duration`, everything delivered and no errors.
fn sharded_scenario(dir: &Path, duration: &str, clients: u32) -> std::path::PathBuf {
    let file = dir.join("sharded.toml");
    let text = format!(
        "name = \"sharded\"\nramp_up = \"500ms\"\nduration = \"{duration}\"\ndrain = \"500ms\"\n[[group]]\nname = \"all\"\n\
         clients = {clients}\nrate = 10.0\n[thresholds]\n\"delivery.ratio\" = \"== 1.0\"\n\"errors\" = \"== 0\"\n"
    );
    std::fs::write(&file, text).unwrap();
    file
}

fn read_summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[tokio::test]
async fn shards_in_one_command_connect_from_their_own_addresses_and_merge() {
    let dir = tempfile::tempdir().unwrap();
    let file = sharded_scenario(dir.path(), "2s", 9);
    let out = dir.path().join("out");
    let ndjson = dir.path().join("run.ndjson");
    let args = ["run", file.to_str().unwrap(), "--shards", "3", "--out", out.to_str().unwrap(), "--out-ndjson"];
    let mut args: Vec<String> = args.map(String::from).to_vec();
    args.push(ndjson.to_str().unwrap().to_string());
    let (code, report, stderr) = run_chorus(args).await;
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert!(stderr.contains("3 shards of sharded (9 clients)"), "{stderr}");
    assert!(stderr.contains("] steady   9/9 connected"), "progress shows the whole run: {stderr}");
    assert!(report.contains("3 shards merged") && report.contains("result: PASSED"), "{report}");
    let read = read_summary;
    let merged = read(&out);
    assert_eq!(merged["run"]["merged_from"], 3);
    assert_eq!(merged["scenario"]["embedded_server"], true, "the parent's server, though each shard had its URL");
    assert!(report.contains("(embedded server)"), "{report}");
    assert_eq!(merged["connections"]["ok"], 9);
    assert_eq!(merged["delivery"]["ratio"], 1.0);
    let sources: Vec<&str> = merged["run"]["sources"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(sources, ["127.0.1.1", "127.0.2.1", "127.0.3.1"], "each shard from its own address");
    let mut sent = 0;
    for i in 1..=3 {
        let shard = read(&out.join(format!("shard-{i}")));
        assert_eq!(shard["run"]["shard"], format!("{i}/3"));
        assert_eq!(shard["connections"]["ok"], 3);
        sent += shard["messages"]["sent"].as_u64().unwrap();
    }
    assert_eq!(merged["messages"]["sent"].as_u64().unwrap(), sent, "the merge is the sum of the shards");
    // The live view is the whole run's too: its seconds add up to the merge.
    let text = std::fs::read_to_string(&ndjson).unwrap();
    let seconds: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let live_sent: u64 = seconds.iter().filter(|r| r["type"] == "second").map(|r| r["sent"].as_u64().unwrap()).sum();
    assert_eq!(live_sent, sent);
    assert_eq!(seconds.last().unwrap()["summary"]["run"]["merged_from"], 3);
}

#[tokio::test]
async fn shards_spread_over_every_target_as_the_whole_run_would() {
    let (a, b) = (common::server().await, common::server().await);
    let dir = tempfile::tempdir().unwrap();
    let file = sharded_scenario(dir.path(), "1s", 8);
    let out = dir.path().join("out");
    let args = ["run", file.to_str().unwrap(), "--shards", "2", "--target", &a.url(), "--target", &b.url()];
    let mut args: Vec<String> = args.map(String::from).to_vec();
    args.extend(["--out".to_string(), out.to_str().unwrap().to_string()]);
    let (code, report, stderr) = run_chorus(args).await;
    assert_eq!(code, 0, "{report}\n{stderr}");
    let read = read_summary;
    let per_target = |summary: &serde_json::Value| -> Vec<(String, u64)> {
        let targets = summary["targets"].as_array().unwrap();
        targets.iter().map(|t| (t["url"].as_str().unwrap().to_string(), t["clients"].as_u64().unwrap())).collect()
    };
    // Each shard got both targets and put client k where the whole run would,
    // on target k mod 2: shard 1 runs clients 0, 2, 4, 6, shard 2 the others.
    let shard = |i: usize| per_target(&read(&out.join(format!("shard-{i}"))));
    assert_eq!(shard(1), [(a.url(), 4), (b.url(), 0)]);
    assert_eq!(shard(2), [(a.url(), 0), (b.url(), 4)]);
    let merged = read(&out);
    assert_eq!(per_target(&merged), [(a.url(), 4), (b.url(), 4)], "the merge adds up by URL");
    assert_eq!(merged["delivery"]["ratio"], 1.0);
    assert!(report.contains("2 external servers"), "{report}");
    assert_eq!(merged["scenario"]["embedded_server"], false);
}

/// Rates are over whole seconds of the steady phases, from those seconds'
/// counts; when every client left before one ran, there are none.
#[tokio::test]
async fn throughput_is_over_whole_steady_seconds_or_absent() {
    let results = tempfile::tempdir().unwrap();
    let text = "ramp_up = \"500ms\"\nduration = \"2s\"\ndrain = \"500ms\"\n[[group]]\nclients = 2\nrate = 10.0\n";
    let outcome = harness::run(scenario(text), options(results.path()), CancellationToken::new()).await.unwrap();
    let t = &outcome.summary.throughput;
    // Steady from 0.5 s to 2.5 s: only second 1 lies wholly inside it.
    assert_eq!(t.seconds, 1, "{t:?}");
    assert!(t.sent_per_sec.is_some() && t.delivered_per_sec.is_some(), "{t:?}");
    let left = "ramp_up = \"1s\"\nduration = \"3s\"\n[[group]]\nclients = 2\n\
        script = [{ say = \"hello\" }, { think = \"300ms\" }, { leave = true }]\n";
    let outcome = harness::run(scenario(left), options(results.path()), CancellationToken::new()).await.unwrap();
    let t = &outcome.summary.throughput;
    assert_eq!((t.seconds, t.sent_per_sec, t.delivered_per_sec), (0, None, None), "{t:?}");
    assert!(outcome.report.contains("throughput   - (no whole second of a steady phase ran)"), "{}", outcome.report);
}
