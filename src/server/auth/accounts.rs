//! Accounts: names and argon2id password hashes in `<data dir>/accounts.db`
//! (SQLite, WAL mode). A file of its own, not a table of the history
//! database: the history writer holds that database's write lock for each
//! group commit, and an account operation must never wait behind it.
//!
//! Names are unique case-insensitively, like chat usernames, and follow the
//! same rules; `guest-...` names are left to guests. An account made by
//! `chorus token` for a bot has no password: it signs in with tokens only.
//!
//! Every method here blocks (SQLite, argon2): the server calls them from
//! `spawn_blocking`, and keeps the names it needs on the hot path in memory
//! (see `auth`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::Context as _;
use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rusqlite::{Connection, OptionalExtension, params};

use crate::ids::now_ts;
use crate::names;
use crate::sync::lock;

/// The accounts database, in the data directory.
pub const DB_FILE: &str = "accounts.db";
/// Where accounts were kept before they had a file of their own: a table of
/// the history database, copied into `DB_FILE` when that does not exist yet.
const OLD_DB_FILE: &str = "chorus.db";
/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, in bytes (hashing cost stays bounded).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The prefix of the names the server gives guests.
pub const GUEST_PREFIX: &str = "guest-";

/// Why an account operation failed; each maps to one API error.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    WeakPassword(String),
    #[error("the name {0:?} is taken; pick another")]
    NameTaken(String),
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("account store: {0:#}")]
    Store(#[from] anyhow::Error),
}

impl From<rusqlite::Error> for AccountError {
    fn from(err: rusqlite::Error) -> Self {
        AccountError::Store(err.into())
    }
}

/// The account store.
#[derive(Debug)]
pub struct Accounts {
    path: PathBuf,
    /// One connection; every statement is short (no lock is held across an await).
    db: Mutex<Connection>,
}

/// Check a name for registration: a valid username (see `names`), not one
/// that looks like a guest's; the name in its normalized form.
pub fn check_account_name(name: &str) -> Result<String, AccountError> {
    let name = names::username(name).map_err(AccountError::InvalidName)?;
    if names::key(&name).starts_with(&names::key(GUEST_PREFIX)) {
        return Err(AccountError::InvalidName(format!("names starting with {GUEST_PREFIX:?} are for guests")));
    }
    Ok(name)
}

/// The key an account is looked up by: its normalized name, lowercased.
fn lookup_key(name: &str) -> String {
    names::username(name).unwrap_or_else(|_| name.to_string()).to_lowercase()
}

fn check_password(password: &str) -> Result<(), AccountError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(AccountError::WeakPassword(format!(
            "the password is {chars} characters; use at least {MIN_PASSWORD_CHARS}"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AccountError::WeakPassword(format!("the password is longer than {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

/// An argon2id hash (PHC string) of `password`, with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| AccountError::Store(anyhow::anyhow!("hashing the password failed: {err}")))
}

fn password_matches(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A hash to check wrong user names against, so that an unknown name takes as
/// long to refuse as a wrong password (no user enumeration by timing).
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password, never matches").unwrap_or_default())
}

impl Accounts {
    /// Open (creating if needed) the store in `data_dir`. Accounts kept by
    /// an older version in the history database are copied over once.
    pub fn open(data_dir: &Path) -> anyhow::Result<Accounts> {
        super::tokens::create_private_dir(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let fresh = !path.exists();
        let db = Connection::open(&path).with_context(|| format!("cannot open the database {}", path.display()))?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS accounts (
                id INTEGER PRIMARY KEY,
                username TEXT NOT NULL,
                username_key TEXT NOT NULL UNIQUE,
                password_hash TEXT,
                created_at TEXT NOT NULL
            );",
        )
        .with_context(|| format!("cannot create the accounts table in {}", path.display()))?;
        let old = data_dir.join(OLD_DB_FILE);
        if fresh && old.exists() {
            copy_old_accounts(&db, &old)
                .with_context(|| format!("cannot copy the accounts of {} into {}", old.display(), path.display()))?;
        }
        Ok(Accounts { path, db: Mutex::new(db) })
    }

    /// Every account's name as registered (loaded by the server at start).
    pub fn names(&self) -> Result<Vec<String>, AccountError> {
        let db = lock(&self.db);
        let mut statement = db.prepare("SELECT username FROM accounts")?;
        let names = statement.query_map([], |row| row.get(0))?;
        Ok(names.collect::<rusqlite::Result<Vec<String>>>()?)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Check the name and password and hash the password; the slow part of
    /// registering, done before `insert` and outside any lock. Returns the
    /// name in its normalized form and the hash.
    pub fn prepare(name: &str, password: &str) -> Result<(String, String), AccountError> {
        let name = check_account_name(name)?;
        check_password(password)?;
        Ok((name, hash_password(password)?))
    }

    /// Add an account (`hash` None: token-only) under its normalized name,
    /// which it returns.
    pub fn insert(&self, name: &str, hash: Option<&str>) -> Result<String, AccountError> {
        let name = check_account_name(name)?;
        let db = lock(&self.db);
        let inserted = db.execute(
            "INSERT INTO accounts (username, username_key, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (username_key) DO NOTHING",
            params![name, name.to_lowercase(), hash, now_ts()],
        )?;
        if inserted == 0 {
            return Err(AccountError::NameTaken(name));
        }
        Ok(name)
    }

    /// Remove an account.
    pub fn remove(&self, name: &str) -> Result<(), AccountError> {
        lock(&self.db).execute("DELETE FROM accounts WHERE username_key = ?1", params![lookup_key(name)])?;
        Ok(())
    }

    /// The account's name as registered, if `name` (any case, any
    /// normalization) is one.
    pub fn lookup(&self, name: &str) -> Result<Option<String>, AccountError> {
        let db = lock(&self.db);
        let mut statement = db.prepare_cached("SELECT username FROM accounts WHERE username_key = ?1")?;
        Ok(statement.query_row(params![lookup_key(name)], |row| row.get(0)).optional()?)
    }

    /// Check a password; the account's name as registered on success.
    pub fn login(&self, name: &str, password: &str) -> Result<String, AccountError> {
        let row: Option<(String, Option<String>)> = {
            let db = lock(&self.db);
            let mut statement =
                db.prepare_cached("SELECT username, password_hash FROM accounts WHERE username_key = ?1")?;
            statement.query_row(params![lookup_key(name)], |row| Ok((row.get(0)?, row.get(1)?))).optional()?
        };
        match row {
            Some((username, Some(hash))) if password_matches(password, &hash) => Ok(username),
            Some((_, Some(_))) => Err(AccountError::InvalidCredentials),
            // Unknown name, or a token-only account: spend the same time.
            _ => {
                let _ = password_matches(password, decoy_hash());
                Err(AccountError::InvalidCredentials)
            }
        }
    }
}

/// Copy the `accounts` table of an older version's history database, if it
/// has one, into the new accounts database.
fn copy_old_accounts(db: &Connection, old: &Path) -> rusqlite::Result<()> {
    db.execute("ATTACH DATABASE ?1 AS old", params![old.to_string_lossy()])?;
    let has_table: bool = db.query_row(
        "SELECT EXISTS (SELECT 1 FROM old.sqlite_master WHERE type = 'table' AND name = 'accounts')",
        [],
        |row| row.get(0),
    )?;
    let copied = if has_table {
        db.execute(
            "INSERT OR IGNORE INTO main.accounts (username, username_key, password_hash, created_at)
             SELECT username, username_key, password_hash, created_at FROM old.accounts",
            [],
        )?
    } else {
        0
    };
    db.execute("DETACH DATABASE old", [])?;
    if copied > 0 {
        tracing::info!("copied {copied} account(s) from {} into their own database", old.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_login_and_the_errors() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = Accounts::open(dir.path()).unwrap();
        let (_, hash) = Accounts::prepare("Alice", "correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        accounts.insert("Alice", Some(&hash)).unwrap();
        assert!(matches!(accounts.insert("alice", Some(&hash)), Err(AccountError::NameTaken(_))));
        assert_eq!(accounts.login("ALICE", "correct horse").unwrap(), "Alice");
        assert!(matches!(accounts.login("alice", "wrong horse"), Err(AccountError::InvalidCredentials)));
        assert!(matches!(accounts.login("nobody", "whatever1"), Err(AccountError::InvalidCredentials)));
        assert!(matches!(Accounts::prepare("bob", "short"), Err(AccountError::WeakPassword(_))));
        assert!(matches!(Accounts::prepare("two words", "long enough"), Err(AccountError::InvalidName(_))));
        assert!(matches!(Accounts::prepare("Guest-1234", "long enough"), Err(AccountError::InvalidName(_))));
        assert_eq!(accounts.lookup("aLiCe").unwrap().as_deref(), Some("Alice"));
        assert_eq!(accounts.names().unwrap(), ["Alice"]);
    }

    #[test]
    fn token_only_accounts_cannot_log_in_and_the_store_persists() {
        let dir = tempfile::tempdir().unwrap();
        Accounts::open(dir.path()).unwrap().insert("bot-1", None).unwrap();
        let reopened = Accounts::open(dir.path()).unwrap();
        assert_eq!(reopened.lookup("BOT-1").unwrap().as_deref(), Some("bot-1"));
        assert!(matches!(reopened.login("bot-1", "anything at all"), Err(AccountError::InvalidCredentials)));
        let mode: String = lock(&reopened.db).query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn accounts_of_an_older_version_are_copied_once() {
        let dir = tempfile::tempdir().unwrap();
        let old = Connection::open(dir.path().join(OLD_DB_FILE)).unwrap();
        old.execute_batch(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, username TEXT NOT NULL, username_key TEXT NOT NULL \
             UNIQUE, password_hash TEXT, created_at TEXT NOT NULL);
             INSERT INTO accounts (username, username_key, password_hash, created_at)
             VALUES ('Carol', 'carol', NULL, '2026-01-01T00:00:00Z');",
        )
        .unwrap();
        drop(old);
        let accounts = Accounts::open(dir.path()).unwrap();
        assert_eq!(accounts.names().unwrap(), ["Carol"]);
        accounts.remove("carol").unwrap();
        assert!(Accounts::open(dir.path()).unwrap().names().unwrap().is_empty(), "copied only when new");
    }
}
