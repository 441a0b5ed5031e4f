//! A node process restarted on the same data directory keeps its peer id and its records.

use netabase_testnode::{BootstrapReply, Command, Message, PutReply};

use crate::support::*;

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
