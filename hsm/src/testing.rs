//! Test doubles shared by the pool's and the inline sessions' unit tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::SystemClock;
use crate::keyring::{KeyClass, KeyRing};
use crate::pool::{Engine, EngineFactory, Shared};
use crate::{HsmError, Mechanism};

/// The state every engine reads: a fresh key ring, the system clock.
pub(crate) fn fake_shared() -> Arc<Shared> {
    Arc::new(Shared {
        keyring: KeyRing::new(Duration::from_secs(60), Duration::from_secs(60)),
        clock: Arc::new(SystemClock),
        request_timeout: Duration::from_secs(5),
        store_name: "fake".into(),
    })
}

/// An engine whose MAC is the message reversed, failing on demand: the
/// next `fail_next` calls fail as a lost session, and the message
/// `b"bad"` fails as a device error of that request alone. The message
/// `b"gate"` blocks until the gate opens, so requests queue up behind it.
struct FakeEngine {
    fail_next: Arc<AtomicUsize>,
    gate: Arc<Gate>,
    /// The worker index it was opened for, recorded in `failed_by`
    /// when it fails as a lost session.
    worker: usize,
    failed_by: Arc<std::sync::Mutex<Vec<usize>>>,
    served_by: Arc<std::sync::Mutex<Vec<(usize, std::thread::ThreadId)>>>,
}

/// A latch the test opens once.
#[derive(Default)]
pub(crate) struct Gate {
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

impl Gate {
    pub(crate) fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    pub(crate) fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl Engine for FakeEngine {
    fn versions(&mut self, _: &str, _: KeyClass) -> Result<Vec<u32>, HsmError> {
        Ok(vec![1])
    }
    fn sign(&mut self, _: &str, _: Mechanism, _: &[u8]) -> Result<Vec<u8>, HsmError> {
        unreachable!("MAC-only fake")
    }
    fn verify(&mut self, _: &str, _: Mechanism, _: &[u8], _: &[u8]) -> Result<bool, HsmError> {
        unreachable!("MAC-only fake")
    }
    fn mac(&mut self, _: &str, _: Mechanism, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.failed_by.lock().unwrap().push(self.worker);
            return Err(HsmError::Unavailable {
                reason: "fake device error".into(),
            });
        }
        self.served_by
            .lock()
            .unwrap()
            .push((self.worker, std::thread::current().id()));
        match message {
            b"gate" => self.gate.wait(),
            // About a SoftHSM2 HMAC: enough for a few queued requests
            // to cover a caller's wake-up, so replies are held.
            [b'm', ..] => {
                let until = Instant::now() + Duration::from_micros(10);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
            b"bad" => {
                return Err(HsmError::Pkcs11 {
                    function: "C_Sign".into(),
                    rv: "CKR_DATA_INVALID".into(),
                })
            }
            _ => {}
        }
        Ok(message.iter().rev().copied().collect())
    }
}

/// Opens [`FakeEngine`]s and records what they do.
pub(crate) struct FakeFactory {
    /// The next this-many MACs (on any engine) fail as a lost session.
    pub fail_next: Arc<AtomicUsize>,
    /// The next this-many opens fail as a removed token.
    pub open_failures: AtomicUsize,
    pub opens: AtomicUsize,
    pub gate: Arc<Gate>,
    /// Session index of every `open`, in order.
    pub opened_for: std::sync::Mutex<Vec<usize>>,
    /// Session index of every MAC failed as a lost session.
    pub failed_by: Arc<std::sync::Mutex<Vec<usize>>>,
    /// Session index and thread of every MAC attempted.
    pub served_by: Arc<std::sync::Mutex<Vec<(usize, std::thread::ThreadId)>>>,
}

impl FakeFactory {
    pub(crate) fn new(fail_next: usize, open_failures: usize) -> Arc<Self> {
        Arc::new(FakeFactory {
            fail_next: Arc::new(AtomicUsize::new(fail_next)),
            open_failures: AtomicUsize::new(open_failures),
            opens: AtomicUsize::new(0),
            gate: Arc::default(),
            opened_for: std::sync::Mutex::default(),
            failed_by: Arc::default(),
            served_by: Arc::default(),
        })
    }
}

impl EngineFactory for FakeFactory {
    fn open(&self, worker: usize) -> Result<Box<dyn Engine>, HsmError> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        self.opened_for.lock().unwrap().push(worker);
        if self
            .open_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(HsmError::Unavailable {
                reason: "fake token removed".into(),
            });
        }
        Ok(Box::new(FakeEngine {
            fail_next: Arc::clone(&self.fail_next),
            gate: Arc::clone(&self.gate),
            worker,
            failed_by: Arc::clone(&self.failed_by),
            served_by: Arc::clone(&self.served_by),
        }))
    }
}
