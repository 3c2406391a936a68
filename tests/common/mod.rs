//! Shared test helpers: a server on port 0 and a small raw WebSocket client.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod process;
pub mod redis;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use chorus::server::{ServerConfig, ServerHandle};

/// How long a test waits for something it expects.
pub const WAIT: Duration = Duration::from_secs(5);

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server on a free port with the default configuration.
pub async fn server() -> ServerHandle {
    server_with(quick_close()).await
}

/// The default configuration, but a short wait for close replies: test
/// clients that are dropped never answer a close.
pub fn quick_close() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.session.close_timeout = Duration::from_millis(200);
    config
}

pub async fn server_with(config: ServerConfig) -> ServerHandle {
    ServerHandle::start("127.0.0.1:0", config).await.unwrap()
}

/// A plain WebSocket server on a free loopback port (no chorus protocol):
/// each accepted connection is handed to `serve`. Its `ws://addr/` URL.
pub async fn ws_server<F, Fut>(serve: F) -> String
where
    F: Fn(WebSocketStream<TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else { continue };
            tokio::spawn(serve(ws));
        }
    });
    format!("ws://{addr}/")
}

/// A raw WebSocket client that decodes JSON events.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub user_id: String,
    pub username: String,
}

impl Client {
    /// Connect and read the `welcome`.
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = connect_async(url).await.unwrap();
        let mut client = Client { ws, user_id: String::new(), username: String::new() };
        let welcome = client.next_event().await;
        assert_eq!(welcome["type"], "welcome", "the first frame is welcome: {welcome}");
        client.user_id = welcome["user_id"].as_str().unwrap().to_string();
        client.username = welcome["username"].as_str().unwrap().to_string();
        client
    }

    /// Connect and take a name (others in the lobby see `joined` then `renamed`).
    pub async fn named(url: &str, name: &str) -> Client {
        let mut client = Client::connect(url).await;
        client.send_json(serde_json::json!({"type": "username", "name": name})).await;
        let me = client.user_id.clone();
        client.expect_where("renamed", |e| e["user_id"] == me.as_str()).await;
        client.username = name.to_string();
        client
    }

    pub async fn send_json(&mut self, value: Value) {
        self.ws.send(Message::Text(value.to_string().into())).await.unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws.send(Message::Binary(data.to_vec().into())).await.unwrap();
    }

    pub async fn chat(&mut self, text: &str, client_id: &str) {
        self.send_json(serde_json::json!({"type": "chat", "text": text, "client_id": client_id})).await;
    }

    /// The next data message (pings and pongs skipped).
    pub async fn next_message(&mut self) -> Message {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("timed out waiting for a message")
                .expect("the connection ended")
                .expect("the connection failed");
            if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
                return message;
            }
        }
    }

    /// The next JSON event.
    pub async fn next_event(&mut self) -> Value {
        match self.next_message().await {
            Message::Text(text) => serde_json::from_str(&text).unwrap(),
            other => panic!("expected a JSON event, got {other:?}"),
        }
    }

    /// Skip events until one of type `kind`; panics on timeout.
    pub async fn expect(&mut self, kind: &str) -> Value {
        loop {
            let Message::Text(text) = self.next_message().await else { continue };
            let event: Value = serde_json::from_str(&text).unwrap();
            if event["type"] == kind {
                return event;
            }
        }
    }

    /// Skip events until one of type `kind` for which `check` holds.
    pub async fn expect_where(&mut self, kind: &str, check: impl Fn(&Value) -> bool) -> Value {
        loop {
            let event = self.expect(kind).await;
            if check(&event) {
                return event;
            }
        }
    }

    /// Discard whatever arrives within `within` (join and rename notices).
    pub async fn settle(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, self.ws.next()).await {}
    }

    /// Nothing but pings arrives within `within`.
    pub async fn expect_silence(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Read until the server's close frame; returns it.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await.expect("timed out waiting for a close") {
                Some(Ok(Message::Close(frame))) => {
                    // Reading once more sends tungstenite's queued close reply.
                    let _ = tokio::time::timeout(Duration::from_millis(100), self.ws.next()).await;
                    return frame;
                }
                Some(Ok(_)) => continue,
                Some(Err(err)) => panic!("connection failed before a close frame: {err}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }
}

/// The close code of a frame, as a number.
pub fn code(frame: &Option<CloseFrame>) -> u16 {
    frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(0)
}

/// Complete a WebSocket handshake by hand on `tcp`, reading exactly the
/// response head (nothing after it), so a test can then write raw frames.
pub async fn upgrade_raw(mut tcp: TcpStream, addr: std::net::SocketAddr) -> TcpStream {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}

/// One plain HTTP request on its own connection (`Connection: close`);
/// (status, body).
pub async fn http_request(addr: std::net::SocketAddr, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(body) = json {
        request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(json.unwrap_or(""));
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut response)).await.expect("no HTTP answer in time").unwrap();
    let status = response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// `GET path`; (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None).await
}

/// POST a JSON body to `http://host:port/path`; the status.
pub async fn http_post_json(url: &str, body: &str) -> u16 {
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    http_request(host.parse().unwrap(), "POST", &format!("/{path}"), Some(body)).await.0
}
