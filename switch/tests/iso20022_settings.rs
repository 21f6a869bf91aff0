//! A bank's `iso20022` table end to end: the switch writes the message
//! versions and own BIC it is configured with, reads the answers in the
//! configured versions, and a bank left on other versions gets a clear
//! upstream answer (68 after the bank's deadline), never a hang.
//!
//! The bank here is a plaintext TCP peer in the test that behaves like the
//! bank simulator (`fps-loadtest bank-sim`): it decodes with its own
//! ISO 20022 settings, approves what it can read, and drops (only counts)
//! a message it cannot decode. It keeps the bytes of every message, so the
//! test can look at what went over the wire. The same settings apply on
//! the links a bank opens to the switch (`[bank_inbound]`).

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fps_codecs::framing::{FrameConfig, Framer};
use fps_codecs::iso20022::{Iso20022Codec, Iso20022Config, MessageVersion};
use fps_codecs::model::*;
use fps_codecs::MessageCodec;
use support::inbound::{self, bank_client_certs, Bank};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the switch writes to the bank under test.
const OWN_BIC: &str = "FPSWHKHHXXX";

/// The `iso20022` table of the bank under test; its peer is given the same
/// versions directly (`peer_config`), not through the switch's parser.
const SETTINGS: &str =
    r#"{ own_bic = "FPSWHKHHXXX", versions = { pacs008 = "001.09", pacs002 = "001.11" } }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_versions_and_own_bic_go_over_the_wire_and_the_transfer_is_approved() {
    let pki = Pki::new();
    let bank = XmlBank::start(peer_config("001.09", "001.11")).await;
    let sw = Running::start(&switch_toml(&pki, bank.addr, Some(SETTINGS), 3_000)).await;
    sw.wait_ready().await;
    let mut gw = Gateway::connect_tls(sw.upstream, &pki, Some("gateway"))
        .await
        .unwrap();

    let req = credit_transfer(4_001, "012");
    let answer = gw.request(&req).await;
    assert_eq!(answer.response_code, Some(ResponseCode::APPROVED));
    assert_eq!(answer.stan, req.stan);

    let seen = bank.messages();
    assert_eq!(seen.len(), 1, "one pacs.008 reached the bank");
    let pacs008 = std::str::from_utf8(&seen[0]).expect("ISO 20022 XML is UTF-8");
    assert!(
        pacs008.contains(r#"xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.008.001.09""#),
        "{pacs008}"
    );
    let group_header = element(pacs008, "GrpHdr").expect("a GrpHdr");
    assert!(
        group_header.contains(&format!(
            "<InstgAgt><FinInstnId><BICFI>{OWN_BIC}</BICFI></FinInstnId></InstgAgt>"
        )),
        "{group_header}"
    );
    // The bank answered in pacs.002.001.11, which the switch read: it
    // accepts no other version of pacs.002 (accept_other_versions unset).
    let answers = bank.answers();
    assert_eq!(answers.len(), 1);
    assert!(
        answers[0].contains(r#"xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.002.001.11""#),
        "{}",
        answers[0]
    );
    assert_eq!(bank.undecodable(), 0);
    assert!(sw.stop().await);
}

/// The switch writes pacs.008.001.09 to a bank still on the defaults
/// (pacs.008.001.08, no other version accepted). Such a bank cannot read
/// the message and, like the bank simulator, does not answer it: the
/// switch's request times out and the gateway gets `68` (outcome unknown,
/// reversal under way) after the bank's deadline, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_on_another_version_gets_no_readable_request_and_upstream_gets_68() {
    let pki = Pki::new();
    let bank = XmlBank::start(Iso20022Config::default()).await;
    let request_timeout_ms = 1_000;
    let settings = r#"{ versions = { pacs008 = "001.09" } }"#;
    let sw = Running::start(&switch_toml(
        &pki,
        bank.addr,
        Some(settings),
        request_timeout_ms,
    ))
    .await;
    sw.wait_ready().await;
    let mut gw = Gateway::connect_tls(sw.upstream, &pki, Some("gateway"))
        .await
        .unwrap();

    let started = Instant::now();
    let answer = gw.request(&credit_transfer(4_002, "012")).await;
    let took = started.elapsed();
    assert_eq!(answer.response_code, Some(ResponseCode::LATE), "{answer:?}");
    assert!(
        took >= Duration::from_millis(request_timeout_ms) && took < Duration::from_secs(5),
        "answered after {took:?}"
    );
    assert_eq!(
        bank.undecodable(),
        1,
        "the bank could not read the pacs.008"
    );
    let seen = bank.messages();
    let first = std::str::from_utf8(&seen[0]).unwrap();
    assert!(first.contains("pacs.008.001.09"), "{first}");
    assert!(sw.stop().await);
}

/// The same bank without an `iso20022` table is spoken to in the default
/// versions, so an unconfigured bank behaves exactly as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_table_the_defaults_are_written() {
    let pki = Pki::new();
    let bank = XmlBank::start(Iso20022Config::default()).await;
    let sw = Running::start(&switch_toml(&pki, bank.addr, None, 3_000)).await;
    sw.wait_ready().await;
    let mut gw = Gateway::connect_tls(sw.upstream, &pki, Some("gateway"))
        .await
        .unwrap();
    let answer = gw.request(&credit_transfer(4_003, "012")).await;
    assert_eq!(answer.response_code, Some(ResponseCode::APPROVED));
    let seen = bank.messages();
    let pacs008 = std::str::from_utf8(&seen[0]).unwrap();
    assert!(pacs008.contains("pacs.008.001.08"), "{pacs008}");
    assert!(!pacs008.contains("<InstgAgt>"), "no own BIC by default");
    assert!(sw.stop().await);
}

/// A bank's settings apply to the links it opens to the switch too: its
/// pacs.008.001.09 is read and answered in pacs.002.001.11, and one that
/// does not decode is still salvaged (answered `30` in the bank's
/// version) by a salvage codec with the bank's settings, which reads the
/// .09 namespace a default codec would refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_bank_is_read_and_answered_in_its_versions_even_when_salvaged() {
    let pki = Pki::new();
    bank_client_certs(&pki, &[("inxml", "bank004.inbound.test")]);
    let own = BankPeer::start(&pki, "iso20022", Behaviour::Approve { max_delay_ms: 0 }).await;
    let dest = BankPeer::start(
        &pki,
        "iso8583:canonical",
        Behaviour::Approve { max_delay_ms: 0 },
    )
    .await;
    // The ISO 20022 bank comes last, so the table below is its own.
    let mut text = inbound::config(
        &pki,
        &[
            Bank::outbound("012", "in012", "iso8583:canonical", dest.addr),
            Bank {
                inbound: r#"{ identity = "bank004.inbound.test" }"#,
                ..Bank::outbound("004", "in004", "iso20022", own.addr)
            },
        ],
        None,
    );
    text += "[banks.iso20022]\nversions = { pacs008 = \"001.09\", pacs002 = \"001.11\" }\n";
    let switch = inbound::start(&text).await;
    let mut link = Gateway::connect_tls_speaking(
        switch.inbound,
        &pki,
        "inxml",
        "iso20022",
        FrameConfig::default(),
    )
    .await
    .expect("the bank's link opens");

    let pacs008 = PACS008_CAPTURED.replace("pacs.008.001.08", "pacs.008.001.09");
    let broken = pacs008
        .replace(">1234.56<", ">1234.5x<")
        .replace(CAPTURED_MSG_ID, "IN-BROKEN");
    link.send_message(broken.as_bytes()).await.unwrap();
    let answer = recv_text(&mut link).await;
    for want in [
        PACS002_NAMESPACE_11,
        "<OrgnlMsgId>IN-BROKEN</OrgnlMsgId>",
        "<TxSts>RJCT</TxSts>",
        "<Cd>FF01</Cd>",
    ] {
        assert!(answer.contains(want), "{want} not in {answer}");
    }

    link.send_message(pacs008.as_bytes()).await.unwrap();
    let answer = recv_text(&mut link).await;
    for want in [
        PACS002_NAMESPACE_11,
        &format!("<OrgnlMsgId>{CAPTURED_MSG_ID}</OrgnlMsgId>"),
        "<TxSts>ACSC</TxSts>",
    ] {
        assert!(answer.contains(want), "{want} not in {answer}");
    }
    assert_eq!(dest.financial_requests.load(Ordering::Relaxed), 1);
    drop(link);
    assert!(switch.stop().await);
}

// ---------------------------------------------------------------- helpers

/// The captured pacs.008 of `codecs/tests/data` (bank 004 pays bank 012).
const PACS008_CAPTURED: &str = include_str!("../../codecs/tests/data/iso20022/pacs008_plain.xml");
/// Its `GrpHdr/MsgId`.
const CAPTURED_MSG_ID: &str = "FPS20240501004000000123";
const PACS002_NAMESPACE_11: &str = r#"xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.002.001.11""#;

/// The next message on `link` as text.
async fn recv_text(link: &mut Gateway) -> String {
    let message = link.recv_message().await.expect("an answer");
    String::from_utf8(message.to_vec()).expect("ISO 20022 XML is UTF-8")
}

/// A switch with one plaintext ISO 20022 bank `012` at `bank`, with the
/// inline `iso20022` table `settings` when given.
fn switch_toml(pki: &Pki, bank: SocketAddr, settings: Option<&str>, timeout_ms: u64) -> String {
    let mut text = config_toml(pki, &[], "");
    text += &format!(
        r#"
[[banks]]
code = "012"
name = "bank012"
codec = "iso20022"
endpoints = ["{bank}"]
danger_plaintext = true
request_timeout_ms = {timeout_ms}
connect_timeout_ms = 2000
pool = {{ min = 1, max = 1 }}
"#
    );
    if let Some(s) = settings {
        text += &format!("iso20022 = {s}\n");
    }
    text
}

/// The bank's codec settings: the defaults with these two versions.
fn peer_config(pacs008: &str, pacs002: &str) -> Iso20022Config {
    let mut cfg = Iso20022Config::default();
    cfg.versions.pacs008 = MessageVersion::parse(pacs008.as_bytes()).unwrap();
    cfg.versions.pacs002 = MessageVersion::parse(pacs002.as_bytes()).unwrap();
    cfg
}

/// The text of the first `<tag>...</tag>` in `xml`, tags included.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{tag}>"))?;
    let close = format!("</{tag}>");
    let end = start + xml[start..].find(&close)? + close.len();
    Some(&xml[start..end])
}

#[derive(Default)]
struct Seen {
    /// Every message received, as bytes.
    messages: Vec<Vec<u8>>,
    /// Every answer written, as text.
    answers: Vec<String>,
    /// Messages that did not decode (not answered).
    undecodable: usize,
}

/// An ISO 20022 bank on plaintext TCP with its own codec settings.
struct XmlBank {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    accept: tokio::task::JoinHandle<()>,
}

impl XmlBank {
    async fn start(config: Iso20022Config) -> XmlBank {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let codec = Arc::new(Iso20022Codec::new(config));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s2 = seen.clone();
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp, codec.clone(), s2.clone()));
            }
        });
        XmlBank { addr, seen, accept }
    }

    fn messages(&self) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap().messages.clone()
    }

    fn answers(&self) -> Vec<String> {
        self.seen.lock().unwrap().answers.clone()
    }

    fn undecodable(&self) -> usize {
        self.seen.lock().unwrap().undecodable
    }
}

impl Drop for XmlBank {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Answer every request this bank can read: a payment approved, a
/// reversal or inquiry acknowledged; count and drop the rest.
async fn serve(mut tcp: TcpStream, codec: Arc<Iso20022Codec>, seen: Arc<Mutex<Seen>>) {
    let framer = Framer::new(FrameConfig::default()).unwrap();
    let mut buf = BytesMut::new();
    loop {
        let frame = match framer.decode(&mut buf) {
            Ok(Some(frame)) => frame,
            Ok(None) => match tcp.read_buf(&mut buf).await {
                Ok(n) if n > 0 => continue,
                _ => return,
            },
            Err(_) => return,
        };
        seen.lock().unwrap().messages.push(frame.message.to_vec());
        let Ok(req) = codec.decode(&frame.message) else {
            seen.lock().unwrap().undecodable += 1;
            continue;
        };
        let mut answer = req.response(ResponseCode::APPROVED);
        if req.mti.class() == 2 {
            answer.auth_id = Some(AuthId::parse(b"AUTH01").unwrap());
        }
        answer.settlement_date = req.settlement_date;
        answer.sending_bank = req.sending_bank;
        let mut out = BytesMut::new();
        let mark = framer.begin(&[], &mut out).unwrap();
        let start = out.len();
        codec.encode(&answer, &mut out).unwrap();
        let text = String::from_utf8_lossy(&out[start..]).into_owned();
        framer.finish(mark, &mut out).unwrap();
        seen.lock().unwrap().answers.push(text);
        if tcp.write_all(&out).await.is_err() {
            return;
        }
    }
}
