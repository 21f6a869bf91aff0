//! The load generator against real peers on 127.0.0.1: an echo peer that
//! answers by the bank simulator's account rules and remembers idempotency
//! keys, over plaintext and over mutual TLS (certificates from the pki
//! module), and a faulty peer that answers some requests twice and drops
//! others: every request must be accounted for exactly once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fps_codecs::framing::{FrameConfig, Framer};
use fps_codecs::iso8583::Iso8583Codec;
use fps_codecs::model::{AuthId, ResponseCode, Transaction};
use fps_loadtest::load::{load_proxy_directory, parse_banks, run, Mode, Plan, TlsTarget};
use fps_loadtest::pki::{generate, PkiPlan, DEFAULT_BANKS};
use fps_loadtest::schedule::Mix;
use fps_loadtest::tls::{client_config, server_config, server_name};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the peer misbehaves: every `dup_every`-th request answered twice,
/// every `drop_every`-th never (0 = never); `bad_auth` answers duplicates
/// with another F38.
#[derive(Clone, Copy, Default)]
struct Faults {
    dup_every: u64,
    drop_every: u64,
    bad_auth: bool,
}

/// The bank simulator's outcome rules on the accounts.
fn outcome(req: &Transaction) -> ResponseCode {
    let debtor = req.debtor_account.as_ref().map_or("", |a| a.expose());
    let creditor = req.creditor_account.as_ref().map_or("", |a| a.expose());
    if debtor.ends_with("51") {
        ResponseCode::INSUFFICIENT_FUNDS
    } else if debtor.ends_with("05") {
        ResponseCode::DO_NOT_HONOUR
    } else if creditor.ends_with("14") {
        ResponseCode::UNKNOWN_ACCOUNT
    } else {
        ResponseCode::APPROVED
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, faults: Faults) {
    let codec = Iso8583Codec::builtin("canonical").unwrap();
    let framer = Framer::new(FrameConfig::default()).unwrap();
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    let mut n = 0u64;
    // F123 -> (F39, F38) of the first answer: a retry gets the same outcome.
    let mut seen: HashMap<String, (ResponseCode, AuthId)> = HashMap::new();
    loop {
        while let Some(f) = framer.decode(&mut buf).unwrap() {
            n += 1;
            let req = codec.decode(&f.message).unwrap();
            let key = req.idempotency_key.unwrap().as_str().to_owned();
            let fresh = AuthId::parse(format!("A{:05}", n % 100_000).as_bytes()).unwrap();
            let (code, auth) = match seen.get(&key) {
                Some(&(c, a)) if !faults.bad_auth => (c, a),
                _ => (outcome(&req), fresh),
            };
            seen.insert(key, (code, auth));
            let mut resp = req.response(code);
            resp.auth_id = Some(auth);
            let copies = if faults.drop_every > 0 && n % faults.drop_every == 0 {
                0
            } else if faults.dup_every > 0 && n % faults.dup_every == 0 {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let mark = framer.begin(&[], &mut out).unwrap();
                codec.encode(&resp, &mut out).unwrap();
                framer.finish(mark, &mut out).unwrap();
            }
        }
        if !out.is_empty() {
            if s.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A plaintext peer, or a mutual-TLS one when `tls` holds the server config.
async fn peer(faults: Faults, tls: Option<Arc<rustls::ServerConfig>>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve(s, faults).await,
                    Some(cfg) => {
                        if let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(s).await {
                            serve(s, faults).await
                        }
                    }
                }
            });
        }
    });
    addr
}

fn plan(target: std::net::SocketAddr) -> Plan {
    Plan {
        target,
        tls: None,
        mode: Mode::Open { rate: 2000 },
        duration: Duration::from_millis(500),
        connections: 2,
        banks: parse_banks(&["004".into(), "012".into()]).unwrap(),
        mix: Mix::default(),
        proxy_directory: HashMap::new(),
        drain: Duration::from_millis(1000),
        progress: false,
    }
}

fn pki(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fps-loadtest-{name}-{}", std::process::id()));
    generate(&PkiPlan {
        out: dir.clone(),
        banks: DEFAULT_BANKS.iter().map(|s| (*s).to_owned()).collect(),
        force: false,
    })
    .unwrap();
    dir
}

#[tokio::test]
async fn every_request_answered_once_is_counted_by_code_and_bank() {
    let report = run(plan(peer(Faults::default(), None).await))
        .await
        .unwrap();
    assert_eq!(report.offered, 1000);
    assert_eq!(report.answered, 1000);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.clean());
    assert_eq!(report.by_bank["004"] + report.by_bank["012"], 1000);
    assert_eq!(report.by_code["00"], 1000, "{:?}", report.by_code);
    assert!(report.p50_us > 0 && report.p50_us <= report.p99_us && report.p99_us <= report.max_us);
    assert_eq!(report.mode, "open");
}

#[tokio::test]
async fn the_mix_over_mutual_tls_declines_proxies_and_duplicates() {
    let dir = pki("mix");
    let server = server_config(
        &dir.join("switch.crt"),
        &dir.join("switch.key"),
        Some(&dir.join("ca.crt")),
    )
    .unwrap();
    let target = peer(Faults::default(), Some(server)).await;
    let directory = dir.join("proxies.csv");
    let lines: String = (1..=100)
        .map(|k| {
            format!(
                "MOBN:+852-9000{k:04},{}\n",
                ["003", "004", "012", "024"][(k - 1) % 4]
            )
        })
        .collect();
    std::fs::write(&directory, lines).unwrap();
    let mut p = plan(target);
    p.tls = Some(TlsTarget {
        config: client_config(
            &dir.join("ca.crt"),
            Some((&dir.join("gateway.crt"), &dir.join("gateway.key"))),
        )
        .unwrap(),
        server_name: server_name("switch.fps.test").unwrap(),
    });
    p.banks = parse_banks(&["003".into(), "004".into(), "012".into(), "024".into()]).unwrap();
    p.mix = Mix {
        proxies: 100,
        proxy_share: 0.3,
        decline_share: 0.3,
        duplicate_share: 0.2,
    };
    p.proxy_directory = load_proxy_directory(&directory).unwrap();
    let report = run(p).await.unwrap();
    assert!(report.clean(), "{report}");
    assert_eq!(report.answered, 1000);
    for code in ["00", "05", "14", "51"] {
        assert!(
            report.by_code.get(code).copied().unwrap_or(0) > 30,
            "{report}"
        );
    }
    assert!(!report.by_bank.contains_key("proxy"), "{report}");
    assert_eq!(report.by_bank.values().sum::<u64>(), 1000);
    assert!((100..=300).contains(&report.duplicates_sent), "{report}");
    assert_eq!(report.duplicates_consistent, report.duplicates_sent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let dir = pki("intruder");
    let server = server_config(
        &dir.join("switch.crt"),
        &dir.join("switch.key"),
        Some(&dir.join("ca.crt")),
    )
    .unwrap();
    let target = peer(Faults::default(), Some(server)).await;
    let mut p = plan(target);
    p.tls = Some(TlsTarget {
        config: client_config(
            &dir.join("ca.crt"),
            Some((&dir.join("intruder.crt"), &dir.join("intruder.key"))),
        )
        .unwrap(),
        server_name: server_name("127.0.0.1").unwrap(),
    });
    p.drain = Duration::from_millis(200);
    // TLS 1.3 client auth fails after the client's handshake completes: the
    // run starts, and nothing is answered.
    match run(p).await {
        Err(_) => {}
        Ok(r) => assert!(!r.clean() && r.answered == 0, "{r}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn closed_loop_keeps_the_concurrency_and_answers_everything() {
    let mut p = plan(peer(Faults::default(), None).await);
    p.mode = Mode::Closed { concurrency: 8 };
    p.duration = Duration::from_millis(300);
    p.mix.duplicate_share = 0.1;
    let report = run(p).await.unwrap();
    assert!(report.clean(), "{report}");
    assert!(report.offered > 8, "{report}");
    assert_eq!(report.concurrency, Some(8));
    assert_eq!(report.mode, "closed");
    assert!(report.duplicates_sent > 0, "{report}");
}

#[tokio::test]
async fn duplicates_and_missing_answers_are_errors() {
    let faults = Faults {
        dup_every: 7,
        drop_every: 50,
        bad_auth: false,
    };
    let report = run(plan(peer(faults, None).await)).await.unwrap();
    // 1000 requests over 2 connections of 500: every 50th of each dropped.
    assert_eq!(report.errors["timeout"], 20, "{:?}", report.errors);
    assert_eq!(report.answered, 980);
    assert!(report.errors["duplicate_answer"] > 0, "{:?}", report.errors);
    assert!(!report.clean());
}

#[tokio::test]
async fn a_retry_with_another_outcome_is_an_error() {
    let faults = Faults {
        bad_auth: true,
        ..Faults::default()
    };
    let mut p = plan(peer(faults, None).await);
    p.mix.duplicate_share = 0.5;
    let report = run(p).await.unwrap();
    assert!(report.errors["duplicate_outcome_differs"] > 100, "{report}");
    assert_eq!(report.duplicates_consistent, 0);
}

#[test]
fn bad_bank_codes_are_refused_naming_the_option() {
    let e = parse_banks(&["4".into()]).unwrap_err().to_string();
    assert!(e.starts_with("--banks"), "{e}");
}
