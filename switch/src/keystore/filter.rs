//! A membership filter over the store's entries. It lets
//! [`KeyStore::lookup`](super::KeyStore::lookup) answer "not stored" without
//! a read, for a key the store certainly does not hold.
//!
//! **Why.** Once the in-memory idempotency index is full, every new key is a
//! miss that may be on disk, so every new transaction looked the store up.
//! At a steady 12 TPS the default million keys in memory last a day, so in
//! production this is the normal path. Each lookup was a hop to a reader
//! thread and back plus a B-tree search. On one core at 11,000 TPS that is
//! 64 -> 85 us of switch CPU per transaction. Nearly all those keys are new,
//! and the filter answers them in well under a microsecond.
//!
//! **Never a false "absent".**
//! - Every put adds its key before the put returns, and before the key is
//!   visible in the overlay.
//! - A background scan adds every key that was in the file at open. Until
//!   the scan has finished ([`KeyFilter::mark_complete`]), the filter says
//!   "maybe" for everything, and each lookup reads the store as it would
//!   without a filter.
//! - A "maybe" for a key that is not stored (about 2% of keys at the sized
//!   load) costs only the read it would have cost anyway.
//!
//! **Bounded memory.** A Bloom filter cannot forget, but stored keys expire.
//! - Keys are filed by completion time into generations, each one retention
//!   long. Only the newest two are kept. A key of an older generation
//!   completed more than a retention ago: its lookup window is over, and the
//!   store expires it.
//! - A generation is a blocked Bloom filter: [`BITS_PER_KEY`] bits per key,
//!   and each key sits in one 64-byte block, so a probe reads one cache line.
//! - A generation is sized for the previous one's count plus a quarter. When
//!   it fills, a part twice as large is added. The false-positive rate stays
//!   bounded whatever the rate (a scalable Bloom filter).
//! - Memory: about 1.25 bytes per key of each kept generation (a store of
//!   86 million keys, 1,000 TPS for a day, takes about 107 MB per
//!   generation).
//! - Generations follow the keys' completion times, which come from the
//!   same wall clock as the store's expiry: a clock stepped forward by more
//!   than a retention makes the filter forget what expiry then deletes.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Filter bits per key a part is sized for.
pub const BITS_PER_KEY: u64 = 8;
/// Bits set per key, all in the key's block.
const PROBES: u32 = 6;
/// Bits that pick one bit of a block (512 bits).
const BIT_INDEX_BITS: u32 = 9;
/// Words per block: 8 x 64 bits, one 64-byte cache line.
const BLOCK_WORDS: usize = 8;
/// Keys the smallest part is sized for (1 MiB of filter).
pub const MIN_PART_KEYS: u64 = 1 << 20;
/// Keys the largest part is sized for (one allocation of 4 GiB at most).
const MAX_PART_KEYS: u64 = 1 << 32;
const _: () = assert!(PROBES * BIT_INDEX_BITS <= 64);

/// One fixed-size blocked Bloom filter.
struct Part {
    words: Box<[AtomicU64]>,
    /// Keys it is sized for.
    capacity: u64,
}

impl Part {
    fn new(capacity: u64) -> Part {
        let capacity = capacity.clamp(MIN_PART_KEYS, MAX_PART_KEYS);
        let blocks = (capacity * BITS_PER_KEY).div_ceil(64 * BLOCK_WORDS as u64);
        let words = (0..blocks as usize * BLOCK_WORDS)
            .map(|_| AtomicU64::new(0))
            .collect();
        Part { words, capacity }
    }

    /// The first word of `hash`'s block (the high half of the hash, scaled
    /// to the block count: no division, no modulo bias worth the name).
    fn block(&self, hash: u64) -> usize {
        let blocks = (self.words.len() / BLOCK_WORDS) as u64;
        (((hash >> 32) * blocks) >> 32) as usize * BLOCK_WORDS
    }

    /// The (word, mask) pairs of `hash`'s bits.
    fn bits(&self, hash: u64) -> impl Iterator<Item = (usize, u64)> {
        let base = self.block(hash);
        // The bit positions come from a remix of the hash, so they do not
        // repeat the block choice.
        let mut mixed = (hash ^ (hash >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (0..PROBES).map(move |_| {
            let bit = (mixed & ((1 << BIT_INDEX_BITS) - 1)) as usize;
            mixed >>= BIT_INDEX_BITS;
            (base + bit / 64, 1u64 << (bit % 64))
        })
    }

    fn insert(&self, hash: u64) {
        for (word, mask) in self.bits(hash) {
            self.words[word].fetch_or(mask, Ordering::Relaxed);
        }
    }

    fn contains(&self, hash: u64) -> bool {
        self.bits(hash)
            .all(|(word, mask)| self.words[word].load(Ordering::Relaxed) & mask != 0)
    }

    fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

/// The keys completed within one retention-long window.
struct Generation {
    /// Completion time (Unix ms) divided by the span.
    index: u64,
    /// Oldest first; inserts go to the last.
    parts: Vec<Part>,
    /// Keys inserted (a key put twice counts twice: only ever too many).
    keys: AtomicU64,
}

impl Generation {
    fn new(index: u64, capacity: u64) -> Generation {
        Generation {
            index,
            parts: vec![Part::new(capacity)],
            keys: AtomicU64::new(0),
        }
    }

    fn capacity(&self) -> u64 {
        self.parts.iter().map(|p| p.capacity).sum()
    }

    /// Counts the key and inserts it if the newest part has room; false
    /// (nothing inserted) when the generation must grow first.
    fn try_insert(&self, hash: u64) -> bool {
        if self.keys.fetch_add(1, Ordering::Relaxed) >= self.capacity() {
            return false;
        }
        self.insert_last(hash);
        true
    }

    fn insert_last(&self, hash: u64) {
        if let Some(part) = self.parts.last() {
            part.insert(hash);
        }
    }

    fn contains(&self, hash: u64) -> bool {
        self.parts.iter().any(|p| p.contains(hash))
    }
}

/// See the module docs.
pub struct KeyFilter {
    /// Length of a generation: the retention, in milliseconds (at least 1).
    span_ms: u64,
    /// Keys a generation is sized for when there is no previous one to go
    /// by (the store's size at open).
    first_capacity: u64,
    /// Keyed with random keys per process: nobody can aim keys at one block.
    hasher: RandomState,
    /// Oldest first, at most two.
    generations: RwLock<Vec<Generation>>,
    /// Whether every key of the file at open has been added.
    complete: AtomicBool,
}

impl std::fmt::Debug for KeyFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFilter")
            .field("span_ms", &self.span_ms)
            .field("complete", &self.is_complete())
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

impl KeyFilter {
    /// A filter for keys kept `retention`, expecting about `expected_keys`
    /// per retention at first. It says "maybe" for everything until
    /// [`KeyFilter::mark_complete`].
    pub fn new(retention: Duration, expected_keys: u64) -> KeyFilter {
        KeyFilter {
            span_ms: u64::try_from(retention.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            first_capacity: with_headroom(expected_keys),
            hasher: RandomState::new(),
            generations: RwLock::new(Vec::with_capacity(3)),
            complete: AtomicBool::new(false),
        }
    }

    /// Add the entry key `entry` of a key completed at `completed_unix_ms`.
    pub fn insert(&self, entry: &[u8], completed_unix_ms: u64) {
        let hash = self.hasher.hash_one(entry);
        let index = completed_unix_ms / self.span_ms;
        {
            let generations = self.read();
            match generations.iter().find(|g| g.index == index) {
                Some(g) if g.try_insert(hash) => return,
                Some(_) => {} // full: grow it below
                None if is_expired(&generations, index) => return,
                None => {} // new: rotate below
            }
        }
        let mut generations = self.write();
        if is_expired(&generations, index) {
            return;
        }
        let newest = generations
            .last()
            .map(|g| (g.index, g.keys.load(Ordering::Relaxed)));
        let position = match newest {
            Some((newest, _)) if index <= newest => {
                match generations.iter().position(|g| g.index == index) {
                    Some(at) => at,
                    None => {
                        // The generation before the newest, first seen (the
                        // scan at open): oldest, since at most two are kept.
                        generations.insert(0, Generation::new(index, self.first_capacity));
                        0
                    }
                }
            }
            _ => {
                let capacity = newest.map_or(self.first_capacity, |(_, keys)| with_headroom(keys));
                generations.retain(|g| g.index.saturating_add(1) >= index);
                generations.push(Generation::new(index, capacity));
                generations.len() - 1
            }
        };
        let generation = &mut generations[position];
        if generation.keys.load(Ordering::Relaxed) >= generation.capacity() {
            let last = generation.parts.last().map_or(0, |p| p.capacity);
            generation.parts.push(Part::new(last.saturating_mul(2)));
        }
        generation.keys.fetch_add(1, Ordering::Relaxed);
        generation.insert_last(hash);
    }

    /// False only if the store certainly does not hold `entry`.
    pub fn may_contain(&self, entry: &[u8]) -> bool {
        if !self.is_complete() {
            return true;
        }
        let hash = self.hasher.hash_one(entry);
        self.read().iter().any(|g| g.contains(hash))
    }

    /// Every key of the file at open has been added: "absent" answers may
    /// begin.
    pub fn mark_complete(&self) {
        self.complete.store(true, Ordering::Release);
    }

    /// Whether [`KeyFilter::mark_complete`] was called.
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// Memory held by the filter.
    pub fn bytes(&self) -> usize {
        self.read()
            .iter()
            .flat_map(|g| g.parts.iter())
            .map(Part::bytes)
            .sum()
    }

    fn read(&self) -> RwLockReadGuard<'_, Vec<Generation>> {
        self.generations
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Vec<Generation>> {
        self.generations
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keys a generation is sized for when about `keys` are expected: a
/// quarter more.
fn with_headroom(keys: u64) -> u64 {
    keys.saturating_add(keys / 4)
}

/// Whether generation `index` is older than every one kept: its keys
/// completed more than a retention ago.
fn is_expired(generations: &[Generation], index: u64) -> bool {
    generations
        .last()
        .is_some_and(|newest| index.saturating_add(1) < newest.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);
    const DAY_MS: u64 = 24 * 3600 * 1000;

    fn entry(i: u64) -> Vec<u8> {
        format!("scope\0key-{i}").into_bytes()
    }

    fn complete(expected: u64) -> KeyFilter {
        let f = KeyFilter::new(DAY, expected);
        f.mark_complete();
        f
    }

    #[test]
    fn says_maybe_for_everything_until_complete() {
        let f = KeyFilter::new(DAY, 10);
        assert!(f.may_contain(b"never inserted"));
        f.mark_complete();
        assert!(!f.may_contain(b"never inserted"));
    }

    #[test]
    fn every_inserted_key_is_found_and_most_others_are_not() {
        let f = complete(100_000);
        let now = 100 * DAY_MS;
        for i in 0..100_000 {
            f.insert(&entry(i), now + i);
        }
        assert!((0..100_000).all(|i| f.may_contain(&entry(i))));
        let false_positives = (100_000..200_000)
            .filter(|&i| f.may_contain(&entry(i)))
            .count();
        // Sized for a million keys (the smallest part) and holding 100,000:
        // far below the design rate.
        assert!(false_positives < 100, "{false_positives} false positives");
    }

    #[test]
    fn false_positive_rate_at_the_sized_load_stays_low() {
        let n = MIN_PART_KEYS;
        let f = complete(0);
        for i in 0..n {
            f.insert(&entry(i), DAY_MS);
        }
        let probes = 200_000;
        let hits = (n..n + probes)
            .filter(|&i| f.may_contain(&entry(i)))
            .count();
        let rate = hits as f64 / probes as f64;
        assert!(rate < 0.04, "false-positive rate {rate}");
        assert!((0..n).step_by(97).all(|i| f.may_contain(&entry(i))));
    }

    #[test]
    fn a_full_generation_grows_and_keeps_every_key() {
        let f = complete(0);
        let n = MIN_PART_KEYS * 5 / 2;
        for i in 0..n {
            f.insert(&entry(i), 5 * DAY_MS + 1);
        }
        assert!((0..n).step_by(13).all(|i| f.may_contain(&entry(i))));
        // Parts for 1 Mi and 2 Mi keys, one byte per key.
        assert_eq!(f.bytes() as u64, 3 * MIN_PART_KEYS);
        let probes = 100_000;
        let hits = (n..n + probes)
            .filter(|&i| f.may_contain(&entry(i)))
            .count();
        assert!(hits < probes as usize / 20, "{hits} false positives");
    }

    #[test]
    fn keys_stay_a_full_retention_then_their_generation_goes() {
        let f = complete(1000);
        // Completed just before day 10 ended.
        f.insert(b"old", 10 * DAY_MS + DAY_MS - 1);
        // A key of day 11 rotates: day 10 is still kept (its keys are
        // looked up until some time on day 11).
        f.insert(b"new", 11 * DAY_MS + 5);
        assert!(f.may_contain(b"old"));
        assert!(f.may_contain(b"new"));
        // A key of day 12: day 10 goes, day 11 stays.
        f.insert(b"newer", 12 * DAY_MS);
        assert!(!f.may_contain(b"old"));
        assert!(f.may_contain(b"new"));
        assert!(f.may_contain(b"newer"));
        // A key older than every generation kept is not added (the store
        // expires it; its lookup window is over).
        f.insert(b"ancient", 3 * DAY_MS);
        assert!(!f.may_contain(b"ancient"));
    }

    #[test]
    fn the_scan_at_open_may_add_the_previous_generation_after_the_current() {
        let f = KeyFilter::new(DAY, 10);
        // Puts of today arrive while the scan still reads yesterday's keys.
        f.insert(b"today", 20 * DAY_MS + 7);
        f.insert(b"yesterday", 19 * DAY_MS + 7);
        f.insert(b"two days ago", 18 * DAY_MS + 7);
        f.mark_complete();
        assert!(f.may_contain(b"today"));
        assert!(f.may_contain(b"yesterday"));
        assert!(!f.may_contain(b"two days ago"));
    }

    #[test]
    fn a_new_generation_is_sized_from_the_last_one() {
        let f = complete(0);
        let n = MIN_PART_KEYS * 2;
        for i in 0..n {
            f.insert(&entry(i), DAY_MS);
        }
        let before = f.bytes() as u64; // 1 Mi + 2 Mi
        assert_eq!(before, 3 * MIN_PART_KEYS);
        f.insert(b"next day", 2 * DAY_MS);
        // 2 Mi keys plus a quarter, in one part (the count may be a few
        // over: a key that found the part full is counted again).
        let added = f.bytes() as u64 - before;
        assert!((n + n / 4..=n + n / 4 + 128).contains(&added), "{added}");
    }

    #[test]
    fn concurrent_inserts_are_all_found() {
        let f = std::sync::Arc::new(complete(0));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let f = std::sync::Arc::clone(&f);
                std::thread::spawn(move || {
                    for i in 0..300_000u64 {
                        // Spread over two days so rotation races inserts.
                        f.insert(&entry(t * 1_000_000 + i), DAY_MS + (i % 2) * DAY_MS);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!((0..4u64)
            .flat_map(|t| (0..300_000u64).map(move |i| t * 1_000_000 + i))
            .all(|k| f.may_contain(&entry(k))));
    }
}
