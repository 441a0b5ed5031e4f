//! After every fault healed, the network converges: once the grace period after the heal
//! has passed, every operation succeeds. Reads of records or announcements written while a
//! fault was active are exempt: a DHT brings those to the closest peers of the whole network
//! only at its next replication or republication (sync reconciles them sooner). So are
//! writes that a newer version superseded: under last writer wins they must fail.

use super::{Checker, Detail, violation};
use crate::history::{OpRecord, Outcome};
use crate::report::Violation;
use crate::sim::World;

#[derive(Default)]
pub(crate) struct Liveness {
    failures: u64,
    reported: u64,
}

impl Checker for Liveness {
    fn name(&self) -> &'static str {
        "liveness"
    }

    fn on_complete(
        &mut self,
        world: &World,
        op: &OpRecord,
        _: &Detail<'_>,
        out: &mut Vec<Violation>,
    ) {
        let Some(heal) = world.heal_at else { return };
        let converged =
            heal + std::time::Duration::from_secs_f64(world.scenario.checks.liveness_grace_s);
        if op.invoked < converged {
            return;
        }
        if let Some(w) = op.reads.map(|r| &world.history.ops[r])
            && world
                .faults
                .any(w.invoked, w.completed.unwrap_or(world.now))
        {
            return;
        }
        if let Outcome::Failed(reason) = &op.outcome
            && !reason.starts_with(crate::sim::SUPERSEDED)
        {
            self.failures += 1;
            if self.reported < 10 {
                self.reported += 1;
                let msg = format!(
                    "{:?} #{} at node {} failed after the network healed: {reason}",
                    op.kind, op.id, op.node
                );
                out.push(violation(self, world, msg));
            }
        }
    }

    fn finish(&mut self, world: &World, out: &mut Vec<Violation>) {
        if self.failures > self.reported {
            let msg = format!(
                "{} more operations failed after the network healed",
                self.failures - self.reported
            );
            out.push(violation(self, world, msg));
        }
        // Operations that never completed before the end.
        let Some(heal) = world.heal_at else { return };
        let converged =
            heal + std::time::Duration::from_secs_f64(world.scenario.checks.liveness_grace_s);
        let unfinished = world
            .history
            .ops
            .iter()
            .filter(|o| o.invoked >= converged && o.outcome == Outcome::Pending)
            .filter(|o| world.now.saturating_duration_since(o.invoked).as_secs() > 70)
            .count();
        if unfinished > 0 {
            out.push(violation(
                self,
                world,
                format!("{unfinished} operations never finished after the network healed"),
            ));
        }
    }
}
