//! `IdempotencyIndex::pretouch` makes the reserved tables resident: the
//! process's resident set grows by about their size, which `new` alone
//! does not do. Its own test binary, so no other test allocates meanwhile.

#![cfg(target_os = "linux")]

use std::time::Duration;

use fps_routing::idempotency::IdempotencyIndex;

/// Resident set of this process in bytes (`VmRSS` of `/proc/self/status`).
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value in kB");
    kib * 1024
}

#[test]
fn pretouch_makes_the_reservation_resident_and_new_does_not() {
    const KEYS: usize = 200_000;
    const MIB: u64 = 1024 * 1024;
    let before = resident_bytes();
    let mut index = IdempotencyIndex::new(KEYS, Duration::from_secs(3600));
    let reserved = resident_bytes();
    assert!(
        reserved.saturating_sub(before) < 8 * MIB,
        "new() made {} MiB resident",
        reserved.saturating_sub(before) / MIB
    );
    assert_eq!(index.pretouch(), KEYS);
    let touched = resident_bytes();
    // 262,144 table slots of about 190 bytes and 200,000 queue slots of
    // about 100: some 68 MiB.
    assert!(
        touched.saturating_sub(reserved) >= 60 * MIB,
        "pretouch made only {} MiB resident",
        touched.saturating_sub(reserved) / MIB
    );
    assert!(index.is_empty());
    assert_eq!(
        index.pretouch(),
        KEYS,
        "an empty index may be touched again"
    );
}
