//! `chorus run --dashboard [ADDR]`: a page served by the harness (axum, on
//! loopback unless told otherwise) that follows the run: every second's
//! record arrives over a WebSocket (`/live`), a page that connects late
//! first gets every record so far, and when the run ends the summary and
//! the terminal report follow, which the page shows as the final report.
//! The page is one file with its script and styles inline, nothing from a
//! CDN; it draws its charts as SVG and writes every text as text.
//!
//! `serve` is also what the metrics endpoint (`openmetrics.rs`) runs on.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::live::LiveFeed;

/// The page.
const PAGE: &str = include_str!("dashboard.html");

/// Bind `addr` (a port alone means loopback) and serve `router` until
/// `stop`; the address it listens on comes back.
pub async fn serve(
    addr: &str,
    router: Router,
    stop: CancellationToken,
    what: &'static str,
) -> anyhow::Result<SocketAddr> {
    let addr = if addr.parse::<u16>().is_ok() { format!("127.0.0.1:{addr}") } else { addr.to_string() };
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("the {what} cannot listen on {addr} (write host:port, like 127.0.0.1:9100)"))?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        eprintln!("note: the {what} at {local} is reachable from other machines, without authentication");
    }
    tokio::spawn(async move {
        let served = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(err) = served {
            tracing::warn!("the {what} stopped: {err}");
        }
    });
    Ok(local)
}

/// Start the dashboard; its address comes back.
pub async fn start(
    addr: &str,
    feed: Arc<LiveFeed>,
    target: String,
    stop: CancellationToken,
    pages: TaskTracker,
) -> anyhow::Result<SocketAddr> {
    let state = Arc::new(Dashboard { feed, target, stop: stop.clone(), pages });
    let router = Router::new().route("/", get(page)).route("/live", get(live)).with_state(state);
    serve(addr, router, stop, "dashboard").await
}

struct Dashboard {
    feed: Arc<LiveFeed>,
    target: String,
    /// Closes the pages' WebSockets when the harness exits.
    stop: CancellationToken,
    /// The pages' tasks: the harness waits (briefly) for the last record to reach them.
    pages: TaskTracker,
}

async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE))
}

/// The WebSocket upgrade of `/live` (RFC 6455 section 4.2.2), then the records.
async fn live(State(dashboard): State<Arc<Dashboard>>, mut request: Request) -> Response {
    let Some(accept) = accept_key(request.headers()) else {
        return (StatusCode::BAD_REQUEST, "a WebSocket upgrade is expected here").into_response();
    };
    let upgrade = hyper::upgrade::on(&mut request);
    let pages = dashboard.pages.clone();
    pages.spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
                follow(ws, dashboard).await;
            }
            Err(err) => tracing::debug!("dashboard upgrade failed: {err}"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

/// `Sec-WebSocket-Accept` for a valid upgrade request, else `None`.
fn accept_key(headers: &HeaderMap) -> Option<String> {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return None;
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    Some(derive_accept_key(key.as_bytes()))
}

/// Send one page what happened so far, then each record as it comes.
async fn follow<S>(ws: WebSocketStream<S>, dashboard: Arc<Dashboard>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let hello = serde_json::json!({
        "type": "hello",
        "scenario": dashboard.feed.scenario(),
        "target": dashboard.target,
    });
    let (past, mut updates) = dashboard.feed.catch_up();
    let first = std::iter::once(Arc::<str>::from(hello.to_string())).chain(past);
    for record in first {
        if sink.send(Message::Text(record.as_ref().into())).await.is_err() {
            return;
        }
    }
    loop {
        // Records first: the summary reaches the page before the close.
        tokio::select! {
            biased;
            update = updates.recv() => match update {
                Ok(record) => {
                    if sink.send(Message::Text(record.as_ref().into())).await.is_err() {
                        return;
                    }
                }
                // A page too slow for one record a second skips some; the next catches up.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            () = dashboard.stop.cancelled() => break,
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = sink.send(Message::Close(None)).await;
}
