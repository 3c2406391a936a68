//! Who may connect, and as whom: the `--auth` mode, tokens at the handshake,
//! and the rules that keep account names for their owners.
//!
//! - `off` (the default): everyone is a guest; tokens are ignored; the account
//!   API answers 404.
//! - `optional`: a valid token makes the connection that account's user; no
//!   token makes it a guest; an invalid or expired token is refused (401), so
//!   a client that meant to sign in learns it did not.
//! - `required`: a handshake without a valid token is refused with 401.
//!
//! A signed-in connection's username is its account name and cannot change.
//! No guest may take a registered name (`name_reserved`); the check and the
//! rename happen under one lock that registration takes too, so a name cannot
//! be registered and taken by a guest at the same moment. A token that expires
//! during a session closes it with 1008.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::accounts::Accounts;
use super::hub::{Hub, Presence, lock};
use super::tokens::{Claims, TokenError, TokenKeys, load_secret};
use crate::protocol::{ErrorCode, Refusal};

/// How the server treats tokens; `--auth off|optional|required`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    #[default]
    Off,
    Optional,
    Required,
}

impl FromStr for AuthMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(AuthMode::Off),
            "optional" => Ok(AuthMode::Optional),
            "required" => Ok(AuthMode::Required),
            other => Err(format!("unknown auth mode {other:?}; use off, optional or required")),
        }
    }
}

/// A signed-in connection: its account name and when its token expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub username: String,
    pub expires_at: SystemTime,
}

/// The accounts, the token keys and the rules, for one server.
#[derive(Debug)]
pub struct Auth {
    pub mode: AuthMode,
    pub accounts: Accounts,
    keys: TokenKeys,
    /// How long a token from `/api/login` or `/api/register` stays valid.
    pub token_ttl: Duration,
    /// Held while checking that a name is free and taking it, by
    /// registrations and by guest renames, so the two cannot interleave.
    names: Mutex<()>,
    /// Password hashes computed at once (argon2 is deliberately costly); more
    /// requests wait their turn instead of starving the chat of CPU.
    pub hashing: Semaphore,
}

/// Why a handshake is refused with 401, worded for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error(
        "this server requires a token: get one with POST /api/login (or `chorus token`), then connect \
         with ?token=... or an Authorization: Bearer header"
    )]
    Missing,
    #[error("{0}")]
    Invalid(#[from] TokenError),
    #[error("the token names an account that does not exist here (\"{0}\"); log in again")]
    NoSuchAccount(String),
}

impl Auth {
    /// Open the account store in `data_dir` and load (or create) the secret.
    pub fn open(mode: AuthMode, secret: Option<&str>, data_dir: &Path, token_ttl: Duration) -> anyhow::Result<Auth> {
        let accounts = Accounts::open(data_dir)?;
        let keys = TokenKeys::new(&load_secret(secret, data_dir)?);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Auth { mode, accounts, keys, token_ttl, names: Mutex::new(()), hashing: Semaphore::new(cores) })
    }

    /// A token for `user` with the server's TTL.
    pub fn mint(&self, user: &str) -> (String, Claims) {
        self.keys.mint(user, self.token_ttl)
    }

    /// Decide a handshake from the token it carries, if any.
    pub fn check(&self, token: Option<&str>) -> Result<Option<Identity>, AuthFailure> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return match self.mode {
                AuthMode::Required => Err(AuthFailure::Missing),
                AuthMode::Optional | AuthMode::Off => Ok(None),
            };
        };
        if self.mode == AuthMode::Off {
            return Ok(None);
        }
        let claims = self.keys.verify(token)?;
        // An indexed point lookup: fast enough to run on the connection's task.
        match self.accounts.lookup(&claims.sub) {
            Ok(Some(username)) => Ok(Some(Identity { username, expires_at: claims.expires_at() })),
            _ => Err(AuthFailure::NoSuchAccount(claims.sub)),
        }
    }

    /// Run `register` (check the name is free and take it) under the names lock.
    pub fn with_names_locked<T>(&self, register: impl FnOnce() -> T) -> T {
        let _names = lock(&self.names);
        register()
    }
}

/// The token a handshake carries: `Authorization: Bearer ...`, else `?token=...`.
pub fn token_from(authorization: Option<&str>, query: &str) -> Option<String> {
    if let Some(value) = authorization {
        let value = value.trim();
        if value.len() > 7 && value[..7].eq_ignore_ascii_case("bearer ") {
            return Some(value[7..].trim().to_string());
        }
    }
    query_param(query, "token")
}

/// The decoded value of `name` in a query string (`a=1&room=rust`).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('=')).map(percent_decode)
}

/// Decode `%XX` escapes (and `+` as a space) in a query value.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = text
            .get(i + 1..i + 3)
            .filter(|hex| bytes[i] == b'%' && hex.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, byte) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A query string with the value of `token` replaced, for logs.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| if pair.starts_with("token=") { "token=<redacted>" } else { pair })
        .collect::<Vec<_>>()
        .join("&")
}

/// What one connection was admitted as, and what it may do.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// The account, for a signed-in connection.
    pub identity: Option<Identity>,
    /// Echo mode: every data frame goes back as it came; no chat.
    pub echo: bool,
    /// The server's accounts, when auth is on (for the name rules).
    pub auth: Option<Arc<Auth>>,
    /// The room asked for at the handshake (`?room=`), instead of the lobby.
    pub room: Option<String>,
}

impl Admission {
    /// The account name, for a signed-in connection.
    pub fn username(&self) -> Option<&str> {
        self.identity.as_ref().map(|i| i.username.as_str())
    }

    /// When the token runs out, on the runtime's clock (`None`: a guest, or
    /// beyond what the clock can represent).
    pub fn expiry(&self) -> Option<Instant> {
        let identity = self.identity.as_ref()?;
        let left = identity.expires_at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
        Instant::now().checked_add(left)
    }

    /// A rename request, under the account rules.
    pub fn rename(&self, hub: &Hub, presence: &mut Presence, name: &str) -> Result<(), Refusal> {
        if let Some(me) = self.username() {
            return Err(Refusal::new(
                ErrorCode::NameLocked,
                format!("you are signed in as {me}: your username is your account name"),
            ));
        }
        let Some(auth) = &self.auth else { return hub.rename(presence, name) };
        auth.with_names_locked(|| {
            if auth.accounts.exists(name) {
                return Err(Refusal::new(
                    ErrorCode::NameReserved,
                    format!("{name:?} is a registered account; sign in as {name} to use it (POST /api/login)"),
                ));
            }
            hub.rename(presence, name)
        })
    }
}

/// A token minted by `chorus token`.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: String,
    pub claims: Claims,
    /// The account did not exist and was created (token-only, no password).
    pub created: bool,
}

/// Mint a token for `user`, creating a token-only account if there is none.
pub fn issue_token(data_dir: &Path, secret: Option<&str>, user: &str, ttl: Duration) -> anyhow::Result<IssuedToken> {
    let accounts = Accounts::open(data_dir)?;
    let keys = TokenKeys::new(&load_secret(secret, data_dir)?);
    let (name, created) = match accounts.lookup(user)? {
        Some(name) => (name, false),
        None => {
            accounts.insert(user, None)?;
            (user.to_string(), true)
        }
    };
    let (token, claims) = keys.mint(&name, ttl);
    Ok(IssuedToken { token, claims, created })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_header_or_the_query() {
        assert_eq!(token_from(Some("Bearer abc.def.ghi"), ""), Some("abc.def.ghi".into()));
        assert_eq!(token_from(Some("bearer  x "), "token=y"), Some("x".into()));
        assert_eq!(token_from(None, "room=a&token=a%2Eb.c"), Some("a.b.c".into()));
        assert_eq!(token_from(Some("Basic Zm9v"), "x=1"), None);
        assert_eq!(token_from(None, "token=%zz%4"), Some("%zz%4".into()));
    }

    #[test]
    fn redaction_hides_only_the_token() {
        assert_eq!(redact_query("a=1&token=secret.jwt.here&b=2"), "a=1&token=<redacted>&b=2");
        assert_eq!(redact_query(""), "");
    }

    #[test]
    fn modes_decide_what_a_missing_or_bad_token_means() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "s".repeat(32);
        let open = |mode| Auth::open(mode, Some(&secret), dir.path(), Duration::from_secs(60)).unwrap();
        let required = open(AuthMode::Required);
        assert_eq!(required.check(None), Err(AuthFailure::Missing));
        let (token, _) = required.mint("nobody");
        assert_eq!(required.check(Some(&token)), Err(AuthFailure::NoSuchAccount("nobody".into())));
        required.accounts.insert("Carol", None).unwrap();
        let (token, _) = required.mint("carol");
        assert_eq!(required.check(Some(&token)).unwrap().unwrap().username, "Carol");
        let optional = open(AuthMode::Optional);
        assert_eq!(optional.check(None), Ok(None));
        assert!(matches!(optional.check(Some("x.y.z")), Err(AuthFailure::Invalid(_))));
        assert_eq!(open(AuthMode::Off).check(Some("x.y.z")), Ok(None), "auth off ignores tokens");
    }

    #[test]
    fn chorus_token_creates_a_token_only_account_once() {
        let dir = tempfile::tempdir().unwrap();
        let first = issue_token(dir.path(), None, "bot-7", Duration::from_secs(3600)).unwrap();
        assert!(first.created);
        let again = issue_token(dir.path(), None, "BOT-7", Duration::from_secs(3600)).unwrap();
        assert!(!again.created);
        assert_eq!(again.claims.sub, "bot-7", "the registered spelling");
        let auth = Auth::open(AuthMode::Required, None, dir.path(), Duration::from_secs(60)).unwrap();
        assert_eq!(auth.check(Some(&first.token)).unwrap().unwrap().username, "bot-7");
        assert!(issue_token(dir.path(), None, "guest-1", Duration::from_secs(60)).is_err());
    }
}
