//! Integration tests of the durable idempotency key store (`fps_switch::keystore`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use fps_codecs::model::{
    AuthId, EndToEndId, IdempotencyKey, InstitutionId, ReasonCode, ResponseCode, Rrn,
    SettlementDate, Stan, TransmissionDateTime,
};
use fps_routing::idempotency::{ClientScope, Fingerprint, Outcome, RequestKey, StoredKey};
use fps_switch::keystore::{
    format, KeyRecord, KeyStore, KeyStoreConfig, KeyStoreError, KEYS_TABLE,
};

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("fps-keystore-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("keys.redb")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scope(name: &str) -> ClientScope {
    ClientScope::new(name).expect("scope")
}

fn explicit(key: &str) -> RequestKey {
    RequestKey::Explicit(IdempotencyKey::parse(key.as_bytes()).expect("F123"))
}

fn derived(stan: u32) -> RequestKey {
    RequestKey::Derived {
        acquirer: InstitutionId::parse(b"123456").expect("F32"),
        transmitted_at: TransmissionDateTime::parse(b"1123101530").expect("F7"),
        stan: Stan::new(stan).expect("F11"),
        rrn: Rrn::parse(b"532710000042").expect("F37"),
    }
}

fn full_outcome() -> Outcome {
    Outcome {
        response_code: ResponseCode::APPROVED,
        auth_id: Some(AuthId::parse(b"XK93A1").expect("F38")),
        settlement_date: Some(SettlementDate::parse(b"20261123").expect("date")),
        reason: Some(ReasonCode::parse(b"AC01").expect("reason")),
        bank_reference: Some(EndToEndId::parse(b"BANK-REF-2026-000042").expect("e2e")),
    }
}

fn record(scope: &ClientScope, key: RequestKey, lsn: u64, completed_unix_ms: u64) -> KeyRecord {
    KeyRecord {
        scope: scope.clone(),
        key,
        stored: StoredKey {
            fingerprint: Fingerprint(lsn.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            outcome: Outcome::new(ResponseCode::APPROVED),
        },
        completed_unix_ms,
        lsn,
    }
}

#[tokio::test]
async fn put_then_lookup_both_key_variants_and_all_outcome_fields() {
    let dir = TempDir::new("put");
    let store = KeyStore::open(KeyStoreConfig::new(dir.file())).expect("open");
    let gw = scope("CN=gateway-1,O=Example");
    let with_all = KeyRecord {
        stored: StoredKey {
            fingerprint: Fingerprint(0x0123_4567_89ab_cdef),
            outcome: full_outcome(),
        },
        ..record(
            &gw,
            explicit("order-2026-11-23/0001"),
            10,
            1_763_900_000_000,
        )
    };
    let minimal = KeyRecord {
        stored: StoredKey {
            fingerprint: Fingerprint(u64::MAX),
            outcome: Outcome::new(ResponseCode::LATE),
        },
        ..record(&gw, derived(42), 11, 1_763_900_000_001)
    };
    store.put(with_all.clone()).expect("put");
    store.put(minimal.clone()).expect("put");
    store.flush().await.expect("flush");
    assert_eq!(store.len().expect("len"), 2);
    assert_eq!(store.high_water_lsn(), 11);

    for r in [&with_all, &minimal] {
        let got = store.lookup(&r.scope, &r.key).await.expect("lookup");
        assert_eq!(got, Some((r.stored.clone(), r.completed_unix_ms)));
    }
    // Same key in another scope, and a derived key differing in one field,
    // are different keys.
    let other = scope("CN=gateway-2");
    assert_eq!(
        store.lookup(&other, &with_all.key).await.expect("lookup"),
        None
    );
    assert_eq!(store.lookup(&gw, &derived(43)).await.expect("lookup"), None);
}

#[tokio::test]
async fn lookup_of_absent_key_is_none() {
    let dir = TempDir::new("absent");
    let store = KeyStore::open(KeyStoreConfig::new(dir.file())).expect("open");
    let gw = scope("CN=gw");
    assert_eq!(
        store.lookup(&gw, &explicit("nope")).await.expect("lookup"),
        None
    );
    assert!(store.is_empty().expect("is_empty"));
    assert_eq!(store.high_water_lsn(), 0);
}

/// Every lookup right after its put finds it, whether the writer has
/// committed it yet or not (the unit test `lookup_sees_put_held_in_queue`
/// holds the writer to make the uncommitted case certain).
#[tokio::test]
async fn lookup_sees_queued_puts() {
    let dir = TempDir::new("queued");
    let store = KeyStore::open(KeyStoreConfig::new(dir.file())).expect("open");
    let gw = scope("CN=gw");
    let mut seen_pending = 0;
    for i in 0..2_000u64 {
        let r = record(&gw, explicit(&format!("q-{i}")), i + 1, 1_000 + i);
        store.put(r.clone()).expect("put");
        if store.pending() > 0 {
            seen_pending += 1;
        }
        let got = store.lookup(&r.scope, &r.key).await.expect("lookup");
        assert_eq!(got, Some((r.stored, r.completed_unix_ms)), "key {i}");
    }
    store.flush().await.expect("flush");
    assert_eq!(store.pending(), 0);
    assert_eq!(store.len().expect("len"), 2_000);
    println!("puts still pending right after put: {seen_pending} of 2000");
}

/// A store whose writer commits at most every 10 s unless pushed.
fn slow_commits(dir: &TempDir, max_batch: usize) -> KeyStoreConfig {
    let mut cfg = KeyStoreConfig::new(dir.file());
    cfg.commit_interval = std::time::Duration::from_secs(10);
    cfg.max_batch = max_batch;
    cfg
}

#[tokio::test]
async fn commit_interval_holds_small_batches_but_reads_see_them_and_flush_commits() {
    let dir = TempDir::new("interval");
    let store = KeyStore::open(slow_commits(&dir, 1_000)).expect("open");
    let gw = scope("CN=gw");
    let records: Vec<KeyRecord> = (0..3u64)
        .map(|i| record(&gw, explicit(&format!("i-{i}")), i + 1, 1_000 + i))
        .collect();
    for r in &records {
        store.put(r.clone()).expect("put");
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Not committed yet (the interval is 10 s), yet every key is answered.
    assert_eq!(store.len().expect("len"), 0);
    assert_eq!(store.pending(), 3);
    for r in &records {
        let got = store.lookup(&r.scope, &r.key).await.expect("lookup");
        assert_eq!(got, Some((r.stored.clone(), r.completed_unix_ms)));
    }
    // flush does not wait for the interval.
    let started = Instant::now();
    store.flush().await.expect("flush");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "flush waited for the interval"
    );
    assert_eq!(store.len().expect("len"), 3);
    assert_eq!(store.pending(), 0);
    assert_eq!(store.high_water_lsn(), 3);
}

#[tokio::test]
async fn a_full_batch_is_committed_before_the_interval() {
    let dir = TempDir::new("fullbatch");
    let store = KeyStore::open(slow_commits(&dir, 4)).expect("open");
    let gw = scope("CN=gw");
    for i in 0..4u64 {
        store
            .put(record(&gw, explicit(&format!("b-{i}")), i + 1, 1_000))
            .expect("put");
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while store.len().expect("len") < 4 {
        assert!(
            Instant::now() < deadline,
            "a full batch waited for the interval"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // A fifth put alone waits for the interval again.
    store
        .put(record(&gw, explicit("b-4"), 5, 1_000))
        .expect("put");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(store.len().expect("len"), 4);
    assert_eq!(store.pending(), 1);
}

#[tokio::test]
async fn shutdown_commits_what_the_interval_held() {
    let dir = TempDir::new("intervaldrop");
    let gw = scope("CN=gw");
    let r = record(&gw, explicit("held"), 42, 1_000);
    {
        let store = KeyStore::open(slow_commits(&dir, 1_000)).expect("open");
        store.put(r.clone()).expect("put");
        assert_eq!(store.len().expect("len"), 0);
    }
    let store = KeyStore::open(KeyStoreConfig::new(dir.file())).expect("reopen");
    assert_eq!(store.len().expect("len"), 1);
    assert_eq!(store.high_water_lsn(), 42);
    let got = store.lookup(&r.scope, &r.key).await.expect("lookup");
    assert_eq!(got, Some((r.stored, r.completed_unix_ms)));
}

#[tokio::test]
async fn a_store_of_the_old_fingerprint_format_is_set_aside_and_started_afresh() {
    let dir = TempDir::new("format1");
    let gw = scope("CN=gw");
    let r = record(&gw, explicit("old"), 9, 1_000);
    {
        let store = KeyStore::open(KeyStoreConfig::new(dir.file())).expect("open");
        store.put(r.clone()).expect("put");
        store.flush().await.expect("flush");
    }
    // Make it a format-1 store (version 1 fingerprints), as an older switch
    // left it.
    {
        let db = redb::Database::open(dir.file()).expect("redb open");
        let tx = db.begin_write().expect("write");
        {
            let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
            let mut meta = tx.open_table(meta).expect("meta");
            meta.insert("format", 1).expect("insert");
        }
        tx.commit().expect("commit");
    }
    let store = KeyStore::open(KeyStoreConfig::new(dir.file())).expect("reopen");
    // Nothing of the old store is trusted: low water 0 makes the start-up
    // catch-up replay the whole journal into the new one.
    assert_eq!(store.len().expect("len"), 0);
    assert_eq!(store.low_water_lsn(), 0);
    assert_eq!(store.high_water_lsn(), 0);
    assert_eq!(store.lookup(&r.scope, &r.key).await.expect("lookup"), None);
    let aside = dir.0.join("keys.redb.format1");
    assert!(
        aside.exists(),
        "the old store is kept aside for the operator"
    );
    store.put(r.clone()).expect("put");
    store.flush().await.expect("flush");
    drop(store);
    let store = KeyStore::open(KeyStoreConfig::new(dir.file())).expect("reopen again");
    assert_eq!(
        store.len().expect("len"),
        1,
        "a current store is not set aside"
    );
}

#[test]
fn a_store_of_an_unknown_future_format_is_refused() {
    let dir = TempDir::new("format9");
    drop(KeyStore::open(KeyStoreConfig::new(dir.file())).expect("open"));
    {
        let db = redb::Database::open(dir.file()).expect("redb open");
        let tx = db.begin_write().expect("write");
        {
            let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
            tx.open_table(meta)
                .expect("meta")
                .insert("format", 9)
                .expect("insert");
        }
        tx.commit().expect("commit");
    }
    assert!(matches!(
        KeyStore::open(KeyStoreConfig::new(dir.file())),
        Err(KeyStoreError::Corrupt(m)) if m.contains("format")
    ));
}

#[test]
fn commit_interval_past_the_limit_is_refused() {
    let dir = TempDir::new("intervalcfg");
    let mut cfg = KeyStoreConfig::new(dir.file());
    cfg.commit_interval =
        fps_switch::keystore::MAX_COMMIT_INTERVAL + std::time::Duration::from_millis(1);
    assert!(matches!(
        KeyStore::open(cfg),
        Err(KeyStoreError::InvalidConfig(m)) if m.contains("commit_interval")
    ));
}

#[tokio::test]
async fn reopen_keeps_keys_and_high_water() {
    let dir = TempDir::new("reopen");
    let gw = scope("CN=gw");
    let records: Vec<KeyRecord> = (0..500u64)
        .map(|i| {
            let key = if i % 2 == 0 {
                explicit(&format!("r-{i}"))
            } else {
                derived(u32::try_from(i).expect("small"))
            };
            record(&gw, key, 1_000 + i, 5_000 + i)
        })
        .collect();
    {
        let store = KeyStore::open(KeyStoreConfig::new(dir.file())).expect("open");
        for r in &records {
            store.put(r.clone()).expect("put");
        }
        store.flush().await.expect("flush");
        assert_eq!(store.high_water_lsn(), 1_499);
    }
    let store = KeyStore::open(KeyStoreConfig::new(dir.file())).expect("reopen");
    assert_eq!(store.high_water_lsn(), 1_499);
    assert_eq!(store.len().expect("len"), 500);
    for r in &records {
        let got = store.lookup(&r.scope, &r.key).await.expect("lookup");
        assert_eq!(got, Some((r.stored.clone(), r.completed_unix_ms)));
    }
    // A lower lsn never moves the mark back.
    store
        .put(record(&gw, explicit("late"), 7, 9_999))
        .expect("put");
    store.flush().await.expect("flush");
    assert_eq!(store.high_water_lsn(), 1_499);
}

#[tokio::test]
async fn expire_removes_only_old_keys() {
    let dir = TempDir::new("expire");
    let store = KeyStore::open(KeyStoreConfig::new(dir.file())).expect("open");
    let gw = scope("CN=gw");
    for i in 0..100u64 {
        store
            .put(record(
                &gw,
                explicit(&format!("e-{i}")),
                i + 1,
                10_000 + i * 10,
            ))
            .expect("put");
    }
    store.flush().await.expect("flush");

    // Keys completed before 10_500 are e-0 ..= e-49; at most 20 per call.
    assert_eq!(store.expire(10_500, 20).expect("expire"), 20);
    assert_eq!(store.expire(10_500, 1_000).expect("expire"), 30);
    assert_eq!(store.expire(10_500, 1_000).expect("expire"), 0);
    assert_eq!(store.len().expect("len"), 50);
    for i in 0..100u64 {
        let got = store
            .lookup(&gw, &explicit(&format!("e-{i}")))
            .await
            .expect("lookup");
        assert_eq!(got.is_some(), i >= 50, "key {i}");
    }

    // A key stored again with a later completion time survives an expiry
    // of its old time (its old index record is gone).
    store
        .put(record(&gw, explicit("e-60"), 500, 99_000))
        .expect("put");
    store.flush().await.expect("flush");
    assert_eq!(store.expire(11_000, 1_000).expect("expire"), 49);
    let kept = store.lookup(&gw, &explicit("e-60")).await.expect("lookup");
    assert_eq!(kept.map(|(_, t)| t), Some(99_000));
    assert_eq!(store.len().expect("len"), 1);
    assert_eq!(store.expire(u64::MAX, 0).expect("expire"), 0);
}

#[tokio::test]
async fn corrupt_value_is_reported() {
    let dir = TempDir::new("corrupt");
    let gw = scope("CN=gw");
    let good = record(&gw, explicit("good"), 1, 1);
    let bad = record(&gw, explicit("secret-key-777"), 2, 2);
    {
        let store = KeyStore::open(KeyStoreConfig::new(dir.file())).expect("open");
        store.put(good.clone()).expect("put");
        store.put(bad.clone()).expect("put");
        store.flush().await.expect("flush");
    }
    // Damage one value behind the store's back, through redb itself.
    {
        let db = redb::Database::create(dir.file()).expect("redb open");
        let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(KEYS_TABLE);
        let mut entry = Vec::new();
        format::encode_key(&bad.scope, &bad.key, &mut entry);
        let tx = db.begin_write().expect("begin");
        {
            let mut t = tx.open_table(table).expect("table");
            let old = t
                .insert(entry.as_slice(), &[1u8, 2, 3][..])
                .expect("insert");
            assert!(old.is_some(), "the test must overwrite the stored value");
        }
        tx.commit().expect("commit");
    }
    let store = KeyStore::open(KeyStoreConfig::new(dir.file())).expect("reopen");
    assert!(matches!(
        store.lookup(&bad.scope, &bad.key).await,
        Err(KeyStoreError::Corrupt(_))
    ));
    assert_eq!(
        store.lookup(&good.scope, &good.key).await.expect("lookup"),
        Some((good.stored.clone(), good.completed_unix_ms))
    );
    // Error text carries no key material.
    let msg = store
        .lookup(&bad.scope, &bad.key)
        .await
        .expect_err("corrupt")
        .to_string();
    assert!(!msg.contains("secret"), "{msg}");
    // The damaged entry can still be expired (it is in the journal).
    assert_eq!(store.expire(3, 10).expect("expire"), 2);
}

#[tokio::test]
async fn garbage_file_is_an_error_not_a_panic() {
    let dir = TempDir::new("garbage");
    std::fs::write(dir.file(), vec![0xA5u8; 16 * 1024]).expect("write");
    let err = KeyStore::open(KeyStoreConfig::new(dir.file())).expect_err("garbage");
    assert!(matches!(
        err,
        KeyStoreError::Io(_) | KeyStoreError::Corrupt(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_and_lookups() {
    const TASKS: u64 = 16;
    const PER_TASK: u64 = 500;
    let dir = TempDir::new("concurrent");
    let mut cfg = KeyStoreConfig::new(dir.file());
    cfg.max_batch = 64; // many small batches: more interleaving with readers
    let store = Arc::new(KeyStore::open(cfg).expect("open"));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let gw = scope(&format!("CN=gw-{}", t % 4));
            for i in 0..PER_TASK {
                let lsn = t * PER_TASK + i + 1;
                let r = record(&gw, explicit(&format!("t{t}-k{i}")), lsn, lsn);
                store.put(r.clone()).expect("put");
                let got = store.lookup(&r.scope, &r.key).await.expect("lookup");
                assert_eq!(got, Some((r.stored, r.completed_unix_ms)));
                // Look up a key of a neighbour task: found or absent, never an error.
                let other = explicit(&format!("t{}-k{i}", (t + 1) % TASKS));
                store.lookup(&gw, &other).await.expect("lookup other");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    store.flush().await.expect("flush");
    assert_eq!(store.len().expect("len"), TASKS * PER_TASK);
    assert_eq!(store.high_water_lsn(), TASKS * PER_TASK);
}

/// Throughput and latency of puts and lookups; run with
/// `cargo test --release -p fps-switch --test keystore -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn measure_put_and_lookup() {
    const N: u64 = 100_000;
    let dir = TempDir::new("measure");
    let store = Arc::new(KeyStore::open(KeyStoreConfig::new(dir.file())).expect("open"));
    let gw = scope("CN=gateway-1,O=Example Payments Ltd");
    let records: Vec<KeyRecord> = (0..N)
        .map(|i| {
            let mut r = record(&gw, explicit(&format!("order-{i:012}")), i + 1, 1_000 + i);
            r.stored.outcome = full_outcome();
            r
        })
        .collect();

    // Puts: enqueue at the caller's pace, then wait for every commit.
    let start = Instant::now();
    let mut put_ns = Vec::with_capacity(N as usize);
    let mut refused = 0u64;
    for r in &records {
        let t = Instant::now();
        loop {
            match store.put(r.clone()) {
                Ok(()) => break,
                Err(KeyStoreError::Full) => {
                    refused += 1;
                    tokio::task::yield_now().await;
                }
                Err(e) => panic!("put: {e}"),
            }
        }
        put_ns.push(t.elapsed().as_nanos() as u64);
    }
    let enqueued = start.elapsed();
    store.flush().await.expect("flush");
    let committed = start.elapsed();
    println!(
        "puts: {N} enqueued in {:.1} ms, all committed (durable) after {:.1} ms = {:.0} puts/s; \
         put() call p50 {} ns p99 {} ns; Full retries {refused}",
        enqueued.as_secs_f64() * 1e3,
        committed.as_secs_f64() * 1e3,
        N as f64 / committed.as_secs_f64(),
        percentile(&mut put_ns, 50.0),
        percentile(&mut put_ns, 99.0),
    );

    // Lookups, one at a time through the async API (spawn_blocking per read).
    let mut ns = Vec::with_capacity(N as usize);
    let start = Instant::now();
    for i in 0..N {
        let r = &records[((i * 7_919) % N) as usize];
        let t = Instant::now();
        let got = store.lookup(&r.scope, &r.key).await.expect("lookup");
        ns.push(t.elapsed().as_nanos() as u64);
        assert!(got.is_some());
    }
    let took = start.elapsed();
    println!(
        "lookup (async, sequential): {N} in {:.1} ms = {:.0}/s; p50 {} ns p99 {} ns p99.9 {} ns",
        took.as_secs_f64() * 1e3,
        N as f64 / took.as_secs_f64(),
        percentile(&mut ns, 50.0),
        percentile(&mut ns, 99.0),
        percentile(&mut ns, 99.9),
    );

    // The same reads on the calling thread (no blocking-pool hop).
    let mut ns = Vec::with_capacity(N as usize);
    let start = Instant::now();
    for i in 0..N {
        let r = &records[((i * 7_919) % N) as usize];
        let t = Instant::now();
        let got = store.lookup_blocking(&r.scope, &r.key).expect("lookup");
        ns.push(t.elapsed().as_nanos() as u64);
        assert!(got.is_some());
    }
    let took = start.elapsed();
    println!(
        "lookup_blocking (sequential): {N} in {:.1} ms = {:.0}/s; p50 {} ns p99 {} ns",
        took.as_secs_f64() * 1e3,
        N as f64 / took.as_secs_f64(),
        percentile(&mut ns, 50.0),
        percentile(&mut ns, 99.0),
    );

    // Misses (the common case once memory is full: a new key).
    let start = Instant::now();
    for i in 0..N {
        let got = store
            .lookup(&gw, &explicit(&format!("absent-{i}")))
            .await
            .expect("lookup");
        assert!(got.is_none());
    }
    let took = start.elapsed();
    println!(
        "lookup misses (async, sequential): {:.0}/s",
        N as f64 / took.as_secs_f64()
    );

    // Concurrent lookups: 64 tasks on 2 workers.
    let start = Instant::now();
    let records = Arc::new(records);
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let store = Arc::clone(&store);
        let records = Arc::clone(&records);
        tasks.push(tokio::spawn(async move {
            for i in 0..(N / 64) {
                let r = &records[((t * 1_000_003 + i * 7_919) % N) as usize];
                assert!(store
                    .lookup(&r.scope, &r.key)
                    .await
                    .expect("lookup")
                    .is_some());
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let took = start.elapsed();
    println!(
        "lookup (async, 64 concurrent tasks): {:.0}/s",
        (N / 64 * 64) as f64 / took.as_secs_f64()
    );
    let bytes = std::fs::metadata(dir.file()).map_or(0, |m| m.len());
    println!(
        "file: {} keys, {:.1} MiB ({:.0} bytes/key)",
        store.len().expect("len"),
        bytes as f64 / (1024.0 * 1024.0),
        bytes as f64 / N as f64
    );

    // Expiry of every key, oldest first, in calls of at most 65,536.
    let start = Instant::now();
    let mut expired = 0;
    loop {
        let n = store.expire(u64::MAX, 65_536).expect("expire");
        if n == 0 {
            break;
        }
        expired += n;
    }
    let took = start.elapsed();
    assert_eq!(expired as u64, N);
    println!(
        "expire: {N} keys in {:.1} ms = {:.0}/s",
        took.as_secs_f64() * 1e3,
        N as f64 / took.as_secs_f64()
    );
}

fn percentile(samples: &mut [u64], p: f64) -> u64 {
    samples.sort_unstable();
    let idx = ((samples.len() as f64 - 1.0) * p / 100.0).round() as usize;
    samples.get(idx).copied().unwrap_or(0)
}
