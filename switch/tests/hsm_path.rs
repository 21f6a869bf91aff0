//! The HSM in the path (issue #4 item 7), against a real SoftHSM2 token:
//! the development token of `scripts/softhsm-init` (`SOFTHSM2_CONF`, or
//! `target/softhsm/softhsm2.conf` when that is unset; PIN in `FPS_HSM_PIN`,
//! default 1234). Without a token these tests print why and pass as
//! skipped; with `FPS_REQUIRE_HSM=1` (scripts/test) they fail instead.
//!
//! Known test keys are imported into the token under `t-hsmpath-*` labels
//! (non-extractable there, like every key), so the bank peer here can check
//! the switch's MACs and signatures with an independent implementation
//! (RustCrypto, through `fps_hsm::software::SoftKey`) while the switch uses
//! the token through PKCS#11. The bank holds only the switch's public key,
//! the switch only the bank's.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use fps_codecs::framing::{FrameConfig, Framer};
use fps_codecs::model::*;
use fps_codecs::MessageCodec;
use fps_hsm::devtoken;
use fps_hsm::software::SoftKey;
use fps_switch::Config;
use support::{credit_transfer, http_get, metric, write_file, Gateway, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ---------------------------------------------------------------- the token

/// Test key material: fixed bytes, test only, never a real key.
const HMAC_SECRET: [u8; 32] = [0x11; 32];
const CMAC_KEY: [u8; 16] = [0x22; 16];
const SWITCH_EC: [u8; 32] = [0x33; 32];
const BANK_EC: [u8; 32] = [0x44; 32];

/// The development token with the test keys in it.
#[derive(Debug, Clone)]
struct Token {
    module: PathBuf,
    label: String,
}

/// The token, or `None` with the reason printed (a failure under
/// `FPS_REQUIRE_HSM=1`). The first call sets the environment up, before
/// any test uses the HSM: every test comes through here first.
fn token() -> Option<Token> {
    static TOKEN: OnceLock<Result<Token, String>> = OnceLock::new();
    let found = TOKEN.get_or_init(open_token).as_ref();
    devtoken::or_skip("HSM path", found).cloned()
}

fn open_token() -> Result<Token, String> {
    let dev = devtoken::open(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")))?;
    let keys = [
        ("t-hsmpath-hmac-v1", SoftKey::hmac_sha256(&HMAC_SECRET)),
        ("t-hsmpath-cmac-v1", SoftKey::aes_cmac(&CMAC_KEY)),
        (
            "t-hsmpath-switch-ec-v1",
            SoftKey::ecdsa_p256_private(&SWITCH_EC),
        ),
        // The switch only ever holds the bank's public key.
        (
            "t-hsmpath-bank-ec-v1",
            SoftKey::ecdsa_p256_private(&BANK_EC).map(|k| k.public_key().expect("EC")),
        ),
    ];
    for (label, key) in keys {
        dev.import_if_absent(label, &key.map_err(|e| e.to_string())?)?;
    }
    // `dev.session` closes here: the switch under test opens its own.
    Ok(Token {
        module: dev.module,
        label: dev.label,
    })
}

// ---------------------------------------------------------------- bank peer

/// The bank's side of the keys, outside the HSM (the independent check).
enum PeerKeys {
    Mac(SoftKey),
    Signature {
        /// The bank's private key (its answers).
        bank: SoftKey,
        /// The switch's public key (its requests).
        switch: SoftKey,
    },
}

fn hmac_peer() -> PeerKeys {
    PeerKeys::Mac(SoftKey::hmac_sha256(&HMAC_SECRET).unwrap())
}

fn cmac_peer() -> PeerKeys {
    PeerKeys::Mac(SoftKey::aes_cmac(&CMAC_KEY).unwrap())
}

fn ec_peer() -> PeerKeys {
    PeerKeys::Signature {
        bank: SoftKey::ecdsa_p256_private(&BANK_EC).unwrap(),
        switch: SoftKey::ecdsa_p256_private(&SWITCH_EC)
            .unwrap()
            .public_key()
            .unwrap(),
    }
}

/// How the peer tags its answers to payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tagging {
    /// A correct MAC or signature.
    Good,
    /// One bit flipped (reversal-side and network answers stay good).
    Corrupt,
    /// One bit flipped on network management answers (0810) only.
    CorruptNetwork,
}

#[derive(Debug, Default)]
struct Seen {
    /// Payment and reversal requests whose MAC/signature verified here.
    verified: usize,
    /// ... and those that did not.
    failed: usize,
    payments: Vec<Transaction>,
    reversals: Vec<Transaction>,
    /// Network management requests (F70) and whether their MAC verified.
    network: Vec<(Option<NetworkCode>, bool)>,
}

/// A plaintext bank speaking `codec` (2-byte length prefix).
struct Peer {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn codec_of(name: &str) -> Arc<dyn MessageCodec> {
    match name {
        "iso20022" => Arc::new(fps_codecs::iso20022::Iso20022Codec::default()),
        "json" => Arc::new(fps_codecs::json::JsonCodec::new()),
        other => Arc::new(
            fps_codecs::iso8583::Iso8583Codec::builtin(other.strip_prefix("iso8583:").unwrap())
                .unwrap(),
        ),
    }
}

impl Peer {
    async fn start(codec: &str, keys: PeerKeys, tagging: Tagging) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let iso20022 = codec == "iso20022";
        let codec = codec_of(codec);
        let keys = Arc::new(keys);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let (codec, keys, seen) = (codec.clone(), keys.clone(), seen2.clone());
                conns.push(tokio::spawn(serve(
                    tcp, codec, keys, seen, tagging, iso20022,
                )));
            }
        });
        Peer { addr, seen, task }
    }

    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap())
    }
}

async fn serve(
    mut tcp: tokio::net::TcpStream,
    codec: Arc<dyn MessageCodec>,
    keys: Arc<PeerKeys>,
    seen: Arc<Mutex<Seen>>,
    tagging: Tagging,
    iso20022: bool,
) {
    let framer = Framer::new(FrameConfig::default()).unwrap();
    let mut buf = BytesMut::new();
    let mut seq = 0u32;
    loop {
        let frame = loop {
            match framer.decode(&mut buf) {
                Ok(Some(f)) => break f,
                Ok(None) => {}
                Err(_) => return,
            }
            match tcp.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let req = codec
            .decode_authenticated(&frame.message)
            .expect("the switch sends valid messages");
        let class = req.mti.class();
        let mut answer = if class == 8 {
            // Network management is MACed like payments.
            let ok = verify_independently(&*codec, &keys, &req);
            seen.lock().unwrap().network.push((req.network_code, ok));
            req.response(if ok {
                ResponseCode::APPROVED
            } else {
                ResponseCode::SECURITY_VIOLATION
            })
        } else {
            let ok = verify_independently(&*codec, &keys, &req);
            let mut s = seen.lock().unwrap();
            if ok {
                s.verified += 1;
            } else {
                s.failed += 1;
            }
            if class == 2 {
                s.payments.push(req.clone());
            } else {
                s.reversals.push(req.clone());
            }
            let mut a = req.response(if ok {
                ResponseCode::APPROVED
            } else {
                ResponseCode::SECURITY_VIOLATION
            });
            if ok && class == 2 {
                a.auth_id = AuthId::parse(b"HSM001").ok();
            }
            a
        };
        // ISO 20022 answers carry the bank's own id (naming the request in
        // OrgnlMsgId), the date and the agents.
        seq += 1;
        if iso20022 {
            answer.message_id = MessageId::parse(format!("BANK{seq:08}").as_bytes()).ok();
        }
        answer.settlement_date = req.settlement_date;
        answer.sending_bank = req.sending_bank;
        let corrupt = match tagging {
            Tagging::Good => false,
            Tagging::Corrupt => class == 2,
            Tagging::CorruptNetwork => class == 8,
        };
        seal(&*codec, &keys, &mut answer, corrupt);
        let mut out = BytesMut::new();
        let mark = framer.begin(&[], &mut out).unwrap();
        codec.encode(&answer, &mut out).unwrap();
        framer.finish(mark, &mut out).unwrap();
        if tcp.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// The bank's own check of the switch's tag, without the HSM.
fn verify_independently(codec: &dyn MessageCodec, keys: &PeerKeys, req: &Transaction) -> bool {
    let Some(covered) = req.auth_input.as_ref() else {
        return false;
    };
    match keys {
        PeerKeys::Mac(key) => {
            let slot = codec.auth_slot();
            let Some(received) = req.mac.as_ref().and_then(|m| slot.mac_bytes(m)) else {
                return false;
            };
            let full = key.mac(covered.as_bytes()).unwrap();
            full[..received.len()] == received[..]
        }
        PeerKeys::Signature { switch, .. } => req
            .signature
            .as_ref()
            .is_some_and(|s| switch.verify(covered.as_bytes(), s.as_bytes()).unwrap()),
    }
}

/// The bank's tag on its answer, without the HSM; `corrupt` flips a bit.
fn seal(codec: &dyn MessageCodec, keys: &PeerKeys, answer: &mut Transaction, corrupt: bool) {
    let mut covered = BytesMut::new();
    codec.encode_auth_input(answer, &mut covered).unwrap();
    match keys {
        PeerKeys::Mac(key) => {
            let mut tag = key.mac(&covered).unwrap();
            if corrupt {
                tag[0] ^= 1;
            }
            answer.mac = codec.auth_slot().mac_value(&tag);
        }
        PeerKeys::Signature { bank, .. } => {
            let mut sig = bank.sign(&covered).unwrap();
            if corrupt {
                sig[0] ^= 1;
            }
            answer.signature = SignatureValue::new(&sig).ok();
        }
    }
}

// ---------------------------------------------------------------- switch

/// One bank in a test config.
struct Bank<'a> {
    name: &'a str,
    code: &'a str,
    codec: &'a str,
    addr: SocketAddr,
    auth: &'a str,
}

const MAC_HMAC: &str = r#"{ mac = { label = "t-hsmpath-hmac", mechanism = "hmac_sha256" } }"#;
const MAC_CMAC: &str = r#"{ mac = { label = "t-hsmpath-cmac", mechanism = "aes_cmac" } }"#;
const SIGN_EC: &str = r#"{ sign = { label = "t-hsmpath-switch-ec", mechanism = "ecdsa_p256_sha256" }, verify = { label = "t-hsmpath-bank-ec", mechanism = "ecdsa_p256_sha256" } }"#;

fn switch_toml(token: &Token, banks: &[Bank<'_>]) -> String {
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

[reversal]
base_backoff_ms = 50
max_backoff_ms = 200

[hsm]
backend = "pkcs11"
module_path = "{}"
token_label = "{}"
pin_env = "FPS_HSM_PIN"
"#,
        token.module.display(),
        token.label
    );
    for b in banks {
        s += &format!(
            r#"
[[banks]]
code = "{}"
name = "{}"
codec = "{}"
auth = {}
endpoints = ["{}"]
danger_plaintext = true
request_timeout_ms = 3000
connect_timeout_ms = 2000
pool = {{ min = 1, max = 1 }}
"#,
            b.code, b.name, b.codec, b.auth, b.addr
        );
    }
    s
}

async fn start_switch(token: &Token, banks: &[Bank<'_>]) -> Running {
    let running = Running::start(&switch_toml(token, banks)).await;
    running.wait_ready().await;
    running
}

fn code(t: &Transaction) -> &str {
    t.response_code.as_ref().map_or("none", |c| c.as_str())
}

async fn metrics(admin: SocketAddr) -> String {
    http_get(admin, "/metrics").await.1
}

/// Poll until `f` holds (5 s).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never happened: {what}");
}

// ---------------------------------------------------------------- tests

/// (a) A MACed 0200 round trip is approved; the bank checks the switch's
/// MAC (made in the token) with its own HMAC and CMAC implementations.
#[tokio::test]
async fn maced_credit_transfers_round_trip_and_the_bank_verifies_them() {
    let Some(token) = token() else { return };
    let hmac = Peer::start("iso8583:canonical", hmac_peer(), Tagging::Good).await;
    let cmac = Peer::start("iso8583:iso87-bcd-binary", cmac_peer(), Tagging::Good).await;
    let switch = start_switch(
        &token,
        &[
            Bank {
                name: "hmac003",
                code: "003",
                codec: "iso8583:canonical",
                addr: hmac.addr,
                auth: MAC_HMAC,
            },
            Bank {
                name: "cmac004",
                code: "004",
                codec: "iso8583:iso87-bcd-binary",
                addr: cmac.addr,
                auth: MAC_CMAC,
            },
        ],
    )
    .await;
    let mut gw = Gateway::connect_plain(switch.upstream).await.unwrap();
    for (stan, bank) in [(1, "003"), (2, "004"), (3, "003"), (4, "004")] {
        let answer = gw.request(&credit_transfer(stan, bank)).await;
        assert_eq!(code(&answer), "00", "to {bank}");
        assert_eq!(answer.stan, Some(Stan::new(stan).unwrap()));
    }
    for (peer, name) in [(&hmac, "hmac003"), (&cmac, "cmac004")] {
        peer.seen(|s| {
            assert_eq!((s.verified, s.failed), (2, 0), "{name}");
            for p in &s.payments {
                // 8 MAC bytes in F128: hex text in canonical, raw in BCD.
                let mac = p.mac.as_ref().expect("a MAC");
                assert_eq!(mac.as_bytes().len(), if name == "hmac003" { 16 } else { 8 });
            }
        });
    }
    let m = metrics(switch.admin).await;
    assert_eq!(
        metric(&m, r#"fps_switch_bank_auth_failures_total{bank="hmac003"}"#),
        Some(0.0),
        "no failure counted"
    );
    assert!(m.contains(r#"fps_hsm_op_seconds_count{mechanism="hmac_sha256",op="mac"}"#));
    assert!(m.contains(r#"fps_switch_bank_auth_seconds_count{bank="cmac004",op="check"}"#));
    switch.stop().await;
}

/// The same MACed round trips with `[hsm] inline_sessions`: the switch's
/// runtime threads MAC and check on sessions of their own (two, beside the
/// two workers'), and the bank still verifies every request and the switch
/// every answer.
#[tokio::test]
async fn maced_round_trips_on_inline_sessions() {
    let Some(token) = token() else { return };
    let hmac = Peer::start("iso8583:canonical", hmac_peer(), Tagging::Good).await;
    let banks = [Bank {
        name: "hmac003",
        code: "003",
        codec: "iso8583:canonical",
        addr: hmac.addr,
        auth: MAC_HMAC,
    }];
    let config = switch_toml(&token, &banks).replace(
        "pin_env = \"FPS_HSM_PIN\"\n",
        "pin_env = \"FPS_HSM_PIN\"\ninline_sessions = 2\n",
    );
    assert!(config.contains("inline_sessions = 2"));
    let switch = Running::start(&config).await;
    switch.wait_ready().await;
    let mut gw = Gateway::connect_plain(switch.upstream).await.unwrap();
    for stan in 1..=6 {
        let answer = gw.request(&credit_transfer(stan, "003")).await;
        assert_eq!(code(&answer), "00", "stan {stan}");
    }
    hmac.seen(|s| assert_eq!((s.verified, s.failed), (6, 0)));
    let m = metrics(switch.admin).await;
    // The sessions gauge is the process's (tests run switches side by side):
    // at least this switch's two workers and two inline sessions.
    assert!(
        metric(&m, "fps_hsm_sessions").is_some_and(|n| n >= 4.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"fps_switch_bank_auth_failures_total{bank="hmac003"}"#),
        Some(0.0)
    );
    switch.stop().await;
}

/// (b) An answer whose MAC is wrong is never approved: 68 upstream, the
/// reversal goes to the bank (MACed too), the failure is counted.
#[tokio::test]
async fn a_wrong_mac_on_the_answer_is_an_unknown_outcome_and_reversed() {
    let Some(token) = token() else { return };
    let peer = Peer::start("iso8583:canonical", hmac_peer(), Tagging::Corrupt).await;
    let switch = start_switch(
        &token,
        &[Bank {
            name: "badmac003",
            code: "003",
            codec: "iso8583:canonical",
            addr: peer.addr,
            auth: MAC_HMAC,
        }],
    )
    .await;
    let mut gw = Gateway::connect_plain(switch.upstream).await.unwrap();
    let answer = gw.request(&credit_transfer(7, "003")).await;
    assert_eq!(code(&answer), "68", "never 00 on a forged answer");
    eventually("the reversal reaches the bank", || {
        peer.seen(|s| !s.reversals.is_empty())
    })
    .await;
    peer.seen(|s| {
        let rev = &s.reversals[0];
        assert_eq!(rev.mti.class(), 4, "a reversal");
        let original = rev.original.expect("F90 names the original");
        assert_eq!(Some(original.stan), s.payments[0].stan);
        assert_eq!(s.failed, 0, "the switch's own MACs all verify");
    });
    let m = metrics(switch.admin).await;
    assert_eq!(
        metric(
            &m,
            r#"fps_switch_bank_auth_failures_total{bank="badmac003"}"#
        ),
        Some(1.0),
        "{m}"
    );
    // The retry of the same request gets the same (unknown) outcome, not a
    // second trip to the bank.
    let again = gw.request(&credit_transfer(7, "003")).await;
    assert_ne!(code(&again), "00");
    assert_eq!(peer.seen(|s| s.payments.len()), 1);
    switch.stop().await;
}

/// (c) ECDSA-signed ISO 20022 (and JSON) round trips: the switch signs with
/// its key in the token, the bank checks with the switch's public key; the
/// bank signs with its own key, the switch checks with the bank's public
/// key in the token.
#[tokio::test]
async fn ecdsa_signed_iso20022_and_json_round_trips() {
    let Some(token) = token() else { return };
    let xml = Peer::start("iso20022", ec_peer(), Tagging::Good).await;
    let json = Peer::start("json", ec_peer(), Tagging::Good).await;
    let switch = start_switch(
        &token,
        &[
            Bank {
                name: "ec012",
                code: "012",
                codec: "iso20022",
                addr: xml.addr,
                auth: SIGN_EC,
            },
            Bank {
                name: "ec024",
                code: "024",
                codec: "json",
                addr: json.addr,
                auth: SIGN_EC,
            },
        ],
    )
    .await;
    let mut gw = Gateway::connect_plain(switch.upstream).await.unwrap();
    for (stan, bank) in [(11, "012"), (12, "024")] {
        let answer = gw.request(&credit_transfer(stan, bank)).await;
        assert_eq!(code(&answer), "00", "to {bank}");
    }
    for peer in [&xml, &json] {
        peer.seen(|s| {
            assert_eq!((s.verified, s.failed), (1, 0));
            let sig = s.payments[0].signature.as_ref().expect("signed");
            assert_eq!(sig.as_bytes().len(), 64, "raw r || s");
        });
    }
    switch.stop().await;
}

/// A corrupted bank signature is refused like a wrong MAC.
#[tokio::test]
async fn a_bad_signature_on_the_answer_is_never_approved() {
    let Some(token) = token() else { return };
    let peer = Peer::start("json", ec_peer(), Tagging::Corrupt).await;
    let switch = start_switch(
        &token,
        &[Bank {
            name: "badsig024",
            code: "024",
            codec: "json",
            addr: peer.addr,
            auth: SIGN_EC,
        }],
    )
    .await;
    let mut gw = Gateway::connect_plain(switch.upstream).await.unwrap();
    let answer = gw.request(&credit_transfer(21, "024")).await;
    assert_eq!(code(&answer), "68");
    eventually("the cancellation reaches the bank", || {
        peer.seen(|s| !s.reversals.is_empty())
    })
    .await;
    let m = metrics(switch.admin).await;
    assert_eq!(
        metric(
            &m,
            r#"fps_switch_bank_auth_failures_total{bank="badsig024"}"#
        ),
        Some(1.0)
    );
    switch.stop().await;
}

/// A key the config names but the token lacks stops the start, naming it.
#[tokio::test]
async fn a_missing_key_refuses_to_start() {
    let Some(token) = token() else { return };
    let text = switch_toml(
        &token,
        &[Bank {
            name: "nokey",
            code: "003",
            codec: "iso8583:canonical",
            addr: "127.0.0.1:1".parse().unwrap(),
            auth: r#"{ mac = { label = "t-hsmpath-no-such-key", mechanism = "hmac_sha256" } }"#,
        }],
    );
    let cfg = Config::from_toml_str(&text).unwrap();
    cfg.validate().unwrap();
    let e = fps_switch::Switch::build(&cfg)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("t-hsmpath-no-such-key"), "{e}");
}

/// check-config (no token needed): auth without [hsm] is an error at its
/// key path, with every other error.
#[test]
fn check_config_reports_auth_without_hsm() {
    let dir = std::env::temp_dir().join(format!("fps-hsm-path-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = r#"
[upstream]
bind = "127.0.0.1:0"
tls = false
[admin]
bind = "127.0.0.1:0"

# Many small switches: no resident idempotency table up front.
[idempotency]
pretouch = false
[[banks]]
code = "003"
name = "bank003"
codec = "iso8583:canonical"
auth = { mac = { label = "mac-hmac", mechanism = "hmac_sha256" } }
endpoints = ["127.0.0.1:1"]
danger_plaintext = true
[[banks]]
code = "024"
name = "bank024"
codec = "json"
auth = { sign = { label = "sign-ec", mechanism = "ecdsa_p256_sha256" } }
endpoints = ["127.0.0.1:1"]
danger_plaintext = true
"#;
    let path = write_file(&dir, "auth.toml", text);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fps-switch"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for want in [
        "banks[0].auth: needs an [hsm] section",
        "banks[1].auth: needs an [hsm] section",
        "banks[1].auth.verify: required with sign",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// (g) Network management is MACed: sign-on, echo and sign-off carry the
/// switch's MAC (made in the token, checked here independently, HMAC and
/// CMAC), and the 0810s are verified.
#[tokio::test]
async fn sign_on_echo_and_sign_off_are_maced_both_ways() {
    let Some(token) = token() else { return };
    let hmac = Peer::start("iso8583:canonical", hmac_peer(), Tagging::Good).await;
    let cmac = Peer::start("iso8583:iso87-bcd-binary", cmac_peer(), Tagging::Good).await;
    let toml = switch_toml(
        &token,
        &[
            Bank {
                name: "nmhmac003",
                code: "003",
                codec: "iso8583:canonical",
                addr: hmac.addr,
                auth: MAC_HMAC,
            },
            Bank {
                name: "nmcmac004",
                code: "004",
                codec: "iso8583:iso87-bcd-binary",
                addr: cmac.addr,
                auth: MAC_CMAC,
            },
        ],
    )
    .replace(
        "pool = { min = 1, max = 1 }",
        "pool = { min = 1, max = 1 }\necho_interval_ms = 200",
    );
    let switch = Running::start(&toml).await;
    switch.wait_ready().await;
    for peer in [&hmac, &cmac] {
        eventually("an echo after 200 ms of quiet", || {
            peer.seen(|s| s.network.contains(&(Some(NetworkCode::Echo), true)))
        })
        .await;
    }
    let mut gw = Gateway::connect_plain(switch.upstream).await.unwrap();
    assert_eq!(code(&gw.request(&credit_transfer(1, "003")).await), "00");
    let m = metrics(switch.admin).await;
    for bank in ["nmhmac003", "nmcmac004"] {
        let series = format!(r#"fps_switch_bank_auth_failures_total{{bank="{bank}"}}"#);
        assert_eq!(metric(&m, &series), Some(0.0), "{bank}: {m}");
    }
    assert!(switch.stop().await);
    for (peer, name) in [(&hmac, "nmhmac003"), (&cmac, "nmcmac004")] {
        peer.seen(|s| {
            assert!(
                s.network.iter().all(|(_, ok)| *ok),
                "{name}: every 0800 MAC verifies: {:?}",
                s.network
            );
            assert_eq!(s.network.first(), Some(&(Some(NetworkCode::SignOn), true)));
            assert_eq!(
                s.network.last(),
                Some(&(Some(NetworkCode::SignOff), true)),
                "{name}: signed off at shutdown"
            );
        });
    }
}

/// (h) A sign-on answer whose MAC is wrong: counted, the link never
/// carries payments (91, nothing reaches the bank), retried with backoff.
#[tokio::test]
async fn a_forged_sign_on_answer_keeps_the_link_down() {
    let Some(token) = token() else { return };
    let peer = Peer::start("iso8583:canonical", hmac_peer(), Tagging::CorruptNetwork).await;
    let switch = Running::start(&switch_toml(
        &token,
        &[Bank {
            name: "nmforged003",
            code: "003",
            codec: "iso8583:canonical",
            addr: peer.addr,
            auth: MAC_HMAC,
        }],
    ))
    .await;
    let series = r#"fps_switch_bank_auth_failures_total{bank="nmforged003"}"#;
    let mut failures = 0.0;
    for _ in 0..200 {
        failures = metric(&metrics(switch.admin).await, series).unwrap_or(0.0);
        if failures >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(failures >= 2.0, "forged 0810s counted, sign-on retried");
    assert_ne!(http_get(switch.admin, "/readyz").await.0, 200, "no link up");
    let mut gw = Gateway::connect_plain(switch.upstream).await.unwrap();
    assert_eq!(code(&gw.request(&credit_transfer(1, "003")).await), "91");
    peer.seen(|s| {
        assert!(s.payments.is_empty(), "nothing sent on an unsigned link");
        assert!(s
            .network
            .iter()
            .all(|(c, ok)| *c == Some(NetworkCode::SignOn) && *ok));
    });
    let m = metrics(switch.admin).await;
    assert!(
        m.contains(r#"fps_switch_bank_connects_total{bank="nmforged003",result="auth_failed"}"#),
        "{m}"
    );
    switch.stop().await;
}

/// (f) A bank's own request on a link the switch opened (answered `57`:
/// banks originate on their `[bank_inbound]` links, see bank_links.rs) has
/// its MAC checked first, `63` when it is wrong; every answer carries the
/// switch's MAC, made in the token, which the bank verifies on its own.
#[tokio::test]
async fn a_banks_own_request_on_a_switch_link_is_checked_and_answered_maced() {
    let Some(token) = token() else { return };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bank = Bank {
        name: "origmac003",
        code: "003",
        codec: "iso8583:canonical",
        addr: listener.local_addr().unwrap(),
        auth: MAC_HMAC,
    };
    // Not `start_switch`: it waits for the sign-on this test answers.
    let switch = Running::start(&switch_toml(&token, &[bank])).await;
    let (mut tcp, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the switch never connected")
        .unwrap();
    let codec = codec_of("iso8583:canonical");
    let keys = hmac_peer();
    let framer = Framer::new(FrameConfig::default()).unwrap();
    let frame = |t: &Transaction| {
        let mut out = BytesMut::new();
        let mark = framer.begin(&[], &mut out).unwrap();
        codec.encode(t, &mut out).unwrap();
        framer.finish(mark, &mut out).unwrap();
        out
    };
    let mut good = credit_transfer(4711, "004");
    seal(&*codec, &keys, &mut good, false);
    let mut forged = credit_transfer(4712, "004");
    seal(&*codec, &keys, &mut forged, true);

    let mut buf = BytesMut::new();
    let mut answers = std::collections::HashMap::new();
    let mut sent_ours = false;
    let exchange = async {
        while answers.len() < 2 {
            let message = loop {
                if let Some(f) = framer.decode(&mut buf).unwrap() {
                    break f.message;
                }
                assert!(tcp.read_buf(&mut buf).await.unwrap() > 0, "link closed");
            };
            let t = codec.decode_authenticated(&message).unwrap();
            if t.is_response() {
                answers.insert(t.stan.unwrap().value(), t);
                continue;
            }
            // The switch's sign-on or echo: answered, MACed.
            let mut a = t.response(ResponseCode::APPROVED);
            seal(&*codec, &keys, &mut a, false);
            tcp.write_all(&frame(&a)).await.unwrap();
            if !sent_ours {
                sent_ours = true;
                for t in [&good, &forged] {
                    tcp.write_all(&frame(t)).await.unwrap();
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("both requests answered within 10 s");
    assert_eq!(code(&answers[&4711]), "57");
    assert_eq!(code(&answers[&4712]), "63", "a forged MAC");
    for stan in [4711, 4712] {
        assert!(
            verify_independently(&*codec, &keys, &answers[&stan]),
            "the answer to {stan} carries the switch's MAC"
        );
    }
    drop(tcp);
    switch.stop().await;
}
