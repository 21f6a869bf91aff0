//! Shared pieces of the codec benchmarks (`benches/codec.rs`), the codec
//! report (`src/bin/codec-report.rs`) and the iso8583_rs differential test:
//! the messages measured, the iso8583_rs baseline, a timing loop and the
//! counting allocator. The iso8583_rs baseline needs the `iso8583-rs`
//! feature (see `Cargo.toml` for why it is off by default).

pub mod alloc_counter;
#[cfg(feature = "iso8583-rs")]
pub mod baseline;
pub mod cases;
pub mod fixtures;
pub mod timing;
