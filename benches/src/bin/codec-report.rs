//! Prints the codec performance table of the README as markdown: decode and
//! encode time per message for every ISO 8583 dialect, iso8583_rs on the
//! same 0200, pacs.008, JSON and the framer, with heap allocations per
//! operation and the iso8583_rs ratio.
//!
//! `cargo run --release -p fps-benches --bin codec-report`
//!
//! Times are the median of 9 runs of a plain loop (std::time::Instant), one
//! thread; criterion (`cargo bench -p fps-benches --bench codec`) is the
//! careful measurement. Machine load shows up here: run it on a quiet box.

use fps_benches::alloc_counter::{self, CountingAllocator};
use fps_benches::{cases, timing};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

/// Operations counted per allocation measurement (after a warm-up).
const ALLOC_ITERATIONS: u32 = 10_000;

/// Targets from the codec brief.
const TARGET_ISO8583_NS: f64 = 1_000.0;
const TARGET_RATIO: f64 = 5.0;

struct Row {
    codec: String,
    message: &'static str,
    bytes: usize,
    decode_ns: f64,
    encode_ns: f64,
    decode_allocs: f64,
    encode_allocs: f64,
}

fn main() {
    assert!(
        alloc_counter::installed(),
        "the counting allocator is this binary's global allocator"
    );
    let (all, missing) = cases::all();
    let mut rows = Vec::new();
    for mut c in all {
        eprintln!("measuring {} ...", c.codec);
        let decode_allocs = alloc_counter::per_op(ALLOC_ITERATIONS, &mut c.decode);
        let encode_allocs = alloc_counter::per_op(ALLOC_ITERATIONS, &mut c.encode);
        let decode_ns = timing::ns_per_op(&mut c.decode);
        let encode_ns = timing::ns_per_op(&mut c.encode);
        rows.push(Row {
            codec: c.codec,
            message: c.message,
            bytes: c.bytes,
            decode_ns,
            encode_ns,
            decode_allocs,
            encode_allocs,
        });
    }

    println!("{}\n", machine());
    println!("| codec | message | bytes | decode ns | encode ns | allocations per decode | allocations per encode |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {} | {} |",
            r.codec,
            r.message,
            r.bytes,
            r.decode_ns,
            r.encode_ns,
            allocs(r.decode_allocs),
            allocs(r.encode_allocs)
        );
    }
    for m in &missing {
        println!("| {m} | | | | | | |");
    }
    println!();

    let find = |name: &str| rows.iter().find(|r| r.codec == name);
    if let (Some(rs), Some(ours)) = (
        find(cases::ISO8583_RS),
        find("ISO 8583 iso87-ascii-binary-bitmap"),
    ) {
        println!(
            "iso8583_rs vs ours on the same bytes (iso87-ascii-binary-bitmap): decode {:.1}x, encode {:.1}x faster",
            rs.decode_ns / ours.decode_ns,
            rs.encode_ns / ours.encode_ns
        );
        if let Some(canon) = find("ISO 8583 canonical") {
            println!(
                "iso8583_rs vs our canonical dialect (hex bitmaps): decode {:.1}x, encode {:.1}x faster\n",
                rs.decode_ns / canon.decode_ns,
                rs.encode_ns / canon.encode_ns
            );
            let ok = |b: bool| if b { "met" } else { "MISSED" };
            println!("Targets:");
            println!(
                "- canonical 0200 decode <= 1 us: {:.0} ns, {}",
                canon.decode_ns,
                ok(canon.decode_ns <= TARGET_ISO8583_NS)
            );
            println!(
                "- canonical 0200 encode <= 1 us: {:.0} ns, {}",
                canon.encode_ns,
                ok(canon.encode_ns <= TARGET_ISO8583_NS)
            );
            let ratio = rs.decode_ns / ours.decode_ns;
            println!(
                "- >= 5x faster than iso8583_rs (decode, same bytes): {ratio:.1}x, {}",
                ok(ratio >= TARGET_RATIO)
            );
        }
    }
    let iso_allocs: f64 = rows
        .iter()
        .filter(|r| r.codec.starts_with("ISO 8583 "))
        .map(|r| r.decode_allocs)
        .sum();
    println!(
        "- zero heap allocations per ISO 8583 decode: {}",
        if iso_allocs == 0.0 {
            "met (0 in every dialect)"
        } else {
            "MISSED"
        }
    );
}

fn allocs(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.2}")
    }
}

/// One line about the machine: CPU model and cores, as Linux reports them.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "Machine: {model}, {cores} cores available; release profile (thin LTO, 1 codegen unit)."
    )
}
