//! A node process restarted on the same data directory keeps its peer id and its records.

use netabase_testnode::{BootstrapReply, Command, Message, PutReply};

use super::support::*;

fn a_restarted_node_keeps_its_peer_id_and_records(rt: Rt) {
    for backend in ["redb", "sled"] {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("restart-{backend}");
        let mut first = Spawn::new(&name, rt)
            .arg("--backend", backend)
            .data_dir(dir.path())
            .start();
        let id = first.peer_id.clone();
        let written = vec![message(1, "durable"), message(2, "also durable")];
        for m in &written {
            let _: PutReply = first.call(Command::Put { message: m.clone() });
        }
        let status = first.shutdown();
        assert!(status.success(), "{backend}: {status:?}");

        let mut second = Spawn::new(&name, rt)
            .arg("--backend", backend)
            .data_dir(dir.path())
            .start();
        assert_eq!(second.peer_id, id, "{backend}");
        let local: Vec<Message> = second.call(Command::LocalMessages { limit: 10 });
        assert_eq!(local, written, "{backend}");
        // The DHT records survived too: found locally, with their writer.
        let own = second.get(1).expect("kept");
        assert_eq!(
            (own.record, own.source, own.origin),
            (written[0].clone(), None, id.clone())
        );

        // The restarted node serves them to a newcomer.
        let mut newcomer = Spawn::new(&format!("{name}-newcomer"), rt)
            .bootstrap(&second)
            .start();
        let _: BootstrapReply = newcomer.call(Command::Bootstrap);
        let fetched = newcomer.get(2).expect("served by the restarted node");
        assert_eq!(fetched.record, written[1]);
        assert_eq!(fetched.source.as_deref(), Some(id.as_str()));
        assert_eq!(fetched.origin, id);

        // A second process on the same directory is refused while the first runs.
        let clash = std::process::Command::new(binary())
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--backend")
            .arg(backend)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!clash.status.success(), "{backend}");
        assert!(clash.stdout.is_empty());
        assert!(String::from_utf8_lossy(&clash.stderr).contains("opening the node"));
        assert!(second.shutdown().success());
    }
}

per_runtime!(a_restarted_node_keeps_its_peer_id_and_records);

/// Two nodes killed with SIGKILL right after puts were acknowledged still hold every
/// acknowledged record when they restart: the writer its typed records and DHT records,
/// the other node each DHT record it stored. The nodes commit with deferred durability and
/// sync once per burst (group commit) before any answer leaves; the puts are pipelined so
/// that bursts happen.
fn acknowledged_puts_survive_sigkill(rt: Rt) {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = |name: &str, dir: &std::path::Path| {
        Spawn::new(name, rt).arg("--backend", "redb").data_dir(dir)
    };
    let b = start("sigkill-b", dir_b.path()).start();
    let b_id = b.peer_id.clone();
    let mut a = start("sigkill-a", dir_a.path()).bootstrap(&b).start();
    let _: BootstrapReply = a.call(Command::Bootstrap);
    let written: Vec<Message> = (1..=24).map(|i| message(i, &format!("kept {i}"))).collect();
    let requests: Vec<u64> = written
        .iter()
        .map(|m| a.send(Command::Put { message: m.clone() }))
        .collect();
    let replies: Vec<PutReply> = requests.iter().map(|&r| a.reply_as(r)).collect();
    let stored_at_b: Vec<&Message> = written
        .iter()
        .zip(&replies)
        .filter(|(_, reply)| reply.stored_at.contains(&b_id))
        .map(|(m, _)| m)
        .collect();
    assert!(
        !stored_at_b.is_empty(),
        "no put reached the other node: {replies:?}"
    );
    // Dropping a node process kills it with SIGKILL.
    drop(a);
    drop(b);

    let mut b = start("sigkill-b-again", dir_b.path()).start();
    for m in &stored_at_b {
        let found = b
            .get(m.id)
            .unwrap_or_else(|| panic!("{} lost by the replica", m.id));
        assert_eq!((&found.record, found.source.as_deref()), (*m, None));
    }
    drop(b);
    let mut a = start("sigkill-a-again", dir_a.path()).start();
    let local: Vec<Message> = a.call(Command::LocalMessages { limit: 100 });
    assert_eq!(local, written, "typed records of the writer");
    for m in &written {
        let found = a
            .get(m.id)
            .unwrap_or_else(|| panic!("{} lost by the writer", m.id));
        assert_eq!((&found.record, found.source.as_deref()), (m, None));
    }
}

per_runtime!(acknowledged_puts_survive_sigkill: tokio, smol);
