//! HSM throughput: fps-hsm's worker pool vs a raw single-thread cryptoki
//! loop on the same SoftHSM2 key, in the same run.
//!
//! Targets (2-core machine): pool with 1 session >= 0.9x the raw loop; pool
//! with 2 sessions >= 1.7x the pool with 1 session. After criterion's runs a
//! fixed-duration pass prints ops/s, p99 latency and the ratios per
//! mechanism, then the token's own ceiling across sessions (raw cryptoki on 2
//! threads, each with its own session, no pool): `pool2/1` cannot exceed
//! `raw2/raw`. Skips (loudly) when SoftHSM2 is not installed.
//!
//! `cargo bench -p fps-benches --bench hsm`

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use cryptoki::mechanism::Mechanism as CkMechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use fps_hsm::pkcs11::{init_token, TokenSession};
use fps_hsm::{
    admin, Hsm, HsmConfig, HsmKey, KeyRef, Mac as _, Mechanism, Pin, PinSource, Signer as _,
};

const MODULES: [&str; 3] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];
const PIN: &str = "1234";
const PIN_ENV: &str = "FPS_HSM_BENCH_PIN";
const MESSAGE: &[u8] = b"0200F23A400108A18000000000001400000012345678901234400000000000012345";
/// Callers per session: enough requests in flight that a worker never idles.
const CALLERS_PER_SESSION: usize = 3;
/// Duration of each ops/s + p99 measurement.
const REPORT_SECS: u64 = 2;

struct Bench {
    module: PathBuf,
    admin: TokenSession,
    dir: PathBuf,
}

fn setup() -> Option<Bench> {
    let module = std::env::var_os("FPS_HSM_MODULE")
        .map(PathBuf::from)
        .into_iter()
        .chain(MODULES.iter().map(PathBuf::from))
        .find(|p| p.is_file());
    let Some(module) = module else {
        eprintln!("!!!!!!!! SKIPPED hsm bench: SoftHSM2 not installed (apt-get install softhsm2) !!!!!!!!");
        return None;
    };
    let dir = std::env::temp_dir().join(format!("fps-hsm-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("tokens")).expect("bench token dir");
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .expect("write softhsm2.conf");
    // Single-threaded here, before any worker or criterion thread starts.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    std::env::set_var(PIN_ENV, PIN);
    let pin = Pin::new(PIN.into());
    init_token(&module, "fps-bench", &Pin::new("5678".into()), &pin).expect("init token");
    let admin = TokenSession::open(&module, "fps-bench", &pin).expect("admin session");
    admin::generate(&admin, "bench-hmac", Mechanism::HmacSha256).expect("hmac key");
    admin::generate(&admin, "bench-cmac", Mechanism::AesCmac).expect("cmac key");
    admin::generate(&admin, "bench-ec", Mechanism::EcdsaP256Sha256).expect("ec key");
    Some(Bench { module, admin, dir })
}

#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    label: &'static str,
    mechanism: Mechanism,
}

const CASES: [Case; 3] = [
    Case {
        name: "hmac_sha256",
        label: "bench-hmac",
        mechanism: Mechanism::HmacSha256,
    },
    Case {
        name: "aes_cmac",
        label: "bench-cmac",
        mechanism: Mechanism::AesCmac,
    },
    Case {
        name: "ecdsa_p256_sha256",
        label: "bench-ec",
        mechanism: Mechanism::EcdsaP256Sha256,
    },
];

/// One raw cryptoki call, as a single-thread application would make it.
fn raw_op(bench: &Bench, case: Case, handle: ObjectHandle, digest: &[u8]) {
    let session = bench.admin.session();
    let result = match case.mechanism {
        Mechanism::HmacSha256 => session.sign(&CkMechanism::Sha256Hmac, handle, MESSAGE),
        Mechanism::AesCmac => session.sign(&CkMechanism::AesCMac, handle, MESSAGE),
        // Pre-hashed like fps-hsm does (SoftHSM2 has no CKM_ECDSA_SHA256).
        _ => session.sign(&CkMechanism::Ecdsa, handle, digest),
    };
    std::hint::black_box(result.expect("raw sign"));
}

fn raw_handle(bench: &Bench, case: Case) -> ObjectHandle {
    let class = if case.mechanism.is_mac() {
        ObjectClass::SECRET_KEY
    } else {
        ObjectClass::PRIVATE_KEY
    };
    bench
        .admin
        .session()
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(format!("{}-v1", case.label).into_bytes()),
        ])
        .expect("find key")[0]
}

/// Ops/s and p99 of `threads` raw single-session loops in parallel, each
/// thread with its own logged-in session: what the token itself allows across
/// sessions, the ceiling for the pool's `pool2/1` ratio.
fn measure_raw_threads(bench: &Bench, case: Case, threads: usize) -> Stats {
    let pin = Pin::new(PIN.into());
    let sessions: Vec<_> = (0..threads)
        .map(|_| {
            let s = TokenSession::open(&bench.module, "fps-bench", &pin).expect("raw session");
            let own = Bench {
                module: bench.module.clone(),
                admin: s,
                dir: bench.dir.clone(),
            };
            let handle = raw_handle(&own, case);
            (own, handle)
        })
        .collect();
    let stop = AtomicBool::new(false);
    let digest = [0x5a; 32];
    let start = Instant::now();
    let latencies: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .into_iter()
            .map(|(own, handle)| {
                let stop = &stop;
                scope.spawn(move || {
                    let mut lat = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        raw_op(&own, case, handle, &digest);
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(REPORT_SECS));
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("raw thread"))
            .collect()
    });
    summarise(latencies, start.elapsed())
}

fn pool(bench: &Bench, sessions: usize) -> Hsm {
    let mut config = HsmConfig::pkcs11(&bench.module, "fps-bench", PinSource::Env(PIN_ENV.into()));
    config.threads = sessions;
    config.queue_bound = 256;
    Hsm::builder(config).start().expect("start pool")
}

fn pool_op(key: &HsmKey, mechanism: Mechanism) {
    let out = if mechanism.is_mac() {
        key.generate(MESSAGE)
    } else {
        key.sign(MESSAGE)
    };
    std::hint::black_box(out.expect("pool op"));
}

/// Runs `total` ops spread over `callers` threads; returns the wall time.
fn run_spread(key: &HsmKey, mechanism: Mechanism, callers: usize, total: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for i in 0..callers as u64 {
            let n = total / callers as u64 + u64::from(i < total % callers as u64);
            scope.spawn(move || {
                for _ in 0..n {
                    pool_op(key, mechanism);
                }
            });
        }
    });
    start.elapsed()
}

fn criterion_runs(c: &mut Criterion, bench: &Bench) {
    let digest = [0x5a; 32];
    for case in CASES {
        let mut group = c.benchmark_group(format!("hsm/{}", case.name));
        group.throughput(Throughput::Elements(1));
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(3));
        let handle = raw_handle(bench, case);
        group.bench_function("raw_cryptoki_1_thread", |b| {
            b.iter(|| raw_op(bench, case, handle, &digest))
        });
        for sessions in [1, 2] {
            let hsm = pool(bench, sessions);
            let key = hsm.key(KeyRef::new(case.label, case.mechanism).unwrap());
            group.bench_function(format!("pool_{sessions}_session"), |b| {
                b.iter_custom(|iters| {
                    run_spread(&key, case.mechanism, sessions * CALLERS_PER_SESSION, iters)
                })
            });
        }
        group.finish();
    }
}

/// Ops/s and p99 over a fixed duration.
struct Stats {
    ops_per_sec: f64,
    p99_us: f64,
}

fn measure(callers: usize, op: impl Fn() + Sync) -> Stats {
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let latencies: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..callers)
            .map(|_| {
                scope.spawn(|| {
                    let mut lat = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        op();
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(REPORT_SECS));
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("caller thread"))
            .collect()
    });
    summarise(latencies, start.elapsed())
}

/// Ops/s and p99 of a single-thread loop on the calling thread (a cryptoki
/// `Session` is not `Sync`).
fn measure_here(mut op: impl FnMut()) -> Stats {
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(REPORT_SECS) {
        let t = Instant::now();
        op();
        latencies.push(t.elapsed());
    }
    summarise(latencies, start.elapsed())
}

fn summarise(mut latencies: Vec<Duration>, elapsed: Duration) -> Stats {
    latencies.sort_unstable();
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    Stats {
        ops_per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p99_us: p99.as_secs_f64() * 1e6,
    }
}

fn report(bench: &Bench) {
    let digest = [0x5a; 32];
    println!("\nHSM throughput (SoftHSM2, {REPORT_SECS} s each; pool callers = {CALLERS_PER_SESSION} per session)");
    println!(
        "{:<20} {:>12} {:>9} {:>12} {:>9} {:>12} {:>9} {:>10} {:>10}",
        "mechanism",
        "raw ops/s",
        "p99 us",
        "pool1 ops/s",
        "p99 us",
        "pool2 ops/s",
        "p99 us",
        "pool1/raw",
        "pool2/1"
    );
    let mut raw2_rows = Vec::new();
    for case in CASES {
        let handle = raw_handle(bench, case);
        let raw = measure_here(|| raw_op(bench, case, handle, &digest));
        let raw2 = measure_raw_threads(bench, case, 2);
        raw2_rows.push((
            case.name,
            raw2.ops_per_sec,
            raw2.p99_us,
            raw2.ops_per_sec / raw.ops_per_sec,
        ));
        let mut pools = Vec::new();
        for sessions in [1, 2] {
            let hsm = pool(bench, sessions);
            let key = Arc::new(hsm.key(KeyRef::new(case.label, case.mechanism).unwrap()));
            pools.push(measure(sessions * CALLERS_PER_SESSION, || {
                pool_op(&key, case.mechanism)
            }));
        }
        println!(
            "{:<20} {:>12.0} {:>9.1} {:>12.0} {:>9.1} {:>12.0} {:>9.1} {:>9.2}x {:>9.2}x",
            case.name,
            raw.ops_per_sec,
            raw.p99_us,
            pools[0].ops_per_sec,
            pools[0].p99_us,
            pools[1].ops_per_sec,
            pools[1].p99_us,
            pools[0].ops_per_sec / raw.ops_per_sec,
            pools[1].ops_per_sec / pools[0].ops_per_sec,
        );
    }
    println!("targets: pool1/raw >= 0.90x, pool2/pool1 >= 1.70x (2 cores)");
    println!("\nToken ceiling: raw cryptoki, 2 threads x own session (no pool)");
    println!(
        "{:<20} {:>12} {:>9} {:>10}",
        "mechanism", "raw2 ops/s", "p99 us", "raw2/raw"
    );
    for (name, ops, p99, ratio) in raw2_rows {
        println!("{name:<20} {ops:>12.0} {p99:>9.1} {ratio:>9.2}x");
    }
    println!();
}

fn main() {
    let Some(bench) = setup() else { return };
    let mut criterion = Criterion::default().configure_from_args();
    criterion_runs(&mut criterion, &bench);
    report(&bench);
    criterion.final_summary();
    let Bench { admin, dir, .. } = bench;
    drop(admin);
    let _ = std::fs::remove_dir_all(dir);
}
