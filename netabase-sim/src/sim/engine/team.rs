//! What the run's threads share, and the helper threads that run the shards.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use netabase_core::Instant;

use super::super::network::{Mail, Net};
use super::{Shard, lock, read};

/// What the run's threads share: the shards, the mailboxes between them, the network,
/// and the signals that start and end an epoch.
pub(in crate::sim) struct Team {
    pub(in crate::sim) shards: Vec<Mutex<Shard>>,
    /// Mail from shard `a` to shard `b` at `a * shards + b`.
    pub(in crate::sim) mail: Vec<Mutex<Vec<Mail>>>,
    pub(in crate::sim) net: RwLock<Net>,
    /// Bumped to start an epoch on the helper threads.
    pub(super) epochs_started: AtomicU64,
    /// End of the epoch, in µs of virtual time.
    pub(super) until: AtomicU64,
    /// Helper threads still working on the epoch.
    pub(super) pending: AtomicUsize,
    /// How far each shard got in the current epoch (µs of virtual time): its events
    /// before that are processed and the messages they sent posted.
    pub(in crate::sim) progress: Vec<AtomicU64>,
    /// Shortest one-way delay between two nodes, µs: how far a shard may run ahead of the
    /// slowest one (zero: a single shard).
    pub(in crate::sim) lookahead: u64,
    pub(super) stop: AtomicBool,
    /// A helper thread panicked.
    pub(super) failed: AtomicBool,
    /// The run's threads, to wake when something they may wait for changed.
    pub(in crate::sim) threads_of_run: std::sync::OnceLock<Vec<std::thread::Thread>>,
}

impl Team {
    pub(in crate::sim) fn new(
        net: Net,
        shards: usize,
        part_len: usize,
        lookahead: Duration,
    ) -> Self {
        Team {
            shards: (0..shards)
                .map(|k| Mutex::new(Shard::new(k, part_len, shards)))
                .collect(),
            mail: (0..shards * shards)
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            net: RwLock::new(net),
            epochs_started: AtomicU64::new(0),
            until: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            progress: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            lookahead: lookahead.as_micros() as u64,
            stop: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            threads_of_run: std::sync::OnceLock::new(),
        }
    }

    /// Wakes the run's sleeping threads (cheap for those that are not asleep).
    pub(super) fn wake(&self) {
        if let Some(threads) = self.threads_of_run.get() {
            for t in threads {
                t.unpark();
            }
        }
    }
}

/// Waits until `done` says so: spins for a short while (the other threads are usually
/// microseconds away), then sleeps until woken by [`Team::wake`] (or, as a safety net, for
/// at most a millisecond between checks), so that more threads than cores still share
/// the cores well.
pub(super) fn wait_until(mut done: impl FnMut() -> bool) {
    let mut spins = 0u32;
    while !done() {
        if spins < 1 << 10 {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::park_timeout(Duration::from_millis(1));
        }
    }
}

/// A helper thread: runs shard `k` each epoch until told to stop.
pub(in crate::sim) fn helper(team: &Team, k: usize) {
    let mut seen = 0;
    loop {
        wait_until(|| {
            team.epochs_started.load(Ordering::Acquire) != seen || team.stop.load(Ordering::Acquire)
        });
        if team.stop.load(Ordering::Acquire) {
            return;
        }
        seen = team.epochs_started.load(Ordering::Acquire);
        let until = Instant::from_micros(team.until.load(Ordering::Acquire));
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_shard(team, k, until);
        }));
        if ran.is_err() {
            team.failed.store(true, Ordering::Release);
        }
        team.pending.fetch_sub(1, Ordering::AcqRel);
        team.wake();
    }
}

/// Runs the epoch on shard `k`, whose nodes were handed over in [`Shard::held`]. (A
/// thread always runs the same shard, so that its nodes stay in that core's caches.)
fn run_shard(team: &Team, k: usize, until: Instant) {
    let net = read(&team.net);
    let mut shard = lock(&team.shards[k]);
    let mut nodes = std::mem::take(&mut shard.held);
    shard.epoch(&mut nodes, team, &net, until);
    shard.held = nodes;
}

/// Tells the helper threads to stop when the run ends, however it ends.
pub(in crate::sim) struct StopHelpers(pub(in crate::sim) Arc<Team>);

impl Drop for StopHelpers {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Release);
        self.0.wake();
    }
}
