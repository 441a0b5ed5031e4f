//! The test node program itself: its line protocol and its command line.

use std::process::{Command as Process, Stdio};

use netabase_testnode::{Command, Event, PutReply};

use super::support::*;

fn the_node_program_refuses_bad_lines_and_flags_and_stops_at_end_of_input(rt: Rt) {
    let mut node = Spawn::new("program", rt).start();
    // Lines that are no request are refused, one report each, and the node carries on.
    for line in [
        "not json",
        r#"{"req":1,"cmd":"fly"}"#,
        r#"{"cmd":"stats"}"#,
        "[]",
    ] {
        node.write_line(line);
        let why = node.expect_refused_line();
        assert!(!why.is_empty(), "{line}");
    }
    let put: PutReply = node.call(Command::Put {
        message: message(1, "still here"),
    });
    assert_eq!(
        put.quorum_error.as_deref(),
        Some("quorum failed: 0 of 1 peers")
    );
    assert_eq!(
        node.get(1).expect("stored locally").record.text,
        "still here"
    );
    // Errors of an operation come back as failed replies.
    let refused = node
        .try_call(Command::AddAddress {
            peer: node.peer_id.clone(),
            address: "not an address".into(),
        })
        .unwrap_err();
    assert!(refused.contains("address"), "{refused}");

    // The end of its input stops the node gracefully.
    node.close_stdin();
    let status = node.wait_exit();
    assert!(status.success(), "{status:?}");
    node.expect_event("stopped", |e| matches!(e, Event::Stopped).then_some(()));

    // Flags it cannot honour stop it before it starts, with a reason on stderr.
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--runtime", "glommio"], "invalid value 'glommio'"),
        (
            &["--bootstrap", "/ip4/127.0.0.1/tcp/1"],
            "must end in /p2p/<peer id>",
        ),
        (&["--listen", "/ip4/192.0.2.1/tcp/0"], "starting the swarm"),
        (&["--protocol", "no-slash"], "protocol name"),
    ];
    for (args, reason) in cases {
        let out = Process::new(binary())
            .args(["--data-dir", dir])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

per_runtime!(the_node_program_refuses_bad_lines_and_flags_and_stops_at_end_of_input);
