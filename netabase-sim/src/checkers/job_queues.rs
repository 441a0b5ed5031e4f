//! Background work stays bounded: a node never queues more jobs (replication,
//! republication and outbox publications waiting for a query slot) than its configured
//! `max_queued_jobs`, however many records it holds or however long a partition keeps its
//! publications from finishing. Checked with the memory bounds.

use super::{Checker, violation};
use crate::report::Violation;
use crate::sim::World;

#[derive(Default)]
pub(crate) struct JobQueues {
    reported: u64,
}

impl Checker for JobQueues {
    fn name(&self) -> &'static str {
        "job-queues"
    }

    fn on_tick(&mut self, world: &World, out: &mut Vec<Violation>) {
        for (i, n) in world.nodes.iter().enumerate() {
            let Some(node) = n.node() else { continue };
            let max = node.config().max_queued_jobs;
            if node.queued_job_count() > max && self.reported < 10 {
                self.reported += 1;
                out.push(violation(
                    self,
                    world,
                    format!(
                        "node {i} queued {} background jobs (at most {max})",
                        node.queued_job_count()
                    ),
                ));
            }
        }
    }
}
