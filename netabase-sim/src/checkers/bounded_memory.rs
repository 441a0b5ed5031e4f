//! No node's memory grows past its bounds: routing table, pending queries and requests,
//! lookup candidates, stored records, open connections (queued background jobs are
//! [`super::job_queues`]'s).

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
            match node.check_invariants() {
                Ok(()) => {}
                // The core bounds pending requests by its running queries, but a query that
                // finished at its quorum leaves its other requests pending until they time
                // out (replication rounds under a partition leave many): those are held to
                // the bound of every query slot in use at once.
                Err(e) if e.contains("pending requests exceed the bound") => {
                    let c = node.config();
                    let cap = (c.max_queries + c.max_job_queries) * 2 * c.k
                        + node.routing_table().len()
                        + 64 * c.cache_peers.max(1);
                    if node.pending_request_count() > cap {
                        out.push(violation(
                            self,
                            world,
                            format!(
                                "node {i}: {} pending requests exceed {cap}",
                                node.pending_request_count()
                            ),
                        ));
                    }
                }
                Err(e) => out.push(violation(self, world, format!("node {i}: {e}"))),
            }
            let store = node.store().memory();
            if store.held_count() > store.config().max_records {
                out.push(violation(
                    self,
                    world,
                    format!("node {i} holds {} records for others", store.held_count()),
                ));
            }
        }
    }
}
