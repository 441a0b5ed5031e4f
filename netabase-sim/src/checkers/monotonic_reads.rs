//! Every value a get returns was written to that key by some put or removal of the run
//! (the exact bytes it sealed), and reads at one node never go back in version: a get
//! returns at least the version of the node's own copy of the key when it started, of
//! every write of that node the network acknowledged, and of every earlier read of that
//! key at the node that started from a copy of its own (such a read stores what it found,
//! so later ones start from it). A node's own copy of a key never goes back either.
//!
//! Reads at a node that holds no copy of the key promise nothing more: a get stops at its
//! quorum, and the copies it meets first may be older than one an earlier get met.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::{Checker, Detail, show_key, source_of, violation};
use crate::history::{OpKind, OpRecord};
use crate::report::Violation;
use crate::sim::World;
use netabase_core::{Instant, Version};

/// Per (node, key).
type PerKey<T> = FxHashMap<(usize, Vec<u8>), T>;

#[derive(Default)]
pub(crate) struct MonotonicReads {
    /// What a later get at the node must reach: (from when, version, the operation).
    floor: PerKey<Vec<(Instant, Version, usize)>>,
    /// The node's own copy at the start of each get: (start, op) -> (version, incarnation).
    copy: PerKey<BTreeMap<(Instant, usize), (Version, u32)>>,
    reported: u64,
    more: u64,
}

impl MonotonicReads {
    fn report(&mut self, world: &World, out: &mut Vec<Violation>, msg: String) {
        if self.reported < 10 {
            self.reported += 1;
            out.push(violation(self, world, msg));
        } else {
            self.more += 1;
        }
    }

    /// From `at` on, gets at `node` must read `key` at `version` or newer.
    fn raise(&mut self, node: usize, key: &[u8], at: Instant, version: Version, op: usize) {
        self.floor
            .entry((node, key.to_vec()))
            .or_default()
            .push((at, version, op));
    }

    /// The node's copy of the key at the start of get `op` against its copies at the
    /// starts of the gets just before and after it (in the same incarnation).
    fn check_copy(&mut self, world: &World, op: &OpRecord, out: &mut Vec<Violation>) {
        let Some(local) = op.local_version else {
            return;
        };
        let copies = self.copy.entry((op.node, op.key.clone())).or_default();
        let at = (op.invoked, op.id);
        let before = copies.range(..at).next_back().map(|(k, v)| (k.1, *v));
        let after = copies
            .range((std::ops::Bound::Excluded(at), std::ops::Bound::Unbounded))
            .next()
            .map(|(k, v)| (k.1, *v));
        copies.insert(at, (local, op.incarnation));
        let mut msgs = Vec::new();
        if let Some((prev, (v, inc))) = before
            && inc == op.incarnation
            && local < v
        {
            msgs.push((prev, v, op.id, local));
        }
        if let Some((next, (v, inc))) = after
            && inc == op.incarnation
            && v < local
        {
            msgs.push((op.id, local, next, v));
        }
        for (a, va, b, vb) in msgs {
            let msg = format!(
                "node {}'s copy of {} went back from version {} (at get #{a}) to {} (at get #{b})",
                op.node,
                show_key(&op.key),
                va.timestamp,
                vb.timestamp
            );
            self.report(world, out, msg);
        }
    }
}

impl Checker for MonotonicReads {
    fn name(&self) -> &'static str {
        "monotonic-reads"
    }

    fn on_complete(
        &mut self,
        world: &World,
        op: &OpRecord,
        _: &Detail<'_>,
        out: &mut Vec<Violation>,
    ) {
        if op.is_write() {
            if op.ok()
                && let (Some(v), Some(done)) = (op.version, op.completed)
            {
                self.raise(op.node, &op.key, done, v, op.id);
            }
            return;
        }
        if op.kind != OpKind::Get {
            return;
        }
        // A node's own copy never goes back within one run of the node.
        self.check_copy(world, op, out);
        if !op.ok() {
            return;
        }
        if source_of(world, op).is_none() {
            let msg = format!(
                "get #{} at node {} read a value of {} bytes under {} that no write of the run wrote",
                op.id,
                op.node,
                op.value.len(),
                show_key(&op.key)
            );
            self.report(world, out, msg);
            return;
        }
        let Some(read) = op.version else { return };
        let floor = self
            .floor
            .get(&(op.node, op.key.clone()))
            .and_then(|f| {
                f.iter()
                    .filter(|(at, ..)| *at <= op.invoked)
                    .map(|&(_, v, by)| (v, by))
                    .max()
            })
            .into_iter()
            .chain(op.local_version.map(|v| (v, op.id)))
            .max();
        if let Some((floor, by)) = floor
            && read < floor
        {
            let msg = format!(
                "get #{} at node {} read {} at version {}, older than version {} it already had (#{by})",
                op.id,
                op.node,
                show_key(&op.key),
                read.timestamp,
                floor.timestamp,
            );
            self.report(world, out, msg);
        }
        if op.local_version.is_some()
            && let Some(done) = op.completed
        {
            // It started from a copy of its own, which now holds what it read.
            self.raise(op.node, &op.key, done, read, op.id);
        }
    }

    fn finish(&mut self, world: &World, out: &mut Vec<Violation>) {
        if self.more > 0 {
            let msg = format!("{} more reads went back in version", self.more);
            out.push(violation(self, world, msg));
        }
    }
}
