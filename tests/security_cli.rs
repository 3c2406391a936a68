//! The security features through the `chorus` binary, as an operator uses
//! them: `chorus token`, `--auth`, `--tls-self-signed` with the clients'
//! `--ca` / `--insecure`, and what the server writes to its log.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use chorus::server::auth::AuthMode;
use chorus::server::{SecurityConfig, ServerConfig};
use common::Client;

fn chorus() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chorus"));
    command.env("NO_COLOR", "1").env_remove("RUST_LOG").env_remove("CHORUS_AUTH_SECRET").env_remove("CHORUS_TOKEN");
    command
}

/// Run `chorus args...` to its end off the runtime; (success, stdout, stderr).
async fn run(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let output = chorus().args(&args).stdin(Stdio::null()).output().unwrap();
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (output.status.success(), text(&output.stdout), text(&output.stderr))
    })
    .await
    .unwrap()
}

/// A `chorus server` process and its log lines.
struct ServerProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    url: String,
}

impl ServerProcess {
    fn start(args: &[&str]) -> ServerProcess {
        let mut child = chorus()
            .args(["server", "--addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let _ = tx.send(line.unwrap_or_default());
            }
        });
        let mut server = ServerProcess { child, lines, seen: Vec::new(), url: String::new() };
        let line = server.wait_for("listening on ");
        server.url = line.split("listening on ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
        server
    }

    /// The first log line containing `text` (waiting for it).
    fn wait_for(&mut self, text: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(text)) {
            return line.clone();
        }
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("the server never logged {text:?}; it logged:\n{}", self.seen.join("\n")));
            self.seen.push(line.clone());
            if line.contains(text) {
                return line;
            }
        }
    }

    /// SIGTERM, wait for the exit, and return every log line.
    fn stop(mut self) -> Vec<String> {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        self.seen.extend(self.lines.iter());
        self.seen
    }
}

#[tokio::test]
async fn chorus_token_mints_a_token_the_server_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let args = |user: &str| vec!["token".into(), "--user".into(), user.into(), "--data".into(), data.clone()];
    let (ok, stdout, stderr) = run(args("bot-1")).await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("created account bot-1"), "{stderr}");
    assert!(stderr.contains("valid until"), "{stderr}");
    let token = stdout.trim().to_string();
    assert_eq!(token.split('.').count(), 3, "the token alone on stdout: {stdout:?}");

    // The server finds the secret `chorus token` generated in the data directory.
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        security: SecurityConfig { auth: AuthMode::Required, ..SecurityConfig::default() },
        ..common::quick_close()
    };
    let server = common::server_with(config).await;
    let bot = Client::connect(&format!("{}?token={token}", server.url())).await;
    assert_eq!(bot.username, "bot-1");
    let (ok, stdout, stderr) = run(vec!["simple-client".into(), server.url(), "--token".into(), token]).await;
    assert!(ok && stdout.contains("closed cleanly (1000"), "{stdout}\n{stderr}");
    assert!(stdout.contains("you are bot-1") && stdout.contains("no rename: signed in"), "{stdout}");
    let (ok, _, stderr) = run(vec!["simple-client".into(), server.url()]).await;
    assert!(!ok && stderr.contains("HTTP 401") && stderr.contains("--token"), "{stderr}");
    server.shutdown().await.unwrap();

    let (ok, _, stderr) = run(args("guest-42")).await;
    assert!(!ok && stderr.contains("guest"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
}

/// POST JSON to the server; the response body.
async fn post(url: &str, path: &str, body: &str) -> Value {
    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap()
}

#[tokio::test]
async fn tokens_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (_, minted, _) =
        run(vec!["token".into(), "--user".into(), "logbot".into(), "--data".into(), data.into()]).await;
    let minted = minted.trim().to_string();
    let mut server = ServerProcess::start(&["--auth", "required", "--data", data]);
    let url = server.url.clone();

    let registered = post(&url, "/api/register", r#"{"username":"lara","password":"correct horse"}"#).await;
    let logged_in = post(&url, "/api/login", r#"{"username":"lara","password":"correct horse"}"#).await;
    let mut tokens = vec![minted.clone()];
    for body in [&registered, &logged_in] {
        tokens.push(body["token"].as_str().unwrap().to_string());
    }
    Client::connect(&format!("{url}?token={minted}")).await;
    Client::connect(&format!("{url}?room=x&token={}", tokens[1])).await;
    let mut request = url.as_str().into_client_request().unwrap();
    request.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {}", tokens[2])).unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap();
    let forged = format!("{}x", &minted[..minted.len() - 1]);
    tokens.push(forged.clone());
    assert!(tokio_tungstenite::connect_async(format!("{url}?token={forged}")).await.is_err());
    server.wait_for("handshake refused");

    let logs = server.stop().join("\n");
    assert!(logs.contains("token=<redacted>"), "the query is logged, redacted:\n{logs}");
    assert!(logs.contains("user=lara") || logs.contains("user: lara"), "{logs}");
    for token in &tokens {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!logs.contains(signature), "a token's signature reached the log:\n{logs}");
    }
}

fn fingerprint_of(pem: &Path) -> String {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let cert = CertificateDer::pem_file_iter(pem).unwrap().next().unwrap().unwrap();
    chorus::server::net::tls::fingerprint(&cert)
}

#[tokio::test]
async fn simple_client_over_wss_with_ca_or_insecure_and_a_clear_refusal_without() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut server = ServerProcess::start(&["--tls-self-signed", "--data", data]);
    assert!(server.url.starts_with("wss://"), "{}", server.url);
    let cert = dir.path().join("tls/self-signed.pem");
    let line = server.wait_for("SHA-256 fingerprint");
    assert!(line.contains(&fingerprint_of(&cert)), "{line}");
    assert!(server.wait_for("--ca").contains(cert.to_str().unwrap()));
    let url = server.url.clone();

    let with = |extra: &[&str]| {
        let mut args = vec!["simple-client".to_string(), url.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let (ok, stdout, stderr) = run(with(&["--ca", cert.to_str().unwrap()])).await;
    assert!(ok && stdout.contains("closed cleanly (1000"), "{stdout}\n{stderr}");
    let (ok, stdout, stderr) = run(with(&["--insecure"])).await;
    assert!(ok && stdout.contains("closed cleanly (1000"), "{stdout}\n{stderr}");
    let (ok, stdout, stderr) = run(with(&[])).await;
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("not trusted") && stderr.contains("--ca FILE"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    server.stop();
}
