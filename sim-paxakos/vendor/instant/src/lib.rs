//! The paxakos simulator's stand-in for `instant` 0.1, patched in for its workspace only
//! (`[patch.crates-io]` in `sim-paxakos/Cargo.toml`): paxakos reads the time through
//! `instant::Instant::now()` and sleeps through `futures-timer`, which its API cannot
//! replace, so the simulator's workspace replaces both crates.
//!
//! [`Instant`] is a reading of a virtual clock kept per thread, which only the simulator
//! advances ([`sim`]); `futures-timer`'s stand-in registers its timers here. Nothing else
//! in the build reads these clocks.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::task::Waker;

pub use std::time::Duration;

/// Where every thread's virtual clock starts: far enough from zero that subtracting a
/// lease or a margin never underflows.
const EPOCH: Duration = Duration::from_secs(1_000_000);

/// A reading of the thread's virtual clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(Duration);

struct Clock {
    now: Duration,
    timers: BTreeMap<(Duration, u64), Waker>,
    next_timer: u64,
}

thread_local! {
    static CLOCK: RefCell<Clock> = const {
        RefCell::new(Clock {
            now: EPOCH,
            timers: BTreeMap::new(),
            next_timer: 0,
        })
    };
}

impl Instant {
    /// The thread's virtual time.
    pub fn now() -> Instant {
        Instant(CLOCK.with(|c| c.borrow().now))
    }

    /// Time from `earlier` to `self` (zero if `earlier` is later).
    pub fn duration_since(&self, earlier: Instant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// Time from `earlier` to `self`, if `earlier` is not later.
    pub fn checked_duration_since(&self, earlier: Instant) -> Option<Duration> {
        self.0.checked_sub(earlier.0)
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(&self, earlier: Instant) -> Duration {
        self.duration_since(earlier)
    }

    /// Time since `self`.
    pub fn elapsed(&self) -> Duration {
        Instant::now().duration_since(*self)
    }

    /// `self + d`, if representable.
    pub fn checked_add(&self, d: Duration) -> Option<Instant> {
        self.0.checked_add(d).map(Instant)
    }

    /// `self - d`, if representable.
    pub fn checked_sub(&self, d: Duration) -> Option<Instant> {
        self.0.checked_sub(d).map(Instant)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0 + d)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        self.0 += d;
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        Instant(self.0 - d)
    }
}

impl SubAssign<Duration> for Instant {
    fn sub_assign(&mut self, d: Duration) {
        self.0 -= d;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, other: Instant) -> Duration {
        self.duration_since(other)
    }
}

/// The simulator's side of the clock.
pub mod sim {
    use super::*;

    /// Sets the thread's clock back to its start and forgets every timer (a new run).
    pub fn reset() {
        CLOCK.with(|c| {
            let mut c = c.borrow_mut();
            c.now = EPOCH;
            c.timers.clear();
        });
    }

    /// Virtual time elapsed since the start, in microseconds.
    pub fn elapsed_micros() -> u64 {
        CLOCK.with(|c| (c.borrow().now - EPOCH).as_micros() as u64)
    }

    /// The thread's virtual time as a duration since its epoch (for timers).
    pub fn now() -> Duration {
        CLOCK.with(|c| c.borrow().now)
    }

    /// The earliest deadline of a timer, in microseconds since the start.
    pub fn next_deadline_micros() -> Option<u64> {
        CLOCK.with(|c| {
            c.borrow()
                .timers
                .keys()
                .next()
                .map(|(at, _)| (at.saturating_sub(EPOCH)).as_micros() as u64)
        })
    }

    /// Moves the clock to `micros` since the start (never backwards) and wakes every timer
    /// due by then, earliest first.
    pub fn advance_to(micros: u64) {
        let wakers: Vec<Waker> = CLOCK.with(|c| {
            let mut c = c.borrow_mut();
            let target = EPOCH + Duration::from_micros(micros);
            if target > c.now {
                c.now = target;
            }
            let now = c.now;
            let mut due = Vec::new();
            while let Some(entry) = c.timers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            due
        });
        for w in wakers {
            w.wake();
        }
    }

    /// Registers `waker` to be woken at `deadline` (a [`now`] reading plus a delay);
    /// returns its key.
    pub fn register(deadline: Duration, waker: Waker) -> (Duration, u64) {
        CLOCK.with(|c| {
            let mut c = c.borrow_mut();
            let id = c.next_timer;
            c.next_timer += 1;
            c.timers.insert((deadline, id), waker);
            (deadline, id)
        })
    }

    /// Forgets a timer.
    pub fn cancel(key: (Duration, u64)) {
        CLOCK.with(|c| {
            c.borrow_mut().timers.remove(&key);
        });
    }
}
