//! TLS, abuse limits and the echo endpoint, over real sockets: wss round
//! trips, the message rate limit, the per-address cap, stalled handshakes,
//! hostile frame headers, fragment floods and half-sent invalid text.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use chorus::client::connection::ConnectError;
use chorus::client::{ConnectOptions, Received, TlsOptions, connect, split};
use chorus::server::limits::RateLimit;
use chorus::server::net::tls::TlsSource;
use chorus::server::{SecurityConfig, ServerConfig, ServerHandle, SessionConfig};
use common::process::{ServerProcess, server_command};
use common::{Client, WAIT, code, server_with};

/// A server speaking TLS with a self-signed certificate in a fresh directory.
async fn tls_server(config: ServerConfig) -> (ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        security: SecurityConfig { tls: Some(TlsSource::SelfSigned), ..config.security },
        ..config
    };
    (server_with(config).await, dir)
}

async fn welcome_over(url: &str, tls: TlsOptions) -> Result<Value, ConnectError> {
    let options = ConnectOptions { tls, ..ConnectOptions::default() };
    let (mut sender, mut receiver) = split(connect(url, &options).await?);
    let Some(Ok(Received::Event { text, .. })) = receiver.recv().await else { panic!("no welcome") };
    sender.send_text("/who").await.unwrap();
    let Some(Ok(Received::Event { text: who, .. })) = receiver.recv().await else { panic!("no answer") };
    assert!(who.contains("\"type\":\"who\""), "{who}");
    Ok(serde_json::from_str(&text).unwrap())
}

#[tokio::test]
async fn wss_works_with_the_certificate_as_ca_or_insecure_and_is_refused_otherwise() {
    let (server, dir) = tls_server(common::quick_close()).await;
    let url = server.url();
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    let ca = dir.path().join("tls/self-signed.pem");
    let trusted = welcome_over(&url, TlsOptions { ca: Some(ca.clone()), insecure: false }).await.unwrap();
    assert_eq!(trusted["type"], "welcome");
    let localhost = url.replace("127.0.0.1", "localhost");
    welcome_over(&localhost, TlsOptions { ca: Some(ca), insecure: false }).await.unwrap();
    welcome_over(&url, TlsOptions { ca: None, insecure: true }).await.unwrap();

    let err = welcome_over(&url, TlsOptions::default()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConnectError::Tls { .. }), "{text}");
    assert!(text.contains("not trusted") && text.contains("--ca") && text.contains("--insecure"), "{text}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_told_to_use_tls() {
    let (server, _dir) = tls_server(common::quick_close()).await;
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("use https:// or wss://"), "{response}");
    server.shutdown().await.unwrap();
}

/// Read until the server closes the socket; how long that took.
async fn time_until_closed(mut tcp: TcpStream) -> Duration {
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.expect("the server never closed the socket") {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn handshakes_that_never_finish_are_closed_on_time_plain_and_tls() {
    let quick = ServerConfig { handshake_timeout: Duration::from_millis(300), ..common::quick_close() };
    let plain = server_with(quick.clone()).await;
    let mut tcp = TcpStream::connect(plain.addr()).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n").await.unwrap();
    let waited = time_until_closed(tcp).await;
    assert!(waited >= Duration::from_millis(250), "closed only at the deadline: {waited:?}");

    let (tls, _dir) = tls_server(quick).await;
    // The first byte of a TLS handshake, then nothing.
    let mut stalled = TcpStream::connect(tls.addr()).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    time_until_closed(stalled).await;
    // A TLS handshake that completes, then no HTTP request: the same deadline.
    let options = TlsOptions { ca: None, insecure: true };
    let config = chorus::client::tls::client_config(&options).unwrap();
    let tcp = TcpStream::connect(tls.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("closed after the deadline");
    assert_eq!(read.unwrap_or(0), 0);
    plain.shutdown().await.unwrap();
    tls.shutdown().await.unwrap();
}

#[tokio::test]
async fn flooding_gets_rate_limited_errors_then_a_1008_close() {
    let config = ServerConfig {
        session: SessionConfig {
            // One token every two seconds: the burst is all this test can use.
            rate_limit: Some(RateLimit { per_second: 0.5, burst: 10 }),
            ..common::quick_close().session
        },
        ..common::quick_close()
    };
    let server = server_with(config).await;
    let mut watcher = Client::named(&server.url(), "watcher").await;
    let mut flooder = Client::connect(&server.url()).await;
    for i in 0..10 {
        flooder.chat("within the burst", &format!("ok{i}")).await;
    }
    for _ in 0..10 {
        flooder.expect("ack").await;
    }
    flooder.chat("one too many", "over").await;
    let error = flooder.expect("error").await;
    assert_eq!((error["code"].as_str(), error["client_id"].as_str()), (Some("rate_limited"), Some("over")));
    assert!(error["message"].as_str().unwrap().contains("at most 0.5 messages per second (bursts of 10)"), "{error}");
    for i in 0..20 {
        if flooder.ws.send(Message::Text(format!("flood {i}").into())).await.is_err() {
            break;
        }
    }
    let frame = flooder.expect_close().await;
    assert_eq!(code(&frame), 1008);
    let left = watcher.expect_where("left", |e| e["user_id"] == flooder.user_id.as_str()).await;
    assert_eq!(left["reason"], "rate_limited");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_address_gets_a_capped_number_of_connections() {
    let config = ServerConfig {
        security: SecurityConfig { max_connections_per_ip: 2, ..SecurityConfig::default() },
        ..common::quick_close()
    };
    let server = server_with(config).await;
    let first = Client::connect(&server.url()).await;
    let _second = Client::connect(&server.url()).await;
    match tokio_tungstenite::connect_async(server.url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("too many connections from your address"), "{body}");
        }
        other => panic!("expected HTTP 429, got {other:?}"),
    }
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(server.url()).await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a slot frees up when a connection closes");
    server.shutdown().await.unwrap();
}

/// Complete a WebSocket handshake by hand; returns the socket.
async fn raw_websocket(addr: SocketAddr) -> TcpStream {
    common::upgrade_raw(TcpStream::connect(addr).await.unwrap(), addr).await
}

/// Read server frames until a close frame; its code.
async fn close_code(tcp: &mut TcpStream) -> u16 {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // Frames from the server are unmasked: [b0, len, (ext), payload].
        let mut at = 0;
        while at + 2 <= data.len() {
            let (opcode, short) = (data[at] & 0x0f, (data[at + 1] & 0x7f) as usize);
            let (len, start) = match short {
                126 if at + 4 <= data.len() => (u16::from_be_bytes([data[at + 2], data[at + 3]]) as usize, at + 4),
                126 | 127 => break,
                n => (n, at + 2),
            };
            if start + len > data.len() {
                break;
            }
            if opcode == 0x8 {
                return u16::from_be_bytes([data[start], data[start + 1]]);
            }
            at = start + len;
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.expect("no close frame in time").unwrap();
        assert!(n > 0, "closed without a close frame");
        data.extend_from_slice(&buf[..n]);
    }
}

/// Send a binary frame header claiming `length` bytes, and no payload; the
/// close code the server answers with.
async fn claim_length(server: &chorus::server::ServerHandle, length: u64) -> u16 {
    let mut tcp = raw_websocket(server.addr()).await;
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&length.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&header).await.unwrap();
    close_code(&mut tcp).await
}

#[tokio::test]
async fn a_huge_claimed_length_is_settled_by_the_header_alone() {
    let server = server_with(common::quick_close()).await;
    let mut watcher = Client::named(&server.url(), "watcher").await;
    // Not one payload byte follows: the header alone must settle it. A 64-bit
    // length with its top bit set breaks RFC 6455 section 5.2 (1002); one
    // below it is only too big (1009).
    assert_eq!(claim_length(&server, 1 << 63).await, 1002);
    watcher.expect("left").await;
    assert_eq!(claim_length(&server, 1 << 62).await, 1009);
    watcher.expect("left").await;
    server.shutdown().await.unwrap();
}

/// Resident memory of process `pid`, from /proc (Linux).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test]
async fn a_frame_claiming_2_pow_62_bytes_closes_with_1009_without_memory_growth() {
    // A server process of its own, so its memory is measured, not the test's.
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(server_command("127.0.0.1:0", data.path(), &[])).unwrap();
    let mut watcher = Client::named(&server.url, "watcher").await;
    let before = rss_bytes(server.child.id());
    let mut tcp = raw_websocket(SocketAddr::from(([127, 0, 0, 1], server.port))).await;
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 62).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&header).await.unwrap();
    // Not one payload byte follows: the header alone must settle it.
    assert_eq!(close_code(&mut tcp).await, 1009);
    watcher.expect("left").await;
    let after = rss_bytes(server.child.id());
    assert!(after < before + (8 << 20), "the server's memory grew from {before} to {after} bytes");
}

/// A masked client frame (mask key zero).
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    out.extend_from_slice(payload);
    out
}

#[tokio::test]
async fn a_message_in_too_many_fragments_closes_with_1009() {
    let config = ServerConfig {
        security: SecurityConfig { max_fragments: Some(8), ..SecurityConfig::default() },
        ..common::quick_close()
    };
    let server = server_with(config).await;
    let mut watcher = Client::named(&server.url(), "watcher").await;
    // Eight fragments are fine: the message arrives as one chat.
    let mut tcp = raw_websocket(server.addr()).await;
    let mut bytes = client_frame(false, 0x1, b"frag");
    for i in 1..8 {
        bytes.extend(client_frame(i == 7, 0x0, b"-x"));
    }
    tcp.write_all(&bytes).await.unwrap();
    assert_eq!(watcher.expect("chat").await["text"], format!("frag{}", "-x".repeat(7)));
    // Empty continuation frames without end.
    let mut flood = client_frame(false, 0x1, b"");
    for _ in 0..100 {
        flood.extend(client_frame(false, 0x0, b""));
    }
    tcp.write_all(&flood).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 1009);
    assert_eq!(watcher.expect("left").await["reason"], "too_fragmented");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007_before_the_frame_is_complete() {
    let server = server_with(common::quick_close()).await;
    let mut tcp = raw_websocket(server.addr()).await;
    // A text frame announcing 100 bytes, of which only the first 6 are sent,
    // and they already hold a code point above U+10FFFF.
    let mut bytes = vec![0x81, 0x80 | 100, 0, 0, 0, 0];
    bytes.extend_from_slice(&[b'o', b'k', 0xf4, 0x90, 0x80, 0x80]);
    tcp.write_all(&bytes).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 1007);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn echo_mode_returns_every_data_frame_unchanged_and_sends_nothing_else() {
    let config = ServerConfig { echo: true, max_message_size: 1 << 20, ..common::quick_close() };
    let server = server_with(config).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url()).await.unwrap();
    let big = vec![0xa5u8; 1 << 20];
    for message in [
        Message::Text("{\"type\":\"who\"}".into()),
        Message::Text("/rooms".into()),
        Message::Binary(big.clone().into()),
        Message::Text("".into()),
    ] {
        ws.send(message.clone()).await.unwrap();
        let echoed = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echoed, message, "echoed unchanged, no welcome first");
    }
    ws.send(Message::Text(json!({"x": 1}).to_string().into())).await.unwrap();
    ws.close(None).await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn header_violations_close_1002_before_payload_checks() {
    let server = server_with(common::quick_close()).await;
    // Unmasked, carrying invalid UTF-8: the missing mask is the first fault.
    let mut tcp = raw_websocket(server.addr()).await;
    tcp.write_all(&[0x81, 0x02, 0xff, 0xfe]).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 1002);
    // Masked but with a reserved bit set, carrying invalid UTF-8.
    let mut tcp = raw_websocket(server.addr()).await;
    tcp.write_all(&[0xC1, 0x82, 0, 0, 0, 0, 0xff, 0xfe]).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 1002);
    // A valid header carrying invalid UTF-8: 1007.
    let mut tcp = raw_websocket(server.addr()).await;
    tcp.write_all(&client_frame(true, 0x1, &[0xff, 0xfe])).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 1007);
    server.shutdown().await.unwrap();
}
