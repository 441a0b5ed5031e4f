//! The control subcommands: human and JSON output, exit codes, bulk import, and the
//! control socket's refusals.

use std::io::{BufRead, BufReader, Write};

use crate::support::{NodeProcess, ctl, json, ok, run, stderr, stdout};

#[test]
fn subcommands_report_failures_with_exit_codes_and_messages() {
    let root = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&root.path().join("node"), &[]);

    let missing = ctl(&node, &["get", "nothing-here"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(stdout(&missing), "");
    assert!(stderr(&missing).contains("not found: nothing-here"));
    let missing = ctl(&node, &["get", "nothing-here", "--json"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(stdout(&missing), "null\n");

    let bad_doc = ctl(&node, &["put", "--doc", "d", "{not json"]);
    assert_eq!(bad_doc.status.code(), Some(1));
    assert!(
        stderr(&bad_doc).contains("not a JSON document"),
        "{bad_doc:?}"
    );

    let bad_hex = ctl(&node, &["put", "--hex", "h", "xyz"]);
    assert_eq!(bad_hex.status.code(), Some(1));
    assert!(stderr(&bad_hex).contains("hex"), "{bad_hex:?}");

    let bad_addr = ctl(&node, &["add-address", "/ip4/127.0.0.1/tcp/9"]);
    assert_eq!(bad_addr.status.code(), Some(1));
    assert!(stderr(&bad_addr).contains("/p2p/"), "{bad_addr:?}");
    let bad_peer = ctl(&node, &["remove-peer", "not-a-peer"]);
    assert_eq!(bad_peer.status.code(), Some(1));

    // Bootstrapping with nobody to ask fails and says why.
    let lonely = ctl(&node, &["bootstrap"]);
    assert_eq!(lonely.status.code(), Some(1));
    assert!(stderr(&lonely).contains("no known peers"), "{lonely:?}");

    // Nothing listens here: exit code 3, quickly.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let unreachable = run(&["info", "--node", &addr, "--wait", "0"]);
    assert_eq!(unreachable.status.code(), Some(3), "{unreachable:?}");
    assert!(stderr(&unreachable).contains("cannot reach"));

    // Mode, peers and the routing table of a lone node.
    assert_eq!(ok(&ctl(&node, &["mode"])), "server\n");
    assert_eq!(ok(&ctl(&node, &["mode", "client"])), "client\n");
    assert_eq!(ok(&ctl(&node, &["mode", "--json"])), "\"client\"\n");
    assert_eq!(ok(&ctl(&node, &["peers"])), "no connected peers\n");
    assert_eq!(ok(&ctl(&node, &["routing-table", "--json"])), "[]\n");
    let info = json(&ok(&ctl(&node, &["info", "--json"])));
    assert_eq!(info["peer_id"], node.peer_id().as_str());
    assert_eq!(info["mode"], "client");
    assert_eq!(info["control"], node.control().as_str());
    let human = ok(&ctl(&node, &["info"]));
    assert!(
        human.contains(&format!("peer id    {}", node.peer_id())),
        "{human}"
    );
}

#[test]
fn import_puts_every_good_line_and_names_the_bad_ones() {
    let root = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&root.path().join("node"), &[]);
    let file = root.path().join("records.jsonl");
    let mut lines = String::new();
    for i in 0..150 {
        lines.push_str(&format!("{{\"key\":\"r{i:03}\",\"value\":\"v{i}\"}}\n"));
    }
    lines.push_str("{\"key\":\"doc\",\"doc\":{\"ok\":true}}\n");
    lines.push_str("{\"key\":\"bin\",\"value_hex\":\"cafe\"}\n");
    lines.push_str("{\"key\":\"bad\"}\n");
    lines.push_str("{\"key\":\"bad-hex\",\"value_hex\":\"zz\"}\n");
    std::fs::write(&file, lines).unwrap();

    let out = ctl(
        &node,
        &["import", file.to_str().unwrap(), "--json", "--window", "8"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let summary = json(stdout(&out).lines().next().unwrap());
    assert_eq!(summary["stored"], 152, "{summary}");
    assert_eq!(summary["failed"], 2, "{summary}");
    let errors = summary["errors"].to_string();
    assert!(errors.contains("line 153"), "{errors}");
    assert!(errors.contains("line 154"), "{errors}");

    let listed = json(&ok(&ctl(&node, &["list", "--json", "--limit", "1000"])));
    assert_eq!(listed.as_array().unwrap().len(), 151);
    assert_eq!(ok(&ctl(&node, &["get", "r149"])), "v149\n");
    assert_eq!(ok(&ctl(&node, &["get", "bin"])), "0xcafe\n");
    let docs = json(&ok(&ctl(&node, &["list", "--doc", "--json"])));
    assert_eq!(docs, json(r#"[{"key":"doc","doc":{"ok":true}}]"#));
    let stats = json(&ok(&ctl(&node, &["stats", "--json"])));
    assert_eq!(stats["local_raw_records"], 151);
    assert_eq!(stats["local_documents"], 1);

    // A clean import exits 0.
    let good = root.path().join("good.jsonl");
    std::fs::write(&good, "{\"key\":\"x\",\"value\":\"y\"}\n").unwrap();
    let out = ok(&ctl(&node, &["import", good.to_str().unwrap()]));
    assert!(out.starts_with("stored 1 record(s)"), "{out}");
}

#[test]
fn the_control_socket_pipelines_requests_and_refuses_an_overlong_line() {
    let root = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&root.path().join("node"), &[]);
    let stream = std::net::TcpStream::connect(node.control()).unwrap();
    stream
        .set_read_timeout(Some(crate::support::DEADLINE))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    // Several requests in one write; every one is answered, matched by its number.
    writer
        .write_all(
            b"{\"req\":1,\"cmd\":\"put\",\"key\":\"a\",\"value\":\"1\"}\n{\"req\":2,\"cmd\":\"mode\"}\n{\"req\":3,\"cmd\":\"get\",\"key\":\"zz\"}\n",
        )
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let reply = json(&line);
        assert_eq!(reply["ok"], true, "{reply}");
        seen.push(reply["req"].as_u64().unwrap());
    }
    seen.sort();
    assert_eq!(seen, [1, 2, 3]);

    // A line over the limit is refused; the connection goes on.
    let long = vec![b'x'; (1 << 20) + 1];
    writer.write_all(&long).unwrap();
    writer.write_all(b"\n").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let reply = json(&line);
    assert_eq!(reply["ok"], false);
    assert!(reply["error"].as_str().unwrap().contains("longer than"));
    writer
        .write_all(b"{\"req\":4,\"cmd\":\"get\",\"key\":\"a\"}\n")
        .unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let reply = json(&line);
    assert_eq!(reply["req"], 4);
    assert_eq!(reply["result"]["value"], "1");

    // When the client stops sending, the node answers what it read and closes.
    writer.write_all(b"{\"req\":5,\"cmd\":\"mode\"}\n").unwrap();
    writer.shutdown(std::net::Shutdown::Write).unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(json(&line)["req"], 5);
    let mut end = String::new();
    assert_eq!(reader.read_line(&mut end).unwrap(), 0, "closed: {end:?}");

    // The node goes on serving other connections.
    assert_eq!(ok(&ctl(&node, &["get", "a"])), "1\n");
}
