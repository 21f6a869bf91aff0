//! How the writer thread tells appenders that their records are durable:
//! one cross-thread wake per batch instead of one per record.
//!
//! Waking a tokio task from a thread outside the runtime costs the waker a
//! system call every time (the runtime's I/O driver is unparked through an
//! eventfd write, whether it sleeps or not), and the runtime a remote
//! schedule per task. With group commit a batch completes tens of records
//! at once: at 16,000 TPS with `fsync = "batch"`, one eventfd write per
//! record was 15-18% of the writer thread's CPU (docs/performance-log.md).
//!
//! So each queued record gets a [`Completion`] (its result and the waker of
//! the task awaiting it), and the writer hands the wakers of a batch to a
//! [`Relay`]. When the journal was opened inside a tokio runtime, the relay
//! has a dispatcher task there: the writer wakes that task once per batch
//! ([`Relay::flush`]) and the dispatcher wakes the batch's tasks from
//! inside the runtime, where a wake is a queue push. Opened outside a
//! runtime, or once the dispatcher is gone, the writer wakes each task
//! itself, as before.
//!
//! A dispatcher that does not run (its runtime's threads all blocked, or
//! the runtime idle while the journal is used from another one) must not
//! strand a record's waiter: wakes still undelivered [`RESCUE_AFTER`] after
//! they were handed over are woken by the writer thread itself
//! ([`Relay::rescue_due`], checked before every batch and when idle).

use std::mem;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::{JournalError, Lsn};

/// How long wakes may wait for the dispatcher before the writer thread
/// delivers them itself. Far above the dispatcher's normal delay (a
/// scheduler pass of the runtime), short enough to bound a stall.
const RESCUE_AFTER: Duration = Duration::from_millis(20);

/// The outcome of one queued record and who waits for it.
#[derive(Debug, Default)]
pub(crate) struct Completion {
    slot: Mutex<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    result: Option<Result<Lsn, JournalError>>,
    /// Set once the result was handed out or will never come.
    done: bool,
    waker: Option<Waker>,
}

impl Completion {
    /// Records `result` (the first one counts) and returns the waker of a
    /// task waiting for it, for the caller to wake.
    pub fn set(&self, result: Result<Lsn, JournalError>) -> Option<Waker> {
        let mut slot = lock(&self.slot);
        if slot.done || slot.result.is_some() {
            return None;
        }
        slot.result = Some(result);
        slot.waker.take()
    }

    /// The result once set (then `Err(Closed)` to a second poll), or
    /// `Pending` with the task's waker kept for [`Completion::set`].
    pub fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<Lsn, JournalError>> {
        let mut slot = lock(&self.slot);
        if let Some(result) = slot.result.take() {
            slot.done = true;
            return Poll::Ready(result);
        }
        if slot.done {
            return Poll::Ready(Err(JournalError::Closed));
        }
        match &slot.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Wakers handed from the writer thread to the runtime, in batches.
#[derive(Debug, Default)]
pub(crate) struct Relay {
    state: Mutex<RelayState>,
}

#[derive(Debug, Default)]
struct RelayState {
    /// Wakers to wake from the runtime.
    deferred: Vec<Waker>,
    /// When the oldest of `deferred` was handed over.
    deferred_since: Option<Instant>,
    /// The dispatcher task, once it has been polled.
    dispatcher: Option<Waker>,
    /// No dispatcher (none started, or it stopped): wake directly.
    closed: bool,
}

impl RelayState {
    /// Everything deferred, for the caller to wake once the lock is let go.
    fn take_deferred(&mut self) -> Vec<Waker> {
        self.deferred_since = None;
        mem::take(&mut self.deferred)
    }
}

fn wake_all(wakers: Vec<Waker>) {
    for waker in wakers {
        waker.wake();
    }
}

impl Relay {
    /// A relay with a dispatcher task on the current tokio runtime, or,
    /// outside one, a relay that always wakes directly.
    pub fn start() -> Arc<Relay> {
        let relay = Arc::new(Relay::default());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let dispatcher = Dispatcher(Arc::clone(&relay));
                runtime.spawn(std::future::poll_fn(move |cx| dispatcher.poll(cx)));
            }
            Err(_) => lock(&relay.state).closed = true,
        }
        relay
    }

    /// Wakes `waker` with the next [`Relay::flush`] (from the runtime), or
    /// now when there is no dispatcher.
    pub fn defer(&self, waker: Waker) {
        let mut state = lock(&self.state);
        if state.closed {
            drop(state);
            waker.wake();
        } else {
            if state.deferred.is_empty() {
                state.deferred_since = Some(Instant::now());
            }
            state.deferred.push(waker);
        }
    }

    /// Wakes the dispatcher once for everything deferred since the last
    /// flush.
    pub fn flush(&self) {
        let dispatcher = {
            let state = lock(&self.state);
            if state.deferred.is_empty() {
                return;
            }
            state.dispatcher.clone()
        };
        // None before the dispatcher's first poll, which drains anyway.
        if let Some(dispatcher) = dispatcher {
            dispatcher.wake();
        }
    }

    /// For the writer thread: wakes, from the calling thread, what has
    /// waited for the dispatcher [`RESCUE_AFTER`] or longer, and returns
    /// when what still waits will be due (`None` when nothing waits).
    pub fn rescue_due(&self, now: Instant) -> Option<Instant> {
        let stranded = {
            let mut state = lock(&self.state);
            let due = state.deferred_since? + RESCUE_AFTER;
            if now < due {
                return Some(due);
            }
            state.take_deferred()
        };
        tracing::debug!(
            stranded = stranded.len(),
            "journal: woke appenders its dispatcher had not"
        );
        wake_all(stranded);
        None
    }

    /// Stops the dispatcher after it wakes what is deferred; later wakes
    /// are direct.
    pub fn close(&self) {
        let dispatcher = {
            let mut state = lock(&self.state);
            state.closed = true;
            state.dispatcher.take()
        };
        if let Some(dispatcher) = dispatcher {
            dispatcher.wake();
        }
    }

    /// Whether a dispatcher takes the wakes (test hook).
    #[cfg(test)]
    pub fn dispatching(&self) -> bool {
        !lock(&self.state).closed
    }
}

/// The runtime side of a [`Relay`]. Dropped with its task (the runtime
/// shutting down), it closes the relay and wakes what was deferred, so no
/// wake is ever lost.
struct Dispatcher(Arc<Relay>);

impl Dispatcher {
    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        let (deferred, closed) = {
            let mut state = lock(&self.0.state);
            if !state.closed
                && !state
                    .dispatcher
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
            {
                state.dispatcher = Some(cx.waker().clone());
            }
            (state.take_deferred(), state.closed)
        };
        wake_all(deferred);
        if closed {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        let deferred = {
            let mut state = lock(&self.0.state);
            state.closed = true;
            state.dispatcher = None;
            state.take_deferred()
        };
        wake_all(deferred);
    }
}

/// Every update leaves the state consistent, so a poisoned lock is used.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A relay whose dispatcher runs on a current-thread runtime (driven
    /// only inside `block_on`) and has been polled once.
    fn relay_on_a_runtime() -> (tokio::runtime::Runtime, Arc<Relay>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let relay = runtime.block_on(async {
            let relay = Relay::start();
            tokio::task::yield_now().await; // the dispatcher's first poll
            relay
        });
        (runtime, relay)
    }

    #[test]
    fn a_completion_answers_once_and_wakes_its_waiter() {
        let count = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let c = Completion::default();
        assert!(c.poll(&mut cx).is_pending());
        let to_wake = c.set(Ok(Lsn(3))).expect("the waiter's waker");
        assert!(
            c.set(Err(JournalError::Unavailable)).is_none(),
            "first wins"
        );
        to_wake.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(matches!(c.poll(&mut cx), Poll::Ready(Ok(Lsn(3)))));
        assert!(matches!(
            c.poll(&mut cx),
            Poll::Ready(Err(JournalError::Closed))
        ));
        // Set before anyone waited: nothing to wake, the result waits.
        let c = Completion::default();
        assert!(c.set(Ok(Lsn(4))).is_none());
        assert!(matches!(c.poll(&mut cx), Poll::Ready(Ok(Lsn(4)))));
    }

    #[test]
    fn outside_a_runtime_the_relay_wakes_at_once() {
        let relay = Relay::start();
        assert!(!relay.dispatching());
        let count = Arc::new(Count::default());
        relay.defer(Waker::from(Arc::clone(&count)));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    /// A batch deferred from another thread is woken by one wake of the
    /// dispatcher; after `close`, and after the runtime that ran the
    /// dispatcher is gone, wakes are direct again.
    #[test]
    fn the_dispatcher_wakes_a_batch_and_nothing_is_lost_when_it_stops() {
        let (runtime, relay) = relay_on_a_runtime();
        assert!(relay.dispatching());
        let count = Arc::new(Count::default());
        let from_writer = {
            let (relay, count) = (Arc::clone(&relay), Arc::clone(&count));
            std::thread::spawn(move || {
                for _ in 0..10 {
                    relay.defer(Waker::from(Arc::clone(&count)));
                }
                relay.flush();
            })
        };
        from_writer.join().unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "deferred to the runtime");
        runtime.block_on(async {
            for _ in 0..100 {
                if count.0.load(Ordering::SeqCst) == 10 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(count.0.load(Ordering::SeqCst), 10);
        // Deferred and never flushed: the runtime's shutdown drops the
        // dispatcher, which wakes them on its way out.
        relay.defer(Waker::from(Arc::clone(&count)));
        drop(runtime);
        assert_eq!(count.0.load(Ordering::SeqCst), 11);
        assert!(!relay.dispatching());
        relay.defer(Waker::from(Arc::clone(&count)));
        assert_eq!(count.0.load(Ordering::SeqCst), 12);
    }

    #[test]
    fn wakes_left_waiting_for_the_dispatcher_are_rescued_once_due() {
        let (_runtime, relay) = relay_on_a_runtime(); // never driven again
        let count = Arc::new(Count::default());
        let before = Instant::now();
        assert_eq!(relay.rescue_due(before), None, "nothing waits");
        relay.defer(Waker::from(Arc::clone(&count)));
        relay.flush();
        let after = Instant::now();
        let due = relay.rescue_due(after).expect("waiting, not due yet");
        assert!(before + RESCUE_AFTER <= due && due <= after + RESCUE_AFTER);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        assert_eq!(relay.rescue_due(Instant::now() + RESCUE_AFTER), None);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken by the rescue");
        assert_eq!(relay.rescue_due(Instant::now() + RESCUE_AFTER), None);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "once");
    }

    #[test]
    fn close_hands_the_deferred_to_the_dispatcher_and_stops_it() {
        let (runtime, relay) = relay_on_a_runtime();
        let count = Arc::new(Count::default());
        relay.defer(Waker::from(Arc::clone(&count)));
        relay.close();
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        runtime.block_on(tokio::task::yield_now());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        relay.defer(Waker::from(Arc::clone(&count)));
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "closed: direct");
    }
}
