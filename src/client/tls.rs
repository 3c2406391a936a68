//! TLS for the clients (rustls, ring provider): how a `wss://` connection
//! decides whom to trust. The stream itself is tokio-tungstenite's
//! `MaybeTlsStream`, set up through `Connector::Rustls` with this config.
//!
//! By default the system's CA certificates are trusted. `--ca FILE` trusts
//! the certificates in FILE instead (a private CA, or a server's self-signed
//! certificate); `--insecure` trusts any certificate (testing only: anyone on
//! the path can read and change the traffic). Client configurations are built
//! once per setting and shared, so a load test opening thousands of wss
//! connections reads the CA files once.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Whom a `wss://` connection trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsOptions {
    /// Trust the certificates in this PEM file instead of the system's.
    pub ca: Option<PathBuf>,
    /// Trust any certificate (testing only).
    pub insecure: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls configuration for `options`, built once and shared.
pub fn client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, String> {
    static CONFIGS: OnceLock<Mutex<HashMap<TlsOptions, Arc<ClientConfig>>>> = OnceLock::new();
    let configs = CONFIGS.get_or_init(Default::default);
    if let Some(config) = crate::sync::lock(configs).get(options) {
        return Ok(config.clone());
    }
    let config = Arc::new(build_config(options)?);
    crate::sync::lock(configs).insert(options.clone(), config.clone());
    Ok(config)
}

fn build_config(options: &TlsOptions) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("configuring TLS: {err}"))?;
    let mut config = if options.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
            .with_no_client_auth()
    } else {
        builder.with_root_certificates(root_store(options.ca.as_ref())?).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The CA file's certificates, or the system's.
fn root_store(ca: Option<&PathBuf>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<_, _>>())
                .map_err(|err| format!("cannot read CA certificates from {}: {err}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{} holds no PEM certificate", path.display()));
            }
            for cert in certs {
                roots.add(cert).map_err(|err| format!("{}: unusable certificate: {err}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err("no system CA certificates found; install ca-certificates or pass --ca FILE".into());
            }
        }
    }
    Ok(roots)
}

/// A TLS failure, with what to do about it; `None` if `err` is not one.
pub fn explain(err: &io::Error) -> Option<String> {
    let rustls_error = err.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())?;
    Some(match rustls_error {
        rustls::Error::InvalidCertificate(why) => format!(
            "the server's certificate is not trusted ({why:?}); pass --ca FILE with the server's certificate \
             or its CA (a self-signed chorus server logs where its certificate is), or --insecure to skip \
             verification (testing only)"
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the server does not speak TLS on this port; use ws:// instead of wss:// for a plain server".to_string()
        }
        other => format!("TLS handshake failed: {other}"),
    })
}

/// Trusts every certificate; signatures are still checked so the handshake is sound.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
