//! The examples, run as their users run them: `cluster` to its report and exit status,
//! `simple_mdns_chat` as two interactive processes in network namespaces of their own;
//! and the network benchmark in its quick mode.

mod bench;
mod chat;
mod cluster;
mod support;

/// The network benchmark's code, shared with `benches/network` (whose `main` is not here).
#[allow(dead_code)]
#[path = "../../benches/network/bench.rs"]
mod network_bench;
