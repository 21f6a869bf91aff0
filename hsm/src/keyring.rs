//! Key versions and the rotation overlap.
//!
//! A key is stored under `<label>-v<N>`. New MACs and signatures always use
//! the newest version. When a newer version appears (found by the periodic
//! re-scan every `key_refresh_secs`, or at start), the version that was
//! current until then still *verifies* for `key_rotation_overlap_secs`,
//! counted from the moment this process first saw the newer version. At
//! start the second-newest version gets a full overlap from start: a restart
//! in the middle of a rotation must not reject the bank's in-flight messages.
//!
//! Pure state: the caller passes `now` (see [`crate::clock`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// The longest version number accepted in a label (`-v999999`).
pub const MAX_VERSION: u32 = 999_999;

/// Splits `mac-hmac-v12` into (`mac-hmac`, 12); `None` without a valid suffix.
pub fn split_version(label: &str) -> Option<(&str, u32)> {
    let (base, digits) = label.rsplit_once("-v")?;
    if base.is_empty() || digits.is_empty() || digits.len() > 6 || digits.starts_with('0') {
        return None;
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(|v| (base, v))
}

/// `mac-hmac` + 2 -> `mac-hmac-v2`.
pub fn versioned_label(base: &str, version: u32) -> String {
    let mut out = String::new();
    write_versioned_label(&mut out, base, version);
    out
}

/// [`versioned_label`] into a reused buffer (cleared first): the worker's
/// hot path builds one label per request without allocating.
pub fn write_versioned_label(out: &mut String, base: &str, version: u32) {
    use std::fmt::Write as _;
    out.clear();
    out.push_str(base);
    // Writing to a String cannot fail.
    let _ = write!(out, "-v{version}");
}

/// Which kind of object a key version is looked up as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyClass {
    /// A secret key (MACs).
    Secret,
    /// A private key (signing).
    Private,
    /// A public key (verification).
    Public,
}

impl KeyClass {
    /// Every class, in [`KeyClass::index`] order.
    pub const ALL: [KeyClass; 3] = [KeyClass::Secret, KeyClass::Private, KeyClass::Public];

    /// Position in [`KeyClass::ALL`], for tables indexed by class.
    pub const fn index(self) -> usize {
        match self {
            KeyClass::Secret => 0,
            KeyClass::Private => 1,
            KeyClass::Public => 2,
        }
    }

    /// Name used in errors and listings.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyClass::Secret => "secret",
            KeyClass::Private => "private",
            KeyClass::Public => "public",
        }
    }
}

/// The versions a request may use right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The newest version: used to make MACs and signatures.
    pub current: u32,
    /// The previous version, present only inside the overlap window: verify only.
    pub previous: Option<u32>,
}

impl Accepted {
    /// Versions to try when verifying, newest first.
    pub fn verify_order(self) -> impl Iterator<Item = u32> {
        std::iter::once(self.current).chain(self.previous)
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    current: u32,
    previous: Option<u32>,
    current_seen_at: Instant,
    checked_at: Instant,
    rescan: bool,
}

/// What [`KeyRing::lookup`] knows about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Known and recently re-scanned.
    Fresh(Accepted),
    /// Never scanned, or the last scan is older than the refresh interval.
    NeedsScan,
}

/// The versions of every key in use, shared by all workers.
#[derive(Debug)]
pub struct KeyRing {
    overlap: Duration,
    refresh: Duration,
    /// By class, then label: nested so a lookup borrows the label (`&str`)
    /// instead of allocating an owned key on every request.
    entries: RwLock<HashMap<KeyClass, HashMap<String, Entry>>>,
    /// Bumped with every change to `entries`; a [`KeyRingView`] is valid
    /// while it is unchanged.
    generation: AtomicU64,
}

/// One worker's copy of the entries it has used, valid while the ring's
/// generation is unchanged. [`KeyRing::lookup_in`] then takes no lock and
/// writes no memory another worker reads: the shared `RwLock`'s counter
/// would otherwise bounce between the workers' cores on every request.
#[derive(Debug, Default)]
pub(crate) struct KeyRingView {
    generation: u64,
    /// By [`KeyClass::index`], then label.
    entries: [HashMap<String, Entry>; 3],
}

impl KeyRing {
    /// A ring with the given rotation overlap and re-scan interval.
    pub fn new(overlap: Duration, refresh: Duration) -> Self {
        KeyRing {
            overlap,
            refresh,
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// What versions `label` may use at `now`, or that it must be (re)scanned.
    pub fn lookup(&self, label: &str, class: KeyClass, now: Instant) -> Lookup {
        // Poisoning cannot leave an Entry half-written (plain Copy values).
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        match entries.get(&class).and_then(|by_label| by_label.get(label)) {
            Some(e) => self.classify(e, now),
            None => Lookup::NeedsScan,
        }
    }

    /// Call with the write lock held: a reader that sees the new generation
    /// then waits for the change to finish before it reads the entries.
    fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn classify(&self, e: &Entry, now: Instant) -> Lookup {
        if !e.rescan && now.saturating_duration_since(e.checked_at) < self.refresh {
            Lookup::Fresh(self.accepted(e, now))
        } else {
            Lookup::NeedsScan
        }
    }

    /// [`KeyRing::lookup`] through a worker's `view`: the same answer, read
    /// from the view while nothing changed since it was filled.
    pub(crate) fn lookup_in(
        &self,
        view: &mut KeyRingView,
        label: &str,
        class: KeyClass,
        now: Instant,
    ) -> Lookup {
        // Read before the entries: a change racing with this lookup bumps
        // the generation after we read it, so the view is refilled next time.
        let generation = self.generation.load(Ordering::Acquire);
        if view.generation != generation {
            view.entries.iter_mut().for_each(HashMap::clear);
            view.generation = generation;
        }
        let by_label = &mut view.entries[class.index()];
        let entry = match by_label.get(label) {
            Some(e) => *e,
            None => {
                let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
                let Some(e) = entries.get(&class).and_then(|m| m.get(label)).copied() else {
                    return Lookup::NeedsScan;
                };
                by_label.insert(label.to_owned(), e);
                e
            }
        };
        self.classify(&entry, now)
    }

    /// Records a scan's result (the versions present in the store) and
    /// returns what may be used now; `None` when no version exists.
    pub fn observe(
        &self,
        label: &str,
        class: KeyClass,
        versions: &[u32],
        now: Instant,
    ) -> Option<Accepted> {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.bump_generation();
        let entries = entries.entry(class).or_default();
        let Some(&newest) = versions.iter().max() else {
            entries.remove(label);
            return None;
        };
        let below = |v: u32| versions.iter().copied().filter(|&x| x < v).max();
        let entry = match entries.get(label).copied() {
            None => Entry {
                current: newest,
                previous: below(newest),
                current_seen_at: now,
                checked_at: now,
                rescan: false,
            },
            Some(old) if newest != old.current => Entry {
                current: newest,
                previous: if versions.contains(&old.current) && old.current < newest {
                    Some(old.current)
                } else {
                    below(newest)
                },
                current_seen_at: now,
                checked_at: now,
                rescan: false,
            },
            Some(old) => Entry {
                previous: old.previous.filter(|p| versions.contains(p)),
                checked_at: now,
                rescan: false,
                ..old
            },
        };
        entries.insert(label.to_owned(), entry);
        Some(self.accepted(&entry, now))
    }

    /// Forgets every scan so the next use of each key re-scans the store
    /// (call after an in-process rotation).
    pub fn invalidate(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.bump_generation();
        for entry in entries.values_mut().flat_map(HashMap::values_mut) {
            entry.rescan = true;
        }
    }

    fn accepted(&self, e: &Entry, now: Instant) -> Accepted {
        let in_overlap = now.saturating_duration_since(e.current_seen_at) < self.overlap;
        Accepted {
            current: e.current,
            previous: e.previous.filter(|_| in_overlap),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVERLAP: Duration = Duration::from_secs(100);
    const REFRESH: Duration = Duration::from_secs(10);

    #[test]
    fn splits_version_suffix() {
        assert_eq!(split_version("mac-hmac-v1"), Some(("mac-hmac", 1)));
        assert_eq!(split_version("a-v-v12"), Some(("a-v", 12)));
        assert_eq!(split_version("mac-hmac"), None);
        assert_eq!(split_version("mac-v01"), None);
        assert_eq!(split_version("-v1"), None);
        assert_eq!(split_version("x-v1234567"), None);
        assert_eq!(versioned_label("k", 3), "k-v3");
    }

    #[test]
    fn rotation_keeps_previous_during_overlap_only() {
        let ring = KeyRing::new(OVERLAP, REFRESH);
        let t0 = Instant::now();
        let a = ring.observe("k", KeyClass::Secret, &[1], t0).unwrap();
        assert_eq!(
            a,
            Accepted {
                current: 1,
                previous: None
            }
        );
        assert_eq!(
            ring.lookup("k", KeyClass::Secret, t0 + REFRESH),
            Lookup::NeedsScan
        );

        let t1 = t0 + Duration::from_secs(20);
        let a = ring.observe("k", KeyClass::Secret, &[1, 2], t1).unwrap();
        assert_eq!(
            a,
            Accepted {
                current: 2,
                previous: Some(1)
            }
        );
        // Still inside the overlap after another unchanged scan.
        let t2 = t1 + Duration::from_secs(50);
        let a = ring.observe("k", KeyClass::Secret, &[1, 2], t2).unwrap();
        assert_eq!(a.previous, Some(1));
        assert_eq!(
            ring.lookup("k", KeyClass::Secret, t2 + Duration::from_secs(1)),
            Lookup::Fresh(Accepted {
                current: 2,
                previous: Some(1)
            })
        );
        // Past the overlap.
        let t3 = t1 + OVERLAP;
        let a = ring.observe("k", KeyClass::Secret, &[1, 2], t3).unwrap();
        assert_eq!(
            a,
            Accepted {
                current: 2,
                previous: None
            }
        );
    }

    #[test]
    fn start_grants_previous_a_full_overlap() {
        let ring = KeyRing::new(OVERLAP, REFRESH);
        let t0 = Instant::now();
        let a = ring.observe("k", KeyClass::Public, &[3, 1, 2], t0).unwrap();
        assert_eq!(
            a,
            Accepted {
                current: 3,
                previous: Some(2)
            }
        );
        assert_eq!(a.verify_order().collect::<Vec<_>>(), [3, 2]);
    }

    /// A worker's view answers like the ring itself, through rotations,
    /// refresh intervals and invalidation.
    #[test]
    fn view_follows_every_change() {
        let ring = KeyRing::new(OVERLAP, REFRESH);
        let mut view = KeyRingView::default();
        let t0 = Instant::now();
        let check = |view: &mut KeyRingView, t: Instant| {
            let direct = ring.lookup("k", KeyClass::Secret, t);
            assert_eq!(ring.lookup_in(view, "k", KeyClass::Secret, t), direct);
            direct
        };
        assert_eq!(check(&mut view, t0), Lookup::NeedsScan);
        ring.observe("k", KeyClass::Secret, &[1], t0).unwrap();
        let one = Lookup::Fresh(Accepted {
            current: 1,
            previous: None,
        });
        assert_eq!(check(&mut view, t0), one);
        assert_eq!(check(&mut view, t0 + REFRESH), Lookup::NeedsScan);
        let t1 = t0 + REFRESH;
        ring.observe("k", KeyClass::Secret, &[1, 2], t1).unwrap();
        assert_eq!(
            check(&mut view, t1),
            Lookup::Fresh(Accepted {
                current: 2,
                previous: Some(1)
            })
        );
        // Other classes and labels are separate entries.
        assert_eq!(
            ring.lookup_in(&mut view, "k", KeyClass::Public, t1),
            Lookup::NeedsScan
        );
        ring.invalidate();
        assert_eq!(check(&mut view, t1), Lookup::NeedsScan);
        ring.observe("k", KeyClass::Secret, &[], t1);
        assert_eq!(check(&mut view, t1), Lookup::NeedsScan);
    }

    #[test]
    fn deleted_key_is_forgotten() {
        let ring = KeyRing::new(OVERLAP, REFRESH);
        let t0 = Instant::now();
        ring.observe("k", KeyClass::Secret, &[1], t0).unwrap();
        assert_eq!(ring.observe("k", KeyClass::Secret, &[], t0), None);
        assert_eq!(ring.lookup("k", KeyClass::Secret, t0), Lookup::NeedsScan);
    }
}
