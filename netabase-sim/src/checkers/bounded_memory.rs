//! No node's memory grows past its bounds: routing table, pending queries and requests,
//! lookup candidates, stored records, open connections.

use super::{Checker, violation};
use crate::report::Violation;
use crate::sim::World;

pub(crate) struct BoundedMemory;

impl Checker for BoundedMemory {
    fn name(&self) -> &'static str {
        "bounded-memory"
    }

    fn on_tick(&mut self, world: &World, out: &mut Vec<Violation>) {
        let max_connections = world.scenario.network.max_connections;
        for (i, n) in world.nodes.iter().enumerate() {
            if n.open_connections() > max_connections {
                out.push(violation(
                    self,
                    world,
                    format!(
                        "node {i} has {} connections open (at most {max_connections})",
                        n.open_connections()
                    ),
                ));
            }
            let Some(node) = n.node() else { continue };
            if let Err(e) = node.check_invariants() {
                out.push(violation(self, world, format!("node {i}: {e}")));
            }
            let store = node.store();
            if store.record_count() > store.config().max_records {
                out.push(violation(
                    self,
                    world,
                    format!("node {i} holds {} records", store.record_count()),
                ));
            }
            if node.queued_job_count()
                > store.config().max_records + store.config().max_provided_keys
            {
                out.push(violation(
                    self,
                    world,
                    format!("node {i} queued {} jobs", node.queued_job_count()),
                ));
            }
        }
    }
}
