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
//! No guest may take a registered name (`name_reserved`): every account name
//! is claimed in the hub's name table at start and when registered, so the
//! check and the claim are one step under the hub's name lock, and nothing
//! here touches the disk under a lock. The account names are also kept here
//! in memory, so a token is checked without a database read; an account made
//! by `chorus token` while the server runs is looked up once, off the async
//! workers, and kept. A token that expires during a session closes it with
//! 1008.

pub mod accounts;
pub mod api;
pub mod tokens;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use headers::authorization::Bearer;
use headers::{Authorization, HeaderMapExt as _};
use http::header::{AUTHORIZATION, HeaderMap};
use tokio::sync::Semaphore;

use crate::server::chat::{Account, Hub};
use crate::sync::lock;
use accounts::{AccountError, Accounts};
use tokens::{Claims, TokenError, TokenKeys, load_secret};

/// How the server treats tokens; `--auth off|optional|required`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Everyone is a guest; tokens are ignored.
    #[default]
    Off,
    /// A valid token signs the connection in; no token: a guest.
    Optional,
    /// No valid token: 401.
    Required,
}

/// The accounts, the token keys and the rules, for one server.
#[derive(Debug)]
pub struct Auth {
    pub mode: AuthMode,
    pub accounts: Arc<Accounts>,
    keys: TokenKeys,
    /// How long a token from `/api/login` or `/api/register` stays valid.
    pub token_ttl: Duration,
    /// Every account's name as registered, by its lowercase form; loaded at
    /// open and kept current, so that checking a token reads no database.
    /// Taken for one map operation at a time.
    known: Mutex<HashMap<String, String>>,
    /// Where account names are claimed against guests' names.
    hub: Arc<Hub>,
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
    #[error("the Authorization header must be one \"Bearer <token>\"")]
    NotBearer,
}

impl Auth {
    /// Open the account store in `data_dir`, load (or create) the secret,
    /// and claim every account's name in `hub`. Blocking: call it at start.
    pub fn open(
        mode: AuthMode,
        secret: Option<&str>,
        data_dir: &Path,
        token_ttl: Duration,
        hub: Arc<Hub>,
    ) -> anyhow::Result<Auth> {
        let accounts = Arc::new(Accounts::open(data_dir)?);
        let keys = TokenKeys::new(&load_secret(secret, data_dir)?)?;
        let names = accounts.names()?;
        hub.add_accounts(names.iter().map(String::as_str));
        let known = names.into_iter().map(|name| (name.to_lowercase(), name)).collect();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Auth { mode, accounts, keys, token_ttl, known: Mutex::new(known), hub, hashing: Semaphore::new(cores) })
    }

    /// A token for `user` with the server's TTL.
    pub fn mint(&self, user: &str) -> (String, Claims) {
        self.keys.mint(user, self.token_ttl)
    }

    /// Decide a handshake from the token it carries, if any.
    pub async fn check(&self, token: Option<&str>) -> Result<Option<Account>, AuthFailure> {
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
        let known = lock(&self.known).get(&claims.sub.to_lowercase()).cloned();
        let name = match known {
            Some(name) => name,
            // Not registered through this server: made by `chorus token`
            // since the start, or not an account at all.
            None => self.look_up(&claims.sub).await.ok_or_else(|| AuthFailure::NoSuchAccount(claims.sub.clone()))?,
        };
        Ok(Some(Account { name, expires_at: claims.expires_at() }))
    }

    /// Find an account the server does not know yet in the store (off the
    /// async workers) and remember it.
    async fn look_up(&self, name: &str) -> Option<String> {
        let accounts = self.accounts.clone();
        let wanted = name.to_string();
        let found = tokio::task::spawn_blocking(move || accounts.lookup(&wanted)).await.ok()?.ok()??;
        lock(&self.known).insert(found.to_lowercase(), found.clone());
        self.hub.add_accounts([found.as_str()]);
        Some(found)
    }

    /// Register a new account: check the name and password, hash it (on the
    /// blocking pool), claim the name in the hub, then store the account
    /// outside any lock; the claim is undone if storing fails. Returns the
    /// account name.
    pub async fn register(&self, name: &str, password: &str) -> Result<String, AccountError> {
        let (owned_name, owned_password) = (name.to_string(), password.to_string());
        let (name, hash) = blocking(move || Accounts::prepare(&owned_name, &owned_password)).await?;
        self.hub.claim_account(&name).map_err(|_| AccountError::NameTaken(name.clone()))?;
        let (accounts, owned_name) = (self.accounts.clone(), name.clone());
        match blocking(move || accounts.insert(&owned_name, Some(&hash))).await {
            Ok(name) => {
                lock(&self.known).insert(name.to_lowercase(), name.clone());
                Ok(name)
            }
            Err(err) => {
                // Lost a race with another process, or the disk failed.
                self.hub.release_account(&name);
                Err(err)
            }
        }
    }

    /// Check a password (on the blocking pool); the account name on success.
    pub async fn login(&self, name: &str, password: &str) -> Result<String, AccountError> {
        let (accounts, name, password) = (self.accounts.clone(), name.to_string(), password.to_string());
        blocking(move || accounts.login(&name, &password)).await
    }
}

/// Run an account operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AccountError> + Send + 'static,
) -> Result<T, AccountError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|err| Err(AccountError::Store(anyhow::anyhow!("the worker failed: {err}"))))
}

/// The token a handshake carries: `Authorization: Bearer <token>` (parsed by
/// the `headers` crate, scheme case-insensitive), else `?token=`. An
/// `Authorization` header that is not one Bearer token is an error, so a
/// client that meant to sign in learns that it did not.
pub fn token_from(headers: &HeaderMap, query: &[(String, String)]) -> Result<Option<String>, AuthFailure> {
    let lines = headers.get_all(AUTHORIZATION).iter().count();
    if lines > 0 {
        let bearer = headers.typed_get::<Authorization<Bearer>>().filter(|_| lines == 1);
        let token = bearer.ok_or(AuthFailure::NotBearer)?;
        return Ok(Some(token.token().trim().to_string()));
    }
    Ok(query.iter().find(|(name, _)| name == "token").map(|(_, value)| value.clone()))
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
    let keys = TokenKeys::new(&load_secret(secret, data_dir)?)?;
    let (name, created) = match accounts.lookup(user)? {
        Some(name) => (name, false),
        None => (accounts.insert(user, None)?, true),
    };
    let (token, claims) = keys.mint(&name, ttl);
    Ok(IssuedToken { token, claims, created })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_header_or_the_query() {
        let header = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, http::HeaderValue::from_static(value));
            headers
        };
        let query = |q: &str| crate::server::net::http::query_pairs(q).unwrap();
        let none = HeaderMap::new();
        assert_eq!(token_from(&header("Bearer abc.def.ghi"), &[]), Ok(Some("abc.def.ghi".into())));
        assert_eq!(token_from(&header("bearer  x "), &query("token=y")), Ok(Some("x".into())));
        assert_eq!(token_from(&none, &query("room=a&token=a%2Eb.c")), Ok(Some("a.b.c".into())));
        assert_eq!(token_from(&header("Basic Zm9v"), &[]), Err(AuthFailure::NotBearer));
        assert_eq!(token_from(&header("Bearer"), &[]), Err(AuthFailure::NotBearer));
        assert_eq!(token_from(&none, &query("token=%zz%4")), Ok(Some("%zz%4".into())));
        assert_eq!(token_from(&none, &[]), Ok(None));
        let mut odd = HeaderMap::new();
        odd.insert(AUTHORIZATION, http::HeaderValue::from_bytes("abcdeféxyz".as_bytes()).unwrap());
        assert_eq!(token_from(&odd, &[]), Err(AuthFailure::NotBearer), "a multi-byte character across byte 7");
    }

    fn hub() -> Arc<Hub> {
        Arc::new(Hub::new(10, Arc::new(crate::server::metrics::Metrics::default())))
    }

    #[tokio::test]
    async fn modes_decide_what_a_missing_or_bad_token_means() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "s".repeat(32);
        let open = |mode| Auth::open(mode, Some(&secret), dir.path(), Duration::from_secs(60), hub()).unwrap();
        let required = open(AuthMode::Required);
        assert_eq!(required.check(None).await, Err(AuthFailure::Missing));
        let (token, _) = required.mint("nobody");
        assert_eq!(required.check(Some(&token)).await, Err(AuthFailure::NoSuchAccount("nobody".into())));
        required.accounts.insert("Carol", None).unwrap();
        let (token, _) = required.mint("carol");
        assert_eq!(required.check(Some(&token)).await.unwrap().unwrap().name, "Carol", "found in the store");
        let optional = open(AuthMode::Optional);
        assert_eq!(optional.check(None).await, Ok(None));
        assert!(matches!(optional.check(Some("x.y.z")).await, Err(AuthFailure::Invalid(_))));
        assert_eq!(open(AuthMode::Off).check(Some("x.y.z")).await, Ok(None), "auth off ignores tokens");
    }

    #[tokio::test]
    async fn registering_claims_the_name_and_a_lost_claim_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub();
        let auth = Auth::open(AuthMode::Optional, None, dir.path(), Duration::from_secs(60), hub.clone()).unwrap();
        assert_eq!(auth.register("Dora", "long enough").await.unwrap(), "Dora");
        assert!(matches!(auth.register("dora", "long enough").await, Err(AccountError::NameTaken(_))));
        hub.claim_account("eve").unwrap();
        assert!(matches!(auth.register("Eve", "long enough").await, Err(AccountError::NameTaken(_))));
        assert_eq!(auth.accounts.names().unwrap(), ["Dora"], "the refused registration stored nothing");
        assert_eq!(auth.login("DORA", "long enough").await.unwrap(), "Dora");
    }

    #[tokio::test]
    async fn chorus_token_creates_a_token_only_account_once() {
        let dir = tempfile::tempdir().unwrap();
        let first = issue_token(dir.path(), None, "bot-7", Duration::from_secs(3600)).unwrap();
        assert!(first.created);
        let again = issue_token(dir.path(), None, "BOT-7", Duration::from_secs(3600)).unwrap();
        assert!(!again.created);
        assert_eq!(again.claims.sub, "bot-7", "the registered spelling");
        let auth = Auth::open(AuthMode::Required, None, dir.path(), Duration::from_secs(60), hub()).unwrap();
        assert_eq!(auth.check(Some(&first.token)).await.unwrap().unwrap().name, "bot-7");
        assert!(issue_token(dir.path(), None, "guest-1", Duration::from_secs(60)).is_err());
    }
}
