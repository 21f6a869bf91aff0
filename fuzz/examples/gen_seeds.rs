//! Writes the checked-in seed corpora under `fuzz/seeds/<target>/`:
//! valid messages of every shipped dialect (made by our own encoder) plus
//! hand-written inputs that crashed other ISO 8583 libraries; the dev switch
//! config and variants of it broken in every way `check-config` knows of;
//! proxy directory files.
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds
//! ```
//!
//! Re-running it rewrites the files it owns and leaves any other seed alone.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use fps_codecs::framing::{FrameConfig, Framer, LengthPrefix};
use fps_codecs::iso20022::Iso20022Codec;
use fps_codecs::iso8583::{self, Iso8583Codec};
use fps_codecs::json::JsonCodec;
use fps_codecs::model::*;
use fps_codecs::MessageCodec;

fn main() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let mut w = Writer {
        root: seeds,
        count: 0,
    };
    iso8583_seeds(&mut w);
    framer_seeds(&mut w);
    json_seeds(&mut w);
    iso20022_seeds(&mut w);
    dialect_seeds(&mut w);
    config_seeds(&mut w);
    proxy_directory_seeds(&mut w);
    println!("wrote {} seed files under {}", w.count, w.root.display());
}

struct Writer {
    root: PathBuf,
    count: usize,
}

impl Writer {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).expect("create seed dir");
        fs::write(dir.join(name), bytes).expect("write seed");
        self.count += 1;
    }
}

// ---------------------------------------------------------------- ISO 8583

fn iso8583_seeds(w: &mut Writer) {
    let names: Vec<&str> = iso8583::builtin_names().collect();
    for (sel, name) in names.iter().enumerate() {
        let codec = Iso8583Codec::builtin(name).expect("shipped dialect");
        for (what, txn) in transactions(&codec) {
            let mut out = BytesMut::new();
            if let Err(e) = codec.encode(&txn, &mut out) {
                eprintln!("skip {name}/{what}: {e}");
                continue;
            }
            let mut sel_msg = vec![sel as u8];
            sel_msg.extend_from_slice(&out);
            w.put("iso8583_decode", &format!("{name}-{what}"), &sel_msg);
            if *name == "canonical" {
                w.put("iso8583_canonical", &format!("valid-{what}"), &out);
            }
        }
        for (what, bad) in bad_messages(&codec) {
            let mut sel_msg = vec![sel as u8];
            sel_msg.extend_from_slice(&bad);
            w.put("iso8583_decode", &format!("{name}-bad-{what}"), &sel_msg);
            if *name == "canonical" {
                w.put("iso8583_canonical", &format!("bad-{what}"), &bad);
            }
        }
    }
}

/// Typical messages, each adjusted to what `codec`'s dialect carries.
fn transactions(codec: &Iso8583Codec) -> Vec<(&'static str, Transaction)> {
    let d = codec.dialect();
    let carries = |cf: &str| {
        iso8583::CanonicalField::from_name(cf)
            .and_then(|f| d.field_of(f))
            .is_some()
    };
    let trim = |mut t: Transaction| {
        if !carries("idempotency_key") {
            t.idempotency_key = None;
        }
        if !carries("local_time") {
            t.local_time = None;
        }
        if !carries("local_date") {
            t.local_date = None;
        }
        if !carries("merchant_id") {
            t.merchant_id = None;
        }
        t
    };
    let base = trim(credit_transfer());
    let mut resp = base.response(ResponseCode::INSUFFICIENT_FUNDS);
    resp.auth_id = AuthId::parse(b"A1B2C3").ok();
    let approved = base.response(ResponseCode::APPROVED);

    // Creditor addressed by FPS proxy, with a PAN and a MAC (secondary bitmap).
    let mut proxy = base.clone();
    proxy.receiving_bank = None;
    proxy.creditor_account = None;
    proxy.proxy = ProxyId::parse(b"MOBN:+852-91234567").ok();
    proxy.pan = Pan::parse(b"4761739001010010").ok();
    proxy.mac = mac_for(codec);
    let mut email = base.clone();
    email.proxy = ProxyId::parse(b"EMAL:name@example.com").ok();

    let mut reversal = trim(Transaction::new(Mti::REVERSAL));
    reversal.processing_code = Some(ProcessingCode::CREDIT_TRANSFER);
    reversal.amount = base.amount;
    reversal.transmitted_at = TransmissionDateTime::parse(b"1123093515").ok();
    reversal.stan = Stan::new(124).ok();
    reversal.acquirer = base.acquirer;
    reversal.rrn = base.rrn;
    reversal.terminal_id = base.terminal_id;
    reversal.currency = base.currency;
    reversal.original = OriginalData::parse(b"020000012311230930150000088800100000000000").ok();

    let mut echo = Transaction::new(Mti::NETWORK);
    echo.transmitted_at = TransmissionDateTime::parse(b"1123093015").ok();
    echo.stan = Stan::new(7).ok();
    echo.network_code = Some(NetworkCode::Echo);
    let echo_resp = echo.response(ResponseCode::APPROVED);
    let mut sign_on = echo.clone();
    sign_on.network_code = Some(NetworkCode::SignOn);

    vec![
        ("credit-transfer", base),
        ("credit-transfer-response-51", resp),
        ("credit-transfer-response-00", approved),
        ("credit-transfer-proxy-pan-mac", proxy),
        ("credit-transfer-email-proxy", email),
        ("reversal", reversal),
        ("network-echo", echo),
        ("network-echo-response", echo_resp),
        ("network-sign-on", sign_on),
    ]
}

/// The example credit transfer shared with the codec tests and benches.
fn credit_transfer() -> Transaction {
    fps_codecs::model::examples::credit_transfer()
}

/// A MAC of the size and class the dialect's MAC field takes.
fn mac_for(codec: &Iso8583Codec) -> Option<MacValue> {
    let n = codec.dialect().field_of(iso8583::CanonicalField::Mac)?;
    let spec = codec.dialect().field(n)?;
    let len = spec.max_units().min(16);
    if spec.class == CharClass::B {
        MacValue::new(&[0xA5, 0x00, 0xFF, 0x10, 0x7F, 0x80, 0x01, 0xFE][..len.min(8)]).ok()
    } else {
        MacValue::new(&b"0123456789ABCDEF"[..len]).ok()
    }
}

/// Inputs known to break ISO 8583 parsers, in this dialect's encodings.
fn bad_messages(codec: &Iso8583Codec) -> Vec<(&'static str, Vec<u8>)> {
    let d = codec.dialect();
    let header = d.header().to_vec();
    let hex_bitmap = codec.dialect().name().eq("canonical");
    // MTI 0200 in the dialect's encoding, taken from a real encoding.
    let mut probe = BytesMut::new();
    let mut t = Transaction::new(Mti::NETWORK);
    t.stan = Stan::new(1).ok();
    let mti: Vec<u8> = match codec.encode(&t, &mut probe) {
        Ok(()) => {
            let mti_len = if probe[header.len()] == 0x08 { 2 } else { 4 };
            probe[header.len()..header.len() + mti_len].to_vec()
        }
        Err(_) => b"0800".to_vec(),
    };
    let cat = |parts: &[&[u8]]| -> Vec<u8> {
        let mut v = header.clone();
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    };
    // Bitmaps: (field numbers set) in the dialect's encoding.
    let bm = |fields: &[u8], secondary: bool| -> Vec<u8> {
        let mut b: u128 = 0;
        for f in fields {
            b |= 1u128 << (128 - u32::from(*f));
        }
        if secondary {
            b |= 1u128 << 127;
        }
        let halves: &[u64] = if secondary {
            &[(b >> 64) as u64, b as u64]
        } else {
            &[(b >> 64) as u64]
        };
        let mut out = Vec::new();
        for h in halves {
            if hex_bitmap {
                out.extend_from_slice(format!("{h:016X}").as_bytes());
            } else {
                out.extend_from_slice(&h.to_be_bytes());
            }
        }
        out
    };
    let all_ff: Vec<u8> = if hex_bitmap {
        b"FFFFFFFFFFFFFFFF".to_vec()
    } else {
        vec![0xFF; 8]
    };
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one-byte", vec![b'0']),
        ("two-bytes", b"02".to_vec()),
        ("three-bytes", b"020".to_vec()),
        ("header-only", header.clone()),
        ("mti-only", cat(&[&mti])),
        ("bitmap-truncated", cat(&[&mti, &all_ff[..3]])),
        ("bitmap-all-ff", cat(&[&mti, &all_ff])),
        ("bitmap-all-ff-twice", cat(&[&mti, &all_ff, &all_ff])),
        (
            "bitmap-all-ff-then-junk",
            cat(&[&mti, &all_ff, &all_ff, &[b'9'; 64]]),
        ),
        (
            "secondary-announced-nothing-after",
            cat(&[&mti, &bm(&[], true)]),
        ),
        (
            "secondary-announced-zero",
            cat(&[
                &mti,
                &bm(&[], true)[..],
                &vec![if hex_bitmap { b'0' } else { 0 }; if hex_bitmap { 16 } else { 8 }],
            ]),
        ),
        ("empty-bitmap", cat(&[&mti, &bm(&[], false)])),
        ("trailing-bytes", cat(&[&mti, &bm(&[], false), b"junk"])),
        ("mti-non-digit", cat(&[b"02X0", &bm(&[], false)])),
    ];
    if d.header().is_empty() && hex_bitmap {
        v.push(("bitmap-lowercase-hex", cat(&[&mti, b"f000000000000000"])));
        v.push(("bitmap-non-hex", cat(&[&mti, b"G000000000000000"])));
        v.push(("bitmap-spaces", cat(&[&mti, b"                "])));
    }
    // Variable-length fields: LLVAR F2 and LLLVAR F120/F123 when laid out
    // with ASCII/EBCDIC digit prefixes; generic junk lengths otherwise.
    let digit = |c: u8| -> u8 {
        if d.name() == "iso93-ebcdic" && c.is_ascii_digit() {
            0xF0 + (c - b'0')
        } else {
            c
        }
    };
    let enc = |s: &[u8]| -> Vec<u8> { s.iter().map(|c| digit(*c)).collect() };
    if d.field(2).is_some() {
        v.push((
            "llvar-minus-one",
            cat(&[&mti, &bm(&[2], false), b"-1", b"1234"]),
        ));
        v.push(("llvar-0x", cat(&[&mti, &bm(&[2], false), b"0x", b"1234"])));
        v.push((
            "llvar-spaces",
            cat(&[&mti, &bm(&[2], false), b"  ", b"1234"]),
        ));
        v.push((
            "llvar-past-buffer",
            cat(&[&mti, &bm(&[2], false), &enc(b"19"), &enc(b"1234")]),
        ));
        v.push((
            "llvar-99",
            cat(&[&mti, &bm(&[2], false), &enc(b"99"), &enc(b"1234")]),
        ));
        v.push(("llvar-zero", cat(&[&mti, &bm(&[2], false), &enc(b"00")])));
        v.push((
            "llvar-bcd-bad-nibble",
            cat(&[&mti, &bm(&[2], false), &[0x1A], &[0x12, 0x34]]),
        ));
        v.push((
            "llvar-binary-ff",
            cat(&[&mti, &bm(&[2], false), &[0xFF, 0xFF], &[0x12, 0x34]]),
        ));
    }
    for f in [120u8, 123, 62] {
        if d.field(f).is_none() {
            continue;
        }
        let secondary = f > 64;
        v.push((
            match f {
                120 => "lllvar-120-999-with-3-bytes",
                123 => "lllvar-123-999-with-3-bytes",
                _ => "lllvar-62-999-with-3-bytes",
            },
            cat(&[&mti, &bm(&[f], secondary), &enc(b"999"), &enc(b"abc")]),
        ));
        v.push((
            match f {
                120 => "lllvar-120-minus",
                123 => "lllvar-123-minus",
                _ => "lllvar-62-minus",
            },
            cat(&[&mti, &bm(&[f], secondary), b"-01", b"a"]),
        ));
    }
    if d.field(4).is_some() {
        v.push((
            "fixed-past-buffer",
            cat(&[&mti, &bm(&[4], false), &enc(b"00001")]),
        ));
        v.push((
            "fixed-non-digit",
            cat(&[&mti, &bm(&[4], false), &enc(b"00000000012X")]),
        ));
    }
    if d.field(128).is_some() {
        v.push(("f128-truncated", cat(&[&mti, &bm(&[128], true), b"0123"])));
    }
    v.push(("undefined-field-1-only", cat(&[&mti, &bm(&[65], true)])));
    v
}

// ---------------------------------------------------------------- framer

/// Framer inputs: `[kind, max_sel, cut, stream..]`, see the target's docs.
fn framer_seeds(w: &mut Writer) {
    let kinds = [
        (0u8, LengthPrefix::Binary2, "binary2"),
        (1, LengthPrefix::Ascii4, "ascii4"),
        (2, LengthPrefix::Bcd2, "bcd2"),
        (3, LengthPrefix::Binary4, "binary4"),
    ];
    let max = 16usize;
    for (k, prefix, pname) in kinds {
        for (header_len, includes) in [(0usize, false), (0, true), (5, false)] {
            let kind = k | if includes { 4 } else { 0 } | ((header_len as u8) << 3);
            let framer = Framer::new(FrameConfig {
                prefix,
                header_len,
                length_includes_prefix: includes,
                max_frame_bytes: max,
            })
            .expect("valid");
            let tag = format!(
                "{pname}-h{header_len}{}",
                if includes { "-incl" } else { "" }
            );
            let frame = |body_len: usize| -> Vec<u8> {
                let mut out = BytesMut::new();
                let header = vec![0x60u8; header_len];
                let mark = framer.begin(&header, &mut out).expect("header");
                out.extend_from_slice(&vec![b'm'; body_len - header_len]);
                framer.finish(mark, &mut out).expect("within max");
                out.to_vec()
            };
            let seed = |cut: u8, stream: &[u8]| -> Vec<u8> {
                let mut v = vec![kind, max as u8, cut];
                v.extend_from_slice(stream);
                v
            };
            // Exactly the maximum, then the same frame claiming max + 1.
            let at_max = frame(max);
            w.put("framer", &format!("{tag}-max"), &seed(0, &at_max));
            let mut over = at_max.clone();
            let w_ = prefix.width();
            let mut big = BytesMut::new();
            let big_framer = Framer::new(FrameConfig {
                max_frame_bytes: max + 1,
                ..*framer.config()
            })
            .expect("valid");
            let mark = big_framer
                .begin(&vec![0x60; header_len], &mut big)
                .expect("header");
            big.extend_from_slice(&vec![b'm'; max + 1 - header_len]);
            big_framer.finish(mark, &mut big).expect("within max");
            over[..w_].copy_from_slice(&big[..w_]);
            over.push(b'm');
            w.put("framer", &format!("{tag}-max-plus-one"), &seed(0, &over));
            // Several frames back to back, cut into 3-byte reads; an empty one too.
            let mut stream = frame(header_len);
            stream.extend(frame(max / 2));
            stream.extend(frame(max));
            stream.extend(&frame(3 + header_len)[..w_ + 1]);
            w.put("framer", &format!("{tag}-several"), &seed(2, &stream));
            // Only part of the prefix.
            w.put(
                "framer",
                &format!("{tag}-partial-prefix"),
                &seed(0, &at_max[..w_ - 1]),
            );
        }
        // The prefix's own maximum (max_sel 255) with a huge announced length.
        w.put(
            "framer",
            &format!("{pname}-prefix-max-huge"),
            &[k, 255, 0, 0x99, 0x99, 0xff, 0xff],
        );
    }
    // Garbage lengths.
    w.put("framer", "ascii4-minus", b"\x01\x10\x00-001x");
    w.put("framer", "ascii4-0x", b"\x01\x10\x000x10xxxxxxxxxxxxxxxx");
    w.put("framer", "ascii4-spaces", b"\x01\x10\x00  12xxxxxxxxxxxx");
    w.put("framer", "bcd2-bad-nibble", b"\x02\x10\x00\x0a\x00");
    w.put(
        "framer",
        "binary4-ffffffff",
        b"\x03\xff\x00\xff\xff\xff\xff",
    );
    w.put(
        "framer",
        "binary2-incl-smaller-than-prefix",
        b"\x04\x10\x00\x00\x01\x01",
    );
    w.put(
        "framer",
        "binary2-h5-shorter-than-header",
        b"\x28\x10\x00\x00\x03\x01\x02\x03",
    );
    w.put("framer", "under-4-bytes-a", b"");
    w.put("framer", "under-4-bytes-b", b"\x00");
    w.put("framer", "under-4-bytes-c", b"\x00\x10");
    w.put("framer", "under-4-bytes-d", b"\x00\x10\x00");
}

// ---------------------------------------------------------------- JSON

fn json_seeds(w: &mut Writer) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../codecs/tests/data/json");
    if let Ok(entries) = fs::read_dir(&data) {
        let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for p in files {
            if p.extension().is_some_and(|e| e == "json") {
                let name = p.file_name().expect("file").to_string_lossy().into_owned();
                w.put("json_decode", &name, &fs::read(&p).expect("read"));
            }
        }
    }
    let bad: &[(&str, &[u8])] = &[
        ("empty", b""),
        ("open-brace", b"{"),
        ("array", b"[]"),
        ("null", b"null"),
        ("not-utf8", b"{\"type\":\"\xff\"}"),
        ("deep-nesting", &[b'['; 4096]),
        ("deep-objects", "{\"a\":".repeat(600).as_bytes().to_vec().leak()),
        ("lone-surrogate", br#"{"type":"network","request_id":"\ud800","action":"echo"}"#),
        ("duplicate-member", br#"{"type":"network","type":"network","request_id":"N1","action":"echo"}"#),
        ("null-member", br#"{"type":"network","request_id":null,"action":"echo"}"#),
        ("huge-amount", br#"{"type":"credit_transfer","request_id":"R1","amount":{"minor":1e400,"currency":"HKD"}}"#),
        ("negative-amount", br#"{"type":"credit_transfer","request_id":"R1","amount":{"minor":-1,"currency":"HKD"}}"#),
        ("amount-over-max", br#"{"type":"credit_transfer","request_id":"R1","amount":{"minor":1000000000000,"currency":"HKD"}}"#),
        ("amount-u64-overflow", br#"{"type":"credit_transfer","request_id":"R1","amount":{"minor":18446744073709551616,"currency":"HKD"}}"#),
        ("trailing-garbage", br#"{"type":"network","request_id":"N1","action":"echo"} x"#),
        ("two-documents", br#"{"type":"network","request_id":"N1","action":"echo"}{}"#),
        ("bom", b"\xef\xbb\xbf{\"type\":\"network\",\"request_id\":\"N1\",\"action\":\"echo\"}"),
    ];
    for (name, doc) in bad {
        w.put("json_decode", &format!("bad-{name}"), doc);
    }
}

// ---------------------------------------------------------------- ISO 20022

/// Every JSON example re-encoded as ISO 20022 (with a settlement date and a
/// transmission time when the example has none), plus hostile XML.
fn iso20022_seeds(w: &mut Writer) {
    let codec = Iso20022Codec::default();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../codecs/tests/data/json");
    let mut files: Vec<_> = fs::read_dir(&data)
        .map(|e| e.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for p in files {
        let Ok(doc) = fs::read(&p) else { continue };
        let stem = p.file_stem().expect("file").to_string_lossy().into_owned();
        let Ok(mut txn) = JsonCodec::new().decode(&doc) else {
            eprintln!("skip iso20022/{stem}: the JSON example does not decode");
            continue;
        };
        if txn.settlement_date.is_none() {
            txn.settlement_date = SettlementDate::parse(b"20261123").ok();
        }
        if txn.transmitted_at.is_none() {
            txn.transmitted_at = TransmissionDateTime::parse(b"1123093015").ok();
        }
        // camt.056/029 need both agents and the original end-to-end id.
        if txn.sending_bank.is_none() {
            txn.sending_bank = BankCode::parse(b"004").ok();
        }
        if txn.receiving_bank.is_none() {
            txn.receiving_bank = BankCode::parse(b"024").ok();
        }
        if txn.end_to_end_id.is_none() {
            txn.end_to_end_id = EndToEndId::parse(b"E2E-0001").ok();
        }
        let mut out = BytesMut::new();
        match codec.encode(&txn, &mut out) {
            Ok(()) => w.put("iso20022_decode", &format!("{stem}.xml"), &out),
            Err(e) => eprintln!("skip iso20022/{stem}: {e}"),
        }
    }
    let ns = "urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08";
    let bad: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("lt", "<".into()),
        ("no-namespace", "<Document><FIToFICstmrCdtTrf/></Document>".into()),
        ("wrong-namespace", "<Document xmlns=\"urn:example\"><FIToFICstmrCdtTrf/></Document>".into()),
        ("empty-message", format!("<Document xmlns=\"{ns}\"><FIToFICstmrCdtTrf/></Document>")),
        ("unclosed", format!("<Document xmlns=\"{ns}\"><FIToFICstmrCdtTrf><GrpHdr><MsgId>M1")),
        ("deep-nesting", format!("<Document xmlns=\"{ns}\">{}", "<a>".repeat(2000))),
        ("doctype-entities", format!("<?xml version=\"1.0\"?><!DOCTYPE d [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]><Document xmlns=\"{ns}\"><FIToFICstmrCdtTrf><GrpHdr><MsgId>&b;</MsgId></GrpHdr></FIToFICstmrCdtTrf></Document>")),
        ("bad-entity", format!("<Document xmlns=\"{ns}\"><FIToFICstmrCdtTrf><GrpHdr><MsgId>&#xFFFFFFFF;&#0;&bogus;</MsgId></GrpHdr></FIToFICstmrCdtTrf></Document>")),
        ("two-txs", format!("<Document xmlns=\"{ns}\"><FIToFICstmrCdtTrf><GrpHdr><MsgId>M1</MsgId><NbOfTxs>2</NbOfTxs></GrpHdr><CdtTrfTxInf/><CdtTrfTxInf/></FIToFICstmrCdtTrf></Document>")),
        ("nboftxs-huge", format!("<Document xmlns=\"{ns}\"><FIToFICstmrCdtTrf><GrpHdr><MsgId>M1</MsgId><NbOfTxs>99999999999999999999999</NbOfTxs></GrpHdr></FIToFICstmrCdtTrf></Document>")),
        ("amount-exponent", format!("<Document xmlns=\"{ns}\"><FIToFICstmrCdtTrf><GrpHdr><MsgId>M1</MsgId><NbOfTxs>1</NbOfTxs></GrpHdr><CdtTrfTxInf><IntrBkSttlmAmt Ccy=\"HKD\">1e400</IntrBkSttlmAmt></CdtTrfTxInf></FIToFICstmrCdtTrf></Document>")),
        ("amount-too-many-digits", format!("<Document xmlns=\"{ns}\"><FIToFICstmrCdtTrf><GrpHdr><MsgId>M1</MsgId><NbOfTxs>1</NbOfTxs></GrpHdr><CdtTrfTxInf><IntrBkSttlmAmt Ccy=\"JPY\">99999999999999999999.000</IntrBkSttlmAmt></CdtTrfTxInf></FIToFICstmrCdtTrf></Document>")),
        ("cre-dt-tm-odd", format!("<Document xmlns=\"{ns}\"><FIToFICstmrCdtTrf><GrpHdr><MsgId>M1</MsgId><CreDtTm>2026-02-29T24:60:60.9999999999-23:59</CreDtTm><NbOfTxs>1</NbOfTxs></GrpHdr></FIToFICstmrCdtTrf></Document>")),
        ("prefixed-namespace-cdata-comments", format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><!-- c --><x:Document xmlns:x=\"{ns}\"><x:FIToFICstmrCdtTrf><x:GrpHdr><x:MsgId><![CDATA[M1]]></x:MsgId><?pi x?></x:GrpHdr></x:FIToFICstmrCdtTrf></x:Document>")),
        ("envelope", format!("<Envelope><AppHdr xmlns=\"urn:iso:std:iso:20022:tech:xsd:head.001.001.02\"><Fr/></AppHdr><Document xmlns=\"{ns}\"><FIToFICstmrCdtTrf/></Document></Envelope>")),
        ("two-documents", format!("<Document xmlns=\"{ns}\"><FIToFICstmrCdtTrf/></Document><Document xmlns=\"{ns}\"><FIToFICstmrCdtTrf/></Document>")),
    ];
    for (name, text) in bad {
        w.put(
            "iso20022_decode",
            &format!("bad-{name}.xml"),
            text.as_bytes(),
        );
    }
    w.put(
        "iso20022_decode",
        "bad-utf16.xml",
        b"\xff\xfe<\x00D\x00o\x00c\x00/\x00>\x00",
    );
    w.put(
        "iso20022_decode",
        "bad-not-utf8.xml",
        b"<Document>\xc3\x28</Document>",
    );
}

// ---------------------------------------------------------------- dialects

fn dialect_seeds(w: &mut Writer) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/dialects");
    if let Ok(entries) = fs::read_dir(&dir) {
        let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for p in files {
            if p.extension().is_some_and(|e| e == "toml") {
                let name = p.file_name().expect("file").to_string_lossy().into_owned();
                w.put("dialect_toml", &name, &fs::read(&p).expect("read"));
            }
        }
    }
    let small: &[(&str, &str)] = &[
        ("minimal", "name = \"x\"\nmti = \"ascii\"\nbitmap = \"hex\"\n[fields]\n"),
        (
            "every-encoding",
            r#"name = "every"
mti = "bcd"
bitmap = "binary"
header_hex = "6000010000"
default_data = "ebcdic"
default_prefix = "bcd"
unmapped = "reject"
[mti_map]
"0200" = "1200"
"0800" = "1804"
[fields]
2 = { kind = "llvar", max = 19, class = "z", data = "bcd", prefix = "bcd", pad = "right" }
3 = { kind = "fixed", len = 6, class = "n", data = "bcd" }
4 = { kind = "fixed", len = 12, class = "n", data = "ascii" }
11 = { kind = "fixed", len = 6, class = "n", data = "bcd" }
39 = { kind = "fixed", len = 3, class = "n" }
62 = { kind = "llllvar", max = 9999, class = "ans", prefix = "binary" }
64 = { kind = "fixed", len = 8, class = "b" }
102 = { kind = "lllvar", max = 999, class = "ans", prefix = "ebcdic" }
[map]
pan = 2
processing_code = 3
amount = 4
stan = 11
response_code = 39
proxy = 62
mac = 64
debtor_account = 102
[translate.response_code]
values = { "00" = "000", "51" = "116" }
unknown_decodes_as = "05"
"#,
        ),
        ("bad-field-numbers", "name = \"x\"\nmti = \"ascii\"\nbitmap = \"hex\"\n[fields]\n0 = { kind = \"fixed\", len = 1, class = \"n\" }\n1 = { kind = \"fixed\", len = 1, class = \"n\" }\n129 = { kind = \"fixed\", len = 1, class = \"n\" }\n-1 = { kind = \"fixed\", len = 1, class = \"n\" }\n"),
        ("bad-lengths", "name = \"x\"\nmti = \"ascii\"\nbitmap = \"hex\"\n[fields]\n2 = { kind = \"fixed\", len = 0, class = \"n\" }\n3 = { kind = \"llvar\", max = 100, class = \"n\" }\n4 = { kind = \"lllvar\", max = 65535, class = \"n\" }\n5 = { kind = \"llllvar\", max = 0, class = \"n\" }\n6 = { kind = \"fixed\", len = 65535, class = \"n\" }\n"),
        ("bad-header", "name = \"x\"\nmti = \"ascii\"\nbitmap = \"hex\"\nheader_hex = \"6\"\n[fields]\n"),
        ("bad-header-multibyte", "name = \"x\"\nmti = \"ascii\"\nbitmap = \"hex\"\nheader_hex = \"é0\"\n[fields]\n"),
        ("bad-map", "name = \"x\"\nmti = \"ascii\"\nbitmap = \"hex\"\n[fields]\n2 = { kind = \"fixed\", len = 4, class = \"n\" }\n[map]\npan = 2\namount = 2\nnope = 3\nstan = 70000\n"),
        ("bad-mti-map", "name = \"x\"\nmti = \"ascii\"\nbitmap = \"hex\"\n[mti_map]\n\"02\" = \"12000\"\n\"0200\" = \"0400\"\n\"0400\" = \"0200\"\n[fields]\n"),
        ("bad-translate", "name = \"x\"\nmti = \"ascii\"\nbitmap = \"hex\"\n[fields]\n39 = { kind = \"fixed\", len = 2, class = \"an\" }\n[map]\nresponse_code = 39\n[translate.response_code]\nvalues = { \"00\" = \"A\", \"05\" = \"A\" }\n[translate.pan]\nvalues = {}\n"),
        ("binary-class-in-bcd", "name = \"x\"\nmti = \"ascii\"\nbitmap = \"hex\"\n[fields]\n52 = { kind = \"lllvar\", max = 999, class = \"b\", data = \"bcd\" }\n53 = { kind = \"fixed\", len = 8, class = \"b\", data = \"ebcdic\" }\n[map]\nmac = 52\n"),
    ];
    for (name, text) in small {
        w.put("dialect_toml", name, text.as_bytes());
    }
}

// ---------------------------------------------------------------- switch config

/// A config that validates with no file and no HSM: plaintext, one bank.
const MINIMAL_CONFIG: &str = r#"[upstream]
bind = "127.0.0.1:9443"
tls = false

[admin]
bind = "127.0.0.1:9100"

[[banks]]
code = "004"
name = "bank004"
codec = "iso8583:iso87-bcd-binary"
endpoints = ["127.0.0.1:19004"]
danger_plaintext = true
"#;

/// `[[banks]]` entries appended to [`MINIMAL_CONFIG`] by several seeds.
const MORE_BANKS: &str = r#"
[[banks]]
code = "012"
name = "bank012"
codec = "iso20022"
endpoints = ["bank012.fps.test:19012", "[::1]:19012"]
danger_plaintext = true
framing = { prefix = "binary4", max_frame_bytes = 65536 }

[[banks]]
code = "024"
name = "bank024"
codec = "json"
endpoints = ["127.0.0.1:19024"]
framing = { prefix = "binary4", max_frame_bytes = 16384 }
[banks.tls]
cert = "target/dev-pki/switch-client.crt"
key = "target/dev-pki/switch-client.key"
ca = "target/dev-pki/ca.crt"
server_name = "bank024.fps.test"
"#;

/// The switch config (`fps-switch check-config`): the shipped dev config,
/// a minimal valid one, and variants with missing sections, wrong types,
/// unknown keys, huge numbers, repeated banks and every kind of bad value.
/// File names the fuzz target maps onto `fuzz/fixtures/` (`ca.crt`,
/// `switch.key`, `proxies.csv`, `pin`, ...) are used as written.
fn config_seeds(w: &mut Writer) {
    let t = "config_toml";
    let dev_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/dev/switch.toml");
    let dev = fs::read_to_string(&dev_path).expect("configs/dev/switch.toml");
    w.put(t, "dev-switch.toml", dev.as_bytes());
    // The dev config with the comments and blank lines gone: shorter
    // inputs mutate faster.
    let bare: String = dev
        .lines()
        .map(|l| l.split(" #").next().unwrap_or(l).trim_end())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    w.put(t, "dev-bare.toml", bare.as_bytes());
    for (name, from, to) in [
        ("dev-no-upstream", "[upstream]", "[upstream_gone]"),
        ("dev-no-hsm", "[hsm]", "[no_hsm]"),
        (
            "dev-danger-software-hsm",
            "backend = \"pkcs11\"",
            "backend = \"danger_software\"",
        ),
        (
            "dev-pin-file",
            "pin_env = \"FPS_HSM_PIN\"",
            "pin_file = \"pin\"",
        ),
        (
            "dev-bad-proxies",
            "configs/dev/proxies.csv",
            "bad-proxies.csv",
        ),
        ("dev-bank-dup-codes", "code = \"012\"", "code = \"004\""),
        (
            "dev-bank-dup-names",
            "name = \"bank012\"",
            "name = \"bank003\"",
        ),
        ("dev-not-pem", "target/dev-pki/ca.crt", "not-pem.crt"),
        (
            "dev-route-unknown-bank",
            "primary = \"bank003\"",
            "primary = \"bank999\"",
        ),
    ] {
        assert!(bare.contains(from), "dev config lost {from:?}");
        w.put(
            t,
            &format!("{name}.toml"),
            bare.replacen(from, to, 1).as_bytes(),
        );
    }

    w.put(t, "minimal-valid.toml", MINIMAL_CONFIG.as_bytes());
    let three = format!("[switch]\nparticipant_code = \"950\"\n{MINIMAL_CONFIG}{MORE_BANKS}");
    w.put(t, "three-banks.toml", three.as_bytes());
    let every_section = format!(
        r#"[log]
format = "json"
filter = "info,fps_switch=debug"
[shutdown]
drain_timeout_ms = 10000
[journal]
dir = "target/journal"
fsync = "always"
segment_bytes = 67108864
[idempotency]
retention_hours = 24
max_keys_in_memory = 1000000
[reversal]
max_attempts = 6
base_backoff_ms = 1000
max_backoff_ms = 60000
capacity = 10000
{MINIMAL_CONFIG}
[routing]
default_max_in_flight = 4096
max_in_flight = {{ bank004 = 100 }}
[[routing.routes]]
bank_code = "004"
primary = "bank004"
[[routing.bins]]
prefix = "476173"
bank = "004"
[routing.breaker]
failure_threshold = 5
cool_down_ms = 5000
max_cool_down_ms = 60000
cool_down_multiplier = 2
half_open_probes = 1
[routing.retry]
max_attempts = 2
base_backoff_ms = 10
max_backoff_ms = 200
min_attempt_ms = 500
"#
    );
    w.put(t, "every-section.toml", every_section.as_bytes());
    let mtls = MINIMAL_CONFIG.replace(
        "tls = false",
        "tls = true\ncert = \"target/dev-pki/switch.crt\"\nkey = \"target/dev-pki/switch.key\"\nclient_ca = \"target/dev-pki/ca.crt\"",
    );
    w.put(t, "minimal-mtls.toml", mtls.as_bytes());
    let auth = format!(
        "[hsm]\nbackend = \"danger_software\"\n{MINIMAL_CONFIG}auth = {{ mac = {{ label = \"mac-cmac\", mechanism = \"aes_cmac\" }} }}\n"
    );
    w.put(t, "auth-danger-software.toml", auth.as_bytes());

    let broken: &[(&str, String)] = &[
        ("empty", String::new()),
        ("missing-admin", MINIMAL_CONFIG.replace("[admin]\nbind = \"127.0.0.1:9100\"\n", "")),
        ("missing-bank-keys", MINIMAL_CONFIG.replace("codec = \"iso8583:iso87-bcd-binary\"\n", "")),
        ("unknown-key-top", format!("bogus = 1\n{MINIMAL_CONFIG}")),
        ("unknown-section", format!("{MINIMAL_CONFIG}[bogus]\nx = 1\n")),
        ("unknown-key-bank", format!("{MINIMAL_CONFIG}bogus = true\n")),
        ("unknown-key-routing", format!("{MINIMAL_CONFIG}[routing]\nbogus = 1\n")),
        ("wrong-type-number", MINIMAL_CONFIG.replace("tls = false", "tls = false\nmax_connections = \"many\"")),
        ("wrong-type-bool", MINIMAL_CONFIG.replace("tls = false", "tls = \"no\"")),
        ("wrong-type-endpoints", MINIMAL_CONFIG.replace("[\"127.0.0.1:19004\"]", "\"127.0.0.1:19004\"")),
        ("wrong-type-pool", format!("{MINIMAL_CONFIG}pool = 3\n")),
        ("wrong-type-banks", MINIMAL_CONFIG.replace("[[banks]]", "[banks]")),
        ("wrong-type-proxy-directory", format!("{MINIMAL_CONFIG}[routing]\nproxy_directory = 7\n")),
        ("huge-u64", MINIMAL_CONFIG.replace("tls = false", "tls = false\nidle_timeout_ms = 18446744073709551615")),
        ("huge-i64", MINIMAL_CONFIG.replace("tls = false", "tls = false\nmax_connections = 9223372036854775807")),
        ("negative", MINIMAL_CONFIG.replace("tls = false", "tls = false\nmax_connections = -1")),
        ("float", MINIMAL_CONFIG.replace("tls = false", "tls = false\nmax_frame_bytes = 1e30")),
        ("zero-everything", format!(
            "[shutdown]\ndrain_timeout_ms = 0\n{}request_timeout_ms = 0\nmax_in_flight = 0\necho_interval_ms = 0\nconnect_timeout_ms = 0\npool = {{ min = 0, max = 0 }}\n",
            MINIMAL_CONFIG.replace("tls = false", "tls = false\nmax_connections = 0\nmax_in_flight_per_connection = 0\nmax_frame_bytes = 0\nhandshake_timeout_ms = 0\nidle_timeout_ms = 0")
        )),
        ("huge-safety", format!(
            "[journal]\nsegment_bytes = 0\n[idempotency]\nretention_hours = 18446744073709551615\nmax_keys_in_memory = 0\n[reversal]\nmax_attempts = 4294967295\nbase_backoff_ms = 18446744073709551615\nmax_backoff_ms = 0\ncapacity = 0\n{MINIMAL_CONFIG}"
        )),
        ("dup-bank-codes", format!("{MINIMAL_CONFIG}{}", MINIMAL_CONFIG.split("[[banks]]").nth(1).map(|b| format!("[[banks]]{}", b.replace("bank004", "bank004-dr"))).unwrap_or_default())),
        ("dup-bank-names", format!("{MINIMAL_CONFIG}{}", MINIMAL_CONFIG.split("[[banks]]").nth(1).map(|b| format!("[[banks]]{}", b.replace("\"004\"", "\"012\""))).unwrap_or_default())),
        ("dup-key", MINIMAL_CONFIG.replace("tls = false", "tls = false\ntls = true")),
        ("dup-table", format!("{MINIMAL_CONFIG}[admin]\nbind = \"127.0.0.1:1\"\n")),
        ("bad-values", MINIMAL_CONFIG
            .replace("127.0.0.1:9443", "nowhere")
            .replace("\"004\"", "\"04\"")
            .replace("name = \"bank004\"", "name = \"Bad Name\"")
            .replace("iso8583:iso87-bcd-binary", "iso8583:nope")
            .replace("[\"127.0.0.1:19004\"]", "[\"bank\", \"bank:0\", \"[::1]:443\", \":1\"]")),
        ("bad-name-no-route", MINIMAL_CONFIG.replace("name = \"bank004\"", "name = \"bank 004\"")),
        ("bad-log", format!("[log]\nformat = \"xml\"\nfilter = \"[[[\"\n{MINIMAL_CONFIG}")),
        ("bad-participant", format!("[switch]\nparticipant_code = \"95\"\n{MINIMAL_CONFIG}{MORE_BANKS}")),
        ("iso20022-no-participant", format!("{MINIMAL_CONFIG}{MORE_BANKS}")),
        ("tls-and-plaintext", format!("{MINIMAL_CONFIG}[banks.tls]\ncert = \"switch-client.crt\"\nkey = \"switch-client.key\"\nca = \"not-pem.crt\"\nserver_name = \"bad name!\"\n")),
        ("bad-framing", format!("{MINIMAL_CONFIG}framing = {{ prefix = \"ascii4\", header_len = 99, max_frame_bytes = 0, length_includes_prefix = true }}\n")),
        ("bad-auth", format!("{MINIMAL_CONFIG}auth = {{ mac = {{ label = \"mac cmac-v1\", mechanism = \"ecdsa_p256_sha256\" }}, sign = {{ label = \"\", mechanism = \"nope\" }} }}\n")),
        ("bad-hsm", format!("[hsm]\nbackend = \"pkcs11\"\nmodule_path = \"libsofthsm2.so\"\ntoken_label = \"a-token-label-longer-than-32-bytes\"\npin_env = \"\"\npin_file = \"pin\"\nthreads = 0\nqueue_bound = 0\ndanger_key_dir = \"keys\"\n{MINIMAL_CONFIG}")),
        ("bad-routing", format!(
            "{MINIMAL_CONFIG}[routing]\nproxy_directory = \"proxies.csv\"\ndefault_max_in_flight = 0\nmax_in_flight = {{ nobody = 1, \"Bad Name\" = 0 }}\n[[routing.routes]]\nbank_code = \"4\"\nprimary = \"nobody\"\nsecondaries = [\"bank004\", \"bank004\", \"ghost\"]\n[[routing.routes]]\nbank_code = \"004\"\nprimary = \"bank004\"\n[[routing.routes]]\nbank_code = \"004\"\nprimary = \"bank004\"\n[[routing.bins]]\nprefix = \"47617\"\nbank = \"004\"\n[[routing.bins]]\nfrom = \"520000\"\nto = \"5299999\"\nbank = \"777\"\n[[routing.bins]]\nprefix = \"476173\"\nfrom = \"476173\"\nto = \"476174\"\nbank = \"04x\"\n[routing.breaker]\nfailure_threshold = 0\n[routing.retry]\nmax_attempts = 0\n"
        )),
        ("deep-array", format!("{MINIMAL_CONFIG}x = {}1{}\n", "[".repeat(2000), "]".repeat(2000))),
        ("deep-inline-table", format!("{MINIMAL_CONFIG}x = {}1{}\n", "{ a = ".repeat(1000), " }".repeat(1000))),
        ("deep-dotted-key", format!("{} = 1\n{MINIMAL_CONFIG}", vec!["a"; 2000].join("."))),
        ("non-ascii-name", MINIMAL_CONFIG.replace("bank004", "bank\u{fffd}004")),
    ];
    for (name, text) in broken {
        w.put(t, &format!("{name}.toml"), text.as_bytes());
    }
}

// ---------------------------------------------------------------- proxy directory

/// Proxy directory files (`[routing] proxy_directory`): the dev directory,
/// the fuzz fixtures, and the edge cases of the CSV reader.
fn proxy_directory_seeds(w: &mut Writer) {
    let t = "proxy_directory";
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, path) in [
        ("dev-proxies.csv", root.join("../configs/dev/proxies.csv")),
        ("fixture-proxies.csv", root.join("fixtures/proxies.csv")),
        (
            "fixture-bad-proxies.csv",
            root.join("fixtures/bad-proxies.csv"),
        ),
    ] {
        w.put(t, name, &fs::read(&path).expect("proxy directory file"));
    }
    let long_name = format!("MOBN:+852-90000001,003,{}\n", "n".repeat(141));
    let long_line = format!("MOBN:+852-90000001,003,\"{}\"\n", "x".repeat(1100));
    let small: &[(&str, &[u8])] = &[
        ("empty", b""),
        ("header-only", b"proxy,bank_code,display_name\n"),
        (
            "bom-crlf",
            b"\xef\xbb\xbfproxy,bank_code\r\nMOBN:+852-90000001,003\r\nFPID:1234567,012\r\n",
        ),
        (
            "quoted",
            b"\"MOBN:+852-90000001\",\"003\",\"Chan, Tai Man \"\"TM\"\"\"\n",
        ),
        (
            "quoted-header",
            b"\"proxy\",\"bank_code\"\nEMAL:a@b.example,024\n",
        ),
        ("bad-quotes", b"\"MOBN:+852-90000001,003\n\"FPID:1\"x,004\n"),
        (
            "columns",
            b"MOBN:+852-90000001\nMOBN:+852-90000002,003,a,b\n,\n",
        ),
        (
            "duplicate",
            b"MOBN:+852-90000001,003\nMOBN:+852-90000001,004\n",
        ),
        (
            "bad-bank",
            b"MOBN:+852-90000001,3\nMOBN:+852-90000002,00x\nMOBN:+852-90000003,0003\n",
        ),
        (
            "bad-proxy",
            b"MOBL:+852-90000001,003\nMOBN:,003\nFPID:abc,003\nEMAL:nobody,003\n:,003\n",
        ),
        ("control-in-name", b"MOBN:+852-90000001,003,a\x01b\n"),
        (
            "comments-blank",
            b"# c\n\n   \n  # indented\nMOBN:+852-90000001,003\n",
        ),
        (
            "lone-cr",
            b"MOBN:+852-90000001,003\r\r\nMOBN:+852-90000002,004\r",
        ),
    ];
    for (name, bytes) in small {
        w.put(t, name, bytes);
    }
    w.put(t, "long-name", long_name.as_bytes());
    w.put(t, "long-line", long_line.as_bytes());
}
