//! The `chorus` binary as a user runs it.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Client, code, server};

fn chorus() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chorus"));
    command.env("NO_COLOR", "1").env_remove("RUST_LOG");
    command
}

/// Run `chorus args...` off the async runtime; returns (success, stdout, stderr).
async fn run(args: &[&str], stdin: &str) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || {
        let mut child =
            chorus().args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn simple_client_sends_text_binary_and_rename_then_closes_cleanly() {
    let server = server().await;
    let mut watcher = Client::named(&server.url(), "watcher").await;
    let (ok, stdout, stderr) = run(&["simple-client", &server.url()], "").await;
    assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("ack: seq=1"), "{stdout}");
    assert!(stdout.contains("recipients=1"), "{stdout}");
    assert!(stdout.contains("you are now simple-"), "{stdout}");
    assert!(stdout.contains("closed cleanly (1000"), "{stdout}");
    assert_eq!(watcher.expect("chat").await["text"], "Hello from chorus simple-client!");
    watcher.expect("binary").await;
    watcher.expect("renamed").await;
    assert_eq!(watcher.expect("left").await["reason"], "quit");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn client_reads_messages_from_a_pipe_and_prints_one_event_per_line() {
    let server = server().await;
    let mut bob = Client::named(&server.url(), "bob").await;
    let script = "/username piper\nhello from a pipe\n/binary raw\n/who\n/join elsewhere\n";
    let (ok, stdout, stderr) = run(&["client", &server.url()], script).await;
    assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("you are now piper"), "{stdout}");
    assert!(
        stdout.contains("2 in #lobby: bob, piper (you)") || stdout.contains("2 in #lobby: piper (you), bob"),
        "{stdout}"
    );
    assert!(stdout.contains("you joined #elsewhere"), "{stdout}");
    assert_eq!(stdout.matches("ack:").count(), 2, "both messages acknowledged before exit: {stdout}");
    let chat = bob.expect("chat").await;
    assert_eq!((chat["text"].as_str(), chat["from"].as_str()), (Some("hello from a pipe"), Some("piper")));
    bob.expect("binary").await;
    assert_eq!(bob.expect("left").await["reason"], "moved");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn client_json_mode_prints_raw_events() {
    let server = server().await;
    let (ok, stdout, _) = run(&["client", "--json", &server.url()], "/rooms\n").await;
    assert!(ok);
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "welcome");
    assert!(stdout.lines().any(|l| l.contains("\"type\":\"rooms\"")), "{stdout}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_gives_one_clear_line_and_a_failure_code() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("ws://127.0.0.1:{port}");
    for command in ["client", "simple-client"] {
        let (ok, stdout, stderr) = run(&[command, &url], "").await;
        assert!(!ok, "{command} must fail");
        assert_eq!(stderr.trim().lines().count(), 1, "{command}: one line: {stderr}");
        assert!(stderr.contains("could not reach") && stderr.contains(&url), "{stderr}");
        assert_eq!(stderr.matches("Connection refused").count(), 1, "the cause, once: {stderr}");
        assert!(stderr.contains("start one with `chorus server`"), "the way out: {stderr}");
        assert!(stdout.is_empty());
    }
}

/// A plain HTTP server that answers every request with `response`.
async fn http_server(response: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp.write_all(response.as_bytes()).await;
        }
    });
    format!("ws://{addr}/")
}

#[tokio::test]
async fn a_server_that_does_not_speak_websocket_or_tls_is_named_as_such() {
    let http10 =
        http_server("HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>\x1b[2Jdirectory listing</html>").await;
    let http11 = http_server("HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found").await;
    for url in [http10, http11] {
        for command in ["client", "simple-client"] {
            let (ok, _, stderr) = run(&[command, &url], "").await;
            assert!(!ok, "{command} must fail");
            assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
            assert!(
                stderr.contains("is not a WebSocket endpoint") && stderr.contains("is this a chorus server?"),
                "{stderr}"
            );
            assert!(!stderr.contains("HTTP version must be") && !stderr.contains('\x1b'), "{stderr}");
        }
    }
    let server = server().await;
    let wss = server.url().replace("ws://", "wss://");
    let (ok, _, stderr) = run(&["client", "--insecure", &wss], "").await;
    assert!(!ok);
    assert!(stderr.contains("does not speak TLS on this port; use ws:// instead of wss://"), "{stderr}");
    assert!(!stderr.contains("InvalidContentType"), "{stderr}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_missing_scenario_file_says_so_once_and_where_the_scenarios_are() {
    let (ok, _, stderr) = run(&["run", "/nonexistent/x.toml"], "").await;
    assert!(!ok);
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "the cause, once: {stderr}");
    assert!(stderr.contains("scenarios/smoke.toml"), "the way out: {stderr}");
}

#[tokio::test]
async fn demo_runs_to_a_clean_end_with_a_latency_report() {
    let (ok, stdout, stderr) = run(&["demo", "--pace", "20ms"], "").await;
    assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
    for expected in ["alice ▶ says", "joins #rust", "[binary, 8 bytes]", "name_taken", "left #rust (quit)", "p99"] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    let delivery = stdout.lines().find(|l| l.starts_with("delivery:")).unwrap();
    let numbers: Vec<&str> = delivery.split_whitespace().filter(|w| w.parse::<u64>().is_ok()).collect();
    assert_eq!(numbers[0], numbers[1], "every expected message was received: {delivery}");
}

#[tokio::test]
async fn server_process_stops_on_sigterm_closing_clients_with_1001() {
    let data = tempfile::tempdir().unwrap();
    let mut child = chorus()
        .args(["server", "--addr", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    let url = loop {
        let line = rx.recv_timeout(Duration::from_secs(10)).expect("the server logs its address");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let mut alice = Client::connect(&url).await;
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(code(&alice.expect_close().await), 1001);
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(exit.success(), "the server exits 0 after a graceful shutdown: {exit:?}");
    let logs: Vec<String> = rx.try_iter().collect();
    assert!(logs.iter().any(|l| l.contains("shutting down")), "{logs:?}");
    assert!(logs.iter().any(|l| l.contains("history: everything stored")), "history is flushed: {logs:?}");
}

#[tokio::test]
async fn a_commit_window_longer_than_a_second_is_refused_at_start() {
    let (ok, _, stderr) = run(&["server", "--addr", "127.0.0.1:0", "--history-commit-window", "5s"], "").await;
    assert!(!ok, "the server must not start");
    assert!(stderr.contains("too long for a commit window: at most 1s"), "{stderr}");
}

#[test]
fn an_address_without_a_host_says_what_an_address_looks_like() {
    let output =
        std::process::Command::new(env!("CARGO_BIN_EXE_chorus")).args(["server", "--addr", "8081"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("host:port") && stderr.contains("127.0.0.1:8080"), "{stderr}");
}

#[tokio::test]
async fn the_server_does_not_log_every_connection_at_the_default_level() {
    let data = tempfile::tempdir().unwrap();
    let command = common::process::server_command("127.0.0.1:0", data.path(), &[]);
    let mut server = common::process::ServerProcess::spawn(command).unwrap();
    for name in ["a", "b", "c"] {
        let mut client = Client::named(&server.url, name).await;
        client.ws.close(None).await.unwrap();
    }
    assert_eq!(server.terminate().code(), Some(0));
    let mut logs = server.logs();
    for _ in 0..100 {
        if logs.iter().any(|l| l.contains("everything stored")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        logs = server.logs();
    }
    assert!(logs.iter().any(|l| l.contains("everything stored")), "the last line was read: {logs:?}");
    assert!(logs.iter().all(|l| !l.contains("connected")), "a line per connection is for RUST_LOG=debug: {logs:?}");
}
