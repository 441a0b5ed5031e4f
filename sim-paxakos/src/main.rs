//! `netabase-sim-paxakos`: runs the paxakos engine under the simulator.
//!
//! ```sh
//! cargo run --release -- --seed 7             # one run, its report
//! cargo run --release -- --seeds 200 --threads 2
//! ```

#![allow(clippy::print_stdout)]

use clap::Parser;
use netabase_sim_paxakos::{Spec, run};

#[derive(Parser)]
struct Args {
    /// Run this one seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Run seeds 1 to N (a sweep).
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// Threads the sweep runs seeds on (each run is single-threaded).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Cluster members.
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Seconds of faults and workload.
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// Run each seed twice and fail if the trace hashes differ.
    #[arg(long)]
    twice: bool,
    /// Plant a bug in the simulator's recording (acked-late, forged-apply, stale-reads).
    #[arg(long)]
    inject: Option<String>,
}

fn main() {
    let args = Args::parse();
    let inject = args.inject.as_deref().map(|name| {
        netabase_sim_paxakos::Bug::from_name(name).unwrap_or_else(|| {
            eprintln!("unknown bug {name}");
            std::process::exit(2)
        })
    });
    let spec = Spec {
        members: args.members,
        duration_s: args.duration_s,
        inject,
        ..Spec::default()
    };
    if let Some(seed) = args.seed {
        let mut sim = netabase_sim_paxakos::Simulation::new(spec, seed);
        sim.verbose = true;
        let report = sim.run();
        println!("{}", report.human());
        std::process::exit(i32::from(!report.violations.is_empty()));
    }
    let seeds: Vec<u64> = (1..=args.seeds).collect();
    let chunks: Vec<Vec<u64>> = (0..args.threads.max(1))
        .map(|t| {
            seeds
                .iter()
                .copied()
                .filter(|s| (*s as usize) % args.threads.max(1) == t)
                .collect()
        })
        .collect();
    let started = std::time::Instant::now();
    let results: Vec<(u64, netabase_sim_paxakos::Report, Option<u64>)> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    let spec = spec.clone();
                    let twice = args.twice;
                    scope.spawn(move || {
                        chunk
                            .into_iter()
                            .map(|seed| {
                                let report = run(&spec, seed);
                                let again = twice.then(|| run(&spec, seed).trace_hash);
                                (seed, report, again)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a sweep thread"))
                .collect()
        });
    let mut failed = 0;
    let mut rounds = 0;
    let mut acked = 0;
    for (seed, report, again) in &results {
        rounds += report.rounds;
        acked += report.acked_writes;
        let nondeterministic = again.is_some_and(|h| h != report.trace_hash);
        if !report.violations.is_empty() || nondeterministic {
            failed += 1;
            println!("{}", report.human());
            if nondeterministic {
                println!(
                    "  VIOLATION determinism: seed {seed} gave trace {:016x} then {:016x}",
                    report.trace_hash,
                    again.unwrap_or(0)
                );
            }
        }
    }
    println!(
        "{} seeds in {:.1} s: {failed} failed; {rounds} rounds and {acked} acknowledged writes in all",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    std::process::exit(i32::from(failed > 0));
}
