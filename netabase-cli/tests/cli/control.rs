//! The control subcommands: human and JSON output, exit codes, bulk import; the control
//! socket's and the TCP endpoint's refusals, and the metrics endpoint's.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::support::{
    DEADLINE, NodeProcess, ctl, ctl_tcp, eventually, json, ok, run, sample, scrape, stderr, stdout,
};

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
    let token = root.path().join("token");
    std::fs::write(&token, format!("{}\n", "ab".repeat(32))).unwrap();
    let unreachable = run(&[
        "info",
        "--node",
        &addr,
        "--token-file",
        token.to_str().unwrap(),
        "--wait",
        "0",
    ]);
    assert_eq!(unreachable.status.code(), Some(3), "{unreachable:?}");
    assert!(stderr(&unreachable).contains("cannot reach"));
    let nowhere = root.path().join("no-node");
    std::fs::create_dir(&nowhere).unwrap();
    let unreachable = run(&["info", "--node", nowhere.to_str().unwrap(), "--wait", "0"]);
    assert_eq!(unreachable.status.code(), Some(3), "{unreachable:?}");
    assert!(
        stderr(&unreachable).contains("control/socket"),
        "{unreachable:?}"
    );
    // A TCP address without its token file is a usage error, named as such.
    let no_token = run(&["info", "--node", &addr]);
    assert_eq!(no_token.status.code(), Some(1), "{no_token:?}");
    assert!(stderr(&no_token).contains("--token-file"), "{no_token:?}");

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

/// A connection to a node's Unix control socket: a writer and a line reader.
fn unix_connection(node: &NodeProcess) -> (UnixStream, BufReader<UnixStream>) {
    let stream = UnixStream::connect(node.control()).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    (stream.try_clone().unwrap(), BufReader::new(stream))
}

fn read_reply(reader: &mut impl BufRead) -> serde_json::Value {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    json(&line)
}

/// Asserts that the peer closed the connection (after anything already sent).
#[track_caller]
fn assert_closed(reader: &mut impl BufRead) {
    let mut rest = String::new();
    assert_eq!(reader.read_line(&mut rest).unwrap(), 0, "closed: {rest:?}");
}

#[test]
fn the_control_socket_pipelines_requests_and_closes_on_a_bad_line() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    let node = NodeProcess::start(&dir, &[]);
    // The socket sits in a directory only this user may enter; no TCP endpoint is open.
    let control = dir.join("control");
    assert_eq!(
        std::fs::canonicalize(&control).unwrap().join("socket"),
        std::path::PathBuf::from(node.control())
    );
    assert_eq!(std::fs::metadata(&control).unwrap().mode() & 0o777, 0o700);
    assert!(node.info["control_tcp"].is_null(), "{}", node.info);
    assert!(!control.join("token").exists());
    // The data directory names the node for the subcommands.
    let info = json(&ok(&run(&[
        "info",
        "--json",
        "--node",
        dir.to_str().unwrap(),
    ])));
    assert_eq!(info["peer_id"], node.peer_id().as_str());

    let (mut writer, mut reader) = unix_connection(&node);
    // Many requests in one write (more than run at once); every one is answered, matched
    // by its number.
    let mut batch = String::from("{\"req\":0,\"cmd\":\"put\",\"key\":\"a\",\"value\":\"1\"}\n");
    for req in 1..200 {
        batch.push_str(&format!("{{\"req\":{req},\"cmd\":\"mode\"}}\n"));
    }
    writer.write_all(batch.as_bytes()).unwrap();
    let mut seen = Vec::new();
    for _ in 0..200 {
        let reply = read_reply(&mut reader);
        assert_eq!(reply["ok"], true, "{reply}");
        seen.push(reply["req"].as_u64().unwrap());
    }
    seen.sort();
    assert_eq!(seen, (0..200).collect::<Vec<_>>());

    // A line over the limit is refused, and the connection closes.
    let long = vec![b'x'; (1 << 20) + 1];
    writer.write_all(&long).unwrap();
    writer.write_all(b"\n").unwrap();
    let _ = writer.write_all(b"{\"req\":1,\"cmd\":\"put\",\"key\":\"b\",\"value\":\"2\"}\n");
    let reply = read_reply(&mut reader);
    assert_eq!(reply["ok"], false);
    assert!(
        reply["error"].as_str().unwrap().contains("longer than"),
        "{reply}"
    );
    assert_closed(&mut reader);

    // So does a line that is not a request, after the replies to the requests before it.
    let (mut writer, mut reader) = unix_connection(&node);
    writer
        .write_all(b"{\"req\":4,\"cmd\":\"get\",\"key\":\"a\"}\n{\"cmd\":\"get\"}\n{\"req\":5,\"cmd\":\"put\",\"key\":\"b\",\"value\":\"2\"}\n")
        .unwrap();
    let mut replies = [read_reply(&mut reader), read_reply(&mut reader)];
    replies.sort_by_key(|r| r["req"].is_null());
    assert_eq!(replies[0]["req"], 4, "{replies:?}");
    assert_eq!(replies[0]["result"]["value"], "1");
    assert_eq!(replies[1]["ok"], false);
    assert!(
        replies[1]["error"]
            .as_str()
            .unwrap()
            .contains("invalid request")
    );
    assert_closed(&mut reader);

    // When the client stops sending, the node answers what it read and closes.
    let (mut writer, mut reader) = unix_connection(&node);
    writer.write_all(b"{\"req\":6,\"cmd\":\"mode\"}\n").unwrap();
    writer.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_reply(&mut reader)["req"], 6);
    assert_closed(&mut reader);

    // Nothing after a refused line ran; the node goes on serving other connections.
    assert_eq!(ctl(&node, &["get", "b"]).status.code(), Some(1));
    assert_eq!(ok(&ctl(&node, &["get", "a"])), "1\n");
}

#[test]
fn connections_over_the_limit_are_refused_until_one_closes() {
    let root = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&root.path().join("node"), &[]);
    // Each connection is answered once, so every one of them is being served.
    let mut open = Vec::new();
    for req in 0..32 {
        let (mut writer, mut reader) = unix_connection(&node);
        writer
            .write_all(format!("{{\"req\":{req},\"cmd\":\"mode\"}}\n").as_bytes())
            .unwrap();
        assert_eq!(read_reply(&mut reader)["req"], req);
        open.push((writer, reader));
    }
    let (_writer, mut reader) = unix_connection(&node);
    let refusal = read_reply(&mut reader);
    assert!(
        refusal["error"].as_str().unwrap().contains("too many"),
        "{refusal}"
    );
    assert_closed(&mut reader);
    drop(open.pop());
    eventually("a place frees when a connection closes", || {
        let (mut writer, mut reader) = unix_connection(&node);
        writer.write_all(b"{\"req\":1,\"cmd\":\"mode\"}\n").unwrap();
        read_reply(&mut reader)["ok"] == true
    });
    let metrics = scrape(&node.metrics());
    assert!(
        sample(
            &metrics,
            "netabase_control_refusals_total{reason=\"connections\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
}

#[test]
fn the_data_directory_must_be_private_and_is_locked() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    // A fresh data directory is created private.
    let node = NodeProcess::start(&dir, &[]);
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o077, 0);
    // A second node on the same directory stops at the lock, leaving the socket alone.
    let second = NodeProcess::spawn(&dir, &[]);
    let (status, _) = second.wait_exit_with_logs(|logs| {
        assert!(
            logs.contains("another node runs on the data directory"),
            "{logs}"
        );
    });
    assert_eq!(status.code(), Some(1));
    assert_eq!(ok(&ctl(&node, &["mode"])), "server\n");

    // A node killed without a chance to clean up leaves its socket; the next one replaces
    // it (under the lock) and serves.
    node.signal("KILL");
    let (status, _) = node.wait_exit();
    assert!(!status.success());
    assert!(dir.join("control/socket").exists());
    let node = NodeProcess::start(&dir, &[]);
    assert_eq!(ok(&ctl(&node, &["mode"])), "server\n");
    ok(&ctl(&node, &["shutdown"]));
    let (status, _) = node.wait_exit();
    assert!(status.success());
    // A clean stop removes the socket.
    assert!(!dir.join("control/socket").exists());

    // A data directory others may write to is refused before anything is opened.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770)).unwrap();
    let refused = NodeProcess::spawn(&dir, &[]);
    let (status, _) = refused.wait_exit_with_logs(|logs| {
        assert!(
            logs.contains("writable by its group or by others"),
            "{logs}"
        );
    });
    assert_eq!(status.code(), Some(1));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    // So is a control directory open to others (it is not repaired).
    std::fs::set_permissions(dir.join("control"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let refused = NodeProcess::spawn(&dir, &[]);
    let (status, _) = refused.wait_exit_with_logs(|logs| {
        assert!(logs.contains("it must be 0700"), "{logs}");
    });
    assert_eq!(status.code(), Some(1));
}

#[test]
fn a_data_directory_deeper_than_a_socket_address_still_serves() {
    let root = tempfile::tempdir().unwrap();
    let mut dir = root.path().to_path_buf();
    while dir.as_os_str().len() < 120 {
        dir.push("a-long-directory-name");
    }
    let node = NodeProcess::start(&dir, &[]);
    assert!(node.control().len() > 108, "{}", node.control());
    assert_eq!(ok(&ctl(&node, &["mode"])), "server\n");
    let info = json(&ok(&run(&[
        "info",
        "--json",
        "--node",
        dir.to_str().unwrap(),
    ])));
    assert_eq!(info["peer_id"], node.peer_id().as_str());
}

/// Sends `bytes` to `address` and reads until the node closes the connection; what it
/// answered.
fn send_raw(address: &str, bytes: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    // The node may close before it has read everything: later writes may fail.
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn the_tcp_endpoint_wants_its_token_first_and_refuses_web_requests() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    let node = NodeProcess::start(&dir, &["--control", "127.0.0.1:0"]);
    let token_file = node.token_file();
    assert_eq!(
        std::path::Path::new(&token_file),
        std::fs::canonicalize(&dir).unwrap().join("control/token")
    );
    let meta = std::fs::metadata(&token_file).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim();
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));

    // The subcommands send the token.
    assert!(ok(&ctl_tcp(&node, &["put", "k", "v", "--json"])).contains("\"key\":\"k\""));
    assert_eq!(ok(&ctl_tcp(&node, &["get", "k"])), "v\n");
    // Another token is refused.
    let wrong = root.path().join("wrong-token");
    std::fs::write(&wrong, format!("{}\n", "0".repeat(64))).unwrap();
    let refused = run(&[
        "put",
        "--node",
        &node.control_tcp(),
        "--token-file",
        wrong.to_str().unwrap(),
        "stolen",
        "x",
    ]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        stderr(&refused).contains("refused the connection"),
        "{refused:?}"
    );

    // What a web page's fetch(..., {method: "POST", mode: "no-cors"}) sends: HTTP headers,
    // then a body of commands. Refused at the first line; nothing runs.
    let attack = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n\r\n\
        {\"req\":1,\"cmd\":\"put\",\"key\":\"pwned\",\"value\":\"x\"}\n{\"req\":2,\"cmd\":\"shutdown\"}\n";
    let answer = send_raw(&node.control_tcp(), attack.as_bytes());
    assert_eq!(answer.lines().count(), 1, "{answer}");
    assert!(answer.contains("HTTP is not spoken here"), "{answer}");
    // Even with the right token first.
    let answer = send_raw(&node.control_tcp(), format!("{token}\n{attack}").as_bytes());
    assert!(answer.contains("HTTP is not spoken here"), "{answer}");
    // A request where the token should be.
    let answer = send_raw(
        &node.control_tcp(),
        b"{\"req\":3,\"cmd\":\"put\",\"key\":\"pwned\",\"value\":\"x\"}\n",
    );
    assert!(
        answer.contains("must be the node's control token"),
        "{answer}"
    );
    // Nothing at all: refused after the token deadline (about 2 s).
    let started = Instant::now();
    let mut silent = std::net::TcpStream::connect(node.control_tcp()).unwrap();
    silent.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut answer = String::new();
    silent.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("no control token within"), "{answer}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(20),
        "{waited:?}"
    );

    assert_eq!(ctl_tcp(&node, &["get", "pwned"]).status.code(), Some(1));
    assert_eq!(ok(&ctl(&node, &["get", "k"])), "v\n");
    let metrics = scrape(&node.metrics());
    for (reason, at_least) in [("http", 2.0), ("token", 2.0), ("token_timeout", 1.0)] {
        let series = format!("netabase_control_refusals_total{{reason=\"{reason}\"}}");
        assert!(
            sample(&metrics, &series).is_some_and(|n| n >= at_least),
            "{series}: {metrics}"
        );
    }
    // A clean stop removes the token with the socket.
    ok(&ctl_tcp(&node, &["shutdown"]));
    let (status, _) = node.wait_exit();
    assert!(status.success());
    assert!(!std::path::Path::new(&token_file).exists());
}

/// The status code of an HTTP answer's head.
fn status(head: &str) -> &str {
    head.split_whitespace().nth(1).unwrap_or_default()
}

/// Sends one HTTP/1.0 request to `address`; the answer's head (lower case) and body.
fn http(address: &str, request: &str) -> (String, String) {
    let answer = send_raw(address, request.as_bytes());
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    (head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn the_metrics_endpoint_answers_only_its_own_names_and_sends_no_cors_headers() {
    let root = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        &root.path().join("node"),
        &["--metrics", "0", "--metrics-host", "metrics.test"],
    );
    // A port alone binds the loopback address.
    let address = node.metrics();
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    let port = address.rsplit_once(':').unwrap().1;
    for host in [
        address.clone(),
        format!("localhost:{port}"),
        "metrics.test".to_string(),
    ] {
        let (head, body) = http(
            &address,
            &format!("GET /metrics HTTP/1.0\r\nHost: {host}\r\nOrigin: http://127.0.0.1:1\r\n\r\n"),
        );
        assert!(status(&head) == "200", "{host}: {head}");
        assert!(!head.contains("access-control-"), "{head}");
        assert!(body.contains("netabase_routing_table_peers"), "{body}");
    }
    // A name that may point anywhere (DNS rebinding) is refused.
    let (head, body) = http(
        &address,
        &format!("GET /metrics HTTP/1.0\r\nHost: rebind.example:{port}\r\n\r\n"),
    );
    assert_eq!(status(&head), "403", "{head}");
    assert!(!body.contains("netabase_routing_table_peers"), "{body}");
    // A CORS preflight gets no permission.
    let (head, _) = http(
        &address,
        &format!(
            "OPTIONS /metrics HTTP/1.0\r\nHost: {address}\r\nOrigin: http://127.0.0.1:1\r\nAccess-Control-Request-Method: GET\r\n\r\n"
        ),
    );
    assert!(!status(&head).starts_with('2'), "{head}");
    assert!(!head.contains("access-control-"), "{head}");
    let metrics = scrape(&address);
    assert_eq!(
        sample(&metrics, "netabase_metrics_refusals_total{reason=\"host\"}"),
        Some(1.0),
        "{metrics}"
    );
}
