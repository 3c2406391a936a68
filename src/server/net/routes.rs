//! The plain HTTP routes, one axum `Router`: the web client (`GET /`), the
//! health check (`/healthz`), the metrics (`/metrics`), `/ws` for a request
//! that is not a WebSocket handshake (426), and the accounts API
//! (`auth::api`). Every response says `Cache-Control: no-store` and
//! `X-Content-Type-Options: nosniff` unless its route says otherwise; GET
//! routes answer HEAD too (axum drops the body).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use super::http::text;
use crate::server::Shared;
use crate::server::auth::api::{self, ApiState};

/// The browser client (`web/`), embedded in the binary: no build step, and
/// the page opens from the server alone.
#[derive(rust_embed::Embed)]
#[folder = "web/"]
struct WebClient;

/// Every plain route, with the server as state.
pub fn router(shared: Arc<Shared>) -> Router {
    let api = ApiState { auth: shared.security.auth.clone(), limits: shared.security.ip.clone() };
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/web/{*path}", get(web_file))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/ws", any(not_a_handshake))
        .route("/files/{file_id}/{name}", get(super::downloads::download))
        .with_state(shared)
        .merge(api::routes(api))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(default_headers))
}

/// `Cache-Control: no-store` and `nosniff`, unless the route set them.
async fn default_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    headers.entry(header::X_CONTENT_TYPE_OPTIONS).or_insert(HeaderValue::from_static("nosniff"));
    response
}

async fn index(headers: HeaderMap) -> Response {
    serve_web_file("index.html", &headers)
}

async fn web_file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve_web_file(&path, &headers)
}

/// The web client's Content-Security-Policy.
const CLIENT_POLICY: &str = "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// One file of the web client, with an `ETag` (its SHA-256) and
/// `Cache-Control: no-cache` (a browser keeps it and asks whether it
/// changed: 304 until the server is upgraded).
fn serve_web_file(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = WebClient::get(path) else {
        return text(StatusCode::NOT_FOUND, format!("nothing at /web/{path}"));
    };
    let hash = file.metadata.sha256_hash();
    let etag = format!("\"{}\"", hash[..16].iter().map(|b| format!("{b:02x}")).collect::<String>());
    let cache = [(header::ETAG, etag.clone()), (header::CACHE_CONTROL, "no-cache".to_string())];
    // The client loads nothing from elsewhere and runs no inline script:
    // a strict policy costs it nothing and stops injected markup.
    let policy = [(header::CONTENT_SECURITY_POLICY, CLIENT_POLICY.to_string())];
    let unchanged = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    if unchanged {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    let mut kind = file.metadata.mimetype().to_string();
    if kind.starts_with("text/") || kind.contains("javascript") {
        kind.push_str("; charset=utf-8");
    }
    (cache, policy, [(header::CONTENT_TYPE, kind)], file.data.into_owned()).into_response()
}

/// `{"status":"ok"|"shutting_down","connections","rooms","uptime_secs","version"}`;
/// 503 while shutting down, so a load balancer stops sending clients.
async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let shutting_down = shared.shutdown.is_cancelled();
    let mut body = serde_json::json!({
        "status": if shutting_down { "shutting_down" } else { "ok" },
        "connections": shared.metrics.sessions(),
        "rooms": shared.hub.room_count(),
        "uptime_secs": shared.metrics.uptime_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(cluster) = &shared.cluster {
        body["redis"] = serde_json::json!(if cluster.healthy() { "ok" } else { "down" });
        body["node"] = serde_json::json!(cluster.node());
    }
    let status = if shutting_down { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let body = shared.metrics.render(shared.hub.room_count(), shared.open_connections());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn not_a_handshake() -> Response {
    let mut response =
        text(StatusCode::UPGRADE_REQUIRED, "this is a WebSocket endpoint; connect with a WebSocket client");
    response.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    response
}

async fn not_found(request: Request) -> Response {
    let path = request.uri().path();
    text(StatusCode::NOT_FOUND, format!("nothing at {path}; try / (web client), /healthz or /metrics"))
}

async fn method_not_allowed(method: Method) -> Response {
    text(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not supported here; use GET"))
}
