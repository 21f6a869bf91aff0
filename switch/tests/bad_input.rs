//! Malformed upstream input against a running switch (DESIGN.md, "Canonical
//! upstream protocol"). Every case of the corpus gets its documented answer
//! (`30` echoing the matching fields that still parse, `12` for a message
//! type the switch does not serve, `14` for an unknown proxy) or a clean
//! close of *that* connection only, and is counted in the metrics exactly as
//! it happened. A control connection opened first is pinged after every case
//! and still gets `00` at the end; nothing malformed reaches the bank.
//!
//! The same corpus then runs against the daemon binary with trace logging;
//! its output and `/metrics` are scanned for card numbers, accounts and proxy
//! ids (DESIGN.md invariant 8).

mod support;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use fps_codecs::iso8583::Iso8583Codec;
use fps_codecs::model::*;
use rustls::pki_types::ServerName;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The bank every well-formed request goes to.
const BANK: &str = "003";
/// Luhn-valid test card numbers carried in F2 (checked below).
const PANS: [&str; 2] = ["4761739001010010", "5200828282828210"];
/// Test accounts (F102 / F103).
const DEBTOR: &str = "DBTX55501234987";
const CREDITOR: &str = "CRDX66602345098";
/// Test proxy ids (F120): two in the directory, one not.
const PROXY_MOBILE: &str = "MOBN:+852-61234567";
const PROXY_EMAIL: &str = "EMAL:leak.check@example.com";
const PROXY_UNKNOWN: &str = "FPID:86753091";

const IDLE_TIMEOUT_MS: u64 = 1_500;
const HANDSHAKE_TIMEOUT_MS: u64 = 500;
const MAX_CONNECTIONS: usize = 6;
/// Frames in the "many tiny frames" case (more than the in-flight limit).
const TINY_FRAMES: u32 = 2_000;
const MAX_IN_FLIGHT_PER_CONNECTION: usize = 64;
/// Longest wait for any one answer or close.
const WAIT: Duration = Duration::from_secs(10);

/// The matching fields a client keys answers on (besides the MTI class).
const MATCHING: [u8; 4] = [7, 11, 37, 41];
const ALL: &[u8] = &MATCHING;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_upstream_input_is_answered_or_closes_only_its_connection() {
    let pki = Pki::new();
    let bank = BankPeer::start(
        &pki,
        "iso8583:canonical",
        Behaviour::Approve { max_delay_ms: 5 },
    )
    .await;
    let sw = Running::start(&switch_toml(&pki, &bank, "warn")).await;
    sw.wait_ready().await;
    let target = Target {
        upstream: sw.upstream,
        admin: sw.admin,
    };
    let approved = exercise(&target, &pki).await;
    assert_eq!(
        bank.financial_requests.load(Ordering::Relaxed),
        approved,
        "only well-formed requests reach the bank"
    );
    assert_eq!(http_get(sw.admin, "/healthz").await.0, 200);
    assert!(sw.stop().await, "drained");
}

/// The corpus through the daemon binary, logging at `trace`: no card
/// number, account or proxy id in its output or on `/metrics`.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daemon_logs_no_card_number_account_or_proxy_id() {
    let pki = Pki::new();
    let bank = BankPeer::start(
        &pki,
        "iso8583:canonical",
        Behaviour::Approve { max_delay_ms: 5 },
    )
    .await;
    let config = write_file(&pki.dir, "daemon.toml", &switch_toml(&pki, &bank, "trace"));
    let mut daemon = Daemon::spawn(&config);
    let target = daemon.wait_started().await;
    // No transparent huge pages (main.rs): no 2 MiB clears on first touch.
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
    assert!(status.contains("THP_enabled:\t0"), "{status}");
    for _ in 0..200 {
        if http_get(target.admin, "/readyz").await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let approved = exercise(&target, &pki).await;
    assert_eq!(bank.financial_requests.load(Ordering::Relaxed), approved);
    let metrics = http_get(target.admin, "/metrics").await.1;
    let logs = daemon.stop();

    assert!(logs.contains("fps-switch started"), "{logs}");
    assert!(
        logs.contains("undecodable upstream request: answered 30"),
        "the corpus ran against this daemon"
    );
    // Sample values are numbers (quantiles have long fractions): scan names
    // and labels only.
    let series: String = metrics
        .lines()
        .map(|l| l.rsplit_once(' ').map_or(l, |(series, _)| series))
        .collect::<Vec<_>>()
        .join("\n");
    assert_no_sensitive_data("/metrics", &series);
    assert_no_sensitive_data("daemon output", &logs);
}

// ------------------------------------------------------------ the run

/// Where a switch listens.
struct Target {
    upstream: SocketAddr,
    admin: SocketAddr,
}

/// Run the whole corpus, the volume cases and the connection-level cases
/// against `t`, with a control connection open from first to last. Returns
/// how many requests were meant to reach the bank.
async fn exercise(t: &Target, pki: &Pki) -> usize {
    let control = Control::open(t, pki).await;
    control.ping(1).await;
    let start = Scrape::take(t.admin).await;
    let mut expected_errors = BTreeMap::<&str, f64>::new();
    let mut to_bank = 0;

    let corpus = corpus();
    assert!(corpus.len() >= 50, "corpus has {} cases", corpus.len());
    for (i, case) in corpus.iter().enumerate() {
        run_case(t, pki, case).await;
        control.ping(100 + i as u32).await;
        if let Some(reason) = case.frame_error {
            *expected_errors.entry(reason).or_default() += 1.0;
        }
        if matches!(case.expect, Expect::Answer { code: "00", .. }) {
            to_bank += 1;
        }
    }

    tiny_frames(t, pki).await;
    control.ping(2).await;
    one_byte_frames(t, pki).await;
    *expected_errors.entry("decode").or_default() += 1.0;
    control.ping(3).await;
    connection_flood(t, pki).await;
    control.ping(4).await;
    plaintext_on_the_tls_port(t).await;
    control.ping(5).await;
    for (name, bytes) in [
        ("silent TCP connection", &b""[..]),
        // A TLS record header announcing a ClientHello that never comes.
        ("partial ClientHello", &b"\x16\x03\x01\x02\x00\x01"[..]),
    ] {
        slow_handshake(t, name, bytes).await;
    }
    idle_connection(t, pki).await;
    slow_drip(t, pki).await;
    *expected_errors.entry("truncated").or_default() += 1.0;

    // The frame-error counters saw exactly what the cases did.
    let end = Scrape::take(t.admin).await;
    for reason in FRAME_ERROR_REASONS {
        assert_eq!(
            end.frame_errors(reason) - start.frame_errors(reason),
            expected_errors.get(reason).copied().unwrap_or(0.0),
            "fps_switch_frame_errors_total{{side=\"upstream\",reason=\"{reason}\"}}"
        );
    }

    // The control connection, open since the start, is still served.
    let mut control = control.finish().await;
    let req = credit_transfer(999_001, BANK);
    let answer = control.request(&req).await;
    assert_eq!(answer.response_code, Some(ResponseCode::APPROVED));
    assert_eq!(answer.stan, req.stan);
    assert_eq!(answer.rrn, req.rrn);
    to_bank + 1
}

/// The control connection: opened before the first case, pinged after each
/// one, and in the background every 300 ms, because `idle_timeout_ms` is
/// short here and some cases wait for timeouts of their own.
struct Control {
    gateway: Arc<tokio::sync::Mutex<Gateway>>,
    stop: tokio::sync::watch::Sender<bool>,
    pinger: tokio::task::JoinHandle<()>,
}

impl Control {
    async fn open(t: &Target, pki: &Pki) -> Control {
        let gateway = Gateway::connect_tls(t.upstream, pki, Some("gateway"))
            .await
            .expect("control connection");
        let gateway = Arc::new(tokio::sync::Mutex::new(gateway));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let g = gateway.clone();
        let pinger = tokio::spawn(async move {
            for n in 0..100_000 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {
                        ping(&mut *g.lock().await, 800_000 + n).await;
                    }
                    _ = stopped.changed() => return,
                }
            }
        });
        Control {
            gateway,
            stop,
            pinger,
        }
    }

    async fn ping(&self, stan: u32) {
        ping(&mut *self.gateway.lock().await, stan).await;
    }

    /// Stop the background pings (re-raising a failed one) and hand back
    /// the connection.
    async fn finish(self) -> Gateway {
        let _ = self.stop.send(true);
        if let Err(e) = self.pinger.await {
            std::panic::resume_unwind(e.into_panic());
        }
        Arc::into_inner(self.gateway)
            .expect("the pinger is gone")
            .into_inner()
    }
}

/// Send one case on a fresh connection and check what came back, then that
/// the metrics moved by exactly this case.
async fn run_case(t: &Target, pki: &Pki, case: &Case) {
    let name = case.name.as_str();
    settle(t.admin).await;
    let before = Scrape::take(t.admin).await;
    let mut conn = Raw::connect(t.upstream, pki).await;
    conn.send(&case.wire).await;
    if case.then_close {
        conn.shutdown().await;
    }
    let mut requests = BTreeMap::<String, f64>::new();
    let closed_as = match &case.expect {
        Expect::Answer { code, echo } => {
            let sent = case
                .sent
                .as_ref()
                .expect("an answered case keeps its message");
            match conn.next(WAIT).await {
                Event::Answer(a) => check_answer(name, sent, &a, code, echo),
                other => panic!("{name}: expected a {code} answer, got {other:?}"),
            }
            *requests.entry((*code).to_owned()).or_default() += 1.0;
            probe(name, &mut conn).await;
            conn.shutdown().await;
            assert!(
                conn.closes(name).await,
                "{name}: the switch follows our close"
            );
            "peer_closed"
        }
        Expect::Dropped => {
            probe(name, &mut conn).await;
            conn.shutdown().await;
            assert!(
                conn.closes(name).await,
                "{name}: the switch follows our close"
            );
            "peer_closed"
        }
        Expect::Close => {
            assert!(conn.closes(name).await, "{name}: connection closed");
            conn.shutdown().await;
            match case.frame_error {
                Some("framing") => "bad_frame",
                Some("decode") => "undecodable",
                Some("truncated") => "peer_closed",
                other => panic!("{name}: a close needs a frame error, not {other:?}"),
            }
        }
    };
    drop(conn);
    settle(t.admin).await;
    let after = Scrape::take(t.admin).await;

    for reason in FRAME_ERROR_REASONS {
        let want = f64::from(u8::from(case.frame_error == Some(reason)));
        assert_eq!(
            after.frame_errors(reason) - before.frame_errors(reason),
            want,
            "{name}: frame errors with reason {reason}"
        );
    }
    for reason in CLOSE_REASONS {
        let want = f64::from(u8::from(reason == closed_as));
        let d =
            after.sum(CLOSED, &[("reason", reason)]) - before.sum(CLOSED, &[("reason", reason)]);
        assert_eq!(d, want, "{name}: connections closed with reason {reason}");
    }
    // Network management (class 8: the probe and the control pings) aside.
    for code in ["00", "12", "14", "30", "91", "96"] {
        let want = requests.get(code).copied().unwrap_or(0.0);
        let count = |s: &Scrape| {
            s.sum(REQUESTS, &[("code", code)]) - s.sum(REQUESTS, &[("code", code), ("class", "8")])
        };
        assert_eq!(
            count(&after) - count(&before),
            want,
            "{name}: requests answered {code}"
        );
    }
}

/// Check an answer: response MTI, F39, and exactly the matching fields
/// `echo` echoed (the others absent, never guessed).
fn check_answer(name: &str, sent: &Msg, a: &Transaction, code: &str, echo: &[u8]) {
    let mut mti = sent.mti.clone();
    mti[2] += 1;
    assert_eq!(a.mti.as_bytes(), &mti[..], "{name}: MTI");
    assert_eq!(
        a.response_code.map(|c| c.as_str().to_owned()).as_deref(),
        Some(code),
        "{name}: F39"
    );
    for n in MATCHING {
        let got: Option<Vec<u8>> = match n {
            7 => a.transmitted_at.map(|v| v.as_str().as_bytes().to_vec()),
            11 => a.stan.map(|v| format!("{:06}", v.value()).into_bytes()),
            37 => a.rrn.map(|v| v.as_str().as_bytes().to_vec()),
            _ => a.terminal_id.map(|v| v.as_str().as_bytes().to_vec()),
        };
        if echo.contains(&n) {
            assert_eq!(got.as_deref(), sent.value(n), "{name}: F{n} echoed");
        } else {
            assert_eq!(got, None, "{name}: F{n} must not be echoed");
        }
    }
}

/// An echo on the case's own connection: answered, so the stream is still
/// in step after the case.
async fn probe(name: &str, conn: &mut Raw) {
    let stan = 990_000;
    conn.send(&Msg::echo(stan).frame()).await;
    match conn.next(WAIT).await {
        Event::Answer(a) => {
            assert_eq!(a.mti, Mti::NETWORK_RESPONSE, "{name}: probe answer");
            assert_eq!(a.stan.map(|s| s.value()), Some(stan), "{name}: probe STAN");
            assert_eq!(a.response_code, Some(ResponseCode::APPROVED), "{name}");
        }
        other => panic!("{name}: probe not answered: {other:?}"),
    }
}

async fn ping(control: &mut Gateway, stan: u32) {
    let mut echo = Transaction::new(Mti::NETWORK);
    echo.transmitted_at = Some(TransmissionDateTime::parse(b"0315103000").unwrap());
    echo.stan = Some(Stan::new(stan).unwrap());
    echo.network_code = Some(NetworkCode::Echo);
    let a = control.request(&echo).await;
    assert_eq!(a.mti, Mti::NETWORK_RESPONSE);
    assert_eq!(a.response_code, Some(ResponseCode::APPROVED));
    assert_eq!(a.stan, echo.stan, "control connection in step");
}

// ------------------------------------------------------------ the corpus

/// What the switch must do with a case.
#[derive(Debug)]
enum Expect {
    /// Answer with this F39, echoing exactly these matching fields.
    Answer {
        code: &'static str,
        echo: &'static [u8],
    },
    /// Not answered (a response sent upstream), the connection stays.
    Dropped,
    /// Close this connection, answering nothing.
    Close,
}

struct Case {
    name: String,
    /// Bytes sent, length prefixes included.
    wire: Vec<u8>,
    /// Close our sending side after the bytes.
    then_close: bool,
    /// The message the bytes came from (for the echo checks).
    sent: Option<Msg>,
    expect: Expect,
    /// The `reason` of `fps_switch_frame_errors_total{side="upstream"}`
    /// this case adds one to, if any.
    frame_error: Option<&'static str>,
}

fn answered(name: &str, msg: Msg, code: &'static str, echo: &'static [u8]) -> Case {
    Case {
        name: name.to_owned(),
        wire: msg.frame(),
        then_close: false,
        sent: Some(msg),
        expect: Expect::Answer { code, echo },
        frame_error: None,
    }
}

/// A message the codec refuses but whose matching fields can be found:
/// `30`, counted as a decode error.
fn salvaged(name: &str, msg: Msg, echo: &'static [u8]) -> Case {
    Case {
        frame_error: Some("decode"),
        ..answered(name, msg, "30", echo)
    }
}

fn closes(name: &str, wire: Vec<u8>, frame_error: &'static str) -> Case {
    Case {
        name: name.to_owned(),
        wire,
        then_close: false,
        sent: None,
        expect: Expect::Close,
        frame_error: Some(frame_error),
    }
}

fn dropped(name: &str, msg: Msg) -> Case {
    Case {
        name: name.to_owned(),
        wire: msg.frame(),
        then_close: false,
        sent: Some(msg),
        expect: Expect::Dropped,
        frame_error: Some("unexpected_response"),
    }
}

fn corpus() -> Vec<Case> {
    let mut stan = 0;
    let mut next = || {
        stan += 1;
        Msg::request(stan)
    };
    let mut c = Vec::new();
    let base_len = next().body().len();

    // --- framing: the stream itself is out of step.
    c.push(closes(
        "length prefix 0xffff",
        [&[0xff, 0xff][..], b"0200"].concat(),
        "framing",
    ));
    c.push(closes(
        "length prefix one over max_frame_bytes",
        [&8193u16.to_be_bytes()[..], &[b'0'; 64]].concat(),
        "framing",
    ));
    c.push(closes(
        "max_frame_bytes of garbage",
        framed(&[b'Z'; 8192]),
        "decode",
    ));
    c.push(closes("zero length frame", framed(b""), "decode"));
    c.push(Case {
        then_close: true,
        ..closes(
            "frame cut short, then close",
            next().frame()[..50].to_vec(),
            "truncated",
        )
    });
    c.push(Case {
        then_close: true,
        ..closes("half a length prefix, then close", vec![0x00], "truncated")
    });
    c.push(closes(
        "frame shorter than the MTI",
        framed(b"02"),
        "decode",
    ));
    c.push(closes("MTI and nothing else", framed(b"0200"), "decode"));

    // --- bitmaps.
    c.push(closes(
        "primary bitmap not hex",
        next().bitmaps(b"ZZZZZZZZZZZZZZZZ").frame(),
        "decode",
    ));
    c.push(closes(
        "primary bitmap 4 characters",
        next().bitmaps(b"7230").frame(),
        "decode",
    ));
    c.push(closes(
        "primary bitmap with a sign",
        framed(b"0200+020000000000000123456"),
        "decode",
    ));
    let m = next();
    let primary_only = m.body()[..4 + 16].to_vec();
    c.push(closes(
        "secondary bitmap announced, message ends",
        framed(&primary_only),
        "decode",
    ));
    let m = next();
    let mut body = m.body();
    body[20..36].copy_from_slice(b"GGGGGGGGGGGGGGGG");
    c.push(closes("secondary bitmap not hex", framed(&body), "decode"));
    let m = next().del(100).del(102).del(103);
    let primary = m.bitmap_text()[..16].to_vec();
    let mut bits = u64::from_str_radix(std::str::from_utf8(&primary).unwrap(), 16).unwrap();
    bits |= 1 << 63;
    let m = m.bitmaps(format!("{bits:016X}0000000000000000").as_bytes());
    c.push(salvaged("secondary bitmap announced but empty", m, ALL));
    let m = next();
    let f12_at = m.offset_of(12);
    c.push(closes(
        "bitmap announces fields the message lacks",
        framed(&m.body()[..f12_at]),
        "decode",
    ));
    c.push(answered(
        "no fields at all",
        Msg::new(b"0200").bitmaps(b"0000000000000000"),
        "30",
        &[],
    ));

    // --- well-formed values DESIGN.md does not allow: refused before the bank.
    c.push(answered(
        "F3 not a credit transfer",
        next().set(3, "000000"),
        "12",
        ALL,
    ));
    c.push(answered(
        "F4 zero",
        next().set(4, "000000000000"),
        "13",
        ALL,
    ));
    c.push(answered("F49 USD", next().set(49, "840"), "13", ALL));

    // --- numeric fields that are not numbers.
    c.push(salvaged("F3 with a letter", next().set(3, "40000X"), ALL));
    c.push(salvaged(
        "F4 with a letter",
        next().set(4, "00000001234X"),
        ALL,
    ));
    c.push(salvaged(
        "F4 with spaces",
        next().set(4, "     1234500"),
        ALL,
    ));
    c.push(salvaged(
        "F4 with a sign",
        next().set(4, "-00000012345"),
        ALL,
    ));
    c.push(closes(
        "F11 with a letter",
        next().set(11, "12345X").frame(),
        "decode",
    ));
    c.push(closes(
        "F11 blank",
        next().set(11, "      ").frame(),
        "decode",
    ));
    c.push(salvaged(
        "F7 with letters",
        next().set(7, "03xx103000"),
        &[11, 37, 41],
    ));
    c.push(salvaged(
        "F7 month 13",
        next().set(7, "1315103000"),
        &[11, 37, 41],
    ));
    c.push(salvaged(
        "F7 hour 25",
        next().set(7, "0315253000"),
        &[11, 37, 41],
    ));
    c.push(salvaged("F12 hour 25", next().set(12, "250000"), ALL));
    c.push(salvaged("F13 day 99", next().set(13, "0399"), ALL));
    c.push(salvaged("F32 with a letter", next().set(32, "12345A"), ALL));

    // --- variable-length fields. A length that cannot be right breaks the
    // layout: every later offset may be wrong, so nothing is echoed.
    c.push(closes(
        "F32 LLVAR length not digits",
        next().prefix(32, b"0X").frame(),
        "decode",
    ));
    c.push(closes(
        "F32 LLVAR length over its max of 11",
        next().set(32, "123456789012").frame(),
        "decode",
    ));
    c.push(closes(
        "F100 LLVAR length over its max of 11",
        next().set(100, "003000000000").frame(),
        "decode",
    ));
    c.push(closes(
        "F100 LLVAR length not digits",
        next().prefix(100, b"X3").frame(),
        "decode",
    ));
    let m = next();
    let cut = m.body().len() - 4;
    c.push(closes(
        "F103 LLVAR length past the end of the message",
        framed(&m.body()[..cut]),
        "decode",
    ));
    c.push(salvaged("F102 empty", next().set(102, ""), ALL));
    c.push(closes(
        "F120 LLLVAR length not digits",
        next()
            .del(100)
            .set(120, PROXY_MOBILE)
            .prefix(120, b"0X8")
            .frame(),
        "decode",
    ));
    c.push(closes(
        "F120 LLLVAR length past the end of the message",
        next().set(120, PROXY_MOBILE).prefix(120, b"999").frame(),
        "decode",
    ));
    c.push(salvaged(
        "F123 idempotency key over 64 characters",
        next().set(123, "K".repeat(65)),
        ALL,
    ));
    c.push(closes(
        "F2 LLVAR length over its max of 19",
        next().set(2, format!("{}0000", PANS[0])).frame(),
        "decode",
    ));
    c.push(salvaged(
        "F2 with a letter",
        next().set(2, "4761X39001010010"),
        ALL,
    ));

    // --- message types.
    c.push(closes(
        "MTI not digits",
        next().mti(b"ABCD").frame(),
        "decode",
    ));
    c.push(closes("MTI class 0", next().mti(b"0000").frame(), "decode"));
    c.push(closes(
        "MTI version 9",
        next().mti(b"9200").frame(),
        "decode",
    ));
    c.push(answered(
        "MTI 0100 (not served)",
        next().mti(b"0100"),
        "12",
        ALL,
    ));
    c.push(answered(
        "MTI 0300 (unknown class)",
        next().mti(b"0300"),
        "12",
        ALL,
    ));
    c.push(answered(
        "MTI 0220 (advice)",
        next().mti(b"0220"),
        "12",
        ALL,
    ));
    c.push(answered(
        "MTI 0600 (status inquiry)",
        next().mti(b"0600"),
        "12",
        ALL,
    ));
    c.push(dropped(
        "MTI 0210 sent upstream",
        next().mti(b"0210").set(39, "00"),
    ));
    c.push(dropped(
        "MTI 0810 sent upstream",
        Msg::echo(7).mti(b"0810").set(39, "00"),
    ));
    c.push(dropped(
        "MTI 0430 sent upstream",
        next().mti(b"0430").set(39, "00"),
    ));

    // --- bytes outside ASCII where ASCII is the contract.
    c.push(closes(
        "MTI in EBCDIC",
        next().mti(&[0xf0, 0xf2, 0xf0, 0xf0]).frame(),
        "decode",
    ));
    let m = next();
    let ebcdic_bitmap: Vec<u8> = m
        .bitmap_text()
        .iter()
        .map(|b| ascii_to_ebcdic(*b))
        .collect();
    c.push(closes(
        "bitmaps in EBCDIC",
        m.bitmaps(&ebcdic_bitmap).frame(),
        "decode",
    ));
    c.push(salvaged(
        "F41 in EBCDIC",
        next().set(41, [0xe3, 0xc5, 0xd9, 0xd4, 0xf0, 0xf0, 0xf0, 0xf1]),
        &[7, 11, 37],
    ));
    c.push(salvaged(
        "F37 with an invalid UTF-8 byte",
        next().set(37, b"GW00000\xff0001"),
        &[7, 11, 41],
    ));
    c.push(salvaged(
        "F103 with UTF-8 letters",
        next().set(103, "CRDX\u{e9}\u{e9}\u{e9}"),
        ALL,
    ));
    c.push(salvaged(
        "F42 with a NUL byte",
        next().set(42, b"MERCHANT\x00000001"),
        ALL,
    ));
    c.push(salvaged("F49 alphabetic", next().set(49, "HKD"), ALL));
    c.push(salvaged("F49 with a space", next().set(49, "34 "), ALL));
    c.push(salvaged(
        "F49 in EBCDIC",
        next().set(49, [0xf3, 0xf4, 0xf4]),
        ALL,
    ));

    // --- mandatory fields missing (DESIGN.md: each is answered 30).
    for (n, echo) in [
        (3u8, ALL),
        (4, ALL),
        (7, &[11u8, 37, 41][..]),
        (11, &[7, 37, 41][..]),
        (37, &[7, 11, 41][..]),
        (41, &[7, 11, 37][..]),
        (49, ALL),
    ] {
        c.push(answered(
            &format!("F{n} missing"),
            next().del(n),
            "30",
            echo,
        ));
    }
    c.push(answered(
        "destination missing (no F100, F120 or F2)",
        next().del(100).del(2),
        "30",
        ALL,
    ));

    // --- duplicated and extra fields.
    c.push(closes(
        "F41 repeated after the last field",
        next().trailer(b"TERM0001").frame(),
        "decode",
    ));
    let body = next().body();
    c.push(closes(
        "the whole message twice in one frame",
        framed(&[&body[..], &body[..]].concat()),
        "decode",
    ));
    c.push(answered(
        "unmapped F43 is ignored",
        next().set(43, format!("{:40}", "SHOP 1, HONG KONG")),
        "00",
        ALL,
    ));
    c.push(answered(
        "unmapped F48 is ignored",
        next().set(48, "PRIVATEDATA01"),
        "00",
        ALL,
    ));
    c.push(answered(
        "F65 (tertiary bitmap slot) is ignored",
        next().set(65, "0000000000000000"),
        "00",
        ALL,
    ));
    // DESIGN.md: F128 carries a MAC "when the upstream link is configured
    // for MACs"; the switch has no such setting yet, so it is not checked.
    c.push(answered(
        "F128 MAC that is wrong (upstream MACs not configured)",
        next().set(128, "DEADBEEFDEADBEEF"),
        "00",
        ALL,
    ));
    let body = next().set(128, "DEADBEEFDEADBEEF").body();
    c.push(closes(
        "F128 MAC one character short",
        framed(&body[..body.len() - 1]),
        "decode",
    ));
    c.push(salvaged(
        "F128 MAC with control bytes",
        next().set(128, b"DEADBEEF\x01\x02\x03\x04BEEF"),
        ALL,
    ));

    // --- destinations by proxy id.
    c.push(answered(
        "credit transfer to a mobile proxy",
        next().del(100).del(2).set(120, PROXY_MOBILE),
        "00",
        ALL,
    ));
    c.push(answered(
        "credit transfer to an e-mail proxy",
        next().del(100).del(2).set(120, PROXY_EMAIL),
        "00",
        ALL,
    ));
    c.push(answered(
        "unknown proxy",
        next().del(100).del(2).set(120, PROXY_UNKNOWN),
        "14",
        ALL,
    ));
    c.push(salvaged(
        "proxy id of an unknown kind",
        next().del(100).set(120, "XXXX:61234567"),
        ALL,
    ));
    c.push(salvaged(
        "mobile proxy id without a country code",
        next().del(100).set(120, "MOBN:61234567"),
        ALL,
    ));
    c.push(answered(
        "unknown bank code",
        next().set(100, "999"),
        "14",
        ALL,
    ));

    // Sanity of the corpus itself: the base message is sound.
    let sound = Msg::request(999).body();
    assert_eq!(sound.len(), base_len);
    let decoded = canonical()
        .decode(&sound)
        .expect("the base request decodes");
    assert!(decoded.pan.is_some() && decoded.receiving_bank.is_some());
    c
}

// ------------------------------------------------------------ volume and connections

/// Thousands of tiny frames in one write (far past the in-flight limit),
/// each a request with only F11: every one answered `30` exactly once.
async fn tiny_frames(t: &Target, pki: &Pki) {
    settle(t.admin).await;
    let before = Scrape::take(t.admin).await;
    let conn = Raw::connect(t.upstream, pki).await;
    let stans: Vec<u32> = (0..TINY_FRAMES).map(|i| 500_000 + i).collect();
    let mut wire = Vec::new();
    for s in &stans {
        wire.extend(framed(format!("02000020000000000000{s:06}").as_bytes()));
    }
    let (mut rd, mut wr) = tokio::io::split(conn.tls);
    // Write and read at once: the switch stops reading while its answers
    // wait for us (back-pressure), so a write-then-read would deadlock.
    let write = async move {
        wr.write_all(&wire).await.unwrap();
        wr.flush().await.unwrap();
        wr
    };
    let read = async {
        let mut buf = BytesMut::new();
        let mut seen = HashSet::new();
        for _ in 0..TINY_FRAMES {
            let a = match read_answer(&mut rd, &mut buf, WAIT).await {
                Event::Answer(a) => a,
                other => panic!("tiny frames: answer {} missing: {other:?}", seen.len()),
            };
            assert_eq!(a.mti, Mti::CREDIT_TRANSFER_RESPONSE);
            assert_eq!(a.response_code, Some(ResponseCode::FORMAT_ERROR));
            let stan = a.stan.expect("F11 echoed").value();
            assert!(stans.contains(&stan), "unknown STAN {stan}");
            assert!(seen.insert(stan), "STAN {stan} answered twice");
        }
        seen.len()
    };
    let (wr, answered) = tokio::join!(write, read);
    assert_eq!(answered, TINY_FRAMES as usize);
    let mut tls = rd.unsplit(wr);
    let _ = tls.shutdown().await;
    drop(tls);
    settle(t.admin).await;
    let after = Scrape::take(t.admin).await;
    let d = after.sum(REQUESTS, &[("code", "30")]) - before.sum(REQUESTS, &[("code", "30")]);
    assert_eq!(d, f64::from(TINY_FRAMES));
    for reason in FRAME_ERROR_REASONS {
        assert_eq!(
            after.frame_errors(reason),
            before.frame_errors(reason),
            "{reason}"
        );
    }
}

/// 50,000 one-byte frames: the first is garbage and closes the connection;
/// the rest are never read as requests.
async fn one_byte_frames(t: &Target, pki: &Pki) {
    settle(t.admin).await;
    let before = Scrape::take(t.admin).await;
    let mut conn = Raw::connect(t.upstream, pki).await;
    let wire: Vec<u8> = [0u8, 1, b'0'].repeat(50_000);
    // The switch closes while we write: a failed write is expected.
    let _ = tokio::time::timeout(WAIT, conn.tls.write_all(&wire)).await;
    assert!(conn.closes("one-byte frames").await);
    drop(conn);
    settle(t.admin).await;
    let after = Scrape::take(t.admin).await;
    assert_eq!(
        after.frame_errors("decode") - before.frame_errors("decode"),
        1.0
    );
    let d = after.sum(CLOSED, &[("reason", "undecodable")])
        - before.sum(CLOSED, &[("reason", "undecodable")]);
    assert_eq!(d, 1.0);
}

/// More connections than `max_connections`: the extra ones are closed at
/// once and counted; the admitted ones (and the control) work; once they
/// close, new connections are admitted again.
async fn connection_flood(t: &Target, pki: &Pki) {
    const EXTRA: usize = 7;
    settle(t.admin).await;
    // Permits are released just after the gauge moves.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = Scrape::take(t.admin).await;
    let mut admitted = Vec::new();
    let mut refused = 0;
    for _ in 0..MAX_CONNECTIONS + EXTRA {
        let tcp = TcpStream::connect(t.upstream).await.unwrap();
        match tokio::time::timeout(
            WAIT,
            pki.client(Some("gateway"))
                .connect(ServerName::try_from("switch.test").unwrap(), tcp),
        )
        .await
        .expect("a refused handshake fails, it does not hang")
        {
            Ok(tls) => admitted.push(Raw::wrap(tls)),
            Err(_) => refused += 1,
        }
    }
    // The control connection holds one of the permits.
    assert_eq!(admitted.len(), MAX_CONNECTIONS - 1, "admitted");
    assert_eq!(refused, EXTRA + 1, "refused");
    let after = Scrape::take(t.admin).await;
    let d = after.sum(REFUSED, &[("reason", "max_connections")])
        - before.sum(REFUSED, &[("reason", "max_connections")]);
    assert_eq!(d, (EXTRA + 1) as f64, "refusals counted");
    for (i, conn) in admitted.iter_mut().enumerate() {
        probe(&format!("admitted connection {i}"), conn).await;
    }
    for mut conn in admitted {
        conn.shutdown().await;
        assert!(conn.closes("admitted connection").await);
    }
    settle(t.admin).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = Raw::connect(t.upstream, pki).await;
    probe("a connection after the flood", &mut again).await;
    again.shutdown().await;
    assert!(again.closes("a connection after the flood").await);
}

/// A client speaking plaintext ISO 8583 to the TLS listener: refused.
async fn plaintext_on_the_tls_port(t: &Target) {
    let before = Scrape::take(t.admin).await;
    let mut tcp = TcpStream::connect(t.upstream).await.unwrap();
    tcp.write_all(&Msg::request(77).frame()).await.unwrap();
    assert!(ends(&mut tcp).await, "plaintext client closed");
    let d = refusals_since(t.admin, &before, "tls_handshake").await;
    assert_eq!(d, 1.0, "counted as a failed handshake");
}

/// A TCP connection that never completes its TLS handshake is closed once
/// `handshake_timeout_ms` has passed, and counted.
async fn slow_handshake(t: &Target, name: &str, bytes: &[u8]) {
    let before = Scrape::take(t.admin).await;
    let started = Instant::now();
    let mut tcp = TcpStream::connect(t.upstream).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    assert!(ends(&mut tcp).await, "{name}: closed");
    assert!(
        started.elapsed() >= Duration::from_millis(HANDSHAKE_TIMEOUT_MS * 9 / 10),
        "{name}: closed before handshake_timeout_ms"
    );
    let d = refusals_since(t.admin, &before, "handshake_timeout").await;
    assert_eq!(d, 1.0, "{name}: counted");
}

/// An established connection that sends nothing is closed after
/// `idle_timeout_ms`, and counted.
async fn idle_connection(t: &Target, pki: &Pki) {
    settle(t.admin).await;
    let before = Scrape::take(t.admin).await;
    let mut conn = Raw::connect(t.upstream, pki).await;
    let started = Instant::now();
    assert!(conn.closes("idle connection").await);
    assert!(
        started.elapsed() >= Duration::from_millis(IDLE_TIMEOUT_MS * 9 / 10),
        "closed before idle_timeout_ms"
    );
    drop(conn);
    settle(t.admin).await;
    let after = Scrape::take(t.admin).await;
    let d = after.sum(CLOSED, &[("reason", "idle")]) - before.sum(CLOSED, &[("reason", "idle")]);
    assert_eq!(d, 1.0);
}

/// Slowloris on frames: a frame whose bytes trickle in, one every 300 ms,
/// and never complete. Bytes arriving do not make it busy: it is closed
/// `idle_timeout_ms` after its last complete frame, and the frame counted
/// as truncated.
async fn slow_drip(t: &Target, pki: &Pki) {
    settle(t.admin).await;
    let before = Scrape::take(t.admin).await;
    let conn = Raw::connect(t.upstream, pki).await;
    let started = Instant::now();
    let (mut rd, mut wr) = tokio::io::split(conn.tls);
    let drip = async move {
        wr.write_all(&[0x01, 0x00]).await?;
        wr.flush().await?;
        for b in Msg::request(88).body() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            wr.write_all(&[b]).await?;
            wr.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let closed = async move {
        let mut buf = BytesMut::new();
        read_answer(&mut rd, &mut buf, WAIT).await
    };
    tokio::pin!(closed);
    let event = tokio::select! {
        e = &mut closed => e,
        r = drip => match r {
            Ok(()) => panic!("the whole frame went out without a close"),
            // The switch closed while we wrote: see how the read ends.
            Err(_) => closed.await,
        },
    };
    assert!(matches!(event, Event::Closed), "slow drip: {event:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(IDLE_TIMEOUT_MS * 9 / 10),
        "closed before idle_timeout_ms"
    );
    settle(t.admin).await;
    let after = Scrape::take(t.admin).await;
    assert_eq!(
        after.frame_errors("truncated") - before.frame_errors("truncated"),
        1.0
    );
    let d = after.sum(CLOSED, &[("reason", "idle")]) - before.sum(CLOSED, &[("reason", "idle")]);
    assert_eq!(d, 1.0);
}

/// Refused connections with `reason` since `before`, once there is one:
/// tokio-rustls drops the socket of a failed handshake before the switch
/// counts it, so the close can be seen a moment before the count.
async fn refusals_since(admin: SocketAddr, before: &Scrape, reason: &str) -> f64 {
    let was = before.sum(REFUSED, &[("reason", reason)]);
    let mut now = was;
    for _ in 0..200 {
        now = Scrape::take(admin)
            .await
            .sum(REFUSED, &[("reason", reason)]);
        if now > was {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    now - was
}

/// Whether a plain TCP stream is closed by the peer within `WAIT` (an alert
/// or other bytes before the end are read and dropped).
async fn ends(tcp: &mut TcpStream) -> bool {
    let mut b = [0u8; 1024];
    tokio::time::timeout(WAIT, async {
        loop {
            match tcp.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

// ------------------------------------------------------------ a raw client

#[derive(Debug)]
enum Event {
    Answer(Box<Transaction>),
    Closed,
    Silent,
}

/// A TLS gateway connection that can send any bytes, close its sending
/// side, and tell an answer from a close.
struct Raw {
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: SocketAddr, pki: &Pki) -> Raw {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = pki
            .client(Some("gateway"))
            .connect(ServerName::try_from("switch.test").unwrap(), tcp)
            .await
            .expect("TLS handshake");
        Raw::wrap(tls)
    }

    fn wrap(tls: tokio_rustls::client::TlsStream<TcpStream>) -> Raw {
        Raw {
            tls,
            buf: BytesMut::new(),
        }
    }

    /// Send bytes; the switch may already have closed, which the checks
    /// after the send find out.
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.tls.write_all(bytes).await;
        let _ = self.tls.flush().await;
    }

    async fn shutdown(&mut self) {
        let _ = self.tls.shutdown().await;
    }

    async fn next(&mut self, within: Duration) -> Event {
        read_answer(&mut self.tls, &mut self.buf, within).await
    }

    /// Whether the switch closed the connection (with no answer first).
    async fn closes(&mut self, name: &str) -> bool {
        match self.next(WAIT).await {
            Event::Closed => true,
            Event::Silent => false,
            Event::Answer(a) => panic!("{name}: answered instead of closing: {a:?}"),
        }
    }
}

/// The next answer on `rd`, or the end of the stream, or silence.
async fn read_answer(
    rd: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    within: Duration,
) -> Event {
    let codec = canonical();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if buf.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            if buf.len() >= 2 + len {
                buf.advance(2);
                let msg = buf.split_to(len);
                let a = codec
                    .decode(&msg)
                    .unwrap_or_else(|e| panic!("the switch sent an undecodable answer: {e}"));
                return Event::Answer(Box::new(a));
            }
        }
        match tokio::time::timeout_at(deadline, rd.read_buf(buf)).await {
            Err(_) => return Event::Silent,
            Ok(Ok(0)) | Ok(Err(_)) => return Event::Closed,
            Ok(Ok(_)) => {}
        }
    }
}

// ------------------------------------------------------------ canonical messages, by hand

/// A canonical message written field by field with no checks, so that any
/// part of it can be wrong (an independent encoder: pyiso8583's
/// `default_ascii` layout).
#[derive(Debug, Clone)]
struct Msg {
    mti: Vec<u8>,
    fields: BTreeMap<u8, Vec<u8>>,
    /// Length prefixes written instead of the true ones.
    prefixes: BTreeMap<u8, Vec<u8>>,
    /// Bitmap text written instead of the computed one.
    bitmaps: Option<Vec<u8>>,
    trailer: Vec<u8>,
}

/// Digits of the length prefix of the canonical variable-length fields.
fn var_digits(n: u8) -> Option<usize> {
    match n {
        2 | 32..=35 | 44 | 45 | 99..=103 => Some(2),
        36 | 46..=48 | 54..=63 | 104..=127 => Some(3),
        _ => None,
    }
}

impl Msg {
    fn new(mti: &[u8]) -> Msg {
        Msg {
            mti: mti.to_vec(),
            fields: BTreeMap::new(),
            prefixes: BTreeMap::new(),
            bitmaps: None,
            trailer: Vec::new(),
        }
    }

    /// A sound 0200 credit transfer to [`BANK`] carrying a test card
    /// number and the test accounts.
    fn request(stan: u32) -> Msg {
        Msg::new(b"0200")
            .set(2, PANS[(stan % 2) as usize])
            .set(3, "400000")
            .set(4, "000000012345")
            .set(7, "0315103000")
            .set(11, format!("{stan:06}"))
            .set(12, "183000")
            .set(13, "0315")
            .set(32, "123456")
            .set(37, format!("BAD{stan:09}"))
            .set(41, "TERM0001")
            .set(42, "MERCHANT0000001")
            .set(49, "344")
            .set(100, BANK)
            .set(102, DEBTOR)
            .set(103, CREDITOR)
    }

    fn echo(stan: u32) -> Msg {
        Msg::new(b"0800")
            .set(7, "0315103000")
            .set(11, format!("{stan:06}"))
            .set(70, "301")
    }

    fn mti(mut self, mti: &[u8]) -> Msg {
        self.mti = mti.to_vec();
        self
    }

    fn set(mut self, n: u8, value: impl AsRef<[u8]>) -> Msg {
        self.fields.insert(n, value.as_ref().to_vec());
        self
    }

    fn del(mut self, n: u8) -> Msg {
        self.fields.remove(&n);
        self
    }

    fn prefix(mut self, n: u8, prefix: &[u8]) -> Msg {
        self.prefixes.insert(n, prefix.to_vec());
        self
    }

    fn bitmaps(mut self, text: &[u8]) -> Msg {
        self.bitmaps = Some(text.to_vec());
        self
    }

    fn trailer(mut self, bytes: &[u8]) -> Msg {
        self.trailer = bytes.to_vec();
        self
    }

    fn value(&self, n: u8) -> Option<&[u8]> {
        self.fields.get(&n).map(Vec::as_slice)
    }

    /// The bitmaps as computed from the fields present.
    fn bitmap_text(&self) -> Vec<u8> {
        let mut bits = 0u128;
        for n in self.fields.keys() {
            bits |= 1u128 << (128 - u32::from(*n));
        }
        let secondary = bits as u64 != 0;
        if secondary {
            bits |= 1u128 << 127;
        }
        let mut text = format!("{:016X}", (bits >> 64) as u64).into_bytes();
        if secondary {
            text.extend(format!("{:016X}", bits as u64).into_bytes());
        }
        text
    }

    fn body(&self) -> Vec<u8> {
        let mut out = self.mti.clone();
        out.extend(self.bitmaps.clone().unwrap_or_else(|| self.bitmap_text()));
        for (n, v) in &self.fields {
            if let Some(digits) = var_digits(*n) {
                match self.prefixes.get(n) {
                    Some(p) => out.extend(p),
                    None => out.extend(format!("{:0digits$}", v.len()).into_bytes()),
                }
            }
            out.extend(v);
        }
        out.extend(&self.trailer);
        out
    }

    /// Where field `n` (its length prefix, if any) starts in the body.
    fn offset_of(&self, n: u8) -> usize {
        let cut = Msg {
            fields: self
                .fields
                .range(..n)
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            trailer: Vec::new(),
            bitmaps: Some(self.bitmaps.clone().unwrap_or_else(|| self.bitmap_text())),
            ..self.clone()
        };
        cut.body().len()
    }

    fn frame(&self) -> Vec<u8> {
        framed(&self.body())
    }
}

/// The canonical codec, built once (building it parses the dialect).
fn canonical() -> &'static Iso8583Codec {
    static CODEC: std::sync::OnceLock<Iso8583Codec> = std::sync::OnceLock::new();
    CODEC.get_or_init(|| Iso8583Codec::builtin("canonical").unwrap())
}

/// `body` behind a 2-byte big-endian length.
fn framed(body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len()).expect("test frames fit the prefix");
    [&len.to_be_bytes()[..], body].concat()
}

/// EBCDIC (code page 037) of the ASCII characters bitmaps use.
fn ascii_to_ebcdic(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => 0xf0 + (b - b'0'),
        b'A'..=b'F' => 0xc1 + (b - b'A'),
        _ => 0x40,
    }
}

// ------------------------------------------------------------ the switch under test

fn switch_toml(pki: &Pki, bank: &BankPeer, log_filter: &str) -> String {
    let proxies = write_file(
        &pki.dir,
        "proxies.csv",
        &format!("{PROXY_MOBILE},{BANK}\n{PROXY_EMAIL},{BANK}\n"),
    );
    let text = config_toml(
        pki,
        &[BankSpec {
            code: BANK,
            name: "bank003",
            codec: "iso8583:canonical",
            addr: bank.addr,
            request_timeout_ms: 3_000,
        }],
        &format!(
            "max_connections = {MAX_CONNECTIONS}\n\
             idle_timeout_ms = {IDLE_TIMEOUT_MS}\n\
             max_in_flight_per_connection = {MAX_IN_FLIGHT_PER_CONNECTION}\n"
        ),
    );
    for from in ["handshake_timeout_ms = 2000", "filter = \"warn\""] {
        assert!(text.contains(from), "support::config_toml changed: {from}");
    }
    text.replace(
        "handshake_timeout_ms = 2000",
        &format!("handshake_timeout_ms = {HANDSHAKE_TIMEOUT_MS}"),
    )
    .replace("filter = \"warn\"", &format!("filter = \"{log_filter}\""))
        + &format!("\n[routing]\nproxy_directory = \"{}\"\n", proxies.display())
}

/// The daemon binary, its stdout and stderr captured.
struct Daemon {
    child: std::process::Child,
    output: Arc<Mutex<String>>,
}

impl Daemon {
    fn spawn(config: &std::path::Path) -> Daemon {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_fps-switch"))
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let output = Arc::new(Mutex::new(String::new()));
        let pipes: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for pipe in pipes {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut out = output.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        Daemon { child, output }
    }

    /// Wait for the "started" line and read the bound addresses from it.
    async fn wait_started(&mut self) -> Target {
        for _ in 0..600 {
            let line = self
                .output
                .lock()
                .unwrap()
                .lines()
                .find(|l| l.contains("fps-switch started"))
                .map(str::to_owned);
            if let Some(line) = line {
                let addr = |key: &str| -> SocketAddr {
                    let at = line.find(key).expect(key) + key.len();
                    line[at..]
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap()
                };
                return Target {
                    upstream: addr("upstream="),
                    admin: addr("admin="),
                };
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("daemon exited {status}: {}", self.output.lock().unwrap());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("daemon did not start: {}", self.output.lock().unwrap());
    }

    /// SIGTERM, wait for the exit, return everything it wrote.
    fn stop(mut self) -> String {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "daemon exit: {status}");
        // The reader threads finish at EOF, right after the exit.
        std::thread::sleep(Duration::from_millis(200));
        let out = self.output.lock().unwrap().clone();
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ------------------------------------------------------------ metrics

const FRAME_ERRORS: &str = "fps_switch_frame_errors_total";
const CLOSED: &str = "fps_switch_upstream_connections_closed_total";
const REFUSED: &str = "fps_switch_upstream_connections_refused_total";
const REQUESTS: &str = "fps_switch_requests_total";
const CONNECTIONS: &str = "fps_switch_upstream_connections";
const FRAME_ERROR_REASONS: [&str; 4] = ["framing", "decode", "truncated", "unexpected_response"];
const CLOSE_REASONS: [&str; 6] = [
    "peer_closed",
    "read_error",
    "idle",
    "bad_frame",
    "undecodable",
    "shutdown",
];

/// One `/metrics` text.
struct Scrape(String);

impl Scrape {
    async fn take(admin: SocketAddr) -> Scrape {
        let (status, body) = http_get(admin, "/metrics").await;
        assert_eq!(status, 200);
        Scrape(body)
    }

    /// The sum of every sample of `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        support::metric_sum(&self.0, name, labels)
    }

    fn frame_errors(&self, reason: &str) -> f64 {
        self.sum(FRAME_ERRORS, &[("side", "upstream"), ("reason", reason)])
    }
}

/// Wait until only the control connection is open, so that the next
/// snapshot includes everything the previous case's connection counted.
async fn settle(admin: SocketAddr) {
    for _ in 0..400 {
        if Scrape::take(admin).await.sum(CONNECTIONS, &[]) == 1.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let open = Scrape::take(admin).await.sum(CONNECTIONS, &[]);
    panic!("upstream connections never went back to the control connection alone: {open}");
}

// ------------------------------------------------------------ sensitive data

/// DESIGN.md invariant 8 on a text: no test card number, account or proxy
/// id (as text or as a hex dump of its bytes), and no Luhn-valid run of 13
/// to 19 digits (the shape of any card number). Not numbers: digit runs
/// right after a `.` (fractions) and inside a token of hex digits that has a
/// letter in it (TLS handshake dumps at `trace`).
fn assert_no_sensitive_data(what: &str, text: &str) {
    let secrets: Vec<&str> = PANS
        .iter()
        .copied()
        .chain([
            DEBTOR,
            CREDITOR,
            PROXY_MOBILE,
            &PROXY_MOBILE[5..],
            PROXY_EMAIL,
            &PROXY_EMAIL[5..],
            PROXY_UNKNOWN,
            "4761X39001010010",
        ])
        .collect();
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let lower = text.to_ascii_lowercase();
    for secret in secrets {
        if let Some(at) = text.find(secret) {
            panic!("{what} contains {secret:?}: {}", context(text, at));
        }
        if let Some(at) = lower.find(&hex(secret)) {
            panic!("{what} contains {secret:?} in hex: {}", context(text, at));
        }
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_hexdigit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
            i += 1;
        }
        let token = &text[start..i];
        let fraction = start > 0 && bytes[start - 1] == b'.';
        if fraction || !token.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if (13..=19).contains(&token.len()) && luhn_valid(token) {
            panic!(
                "{what} has a Luhn-valid {}-digit number: {}",
                token.len(),
                context(text, start)
            );
        }
    }
}

fn context(text: &str, at: usize) -> String {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    text[line_start..line_end].to_owned()
}

fn luhn_valid(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            match (i % 2 == 1, d * 2) {
                (false, _) => d,
                (true, x) if x > 9 => x - 9,
                (true, x) => x,
            }
        })
        .sum();
    sum % 10 == 0
}

#[test]
fn the_scan_finds_what_it_looks_for() {
    for pan in PANS {
        assert!(luhn_valid(pan), "{pan}");
    }
    assert!(!luhn_valid("4761739001010011"));
    let leak =
        |text: &str| std::panic::catch_unwind(|| assert_no_sensitive_data("t", text)).is_err();
    assert!(leak("pan=4111111111111111 ok"));
    assert!(leak(&format!("account {DEBTOR}")));
    assert!(leak("proxy=+852-61234567"));
    assert!(!leak("pan=476173******0010 took 0.4111111111111111 s"));
    assert!(!leak("stan=123456 rrn=BAD000000001 at 1718000000000"));
    assert!(!leak("encoded: 0100e3034761739001010011fe"));
    assert!(leak("payload: 34373631373339303031303130303130"));
}
