//! `chorus client` across server restarts, driven through a pipe as a
//! script would: it reconnects, gets its name and room back, shows what was
//! said while it was away exactly once, and marks where it resumed.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Client;
use common::process::{ServerProcess, chorus, read_lines, server_command};
use serde_json::json;

/// `chorus client` with its stdin and stdout in our hands.
struct PipedClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl PipedClient {
    fn start(url: &str) -> PipedClient {
        let mut child = chorus()
            .args(["client", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = read_lines(child.stdout.take().unwrap());
        let stdin = child.stdin.take();
        PipedClient { child, stdin, lines, seen: Vec::new() }
    }

    fn type_line(&mut self, line: &str) {
        writeln!(self.stdin.as_mut().unwrap(), "{line}").unwrap();
    }

    /// Wait (off the runtime's thread) for a line containing `needle`.
    async fn wait_for(&mut self, needle: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.seen.iter().any(|line| line.contains(needle)) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = tokio::task::block_in_place(|| self.lines.recv_timeout(left));
            match line {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no line with {needle:?}; the client printed:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn count(&self, needle: &str) -> usize {
        self.seen.iter().filter(|line| line.contains(needle)).count()
    }

    fn position(&self, needle: &str) -> usize {
        self.seen.iter().position(|line| line.contains(needle)).unwrap()
    }
}

/// Join `room` as `name` and say each of `texts`, waiting for the acks.
async fn say(url: &str, name: &str, room: &str, texts: &[&str]) {
    let mut client = Client::named(url, name).await;
    client.send_json(json!({"type": "join", "room": room})).await;
    client.expect("joined").await;
    for text in texts {
        client.chat(text, text).await;
        client.expect("ack").await;
    }
    client.ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_client_reconnects_restores_and_shows_what_it_missed() {
    let data = tempfile::tempdir().unwrap();
    let mut first = ServerProcess::spawn(server_command("127.0.0.1:0", data.path(), &[])).unwrap();
    let port = first.port;
    let mut client = PipedClient::start(&first.url);
    client.type_line("/username piper");
    client.type_line("/join den");
    client.type_line("before the restart");
    client.wait_for("ack: seq=1").await;
    say(&first.url, "alice", "den", &["seen live"]).await;
    client.wait_for("<alice> seen live").await;

    // The server goes away; while the client is knocking on its port,
    // another server on the same data directory takes messages for #den.
    assert!(first.terminate().success());
    client.wait_for("connection lost").await;
    let mut meanwhile = ServerProcess::spawn(server_command("127.0.0.1:0", data.path(), &[])).unwrap();
    say(&meanwhile.url, "alice", "den", &["missed one", "missed two"]).await;
    assert!(meanwhile.terminate().success());
    client.wait_for("reconnect attempt").await;

    let addr = format!("127.0.0.1:{port}");
    let mut last = ServerProcess::spawn(server_command(&addr, data.path(), &[])).unwrap();
    client.wait_for("resumed in #den").await;
    let marker = client.position("resumed in #den");
    assert!(client.seen[marker].contains("2 missed message(s) above"), "{}", client.seen[marker]);
    let away = client.position("missed while you were away, in #den");
    let (one, two) = (client.position("<alice> missed one"), client.position("<alice> missed two"));
    assert!(
        away < one && one < two && two < marker,
        "missed messages in order, before the marker:\n{}",
        client.seen.join("\n")
    );
    assert_eq!(client.count("missed one") + client.count("missed two"), 2, "each shown once");
    assert_eq!(client.count("seen live"), 1, "what was seen live is not shown again");
    let back = client.position("reconnected; restoring piper in #den");
    let renamed = client.seen.iter().rposition(|line| line.contains("you are now piper")).unwrap();
    assert!(back < renamed && renamed < marker, "the name is restored first:\n{}", client.seen.join("\n"));

    // Name and room are back, and the conversation goes on live.
    let mut alice = Client::named(&last.url, "alice").await;
    alice.send_json(json!({"type": "join", "room": "den"})).await;
    alice.expect("joined").await;
    alice.send_text("/who").await;
    let who = alice.expect("who").await;
    let names: Vec<&str> = who["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert!(names.contains(&"piper"), "piper is back in #den: {who}");
    alice.chat("after the restart", "after").await;
    client.wait_for("<alice> after the restart").await;
    client.type_line("still here");
    let chat = alice.expect("chat").await;
    assert_eq!((chat["from"].as_str(), chat["text"].as_str()), (Some("piper"), Some("still here")));
    assert_eq!(chat["seq"], 6, "seq continued: 1 before, 2 seen live, 3-4 missed, 5 and 6 after");

    drop(client.stdin.take());
    let status = tokio::task::block_in_place(|| client.child.wait()).unwrap();
    assert!(status.success(), "{status:?}");
    assert!(last.terminate().success());
}
