//! TLS configs of the load generator and its peers: PEM loading, a server
//! config (optionally requiring client certificates) and a client config
//! pinning one CA. TLS 1.3 preferred (1.2 allowed), ring provider.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow!("{}: not PEM: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{}: not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{}: no CERTIFICATE in PEM file", path.display()));
    }
    Ok(certs)
}

/// Read the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| anyhow!("{}: no private key: {e}", path.display()))
}

/// A root store holding exactly the certificates of `ca`.
pub fn load_roots(ca: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots
            .add(cert)
            .with_context(|| format!("{}: not a usable CA certificate", ca.display()))?;
    }
    Ok(roots)
}

/// A TLS server config presenting `cert`/`key`. With `client_ca`, client
/// certificates are required and verified against it; without, none are
/// asked for.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = load_certs(cert)?;
    let key = load_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS versions: {e}"))?;
    let builder = match client_ca {
        Some(ca) => {
            let roots = Arc::new(load_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| anyhow!("client verifier: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| anyhow!("server certificate/key: {e}"))?;
    Ok(Arc::new(config))
}

/// A TLS client config trusting exactly the certificates of `ca`, presenting
/// `cert` = (certificate, key) when given.
pub fn client_config(ca: &Path, cert: Option<(&Path, &Path)>) -> anyhow::Result<Arc<ClientConfig>> {
    let roots = Arc::new(load_roots(ca)?);
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| anyhow!("server verifier: {e}"))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS versions: {e}"))?
        .with_webpki_verifier(verifier);
    let config = match cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| anyhow!("client certificate/key: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Parse an SNI name (DNS name or IP address).
pub fn server_name(name: &str) -> anyhow::Result<ServerName<'static>> {
    ServerName::try_from(name.to_owned())
        .map_err(|_| anyhow!("{name:?} is not a DNS name or IP address"))
}
