//! How long this machine takes to hand work from one thread to another
//! that is asleep: the cost the HSM pool (a request to a worker thread, the
//! reply back to the caller) and every loopback send to an idle peer pay.
//!
//! `cargo run --release -p fps-benches --bin wake-latency`
//!
//! Two threads pass a token back and forth through blocking rendezvous
//! channels, so every hand-off parks the receiver and wakes it from the
//! other thread: a round trip is two wake-ups. Measured with the two
//! threads free to run on any CPU (on a 2-CPU machine: on different CPUs,
//! each woken from idle) and with both pinned to one CPU (`taskset -c 0`
//! around the command; then each wake is a context switch, no idle CPU to
//! bring back). Prints the median and p99 round trip of several runs.
//! Read the HSM and relay tables of the README with it: a hypervisor that
//! takes tens of microseconds to wake an idle vCPU makes every hand-off
//! cost that much latency.

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Round trips per run.
const ROUND_TRIPS: usize = 20_000;
/// Runs; the table reports over all their round trips.
const RUNS: usize = 3;

fn main() {
    let mut all = Vec::with_capacity(ROUND_TRIPS * RUNS);
    for _ in 0..RUNS {
        all.extend(run(ROUND_TRIPS));
    }
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() - 1) as f64 * p) as usize];
    println!(
        "wake-latency: {} round trips (2 cross-thread wake-ups each): median {:.1} us, p99 {:.1} us",
        all.len(),
        micros(pct(0.5)),
        micros(pct(0.99)),
    );
}

/// `n` round trips; the time of each.
fn run(n: usize) -> Vec<Duration> {
    let (to_peer, peer_rx) = mpsc::sync_channel::<()>(0);
    let (to_us, our_rx) = mpsc::sync_channel::<()>(0);
    let peer = std::thread::spawn(move || {
        for () in peer_rx {
            if to_us.send(()).is_err() {
                break;
            }
        }
    });
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        to_peer.send(()).expect("peer alive");
        our_rx.recv().expect("peer answers");
        times.push(t.elapsed());
    }
    drop(to_peer);
    peer.join().expect("peer thread");
    times
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
