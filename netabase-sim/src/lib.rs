//! A deterministic discrete-event simulator for Netabase.
//!
//! Many [`netabase_core::Node`]s run under one virtual clock, driven only through the
//! core's public sans-IO API, exactly as the real adapters drive them. A run can use several
//! threads ([`Simulation::set_threads`]); the results do not depend on how many. Every
//! random choice (node ids and seeds, link latencies, loss, duplication, reordering,
//! partitions, clogs, crashes, clock skew, the workload) derives from one seed, so a run is
//! replayed exactly by its seed, and a trace hash proves it.
//!
//! Nodes sign versioned records with seeded Ed25519 identities; the workload puts,
//! overwrites and removes (tombstones) shared keys from many writers. With a `[disk]`, each
//! node's store makes writes durable only at a sync of seeded latency, and the node follows
//! the group-commit output rule ([`netabase_core::Output::waits_for_sync`]); a crash loses
//! what was not synced ([`disk`]). Wall clocks drift and step apart from the timers' clock.
//!
//! A run has a safety phase, in which the scenario's faults are active and checkers verify
//! that nothing wrong happens (a get after a completed put finds that value or a newer one,
//! every value read was written and reads never go back in version, nothing a node
//! acknowledged is lost in a crash, no node's clock goes back, lookups return real peers,
//! memory and job queues stay bounded), and, when the scenario sets `faults_end_s`, a
//! liveness phase in which every fault is healed and every operation must succeed, no
//! acknowledged write is lost, removals stay removed and the closest nodes of every key
//! converge on one version.
//!
//! # How the simulator is organised
//!
//! [`scenario`] reads and validates scenario files. [`sim`] runs one: [`Simulation`]
//! schedules the joins, faults and checks from the seed and steps the run, event by event
//! for those that touch the whole network and epoch by epoch for the nodes' own. Inside
//! [`sim`], each concern has its module: the discrete-event engine (shards of nodes, the
//! threads that run them, the processing of one node's event), the network model
//! (latencies, loss, duplication, reordering, partitions, clogs), the simulated nodes
//! (clocks, connections, crash and restart over their [`disk`]), the workload (client
//! operations and the forgers' changes), the trace hash, and the report. [`history`]
//! records every operation and fault, [`checkers`] verify them as the run goes and at its
//! end, [`report`] holds the result, and [`cli`] is the `netabase-sim` command.
//! [`consensus`] is the consensus mode (below), with its own engine, checkers and report;
//! [`linearizability`] is the checker its client histories go through.
//!
//! # Consensus mode
//!
//! A scenario with a `[consensus]` section simulates a Multi-Paxos cluster of
//! [`netabase_core::consensus::Member`]s instead of a DHT, on its own single-threaded
//! engine ([`consensus`]); `netabase-sim run` and `sweep` dispatch on the section, and
//! [`consensus::run_consensus`] is the library entry point. The shipped scenarios:
//!
//! | scenario | what it stresses |
//! |---|---|
//! | `paxos-3` | three members under every fault at once: loss, duplication, reordering, late delivery of old ballots, the four partition shapes (leader isolated, minority, one-way from the leader, non-transitive), crashes losing unsynced log writes, a whole-cluster crash, pauses longer than lease plus election timeout, adverse clock drift at the lease's bound, a slow disk |
//! | `paxos-5` | the same with five members |
//! | `paxos-pause-drift` | leases at the edge: ε = 20 %, the election timeout just above the acceptors' lease wait, frequent leader pauses, isolated and one-way-partitioned leaders |
//! | `paxos-crash-disk` | crashes every 0.5–1.5 s and a whole-cluster crash on slow, lossy disks |
//! | `paxos-lease-restarts` | acceptors restarting while a lease they granted runs, under drift at the bound |
//! | `paxos-membership` | three members and two spare nodes: the operator adds, removes and replaces members (the leader too) every 0.6–1.8 s under load, the network cut anew when a change is decided and when it comes into force, crashes (changes while a node is down), pauses |
//!
//! A run has a safety phase (`duration_s`) with the faults and a closed-loop client
//! workload (puts, compare-and-sets and appends of unique values to a few keys, reads at
//! every level), then heals everything and demands that every member apply a fresh write
//! of every member within `liveness_bound_s` (with membership changes, of every member of
//! the newest configuration). The checkers (agreement, the same configuration at each
//! slot on every member and every decided change in force where it was reported,
//! at-most-once, no acknowledged write lost, equal state digests per applied slot, at most
//! one lease
//! holder at any instant, promises and votes only after their writes are durable,
//! linearizability of the writes and linearizable and lease reads, liveness) report named
//! violations; the report's coverage counters show which faults and protocol paths a run
//! exercised, and its trace hash proves the replay. `[consensus] inject` switches on a
//! deliberate bug in the simulator's driver, state or client, to show that the checkers
//! catch it. For example:
//!
//! ```text
//! netabase-sim run netabase-sim/scenarios/paxos-3.toml --seed 7
//! netabase-sim sweep netabase-sim/scenarios/paxos-5.toml --seeds 0..1000 --jobs 2
//! ```
//!
//! ```
//! use netabase_sim::{Scenario, run};
//!
//! let scenario = Scenario::parse(r#"
//!     name = "tiny"
//!     nodes = 12
//!     duration_s = 40
//!     [workload]
//!     start_s = 10
//!     end_s = 30
//!     rate_per_s = 2
//! "#).unwrap();
//! let report = run(&scenario, 7);
//! assert!(report.violations.is_empty(), "{}", report.human());
//! assert_eq!(run(&scenario, 7).trace_hash, report.trace_hash);
//! ```

#![forbid(unsafe_code)]

pub mod checkers;
pub mod cli;
pub mod consensus;
pub mod disk;
pub mod history;
pub mod linearizability;
mod queue;
pub mod report;
pub mod scenario;
pub mod sim;

pub use report::{Report, Violation};
pub use scenario::Scenario;
pub use sim::{Simulation, run};

/// The command that replays one run of a scenario file.
pub fn replay_command(scenario_path: &str, seed: u64) -> String {
    format!("cargo run --release -p netabase-sim -- run {scenario_path} --seed {seed}")
}
