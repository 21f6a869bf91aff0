//! Inline sessions (`inline_sessions`): HSM sessions a caller uses on its
//! own thread, so that an operation costs no thread hand-off.
//!
//! Handing a request to a worker and its reply back wakes a thread each
//! way. On a switch pinned to one core that is two context switches per
//! operation, about 15 us each on this project's VM
//! (`fps-benches --bin wake-latency`) against 7 us for a SoftHSM2 HMAC
//! itself: the hand-offs, not the token, then bound the switch's rate with a
//! MAC on every message. An inline session is a session like a worker's
//! (opened and logged in at start, its own key-version view), kept behind a
//! mutex instead of a thread: a caller that can lock one without waiting
//! ([`InlineSessions::try_run`]) runs its operation there and then.
//!
//! Nothing else changes for the caller. When every inline session is in
//! use (another thread holds it) or down, the request goes to the worker
//! pool as usual, so a busy or broken inline session never makes a caller
//! wait on a lock. A session lost in the middle of an operation (closed
//! handle, device error, token removed) is dropped and the operation is
//! handed to the pool, whose worker retries it (every operation here is
//! idempotent); the inline session is reopened off the caller's thread, by
//! a short-lived thread with the pool's exponential backoff, so a login
//! never blocks an async runtime.
//!
//! Only for tokens whose operations take microseconds in process (SoftHSM2,
//! in-process software tokens): the caller's thread is blocked for the
//! operation, and on an async runtime every task of that thread with it.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::metrics::WorkerMetrics;
use crate::pool::{execute, Backoff, Engine, EngineFactory, Reply, Scratch, Shared, Work};
use crate::{metrics, HsmError};

/// The inline sessions of one [`crate::Hsm`].
pub(crate) struct InlineSessions {
    slots: Arc<[Slot]>,
    factory: Arc<dyn EngineFactory>,
    shared: Arc<Shared>,
    /// Set when the [`crate::Hsm`] stops: reopening threads give up.
    stop: Arc<Stop>,
    /// Threads reopening lost sessions (joined on drop).
    reopeners: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for InlineSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineSessions")
            .field("sessions", &self.slots.len())
            .finish_non_exhaustive()
    }
}

/// One inline session.
struct Slot {
    /// Its index among all the sessions (the workers' first): the factory
    /// opens it with this, so with `per_session` it has its own instance.
    index: usize,
    state: Mutex<SlotState>,
}

struct SlotState {
    /// `None` while the session is down.
    engine: Option<Box<dyn Engine>>,
    /// A thread is reopening the session.
    reopening: bool,
    scratch: Scratch,
    metrics: WorkerMetrics,
}

#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    signal: Condvar,
}

impl Stop {
    /// Waits up to `wait`; `true` if the sessions were stopped meanwhile.
    fn wait(&self, wait: Duration) -> bool {
        let stopped = lock(&self.stopped);
        let (stopped, _) = self
            .signal
            .wait_timeout_while(stopped, wait, |stopped| !*stopped)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *stopped
    }
}

/// Locks, ignoring poisoning: every holder leaves the state consistent
/// between statements (a panic inside an engine call is handled where the
/// session lock is taken, [`InlineSessions::try_run`]).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl InlineSessions {
    /// Opens `count` sessions on the calling thread (start-up errors such as
    /// a wrong PIN are returned here), numbered from `first_index`.
    pub(crate) fn open(
        factory: Arc<dyn EngineFactory>,
        shared: Arc<Shared>,
        first_index: usize,
        count: usize,
    ) -> Result<Self, HsmError> {
        let mut slots = Vec::with_capacity(count);
        for index in first_index..first_index + count {
            let engine = factory.open(index)?;
            slots.push(Slot {
                index,
                state: Mutex::new(SlotState {
                    engine: Some(engine),
                    reopening: false,
                    scratch: Scratch::default(),
                    metrics: WorkerMetrics::new(),
                }),
            });
        }
        for _ in 0..count {
            metrics::session_opened();
        }
        Ok(InlineSessions {
            slots: slots.into(),
            factory,
            shared,
            stop: Arc::default(),
            reopeners: Mutex::new(Vec::new()),
        })
    }

    /// Runs `work` on the first inline session that is free and up, on this
    /// thread; `None` when there is none (all in use or down) or the session
    /// was lost during the operation: the caller then hands `work` to the
    /// worker pool.
    pub(crate) fn try_run(&self, work: &Work) -> Option<Result<Reply, HsmError>> {
        for (position, slot) in self.slots.iter().enumerate() {
            let mut guard = match slot.state.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Poisoned(poisoned)) => {
                    // An engine call panicked: its session is in an unknown
                    // state, so it goes and is reopened.
                    let mut guard = poisoned.into_inner();
                    slot.state.clear_poison();
                    self.lose(position, &mut guard, "an operation panicked");
                    continue;
                }
            };
            let state = &mut *guard;
            let Some(engine) = state.engine.as_mut() else {
                if !state.reopening {
                    // The last reopening thread could not be started.
                    self.reopen_in_background(position, state);
                }
                continue;
            };
            let started = Instant::now();
            let result = execute(engine.as_mut(), &self.shared, work, &mut state.scratch);
            if let Err(HsmError::Unavailable { reason }) = &result {
                let reason = reason.clone();
                self.lose(position, state, &reason);
                return None;
            }
            state.metrics.outcome(
                work.key.mechanism(),
                work.job.label(),
                started.elapsed(),
                &result,
            );
            return Some(result);
        }
        None
    }

    /// Drops the session of slot `position` and starts reopening it.
    fn lose(&self, position: usize, state: &mut SlotState, why: &str) {
        if state.engine.take().is_some() {
            metrics::session_closed();
            tracing::warn!(error = %why, "inline hsm session lost; the pool takes its requests while it reopens");
        }
        if !state.reopening {
            self.reopen_in_background(position, state);
        }
    }

    fn reopen_in_background(&self, position: usize, state: &mut SlotState) {
        let slots = Arc::downgrade(&self.slots);
        let factory = Arc::clone(&self.factory);
        let stop = Arc::clone(&self.stop);
        let index = self.slots[position].index;
        let spawned = std::thread::Builder::new()
            .name(format!("fps-hsm-reopen-{index}"))
            .spawn(move || reopen(&slots, position, &*factory, &stop));
        match spawned {
            Ok(handle) => {
                state.reopening = true;
                let mut reopeners = lock(&self.reopeners);
                reopeners.retain(|h| !h.is_finished());
                reopeners.push(handle);
            }
            // Tried again by the next caller that finds the session down.
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a thread to reopen an inline hsm session")
            }
        }
    }
}

/// Reopens slot `position` with backoff until it succeeds or the sessions
/// stop.
fn reopen(slots: &Weak<[Slot]>, position: usize, factory: &dyn EngineFactory, stop: &Stop) {
    let mut backoff = Backoff::new();
    loop {
        let Some(all) = slots.upgrade() else {
            return;
        };
        let slot = &all[position];
        match factory.open(slot.index) {
            Ok(engine) => {
                let mut state = lock(&slot.state);
                state.engine = Some(engine);
                state.reopening = false;
                metrics::session_opened();
                metrics::session_reopen();
                tracing::info!("inline hsm session reopened");
                return;
            }
            Err(e) => {
                let wait = backoff.fail(Instant::now());
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "inline hsm session reopen failed");
                drop(all);
                if stop.wait(wait) {
                    return;
                }
            }
        }
    }
}

impl Drop for InlineSessions {
    fn drop(&mut self) {
        *lock(&self.stop.stopped) = true;
        self.stop.signal.notify_all();
        for handle in lock(&self.reopeners).drain(..) {
            let _ = handle.join();
        }
        for slot in self.slots.iter() {
            if lock(&slot.state).engine.take().is_some() {
                metrics::session_closed();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use bytes::Bytes;

    use super::*;
    use crate::pool::Job;
    use crate::testing::{fake_shared, FakeFactory};
    use crate::{KeyRef, Mechanism, Operation};

    /// Session index of the inline session in these tests (after one
    /// worker's, as `Hsm` numbers them).
    const INDEX: usize = 1;

    fn sessions(factory: &Arc<FakeFactory>, count: usize) -> InlineSessions {
        InlineSessions::open(
            Arc::clone(factory) as Arc<dyn EngineFactory>,
            fake_shared(),
            INDEX,
            count,
        )
        .unwrap()
    }

    fn work(message: &'static [u8]) -> Work {
        Work {
            job: Job::Crypto(Operation::Mac),
            key: KeyRef::new("k", Mechanism::HmacSha256).unwrap(),
            message: Bytes::from_static(message),
            expected: Bytes::new(),
        }
    }

    fn mac_of(result: Option<Result<Reply, HsmError>>) -> Option<Vec<u8>> {
        match result {
            Some(Ok(Reply::Bytes(tag))) => Some(tag),
            Some(other) => panic!("expected a MAC, got {other:?}"),
            None => None,
        }
    }

    /// Calls `try_run` until it runs inline (the session reopened), at most
    /// 10 s.
    fn until_inline(inline: &InlineSessions, message: &'static [u8]) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(tag) = mac_of(inline.try_run(&work(message))) {
                return tag;
            }
            assert!(Instant::now() < deadline, "inline session never reopened");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_free_session_runs_the_operation_on_the_callers_thread() {
        let factory = FakeFactory::new(0, 0);
        let inline = sessions(&factory, 1);
        assert_eq!(factory.opened_for.lock().unwrap().as_slice(), [INDEX]);
        for _ in 0..3 {
            assert_eq!(mac_of(inline.try_run(&work(b"abc"))), Some(b"cba".to_vec()));
        }
        let served = factory.served_by.lock().unwrap();
        assert_eq!(served.len(), 3);
        assert!(served
            .iter()
            .all(|&(index, thread)| index == INDEX && thread == std::thread::current().id()));
        // Errors of the request alone are answered inline, not retried.
        drop(served);
        assert!(matches!(
            inline.try_run(&work(b"bad")),
            Some(Err(HsmError::Pkcs11 { .. }))
        ));
    }

    /// A thread that takes the first inline session and holds it inside an
    /// operation until the factory's gate opens; returns once it is in.
    fn hold_first_session(
        factory: &FakeFactory,
        inline: &Arc<InlineSessions>,
    ) -> std::thread::JoinHandle<Option<Vec<u8>>> {
        let holder = {
            let inline = Arc::clone(inline);
            std::thread::spawn(move || mac_of(inline.try_run(&work(b"gate"))))
        };
        // The holder is inside the operation once the fake recorded it.
        while factory.served_by.lock().unwrap().is_empty() {
            std::thread::yield_now();
        }
        holder
    }

    #[test]
    fn a_session_in_use_leaves_the_request_to_the_pool_without_waiting() {
        let factory = FakeFactory::new(0, 0);
        let inline = Arc::new(sessions(&factory, 1));
        let holder = hold_first_session(&factory, &inline);
        assert_eq!(mac_of(inline.try_run(&work(b"abc"))), None);
        factory.gate.open();
        assert_eq!(holder.join().unwrap(), Some(b"etag".to_vec()));
        // Free again: inline again.
        assert_eq!(mac_of(inline.try_run(&work(b"abc"))), Some(b"cba".to_vec()));
    }

    #[test]
    fn the_second_session_serves_while_the_first_is_busy() {
        let factory = FakeFactory::new(0, 0);
        let inline = Arc::new(sessions(&factory, 2));
        let holder = hold_first_session(&factory, &inline);
        assert_eq!(mac_of(inline.try_run(&work(b"abc"))), Some(b"cba".to_vec()));
        let served: Vec<usize> = factory
            .served_by
            .lock()
            .unwrap()
            .iter()
            .map(|&(index, _)| index)
            .collect();
        assert_eq!(served, [INDEX, INDEX + 1]);
        factory.gate.open();
        assert_eq!(holder.join().unwrap(), Some(b"etag".to_vec()));
    }

    #[test]
    fn a_lost_session_hands_the_request_over_and_reopens_with_backoff() {
        let factory = FakeFactory::new(0, 0);
        let inline = sessions(&factory, 1);
        // The token goes away for two reopen attempts.
        factory.open_failures.store(2, Ordering::SeqCst);
        factory.fail_next.store(1, Ordering::SeqCst);
        // Lost during the operation: not answered here, the pool retries.
        assert_eq!(mac_of(inline.try_run(&work(b"abc"))), None);
        assert_eq!(factory.failed_by.lock().unwrap().as_slice(), [INDEX]);
        // While it is down, nothing runs inline and no caller reopens it.
        let served = factory.served_by.lock().unwrap().len();
        assert_eq!(mac_of(inline.try_run(&work(b"abc"))), None);
        assert_eq!(factory.served_by.lock().unwrap().len(), served);
        // Back after the failed attempts (100 + 200 ms of backoff), by the
        // same session index.
        assert_eq!(until_inline(&inline, b"abc"), b"cba");
        assert_eq!(factory.opens.load(Ordering::SeqCst), 4);
        assert!(factory
            .opened_for
            .lock()
            .unwrap()
            .iter()
            .all(|&index| index == INDEX));
    }

    #[test]
    fn a_panicking_operation_takes_its_session_down_and_it_comes_back() {
        struct Panics;
        impl Engine for Panics {
            fn versions(
                &mut self,
                _: &str,
                _: crate::keyring::KeyClass,
            ) -> Result<Vec<u32>, HsmError> {
                Ok(vec![1])
            }
            fn sign(&mut self, _: &str, _: Mechanism, _: &[u8]) -> Result<Vec<u8>, HsmError> {
                unreachable!()
            }
            fn verify(
                &mut self,
                _: &str,
                _: Mechanism,
                _: &[u8],
                _: &[u8],
            ) -> Result<bool, HsmError> {
                unreachable!()
            }
            fn mac(&mut self, _: &str, _: Mechanism, message: &[u8]) -> Result<Vec<u8>, HsmError> {
                assert_ne!(message, b"panic", "the module crashed");
                Ok(message.to_vec())
            }
        }
        struct Opens(std::sync::atomic::AtomicUsize);
        impl EngineFactory for Opens {
            fn open(&self, _: usize) -> Result<Box<dyn Engine>, HsmError> {
                self.0.fetch_add(1, Ordering::SeqCst);
                Ok(Box::new(Panics))
            }
        }
        let factory = Arc::new(Opens(std::sync::atomic::AtomicUsize::new(0)));
        let inline = Arc::new(
            InlineSessions::open(
                Arc::clone(&factory) as Arc<dyn EngineFactory>,
                fake_shared(),
                INDEX,
                1,
            )
            .unwrap(),
        );
        let crashed = {
            let inline = Arc::clone(&inline);
            std::thread::spawn(move || inline.try_run(&work(b"panic"))).join()
        };
        assert!(crashed.is_err(), "the caller sees the panic");
        // The poisoned session is dropped (this request goes to the pool),
        // then reopened.
        assert_eq!(mac_of(inline.try_run(&work(b"ok"))), None);
        assert_eq!(until_inline(&inline, b"ok"), b"ok");
        assert_eq!(factory.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn stopping_ends_a_reopen_that_keeps_failing() {
        let factory = FakeFactory::new(1, 0);
        let inline = sessions(&factory, 1);
        factory.open_failures.store(usize::MAX, Ordering::SeqCst);
        assert_eq!(mac_of(inline.try_run(&work(b"abc"))), None);
        // The reopening thread is waiting out its backoff: dropping must
        // wake and join it rather than leave it retrying.
        while factory.opens.load(Ordering::SeqCst) < 2 {
            std::thread::yield_now();
        }
        drop(inline);
        let opens = factory.opens.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(factory.opens.load(Ordering::SeqCst), opens);
    }
}
