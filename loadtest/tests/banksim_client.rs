//! The bank simulator's client mode (`[banks.client]`): the simulated bank
//! opens mTLS links to a switch-side listener (here a small stand-in for
//! the switch's `[bank_inbound]`, over real TLS on 127.0.0.1), signs on,
//! sends its payments in its own dialect and checks each answer; the
//! counts are on `GET /client`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use fps_codecs::framing::{FrameConfig, Framer};
use fps_codecs::iso20022::Iso20022Codec;
use fps_codecs::iso8583::Iso8583Codec;
use fps_codecs::model::*;
use fps_codecs::MessageCodec;
use fps_loadtest::banksim::{BankSim, SimConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A CA, the switch's server certificate and a bank client certificate.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "fps-banksim-client-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "client test ca");
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = p.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
        let issuer = Issuer::new(p, key);
        for (stem, cn, server) in [
            ("switch", "switch.fps.test", true),
            ("bank003-client", "bank003.fps.test", false),
        ] {
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
            let cert = p.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.join(format!("{stem}.crt")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the stand-in switch saw.
#[derive(Debug, Default)]
struct Seen {
    links: usize,
    sign_ons: usize,
    payments: Vec<Transaction>,
}

/// A stand-in for the switch's inbound listener: mTLS (the bank's client
/// certificate required), answers sign-on 00 and each payment 00 (14 when
/// the creditor account ends in 14); the first payment is answered twice
/// (the client must count the second as unmatched).
async fn stand_in_switch(pki: &Pki, codec: &'static str) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(
        fps_loadtest::tls::server_config(
            &PathBuf::from(pki.path("switch.crt")),
            &PathBuf::from(pki.path("switch.key")),
            Some(&PathBuf::from(pki.path("ca.crt"))),
        )
        .unwrap(),
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen) = (acceptor.clone(), seen2.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                seen.lock().unwrap().links += 1;
                let codec: Box<dyn MessageCodec> = match codec {
                    "iso20022" => Box::new(Iso20022Codec::default()),
                    _ => Box::new(Iso8583Codec::builtin("canonical").unwrap()),
                };
                let framer = Framer::new(FrameConfig::default()).unwrap();
                let mut buf = BytesMut::new();
                let mut seq = 0u32;
                loop {
                    let msg = loop {
                        match framer.decode(&mut buf) {
                            Ok(Some(f)) => break f.message,
                            Ok(None) => {}
                            Err(_) => return,
                        }
                        match s.read_buf(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    };
                    let req = codec
                        .decode(&msg)
                        .expect("the simulator sends valid messages");
                    let (answer, twice) = if req.mti.class() == 8 {
                        seen.lock().unwrap().sign_ons += 1;
                        (req.response(ResponseCode::APPROVED), false)
                    } else {
                        let mut s = seen.lock().unwrap();
                        s.payments.push(req.clone());
                        let refused = req
                            .creditor_account
                            .as_ref()
                            .is_some_and(|a| a.expose().ends_with("14"));
                        let code = if refused {
                            ResponseCode::parse(b"14").unwrap()
                        } else {
                            ResponseCode::APPROVED
                        };
                        let mut a = req.response(code);
                        seq += 1;
                        a.message_id = MessageId::parse(format!("SW{seq:010}").as_bytes()).ok();
                        (a, s.payments.len() == 1)
                    };
                    let mut out = BytesMut::new();
                    for _ in 0..if twice { 2 } else { 1 } {
                        let mark = framer.begin(&[], &mut out).unwrap();
                        codec.encode(&answer, &mut out).unwrap();
                        framer.finish(mark, &mut out).unwrap();
                    }
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn sim_config(pki: &Pki, switch: SocketAddr, codec: &str, count: u64) -> String {
    format!(
        r#"
seed = 1
[http]
bind = "127.0.0.1:0"
[[banks]]
name = "bank003"
code = "003"
codec = "{codec}"
listen = "127.0.0.1:0"
tls = false
[banks.client]
switch = "{switch}"
links = 2
count = {count}
max_in_flight = 8
timeout_ms = 5000
tls = {{ cert = "{}", key = "{}", ca = "{}", server_name = "switch.fps.test" }}
targets = [{{ bank = "004" }}, {{ bank = "004", account = "987654321014" }}]
"#,
        pki.path("bank003-client.crt"),
        pki.path("bank003-client.key"),
        pki.path("ca.crt"),
    )
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Run a simulator whose bank003 is a client of `switch` until its
/// payments are settled; the `/client` counts.
async fn run_client(pki: &Pki, switch: SocketAddr, codec: &str, count: u64) -> Value {
    let cfg = SimConfig::from_toml_str(&sim_config(pki, switch, codec, count)).unwrap();
    let sim = BankSim::bind(&cfg).await.unwrap();
    let http = sim.http_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(sim.run(async {
        let _ = stopped.await;
    }));
    let mut counts = Value::Null;
    for _ in 0..400 {
        let (status, body) = http_get(http, "/client").await;
        assert_eq!(status, 200, "{body}");
        counts = serde_json::from_str::<Value>(&body).unwrap()["bank003"].clone();
        if counts["done"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Let a late duplicate arrive before the counts are read for good.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let body = http_get(http, "/client").await.1;
    let _ = counts;
    let counts = serde_json::from_str::<Value>(&body).unwrap()["bank003"].clone();
    let _ = stop.send(());
    done.await.unwrap().unwrap();
    counts
}

#[tokio::test]
async fn iso8583_client_signs_on_sends_its_payments_and_checks_every_answer() {
    let pki = Pki::new();
    let (switch, seen) = stand_in_switch(&pki, "iso8583:canonical").await;
    let c = run_client(&pki, switch, "iso8583:canonical", 40).await;
    assert_eq!(c["done"], true, "{c}");
    assert_eq!(c["sent"], 40, "{c}");
    assert_eq!(c["approved"], 20, "{c}");
    assert_eq!(c["declined"], 20, "{c}");
    assert_eq!(c["errors"], 0, "{c}");
    assert_eq!(c["unmatched"], 1, "the repeated answer: {c}");
    assert_eq!(c["links_opened"], 2, "{c}");
    let s = seen.lock().unwrap();
    assert_eq!(s.sign_ons, 2, "each link signed on");
    assert_eq!(s.payments.len(), 40);
    let p = &s.payments[0];
    assert_eq!(p.mti, Mti::CREDIT_TRANSFER);
    assert_eq!(p.receiving_bank, BankCode::parse(b"004").ok());
    assert_eq!(p.acquirer, InstitutionId::parse(b"003").ok());
    assert!(p.idempotency_key.is_some());
    let keys: std::collections::HashSet<_> = s.payments.iter().map(|p| p.idempotency_key).collect();
    assert_eq!(keys.len(), 40, "every payment has its own key");
}

#[tokio::test]
async fn iso20022_client_matches_answers_by_original_message_id() {
    let pki = Pki::new();
    let (switch, seen) = stand_in_switch(&pki, "iso20022").await;
    let c = run_client(&pki, switch, "iso20022", 10).await;
    assert_eq!(
        (
            c["sent"].as_u64(),
            c["approved"].as_u64(),
            c["declined"].as_u64()
        ),
        (Some(10), Some(5), Some(5)),
        "{c}"
    );
    assert_eq!(c["errors"], 0, "{c}");
    assert_eq!(c["unmatched"], 1, "{c}");
    let s = seen.lock().unwrap();
    assert_eq!(s.sign_ons, 0, "ISO 20022 links have no sign-on");
    assert!(s
        .payments
        .iter()
        .all(|p| p.message_id.is_some() && p.settlement_date.is_some()));
}

#[tokio::test]
async fn a_client_whose_switch_is_down_counts_link_failures_and_keeps_trying() {
    let pki = Pki::new();
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let cfg = SimConfig::from_toml_str(&sim_config(&pki, addr, "iso8583:canonical", 5)).unwrap();
    let sim = BankSim::bind(&cfg).await.unwrap();
    let http = sim.http_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(sim.run(async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c: Value = serde_json::from_str(&http_get(http, "/client").await.1).unwrap();
    let c = &c["bank003"];
    assert!(c["link_failures"].as_u64().unwrap() >= 2, "{c}");
    assert_eq!(c["sent"], 0, "{c}");
    // Stopping ends the retry loop promptly.
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
}
