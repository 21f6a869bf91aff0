//! The tokio runtime the daemon runs on, and why one thread gets a
//! different scheduler.
//!
//! With several threads the switch uses tokio's work-stealing scheduler.
//! With one (the default when the process may run on one CPU, as in the
//! relay benchmark, `taskset -c 0`) it uses the current-thread scheduler:
//!
//! - The work-stealing scheduler runs a task woken by the running task
//!   next, ahead of every task already queued (its "LIFO slot"). When a
//!   request task hands its frame to a connection's writer task, that
//!   writer runs at once and writes the one frame. Under load, when one
//!   read brings many requests and one bank read many answers, every frame
//!   still left in a write of its own: 2.00 `sendto` per transaction at
//!   30,000 TPS, where each loopback send costs the one core about 6 us.
//! - The current-thread scheduler runs tasks in the order they were woken,
//!   so the writer runs after the request tasks already queued and sends
//!   their frames together ([`write_coalesced`](crate::conn)): 1.5-1.7
//!   `sendto` per transaction at the same rate, about 4% less CPU per
//!   transaction, and p99 19-25 ms instead of 58-360 ms at 30,000 TPS on the
//!   project's 2-vCPU VM (docs/performance-log.md, "Relay baseline").
//! - With one worker there is nothing to steal from, and the current-thread
//!   scheduler does less bookkeeping per task.
//!
//! On a core of its own the single thread may also busy-poll instead of
//! sleeping when idle ([`busy_poll`], `switch.busy_poll`).

use std::io;
use std::num::NonZeroUsize;

/// Most worker threads a config may ask for.
pub const MAX_WORKER_THREADS: usize = 1024;

/// Which scheduler runs the switch's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// One thread, tasks run in the order they were woken.
    CurrentThread,
    /// Work stealing across this many threads (at least 2).
    MultiThread(usize),
}

impl Scheduler {
    /// The scheduler for `configured` threads (`switch.worker_threads`),
    /// or, when unset, for the `available` CPUs.
    pub fn choose(configured: Option<usize>, available: usize) -> Scheduler {
        match configured.unwrap_or(available).max(1) {
            1 => Scheduler::CurrentThread,
            n => Scheduler::MultiThread(n),
        }
    }

    /// The scheduler for `configured` threads on this process's CPUs (its
    /// affinity mask and cgroup quota, as the standard library reads them).
    pub fn for_this_process(configured: Option<usize>) -> Scheduler {
        let available = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        Scheduler::choose(configured, available)
    }

    /// Builds the runtime, timers and I/O enabled.
    pub fn build(self) -> io::Result<tokio::runtime::Runtime> {
        match self {
            Scheduler::CurrentThread => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            Scheduler::MultiThread(n) => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .enable_all()
                .build(),
        }
    }
}

impl std::fmt::Display for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scheduler::CurrentThread => f.write_str("current_thread (1 thread)"),
            Scheduler::MultiThread(n) => write!(f, "multi_thread ({n} threads)"),
        }
    }
}

/// The busy-polling loop (`switch.busy_poll`), spawned on the
/// current-thread runtime: while it runs, the runtime's thread never
/// blocks in `epoll_wait`.
///
/// Each turn hands its wake-up to tokio's scheduler, which defers it until
/// the run queue is empty and the I/O driver has been polled with a zero
/// timeout (`yield_now`); with this task always waiting to run again, the
/// scheduler never parks with a timeout, so every idle turn is one
/// non-blocking poll. Before each turn the thread offers the core to any
/// other runnable thread (`sched_yield`): the HSM pool's workers and the
/// key-store writer share it, and a spinning thread that did not step aside
/// would hold them off until the kernel's next tick (measured: with a MAC
/// on every message and two switches on one core, 9,000 TPS failed with p99
/// 0.1-1.8 s without the yield and passed with p99 1.7 ms with it).
///
/// What it buys (docs/performance-log.md, "Busy polling"): no sleep and wake-up per idle
/// moment. On the project's VM an idle vCPU halts, and waking it costs the
/// waker an IPI and the woken thread tens of microseconds. What it costs:
/// the core is always busy, so only for a switch with a core of its own,
/// and not one it shares with an HSM pool: even with the yield, a MAC on
/// every message failed at 9,000 TPS while busy polling (same place).
pub async fn busy_poll() {
    loop {
        std::thread::yield_now();
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use bytes::BytesMut;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::sync::mpsc;

    use super::*;

    #[test]
    fn one_thread_gets_the_current_thread_scheduler() {
        assert_eq!(Scheduler::choose(None, 1), Scheduler::CurrentThread);
        assert_eq!(Scheduler::choose(Some(1), 8), Scheduler::CurrentThread);
        assert_eq!(Scheduler::choose(None, 2), Scheduler::MultiThread(2));
        assert_eq!(Scheduler::choose(Some(4), 1), Scheduler::MultiThread(4));
        assert_eq!(Scheduler::choose(Some(0), 8), Scheduler::CurrentThread);
    }

    #[test]
    fn the_runtimes_built_have_the_flavour_and_threads_asked_for() {
        use tokio::runtime::RuntimeFlavor;
        let rt = Scheduler::CurrentThread.build().unwrap();
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let rt = Scheduler::MultiThread(3).build().unwrap();
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(rt.metrics().num_workers(), 3);
    }

    /// Counts the writes it gets; reads end at once (`split` wants both).
    struct CountingWriter {
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for CountingWriter {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for CountingWriter {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// `tasks` request tasks, all woken in one scheduler pass, each hand a
    /// frame to one connection's writer task; returns how many writes the
    /// writer made.
    fn writes_for_frames_of_one_pass(scheduler: Scheduler, tasks: u8) -> usize {
        let rt = scheduler.build().unwrap();
        rt.block_on(async move {
            let writes = Arc::new(AtomicUsize::new(0));
            let (frames_tx, frames_rx) = mpsc::channel::<BytesMut>(64);
            let (_, wr) = tokio::io::split(CountingWriter {
                writes: writes.clone(),
            });
            let writer = tokio::spawn(crate::conn::write_loop(frames_rx, wr));
            // The request tasks wait on one gate, so opening it wakes them
            // all in one pass, as one read of many requests would.
            let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
            let mut requests = Vec::new();
            for i in 0..tasks {
                let frames = frames_tx.clone();
                let mut gate = gate_rx.clone();
                requests.push(tokio::spawn(async move {
                    let _ = gate.wait_for(|open| *open).await;
                    frames.send(BytesMut::from(&[i; 4][..])).await.unwrap();
                }));
            }
            tokio::task::yield_now().await;
            gate_tx.send(true).unwrap();
            for r in requests {
                r.await.unwrap();
            }
            drop(frames_tx);
            writer.await.unwrap();
            writes.load(Ordering::Relaxed)
        })
    }

    /// This thread's voluntary context switches: each is a block (here: in
    /// `epoll_wait`); a `sched_yield` that lets another thread run counts
    /// as involuntary.
    #[cfg(target_os = "linux")]
    fn voluntary_switches() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Runs 20 rounds of a 1 ms timer then a TCP echo on a current-thread
    /// runtime (this thread), with or without the busy-poll task; returns
    /// how often the thread blocked.
    #[cfg(target_os = "linux")]
    fn blocks_over_timers_and_io(busy: bool) -> u64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = Scheduler::CurrentThread.build().unwrap();
        let (listener, addr) = rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            (l, a)
        });
        // The echo peer on a thread of its own, so only the client's side of
        // each round trip runs on the runtime's thread.
        let peer = std::thread::spawn(move || {
            let rt = Scheduler::CurrentThread.build().unwrap();
            rt.block_on(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4];
                while s.read_exact(&mut buf).await.is_ok() {
                    s.write_all(&buf).await.unwrap();
                }
            });
        });
        let before = voluntary_switches();
        let started = std::time::Instant::now();
        rt.block_on(async move {
            let spinner = busy.then(|| tokio::spawn(busy_poll()));
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            for i in 0..20u32 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                s.write_all(&i.to_be_bytes()).await.unwrap();
                let mut back = [0u8; 4];
                s.read_exact(&mut back).await.unwrap();
                assert_eq!(u32::from_be_bytes(back), i, "the echo came back");
            }
            if let Some(spinner) = spinner {
                spinner.abort();
            }
        });
        let blocked = voluntary_switches() - before;
        // The timers still fired on time's side: 20 sleeps of 1 ms.
        assert!(started.elapsed() >= std::time::Duration::from_millis(20));
        drop(rt);
        peer.join().unwrap();
        blocked
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_busy_polling_thread_serves_timers_and_io_without_ever_blocking() {
        // Without busy polling the thread sleeps in epoll_wait for every
        // timer and every answer: at least once per round.
        let sleeping = blocks_over_timers_and_io(false);
        assert!(sleeping >= 20, "{sleeping} blocks without busy polling");
        // With it, never (a little room for a page fault that must wait
        // for a lock in the kernel).
        let polling = blocks_over_timers_and_io(true);
        assert!(polling <= 2, "{polling} blocks while busy polling");
    }

    #[test]
    fn frames_of_tasks_woken_together_leave_in_one_write_on_one_thread() {
        assert_eq!(
            writes_for_frames_of_one_pass(Scheduler::CurrentThread, 16),
            1
        );
    }
}
