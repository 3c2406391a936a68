//! The server's HTTP edge as raw clients and proxies see it: the WebSocket
//! handshake rules of RFC 6455 section 4.2.1 and RFC 9110 / 9112, keep-alive,
//! HEAD, `Expect: 100-continue`, absolute-form targets, header limits, and
//! frame checks in the RFC's order. Each request is written by hand, byte for
//! byte, so nothing a client library would fix up hides a rule.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, WAIT, server, server_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use chorus::server::auth::AuthMode;
use chorus::server::{SecurityConfig, ServerConfig};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// One response: status, head (lowercased header names as sent), body.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Read one response from `tcp`: the head, then `Content-Length` bytes of
/// body (the connection may stay open).
async fn read_reply(tcp: &mut TcpStream) -> Reply {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut byte)).await.expect("no response in time").unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut reply = Reply { status, head, body: String::new() };
    let length: usize = reply.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; length];
    tokio::time::timeout(WAIT, tcp.read_exact(&mut body)).await.expect("no body in time").unwrap();
    reply.body = String::from_utf8_lossy(&body).into_owned();
    reply
}

/// Send `request` on a new connection; the response.
async fn ask(addr: SocketAddr, request: &str) -> Reply {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    read_reply(&mut tcp).await
}

/// A handshake request with `lines` as its headers (each "Name: value").
fn handshake(target: &str, version: &str, lines: &[&str]) -> String {
    let mut request = format!("GET {target} {version}\r\n");
    for line in lines {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

/// The headers of a valid handshake, `Host` first.
fn valid(addr: SocketAddr) -> Vec<String> {
    vec![
        format!("Host: {addr}"),
        "Upgrade: websocket".into(),
        "Connection: Upgrade".into(),
        format!("Sec-WebSocket-Key: {KEY}"),
        "Sec-WebSocket-Version: 13".into(),
    ]
}

/// `valid` with the lines named `drop` left out and `extra` added.
fn lines(addr: SocketAddr, drop: &[&str], extra: &[&str]) -> Vec<String> {
    let mut lines: Vec<String> =
        valid(addr).into_iter().filter(|l| !drop.iter().any(|d| l.starts_with(&format!("{d}:")))).collect();
    lines.extend(extra.iter().map(|l| l.to_string()));
    lines
}

async fn status_of(addr: SocketAddr, target: &str, version: &str, lines: &[String]) -> Reply {
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    ask(addr, &handshake(target, version, &lines)).await
}

#[tokio::test]
async fn a_header_on_several_lines_is_one_list() {
    let server = server().await;
    let addr = server.addr();
    let split = lines(addr, &["Connection"], &["Connection: keep-alive", "Connection: Upgrade"]);
    let reply = status_of(addr, "/", "HTTP/1.1", &split).await;
    assert_eq!(reply.status, 101, "{reply:?}");
    assert_eq!(reply.header("sec-websocket-accept"), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    let upgrade_split = lines(addr, &["Upgrade"], &["Upgrade: h2c", "Upgrade: websocket"]);
    assert_eq!(status_of(addr, "/", "HTTP/1.1", &upgrade_split).await.status, 101);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn headers_that_must_be_single_are_refused_when_repeated() {
    let config = ServerConfig {
        security: SecurityConfig { allowed_origins: vec!["https://chat.example.com".into()], ..Default::default() },
        ..common::quick_close()
    };
    let server = server_with(config).await;
    let addr = server.addr();
    let allowed = lines(addr, &[], &["Origin: https://chat.example.com"]);
    assert_eq!(status_of(addr, "/", "HTTP/1.1", &allowed).await.status, 101);
    // An allowed Origin followed by another: never 101.
    let two = lines(addr, &[], &["Origin: https://chat.example.com", "Origin: https://evil.example"]);
    let reply = status_of(addr, "/", "HTTP/1.1", &two).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.body.contains("Origin"), "{reply:?}");
    for repeated in [format!("Host: {addr}"), format!("Sec-WebSocket-Key: {KEY}"), "Sec-WebSocket-Version: 13".into()] {
        let twice = lines(addr, &[], &[repeated.as_str()]);
        assert_eq!(status_of(addr, "/", "HTTP/1.1", &twice).await.status, 400, "{repeated} twice");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn no_host_a_bad_key_or_http_1_0_get_400() {
    let server = server().await;
    let addr = server.addr();
    assert_eq!(status_of(addr, "/", "HTTP/1.1", &lines(addr, &["Host"], &[])).await.status, 400);
    assert_eq!(status_of(addr, "/", "HTTP/1.0", &valid(addr)).await.status, 400);
    for key in
        ["Sec-WebSocket-Key: short", "Sec-WebSocket-Key: !!!!", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAAAAAA"]
    {
        let bad = lines(addr, &["Sec-WebSocket-Key"], &[key]);
        let reply = status_of(addr, "/", "HTTP/1.1", &bad).await;
        assert_eq!(reply.status, 400, "{key}: {reply:?}");
        assert!(reply.body.contains("16"), "{reply:?}");
    }
    let old = lines(addr, &["Sec-WebSocket-Version"], &["Sec-WebSocket-Version: 8"]);
    let reply = status_of(addr, "/", "HTTP/1.1", &old).await;
    assert_eq!((reply.status, reply.header("sec-websocket-version")), (426, Some("13")));
    // Plain requests follow RFC 9112 section 3.2 too.
    assert_eq!(ask(addr, "GET /healthz HTTP/1.1\r\n\r\n").await.status, 400);
    assert_eq!(ask(addr, "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await.status, 400);
    assert_eq!(ask(addr, "GET /healthz HTTP/1.0\r\n\r\n").await.status, 200, "HTTP/1.0 may omit Host");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn absolute_form_targets_route_by_their_path() {
    let server = server().await;
    let addr = server.addr();
    let reply = status_of(addr, &format!("ws://{addr}/?room=proxied"), "HTTP/1.1", &valid(addr)).await;
    assert_eq!(reply.status, 101, "{reply:?}");
    let health = ask(addr, &format!("GET http://{addr}/healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n")).await;
    assert_eq!(health.status, 200, "{health:?}");
    assert!(health.body.contains("\"status\":\"ok\""), "{health:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_query_that_is_not_utf8_is_refused() {
    let server = server().await;
    let addr = server.addr();
    let reply = status_of(addr, "/?room=%FF%FE", "HTTP/1.1", &valid(addr)).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.body.contains("UTF-8"), "{reply:?}");
    let reply = status_of(addr, "/?room=caf%C3%A9", "HTTP/1.1", &valid(addr)).await;
    assert_eq!(reply.status, 101, "percent-encoded UTF-8 is fine: {reply:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn keep_alive_head_and_expect_100_continue() {
    let server = server().await;
    let addr = server.addr();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    for _ in 0..3 {
        tcp.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
        assert_eq!(read_reply(&mut tcp).await.status, 200, "several requests on one connection");
    }
    tcp.write_all(format!("HEAD / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200") && head.contains("content-type: text/html"), "{head}");
    // The body of a HEAD answer is never sent: the next request's answer follows at once.
    tcp.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    assert_eq!(read_reply(&mut tcp).await.status, 200);
    drop(tcp);

    let (server, _dir) = with_accounts().await;
    let addr = server.addr();
    let body = r#"{"username":"kim","password":"correct horse"}"#;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/register HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let interim = read_reply(&mut tcp).await;
    assert_eq!(interim.status, 100, "{interim:?}");
    tcp.write_all(body.as_bytes()).await.unwrap();
    let reply = read_reply(&mut tcp).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    server.shutdown().await.unwrap();
}

async fn with_accounts() -> (chorus::server::ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        security: SecurityConfig {
            auth: AuthMode::Optional,
            auth_secret: Some("a test secret, long enough for HS256 keys".into()),
            api_rate_limit: None,
            ..SecurityConfig::default()
        },
        ..common::quick_close()
    };
    (server_with(config).await, dir)
}

#[tokio::test]
async fn a_head_over_the_size_limit_gets_431_and_odd_bytes_never_panic() {
    let server = server().await;
    let addr = server.addr();
    let huge = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nX-Big: {}\r\n\r\n", "x".repeat(20 * 1024));
    assert_eq!(ask(addr, &huge).await.status, 431);
    let (server2, _dir) = with_accounts().await;
    let addr2 = server2.addr();
    // A multi-byte character across byte 7 of Authorization used to panic the task.
    let mut odd = valid(addr2);
    odd.push("Authorization: abcdeféxyz".into());
    let reply = status_of(addr2, "/", "HTTP/1.1", &odd).await;
    assert_eq!(reply.status, 401, "{reply:?}");
    assert!(reply.body.contains("Bearer"), "{reply:?}");
    // The server still serves everyone.
    let mut alice = Client::connect(&server2.url()).await;
    alice.send_text("/who").await;
    alice.expect("who").await;
    server.shutdown().await.unwrap();
    server2.shutdown().await.unwrap();
}

#[tokio::test]
async fn idle_keep_alive_connections_close_at_the_handshake_timeout() {
    let config = ServerConfig { handshake_timeout: Duration::from_millis(300), ..common::quick_close() };
    let server = server_with(config).await;
    let addr = server.addr();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    assert_eq!(read_reply(&mut tcp).await.status, 200);
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.expect("an idle connection is closed");
    assert_eq!(read.unwrap_or(0), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_web_client_is_cached_by_etag() {
    let server = server().await;
    let addr = server.addr();
    let first = ask(addr, &format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("cache-control"), Some("no-cache"));
    let etag = first.header("etag").expect("an ETag").to_string();
    let again = ask(addr, &format!("GET / HTTP/1.1\r\nHost: {addr}\r\nIf-None-Match: {etag}\r\n\r\n")).await;
    assert_eq!(again.status, 304, "{again:?}");
    assert!(again.body.is_empty());
    assert_eq!(ask(addr, &format!("GET /web/nothing.js HTTP/1.1\r\nHost: {addr}\r\n\r\n")).await.status, 404);
    server.shutdown().await.unwrap();
}
