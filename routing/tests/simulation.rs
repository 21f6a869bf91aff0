//! Deterministic simulation, two levels:
//!
//! 1. **Switch core** (`switch_core_*` tests, code in `sim/`): upstream
//!    clients, links, banks with ledgers and a journal around a core built
//!    from the real state machines (idempotency, routing, breakers, retry,
//!    reversal queues), under a per-seed schedule of eleven fault kinds,
//!    with crashes and journal replay; invariants checked after a
//!    heal-and-drain phase (see `sim/check.rs`). `SIM_SEEDS=K` runs K seeds
//!    (default 1000, `SIM_SEED_START` to shift), `SIM_SEED=N` replays one
//!    with its trace, `SIM_BUGS=...` turns on a known-bad core behaviour.
//!    Failing seeds go to `sim-regressions.txt`, replayed on every run.
//! 2. **Routing only** (below): many transactions against simulated banks
//!    that refuse connections, black-hole requests or decline.
//!
//! Each seed replays exactly; a failure prints its seed.
//!
//! Checked for every routing-only seed:
//! - every transaction gets exactly one final answer, by its deadline;
//! - no request is resent after an unknown outcome (it is reversed instead);
//! - no transaction is sent more than `max_attempts` times;
//! - selection never picks an unavailable (open or saturated) link;
//! - afterwards every concurrency slot is back (resources return to baseline).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use fps_codecs::model::{BankCode, Mti, ResponseCode, Transaction};
use fps_routing::{
    Attempt, HealthTable, Lease, LinkId, LinkOutcome, Millis, ProxyDirectory, RetryDecision,
    Router, RoutingConfig, SendFailure, SplitMix64,
};

const SEEDS: u64 = 150;
const TXNS: usize = 250;
const DEADLINE_MS: u64 = 3_000;
const ATTEMPT_TIMEOUT_MS: u64 = 1_000;
const FAULT_WINDOW_MS: u64 = 400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Healthy,
    Refuse,
    BlackHole,
    Decline,
}

enum Event {
    Arrive(usize),
    Done {
        txn: usize,
        lease: Lease,
        result: Result<(), SendFailure>,
    },
    Retry {
        txn: usize,
        attempt: Attempt,
    },
}

struct Txn {
    bank: BankCode,
    deadline: Millis,
    attempts: u32,
    final_answer: Option<(Millis, Answer)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Code(ResponseCode),
    Reversed,
}

struct Sim {
    router: Router,
    health: HealthTable,
    proxies: ProxyDirectory,
    rng: SplitMix64,
    queue: BinaryHeap<Reverse<(Millis, u64)>>,
    events: BTreeMap<u64, Event>,
    seq: u64,
    txns: Vec<Txn>,
    /// Fault mode per link per window, drawn lazily and kept for replay.
    faults: BTreeMap<(usize, u64), Mode>,
    seed: u64,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let cfg: RoutingConfig = toml::from_str(
            r#"
            [[routes]]
            bank_code = "004"
            primary = "hsbc"
            secondaries = ["hsbc-dr"]

            [[routes]]
            bank_code = "012"
            primary = "boc"

            [breaker]
            failure_threshold = 3
            cool_down_ms = 200
            max_cool_down_ms = 1600
            half_open_probes = 2

            [retry]
            max_attempts = 3
            base_backoff_ms = 10
            max_backoff_ms = 100
            min_attempt_ms = 1000

            [max_in_flight]
            hsbc = 4
            hsbc-dr = 2
            boc = 3
            "#,
        )
        .unwrap();
        let router = cfg.build(&["hsbc", "hsbc-dr", "boc"]).unwrap();
        let health = router.new_health();
        Sim {
            router,
            health,
            proxies: ProxyDirectory::default(),
            rng: SplitMix64::new(seed),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            txns: Vec::new(),
            faults: BTreeMap::new(),
            seed,
        }
    }

    fn schedule(&mut self, at: Millis, e: Event) {
        self.seq += 1;
        self.events.insert(self.seq, e);
        self.queue.push(Reverse((at, self.seq)));
    }

    fn mode(&mut self, link: usize, now: Millis) -> Mode {
        let window = now.as_u64() / FAULT_WINDOW_MS;
        let roll = self.rng.next_u64() % 10;
        *self.faults.entry((link, window)).or_insert(match roll {
            0 => Mode::Refuse,
            1 | 2 => Mode::BlackHole,
            3 => Mode::Decline,
            _ => Mode::Healthy,
        })
    }

    fn run(&mut self) {
        let mut t = 0u64;
        for i in 0..TXNS {
            t += self.rng.next_u64() % 15;
            let code = if self.rng.next_u64() % 3 == 0 {
                b"012"
            } else {
                b"004"
            };
            self.txns.push(Txn {
                bank: BankCode::parse(code).unwrap(),
                deadline: Millis(t + DEADLINE_MS),
                attempts: 0,
                final_answer: None,
            });
            self.schedule(Millis(t), Event::Arrive(i));
        }
        // Bounded: each transaction schedules at most max_attempts attempts and
        // as many retries.
        let max_steps = TXNS * 10;
        let mut steps = 0;
        while let Some(Reverse((now, seq))) = self.queue.pop() {
            steps += 1;
            assert!(steps <= max_steps, "seed {}: runaway simulation", self.seed);
            let event = self.events.remove(&seq).unwrap();
            match event {
                Event::Arrive(txn) => {
                    let n = self.candidates(txn).len();
                    self.attempt(txn, Attempt::first(0, n), now)
                }
                Event::Retry { txn, attempt } => self.attempt(txn, attempt, now),
                Event::Done { txn, lease, result } => {
                    let outcome = match result {
                        Ok(()) => LinkOutcome::Answered,
                        Err(f) => f.link_outcome(),
                    };
                    let candidate = lease.candidate();
                    self.health.settle(lease, outcome, now);
                    match result {
                        Ok(()) => self.finish(txn, now, Answer::Code(ResponseCode::APPROVED)),
                        Err(f) => {
                            let n = self.candidates(txn).len();
                            let attempt = Attempt {
                                number: self.txns[txn].attempts,
                                candidate,
                                candidates: n,
                            };
                            self.after_failure(txn, attempt, f, now);
                        }
                    }
                }
            }
        }
    }

    fn candidates(&self, txn: usize) -> Vec<LinkId> {
        let mut tx = Transaction::new(Mti::CREDIT_TRANSFER);
        tx.receiving_bank = Some(self.txns[txn].bank);
        self.router
            .resolve(&tx, &self.proxies)
            .unwrap()
            .candidates()
            .to_vec()
    }

    fn attempt(&mut self, txn: usize, attempt: Attempt, now: Millis) {
        let candidates = self.candidates(txn);
        let before: Vec<_> = self.health.statuses(&candidates, now).collect();
        let start = attempt.candidate;
        let lease = match self.health.acquire(&candidates, start, now) {
            Ok(l) => l,
            Err(_unavailable) => {
                assert!(
                    before.iter().all(|s| !s.is_available()),
                    "seed {}: 91 with an available candidate",
                    self.seed
                );
                // Nothing was sent: the retry policy decides whether another
                // try fits (it counts towards the attempt bound).
                self.txns[txn].attempts += 1;
                let a = Attempt {
                    number: self.txns[txn].attempts,
                    candidate: start,
                    candidates: candidates.len(),
                };
                self.after_failure(txn, a, SendFailure::NotSent, now);
                return;
            }
        };
        assert!(
            before[lease.candidate()].is_available(),
            "seed {}: picked unavailable {:?}",
            self.seed,
            before[lease.candidate()]
        );
        let tx = &mut self.txns[txn];
        tx.attempts += 1;
        let max = self.router.retry_policy().max_attempts();
        assert!(
            tx.attempts <= max,
            "seed {}: {} attempts > {max}",
            self.seed,
            tx.attempts
        );
        let mode = self.mode(lease.link().index(), now);
        let latency = 5 + self.rng.next_u64() % 95;
        let (at, result) = match mode {
            Mode::Healthy => (now.plus_ms(latency), Ok(())),
            Mode::Refuse => (now.plus_ms(1), Err(SendFailure::NotSent)),
            Mode::BlackHole => (
                now.plus_ms(ATTEMPT_TIMEOUT_MS),
                Err(SendFailure::OutcomeUnknown),
            ),
            Mode::Decline => (
                now.plus_ms(latency),
                Err(SendFailure::Rejected(ResponseCode::INSUFFICIENT_FUNDS)),
            ),
        };
        self.schedule(at, Event::Done { txn, lease, result });
    }

    fn after_failure(&mut self, txn: usize, attempt: Attempt, f: SendFailure, now: Millis) {
        let deadline = self.txns[txn].deadline;
        let jitter = self.rng.next_u64();
        match self
            .router
            .retry_policy()
            .decide(attempt, f, now, deadline, jitter)
        {
            RetryDecision::RetryOn(r) => {
                assert_eq!(
                    f,
                    SendFailure::NotSent,
                    "seed {}: retry after {f:?}",
                    self.seed
                );
                self.schedule(
                    r.not_before,
                    Event::Retry {
                        txn,
                        attempt: r.attempt,
                    },
                );
            }
            RetryDecision::GiveUp(code) => self.finish(txn, now, Answer::Code(code)),
            RetryDecision::Reverse => {
                assert_eq!(f, SendFailure::OutcomeUnknown, "seed {}", self.seed);
                self.finish(txn, now, Answer::Reversed)
            }
        }
    }

    fn finish(&mut self, txn: usize, now: Millis, answer: Answer) {
        let tx = &mut self.txns[txn];
        assert!(
            tx.final_answer.is_none(),
            "seed {}: txn {txn} answered twice",
            self.seed
        );
        assert!(
            now <= tx.deadline,
            "seed {}: txn {txn} answered at {now:?} after its deadline {:?}",
            self.seed,
            tx.deadline
        );
        tx.final_answer = Some((now, answer));
    }
}

#[test]
fn simulated_faults_keep_every_invariant() {
    let mut totals = BTreeMap::new();
    for seed in 0..SEEDS {
        let mut sim = Sim::new(seed);
        sim.run();
        for (i, t) in sim.txns.iter().enumerate() {
            let (_, answer) = t
                .final_answer
                .unwrap_or_else(|| panic!("seed {seed}: txn {i} never answered"));
            *totals.entry(format!("{answer:?}")).or_insert(0u32) += 1;
        }
        for (link, h) in sim.health.iter() {
            assert_eq!(
                h.limit().in_flight(),
                0,
                "seed {seed}: link {link:?} leaked concurrency slots"
            );
        }
    }
    // The fault mix must actually exercise every path.
    for want in [
        "Code(ResponseCode(00))",
        "Code(ResponseCode(51))",
        "Code(ResponseCode(91))",
        "Reversed",
    ] {
        assert!(
            totals.contains_key(want),
            "{want} never happened: {totals:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// The switch-core simulation (routing/tests/sim/): clients, links, banks,
// journal, crashes; see sim/mod.rs.

mod sim;

use std::time::Instant;

/// Seeds run by default in `cargo test` (override with `SIM_SEEDS=K`).
const DEFAULT_SIM_SEEDS: u64 = 1_000;
/// Regression seeds, one per line (`#` comments).
const REGRESSIONS: &str = include_str!("sim-regressions.txt");

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
    )
}

/// Run one seed; on failure print how to replay it, the fault schedule,
/// the violations and the trace, and return false.
fn run_and_report(seed: u64, bugs: sim::Bugs, verbose: bool) -> (bool, sim::world::Stats) {
    let report = std::panic::catch_unwind(|| sim::run_seed(seed, bugs, verbose));
    let report = match report {
        Ok(r) => r,
        Err(_) => {
            eprintln!("SIM_SEED={seed} panicked; replay with SIM_SEED={seed} cargo test -p fps-routing --test simulation");
            return (false, sim::world::Stats::default());
        }
    };
    if report.violations.is_empty() && !verbose {
        return (true, report.stats);
    }
    // Replay with the trace on (identical run: everything comes from the seed).
    let traced = if verbose {
        report
    } else {
        sim::run_seed(seed, bugs, true)
    };
    let failed = !traced.violations.is_empty();
    if failed || verbose {
        let tail = if verbose { usize::MAX } else { 400 };
        let skip = traced.trace.len().saturating_sub(tail);
        for line in &traced.trace[skip..] {
            eprintln!("{line}");
        }
        eprintln!("{}", traced.schedule);
        for v in &traced.violations {
            eprintln!("VIOLATION {v}");
        }
    }
    if failed {
        eprintln!(
            "SIM_SEED={seed} failed ({} violations); replay with: SIM_SEED={seed} cargo test -p fps-routing --test simulation switch_core",
            traced.violations.len()
        );
    }
    (!failed, traced.stats)
}

/// `SIM_BUGS=name,name` turns on known-bad core behaviours for a replay
/// (to see how the checker reports them).
fn bugs_from_env() -> sim::Bugs {
    let mut bugs = sim::Bugs::default();
    for name in std::env::var("SIM_BUGS").unwrap_or_default().split(',') {
        match name.trim() {
            "" => {}
            "resend_unknown_as_new" => bugs.resend_unknown_as_new = true,
            "forget_stans_on_restart" => bugs.forget_stans_on_restart = true,
            "forward_late_answers" => bugs.forward_late_answers = true,
            "trust_torn_records" => bugs.trust_torn_records = true,
            other => panic!("unknown SIM_BUGS entry {other:?}"),
        }
    }
    bugs
}

#[test]
fn switch_core_simulation_keeps_every_invariant() {
    if let Some(seed) = env_u64("SIM_SEED") {
        let (ok, stats) = run_and_report(seed, bugs_from_env(), true);
        eprintln!("{stats:#?}");
        assert!(ok, "SIM_SEED={seed} failed");
        return;
    }
    let seeds = env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SIM_SEEDS);
    let start = env_u64("SIM_SEED_START").unwrap_or(0);
    let began = Instant::now();
    let mut totals = sim::world::Stats::default();
    let mut failed = Vec::new();
    for seed in start..start + seeds {
        let (ok, stats) = run_and_report(seed, sim::Bugs::default(), false);
        totals.merge(&stats);
        if !ok {
            failed.push(seed);
            if failed.len() >= 5 {
                break;
            }
        }
    }
    eprintln!(
        "switch-core simulation: {seeds} seeds from {start} in {:.1?}",
        began.elapsed()
    );
    for (k, v) in &totals.counts {
        eprintln!("  {k:<45} {v}");
    }
    assert!(
        failed.is_empty(),
        "failing seeds (add them to routing/tests/sim-regressions.txt): {failed:?}"
    );
    if seeds >= 500 {
        // The fault mix must actually exercise every path.
        for kind in sim::faults::KINDS {
            let key = format!("fault {kind}");
            assert!(totals.get(&key) > 0, "{key} never scheduled");
        }
        for path in [
            "answered 00",
            "answered 51",
            "answered 68",
            "answered 91",
            "answered 94",
            "answered 96",
            "idempotency lookups",
            "idempotency lookup hits",
            "idempotency lookups failed (96)",
            "idempotency keys evicted",
            "duplicates waited in flight",
            "late answers matched",
            "late declines closed reversal",
            "reversals parked",
            "operator re-armed parked",
            "reversals acknowledged",
            "reversals closed (nothing to reverse)",
            "reversals queued by recovery",
            "torn records dropped at recovery",
            "96 on journal write failure",
            "hsm sign failures",
            "hsm verify failures",
            "requests lost in crash",
            "refused (switch down)",
        ] {
            assert!(totals.get(path) > 0, "{path} never happened: {totals:#?}");
        }
    }
}

#[test]
fn switch_core_simulation_regressions() {
    for line in REGRESSIONS.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let seed: u64 = line
            .parse()
            .unwrap_or_else(|_| panic!("bad line in sim-regressions.txt: {line:?}"));
        let (ok, _) = run_and_report(seed, sim::Bugs::default(), false);
        assert!(ok, "regression SIM_SEED={seed} failed");
    }
}

/// The checker must catch a core that resends an outcome-unknown
/// transaction instead of reversing it.
#[test]
fn switch_core_simulation_catches_resending_an_unknown_outcome() {
    let bugs = sim::Bugs {
        resend_unknown_as_new: true,
        ..Default::default()
    };
    let caught = (0..200).find(|&seed| {
        let r = sim::run_seed(seed, bugs, false);
        r.violations.iter().any(|v| v.contains("double debit"))
    });
    assert!(caught.is_some(), "no double debit caught in 200 seeds");
}

/// The checker must catch STANs reused after a restart (the bank sees one
/// STAN twice), late answers forwarded upstream, and a recovery that
/// trusts a torn record.
#[test]
fn switch_core_simulation_catches_other_known_bad_cores() {
    for (bugs, what) in [
        (
            sim::Bugs {
                forget_stans_on_restart: true,
                ..Default::default()
            },
            "reused",
        ),
        (
            sim::Bugs {
                forward_late_answers: true,
                ..Default::default()
            },
            "while",
        ),
        (
            sim::Bugs {
                trust_torn_records: true,
                ..Default::default()
            },
            "key's net debit at the bank",
        ),
    ] {
        let caught = (0..200).find(|&seed| {
            let r = sim::run_seed(seed, bugs, false);
            r.violations.iter().any(|v| v.contains(what))
        });
        assert!(caught.is_some(), "{bugs:?}: nothing caught in 200 seeds");
    }
}

/// Same seed, same run: the trace is identical.
#[test]
fn switch_core_simulation_is_deterministic() {
    for seed in [1, 42] {
        let a = sim::run_seed(seed, sim::Bugs::default(), true);
        let b = sim::run_seed(seed, sim::Bugs::default(), true);
        assert_eq!(a.trace, b.trace);
        assert!(a.trace.len() > 100);
    }
}
