//! Convergence: once the network healed, routing tables recovered, a replication round
//! ran and cached copies expired (the scenario's `checks.convergence_s`), the K closest
//! live nodes of every key written hold the same version of it, read from their stores,
//! and that version is at least the newest acknowledged one.

use netabase_core::{RecordKey, RecordStore, Version};

use super::acked_writes::{Acks, newest_before, note};
use super::{Checker, Detail, show_key, violation};
use crate::history::OpRecord;
use crate::report::Violation;
use crate::scenario::Scenario;
use crate::sim::World;

/// The `k` live nodes closest to `key`, closest first.
pub(crate) fn closest_live(world: &World, key: &RecordKey, k: usize) -> Vec<usize> {
    let target = key.key();
    let mut live: Vec<(netabase_core::Distance, usize)> = world
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.is_up())
        .map(|(i, n)| (n.key.distance(&target), i))
        .collect();
    live.sort_unstable();
    live.into_iter().take(k).map(|(_, i)| i).collect()
}

pub(crate) struct Convergence {
    k: usize,
    acks: Acks,
    keys: Vec<Vec<u8>>,
}

impl Convergence {
    pub(crate) fn new(scenario: &Scenario) -> Self {
        Convergence {
            k: scenario.core.k.unwrap_or(20),
            acks: Acks::default(),
            keys: Vec::new(),
        }
    }
}

impl Checker for Convergence {
    fn name(&self) -> &'static str {
        "convergence"
    }

    fn on_complete(&mut self, _: &World, op: &OpRecord, _: &Detail<'_>, _: &mut Vec<Violation>) {
        if op.is_write() && op.version.is_some() {
            self.keys.push(op.key.clone());
        }
        note(&mut self.acks, op);
    }

    fn on_converged(&mut self, world: &World, out: &mut Vec<Violation>) {
        self.keys.sort();
        self.keys.dedup();
        let mut bad = 0;
        for key in &self.keys {
            let Ok(rk) = RecordKey::new(key) else {
                continue;
            };
            let held: Vec<(usize, Option<Version>)> = closest_live(world, &rk, self.k)
                .into_iter()
                .map(|i| {
                    let n = &world.nodes[i];
                    let v = n
                        .node()
                        .and_then(|node| node.store().get(&rk).ok().flatten())
                        .filter(|r| !r.is_expired(world.now + n.skew))
                        .and_then(|r| crate::sim::version_of(&r.value))
                        .map(|(v, _)| v);
                    (i, v)
                })
                .collect();
            let newest = held.iter().filter_map(|(_, v)| *v).max();
            let differ: Vec<usize> = held
                .iter()
                .filter(|(_, v)| *v != newest)
                .map(|(i, _)| *i)
                .collect();
            let acked = newest_before(&self.acks, key, world.now);
            let behind = acked.is_some_and(|(a, ..)| newest.is_none_or(|n| n < a));
            if differ.is_empty() && !behind {
                continue;
            }
            bad += 1;
            if bad > 10 {
                continue;
            }
            let msg = if behind {
                format!(
                    "the {} closest nodes of {} hold at most version {:?}, older than the acknowledged {:?}",
                    held.len(),
                    show_key(key),
                    newest.map(|v| v.timestamp),
                    acked.map(|(a, ..)| a.timestamp)
                )
            } else {
                format!(
                    "{} of the {} closest nodes of {} do not hold its newest version {:?} (nodes {:?})",
                    differ.len(),
                    held.len(),
                    show_key(key),
                    newest.map(|v| v.timestamp),
                    &differ[..differ.len().min(5)]
                )
            };
            out.push(violation(self, world, msg));
        }
        if bad > 10 {
            out.push(violation(
                self,
                world,
                format!("{} more keys did not converge", bad - 10),
            ));
        }
    }
}
