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
