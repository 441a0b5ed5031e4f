//! Lookups return peers that exist, closest first, without duplicates; a sample of the
//! lookups made while the network is whole is compared with a brute-force sort.

use netabase_core::{Key, PeerId};

use super::{Checker, Detail, violation};
use crate::history::{OpKind, OpRecord};
use crate::report::Violation;
use crate::scenario::Scenario;
use crate::sim::World;

pub(crate) struct LookupResults {
    sample_every: Option<u64>,
    seen: u64,
    k: usize,
}

impl LookupResults {
    pub(crate) fn new(scenario: &Scenario) -> Self {
        let p = scenario.checks.exact_lookup_sample;
        LookupResults {
            sample_every: (p > 0.0).then(|| (1.0 / p).round().max(1.0) as u64),
            seen: 0,
            k: scenario.core.k.unwrap_or(20),
        }
    }
}

impl Checker for LookupResults {
    fn name(&self) -> &'static str {
        "lookup-results"
    }

    fn on_complete(
        &mut self,
        world: &World,
        op: &OpRecord,
        detail: &Detail<'_>,
        out: &mut Vec<Violation>,
    ) {
        let (OpKind::Lookup, Detail::Lookup { target, peers }) = (op.kind, detail) else {
            return;
        };
        for p in peers.iter() {
            if !world.index.contains_key(p) {
                out.push(violation(
                    self,
                    world,
                    format!("lookup #{} returned {p:?}, which is no node", op.id),
                ));
            }
        }
        let sorted = peers.windows(2).all(|w| {
            Key::from_peer(&w[0]).distance(target) < Key::from_peer(&w[1]).distance(target)
        });
        if !sorted {
            out.push(violation(
                self,
                world,
                format!("lookup #{} is not sorted by distance", op.id),
            ));
        }
        let Some(every) = self.sample_every else {
            return;
        };
        let end = op.completed.unwrap_or(world.now);
        if op.invoked < world.all_joined_at || world.faults.any(op.invoked, end) {
            return;
        }
        self.seen += 1;
        if !self.seen.is_multiple_of(every) {
            return;
        }
        let local = world.nodes[op.node].peer;
        let mut live: Vec<(netabase_core::Distance, PeerId)> = world
            .nodes
            .iter()
            .filter(|n| n.is_up() && n.peer != local)
            .map(|n| (n.key.distance(target), n.peer))
            .collect();
        live.sort_unstable();
        let expected: Vec<PeerId> = live.into_iter().take(self.k).map(|(_, p)| p).collect();
        if expected != *peers {
            let missing = expected.iter().filter(|p| !peers.contains(p)).count();
            out.push(violation(
                self,
                world,
                format!(
                    "lookup #{} from node {} missed {missing} of the {} closest live peers",
                    op.id, op.node, self.k
                ),
            ));
        }
    }
}
