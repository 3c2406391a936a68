//! History against real failures, on a real `chorus server` process: killed
//! with SIGKILL under load, a full disk (a tiny tmpfs), a read-only data
//! directory. The disk tests mount a tmpfs inside a private mount namespace
//! (`unshare`), which needs root: they are ignored by a plain `cargo test`
//! (reported as such, not as passed), and `.ci/run`, as root, runs them with
//! `--include-ignored`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::Client;
use common::process::{ServerProcess, server_command};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// One acknowledged message: (msg_id, seq).
type Acked = HashMap<String, (String, u64)>;

/// Chat in `room` as fast as acks come back (32 in flight) until the
/// connection dies; returns what was acknowledged, by client_id.
async fn sender(url: String, name: String, room: &'static str, acks: Arc<AtomicU64>) -> Acked {
    let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut sink, mut stream) = ws.split();
    let join = json!({"type": "join", "room": room}).to_string();
    let mut acked = Acked::new();
    if sink.send(Message::Text(join.into())).await.is_err() {
        return acked;
    }
    let (mut sent, mut in_flight) = (0u64, 0u64);
    loop {
        while in_flight < 32 {
            sent += 1;
            let chat =
                json!({"type": "chat", "text": format!("{name} says {sent}"), "client_id": format!("{name}-{sent}")});
            if sink.send(Message::Text(chat.to_string().into())).await.is_err() {
                return acked;
            }
            in_flight += 1;
        }
        let Some(Ok(Message::Text(text))) = stream.next().await else { return acked };
        let event: Value = serde_json::from_str(&text).unwrap();
        if event["type"] == "ack" {
            let id = event["client_id"].as_str().unwrap().to_string();
            acked.insert(id, (event["msg_id"].as_str().unwrap().to_string(), event["seq"].as_u64().unwrap()));
            acks.fetch_add(1, Ordering::Relaxed);
            in_flight -= 1;
        }
    }
}

/// The highest seq seen live in `room` until the connection dies.
async fn watcher(url: String, room: &'static str) -> u64 {
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let join = json!({"type": "join", "room": room}).to_string();
    let _ = ws.send(Message::Text(join.into())).await;
    let mut top = 0;
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Text(text) = message {
            let event: Value = serde_json::from_str(&text).unwrap();
            top = top.max(event["seq"].as_u64().unwrap_or(0));
        }
    }
    top
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_a_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // Four senders flat out: far over the default per-connection rate limit, not under test here.
    let mut server = ServerProcess::spawn(server_command("127.0.0.1:0", dir.path(), &["--rate-limit", "off"])).unwrap();
    let url = server.url.clone();
    let rooms = ["lobby", "ops"];
    let watchers: Vec<_> = rooms.iter().map(|room| tokio::spawn(watcher(url.clone(), room))).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let acks = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> =
        (0..4).map(|i| tokio::spawn(sender(url.clone(), format!("s{i}"), rooms[i % 2], acks.clone()))).collect();
    // Kill it mid-load, once plenty has been acknowledged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acks.load(Ordering::Relaxed) < 2_000 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();
    let mut acked = Acked::new();
    for sender in senders {
        acked.extend(sender.await.unwrap());
    }
    let mut live_top = Vec::new();
    for watcher in watchers {
        live_top.push(watcher.await.unwrap());
    }
    assert!(acked.len() >= 2_000, "load ran: {} acks", acked.len());

    let mut server = ServerProcess::spawn(server_command("127.0.0.1:0", dir.path(), &[])).unwrap();
    assert!(server.logs().iter().any(|l| l.contains("was not closed cleanly")), "{:?}", server.logs());
    let db = rusqlite::Connection::open(dir.path().join("chorus.db")).unwrap();
    let integrity: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    let mut lookup = db.prepare("SELECT count(*), max(seq) FROM messages WHERE msg_id = ?1").unwrap();
    for (client_id, (msg_id, seq)) in &acked {
        let (count, stored_seq): (i64, Option<i64>) =
            lookup.query_row([msg_id], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!(count, 1, "{client_id} ({msg_id}) was acknowledged, so it is stored exactly once");
        assert_eq!(stored_seq, Some(*seq as i64), "{client_id} keeps its seq");
    }

    // No seq seen before the crash is given to a new message.
    let mut after = Client::named(&server.url, "after").await;
    for (room, top) in rooms.iter().zip(live_top) {
        after.send_json(json!({"type": "join", "room": room})).await;
        after.expect("joined").await;
        after.chat("after the crash", room).await;
        let seq = after.expect("ack").await["seq"].as_u64().unwrap();
        assert!(seq > top, "#{room}: new seq {seq} is past {top}, the last one delivered before the kill");
    }
    assert_eq!(server.terminate().code(), Some(0));
}

/// `chorus server` on a tmpfs mounted at `dir` with `options`, seen only by the server.
fn server_on_tmpfs(dir: &Path, options: &str) -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o {options} chorus-test \"$1\" && exec \"$2\" server --addr 127.0.0.1:0 --data \"$1\" \
             --history-sync normal"
        ))
        .arg("sh")
        .arg(dir)
        .arg(env!("CARGO_BIN_EXE_chorus"))
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info");
    command
}

/// Fill the file system holding `path` up, then give back `spare` bytes.
fn fill_disk(path: &Path, spare: u64) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    while file.write_all(&chunk).and_then(|()| file.sync_all()).is_ok() {}
    let len = file.metadata().unwrap().len();
    file.set_len(len.saturating_sub(spare)).unwrap();
    file.sync_all().unwrap();
}

#[tokio::test]
#[ignore = "needs root (unshare --mount, a tmpfs); .ci/run runs this as root"]
async fn a_full_disk_costs_acks_not_the_server_and_storing_resumes_with_space() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::spawn(server_on_tmpfs(dir.path(), "size=2m")).unwrap();
    // The server's view of its data directory, from outside its namespace.
    let inside = PathBuf::from(format!("/proc/{}/root{}", server.child.id(), dir.path().display()));
    let filler = inside.join("filler");
    fill_disk(&filler, 256 * 1024);

    let mut alice = Client::named(&server.url, "alice").await;
    let mut bob = Client::named(&server.url, "bob").await;
    alice.settle(Duration::from_millis(100)).await;
    let text = "z".repeat(60 * 1024);
    let mut acked = Vec::new();
    let failed = loop {
        assert!(acked.len() < 40, "the disk never filled up");
        let id = format!("m{}", acked.len() + 1);
        alice.chat(&text, &id).await;
        assert_eq!(bob.expect("chat").await["client_id"], id.as_str(), "delivered live whatever the disk says");
        let answer = loop {
            let event = alice.next_event().await;
            if event["type"] == "ack" || event["type"] == "error" {
                break event;
            }
        };
        match answer["type"].as_str() {
            Some("ack") => acked.push(answer["seq"].as_u64().unwrap()),
            _ => break answer,
        }
    };
    assert_eq!(failed["code"], "storage_failed", "{failed}");
    assert_eq!(failed["client_id"], format!("m{}", acked.len() + 1), "the error names the message");
    assert!(failed["message"].as_str().unwrap().contains("disk is full"), "{failed}");

    alice.send_text("/who").await;
    assert_eq!(alice.expect("who").await["users"].as_array().unwrap().len(), 2, "the server stays up");
    std::fs::remove_file(&filler).unwrap();
    alice.chat("space again", "again").await;
    let ack = alice.expect_where("ack", |e| e["client_id"] == "again").await;
    let history = {
        alice.send_json(json!({"type": "history", "after_seq": 0})).await;
        alice.expect("history").await
    };
    let stored: Vec<u64> = history["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    let mut expected = acked.clone();
    expected.push(ack["seq"].as_u64().unwrap());
    assert_eq!(stored, expected, "what was acknowledged is stored, what failed is not");
    assert!(server.logs().iter().any(|l| l.contains("storing works again")), "{:?}", server.logs());
}

#[test]
#[ignore = "needs root (unshare --mount, a tmpfs); .ci/run runs this as root"]
fn a_read_only_data_directory_stops_the_server_at_start_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let Err(stderr) = ServerProcess::spawn(server_on_tmpfs(dir.path(), "ro,size=1m")) else {
        panic!("a server that cannot store history must not start");
    };
    assert!(stderr.contains("cannot open the history database"), "{stderr}");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(stderr.contains("--data") && stderr.contains("--history memory"), "the fix is named: {stderr}");
    assert!(stderr.contains("exit status: 1"), "{stderr}");
}

#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = ServerProcess::spawn(server_command("127.0.0.1:0", dir.path(), &[])).unwrap();
    let Err(stderr) = ServerProcess::spawn(server_command("127.0.0.1:0", dir.path(), &[])) else {
        panic!("two servers must not share a data directory: they would hand out the same seqs");
    };
    assert!(stderr.contains("another chorus server is using this data directory"), "{stderr}");
    assert!(!stderr.contains("writable"), "the cause, not advice about another one: {stderr}");
    assert!(stderr.contains("exit status: 1"), "{stderr}");
}
