//! File transfer as clients see it: offers, chunks interleaved with chat, the
//! `file` event in the room and in history, downloads with ranges and safe
//! headers, and every fault (hash, order, size, count, timeout, a missing
//! binary frame) ending the upload with an error and nothing stored.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, server_with};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use chorus::server::chat::uploads::UploadLimits;
use chorus::server::{FileLimits, HistoryConfig, ServerConfig, ServerHandle, SessionConfig};

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn config() -> ServerConfig {
    ServerConfig {
        // Chunks of 1 KiB, so small files take several.
        max_message_size: 1024,
        session: SessionConfig { rate_limit: None, ..common::quick_close().session },
        files: FileLimits { max_file_size: 64 * 1024, max_total: None },
        ..common::quick_close()
    }
}

/// Alice and bob in the lobby, notices settled.
async fn two(server: &ServerHandle) -> (Client, Client) {
    let mut alice = Client::named(&server.url(), "alice").await;
    let mut bob = Client::named(&server.url(), "bob").await;
    alice.settle(Duration::from_millis(100)).await;
    bob.settle(Duration::from_millis(20)).await;
    (alice, bob)
}

fn offer(id: &str, name: &str, media_type: &str, content: &[u8]) -> Value {
    json!({
        "type": "file_offer", "upload_id": id, "name": name, "size": content.len(),
        "media_type": media_type, "sha256": sha256(content), "client_id": format!("c-{id}"),
    })
}

/// Offer `content` and send it in chunks; the sender's ack.
async fn upload(client: &mut Client, id: &str, name: &str, media_type: &str, content: &[u8]) -> Value {
    client.send_json(offer(id, name, media_type, content)).await;
    let ready = client.expect("upload_ready").await;
    let chunk = ready["chunk_size"].as_u64().unwrap() as usize;
    for (i, piece) in content.chunks(chunk).enumerate() {
        client.send_json(json!({"type": "file_chunk", "upload_id": id, "offset": i * chunk})).await;
        client.send_binary(piece).await;
    }
    client.expect_where("ack", |e| e["upload_id"] == id).await
}

/// GET `path` on its own connection: status, head (lowercase), body bytes.
async fn get(addr: SocketAddr, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(common::WAIT, tcp.read_to_end(&mut response)).await.unwrap().unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head, response[split + 4..].to_vec())
}

#[tokio::test]
async fn a_file_goes_to_the_room_and_downloads_byte_for_byte() {
    let server = server_with(config()).await;
    let (mut alice, mut bob) = two(&server).await;
    let content: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let ack = upload(&mut alice, "u1", "report <final>.txt", "text/html", &content).await;
    assert_eq!(ack["client_id"], "c-u1");
    assert_eq!(ack["recipients"], 1);
    assert_eq!(ack["file_id"], sha256(&content));
    let file = bob.expect("file").await;
    assert_eq!((file["name"].as_str(), file["size"].as_u64()), (Some("report <final>.txt"), Some(5000)));
    assert_eq!(file["from"], "alice");
    assert_eq!(file["sha256"], sha256(&content));
    assert_eq!(file["client_id"], "c-u1");
    assert_eq!(file["url"], ack["url"]);
    let url = file["url"].as_str().unwrap();
    assert!(url.starts_with("/files/") && url.ends_with("/report%20%3Cfinal%3E.txt"), "{url}");

    let (status, head, body) = get(server.addr(), url, "").await;
    assert_eq!(status, 200);
    assert_eq!(sha256(&body), sha256(&content), "byte for byte");
    // Declared text/html, served as an attachment that a browser never renders.
    assert!(head.contains("content-type: application/octet-stream"), "{head}");
    assert!(head.contains("content-disposition: attachment"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff") && head.contains("content-security-policy: sandbox"));
    let (status, head, body) = get(server.addr(), url, "Range: bytes=100-199\r\n").await;
    assert_eq!((status, body.as_slice()), (206, &content[100..200]));
    assert!(head.contains("content-range: bytes 100-199/5000"), "{head}");
    assert_eq!(get(server.addr(), url, "Range: bytes=9000-\r\n").await.0, 416);
    assert_eq!(get(server.addr(), &format!("/files/{}/x", "0".repeat(64)), "").await.0, 404);

    // In history too, for whoever comes later.
    let mut carol = Client::named(&server.url(), "carol").await;
    carol.send_json(json!({"type": "history"})).await;
    let history = carol.expect("history").await;
    let kept = history["messages"].as_array().unwrap().iter().find(|m| m["type"] == "file").unwrap().clone();
    assert_eq!(kept["url"], file["url"]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn images_are_inline_and_chat_goes_on_during_an_upload() {
    let server = server_with(config()).await;
    let (mut alice, mut bob) = two(&server).await;
    let png = [&b"\x89PNG\r\n\x1a\n"[..], &[7u8; 3000]].concat();
    alice.send_json(offer("img", "cat.png", "image/png", &png)).await;
    alice.expect("upload_ready").await;
    alice.send_json(json!({"type": "file_chunk", "upload_id": "img", "offset": 0})).await;
    alice.send_binary(&png[..1024]).await;
    // A chat between two chunks reaches the room at once.
    alice.chat("between chunks", "chat-1").await;
    assert_eq!(bob.expect("chat").await["text"], "between chunks");
    for offset in (1024..png.len()).step_by(1024) {
        alice.send_json(json!({"type": "file_chunk", "upload_id": "img", "offset": offset})).await;
        alice.send_binary(&png[offset..(offset + 1024).min(png.len())]).await;
    }
    let url = bob.expect("file").await["url"].as_str().unwrap().to_string();
    let (status, head, body) = get(server.addr(), &url, "").await;
    assert_eq!((status, body.len()), (200, png.len()));
    assert!(head.contains("content-type: image/png") && head.contains("content-disposition: inline"), "{head}");
    server.shutdown().await.unwrap();
}

/// The error an upload ends with.
async fn upload_error(client: &mut Client, id: &str) -> String {
    let error = client.expect_where("error", |e| e["upload_id"] == id).await;
    error["code"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn every_fault_ends_the_upload_with_a_clear_error_and_stores_nothing() {
    let server = server_with(config()).await;
    let (mut alice, mut bob) = two(&server).await;
    let content = vec![1u8; 3000];

    // The bytes are not the ones offered.
    alice.send_json(offer("bad-hash", "a.bin", "", &content)).await;
    alice.expect("upload_ready").await;
    for offset in (0..3000).step_by(1024) {
        alice.send_json(json!({"type": "file_chunk", "upload_id": "bad-hash", "offset": offset})).await;
        alice.send_binary(&vec![2u8; (3000 - offset).min(1024)]).await;
    }
    assert_eq!(upload_error(&mut alice, "bad-hash").await, "hash_mismatch");
    let (status, ..) = get(server.addr(), &format!("/files/{}/a.bin", sha256(&content)), "").await;
    assert_eq!(status, 404, "nothing kept");

    // Out of order, for an unknown upload, a header without its frame, past the size.
    alice.send_json(offer("order", "b.bin", "", &content)).await;
    alice.expect("upload_ready").await;
    alice.send_json(json!({"type": "file_chunk", "upload_id": "order", "offset": 1024})).await;
    assert_eq!(upload_error(&mut alice, "order").await, "invalid_chunk");
    alice.send_json(json!({"type": "file_chunk", "upload_id": "nobody", "offset": 0})).await;
    assert_eq!(upload_error(&mut alice, "nobody").await, "invalid_chunk");
    alice.send_json(offer("frameless", "c.bin", "", &content)).await;
    alice.expect("upload_ready").await;
    alice.send_json(json!({"type": "file_chunk", "upload_id": "frameless", "offset": 0})).await;
    alice.chat("not a chunk", "x").await;
    assert_eq!(upload_error(&mut alice, "frameless").await, "invalid_chunk");
    alice.expect_where("ack", |e| e["client_id"] == "x").await;
    alice.send_json(offer("long", "d.bin", "", &[1u8; 10])).await;
    alice.expect("upload_ready").await;
    alice.send_json(json!({"type": "file_chunk", "upload_id": "long", "offset": 0})).await;
    alice.send_binary(&[1u8; 11]).await;
    assert_eq!(upload_error(&mut alice, "long").await, "invalid_chunk");

    // Too big, bad names, too many at once.
    alice
        .send_json(json!({"type": "file_offer", "upload_id": "big", "name": "big.bin", "size": 1 << 20,
        "sha256": sha256(b"")}))
        .await;
    assert_eq!(upload_error(&mut alice, "big").await, "file_too_large");
    for (id, name) in [("n1", "../../etc/passwd"), ("n2", "evil\u{202E}gpj.exe"), ("n3", "")] {
        alice.send_json(offer(id, name, "", &content)).await;
        assert_eq!(upload_error(&mut alice, id).await, "invalid_file", "{name:?}");
    }
    for id in ["p1", "p2"] {
        alice.send_json(offer(id, "p.bin", "", &content)).await;
        alice.expect("upload_ready").await;
    }
    alice.send_json(offer("p3", "p.bin", "", &content)).await;
    assert_eq!(upload_error(&mut alice, "p3").await, "too_many_uploads");
    alice.send_json(json!({"type": "file_cancel", "upload_id": "p1"})).await;
    alice.send_json(offer("p4", "p.bin", "", &content)).await;
    alice.expect_where("upload_ready", |e| e["upload_id"] == "p4").await;

    // Bob saw none of it, and the server stored nothing.
    bob.expect_where("chat", |e| e["text"] == "not a chunk").await;
    bob.expect_silence(Duration::from_millis(200)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_abandoned_upload_times_out() {
    let mut config = config();
    config.session.uploads = UploadLimits { max_uploads: 2, timeout: Duration::from_millis(300) };
    let server = server_with(config).await;
    let mut alice = Client::named(&server.url(), "alice").await;
    alice.send_json(offer("slow", "s.bin", "", &[1u8; 2000])).await;
    alice.expect("upload_ready").await;
    alice.send_json(json!({"type": "file_chunk", "upload_id": "slow", "offset": 0})).await;
    alice.send_binary(&[1u8; 1000]).await;
    alice.expect("upload_progress").await;
    assert_eq!(upload_error(&mut alice, "slow").await, "upload_timeout");
    alice.send_json(json!({"type": "file_chunk", "upload_id": "slow", "offset": 1000})).await;
    assert_eq!(upload_error(&mut alice, "slow").await, "invalid_chunk", "gone for good");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn files_survive_a_restart_with_sqlite_history() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig { data_dir: dir.path().to_path_buf(), history: HistoryConfig::sqlite(), ..config() };
    let server = server_with(config.clone()).await;
    let addr = server.addr();
    let (mut alice, _bob) = two(&server).await;
    let content = b"kept across restarts".to_vec();
    let url = upload(&mut alice, "k", "kept.txt", "text/plain", &content).await["url"].as_str().unwrap().to_string();
    server.shutdown().await.unwrap();
    let server = ServerHandle::start(&addr.to_string(), config).await.unwrap();
    let (status, _, body) = get(server.addr(), &url, "").await;
    assert_eq!((status, body), (200, content));
    let mut carol = Client::connect(&server.url()).await;
    carol.send_json(json!({"type": "history"})).await;
    let history = carol.expect("history").await;
    assert!(history["messages"].as_array().unwrap().iter().any(|m| m["type"] == "file" && m["url"] == url.as_str()));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn downloads_need_a_token_when_auth_is_required() {
    use chorus::server::SecurityConfig;
    use chorus::server::auth::AuthMode;
    let dir = tempfile::tempdir().unwrap();
    let secret = "a test secret, long enough for HS256 keys";
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        security: SecurityConfig { auth: AuthMode::Required, auth_secret: Some(secret.into()), ..Default::default() },
        ..config()
    };
    let server = server_with(config).await;
    let token =
        chorus::server::auth::issue_token(dir.path(), Some(secret), "dana", Duration::from_secs(60)).unwrap().token;
    let mut dana = Client::connect(&format!("{}?token={token}", server.url())).await;
    let url = upload(&mut dana, "t", "t.txt", "text/plain", b"secret notes").await["url"].as_str().unwrap().to_string();
    assert_eq!(get(server.addr(), &url, "").await.0, 401);
    assert_eq!(get(server.addr(), &format!("{url}?token={token}"), "").await.0, 200);
    assert_eq!(get(server.addr(), &url, &format!("Authorization: Bearer {token}\r\n")).await.0, 200);
    server.shutdown().await.unwrap();
}

/// `chorus client URL --downloads DIR` with piped stdin, as a process.
fn terminal_client(url: &str, downloads: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["client", url, "--downloads"])
        .arg(downloads)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn the_terminal_client_shares_files_and_saves_what_others_share() {
    let server = server_with(config()).await;
    let url = server.url();
    let mut watcher = Client::named(&url, "watcher").await;
    let dir = tempfile::tempdir().unwrap();
    let content: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
    let path = dir.path().join("notes from alice.bin");
    std::fs::write(&path, &content).unwrap();

    // A receiver that stays until the file is saved.
    let saved_dir = dir.path().join("saved");
    let mut receiver = terminal_client(&url, &saved_dir);
    watcher.expect("joined").await;
    // The sender shares the file and exits once it is acknowledged.
    let mut sender = terminal_client(&url, &dir.path().join("unused"));
    let mut input = sender.stdin.take().unwrap();
    use std::io::Write as _;
    writeln!(input, "/file {}", path.display()).unwrap();
    drop(input);
    let sent = tokio::task::spawn_blocking(move || sender.wait_with_output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&sent.stdout);
    assert!(sent.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&sent.stderr));
    assert!(stdout.contains("sent notes from alice.bin (20000 bytes)"), "{stdout}");
    let file = watcher.expect("file").await;
    assert_eq!(file["sha256"], sha256(&content));

    let target = saved_dir.join("notes from alice.bin");
    for _ in 0..100 {
        if target.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read(&target).unwrap(), content, "saved byte for byte");
    drop(receiver.stdin.take());
    let out = tokio::task::spawn_blocking(move || receiver.wait_with_output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("saved notes from alice.bin (20000 bytes, SHA-256 checked)"), "{stdout}");
    server.shutdown().await.unwrap();
}
