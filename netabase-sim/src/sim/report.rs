//! The report of a finished run.

use std::time::Duration;

use super::Simulation;
use super::engine::lock;
use crate::history::{OpKind, OpRecord};
use crate::report::{OpCounts, Report, percentile};

impl Simulation {
    pub(super) fn report(self, wall: Duration) -> Report {
        let ops = &self.world.history.ops;
        let mut counts: [OpCounts; 6] = Default::default();
        let mut hops = Vec::new();
        let mut lat = Vec::new();
        for op in ops {
            let c = &mut counts[op.kind as usize];
            c.issued += 1;
            if op.ok() {
                c.ok += 1;
                if matches!(op.kind, OpKind::Lookup | OpKind::Get) {
                    hops.push(op.hops);
                }
                if let Some(l) = op.latency_ms() {
                    lat.push(l);
                }
            } else {
                c.failed += 1;
            }
        }
        hops.sort_unstable();
        lat.sort_by(f64::total_cmp);
        let ok = ops.iter().filter(|o| o.ok()).count() as u64;
        let gets: Vec<&OpRecord> = ops
            .iter()
            .filter(|o| o.kind == OpKind::Get && o.reads.is_some())
            .collect();
        let gets_ok = gets
            .iter()
            .filter(|g| {
                g.ok()
                    && g.reads
                        .is_some_and(|p| crate::checkers::reads_at_least(g, &ops[p]))
            })
            .count();
        let wall_ms = wall.as_millis() as u64;
        let events = self.events();
        // The whole network's events, then every node's own stream, in node order.
        let mut trace = self.trace;
        trace.update(&self.trace_buf);
        for n in self.world.nodes.iter() {
            trace.update(&n.trace.to_le_bytes());
        }
        let [puts, gets_c, provides, get_providers, lookups, removes] = counts;
        Report {
            scenario: self.world.scenario.name.clone(),
            seed: self.world.seed,
            nodes: self.world.nodes.len(),
            threads: self.team.shards.len(),
            virtual_ms: self.world.now.as_millis(),
            wall_ms,
            events,
            events_per_sec: events as f64 / wall.as_secs_f64().max(1e-9),
            ops: ops.len() as u64,
            ops_ok: ok,
            ops_failed: ops.len() as u64 - ok,
            puts,
            gets: gets_c,
            provides,
            get_providers,
            lookups,
            removes,
            get_after_put_success: if gets.is_empty() {
                1.0
            } else {
                gets_ok as f64 / gets.len() as f64
            },
            lookup_hops_p50: percentile(&hops, 50.0),
            lookup_hops_p99: percentile(&hops, 99.0),
            latency_ms_p50: percentile(&lat, 50.0),
            latency_ms_p99: percentile(&lat, 99.0),
            messages: self.team.shards.iter().map(|s| lock(s).messages).sum(),
            forged_refused: self
                .world
                .nodes
                .iter()
                .filter_map(|n| n.node())
                .map(|n| n.stats().forged_records)
                .sum(),
            clock_refused: self
                .world
                .nodes
                .iter()
                .filter_map(|n| n.node())
                .map(|n| n.stats().clock_refused)
                .sum(),
            trace_hash: format!("{:016x}", trace.digest()),
            violations: self.violations,
        }
    }
}
