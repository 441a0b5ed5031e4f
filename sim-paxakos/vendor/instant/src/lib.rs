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
    /// Global virtual time.
    now: Duration,
    /// Timers by their global deadline.
    timers: BTreeMap<(Duration, u64), Waker>,
    next_timer: u64,
    /// Each node's clock rate, in parts per million off the global one.
    rates: Vec<i64>,
    /// The node whose code runs now (`None`: the simulator's own, on global time).
    current: Option<usize>,
}

impl Clock {
    fn rate(&self) -> i64 {
        self.current
            .and_then(|n| self.rates.get(n).copied())
            .unwrap_or(0)
    }

    /// The current node's reading at global time `global`.
    fn local(&self, global: Duration) -> Duration {
        scale(global - EPOCH, self.rate(), false) + EPOCH
    }

    /// The global time at which the current node's clock reads `local` (rounded up).
    fn global(&self, local: Duration) -> Duration {
        scale(local.saturating_sub(EPOCH), self.rate(), true) + EPOCH
    }
}

/// `d` run at `rate` ppm (`inverse`: the global span a local span `d` takes).
fn scale(d: Duration, rate: i64, inverse: bool) -> Duration {
    let micros = d.as_micros() as i128;
    let per = 1_000_000i128 + rate as i128;
    let out = if inverse {
        (micros * 1_000_000 + per - 1) / per
    } else {
        micros * per / 1_000_000
    };
    Duration::from_micros(out.max(0) as u64)
}

thread_local! {
    static CLOCK: RefCell<Clock> = const {
        RefCell::new(Clock {
            now: EPOCH,
            timers: BTreeMap::new(),
            next_timer: 0,
            rates: Vec::new(),
            current: None,
        })
    };
}

impl Instant {
    /// The virtual time on the clock of the node whose code runs.
    pub fn now() -> Instant {
        Instant(CLOCK.with(|c| {
            let c = c.borrow();
            c.local(c.now)
        }))
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

    /// Sets the thread's clock back to its start, forgets every timer, and gives node `i`
    /// a clock running `rates[i]` parts per million off the global one (a new run).
    pub fn reset(rates: Vec<i64>) {
        CLOCK.with(|c| {
            let mut c = c.borrow_mut();
            c.now = EPOCH;
            c.timers.clear();
            c.rates = rates;
            c.current = None;
        });
    }

    /// Runs `f` as node `node`'s code: it reads that node's clock and sets its timers on
    /// it.
    pub fn as_node<R>(node: Option<usize>, f: impl FnOnce() -> R) -> R {
        let before = CLOCK.with(|c| std::mem::replace(&mut c.borrow_mut().current, node));
        let out = f();
        CLOCK.with(|c| c.borrow_mut().current = before);
        out
    }

    /// Virtual time elapsed since the start, in microseconds.
    pub fn elapsed_micros() -> u64 {
        CLOCK.with(|c| (c.borrow().now - EPOCH).as_micros() as u64)
    }

    /// The current node's clock as a duration since its epoch (for timers).
    pub fn now() -> Duration {
        Instant::now().0
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

    /// Registers `waker` to be woken when the current node's clock reads `deadline` (a
    /// [`now`] reading plus a delay); returns its key.
    pub fn register(deadline: Duration, waker: Waker) -> (Duration, u64) {
        CLOCK.with(|c| {
            let mut c = c.borrow_mut();
            let id = c.next_timer;
            c.next_timer += 1;
            let at = c.global(deadline).max(c.now);
            c.timers.insert((at, id), waker);
            (at, id)
        })
    }

    /// Forgets a timer.
    pub fn cancel(key: (Duration, u64)) {
        CLOCK.with(|c| {
            c.borrow_mut().timers.remove(&key);
        });
    }
}
