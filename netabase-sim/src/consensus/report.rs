//! The report of one consensus run.

use serde::Serialize;

use crate::report::Violation;

/// How often each fault and protocol path was exercised: a sweep whose counters stay at
/// zero tested less than it claims.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// Elections won (terms led), over every incarnation of every member.
    pub elections_won: u64,
    /// Reads a leader answered from its lease.
    pub lease_reads: u64,
    /// Retried entries the state answered from its dedup table.
    pub dedup_hits: u64,
    /// Member crashes (a whole-cluster crash counts each member).
    pub crashes: u64,
    /// Whole-cluster crashes.
    pub cluster_crashes: u64,
    /// Member restarts.
    pub restarts: u64,
    /// Process pauses.
    pub pauses: u64,
    /// Partitions.
    pub partitions: u64,
    /// Messages delivered late (after `network.late_ms`).
    pub late_deliveries: u64,
    /// Messages delivered to a member that had already seen a higher round than the
    /// message's ballot.
    pub old_ballot_deliveries: u64,
    /// Snapshots members installed (they were behind slots others compacted away).
    pub snapshot_installs: u64,
    /// Membership changes decided (reported done to the member that asked).
    pub membership_changes: u64,
    /// Changes asked for that remove or replace the leader of the moment.
    pub leader_removals: u64,
    /// Changes asked for while a node was down.
    pub changes_while_down: u64,
}

impl Coverage {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Coverage) {
        for (a, b) in self.counters_mut().into_iter().zip(other.counters()) {
            *a += b.1;
        }
    }

    /// Every counter, by name.
    pub fn counters(&self) -> [(&'static str, u64); 14] {
        [
            ("elections_won", self.elections_won),
            ("lease_reads", self.lease_reads),
            ("dedup_hits", self.dedup_hits),
            ("crashes", self.crashes),
            ("cluster_crashes", self.cluster_crashes),
            ("restarts", self.restarts),
            ("pauses", self.pauses),
            ("partitions", self.partitions),
            ("late_deliveries", self.late_deliveries),
            ("old_ballot_deliveries", self.old_ballot_deliveries),
            ("snapshot_installs", self.snapshot_installs),
            ("membership_changes", self.membership_changes),
            ("leader_removals", self.leader_removals),
            ("changes_while_down", self.changes_while_down),
        ]
    }

    fn counters_mut(&mut self) -> [&mut u64; 14] {
        [
            &mut self.elections_won,
            &mut self.lease_reads,
            &mut self.dedup_hits,
            &mut self.crashes,
            &mut self.cluster_crashes,
            &mut self.restarts,
            &mut self.pauses,
            &mut self.partitions,
            &mut self.late_deliveries,
            &mut self.old_ballot_deliveries,
            &mut self.snapshot_installs,
            &mut self.membership_changes,
            &mut self.leader_removals,
            &mut self.changes_while_down,
        ]
    }
}

/// Client operations of one kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConsensusOps {
    /// Issued (accepted by the member).
    pub issued: u64,
    /// Answered.
    pub ok: u64,
    /// Outcome unknown (writes: indeterminate, proposer crashed, unfinished).
    pub unknown: u64,
    /// Failed (reads: timed out, or the member crashed).
    pub failed: u64,
}

/// Everything a consensus run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ConsensusReport {
    /// Scenario name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Voting members.
    pub members: usize,
    /// Virtual time simulated (safety and liveness phases), ms.
    pub virtual_ms: u64,
    /// Wall-clock time taken, ms.
    pub wall_ms: u64,
    /// Events processed.
    pub events: u64,
    /// Messages sent.
    pub messages: u64,
    /// Writes (puts, compare-and-sets, appends).
    pub writes: ConsensusOps,
    /// Linearizable reads.
    pub linearizable_reads: ConsensusOps,
    /// Lease reads.
    pub lease_reads: ConsensusOps,
    /// Local reads.
    pub local_reads: ConsensusOps,
    /// Slots every member applied at the end.
    pub slots: u64,
    /// How much of the fault and protocol space the run exercised.
    pub coverage: Coverage,
    /// Hash of every delivered message and processed event: equal seeds give equal
    /// hashes.
    pub trace_hash: String,
    /// Invariants that did not hold (empty when all held).
    pub violations: Vec<Violation>,
}

impl ConsensusReport {
    /// A human-readable summary.
    pub fn human(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "consensus scenario {} (seed {}, {} members)",
            self.scenario, self.seed, self.members
        );
        let _ = writeln!(
            s,
            "  simulated {:.1} s in {:.2} s wall: {} events, {} messages, {} slots applied",
            self.virtual_ms as f64 / 1000.0,
            self.wall_ms as f64 / 1000.0,
            self.events,
            self.messages,
            self.slots
        );
        for (name, c) in [
            ("writes", &self.writes),
            ("linearizable reads", &self.linearizable_reads),
            ("lease reads", &self.lease_reads),
            ("local reads", &self.local_reads),
        ] {
            let _ = writeln!(
                s,
                "    {name:<19} {:>6} issued {:>6} ok {:>5} unknown {:>5} failed",
                c.issued, c.ok, c.unknown, c.failed
            );
        }
        let counters: Vec<String> = self
            .coverage
            .counters()
            .iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        let _ = writeln!(s, "  coverage: {}", counters.join(", "));
        let _ = writeln!(s, "  trace hash {}", self.trace_hash);
        if self.violations.is_empty() {
            let _ = writeln!(s, "  all invariants held");
        } else {
            let _ = writeln!(s, "  {} VIOLATIONS:", self.violations.len());
            for v in self.violations.iter().take(20) {
                let _ = writeln!(s, "    [{}] at {} ms: {}", v.checker, v.at_ms, v.message);
            }
        }
        s
    }
}
