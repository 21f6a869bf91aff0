//! What tests of inbound bank links share (`inbound.rs`,
//! `inbound_dialects.rs`): bank client certificates, a config with a
//! `[bank_inbound]` listener, and a switch started with it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fps_codecs::model::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::{credit_transfer, http_get, Pki};

// ---------------------------------------------------------------- PKI

/// Bank client certificates under their own CA (`inbound-ca.crt`), written
/// next to the support PKI's files so `Pki::client` can present them.
/// `stems`: (file stem, CN and DNS SAN).
pub fn bank_client_certs(pki: &Pki, stems: &[(&str, &str)]) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "fps test bank client ca");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = p.self_signed(&key).unwrap();
    std::fs::write(pki.path("inbound-ca.crt"), ca.pem()).unwrap();
    let issuer = Issuer::new(p, key);
    for (stem, name) in stems {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![(*name).to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, *name);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &issuer).unwrap();
        std::fs::write(pki.path(&format!("{stem}.crt")), cert.pem()).unwrap();
        std::fs::write(pki.path(&format!("{stem}.key")), key.serialize_pem()).unwrap();
    }
}

// ---------------------------------------------------------------- config

/// One bank in an inbound test config. Its outbound links use the
/// default framing (2-byte binary length), as `BankPeer` does.
pub struct Bank<'a> {
    pub code: &'a str,
    pub name: &'a str,
    /// As in config: `iso8583:<dialect>`, `iso20022`, `json`.
    pub codec: &'a str,
    pub addr: SocketAddr,
    /// The `inbound = { ... }` table, or empty for none.
    pub inbound: &'a str,
    /// The `auth = { ... }` table, or empty for none.
    pub auth: &'a str,
}

impl<'a> Bank<'a> {
    /// A bank the switch only links out to: no `inbound`, no `auth`.
    pub fn outbound(code: &'a str, name: &'a str, codec: &'a str, addr: SocketAddr) -> Self {
        Bank {
            code,
            name,
            codec,
            addr,
            inbound: "",
            auth: "",
        }
    }
}

/// A PKCS#11 token for the `[hsm]` section.
#[derive(Debug, Clone)]
pub struct Token {
    pub module: PathBuf,
    pub label: String,
}

/// A config with a plaintext upstream, the `[bank_inbound]` listener
/// trusting `inbound-ca.crt` (see [`bank_client_certs`]), and `banks`.
pub fn config(pki: &Pki, banks: &[Bank<'_>], hsm: Option<&Token>) -> String {
    let p = |n: &str| pki.path(n).display().to_string();
    let mut s = format!(
        r#"
[log]
filter = "warn"

[switch]
participant_code = "950"

[upstream]
bind = "127.0.0.1:0"
tls = false

[admin]
bind = "127.0.0.1:0"

# Many small switches: no resident idempotency table up front.
[idempotency]
pretouch = false

[shutdown]
drain_timeout_ms = 2000

[bank_inbound]
bind = "127.0.0.1:0"
cert = "{}"
key = "{}"
client_ca = "{}"
handshake_timeout_ms = 2000
max_in_flight_per_connection = 64
"#,
        p("switch.crt"),
        p("switch.key"),
        p("inbound-ca.crt"),
    );
    if let Some(t) = hsm {
        s += &format!(
            r#"
[hsm]
backend = "pkcs11"
module_path = "{}"
token_label = "{}"
pin_env = "FPS_HSM_PIN"
"#,
            t.module.display(),
            t.label
        );
    }
    for b in banks {
        s += &format!(
            r#"
[[banks]]
code = "{}"
name = "{}"
codec = "{}"
endpoints = ["{}"]
request_timeout_ms = 3000
connect_timeout_ms = 2000
pool = {{ min = 1, max = 1 }}
{}
{}
[banks.tls]
cert = "{}"
key = "{}"
ca = "{}"
server_name = "bank.test"
"#,
            b.code,
            b.name,
            b.codec,
            b.addr,
            if b.inbound.is_empty() {
                String::new()
            } else {
                format!("inbound = {}", b.inbound)
            },
            if b.auth.is_empty() {
                String::new()
            } else {
                format!("auth = {}", b.auth)
            },
            p("switch-client.crt"),
            p("switch-client.key"),
            p("ca.crt"),
        );
    }
    s
}

// ---------------------------------------------------------------- switch

/// A switch running in this test, with its inbound listener's address.
pub struct Started {
    pub admin: SocketAddr,
    pub inbound: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<bool>>,
}

impl Started {
    /// Shut down and return whether it drained.
    pub async fn stop(mut self) -> bool {
        let _ = self.stop.take().unwrap().send(());
        self.done.take().unwrap().await.unwrap()
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Build and run a switch; returns once every bank pool has a link up
/// (or after 5 s, for tests where one never comes up).
pub async fn start(toml: &str) -> Started {
    let cfg = fps_switch::Config::from_toml_str(toml).expect("test config parses");
    cfg.validate().expect("test config is valid");
    let switch = fps_switch::Switch::build(&cfg)
        .await
        .expect("switch builds");
    let admin = switch.admin_addr();
    let inbound = switch.bank_inbound_addr().expect("[bank_inbound] is bound");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(switch.run(async {
        let _ = stopped.await;
    }));
    for _ in 0..200 {
        if http_get(admin, "/readyz").await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Started {
        admin,
        inbound,
        stop: Some(stop),
        done: Some(done),
    }
}

/// The admin server's `/metrics` text.
pub async fn metrics(admin: SocketAddr) -> String {
    http_get(admin, "/metrics").await.1
}

/// The response code of `t` (`none` without one).
pub fn code(t: &Transaction) -> &str {
    t.response_code.as_ref().map_or("none", |c| c.as_str())
}

/// A canonical 0200 from bank `from` (F32 its code) to bank `to`.
pub fn bank_payment(stan: u32, from: &str, to: &str) -> Transaction {
    let mut t = credit_transfer(stan, to);
    t.acquirer = Some(InstitutionId::parse(from.as_bytes()).unwrap());
    t.terminal_id = Some(TerminalId::parse(format!("BANK0{from}").as_bytes()).unwrap());
    t
}
