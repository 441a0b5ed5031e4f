//! A node's clock never goes back: every record a node seals carries a higher version than
//! every record it sealed before, across crashes and restarts and whatever its wall clock
//! does (the hybrid logical clock's persisted ceiling guarantees it), except writes a crash
//! cut short, which may never have left the node.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::{Checker, Detail, violation};
use crate::history::{OpRecord, Outcome};
use crate::report::Violation;
use crate::sim::CRASHED;
use crate::sim::World;
use netabase_core::Instant;

#[derive(Default)]
pub(crate) struct OwnVersions {
    /// Per node: (when the write started, its op) -> its timestamp.
    sealed: FxHashMap<usize, BTreeMap<(Instant, usize), u64>>,
    reported: u64,
}

impl Checker for OwnVersions {
    fn name(&self) -> &'static str {
        "own-versions"
    }

    fn on_complete(
        &mut self,
        world: &World,
        op: &OpRecord,
        _: &Detail<'_>,
        out: &mut Vec<Violation>,
    ) {
        let Some(v) = op.version.filter(|_| op.is_write()) else {
            return;
        };
        // A write cut short by a crash may never have left the node (its requests wait
        // for the clock ceiling that covers it to be durable, and the crash lost both):
        // nobody saw its version, so a later one may be lower. Versions that were seen are
        // all covered by the persisted ceiling.
        if op.outcome == Outcome::Failed(CRASHED.into()) {
            return;
        }
        let writes = self.sealed.entry(op.node).or_default();
        let at = (op.invoked, op.id);
        let before = writes.range(..at).next_back().map(|(k, t)| (k.1, *t));
        let after = writes
            .range((std::ops::Bound::Excluded(at), std::ops::Bound::Unbounded))
            .next()
            .map(|(k, t)| (k.1, *t));
        writes.insert(at, v.timestamp);
        let mut msgs = Vec::new();
        if let Some((prev, t)) = before
            && t >= v.timestamp
        {
            msgs.push(format!(
                "node {} sealed #{} at timestamp {} after #{prev} at {t}",
                op.node, op.id, v.timestamp
            ));
        }
        if let Some((next, t)) = after
            && t <= v.timestamp
        {
            msgs.push(format!(
                "node {} sealed #{next} at timestamp {t} after #{} at {}",
                op.node, op.id, v.timestamp
            ));
        }
        for msg in msgs {
            if self.reported < 10 {
                self.reported += 1;
                out.push(violation(self, world, msg));
            }
        }
    }
}
