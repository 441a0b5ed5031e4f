//! The simulator's scenarios hold their invariants, runs replay exactly by seed, and a
//! deliberately injected protocol bug is caught and replayed by the printed command.

use std::path::{Path, PathBuf};
use std::process::Command;

use netabase_sim::{Report, Scenario, Simulation, replay_command, run};

fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"))
}

fn load(name: &str) -> Scenario {
    Scenario::load(&scenario_path(name)).expect("scenario loads")
}

fn assert_clean(report: &Report, name: &str) {
    assert!(
        report.violations.is_empty(),
        "{}\nreplay with: {}",
        report.human(),
        replay_command(&scenario_path(name).display().to_string(), report.seed)
    );
}

#[test]
fn dht_small_holds_every_invariant_and_lookups_are_exact() {
    let sc = load("dht-small");
    for seed in 0..5 {
        let report = run(&sc, seed);
        assert_clean(&report, "dht-small");
        assert_eq!(report.ops, report.ops_ok, "{}", report.human());
        assert!(report.lookups.ok > 0 && report.gets.ok > 0);
    }
}

#[test]
fn a_small_connection_limit_is_kept_and_every_operation_still_succeeds() {
    let mut sc = load("dht-small");
    sc.network.max_connections = 6;
    sc.validate().unwrap();
    let report = run(&sc, 2);
    assert_clean(&report, "dht-small, 6 connections");
    assert_eq!(report.ops, report.ops_ok, "{}", report.human());
}

#[test]
fn dht_partition_converges_after_the_heal() {
    let sc = load("dht-partition");
    let report = run(&sc, 3);
    assert_clean(&report, "dht-partition");
    // The split did bite: some operations failed while it lasted.
    assert!(report.ops_failed > 0, "{}", report.human());
}

#[test]
fn dht_churn_survives_crashes_clogs_and_skew() {
    let sc = load("dht-churn");
    let report = run(&sc, 5);
    assert_clean(&report, "dht-churn");
}

#[test]
fn dht_10k_scaled_down_bootstraps_and_serves_lookups() {
    let mut sc = load("dht-10k");
    sc.nodes = 600;
    sc.join.spread_s = 30.0;
    sc.workload.start_s = 60.0;
    sc.workload.end_s = 80.0;
    sc.workload.rate_per_s = 100.0;
    sc.duration_s = 100.0;
    sc.checks.exact_lookup_sample = 0.05;
    let report = run(&sc, 1);
    assert_clean(&report, "dht-10k");
    assert!(report.lookups.ok >= 1900, "{}", report.human());
    assert!(report.lookup_hops_p50 <= 4, "{}", report.human());
}

#[test]
fn the_same_seed_gives_the_same_trace_and_another_seed_does_not() {
    let sc = load("dht-loss");
    let mut short = sc.clone();
    short.nodes = 60;
    short.duration_s = 120.0;
    short.workload.start_s = 30.0;
    short.workload.end_s = 110.0;
    let a = run(&short, 42);
    let b = run(&short, 42);
    let c = run(&short, 43);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.events, b.events);
    assert_eq!(a.ops_ok, b.ops_ok);
    assert_ne!(a.trace_hash, c.trace_hash);
}

/// Splitting the nodes over threads changes nothing: the same events, results, trace hash
/// and trace file, under crashes, restarts, clogs, skew, loss and partitions.
#[test]
fn any_number_of_threads_gives_the_same_run() {
    let dir = std::env::temp_dir().join(format!("netabase-sim-threads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, seed) in [
        ("dht-churn", 3),
        ("dht-partition", 8),
        ("dht-loss", 11),
        ("dht-crash-disk", 2),
    ] {
        let mut sc = load(name);
        if name == "dht-loss" {
            sc.nodes = 80;
            sc.duration_s = 150.0;
            sc.workload.end_s = 140.0;
        }
        let mut runs = Vec::new();
        for threads in [1, 2, 3] {
            let path = dir.join(format!("{name}-{threads}.trace"));
            let mut sim = Simulation::new(sc.clone(), seed);
            sim.set_threads(threads);
            sim.set_trace_writer(Box::new(std::io::BufWriter::new(
                std::fs::File::create(&path).unwrap(),
            )));
            let report = sim.run(&mut |_| {});
            assert_eq!(report.threads, threads, "{name}");
            assert_clean(&report, name);
            runs.push((report, std::fs::read(&path).unwrap()));
        }
        let (one, trace) = &runs[0];
        assert!(
            one.ops_ok > 0 && one.events > 10_000,
            "{name}: {}",
            one.human()
        );
        for (other, other_trace) in &runs[1..] {
            assert_eq!(one.trace_hash, other.trace_hash, "{name}");
            assert_eq!(one.events, other.events, "{name}");
            assert_eq!(one.messages, other.messages, "{name}");
            assert_eq!(one.ops_ok, other.ops_ok, "{name}");
            assert_eq!(one.latency_ms_p99, other.latency_ms_p99, "{name}");
            assert!(trace == other_trace, "{name}: the trace files differ");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Links without any latency leave nothing to run ahead on: such a network runs on one
/// thread whatever is asked, with the results of a one-thread run.
#[test]
fn a_network_without_latency_runs_on_one_thread() {
    let mut sc = load("dht-small");
    sc.network.latency_min_ms = 0.0;
    let mut sim = Simulation::new(sc.clone(), 9);
    sim.set_threads(4);
    let report = sim.run(&mut |_| {});
    assert_eq!(report.threads, 1);
    assert_clean(&report, "dht-small without latency");
    assert_eq!(report.trace_hash, run(&sc, 9).trace_hash);
}

/// Runs seeds `0..50` of scenario `name` on two threads; returns a line per seed that
/// `bad` rejects, with its replay command.
fn sweep(name: &str, bad: impl Fn(&Report) -> bool + Sync) -> Vec<String> {
    let sc = load(name);
    let seeds: Vec<u64> = (0..50).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = seeds
            .chunks(25)
            .map(|chunk| {
                let (sc, bad) = (&sc, &bad);
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|&seed| run(sc, seed))
                        .filter(|r| !r.violations.is_empty() || bad(r))
                        .map(|r| {
                            format!(
                                "seed {}: {:?}\n  replay with: {}",
                                r.seed,
                                r.violations.first().map(|v| &v.message),
                                replay_command(&scenario_path(name).display().to_string(), r.seed)
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("sweep thread"))
            .collect()
    })
}

/// A short sweep of the lossy scenario: at least 99% of gets after a completed put succeed
/// on every seed.
#[test]
fn dht_loss_sweep() {
    let failures = sweep("dht-loss", |r| r.get_after_put_success < 0.99);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Fifty seeds of overwrites and removals from both sides of a partition, with crashes,
/// disks, stepped clocks and two forgers: every checker holds on every seed.
#[test]
fn dht_overwrite_sweep() {
    // Its two forgers' copies are refused: some must have been sent.
    let failures = sweep("dht-overwrite", |r| {
        r.removes.ok == 0 || r.puts.ok == 0 || r.forged_refused == 0
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Fifty seeds of crashes on disks that lose what was not synced, with clocks stepping
/// back: every checker holds on every seed.
#[test]
fn dht_crash_disk_sweep() {
    let failures = sweep("dht-crash-disk", |r| r.removes.ok == 0 || r.puts.ok == 0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The checkers that found violations in a run.
fn checkers_of(report: &Report) -> std::collections::BTreeSet<String> {
    report
        .violations
        .iter()
        .map(|v| v.checker.clone())
        .collect()
}

/// Runs `sc` with and without the deliberate bug `bug` on `seed`: the bug is caught by
/// `checker`, which finds nothing without it.
fn assert_caught(mut sc: Scenario, bug: &str, seed: u64, checker: &str) {
    let clean = run(&sc, seed);
    assert!(
        !checkers_of(&clean).contains(checker),
        "without {bug}: {}",
        clean.human()
    );
    sc.faults.inject = Some(bug.to_string());
    sc.validate().unwrap();
    let buggy = run(&sc, seed);
    assert!(
        checkers_of(&buggy).contains(checker),
        "{bug} was not caught by {checker}: {}",
        buggy.human()
    );
}

#[test]
fn a_store_that_ignores_versions_is_caught() {
    assert_caught(
        load("dht-overwrite"),
        "store-ignores-versions",
        0,
        "acked-writes",
    );
    assert_caught(
        load("dht-overwrite"),
        "store-ignores-versions",
        1,
        "convergence",
    );
}

#[test]
fn a_get_that_takes_the_oldest_copy_is_caught() {
    assert_caught(
        load("dht-overwrite"),
        "get-returns-oldest-copy",
        0,
        "monotonic-reads",
    );
}

#[test]
fn tombstones_dropped_too_early_are_caught_as_resurrections() {
    assert_caught(
        load("dht-overwrite"),
        "tombstone-horizon-ignored",
        1,
        "no-resurrection",
    );
}

#[test]
fn records_taken_without_their_signatures_checked_are_caught() {
    assert_caught(
        load("dht-overwrite"),
        "unchecked-signatures",
        0,
        "monotonic-reads",
    );
}

/// On slow disks (syncs of 0.1 to 1 s), a node that acknowledges before its sync loses
/// what it acknowledged when it crashes.
#[test]
fn acknowledging_before_the_sync_is_caught() {
    let mut sc = load("dht-crash-disk");
    sc.disk.as_mut().unwrap().sync_latency_ms = [100.0, 1000.0];
    assert_caught(sc, "acks-before-sync", 0, "durable-acks");
}

/// Every wall clock steps back 50 s: a node that restarts without its clock ceiling
/// issues versions below those it issued before the crash.
#[test]
fn a_clock_ceiling_that_is_not_persisted_is_caught() {
    let mut sc = load("dht-crash-disk");
    for step in &mut sc.clock.steps {
        if step.offset_ms < 0.0 {
            step.offset_ms = -50_000.0;
            step.nodes = sc.nodes;
        }
    }
    assert_caught(sc, "clock-ceiling-not-persisted", 0, "own-versions");
}

/// Slow disks, and every wall clock steps back 50 s while nodes crash: a put's requests
/// leave before the sync of its writes, but not before a raised clock ceiling is durable,
/// so no node issues a version below one it let out (seeds 15 and 25 have writes cut
/// short by crashes with versions above the ones issued after the restart).
#[test]
fn a_raised_clock_ceiling_is_durable_before_requests_carry_it() {
    let mut sc = load("dht-crash-disk");
    sc.disk.as_mut().unwrap().sync_latency_ms = [100.0, 1000.0];
    for step in &mut sc.clock.steps {
        if step.offset_ms < 0.0 {
            step.offset_ms = -50_000.0;
            step.nodes = sc.nodes;
        }
    }
    for seed in [15, 25] {
        let report = run(&sc, seed);
        assert!(
            !checkers_of(&report).contains("own-versions"),
            "seed {seed}: {}",
            report.human()
        );
    }
}

/// A peer that corrupts the values it serves is harmless now: the corrupted copies fail
/// their signature check, are dropped, and the gets find the value elsewhere.
#[test]
fn corrupted_copies_are_refused_by_their_signatures() {
    let sc = Scenario::parse(
        "name = \"corrupt\"\nnodes = 60\nduration_s = 120\n[workload]\nstart_s = 30\nend_s = 110\nrate_per_s = 10\n[faults]\ninject = \"corrupt-every-third-value\"\n",
    )
    .unwrap();
    let report = run(&sc, 9);
    assert_clean(&report, "corrupt");
    assert_eq!(report.gets.ok, report.gets.issued, "{}", report.human());
}

#[test]
fn an_injected_bug_is_caught_and_the_printed_command_replays_it() {
    let dir = std::env::temp_dir().join(format!("netabase-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("buggy.toml");
    let base = std::fs::read_to_string(scenario_path("dht-overwrite")).unwrap();
    std::fs::write(
        &path,
        base.replace(
            "[faults]\n",
            "[faults]\ninject = \"store-ignores-versions\"\n",
        ),
    )
    .unwrap();
    let clean_path = dir.join("clean.toml");
    std::fs::write(&clean_path, base).unwrap();

    let bin = env!("CARGO_BIN_EXE_netabase-sim");
    let out = Command::new(bin)
        .args(["run", path.to_str().unwrap(), "--seed", "9", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a violated invariant fails the run"
    );
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let violations = first["violations"].as_array().unwrap();
    assert!(
        violations.iter().any(|v| v["checker"] == "acked-writes"),
        "{first}"
    );

    // The printed command replays the very same run.
    let stderr = String::from_utf8(out.stderr).unwrap();
    let command = stderr
        .lines()
        .find_map(|l| l.strip_prefix("replay with: "))
        .expect("replay command printed");
    assert_eq!(command, replay_command(path.to_str().unwrap(), 9));
    let args: Vec<&str> = command
        .split_whitespace()
        .skip_while(|w| *w != "--")
        .skip(1)
        .collect();
    let again = Command::new(bin)
        .args(&args)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    let second: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(first["trace_hash"], second["trace_hash"]);
    assert_eq!(first["violations"], second["violations"]);

    // Without the bug, the same seed is clean.
    let clean = Command::new(bin)
        .args(["run", clean_path.to_str().unwrap(), "--seed", "9", "--json"])
        .output()
        .unwrap();
    assert!(clean.status.success());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn malformed_scenarios_are_refused_with_a_clear_error() {
    let err = Scenario::parse("name = \"x\"\nnodes = 1\nduration_s = 10\n").unwrap_err();
    assert!(
        err.to_string().contains("nodes must be at least 2"),
        "{err}"
    );
    let err = Scenario::parse("name = \"x\"\nnodes = 5\nduration_s = 10\nbogus = 3\n").unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
    let err = Scenario::parse("name = \"x\"\nnodes = 5\nduration_s = 10\n[network]\nloss = 2.0\n")
        .unwrap_err();
    assert!(err.to_string().contains("probabilities"), "{err}");
    let err = Scenario::parse(
        "name = \"x\"\nnodes = 5\nduration_s = 10\n[network]\nmax_connections = 1\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("max_connections"), "{err}");
    let err =
        Scenario::parse("name = \"x\"\nnodes = 5\nduration_s = 10\n[faults]\ninject = \"bogus\"\n")
            .unwrap_err();
    assert!(err.to_string().contains("store-ignores-versions"), "{err}");
    let err = Scenario::parse(
        "name = \"x\"\nnodes = 5\nduration_s = 10\n[disk]\nsync_latency_ms = [4, 1]\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("sync_latency_ms"), "{err}");
}

#[test]
fn the_cli_writes_a_trace_and_checks_determinism() {
    let dir = std::env::temp_dir().join(format!("netabase-sim-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("trace.txt");
    let bin = env!("CARGO_BIN_EXE_netabase-sim");
    let out = Command::new(bin)
        .args([
            "run",
            scenario_path("dht-small").to_str().unwrap(),
            "--seed",
            "4",
            "--check-determinism",
            "--trace",
        ])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("determinism check: both runs gave trace"),
        "{stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("all invariants held"), "{stdout}");
    // One line per processed event, with the report's event count.
    let report = run(&load("dht-small"), 4);
    let text = std::fs::read_to_string(&trace).unwrap();
    assert!(text.lines().any(|l| l.contains(" request ")));
    assert!(text.lines().any(|l| l.contains(" op-end ")));
    assert!(text.lines().count() as u64 >= report.events);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_sweep_reports_every_failing_seed_with_its_replay_command() {
    let dir = std::env::temp_dir().join(format!("netabase-sim-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("buggy.toml");
    let base = std::fs::read_to_string(scenario_path("dht-overwrite")).unwrap();
    std::fs::write(
        &path,
        base.replace(
            "[faults]\n",
            "[faults]\ninject = \"get-returns-oldest-copy\"\n",
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_netabase-sim");
    let out = Command::new(bin)
        .args([
            "sweep",
            path.to_str().unwrap(),
            "--seeds",
            "0..4",
            "--jobs",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failing = summary["failing_seeds"].as_array().unwrap();
    assert!(!failing.is_empty(), "{summary}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    for seed in failing {
        let command = replay_command(path.to_str().unwrap(), seed.as_u64().unwrap());
        assert!(stderr.contains(&command), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_shipped_scenario_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            loaded += 1;
        }
    }
    assert!(loaded >= 7, "only {loaded} scenarios in {}", dir.display());
}

// ----- consensus scenarios --------------------------------------------------------------

use netabase_sim::consensus::{ConsensusReport, Coverage, run_consensus};

/// Seeds per consensus sweep: `NETABASE_SIM_PAXOS_SEEDS`, 200 by default (CI).
fn paxos_seeds() -> u64 {
    std::env::var("NETABASE_SIM_PAXOS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
}

/// Runs seeds `0..paxos_seeds()` of `sc` on two threads, stopping early once `enough`
/// holds for the reports so far; returns the reports in seed order.
fn paxos_runs(
    sc: &Scenario,
    enough: impl Fn(&ConsensusReport) -> bool + Sync,
) -> Vec<ConsensusReport> {
    let seeds = paxos_seeds();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut reports: Vec<ConsensusReport> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2u64)
            .map(|t| {
                let (stop, enough) = (&stop, &enough);
                s.spawn(move || {
                    let mut out = Vec::new();
                    for seed in (t..seeds).step_by(2) {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let r = run_consensus(sc, seed);
                        if enough(&r) {
                            stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        out.push(r);
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("sweep thread"))
            .collect()
    });
    reports.sort_by_key(|r| r.seed);
    reports
}

/// Sweeps the shipped consensus scenario `name`: every seed holds every invariant.
/// Returns the summed coverage.
fn paxos_sweep(name: &str) -> Coverage {
    let sc = load(name);
    let started = std::time::Instant::now();
    let reports = paxos_runs(&sc, |_| false);
    let path = scenario_path(name).display().to_string();
    let failures: Vec<String> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .map(|r| {
            format!(
                "seed {}: [{}] {}\n  replay with: {}",
                r.seed,
                r.violations[0].checker,
                r.violations[0].message,
                replay_command(&path, r.seed)
            )
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(reports.len() as u64, paxos_seeds());
    let mut coverage = Coverage::default();
    for r in &reports {
        coverage.add(&r.coverage);
        // The workload did run: most writes were acknowledged.
        assert!(r.writes.ok * 2 > r.writes.issued, "{}", r.human());
    }
    eprintln!(
        "{name}: {} seeds clean in {:.1} s; coverage {:?}",
        reports.len(),
        started.elapsed().as_secs_f64(),
        coverage.counters()
    );
    coverage
}

/// The counters of membership changes, which only `paxos-membership` exercises.
const NO_MEMBERSHIP: [&str; 3] = [
    "membership_changes",
    "leader_removals",
    "changes_while_down",
];

/// Every counter of `coverage` is above zero, except those in `absent`.
fn assert_covered(name: &str, coverage: &Coverage, absent: &[&str]) {
    for (counter, value) in coverage.counters() {
        if !absent.contains(&counter) {
            assert!(value > 0, "{name}: {counter} never exercised: {coverage:?}");
        }
    }
}

#[test]
fn paxos_3_sweep_holds_every_invariant_and_covers_every_fault() {
    let coverage = paxos_sweep("paxos-3");
    assert_covered("paxos-3", &coverage, &NO_MEMBERSHIP);
}

#[test]
fn paxos_5_sweep_holds_every_invariant_and_covers_every_fault() {
    let coverage = paxos_sweep("paxos-5");
    assert_covered("paxos-5", &coverage, &NO_MEMBERSHIP);
}

#[test]
fn paxos_pause_drift_sweep_holds_every_invariant() {
    let coverage = paxos_sweep("paxos-pause-drift");
    assert_covered(
        "paxos-pause-drift",
        &coverage,
        &[
            "crashes",
            "cluster_crashes",
            "restarts",
            "membership_changes",
            "leader_removals",
            "changes_while_down",
        ],
    );
}

#[test]
fn paxos_crash_disk_sweep_holds_every_invariant() {
    let coverage = paxos_sweep("paxos-crash-disk");
    assert_covered(
        "paxos-crash-disk",
        &coverage,
        &[
            "pauses",
            "partitions",
            "membership_changes",
            "leader_removals",
            "changes_while_down",
        ],
    );
}

/// Seeds of `paxos-3` that once found a member forwarding an entry before the
/// incarnation in its id was durable (a crash then reused the id for another command).
#[test]
fn paxos_lease_restarts_sweep_holds_every_invariant() {
    let coverage = paxos_sweep("paxos-lease-restarts");
    assert_covered(
        "paxos-lease-restarts",
        &coverage,
        &[
            "pauses",
            "cluster_crashes",
            "membership_changes",
            "leader_removals",
            "changes_while_down",
        ],
    );
}

#[test]
fn paxos_membership_sweep_holds_every_invariant_and_covers_every_fault() {
    let coverage = paxos_sweep("paxos-membership");
    assert_covered("paxos-membership", &coverage, &[]);
}

/// Seeds of `paxos-membership` that once ended with every member waiting: the only
/// voter of the slots before a replacement came into force was the member it removed
/// (which leaves leading to those that stay), and the node it added had not learned
/// the slot that made it a voter (learners heard of chosen slots only from a leader).
#[test]
fn a_node_made_voter_while_no_leader_is_heard_learns_it_and_leads() {
    let sc = load("paxos-membership");
    for seed in [523, 651, 1974] {
        let r = run_consensus(&sc, seed);
        assert!(r.violations.is_empty(), "seed {seed}: {}", r.human());
    }
}

#[test]
fn entry_ids_are_never_reused_after_an_early_crash() {
    let sc = load("paxos-3");
    for seed in [8915, 9259] {
        let r = run_consensus(&sc, seed);
        assert!(r.violations.is_empty(), "seed {seed}: {:?}", r.violations);
    }
}

#[test]
fn a_consensus_run_replays_exactly_by_its_seed() {
    let sc = load("paxos-3");
    let a = run_consensus(&sc, 11);
    let b = run_consensus(&sc, 11);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.events, b.events);
    assert_eq!(a.coverage, b.coverage);
    assert_eq!(a.violations, b.violations);
    assert_ne!(run_consensus(&sc, 12).trace_hash, a.trace_hash);
}

/// `bug` switched on in `paxos-3` is caught within the CI seeds by `checker`, which finds
/// nothing on the same seed without it.
fn assert_paxos_bug_caught(bug: &str, checker: &str) {
    let clean = load("paxos-3");
    let mut sc = clean.clone();
    sc.consensus.as_mut().unwrap().inject = Some(bug.to_string());
    sc.validate().unwrap();
    let caught = |r: &ConsensusReport| r.violations.iter().any(|v| v.checker == checker);
    let reports = paxos_runs(&sc, caught);
    let first = reports.iter().find(|r| caught(r)).unwrap_or_else(|| {
        panic!(
            "{bug} was not caught by {checker} in {} seeds",
            reports.len()
        )
    });
    let without = run_consensus(&clean, first.seed);
    assert!(
        without.violations.is_empty(),
        "without {bug}: {}",
        without.human()
    );
    eprintln!("{bug}: caught by {checker} at seed {}", first.seed);
}

/// Every bug planted in the member is caught by some checker within the sweep's seeds of
/// a shipped consensus scenario.
#[test]
fn bugs_planted_in_the_member_are_caught() {
    use netabase_core::consensus::Mutant;
    for (mutant, scenario) in [
        (Mutant::PromiseNotPersisted, "paxos-3"),
        (Mutant::FollowerReadsLocally, "paxos-3"),
        (Mutant::ReadBeforeNoop, "paxos-3"),
        (Mutant::NoLeaseWaitAfterRestart, "paxos-lease-restarts"),
        (Mutant::LeaseIgnoresDrift, "paxos-pause-drift"),
        (Mutant::TruncatedReportedEmpty, "paxos-3"),
        (Mutant::ConfigActiveEarly, "paxos-membership"),
    ] {
        let mut sc = load(scenario);
        sc.consensus.as_mut().unwrap().inject = Some(mutant.name().to_string());
        sc.validate().unwrap();
        let caught = |r: &ConsensusReport| !r.violations.is_empty();
        let reports = paxos_runs(&sc, caught);
        let first = reports.iter().find(|r| caught(r)).unwrap_or_else(|| {
            panic!(
                "{} was not caught in {} seeds",
                mutant.name(),
                reports.len()
            )
        });
        eprintln!(
            "{}: caught by {} at seed {}",
            mutant.name(),
            first.violations[0].checker,
            first.seed
        );
    }
}

#[test]
fn replies_before_the_sync_are_caught_by_the_durability_checker() {
    assert_paxos_bug_caught("reply-before-sync", "durable-before-reply");
}

#[test]
fn retried_entries_applied_again_are_caught_by_the_at_most_once_checker() {
    assert_paxos_bug_caught("no-dedup", "at-most-once");
}

#[test]
fn local_reads_reported_as_linearizable_are_caught_by_the_linearizability_checker() {
    assert_paxos_bug_caught("local-read-as-linearizable", "linearizability");
}

#[test]
fn the_cli_runs_consensus_scenarios_and_prints_the_replay_command() {
    let dir = std::env::temp_dir().join(format!("netabase-sim-paxos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("paxos-buggy.toml");
    let base = std::fs::read_to_string(scenario_path("paxos-3")).unwrap();
    std::fs::write(
        &path,
        base.replace(
            "[consensus]\n",
            "[consensus]\ninject = \"reply-before-sync\"\n",
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_netabase-sim");
    let path_text = path.to_str().unwrap();
    let out = Command::new(bin)
        .args(["run", path_text, "--seed", "3", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["seed"], 3);
    assert!(!report["violations"].as_array().unwrap().is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&replay_command(path_text, 3)), "{stderr}");
    // The library run of the same seed is the same run.
    let sc = Scenario::load(&path).unwrap();
    assert_eq!(
        report["trace_hash"].as_str().unwrap(),
        run_consensus(&sc, 3).trace_hash
    );
    // A clean scenario passes, and a sweep reports its seeds.
    let out = Command::new(bin)
        .args([
            "sweep",
            scenario_path("paxos-3").to_str().unwrap(),
            "--seeds",
            "0..4",
            "--jobs",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["seeds"], 4);
    assert!(summary["failing_seeds"].as_array().unwrap().is_empty());
    std::fs::remove_dir_all(&dir).ok();
}
