//! A plain timing loop for the codec report: median of several runs. The
//! criterion benches (`benches/codec.rs`) are the careful measurement; this
//! is for regenerating the README table with one command.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Runs whose median is reported.
const RUNS: usize = 9;
/// Length a calibrated run aims at.
const RUN_TARGET: Duration = Duration::from_millis(20);
/// Upper bound on iterations per run, whatever the clock says.
const MAX_ITERATIONS: u64 = 1 << 26;

/// Median nanoseconds per call of `op`.
pub fn ns_per_op<R>(mut op: impl FnMut() -> R) -> f64 {
    let mut iterations = 16u64;
    while iterations < MAX_ITERATIONS && run(&mut op, iterations) < RUN_TARGET / 2 {
        iterations *= 2;
    }
    let mut per_op: Vec<f64> = (0..RUNS)
        .map(|_| run(&mut op, iterations).as_nanos() as f64 / iterations as f64)
        .collect();
    per_op.sort_by(f64::total_cmp);
    per_op[RUNS / 2]
}

fn run<R>(op: &mut impl FnMut() -> R, iterations: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(op());
    }
    start.elapsed()
}
