//! Signals stop a node cleanly; a restart on the same directory keeps its identity and
//! every acknowledged record.

use crate::support::{NodeProcess, ctl, json, ok, run};

fn stop_and_restart(backend: &str, signal: &str) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    let flags = ["--backend", backend];

    // `netabase id` tells the peer id before the node first starts.
    let id = ok(&run(&["id", "--data-dir", dir.to_str().unwrap()]));
    let node = NodeProcess::start(&dir, &flags);
    assert_eq!(node.peer_id(), id.trim());
    assert_eq!(node.info["backend"], backend);

    // Acknowledged writes (no peers: stored here, the network part falls short).
    for i in 0..20 {
        let put = ok(&ctl(
            &node,
            &["put", &format!("k{i:02}"), &format!("value {i}")],
        ));
        assert!(put.contains("stored"), "{put}");
    }
    ok(&ctl(&node, &["put", "--doc", "doc", r#"{"a":[1,2,3]}"#]));
    ok(&ctl(&node, &["remove", "k05"]));

    node.signal(signal);
    let (status, rest) = node.wait_exit();
    assert_eq!(status.code(), Some(0), "exit status after SIG{signal}");
    let last = json(rest.last().expect("a stopped line"));
    assert_eq!(last["type"], "stopped");
    assert_eq!(last["peer_id"], id.trim());

    let node = NodeProcess::start(&dir, &flags);
    assert_eq!(
        node.peer_id(),
        id.trim(),
        "the peer id survives the restart"
    );
    let listed = json(&ok(&ctl(&node, &["list", "--json"])));
    let keys: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..20)
        .filter(|i| *i != 5)
        .map(|i| format!("k{i:02}"))
        .collect();
    assert_eq!(keys, expected);
    assert_eq!(ok(&ctl(&node, &["get", "k19"])), "value 19\n");
    assert_eq!(ctl(&node, &["get", "k05"]).status.code(), Some(1));
    let doc = json(&ok(&ctl(&node, &["get", "--doc", "doc", "--json"])));
    assert_eq!(doc["doc"], json(r#"{"a":[1,2,3]}"#));
    assert_eq!(doc["source"], serde_json::Value::Null);

    // The shutdown command stops it cleanly too.
    assert_eq!(ok(&ctl(&node, &["shutdown"])), "the node is stopping\n");
    let (status, _) = node.wait_exit();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigterm_stops_a_redb_node_cleanly_and_a_restart_keeps_its_peer_id_and_data() {
    stop_and_restart("redb", "TERM");
}

#[test]
fn sigint_stops_a_sled_node_cleanly_and_a_restart_keeps_its_peer_id_and_data() {
    stop_and_restart("sled", "INT");
}

#[test]
fn a_second_node_on_the_same_directory_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    let _first = NodeProcess::start(&dir, &[]);
    let second = run(&[
        "node",
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--no-mdns",
        "--no-stdin",
    ]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("netabase node:"),
        "{second:?}"
    );
}
