//! The simulated journal: the switch's only durable state. Every append
//! that returns `Ok` is durable (written and synced); the switch appends
//! before each effect. The journal also serves as the durable key store the
//! idempotency index looks evicted keys up in.
//!
//! Faults: appends fail while a write-failure window is open; a crash can be
//! armed to strike during the k-th next append (that record is lost, or left
//! torn, and nothing after it happens); a torn tail is dropped at recovery.

use std::collections::BTreeMap;

use fps_codecs::model::{AuthId, ResponseCode};
use fps_routing::{Fingerprint, Millis, Outcome, RequestKey, StoredKey};

use super::{Origin, ReqId, TxnId};

/// What the switch journals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Before a credit is written to a link: the attempt and the claimed key.
    Sent {
        txn: TxnId,
        req: ReqId,
        scope: usize,
        key: RequestKey,
        fingerprint: Fingerprint,
        origin: Origin,
        amount: u64,
        bank: usize,
        link: usize,
        stan: u32,
    },
    /// That attempt never left (link refused).
    NotSent { txn: TxnId, stan: u32 },
    /// The bank's answer, before it goes upstream.
    Final {
        txn: TxnId,
        code: ResponseCode,
        auth: Option<AuthId>,
    },
    /// Given up without reaching the bank (91 or 96): the key is free again.
    Abandoned { txn: TxnId },
    /// Outcome unknown: 68 goes upstream, the reversal is queued.
    Reversing { txn: TxnId },
    /// A reversal-type message is about to be sent (its STAN is used).
    ReversalSent { txn: TxnId, bank: usize, stan: u32 },
    /// A late answer to the original (never forwarded upstream).
    LateResponse { txn: TxnId, approved: bool },
    /// The reversal is settled: acknowledged, or nothing to reverse.
    ReversalDone { txn: TxnId, acknowledged: bool },
    /// The reversal is parked in the manual queue.
    Parked { txn: TxnId },
}

/// Why an append failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalError {
    /// The write failed (disk error): nothing was written.
    WriteFailed,
    /// The process died during this append.
    Dead,
}

/// A record as stored: `intact == false` is a torn write.
#[derive(Debug, Clone)]
pub struct Stored {
    pub at: Millis,
    pub record: Record,
    pub intact: bool,
}

/// The journal. Survives crashes.
#[derive(Debug, Default)]
pub struct Journal {
    records: Vec<Stored>,
    /// Set by the world before each call into the switch.
    pub failing: bool,
    /// Set by the world before each call: real time, stamped on records.
    pub now: Millis,
    /// Armed crash: `(appends left before the fatal one, torn)`.
    crash_armed: Option<(u32, bool)>,
    dead: bool,
    /// Durable key store: (scope, key) -> stored outcome.
    keys: BTreeMap<(usize, RequestKey), StoredKey>,
    /// txn -> its claimed key, from `Sent`.
    txn_keys: BTreeMap<TxnId, (usize, RequestKey, Fingerprint)>,
    /// Appends that failed because of a write-failure window.
    pub write_failures: u64,
}

impl Journal {
    /// Append `record` durably, or fail.
    pub fn append(&mut self, record: Record) -> Result<(), JournalError> {
        if self.dead {
            return Err(JournalError::Dead);
        }
        if let Some((left, torn)) = self.crash_armed {
            if left == 0 {
                self.crash_armed = None;
                self.dead = true;
                if torn {
                    self.records.push(Stored {
                        at: self.now,
                        record,
                        intact: false,
                    });
                }
                return Err(JournalError::Dead);
            }
            self.crash_armed = Some((left - 1, torn));
        }
        if self.failing {
            self.write_failures += 1;
            return Err(JournalError::WriteFailed);
        }
        self.index(&record);
        self.records.push(Stored {
            at: self.now,
            record,
            intact: true,
        });
        Ok(())
    }

    /// Arm a crash during the append after `skip` more successful ones.
    pub fn arm_crash(&mut self, skip: u32, torn: bool) {
        self.crash_armed = Some((skip, torn));
    }

    /// The process stops now (fail-stop after a write that had to succeed,
    /// or a crash between events).
    pub fn kill(&mut self) {
        self.dead = true;
        self.crash_armed = None;
    }

    /// A crash between events that was half-way through writing `record`.
    pub fn tear(&mut self, record: Record) {
        self.records.push(Stored {
            at: self.now,
            record,
            intact: false,
        });
        self.kill();
    }

    /// Whether the process writing this journal has died.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Records for recovery (intact ones: a torn tail is never trusted).
    pub fn replay(&self) -> impl Iterator<Item = &Record> + '_ {
        self.records.iter().filter(|s| s.intact).map(|s| &s.record)
    }

    /// Recovery: the new process truncates a torn tail and writes on.
    /// Returns how many torn records were dropped. `trust_torn` is the bug
    /// of skipping the checksum: the torn record is taken as written.
    pub fn reopen(&mut self, trust_torn: bool) -> usize {
        let before = self.records.len();
        if trust_torn {
            let torn: Vec<Record> = self
                .records
                .iter_mut()
                .filter(|s| !s.intact)
                .map(|s| {
                    s.intact = true;
                    s.record.clone()
                })
                .collect();
            for r in &torn {
                self.index(r);
            }
        }
        while self.records.last().is_some_and(|s| !s.intact) {
            self.records.pop();
        }
        self.dead = false;
        self.crash_armed = None;
        before - self.records.len()
    }

    /// What storage holds for a key (the idempotency lookup).
    pub fn stored_key(&self, scope: usize, key: &RequestKey) -> Option<StoredKey> {
        self.keys.get(&(scope, key.clone())).cloned()
    }

    /// Every durable record with its time.
    pub fn records(&self) -> impl Iterator<Item = &Stored> + '_ {
        self.records.iter().filter(|s| s.intact)
    }

    fn index(&mut self, record: &Record) {
        match record {
            Record::Sent {
                txn,
                scope,
                key,
                fingerprint,
                ..
            } => {
                self.txn_keys
                    .insert(*txn, (*scope, key.clone(), *fingerprint));
            }
            Record::Final { txn, code, auth } => {
                let outcome = Outcome {
                    auth_id: *auth,
                    ..Outcome::new(*code)
                };
                self.store(*txn, outcome);
            }
            Record::Reversing { txn } => self.store(*txn, Outcome::new(ResponseCode::LATE)),
            _ => {}
        }
    }

    fn store(&mut self, txn: TxnId, outcome: Outcome) {
        if let Some((scope, key, fingerprint)) = self.txn_keys.get(&txn) {
            self.keys.insert(
                (*scope, key.clone()),
                StoredKey {
                    fingerprint: *fingerprint,
                    outcome,
                },
            );
        }
    }
}
