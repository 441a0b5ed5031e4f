//! No resurrection: once a removal (a tombstone) is acknowledged, no get that starts after
//! the network healed and converged (and `checks.settle_s` after the removal) returns a
//! value older than it, and when the network
//! has converged none of the key's K closest live nodes holds such a value in its store.

use super::acked_writes::{Acks, after_convergence, newest_before, note, settled};
use super::{Checker, Detail, show_key, violation};
use crate::history::{OpKind, OpRecord};
use crate::report::Violation;
use crate::sim::World;
use netabase_core::RecordStore;

pub(crate) struct NoResurrection {
    acks: Acks,
    reported: u64,
    k: usize,
}

impl NoResurrection {
    pub(crate) fn new(scenario: &crate::scenario::Scenario) -> Self {
        NoResurrection {
            acks: Acks::default(),
            reported: 0,
            k: scenario.core.k.unwrap_or(20),
        }
    }

    fn report(&mut self, world: &World, out: &mut Vec<Violation>, msg: String) {
        if self.reported < 10 {
            self.reported += 1;
            out.push(violation(self, world, msg));
        }
    }
}

impl Checker for NoResurrection {
    fn name(&self) -> &'static str {
        "no-resurrection"
    }

    fn on_complete(
        &mut self,
        world: &World,
        op: &OpRecord,
        _: &Detail<'_>,
        out: &mut Vec<Violation>,
    ) {
        note(&mut self.acks, op);
        if op.kind != OpKind::Get || !op.ok() || op.tombstone || !after_convergence(world, op) {
            return;
        }
        let Some((removed, true, by)) = newest_before(&self.acks, &op.key, settled(world, op))
        else {
            return;
        };
        if op.version.is_none_or(|v| v < removed) {
            let msg = format!(
                "get #{} at node {} read {} back at version {:?} after removal #{by} at version {}",
                op.id,
                op.node,
                show_key(&op.key),
                op.version.map(|v| v.timestamp),
                removed.timestamp
            );
            self.report(world, out, msg);
        }
    }

    fn on_converged(&mut self, world: &World, out: &mut Vec<Violation>) {
        let mut keys: Vec<&Vec<u8>> = self.acks.keys().collect();
        keys.sort();
        let mut found = Vec::new();
        for key in keys {
            let Some((removed, true, by)) = newest_before(&self.acks, key, world.now) else {
                continue;
            };
            let Ok(rk) = netabase_core::RecordKey::new(key) else {
                continue;
            };
            for i in super::convergence::closest_live(world, &rk, self.k) {
                let n = &world.nodes[i];
                let Some(node) = n.node() else { continue };
                let Ok(Some(r)) = node.store().get(&rk) else {
                    continue;
                };
                if r.is_expired(world.now + n.skew) {
                    continue;
                }
                if let Some((v, false)) = crate::sim::version_of(&r.value)
                    && v < removed
                {
                    found.push(format!(
                        "node {i} holds {} at version {} after removal #{by} at version {}",
                        show_key(key),
                        v.timestamp,
                        removed.timestamp
                    ));
                }
            }
        }
        for msg in found {
            self.report(world, out, msg);
        }
    }
}
