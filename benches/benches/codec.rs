//! Codec benchmarks: the typical 0200 credit transfer decoded and encoded
//! in every shipped ISO 8583 dialect and through iso8583_rs (the baseline),
//! a pacs.008, a JSON message and the upstream framer. Before timing, heap
//! allocations per operation are counted with a counting global allocator
//! and printed ("allocations per decode: N").
//!
//! `cargo bench -p fps-benches --bench codec` (add `-- iso8583` to filter);
//! `--features iso8583-rs` adds the iso8583_rs group once it compiles next
//! to this crate's dev-dependencies (see benches/Cargo.toml).
//! For a markdown table: `cargo run --release -p fps-benches --bin codec-report`.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fps_benches::alloc_counter::{self, CountingAllocator};
#[cfg(feature = "iso8583-rs")]
use fps_benches::baseline;
use fps_benches::{cases, fixtures};
use fps_codecs::json::JsonCodec;
use fps_codecs::MessageCodec;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

/// Operations counted per allocation measurement (after a warm-up).
const ALLOC_ITERATIONS: u32 = 10_000;

/// Print allocations per decode and encode for every codec.
fn allocations(_: &mut Criterion) {
    assert!(
        alloc_counter::installed(),
        "the counting allocator is this binary's global allocator"
    );
    let (mut all, missing) = cases::all();
    for c in &mut all {
        let decode = alloc_counter::per_op(ALLOC_ITERATIONS, &mut c.decode);
        let encode = alloc_counter::per_op(ALLOC_ITERATIONS, &mut c.encode);
        println!(
            "{} ({}): allocations per decode: {decode}, per encode: {encode}",
            c.codec, c.message
        );
    }
    for m in missing {
        println!("NOT MEASURED: {m}");
    }
}

fn iso8583(c: &mut Criterion) {
    let cases = fixtures::iso8583_cases().expect("the credit transfer encodes in every dialect");
    for case in &cases {
        let mut g = c.benchmark_group(format!("iso8583/{}", case.dialect));
        g.throughput(Throughput::Bytes(case.wire.len() as u64));
        g.bench_function("decode", |b| {
            b.iter(|| case.codec.decode(black_box(&case.wire)).expect("decodes"))
        });
        let mut out = BytesMut::with_capacity(1024);
        g.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                case.codec
                    .encode(black_box(&case.txn), &mut out)
                    .expect("encodes");
            })
        });
        if case.dialect == fixtures::BINARY_BITMAP_DIALECT {
            // The generic field map (allocates): what iso8583_rs's parse gives.
            g.bench_function("decode_message", |b| {
                b.iter(|| {
                    case.codec
                        .decode_message(black_box(&case.wire))
                        .expect("decodes")
                })
            });
        }
        g.finish();
    }
}

/// The same 0200 through iso8583_rs, in the same run (with the
/// `iso8583-rs` feature; see benches/Cargo.toml).
#[cfg(feature = "iso8583-rs")]
fn iso8583_rs(c: &mut Criterion) {
    let case = fixtures::iso8583_cases()
        .expect("encodes")
        .into_iter()
        .find(|c| c.dialect == baseline::DIALECT)
        .expect("shipped");
    let m = case.codec.decode_message(&case.wire).expect("decodes");
    let mut wire = case.wire.clone();
    let spec = baseline::spec();
    let mti = String::from_utf8(m.mti.to_vec()).expect("ASCII");
    let fields: Vec<(u32, String)> = m
        .fields
        .iter()
        .map(|(n, v)| (u32::from(*n), String::from_utf8(v.clone()).expect("text")))
        .collect();
    let segment = spec.get_message_from_header(&mti).expect("selector");
    let built = baseline::from_iso_message(&m, case.codec.dialect()).expect("builds");

    let mut g = c.benchmark_group(format!("iso8583_rs/{}", baseline::DIALECT));
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| baseline::parse(black_box(&mut wire)).expect("parses"))
    });
    g.bench_function("build_and_assemble", |b| {
        b.iter(|| {
            let mut msg = iso8583_rs::iso8583::iso_spec::new_msg(spec, segment);
            msg.set("message_type", &mti).expect("defined");
            for (n, v) in &fields {
                msg.set_on(*n, v).expect("defined");
            }
            msg.assemble().expect("assembles")
        })
    });
    g.bench_function("assemble", |b| {
        b.iter(|| black_box(&built).assemble().expect("assembles"))
    });
    g.finish();
}

fn iso20022(c: &mut Criterion) {
    // A fixture that stops building is a failure, never a skipped bench.
    let (codec, doc) = fixtures::pacs008().expect("the pacs.008 fixture builds");
    let txn = codec.decode(&doc).expect("our own pacs.008 decodes");
    let mut g = c.benchmark_group("iso20022/pacs.008");
    g.throughput(Throughput::Bytes(doc.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| codec.decode(black_box(&doc)).expect("decodes"))
    });
    let mut out = BytesMut::with_capacity(8192);
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            codec.encode(black_box(&txn), &mut out).expect("encodes");
        })
    });
    g.finish();
}

fn json(c: &mut Criterion) {
    let txn = fixtures::json_transaction().expect("the JSON fixture decodes");
    let doc = fixtures::JSON_CREDIT_TRANSFER;
    let mut g = c.benchmark_group("json/credit_transfer");
    g.throughput(Throughput::Bytes(doc.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| JsonCodec.decode(black_box(doc)).expect("decodes"))
    });
    let mut out = BytesMut::with_capacity(4096);
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            JsonCodec
                .encode(black_box(&txn), &mut out)
                .expect("encodes");
        })
    });
    g.finish();
}

fn framing(c: &mut Criterion) {
    const FRAMES: usize = 64;
    let (framer, stream) = fixtures::framed_stream(FRAMES);
    let mut g = c.benchmark_group("framing/binary2");
    g.throughput(Throughput::Elements(FRAMES as u64));
    g.bench_function("decode_64_frames", |b| {
        b.iter_batched(
            || stream.clone(),
            |mut src| {
                let mut n = 0;
                while let Some(frame) = framer.decode(&mut src).expect("valid frames") {
                    black_box(frame);
                    n += 1;
                }
                assert_eq!(n, FRAMES);
            },
            BatchSize::SmallInput,
        )
    });
    let message = fixtures::framed_stream(1).1[2..].to_vec();
    let mut out = BytesMut::with_capacity(1024);
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_frame", |b| {
        b.iter(|| {
            out.clear();
            let mark = framer.begin(&[], &mut out).expect("no header");
            out.extend_from_slice(black_box(&message));
            framer.finish(mark, &mut out).expect("small frame");
        })
    });
    g.finish();
}

#[cfg(feature = "iso8583-rs")]
criterion_group!(
    benches,
    allocations,
    iso8583,
    iso8583_rs,
    iso20022,
    json,
    framing
);
#[cfg(not(feature = "iso8583-rs"))]
criterion_group!(benches, allocations, iso8583, iso20022, json, framing);
criterion_main!(benches);
