//! TLS material: PEM loading and the rustls configs of the upstream
//! listener (mTLS server, TLS 1.3 only) and of bank links (mTLS client with
//! the bank's CA pinned as the only root), and the bounded reasons a
//! handshake is refused for (metric labels).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::metrics as m;

/// Why TLS material could not be loaded or a TLS config built. Carries file
/// paths and library messages only, never key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file is missing or unreadable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the material.
    #[error("{0}")]
    Rustls(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Read every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    if !path.exists() {
        return Err(file_error(path, "file not found"));
    }
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, format!("not PEM: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "no CERTIFICATE in PEM file"));
    }
    Ok(certs)
}

/// Read the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    if !path.exists() {
        return Err(file_error(path, "file not found"));
    }
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, format!("no private key: {e}")))
}

/// A root store holding exactly the certificates of `ca_path`.
pub fn load_roots(ca_path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca_path)? {
        roots
            .add(cert)
            .map_err(|e| file_error(ca_path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The upstream listener's TLS config: TLS 1.3 only, client certificates
/// required and verified against `client_ca`.
pub fn upstream_server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = load_certs(cert)?;
    let key = load_key(key)?;
    let roots = Arc::new(load_roots(client_ca)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Rustls(format!("client verifier: {e}")))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(format!("server certificate/key: {e}")))?;
    Ok(Arc::new(config))
}

/// A bank link's TLS config: our client certificate, the bank's CA as the
/// only trusted root. TLS 1.2 is allowed because some bank hosts still lag.
pub fn bank_client_config(
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let chain = load_certs(cert)?;
    let key = load_key(key)?;
    let roots = Arc::new(load_roots(ca)?);
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Rustls(format!("server verifier: {e}")))?;
    // `dangerous()` only because rustls calls every custom verifier that:
    // the WebPKI checks are unchanged, the wrapper only counts refusals.
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CountingServerVerifier { inner: verifier }))
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Rustls(format!("client certificate/key: {e}")))?;
    Ok(Arc::new(config))
}

/// Parse an SNI name (DNS name or IP address).
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned())
        .map_err(|_| TlsError::Rustls(format!("{name:?} is not a DNS name or IP address")))
}

/// The bounded `reason` label for a handshake refused with `e`: which check
/// the peer's certificate failed, or `tls_handshake` for anything else.
pub fn refusal_reason(e: &rustls::Error) -> &'static str {
    use CertificateError as C;
    match e {
        rustls::Error::NoCertificatesPresented => "no_client_cert",
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "unknown_ca",
            C::Expired | C::ExpiredContext { .. } => "expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "not_yet_valid",
            C::NotValidForName | C::NotValidForNameContext { .. } => "wrong_name",
            C::Revoked => "revoked",
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => "wrong_purpose",
            _ => "bad_certificate",
        },
        _ => "tls_handshake",
    }
}

/// [`refusal_reason`] of a failed handshake as tokio-rustls reports it (the
/// rustls error inside an `io::Error`); `tls_handshake` when the failure was
/// not TLS's verdict (peer gone, socket error).
pub fn handshake_refusal_reason(e: &std::io::Error) -> &'static str {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map_or("tls_handshake", refusal_reason)
}

/// The WebPKI verifier of a bank link, counting the certificates it refuses
/// (`fps_switch_bank_tls_refused_total`): a bank presenting another bank's
/// certificate or one from an unpinned CA must be visible on a dashboard,
/// not only as a failed connect.
#[derive(Debug)]
struct CountingServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for CountingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| {
                // The server name comes from the bank's config: bounded.
                let name = server_name.to_str().into_owned();
                let reason = refusal_reason(e);
                tracing::warn!(server_name = %name, reason, error = %e, "bank certificate refused");
                metrics::counter!(m::BANK_TLS_REFUSED, "server_name" => name, "reason" => reason)
                    .increment(1);
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reasons_are_bounded_words() {
        let cases = [
            (rustls::Error::NoCertificatesPresented, "no_client_cert"),
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "unknown_ca",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                "expired",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                "wrong_name",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::BadEncoding),
                "bad_certificate",
            ),
            (rustls::Error::HandshakeNotComplete, "tls_handshake"),
        ];
        for (e, want) in cases {
            assert_eq!(refusal_reason(&e), want, "{e}");
            let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
            assert_eq!(handshake_refusal_reason(&io), want);
        }
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(handshake_refusal_reason(&eof), "tls_handshake");
    }
}
