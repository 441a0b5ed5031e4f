//! Netabase against stock rust-libp2p Kademlia on the same network and the same work, side
//! by side in one run.
//!
//! Networks of 10 nodes each run on 127.0.0.1 with TCP, noise and yamux: stock
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
//! A fourth network runs stock kad over a record store on redb whose every put is a
//! durable commit before it returns (as durable as Netabase's redb backend), to compare
//! with Netabase on redb; each round first measures the disk's fsync floor (4 KiB appends
//! with an fdatasync each, where the stores are).
//!
//! Scheduling is the same on both sides: each node's event loop (a stock node's swarm, a
//! Netabase node's driver) runs on a thread of its own, its connections are tasks of its
//! runtime, and every runtime has the same number of worker threads (the machine's cores,
//! or `NETABASE_BENCH_WORKERS`; async-std's and smol's are set through
//! `ASYNC_STD_THREAD_COUNT` and `SMOL_THREADS`, for which the benchmark runs itself again
//! unless they are set).
//!
//! The rounds run the networks in turn, so that load from elsewhere on the machine falls
//! on all alike; a network exists only during its turn (started, warmed up, measured,
//! stopped), so the process's CPU time over its measured operations is its own and the
//! load generator's. The report gives operations per second (an operation is one put and
//! one get; median and range over the rounds), latency percentiles, CPU time per
//! operation, and ratios to stock (medians and ranges of each round's ratio).
//!
//! ```sh
//! cargo bench --bench network                         # the full run (a few minutes)
//! NETABASE_BENCH_QUICK=1 cargo bench --bench network  # a few seconds
//! ```
//!
//! `NETABASE_BENCH_{NODES,K,PAYLOAD,CONCURRENCY,WARMUP,OPS,ROUNDS}` change the settings.
//! `NETABASE_BENCH_SYSTEMS` picks the networks, comma-separated: `stock`, `stock-redb`,
//! `memory` and `redb` (Netabase on tokio; the default four), `memory-<runtime>` and
//! `redb-<runtime>`
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

/// The worker threads of every executor: `NETABASE_BENCH_WORKERS`, or the machine's cores.
fn workers() -> Result<usize, String> {
    match std::env::var("NETABASE_BENCH_WORKERS") {
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "NETABASE_BENCH_WORKERS={v:?}: not a positive number"
            )),
        },
        Err(_) => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// async-std and smol read their executors' thread counts from the environment when they
/// first start, and smol's default is one thread; so that every runtime has as many
/// workers as tokio, the benchmark runs itself again with `ASYNC_STD_THREAD_COUNT` and
/// `SMOL_THREADS` set, unless they already are. `None`: they are set, run here.
fn with_executor_threads(workers: usize) -> Option<ExitCode> {
    if std::env::var_os("ASYNC_STD_THREAD_COUNT").is_some()
        && std::env::var_os("SMOL_THREADS").is_some()
    {
        return None;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("network bench: cannot run itself again ({e}); executor threads unset");
            return None;
        }
    };
    let mut command = std::process::Command::new(exe);
    command.args(std::env::args_os().skip(1));
    for var in ["ASYNC_STD_THREAD_COUNT", "SMOL_THREADS"] {
        if std::env::var_os(var).is_none() {
            command.env(var, workers.to_string());
        }
    }
    Some(match command.status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("network bench: cannot run itself again: {e}");
            ExitCode::FAILURE
        }
    })
}

fn main() -> ExitCode {
    let (settings, workers) = match bench::Settings::from_env().and_then(|s| Ok((s, workers()?))) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("network bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(code) = with_executor_threads(workers) {
        return code;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
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
