//! The discrete-event engine: the nodes' events, on one thread or several.
//!
//! Nodes are split into shards of consecutive indices, one per thread. Every event
//! belongs to one node, and a message takes at least the network's minimum latency (the
//! lookahead) to reach another node, so a shard may process its events up to one
//! lookahead past the slowest shard without waiting: nothing the others do later can reach
//! it sooner (conservative parallel simulation). Shards hand each other messages through
//! mailboxes. Time advances in epochs of 16 lookaheads, cut at every event
//! that touches the whole network (joins, crashes, partitions, memory checks), which runs
//! alone between epochs, as do choosing the workload's next operations and recording and
//! checking the finished ones.
//!
//! The run does not depend on the number of shards: events are ordered by (virtual time,
//! originating node, that node's own count), every random draw of a message comes from its
//! sender's generator, epochs are cut at the same times, and the trace hash folds each
//! node's own event stream. One thread and eight give the same trace hash.
//!
//! [`Shard`] holds a range of nodes' events and mailboxes, [`Team`] what the threads
//! share, and [`Cx`] processes one event of one node.

use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

use netabase_core::Instant;

use super::Simulation;
use super::network::Net;
use super::workload::{Finished, OpStart};
use crate::history::Outcome;

mod cx;
mod shard;
mod team;

pub(super) use cx::Cx;
pub(super) use shard::Shard;
use team::wait_until;
pub(super) use team::{StopHelpers, Team, helper};

/// An event of one node.
#[derive(Debug)]
pub(super) enum Ev {
    Deliver {
        to: u32,
        /// Incarnation the message is addressed to (answers); `None` for new requests.
        to_inc: Option<u32>,
        from: u32,
        /// Slot of the message in [`Shard::msgs`].
        msg: u32,
    },
    Timer {
        node: u32,
    },
    /// A client operation starts on a node.
    Op(Box<OpStart>),
    /// A node's disk finished sync number `seq`.
    SyncDone {
        node: u32,
        seq: u64,
    },
}

/// Locks `m`; a lock whose holder panicked still gives its data (the panic is reported on
/// its own).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read access to the network.
fn read(net: &RwLock<Net>) -> RwLockReadGuard<'_, Net> {
    net.read().unwrap_or_else(PoisonError::into_inner)
}

impl Simulation {
    /// Runs `f` on the shard holding node `i`, at the current time.
    pub(super) fn with_cx<R>(&mut self, i: usize, f: impl FnOnce(&mut Cx<'_>) -> R) -> R {
        let s = i / self.world.nodes.part_len;
        let net = read(&self.team.net);
        let mut shard = lock(&self.team.shards[s]);
        let mut cx = Cx {
            shard: &mut shard,
            nodes: &mut self.world.nodes.parts[s],
            net: &net,
            now: self.world.now,
        };
        f(&mut cx)
    }

    /// Posts the messages the last events of the whole network sent.
    pub(super) fn post_all(&mut self) {
        for shard in &self.team.shards {
            lock(shard).post(&self.team, Instant::ZERO);
        }
    }

    /// Processes every node's events before `until`: each shard on its own thread.
    pub(super) fn run_epoch(&mut self, start: Instant, until: Instant) {
        let team = Arc::clone(&self.team);
        let shards = team.shards.len();
        for p in &team.progress {
            p.store(start.as_micros(), Ordering::Release);
        }
        if shards > 1 {
            for k in 1..shards {
                lock(&team.shards[k]).held = std::mem::take(&mut self.world.nodes.parts[k]);
            }
            team.until.store(until.as_micros(), Ordering::Release);
            team.pending.store(shards - 1, Ordering::Release);
            team.epochs_started.fetch_add(1, Ordering::AcqRel);
            team.wake();
        }
        {
            let net = read(&team.net);
            lock(&team.shards[0]).epoch(&mut self.world.nodes.parts[0], &team, &net, until);
        }
        if shards > 1 {
            wait_until(|| team.pending.load(Ordering::Acquire) == 0);
            assert!(
                !team.failed.load(Ordering::Acquire),
                "a simulation thread panicked (its message is above)"
            );
            for k in 1..shards {
                self.world.nodes.parts[k] = std::mem::take(&mut lock(&team.shards[k]).held);
            }
        }
        // What finished in the epoch, in the order of a single run.
        for shard in &team.shards {
            let mut shard = lock(shard);
            self.done.append(&mut shard.done);
            self.lines.append(&mut shard.lines);
        }
        if !self.lines.is_empty() {
            self.lines.sort_unstable_by_key(|l| (l.at, l.order));
            if let Some(w) = self.trace_out.as_mut() {
                for l in &self.lines {
                    let _ = writeln!(w, "{}", l.text);
                }
            }
            self.lines.clear();
        }
        if !self.done.is_empty() {
            let mut done = std::mem::take(&mut self.done);
            done.sort_unstable_by_key(|d| (d.at, d.order));
            for d in done.drain(..) {
                self.world.now = d.at;
                match d.how {
                    Finished::Query(result, hops, local, superseded) => {
                        self.query_finished(d.op, result, hops, local, superseded);
                    }
                    Finished::Refused(e) => self.complete_op(d.op, Outcome::Failed(e), 0, None),
                    Finished::Sealed(value) => self.sealed(d.op, value),
                }
            }
            self.done = done;
        }
    }
}
