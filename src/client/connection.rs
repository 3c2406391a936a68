//! Connecting to a chorus server and exchanging typed frames with it; used by
//! the terminal clients, the demo and the tests.
//!
//! `connect` opens the TCP connection itself (so a caller can pick the source
//! address, as the load harness does across 127.0.0.0/8), then lets
//! tokio-tungstenite add TLS for `wss://` (`Connector::Rustls` with the trust
//! chosen in `tls`) and perform the WebSocket handshake, with the token, if
//! any, in an `Authorization: Bearer` header. Each failure is one error that
//! says its cause once and what to do. A connection splits into a `Sender` and a `Receiver`
//! so one task can type while another prints.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream, client_async_tls_with_config};

use super::tls::{self, TlsOptions};
use crate::printable::printable;
use crate::protocol::{ClientFrame, ServerEvent};

/// The WebSocket stream of a client connection (plain or TLS).
pub type WsStream = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Bytes asked of the socket per read. tungstenite zeroes this much of its
/// buffer before every read, so it is a cost per read, not only memory: at
/// 16 KiB the zeroing was 5 % of the load harness's CPU at 10,000 messages a
/// second (perf, bench/peers-harness.sh send-10000); 4 KiB holds dozens of
/// chat events, and a larger frame still arrives whole over several reads.
const READ_BUFFER: usize = 4 * 1024;

/// Where a client connects by default.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:8080/";

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Give up on TCP connect plus handshake after this long.
    pub timeout: Duration,
    /// Bind this local address before connecting (spreads load tests over
    /// several source addresses).
    pub bind: Option<SocketAddr>,
    /// Largest message accepted from the server.
    pub max_message_size: usize,
    /// Whom `wss://` connections trust.
    pub tls: TlsOptions,
    /// An access token, sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// The socket's receive buffer, in bytes (`None`: the system's, which
    /// grows as needed). A small one makes a slow reader fall behind sooner.
    pub recv_buffer: Option<u32>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            timeout: Duration::from_secs(10),
            bind: None,
            max_message_size: 16 << 20,
            tls: TlsOptions::default(),
            token: None,
            recv_buffer: None,
        }
    }
}

/// Why a connection could not be made, worded for the person who asked:
/// the cause once (no error source repeats it), then what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{url:?} is not a WebSocket URL; write it like ws://127.0.0.1:8080/")]
    BadUrl { url: String },
    #[error("{url}: {reason}")]
    Tls { url: String, reason: String },
    #[error("could not reach {url}: {error}; is a chorus server running there? (start one with `chorus server`)")]
    Unreachable { url: String, error: std::io::Error },
    #[error("could not connect to {url}: no answer within {timeout:?}")]
    TimedOut { url: String, timeout: Duration },
    #[error("{url} refused the WebSocket handshake: {reason}")]
    Refused { url: String, reason: String },
    #[error("{url} is not a WebSocket endpoint (it answered {answer}): is this a chorus server?")]
    NotWebSocket { url: String, answer: String },
}

/// Turn what a user typed (`127.0.0.1:8080`, `http://host`, `ws://host/`) into a ws:// URL.
pub fn normalize_url(input: &str) -> String {
    let input = input.trim();
    let with_scheme = if let Some(rest) = input.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = input.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if input.contains("://") {
        input.to_string()
    } else {
        format!("ws://{input}")
    };
    // A bare authority gets the root path.
    match with_scheme.split_once("://") {
        Some((scheme, rest)) if !rest.contains('/') => format!("{scheme}://{rest}/"),
        _ => with_scheme,
    }
}

/// Open a WebSocket connection to `url`.
pub async fn connect(url: &str, options: &ConnectOptions) -> Result<WsStream, ConnectError> {
    let url = normalize_url(url);
    match tokio::time::timeout(options.timeout, connect_inner(&url, options)).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::TimedOut { url, timeout: options.timeout }),
    }
}

async fn connect_inner(url: &str, options: &ConnectOptions) -> Result<WsStream, ConnectError> {
    let bad_url = || ConnectError::BadUrl { url: url.to_string() };
    let mut request = url.into_client_request().map_err(|_| bad_url())?;
    if let Some(token) = &options.token {
        let value = HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| ConnectError::Refused {
            url: url.to_string(),
            reason: "the token contains characters a header cannot carry".into(),
        })?;
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    let uri = request.uri();
    let secure = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => return Err(bad_url()),
    };
    let host = uri.host().ok_or_else(bad_url)?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let unreachable = |error| ConnectError::Unreachable { url: url.to_string(), error };
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| unreachable(std::io::Error::other("the host name resolves to no address")))?;
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(unreachable)?;
    if let Some(bind) = options.bind {
        socket.bind(bind).map_err(unreachable)?;
    }
    if let Some(size) = options.recv_buffer {
        socket.set_recv_buffer_size(size).map_err(unreachable)?;
    }
    let tcp = socket.connect(addr).await.map_err(unreachable)?;
    let _ = tcp.set_nodelay(true);
    let connector = if secure {
        let config =
            tls::client_config(&options.tls).map_err(|reason| ConnectError::Tls { url: url.to_string(), reason })?;
        Connector::Rustls(config)
    } else {
        Connector::Plain
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(options.max_message_size))
        .max_frame_size(Some(options.max_message_size))
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(16 * 1024);
    match client_async_tls_with_config(request, tcp, Some(config), Some(connector)).await {
        Ok((ws, _response)) => Ok(ws),
        Err(err) => Err(handshake_error(url, err)),
    }
}

/// What a failed TLS or WebSocket handshake means to the person connecting.
fn handshake_error(url: &str, err: WsError) -> ConnectError {
    let url = url.to_string();
    match err {
        WsError::Http(response) => {
            let status = response.status();
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            let body: String = printable(body.trim()).chars().take(200).collect();
            let answer = format!("HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") });
            match status.as_u16() {
                401 => ConnectError::Refused {
                    url,
                    reason: format!("{answer} (chorus clients take the token with --token or CHORUS_TOKEN)"),
                },
                403 | 429 | 503 => ConnectError::Refused { url, reason: answer },
                _ => ConnectError::NotWebSocket { url, answer },
            }
        }
        WsError::Protocol(ProtocolError::WrongHttpVersion) => {
            ConnectError::NotWebSocket { url, answer: "with HTTP/1.0, which cannot carry WebSocket".into() }
        }
        WsError::Protocol(ProtocolError::HandshakeIncomplete) => {
            ConnectError::NotWebSocket { url, answer: "nothing, or not HTTP, and closed".into() }
        }
        WsError::Io(err) => match tls::explain(&err) {
            Some(reason) => ConnectError::Tls { url, reason },
            None => ConnectError::Unreachable { url, error: err },
        },
        WsError::Tls(err) => ConnectError::Tls { url, reason: format!("TLS handshake failed: {err}") },
        WsError::Protocol(err) => ConnectError::NotWebSocket { url, answer: format!("badly: {err}") },
        other => ConnectError::Refused { url, reason: other.to_string() },
    }
}

/// One thing received from the server.
#[derive(Debug, Clone)]
pub enum Received {
    /// A JSON event; for a `binary` announcement, `data` is the frame that followed it.
    Event { text: Utf8Bytes, data: Option<Bytes> },
    /// A binary frame that no announcement preceded (not sent by chorus servers).
    Binary(Bytes),
    /// The server closed the connection.
    Closed(Option<CloseFrame>),
}

impl Received {
    /// The decoded event, borrowing from the received text.
    pub fn event(&self) -> Option<ServerEvent<'_>> {
        match self {
            Received::Event { text, .. } => ServerEvent::decode(text).ok(),
            _ => None,
        }
    }
}

/// The sending half of a connection.
#[derive(Debug)]
pub struct Sender {
    sink: SplitSink<WsStream, Message>,
}

/// The receiving half of a connection.
#[derive(Debug)]
pub struct Receiver {
    stream: SplitStream<WsStream>,
}

/// Split a connection into its halves.
pub fn split(ws: WsStream) -> (Sender, Receiver) {
    let (sink, stream) = ws.split();
    (Sender { sink }, Receiver { stream })
}

impl Sender {
    /// Send a request as JSON.
    pub async fn send_frame(&mut self, frame: &ClientFrame<'_>) -> Result<(), WsError> {
        self.sink.send(Message::Text(frame.encode().into())).await
    }

    /// Send a text frame as is (plain chat or a slash command).
    pub async fn send_text(&mut self, text: &str) -> Result<(), WsError> {
        self.sink.send(Message::Text(text.into())).await
    }

    /// Send a binary frame.
    pub async fn send_binary(&mut self, data: impl Into<Bytes>) -> Result<(), WsError> {
        self.sink.send(Message::Binary(data.into())).await
    }

    /// Send a raw WebSocket message.
    pub async fn send_message(&mut self, message: Message) -> Result<(), WsError> {
        self.sink.send(message).await
    }

    /// Start a normal close (1000).
    pub async fn close(&mut self) -> Result<(), WsError> {
        let frame = CloseFrame { code: CloseCode::Normal, reason: Utf8Bytes::from_static("bye") };
        match self.sink.send(Message::Close(Some(frame))).await {
            Ok(()) | Err(WsError::ConnectionClosed) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

/// Is this the text of a `binary` announcement? Chorus encodes the tag first.
fn announces_binary(text: &str) -> bool {
    text.starts_with("{\"type\":\"binary\"")
}

impl Receiver {
    /// The next thing from the server; `None` once the connection is gone.
    pub async fn recv(&mut self) -> Option<Result<Received, WsError>> {
        loop {
            let message = match self.stream.next().await? {
                Ok(message) => message,
                Err(err) => return Some(Err(err)),
            };
            return Some(Ok(match message {
                Message::Text(text) if announces_binary(&text) => {
                    let data = match self.stream.next().await {
                        Some(Ok(Message::Binary(data))) => Some(data),
                        _ => None,
                    };
                    Received::Event { text, data }
                }
                Message::Text(text) => Received::Event { text, data: None },
                Message::Binary(data) => Received::Binary(data),
                Message::Close(frame) => Received::Closed(frame),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalized() {
        assert_eq!(normalize_url("127.0.0.1:8080"), "ws://127.0.0.1:8080/");
        assert_eq!(normalize_url("ws://127.0.0.1:8080"), "ws://127.0.0.1:8080/");
        assert_eq!(normalize_url("ws://h:1/ws"), "ws://h:1/ws");
        assert_eq!(normalize_url("http://h:1"), "ws://h:1/");
        assert_eq!(normalize_url("https://h"), "wss://h/");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_one_clear_error() {
        // Bind then drop: a port on which nobody listens.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = connect(&format!("127.0.0.1:{port}"), &ConnectOptions::default()).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConnectError::Unreachable { .. }), "{text}");
        assert!(text.contains("is a chorus server running there"), "{text}");
    }
}
