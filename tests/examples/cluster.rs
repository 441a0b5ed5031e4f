//! `cargo run --example cluster`: five nodes, records, providers, one node stopped; the
//! report and the exit status.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// The number in `line` right after `label` (`"12/12 reads"` with label `""` gives 12).
fn number_after(line: &str, label: &str) -> usize {
    let rest = &line[line
        .find(label)
        .unwrap_or_else(|| panic!("{label:?} in {line:?}"))
        + label.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("a number after {label:?} in {line:?}"))
}

#[test]
fn cluster_reports_every_step_and_exits_0() {
    let mut cluster = Program::start("cluster", Command::new(example("cluster")));
    cluster.expect_containing("5 nodes in one process on 127.0.0.1 (mDNS off");
    let node_lines: Vec<String> = (0..5)
        .map(|i| cluster.expect_containing(&format!("node {i}  12D3KooW")))
        .collect();
    for line in &node_lines {
        assert!(line.contains("/ip4/127.0.0.1/tcp/"), "{line}");
    }

    cluster.expect_containing("joined:");
    let put = cluster.expect_containing("put:");
    assert_eq!(number_after(&put, "put:"), 10, "{put}");

    // 5 nodes read the 10 records of the 4 others: 40 reads, some over the network.
    let get = cluster.expect_containing("get:");
    assert!(get.contains("40/40 reads"), "{get}");
    assert!(number_after(&get, "local replica,") > 0, "{get}");

    cluster.expect_containing("index:");
    let providers = cluster.expect_containing("providers:");
    assert!(providers.contains("20/20 provider lookups"), "{providers}");

    cluster.expect_containing("stopped:    node 0");
    // 4 nodes read the 10 records of the 3 other running nodes and of node 0.
    let after = cluster.expect_containing("after stop:");
    assert!(
        after.contains("4/4 nodes still answer: 32 reads"),
        "{after}"
    );
    assert!(after.contains("12 provider lookups"), "{after}");
    cluster.expect_containing("result: every check passed");

    let status = cluster.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    assert!(
        !cluster.transcript.iter().any(|l| l.contains("FAILED")),
        "{:?}",
        cluster.transcript
    );
}
