//! The WebSocket handshake (RFC 6455 section 4.2.1, with RFC 9110 / 9112 for
//! the HTTP it rides on), and the session it opens.
//!
//! A request asks for a WebSocket when its `Upgrade` header holds the token
//! `websocket`. It is then checked in this order, each failure answered with
//! a plain-text reason:
//!
//! - the endpoint is `/` or `/ws` (else 404) and the method GET (else 405);
//! - HTTP/1.1 or later (an HTTP/1.0 request cannot upgrade: 400);
//! - `Connection` holds the token `Upgrade` (400); a header sent on several
//!   lines is one comma-separated list (RFC 9110 section 5.3), so
//!   `Connection: keep-alive` and `Connection: Upgrade` on two lines pass;
//! - `Sec-WebSocket-Version` is `13` (else 426 with `Sec-WebSocket-Version:
//!   13`), `Sec-WebSocket-Key` is base64 of exactly 16 bytes (400);
//! - headers that must appear once (`Host`, `Origin`, `Sec-WebSocket-Key`,
//!   `Sec-WebSocket-Version`) appear at most once (400): a second `Origin`
//!   line cannot slip past `--allowed-origin`;
//! - the query string decodes as UTF-8 (400);
//! - then the server's own rules (`Security::admit`): the Origin allow-list
//!   (403), `?room=` (400), the token (401); and a server shutting down (503).
//!
//! A request that passes gets 101; hyper hands over the connection
//! (`hyper::upgrade::on`), and the session runs in a task of its own, behind
//! the frame guard, until it ends.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::Instrument as _;

use super::frames::{FrameGuard, Limits};
use super::http::{ConnInfo, Response, query_pairs, text};
use crate::server::Shared;
use crate::server::chat::{Admission, EndReason, session};

/// How long to keep reading (and discarding) after closing for a protocol
/// error, so the client reads our close frame before the socket goes away.
const ERROR_LINGER: Duration = Duration::from_secs(1);

/// The WebSocket endpoints.
const ENDPOINTS: [&str; 2] = ["/", "/ws"];

/// Does a comma-separated header, over all its lines, hold `token`
/// (case-insensitive)?
pub fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// Does the request ask for a WebSocket?
pub fn wants_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, header::UPGRADE, "websocket")
}

/// A refused handshake: its status, reason and extra headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub reason: String,
    pub headers: Vec<(HeaderName, &'static str)>,
}

impl Refused {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Refused {
        Refused { status, reason: reason.into(), headers: Vec::new() }
    }

    fn with_header(mut self, name: HeaderName, value: &'static str) -> Refused {
        self.headers.push((name, value));
        self
    }

    fn into_response(self) -> Response {
        let mut response = text(self.status, self.reason);
        for (name, value) in self.headers {
            response.headers_mut().insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

/// What a valid handshake asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The `Sec-WebSocket-Accept` value for the key.
    pub accept: String,
    /// The decoded query parameters.
    pub query: Vec<(String, String)>,
}

/// The value of a header that must appear at most once, as text.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, Refused> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    let shown = title_case(name.as_str());
    if values.next().is_some() {
        return Err(Refused::new(StatusCode::BAD_REQUEST, format!("the {shown} header must appear only once")));
    }
    first
        .map(|value| {
            value.to_str().map(str::trim).map_err(|_| {
                Refused::new(StatusCode::BAD_REQUEST, format!("the {shown} header is not visible ASCII text"))
            })
        })
        .transpose()
}

/// `sec-websocket-key` as people write it: `Sec-WebSocket-Key`.
fn title_case(name: &str) -> String {
    name.split('-')
        .map(|word| match word {
            "websocket" => "WebSocket".to_string(),
            word => word.get(..1).unwrap_or("").to_ascii_uppercase() + word.get(1..).unwrap_or(""),
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Check a handshake request against RFC 6455 section 4.2.1 (see the module
/// documentation for the order and the answers).
pub fn check(
    method: &Method,
    version: Version,
    path: &str,
    query: &str,
    headers: &HeaderMap,
) -> Result<Handshake, Refused> {
    if !ENDPOINTS.contains(&path) {
        return Err(Refused::new(StatusCode::NOT_FOUND, format!("no WebSocket endpoint at {path}; use / or /ws")));
    }
    if method != Method::GET {
        return Err(Refused::new(StatusCode::METHOD_NOT_ALLOWED, "a WebSocket handshake must be a GET request")
            .with_header(header::ALLOW, "GET"));
    }
    if version < Version::HTTP_11 {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "a WebSocket handshake needs HTTP/1.1 (RFC 6455 section 4.1)",
        ));
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(Refused::new(StatusCode::BAD_REQUEST, "a WebSocket handshake needs \"Connection: Upgrade\""));
    }
    single(headers, &header::HOST)?;
    single(headers, &header::ORIGIN)?;
    let version = single(headers, &header::SEC_WEBSOCKET_VERSION)?;
    let key = single(headers, &header::SEC_WEBSOCKET_KEY)?;
    if version != Some("13") {
        return Err(Refused::new(StatusCode::UPGRADE_REQUIRED, "only WebSocket version 13 is supported")
            .with_header(header::SEC_WEBSOCKET_VERSION, "13"));
    }
    let Some(key) = key else {
        return Err(Refused::new(StatusCode::BAD_REQUEST, "a WebSocket handshake needs a Sec-WebSocket-Key header"));
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(key);
    if decoded.map_or(true, |bytes| bytes.len() != 16) {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be 16 random bytes in base64 (RFC 6455 section 4.1)",
        ));
    }
    let query = query_pairs(query).map_err(|err| Refused::new(StatusCode::BAD_REQUEST, err.to_string()))?;
    Ok(Handshake { accept: derive_accept_key(key.as_bytes()), query })
}

/// Answer a WebSocket handshake: 101 and a session, or the reason why not.
pub async fn handle(mut request: Request<Incoming>, conn: ConnInfo, shared: &Arc<Shared>) -> Response {
    let started = std::time::Instant::now();
    let uri = request.uri();
    let checked = check(request.method(), request.version(), uri.path(), uri.query().unwrap_or(""), request.headers());
    let handshake = match checked {
        Ok(handshake) => handshake,
        Err(refused) => return refuse(refused, &conn, shared),
    };
    if shared.shutdown.is_cancelled() {
        return refuse(Refused::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down"), &conn, shared);
    }
    let admission = match shared.security.admit(request.headers(), &handshake.query).await {
        Ok(admission) => admission,
        Err(refused) => return refuse(refused, &conn, shared),
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    drop(request);
    let session_shared = shared.clone();
    shared.tasks.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run(TokioIo::new(upgraded), conn, admission, session_shared).await,
            Err(err) => tracing::debug!(peer = %conn.peer, "the upgrade did not complete: {err}"),
        }
    });
    shared.metrics.handshake_seconds.record(started.elapsed().as_secs_f64());
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&handshake.accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

fn refuse(refused: Refused, conn: &ConnInfo, shared: &Shared) -> Response {
    shared.metrics.handshakes_refused.increment(1);
    tracing::info!(peer = %conn.peer, status = refused.status.as_u16(), reason = %refused.reason, "handshake refused");
    refused.into_response()
}

/// Run the session over an upgraded connection, then linger after a
/// protocol error so the client reads our close frame.
async fn run<S>(io: S, conn: ConnInfo, admission: Admission, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    shared.metrics.connections_total.increment(1);
    let _session = shared.metrics.session_opened();
    let limits =
        Limits { max_fragments: shared.security.max_fragments, max_message: shared.config.max_message_size as u64 };
    let guard = FrameGuard::new(io, limits);
    let ws = WebSocketStream::from_raw_socket(guard, Role::Server, Some(shared.ws_config())).await;
    let span = tracing::info_span!("ws", peer = %conn.peer);
    let session = session::run(ws, &shared.hub, &shared.config.session, &shared.shutdown, admission);
    let (ws, reason) = session.instrument(span).await;
    let linger = matches!(
        reason,
        EndReason::TooBig | EndReason::BadUtf8 | EndReason::Protocol | EndReason::Fragmented | EndReason::RateLimited
    );
    if linger && let Some(mut ws) = ws {
        let _ = timeout(ERROR_LINGER, tokio::io::copy(ws.get_mut().inner_mut(), &mut tokio::io::sink())).await;
    }
    drop(conn);
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        map
    }

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("host", "127.0.0.1:8080"),
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", KEY),
        ]
    }

    fn status(lines: &[(&'static str, &'static str)]) -> u16 {
        match check(&Method::GET, Version::HTTP_11, "/", "", &headers(lines)) {
            Ok(_) => 101,
            Err(refused) => refused.status.as_u16(),
        }
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut lines = good();
        lines.extend_from_slice(extra);
        lines
    }

    fn without(name: &str) -> Vec<(&'static str, &'static str)> {
        good().into_iter().filter(|(n, _)| *n != name).collect()
    }

    #[test]
    fn header_names_are_shown_as_people_write_them() {
        assert_eq!(title_case("sec-websocket-key"), "Sec-WebSocket-Key");
        assert_eq!(title_case("origin"), "Origin");
    }

    #[test]
    fn the_rfc_example_key_gives_the_rfc_accept() {
        let handshake = check(&Method::GET, Version::HTTP_11, "/", "", &headers(&good())).unwrap();
        assert_eq!(handshake.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "RFC 6455 section 1.3");
    }

    #[test]
    fn a_header_on_several_lines_is_one_list() {
        let mut lines = without("connection");
        lines.extend([("connection", "keep-alive"), ("connection", "Upgrade")]);
        assert_eq!(status(&lines), 101);
        let mut lines = without("connection");
        lines.push(("connection", "keep-alive, upgrade"));
        assert_eq!(status(&lines), 101);
        assert_eq!(status(&without("connection")), 400);
    }

    #[test]
    fn single_headers_sent_twice_are_refused() {
        assert_eq!(status(&with(&[("origin", "https://a.example"), ("origin", "https://b.example")])), 400);
        assert_eq!(status(&with(&[("host", "other")])), 400);
        assert_eq!(status(&with(&[("sec-websocket-key", KEY)])), 400);
        assert_eq!(status(&with(&[("sec-websocket-version", "13")])), 400);
        assert_eq!(status(&with(&[("origin", "https://a.example")])), 101);
    }

    #[test]
    fn keys_must_be_16_bytes_of_base64() {
        for key in ["", "not base64!", "c2hvcnQ=", "dGhlIHNhbXBsZSBub25jZSE=", "dGhlIHNhbXBsZSBub25jZQ"] {
            let mut lines = without("sec-websocket-key");
            lines.push(("sec-websocket-key", key));
            assert_eq!(status(&lines), 400, "{key:?}");
        }
        assert_eq!(status(&without("sec-websocket-key")), 400);
    }

    #[test]
    fn version_method_path_and_http_version() {
        let mut lines = without("sec-websocket-version");
        lines.push(("sec-websocket-version", "8"));
        assert_eq!(status(&lines), 426);
        assert_eq!(status(&without("sec-websocket-version")), 426);
        let h = headers(&good());
        assert_eq!(check(&Method::GET, Version::HTTP_10, "/", "", &h).unwrap_err().status, 400);
        assert_eq!(check(&Method::POST, Version::HTTP_11, "/", "", &h).unwrap_err().status, 405);
        assert_eq!(check(&Method::GET, Version::HTTP_11, "/chat", "", &h).unwrap_err().status, 404);
        assert!(check(&Method::GET, Version::HTTP_11, "/ws", "room=a", &h).is_ok());
        assert_eq!(check(&Method::GET, Version::HTTP_11, "/", "room=%FF", &h).unwrap_err().status, 400);
    }

    #[test]
    fn header_values_that_are_not_text_are_refused_without_panicking() {
        let mut map = headers(&without("origin"));
        map.append(header::ORIGIN, HeaderValue::from_bytes("https://é.example".as_bytes()).unwrap());
        assert_eq!(check(&Method::GET, Version::HTTP_11, "/", "", &map).unwrap_err().status, 400);
    }
}
