//! The paxakos engine under the simulator: seeds hold every property, a seed replays to
//! the same trace on any thread, and every planted bug is caught by its checker.

use netabase_sim_paxakos::{Bug, Spec, run};

fn spec() -> Spec {
    Spec {
        duration_s: 10,
        ..Spec::default()
    }
}

#[test]
fn seeds_with_crashes_partitions_and_loss_hold_every_property() {
    for seed in 1..=30 {
        let report = run(&spec(), seed);
        assert!(report.violations.is_empty(), "{}", report.human());
        assert!(
            report.acked_writes > 0 && report.rounds > 0,
            "{}",
            report.human()
        );
    }
}

#[test]
fn a_seed_gives_the_same_trace_twice_and_on_another_thread() {
    let here = run(&spec(), 7);
    let again = run(&spec(), 7);
    let there = std::thread::spawn(|| run(&spec(), 7))
        .join()
        .expect("the other thread");
    assert_eq!(here.trace_hash, again.trace_hash);
    assert_eq!(here.trace_hash, there.trace_hash);
    assert_eq!(here.rounds, there.rounds);
    assert_ne!(here.trace_hash, run(&spec(), 8).trace_hash);
}

#[test]
fn every_planted_bug_is_caught_by_its_checker() {
    for bug in Bug::ALL {
        let expected = match bug {
            Bug::AckedLate => "acked-write-lost",
            Bug::ForgedApply => "agreement",
            Bug::StaleReads => "linearizability",
        };
        let caught = (1..=10).any(|seed| {
            let report = run(
                &Spec {
                    inject: Some(bug),
                    ..spec()
                },
                seed,
            );
            report.violations.iter().any(|(c, _)| *c == expected)
        });
        assert!(caught, "{} was not caught by {expected}", bug.name());
    }
}
