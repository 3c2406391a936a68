//! Signed access tokens: standard JWTs (RFC 7519) signed with HMAC-SHA256
//! (`HS256`), carrying the account name (`sub`), when they were issued (`iat`)
//! and when they expire (`exp`).
//!
//! Only `HS256` is accepted on the way in: a token whose header names another
//! algorithm (`none` included) is refused before anything else is looked at.
//! The signature is checked in constant time (`ring::hmac::verify`).
//!
//! The secret comes from `--auth-secret` / `CHORUS_AUTH_SECRET`; otherwise
//! it is generated once and kept in `<data dir>/auth-secret` (mode 0600), so
//! tokens survive restarts and `chorus token` mints tokens the server accepts.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rand::Rng as _;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// The file, in the data directory, that holds a generated secret.
pub const SECRET_FILE: &str = "auth-secret";
/// A secret given on the command line must be at least this long.
pub const MIN_SECRET_LEN: usize = 32;
/// Who issues the tokens (the `iss` claim).
const ISSUER: &str = "chorus";
/// The only header this server emits and accepts.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The account name.
    pub sub: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
    pub iss: String,
}

impl Claims {
    /// Claims for `user`, issued and expiring at these Unix seconds.
    pub fn new(user: &str, iat: u64, exp: u64) -> Claims {
        Claims { sub: user.to_string(), iat, exp, iss: ISSUER.into() }
    }

    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.exp)
    }
}

/// Why a token was refused. The wording is for the 401 response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a JWT (three base64url parts separated by dots)")]
    Malformed,
    #[error("the token is not signed with HS256; this server issues and accepts HS256 only")]
    WrongAlgorithm,
    #[error("the token's signature does not match: it was not issued by this server (or the secret changed)")]
    BadSignature,
    #[error("the token expired; log in again (POST /api/login) or mint a new one (chorus token)")]
    Expired,
    #[error("the token was issued for another server")]
    WrongIssuer,
}

/// Signs and checks tokens with one secret.
pub struct TokenKeys {
    key: hmac::Key,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(<secret>)")
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl TokenKeys {
    pub fn new(secret: &[u8]) -> Self {
        TokenKeys { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// A token for `user`, valid for `ttl` from now.
    pub fn mint(&self, user: &str, ttl: Duration) -> (String, Claims) {
        let iat = unix_now();
        let claims = Claims::new(user, iat, iat.saturating_add(ttl.as_secs().max(1)));
        (self.sign(&claims), claims)
    }

    /// The signed token for `claims`, whatever they say (tests use it for
    /// tokens that expire at a chosen second).
    pub fn sign(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let signing_input = format!("{}.{}", B64.encode(HEADER), B64.encode(payload));
        let tag = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(tag.as_ref()))
    }

    /// Check a token's header, signature, issuer and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let token = token.trim();
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        #[derive(Deserialize)]
        struct Header {
            alg: String,
        }
        let header: Header = B64
            .decode(header)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(TokenError::Malformed)?;
        if header.alg != "HS256" {
            return Err(TokenError::WrongAlgorithm);
        }
        let signature = B64.decode(signature).map_err(|_| TokenError::Malformed)?;
        let (signing_input, _) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        hmac::verify(&self.key, signing_input.as_bytes(), &signature).map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = B64
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.iss != ISSUER {
            return Err(TokenError::WrongIssuer);
        }
        if claims.exp <= unix_now() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// The signing secret: the one given, else the one kept in `data_dir`, else a
/// new one written there (0600).
pub fn load_secret(given: Option<&str>, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = given {
        if secret.len() < MIN_SECRET_LEN {
            anyhow::bail!(
                "the auth secret is {} bytes; use at least {MIN_SECRET_LEN} random bytes \
                 (for example: openssl rand -hex 32)",
                secret.len()
            );
        }
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join(SECRET_FILE);
    match fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= MIN_SECRET_LEN => return Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => anyhow::bail!(
            "{} holds a secret shorter than {MIN_SECRET_LEN} bytes; delete it to have a new one generated \
             (every token issued so far stops working)",
            path.display()
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot read the auth secret {}", path.display())),
    }
    generate_secret(&path)
}

fn generate_secret(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let bytes: [u8; 32] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(hex.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write the auth secret to {}", path.display()))?;
            tracing::info!("generated a new auth secret in {}", path.display());
            Ok(hex.into_bytes())
        }
        // Another process generated it first: use theirs.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            Ok(text.trim().as_bytes().to_vec())
        }
        Err(err) => Err(err).with_context(|| format!("cannot create the auth secret {}", path.display())),
    }
}

/// Create `dir` (and its parents) readable by this user only, if missing.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).with_context(|| format!("cannot create the data directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn a_minted_token_verifies_and_names_its_user() {
        let (token, claims) = keys().mint("alice", Duration::from_secs(60));
        assert_eq!(token.split('.').count(), 3);
        let verified = keys().verify(&token).unwrap();
        assert_eq!(verified, claims);
        assert_eq!(verified.sub, "alice");
        assert!(verified.exp >= verified.iat + 60);
    }

    #[test]
    fn forged_tampered_and_expired_tokens_are_refused() {
        let (token, _) = keys().mint("alice", Duration::from_secs(60));
        let other = TokenKeys::new(b"another secret, just as long as the first");
        assert_eq!(other.verify(&token), Err(TokenError::BadSignature));
        let parts: Vec<&str> = token.split('.').collect();
        let evil = B64.encode(r#"{"sub":"admin","iat":0,"exp":99999999999,"iss":"chorus"}"#);
        assert_eq!(keys().verify(&format!("{}.{evil}.{}", parts[0], parts[2])), Err(TokenError::BadSignature));
        let none = B64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(keys().verify(&format!("{none}.{evil}.")), Err(TokenError::WrongAlgorithm));
        assert_eq!(keys().verify("not a token"), Err(TokenError::Malformed));
        assert_eq!(keys().verify("a.b.c.d"), Err(TokenError::Malformed));
        // An expired token, signed correctly.
        let expired = keys().sign(&Claims::new("alice", 1, 2));
        assert_eq!(keys().verify(&expired), Err(TokenError::Expired));
    }

    #[test]
    fn the_secret_is_generated_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested/data");
        let first = load_secret(None, &data).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(load_secret(None, &data).unwrap(), first, "kept across restarts");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(data.join(SECRET_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(load_secret(Some("short"), &data).unwrap_err().to_string().contains("at least 32"));
        assert_eq!(load_secret(Some(&"k".repeat(40)), &data).unwrap(), b"k".repeat(40));
    }
}
