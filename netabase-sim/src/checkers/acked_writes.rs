//! No acknowledged write is lost: once every fault has healed and the liveness grace has
//! passed (time for routing tables to recover and for a replication round to carry what
//! was written during the faults to the whole network's closest peers), every get of a key
//! returns at least the newest version acknowledged `checks.settle_s` before it started
//! (a get stops at its quorum, and the first copies it meets may be stale or cached ones
//! that the next replication round updates). A later write that
//! failed may win (it is newer); an older one may not. (A newest acknowledged write that is
//! a removal is [`super::no_resurrection`]'s.)

use rustc_hash::FxHashMap;

use super::{Checker, Detail, show_key, violation};
use crate::history::{OpKind, OpRecord, Outcome};
use crate::report::Violation;
use crate::sim::World;
use netabase_core::{Instant, Version};

/// The acknowledged writes of each key: (when acknowledged, version, removal, op).
pub(crate) type Acks = FxHashMap<Vec<u8>, Vec<(Instant, Version, bool, usize)>>;

/// Records an acknowledged write.
pub(crate) fn note(acks: &mut Acks, op: &OpRecord) {
    if op.is_write()
        && op.ok()
        && let (Some(v), Some(at)) = (op.version, op.completed)
    {
        acks.entry(op.key.clone())
            .or_default()
            .push((at, v, op.tombstone, op.id));
    }
}

/// The newest write of `key` acknowledged before `at`.
pub(crate) fn newest_before(
    acks: &Acks,
    key: &[u8],
    at: Instant,
) -> Option<(Version, bool, usize)> {
    acks.get(key)?
        .iter()
        .filter(|(t, ..)| *t <= at)
        .map(|&(_, v, d, op)| (v, d, op))
        .max_by_key(|(v, ..)| *v)
}

/// Writes acknowledged before this instant must be visible to get `op`: `checks.settle_s`
/// before it started.
pub(crate) fn settled(world: &World, op: &OpRecord) -> Instant {
    op.invoked
        .saturating_sub(std::time::Duration::from_secs_f64(
            world.scenario.checks.settle_s,
        ))
}

/// Whether `op` started after the network healed and converged.
pub(crate) fn after_convergence(world: &World, op: &OpRecord) -> bool {
    world.heal_at.is_some_and(|h| {
        op.invoked >= h + std::time::Duration::from_secs_f64(world.scenario.checks.liveness_grace_s)
    })
}

#[derive(Default)]
pub(crate) struct AckedWrites {
    acks: Acks,
    reported: u64,
    more: u64,
}

impl Checker for AckedWrites {
    fn name(&self) -> &'static str {
        "acked-writes"
    }

    fn on_complete(
        &mut self,
        world: &World,
        op: &OpRecord,
        _: &Detail<'_>,
        out: &mut Vec<Violation>,
    ) {
        note(&mut self.acks, op);
        if op.kind != OpKind::Get || !after_convergence(world, op) {
            return;
        }
        let Some((newest, removal, by)) = newest_before(&self.acks, &op.key, settled(world, op))
        else {
            return;
        };
        let msg = match (&op.outcome, op.version) {
            (Outcome::Ok, Some(read)) if read >= newest => return,
            // Resurrections are reported by no-resurrection.
            (Outcome::Ok, Some(_)) if removal && !op.tombstone => return,
            (Outcome::Ok, read) => format!(
                "get #{} at node {} read {} at version {:?}, older than version {} acknowledged by #{by}",
                op.id,
                op.node,
                show_key(&op.key),
                read.map(|v| v.timestamp),
                newest.timestamp
            ),
            (Outcome::Failed(reason), _) if reason == "not found" => format!(
                "get #{} at node {} found nothing under {}, whose version {} #{by} acknowledged",
                op.id,
                op.node,
                show_key(&op.key),
                newest.timestamp
            ),
            _ => return,
        };
        if self.reported < 10 {
            self.reported += 1;
            out.push(violation(self, world, msg));
        } else {
            self.more += 1;
        }
    }

    fn finish(&mut self, world: &World, out: &mut Vec<Violation>) {
        if self.more > 0 {
            let msg = format!("{} more gets missed an acknowledged write", self.more);
            out.push(violation(self, world, msg));
        }
    }
}
