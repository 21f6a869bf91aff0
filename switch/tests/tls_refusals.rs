//! TLS refusals on both sides of the switch, each counted with a bounded
//! `reason`: upstream clients with no certificate, an expired one or one
//! from another CA; banks presenting another bank's certificate or one from
//! a CA that is not pinned. A refused bank link never comes up and its bank
//! never sees a request.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use fps_codecs::model::ResponseCode;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use support::*;

const REFUSED: &str = "fps_switch_upstream_connections_refused_total";
const BANK_TLS_REFUSED: &str = "fps_switch_bank_tls_refused_total";
const CONNECTS: &str = "fps_switch_bank_connects_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_clients_without_a_valid_certificate_are_refused_and_counted() {
    let pki = TestPki::new();
    let sw = Running::start(&config_toml(&pki.main, &[], "")).await;
    for (identity, reason) in [
        (None, "no_client_cert"),
        (Some("expired"), "expired"),
        (Some("foreign"), "unknown_ca"),
    ] {
        let before = refusals(sw.admin).await;
        // With TLS 1.3 the client may finish its side of the handshake
        // before the switch's alert arrives: then the first read fails.
        match Gateway::connect_tls(sw.upstream, &pki.main, identity).await {
            Err(_) => {}
            Ok(mut gw) => {
                let _ = gw.send_raw(b"\x00\x04abcd").await;
                assert!(gw.recv().await.is_none(), "{identity:?} got an answer");
            }
        }
        let after = wait_for(sw.admin, |m| {
            sum(m, REFUSED, &[("reason", reason)]) > sum(&before, REFUSED, &[("reason", reason)])
        })
        .await;
        // Exactly one refusal, under this reason and no other.
        assert_eq!(
            sum(&after, REFUSED, &[]) - sum(&before, REFUSED, &[]),
            1.0,
            "{identity:?}"
        );
        assert_eq!(
            sum(&after, REFUSED, &[("reason", reason)])
                - sum(&before, REFUSED, &[("reason", reason)]),
            1.0,
            "{identity:?} counted as {reason}"
        );
    }
    // A gateway with a good certificate still gets through.
    let mut gw = Gateway::connect_tls(sw.upstream, &pki.main, Some("gateway"))
        .await
        .unwrap();
    let answer = gw.request(&credit_transfer(1, "999")).await;
    assert_eq!(answer.response_code, Some(ResponseCode::UNKNOWN_ACCOUNT));
    assert!(sw.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banks_presenting_the_wrong_certificate_never_get_a_link() {
    let pki = TestPki::new();
    let behaviour = Behaviour::Approve { max_delay_ms: 0 };
    let good = BankPeer::start(&pki.main, "iso8583:canonical", behaviour).await;
    let other_bank = BankPeer::start(&pki.other_bank, "iso8583:canonical", behaviour).await;
    let unpinned = BankPeer::start(&pki.unpinned, "iso8583:canonical", behaviour).await;
    let spec = |code, name, peer: &BankPeer| BankSpec {
        code,
        name,
        codec: "iso8583:canonical",
        addr: peer.addr,
        request_timeout_ms: 2_000,
    };
    let sw = Running::start(&config_toml(
        &pki.main,
        &[
            spec("003", "good", &good),
            spec("004", "wrongname", &other_bank),
            spec("012", "unpinned", &unpinned),
        ],
        "",
    ))
    .await;

    // Every bank's link is tried (the good one comes up) and the two bad
    // certificates are refused, each under its own reason.
    let server_name = ("server_name", "bank.test");
    let metrics = wait_for(sw.admin, |m| {
        sum(
            m,
            BANK_TLS_REFUSED,
            &[server_name, ("reason", "wrong_name")],
        ) >= 1.0
            && sum(
                m,
                BANK_TLS_REFUSED,
                &[server_name, ("reason", "unknown_ca")],
            ) >= 1.0
            && sum(
                m,
                CONNECTS,
                &[("bank", "wrongname"), ("result", "connect_failed")],
            ) >= 1.0
            && sum(
                m,
                CONNECTS,
                &[("bank", "unpinned"), ("result", "connect_failed")],
            ) >= 1.0
    })
    .await;
    wait_links(sw.admin, "\"up\": 1").await;
    // Only these two reasons: nothing else was refused.
    assert_eq!(
        sum(&metrics, BANK_TLS_REFUSED, &[]),
        sum(&metrics, BANK_TLS_REFUSED, &[("reason", "wrong_name")])
            + sum(&metrics, BANK_TLS_REFUSED, &[("reason", "unknown_ca")]),
        "{metrics}"
    );
    assert_eq!(
        sum(
            &metrics,
            CONNECTS,
            &[("bank", "good"), ("result", "connect_failed")]
        ),
        0.0
    );

    let links: serde_json::Value =
        serde_json::from_str(&http_get(sw.admin, "/links").await.1).unwrap();
    let up = |bank: &str| {
        links
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["bank"] == bank)
            .unwrap_or_else(|| panic!("{bank} in /links: {links}"))["up"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(up("good"), 1);
    assert_eq!(up("wrongname"), 0);
    assert_eq!(up("unpinned"), 0);
    assert_eq!(http_get(sw.admin, "/readyz").await.0, 503);

    let mut gw = Gateway::connect_tls(sw.upstream, &pki.main, Some("gateway"))
        .await
        .unwrap();
    for (stan, code, want) in [
        (1, "003", ResponseCode::APPROVED),
        (2, "004", ResponseCode::BANK_UNAVAILABLE),
        (3, "012", ResponseCode::BANK_UNAVAILABLE),
    ] {
        let answer = gw.request(&credit_transfer(stan, code)).await;
        assert_eq!(answer.response_code, Some(want), "bank {code}");
    }
    assert_eq!(good.financial_requests.load(Ordering::Relaxed), 1);
    assert_eq!(other_bank.financial_requests.load(Ordering::Relaxed), 0);
    assert_eq!(unpinned.financial_requests.load(Ordering::Relaxed), 0);
    assert!(sw.stop().await);
}

// ------------------------------------------------------------ PKI

/// Certificates for these tests, in three directories laid out as
/// [`Pki`] expects (`ca.crt`, `<name>.crt`, `<name>.key`):
/// - `main`: the test CA, the switch, a gateway, the switch's client
///   certificate, a bank, plus an `expired` gateway certificate and a
///   `foreign` one from another CA;
/// - `other_bank`: a bank serving a valid certificate of the same CA, but
///   for `otherbank.test` (the switch expects `bank.test`);
/// - `unpinned`: a bank serving a `bank.test` certificate from a CA the
///   switch does not pin.
///
/// Each bank directory's `ca.crt` is the test CA, so the banks accept the
/// switch's client certificate: only the switch's own checks refuse.
struct TestPki {
    main: Pki,
    other_bank: Pki,
    unpinned: Pki,
}

impl TestPki {
    fn new() -> TestPki {
        let (foreign, _) = new_ca("foreign ca");
        let (ca, ca_pem) = new_ca("fps test ca");
        let main = Pki::new();
        // Replace what Pki::new wrote with certificates of our own CA (its
        // CA key is not kept, so it cannot sign the extra ones).
        write(&main.dir, "ca.crt", &ca_pem);
        for (name, cn, server, issuer, expired) in [
            ("switch", "switch.test", true, &ca, false),
            ("gateway", "gateway.test", false, &ca, false),
            ("switch-client", "switch.test", false, &ca, false),
            ("bank", "bank.test", true, &ca, false),
            ("expired", "gateway.test", false, &ca, true),
            ("foreign", "gateway.test", false, &foreign, false),
        ] {
            leaf(&main.dir, name, cn, server, issuer, expired);
        }
        let other_bank = bank_dir(&ca_pem, "otherbank.test", &ca);
        let unpinned = bank_dir(&ca_pem, "bank.test", &foreign);
        TestPki {
            main,
            other_bank,
            unpinned,
        }
    }
}

/// A fresh directory whose `bank.crt` is for `cn`, signed by `issuer`.
fn bank_dir(ca_pem: &str, cn: &str, issuer: &Issuer<'static, KeyPair>) -> Pki {
    let pki = Pki::new();
    write(&pki.dir, "ca.crt", ca_pem);
    leaf(&pki.dir, "bank", cn, true, issuer, false);
    pki
}

fn new_ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).unwrap();
    (Issuer::new(p, key), cert.pem())
}

/// Write `<name>.crt` and `<name>.key`: a leaf for `cn` (and 127.0.0.1),
/// for servers or clients, valid now or expired since 2021.
fn leaf(
    dir: &Path,
    name: &str,
    cn: &str,
    server: bool,
    issuer: &Issuer<'static, KeyPair>,
    expired: bool,
) -> PathBuf {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![cn.to_owned()]).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = p.signed_by(&key, issuer).unwrap();
    write(dir, &format!("{name}.key"), &key.serialize_pem());
    write(dir, &format!("{name}.crt"), &cert.pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

// ------------------------------------------------------------ metrics

async fn refusals(admin: SocketAddr) -> String {
    http_get(admin, "/metrics").await.1
}

/// Poll `/metrics` until `done` holds (at most 10 s); the last text.
async fn wait_for(admin: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    for _ in 0..400 {
        text = http_get(admin, "/metrics").await.1;
        if done(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("metrics never got there:\n{text}");
}

fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    support::metric_sum(text, name, labels)
}
