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
    // wscat prints what it receives only in its interactive mode: type into it.
    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("wscat")
            .args(["-c", &url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for line in ["/username wscat", "hello from wscat", "/who"] {
            std::thread::sleep(Duration::from_millis(300));
            writeln!(stdin, "{line}").unwrap();
        }
        std::thread::sleep(Duration::from_millis(500));
        drop(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
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
