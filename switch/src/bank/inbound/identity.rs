//! Which configured bank a verified client certificate belongs to.
//!
//! The TLS layer has already checked the chain to `client_ca`, validity and
//! the clientAuth purpose; here the certificate must *name* a bank: one of
//! its subjectAltName DNS names or its subject CN equals the bank's
//! `inbound.identity` (ASCII case-insensitive), and/or its SHA-256 equals
//! the bank's `inbound.sha256`. A certificate naming two banks is refused:
//! validation keeps identities unique, but one certificate can carry the
//! SANs of several.

use super::InboundBank;

/// What a client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The subject as RFC 4514 text (what is logged; no other content is).
    pub subject: String,
    /// DNS SANs and subject CNs, lower-cased.
    pub names: Vec<String>,
    /// SHA-256 of the DER certificate.
    pub sha256: [u8; 32],
}

/// Most names taken from one certificate (a bound on work per handshake).
const MAX_NAMES: usize = 32;

impl CertIdentity {
    /// Parse a DER certificate; `None` if it does not parse.
    pub fn of(der: &[u8]) -> Option<CertIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    names.push(d.to_ascii_lowercase());
                }
            }
        }
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
        names.truncate(MAX_NAMES);
        Some(CertIdentity {
            subject: cert.subject().to_string(),
            names,
            sha256: fingerprint_sha256(der),
        })
    }
}

/// SHA-256 of `der` (the rustls crypto provider's hash: no extra crate).
pub fn fingerprint_sha256(der: &[u8]) -> [u8; 32] {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .expect("a TLS 1.3 suite");
    let digest = suite.common.hash_provider.hash(der);
    let mut out = [0u8; 32];
    // The suite's hash is SHA-256: 32 bytes.
    out.copy_from_slice(&digest.as_ref()[..32]);
    out
}

/// Why a verified certificate is not accepted (the metric's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Names no configured bank.
    Unknown,
    /// Names more than one.
    Ambiguous,
    /// Names a bank whose inbound links are disabled.
    Disabled,
}

impl Refusal {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown_identity",
            Refusal::Ambiguous => "ambiguous_identity",
            Refusal::Disabled => "inbound_disabled",
        }
    }
}

/// The index in `banks` of the one bank `id` names.
pub(crate) fn identify(
    banks: &[std::sync::Arc<InboundBank>],
    id: &CertIdentity,
) -> Result<usize, Refusal> {
    let mut found = None;
    for (i, b) in banks.iter().enumerate() {
        if b.identity.is_none() && b.sha256.is_none() {
            continue;
        }
        let name_ok = b
            .identity
            .as_ref()
            .is_none_or(|want| id.names.iter().any(|n| n == want));
        let pin_ok = b.sha256.is_none_or(|pin| pin == id.sha256);
        if name_ok && pin_ok {
            if found.is_some() {
                return Err(Refusal::Ambiguous);
            }
            found = Some(i);
        }
    }
    let i = found.ok_or(Refusal::Unknown)?;
    if banks[i].enabled {
        Ok(i)
    } else {
        Err(Refusal::Disabled)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bank::BankCodec;
    use crate::config::CodecName;

    fn cert(cn: &str, sans: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p =
            rcgen::CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.self_signed(&key).unwrap().der().to_vec()
    }

    fn bank(identity: Option<&str>, sha256: Option<[u8; 32]>, enabled: bool) -> Arc<InboundBank> {
        Arc::new(InboundBank {
            name: "b".into(),
            code: fps_codecs::model::BankCode::parse(b"003").unwrap(),
            enabled,
            identity: identity.map(str::to_owned),
            sha256,
            codec: BankCodec::build(&CodecName::Json, &Default::default()).unwrap(),
            framer: fps_codecs::framing::Framer::new(Default::default()).unwrap(),
            auth: None,
            scope: fps_routing::idempotency::ClientScope::new("b").unwrap(),
            links: Arc::new(tokio::sync::Semaphore::new(1)),
            seq: Default::default(),
            boot_ms: 0,
        })
    }

    #[test]
    fn a_certificate_names_one_bank_by_san_cn_or_pin() {
        let der = cert("Bank003", &["bank003.fps.test", "other.fps.test"]);
        let id = CertIdentity::of(&der).unwrap();
        assert_eq!(id.names, ["bank003.fps.test", "other.fps.test", "bank003"]);
        assert!(id.subject.contains("CN=Bank003"), "{}", id.subject);
        let pin = fingerprint_sha256(&der);
        assert_eq!(id.sha256, pin);

        let by_san = [
            bank(Some("x.test"), None, true),
            bank(Some("bank003.fps.test"), None, true),
        ];
        assert_eq!(identify(&by_san, &id), Ok(1));
        assert_eq!(
            identify(&[bank(Some("bank003"), None, true)], &id),
            Ok(0),
            "by CN"
        );
        assert_eq!(
            identify(&[bank(None, Some(pin), true)], &id),
            Ok(0),
            "by pin"
        );
        assert_eq!(
            identify(&[bank(Some("bank003"), Some([0; 32]), true)], &id),
            Err(Refusal::Unknown),
            "the name matches, the pin does not"
        );
        assert_eq!(
            identify(&[bank(Some("nobody.test"), None, true)], &id),
            Err(Refusal::Unknown)
        );
        assert_eq!(
            identify(&[bank(Some("bank003.fps.test"), None, false)], &id),
            Err(Refusal::Disabled)
        );
        let both = [
            bank(Some("bank003.fps.test"), None, true),
            bank(Some("other.fps.test"), None, true),
        ];
        assert_eq!(identify(&both, &id), Err(Refusal::Ambiguous));
        assert!(CertIdentity::of(b"not a certificate").is_none());
    }
}
