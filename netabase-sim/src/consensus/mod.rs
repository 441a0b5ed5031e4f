//! Consensus mode: a Multi-Paxos cluster of [`netabase_core::consensus::Member`]s under
//! seeded faults, a client workload, and checkers of safety, linearizability and
//! liveness.
//!
//! A scenario with a `[consensus]` section ([`ConsensusSpec`]) runs here instead of in
//! the DHT engine; `netabase-sim run` and `sweep` dispatch on it. The engine is its own:
//! one thread, one queue of events in virtual time, a handful of members driven only
//! through the core's sans-IO API under its driving contract (every output drained after
//! every call, promises and accepted votes held until the log writes they report are
//! synced, a sync whenever the member needs one).
//!
//! # Faults
//!
//! During the safety phase (`duration_s`): message loss, duplication, reordering, late
//! delivery (long enough that the messages carry old ballots when they arrive);
//! partitions that isolate the leader, cut off a random minority, drop everything the
//! leader sends (one way), or separate the leader from one member while both reach the
//! rest (non-transitive); crashes of single members (the leader half of the time) and of
//! the whole cluster at once, each losing the log writes that were not synced
//! ([`MemoryLogStore::crash`](netabase_core::consensus::MemoryLogStore::crash)); process
//! pauses longer than the lease wait plus the election timeout, during which the member
//! handles nothing while its clock runs on; clocks drifting at a bound, in the adverse
//! direction (a new leader slow, everyone else fast); one slow disk. Then everything
//! heals and the liveness phase begins.
//!
//! # Workload
//!
//! Clients at random members write few keys with unique values (put, compare-and-set
//! against the last value written, append) through
//! [`Member::propose`](netabase_core::consensus::Member::propose) and read them at every
//! [`ReadLevel`](netabase_core::consensus::ReadLevel) through
//! [`Member::read`](netabase_core::consensus::Member::read), reading the state when
//! [`Event::ReadReady`](netabase_core::consensus::Event::ReadReady) arrives. A write that
//! became indeterminate, whose proposer crashed, or that was never answered has an
//! unknown outcome in the history.
//!
//! # Checkers
//!
//! Each names its violations in the report:
//! - `agreement`: every member that knows a slot chosen knows the same value there;
//! - `at-most-once`: no member's state applies an entry id with effect twice;
//! - `acked-write-lost`: every acknowledged write is in the value chosen at the slot it
//!   was acknowledged at, and in every member's final state that applied that far;
//! - `state-digest`: every member's state digest after applied slot `s` is the same;
//! - `single-lease`: at no instant of virtual time do two members hold a lease;
//! - `durable-before-reply`: a promise or accepted vote leaves only when the log's
//!   durable image holds what it reports;
//! - `linearizability`: the history of writes, linearizable reads and lease reads is
//!   linearizable ([`crate::linearizability::check`] with a step budget; running out of
//!   budget fails the run). Local reads may be stale and are left out;
//! - `liveness`: after the heal, every member proposes a fresh write, and every member
//!   applies all of them within `liveness_bound_s`.
//!
//! The report's [`Coverage`] counts elections won, lease reads, dedup hits, crashes,
//! cluster crashes, restarts, pauses, partitions, late deliveries and deliveries of old
//! ballots. Every delivered message and processed event is folded into an xxh3 trace hash:
//! the same seed gives the same hash.
//!
//! # Deliberate bugs
//!
//! `[consensus] inject` switches on one bug in the simulator's own driver, state or client
//! ([`CONSENSUS_INJECTABLE`]): replies sent before the sync, retried entries applied
//! again, local reads reported as linearizable. The tests show each is caught.
//!
//! ```
//! use netabase_sim::Scenario;
//! use netabase_sim::consensus::run_consensus;
//!
//! let scenario = Scenario::parse(r#"
//!     name = "tiny-paxos"
//!     [consensus]
//!     members = 3
//!     duration_s = 3
//!     rate_per_s = 20
//!     [consensus.faults]
//!     partitions = ["leader_isolated"]
//! "#).unwrap();
//! let report = run_consensus(&scenario, 7);
//! assert!(report.violations.is_empty(), "{}", report.human());
//! assert_eq!(run_consensus(&scenario, 7).trace_hash, report.trace_hash);
//! ```

mod engine;
mod report;
mod spec;
mod state;

pub use engine::ConsensusSimulation;
pub use report::{ConsensusOps, ConsensusReport, Coverage};
pub use spec::{
    CONSENSUS_INJECTABLE, ConsensusFaults, ConsensusNetwork, ConsensusPartition, ConsensusSpec,
    ConsensusTiming,
};
pub use state::{SimState, list_bytes, list_elements};

use crate::Scenario;

/// Runs one consensus scenario with one seed.
///
/// # Panics
///
/// If the scenario has no `[consensus]` section.
pub fn run_consensus(scenario: &Scenario, seed: u64) -> ConsensusReport {
    let spec = scenario
        .consensus
        .as_ref()
        .expect("a consensus scenario has a [consensus] section");
    ConsensusSimulation::new(&scenario.name, spec, seed).run()
}
