//! The development PKI of the demo and the tests: a dev CA, the switch's
//! server and client certificates, the gateway's client certificate, a
//! server and a client certificate per bank simulator, and an unrelated CA
//! with an "intruder" client certificate for refusal tests.
//!
//! Idempotent: existing files are kept (unless `force`), so a running demo's
//! certificates stay valid. A CA is reloaded from its key and the fixed
//! parameters it was made with (same subject, same key, hence the same
//! authority key identifier), which avoids an X.509 parser dependency.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The bank simulators of configs/dev/switch.toml (link names).
pub const DEFAULT_BANKS: [&str; 5] = ["bank003", "bank004", "bank004-dr", "bank012", "bank024"];

/// Longest bank name accepted (it becomes a file name and a DNS label).
const MAX_BANK_NAME: usize = 63;

/// Subject of the development CA (fixed: a reloaded CA must match it).
const CA_NAME: &str = "fps-switch dev CA";
/// Subject of the CA nobody trusts.
const OTHER_CA_NAME: &str = "fps-switch other (untrusted) CA";

/// What to generate.
#[derive(Debug, Clone)]
pub struct PkiPlan {
    /// Directory for the PEM files (created when missing).
    pub out: PathBuf,
    /// Bank simulator names: `NAME.crt` (server) and `NAME-client.crt`.
    pub banks: Vec<String>,
    /// Regenerate every file even when present.
    pub force: bool,
}

/// What [`generate`] did: file stems written and kept.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PkiOutcome {
    /// Certificates (with their keys) written by this run.
    pub written: Vec<String>,
    /// Certificates already present and kept.
    pub kept: Vec<String>,
}

/// One leaf certificate to issue.
struct Leaf {
    stem: String,
    cn: String,
    dns: Vec<String>,
    ip: bool,
    server: bool,
    other_ca: bool,
}

/// Create (or complete) the development PKI in `plan.out`.
pub fn generate(plan: &PkiPlan) -> anyhow::Result<PkiOutcome> {
    for b in &plan.banks {
        check_bank_name(b)?;
    }
    fs::create_dir_all(&plan.out).with_context(|| format!("creating {}", plan.out.display()))?;
    let mut outcome = PkiOutcome::default();
    let (ca, ca_new) = load_or_make_ca(&plan.out, "ca", CA_NAME, plan.force)?;
    let (other, other_new) = load_or_make_ca(&plan.out, "other-ca", OTHER_CA_NAME, plan.force)?;
    for (stem, new) in [("ca", ca_new), ("other-ca", other_new)] {
        if new {
            outcome.written.push(stem.to_owned());
        } else {
            outcome.kept.push(stem.to_owned());
        }
    }
    for leaf in leaves(&plan.banks) {
        let (issuer, issuer_new) = if leaf.other_ca {
            (&other, other_new)
        } else {
            (&ca, ca_new)
        };
        let crt = plan.out.join(format!("{}.crt", leaf.stem));
        let key = plan.out.join(format!("{}.key", leaf.stem));
        // A new CA invalidates every certificate of the old one.
        if !plan.force && !issuer_new && crt.exists() && key.exists() {
            outcome.kept.push(leaf.stem);
            continue;
        }
        let (cert_pem, key_pem) = issue(issuer, &leaf)?;
        write_key(&key, &key_pem)?;
        fs::write(&crt, cert_pem).with_context(|| format!("writing {}", crt.display()))?;
        outcome.written.push(leaf.stem);
    }
    Ok(outcome)
}

/// Every leaf of the PKI for these banks.
fn leaves(banks: &[String]) -> Vec<Leaf> {
    let mut out = vec![
        Leaf {
            stem: "switch".into(),
            cn: "switch.fps.test".into(),
            dns: vec!["localhost".into(), "switch.fps.test".into()],
            ip: true,
            server: true,
            other_ca: false,
        },
        Leaf {
            stem: "switch-client".into(),
            cn: "switch.fps.test".into(),
            dns: vec!["switch.fps.test".into()],
            ip: false,
            server: false,
            other_ca: false,
        },
        Leaf {
            stem: "gateway".into(),
            cn: "gateway".into(),
            dns: vec!["gateway.fps.test".into()],
            ip: false,
            server: false,
            other_ca: false,
        },
        Leaf {
            // Same CN as the gateway: only the issuer tells them apart.
            stem: "intruder".into(),
            cn: "gateway".into(),
            dns: vec!["gateway.fps.test".into()],
            ip: false,
            server: false,
            other_ca: true,
        },
    ];
    for b in banks {
        let dns = format!("{b}.fps.test");
        out.push(Leaf {
            stem: b.clone(),
            cn: dns.clone(),
            dns: vec![dns.clone()],
            ip: true,
            server: true,
            other_ca: false,
        });
        out.push(Leaf {
            stem: format!("{b}-client"),
            cn: b.clone(),
            dns: vec![dns],
            ip: false,
            server: false,
            other_ca: false,
        });
    }
    out
}

fn check_bank_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_BANK_NAME
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!("--banks: {name:?} is not a bank name (lowercase letters, digits and '-', at most {MAX_BANK_NAME})");
    }
    Ok(())
}

/// The fixed parameters of a CA called `name`.
fn ca_params(name: &str) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.distinguished_name
        .push(DnType::OrganizationName, "fps-switch development");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// Load the CA `stem` from `dir`, or make it. Returns whether it is new.
fn load_or_make_ca(
    dir: &Path,
    stem: &str,
    name: &str,
    force: bool,
) -> anyhow::Result<(Issuer<'static, KeyPair>, bool)> {
    let crt = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    let params = ca_params(name)?;
    if !force && crt.exists() && key_path.exists() {
        let pem = fs::read_to_string(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?;
        let key = KeyPair::from_pem(&pem)
            .with_context(|| format!("{}: not a private key", key_path.display()))?;
        return Ok((Issuer::new(params, key), false));
    }
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_key(&key_path, &key.serialize_pem())?;
    fs::write(&crt, cert.pem()).with_context(|| format!("writing {}", crt.display()))?;
    Ok((Issuer::new(params, key), true))
}

/// Issue `leaf` under `issuer`: (certificate PEM, key PEM).
fn issue(issuer: &Issuer<'static, KeyPair>, leaf: &Leaf) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(leaf.dns.clone())?;
    if leaf.ip {
        p.subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
    p.distinguished_name
        .push(DnType::CommonName, leaf.cn.as_str());
    p.distinguished_name
        .push(DnType::OrganizationName, "fps-switch development");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![if leaf.server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    p.use_authority_key_identifier_extension = true;
    let cert = p.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Write a private key readable by its owner only.
fn write_key(path: &Path, pem: &str) -> anyhow::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // `mode` only applies to new files: tighten an existing one too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    f.write_all(pem.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fps-pki-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn plan(out: &Path, force: bool) -> PkiPlan {
        PkiPlan {
            out: out.to_owned(),
            banks: DEFAULT_BANKS.iter().map(|s| (*s).to_owned()).collect(),
            force,
        }
    }

    #[test]
    fn makes_every_file_then_keeps_them() {
        let dir = tmp("keep");
        let first = generate(&plan(&dir, false)).unwrap();
        assert!(first.kept.is_empty());
        for f in [
            "ca.crt",
            "ca.key",
            "switch.crt",
            "switch.key",
            "switch-client.crt",
            "gateway.key",
            "bank004-dr.crt",
            "bank024-client.key",
            "other-ca.crt",
            "intruder.crt",
        ] {
            assert!(dir.join(f).exists(), "{f}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(dir.join("gateway.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let before = fs::read(dir.join("switch.crt")).unwrap();
        let second = generate(&plan(&dir, false)).unwrap();
        assert!(second.written.is_empty(), "{:?}", second.written);
        assert_eq!(before, fs::read(dir.join("switch.crt")).unwrap());

        // A missing leaf is reissued under the kept CA; --force remakes all.
        fs::remove_file(dir.join("gateway.crt")).unwrap();
        let third = generate(&plan(&dir, false)).unwrap();
        assert_eq!(third.written, vec!["gateway".to_owned()]);
        let forced = generate(&plan(&dir, true)).unwrap();
        assert!(forced.kept.is_empty());
        assert_ne!(before, fs::read(dir.join("switch.crt")).unwrap());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn certificates_chain_to_their_ca() {
        use rustls::server::WebPkiClientVerifier;
        let dir = tmp("chain");
        generate(&plan(&dir, false)).unwrap();
        // A leaf reissued under a reloaded CA still verifies (same subject and key).
        fs::remove_file(dir.join("gateway.crt")).unwrap();
        generate(&plan(&dir, false)).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let roots = std::sync::Arc::new(crate::tls::load_roots(&dir.join("ca.crt")).unwrap());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .unwrap();
        let now = rustls_pki_types::UnixTime::now();
        for (stem, ok) in [
            ("gateway", true),
            ("bank003-client", true),
            ("intruder", false),
        ] {
            let chain = crate::tls::load_certs(&dir.join(format!("{stem}.crt"))).unwrap();
            let r = verifier.verify_client_cert(&chain[0], &[], now);
            assert_eq!(r.is_ok(), ok, "{stem}: {r:?}");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_bank_names_are_refused() {
        let dir = tmp("bad");
        let mut p = plan(&dir, false);
        p.banks = vec!["../etc".into()];
        assert!(generate(&p).unwrap_err().to_string().starts_with("--banks"));
    }
}
