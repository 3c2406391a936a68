//! Third-party clients against the server: wscat (npm), exactly as a user
//! would type it. These tests need wscat on PATH, so they are ignored by a
//! plain `cargo test` (reported as such, not as passed); `.ci/run` installs
//! wscat and runs them with `--include-ignored`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Client, server};

#[tokio::test]
#[ignore = "needs wscat (npm install -g wscat); .ci/run installs it and runs this"]
async fn wscat_chats_with_plain_text_and_slash_commands() {
    let server = server().await;
    let mut alice = Client::named(&server.url(), "alice").await;
    let url = server.url();
    // wscat prints what it receives only in its interactive mode: type into
    // it, each line once it has shown the answer to the one before (node can
    // take a while to start on a busy machine).
    let (output, stdout) = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("wscat")
            .args(["-c", &url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = common::process::read_lines(child.stdout.take().unwrap());
        let mut seen = String::new();
        let mut wait_for = |kind: &str| {
            let wanted = format!("\"type\":\"{kind}\"");
            while !seen.contains(&wanted) {
                match lines.recv_timeout(Duration::from_secs(20)) {
                    Ok(line) => seen.push_str(&format!("{line}\n")),
                    Err(_) => panic!("wscat never showed {kind}: {seen}"),
                }
            }
        };
        wait_for("welcome");
        let mut stdin = child.stdin.take().unwrap();
        for (line, answer) in [("/username wscat", "renamed"), ("hello from wscat", "ack"), ("/who", "who")] {
            writeln!(stdin, "{line}").unwrap();
            wait_for(answer);
        }
        drop(stdin);
        let output = child.wait_with_output().unwrap();
        (output, seen)
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let events: Vec<serde_json::Value> =
        stdout.lines().filter_map(|l| serde_json::from_str(l.trim_start_matches('>').trim()).ok()).collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"welcome"), "{stdout}");
    for kind in ["renamed", "ack", "who"] {
        assert!(kinds.contains(&kind), "wscat should have received {kind}: {stdout}");
    }
    let chat = alice.expect("chat").await;
    assert_eq!((chat["text"].as_str(), chat["from"].as_str()), (Some("hello from wscat"), Some("wscat")));
    server.shutdown().await.unwrap();
}
