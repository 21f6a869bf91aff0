//! Scheduling of the switch's own background threads.
//!
//! The request path runs on the async runtime's workers. Work that can
//! wait (the key store's batched B-tree commits and its filter scan at
//! start, metrics upkeep, the journal's segment rotation with
//! `fsync = "never"`) runs on threads of its own, and on a busy core those
//! threads must not take the core from a worker for a whole scheduler
//! slice: a key-store commit of a few thousand keys ran 4-6 ms at a
//! stretch, and every request arriving meanwhile waited for it (perf sched
//! at 18,000 TPS, one core). Lowered to [`BACKGROUND_NICE`], such a thread
//! gets about a tenth of the core while a worker also wants it (kernel
//! weights 110 vs 1024), and all of what a worker leaves idle. It can still
//! hold the core for a while: the key-store writer ran up to 1.5 ms at a
//! stretch at 11,000 TPS (perf sched, 2026-11-24; docs/performance-log.md).

/// Nice value added to a background thread (Linux nice is per thread).
pub const BACKGROUND_NICE: i32 = 10;

/// Lower the calling thread's priority to background. Best effort: where
/// the system refuses, the thread runs at normal priority.
pub(crate) fn run_in_background() {
    if let Err(e) = rustix::process::nice(BACKGROUND_NICE) {
        tracing::debug!(error = %e, "cannot lower a background thread's priority");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The nice value of thread `tid` of this process (`/proc` stat field
    /// 19); None once the thread is gone.
    pub(crate) fn nice_of(tid: &str) -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
        // The fields after the command name, which is in parentheses.
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split(' ').nth(16)?.parse().ok()
    }

    /// Thread ids of this process's threads named `name`.
    pub(crate) fn threads_named(name: &str) -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|e| {
                let tid = e.ok()?.file_name().into_string().ok()?;
                let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
                (comm.trim_end() == name).then_some(tid)
            })
            .collect()
    }

    pub(crate) fn my_tid() -> String {
        rustix::thread::gettid().as_raw_nonzero().to_string()
    }

    /// The nice value a thread lowered by [`run_in_background`] from this
    /// thread's has.
    pub(crate) fn lowered_from_mine() -> i32 {
        (nice_of(&my_tid()).unwrap() + BACKGROUND_NICE).min(19)
    }

    /// Wait (at most 5 s, then panic) until at least one thread is named
    /// `name` and every thread so named has nice value `nice`. A thread
    /// names itself once it runs, and one gone meanwhile is no finding;
    /// other tests' threads of the same name must agree too.
    pub(crate) fn wait_until_all_named_have_nice(name: &str, nice: i32) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let named = threads_named(name);
            let wrong: Vec<_> = named
                .iter()
                .filter(|tid| nice_of(tid).is_some_and(|n| n != nice))
                .collect();
            if !named.is_empty() && wrong.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "threads named {name}: {named:?}, not at nice {nice}: {wrong:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn only_the_calling_thread_is_lowered() {
        let before = nice_of(&my_tid()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            run_in_background();
            tx.send(my_tid()).unwrap();
            let _ = wait.recv();
        });
        let background = rx.recv().unwrap();
        assert_eq!(nice_of(&background), Some(lowered_from_mine()));
        assert_eq!(nice_of(&my_tid()), Some(before));
        drop(done);
        t.join().unwrap();
    }
}
