//! The bank simulator over real sockets: each codec, each outcome rule,
//! reversals and inquiries, faults, mTLS, the ledger JSON and config errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fps_codecs::framing::{FrameConfig, Framer, LengthPrefix};
use fps_codecs::iso20022::Iso20022Codec;
use fps_codecs::iso8583::Iso8583Codec;
use fps_codecs::json::JsonCodec;
use fps_codecs::model::examples::credit_transfer;
use fps_codecs::model::*;
use fps_codecs::MessageCodec;
use fps_hsm::software::SoftKey;
use fps_hsm::Mechanism;
use fps_loadtest::banksim::{BankSim, SimConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

// ---------------------------------------------------------------- PKI

struct Pki {
    dir: PathBuf,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
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

fn leaf(issuer: &Issuer<'static, KeyPair>, cn: &str, server: bool) -> (String, String) {
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
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "fps-banksim-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (issuer, ca_pem) = ca("banksim test ca");
        let (other, _) = ca("some other ca");
        let w = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        w("ca.crt", &ca_pem);
        for (name, cn, server, iss) in [
            ("bank003", "bank003.fps.test", true, &issuer),
            ("switch-client", "switch.fps.test", false, &issuer),
            ("rogue", "switch.fps.test", false, &other),
        ] {
            let (cert, key) = leaf(iss, cn, server);
            w(&format!("{name}.crt"), &cert);
            w(&format!("{name}.key"), &key);
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

// ---------------------------------------------------------------- simulator

struct Sim {
    http: SocketAddr,
    banks: Vec<(String, SocketAddr)>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Sim {
    async fn start(toml_text: &str) -> Sim {
        let cfg = SimConfig::from_toml_str(toml_text).expect("test config is valid");
        let sim = BankSim::bind(&cfg).await.expect("simulator binds");
        let http = sim.http_addr();
        let banks = sim.bank_addrs();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(sim.run(async {
            let _ = stopped.await;
        }));
        Sim {
            http,
            banks,
            stop: Some(stop),
            done: Some(done),
        }
    }

    fn addr(&self, name: &str) -> SocketAddr {
        self.banks.iter().find(|(n, _)| n == name).unwrap().1
    }

    async fn ledger(&self) -> Value {
        let (status, body) = http_get(self.http, "/ledger").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("ledger is JSON")
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.done.take().unwrap().await.unwrap().unwrap();
    }
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

/// One plaintext bank entry of a config.
fn bank(name: &str, code: &str, codec: &str, prefix: &str, extra: &str) -> String {
    format!(
        r#"
[[banks]]
name = "{name}"
code = "{code}"
codec = "{codec}"
listen = "127.0.0.1:0"
framing = {{ prefix = "{prefix}", max_frame_bytes = 9999 }}
tls = false
{extra}
"#
    )
}

fn config(banks: &[String]) -> String {
    let mut s = "seed = 42\n[http]\nbind = \"127.0.0.1:0\"\n".to_owned();
    for b in banks {
        s += b;
    }
    s
}

// ---------------------------------------------------------------- client

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A switch-side link to one simulated bank.
struct Link {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    framer: Framer,
    codec: Box<dyn MessageCodec>,
}

fn codec_of(name: &str) -> Box<dyn MessageCodec> {
    match name {
        "iso20022" => Box::new(Iso20022Codec::default()),
        "json" => Box::new(JsonCodec::new()),
        other => Box::new(Iso8583Codec::builtin(other.strip_prefix("iso8583:").unwrap()).unwrap()),
    }
}

fn framer(prefix: LengthPrefix) -> Framer {
    Framer::new(FrameConfig {
        prefix,
        max_frame_bytes: 9999,
        ..FrameConfig::default()
    })
    .unwrap()
}

impl Link {
    async fn plain(addr: SocketAddr, codec: &str, prefix: LengthPrefix) -> Link {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Link::wrap(Box::new(tcp), codec, prefix)
    }

    async fn tls(
        addr: SocketAddr,
        pki: &Pki,
        identity: Option<&str>,
        codec: &str,
    ) -> std::io::Result<Link> {
        let (cert, key) = identity.map_or((String::new(), String::new()), |id| {
            (
                pki.path(&format!("{id}.crt")),
                pki.path(&format!("{id}.key")),
            )
        });
        let ca = PathBuf::from(pki.path("ca.crt"));
        let pair = identity.map(|_| (std::path::Path::new(&cert), std::path::Path::new(&key)));
        let cfg = fps_loadtest::tls::client_config(&ca, pair).unwrap();
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls_pki_types::ServerName::try_from("bank003.fps.test").unwrap();
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await?;
        Ok(Link::wrap(Box::new(tls), codec, LengthPrefix::Binary2))
    }

    fn wrap(stream: Box<dyn Stream>, codec: &str, prefix: LengthPrefix) -> Link {
        Link {
            stream,
            buf: BytesMut::new(),
            framer: framer(prefix),
            codec: codec_of(codec),
        }
    }

    async fn send(&mut self, txn: &Transaction) {
        let mut out = BytesMut::new();
        let mark = self.framer.begin(&[], &mut out).unwrap();
        self.codec.encode(txn, &mut out).unwrap();
        self.framer.finish(mark, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// The next frame's message, or `None` on EOF, error or `wait`.
    async fn recv_raw(&mut self, wait: Duration) -> Option<BytesMut> {
        tokio::time::timeout(wait, async {
            loop {
                if let Some(f) = self.framer.decode(&mut self.buf).ok()? {
                    return Some(f.message);
                }
                if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                    return None;
                }
            }
        })
        .await
        .ok()?
    }

    async fn recv(&mut self) -> Transaction {
        let msg = self
            .recv_raw(Duration::from_secs(5))
            .await
            .expect("an answer");
        self.codec.decode(&msg).expect("a valid answer")
    }

    async fn request(&mut self, txn: &Transaction) -> Transaction {
        self.send(txn).await;
        self.recv().await
    }
}

fn acct(s: &str) -> Option<Account> {
    Some(Account::parse(s.as_bytes()).unwrap())
}

/// The example transfer with its own STAN/RRN (the switch's outbound ids).
fn transfer(stan: u32) -> Transaction {
    let mut t = credit_transfer();
    t.stan = Some(Stan::new(stan).unwrap());
    t.rrn = Some(Rrn::parse(format!("{stan:012}").as_bytes()).unwrap());
    t.idempotency_key = Some(IdempotencyKey::parse(format!("gw-key-{stan}").as_bytes()).unwrap());
    t
}

fn code(t: &Transaction) -> &str {
    t.response_code.as_ref().map_or("none", |c| c.as_str())
}

fn find<'a>(ledger: &'a Value, bank_id_part: &str) -> &'a Value {
    ledger["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["bank_id"].as_str().unwrap().contains(bank_id_part))
        .unwrap_or_else(|| panic!("{bank_id_part} not in {ledger:#}"))
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn canonical_iso8583_over_mtls_applies_every_rule() {
    let pki = Pki::new();
    let toml_text = format!(
        r#"
[http]
bind = "127.0.0.1:0"
[[banks]]
name = "bank003"
code = "003"
codec = "iso8583:canonical"
listen = "127.0.0.1:0"
framing = {{ prefix = "binary2" }}
[banks.tls]
cert = "{}"
key = "{}"
client_ca = "{}"
"#,
        pki.path("bank003.crt"),
        pki.path("bank003.key"),
        pki.path("ca.crt")
    );
    let sim = Sim::start(&toml_text).await;
    let addr = sim.addr("bank003");
    let mut link = Link::tls(addr, &pki, Some("switch-client"), "iso8583:canonical")
        .await
        .expect("the switch's client certificate is accepted");

    // Network management: sign-on and echo.
    for nc in [NetworkCode::SignOn, NetworkCode::Echo] {
        let mut m = Transaction::new(Mti::NETWORK);
        m.stan = Some(Stan::new(9).unwrap());
        m.transmitted_at = Some(TransmissionDateTime::parse(b"1123093015").unwrap());
        m.network_code = Some(nc);
        let a = link.request(&m).await;
        assert_eq!(a.mti, Mti::NETWORK_RESPONSE);
        assert_eq!(code(&a), "00");
    }

    let approved = link.request(&transfer(1)).await;
    assert_eq!(approved.mti, Mti::CREDIT_TRANSFER_RESPONSE);
    assert_eq!(code(&approved), "00");
    assert!(approved.auth_id.is_some());
    // The match key is echoed.
    assert_eq!(approved.stan, transfer(1).stan);
    assert_eq!(approved.rrn, transfer(1).rrn);
    assert_eq!(approved.terminal_id, transfer(1).terminal_id);

    for (stan, debtor, creditor, want) in [
        (2, "1234567851", "987654321001", "51"),
        (3, "1234567805", "987654321001", "05"),
        (4, "1234567800", "987654321014", "14"),
    ] {
        let mut t = transfer(stan);
        t.debtor_account = acct(debtor);
        t.creditor_account = acct(creditor);
        let a = link.request(&t).await;
        assert_eq!(code(&a), want, "stan {stan}");
        assert_eq!(a.auth_id, None);
    }

    // No certificate, or one from another CA: refused.
    for identity in [None, Some("rogue")] {
        match Link::tls(addr, &pki, identity, "iso8583:canonical").await {
            Err(_) => {}
            Ok(mut l) => {
                // TLS 1.3: the client finishes first; the server's alert
                // arrives on the first read.
                l.send(&transfer(50)).await;
                assert!(l.recv_raw(Duration::from_secs(5)).await.is_none());
            }
        }
    }

    let ledger = sim.ledger().await;
    let totals = &ledger["totals"];
    assert_eq!(totals["transactions"], 4);
    assert_eq!(totals["approved"], 1);
    assert_eq!(totals["declined"], 3);
    assert_eq!(totals["network"], 2);
    assert_eq!(totals["amount_approved_minor"], 12_345);
    assert_eq!(ledger["banks"][0]["handshake_failures"], 2);
    let t = find(&ledger, "000000000001/000001/TERM0001");
    assert_eq!(t["status"], "approved");
    assert_eq!(t["end_to_end"], "key:gw-key-1");
    assert_eq!(t["debtor"], "****9001");
    assert_eq!(t["creditor"], "****1001");
    assert_eq!(t["amount_minor"], 12_345);
    assert_eq!(find(&ledger, "/000002/")["code"], "51");
    let text = ledger.to_string();
    assert!(!text.contains("123456789001") && !text.contains("1234567851"));
    sim.stop().await;
}

#[tokio::test]
async fn bcd_dialect_reversals_mark_the_original_reversed() {
    let sim = Sim::start(&config(&[bank(
        "bank004",
        "004",
        "iso8583:iso87-bcd-binary",
        "binary2",
        "",
    )]))
    .await;
    let mut link = Link::plain(
        sim.addr("bank004"),
        "iso8583:iso87-bcd-binary",
        LengthPrefix::Binary2,
    )
    .await;
    let mut orig = transfer(77);
    // This dialect carries no idempotency key (F123).
    orig.idempotency_key = None;
    assert_eq!(code(&link.request(&orig).await), "00");

    for (stan, mti) in [(78, Mti::REVERSAL), (79, Mti::REVERSAL.repeat())] {
        let mut rev = Transaction::new(mti);
        rev.stan = Some(Stan::new(stan).unwrap());
        rev.rrn = orig.rrn;
        rev.terminal_id = orig.terminal_id;
        rev.transmitted_at = orig.transmitted_at;
        rev.amount = orig.amount;
        rev.original = orig.original_data();
        let a = link.request(&rev).await;
        assert_eq!(a.mti, Mti::REVERSAL_RESPONSE);
        assert_eq!(code(&a), "00");
        assert_eq!(a.stan, rev.stan);
    }

    // A reversal advice for a transaction the bank never saw: acknowledged.
    let mut advice = Transaction::new(Mti::REVERSAL_ADVICE);
    advice.stan = Some(Stan::new(80).unwrap());
    let mut unknown = orig.original_data().unwrap();
    unknown.stan = Stan::new(999).unwrap();
    advice.original = Some(unknown);
    let a = link.request(&advice).await;
    assert_eq!(a.mti, Mti::REVERSAL_ADVICE_RESPONSE);
    assert_eq!(code(&a), "00");

    let ledger = sim.ledger().await;
    let t = find(&ledger, "/000077/");
    assert_eq!(t["status"], "reversed");
    assert_eq!(t["reversal_messages"], 2);
    assert!(t["end_to_end"].as_str().unwrap().starts_with("upstream:"));
    let revs = ledger["reversals"].as_array().unwrap();
    assert_eq!(revs.len(), 3);
    assert_eq!(revs[0]["result"], "reversed");
    assert_eq!(revs[1]["result"], "already_reversed");
    assert_eq!(revs[2]["result"], "nothing_to_reverse");
    assert_eq!(revs[2]["original"], Value::Null);
    assert_eq!(ledger["totals"]["reversed"], 1);
    assert_eq!(ledger["totals"]["nothing_to_reverse"], 1);
    assert_eq!(ledger["totals"]["amount_approved_minor"], 0);
    sim.stop().await;
}

fn iso20022_transfer(id: &str) -> Transaction {
    let mut t = transfer(5);
    t.receiving_bank = Some(BankCode::parse(b"012").unwrap());
    t.sending_bank = Some(BankCode::parse(b"950").unwrap());
    t.settlement_date = Some(SettlementDate::parse(b"20261123").unwrap());
    t.message_id = Some(MessageId::parse(id.as_bytes()).unwrap());
    t.end_to_end_id = Some(EndToEndId::parse(id.as_bytes()).unwrap());
    t
}

#[tokio::test]
async fn iso20022_transfer_status_inquiry_and_cancellation() {
    let sim = Sim::start(&config(&[bank(
        "bank012", "012", "iso20022", "binary4", "",
    )]))
    .await;
    let mut link = Link::plain(sim.addr("bank012"), "iso20022", LengthPrefix::Binary4).await;

    let orig = iso20022_transfer("FPS012A1");
    let a = link.request(&orig).await;
    assert_eq!(a.mti, Mti::CREDIT_TRANSFER_RESPONSE);
    assert_eq!(code(&a), "00");
    // pacs.002 names the request (the switch's match key).
    assert_eq!(a.original_message_id, orig.message_id);
    assert_eq!(a.end_to_end_id, orig.end_to_end_id);
    assert_ne!(a.message_id, orig.message_id);

    let mut declined = iso20022_transfer("FPS012A2");
    declined.debtor_account = acct("55555551");
    let a = link.request(&declined).await;
    assert_eq!(code(&a), "51");

    // pacs.028 -> pacs.002 with the original's status.
    let mut inquiry = Transaction::new(Mti::STATUS_INQUIRY);
    inquiry.message_id = Some(MessageId::parse(b"FPS012Q1").unwrap());
    inquiry.original_message_id = orig.message_id;
    inquiry.end_to_end_id = orig.end_to_end_id;
    inquiry.transmitted_at = orig.transmitted_at;
    inquiry.settlement_date = orig.settlement_date;
    let a = link.request(&inquiry).await;
    assert_eq!(a.mti, Mti::STATUS_INQUIRY_RESPONSE);
    assert_eq!(a.original_message_id, inquiry.message_id);
    assert_eq!(code(&a), "00");

    // camt.056 -> camt.029, and the original is reversed.
    let mut cancel = Transaction::new(Mti::REVERSAL);
    cancel.message_id = Some(MessageId::parse(b"FPS012C1").unwrap());
    cancel.original_message_id = orig.message_id;
    cancel.end_to_end_id = orig.end_to_end_id;
    cancel.transmitted_at = orig.transmitted_at;
    cancel.settlement_date = orig.settlement_date;
    cancel.sending_bank = orig.sending_bank;
    cancel.receiving_bank = orig.receiving_bank;
    cancel.amount = orig.amount;
    cancel.currency = orig.currency;
    let a = link.request(&cancel).await;
    assert_eq!(a.mti, Mti::REVERSAL_RESPONSE);
    assert_eq!(code(&a), "00");
    assert_eq!(a.original_message_id, cancel.message_id);

    let ledger = sim.ledger().await;
    let t = find(&ledger, "FPS012A1");
    assert_eq!(t["status"], "reversed");
    assert_eq!(t["end_to_end"], "e2e:FPS012A1");
    assert_eq!(ledger["reversals"][0]["kind"], "cancellation");
    assert_eq!(ledger["reversals"][0]["original"], "FPS012A1");
    assert_eq!(ledger["totals"]["status_inquiries"], 1);
    assert_eq!(find(&ledger, "FPS012A2")["status"], "declined");
    sim.stop().await;
}

#[tokio::test]
async fn json_transfer_and_cancel() {
    let sim = Sim::start(&config(&[bank("bank024", "024", "json", "binary4", "")])).await;
    let mut link = Link::plain(sim.addr("bank024"), "json", LengthPrefix::Binary4).await;
    let mut t = transfer(6);
    t.message_id = Some(MessageId::parse(b"REQ-1").unwrap());
    t.receiving_bank = Some(BankCode::parse(b"024").unwrap());
    let a = link.request(&t).await;
    assert_eq!(a.mti, Mti::CREDIT_TRANSFER_RESPONSE);
    assert_eq!(a.message_id, t.message_id);
    assert_eq!(code(&a), "00");
    assert!(a.auth_id.is_some());

    let mut bad = t.clone();
    bad.message_id = Some(MessageId::parse(b"REQ-2").unwrap());
    bad.creditor_account = acct("4444414");
    bad.idempotency_key = None;
    assert_eq!(code(&link.request(&bad).await), "14");

    let mut cancel = Transaction::new(Mti::REVERSAL);
    cancel.message_id = Some(MessageId::parse(b"REQ-3").unwrap());
    cancel.original_message_id = t.message_id;
    let a = link.request(&cancel).await;
    assert_eq!(a.mti, Mti::REVERSAL_RESPONSE);
    assert_eq!(a.message_id, cancel.message_id);
    assert_eq!(code(&a), "00");

    let ledger = sim.ledger().await;
    assert_eq!(find(&ledger, "REQ-1")["status"], "reversed");
    assert_eq!(ledger["reversals"][0]["kind"], "cancel");
    sim.stop().await;
}

#[tokio::test]
async fn ledger_counts_retransmissions_and_finds_double_debits() {
    let sim = Sim::start(&config(&[bank(
        "bank003",
        "003",
        "iso8583:canonical",
        "binary2",
        "",
    )]))
    .await;
    let mut link = Link::plain(
        sim.addr("bank003"),
        "iso8583:canonical",
        LengthPrefix::Binary2,
    )
    .await;
    let first = transfer(10);
    let a1 = link.request(&first).await;
    // The same message again (same bank-level ids): one booking, seen twice.
    let a2 = link.request(&first).await;
    assert_eq!(a1.auth_id, a2.auth_id);
    let ledger = sim.ledger().await;
    assert_eq!(find(&ledger, "/000010/")["times_seen"], 2);
    assert_eq!(ledger["totals"]["transactions"], 1);
    assert_eq!(ledger["totals"]["retransmissions"], 1);
    assert_eq!(ledger["totals"]["double_debits"], 0);

    // The same upstream key under new bank-level ids: booked again.
    let mut second = transfer(11);
    second.idempotency_key = first.idempotency_key;
    assert_eq!(code(&link.request(&second).await), "00");
    let ledger = sim.ledger().await;
    assert_eq!(ledger["totals"]["double_debits"], 1);
    let dd = &ledger["double_debits"][0];
    assert_eq!(dd["end_to_end"], "key:gw-key-10");
    assert_eq!(dd["approvals"], 2);
    assert_eq!(dd["transactions"].as_array().unwrap().len(), 2);

    // Reversing one of them settles it.
    let mut rev = Transaction::new(Mti::REVERSAL);
    rev.stan = Some(Stan::new(12).unwrap());
    rev.original = second.original_data();
    assert_eq!(code(&link.request(&rev).await), "00");
    let ledger = sim.ledger().await;
    assert_eq!(ledger["totals"]["double_debits"], 0);
    assert_eq!(ledger["double_debits"].as_array().unwrap().len(), 0);

    // The summary leaves the per-message lists out.
    let (status, body) = http_get(sim.http, "/ledger?summary").await;
    assert_eq!(status, 200);
    let summary: Value = serde_json::from_str(&body).unwrap();
    assert!(summary.get("transactions").is_none());
    assert_eq!(summary["totals"]["transactions"], 2);
    assert_eq!(
        http_get(sim.http, "/healthz").await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(http_get(sim.http, "/nope").await.0, 404);
    sim.stop().await;
}

#[tokio::test]
async fn faults_duplicate_drop_late_disconnect_garbage() {
    let canonical = "iso8583:canonical";
    let sim = Sim::start(&config(&[
        bank(
            "dup",
            "003",
            canonical,
            "binary2",
            "faults = { duplicate = 100 }",
        ),
        bank(
            "drop",
            "004",
            canonical,
            "binary2",
            "faults = { drop = 100 }",
        ),
        bank(
            "late",
            "012",
            canonical,
            "binary2",
            "faults = { late = 100, late_ms = 300 }",
        ),
        bank(
            "cut",
            "024",
            canonical,
            "binary2",
            "faults = { disconnect = 100 }",
        ),
        bank(
            "junk",
            "025",
            canonical,
            "binary2",
            "faults = { garbage = 100 }",
        ),
    ]))
    .await;
    let link = |name: &str| Link::plain(sim.addr(name), canonical, LengthPrefix::Binary2);

    let mut dup = link("dup").await;
    dup.send(&transfer(20)).await;
    let (a, b) = (dup.recv().await, dup.recv().await);
    assert_eq!(a, b);
    assert_eq!(a.stan, transfer(20).stan);
    assert!(dup.recv_raw(Duration::from_millis(300)).await.is_none());

    let mut drop = link("drop").await;
    drop.send(&transfer(21)).await;
    assert!(drop.recv_raw(Duration::from_millis(700)).await.is_none());
    // Network management is never faulted.
    let mut echo = Transaction::new(Mti::NETWORK);
    echo.stan = Some(Stan::new(1).unwrap());
    echo.network_code = Some(NetworkCode::Echo);
    assert_eq!(code(&drop.request(&echo).await), "00");

    let mut late = link("late").await;
    let sent = Instant::now();
    let a = late.request(&transfer(22)).await;
    assert_eq!(code(&a), "00");
    assert!(sent.elapsed() >= Duration::from_millis(250));

    let mut cut = link("cut").await;
    cut.send(&transfer(23)).await;
    assert!(cut.recv_raw(Duration::from_secs(5)).await.is_none());

    let mut junk = link("junk").await;
    junk.send(&transfer(24)).await;
    let frame = junk
        .recv_raw(Duration::from_secs(5))
        .await
        .expect("a frame");
    assert!(junk.codec.decode(&frame).is_err());

    let ledger = sim.ledger().await;
    let f = &ledger["totals"]["faults"];
    assert_eq!(
        (f["duplicate"].clone(), f["drop"].clone(), f["late"].clone()),
        (1.into(), 1.into(), 1.into())
    );
    assert_eq!(
        (f["disconnect"].clone(), f["garbage"].clone()),
        (1.into(), 1.into())
    );
    // The bank booked every one of them: the outcome is what is unknown.
    assert_eq!(ledger["totals"]["approved"], 5);
    sim.stop().await;
}

#[tokio::test]
async fn garbage_from_the_peer_closes_only_that_connection() {
    let sim = Sim::start(&config(&[bank(
        "bank003",
        "003",
        "iso8583:canonical",
        "ascii4",
        "",
    )]))
    .await;
    let addr = sim.addr("bank003");
    let mut bad = Link::plain(addr, "iso8583:canonical", LengthPrefix::Ascii4).await;
    bad.stream.write_all(b"zz!!not a length").await.unwrap();
    assert!(bad.recv_raw(Duration::from_secs(5)).await.is_none());
    // A whole frame that is not a message: counted, not answered, link kept.
    let mut odd = Link::plain(addr, "iso8583:canonical", LengthPrefix::Ascii4).await;
    odd.stream.write_all(b"0004\xff\xfe\xfd\xfc").await.unwrap();
    assert_eq!(code(&odd.request(&transfer(30)).await), "00");
    let ledger = sim.ledger().await;
    assert_eq!(ledger["totals"]["bad_frames"], 1);
    assert_eq!(ledger["totals"]["bad_messages"], 1);
    sim.stop().await;
}

async fn http_post(addr: SocketAddr, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn a_restarted_bank_drops_its_links_closes_its_port_and_keeps_its_books() {
    let sim = Sim::start(&config(&[
        bank("bank003", "003", "iso8583:canonical", "ascii4", ""),
        bank("bank004", "004", "iso8583:canonical", "ascii4", ""),
    ]))
    .await;
    let (a3, a4) = (sim.addr("bank003"), sim.addr("bank004"));
    let mut link = Link::plain(a3, "iso8583:canonical", LengthPrefix::Ascii4).await;
    let mut other = Link::plain(a4, "iso8583:canonical", LengthPrefix::Ascii4).await;
    assert_eq!(code(&link.request(&transfer(1)).await), "00");

    assert_eq!(http_post(sim.http, "/banks/nope/restart").await, 404);
    assert_eq!(
        http_post(sim.http, "/banks/bank003/restart?down_ms=x").await,
        400
    );
    assert_eq!(
        http_post(sim.http, "/banks/bank003/restart?down_ms=800").await,
        200
    );
    // The link drops; the port refuses while the bank is down.
    assert!(link.recv_raw(Duration::from_secs(5)).await.is_none());
    assert!(
        TcpStream::connect(a3).await.is_err(),
        "port closed while down"
    );
    // Other banks are untouched.
    assert_eq!(code(&other.request(&transfer(2)).await), "00");
    // Back after the outage, same port, same books.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut again = loop {
        if let Ok(s) = TcpStream::connect(a3).await {
            drop(s);
            break Link::plain(a3, "iso8583:canonical", LengthPrefix::Ascii4).await;
        }
        assert!(tokio::time::Instant::now() < deadline, "the bank came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A retransmission of the first transfer is known: booked once.
    assert_eq!(code(&again.request(&transfer(1)).await), "00");
    let ledger = sim.ledger().await;
    let b3 = &ledger["banks"][0];
    assert_eq!(b3["restarts"], 1);
    assert_eq!(b3["transactions"], 1);
    assert_eq!(b3["retransmissions"], 1);
    sim.stop().await;
}

#[tokio::test]
async fn seeded_latency_and_faults_are_reproducible() {
    async fn run_once() -> Vec<bool> {
        let sim = Sim::start(&config(&[bank(
            "bank003",
            "003",
            "iso8583:canonical",
            "binary2",
            "latency = { kind = \"lognormal\", median_ms = 1, sigma = 0.5 }\nfaults = { drop = 50 }",
        )]))
        .await;
        let mut link = Link::plain(
            sim.addr("bank003"),
            "iso8583:canonical",
            LengthPrefix::Binary2,
        )
        .await;
        let mut answered = Vec::new();
        for n in 1..=12 {
            link.send(&transfer(100 + n)).await;
            answered.push(link.recv_raw(Duration::from_millis(150)).await.is_some());
        }
        sim.stop().await;
        answered
    }
    let a = run_once().await;
    assert_eq!(a, run_once().await);
    assert!(a.contains(&true) && a.contains(&false), "{a:?}");
}

#[tokio::test]
async fn config_errors_name_the_key() {
    let errors = |text: &str| SimConfig::from_toml_str(text).unwrap_err().to_string();
    let base = config(&[bank("bank003", "003", "iso8583:canonical", "binary2", "")]);

    let e = errors(&base.replace("prefix = \"binary2\"", "prefix = \"binary3\""));
    assert!(e.starts_with("banks[0].framing.prefix"), "{e}");
    let e = errors(&base.replace("codec = \"iso8583:canonical\"", "codec = \"iso8583\""));
    assert!(e.starts_with("banks[0].codec: unknown codec"), "{e}");
    let e = errors(&format!(
        "{base}latency = {{ kind = \"fixed\", ms = 1, extra = 2 }}\n"
    ));
    assert!(e.starts_with("banks[0].latency"), "{e}");
    assert!(e.contains("extra"), "{e}");
    let e = errors(&format!("{base}faults = {{ drop = 60, garbage = 50 }}\n"));
    assert!(
        e.starts_with("banks[0].faults: percentages add up to 110"),
        "{e}"
    );
    let e = errors(&base.replace("[http]", "[htp]"));
    assert!(e.contains("htp"), "{e}");
    let e = errors("banks = []\n[http]\nbind = \"127.0.0.1:0\"\n");
    assert!(e.starts_with("banks: at least one"), "{e}");

    // Files are checked when binding: the error names the bank's key.
    let missing = base.replace(
        "tls = false",
        "[banks.tls]\ncert = \"/nonexistent/b.crt\"\nkey = \"/nonexistent/b.key\"",
    );
    let cfg = SimConfig::from_toml_str(&missing).unwrap();
    let e = format!("{:#}", BankSim::bind(&cfg).await.unwrap_err());
    assert!(e.starts_with("banks[0].tls (bank003)"), "{e}");
}

// ---------------------------------------------------------------- auth

/// Development keys for the danger_software backend: an HMAC secret, the
/// switch's and the bank's P-256 keys (test only).
struct TestKeys {
    dir: PathBuf,
    hmac: Vec<u8>,
    switch_pem: String,
    bank_pem: String,
}

impl TestKeys {
    fn new() -> TestKeys {
        let dir = std::env::temp_dir().join(format!(
            "fps-banksim-keys-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let hmac: Vec<u8> = (0..32).collect();
        let hex: String = hmac.iter().map(|b| format!("{b:02x}")).collect();
        // rcgen's default key pair is P-256, written as PKCS#8 PEM.
        let switch_pem = KeyPair::generate().unwrap().serialize_pem();
        let bank_pem = KeyPair::generate().unwrap().serialize_pem();
        std::fs::write(dir.join("t-hmac-v1.hmac.hex"), hex).unwrap();
        std::fs::write(dir.join("t-switch-ec-v1.ec.pem"), &switch_pem).unwrap();
        std::fs::write(dir.join("t-bank-ec-v1.ec.pem"), &bank_pem).unwrap();
        TestKeys {
            dir,
            hmac,
            switch_pem,
            bank_pem,
        }
    }

    fn hsm_section(&self) -> String {
        format!(
            "[hsm]\nbackend = \"danger_software\"\ndanger_key_dir = \"{}\"\n",
            self.dir.display()
        )
    }

    fn hmac(&self) -> SoftKey {
        SoftKey::hmac_sha256(&self.hmac).unwrap()
    }

    fn switch_key(&self) -> SoftKey {
        SoftKey::from_pem(Mechanism::EcdsaP256Sha256, &self.switch_pem).unwrap()
    }

    fn bank_key(&self) -> SoftKey {
        SoftKey::from_pem(Mechanism::EcdsaP256Sha256, &self.bank_pem).unwrap()
    }
}

impl Drop for TestKeys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const MAC_AUTH: &str = r#"auth = { mac = { label = "t-hmac", mechanism = "hmac_sha256" } }"#;
const SIGN_AUTH: &str = r#"auth = { sign = { label = "t-bank-ec", mechanism = "ecdsa_p256_sha256" }, verify = { label = "t-switch-ec", mechanism = "ecdsa_p256_sha256" } }"#;

/// `txn` with the switch's tag, made outside any HSM.
fn sealed(codec: &dyn MessageCodec, key: &SoftKey, txn: &Transaction) -> Transaction {
    let mut covered = BytesMut::new();
    codec.encode_auth_input(txn, &mut covered).unwrap();
    let mut t = txn.clone();
    if key.mechanism().is_mac() {
        t.mac = codec.auth_slot().mac_value(&key.mac(&covered).unwrap());
    } else {
        t.signature = SignatureValue::new(&key.sign(&covered).unwrap()).ok();
    }
    t
}

/// Whether the answer's tag verifies outside any HSM.
fn tag_verifies(codec: &dyn MessageCodec, key: &SoftKey, raw: &[u8]) -> bool {
    let answer = codec.decode_authenticated(raw).unwrap();
    let Some(covered) = answer.auth_input else {
        return false;
    };
    if key.mechanism().is_mac() {
        let slot = codec.auth_slot();
        let received = slot.mac_bytes(answer.mac.as_ref().unwrap()).unwrap();
        key.mac(covered.as_bytes()).unwrap()[..8] == received[..]
    } else {
        key.verify(covered.as_bytes(), answer.signature.unwrap().as_bytes())
            .unwrap()
    }
}

#[tokio::test]
async fn banks_check_the_switch_tags_and_tag_their_answers() {
    let keys = TestKeys::new();
    let text = format!(
        "seed = 42\n[http]\nbind = \"127.0.0.1:0\"\n{}{}{}{}",
        keys.hsm_section(),
        bank("bank003", "003", "iso8583:canonical", "binary2", MAC_AUTH),
        bank("bank024", "024", "json", "binary4", SIGN_AUTH),
        bank(
            "bank003bad",
            "003",
            "iso8583:canonical",
            "binary2",
            &format!("{MAC_AUTH}\nfaults = {{ bad_mac = 100 }}"),
        ),
    );
    let sim = Sim::start(&text).await;
    let canonical = codec_of("iso8583:canonical");
    let json = codec_of("json");

    // A MACed transfer: approved, and the answer's MAC verifies.
    let mut link = Link::plain(
        sim.addr("bank003"),
        "iso8583:canonical",
        LengthPrefix::Binary2,
    )
    .await;
    link.send(&sealed(&*canonical, &keys.hmac(), &transfer(1)))
        .await;
    let raw = link.recv_raw(Duration::from_secs(5)).await.unwrap();
    assert_eq!(code(&canonical.decode(&raw).unwrap()), "00");
    assert!(tag_verifies(&*canonical, &keys.hmac(), &raw));
    // Network management is MACed too: a MACed sign-on and sign-off are
    // approved with a MACed 0810 and counted; an echo without a MAC is 63.
    for (stan, nc) in [(9, NetworkCode::SignOn), (10, NetworkCode::SignOff)] {
        let mut m = Transaction::new(Mti::NETWORK);
        m.stan = Stan::new(stan).ok();
        m.network_code = Some(nc);
        link.send(&sealed(&*canonical, &keys.hmac(), &m)).await;
        let raw = link.recv_raw(Duration::from_secs(5)).await.unwrap();
        assert_eq!(code(&canonical.decode(&raw).unwrap()), "00");
        assert!(tag_verifies(&*canonical, &keys.hmac(), &raw));
    }
    let mut echo = Transaction::new(Mti::NETWORK);
    echo.stan = Stan::new(11).ok();
    echo.network_code = Some(NetworkCode::Echo);
    assert_eq!(code(&link.request(&echo).await), "63");
    // A wrong MAC, or none: 63, and nothing booked.
    let mut forged = sealed(&*canonical, &keys.hmac(), &transfer(2));
    forged.amount = AmountMinor::new(99_999).ok();
    assert_eq!(code(&link.request(&forged).await), "63");
    assert_eq!(code(&link.request(&transfer(3)).await), "63");

    // A signed JSON transfer: approved, the bank's signature verifies.
    let mut link = Link::plain(sim.addr("bank024"), "json", LengthPrefix::Binary4).await;
    let mut t = transfer(4);
    t.message_id = MessageId::parse(b"REQ-AUTH-4").ok();
    link.send(&sealed(&*json, &keys.switch_key(), &t)).await;
    let raw = link.recv_raw(Duration::from_secs(5)).await.unwrap();
    assert_eq!(code(&json.decode(&raw).unwrap()), "00");
    let bank_public = keys.bank_key().public_key().unwrap();
    assert!(tag_verifies(&*json, &bank_public, &raw));
    // Signed with the wrong key: refused.
    t.message_id = MessageId::parse(b"REQ-AUTH-5").ok();
    let wrong = sealed(&*json, &keys.bank_key(), &t);
    assert_eq!(code(&link.request(&wrong).await), "63");

    // The bad_mac fault: approved, but the MAC does not verify.
    let mut link = Link::plain(
        sim.addr("bank003bad"),
        "iso8583:canonical",
        LengthPrefix::Binary2,
    )
    .await;
    link.send(&sealed(&*canonical, &keys.hmac(), &transfer(6)))
        .await;
    let raw = link.recv_raw(Duration::from_secs(5)).await.unwrap();
    assert_eq!(code(&canonical.decode(&raw).unwrap()), "00");
    assert!(!tag_verifies(&*canonical, &keys.hmac(), &raw));

    let ledger = sim.ledger().await;
    let stats = |name: &str| {
        ledger["banks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(stats("bank003")["auth_failures"], 3, "{ledger:#}");
    assert_eq!(stats("bank003")["sign_ons"], 1);
    assert_eq!(stats("bank003")["sign_offs"], 1);
    assert_eq!(stats("bank003")["transactions"], 1);
    assert_eq!(stats("bank024")["auth_failures"], 1);
    assert_eq!(stats("bank024")["transactions"], 1);
    assert_eq!(stats("bank003bad")["faults"]["bad_mac"], 1);
    assert_eq!(ledger["totals"]["auth_failures"], 4);
    sim.stop().await;
}

#[tokio::test]
async fn auth_config_errors_name_the_key() {
    let errors = |text: &str| SimConfig::from_toml_str(text).unwrap_err().to_string();
    let e = errors(&config(&[bank(
        "bank003",
        "003",
        "iso8583:canonical",
        "binary2",
        MAC_AUTH,
    )]));
    assert!(e.contains("banks[0].auth: needs an [hsm] section"), "{e}");
    let e = errors(&config(&[bank(
        "bank003",
        "003",
        "iso8583:canonical",
        "binary2",
        "faults = { bad_mac = 5 }",
    )]));
    assert!(e.contains("banks[0].faults.bad_mac: needs auth"), "{e}");
    let keys = TestKeys::new();
    let text = format!(
        "[http]\nbind = \"127.0.0.1:0\"\n{}{}",
        keys.hsm_section(),
        bank("bank012", "012", "iso20022", "binary4", MAC_AUTH),
    );
    let e = errors(&text);
    assert!(
        e.contains("banks[0].auth: ISO 20022 and JSON banks use sign and verify"),
        "{e}"
    );
    // A key the HSM lacks stops the simulator, naming the label.
    let text = format!(
        "[http]\nbind = \"127.0.0.1:0\"\n{}{}",
        keys.hsm_section(),
        bank(
            "bank003",
            "003",
            "iso8583:canonical",
            "binary2",
            r#"auth = { mac = { label = "t-missing", mechanism = "hmac_sha256" } }"#
        ),
    );
    let cfg = SimConfig::from_toml_str(&text).unwrap();
    let e = format!("{:#}", BankSim::bind(&cfg).await.unwrap_err());
    assert!(e.contains("t-missing"), "{e}");
}
