//! Sub-millisecond waits for the open-loop schedule.
//!
//! tokio's timer wheel ticks in whole milliseconds, so a connection that
//! slept until its next request's intended time sent every request of that
//! millisecond at once: at 11,000 TPS a burst of 11 a millisecond, which the
//! system under test then had to queue (`perf sched` of the switch: runs of
//! about 0.5 ms after 1.1 ms idle, in step with the generator's ticks). A
//! real gateway's requests are not synchronised to a clock tick. A timerfd
//! (`CLOCK_MONOTONIC`, watched by tokio's reactor) wakes the connection at
//! the intended time instead, within the kernel's timer slack (50 us for an
//! ordinary thread). Where a timerfd cannot be made, tokio's sleep is used.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::OnceLock;
use std::time::Duration;

use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// One connection's timer.
#[derive(Debug)]
pub struct Pacer {
    timer: Option<AsyncFd<OwnedFd>>,
}

impl Pacer {
    /// A timerfd-backed pacer; within a tokio runtime (the reactor watches
    /// the timer).
    // `AsyncFd::new` is deprecated for I/O safety (an fd closed behind the
    // reactor's back); this one is an `OwnedFd` made here and moved into
    // the `AsyncFd`, so nothing else can close it. The replacement,
    // `AsyncFd::register`, is `unsafe`, which this workspace forbids.
    #[allow(deprecated)]
    pub fn new() -> Pacer {
        let timer = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )
        .map_err(io::Error::from)
        .and_then(AsyncFd::new);
        match timer {
            Ok(t) => Pacer { timer: Some(t) },
            Err(e) => {
                eprintln!("fps-loadtest: no timerfd ({e}): pacing at tokio's 1 ms resolution");
                Pacer { timer: None }
            }
        }
    }

    /// Whether waits are finer than tokio's millisecond.
    pub fn is_fine(&self) -> bool {
        self.timer.is_some()
    }

    /// Wait until `deadline` (at once if it has passed). Never returns
    /// before it. Cancel-safe: a wait dropped half-way leaves nothing
    /// behind that could end the next one early.
    pub async fn sleep_until(&self, deadline: Instant) {
        let deadline = on_grid(deadline);
        if let Some(timer) = &self.timer {
            // A failed timer leaves the wait to the coarse way below.
            let _ = wait_on(timer, deadline).await;
        }
        // Without the timer, after a failure, or had it fired early (it
        // cannot: CLOCK_MONOTONIC, armed after reading the clock): tokio's
        // sleep for what is left.
        if Instant::now() < deadline {
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Spacing of the instants a pacer wakes at (see [`on_grid`]).
pub const GRID: Duration = Duration::from_micros(20);

/// `deadline` rounded up to the process's pacing grid: multiples of
/// [`GRID`] from one origin shared by every pacer. The connections'
/// timers then expire together, in one timer interrupt and one reactor
/// turn, instead of each on its own: at 40,000 TPS over 4 connections a
/// timer per request cost about a quarter of the generator's CPU on a
/// KVM guest (timer interrupts and their VM exits). A request leaves at
/// most `GRID` after its intended time, and that delay is part of its
/// latency (measured from the intended time), never hidden.
pub fn on_grid(deadline: Instant) -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    let Some(since) = deadline.checked_duration_since(origin) else {
        return deadline;
    };
    let grid = GRID.as_nanos();
    let steps = since.as_nanos().div_ceil(grid);
    let rounded = u64::try_from(steps * grid).unwrap_or(u64::MAX);
    origin + Duration::from_nanos(rounded)
}

/// Arm `timer` for `deadline` and wait for it to fire.
async fn wait_on(timer: &AsyncFd<OwnedFd>, deadline: Instant) -> io::Result<()> {
    let Some(wait) = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    else {
        return Ok(());
    };
    let arm = Itimerspec {
        it_interval: Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: Timespec {
            tv_sec: wait.as_secs() as _,
            tv_nsec: wait.subsec_nanos() as _,
        },
    };
    // Arming resets the expiration count: an earlier, abandoned wait that
    // fired meanwhile reads as nothing below.
    timerfd_settime(timer.get_ref(), TimerfdTimerFlags::empty(), &arm)?;
    loop {
        let mut ready = timer.readable().await?;
        let mut count = [0u8; 8];
        match ready.try_io(|fd| rustix::io::read(fd.get_ref(), &mut count).map_err(io::Error::from))
        {
            Ok(read) => return read.map(drop),
            // Readiness left from an abandoned wait: cleared, wait again.
            Err(_would_block) => continue,
        }
    }
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer::new()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    #[test]
    fn deadlines_round_up_to_one_shared_grid() {
        let base = on_grid(Instant::now() + Duration::from_millis(1));
        // Never early, never a whole grid step late.
        for ns in [0u64, 1, 5_000, 19_999, 20_000, 20_001, 333_333] {
            let deadline = base + Duration::from_nanos(ns);
            let woken = on_grid(deadline);
            assert!(woken >= deadline, "{ns} ns");
            assert!(woken - deadline < GRID, "{ns} ns");
            // On the grid: a multiple of GRID from any other grid point.
            assert_eq!((woken - base).as_nanos() % GRID.as_nanos(), 0, "{ns} ns");
        }
        // Deadlines within one step wake together.
        assert_eq!(
            on_grid(base + Duration::from_nanos(1)),
            on_grid(base + Duration::from_nanos(19_999))
        );
        // A grid point stays put.
        assert_eq!(on_grid(base), base);
    }

    #[tokio::test]
    async fn a_wait_ends_at_or_after_its_deadline_with_sub_millisecond_deadlines() {
        let pacer = Pacer::new();
        assert!(pacer.is_fine(), "timerfd is available on Linux");
        for us in [50u64, 200, 700, 1_300] {
            let deadline = Instant::now() + Duration::from_micros(us);
            pacer.sleep_until(deadline).await;
            assert!(Instant::now() >= deadline, "{us} us");
        }
        // A deadline in the past returns at once.
        pacer
            .sleep_until(Instant::now() - Duration::from_millis(1))
            .await;
    }

    #[tokio::test]
    async fn an_abandoned_wait_does_not_end_the_next_one_early() {
        let pacer = Pacer::new();
        {
            // Armed for 1 ms by its first poll, then dropped.
            let mut first = Box::pin(pacer.sleep_until(Instant::now() + Duration::from_millis(1)));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(first.as_mut().poll(&mut cx).is_pending());
        }
        // It fires meanwhile: the reactor sees the timer readable.
        std::thread::sleep(Duration::from_millis(3));
        tokio::task::yield_now().await;
        let deadline = Instant::now() + Duration::from_millis(5);
        pacer.sleep_until(deadline).await;
        assert!(Instant::now() >= deadline);
    }
}
