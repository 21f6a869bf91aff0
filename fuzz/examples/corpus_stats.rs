//! How deep does a corpus reach? For each decoder target, counts the inputs
//! of `fuzz/corpus/<target>/` (or the directories given) that decode, and
//! those that also re-encode (where the round-trip oracles bite). A fuzzer
//! that never gets past the first check shows up here as "0 decode".
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example corpus_stats
//! ```

use std::fs;
use std::path::Path;

use bytes::BytesMut;
use fps_codecs::iso20022::Iso20022Codec;
use fps_codecs::iso8583::{self, Dialect, Iso8583Codec};
use fps_codecs::json::JsonCodec;
use fps_codecs::MessageCodec;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let iso: Vec<Iso8583Codec> = iso8583::builtin_names()
        .map(|n| Iso8583Codec::builtin(n).expect("shipped"))
        .collect();
    let canonical = Iso8583Codec::builtin("canonical").expect("shipped");
    report(&root, "iso8583_canonical", |m| round_trip(&canonical, m));
    report(&root, "iso8583_decode", |m| match m.split_first() {
        Some((sel, msg)) => round_trip(&iso[usize::from(*sel) % iso.len()], msg),
        None => (false, false),
    });
    report(&root, "json_decode", |m| round_trip(&JsonCodec::new(), m));
    report(&root, "iso20022_decode", |m| {
        round_trip(&Iso20022Codec::default(), m)
    });
    report(&root, "dialect_toml", |m| {
        let ok = std::str::from_utf8(m).is_ok_and(|t| Dialect::from_toml(t).is_ok());
        (ok, ok)
    });
}

fn round_trip(codec: &dyn MessageCodec, msg: &[u8]) -> (bool, bool) {
    match codec.decode(msg) {
        Ok(t) => (true, codec.encode(&t, &mut BytesMut::new()).is_ok()),
        Err(_) => (false, false),
    }
}

fn report(root: &Path, target: &str, f: impl Fn(&[u8]) -> (bool, bool)) {
    let Ok(entries) = fs::read_dir(root.join(target)) else {
        println!("{target:20} no corpus");
        return;
    };
    let (mut n, mut dec, mut enc) = (0, 0, 0);
    for e in entries.flatten() {
        let Ok(bytes) = fs::read(e.path()) else {
            continue;
        };
        let (d, r) = f(&bytes);
        n += 1;
        dec += usize::from(d);
        enc += usize::from(r);
    }
    println!("{target:20} {n:6} inputs {dec:6} decode {enc:6} also re-encode");
}
