//! Test support: an in-process PKI (rcgen), a TLS bank peer speaking a
//! dialect through the codecs crate, a gateway client speaking the
//! canonical protocol (or, as a bank on its inbound link, any dialect),
//! and a switch started on 127.0.0.1:0. [`inbound`] has what tests of
//! inbound bank links share.

#![allow(dead_code, missing_debug_implementations)]

pub mod inbound;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fps_codecs::framing::{FrameConfig, Framer};
use fps_codecs::iso8583::Iso8583Codec;
use fps_codecs::model::*;
use fps_codecs::MessageCodec;
use fps_switch::{Config, Switch};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

// ---------------------------------------------------------------- PKI

/// Certificates and keys written as PEM files in a fresh directory.
pub struct Pki {
    pub dir: PathBuf,
}

static DIR_SEQ: AtomicUsize = AtomicUsize::new(0);

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
    let mut p = CertificateParams::new(vec![cn.to_owned(), "localhost".to_owned()]).unwrap();
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
    pub fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "fps-switch-test-{}-{}",
            std::process::id(),
            DIR_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (issuer, ca_pem) = ca("fps test ca");
        let (other, other_pem) = ca("some other ca");
        let w = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        w("ca.crt", &ca_pem);
        w("other-ca.crt", &other_pem);
        for (name, cn, server, iss) in [
            ("switch", "switch.test", true, &issuer),
            ("gateway", "gateway.test", false, &issuer),
            ("switch-client", "switch.test", false, &issuer),
            ("bank", "bank.test", true, &issuer),
            ("rogue", "gateway.test", false, &other),
        ] {
            let (cert, key) = leaf(iss, cn, server);
            w(&format!("{name}.crt"), &cert);
            w(&format!("{name}.key"), &key);
        }
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn certs(&self, name: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(self.path(name))
            .unwrap()
            .map(|c| c.unwrap())
            .collect()
    }

    fn key(&self, name: &str) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_file(self.path(name)).unwrap()
    }

    fn roots(&self) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        for c in self.certs("ca.crt") {
            roots.add(c).unwrap();
        }
        Arc::new(roots)
    }

    /// A TLS client trusting the test CA, presenting `identity` (`gateway`,
    /// `rogue`) or no certificate.
    pub fn client(&self, identity: Option<&str>) -> tokio_rustls::TlsConnector {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots());
        let cfg = match identity {
            Some(id) => b
                .with_client_auth_cert(
                    self.certs(&format!("{id}.crt")),
                    self.key(&format!("{id}.key")),
                )
                .unwrap(),
            None => b.with_no_client_auth(),
        };
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }

    /// The bank's TLS server: requires a client certificate from the test CA.
    fn bank_server(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs("bank.crt"), self.key("bank.key"))
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- framing

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

fn framer() -> Framer {
    Framer::new(FrameConfig::default()).unwrap()
}

async fn read_frame(
    s: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    f: &Framer,
) -> Option<BytesMut> {
    loop {
        if let Some(frame) = f.decode(buf).ok()? {
            return Some(frame.message);
        }
        if s.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

fn frame(codec: &dyn MessageCodec, txn: &Transaction) -> BytesMut {
    frame_payload(&framer(), |out| codec.encode(txn, out).unwrap())
}

/// One frame around what `write` appends (no fixed header).
fn frame_payload(f: &Framer, write: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut out = BytesMut::new();
    let mark = f.begin(&[], &mut out).unwrap();
    write(&mut out);
    f.finish(mark, &mut out).unwrap();
    out
}

/// The codec a config names: `iso8583:<dialect>`, `iso20022` or `json`.
pub fn codec_named(name: &str) -> Arc<dyn MessageCodec> {
    match name {
        "iso20022" => Arc::new(fps_codecs::iso20022::Iso20022Codec::default()),
        "json" => Arc::new(fps_codecs::json::JsonCodec::new()),
        other => Arc::new(
            Iso8583Codec::builtin(other.strip_prefix("iso8583:").expect("a codec name")).unwrap(),
        ),
    }
}

// ---------------------------------------------------------------- bank peer

/// How the test bank answers financial requests.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Approve after a random delay up to `max_delay_ms` (so answers go out
    /// of order).
    Approve { max_delay_ms: u64 },
    /// Answer with this code at once.
    Decline(&'static [u8; 2]),
    /// Never answer financial requests (network management still answered).
    Silent,
    /// Answer with `code` after `delay_ms` (past the switch's deadline).
    Late {
        delay_ms: u64,
        code: &'static [u8; 2],
    },
}

/// How the test bank answers reversal-side messages (0400/0420, 0600).
#[derive(Clone, Copy, Debug)]
pub enum ReversalBehaviour {
    /// Acknowledge (00); status inquiries say "executed".
    Acknowledge,
    /// Refuse (05).
    Refuse,
}

/// A TLS bank server speaking an ISO 8583 dialect.
pub struct BankPeer {
    pub addr: SocketAddr,
    pub financial_requests: Arc<AtomicUsize>,
    /// Every reversal-side message received (0400/0401/0420/0421/0600).
    pub reversals: Arc<std::sync::Mutex<Vec<Transaction>>>,
    /// Every financial request received, as decoded.
    pub requests: Arc<std::sync::Mutex<Vec<Transaction>>>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    accept: Option<tokio::task::JoinHandle<()>>,
}

impl BankPeer {
    /// A bank speaking `codec` as named in config (`iso8583:<dialect>`,
    /// `iso20022`, `json`), 2-byte binary length framing.
    pub async fn start(pki: &Pki, codec: &str, behaviour: Behaviour) -> BankPeer {
        Self::start_on(pki, codec, behaviour, "127.0.0.1:0".parse().unwrap()).await
    }

    /// As [`BankPeer::start`], listening on `addr` (e.g. the port of a bank
    /// that was stopped, to simulate a restart).
    pub async fn start_on(
        pki: &Pki,
        codec: &str,
        behaviour: Behaviour,
        addr: SocketAddr,
    ) -> BankPeer {
        Self::start_full(pki, codec, behaviour, ReversalBehaviour::Acknowledge, addr).await
    }

    /// As [`BankPeer::start_on`], choosing how reversals are answered.
    pub async fn start_full(
        pki: &Pki,
        codec: &str,
        behaviour: Behaviour,
        reversal: ReversalBehaviour,
        addr: SocketAddr,
    ) -> BankPeer {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = pki.bank_server();
        let codec = codec_named(codec);
        let count = Arc::new(AtomicUsize::new(0));
        let reversals = Arc::new(std::sync::Mutex::new(Vec::new()));
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let c2 = count.clone();
        let (r2, q2) = (reversals.clone(), requests.clone());
        let accept = tokio::spawn(async move {
            let mut stopped_accept = stopped.clone();
            loop {
                let (tcp, _) = tokio::select! {
                    a = listener.accept() => a.unwrap(),
                    _ = stopped_accept.changed() => return,
                };
                let acceptor = acceptor.clone();
                let codec = codec.clone();
                let count = c2.clone();
                let seen = Seen {
                    reversals: r2.clone(),
                    requests: q2.clone(),
                };
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    // Stopping the bank closes its connections too.
                    tokio::select! {
                        _ = async {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                serve_bank(tls, codec, behaviour, reversal, count, seen).await;
                            }
                        } => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        });
        BankPeer {
            addr,
            financial_requests: count,
            reversals,
            requests,
            stop: Some(stop),
            accept: Some(accept),
        }
    }

    /// Stop listening and close every connection; returns once the port
    /// is free again.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(a) = self.accept.take() {
            let _ = a.await;
        }
    }
}

impl Drop for BankPeer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
    }
}

#[derive(Clone)]
struct Seen {
    reversals: Arc<std::sync::Mutex<Vec<Transaction>>>,
    requests: Arc<std::sync::Mutex<Vec<Transaction>>>,
}

async fn serve_bank(
    stream: impl Stream + 'static,
    codec: Arc<dyn MessageCodec>,
    behaviour: Behaviour,
    reversal: ReversalBehaviour,
    count: Arc<AtomicUsize>,
    seen: Seen,
) {
    let (mut rd, wr) = tokio::io::split(stream);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<BytesMut>(4096);
    tokio::spawn(async move {
        let mut wr = wr;
        while let Some(f) = rx.recv().await {
            if wr.write_all(&f).await.is_err() {
                return;
            }
        }
    });
    let mut buf = BytesMut::new();
    let mut seed: u64 = 0x1234_5678;
    let framer = framer();
    while let Some(msg) = read_frame(&mut rd, &mut buf, &framer).await {
        let req = codec.decode(&msg).expect("the switch sends valid messages");
        let (answer, delay) = if req.mti.class() == 8 {
            (Some(req.response(ResponseCode::APPROVED)), 0)
        } else if matches!(req.mti.class(), 4 | 6) {
            seen.reversals.lock().unwrap().push(req.clone());
            let code = match reversal {
                ReversalBehaviour::Acknowledge => ResponseCode::APPROVED,
                ReversalBehaviour::Refuse => ResponseCode::DO_NOT_HONOUR,
            };
            (Some(req.response(code)), 0)
        } else {
            count.fetch_add(1, Ordering::Relaxed);
            seen.requests.lock().unwrap().push(req.clone());
            match behaviour {
                Behaviour::Approve { max_delay_ms } => {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let mut a = req.response(ResponseCode::APPROVED);
                    a.auth_id = Some(AuthId::parse(b"AUTH01").unwrap());
                    (Some(a), (seed >> 33) % (max_delay_ms + 1))
                }
                Behaviour::Decline(code) => {
                    (Some(req.response(ResponseCode::parse(code).unwrap())), 0)
                }
                Behaviour::Silent => (None, 0),
                Behaviour::Late { delay_ms, code } => {
                    let mut a = req.response(ResponseCode::parse(code).unwrap());
                    if a.response_code == Some(ResponseCode::APPROVED) {
                        a.auth_id = Some(AuthId::parse(b"AUTH01").unwrap());
                    }
                    (Some(a), delay_ms)
                }
            }
        };
        if let Some(mut a) = answer {
            // ISO 20022 answers carry the settlement date and agents too.
            a.settlement_date = req.settlement_date;
            a.sending_bank = req.sending_bank;
            let f = frame(&*codec, &a);
            let tx = tx.clone();
            tokio::spawn(async move {
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                let _ = tx.send(f).await;
            });
        }
    }
}

// ---------------------------------------------------------------- gateway

/// An upstream gateway connection speaking the canonical protocol; or,
/// from [`Gateway::connect_tls_speaking`], a bank's own end of an inbound
/// link speaking its dialect.
pub struct Gateway {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    codec: Arc<dyn MessageCodec>,
    framer: Framer,
}

impl Gateway {
    /// Connect with mTLS presenting `identity` (or none).
    pub async fn connect_tls(
        addr: SocketAddr,
        pki: &Pki,
        identity: Option<&str>,
    ) -> std::io::Result<Gateway> {
        let tcp = TcpStream::connect(addr).await?;
        let tls = pki
            .client(identity)
            .connect(ServerName::try_from("switch.test").unwrap(), tcp)
            .await?;
        Ok(Gateway::wrap(Box::new(tls)))
    }

    /// Connect with mTLS presenting `identity`, speaking `codec` (as named
    /// in config: `iso8583:<dialect>`, `iso20022`, `json`) in frames of
    /// `framing`: a bank on its inbound link.
    pub async fn connect_tls_speaking(
        addr: SocketAddr,
        pki: &Pki,
        identity: &str,
        codec: &str,
        framing: FrameConfig,
    ) -> std::io::Result<Gateway> {
        let mut g = Gateway::connect_tls(addr, pki, Some(identity)).await?;
        g.codec = codec_named(codec);
        g.framer = Framer::new(framing).unwrap();
        Ok(g)
    }

    /// Connect without TLS (listener with `tls = false`).
    pub async fn connect_plain(addr: SocketAddr) -> std::io::Result<Gateway> {
        Ok(Gateway::wrap(Box::new(TcpStream::connect(addr).await?)))
    }

    fn wrap(stream: Box<dyn Stream>) -> Gateway {
        Gateway {
            stream,
            buf: BytesMut::new(),
            codec: codec_named("iso8583:canonical"),
            framer: framer(),
        }
    }

    pub async fn send(&mut self, txn: &Transaction) {
        let f = frame_payload(&self.framer, |out| self.codec.encode(txn, out).unwrap());
        self.stream.write_all(&f).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Send `message` (already encoded, e.g. a captured wire message) in
    /// one frame of this connection's framing.
    pub async fn send_message(&mut self, message: &[u8]) -> std::io::Result<()> {
        let f = frame_payload(&self.framer, |out| out.extend_from_slice(message));
        self.send_raw(&f).await
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// The next answer, or `None` on EOF/error/timeout (10 s).
    pub async fn recv(&mut self) -> Option<Transaction> {
        let msg = self.recv_message().await?;
        Some(
            self.codec
                .decode(&msg)
                .expect("the switch sends valid messages in this dialect"),
        )
    }

    /// The next answer's message bytes (frame removed), undecoded, or
    /// `None` on EOF/error/timeout (10 s).
    pub async fn recv_message(&mut self) -> Option<BytesMut> {
        tokio::time::timeout(
            Duration::from_secs(10),
            read_frame(&mut self.stream, &mut self.buf, &self.framer),
        )
        .await
        .ok()?
    }

    /// Whether the switch closed the connection (within 5 s).
    pub async fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    pub async fn request(&mut self, txn: &Transaction) -> Transaction {
        self.send(txn).await;
        self.recv().await.expect("an answer")
    }
}

/// A canonical 0200 credit transfer to `bank`.
pub fn credit_transfer(stan: u32, bank: &str) -> Transaction {
    let mut t = Transaction::new(Mti::CREDIT_TRANSFER);
    t.processing_code = Some(ProcessingCode::CREDIT_TRANSFER);
    t.amount = Some(AmountMinor::new(12_345).unwrap());
    t.transmitted_at = Some(TransmissionDateTime::parse(b"0315103000").unwrap());
    t.stan = Some(Stan::new(stan).unwrap());
    t.local_time = Some(LocalTime::parse(b"183000").unwrap());
    t.local_date = Some(LocalDate::parse(b"0315").unwrap());
    t.acquirer = Some(InstitutionId::parse(b"123456").unwrap());
    t.rrn = Some(Rrn::parse(format!("GW{stan:010}").as_bytes()).unwrap());
    t.terminal_id = Some(TerminalId::parse(b"TERM0001").unwrap());
    t.merchant_id = Some(MerchantId::parse(b"MERCHANT0000001").unwrap());
    t.currency = Some(Currency::HKD);
    t.receiving_bank = Some(BankCode::parse(bank.as_bytes()).unwrap());
    t.debtor_account = Some(Account::parse(b"123456789012").unwrap());
    t.creditor_account = Some(Account::parse(b"987654321098").unwrap());
    t
}

// ---------------------------------------------------------------- switch

/// One bank in a test config.
pub struct BankSpec {
    pub code: &'static str,
    pub name: &'static str,
    /// As in config: `iso8583:<dialect>`, `iso20022`, `json`.
    pub codec: &'static str,
    pub addr: SocketAddr,
    pub request_timeout_ms: u64,
}

/// A complete test config: mTLS upstream on 127.0.0.1:0 and these banks.
pub fn config_toml(pki: &Pki, banks: &[BankSpec], extra_upstream: &str) -> String {
    let p = |n: &str| pki.path(n).display().to_string();
    let mut s = format!(
        r#"
[log]
filter = "warn"

[switch]
participant_code = "950"

[upstream]
bind = "127.0.0.1:0"
tls = true
cert = "{}"
key = "{}"
client_ca = "{}"
handshake_timeout_ms = 2000
{extra_upstream}

[admin]
bind = "127.0.0.1:0"

# Many small switches: no resident idempotency table up front.
[idempotency]
pretouch = false

[shutdown]
drain_timeout_ms = 2000
"#,
        p("switch.crt"),
        p("switch.key"),
        p("ca.crt")
    );
    for b in banks {
        s += &format!(
            r#"
[[banks]]
code = "{}"
name = "{}"
codec = "{}"
endpoints = ["{}"]
request_timeout_ms = {}
connect_timeout_ms = 2000
pool = {{ min = 1, max = 2 }}
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
            b.request_timeout_ms,
            p("switch-client.crt"),
            p("switch-client.key"),
            p("ca.crt"),
        );
    }
    s
}

/// A credit transfer addressed by FPS proxy only (F120, no F100).
pub fn credit_transfer_to_proxy(stan: u32, proxy: &str) -> Transaction {
    let mut t = credit_transfer(stan, "000");
    t.receiving_bank = None;
    t.proxy = Some(ProxyId::parse(proxy.as_bytes()).unwrap());
    t
}

/// A running switch.
pub struct Running {
    pub upstream: SocketAddr,
    pub admin: SocketAddr,
    /// What SIGHUP calls in the daemon.
    pub reloader: fps_switch::routing::ProxyReloader,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<bool>>,
}

impl Running {
    /// Build and run a switch from TOML; waits until `/healthz` answers.
    pub async fn start(toml_text: &str) -> Running {
        let cfg = Config::from_toml_str(toml_text).expect("test config parses");
        cfg.validate().expect("test config is valid");
        let switch = Switch::build(&cfg).await.expect("switch builds");
        let (upstream, admin) = (switch.upstream_addr(), switch.admin_addr());
        let reloader = switch.proxy_reloader();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(switch.run(async {
            let _ = stopped.await;
        }));
        Running {
            upstream,
            admin,
            reloader,
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// Wait until `/readyz` says 200 (every bank has a link up).
    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if http_get(self.admin, "/readyz").await.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "switch not ready: {}",
            http_get(self.admin, "/links").await.1
        );
    }

    /// Shut down and return whether it drained.
    pub async fn stop(mut self) -> bool {
        let _ = self.stop.take().unwrap().send(());
        self.done.take().unwrap().await.unwrap()
    }

    /// Start shutting down; `join` waits for the end.
    pub fn begin_stop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
    }

    /// Wait for a shutdown begun with `begin_stop`.
    pub async fn join(mut self) -> bool {
        self.done.take().unwrap().await.unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// GET `path` from the admin server: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (0, String::new());
    };
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

/// The value of a metric sample line starting with `series` (name and
/// labels as rendered, e.g. `fps_switch_circuit_state{bank="x"}`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Answers the switch wrote on `bank`'s inbound links with response code
/// `code`, from a `/metrics` text.
pub fn inbound_answers(text: &str, bank: &str, code: &str) -> f64 {
    metric_sum(
        text,
        "fps_switch_bank_inbound_answers_total",
        &[("bank", bank), ("code", code)],
    )
}

/// The sum of every sample of `name` in a `/metrics` text whose labels
/// include `labels` (all of them, when `labels` is empty).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (have, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            let matches = labels.iter().all(|(k, v)| {
                let want = format!("{k}=\"{v}\"");
                have.split(',').any(|kv| kv == want)
            });
            matches.then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// Poll `/links` until the pool-level `"up"` counts include `want`.
pub async fn wait_links(admin: SocketAddr, want: &str) {
    for _ in 0..400 {
        if http_get(admin, "/links").await.1.contains(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "links never showed {want}: {}",
        http_get(admin, "/links").await.1
    );
}

/// A port with nothing listening on it.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}
