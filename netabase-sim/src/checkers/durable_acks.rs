//! What a node acknowledged holding survives its crashes: every record it confirmed storing
//! (a PUT_VALUE answer) and every put of its own that completed is in its store when it
//! restarts, at that version or a newer one (unless it expired meanwhile). Only with a disk
//! model, where writes are durable only after a sync; the simulator compares the store a
//! crashed node keeps with what it acknowledged ([`World::lost_acks`]).

use super::{Checker, violation};
use crate::report::Violation;
use crate::sim::World;

#[derive(Default)]
pub(crate) struct DurableAcks {
    seen: usize,
}

impl Checker for DurableAcks {
    fn name(&self) -> &'static str {
        "durable-acks"
    }

    fn on_tick(&mut self, world: &World, out: &mut Vec<Violation>) {
        let lost = &world.lost_acks[self.seen..];
        for (node, at, what) in lost.iter().take(10usize.saturating_sub(self.seen)) {
            out.push(violation(
                self,
                world,
                format!(
                    "node {node} crashed at {} ms and lost {what}, which it had acknowledged",
                    at.as_millis()
                ),
            ));
        }
        if self.seen < 10 && self.seen + lost.len() > 10 {
            out.push(violation(
                self,
                world,
                "more acknowledged records were lost in crashes".into(),
            ));
        }
        self.seen = world.lost_acks.len();
    }
}
