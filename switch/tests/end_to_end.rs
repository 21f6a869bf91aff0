//! End to end over real sockets: gateway --mTLS--> switch --mTLS--> bank.

mod support;

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use fps_codecs::model::*;
use support::*;

fn bank(code: &'static str, name: &'static str, codec: &'static str, peer: &BankPeer) -> BankSpec {
    BankSpec {
        code,
        name,
        codec,
        addr: peer.addr,
        request_timeout_ms: 3_000,
    }
}

fn assert_echoes(req: &Transaction, answer: &Transaction) {
    assert_eq!(answer.mti, req.mti.response());
    assert_eq!(answer.transmitted_at, req.transmitted_at, "F7");
    assert_eq!(answer.stan, req.stan, "F11");
    assert_eq!(answer.rrn, req.rrn, "F37");
    assert_eq!(answer.terminal_id, req.terminal_id, "F41");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_transfer_to_ascii_and_bcd_banks_is_approved_with_upstream_ids() {
    let pki = Pki::new();
    let ascii = BankPeer::start(
        &pki,
        "iso8583:canonical",
        Behaviour::Approve { max_delay_ms: 0 },
    )
    .await;
    let bcd = BankPeer::start(
        &pki,
        "iso8583:iso87-bcd-binary",
        Behaviour::Approve { max_delay_ms: 0 },
    )
    .await;
    let sw = Running::start(&config_toml(
        &pki,
        &[
            bank("003", "bank003", "iso8583:canonical", &ascii),
            bank("004", "bank004", "iso8583:iso87-bcd-binary", &bcd),
        ],
        "",
    ))
    .await;
    sw.wait_ready().await;
    let mut gw = Gateway::connect_tls(sw.upstream, &pki, Some("gateway"))
        .await
        .unwrap();
    for (i, code) in ["003", "004"].into_iter().enumerate() {
        let req = credit_transfer(100 + i as u32, code);
        let answer = gw.request(&req).await;
        assert_echoes(&req, &answer);
        assert_eq!(
            answer.response_code,
            Some(ResponseCode::APPROVED),
            "bank {code}"
        );
        assert_eq!(answer.auth_id.unwrap().as_str(), "AUTH01");
        assert_eq!(answer.amount, req.amount);
    }
    assert_eq!(ascii.financial_requests.load(Ordering::Relaxed), 1);
    assert_eq!(bcd.financial_requests.load(Ordering::Relaxed), 1);

    // Network management from upstream is answered by the switch itself.
    let mut echo = Transaction::new(Mti::NETWORK);
    echo.transmitted_at = Some(TransmissionDateTime::parse(b"0315103000").unwrap());
    echo.stan = Some(Stan::new(7).unwrap());
    echo.network_code = Some(NetworkCode::Echo);
    let answer = gw.request(&echo).await;
    assert_eq!(answer.mti, Mti::NETWORK_RESPONSE);
    assert_eq!(answer.response_code, Some(ResponseCode::APPROVED));

    // Admin endpoints.
    let (status, links) = http_get(sw.admin, "/links").await;
    assert_eq!(status, 200);
    assert!(links.contains("\"bank004\""), "{links}");
    let (status, metrics) = http_get(sw.admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("fps_switch_requests_total"), "{metrics}");
    assert_eq!(http_get(sw.admin, "/healthz").await.0, 200);
    assert_eq!(http_get(sw.admin, "/nope").await.0, 404);
    assert!(sw.stop().await, "drained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decline_unknown_bank_bank_down_and_timeout() {
    let pki = Pki::new();
    let decline = BankPeer::start(&pki, "iso8583:canonical", Behaviour::Decline(b"51")).await;
    let silent = BankPeer::start(&pki, "iso8583:canonical", Behaviour::Silent).await;
    let down = closed_port().await;
    let mut slow = bank("012", "silent", "iso8583:canonical", &silent);
    slow.request_timeout_ms = 300;
    let sw = Running::start(&config_toml(
        &pki,
        &[
            bank("003", "declines", "iso8583:canonical", &decline),
            slow,
            BankSpec {
                code: "024",
                name: "down",
                codec: "iso8583:canonical",
                addr: down,
                request_timeout_ms: 1_000,
            },
        ],
        "",
    ))
    .await;
    // Bank "down" never comes up, so wait for the other two via /links.
    for _ in 0..200 {
        let links = http_get(sw.admin, "/links").await.1;
        if links.matches("\"up\": 1").count() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(http_get(sw.admin, "/readyz").await.0, 503);
    let mut gw = Gateway::connect_tls(sw.upstream, &pki, Some("gateway"))
        .await
        .unwrap();
    let cases = [
        ("003", ResponseCode::INSUFFICIENT_FUNDS),
        ("999", ResponseCode::UNKNOWN_ACCOUNT),
        ("024", ResponseCode::BANK_UNAVAILABLE),
        ("012", ResponseCode::LATE),
    ];
    for (i, (code, want)) in cases.into_iter().enumerate() {
        let req = credit_transfer(200 + i as u32, code);
        let answer = gw.request(&req).await;
        assert_echoes(&req, &answer);
        assert_eq!(answer.response_code, Some(want), "bank {code}");
    }
    let metrics = http_get(sw.admin, "/metrics").await.1;
    assert!(
        metrics.contains("fps_switch_bank_timeouts_total"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_trusted_certificate_are_refused() {
    let pki = Pki::new();
    let sw = Running::start(&config_toml(&pki, &[], "")).await;
    for identity in [None, Some("rogue")] {
        // With TLS 1.3 the client may finish its side of the handshake
        // before the server's alert arrives: then the first read fails.
        match Gateway::connect_tls(sw.upstream, &pki, identity).await {
            Err(_) => {}
            Ok(mut gw) => {
                let _ = gw.send_raw(b"\x00\x04abcd").await;
                assert!(gw.recv().await.is_none(), "{identity:?} got an answer");
            }
        }
    }
    // A proper gateway still gets through.
    let mut gw = Gateway::connect_tls(sw.upstream, &pki, Some("gateway"))
        .await
        .unwrap();
    let answer = gw.request(&credit_transfer(1, "999")).await;
    assert_eq!(answer.response_code, Some(ResponseCode::UNKNOWN_ACCOUNT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frame_closes_only_that_connection_and_bad_field_gets_30() {
    let pki = Pki::new();
    let sw = Running::start(&config_toml(&pki, &[], "")).await;
    let mut good = Gateway::connect_tls(sw.upstream, &pki, Some("gateway"))
        .await
        .unwrap();
    let mut bad = Gateway::connect_tls(sw.upstream, &pki, Some("gateway"))
        .await
        .unwrap();
    // Warm both up so the handshakes are done.
    assert!(good
        .request(&credit_transfer(1, "999"))
        .await
        .response_code
        .is_some());
    assert!(bad
        .request(&credit_transfer(2, "999"))
        .await
        .response_code
        .is_some());
    bad.send_raw(&[0xff, 0xff, b'0', b'2']).await.unwrap();
    assert!(
        bad.is_closed().await,
        "oversize frame closes the connection"
    );
    let answer = good.request(&credit_transfer(3, "999")).await;
    assert_eq!(answer.response_code, Some(ResponseCode::UNKNOWN_ACCOUNT));

    // A bad field (letter in F4) is answered 30 with the matching fields echoed.
    let req = credit_transfer(4, "999");
    let codec = fps_codecs::iso8583::Iso8583Codec::builtin("canonical").unwrap();
    let mut msg = bytes::BytesMut::new();
    codec.encode(&req, &mut msg).unwrap();
    // MTI (4), primary and secondary bitmaps (32), F3 (6), then F4.
    let f4 = 4 + 32 + 6 + 2;
    msg[f4] = b'X';
    assert!(codec.decode(&msg).is_err());
    let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&msg);
    good.send_raw(&framed).await.unwrap();
    let answer = good.recv().await.expect("a 30 answer");
    assert_eq!(answer.response_code, Some(ResponseCode::FORMAT_ERROR));
    assert_echoes(&req, &answer);
    // Mandatory field missing: 30 as well.
    let mut req = credit_transfer(5, "003");
    req.currency = None;
    let answer = good.request(&req).await;
    assert_eq!(answer.response_code, Some(ResponseCode::FORMAT_ERROR));
    assert_echoes(&req, &answer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_in_flight_on_one_connection_are_all_matched() {
    const N: u32 = 1_000;
    let pki = Pki::new();
    let peer = BankPeer::start(
        &pki,
        "iso8583:iso87-bcd-binary",
        Behaviour::Approve { max_delay_ms: 50 },
    )
    .await;
    let sw = Running::start(&config_toml(
        &pki,
        &[bank("004", "bank004", "iso8583:iso87-bcd-binary", &peer)],
        "",
    ))
    .await;
    sw.wait_ready().await;
    let idle_tasks = runtime_tasks(sw.admin).await;
    let mut gw = Gateway::connect_tls(sw.upstream, &pki, Some("gateway"))
        .await
        .unwrap();
    let reqs: Vec<Transaction> = (1..=N).map(|i| credit_transfer(i, "004")).collect();
    for r in &reqs {
        gw.send(r).await;
    }
    let mut seen = HashSet::new();
    let mut out_of_order = 0;
    for i in 0..N {
        let a = gw
            .recv()
            .await
            .unwrap_or_else(|| panic!("answer {i} missing"));
        let stan = a.stan.unwrap().value();
        let req = &reqs[(stan - 1) as usize];
        assert_echoes(req, &a);
        assert_eq!(a.response_code, Some(ResponseCode::APPROVED));
        assert!(seen.insert(stan), "STAN {stan} answered twice");
        if stan != i + 1 {
            out_of_order += 1;
        }
    }
    assert_eq!(seen.len(), N as usize);
    assert!(out_of_order > 0, "answers should come back out of order");
    assert_eq!(peer.financial_requests.load(Ordering::Relaxed), N as usize);
    // Every task the connection and its requests started ends with it.
    drop(gw);
    let mut tasks = runtime_tasks(sw.admin).await;
    for _ in 0..200 {
        if tasks <= idle_tasks {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        tasks = runtime_tasks(sw.admin).await;
    }
    assert_eq!(tasks, idle_tasks, "runtime tasks back to their idle level");
    assert!(sw.stop().await);
}

/// `fps_switch_runtime_tasks` from a scrape of `/metrics`.
async fn runtime_tasks(admin: std::net::SocketAddr) -> f64 {
    let text = http_get(admin, "/metrics").await.1;
    metric(&text, "fps_switch_runtime_tasks ").expect("fps_switch_runtime_tasks on /metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_transfer_to_iso20022_and_json_banks_matches_by_message_id() {
    let pki = Pki::new();
    let xml = BankPeer::start(&pki, "iso20022", Behaviour::Approve { max_delay_ms: 5 }).await;
    let json = BankPeer::start(&pki, "json", Behaviour::Approve { max_delay_ms: 5 }).await;
    let sw = Running::start(&config_toml(
        &pki,
        &[
            bank("012", "bank012", "iso20022", &xml),
            bank("024", "bank024", "json", &json),
        ],
        "",
    ))
    .await;
    sw.wait_ready().await;
    let mut gw = Gateway::connect_tls(sw.upstream, &pki, Some("gateway"))
        .await
        .unwrap();
    let reqs: Vec<Transaction> = (0..20)
        .map(|i| credit_transfer(300 + i, if i % 2 == 0 { "012" } else { "024" }))
        .collect();
    for r in &reqs {
        gw.send(r).await;
    }
    for _ in &reqs {
        let a = gw.recv().await.expect("an answer");
        let req = &reqs[(a.stan.unwrap().value() - 300) as usize];
        assert_echoes(req, &a);
        assert_eq!(
            a.response_code,
            Some(ResponseCode::APPROVED),
            "bank {:?}",
            req.receiving_bank
        );
    }
    assert_eq!(xml.financial_requests.load(Ordering::Relaxed), 10);
    assert_eq!(json.financial_requests.load(Ordering::Relaxed), 10);
}
