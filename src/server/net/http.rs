//! HTTP on hyper: every accepted connection (plain TCP or TLS) is served by
//! hyper's HTTP/1.1 server, which parses requests, keeps connections alive,
//! answers `Expect: 100-continue`, refuses heads past the size limits (431)
//! and closes a connection that takes longer than the handshake timeout to
//! send a request head (idle keep-alive connections included).
//!
//! Each request passes the rules every HTTP/1.1 request follows (RFC 9112
//! section 3.2: exactly one `Host`), then goes either to the WebSocket
//! handshake (`upgrade`, when it asks for `Upgrade: websocket`) or to the axum
//! router of plain routes (`routes`, and the accounts API). Absolute-form
//! targets (`GET http://host/healthz HTTP/1.1`, as proxies send them) route by
//! their path: hyper parses the target into a URI and routing only looks at
//! its path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, StatusCode, Version};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tower::ServiceExt as _;

use super::upgrade;
use crate::server::Shared;
use crate::server::limits::IpSlot;

/// Most header lines in one request.
const MAX_HEADERS: usize = 64;
/// Largest request head (request line and headers), in bytes; more is 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// An HTTP response with an axum body.
pub type Response = http::Response<Body>;

/// What the edge needs to serve a connection: the server and its routes.
#[derive(Debug, Clone)]
pub struct Edge {
    pub shared: Arc<Shared>,
    /// The plain routes, built once; a clone shares them.
    router: Router,
}

impl Edge {
    pub fn new(shared: Arc<Shared>) -> Edge {
        let router = super::routes::router(shared.clone());
        Edge { shared, router }
    }
}

/// What is known about one TCP connection, attached to each of its requests
/// (an axum handler reads it as `Extension<ConnInfo>`).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The connection's places in the server's and its address's counts:
    /// released when the last holder, the HTTP connection or the WebSocket
    /// session it became, is gone.
    pub hold: Arc<ConnHold>,
}

/// A connection's claims on `--max-connections` and on its address's cap.
#[derive(Debug)]
pub struct ConnHold {
    pub(crate) _slot: crate::server::Slot,
    pub(crate) _ip: IpSlot,
}

/// Why a connection is answered with one refusal whatever it asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address holds too many connections already (429).
    TooManyFromAddress,
    /// Plain HTTP on a TLS port (400).
    PlainOnTlsPort,
    /// The server holds `--max-connections` already (503).
    Full,
}

/// The hyper settings shared by every connection.
fn builder(shared: &Shared, keep_alive: bool) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.handshake_timeout)
        .max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEAD_BYTES)
        .keep_alive(keep_alive);
    builder
}

/// Serve one connection (plain or TLS) until it closes, upgrades, or the
/// server shuts down (then in-flight requests finish and the connection
/// closes).
pub async fn serve<S>(io: S, conn: ConnInfo, edge: Edge)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = edge.shared.clone();
    let peer = conn.peer;
    let service = hyper::service::service_fn(move |request| dispatch(request, conn.clone(), edge.clone()));
    let connection = builder(&shared, true).serve_connection(TokioIo::new(io), service).with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shared.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, "HTTP connection ended: {err}");
    }
}

/// Answer every request of a connection with `refusal`, then close it.
pub async fn refuse<S>(io: S, peer: SocketAddr, refusal: Refusal, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    shared.metrics.handshakes_refused.increment(1);
    let settings = shared.clone();
    let service = hyper::service::service_fn(move |_: Request<Incoming>| {
        let response = refusal_response(refusal, &settings);
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = builder(&shared, false).serve_connection(TokioIo::new(io), service);
    let grace = shared.config.handshake_timeout + Duration::from_secs(1);
    if let Ok(Err(err)) = tokio::time::timeout(grace, connection).await {
        tracing::debug!(%peer, "refused connection ended: {err}");
    }
}

/// The answer to a connection refused before its request was looked at.
fn refusal_response(refusal: Refusal, shared: &Shared) -> Response {
    let mut response = match refusal {
        Refusal::TooManyFromAddress => text(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many connections from your address (at most {}); close some and retry",
                shared.config.security.max_connections_per_ip
            ),
        ),
        Refusal::PlainOnTlsPort => {
            text(StatusCode::BAD_REQUEST, "this server speaks TLS on this port: use https:// or wss://")
        }
        Refusal::Full => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("server full: {} connections; try again later", shared.config.max_connections),
        ),
    };
    if refusal != Refusal::PlainOnTlsPort {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

/// One request: the rules every request follows, then the WebSocket
/// handshake or the router.
async fn dispatch(request: Request<Incoming>, conn: ConnInfo, edge: Edge) -> Result<Response, Infallible> {
    tracing::debug!(
        peer = %conn.peer,
        method = %request.method(),
        path = request.uri().path(),
        query = %redact_query(request.uri().query().unwrap_or("")),
        "request"
    );
    if let Err(why) = check_host(request.version(), request.headers()) {
        return Ok(text(StatusCode::BAD_REQUEST, why));
    }
    if upgrade::wants_websocket(request.headers()) {
        return Ok(upgrade::handle(request, conn, &edge.shared).await);
    }
    let mut request = request.map(Body::new);
    request.extensions_mut().insert(axum::extract::ConnectInfo(conn.peer));
    request.extensions_mut().insert(conn);
    edge.router.oneshot(request).await
}

/// RFC 9112 section 3.2: an HTTP/1.1 request carries exactly one `Host`
/// (HTTP/1.0 may omit it, never repeat it).
pub fn check_host(version: Version, headers: &HeaderMap) -> Result<(), &'static str> {
    match headers.get_all(header::HOST).iter().count() {
        0 if version >= Version::HTTP_11 => Err("an HTTP/1.1 request needs a Host header (RFC 9112 section 3.2)"),
        0 | 1 => Ok(()),
        _ => Err("a request must not carry more than one Host header (RFC 9112 section 3.2)"),
    }
}

/// A plain-text response (a line and a newline).
pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    body.push('\n');
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// A query string with the value of `token` replaced, for logs.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| if pair.starts_with("token=") { "token=<redacted>" } else { pair })
        .collect::<Vec<_>>()
        .join("&")
}

/// Why a query string is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the query string is not UTF-8 once percent-decoded ({0:?}); encode text as UTF-8")]
pub struct QueryError(pub String);

/// A query string's parameters, decoded (`form_urlencoded`: `+` is a space,
/// `%XX` a byte). Percent-decoded bytes that are not UTF-8 are refused
/// rather than turned into replacement characters.
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, QueryError> {
    for part in query.split('&') {
        if percent_encoding::percent_decode_str(part).decode_utf8().is_err() {
            return Err(QueryError(part.chars().take(64).collect()));
        }
    }
    Ok(form_urlencoded::parse(query.as_bytes()).map(|(name, value)| (name.into_owned(), value.into_owned())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_must_appear_once_in_http_1_1() {
        let mut headers = HeaderMap::new();
        assert!(check_host(Version::HTTP_11, &headers).is_err());
        assert!(check_host(Version::HTTP_10, &headers).is_ok());
        headers.append(header::HOST, HeaderValue::from_static("a"));
        assert!(check_host(Version::HTTP_11, &headers).is_ok());
        headers.append(header::HOST, HeaderValue::from_static("b"));
        assert!(check_host(Version::HTTP_11, &headers).is_err());
        assert!(check_host(Version::HTTP_10, &headers).is_err());
    }

    #[test]
    fn queries_decode_and_refuse_bytes_that_are_not_utf8() {
        let pairs = query_pairs("room=caf%C3%A9&token=a%2Eb.c&x=a+b").unwrap();
        assert_eq!(pairs[0], ("room".into(), "café".into()));
        assert_eq!(pairs[1], ("token".into(), "a.b.c".into()));
        assert_eq!(pairs[2], ("x".into(), "a b".into()));
        assert!(query_pairs("room=%FF%FE").is_err());
        assert!(query_pairs("room=%C3").is_err(), "a cut character");
        assert_eq!(query_pairs("room=%zz").unwrap()[0].1, "%zz", "a stray % is kept as it is");
        assert!(query_pairs("").unwrap().is_empty());
    }

    #[test]
    fn redaction_hides_only_the_token() {
        assert_eq!(redact_query("a=1&token=secret.jwt.here&b=2"), "a=1&token=<redacted>&b=2");
        assert_eq!(redact_query(""), "");
    }
}
