//! The load generator against a real TCP peer on 127.0.0.1 that answers
//! every 0200 with a 0210 (and one that answers some requests twice and
//! drops others): every request must be accounted for exactly once.

use std::time::Duration;

use bytes::BytesMut;
use fps_codecs::framing::{FrameConfig, Framer};
use fps_codecs::iso8583::Iso8583Codec;
use fps_codecs::model::ResponseCode;
use fps_loadtest::load::{parse_banks, run, Plan};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answer each request once; every `dup_every`-th twice and every
/// `drop_every`-th never (0 = never).
async fn peer(dup_every: u64, drop_every: u64) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let codec = Iso8583Codec::builtin("canonical").unwrap();
                let framer = Framer::new(FrameConfig::default()).unwrap();
                let mut buf = BytesMut::new();
                let mut out = BytesMut::new();
                let mut n = 0u64;
                loop {
                    while let Some(f) = framer.decode(&mut buf).unwrap() {
                        n += 1;
                        let req = codec.decode(&f.message).unwrap();
                        let code = if req.amount.unwrap().minor() % 10 == 1 {
                            ResponseCode::INSUFFICIENT_FUNDS
                        } else {
                            ResponseCode::APPROVED
                        };
                        let resp = req.response(code);
                        let copies = if drop_every > 0 && n % drop_every == 0 {
                            0
                        } else if dup_every > 0 && n % dup_every == 0 {
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
                        s.write_all(&out).await.unwrap();
                        out.clear();
                    }
                    if s.read_buf(&mut buf).await.unwrap() == 0 {
                        return;
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
        rate: 2000,
        duration: Duration::from_millis(500),
        connections: 2,
        banks: parse_banks(&["004".into(), "012".into()]).unwrap(),
        drain: Duration::from_millis(500),
    }
}

#[tokio::test]
async fn every_request_answered_once_is_counted_by_code_and_bank() {
    let report = run(plan(peer(0, 0).await)).await.unwrap();
    assert_eq!(report.offered, 1000);
    assert_eq!(report.answered, 1000);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.by_bank["004"] + report.by_bank["012"], 1000);
    assert_eq!(report.by_code["51"], 100, "{:?}", report.by_code);
    assert!(report.p50_us > 0 && report.p50_us <= report.p99_us && report.p99_us <= report.max_us);
}

#[tokio::test]
async fn duplicates_and_missing_answers_are_errors() {
    let report = run(plan(peer(7, 50).await)).await.unwrap();
    // 1000 requests over 2 connections of 500: every 50th of each dropped.
    assert_eq!(report.errors["timeout"], 20, "{:?}", report.errors);
    assert_eq!(report.answered, 980);
    assert!(
        report.errors["unmatched_or_duplicate"] > 0,
        "{:?}",
        report.errors
    );
}

#[test]
fn bad_bank_codes_are_refused_naming_the_option() {
    let e = parse_banks(&["4".into()]).unwrap_err().to_string();
    assert!(e.starts_with("--banks"), "{e}");
}
