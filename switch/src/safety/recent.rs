//! Recently completed transactions by their upstream original data (F90
//! of a later 0400/0420): which bank handled each, what was sent to it and
//! how it ended. Bounded: the oldest entry goes when full.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use fps_codecs::model::{OriginalData, ResponseCode, Transaction};
use fps_routing::idempotency::ClientScope;

use super::record::TxnId;

/// Entries kept by default (a few minutes of traffic at high load; the
/// gateway reverses within seconds of a timeout).
pub const DEFAULT_RECENT: usize = 200_000;

/// One completed transaction.
#[derive(Debug, Clone)]
pub struct RecentTxn {
    /// Index of the bank's pool.
    pub bank: usize,
    /// The switch's id.
    pub txn: TxnId,
    /// The transaction as sent to the bank. Boxed: the table holds up to
    /// `capacity` entries, reserved at start, and slots the size of a whole
    /// transaction would make it ten times larger.
    pub sent: Box<Transaction>,
    /// F39 the upstream was told.
    pub code: ResponseCode,
}

type Key = (ClientScope, OriginalData);

/// The bounded map.
#[derive(Debug)]
pub struct Recent {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, RecentTxn>,
    order: VecDeque<Key>,
}

impl Recent {
    /// A map of at most `capacity` entries (at least 1).
    /// Room for `capacity` entries is reserved at once, so the table never
    /// grows (a rehash of a full table on the request path stalls it for
    /// milliseconds; see `IdempotencyIndex::new`).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Recent {
            capacity,
            inner: Mutex::new(Inner {
                map: HashMap::with_capacity(capacity),
                order: VecDeque::with_capacity(capacity),
            }),
        }
    }

    /// Remember a completed transaction of `scope` under its F90 form.
    pub fn insert(&self, scope: &ClientScope, original: OriginalData, txn: RecentTxn) {
        let mut g = self.lock();
        let key = (scope.clone(), original);
        if g.map.insert(key.clone(), txn).is_none() {
            g.order.push_back(key);
        }
        // Bounded by `capacity`: each pass removes one entry.
        while g.map.len() > self.capacity {
            let Some(old) = g.order.pop_front() else {
                break;
            };
            g.map.remove(&old);
        }
    }

    /// The transaction `scope` sent with these original data elements.
    pub fn find(&self, scope: &ClientScope, original: &OriginalData) -> Option<RecentTxn> {
        // The upstream's F90 carries the original request MTI; compare
        // request MTIs (0200 and its repeat 0201 name the same transfer).
        let mut o = *original;
        o.mti = o.mti.request();
        self.lock().map.get(&(scope.clone(), o)).cloned()
    }

    /// The transaction is being reversed: a repeat reversal is answered
    /// without queuing anything.
    pub fn mark_reversing(&self, scope: &ClientScope, original: &OriginalData) {
        let mut o = *original;
        o.mti = o.mti.request();
        if let Some(t) = self.lock().map.get_mut(&(scope.clone(), o)) {
            t.code = ResponseCode::LATE;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Never held across an await.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fps_codecs::model::examples::credit_transfer;

    #[test]
    fn room_for_every_entry_is_reserved_at_start() {
        let recent = Recent::new(3_000);
        let g = recent.lock();
        assert!(g.map.capacity() >= 3_000 && g.order.capacity() >= 3_000);
    }

    #[test]
    fn finds_by_scope_and_original_and_stays_bounded() {
        let recent = Recent::new(2);
        let gw = ClientScope::new("gw").unwrap();
        let other = ClientScope::new("other").unwrap();
        let t = credit_transfer();
        let od = t.original_data().unwrap();
        let entry = RecentTxn {
            bank: 1,
            txn: TxnId(7),
            sent: Box::new(t.clone()),
            code: ResponseCode::APPROVED,
        };
        recent.insert(&gw, od, entry.clone());
        assert_eq!(recent.find(&gw, &od).unwrap().txn, TxnId(7));
        assert!(recent.find(&other, &od).is_none(), "scoped by client");
        recent.mark_reversing(&gw, &od);
        assert_eq!(recent.find(&gw, &od).unwrap().code, ResponseCode::LATE);
        for stan in 1..=3 {
            let mut o = od;
            o.stan = fps_codecs::model::Stan::new(stan).unwrap();
            recent.insert(&gw, o, entry.clone());
        }
        assert!(recent.find(&gw, &od).is_none(), "oldest evicted");
    }
}
