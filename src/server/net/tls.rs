//! TLS for the server (rustls, ring provider): https and wss on the listening
//! port, from PEM files (`--tls-cert`, `--tls-key`) or from a self-signed
//! certificate for local use (`--tls-self-signed`).
//!
//! A self-signed certificate is generated once (rcgen) into
//! `<data dir>/tls/self-signed.pem` with its key beside it (mode 0600) and
//! reused afterwards, so a client that trusts it with `--ca` keeps working
//! across restarts. Its SHA-256 fingerprint is logged at startup.

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Where the server's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// A certificate chain and its private key, PEM.
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed certificate kept in the data directory.
    SelfSigned,
}

/// The server's TLS, ready to accept.
#[derive(Clone)]
pub struct ServerTls {
    pub acceptor: TlsAcceptor,
    /// The PEM file holding the certificate (what a client passes to `--ca`).
    pub cert_path: PathBuf,
    /// SHA-256 of the leaf certificate, `AB:CD:...`.
    pub fingerprint: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("cert_path", &self.cert_path).field("fingerprint", &self.fingerprint).finish()
    }
}

/// The names a self-signed certificate covers: loopback, and the listening
/// address when it is a specific one.
fn self_signed_names(listen: Option<IpAddr>) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Some(ip) = listen.filter(|ip| !ip.is_unspecified() && !ip.is_loopback()) {
        names.push(ip.to_string());
    }
    names
}

/// Load or create the certificate and build the acceptor.
pub fn load(source: &TlsSource, data_dir: &Path, listen: Option<IpAddr>) -> anyhow::Result<ServerTls> {
    let (cert_path, key_path) = match source {
        TlsSource::Files { cert, key } => (cert.clone(), key.clone()),
        TlsSource::SelfSigned => ensure_self_signed(data_dir, listen)?,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|err| anyhow::anyhow!("cannot read certificates from {}: {err}", cert_path.display()))?;
    let Some(leaf) = certs.first() else {
        bail!("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", cert_path.display());
    };
    let fingerprint = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|err| anyhow::anyhow!("cannot read a private key from {}: {err}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("configuring TLS")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!("the key {} does not fit the certificate {}", key_path.display(), cert_path.display())
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls { acceptor: TlsAcceptor::from(Arc::new(config)), cert_path, fingerprint })
}

/// SHA-256 of a DER certificate as colon-separated hex, as `openssl x509
/// -fingerprint -sha256` prints it.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// The self-signed certificate and key in `data_dir/tls`, created if missing.
fn ensure_self_signed(data_dir: &Path, listen: Option<IpAddr>) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = data_dir.join("tls");
    let cert_path = dir.join("self-signed.pem");
    let key_path = dir.join("self-signed-key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    crate::server::auth::tokens::create_private_dir(&dir)?;
    let names = self_signed_names(listen);
    let generated =
        rcgen::generate_simple_self_signed(names.clone()).context("generating a self-signed certificate")?;
    write_file(&key_path, generated.signing_key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, generated.cert.pem().as_bytes(), 0o644)?;
    tracing::info!("generated a self-signed certificate for {} in {}", names.join(", "), cert_path.display());
    Ok((cert_path, key_path))
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load(&TlsSource::SelfSigned, dir.path(), None).unwrap();
        let again = load(&TlsSource::SelfSigned, dir.path(), None).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint, "the same certificate after a restart");
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key = fs::metadata(dir.path().join("tls/self-signed-key.pem")).unwrap();
            assert_eq!(key.permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "not a certificate").unwrap();
        let source = TlsSource::Files { cert: empty.clone(), key: empty.clone() };
        let err = load(&source, dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let missing = TlsSource::Files { cert: dir.path().join("nope.pem"), key: empty };
        let err = load(&missing, dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("nope.pem"), "{err}");
    }

    #[test]
    fn the_listening_address_is_covered_when_specific() {
        assert_eq!(self_signed_names(Some("0.0.0.0".parse().unwrap())).len(), 3);
        assert!(self_signed_names(Some("192.0.2.7".parse().unwrap())).contains(&"192.0.2.7".to_string()));
    }
}
