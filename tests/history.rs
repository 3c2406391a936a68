//! History as clients see it: `history` requests, `gap`, acks after commit,
//! retention and seq continuity, over real sockets on port 0.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{Client, server, server_with};
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::MaybeTlsStream;

use chorus::server::history::store::Retention;
use chorus::server::history::store::sqlite::Durability;
use chorus::server::{HistoryConfig, ServerConfig, ServerHandle, SessionConfig};

/// Ask for history and return the answer.
async fn history(client: &mut Client, request: Value) -> Value {
    let mut request = request;
    request["type"] = json!("history");
    client.send_json(request).await;
    client.expect("history").await
}

fn seqs(answer: &Value) -> Vec<u64> {
    answer["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect()
}

/// A server keeping history in SQLite under `dir`.
fn sqlite_config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        data_dir: dir.to_path_buf(),
        history: HistoryConfig { durability: Durability::Normal, ..HistoryConfig::sqlite() },
        // These tests send thousands of messages at once: no rate limit.
        session: SessionConfig { rate_limit: None, ..common::quick_close().session },
        ..common::quick_close()
    }
}

/// A SQLite server under `dir`, with alice and bob in the lobby, notices settled.
async fn sqlite_server_with_two(dir: &std::path::Path) -> (ServerHandle, Client, Client) {
    let server = server_with(sqlite_config(dir)).await;
    let mut alice = Client::named(&server.url(), "alice").await;
    let mut bob = Client::named(&server.url(), "bob").await;
    alice.settle(Duration::from_millis(100)).await;
    bob.settle(Duration::from_millis(10)).await;
    (server, alice, bob)
}

/// Send `count` chats and wait for every ack.
async fn chat_many(client: &mut Client, count: usize, prefix: &str) {
    for i in 1..=count {
        client.chat(&format!("{prefix}{i}"), &format!("{prefix}{i}")).await;
    }
    for _ in 0..count {
        client.expect("ack").await;
    }
}

#[tokio::test]
async fn history_returns_text_and_binary_exactly_as_delivered() {
    let server = server().await;
    let url = server.url();
    let mut alice = Client::named(&url, "alice").await;
    let mut bob = Client::named(&url, "bob").await;
    alice.chat("héllo \"world\"", "c-1").await;
    let ack = alice.expect("ack").await;
    let payload: Vec<u8> = (0..=255u8).rev().chain([0, 0, 0xff]).collect();
    alice.send_binary(&payload).await;
    alice.expect("ack").await;
    let live = bob.expect("chat").await;

    let answer = history(&mut bob, json!({})).await;
    assert_eq!(answer["room"], "lobby");
    let messages = answer["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{answer}");
    assert_eq!(messages[0], live, "a chat in history is the chat event as delivered");
    assert_eq!(messages[0]["msg_id"], ack["msg_id"]);
    assert_eq!(messages[0]["client_id"], "c-1");
    let binary = &messages[1];
    assert_eq!((binary["type"].as_str(), binary["seq"].as_u64()), (Some("binary"), Some(2)));
    assert_eq!(binary["bytes"], payload.len());
    assert_eq!(binary["from"], "alice");
    let data = base64::engine::general_purpose::STANDARD.decode(binary["data"].as_str().unwrap()).unwrap();
    assert_eq!(data, payload, "binary payloads come back byte-exact");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn limits_paging_and_bad_parameters() {
    let server = server().await;
    let url = server.url();
    let mut alice = Client::named(&url, "alice").await;
    chat_many(&mut alice, 120, "m").await;
    let mut reader = Client::connect(&url).await;
    reader.send_json(json!({"type": "join", "room": "elsewhere"})).await;
    reader.expect("joined").await;

    let latest = history(&mut reader, json!({"room": "lobby"})).await;
    assert_eq!(seqs(&latest), (21..=120).collect::<Vec<_>>(), "default: the latest 100, oldest first");
    let first = history(&mut reader, json!({"room": "lobby", "after_seq": 0, "limit": 10})).await;
    assert_eq!(seqs(&first), (1..=10).collect::<Vec<_>>(), "after_seq 0: from the beginning");
    let older = history(&mut reader, json!({"room": "lobby", "before_seq": 21, "limit": 500})).await;
    assert_eq!(seqs(&older), (1..=20).collect::<Vec<_>>(), "paging backward");
    let between = history(&mut reader, json!({"room": "lobby", "after_seq": 50, "before_seq": 55})).await;
    assert_eq!(seqs(&between), [51, 52, 53, 54]);
    let everything = history(&mut reader, json!({"room": "lobby", "after_seq": 0, "limit": 500})).await;
    assert_eq!(seqs(&everything).len(), 120);
    assert!(history(&mut reader, json!({"room": "nobody-here"})).await["messages"].as_array().unwrap().is_empty());
    assert!(history(&mut reader, json!({})).await["messages"].as_array().unwrap().is_empty(), "my room is quiet");

    for (request, code) in [
        (json!({"limit": 0}), "invalid_frame"),
        (json!({"limit": 501}), "invalid_frame"),
        (json!({"after_seq": 5, "before_seq": 5}), "invalid_frame"),
        (json!({"before_seq": 0}), "invalid_frame"),
        (json!({"after_seq": -1}), "invalid_frame"),
        (json!({"limit": "ten"}), "invalid_frame"),
        (json!({"room": "two words"}), "invalid_room"),
    ] {
        let mut request = request;
        request["type"] = json!("history");
        reader.send_json(request.clone()).await;
        let error = reader.expect("error").await;
        assert_eq!(error["code"], code, "{request}: {error}");
    }
    reader.send_json(json!({"type": "join", "room": "lobby"})).await;
    reader.expect("joined").await;
    reader.send_text("/history 5").await;
    assert_eq!(seqs(&reader.expect("history").await), [116, 117, 118, 119, 120], "the slash command");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn seq_and_history_continue_after_a_restart_on_the_same_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(sqlite_config(dir.path())).await;
    let mut alice = Client::named(&server.url(), "alice").await;
    chat_many(&mut alice, 3, "before").await;
    alice.send_json(json!({"type": "join", "room": "rust"})).await;
    alice.expect("joined").await;
    chat_many(&mut alice, 2, "rust").await;
    drop(alice);
    server.shutdown().await.unwrap();

    let server = server_with(sqlite_config(dir.path())).await;
    let mut bob = Client::named(&server.url(), "bob").await;
    bob.chat("after", "after").await;
    assert_eq!(bob.expect("ack").await["seq"], 4, "the lobby continues at 4");
    let answer = history(&mut bob, json!({"after_seq": 0})).await;
    let texts: Vec<&str> = answer["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["before1", "before2", "before3", "after"]);
    assert_eq!(answer["messages"][0]["from"], "alice", "stored with the sender's name");
    bob.send_json(json!({"type": "join", "room": "rust"})).await;
    bob.expect("joined").await;
    bob.chat("rust again", "r").await;
    assert_eq!(bob.expect("ack").await["seq"], 3, "a room re-created after a restart continues too");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_ack_waits_for_the_disk_but_delivery_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut alice, mut bob) = sqlite_server_with_two(dir.path()).await;

    // Another process holds the database's write lock: nothing can be committed.
    let db = rusqlite::Connection::open(dir.path().join("chorus.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    alice.chat("held", "held").await;
    let chat = bob.expect("chat").await;
    assert_eq!(chat["text"], "held", "recipients get it at once");
    alice.expect_silence(Duration::from_millis(500)).await;
    db.execute_batch("COMMIT").unwrap();
    let ack = alice.expect("ack").await;
    assert_eq!((ack["client_id"].as_str(), ack["seq"].as_u64()), (Some("held"), Some(1)));
    let stored: i64 = db
        .query_row("SELECT count(*) FROM messages WHERE msg_id = ?1", [ack["msg_id"].as_str()], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 1, "acknowledged means stored");
    server.shutdown().await.unwrap();
}

/// How long alice's second ack takes when she sends two chats back to back
/// (the first commits at once), with this group-commit window.
async fn second_ack_after(window: Duration) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(dir.path());
    config.history.commit_window = window;
    let server = server_with(config).await;
    let mut alice = Client::named(&server.url(), "alice").await;
    let mut bob = Client::named(&server.url(), "bob").await;
    alice.settle(Duration::from_millis(100)).await;
    alice.chat("one", "one").await;
    alice.expect("ack").await;
    let sent = std::time::Instant::now();
    alice.chat("two", "two").await;
    bob.expect("chat").await;
    let delivered = sent.elapsed();
    assert!(delivered < Duration::from_millis(300), "delivery never waits for the window ({delivered:?})");
    let ack = alice.expect("ack").await;
    assert_eq!(ack["client_id"], "two");
    server.shutdown().await.unwrap();
    sent.elapsed()
}

#[tokio::test]
async fn under_load_acks_wait_for_the_commit_window() {
    let waited = second_ack_after(Duration::from_millis(600)).await;
    assert!(waited >= Duration::from_millis(450), "the second commit waits out the window ({waited:?})");
    let waited = second_ack_after(Duration::ZERO).await;
    assert!(waited < Duration::from_millis(300), "no window: committed at once ({waited:?})");
}

#[tokio::test]
async fn retention_keeps_each_rooms_latest_messages() {
    let config = ServerConfig {
        history: HistoryConfig {
            retention: Retention { max_messages: Some(5), max_age: None },
            ..HistoryConfig::default()
        },
        ..common::quick_close()
    };
    let server = server_with(config).await;
    let mut alice = Client::named(&server.url(), "alice").await;
    chat_many(&mut alice, 8, "m").await;
    let answer = history(&mut alice, json!({"after_seq": 0})).await;
    assert_eq!(seqs(&answer), [4, 5, 6, 7, 8]);
    alice.chat("next", "next").await;
    assert_eq!(alice.expect("ack").await["seq"], 9);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_history_off_requests_are_unsupported_and_acks_immediate() {
    let config = ServerConfig { history: HistoryConfig::off(), ..common::quick_close() };
    let server = server_with(config).await;
    let mut alice = Client::named(&server.url(), "alice").await;
    alice.chat("hi", "c").await;
    assert_eq!(alice.expect("ack").await["seq"], 1);
    alice.send_text("/history").await;
    let error = alice.expect("error").await;
    assert_eq!(error["code"], "unsupported");
    assert!(error["message"].as_str().unwrap().contains("--history off"), "{error}");
    server.shutdown().await.unwrap();
}

/// A connection whose socket takes almost nothing until the test reads it.
async fn stalled_reader(server: &ServerHandle) -> Client {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr()).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(server.url(), MaybeTlsStream::Plain(tcp)).await.unwrap();
    let mut client = Client { ws, user_id: String::new(), username: String::new() };
    assert_eq!(client.next_event().await["type"], "welcome");
    client
}

#[tokio::test]
async fn a_stalled_reader_gets_gaps_and_recovers_everything_through_history() {
    let config = ServerConfig {
        // The talker floods: over the default rate limit, which is not under test here.
        session: SessionConfig {
            max_queue_items: 256,
            max_queue_bytes: 128 * 1024,
            rate_limit: None,
            ..common::quick_close().session
        },
        ..common::quick_close()
    };
    let server = server_with(config).await;
    let url = server.url();
    let mut reader = stalled_reader(&server).await;
    let mut talker = Client::named(&url, "talker").await;
    // ~8 MB: far more than the socket buffers and the queue hold.
    const COUNT: u64 = 500;
    let text = "x".repeat(16 * 1024);
    for i in 1..=COUNT {
        talker.chat(&text, &format!("m{i}")).await;
    }
    let mut recipients = 0;
    for _ in 0..COUNT {
        recipients += talker.expect("ack").await["recipients"].as_u64().unwrap();
    }
    assert!(recipients < COUNT, "the stalled reader missed some messages ({recipients} of {COUNT} queued)");

    // Now read: every seq arrives once, in order, live or announced by a gap.
    let mut live = Vec::new();
    let mut gaps = Vec::new();
    while live.len() as u64 + gaps.iter().map(|(f, t)| t - f + 1).sum::<u64>() < COUNT {
        let event = reader.next_event().await;
        match event["type"].as_str().unwrap() {
            "chat" => live.push(event["seq"].as_u64().unwrap()),
            "gap" => gaps.push((event["from_seq"].as_u64().unwrap(), event["to_seq"].as_u64().unwrap())),
            _ => {}
        }
    }
    assert!(!gaps.is_empty(), "a gap was announced");
    let mut announced: Vec<u64> = live.clone();
    announced.extend(gaps.iter().flat_map(|(from, to)| *from..=*to));
    let mut sorted = announced.clone();
    sorted.sort();
    assert_eq!(sorted, (1..=COUNT).collect::<Vec<_>>(), "live + gaps cover every seq exactly once");

    let mut recovered = Vec::new();
    for (from, to) in &gaps {
        let mut after = from - 1;
        while after < *to {
            let answer = history(&mut reader, json!({"after_seq": after, "before_seq": to + 1, "limit": 500})).await;
            let page = seqs(&answer);
            // 16 KiB texts: a 512 KiB answer holds at most 32 of them.
            assert!(!page.is_empty() && page.len() <= 32, "answers are paged by size: {}", page.len());
            after = *page.last().unwrap();
            recovered.extend(page);
        }
    }
    let mut all = live;
    all.extend(recovered);
    all.sort();
    assert_eq!(all, (1..=COUNT).collect::<Vec<_>>(), "nothing lost, nothing twice");
    reader.send_text("/who").await;
    assert_eq!(reader.expect("who").await["users"].as_array().unwrap().len(), 2, "the reader was never dropped");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reader_too_far_behind_is_still_closed_as_slow() {
    let config = ServerConfig {
        session: SessionConfig {
            max_queue_items: 256,
            max_queue_bytes: 64 * 1024,
            max_gap: 50,
            // The talker floods: over the default rate limit, which is not under test here.
            rate_limit: None,
            ..common::quick_close().session
        },
        ..common::quick_close()
    };
    let server = server_with(config).await;
    let mut stuck = stalled_reader(&server).await;
    let mut talker = Client::named(&server.url(), "talker").await;
    let text = "y".repeat(16 * 1024);
    for i in 0..600 {
        talker.chat(&text, &format!("m{i}")).await;
    }
    assert_eq!(talker.expect("left").await["reason"], "slow", "more than max_gap missed: closed");
    assert_eq!(common::code(&stuck.expect_close().await), 1008);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_graceful_shutdown_stores_everything_that_was_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut alice, mut bob) = sqlite_server_with_two(dir.path()).await;
    for i in 1..=2_000 {
        alice.chat(&format!("m{i}"), &format!("m{i}")).await;
    }
    let mut delivered = Vec::new();
    while delivered.len() < 100 {
        delivered.push(bob.expect("chat").await["seq"].as_u64().unwrap());
    }
    // Shut down mid-stream: whatever was delivered must be stored.
    let stopping = tokio::spawn(server.shutdown());
    loop {
        match bob.next_message().await {
            tokio_tungstenite::tungstenite::Message::Text(text) => {
                let event: Value = serde_json::from_str(&text).unwrap();
                if event["type"] == "chat" {
                    delivered.push(event["seq"].as_u64().unwrap());
                }
            }
            tokio_tungstenite::tungstenite::Message::Close(_) => break,
            _ => {}
        }
    }
    stopping.await.unwrap().unwrap();
    let db = rusqlite::Connection::open(dir.path().join("chorus.db")).unwrap();
    let mut lookup = db.prepare("SELECT count(*) FROM messages WHERE seq = ?1").unwrap();
    for seq in &delivered {
        let count: i64 = lookup.query_row([*seq as i64], |r| r.get(0)).unwrap();
        assert_eq!(count, 1, "seq {seq} was delivered, so it is stored once ({} delivered)", delivered.len());
    }
    let running: i64 = db.query_row("SELECT value FROM history_state WHERE key = 'running'", [], |r| r.get(0)).unwrap();
    assert_eq!(running, 0, "marked as a clean stop");
}

/// Hold the write lock of `dir`'s history database from another connection
/// for `hold`, as another process (a backup, sqlite3 on the command line)
/// would; returns once the lock is held.
fn hold_write_lock(dir: &std::path::Path, hold: Duration) -> std::thread::JoinHandle<()> {
    let path = dir.join("chorus.db");
    let (locked, is_locked) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked.send(()).unwrap();
        std::thread::sleep(hold);
        conn.execute_batch("COMMIT").unwrap();
    });
    is_locked.recv().unwrap();
    holder
}

/// How long `work` took, failing past `limit`.
async fn within<T>(what: &str, limit: Duration, work: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(10), work).await.unwrap_or_else(|_| panic!("{what}: no answer"));
    let took = started.elapsed();
    assert!(took < limit, "{what} took {took:?} while the history database was locked");
    out
}

#[tokio::test]
async fn a_locked_history_database_stalls_nobody_but_the_acks() {
    use chorus::server::auth::AuthMode;
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        security: chorus::server::SecurityConfig {
            auth: AuthMode::Optional,
            auth_secret: Some("a test secret, long enough for HS256 keys".into()),
            api_rate_limit: None,
            ..Default::default()
        },
        ..sqlite_config(dir.path())
    };
    let server = server_with(config).await;
    let url = server.url();
    let token = chorus::server::auth::issue_token(
        dir.path(),
        Some("a test secret, long enough for HS256 keys"),
        "tokyo",
        Duration::from_secs(600),
    )
    .unwrap()
    .token;
    let mut alice = Client::named(&url, "alice").await;
    alice.settle(Duration::from_millis(100)).await;
    let holder = hold_write_lock(dir.path(), Duration::from_secs(4));
    // The writer now waits for the lock with this message.
    alice.chat("stuck behind the lock", "c1").await;
    // A registration meanwhile: its own database, never behind the writer.
    let register = tokio::spawn(async move {
        let body = r#"{"username":"reggie","password":"correct horse"}"#;
        let url = format!("http://{}/api/register", server_addr_of(&url));
        common::http_post_json(&url, body).await
    });
    // Long enough for the password hash: the registration is storing now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let limit = Duration::from_millis(100);
    within("a rename", limit, async {
        alice.send_json(json!({"type": "username", "name": "alicia"})).await;
        alice.expect("renamed").await
    })
    .await;
    within("a join", limit, async {
        alice.send_json(json!({"type": "join", "room": "elsewhere"})).await;
        alice.expect_where("joined", |e| e["room"] == "elsewhere").await
    })
    .await;
    within("who", limit, async {
        alice.send_text("/who").await;
        alice.expect("who").await
    })
    .await;
    let url = server.url();
    within("/healthz", limit, common::http_get(server.addr(), "/healthz")).await;
    within("a new connection", limit, Client::connect(&url)).await;
    within("a token handshake", limit, Client::connect(&format!("{url}?token={token}"))).await;
    let status = within("a registration", Duration::from_secs(2), async { register.await.unwrap() }).await;
    assert_eq!(status, 201);
    holder.join().unwrap();
    // Once the lock is gone the message is stored and acknowledged.
    alice.expect_where("ack", |e| e["client_id"] == "c1").await;
    server.shutdown().await.unwrap();
}

fn server_addr_of(url: &str) -> String {
    url.trim_start_matches("ws://").trim_end_matches('/').to_string()
}
