//! The outbound bank-link pool over real mTLS (issue #4 item 4): sign-off
//! on shutdown after the drain, growing under load from `pool.min` to
//! `pool.max` and shrinking back to `min` once links are idle. The bank
//! here records every network management message per connection, and how
//! many of its answers were still owed on that connection at the time.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use fps_codecs::framing::{FrameConfig, Framer};
use fps_codecs::iso8583::Iso8583Codec;
use fps_codecs::model::*;
use fps_codecs::MessageCodec;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ---------------------------------------------------------------- bank

/// What one connection to the bank carried, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// A network management request, with the answers to payments still
    /// owed on this connection when it arrived.
    Network(NetworkCode, usize),
    /// A payment request.
    Payment,
}

#[derive(Debug, Default)]
struct Conn {
    events: Vec<Event>,
    /// Payment answers not written yet.
    owed: usize,
    open: bool,
}

impl Conn {
    fn saw(&self, code: NetworkCode) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, Event::Network(c, _) if *c == code))
    }
}

/// A TLS bank speaking the canonical dialect: approves payments after
/// `delay_ms` (changeable while running); answers network management at
/// once, except sign-offs when `answer_sign_off` is false.
struct Bank {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Conn>>>,
    delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Bank {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn acceptor(pki: &Pki) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.path("ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let certs = CertificateDer::pem_file_iter(pki.path("bank.crt"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(pki.path("bank.key")).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

impl Bank {
    async fn start(pki: &Pki, delay_ms: u64, answer_sign_off: bool) -> Bank {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = acceptor(pki);
        let conns = Arc::new(Mutex::new(Vec::new()));
        let delay = Arc::new(AtomicU64::new(delay_ms));
        let (conns2, delay2) = (conns.clone(), delay.clone());
        let task = tokio::spawn(async move {
            let mut served = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, conns, delay) = (acceptor.clone(), conns2.clone(), delay2.clone());
                served.push(tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls, conns, delay, answer_sign_off).await;
                    }
                }));
            }
        });
        Bank {
            addr,
            conns,
            delay_ms: delay,
            task,
        }
    }

    fn conns<T>(&self, f: impl FnOnce(&[Conn]) -> T) -> T {
        f(&self.conns.lock().unwrap())
    }

    fn open(&self) -> usize {
        self.conns(|c| c.iter().filter(|c| c.open).count())
    }
}

async fn serve(
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    conns: Arc<Mutex<Vec<Conn>>>,
    delay: Arc<AtomicU64>,
    answer_sign_off: bool,
) {
    let me = {
        let mut c = conns.lock().unwrap();
        c.push(Conn {
            open: true,
            ..Conn::default()
        });
        c.len() - 1
    };
    let codec = Arc::new(Iso8583Codec::builtin("canonical").unwrap());
    let framer = Framer::new(FrameConfig::default()).unwrap();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<BytesMut>(1024);
    let writer = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if wr.write_all(&f).await.is_err() {
                return;
            }
        }
    });
    let encode = move |codec: &Iso8583Codec, t: &Transaction| {
        let mut out = BytesMut::new();
        let mark = framer.begin(&[], &mut out).unwrap();
        codec.encode(t, &mut out).unwrap();
        framer.finish(mark, &mut out).unwrap();
        out
    };
    let mut buf = BytesMut::new();
    let framer = Framer::new(FrameConfig::default()).unwrap();
    'conn: loop {
        while let Some(frame) = framer.decode(&mut buf).unwrap() {
            let req = codec.decode(&frame.message).unwrap();
            if req.mti.class() == 8 {
                let nc = req.network_code.unwrap();
                {
                    let mut c = conns.lock().unwrap();
                    let owed = c[me].owed;
                    c[me].events.push(Event::Network(nc, owed));
                }
                if nc != NetworkCode::SignOff || answer_sign_off {
                    let _ = tx
                        .send(encode(&codec, &req.response(ResponseCode::APPROVED)))
                        .await;
                }
                continue;
            }
            {
                let mut c = conns.lock().unwrap();
                c[me].events.push(Event::Payment);
                c[me].owed += 1;
            }
            let mut answer = req.response(ResponseCode::APPROVED);
            answer.auth_id = AuthId::parse(b"LINK01").ok();
            let frame = encode(&codec, &answer);
            let (tx, conns, wait) = (
                tx.clone(),
                conns.clone(),
                Duration::from_millis(delay.load(Ordering::Relaxed)),
            );
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                // Owed until handed to the writer.
                conns.lock().unwrap()[me].owed -= 1;
                let _ = tx.send(frame).await;
            });
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break 'conn,
            Ok(_) => {}
        }
    }
    conns.lock().unwrap()[me].open = false;
    writer.abort();
}

// ---------------------------------------------------------------- switch

/// A switch with one canonical bank `name` and this `pool` table.
fn switch_toml(pki: &Pki, name: &'static str, bank: SocketAddr, pool: &str, extra: &str) -> String {
    config_toml(
        pki,
        &[BankSpec {
            code: "003",
            name,
            codec: "iso8583:canonical",
            addr: bank,
            request_timeout_ms: 5_000,
        }],
        "",
    )
    .replace(
        "pool = { min = 1, max = 2 }",
        &format!("pool = {pool}\n{extra}"),
    )
}

/// Links up in the (only) pool, from `/links`.
async fn links_up(admin: SocketAddr) -> u64 {
    let body = http_get(admin, "/links").await.1;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v[0]["up"].as_u64().unwrap_or(0)
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never happened: {what}");
}

async fn wait_links_up(admin: SocketAddr, want: u64) {
    for _ in 0..400 {
        if links_up(admin).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "pool never had {want} links up: {}",
        http_get(admin, "/links").await.1
    );
}

/// The process's metrics (every switch in this test binary shares the
/// recorder; series are told apart by bank name). Readable after a stop.
fn metrics_text() -> String {
    fps_switch::metrics::install().render()
}

fn counter(name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_sum(&metrics_text(), name, labels)
}

/// `/links` lists a link being closed for idleness (out of its slot,
/// signing off) under `closing` until it is gone. The bank never answers
/// the sign-off, so the closing link lingers for the sign-off timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_being_closed_are_listed_until_gone() {
    let pki = Pki::new();
    let bank = Bank::start(&pki, 1_000, false).await;
    let (sw, _gw) = grown_to_two_links(&pki, &bank, "closing003", 200).await;
    let closing = |body: &str| -> usize {
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        v[0]["closing"].as_array().map_or(0, Vec::len)
    };
    // Bounded: 400 polls of 10 ms; the link stays listed for about the
    // 1 s sign-off timeout.
    let mut seen = None;
    for _ in 0..400 {
        let body = http_get(sw.admin, "/links").await.1;
        if closing(&body) == 1 {
            seen = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let body = seen.expect("a closing link in /links");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[0]["up"], 1, "{body}");
    // No payment is left on it; the one request in flight, if any, is
    // its unanswered sign-off.
    assert!(
        v[0]["closing"][0]["in_flight"].as_u64() <= Some(1),
        "{body}"
    );
    assert!(
        v[0]["closing"][0]["endpoint"]
            .as_str()
            .is_some_and(|e| e.contains("127.0.0.1")),
        "{body}"
    );
    // Once the sign-off wait ends the link is gone, and so is its entry.
    for _ in 0..400 {
        if closing(&http_get(sw.admin, "/links").await.1) == 0 && bank.open() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(closing(&http_get(sw.admin, "/links").await.1), 0);
    assert_eq!(bank.open(), 1);
    assert_eq!(links_up(sw.admin).await, 1);
    assert!(sw.stop().await);
}

/// A switch whose pool for `bank` (`min = 1, max = 2`, this
/// `idle_close_ms`, 8 in flight per link) was grown to two links by 7
/// requests in flight at once (each answered 00), and its gateway.
async fn grown_to_two_links(
    pki: &Pki,
    bank: &Bank,
    name: &'static str,
    idle_close_ms: u64,
) -> (Running, Gateway) {
    let sw = Running::start(&switch_toml(
        pki,
        name,
        bank.addr,
        &format!("{{ min = 1, max = 2, idle_close_ms = {idle_close_ms} }}"),
        "max_in_flight = 8",
    ))
    .await;
    wait_links_up(sw.admin, 1).await;
    let mut gw = Gateway::connect_tls(sw.upstream, pki, Some("gateway"))
        .await
        .unwrap();
    for stan in 1..=7 {
        send_paced(&mut gw, stan).await;
    }
    wait_links_up(sw.admin, 2).await;
    for _ in 1..=7 {
        assert_eq!(
            gw.recv().await.unwrap().response_code,
            Some(ResponseCode::APPROVED)
        );
    }
    (sw, gw)
}

/// Send one request and give the switch time to put it on a link, so the
/// next one's pick sees it in flight (the growth rule looks at in-flight
/// counts).
async fn send_paced(gw: &mut Gateway, stan: u32) {
    gw.send(&credit_transfer(stan, "003")).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
}

// ---------------------------------------------------------------- tests

/// Item 1: at shutdown the requests in flight finish first, then every
/// link signs off (0800, F70 002) and gets its 0810 before closing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_then_every_link_signs_off() {
    let pki = Pki::new();
    let bank = Bank::start(&pki, 400, true).await;
    let mut sw = Running::start(&switch_toml(
        &pki,
        "signoff003",
        bank.addr,
        "{ min = 2, max = 2 }",
        "",
    ))
    .await;
    wait_links_up(sw.admin, 2).await;
    let mut gw = Gateway::connect_tls(sw.upstream, &pki, Some("gateway"))
        .await
        .unwrap();
    for stan in 1..=10 {
        gw.send(&credit_transfer(stan, "003")).await;
    }
    wait_until("every request reached the bank", || {
        bank.conns(|c| {
            c.iter()
                .map(|c| c.events.iter().filter(|e| **e == Event::Payment).count())
                .sum::<usize>()
                == 10
        })
    })
    .await;
    sw.begin_stop();
    for _ in 1..=10 {
        let a = gw.recv().await.expect("answered during the drain");
        assert_eq!(a.response_code, Some(ResponseCode::APPROVED));
    }
    assert!(sw.join().await, "drained");
    bank.conns(|conns| {
        assert_eq!(conns.len(), 2, "{conns:?}");
        for c in conns {
            assert_eq!(
                c.events.first(),
                Some(&Event::Network(NetworkCode::SignOn, 0))
            );
            assert_eq!(
                c.events.last(),
                Some(&Event::Network(NetworkCode::SignOff, 0)),
                "signed off last, with no answer owed: {conns:?}"
            );
        }
    });
    wait_until("the bank sees both links closed", || bank.open() == 0).await;
    let bank_label = [("bank", "signoff003")];
    assert_eq!(
        counter(
            "fps_switch_bank_sign_offs_total",
            &[bank_label[0], ("result", "approved")]
        ),
        2.0
    );
    assert_eq!(
        counter(
            "fps_switch_bank_links_closed_total",
            &[bank_label[0], ("reason", "shutdown")]
        ),
        2.0
    );
}

/// Item 1, bounded: a bank that never answers the sign-off does not hold
/// the shutdown beyond the sign-off wait (1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_sign_off_does_not_hold_the_shutdown() {
    let pki = Pki::new();
    let bank = Bank::start(&pki, 0, false).await;
    let sw = Running::start(&switch_toml(
        &pki,
        "mute003",
        bank.addr,
        "{ min = 1, max = 1 }",
        "",
    ))
    .await;
    sw.wait_ready().await;
    let began = std::time::Instant::now();
    assert!(sw.stop().await);
    // Sign-off wait (1 s) plus the close margin; generous for a slow machine.
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    bank.conns(|c| assert!(c[0].saw(NetworkCode::SignOff)));
    assert_eq!(
        counter(
            "fps_switch_bank_sign_offs_total",
            &[("bank", "mute003"), ("result", "no_answer")]
        ),
        1.0
    );
}

/// Requests that reach the switch together leave together: a link whose
/// writer already holds frames takes the next request while its load is
/// within a few requests of the least loaded, so the frames of one
/// scheduler pass go out in one write on one link instead of one write on
/// each link in turn (least-loaded alone spread these 8 over the 4 links,
/// 2 each).
#[tokio::test]
async fn requests_arriving_together_share_a_link_and_its_write() {
    let pki = Pki::new();
    let bank = Bank::start(&pki, 300, true).await;
    let sw = Running::start(&switch_toml(
        &pki,
        "together003",
        bank.addr,
        "{ min = 4, max = 4 }",
        "max_in_flight = 64",
    ))
    .await;
    wait_links_up(sw.admin, 4).await;
    let mut gw = Gateway::connect_tls(sw.upstream, &pki, Some("gateway"))
        .await
        .unwrap();
    // Written back to back on one thread: the switch reads them at once.
    for stan in 1..=8 {
        gw.send(&credit_transfer(stan, "003")).await;
    }
    for _ in 1..=8 {
        let a = gw.recv().await.expect("an answer");
        assert_eq!(a.response_code, Some(ResponseCode::APPROVED), "{a:?}");
    }
    bank.conns(|conns| {
        let per_link: Vec<usize> = conns
            .iter()
            .map(|c| {
                c.events
                    .iter()
                    .filter(|e| matches!(e, Event::Payment))
                    .count()
            })
            .filter(|&n| n > 0)
            .collect();
        assert_eq!(per_link.iter().sum::<usize>(), 8, "{conns:?}");
        assert!(
            per_link.len() <= 2 && per_link.iter().any(|&n| n >= 4),
            "payments per link: {per_link:?}"
        );
    });
    assert!(sw.stop().await);
}

/// Item 2: load grows the pool from min to max (a link is opened when the
/// least-loaded one is three quarters full); once idle for
/// `pool.idle_close_ms` the extra links are taken out of selection, signed
/// off and closed, down to min and no further, while requests keep
/// succeeding on the link that stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_grows_under_load_and_shrinks_back_to_min_when_idle() {
    let pki = Pki::new();
    let bank = Bank::start(&pki, 2_000, true).await;
    let sw = Running::start(&switch_toml(
        &pki,
        "elastic003",
        bank.addr,
        "{ min = 1, max = 3, idle_close_ms = 300 }",
        // Grows when the best link has 6 in flight.
        "max_in_flight = 8",
    ))
    .await;
    wait_links_up(sw.admin, 1).await;
    let mut gw = Gateway::connect_tls(sw.upstream, &pki, Some("gateway"))
        .await
        .unwrap();
    // 7 in flight on the one link: the 7th pick finds it at 6 and grows.
    for stan in 1..=7 {
        send_paced(&mut gw, stan).await;
    }
    wait_links_up(sw.admin, 2).await;
    // 7 more: the new link takes 6, the next pick finds every link at 6+.
    for stan in 8..=14 {
        send_paced(&mut gw, stan).await;
    }
    wait_links_up(sw.admin, 3).await;
    // The newest link is the least loaded: it takes the next ones.
    for stan in 15..=17 {
        send_paced(&mut gw, stan).await;
    }
    for _ in 1..=17 {
        let a = gw.recv().await.expect("an answer");
        assert_eq!(a.response_code, Some(ResponseCode::APPROVED), "{a:?}");
    }
    bank.conns(|conns| {
        assert_eq!(conns.len(), 3, "{conns:?}");
        assert!(
            conns.iter().all(|c| c.events.contains(&Event::Payment)),
            "every link carried payments: {conns:?}"
        );
    });

    // Quick answers from now on; a trickle of requests all through the
    // shrink, one at a time (so they keep going to the lowest link).
    bank.delay_ms.store(0, Ordering::Relaxed);
    let mut stan = 100;
    let mut shrunk_at = None;
    for _ in 0..400 {
        stan += 1;
        let a = gw.request(&credit_transfer(stan, "003")).await;
        assert_eq!(
            a.response_code,
            Some(ResponseCode::APPROVED),
            "during the shrink"
        );
        if links_up(sw.admin).await == 1 && bank.open() == 1 {
            shrunk_at.get_or_insert(stan);
            if stan >= shrunk_at.unwrap() + 20 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        shrunk_at.is_some(),
        "the pool went back to min: {}",
        http_get(sw.admin, "/links").await.1
    );
    // Never below min: a further idle period leaves the last link alone.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(links_up(sw.admin).await, 1);
    assert_eq!(bank.open(), 1);
    bank.conns(|conns| {
        let closed: Vec<_> = conns.iter().filter(|c| !c.open).collect();
        assert_eq!(closed.len(), 2, "{conns:?}");
        for c in closed {
            assert_eq!(
                c.events.last(),
                Some(&Event::Network(NetworkCode::SignOff, 0)),
                "closed when empty, signed off: {conns:?}"
            );
        }
    });
    assert_eq!(
        counter(
            "fps_switch_bank_links_closed_total",
            &[("bank", "elastic003"), ("reason", "idle")]
        ),
        2.0
    );
    assert_eq!(
        counter(
            "fps_switch_bank_sign_offs_total",
            &[("bank", "elastic003"), ("result", "approved")]
        ),
        2.0
    );
    // Load again: the pool grows again into the freed slots.
    bank.delay_ms.store(2_000, Ordering::Relaxed);
    for stan in 900..=906 {
        send_paced(&mut gw, stan).await;
    }
    wait_links_up(sw.admin, 2).await;
    for _ in 900..=906 {
        let a = gw.recv().await.expect("an answer");
        assert_eq!(a.response_code, Some(ResponseCode::APPROVED));
    }
    assert!(sw.stop().await);
}

/// `pool.idle_close_ms = 0`: extra links stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_close_zero_keeps_extra_links() {
    let pki = Pki::new();
    let bank = Bank::start(&pki, 1_000, true).await;
    let (sw, _gw) = grown_to_two_links(&pki, &bank, "sticky003", 0).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(links_up(sw.admin).await, 2);
    assert_eq!(bank.open(), 2);
    assert!(sw.stop().await);
}

// ------------------------------------------- requests the bank sends on our link

/// Read one frame from `rd` into `buf` (more bytes as needed), within 10 s.
async fn next_frame(
    rd: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut BytesMut,
    framer: &Framer,
) -> BytesMut {
    let read = async {
        loop {
            if let Some(f) = framer.decode(buf).unwrap() {
                return f.message;
            }
            assert!(
                rd.read_buf(buf).await.unwrap() > 0,
                "the switch closed the link"
            );
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no frame from the switch within 10 s")
}

/// The link the switch opens to `listener` (within 10 s), TLS accepted.
async fn accept_link(
    listener: &TcpListener,
    pki: &Pki,
) -> tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the switch never connected")
        .unwrap();
    acceptor(pki).accept(tcp).await.unwrap()
}

fn framed(framer: &Framer, message: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    let mark = framer.begin(&[], &mut out).unwrap();
    out.extend_from_slice(message);
    framer.finish(mark, &mut out).unwrap();
    out
}

/// A bank that sends requests of its own on a link the switch opened gets
/// an answer to each, at once, on that link: network management `00`,
/// payments and reversals `57` (banks originate on the links they open to
/// `[bank_inbound]`), counted per bank. Before, a payment was dropped with
/// a log line and the bank waited out its own timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_a_bank_sends_on_a_switch_link_are_answered_never_dropped() {
    let pki = Pki::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sw = Running::start(&switch_toml(
        &pki,
        "orig003",
        addr,
        "{ min = 1, max = 1 }",
        "",
    ))
    .await;
    let (mut rd, mut wr) = tokio::io::split(accept_link(&listener, &pki).await);
    let codec = Iso8583Codec::builtin("canonical").unwrap();
    let framer = Framer::new(FrameConfig::default()).unwrap();
    let encode = |t: &Transaction| {
        let mut m = BytesMut::new();
        codec.encode(t, &mut m).unwrap();
        framed(&framer, &m)
    };
    let mut buf = BytesMut::new();

    // The switch signs on first.
    let sign_on = codec
        .decode(&next_frame(&mut rd, &mut buf, &framer).await)
        .unwrap();
    assert_eq!(sign_on.network_code, Some(NetworkCode::SignOn));
    wr.write_all(&encode(&sign_on.response(ResponseCode::APPROVED)))
        .await
        .unwrap();

    // Then the bank sends a payment, a reversal and an echo of its own.
    let payment = credit_transfer(4711, "004");
    let mut reversal = credit_transfer(4712, "004");
    reversal.mti = Mti::REVERSAL;
    reversal.original = payment.original_data();
    let mut echo = Transaction::new(Mti::NETWORK);
    echo.transmitted_at = payment.transmitted_at;
    echo.stan = Some(Stan::new(4713).unwrap());
    echo.network_code = Some(NetworkCode::Echo);
    for t in [&payment, &reversal, &echo] {
        wr.write_all(&encode(t)).await.unwrap();
    }

    let mut answers = std::collections::HashMap::new();
    while answers.len() < 3 {
        let t = codec
            .decode(&next_frame(&mut rd, &mut buf, &framer).await)
            .unwrap();
        if t.is_response() {
            answers.insert(t.stan.unwrap().value(), t);
        } else {
            // The switch's own echo: answered like a bank would.
            wr.write_all(&encode(&t.response(ResponseCode::APPROVED)))
                .await
                .unwrap();
        }
    }
    let paid = &answers[&4711];
    assert_eq!(paid.mti, Mti::CREDIT_TRANSFER_RESPONSE);
    assert_eq!(paid.response_code, Some(ResponseCode::NOT_PERMITTED));
    assert_eq!(paid.rrn, payment.rrn, "the answer echoes the request's ids");
    assert_eq!(paid.terminal_id, payment.terminal_id);
    let reversed = &answers[&4712];
    assert_eq!(reversed.mti, Mti::REVERSAL_RESPONSE);
    assert_eq!(reversed.response_code, Some(ResponseCode::NOT_PERMITTED));
    let echoed = &answers[&4713];
    assert_eq!(echoed.mti, Mti::NETWORK_RESPONSE);
    assert_eq!(echoed.response_code, Some(ResponseCode::APPROVED));
    assert_eq!(
        counter(
            "fps_switch_bank_unsolicited_requests_total",
            &[("bank", "orig003")]
        ),
        2.0
    );
    // The link is still up and serving.
    assert_eq!(links_up(sw.admin).await, 1);
    drop((rd, wr));
    assert!(sw.stop().await);
}

/// The same on an ISO 20022 link: a pacs.008 the bank sends on the link
/// the switch opened is answered with a pacs.002 rejecting it (`AG01`,
/// i.e. `57`) under a message id of the switch's own, naming the request
/// in `OrgnlMsgId`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pacs008_a_bank_sends_on_a_switch_link_is_rejected_ag01() {
    const PACS008: &str = include_str!("../../codecs/tests/data/iso20022/pacs008_plain.xml");
    let pki = Pki::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let toml = config_toml(
        &pki,
        &[BankSpec {
            code: "003",
            name: "origxml003",
            codec: "iso20022",
            addr: listener.local_addr().unwrap(),
            request_timeout_ms: 5_000,
        }],
        "",
    );
    let sw = Running::start(&toml).await;
    let (mut rd, mut wr) = tokio::io::split(accept_link(&listener, &pki).await);
    let framer = Framer::new(FrameConfig::default()).unwrap();
    let codec = fps_codecs::iso20022::Iso20022Codec::default();
    let request = codec.decode(PACS008.as_bytes()).unwrap();
    wr.write_all(&framed(&framer, PACS008.as_bytes()))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let answer = codec
        .decode(&next_frame(&mut rd, &mut buf, &framer).await)
        .unwrap();
    assert!(answer.is_response());
    assert_eq!(answer.response_code, Some(ResponseCode::NOT_PERMITTED));
    assert_eq!(answer.original_message_id, request.message_id);
    assert!(answer.message_id.is_some() && answer.message_id != request.message_id);
    assert_eq!(
        counter(
            "fps_switch_bank_unsolicited_requests_total",
            &[("bank", "origxml003")]
        ),
        1.0
    );
    drop((rd, wr));
    assert!(sw.stop().await);
}
