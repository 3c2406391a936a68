//! Signed access tokens: standard JWTs (RFC 7519) signed with HMAC-SHA256
//! (`HS256`), carrying the account name (`sub`), when they were issued (`iat`)
//! and when they expire (`exp`), issued by `chorus` (`iss`). Signing and
//! checking are the `jsonwebtoken` crate's.
//!
//! Only `HS256` is accepted on the way in: a token whose header names another
//! algorithm (`none` included) is refused. `exp` and `iss` are required and
//! checked, with `LEEWAY` seconds of clock skew allowed on `exp`.
//!
//! The secret comes from `--auth-secret` / `CHORUS_AUTH_SECRET`; otherwise
//! it is generated once and kept in `<data dir>/auth-secret` (mode 0600), so
//! tokens survive restarts and `chorus token` mints tokens the server accepts.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

/// The file, in the data directory, that holds a generated secret.
pub const SECRET_FILE: &str = "auth-secret";
/// A secret given on the command line must be at least this long.
pub const MIN_SECRET_LEN: usize = 32;
/// Who issues the tokens (the `iss` claim).
const ISSUER: &str = "chorus";
/// Seconds of clock difference allowed when checking `exp`.
pub const LEEWAY: u64 = 5;

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
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
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
    /// Keys for `secret`; fails only on an empty secret (`load_secret`
    /// never gives one).
    pub fn new(secret: &[u8]) -> anyhow::Result<Self> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY;
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let encoding = EncodingKey::from_secret(secret).context("the auth secret is empty")?;
        let decoding = DecodingKey::from_secret(secret).context("the auth secret is empty")?;
        Ok(TokenKeys { encoding, decoding, validation })
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
        // HS256 over serializable claims cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).unwrap_or_default()
    }

    /// Check a token's algorithm, signature, issuer and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        match jsonwebtoken::decode::<Claims>(token.trim(), &self.decoding, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(err) => Err(match err.kind() {
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::WrongAlgorithm,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                _ => TokenError::Malformed,
            }),
        }
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
    use base64::Engine as _;

    fn keys() -> TokenKeys {
        TokenKeys::new(b"0123456789abcdef0123456789abcdef").unwrap()
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
        let other = TokenKeys::new(b"another secret, just as long as the first").unwrap();
        assert_eq!(other.verify(&token), Err(TokenError::BadSignature));
        let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        let parts: Vec<&str> = token.split('.').collect();
        let evil = b64(r#"{"sub":"admin","iat":0,"exp":99999999999,"iss":"chorus"}"#);
        assert_eq!(keys().verify(&format!("{}.{evil}.{}", parts[0], parts[2])), Err(TokenError::BadSignature));
        // alg "none" is not even an algorithm jsonwebtoken knows; HS512 is one
        // this server does not accept.
        let none = b64(r#"{"alg":"none","typ":"JWT"}"#);
        assert!(keys().verify(&format!("{none}.{evil}.")).is_err());
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &Claims::new("alice", unix_now(), unix_now() + 60),
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef").unwrap(),
        )
        .unwrap();
        assert_eq!(keys().verify(&hs512), Err(TokenError::WrongAlgorithm));
        assert_eq!(keys().verify("not a token"), Err(TokenError::Malformed));
        assert_eq!(keys().verify("a.b.c.d"), Err(TokenError::Malformed));
        // An expired token, signed correctly; within the leeway it still passes.
        let expired = keys().sign(&Claims::new("alice", 1, 2));
        assert_eq!(keys().verify(&expired), Err(TokenError::Expired));
        let now = unix_now();
        assert!(keys().verify(&keys().sign(&Claims::new("alice", now - 60, now - 2))).is_ok(), "within the leeway");
        let other_issuer = Claims { iss: "someone-else".into(), ..Claims::new("alice", now, now + 60) };
        assert_eq!(keys().verify(&keys().sign(&other_issuer)), Err(TokenError::WrongIssuer));
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
