//! The account API: `POST /api/register` and `POST /api/login`, JSON in and
//! out, as axum routes. Both answer `{"username","token","token_type":"Bearer",
//! "expires_at","expires_in"}` (201 for a new account, 200 for a login);
//! every error is `{"error": code, "message": text}` with a fitting status.
//!
//! Bodies are JSON (`Content-Type: application/json`, else 415) of at most
//! `MAX_BODY` bytes (else 413), with a `Content-Length` or chunked. Each
//! address may make a burst of 10 calls, then one a second (429); password
//! hashing runs on the blocking pool, a few at a time (503 past a wait).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::json;
use tokio::time::timeout;

use super::Auth;
use super::accounts::AccountError;
use crate::server::limits::IpLimits;

/// Largest request body accepted, in bytes.
pub const MAX_BODY: usize = 4 * 1024;
/// How long a request waits for a turn at password hashing before 503.
const HASH_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// The two calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
enum Action {
    Register,
    Login,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
}

/// What the API needs: the accounts (`None`: auth is off) and the
/// per-address budget of calls.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub auth: Option<Arc<Auth>>,
    pub limits: Arc<IpLimits>,
}

/// The API's routes, to merge into the server's router. Handlers read the
/// caller's address from `ConnectInfo<SocketAddr>`, which the edge puts in
/// every request's extensions.
pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/api/register", post(register).fallback(post_only))
        .route("/api/login", post(login).fallback(post_only))
        .route("/api/{*rest}", axum::routing::any(no_such_call))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// A JSON error answer.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": code, "message": message.into()}))).into_response()
}

async fn register(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<Credentials>, JsonRejection>,
) -> Response {
    call(Action::Register, &state, peer, body).await
}

async fn login(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<Credentials>, JsonRejection>,
) -> Response {
    call(Action::Login, &state, peer, body).await
}

async fn post_only(method: Method, uri: Uri) -> Response {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} {} is not supported; use POST", uri.path()),
    );
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

async fn no_such_call(uri: Uri) -> Response {
    let path = uri.path();
    error(StatusCode::NOT_FOUND, "not_found", format!("no API at {path}; use POST /api/register or /api/login"))
}

/// One call: the address's budget, the body, a turn at hashing, the answer.
async fn call(
    action: Action,
    state: &ApiState,
    peer: SocketAddr,
    body: Result<Json<Credentials>, JsonRejection>,
) -> Response {
    let Some(auth) = state.auth.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "accounts_disabled",
            "accounts are off on this server; start it with --auth optional or --auth required",
        );
    };
    if !state.limits.api_allowed(peer.ip()) {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many account requests from your address; wait a few seconds",
        );
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        return response;
    }
    let Json(credentials) = match body {
        Ok(body) => body,
        Err(rejection) => return body_error(&rejection),
    };
    let Ok(Ok(_permit)) = timeout(HASH_QUEUE_WAIT, auth.hashing.acquire()).await else {
        let mut response =
            error(StatusCode::SERVICE_UNAVAILABLE, "busy", "the server is busy checking passwords; retry in a moment");
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let result = match action {
        Action::Register => auth.register(&credentials.username, &credentials.password).await,
        Action::Login => auth.login(&credentials.username, &credentials.password).await,
    };
    let action_name: &'static str = action.into();
    match result {
        Ok(username) => {
            let (token, claims) = auth.mint(&username);
            let status = if action == Action::Register { StatusCode::CREATED } else { StatusCode::OK };
            tracing::info!(%peer, user = %username, action = action_name, "account API");
            token_response(status, &username, &token, claims.expires_at(), &auth)
        }
        Err(err) => {
            let response = account_error(err, peer);
            // No name here: people type passwords into the name field.
            tracing::info!(%peer, action = action_name, status = response.status().as_u16(), "account API refused");
            response
        }
    }
}

/// The JSON error for a body axum's `Json` extractor refused.
fn body_error(rejection: &JsonRejection) -> Response {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON, with Content-Type: application/json",
        ),
        JsonRejection::JsonDataError(err) => error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("expected {{\"username\": ..., \"password\": ...}}: {}", err.body_text()),
        ),
        JsonRejection::JsonSyntaxError(err) => {
            error(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not valid JSON: {}", err.body_text()))
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than the limit of {MAX_BODY} bytes"),
        ),
        other => error(other.status(), "invalid_request", other.body_text()),
    }
}

fn token_response(status: StatusCode, username: &str, token: &str, expires_at: SystemTime, auth: &Auth) -> Response {
    let expires: DateTime<Utc> = expires_at.into();
    let body = json!({
        "username": username,
        "token": token,
        "token_type": "Bearer",
        "expires_at": expires.to_rfc3339_opts(SecondsFormat::Secs, true),
        "expires_in": auth.token_ttl.as_secs(),
    });
    (status, Json(body)).into_response()
}

fn account_error(err: AccountError, peer: SocketAddr) -> Response {
    match err {
        AccountError::InvalidName(why) => error(StatusCode::BAD_REQUEST, "invalid_name", why),
        AccountError::WeakPassword(why) => error(StatusCode::BAD_REQUEST, "weak_password", why),
        AccountError::NameTaken(name) => error(
            StatusCode::CONFLICT,
            "name_taken",
            format!("the name {name:?} is taken (by an account or a connected guest); pick another"),
        ),
        AccountError::InvalidCredentials => {
            error(StatusCode::UNAUTHORIZED, "invalid_credentials", "wrong username or password")
        }
        AccountError::Store(err) => {
            tracing::error!(%peer, "account store: {err:#}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the account store failed; the server log says why")
        }
    }
}
