//! The account API: `POST /api/register` and `POST /api/login`, JSON in and
//! out. Both answer `{"username","token","token_type":"Bearer","expires_at",
//! "expires_in"}`; every error is `{"error": code, "message": text}` with a
//! fitting status.
//!
//! Bodies are small (`MAX_BODY`), need a `Content-Length`, and must be JSON.
//! Each address may make a burst of 10 calls, then one a second; password
//! hashing runs on the blocking pool, a few at a time.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};

use super::Auth;
use super::accounts::AccountError;
use crate::server::Shared;
use crate::server::net::http::{Request, Response};

/// Largest request body accepted.
pub const MAX_BODY: usize = 4 * 1024;
/// How long a request waits for a turn at password hashing before 503.
const HASH_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// The two calls.
#[derive(Debug, Clone, Copy)]
enum Action {
    Register,
    Login,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Register => "register",
            Action::Login => "login",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
}

/// A JSON error answer.
fn error(status: u16, code: &str, message: impl Into<String>) -> Response {
    Response::json(status, &json!({"error": code, "message": message.into()}))
}

/// Answer one `/api/...` request. The request head is read; the body is not.
pub async fn handle<S>(
    stream: &mut S,
    request: &Request,
    peer: SocketAddr,
    shared: &Shared,
    deadline: Instant,
) -> Response
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(auth) = shared.security.auth.clone() else {
        return error(
            404,
            "accounts_disabled",
            "accounts are off on this server; start it with --auth optional or --auth required",
        );
    };
    let action = match request.path.as_str() {
        "/api/register" => Action::Register,
        "/api/login" => Action::Login,
        path => return error(404, "not_found", format!("no API at {path}; use POST /api/register or /api/login")),
    };
    if request.method != "POST" {
        return error(
            405,
            "method_not_allowed",
            format!("{} {} is not supported; use POST", request.method, request.path),
        )
        .with_header("Allow", "POST");
    }
    if !shared.security.ip.api_allowed(peer.ip()) {
        return error(429, "rate_limited", "too many account requests from your address; wait a few seconds")
            .with_header("Retry-After", "2");
    }
    let body = match read_body(stream, request, deadline).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let credentials: Credentials = match serde_json::from_slice(&body) {
        Ok(credentials) => credentials,
        Err(err) if err.is_data() => {
            return error(400, "invalid_request", format!("expected {{\"username\": ..., \"password\": ...}}: {err}"));
        }
        Err(err) => return error(400, "invalid_json", format!("the body is not valid JSON: {err}")),
    };
    let Ok(Ok(_permit)) = timeout(HASH_QUEUE_WAIT, auth.hashing.acquire()).await else {
        return error(503, "busy", "the server is busy checking passwords; retry in a moment")
            .with_header("Retry-After", "1");
    };
    let result = match action {
        Action::Register => auth.register(&credentials.username, &credentials.password).await,
        Action::Login => auth.login(&credentials.username, &credentials.password).await,
    };
    match result {
        Ok(username) => {
            let (token, claims) = auth.mint(&username);
            let status = if matches!(action, Action::Register) { 201 } else { 200 };
            tracing::info!(%peer, user = %username, action = action.as_str(), "account API");
            token_response(status, &username, &token, claims.expires_at(), &auth)
        }
        Err(err) => {
            let response = account_error(err, peer);
            // No name here: people type passwords into the name field.
            tracing::info!(%peer, action = action.as_str(), status = response.status, "account API refused");
            response
        }
    }
}

fn token_response(status: u16, username: &str, token: &str, expires_at: SystemTime, auth: &Auth) -> Response {
    let expires: DateTime<Utc> = expires_at.into();
    Response::json(
        status,
        &json!({
            "username": username,
            "token": token,
            "token_type": "Bearer",
            "expires_at": expires.to_rfc3339_opts(SecondsFormat::Secs, true),
            "expires_in": auth.token_ttl.as_secs(),
        }),
    )
}

fn account_error(err: AccountError, peer: SocketAddr) -> Response {
    match err {
        AccountError::InvalidName(why) => error(400, "invalid_name", why),
        AccountError::WeakPassword(why) => error(400, "weak_password", why),
        AccountError::NameTaken(name) => error(
            409,
            "name_taken",
            format!("the name {name:?} is taken (by an account or a connected guest); pick another"),
        ),
        AccountError::InvalidCredentials => error(401, "invalid_credentials", "wrong username or password"),
        AccountError::Store(err) => {
            tracing::error!(%peer, "account store: {err:#}");
            error(500, "internal", "the account store failed; the server log says why")
        }
    }
}

/// Read the request body: JSON, with a Content-Length of at most `MAX_BODY`.
async fn read_body<S>(stream: &mut S, request: &Request, deadline: Instant) -> Result<Vec<u8>, Response>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(kind) = request.header("content-type") {
        let mime = kind.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(error(
                415,
                "unsupported_media_type",
                format!("send JSON (Content-Type: application/json), not {mime}"),
            ));
        }
    }
    if request.header("transfer-encoding").is_some() {
        return Err(error(411, "length_required", "send the body with a Content-Length, not chunked"));
    }
    let Some(length) = request.header("content-length").and_then(|v| v.trim().parse::<usize>().ok()) else {
        return Err(error(411, "length_required", "a JSON body with a Content-Length header is required"));
    };
    if length > MAX_BODY {
        return Err(error(413, "body_too_large", format!("the body is {length} bytes; the limit is {MAX_BODY}")));
    }
    let mut body = request.rest.clone();
    if body.len() < length && request.header("expect").is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue")) {
        let _ = timeout_at(deadline, stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")).await;
    }
    let mut chunk = [0u8; 1024];
    while body.len() < length {
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => body.extend_from_slice(&chunk[..n]),
            Ok(_) => return Err(error(400, "invalid_request", "the connection ended before the whole body arrived")),
            Err(_) => return Err(error(408, "timeout", "the body did not arrive in time")),
        }
    }
    body.truncate(length);
    Ok(body)
}
