//! The HTTP side of a connection: read the request head, then either upgrade
//! to a WebSocket session (on `/` and `/ws`) or answer a plain request
//! (`GET /` the web client, `/healthz`, `/metrics`).
//!
//! Generic over the byte stream so the same code serves plain TCP and TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::Instrument as _;

use super::accept::{Accepted, EarlyRefusal};
use super::frames::FrameGuard;
use crate::server::Shared;
use crate::server::auth::{api, redact_query};
use crate::server::chat::{Admission, EndReason, session};
use crate::server::metrics::bump;

/// Longest request head accepted (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Most headers in one request.
const MAX_HEADERS: usize = 64;
/// How long to keep reading (and discarding) after closing for a protocol
/// error, so the client reads our close frame before the socket goes away.
const ERROR_LINGER: Duration = Duration::from_secs(1);

/// Most bytes read and dropped after answering an API request.
const MAX_DRAIN: u64 = 64 * 1024;

/// The browser client, embedded in the binary.
const INDEX_HTML: &str = include_str!("../../../web/index.html");

/// A parsed request head.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    headers: Vec<(String, String)>,
    /// Bytes read past the head: the start of the body, or of the WebSocket stream.
    pub rest: Vec<u8>,
}

impl Request {
    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Does a comma-separated header hold `token` (case-insensitive)?
    fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    fn wants_websocket(&self) -> bool {
        self.header_has_token("upgrade", "websocket")
    }
}

#[derive(Debug, thiserror::Error)]
enum HeadError {
    #[error("connection closed before the request was complete")]
    Closed,
    #[error("request head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("malformed request: {0}")]
    Malformed(httparse::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Request, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let target = parsed.path.unwrap_or("/");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                let request = Request {
                    method: parsed.method.unwrap_or("GET").to_string(),
                    path: path.to_string(),
                    query: query.to_string(),
                    headers: parsed
                        .headers
                        .iter()
                        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                        .collect(),
                    rest: buf[len..].to_vec(),
                };
                return Ok(request);
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) => {}
            Err(err) => return Err(HeadError::Malformed(err)),
        }
    }
}

/// A plain HTTP response; every response closes the connection.
pub struct Response {
    pub status: u16,
    content_type: &'static str,
    extra_headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response { status, content_type, extra_headers: Vec::new(), body: body.into() }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        let mut body = body.into();
        body.push('\n');
        Response::new(status, "text/plain; charset=utf-8", body)
    }

    /// A JSON body.
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Response::new(status, "application/json", body.to_string())
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra_headers.push((name, value.into()));
        self
    }

    pub async fn send<S: AsyncWrite + Unpin>(self, stream: &mut S, head_only: bool) -> std::io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.extra_headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        if !head_only {
            stream.write_all(&self.body).await?;
        }
        stream.flush().await?;
        stream.shutdown().await
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Serve one accepted connection (plain or TLS) to its end.
pub async fn serve<S>(mut stream: S, accepted: Accepted, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let peer = accepted.peer;
    let handshake_timeout = shared.config.handshake_timeout;
    let request = match timeout_at(accepted.deadline, read_head(&mut stream)).await {
        Err(_) => {
            tracing::debug!(%peer, "no complete request within {handshake_timeout:?}; closing");
            return;
        }
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(err @ (HeadError::TooLarge | HeadError::Malformed(_)))) => {
            let status = if matches!(err, HeadError::TooLarge) { 431 } else { 400 };
            let _ = Response::text(status, err.to_string()).send(&mut stream, false).await;
            return;
        }
        Ok(Err(HeadError::Io(err))) => {
            tracing::debug!(%peer, "reading the request failed: {err}");
            return;
        }
        Ok(Ok(request)) => request,
    };
    let query = redact_query(&request.query);
    tracing::debug!(%peer, method = %request.method, path = %request.path, %query, "request");
    if let Some(refusal) = accepted.refusal {
        return refuse(stream, peer, early_refusal(refusal, &shared), &shared).await;
    }
    if request.path.starts_with("/api/") && !request.wants_websocket() {
        let response = api::handle(&mut stream, &request, peer, &shared, accepted.deadline).await;
        let _ = timeout(handshake_timeout, response.send(&mut stream, false)).await;
        // Read what the client may still be sending (an oversized body), so
        // that closing does not reset the connection before it reads the answer.
        let mut rest = (&mut stream).take(MAX_DRAIN);
        let _ = timeout(ERROR_LINGER, tokio::io::copy(&mut rest, &mut tokio::io::sink())).await;
        return;
    }
    if request.wants_websocket() {
        upgrade(stream, peer, request, shared).await;
        return;
    }
    let head_only = request.method == "HEAD";
    let response = route(&request, &shared);
    let _ = timeout(handshake_timeout, response.send(&mut stream, head_only)).await;
}

/// The answer to a connection refused before its request was looked at.
fn early_refusal(refusal: EarlyRefusal, shared: &Shared) -> Response {
    match refusal {
        EarlyRefusal::TooManyFromAddress => Response::text(
            429,
            format!(
                "too many connections from your address (at most {}); close some and retry",
                shared.config.security.max_connections_per_ip
            ),
        )
        .with_header("Retry-After", "5"),
        EarlyRefusal::PlainOnTlsPort => {
            Response::text(400, "this server speaks TLS on this port: use https:// or wss://")
        }
    }
}

/// Answer a plain (non-WebSocket) request.
fn route(request: &Request, shared: &Shared) -> Response {
    if request.method != "GET" && request.method != "HEAD" {
        return Response::text(405, format!("{} is not supported here; use GET", request.method))
            .with_header("Allow", "GET, HEAD");
    }
    match request.path.as_str() {
        "/" | "/index.html" => Response::new(200, "text/html; charset=utf-8", INDEX_HTML),
        "/healthz" => {
            let shutting_down = shared.shutdown.is_cancelled();
            let body = serde_json::json!({
                "status": if shutting_down { "shutting_down" } else { "ok" },
                "connections": shared.metrics.connections.load(std::sync::atomic::Ordering::Relaxed),
                "rooms": shared.hub.room_count(),
                "uptime_secs": shared.metrics.uptime_secs(),
                "version": env!("CARGO_PKG_VERSION"),
            });
            Response::new(if shutting_down { 503 } else { 200 }, "application/json", body.to_string())
        }
        "/metrics" => Response::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            shared.metrics.render(shared.hub.room_count()),
        ),
        "/ws" => Response::text(426, "this is a WebSocket endpoint; connect with a WebSocket client")
            .with_header("Upgrade", "websocket"),
        path => Response::text(404, format!("nothing at {path}; try / (web client), /healthz or /metrics")),
    }
}

/// Why an upgrade request is refused, as an HTTP response.
fn check_upgrade(request: &Request, shared: &Shared) -> Result<String, Response> {
    if request.path != "/" && request.path != "/ws" {
        return Err(Response::text(404, format!("no WebSocket endpoint at {}; use / or /ws", request.path)));
    }
    if request.method != "GET" {
        return Err(Response::text(405, "a WebSocket handshake must be a GET request"));
    }
    if !request.header_has_token("connection", "upgrade") {
        return Err(Response::text(400, "a WebSocket handshake needs \"Connection: Upgrade\""));
    }
    if request.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(
            Response::text(426, "only WebSocket version 13 is supported").with_header("Sec-WebSocket-Version", "13")
        );
    }
    let Some(key) = request.header("sec-websocket-key").map(str::trim).filter(|k| !k.is_empty()) else {
        return Err(Response::text(400, "a WebSocket handshake needs a Sec-WebSocket-Key header"));
    };
    if shared.shutdown.is_cancelled() {
        return Err(Response::text(503, "the server is shutting down"));
    }
    Ok(derive_accept_key(key.as_bytes()))
}

/// Complete the WebSocket handshake and run the session.
async fn upgrade<S>(mut stream: S, peer: SocketAddr, mut request: Request, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let accept = match check_upgrade(&request, &shared) {
        Ok(accept) => accept,
        Err(response) => return refuse(stream, peer, response, &shared).await,
    };
    let admission: Admission = match shared.security.admit(&request).await {
        Ok(admission) => admission,
        Err(response) => return refuse(stream, peer, response, &shared).await,
    };
    let Some(_slot) = shared.admit() else {
        let max = shared.config.max_connections;
        let response = Response::text(503, format!("server full: {max} connections; try again later"))
            .with_header("Retry-After", "5");
        return refuse(stream, peer, response, &shared).await;
    };
    let switching = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    let written = async {
        stream.write_all(switching.as_bytes()).await?;
        stream.flush().await
    };
    if !matches!(timeout(shared.config.handshake_timeout, written).await, Ok(Ok(()))) {
        return;
    }
    bump(&shared.metrics.connections_total);
    // The headers are not needed any more: free them before the session.
    let rest = std::mem::take(&mut request.rest);
    drop(request);
    let stream = FrameGuard::new(stream, rest, shared.security.max_fragments);
    let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(shared.ws_config())).await;
    let span = tracing::info_span!("ws", %peer);
    let session = session::run(ws, &shared.hub, &shared.config.session, &shared.shutdown, admission);
    let (ws, reason) = session.instrument(span).await;
    let linger = matches!(
        reason,
        EndReason::TooBig | EndReason::BadUtf8 | EndReason::Protocol | EndReason::Fragmented | EndReason::RateLimited
    );
    if linger && let Some(mut ws) = ws {
        let _ = timeout(ERROR_LINGER, tokio::io::copy(ws.get_mut().inner_mut(), &mut tokio::io::sink())).await;
    }
}

async fn refuse<S>(mut stream: S, peer: SocketAddr, response: Response, shared: &Shared)
where
    S: AsyncWrite + Unpin,
{
    bump(&shared.metrics.handshakes_refused);
    let reason = String::from_utf8_lossy(&response.body);
    tracing::info!(%peer, status = response.status, reason = %reason.trim(), "handshake refused");
    let _ = timeout(shared.config.handshake_timeout, response.send(&mut stream, false)).await;
}

/// tungstenite's read buffer: allocated (and touched) per connection, grown
/// on demand for bigger messages. Most of an idle connection's memory.
const READ_BUFFER: usize = 1024;

/// The tungstenite settings for a server session.
pub fn ws_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
        // Small buffers: idle connections cost little. Bigger messages grow
        // the read buffer as needed; writes gather up to 16 KiB per syscall.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(max_message_size.saturating_mul(4).max(1 << 20))
}
