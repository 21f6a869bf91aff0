//! The ISO 8583 engine promises zero heap allocations per decode (and per
//! encode into a buffer with room): checked here with the counting
//! allocator, so a regression fails a test instead of only moving a number
//! in the benchmark output. One test in this binary on purpose: the counters
//! are process-wide, and parallel tests would count each other.

use fps_benches::alloc_counter::{self, CountingAllocator};
use fps_benches::cases;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

#[test]
fn iso8583_decode_and_encode_allocate_nothing() {
    assert!(alloc_counter::installed());
    let (all, _) = cases::all();
    let mut checked = 0;
    for mut c in all.into_iter().filter(|c| c.codec.starts_with("ISO 8583 ")) {
        let decode = alloc_counter::per_op(1_000, &mut c.decode);
        let encode = alloc_counter::per_op(1_000, &mut c.encode);
        assert_eq!(
            (decode, encode),
            (0.0, 0.0),
            "{}: allocations per decode, per encode",
            c.codec
        );
        checked += 1;
    }
    assert_eq!(checked, fps_codecs::iso8583::builtin_names().count());
}
