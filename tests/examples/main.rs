//! The examples, run as their users run them: `cluster`, `distributed_counter` and
//! `replicated_state_machine` to their reports and exit statuses,
//! `simple_mdns_chat` as two interactive processes in network namespaces of their own;
//! and the network benchmark in its quick mode.

mod bench;
mod chat;
mod cluster;
mod consensus;
mod support;

/// The network benchmark's code, shared with `benches/network` (whose `main` is not here).
#[allow(dead_code)]
#[path = "../../benches/network/bench.rs"]
mod network_bench;
