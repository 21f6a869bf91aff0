//! Journal benchmarks: why the journal is an append-only log and not an
//! embedded store.
//!
//! - `journal/file_batch_256_tasks`: 200-byte records appended by 256
//!   concurrent tokio tasks, each awaiting its record's `Durable` before the
//!   next (as the pipeline does per transaction), `fsync = batch`.
//! - `journal/file_always_256_tasks`: the same with `fsync = always`
//!   (one fdatasync per record), for contrast.
//! - `journal/redb_txn_{256,4096}`: redb inserting the same records
//!   (key: u64 sequence, value: the record) in write transactions of 256
//!   or 4096 records, each commit durable (redb's default). One writer, no
//!   coordination: redb's best case.
//!
//! Files go under the workspace's `target/journal-bench/` (a real disk,
//! not tmpfs) and are removed afterwards. Throughput is records/s.
//!
//! `cargo bench -p fps-benches --features switch --bench journal`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fps_switch::journal::{FileJournal, FsyncMode, Journal, JournalConfig, Lsn};
use redb::{Database, TableDefinition};

/// Size of one journal record, about one transaction state change.
const RECORD_BYTES: usize = 200;
/// Concurrent appenders, about the in-flight transactions of a busy switch.
const TASKS: usize = 256;
/// Appends per task in one `batch` iteration.
const BATCH_RECORDS_PER_TASK: u64 = 16;
/// Appends per task in one `always` iteration (each costs an fdatasync).
const ALWAYS_RECORDS_PER_TASK: u64 = 1;
/// Records per redb write transaction, small and large.
const REDB_TXN_RECORDS: [u64; 2] = [256, 4096];
/// Tokio worker threads: the machine has 2 cores, the writer thread needs one.
const WORKER_THREADS: usize = 2;

const REDB_TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");

fn bench_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("journal-bench")
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = bench_root().join(name);
    // A leftover of an interrupted run: start empty.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the bench directory under target/");
    dir
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Append `per_task` records from each of `TASKS` tasks; return the time.
fn run_appends(
    rt: &tokio::runtime::Runtime,
    journal: &Arc<FileJournal>,
    per_task: u64,
) -> Duration {
    let record = vec![0x5au8; RECORD_BYTES];
    rt.block_on(async {
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(TASKS);
        for _ in 0..TASKS {
            let journal = Arc::clone(journal);
            let record = record.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..per_task {
                    let durable = journal.append(&record).expect("queue has room");
                    durable.await.expect("durable");
                }
            }));
        }
        for t in tasks {
            t.await.expect("appender task");
        }
        started.elapsed()
    })
}

fn file_journal(c: &mut Criterion, name: &str, fsync: FsyncMode, per_task: u64) {
    let dir = fresh_dir(name);
    let mut cfg = JournalConfig::new(&dir);
    cfg.fsync = fsync;
    let (journal, _) = FileJournal::open(cfg, &mut |_, _, _| {}).expect("open journal");
    let journal = Arc::new(journal);
    let rt = runtime();

    let mut group = c.benchmark_group("journal");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(TASKS as u64 * per_task));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let elapsed = run_appends(&rt, &journal, iters * per_task);
            // Keep the disk bounded: drop sealed segments as we go.
            let _ = journal.remove_segments_before(Lsn(u64::MAX));
            elapsed
        })
    });
    group.finish();

    drop(rt);
    if let Ok(journal) = Arc::try_unwrap(journal) {
        journal.close().expect("close journal");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn file_batch(c: &mut Criterion) {
    file_journal(
        c,
        "file_batch_256_tasks",
        FsyncMode::Batch,
        BATCH_RECORDS_PER_TASK,
    );
}

fn file_always(c: &mut Criterion) {
    file_journal(
        c,
        "file_always_256_tasks",
        FsyncMode::Always,
        ALWAYS_RECORDS_PER_TASK,
    );
}

fn redb_batched(c: &mut Criterion) {
    let record = vec![0x5au8; RECORD_BYTES];
    for txn_records in REDB_TXN_RECORDS {
        let name = format!("redb_txn_{txn_records}");
        let dir = fresh_dir(&name);
        let db = Database::create(dir.join("journal.redb")).expect("create redb");
        let mut next_key = 0u64;

        let mut group = c.benchmark_group("journal");
        group.sample_size(10);
        group.warm_up_time(Duration::from_secs(2));
        group.measurement_time(Duration::from_secs(10));
        group.throughput(Throughput::Elements(txn_records));
        group.bench_function(name.as_str(), |b| {
            b.iter(|| {
                let txn = db.begin_write().expect("begin");
                {
                    let mut table = txn.open_table(REDB_TABLE).expect("table");
                    for _ in 0..txn_records {
                        next_key += 1;
                        table.insert(next_key, record.as_slice()).expect("insert");
                    }
                }
                txn.commit().expect("commit");
            })
        });
        group.finish();
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

criterion_group!(benches, file_batch, file_always, redb_batched);
criterion_main!(benches);
