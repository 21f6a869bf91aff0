//! Idempotency lookup benchmarks: the payment-safety issue's target is a
//! lookup of a *hot* key (a completed key held in the in-memory index) in at
//! most 200 ns.
//!
//! The index holds [`KEYS`] completed keys of one client scope (the default
//! `[idempotency] max_keys_in_memory`), each the typical upstream credit
//! transfer (`fps_codecs::model::examples::credit_transfer`) with its own
//! F123. Its capacity leaves room, so a miss is a first sight and never an
//! eviction or a key-store lookup. Every benchmark is one request:
//!
//! - `index_hot_same_key`: `IdempotencyIndex::claim` of one completed key,
//!   again and again → `Claim::Duplicate`. Everything in the CPU cache: the
//!   best case.
//! - `index_hot_random_key`: the same for a completed key drawn at random
//!   among the million (the request is built outside the timing), so the
//!   key's index entry is usually not in the CPU cache: a gateway's retry
//!   seconds after the original, under load.
//! - `index_hot_recent_key`: the same among the [`RECENT`] most recently
//!   completed keys: a small working set (about 1 MB of entries, but spread
//!   over more pages than the TLB maps), between the two above.
//! - `index_miss_random_key`: `claim` of a key never seen (`Claim::New`,
//!   which inserts it) and `abandon` (which removes it again, so the index
//!   stays at a million). A miss costs at most this.
//! - `admit_duplicate_same_key` / `admit_duplicate_random_key`: the path
//!   the pipeline takes for a duplicate, `Safety::admit` (index lock, clock
//!   read, `claim`, the Prometheus counter the switch installs, and the
//!   answer built with `Outcome::answer_for`), over a `NullJournal`.
//! - `admit_new_then_abandon`: first sight through `Safety::admit` (claim,
//!   the canonical encoding of the request and its `Received` record
//!   appended to a `NullJournal`), then `Safety::abandon`. Not a lookup: it
//!   shows what a miss costs the pipeline before the bank is reached.
//! - `idempotency_parts/{fingerprint_of,answer_for}`: two pieces of the
//!   above on their own: the content fingerprint (version 2, folded multiply) `claim` computes for
//!   every request, and the duplicate's answer `admit` builds.
//!
//! Times are wall-clock (criterion's default): on a shared machine they
//! include preemption, so compare runs made on an idle one. The bench uses
//! the system allocator; the switch runs on mimalloc.
//!
//! `cargo bench -p fps-benches --features switch --bench idempotency`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fps_codecs::model::{examples, IdempotencyKey, ResponseCode, Transaction};
use fps_routing::idempotency::{
    Claim, ClientScope, Fingerprint, IdempotencyIndex, Outcome, DEFAULT_RETENTION,
};
use fps_routing::Millis;
use fps_switch::clock::SwitchClock;
use fps_switch::safety::{Admission, NullJournal, Safety};

/// Completed keys in the index: the switch's default `max_keys_in_memory`.
const KEYS: u64 = 1_000_000;
/// Index capacity: room above [`KEYS`], so a miss never evicts.
const CAPACITY: usize = 2 * KEYS as usize;
/// Requests built per timed batch of the random-key benchmarks: enough to
/// hide the timer, few enough that the requests stay in cache (they were
/// just decoded in the real pipeline) while the index entries do not.
const BATCH: u64 = 256;
/// The most recently completed keys, drawn from by `index_hot_recent_key`:
/// about the keys a busy switch completed in the last second, those a quick
/// retry finds.
const RECENT: u64 = 4096;
/// Miss keys are drawn from `KEYS..KEYS + MISS_SPACE`: never a stored key.
const MISS_SPACE: u64 = 1 << 40;
/// How long a duplicate would wait for an in-flight original (never here).
const WAIT_LIMIT: Duration = Duration::from_secs(20);

fn idempotency(c: &mut Criterion) {
    let scope = ClientScope::new("CN=gateway").expect("a short, non-empty scope");
    let template = examples::credit_transfer();
    let now = Millis(0);
    let mut index = IdempotencyIndex::new(CAPACITY, DEFAULT_RETENTION);
    let outcome = approved();
    for i in 0..KEYS {
        match index.claim(&scope, &request(&template, i), now) {
            Ok(Claim::New(ticket)) => {
                index.complete(ticket, outcome.clone(), now);
            }
            other => panic!("filling the index: key {i} gave {other:?}"),
        }
    }
    assert_eq!(index.len(), KEYS as usize);
    // The benchmarks below measure what they say they do.
    let hot = request(&template, KEYS / 2);
    assert!(matches!(
        index.claim(&scope, &hot, now),
        Ok(Claim::Duplicate(_))
    ));
    match index.claim(&scope, &request(&template, KEYS + 1), now) {
        Ok(Claim::New(t)) => assert!(index.abandon(t).is_empty()),
        other => panic!("a miss gave {other:?}"),
    }
    assert_eq!(index.len(), KEYS as usize);

    let mut group = c.benchmark_group("idempotency");
    group.throughput(Throughput::Elements(1));

    group.bench_function("index_hot_same_key", |b| {
        b.iter(|| black_box(index.claim(&scope, black_box(&hot), now)))
    });

    let mut rng = SplitMix64(1);
    group.bench_function("index_hot_random_key", |b| {
        b.iter_batched_ref(
            || request(&template, rng.below(KEYS)),
            |req| black_box(index.claim(&scope, req, now)),
            BatchSize::NumIterations(BATCH),
        )
    });

    group.bench_function("index_hot_recent_key", |b| {
        b.iter_batched_ref(
            || request(&template, KEYS - 1 - rng.below(RECENT)),
            |req| black_box(index.claim(&scope, req, now)),
            BatchSize::NumIterations(BATCH),
        )
    });

    group.bench_function("index_miss_random_key", |b| {
        b.iter_batched_ref(
            || request(&template, KEYS + rng.below(MISS_SPACE)),
            |req| match index.claim(&scope, req, now) {
                Ok(Claim::New(t)) => black_box(index.abandon(t)),
                other => panic!("a miss gave {other:?}"),
            },
            BatchSize::NumIterations(BATCH),
        )
    });
    assert_eq!(index.len(), KEYS as usize);

    // The switch runs with its Prometheus recorder: admit's counter is real.
    let _metrics = fps_switch::metrics::install();
    let safety = Safety::new(
        Arc::new(NullJournal::default()),
        None,
        index,
        1,
        Arc::new(SwitchClock::start()),
        WAIT_LIMIT,
    );
    assert!(matches!(
        ready(safety.admit(&scope, &hot)),
        Admission::Answer(ref a) if a.response_code == Some(ResponseCode::APPROVED)
    ));

    group.bench_function("admit_duplicate_same_key", |b| {
        b.iter(|| black_box(ready(safety.admit(&scope, black_box(&hot)))))
    });

    group.bench_function("admit_duplicate_random_key", |b| {
        b.iter_batched_ref(
            || request(&template, rng.below(KEYS)),
            |req| black_box(ready(safety.admit(&scope, req))),
            BatchSize::NumIterations(BATCH),
        )
    });

    group.bench_function("admit_new_then_abandon", |b| {
        b.iter_batched_ref(
            || request(&template, KEYS + rng.below(MISS_SPACE)),
            |req| match ready(safety.admit(&scope, req)) {
                Admission::Process(claimed) => safety.abandon(claimed),
                Admission::Answer(a) => panic!("a miss was answered {:?}", a.response_code),
            },
            BatchSize::NumIterations(BATCH),
        )
    });
    group.finish();

    // Where the time of a hot lookup goes: the two per-request computations
    // a duplicate costs besides the hash-map probe and the lock.
    let mut parts = c.benchmark_group("idempotency_parts");
    parts.throughput(Throughput::Elements(1));
    parts.bench_function("fingerprint_of", |b| {
        b.iter(|| black_box(Fingerprint::of(black_box(&hot))))
    });
    parts.bench_function("answer_for", |b| {
        b.iter(|| black_box(outcome.answer_for(black_box(&hot))))
    });
    parts.finish();
}

/// The example credit transfer with F123 number `i`.
fn request(template: &Transaction, i: u64) -> Transaction {
    let mut t = template.clone();
    let key = format!("gw-2026-11-23-{i:013}");
    t.idempotency_key =
        Some(IdempotencyKey::parse(key.as_bytes()).expect("an ASCII key of 27 bytes"));
    t
}

fn approved() -> Outcome {
    Outcome::new(ResponseCode::APPROVED)
}

/// Drive `f` to completion in one poll. `Safety::admit` returns at once for
/// everything but a duplicate of an in-flight key, which never happens
/// here (nothing is left in flight), so `Pending` is a bench bug.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("admit waited: a key was left in flight"),
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a fixed sequence of keys per run.
struct SplitMix64(u64);

impl SplitMix64 {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

criterion_group!(benches, idempotency);
criterion_main!(benches);
