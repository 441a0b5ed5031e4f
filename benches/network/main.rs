//! Netabase against stock rust-libp2p Kademlia on the same network and the same work, side
//! by side in one run.
//!
//! Three networks of 10 nodes each run on 127.0.0.1 with TCP, noise and yamux: stock
//! rust-libp2p `kad::Behaviour` nodes with their `MemoryStore`, Netabase nodes with the
//! memory backend, and Netabase nodes with redb, whose every commit is durable
//! (fdatasync) before it is acknowledged. Every network has the same K, put and get quorum
//! 1, the same record bytes (a Netabase sealed envelope, which the stock side seals and
//! opens too) and the same operation mix: for each record, the second-farthest node from
//! its key puts it and the farthest node gets it (so neither holds it beforehand and the
//! get must find it over the network), with the same number of operations in flight.
//! Stock gets stop at their first record, as its API documents for quorum 1; Netabase
//! caching after gets is off, as stock caches nothing unless its user does.
//!
//! Every network warms up first, then the rounds run the networks in turn, so that load
//! from elsewhere on the machine falls on all alike. The report gives operations per
//! second (an operation is one put and one get), latency percentiles, and Netabase's
//! ratios to stock.
//!
//! ```sh
//! cargo bench --bench network                         # the full run (a few minutes)
//! NETABASE_BENCH_QUICK=1 cargo bench --bench network  # a few seconds
//! ```
//!
//! `NETABASE_BENCH_{NODES,K,PAYLOAD,CONCURRENCY,WARMUP,OPS,ROUNDS}` change the settings.
//! `NETABASE_BENCH_SYSTEMS` picks the networks, comma-separated: `stock`, `memory` and
//! `redb` (Netabase on tokio, the default three), `memory-<runtime>` and `redb-<runtime>`
//! for Netabase nodes on `tokio`, `async-std` or `smol` (with that feature of the
//! `netabase` crate on), and `all` (stock and both backends on every runtime built). The
//! load generator is the same tokio one for every network; a Netabase network on
//! async-std or smol runs its nodes' drivers and connections on that runtime.
//!
//! ```sh
//! NETABASE_BENCH_SYSTEMS=all cargo bench --bench network --features async-std,smol
//! ```

// The report goes to standard output.
#![allow(clippy::print_stdout)]

mod bench;

use std::process::ExitCode;

fn main() -> ExitCode {
    let settings = match bench::Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("network bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("network bench: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(bench::run(&settings, |what| eprintln!("{what}")));
    match report {
        Ok(report) => {
            println!("{}", report.render());
            if report.systems.iter().any(|r| r.failures > 0) {
                eprintln!("network bench: some operations failed");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("network bench: {e}");
            ExitCode::FAILURE
        }
    }
}
