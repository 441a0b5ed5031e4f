//! `cargo run --example distributed_counter` and `--example replicated_state_machine`:
//! their reports and exit statuses.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

#[test]
fn distributed_counter_totals_every_acknowledged_increment() {
    let mut run = Program::start(
        "distributed_counter",
        Command::new(example("distributed_counter")),
    );
    run.expect_containing("3 nodes in one process on 127.0.0.1 (mDNS off)");
    run.expect_containing("cluster:");
    run.expect_containing("put_record:  refused, Counter is a consensus model");
    let increments = run.expect_containing("increments:");
    assert!(increments.contains("120 acknowledged"), "{increments}");
    for i in 0..3 {
        let line = run.expect_containing(&format!("node {i}:"));
        assert!(line.contains("total 120"), "{line}");
    }
    run.expect_containing("result: every check passed");
    let status = run.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}");
}

#[test]
fn replicated_state_machine_survives_the_loss_of_its_leader() {
    let mut run = Program::start(
        "replicated_state_machine",
        Command::new(example("replicated_state_machine")),
    );
    run.expect_containing("cluster:");
    run.expect_containing("stopped:");
    run.expect_containing("elected:");
    let survivor = run.expect_containing("read:");
    assert!(survivor.contains("a=10 b=∅ c=3 d=4"), "{survivor}");
    run.expect_containing("restarted:");
    let rejoined = run.expect_containing("read:");
    assert!(rejoined.contains("a=10 b=∅ c=3 d=4"), "{rejoined}");
    run.expect_containing("result: every check passed");
    let status = run.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}");
}
