//! Differential tests against the iso8583_rs crate (0.1.10), on the spec in
//! `benches/data/iso8583_rs_iso87_ascii_binary_bitmap.yaml`: the
//! `iso87-ascii-binary-bitmap` dialect, which carries the canonical credit
//! transfer with the same fields as `canonical` and binary instead of hex
//! bitmaps (iso8583_rs cannot read hex bitmaps).
//!
//! What iso8583_rs encodes we decode identically, and the reverse, for the
//! typical 0200 and for seeded random messages; the YAML's layout of every
//! field is checked against the dialect. iso8583_rs has no maximum lengths
//! or content classes, so only layouts are compared.
//!
//! Needs the `iso8583-rs` feature (see benches/Cargo.toml for why it is off).
#![cfg(feature = "iso8583-rs")]

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::BytesMut;
use fps_benches::baseline::{self, DIALECT, UNEXPRESSIBLE};
use fps_benches::fixtures;
use fps_codecs::iso8583::{FieldLength, FieldSpec, Iso8583Codec, IsoMessage};
use fps_codecs::model::CharClass;

fn codec(name: &str) -> Iso8583Codec {
    Iso8583Codec::builtin(name).unwrap_or_else(|| panic!("{name} is shipped"))
}

fn ours_encode(c: &Iso8583Codec, m: &IsoMessage) -> Vec<u8> {
    let mut out = BytesMut::new();
    c.encode_message(m, &mut out)
        .unwrap_or_else(|e| panic!("we refuse to encode {:?}: {e}", m.fields.keys()));
    out.to_vec()
}

/// Both directions for one message; `what` names it in failures.
fn agree_both_ways(c: &Iso8583Codec, m: &IsoMessage, what: &str) {
    // Ours -> iso8583_rs.
    let wire = ours_encode(c, m);
    let parsed = baseline::parse(&mut wire.clone())
        .unwrap_or_else(|e| panic!("{what}: iso8583_rs refuses our bytes: {e}"));
    let theirs = baseline::to_iso_message(&parsed).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_same(what, "iso8583_rs parse of our bytes", &theirs, m);

    // iso8583_rs -> ours: same bytes, same fields.
    let built =
        baseline::from_iso_message(m, c.dialect()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let their_wire = baseline::assemble(&built)
        .unwrap_or_else(|e| panic!("{what}: iso8583_rs cannot assemble: {e}"));
    assert!(
        their_wire == wire,
        "{what}: wire forms differ\n iso8583_rs: {}\n ours:       {}",
        show(&their_wire),
        show(&wire)
    );
    let decoded = c
        .decode_message(&their_wire)
        .unwrap_or_else(|e| panic!("{what}: we refuse iso8583_rs's bytes: {e}"));
    assert_same(what, "our decode of iso8583_rs's bytes", &decoded, m);
}

#[test]
fn canonical_credit_transfer_both_ways() {
    let c = codec(DIALECT);
    let mut out = BytesMut::new();
    c.encode(&fixtures::credit_transfer(), &mut out)
        .expect("encode");
    let m = c.decode_message(&out).expect("decode our own");
    // The same fields as the canonical dialect's wire form: only the bitmap differs.
    let canonical = codec("canonical");
    let mut canon_wire = BytesMut::new();
    canonical
        .encode(&fixtures::credit_transfer(), &mut canon_wire)
        .expect("encode");
    assert_eq!(
        canonical
            .decode_message(&canon_wire)
            .expect("decode")
            .fields,
        m.fields
    );
    assert_eq!(
        m.fields.keys().copied().collect::<Vec<_>>(),
        [3, 4, 7, 11, 12, 13, 32, 37, 41, 42, 49, 100, 102, 103, 123]
    );

    agree_both_ways(&c, &m, "0200 credit transfer");

    // And iso8583_rs's bytes decode into the very same transaction.
    let built = baseline::from_iso_message(&m, c.dialect()).expect("build");
    let their_wire = baseline::assemble(&built).expect("assemble");
    assert_eq!(
        c.decode(&their_wire).expect("decode"),
        c.decode(&out).expect("decode")
    );
    // Its view of the fields, by position, as text.
    let parsed = baseline::parse(&mut out.to_vec()).expect("parse");
    assert_eq!(parsed.bmp_child_value(4).expect("F4"), "000000012345");
    assert_eq!(
        parsed.bmp_child_value(123).expect("F123"),
        "gw-2026-11-23-000123"
    );
}

/// Every field the YAML lays out has the dialect's layout: each one alone,
/// at its maximum length and (variable ones) at a short length.
#[test]
fn every_field_of_the_spec_has_the_dialect_layout() {
    let c = codec(DIALECT);
    let mut rng = Rng(7);
    for n in 2u8..=128 {
        if UNEXPRESSIBLE.contains(&n) {
            continue;
        }
        let spec = *c
            .dialect()
            .field(n)
            .unwrap_or_else(|| panic!("field {n} laid out"));
        for longest in [true, false] {
            let mut m = IsoMessage {
                mti: *b"0200",
                ..Default::default()
            };
            m.fields.insert(n, value(&mut rng, &spec, Some(longest)));
            agree_both_ways(&c, &m, &format!("field {n} alone (longest: {longest})"));
        }
    }
}

#[test]
fn random_messages_both_ways() {
    let c = codec(DIALECT);
    let seed = std::env::var("FPS_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_8583_u64);
    let mut rng = Rng(seed);
    let laid_out: Vec<(u8, FieldSpec)> = (2u8..=128)
        .filter(|n| !UNEXPRESSIBLE.contains(n))
        .filter_map(|n| c.dialect().field(n).map(|s| (n, *s)))
        .collect();
    const MTIS: [&[u8; 4]; 6] = [b"0200", b"0210", b"0400", b"0420", b"0800", b"0810"];
    for i in 0..200 {
        let percent = [90, 30, 10, 3][i % 4];
        let mut m = IsoMessage {
            mti: *MTIS[rng.below(MTIS.len() as u64) as usize],
            ..Default::default()
        };
        for (n, spec) in &laid_out {
            if rng.below(100) < percent {
                m.fields.insert(*n, value(&mut rng, spec, None));
            }
        }
        agree_both_ways(&c, &m, &format!("seed {seed} message {i}"));
    }
}

/// We refuse every malformed input. iso8583_rs refuses the truncated ones
/// (sometimes by panicking) but has no maxima and ignores trailing bytes;
/// its verdicts are printed, not asserted, except for truncation.
#[test]
fn malformed_inputs() {
    let c = codec(DIALECT);
    let mut base = BytesMut::new();
    c.encode(&fixtures::credit_transfer(), &mut base)
        .expect("encode");
    let base = base.to_vec();
    // MTI (4) + bitmaps (16) + F3 (6) + F4 (12) + F7 (10) + F11 + F12 (6 each) + F13 (4) = F32.
    let f32_at = 4 + 16 + 6 + 12 + 10 + 6 + 6 + 4;
    assert_eq!(
        &base[f32_at..f32_at + 8],
        b"06888001",
        "layout of the base message"
    );
    let splice = |at: usize, remove: usize, insert: &[u8]| {
        [&base[..at], insert, &base[at + remove..]].concat()
    };
    let truncated: Vec<(&str, Vec<u8>)> = vec![
        ("MTI only", base[..4].to_vec()),
        ("secondary bitmap truncated", base[..4 + 12].to_vec()),
        ("fixed field truncated", base[..4 + 16 + 3].to_vec()),
        ("LLVAR data truncated", base[..f32_at + 5].to_vec()),
        ("last field truncated", base[..base.len() - 1].to_vec()),
    ];
    let other: Vec<(&str, Vec<u8>)> = vec![
        ("LLVAR length not digits", splice(f32_at, 2, b"0x")),
        (
            "LLVAR length over the maximum",
            splice(f32_at, 8, b"12888001000000"),
        ),
        ("letters in n field 4", splice(4 + 16 + 6, 1, b"X")),
        ("trailing bytes", [&base[..], b"XYZ"].concat()),
    ];
    eprintln!("(iso8583_rs may print panics below: it unwraps malformed length prefixes)");
    for (truncation, cases) in [(true, truncated), (false, other)] {
        for (name, bytes) in cases {
            let ours = c.decode_message(&bytes);
            assert!(ours.is_err(), "{name}: we must refuse {}", show(&bytes));
            let theirs = catch_unwind(AssertUnwindSafe(|| {
                baseline::parse(&mut bytes.clone()).map(|_| ())
            }));
            let verdict = match &theirs {
                Ok(Ok(())) => "accepts",
                Ok(Err(_)) => "refuses",
                Err(_) => "panics",
            };
            eprintln!(
                "{name}: we refuse ({}), iso8583_rs {verdict}",
                ours.unwrap_err()
            );
            if truncation {
                assert!(
                    !matches!(theirs, Ok(Ok(()))),
                    "{name}: iso8583_rs accepted a truncated message"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------

fn assert_same(what: &str, how: &str, got: &IsoMessage, want: &IsoMessage) {
    assert_eq!(got.mti, want.mti, "{what}: {how}: MTI");
    if got.fields != want.fields {
        let keys: std::collections::BTreeSet<&u8> =
            got.fields.keys().chain(want.fields.keys()).collect();
        let diff: Vec<String> = keys
            .into_iter()
            .filter(|k| got.fields.get(*k) != want.fields.get(*k))
            .map(|k| {
                format!(
                    "  field {k}: expected {:?}, got {:?}",
                    want.fields.get(k).map(|v| show(v)),
                    got.fields.get(k).map(|v| show(v))
                )
            })
            .collect();
        panic!("{what}: {how} differs:\n{}", diff.join("\n"));
    }
}

/// A value that fits `spec`; `longest` forces the maximum (true) or a short
/// length (false) for variable fields, `None` picks at random.
fn value(rng: &mut Rng, spec: &FieldSpec, longest: Option<bool>) -> Vec<u8> {
    let len = match spec.length {
        FieldLength::Fixed(n) => usize::from(n),
        FieldLength::Var { max, .. } => match longest {
            Some(true) => usize::from(max),
            Some(false) => 1,
            None => rng.below(u64::from(max) + 1) as usize,
        },
    };
    (0..len)
        .map(|_| match spec.class {
            CharClass::N => b'0' + rng.below(10) as u8,
            CharClass::A => b'A' + rng.below(26) as u8,
            CharClass::An => {
                b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                    [rng.below(62) as usize]
            }
            CharClass::Ans => 0x20 + rng.below(0x5f) as u8,
            CharClass::Z => b"0123456789=D"[rng.below(12) as usize],
            CharClass::B => rng.below(256) as u8,
        })
        .collect()
}

fn show(b: &[u8]) -> String {
    let cut = &b[..b.len().min(200)];
    let s: String = cut
        .iter()
        .flat_map(|c| std::ascii::escape_default(*c))
        .map(char::from)
        .collect();
    if b.len() > cut.len() {
        format!("{s}... ({} bytes)", b.len())
    } else {
        s
    }
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}
