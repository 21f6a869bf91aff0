//! Opening a session pool on SoftHSM2 logs no error: cryptoki logs (through
//! `log`) an ERROR line for every mechanism a token lists that it has no
//! name for, and SoftHSM2 lists several, so the switch used to start with a
//! screen of them. The pool now asks for its own mechanisms one by one.
//! (Its own binary: a `log` logger is process-wide.)

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::TestToken;
use fps_hsm::Hsm;

static ERRORS: AtomicUsize = AtomicUsize::new(0);

struct CountErrors;

impl log::Log for CountErrors {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() == log::Level::Error {
            ERRORS.fetch_add(1, Ordering::Relaxed);
            eprintln!("{}: {}", record.target(), record.args());
        }
    }

    fn flush(&self) {}
}

#[test]
fn opening_the_pool_logs_no_error() {
    let Some(token) = TestToken::new() else {
        return;
    };
    log::set_logger(&CountErrors).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let hsm = Hsm::builder(token.config()).start().unwrap();
    drop(hsm);
    assert_eq!(ERRORS.load(Ordering::Relaxed), 0);
}
