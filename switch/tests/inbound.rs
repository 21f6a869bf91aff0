//! Inbound bank links (issue #4 item 5, issue #7 item 6): banks open mTLS
//! links to the switch's `[bank_inbound]` listener, are identified by
//! their client certificate, and their payments are routed like upstream
//! ones and answered on the same link. Real TLS on 127.0.0.1; the MAC test
//! uses the real SoftHSM2 development token (as `hsm_path.rs`: skipped
//! without one unless `FPS_REQUIRE_HSM=1`).

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use fps_codecs::framing::{FrameConfig, Framer};
use fps_codecs::iso8583::Iso8583Codec;
use fps_codecs::model::*;
use fps_codecs::MessageCodec;
use fps_hsm::devtoken;
use fps_hsm::software::SoftKey;
use support::inbound::{
    bank_client_certs, bank_payment, code, config, metrics, start, Bank, Started, Token,
};
use support::{inbound_answers, metric_sum, BankPeer, Behaviour, Gateway, Pki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------- PKI

/// SHA-256 of a PEM certificate file, as hex.
fn pin_of(path: &std::path::Path) -> String {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(path).unwrap();
    fps_switch::bank::inbound::fingerprint_sha256(der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A support PKI with bank client certificates `stems` (file stem, name).
fn bank_pki(stems: &[(&str, &str)]) -> Pki {
    let pki = Pki::new();
    bank_client_certs(&pki, stems);
    pki
}

// ---------------------------------------------------------------- helpers

/// The codec of every bank here.
const CANONICAL: &str = "iso8583:canonical";

/// Bank 003's `inbound` table: links are accepted from `in003`'s name.
const INBOUND_003: &str = r#"{ identity = "bank003.inbound.test" }"#;

/// A bank speaking `CANONICAL` at `addr`, opening links to the switch as
/// its `inbound` table says (empty: it does not).
fn canonical_bank<'a>(
    code: &'a str,
    name: &'a str,
    addr: SocketAddr,
    inbound: &'a str,
) -> Bank<'a> {
    Bank {
        inbound,
        ..Bank::outbound(code, name, CANONICAL, addr)
    }
}

/// Bank 003 (the origin, approving at once) and bank 004 (the
/// destination) as `BankPeer`s, and a switch between them.
struct TwoBanks {
    origin: BankPeer,
    dest: BankPeer,
    switch: Started,
}

impl TwoBanks {
    /// Start the peers, the destination answering as `dest`, and a switch
    /// with banks 003 and 004 configured as (name, `inbound` table).
    async fn start(
        pki: &Pki,
        dest: Behaviour,
        (name_003, inbound_003): (&str, &str),
        (name_004, inbound_004): (&str, &str),
    ) -> TwoBanks {
        let origin = BankPeer::start(pki, CANONICAL, Behaviour::Approve { max_delay_ms: 0 }).await;
        let dest = BankPeer::start(pki, CANONICAL, dest).await;
        let banks = [
            canonical_bank("003", name_003, origin.addr, inbound_003),
            canonical_bank("004", name_004, dest.addr, inbound_004),
        ];
        let switch = start(&config(pki, &banks, None)).await;
        TwoBanks {
            origin,
            dest,
            switch,
        }
    }
}

/// Bank 003's link to the switch, presenting its certificate `in003`.
async fn bank_003_link(switch: &Started, pki: &Pki) -> Gateway {
    Gateway::connect_tls(switch.inbound, pki, Some("in003"))
        .await
        .unwrap()
}

/// A raw mTLS link to the inbound listener at `addr` presenting `identity`.
async fn connect_as(
    addr: SocketAddr,
    pki: &Pki,
    identity: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    pki.client(Some(identity))
        .connect(
            rustls::pki_types::ServerName::try_from("switch.test").unwrap(),
            tcp,
        )
        .await
}

/// `txn` in canonical ISO 8583, framed as on a bank link.
fn frame_of(txn: &Transaction) -> BytesMut {
    let codec = Iso8583Codec::builtin("canonical").unwrap();
    let framer = Framer::new(FrameConfig::default()).unwrap();
    let mut out = BytesMut::new();
    let mark = framer.begin(&[], &mut out).unwrap();
    codec.encode(txn, &mut out).unwrap();
    framer.finish(mark, &mut out).unwrap();
    out
}

async fn closed_by_switch(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

// ---------------------------------------------------------------- the token

/// Test key material: fixed bytes, test only, never a real key.
const HMAC_SECRET: [u8; 32] = [0x5a; 32];
const MAC_HMAC: &str = r#"{ mac = { label = "t-inbound-hmac", mechanism = "hmac_sha256" } }"#;

/// The development token with the test key in it, or `None` (skipped)
/// with the reason printed; a failure under `FPS_REQUIRE_HSM=1`. The
/// first call sets the environment up, before any test uses the HSM.
fn token() -> Option<Token> {
    static TOKEN: OnceLock<Result<Token, String>> = OnceLock::new();
    devtoken::or_skip("inbound MAC", TOKEN.get_or_init(open_token).as_ref()).cloned()
}

fn open_token() -> Result<Token, String> {
    let dev = devtoken::open(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")))?;
    let key = SoftKey::hmac_sha256(&HMAC_SECRET).map_err(|e| e.to_string())?;
    dev.import_if_absent("t-inbound-hmac-v1", &key)?;
    // `dev.session` closes here: the switch under test opens its own.
    Ok(Token {
        module: dev.module,
        label: dev.label,
    })
}

// ---------------------------------------------------------------- a MACing bank

/// A bank's own end of an inbound link speaking canonical ISO 8583 with
/// an HMAC-SHA256 MAC in F128, computed outside the HSM (an independent
/// implementation checks the switch's, and the switch checks these).
struct MacingBank {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    buf: BytesMut,
    codec: Iso8583Codec,
    framer: Framer,
    key: SoftKey,
}

impl MacingBank {
    async fn connect(addr: SocketAddr, pki: &Pki, identity: &str) -> MacingBank {
        let stream = connect_as(addr, pki, identity).await.unwrap();
        MacingBank {
            stream,
            buf: BytesMut::new(),
            codec: Iso8583Codec::builtin("canonical").unwrap(),
            framer: Framer::new(FrameConfig::default()).unwrap(),
            key: SoftKey::hmac_sha256(&HMAC_SECRET).unwrap(),
        }
    }

    /// Send `txn` with a MAC (flipped in one bit when `corrupt`).
    async fn send(&mut self, txn: &Transaction, corrupt: bool) {
        let mut t = txn.clone();
        let mut covered = BytesMut::new();
        self.codec.encode_auth_input(&t, &mut covered).unwrap();
        let mut tag = self.key.mac(&covered).unwrap();
        if corrupt {
            tag[0] ^= 1;
        }
        t.mac = self.codec.auth_slot().mac_value(&tag);
        self.stream.write_all(&frame_of(&t)).await.unwrap();
    }

    /// The next answer, and whether its MAC verifies with the bank's key.
    async fn recv(&mut self) -> (Transaction, bool) {
        let msg = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(f) = self.framer.decode(&mut self.buf).unwrap() {
                    return f.message;
                }
                assert!(self.stream.read_buf(&mut self.buf).await.unwrap() > 0);
            }
        })
        .await
        .expect("an answer within 10 s");
        let a = self.codec.decode_authenticated(&msg).unwrap();
        let ok = match (&a.mac, &a.auth_input) {
            (Some(mac), Some(covered)) => {
                let got = self.codec.auth_slot().mac_bytes(mac).unwrap();
                let want = self.key.mac(covered.as_bytes()).unwrap();
                want[..got.len()] == got[..]
            }
            _ => false,
        };
        (a, ok)
    }
}

// ---------------------------------------------------------------- tests

/// A bank opens a link with its own certificate, pays another bank and
/// gets the answer on the same link; the destination sees it once, and a
/// resend of the same request (same key) is answered without a second
/// trip. Sign-on and echo are answered 0810.
#[tokio::test]
async fn a_bank_payment_is_routed_and_answered_on_the_same_link() {
    let pki = bank_pki(&[("in003", "bank003.inbound.test")]);
    let TwoBanks {
        origin,
        dest,
        switch,
    } = TwoBanks::start(
        &pki,
        Behaviour::Approve { max_delay_ms: 5 },
        // Not the certificate's case: identities match case-insensitively.
        ("rt003", r#"{ identity = "Bank003.Inbound.test" }"#),
        ("rt004", ""),
    )
    .await;
    let mut bank = bank_003_link(&switch, &pki).await;
    let mut sign_on = Transaction::new(Mti::NETWORK);
    sign_on.transmitted_at = Some(TransmissionDateTime::parse(b"0315103000").unwrap());
    sign_on.stan = Some(Stan::new(900).unwrap());
    sign_on.network_code = Some(NetworkCode::SignOn);
    let a = bank.request(&sign_on).await;
    assert_eq!((a.mti, code(&a)), (Mti::NETWORK_RESPONSE, "00"));

    let pay = bank_payment(1, "003", "004");
    let a = bank.request(&pay).await;
    assert_eq!(code(&a), "00");
    assert_eq!(a.stan, pay.stan, "the bank's own STAN comes back");
    assert_eq!(a.rrn, pay.rrn);
    assert_eq!(a.auth_id, AuthId::parse(b"AUTH01").ok());
    let resend = bank.request(&pay).await;
    assert_eq!(code(&resend), "00", "a duplicate gets the original outcome");
    assert_eq!(dest.financial_requests.load(Relaxed), 1, "sent once");
    assert_eq!(origin.financial_requests.load(Relaxed), 0);
    // The destination saw the switch's ids, not the bank's.
    let seen = dest.requests.lock().unwrap()[0].clone();
    assert_ne!(seen.rrn, pay.rrn);
    assert_eq!(seen.amount, pay.amount);

    // A payment back to the same bank is fine when routing says so.
    let home = bank.request(&bank_payment(2, "003", "003")).await;
    assert_eq!(code(&home), "00");
    assert_eq!(origin.financial_requests.load(Relaxed), 1);

    let m = metrics(switch.admin).await;
    assert_eq!(
        metric_sum(&m, "fps_switch_bank_inbound_links", &[("bank", "rt003")]),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "fps_switch_bank_inbound_requests_total",
            &[("bank", "rt003"), ("class", "2")]
        ),
        3.0
    );
    assert_eq!(inbound_answers(&m, "rt003", "00"), 4.0);
    drop(bank);
    assert!(switch.stop().await, "drained");
}

/// Many requests in flight on one link, answered as the destination
/// answers them (out of order), each exactly once.
#[tokio::test]
async fn several_in_flight_are_answered_out_of_order() {
    let pki = bank_pki(&[("in003", "bank003.inbound.test")]);
    // `_origin`, not `..`: dropping a peer stops it, and the switch's pool
    // to bank 003 is to stay linked to it for the whole test.
    let TwoBanks {
        origin: _origin,
        dest,
        switch,
    } = TwoBanks::start(
        &pki,
        Behaviour::Approve { max_delay_ms: 150 },
        ("ooo003", INBOUND_003),
        ("ooo004", ""),
    )
    .await;
    let mut bank = bank_003_link(&switch, &pki).await;
    let n = 24u32;
    for stan in 1..=n {
        bank.send(&bank_payment(stan, "003", "004")).await;
    }
    let mut order = Vec::new();
    for _ in 1..=n {
        let a = bank.recv().await.expect("an answer");
        assert_eq!(code(&a), "00");
        order.push(a.stan.unwrap().value());
    }
    let unique: HashSet<u32> = order.iter().copied().collect();
    assert_eq!(unique.len(), n as usize, "each answered once: {order:?}");
    assert!(
        order.windows(2).any(|w| w[0] > w[1]),
        "out of order: {order:?}"
    );
    assert_eq!(dest.financial_requests.load(Relaxed), n as usize);
    drop(bank);
    switch.stop().await;
}

/// Certificates that verify but name no bank accepted here, a bank whose
/// inbound links are disabled, another bank's name on a certificate that
/// is not the pinned one, and a certificate from an untrusted CA: each
/// link is closed and counted by reason.
#[tokio::test]
async fn certificates_that_name_no_accepted_bank_are_refused_and_counted() {
    let pki = bank_pki(&[
        ("in003", "bank003.inbound.test"),
        ("in004", "bank004.inbound.test"),
        ("stranger", "bank999.inbound.test"),
        // Claims bank 003's name, with its own key: not the pinned certificate.
        ("impostor003", "bank003.inbound.test"),
    ]);
    let pinned = format!(
        r#"{{ identity = "bank003.inbound.test", sha256 = "{}" }}"#,
        pin_of(&pki.path("in003.crt"))
    );
    let TwoBanks {
        origin,
        dest,
        switch,
    } = TwoBanks::start(
        &pki,
        Behaviour::Approve { max_delay_ms: 0 },
        ("ref003", &pinned),
        (
            "ref004",
            r#"{ identity = "bank004.inbound.test", enabled = false }"#,
        ),
    )
    .await;
    let refused = |m: &str, reason: &str| {
        metric_sum(
            m,
            "fps_switch_bank_inbound_refused_total",
            &[("reason", reason)],
        )
    };
    let before = metrics(switch.admin).await;
    for (identity, reason) in [
        ("stranger", "unknown_identity"),
        ("impostor003", "unknown_identity"),
        ("in004", "inbound_disabled"),
        // The support PKI's "rogue" comes from a CA the listener does not trust.
        ("rogue", "unknown_ca"),
        // The gateway's certificate chains to the upstream CA, not the banks'.
        ("gateway", "unknown_ca"),
    ] {
        if let Ok(mut s) = connect_as(switch.inbound, &pki, identity).await {
            // TLS 1.3: the client finishes first; the switch closes after.
            let _ = s.write_all(&frame_of(&bank_payment(1, "003", "003"))).await;
            assert!(closed_by_switch(&mut s).await, "{identity}: link closed");
        }
        let mut counted = false;
        for _ in 0..100 {
            let now = metrics(switch.admin).await;
            if refused(&now, reason) > refused(&before, reason) {
                counted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(counted, "{identity}: refusal counted as {reason}");
    }
    // Nothing was routed; the real bank 003 still gets in.
    assert_eq!(origin.financial_requests.load(Relaxed), 0);
    assert_eq!(dest.financial_requests.load(Relaxed), 0);
    let mut bank = bank_003_link(&switch, &pki).await;
    assert_eq!(
        code(&bank.request(&bank_payment(5, "003", "004")).await),
        "00"
    );
    let m = metrics(switch.admin).await;
    let total = metric_sum(&m, "fps_switch_bank_inbound_refused_total", &[])
        - metric_sum(&before, "fps_switch_bank_inbound_refused_total", &[]);
    assert_eq!(total, 5.0, "{m}");
    drop(bank);
    switch.stop().await;
}

/// With `auth`, a request whose MAC is wrong is answered 63 (MACed) and
/// never routed; a good one is routed and its answer carries the switch's
/// MAC, made in the token, checked here with an independent HMAC.
#[tokio::test]
async fn a_bad_mac_is_answered_63_and_never_routed() {
    let Some(token) = token() else { return };
    let pki = bank_pki(&[("in003", "bank003.inbound.test")]);
    // The origin's outbound pool has the same auth, so it MACs its sign-on
    // and checks the 0810: no outbound link to it here (only the inbound
    // link matters), so no unMACed 0810 counts as an auth failure.
    let origin_addr = support::closed_port().await;
    let dest = BankPeer::start(&pki, CANONICAL, Behaviour::Approve { max_delay_ms: 0 }).await;
    let banks = [
        Bank {
            auth: MAC_HMAC,
            ..canonical_bank("003", "mac003", origin_addr, INBOUND_003)
        },
        canonical_bank("004", "mac004", dest.addr, ""),
    ];
    let switch = start(&config(&pki, &banks, Some(&token))).await;
    let mut bank = MacingBank::connect(switch.inbound, &pki, "in003").await;
    bank.send(&bank_payment(1, "003", "004"), true).await;
    let (a, verified) = bank.recv().await;
    assert_eq!(code(&a), "63", "security violation");
    assert!(verified, "the refusal is MACed too");
    assert_eq!(dest.financial_requests.load(Relaxed), 0, "not routed");

    bank.send(&bank_payment(2, "003", "004"), false).await;
    let (a, verified) = bank.recv().await;
    assert_eq!(code(&a), "00");
    assert_eq!(a.stan, Some(Stan::new(2).unwrap()));
    assert!(verified, "the switch's MAC on the answer verifies");
    assert_eq!(dest.financial_requests.load(Relaxed), 1);
    let m = metrics(switch.admin).await;
    assert_eq!(inbound_answers(&m, "mac003", "63"), 1.0, "{m}");
    assert_eq!(
        metric_sum(
            &m,
            "fps_switch_bank_auth_failures_total",
            &[("bank", "mac003")]
        ),
        1.0
    );
    switch.stop().await;
}

/// A frame that does not decode but whose layout is sound is answered 30;
/// garbage closes that link only.
#[tokio::test]
async fn bad_frames_get_a_format_error_or_close_the_link() {
    let pki = bank_pki(&[("in003", "bank003.inbound.test")]);
    let origin = BankPeer::start(&pki, CANONICAL, Behaviour::Approve { max_delay_ms: 0 }).await;
    let banks = [canonical_bank("003", "bad003", origin.addr, INBOUND_003)];
    let switch = start(&config(&pki, &banks, None)).await;
    let mut bank = bank_003_link(&switch, &pki).await;
    // F4 with a letter in it: the layout is sound, the value is not.
    let good = frame_of(&bank_payment(7, "003", "003"));
    let text = String::from_utf8_lossy(&good[2..]).into_owned();
    let at = text.find("000000012345").expect("F4 in the message") + 2;
    let mut bad = good.to_vec();
    bad[at + 11] = b'X';
    bank.send_raw(&bad).await.unwrap();
    let a = bank.recv().await.expect("a format error answer");
    assert_eq!(code(&a), "30");
    assert_eq!(a.stan, Some(Stan::new(7).unwrap()));
    // Garbage: the link is closed.
    bank.send_raw(&[0, 4, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    assert!(bank.is_closed().await);
    // Another link still works.
    let mut again = bank_003_link(&switch, &pki).await;
    assert_eq!(
        code(&again.request(&bank_payment(8, "003", "003")).await),
        "00"
    );
    drop(again);
    switch.stop().await;
}
