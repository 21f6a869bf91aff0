//! A counting global allocator, so benchmarks can report heap allocations
//! per operation (the ISO 8583 decoder promises zero).
//!
//! This is the one module of the workspace allowed `unsafe`: a global
//! allocator can only be written as an `unsafe impl GlobalAlloc` whose
//! methods are `unsafe fn`s. It adds nothing of its own to the contract: each
//! method forwards its arguments unchanged to [`System`], which upholds it,
//! and only bumps relaxed atomic counters on the way. The crate denies
//! `unsafe_code` everywhere else (see `benches/Cargo.toml`).
//!
//! Counting is off until [`count`] turns it on, so a binary that installs
//! the allocator pays one relaxed load per allocation outside measurements.
//! Counters are process-wide: measure on one thread while nothing else runs.
//!
//! Install it in a binary with:
//! ```ignore
//! #[global_allocator]
//! static ALLOC: fps_benches::alloc_counter::CountingAllocator = fps_benches::alloc_counter::CountingAllocator;
//! ```
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// [`System`] plus counters of allocations (new blocks and reallocations)
/// and requested bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

impl CountingAllocator {
    #[inline]
    fn note(size: usize) {
        if COUNTING.load(Relaxed) {
            ALLOCATIONS.fetch_add(1, Relaxed);
            BYTES.fetch_add(size as u64, Relaxed);
        }
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// untouched, so `System`'s guarantees are ours; counting never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract for `layout`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::note(new_size);
        // SAFETY: `ptr` was allocated by this allocator, i.e. by `System`, with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator, i.e. by `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Heap activity seen during a [`count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Allocations {
    /// Allocations and reallocations.
    pub count: u64,
    /// Bytes requested by them.
    pub bytes: u64,
}

/// Run `f` with counting on; return its result and the heap activity it
/// caused. Not reentrant; counts every thread's allocations meanwhile.
pub fn count<R>(f: impl FnOnce() -> R) -> (R, Allocations) {
    let (a0, b0) = (ALLOCATIONS.load(Relaxed), BYTES.load(Relaxed));
    COUNTING.store(true, Relaxed);
    let r = f();
    COUNTING.store(false, Relaxed);
    let seen = Allocations {
        count: ALLOCATIONS.load(Relaxed) - a0,
        bytes: BYTES.load(Relaxed) - b0,
    };
    (r, seen)
}

/// Whether this binary's global allocator is the [`CountingAllocator`]
/// (otherwise every count reads zero and must not be reported).
pub fn installed() -> bool {
    let (_, seen) = count(|| std::hint::black_box(Box::new(std::hint::black_box(7u64))));
    seen.count > 0
}

/// Mean allocations per call of `op` over `iterations` calls, after
/// `iterations / 10` warm-up calls (lazy statics, first-use buffers).
pub fn per_op<R>(iterations: u32, mut op: impl FnMut() -> R) -> f64 {
    for _ in 0..iterations / 10 {
        std::hint::black_box(op());
    }
    let (_, seen) = count(|| {
        for _ in 0..iterations {
            std::hint::black_box(op());
        }
    });
    seen.count as f64 / f64::from(iterations.max(1))
}
