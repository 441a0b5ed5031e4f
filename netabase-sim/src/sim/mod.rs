//! The simulation: many cores under one virtual clock, on one thread or several.
//!
//! A [`Simulation`] is set up from a scenario and a seed, then [`Simulation::run`] steps
//! it to the end: each step either processes one event that touches the whole network
//! (a join, crash, restart, partition, clog, heal, memory check, final reads,
//! convergence check), alone, or runs every node's events up to the end of an epoch,
//! after choosing the workload's operations that start in it. The checkers read the
//! [`World`] after every operation, at every memory check and at the end.
//!
//! The code is split by concern: `setup` schedules a run from its seed, `engine` steps
//! the nodes' events (shards, the threads that run them, the dispatch of one event),
//! `network` models links and their faults, `node` holds the simulated nodes (start,
//! crash, restart), `workload` chooses client operations and records their outcomes,
//! `trace` folds events into the trace hash and the trace file, and `report` sums a run
//! up.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use netabase_core::model::Envelope;
use netabase_core::{Config, Instant, PeerId, Version};
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;
use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::Xxh3;

use crate::checkers::Checker;
use crate::disk::StoreBugs;
use crate::history::{FaultLog, History, Scope};
use crate::queue::EventQueue;
use crate::report::{Report, Violation};
use crate::scenario::Scenario;

mod engine;
mod network;
mod node;
mod report;
mod setup;
mod trace;
mod workload;

pub use node::{NodeState, Nodes, SimNode};

use engine::{Shard, StopHelpers, Team, helper, lock};
use network::Net;
use trace::Line;
use workload::Done;

/// Length of an epoch, in lookaheads (of at least a millisecond): the workload's
/// operations are chosen, and finished ones recorded and checked, between epochs.
const EPOCH_LOOKAHEADS: u32 = 16;

/// SplitMix64: derives independent 64-bit values from a seed and a counter.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform draw in `[0, 1)`.
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn secs(s: f64) -> Instant {
    Instant::from_micros((s.max(0.0) * 1e6) as u64)
}

fn ms(m: f64) -> Duration {
    Duration::from_micros((m.max(0.0) * 1e3) as u64)
}

/// The failure of an operation whose node crashed before it finished.
pub(crate) const CRASHED: &str = "node crashed";

/// How a put or removal that a newer version superseded fails (the write lost, as last
/// writer wins says it must).
pub const SUPERSEDED: &str = "superseded by a newer version";

/// The version of a record value, if it is a signed envelope.
pub fn version_of(value: &[u8]) -> Option<(Version, bool)> {
    Envelope::version_of(value)
}

/// The state checkers may read.
pub struct World {
    /// The scenario.
    pub scenario: Scenario,
    /// The seed of this run.
    pub seed: u64,
    /// Current virtual time.
    pub now: Instant,
    /// The nodes.
    pub nodes: Nodes,
    /// Node index by peer id.
    pub index: FxHashMap<PeerId, usize>,
    /// When faults were active.
    pub faults: FaultLog,
    /// Every client operation.
    pub history: History,
    /// When the last node joined.
    pub all_joined_at: Instant,
    /// When every fault healed (start of the liveness phase), if scheduled.
    pub heal_at: Option<Instant>,
    /// Records a node acknowledged holding that its disk did not keep through a crash:
    /// (node, when it crashed, what was lost).
    pub lost_acks: Vec<(usize, Instant, String)>,
}

/// An event that touches the whole network: processed between epochs, alone. (The
/// workload's operations are chosen between epochs too, but each one starts as an event
/// of its node, so they do not cut epochs short.)
#[derive(Debug)]
enum Global {
    Join(u32),
    Crash(u32),
    Restart(u32),
    PartitionStart(usize),
    PartitionEnd(usize),
    Clog(u32),
    Unclog(u32),
    HealAll,
    MemCheck,
    /// Every key with an acknowledged write is read once more.
    FinalReads,
    /// The closest live nodes of every key are compared.
    Converge,
}

/// A simulation run in progress.
pub struct Simulation {
    /// The state checkers read.
    pub world: World,
    config: Config,
    team: Arc<Team>,
    /// Events of the whole network, in order of (time, sequence).
    globals: EventQueue<Global>,
    /// When the workload chooses its next operation.
    next_op: Option<Instant>,
    seq: u64,
    work_rng: ChaCha8Rng,
    crashed_fault: Vec<Option<usize>>,
    completed_provides: Vec<usize>,
    /// Record keys with an acknowledged write, in the order of their first one.
    keys: Vec<Vec<u8>>,
    /// The latest acknowledged write of each key (by completion).
    latest_acked: FxHashMap<Vec<u8>, usize>,
    /// Puts of fresh keys issued.
    fresh_keys: usize,
    bugs: StoreBugs,
    /// Hash of the events of the whole network (the nodes' own are in each node).
    trace: Xxh3,
    /// Trace bytes not yet hashed: the hash is fed in large chunks (a streaming hash of
    /// the same bytes is the same however they are split), which costs less per event.
    trace_buf: Vec<u8>,
    events: u64,
    checkers: Vec<Box<dyn Checker>>,
    violations: Vec<Violation>,
    end: Instant,
    trace_out: Option<Box<dyn std::io::Write>>,
    /// Operations finished in the last epoch, gathered from the shards.
    done: Vec<Done>,
    lines: Vec<Line>,
}

impl Simulation {
    /// Runs the nodes' events on `threads` threads (at least one; at most one per node).
    /// The run is the same whatever the number: same events, same results, same trace
    /// hash. Call it before [`Simulation::run`]. A network whose links can have no latency
    /// at all (`latency_min_ms` under a microsecond) runs on one thread: a message could
    /// arrive at the very instant it was sent, so no shard could run ahead of another.
    pub fn set_threads(&mut self, threads: usize) {
        let n = self.world.nodes.len();
        let threads = if self.team.lookahead == 0 {
            1
        } else {
            threads.clamp(1, n)
        };
        let part_len = n.div_ceil(threads);
        self.world.nodes.regroup(part_len);
        let shards = self.world.nodes.parts.len();
        let team = Arc::get_mut(&mut self.team)
            .expect("the simulation's threads start only when it runs, which consumes it");
        // Nothing is scheduled on the shards before the run starts.
        team.shards = (0..shards)
            .map(|k| Mutex::new(Shard::new(k, part_len, shards)))
            .collect();
        team.mail = (0..shards * shards)
            .map(|_| Mutex::new(Vec::new()))
            .collect();
        team.progress = (0..shards).map(|_| AtomicU64::new(0)).collect();
    }

    /// Writes one line per processed event (time in µs, kind, node, id) to `out`.
    pub fn set_trace_writer(&mut self, out: Box<dyn std::io::Write>) {
        self.trace_out = Some(out);
        self.net_mut().tracing = true;
    }

    /// The network, to change between epochs.
    fn net_mut(&self) -> std::sync::RwLockWriteGuard<'_, Net> {
        self.team
            .net
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&mut self, at: Instant, ev: Global) {
        self.seq += 1;
        self.globals.push(at, self.seq, ev);
    }

    /// Processes the next epoch or event of the whole network; `false` when the run is
    /// over.
    fn step(&mut self) -> bool {
        let nodes_next = self
            .team
            .shards
            .iter()
            .filter_map(|s| lock(s).next_at())
            .min();
        let global_next = self.globals.peek_time();
        let work_next = [nodes_next, self.next_op].into_iter().flatten().min();
        if let Some(g) = global_next
            && work_next.is_none_or(|w| g <= w)
        {
            if g > self.end {
                return false;
            }
            let (at, _, ev) = self.globals.pop().expect("just peeked");
            self.world.now = self.world.now.max(at);
            self.global(ev);
            self.post_all();
            return true;
        }
        let Some(start) = work_next else {
            return false;
        };
        if start > self.end {
            return false;
        }
        let mut until = (start
            + Duration::from_micros(self.team.lookahead.max(1_000)) * EPOCH_LOOKAHEADS)
            .min(self.end + Duration::from_micros(1));
        if let Some(g) = global_next {
            until = until.min(g);
        }
        // The operations that start in this epoch, chosen now: no node joins, crashes or
        // restarts before the epoch ends.
        while let Some(t) = self.next_op.filter(|&t| t < until) {
            self.issue_op(t);
            let w = &self.world.scenario.workload;
            let interval = (0.5 + unit(&mut self.work_rng)) / w.rate_per_s;
            let next = t + Duration::from_secs_f64(interval);
            self.next_op = (next <= secs(w.end_s)).then_some(next);
        }
        self.run_epoch(start, until);
        true
    }

    fn global(&mut self, ev: Global) {
        let now = self.world.now;
        self.events += 1;
        match ev {
            Global::Join(i) => {
                self.trace_event(now, 6, i, 0);
                self.start_node(i as usize);
            }
            Global::Crash(i) => {
                self.trace_event(now, 7, i, 0);
                self.crash(i as usize);
            }
            Global::Restart(i) => {
                self.trace_event(now, 8, i, 0);
                let i = i as usize;
                if let Some(f) = self.crashed_fault[i].take() {
                    self.world.faults.end(f, now);
                }
                if matches!(self.world.nodes[i].state, NodeState::Down(_)) {
                    self.world.nodes[i].incarnation += 1;
                    self.start_node(i);
                }
            }
            Global::PartitionStart(p) => {
                self.trace_event(now, 9, p as u32, 0);
                let heal_at = self.world.heal_at;
                let mut net = self
                    .team
                    .net
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                if !net.partitions[p].active && heal_at.is_none_or(|h| now < h) {
                    net.partitions[p].active = true;
                    net.partitions[p].fault = Some(self.world.faults.start(now, Scope::All));
                }
            }
            Global::PartitionEnd(p) => {
                self.trace_event(now, 10, p as u32, 0);
                self.end_partition(p, now);
            }
            Global::Clog(i) => {
                self.trace_event(now, 11, i, 0);
                let i = i as usize;
                let heal_at = self.world.heal_at;
                let mut net = self
                    .team
                    .net
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                if net.clogged[i].is_none() && heal_at.is_none_or(|h| now < h) {
                    net.clogged[i] = Some(self.world.faults.start(now, Scope::Node(i)));
                }
            }
            Global::Unclog(i) => {
                self.trace_event(now, 12, i, 0);
                let fault = self.net_mut().clogged[i as usize].take();
                if let Some(f) = fault {
                    self.world.faults.end(f, now);
                }
            }
            Global::HealAll => {
                self.trace_event(now, 13, 0, 0);
                self.heal_all(now);
            }
            Global::FinalReads => {
                self.trace_event(now, 18, 0, 0);
                self.final_reads(now);
            }
            Global::Converge => {
                let mut out = Vec::new();
                for c in &mut self.checkers {
                    c.on_converged(&self.world, &mut out);
                }
                self.violations.extend(out);
            }
            Global::MemCheck => {
                let mut out = Vec::new();
                for c in &mut self.checkers {
                    c.on_tick(&self.world, &mut out);
                }
                self.violations.extend(out);
                let d = self.world.scenario.checks.memory_check_interval_s;
                self.push(now + Duration::from_secs_f64(d), Global::MemCheck);
            }
        }
    }

    /// Runs to the end; `progress` is called now and then with the virtual time reached.
    pub fn run(mut self, progress: &mut dyn FnMut(Instant)) -> Report {
        let started = std::time::Instant::now();
        let helpers: Vec<_> = (1..self.team.shards.len())
            .map(|k| {
                let team = Arc::clone(&self.team);
                std::thread::spawn(move || helper(&team, k))
            })
            .collect();
        let mut threads = vec![std::thread::current()];
        threads.extend(helpers.iter().map(|h| h.thread().clone()));
        // Set once per run: a simulation runs once.
        let _ = self.team.threads_of_run.set(threads);
        let stop = StopHelpers(Arc::clone(&self.team));
        let mut reported = 0u64;
        while self.step() {
            let events = self.events();
            if events - reported >= 200_000 {
                reported = events;
                progress(self.world.now);
            }
        }
        drop(stop);
        for h in helpers {
            // A helper that panicked has said so in the epoch it panicked in.
            let _ = h.join();
        }
        self.world.now = self.world.now.max(self.end);
        // Operations still running at the end did not finish in time.
        let mut out = Vec::new();
        for c in &mut self.checkers {
            c.on_tick(&self.world, &mut out);
            c.finish(&self.world, &mut out);
        }
        self.violations.extend(out);
        let wall = started.elapsed();
        self.report(wall)
    }

    /// Events processed so far.
    fn events(&self) -> u64 {
        self.events + self.team.shards.iter().map(|s| lock(s).events).sum::<u64>()
    }
}

/// Runs `scenario` with `seed` to the end, on one thread.
pub fn run(scenario: &Scenario, seed: u64) -> Report {
    Simulation::new(scenario.clone(), seed).run(&mut |_| {})
}
