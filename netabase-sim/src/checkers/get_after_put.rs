//! A get issued after a put was acknowledged finds that value or a newer one (by version)
//! at least as often as the scenario demands when no fault touched either node. (That every
//! value read was written is [`super::monotonic_reads`]'s.)

use super::{Checker, Detail, reads_at_least, violation};
use crate::history::{OpKind, OpRecord};
use crate::report::Violation;
use crate::scenario::Scenario;
use crate::sim::World;

pub(crate) struct GetAfterPut {
    min_success: f64,
    eligible: u64,
    found: u64,
}

impl GetAfterPut {
    pub(crate) fn new(scenario: &Scenario) -> Self {
        GetAfterPut {
            min_success: scenario.checks.min_get_success,
            eligible: 0,
            found: 0,
        }
    }
}

impl Checker for GetAfterPut {
    fn name(&self) -> &'static str {
        "get-after-put"
    }

    fn on_complete(
        &mut self,
        world: &World,
        op: &OpRecord,
        _: &Detail<'_>,
        _: &mut Vec<Violation>,
    ) {
        if op.kind != OpKind::Get {
            return;
        }
        let Some(put) = op.reads.map(|p| &world.history.ops[p]) else {
            return;
        };
        let end = op.completed.unwrap_or(world.now);
        if world
            .faults
            .disturbed(&[op.node, put.node], put.invoked, end)
        {
            return;
        }
        self.eligible += 1;
        if op.ok() && reads_at_least(op, put) {
            self.found += 1;
        }
    }

    fn finish(&mut self, world: &World, out: &mut Vec<Violation>) {
        if self.eligible == 0 {
            return;
        }
        let rate = self.found as f64 / self.eligible as f64;
        if rate < self.min_success {
            let msg = format!(
                "only {} of {} undisturbed gets after a completed put found the value ({:.2}% < {:.2}%)",
                self.found,
                self.eligible,
                rate * 100.0,
                self.min_success * 100.0
            );
            out.push(violation(self, world, msg));
        }
    }
}
