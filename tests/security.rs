//! Accounts, tokens and origins as a client sees them: the account API over
//! real HTTP, WebSocket handshakes with and without tokens, the name rules,
//! and what reaches the logs.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use chorus::client::{ConnectOptions, Received, connect, split};
use chorus::server::auth::AuthMode;
use chorus::server::auth::tokens::{Claims, TokenKeys, unix_now};
use chorus::server::{SecurityConfig, ServerConfig, ServerHandle};
use common::{Client, code, server_with};

const SECRET: &str = "test secret, long enough to sign tokens: 0123456789";

/// A server with accounts in a fresh directory (kept alive by the returned
/// guard). The account API is not throttled, except where a test says so.
async fn server_with_auth(mode: AuthMode) -> (ServerHandle, tempfile::TempDir) {
    server_with_security(SecurityConfig { auth: mode, api_rate_limit: None, ..SecurityConfig::default() }).await
}

async fn server_with_security(security: SecurityConfig) -> (ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        security: SecurityConfig { auth_secret: Some(SECRET.into()), ..security },
        ..common::quick_close()
    };
    (server_with(config).await, dir)
}

/// One HTTP request on its own connection (`Connection: close`); returns
/// (status, head, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(common::WAIT, tcp.read_to_end(&mut response)).await.unwrap().unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head[9..12].parse().unwrap(), head.to_string(), body.to_string())
}

/// POST a JSON body to the account API; returns (status, JSON).
async fn api(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let length = body.len().to_string();
    let headers = [("Content-Type", "application/json"), ("Content-Length", length.as_str())];
    let (status, _, body) = http(addr, "POST", path, &headers, body.as_bytes()).await;
    (status, serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body:?}")))
}

async fn register(addr: SocketAddr, name: &str, password: &str) -> String {
    let (status, body) = api(addr, "/api/register", &json!({"username": name, "password": password})).await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_string()
}

/// The HTTP status of a refused WebSocket handshake.
async fn refused_status(request: impl IntoClientRequest + Unpin) -> (u16, String) {
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
            (response.status().as_u16(), body)
        }
        Ok(_) => panic!("the handshake was accepted"),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
    }
}

fn keys() -> TokenKeys {
    TokenKeys::new(SECRET.as_bytes()).unwrap()
}

#[tokio::test]
async fn required_auth_refuses_missing_forged_and_expired_tokens_with_401() {
    let (server, _dir) = server_with_auth(AuthMode::Required).await;
    register(server.addr(), "alice", "correct horse").await;
    let url = server.url();

    let (status, body) = refused_status(url.as_str()).await;
    assert_eq!(status, 401);
    assert!(body.contains("requires a token") && body.contains("/api/login"), "{body}");

    let forged =
        TokenKeys::new(b"someone else's secret, also long enough").unwrap().mint("alice", Duration::from_secs(60)).0;
    let (status, body) = refused_status(format!("{url}?token={forged}")).await;
    assert_eq!((status, body.contains("signature does not match")), (401, true), "{body}");

    let expired = keys().sign(&Claims::new("alice", unix_now() - 120, unix_now() - 60));
    let (status, body) = refused_status(format!("{url}?token={expired}")).await;
    assert_eq!((status, body.contains("expired")), (401, true), "{body}");

    let mut request = url.as_str().into_client_request().unwrap();
    request.headers_mut().insert("Authorization", HeaderValue::from_static("Bearer not.a.jwt"));
    assert_eq!(refused_status(request).await.0, 401);

    let (status, _) = refused_status(format!("{url}?token={}", keys().mint("nobody", Duration::from_secs(60)).0)).await;
    assert_eq!(status, 401, "a valid signature for an account that does not exist");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_token_in_the_query_or_the_header_signs_in_as_the_account() {
    let (server, _dir) = server_with_auth(AuthMode::Required).await;
    let token = register(server.addr(), "Alice", "correct horse").await;
    let by_query = Client::connect(&format!("{}?token={token}", server.url())).await;
    assert_eq!(by_query.username, "Alice");

    let options = ConnectOptions { token: Some(token), ..ConnectOptions::default() };
    let (_sender, mut receiver) = split(connect(&server.url(), &options).await.unwrap());
    let Some(Ok(Received::Event { text, .. })) = receiver.recv().await else { panic!("no welcome") };
    let welcome: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(welcome["username"], "Alice", "two connections of one account share its name");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn optional_auth_admits_guests_and_signs_in_token_holders() {
    let (server, _dir) = server_with_auth(AuthMode::Optional).await;
    let token = register(server.addr(), "bob", "correct horse").await;
    let guest = Client::connect(&server.url()).await;
    assert!(guest.username.starts_with("guest-"), "{}", guest.username);
    let bob = Client::connect(&format!("{}?token={token}", server.url())).await;
    assert_eq!(bob.username, "bob");
    let (status, _) = refused_status(format!("{}?token=forged.token.here", server.url())).await;
    assert_eq!(status, 401, "a bad token is refused, not silently downgraded to a guest");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_token_that_expires_mid_session_closes_with_1008() {
    let (server, _dir) = server_with_auth(AuthMode::Required).await;
    register(server.addr(), "carol", "correct horse").await;
    let watcher_token = keys().mint("carol", Duration::from_secs(600)).0;
    let mut watcher = Client::connect(&format!("{}?token={watcher_token}", server.url())).await;
    let short = keys().sign(&Claims::new("carol", unix_now(), unix_now() + 2));
    let mut brief = Client::connect(&format!("{}?token={short}", server.url())).await;
    let frame = brief.expect_close().await;
    assert_eq!(code(&frame), 1008);
    assert_eq!(frame.unwrap().reason.as_str(), "token expired");
    assert_eq!(watcher.expect("left").await["reason"], "expired");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn account_names_belong_to_their_accounts() {
    let (server, _dir) = server_with_auth(AuthMode::Optional).await;
    let token = register(server.addr(), "Dana", "correct horse").await;
    let mut guest = Client::connect(&server.url()).await;
    // Any case, and look-alikes (Cyrillic а, full-width letters).
    for name in ["Dana", "dana", "DANA", "D\u{430}na", "Ｄａｎａ"] {
        guest.send_json(json!({"type": "username", "name": name})).await;
        let error = guest.expect("error").await;
        assert_eq!(error["code"], "name_reserved", "{name}: {error}");
        assert!(error["message"].as_str().unwrap().contains("sign in"), "{error}");
    }
    let mut dana = Client::connect(&format!("{}?token={token}", server.url())).await;
    dana.send_json(json!({"type": "username", "name": "someone-else"})).await;
    assert_eq!(dana.expect("error").await["code"], "name_locked");

    // A connected guest's name cannot be registered from under it.
    guest.send_json(json!({"type": "username", "name": "erin"})).await;
    guest.expect_where("renamed", |e| e["new"] == "erin").await;
    for taken in ["Erin", "\u{415}rin"] {
        let (status, body) =
            api(server.addr(), "/api/register", &json!({"username": taken, "password": "long enough"})).await;
        assert_eq!((status, body["error"].as_str()), (409, Some("name_taken")), "{taken}: {body}");
    }
    // Names that look blank or hide characters are no account names either.
    for invisible in ["\u{200B}", "\u{3164}", "fred\u{200B}", "\u{202E}derf"] {
        let (status, body) =
            api(server.addr(), "/api/register", &json!({"username": invisible, "password": "long enough"})).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_name")), "{invisible:?}: {body}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_account_api_answers_every_mistake_with_a_clear_json_error() {
    let (server, _dir) = server_with_auth(AuthMode::Required).await;
    let addr = server.addr();
    let (status, body) = api(addr, "/api/register", &json!({"username": "frank", "password": "correct horse"})).await;
    assert_eq!(status, 201);
    assert_eq!((body["username"].as_str(), body["token_type"].as_str()), (Some("frank"), Some("Bearer")));
    assert_eq!(body["expires_in"], 86400);
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));

    let (status, body) = api(addr, "/api/login", &json!({"username": "FRANK", "password": "correct horse"})).await;
    assert_eq!((status, body["username"].as_str()), (200, Some("frank")), "{body}");
    let token = body["token"].as_str().unwrap();
    assert_eq!(Client::connect(&format!("{}?token={token}", server.url())).await.username, "frank");

    for (path, request, status, code) in [
        ("/api/register", json!({"username": "Frank", "password": "another one"}), 409, "name_taken"),
        ("/api/register", json!({"username": "gina", "password": "short"}), 400, "weak_password"),
        ("/api/register", json!({"username": "two words", "password": "long enough"}), 400, "invalid_name"),
        ("/api/register", json!({"username": "guest-0001", "password": "long enough"}), 400, "invalid_name"),
        ("/api/register", json!({"username": "gina"}), 400, "invalid_request"),
        ("/api/login", json!({"username": "frank", "password": "wrong horse"}), 401, "invalid_credentials"),
        ("/api/login", json!({"username": "nobody", "password": "wrong horse"}), 401, "invalid_credentials"),
        ("/api/logout", json!({}), 404, "not_found"),
    ] {
        let (got, body) = api(addr, path, &request).await;
        assert_eq!((got, body["error"].as_str()), (status, Some(code)), "{path} {request}: {body}");
        assert!(!body["message"].as_str().unwrap().is_empty());
    }

    let json_headers = |length: &'static str| vec![("Content-Type", "application/json"), ("Content-Length", length)];
    let (status, _, body) = http(addr, "POST", "/api/login", &json_headers("9"), b"{not json").await;
    assert_eq!(status, 400);
    assert!(body.contains("invalid_json"), "{body}");

    let big = vec![b'x'; 10_000];
    let (status, _, body) = http(addr, "POST", "/api/register", &json_headers("10000"), &big).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("body_too_large"), "{body}");

    let form = [("Content-Type", "application/x-www-form-urlencoded"), ("Content-Length", "3")];
    assert_eq!(http(addr, "POST", "/api/login", &form, b"a=b").await.0, 415);
    assert_eq!(http(addr, "POST", "/api/login", &[], b"").await.0, 415, "no body, no Content-Type");
    let (status, head, _) = http(addr, "GET", "/api/login", &[], b"").await;
    assert_eq!(status, 405);
    assert!(head.to_ascii_lowercase().contains("allow: post"), "{head}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_account_api_is_off_without_auth_and_throttled_per_address() {
    let server = server_with(common::quick_close()).await;
    let (status, body) = api(server.addr(), "/api/login", &json!({"username": "a", "password": "b"})).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("accounts_disabled")), "{body}");
    server.shutdown().await.unwrap();

    let (server, _dir) = server_with_security(SecurityConfig { auth: AuthMode::Optional, ..Default::default() }).await;
    let mut statuses = Vec::new();
    for _ in 0..14 {
        statuses.push(api(server.addr(), "/api/login", &json!({"username": "x", "password": "y"})).await.0);
    }
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[10..].contains(&429), "a burst of 10, then about one a second: {statuses:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn origins_off_the_allow_list_get_403_and_clients_without_origin_pass() {
    let config = ServerConfig {
        security: SecurityConfig {
            allowed_origins: vec!["https://chat.example.com".into()],
            ..SecurityConfig::default()
        },
        ..common::quick_close()
    };
    let server = server_with(config).await;
    let with_origin = |origin: &'static str| {
        let mut request = server.url().into_client_request().unwrap();
        request.headers_mut().insert("Origin", HeaderValue::from_static(origin));
        request
    };
    let (status, body) = refused_status(with_origin("https://evil.example")).await;
    assert_eq!(status, 403);
    assert!(body.contains("https://evil.example") && body.contains("https://chat.example.com"), "{body}");
    let (ws, _) = tokio_tungstenite::connect_async(with_origin("https://chat.example.com")).await.unwrap();
    drop(ws);
    Client::connect(&server.url()).await; // no Origin header: a non-browser client
    server.shutdown().await.unwrap();
}
