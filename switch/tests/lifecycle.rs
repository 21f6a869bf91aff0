//! Connection limits, plaintext mode and graceful shutdown.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use fps_codecs::model::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_during_shutdown() {
    let pki = Pki::new();
    let peer = BankPeer::start(
        &pki,
        "iso8583:canonical",
        Behaviour::Approve { max_delay_ms: 300 },
    )
    .await;
    let mut sw = Running::start(&config_toml(
        &pki,
        &[BankSpec {
            code: "003",
            name: "bank003",
            codec: "iso8583:canonical",
            addr: peer.addr,
            request_timeout_ms: 3_000,
        }],
        "",
    ))
    .await;
    sw.wait_ready().await;
    let upstream = sw.upstream;
    let mut gw = Gateway::connect_tls(upstream, &pki, Some("gateway"))
        .await
        .unwrap();
    // Some of these wait up to 300 ms at the bank.
    for stan in 1..=20 {
        gw.send(&credit_transfer(stan, "003")).await;
    }
    // Shut down once every request has reached the bank (bytes still unread
    // in the socket at shutdown are not requests the switch has taken).
    for _ in 0..500 {
        if peer.financial_requests.load(Ordering::Relaxed) == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sw.begin_stop();
    for _ in 1..=20 {
        let a = gw.recv().await.expect("answered during the drain");
        assert_eq!(a.response_code, Some(ResponseCode::APPROVED));
    }
    assert!(gw.is_closed().await, "connection closed after the drain");
    assert!(sw.join().await, "drained within the deadline");
    // No longer accepting.
    assert!(Gateway::connect_tls(upstream, &pki, Some("gateway"))
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_and_plaintext_works_when_configured() {
    let text = r#"
[upstream]
bind = "127.0.0.1:0"
tls = false
max_connections = 1

[admin]
bind = "127.0.0.1:0"

# Many small switches: no resident idempotency table up front.
[idempotency]
pretouch = false
"#;
    let sw = Running::start(text).await;
    let mut first = Gateway::connect_plain(sw.upstream).await.unwrap();
    let a = first.request(&credit_transfer(1, "004")).await;
    assert_eq!(a.response_code, Some(ResponseCode::UNKNOWN_ACCOUNT));
    let mut second = Gateway::connect_plain(sw.upstream).await.unwrap();
    assert!(second.is_closed().await, "second connection refused");
    // The first one is unaffected.
    let a = first.request(&credit_transfer(2, "004")).await;
    assert_eq!(a.response_code, Some(ResponseCode::UNKNOWN_ACCOUNT));
    drop(first);
    // Its slot comes back once it is closed.
    let mut third = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut g = Gateway::connect_plain(sw.upstream).await.unwrap();
        g.send(&credit_transfer(3, "004")).await;
        if let Some(a) = g.recv().await {
            third = Some(a);
            break;
        }
    }
    assert_eq!(
        third.unwrap().response_code,
        Some(ResponseCode::UNKNOWN_ACCOUNT)
    );
}
