//! The server's protections in one place: its settings (`SecurityConfig`),
//! what they become at startup (`Security`: accounts and keys, the TLS
//! acceptor, the per-address table), and the handshake checks that use them:
//! the Origin allow-list (403) and the token (401).
//!
//! Origin: a browser always sends `Origin` on a WebSocket handshake; other
//! clients (the terminal clients, wscat, bots) usually do not. With an
//! allow-list set, a handshake whose Origin is not on it is refused with 403,
//! and a handshake without Origin is let through, since refusing it would
//! stop no attacker (a script can omit the header) but would stop every
//! non-browser client. Without an allow-list every origin is accepted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use http::StatusCode;
use http::header::{HeaderMap, ORIGIN, WWW_AUTHENTICATE};

use super::tls::{ServerTls, TlsSource};
use super::upgrade::Refused;
use crate::server::auth::{Auth, AuthFailure, AuthMode, token_from};
use crate::server::chat::{Admission, Hub};
use crate::server::limits::{DEFAULT_API_RATE, IpLimits, RateLimit};

/// Settings for accounts, origins, TLS and abuse limits. `Default` is what
/// the command line defaults to, except that the defaults here never touch
/// the disk (auth off, no TLS).
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// `--auth`: off (default), optional or required.
    pub auth: AuthMode,
    /// `--auth-secret` / `CHORUS_AUTH_SECRET`; else kept in the data directory.
    pub auth_secret: Option<String>,
    /// How long tokens from `/api/login` and `/api/register` stay valid.
    pub token_ttl: Duration,
    /// `--allowed-origin`, repeatable; empty: any origin.
    pub allowed_origins: Vec<String>,
    /// `--tls-cert`/`--tls-key` or `--tls-self-signed`.
    pub tls: Option<TlsSource>,
    /// Most open connections from one address (IPv6: one /64); 0: no limit.
    pub max_connections_per_ip: usize,
    /// Most frames one message may arrive in; `None`: max(1024, max message size / 64).
    pub max_fragments: Option<usize>,
    /// Account API calls per address (`None`: unlimited); the burst is 10.
    pub api_rate_limit: Option<RateLimit>,
}

/// The default per-address connection cap.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1000;
/// The default token lifetime.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            auth: AuthMode::Off,
            auth_secret: None,
            token_ttl: DEFAULT_TOKEN_TTL,
            allowed_origins: Vec::new(),
            tls: None,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_fragments: None,
            api_rate_limit: Some(DEFAULT_API_RATE),
        }
    }
}

/// The fragment limit for a message size limit, when none is given.
pub fn default_max_fragments(max_message_size: usize) -> usize {
    (max_message_size / 64).max(1024)
}

/// The protections, ready to use.
#[derive(Debug)]
pub struct Security {
    pub auth: Option<Arc<Auth>>,
    pub tls: Option<ServerTls>,
    pub ip: Arc<IpLimits>,
    /// Normalized allowed origins; empty: any.
    origins: Vec<String>,
    pub max_fragments: usize,
    echo: bool,
}

/// `Https://Chat.Example.com/` -> `https://chat.example.com`.
fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

fn check_origin_setting(origin: &str) -> anyhow::Result<String> {
    let normalized = normalize_origin(origin);
    let valid = normalized == "*"
        || normalized == "null"
        || normalized.split_once("://").is_some_and(|(scheme, rest)| {
            !scheme.is_empty() && !rest.is_empty() && !rest.contains('/') && !rest.contains('?')
        });
    if !valid {
        bail!("--allowed-origin {origin:?}: write an origin as a browser sends it, like https://chat.example.com");
    }
    Ok(normalized)
}

impl Security {
    /// Open the account store, load the certificate, check the settings.
    pub fn new(
        config: &crate::server::ServerConfig,
        listen: Option<SocketAddr>,
        hub: &Arc<Hub>,
    ) -> anyhow::Result<Security> {
        let settings = &config.security;
        let auth = match settings.auth {
            AuthMode::Off => None,
            mode => Some(Arc::new(Auth::open(
                mode,
                settings.auth_secret.as_deref(),
                &config.data_dir,
                settings.token_ttl,
                hub.clone(),
            )?)),
        };
        let tls = match &settings.tls {
            None => None,
            Some(source) => Some(super::tls::load(source, &config.data_dir, listen.map(|a| a.ip()))?),
        };
        let mut origins = Vec::new();
        for origin in &settings.allowed_origins {
            origins.push(check_origin_setting(origin)?);
        }
        if origins.iter().any(|o| o == "*") {
            origins.clear();
        }
        Ok(Security {
            auth,
            tls,
            ip: Arc::new(IpLimits::new(settings.max_connections_per_ip, settings.api_rate_limit)),
            origins,
            max_fragments: settings.max_fragments.unwrap_or_else(|| default_max_fragments(config.max_message_size)),
            echo: config.echo,
        })
    }

    /// Check a WebSocket handshake's Origin, room and token (`query`: its
    /// decoded query parameters). The handshake rules (`upgrade::check`)
    /// have passed: `Origin` appears at most once.
    pub async fn admit(&self, headers: &HeaderMap, query: &[(String, String)]) -> Result<Admission, Refused> {
        self.check_origin(headers.get(ORIGIN).and_then(|v| v.to_str().ok()))?;
        let room = query.iter().find(|(name, _)| name == "room").map(|(_, room)| room.as_str());
        let room = match room.filter(|r| !r.is_empty()).map(crate::names::room).transpose() {
            Ok(room) => room,
            Err(why) => return Err(Refused::new(StatusCode::BAD_REQUEST, format!("?room=: {why}"))),
        };
        let mut admission = Admission { account: None, echo: self.echo, room };
        if let Some(auth) = &self.auth {
            let unauthorized = |failure: AuthFailure, error: &'static str| {
                let mut refused = Refused::new(StatusCode::UNAUTHORIZED, failure.to_string());
                refused.headers.push((WWW_AUTHENTICATE, bearer_challenge(error)));
                refused
            };
            let token = token_from(headers, query).map_err(|failure| unauthorized(failure, "invalid_request"))?;
            let error = if token.is_some() { "invalid_token" } else { "invalid_request" };
            admission.account = auth.check(token.as_deref()).await.map_err(|failure| unauthorized(failure, error))?;
        }
        Ok(admission)
    }

    fn check_origin(&self, origin: Option<&str>) -> Result<(), Refused> {
        let Some(origin) = origin else { return Ok(()) };
        if self.origins.is_empty() || self.origins.contains(&normalize_origin(origin)) {
            return Ok(());
        }
        let listed = self.origins.join(", ");
        Err(Refused::new(StatusCode::FORBIDDEN, format!("origin {origin:?} is not allowed here (allowed: {listed})")))
    }
}

/// The `WWW-Authenticate` challenge of a 401 (RFC 6750 section 3).
fn bearer_challenge(error: &'static str) -> &'static str {
    match error {
        "invalid_token" => "Bearer realm=\"chorus\", error=\"invalid_token\"",
        _ => "Bearer realm=\"chorus\", error=\"invalid_request\"",
    }
}

/// Log, once at startup, what protects the server and how clients reach it.
pub fn announce(shared: &crate::server::Shared, addr: SocketAddr) {
    let security = &shared.security;
    if let Some(tls) = &security.tls {
        tracing::info!("TLS certificate: {} (SHA-256 fingerprint {})", tls.cert_path.display(), tls.fingerprint);
        if shared.config.security.tls == Some(TlsSource::SelfSigned) {
            tracing::info!(
                "self-signed: clients connect with `chorus client wss://{addr}/ --ca {}` (or --insecure)",
                tls.cert_path.display()
            );
        }
    }
    if let Some(auth) = &security.auth {
        let mode = format!("{:?}", auth.mode).to_lowercase();
        tracing::info!(
            "auth {mode}: accounts in {}; POST /api/register, POST /api/login",
            auth.accounts.path().display()
        );
    }
    if !security.origins.is_empty() {
        tracing::info!("allowed origins: {}", security.origins.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_hub() -> Arc<Hub> {
        Arc::new(Hub::new(10, Arc::new(crate::server::metrics::Metrics::default())))
    }

    fn security(origins: &[&str]) -> Security {
        let config = crate::server::ServerConfig {
            security: SecurityConfig {
                allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
                ..SecurityConfig::default()
            },
            ..crate::server::ServerConfig::default()
        };
        Security::new(&config, None, &test_hub()).unwrap()
    }

    #[test]
    fn origins_are_compared_normalized_and_absent_is_allowed() {
        let s = security(&["https://Chat.example.com/", "http://localhost:8080"]);
        assert!(s.check_origin(None).is_ok());
        assert!(s.check_origin(Some("https://chat.example.com")).is_ok());
        assert!(s.check_origin(Some("http://localhost:8080")).is_ok());
        assert!(s.check_origin(Some("http://localhost:8081")).is_err());
        assert!(s.check_origin(Some("https://chat.example.com.evil.net")).is_err());
        assert!(s.check_origin(Some("null")).is_err());
        assert!(security(&[]).check_origin(Some("https://anything.example")).is_ok());
        assert!(security(&["*"]).check_origin(Some("https://anything.example")).is_ok());
    }

    #[test]
    fn a_malformed_origin_setting_is_an_error() {
        let config = crate::server::ServerConfig {
            security: SecurityConfig { allowed_origins: vec!["chat.example.com".into()], ..SecurityConfig::default() },
            ..crate::server::ServerConfig::default()
        };
        let err = Security::new(&config, None, &test_hub()).unwrap_err().to_string();
        assert!(err.contains("https://chat.example.com"), "{err}");
    }

    #[test]
    fn the_fragment_limit_follows_the_message_size() {
        assert_eq!(default_max_fragments(64 * 1024), 1024);
        assert_eq!(default_max_fragments(16 << 20), 262_144);
    }
}
