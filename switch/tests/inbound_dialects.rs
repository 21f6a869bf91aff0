//! Inbound bank links of banks that speak ISO 20022 (pacs.008 in, pacs.002
//! out) or the JSON bank API: a request a bank sends on its own link is
//! decoded in its dialect, routed to the destination bank (an ISO 8583 or
//! ISO 20022 test peer), and answered on the same link in the sender's
//! dialect, matched by the sender's message id (ISO 20022 `OrgnlMsgId`,
//! JSON `request_id`). Real mTLS on 127.0.0.1, the switch in-process.
//!
//! Requests are built as a bank would write them, not with the switch's
//! own encoders: the ISO 20022 ones from the captured pacs.008 in
//! `codecs/tests/data/iso20022/`, the JSON ones as JSON text. Answers are
//! read as text (XML elements, JSON members) besides being decoded.
//!
//! No `auth` here: signed ISO 20022/JSON traffic is `hsm_path.rs`'s
//! subject, and the MAC on an inbound link is `inbound.rs`'s.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use fps_codecs::framing::{FrameConfig, LengthPrefix};
use fps_codecs::iso20022::{Decoded, Iso20022Codec, MessageType};
use fps_codecs::model::*;
use serde_json::{json, Value};
use support::inbound::{bank_client_certs, code, config, metrics, start, Bank, Started};
use support::{http_get, inbound_answers, metric_sum, BankPeer, Behaviour, Gateway, Pki};

/// The captured pacs.008 (bank 004 pays an account at bank 012), replayed
/// as is and used as the template of every ISO 20022 request here.
const PACS008_CAPTURED: &str = include_str!("../../codecs/tests/data/iso20022/pacs008_plain.xml");
/// Its `GrpHdr/MsgId`, `EndToEndId`, `UETR`, amount and creditor agent.
const CAPTURED_MSG_ID: &str = "FPS20240501004000000123";
const CAPTURED_E2E: &str = "E2E-20240501-0001";
const CAPTURED_UETR: &str = "eb6305c9-1f7f-49de-aed0-16487c27b42d";
const CAPTURED_AMOUNT_MINOR: u64 = 123_456;

/// A captured pacs.002 (a bank's answer): a response, never a request.
const PACS002_CAPTURED: &str =
    include_str!("../../codecs/tests/data/iso20022/pacs002_accepted.xml");

const CANONICAL: &str = "iso8583:canonical";
/// The ISO 20022 bank's inbound links: the 4-byte length of configs/dev's
/// ISO 20022 bank (its outbound links keep the 2-byte default).
const XML_INBOUND: &str = r#"{ identity = "bank004.inbound.test", framing = { prefix = "binary4", max_frame_bytes = 65536 } }"#;
/// The JSON bank's inbound links use its own `framing` (the default,
/// 2-byte binary length).
const JSON_INBOUND: &str = r#"{ identity = "bank003.inbound.test" }"#;

// ---------------------------------------------------------------- ISO 20022

fn binary4() -> FrameConfig {
    FrameConfig {
        prefix: LengthPrefix::Binary4,
        max_frame_bytes: 65_536,
        ..FrameConfig::default()
    }
}

/// The ISO 20022 bank's end of an inbound link.
async fn xml_link(switch: &Started, pki: &Pki) -> Gateway {
    Gateway::connect_tls_speaking(switch.inbound, pki, "inxml", "iso20022", binary4())
        .await
        .expect("the ISO 20022 bank's link opens")
}

/// The captured pacs.008 as payment `msg_id` to bank `to` of
/// `amount_minor` HKD cents (its end-to-end id and UETR derived from
/// `msg_id`, so that every payment is its own).
fn pacs008(msg_id: &str, to: &str, amount_minor: u64) -> String {
    let once = |text: String, from: &str, to: &str| {
        assert_eq!(text.matches(from).count(), 1, "{from} once in the template");
        text.replace(from, to)
    };
    let mut t = once(PACS008_CAPTURED.to_owned(), CAPTURED_MSG_ID, msg_id);
    t = once(t, CAPTURED_E2E, &e2e_of(msg_id));
    t = once(t, CAPTURED_UETR, &uetr_of(msg_id));
    t = once(
        t,
        ">1234.56<",
        &format!(">{}.{:02}<", amount_minor / 100, amount_minor % 100),
    );
    once(t, "<MmbId>012</MmbId>", &format!("<MmbId>{to}</MmbId>"))
}

fn e2e_of(id: &str) -> String {
    format!("E2E-{id}")
}

/// A UUID of its own for each message id.
fn uetr_of(id: &str) -> String {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("eb6305c9-1f7f-49de-aed0-{:012x}", h & 0xffff_ffff_ffff)
}

/// An answer on the ISO 20022 link: a pacs.002 (checked as text and
/// decoded) and its text.
async fn recv_pacs002(link: &mut Gateway) -> (Decoded, String) {
    let msg = link.recv_message().await.expect("a pacs.002 within 10 s");
    let text = String::from_utf8(msg.to_vec()).expect("UTF-8 XML");
    assert!(
        text.contains("urn:iso:std:iso:20022:tech:xsd:pacs.002."),
        "{text}"
    );
    assert!(
        text.contains("<OrgnlMsgNmId>pacs.008."),
        "answers a pacs.008: {text}"
    );
    let d = Iso20022Codec::default()
        .decode_message(&msg)
        .expect("the switch's pacs.002 decodes");
    assert_eq!(d.message, MessageType::Pacs002);
    assert_eq!(d.transaction.mti, Mti::CREDIT_TRANSFER_RESPONSE);
    (d, text)
}

fn orgnl_msg_id(d: &Decoded) -> &str {
    d.transaction
        .original_message_id
        .as_ref()
        .map_or("", |m| m.as_str())
}

fn status(d: &Decoded) -> &str {
    d.status.as_ref().map_or("", |s| s.as_str())
}

fn reason(d: &Decoded) -> Option<&str> {
    d.transaction.reason.as_ref().map(|r| r.as_str())
}

// ---------------------------------------------------------------- JSON

/// The JSON bank's end of an inbound link.
async fn json_link(switch: &Started, pki: &Pki) -> Gateway {
    Gateway::connect_tls_speaking(
        switch.inbound,
        pki,
        "injson",
        "json",
        FrameConfig::default(),
    )
    .await
    .expect("the JSON bank's link opens")
}

/// A `credit_transfer` from bank 003 as the bank writes it: no STAN,
/// RRN, terminal or transmission time (the switch fills those in and
/// must not hand them back).
fn json_transfer(request_id: &str, to: &str, amount_minor: u64) -> String {
    json!({
        "type": "credit_transfer",
        "request_id": request_id,
        "end_to_end_id": e2e_of(request_id),
        "amount": { "minor": amount_minor, "currency": "HKD" },
        "debtor": { "account": "003000000100", "name": "Chan Tai Man", "bank": "003" },
        "creditor": { "account": "987654321098", "name": "Lee Siu Ming", "bank": to },
        "settlement_date": "2024-05-01"
    })
    .to_string()
}

/// An answer on the JSON link, as a JSON value.
async fn recv_json(link: &mut Gateway) -> Value {
    let msg = link
        .recv_message()
        .await
        .expect("a JSON answer within 10 s");
    serde_json::from_slice(&msg).expect("the answer is JSON")
}

fn member<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name].as_str().unwrap_or("")
}

// ---------------------------------------------------------------- helpers

/// Bank client certificates for the two banks.
fn pki_with_banks() -> Pki {
    let pki = Pki::new();
    bank_client_certs(
        &pki,
        &[
            ("inxml", "bank004.inbound.test"),
            ("injson", "bank003.inbound.test"),
        ],
    );
    pki
}

fn financial(peer: &BankPeer) -> usize {
    peer.financial_requests.load(Ordering::Relaxed)
}

/// The sum of `name` with `labels` now.
async fn metric_now(switch: &Started, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_sum(&metrics(switch.admin).await, name, labels)
}

/// `name` with `labels` once it equals `want`, or its value after 5 s.
async fn settled(switch: &Started, name: &str, labels: &[(&str, &str)], want: f64) -> f64 {
    let mut now = metric_now(switch, name, labels).await;
    for _ in 0..200 {
        if now == want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        now = metric_now(switch, name, labels).await;
    }
    now
}

// ---------------------------------------------------------------- in flight

/// Payments sent back to back on one link.
const IN_FLIGHT: usize = 24;

struct Payment {
    id: String,
    to: &'static str,
    amount_minor: u64,
    /// The code bank `to` answers.
    code: &'static str,
}

struct Answer {
    id: String,
    code: String,
    amount_minor: u64,
    e2e: String,
}

/// [`IN_FLIGHT`] payments alternating between bank 012 (approves after
/// a random delay) and bank 013 (declines 51 at once), each with its own
/// id and amount.
fn payments(prefix: &str) -> Vec<Payment> {
    (0..IN_FLIGHT)
        .map(|i| {
            let (to, code) = if i % 2 == 0 {
                ("012", "00")
            } else {
                ("013", "51")
            };
            Payment {
                id: format!("{prefix}{i:03}"),
                to,
                amount_minor: 10_000 + i as u64,
                code,
            }
        })
        .collect()
}

/// Every payment answered exactly once, with its own amount, end-to-end
/// id and its destination's outcome; answers not in the order sent (the
/// declines overtake the delayed approvals).
fn check_matched(sent: &[Payment], got: &[Answer]) {
    let by_id: HashMap<&str, (usize, &Payment)> = sent
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), (i, p)))
        .collect();
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    for a in got {
        let Some((i, p)) = by_id.get(a.id.as_str()) else {
            panic!("an answer to no request sent: {}", a.id);
        };
        assert!(seen.insert(a.id.as_str()), "{} answered twice", a.id);
        assert_eq!(a.code, p.code, "{}: its destination's outcome", a.id);
        assert_eq!(a.amount_minor, p.amount_minor, "{}: its own amount", a.id);
        assert_eq!(a.e2e, e2e_of(&p.id), "{}: its own end-to-end id", a.id);
        order.push(*i);
    }
    assert_eq!(seen.len(), sent.len(), "every request answered");
    assert!(
        order.windows(2).any(|w| w[0] > w[1]),
        "answers in the order the banks gave them, not as sent: {order:?}"
    );
}

// ---------------------------------------------------------------- tests

/// ISO 20022 bank 004 replays its captured pacs.008 to ISO 8583 bank 012
/// and gets, on the same link, a pacs.002 naming it in `OrgnlMsgId` with
/// `TxSts` `ACSC`, its end-to-end id, UETR and amount, under a message id
/// of the switch's own. Declines from ISO 8583 banks come back as `RJCT`
/// with the reason of the table (51 -> `AM04`, 14 -> `AC01`, 05 ->
/// `MS03`). A resend of the same MsgId gets the original outcome without
/// reaching the bank again.
#[tokio::test]
async fn iso20022_bank_gets_a_matched_pacs002_with_the_destination_outcome() {
    let pki = pki_with_banks();
    let own = BankPeer::start(&pki, "iso20022", Behaviour::Approve { max_delay_ms: 0 }).await;
    let approve = BankPeer::start(&pki, CANONICAL, Behaviour::Approve { max_delay_ms: 0 }).await;
    let funds = BankPeer::start(&pki, CANONICAL, Behaviour::Decline(b"51")).await;
    let account = BankPeer::start(&pki, CANONICAL, Behaviour::Decline(b"14")).await;
    let honour = BankPeer::start(&pki, CANONICAL, Behaviour::Decline(b"05")).await;
    let switch = start(&config(
        &pki,
        &[
            Bank {
                inbound: XML_INBOUND,
                ..Bank::outbound("004", "xa004", "iso20022", own.addr)
            },
            Bank::outbound("012", "xa012", CANONICAL, approve.addr),
            Bank::outbound("013", "xa013", CANONICAL, funds.addr),
            Bank::outbound("014", "xa014", CANONICAL, account.addr),
            Bank::outbound("015", "xa015", CANONICAL, honour.addr),
        ],
        None,
    ))
    .await;
    let mut link = xml_link(&switch, &pki).await;

    // The captured message, byte for byte.
    link.send_message(PACS008_CAPTURED.as_bytes())
        .await
        .unwrap();
    let (a, text) = recv_pacs002(&mut link).await;
    assert_eq!(orgnl_msg_id(&a), CAPTURED_MSG_ID, "{text}");
    assert_eq!((status(&a), code(&a.transaction)), ("ACSC", "00"), "{text}");
    assert!(text.contains("<TxSts>ACSC</TxSts>"), "{text}");
    assert!(
        !text.contains("<StsRsnInf>"),
        "no reason on an approval: {text}"
    );
    let t = &a.transaction;
    let answer_id = t.message_id.expect("the pacs.002 has its own MsgId");
    assert_ne!(answer_id.as_str(), CAPTURED_MSG_ID);
    assert_eq!(
        t.end_to_end_id.map(|e| e.as_str().to_owned()).as_deref(),
        Some(CAPTURED_E2E)
    );
    assert_eq!(
        t.uetr.map(|u| u.to_string()).as_deref(),
        Some(CAPTURED_UETR)
    );
    assert_eq!(t.amount.map(|m| m.minor()), Some(CAPTURED_AMOUNT_MINOR));
    assert_eq!(t.currency, Some(Currency::HKD));
    // What bank 012 got: the payment, under the switch's ids.
    assert_eq!(financial(&approve), 1);
    let seen = approve.requests.lock().unwrap()[0].clone();
    assert_eq!(seen.amount.map(|m| m.minor()), Some(CAPTURED_AMOUNT_MINOR));
    assert_eq!(seen.currency, Some(Currency::HKD));
    assert_eq!(seen.receiving_bank, BankCode::parse(b"012").ok());
    assert_eq!(
        seen.creditor_account
            .map(|a| a.expose().to_owned())
            .as_deref(),
        Some("012987654321")
    );
    assert_eq!(
        seen.debtor_account
            .map(|a| a.expose().to_owned())
            .as_deref(),
        Some("004123456789")
    );
    assert!(
        seen.stan.is_some() && seen.rrn.is_some(),
        "the switch's ids"
    );
    // What ISO 20022 does not carry, the switch filled in naming the bank.
    assert_eq!(
        seen.terminal_id.map(|t| t.as_str().to_owned()).as_deref(),
        Some("BANK0004")
    );
    assert_eq!(
        seen.acquirer.map(|a| a.as_str().to_owned()).as_deref(),
        Some("004")
    );

    // Declines, each matched to its own request.
    for (msg_id, to, want_code, want_reason) in [
        ("XA-DECLINE-51", "013", "51", "AM04"),
        ("XA-DECLINE-14", "014", "14", "AC01"),
        ("XA-DECLINE-05", "015", "05", "MS03"),
    ] {
        link.send_message(pacs008(msg_id, to, 777).as_bytes())
            .await
            .unwrap();
        let (a, text) = recv_pacs002(&mut link).await;
        assert_eq!(orgnl_msg_id(&a), msg_id, "{text}");
        assert_eq!(status(&a), "RJCT", "{text}");
        assert!(text.contains("<TxSts>RJCT</TxSts>"), "{text}");
        assert!(
            text.contains(&format!("<StsRsnInf><Rsn><Cd>{want_reason}</Cd>")),
            "{msg_id}: reason {want_reason}: {text}"
        );
        assert_eq!(reason(&a), Some(want_reason));
        assert_eq!(code(&a.transaction), want_code, "{text}");
        assert_eq!(a.transaction.amount.map(|m| m.minor()), Some(777));
        assert_eq!(
            a.transaction.end_to_end_id.map(|e| e.as_str().to_owned()),
            Some(e2e_of(msg_id))
        );
    }
    assert_eq!(
        (financial(&funds), financial(&account), financial(&honour)),
        (1, 1, 1)
    );

    // The same MsgId again: the original outcome, not a second payment.
    link.send_message(PACS008_CAPTURED.as_bytes())
        .await
        .unwrap();
    let (again, text) = recv_pacs002(&mut link).await;
    assert_eq!(orgnl_msg_id(&again), CAPTURED_MSG_ID, "{text}");
    assert_eq!(status(&again), "ACSC", "{text}");
    assert_ne!(again.transaction.message_id, Some(answer_id), "a new MsgId");
    assert_eq!(financial(&approve), 1, "a duplicate never reaches the bank");
    assert_eq!(financial(&own), 0, "nothing goes back to the sender");

    let m = metrics(switch.admin).await;
    let answers = |code: &str| inbound_answers(&m, "xa004", code);
    assert_eq!(
        (answers("00"), answers("51"), answers("14"), answers("05")),
        (2.0, 1.0, 1.0, 1.0),
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "fps_switch_bank_inbound_requests_total",
            &[("bank", "xa004"), ("class", "2")]
        ),
        5.0
    );
    drop(link);
    assert!(switch.stop().await, "drained");
}

/// JSON bank 003 pays ISO 8583 bank 004 and ISO 20022 bank 012 and gets a
/// `credit_transfer_result` on the same link echoing its `request_id`:
/// approved with the bank's auth id, or declined with the destination's
/// code (and, from the ISO 20022 bank, its reason). Ids the switch made
/// up (STAN, RRN, terminal, acquirer) are not handed back; ids the bank
/// sent itself are, as is the captured example's idempotency key
/// honoured (a resend under a new `request_id` is not paid twice).
#[tokio::test]
async fn json_bank_gets_a_matched_result_with_the_destination_outcome() {
    let pki = pki_with_banks();
    let own = BankPeer::start(&pki, "json", Behaviour::Approve { max_delay_ms: 0 }).await;
    let iso8583 = BankPeer::start(&pki, CANONICAL, Behaviour::Approve { max_delay_ms: 0 }).await;
    let funds = BankPeer::start(&pki, CANONICAL, Behaviour::Decline(b"51")).await;
    let xml = BankPeer::start(&pki, "iso20022", Behaviour::Decline(b"51")).await;
    let switch = start(&config(
        &pki,
        &[
            Bank {
                inbound: JSON_INBOUND,
                ..Bank::outbound("003", "ja003", "json", own.addr)
            },
            Bank::outbound("004", "ja004", CANONICAL, iso8583.addr),
            Bank::outbound("013", "ja013", CANONICAL, funds.addr),
            Bank::outbound("012", "ja012", "iso20022", xml.addr),
        ],
        None,
    ))
    .await;
    let mut link = json_link(&switch, &pki).await;

    link.send_message(json_transfer("JA-APPROVE-1", "004", 5_000).as_bytes())
        .await
        .unwrap();
    let a = recv_json(&mut link).await;
    assert_eq!(member(&a, "type"), "credit_transfer_result", "{a}");
    assert_eq!(member(&a, "request_id"), "JA-APPROVE-1", "{a}");
    assert_eq!(
        (member(&a, "status"), member(&a, "code")),
        ("approved", "00"),
        "{a}"
    );
    assert_eq!(member(&a, "auth_id"), "AUTH01", "the bank's auth id: {a}");
    assert_eq!(member(&a, "end_to_end_id"), "E2E-JA-APPROVE-1", "{a}");
    assert_eq!(
        a["amount"],
        json!({ "minor": 5000, "currency": "HKD" }),
        "{a}"
    );
    for made_up in ["stan", "rrn", "terminal_id", "acquirer"] {
        assert!(a.get(made_up).is_none(), "{made_up} not handed back: {a}");
    }
    assert_eq!(financial(&iso8583), 1);
    let seen = iso8583.requests.lock().unwrap()[0].clone();
    assert_eq!(seen.amount.map(|m| m.minor()), Some(5_000));
    assert_eq!(
        seen.creditor_account
            .map(|a| a.expose().to_owned())
            .as_deref(),
        Some("987654321098")
    );

    // Declined by an ISO 8583 bank: the canonical code, status declined.
    link.send_message(json_transfer("JA-DECLINE-51", "013", 6_000).as_bytes())
        .await
        .unwrap();
    let d = recv_json(&mut link).await;
    assert_eq!(member(&d, "request_id"), "JA-DECLINE-51", "{d}");
    assert_eq!(
        (member(&d, "status"), member(&d, "code")),
        ("declined", "51"),
        "{d}"
    );
    assert!(d.get("auth_id").is_none(), "{d}");

    // Declined by an ISO 20022 bank (RJCT AM04): its reason comes along.
    link.send_message(json_transfer("JA-DECLINE-XML", "012", 7_000).as_bytes())
        .await
        .unwrap();
    let x = recv_json(&mut link).await;
    assert_eq!(member(&x, "request_id"), "JA-DECLINE-XML", "{x}");
    assert_eq!(
        (member(&x, "status"), member(&x, "code")),
        ("declined", "51"),
        "{x}"
    );
    assert_eq!(member(&x, "reason"), "AM04", "{x}");
    assert_eq!((financial(&funds), financial(&xml)), (1, 1));

    // The captured example, addressed to bank 004 (by account: the proxy
    // directory is empty here): its own STAN, RRN, terminal and acquirer
    // come back; its idempotency key decides what a duplicate is.
    let captured: Value = serde_json::from_str(include_str!(
        "../../codecs/tests/data/json/credit_transfer.json"
    ))
    .unwrap();
    let mut example = captured.clone();
    example["creditor"] = json!({ "account": "004987654321", "bank": "004" });
    link.send_message(example.to_string().as_bytes())
        .await
        .unwrap();
    let e = recv_json(&mut link).await;
    assert_eq!(
        member(&e, "request_id"),
        member(&captured, "request_id"),
        "{e}"
    );
    assert_eq!(member(&e, "status"), "approved", "{e}");
    for echoed in ["stan", "rrn", "terminal_id", "acquirer", "transmitted_at"] {
        assert_eq!(
            member(&e, echoed),
            member(&captured, echoed),
            "{echoed}: {e}"
        );
    }
    assert_eq!(financial(&iso8583), 2);
    let mut resend = example.clone();
    resend["request_id"] = json!("JA-RESEND-OF-EXAMPLE");
    link.send_message(resend.to_string().as_bytes())
        .await
        .unwrap();
    let r = recv_json(&mut link).await;
    assert_eq!(member(&r, "request_id"), "JA-RESEND-OF-EXAMPLE", "{r}");
    assert_eq!(
        member(&r, "status"),
        "approved",
        "the original outcome: {r}"
    );
    assert_eq!(
        financial(&iso8583),
        2,
        "same idempotency key: not paid twice"
    );
    assert_eq!(financial(&own), 0);

    let m = metrics(switch.admin).await;
    let answers = |code: &str| inbound_answers(&m, "ja003", code);
    assert_eq!((answers("00"), answers("51")), (3.0, 2.0), "{m}");
    drop(link);
    assert!(switch.stop().await, "drained");
}

/// A JSON request that does not decode but is a JSON object naming its
/// `type` and `request_id` is answered `30`, matched, and the link goes
/// on (the ISO 20022 counterpart has a test of its own below). A message
/// that cannot be matched to anything (XML or JSON cut short, a MsgId too
/// long to name in an answer) cannot be answered, so the link is closed
/// and counted (`undecodable`, frame error `decode`); a request already in
/// flight on it is still answered first.
/// A length prefix over the limit closes the link as `bad_frame`. A
/// response message (pacs.002, `*_result`) is dropped and counted, and
/// the link goes on. Other links, of the same bank or another, are
/// unaffected and the switch stays up.
#[tokio::test]
async fn undecodable_iso20022_and_json_close_only_their_own_link() {
    let pki = pki_with_banks();
    let xml_own = BankPeer::start(&pki, "iso20022", Behaviour::Approve { max_delay_ms: 0 }).await;
    let json_own = BankPeer::start(&pki, "json", Behaviour::Approve { max_delay_ms: 0 }).await;
    let dest = BankPeer::start(&pki, CANONICAL, Behaviour::Approve { max_delay_ms: 0 }).await;
    // Answers after a while, so that a request is still in flight when
    // the bad message behind it arrives.
    let slow = BankPeer::start(
        &pki,
        CANONICAL,
        Behaviour::Late {
            delay_ms: 300,
            code: b"00",
        },
    )
    .await;
    let switch = start(&config(
        &pki,
        &[
            Bank {
                inbound: XML_INBOUND,
                ..Bank::outbound("004", "xb004", "iso20022", xml_own.addr)
            },
            Bank {
                inbound: JSON_INBOUND,
                ..Bank::outbound("003", "jb003", "json", json_own.addr)
            },
            Bank::outbound("012", "xb012", CANONICAL, dest.addr),
            Bank::outbound("016", "xb016", CANONICAL, slow.addr),
        ],
        None,
    ))
    .await;
    let frame_errors = |reason: &'static str| {
        let switch = &switch;
        async move {
            metric_now(
                switch,
                "fps_switch_frame_errors_total",
                &[("side", "bank_inbound"), ("reason", reason)],
            )
            .await
        }
    };
    let closed_as = |bank: &'static str, reason: &'static str| {
        let switch = &switch;
        async move {
            metric_now(
                switch,
                "fps_switch_bank_inbound_links_closed_total",
                &[("bank", bank), ("reason", reason)],
            )
            .await
        }
    };
    let decode_errors = frame_errors("decode").await;
    let responses = frame_errors("unexpected_response").await;
    let framing_errors = frame_errors("framing").await;

    let mut xml = xml_link(&switch, &pki).await;
    let mut xml_other = xml_link(&switch, &pki).await;
    let mut json = json_link(&switch, &pki).await;

    // A pacs.002 from the bank answers nothing: dropped, link still good.
    xml.send_message(PACS002_CAPTURED.as_bytes()).await.unwrap();
    xml.send_message(pacs008("XB-AFTER-RESPONSE", "012", 100).as_bytes())
        .await
        .unwrap();
    let (a, text) = recv_pacs002(&mut xml).await;
    assert_eq!(orgnl_msg_id(&a), "XB-AFTER-RESPONSE", "{text}");
    assert_eq!(status(&a), "ACSC", "{text}");
    assert!(frame_errors("unexpected_response").await - responses >= 1.0);

    // A payment in flight, then XML cut short: the payment is answered,
    // then the link is closed.
    xml.send_message(pacs008("XB-IN-FLIGHT", "016", 200).as_bytes())
        .await
        .unwrap();
    let cut = pacs008("XB-CUT-SHORT", "012", 300);
    xml.send_message(&cut.as_bytes()[..cut.len() / 2])
        .await
        .unwrap();
    let (a, text) = recv_pacs002(&mut xml).await;
    assert_eq!(orgnl_msg_id(&a), "XB-IN-FLIGHT", "{text}");
    assert_eq!(status(&a), "ACSC", "{text}");
    assert!(xml.is_closed().await, "the ISO 20022 link is closed");
    assert_eq!(closed_as("xb004", "undecodable").await, 1.0);
    assert_eq!(financial(&slow), 1);

    // Well-formed XML that does not decode, with a MsgId too long for
    // any answer to name it, on the other link: that one closes too.
    let mut xml_bad_value = xml_link(&switch, &pki).await;
    let bad = pacs008(&"X".repeat(MessageId::MAX_LEN + 1), "012", 400);
    xml_bad_value.send_message(bad.as_bytes()).await.unwrap();
    assert!(xml_bad_value.is_closed().await);
    assert_eq!(closed_as("xb004", "undecodable").await, 2.0);

    // JSON: a result from the bank is dropped; then malformed JSON.
    json.send_message(
        json!({
            "type": "credit_transfer_result",
            "request_id": "JB-NOT-A-REQUEST",
            "status": "approved",
            "code": "00"
        })
        .to_string()
        .as_bytes(),
    )
    .await
    .unwrap();
    json.send_message(json_transfer("JB-OK-1", "012", 500).as_bytes())
        .await
        .unwrap();
    let j = recv_json(&mut json).await;
    assert_eq!(
        (member(&j, "request_id"), member(&j, "status")),
        ("JB-OK-1", "approved"),
        "{j}"
    );
    // Well-formed JSON that does not decode (a negative amount) but names
    // its type and request_id: answered 30, matched, and the link stays.
    let broken = json_transfer("JB-BROKEN", "012", 600).replace("\"minor\":600", "\"minor\":-600");
    assert!(broken.contains("-600"));
    json.send_message(broken.as_bytes()).await.unwrap();
    let j = recv_json(&mut json).await;
    assert_eq!(
        (
            member(&j, "type"),
            member(&j, "request_id"),
            member(&j, "status"),
            member(&j, "code")
        ),
        ("credit_transfer_result", "JB-BROKEN", "declined", "30"),
        "{j}"
    );
    json.send_message(json_transfer("JB-OK-3", "012", 650).as_bytes())
        .await
        .unwrap();
    let j = recv_json(&mut json).await;
    assert_eq!(
        (member(&j, "request_id"), member(&j, "status")),
        ("JB-OK-3", "approved"),
        "{j}"
    );
    // JSON cut short cannot be matched to anything: the link is closed.
    let cut = json_transfer("JB-CUT", "012", 660);
    json.send_message(&cut.as_bytes()[..cut.len() - 2])
        .await
        .unwrap();
    assert!(json.is_closed().await, "the JSON link is closed");
    assert_eq!(closed_as("jb003", "undecodable").await, 1.0);

    // A length prefix over the limit (2-byte 0xffff > 8 KiB): bad frame.
    let mut json_oversize = json_link(&switch, &pki).await;
    json_oversize
        .send_raw(&[0xff, 0xff, b'{', b'"'])
        .await
        .unwrap();
    assert!(json_oversize.is_closed().await);
    assert_eq!(closed_as("jb003", "bad_frame").await, 1.0);

    assert!(frame_errors("decode").await - decode_errors >= 4.0);
    assert!(frame_errors("unexpected_response").await - responses >= 2.0);
    assert!(frame_errors("framing").await - framing_errors >= 1.0);

    // The ISO 20022 bank's other link, a new JSON link, and the switch
    // itself are fine.
    xml_other
        .send_message(pacs008("XB-OTHER-LINK", "012", 700).as_bytes())
        .await
        .unwrap();
    let (a, text) = recv_pacs002(&mut xml_other).await;
    assert_eq!(
        (orgnl_msg_id(&a), status(&a)),
        ("XB-OTHER-LINK", "ACSC"),
        "{text}"
    );
    let mut json_again = json_link(&switch, &pki).await;
    json_again
        .send_message(json_transfer("JB-OK-2", "012", 800).as_bytes())
        .await
        .unwrap();
    let j = recv_json(&mut json_again).await;
    assert_eq!(
        (member(&j, "request_id"), member(&j, "status")),
        ("JB-OK-2", "approved"),
        "{j}"
    );
    assert_eq!(http_get(switch.admin, "/healthz").await.0, 200);
    // Neither bad message reached a bank.
    assert_eq!(
        financial(&dest),
        5,
        "XB-AFTER-RESPONSE, JB-OK-1, JB-OK-3, XB-OTHER-LINK, JB-OK-2"
    );
    // Once the closed links' owners hang up (or the switch's bounded
    // lingering ends), one link per bank is left open.
    drop((xml, xml_bad_value, json, json_oversize));
    for bank in ["xb004", "jb003"] {
        let open = settled(
            &switch,
            "fps_switch_bank_inbound_links",
            &[("bank", bank)],
            1.0,
        )
        .await;
        assert_eq!(open, 1.0, "{bank}: open links");
    }
    drop((xml_other, json_again));
    assert!(switch.stop().await, "drained");
}

/// A pacs.008 that does not decode but is well-formed XML with a
/// readable `MsgId` and end-to-end id (a non-numeric amount, an unknown
/// currency, a mandatory element missing) is answered on the same link
/// with a pacs.002 `RJCT` + `FF01` (format error, `30`) naming it in
/// `OrgnlMsgId` and echoing its ids, under a MsgId of the switch's own.
/// It reaches no bank, the link stays open, and the next request on it is
/// answered as usual.
#[tokio::test]
async fn undecodable_iso20022_request_is_answered_30_and_the_link_stays_open() {
    let pki = pki_with_banks();
    let own = BankPeer::start(&pki, "iso20022", Behaviour::Approve { max_delay_ms: 0 }).await;
    let dest = BankPeer::start(&pki, CANONICAL, Behaviour::Approve { max_delay_ms: 0 }).await;
    let switch = start(&config(
        &pki,
        &[
            Bank {
                inbound: XML_INBOUND,
                ..Bank::outbound("004", "xs004", "iso20022", own.addr)
            },
            Bank::outbound("012", "xs012", CANONICAL, dest.addr),
        ],
        None,
    ))
    .await;
    let decode_errors = metric_now(
        &switch,
        "fps_switch_frame_errors_total",
        &[("side", "bank_inbound"), ("reason", "decode")],
    )
    .await;
    let mut link = xml_link(&switch, &pki).await;

    let broken = [
        (
            "XS-AMOUNT",
            pacs008("XS-AMOUNT", "012", 100).replace(">1.00<", ">1.0x<"),
        ),
        (
            "XS-CURRENCY",
            pacs008("XS-CURRENCY", "012", 200).replace("Ccy=\"HKD\"", "Ccy=\"HKX\""),
        ),
        (
            "XS-NO-NBOFTXS",
            pacs008("XS-NO-NBOFTXS", "012", 300).replace("<NbOfTxs>1</NbOfTxs>", ""),
        ),
    ];
    for (msg_id, doc) in &broken {
        assert!(
            Iso20022Codec::default()
                .decode_message(doc.as_bytes())
                .is_err(),
            "{msg_id} must not decode"
        );
        link.send_message(doc.as_bytes()).await.unwrap();
        let (a, text) = recv_pacs002(&mut link).await;
        assert_eq!(orgnl_msg_id(&a), *msg_id, "{text}");
        assert_eq!(
            (status(&a), reason(&a), code(&a.transaction)),
            ("RJCT", Some("FF01"), "30"),
            "{text}"
        );
        assert!(text.contains("<TxSts>RJCT</TxSts>"), "{text}");
        let t = &a.transaction;
        assert_eq!(
            t.end_to_end_id.map(|e| e.as_str().to_owned()),
            Some(e2e_of(msg_id)),
            "{text}"
        );
        assert_eq!(
            t.uetr.map(|u| u.to_string()),
            Some(uetr_of(msg_id)),
            "{text}"
        );
        let answer_id = t.message_id.expect("the pacs.002 has its own MsgId");
        assert_ne!(answer_id.as_str(), *msg_id, "{text}");
        // Nothing read from a message that does not decode is echoed but
        // its ids.
        assert_eq!(t.amount, None, "{text}");
    }

    // The link is still open: the next payment on it goes through.
    link.send_message(pacs008("XS-GOOD", "012", 400).as_bytes())
        .await
        .unwrap();
    let (a, text) = recv_pacs002(&mut link).await;
    assert_eq!(
        (orgnl_msg_id(&a), status(&a), code(&a.transaction)),
        ("XS-GOOD", "ACSC", "00"),
        "{text}"
    );
    assert_eq!(a.transaction.amount.map(|m| m.minor()), Some(400));
    assert_eq!(financial(&dest), 1, "only XS-GOOD reached bank 012");

    let m = metrics(switch.admin).await;
    let answers = |code: &str| inbound_answers(&m, "xs004", code);
    assert_eq!((answers("30"), answers("00")), (3.0, 1.0), "{m}");
    assert_eq!(
        metric_sum(
            &m,
            "fps_switch_bank_inbound_links_closed_total",
            &[("bank", "xs004")]
        ),
        0.0,
        "{m}"
    );
    assert!(
        metric_sum(
            &m,
            "fps_switch_frame_errors_total",
            &[("side", "bank_inbound"), ("reason", "decode")]
        ) - decode_errors
            >= 3.0
    );
    drop(link);
    assert!(switch.stop().await, "drained");
}

/// Many pacs.008 in flight on one ISO 20022 link, to a bank that approves
/// after random delays and one that declines at once: each is answered
/// exactly once (nothing more follows), matched by `OrgnlMsgId`, with
/// its own amount and outcome, in the order the banks answer.
#[tokio::test]
async fn many_in_flight_on_one_iso20022_link_are_matched_by_message_id() {
    let pki = pki_with_banks();
    let own = BankPeer::start(&pki, "iso20022", Behaviour::Approve { max_delay_ms: 0 }).await;
    let approve = BankPeer::start(&pki, CANONICAL, Behaviour::Approve { max_delay_ms: 150 }).await;
    let decline = BankPeer::start(&pki, CANONICAL, Behaviour::Decline(b"51")).await;
    let switch = start(&config(
        &pki,
        &[
            Bank {
                inbound: XML_INBOUND,
                ..Bank::outbound("004", "xc004", "iso20022", own.addr)
            },
            Bank::outbound("012", "xc012", CANONICAL, approve.addr),
            Bank::outbound("013", "xc013", CANONICAL, decline.addr),
        ],
        None,
    ))
    .await;
    let mut link = xml_link(&switch, &pki).await;
    let sent = payments("XC-INFLIGHT-");
    for p in &sent {
        link.send_message(pacs008(&p.id, p.to, p.amount_minor).as_bytes())
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..sent.len() {
        let (a, text) = recv_pacs002(&mut link).await;
        let want = match status(&a) {
            "ACSC" => ("00", None),
            "RJCT" => ("51", Some("AM04")),
            other => panic!("status {other}: {text}"),
        };
        assert_eq!((code(&a.transaction), reason(&a)), want, "{text}");
        got.push(Answer {
            id: orgnl_msg_id(&a).to_owned(),
            code: code(&a.transaction).to_owned(),
            amount_minor: a.transaction.amount.map_or(0, |m| m.minor()),
            e2e: a
                .transaction
                .end_to_end_id
                .map(|e| e.as_str().to_owned())
                .unwrap_or_default(),
        });
    }
    check_matched(&sent, &got);
    // Nothing else was queued: the next answer is the next request's.
    link.send_message(pacs008("XC-SENTINEL", "013", 1).as_bytes())
        .await
        .unwrap();
    let (a, text) = recv_pacs002(&mut link).await;
    assert_eq!(orgnl_msg_id(&a), "XC-SENTINEL", "{text}");
    assert_eq!(
        (financial(&approve), financial(&decline)),
        (IN_FLIGHT / 2, IN_FLIGHT / 2 + 1)
    );
    drop(link);
    assert!(switch.stop().await, "drained");
}

/// As above on one JSON link, matched by `request_id`.
#[tokio::test]
async fn many_in_flight_on_one_json_link_are_matched_by_request_id() {
    let pki = pki_with_banks();
    let own = BankPeer::start(&pki, "json", Behaviour::Approve { max_delay_ms: 0 }).await;
    let approve = BankPeer::start(&pki, CANONICAL, Behaviour::Approve { max_delay_ms: 150 }).await;
    let decline = BankPeer::start(&pki, CANONICAL, Behaviour::Decline(b"51")).await;
    let switch = start(&config(
        &pki,
        &[
            Bank {
                inbound: JSON_INBOUND,
                ..Bank::outbound("003", "jc003", "json", own.addr)
            },
            Bank::outbound("012", "jc012", CANONICAL, approve.addr),
            Bank::outbound("013", "jc013", CANONICAL, decline.addr),
        ],
        None,
    ))
    .await;
    let mut link = json_link(&switch, &pki).await;
    let sent = payments("JC-INFLIGHT-");
    for p in &sent {
        link.send_message(json_transfer(&p.id, p.to, p.amount_minor).as_bytes())
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..sent.len() {
        let a = recv_json(&mut link).await;
        assert_eq!(member(&a, "type"), "credit_transfer_result", "{a}");
        let want_status = if member(&a, "code") == "00" {
            "approved"
        } else {
            "declined"
        };
        assert_eq!(member(&a, "status"), want_status, "{a}");
        got.push(Answer {
            id: member(&a, "request_id").to_owned(),
            code: member(&a, "code").to_owned(),
            amount_minor: a["amount"]["minor"].as_u64().unwrap_or(0),
            e2e: member(&a, "end_to_end_id").to_owned(),
        });
    }
    check_matched(&sent, &got);
    // Nothing else was queued: the next answer is the next request's.
    link.send_message(json_transfer("JC-SENTINEL", "013", 1).as_bytes())
        .await
        .unwrap();
    let a = recv_json(&mut link).await;
    assert_eq!(member(&a, "request_id"), "JC-SENTINEL", "{a}");
    assert_eq!(
        (financial(&approve), financial(&decline)),
        (IN_FLIGHT / 2, IN_FLIGHT / 2 + 1)
    );
    drop(link);
    assert!(switch.stop().await, "drained");
}
