//! The key-store seam (`fps_switch::keystore::KeyStorage`): the safety layer
//! answers keys that have left memory from whatever store it is given, so a
//! shared backend (PostgreSQL) can replace the redb one without touching the
//! pipeline. Here a plain in-memory map stands in for that backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fps_codecs::model::{examples, AuthId, IdempotencyKey, ResponseCode, Transaction};
use fps_routing::idempotency::{
    ClientScope, Fingerprint, IdempotencyIndex, Outcome, RequestKey, StoredKey,
};
use fps_routing::Millis;
use fps_switch::clock::SwitchClock;
use fps_switch::keystore::{KeyRecord, KeyStorage, KeyStoreError, LookupFuture};
use fps_switch::safety::{Admission, NullJournal, Safety};

/// A backend keeping keys in a map; `fail` makes every call an I/O error.
#[derive(Debug, Default)]
struct MapStore {
    keys: Mutex<HashMap<(String, String), (StoredKey, u64)>>,
    lookups: Mutex<usize>,
    fail: bool,
}

fn map_key(scope: &ClientScope, key: &RequestKey) -> (String, String) {
    (format!("{scope:?}"), format!("{key:?}"))
}

impl KeyStorage for MapStore {
    fn put(&self, rec: KeyRecord) -> Result<(), KeyStoreError> {
        if self.fail {
            return Err(KeyStoreError::Io("backend down".into()));
        }
        self.keys.lock().unwrap().insert(
            map_key(&rec.scope, &rec.key),
            (rec.stored, rec.completed_unix_ms),
        );
        Ok(())
    }

    fn lookup<'a>(&'a self, scope: &'a ClientScope, key: &'a RequestKey) -> LookupFuture<'a> {
        Box::pin(async move {
            *self.lookups.lock().unwrap() += 1;
            if self.fail {
                return Err(KeyStoreError::Io("backend down".into()));
            }
            Ok(self.keys.lock().unwrap().get(&map_key(scope, key)).cloned())
        })
    }
}

fn keyed(key: &str) -> Transaction {
    let mut t = examples::credit_transfer();
    t.idempotency_key = Some(IdempotencyKey::parse(key.as_bytes()).unwrap());
    t
}

/// A safety layer whose index must consult storage on every miss (as right
/// after a start, or once memory is full).
fn safety_over(store: Arc<MapStore>) -> Safety {
    let mut index = IdempotencyIndex::new(1_000, Duration::from_secs(3_600));
    index.require_lookup_until(Millis(u64::MAX / 2));
    Safety::new(
        Arc::new(NullJournal::default()),
        Some(store as Arc<dyn KeyStorage>),
        index,
        1,
        Arc::new(SwitchClock::start()),
        Duration::from_secs(5),
    )
}

fn stored_approval(req: &Transaction) -> (StoredKey, u64) {
    let mut outcome = Outcome::new(ResponseCode::APPROVED);
    outcome.auth_id = Some(AuthId::parse(b"STORED").unwrap());
    (
        StoredKey {
            fingerprint: Fingerprint::of(req),
            outcome,
        },
        1_700_000_000_000,
    )
}

#[tokio::test]
async fn a_key_only_the_backend_holds_is_answered_from_it() {
    let store = Arc::new(MapStore::default());
    let scope = ClientScope::new("CN=gateway").unwrap();
    let original = keyed("gw-backend-0001");
    store.keys.lock().unwrap().insert(
        map_key(&scope, &RequestKey::of(&original).unwrap()),
        stored_approval(&original),
    );
    let safety = safety_over(Arc::clone(&store));

    // The retry (its own STAN) gets the stored answer, echoing its fields.
    let mut retry = original.clone();
    retry.stan = Some(fps_codecs::model::Stan::new(424_242).unwrap());
    match safety.admit(&scope, &retry).await {
        Admission::Answer(a) => {
            assert_eq!(a.response_code, Some(ResponseCode::APPROVED));
            assert_eq!(a.auth_id, Some(AuthId::parse(b"STORED").unwrap()));
            assert_eq!(a.stan, retry.stan);
        }
        _ => panic!("a stored key must be answered, not processed"),
    }
    assert_eq!(*store.lookups.lock().unwrap(), 1);

    // Same key, other amount: 94, still without the bank.
    let mut changed = original.clone();
    changed.amount = Some(fps_codecs::model::AmountMinor::new(1).unwrap());
    match safety.admit(&scope, &changed).await {
        Admission::Answer(a) => {
            assert_eq!(a.response_code, Some(ResponseCode::DUPLICATE))
        }
        _ => panic!("a changed request under a stored key must be refused"),
    }

    // Another client's equal key is not the same key.
    let other = ClientScope::new("CN=other-gateway").unwrap();
    assert!(matches!(
        safety.admit(&other, &original).await,
        Admission::Process(_)
    ));
}

#[tokio::test]
async fn a_key_the_backend_lacks_is_processed_and_a_failing_backend_gets_96() {
    let store = Arc::new(MapStore::default());
    let scope = ClientScope::new("CN=gateway").unwrap();
    let safety = safety_over(Arc::clone(&store));
    match safety.admit(&scope, &keyed("gw-backend-new")).await {
        Admission::Process(claimed) => safety.abandon(claimed),
        _ => panic!("an unknown key must go to the bank"),
    }
    assert_eq!(*store.lookups.lock().unwrap(), 1);

    let down = Arc::new(MapStore {
        fail: true,
        ..MapStore::default()
    });
    let safety = safety_over(down);
    match safety.admit(&scope, &keyed("gw-backend-down")).await {
        Admission::Answer(a) => {
            assert_eq!(a.response_code, Some(ResponseCode::SYSTEM_MALFUNCTION))
        }
        _ => panic!("a key that cannot be checked must not reach the bank"),
    }
}
