//! The simulator's command line: `netabase-sim run` and `netabase-sim sweep`.
//!
//! The `netabase-sim` binary is [`main`]; other programs embed the same commands by
//! making [`Cli`] one of their subcommands and calling [`run`] (the `netabase` command
//! does so for `netabase sim ...`).
#![allow(clippy::print_stdout)] // A command-line tool: stdout is its interface.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::consensus::{ConsensusReport, ConsensusSimulation, Coverage, run_consensus};
use crate::{Report, Scenario, Simulation, replay_command};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

/// The simulator's arguments: one of its subcommands.
#[derive(Debug, Parser)]
#[command(
    name = "netabase-sim",
    version,
    about = "Deterministic simulation of Netabase networks"
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// A simulator command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one scenario with one seed.
    Run {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// The seed (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Print one JSON object instead of the readable report.
        #[arg(long)]
        json: bool,
        /// Write every processed event, one per line, to this file.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Run the seed twice and fail if the two traces differ (the second run on one
        /// thread, so the check also covers the split into threads).
        #[arg(long)]
        check_determinism: bool,
        /// Threads for the nodes' events (default: one per 1,000 nodes, at most one per
        /// core). The results, trace hash included, are the same for any number.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Run a scenario over a range of seeds.
    Sweep {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// Seeds as A..B (B excluded).
        #[arg(long)]
        seeds: String,
        /// Runs in parallel.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Print one JSON object instead of the readable summary.
        #[arg(long)]
        json: bool,
    },
}

/// Nodes per thread when the command line does not say. Threads meet every few
/// milliseconds of virtual time (the shortest link latency): a smaller network has too few
/// events between two meetings to be worth splitting (on the 200-node `dht-loss`, two
/// threads are no faster than one), while the 10,000-node run spends most of its time in
/// long stretches that split well.
const NODES_PER_THREAD: usize = 1_000;

/// The number of threads for a run of `nodes` nodes.
fn default_threads(nodes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (nodes / NODES_PER_THREAD).clamp(1, cores)
}

fn progress_bar(len: u64, json: bool, template: &str) -> ProgressBar {
    if json && !std::io::stdout().is_terminal() || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn run_one(
    scenario: &Scenario,
    seed: u64,
    threads: usize,
    bar: &ProgressBar,
    trace: Option<&PathBuf>,
) -> Result<Report, String> {
    let mut sim = Simulation::new(scenario.clone(), seed);
    sim.set_threads(threads);
    if let Some(path) = trace {
        let file = std::fs::File::create(path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        sim.set_trace_writer(Box::new(std::io::BufWriter::new(file)));
    }
    Ok(sim.run(&mut |now| bar.set_position(now.as_millis())))
}

fn load(path: &std::path::Path) -> Result<Scenario, ExitCode> {
    Scenario::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// Parses the process's arguments and runs the command (the `netabase-sim` binary).
pub fn main() -> ExitCode {
    run(Cli::parse())
}

/// Runs one simulator command: prints its report on standard output (progress on standard
/// error when it is a terminal) and returns the process's exit code: success, failure when
/// an invariant broke (after printing the replay command), 2 for an unreadable scenario or
/// bad arguments.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run {
            scenario,
            seed,
            json,
            trace,
            check_determinism,
            threads,
        } => {
            let path = scenario.display().to_string();
            let sc = match load(&scenario) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let seed = seed.unwrap_or(sc.seed);
            if sc.consensus.is_some() {
                return run_consensus_one(
                    &sc,
                    &path,
                    seed,
                    json,
                    trace.as_ref(),
                    check_determinism,
                );
            }
            let threads = threads.unwrap_or_else(|| default_threads(sc.nodes));
            let virtual_ms = (sc.duration_s * 1000.0) as u64;
            let bar = progress_bar(
                virtual_ms,
                json,
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} virtual ms",
            );
            let report = match run_one(&sc, seed, threads, &bar, trace.as_ref()) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            bar.finish_and_clear();
            let mut failed = !report.violations.is_empty();
            if check_determinism {
                let again = crate::run(&sc, seed);
                if again.trace_hash != report.trace_hash {
                    eprintln!(
                        "NONDETERMINISM: seed {seed} gave trace {} then {}",
                        report.trace_hash, again.trace_hash
                    );
                    failed = true;
                } else {
                    eprintln!(
                        "determinism check: both runs gave trace {}",
                        report.trace_hash
                    );
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&report).expect("reports serialise")
                );
            } else {
                print!("{}", report.human());
            }
            if failed {
                eprintln!("replay with: {}", replay_command(&path, seed));
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Command::Sweep {
            scenario,
            seeds,
            jobs,
            json,
        } => {
            let path = scenario.display().to_string();
            let sc = match load(&scenario) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let Some((a, b)) = seeds
                .split_once("..")
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
                .filter(|(a, b)| a < b)
            else {
                eprintln!("error: --seeds takes A..B with A < B, e.g. 0..50");
                return ExitCode::from(2);
            };
            if sc.consensus.is_some() {
                return sweep_consensus(&sc, &path, a..b, jobs, json);
            }
            let bar = progress_bar(
                b - a,
                json,
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} seeds",
            );
            let next = AtomicU64::new(a);
            let reports = Mutex::new(Vec::new());
            let started = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..jobs.max(1) {
                    s.spawn(|| {
                        loop {
                            let seed = next.fetch_add(1, Ordering::Relaxed);
                            if seed >= b {
                                break;
                            }
                            let report = crate::run(&sc, seed);
                            reports
                                .lock()
                                .expect("no panics hold this lock")
                                .push(report);
                            bar.inc(1);
                        }
                    });
                }
            });
            bar.finish_and_clear();
            let mut reports = reports.into_inner().expect("no panics hold this lock");
            reports.sort_by_key(|r| r.seed);
            let failing: Vec<&Report> = reports
                .iter()
                .filter(|r| !r.violations.is_empty())
                .collect();
            let events: u64 = reports.iter().map(|r| r.events).sum();
            let min_get = reports
                .iter()
                .map(|r| r.get_after_put_success)
                .fold(1.0f64, f64::min);
            if json {
                let summary = serde_json::json!({
                    "scenario": sc.name,
                    "seeds": b - a,
                    "failing_seeds": failing.iter().map(|r| r.seed).collect::<Vec<_>>(),
                    "replay": failing.iter().map(|r| replay_command(&path, r.seed)).collect::<Vec<_>>(),
                    "events": events,
                    "wall_ms": started.elapsed().as_millis() as u64,
                    "min_get_after_put_success": min_get,
                });
                println!("{summary}");
            } else {
                println!(
                    "sweep of {} over seeds {a}..{b}: {} passed, {} failed ({} events in {:.1} s, lowest get-after-put success {:.2}%)",
                    sc.name,
                    reports.len() - failing.len(),
                    failing.len(),
                    events,
                    started.elapsed().as_secs_f64(),
                    min_get * 100.0
                );
            }
            for r in &failing {
                eprintln!("seed {} failed: {}", r.seed, r.violations[0].message);
                eprintln!("  replay with: {}", replay_command(&path, r.seed));
            }
            if failing.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `run` of a consensus scenario.
fn run_consensus_one(
    sc: &Scenario,
    path: &str,
    seed: u64,
    json: bool,
    trace: Option<&PathBuf>,
    check_determinism: bool,
) -> ExitCode {
    let spec = sc.consensus.as_ref().expect("a consensus scenario");
    let mut sim = ConsensusSimulation::new(&sc.name, spec, seed);
    if let Some(path) = trace {
        match std::fs::File::create(path) {
            Ok(file) => sim.set_trace_writer(Box::new(std::io::BufWriter::new(file))),
            Err(e) => {
                eprintln!("error: cannot create {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    let report = sim.run();
    let mut failed = !report.violations.is_empty();
    if check_determinism {
        let again = run_consensus(sc, seed);
        if again.trace_hash != report.trace_hash {
            eprintln!(
                "NONDETERMINISM: seed {seed} gave trace {} then {}",
                report.trace_hash, again.trace_hash
            );
            failed = true;
        } else {
            eprintln!(
                "determinism check: both runs gave trace {}",
                report.trace_hash
            );
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("reports serialise")
        );
    } else {
        print!("{}", report.human());
    }
    if failed {
        eprintln!("replay with: {}", replay_command(path, seed));
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `sweep` of a consensus scenario.
fn sweep_consensus(
    sc: &Scenario,
    path: &str,
    seeds: std::ops::Range<u64>,
    jobs: usize,
    json: bool,
) -> ExitCode {
    let (a, b) = (seeds.start, seeds.end);
    let bar = progress_bar(
        b - a,
        json,
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} seeds",
    );
    let next = AtomicU64::new(a);
    let reports: Mutex<Vec<ConsensusReport>> = Mutex::new(Vec::new());
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= b {
                        break;
                    }
                    let report = run_consensus(sc, seed);
                    reports
                        .lock()
                        .expect("no panics hold this lock")
                        .push(report);
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    let mut reports = reports.into_inner().expect("no panics hold this lock");
    reports.sort_by_key(|r| r.seed);
    let failing: Vec<&ConsensusReport> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .collect();
    let events: u64 = reports.iter().map(|r| r.events).sum();
    let mut coverage = Coverage::default();
    for r in &reports {
        coverage.add(&r.coverage);
    }
    if json {
        let summary = serde_json::json!({
            "scenario": sc.name,
            "seeds": b - a,
            "failing_seeds": failing.iter().map(|r| r.seed).collect::<Vec<_>>(),
            "replay": failing.iter().map(|r| replay_command(path, r.seed)).collect::<Vec<_>>(),
            "events": events,
            "wall_ms": started.elapsed().as_millis() as u64,
            "coverage": coverage,
        });
        println!("{summary}");
    } else {
        println!(
            "sweep of {} over seeds {a}..{b}: {} passed, {} failed ({} events in {:.1} s)",
            sc.name,
            reports.len() - failing.len(),
            failing.len(),
            events,
            started.elapsed().as_secs_f64(),
        );
        let counters: Vec<String> = coverage
            .counters()
            .iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        println!("coverage: {}", counters.join(", "));
    }
    for r in &failing {
        eprintln!(
            "seed {} failed: [{}] {}",
            r.seed, r.violations[0].checker, r.violations[0].message
        );
        eprintln!("  replay with: {}", replay_command(path, r.seed));
    }
    if failing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
