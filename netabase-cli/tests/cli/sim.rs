//! `netabase sim` runs the simulator; `netabase id` and usage errors.

use crate::support::{ok, run};

fn scenario(name: &str) -> String {
    format!(
        "{}/../netabase-sim/scenarios/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn sim_run_prints_the_simulators_json_report() {
    let out = ok(&run(&["sim", "run", &scenario("dht-small"), "--json"]));
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(report["violations"], serde_json::json!([]), "{report}");
    assert!(report["events"].as_u64().unwrap() > 0, "{report}");
    // The same seed gives the same trace.
    let again = ok(&run(&["sim", "run", &scenario("dht-small"), "--json"]));
    let again: serde_json::Value = serde_json::from_str(again.trim()).unwrap();
    assert_eq!(again["trace_hash"], report["trace_hash"]);
}

#[test]
fn sim_refuses_a_missing_scenario_with_the_simulators_exit_code() {
    let out = run(&["sim", "run", "/nonexistent/scenario.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error"));
}

#[test]
fn usage_errors_exit_with_2() {
    for args in [
        &["frobnicate"][..],
        &["node", "--mode", "sideways"],
        &["put", "--node", "127.0.0.1:1", "only-a-key"],
        &["put", "--node", "127.0.0.1:1", "--doc", "--hex", "k", "v"],
        &["node", "--no-stdin", "--stop-on-eof"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}
