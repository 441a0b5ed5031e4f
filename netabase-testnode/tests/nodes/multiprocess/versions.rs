//! Versioned records across node processes: the newer of two writes wins on every node, a
//! node restarted with an old copy does not bring it back, and a removal stays removed
//! through replication. Background jobs run on intervals shortened by flags; every wait is
//! for the event that shows a job ran.

use netabase_testnode::{Command, Event, Found, LocalRecord, Message, PutReply};

use super::support::*;

/// A short interval for the background jobs, in milliseconds.
const SHORT: &str = "1000";

/// Picks `RecordStored` of `key` from `from`.
fn stored(key: &str, from: &str) -> impl FnMut(&Event) -> Option<()> + use<> {
    let (key, from) = (key.to_string(), from.to_string());
    move |e| {
        matches!(e, Event::RecordStored { key: k, from: f } if *k == key && *f == from)
            .then_some(())
    }
}

/// Picks `RecordUpdated` of `key` (from any peer).
fn updated(key: &str) -> impl FnMut(&Event) -> Option<()> + use<> {
    let key = key.to_string();
    move |e| matches!(e, Event::RecordUpdated { key: k, .. } if *k == key).then_some(())
}

/// Node `writer` puts `message`; the put meets its quorum, loses to no newer version, and
/// reaches every other node of `nodes` (fewer than K: all of them are among the closest).
fn put_everywhere(nodes: &mut [NodeProc], writer: usize, message: Message) -> PutReply {
    let marks: Vec<usize> = nodes.iter_mut().map(NodeProc::mark).collect();
    let from = nodes[writer].peer_id.clone();
    let id = message.id;
    let put: PutReply = nodes[writer].call(Command::Put { message });
    assert_eq!(
        (&put.quorum_error, &put.superseded_by),
        (&None, &None),
        "{put:?}"
    );
    let key = message_key(id);
    for (i, node) in nodes.iter_mut().enumerate().filter(|(i, _)| *i != writer) {
        node.expect_event_since(marks[i], &format!("message {id} reaches node {i}"), {
            stored(&key, &from)
        });
    }
    put
}

/// Every node of `nodes` reads `expected`, written by `origin`, and holds that version in
/// its DHT store; returns the version's timestamp (the same on every node).
fn reads_everywhere(nodes: &mut [NodeProc], expected: &Message, origin: &str) -> u64 {
    let reqs: Vec<u64> = nodes
        .iter_mut()
        .map(|n| n.send(Command::Get { id: expected.id }))
        .collect();
    let mut timestamps = Vec::new();
    for (node, req) in nodes.iter_mut().zip(reqs) {
        let found: Option<Found<Message>> = node.reply_as(req);
        let found = found.unwrap_or_else(|| panic!("{} finds {}", node.name, expected.id));
        assert_eq!(
            (&found.record, found.origin.as_str()),
            (expected, origin),
            "{}",
            node.name
        );
        let local = node
            .local(expected.id)
            .unwrap_or_else(|| panic!("{} holds {}", node.name, expected.id));
        assert_eq!(local.record.as_ref(), Some(expected), "{}", node.name);
        assert_eq!(
            (local.version.origin.as_str(), local.version.removed),
            (origin, false),
            "{}",
            node.name
        );
        assert_eq!(local.version.timestamp, found.timestamp, "{}", node.name);
        timestamps.push(found.timestamp);
    }
    timestamps.dedup();
    assert_eq!(
        timestamps.len(),
        1,
        "one version everywhere: {timestamps:?}"
    );
    timestamps[0]
}

/// Every node of `nodes` reads nothing for message `id` and holds the removal by `remover`.
fn removed_everywhere(nodes: &mut [NodeProc], id: u64, remover: &str) {
    for node in nodes.iter_mut() {
        assert_eq!(node.get(id), None, "{} reads a removed record", node.name);
        let local: LocalRecord = node
            .local(id)
            .unwrap_or_else(|| panic!("{} holds the removal of {id}", node.name));
        assert_eq!(
            (
                local.version.origin.as_str(),
                local.version.removed,
                local.record
            ),
            (remover, true, None),
            "{}",
            node.name
        );
    }
}

fn local_messages(node: &mut NodeProc) -> Vec<Message> {
    node.call(Command::LocalMessages { limit: 10 })
}

/// Two nodes write message 1 one after the other: every node reads the later write and
/// holds it, the earlier writer's typed row follows it, and the earlier writer writing
/// again wins in turn (its clock moved past the version it learned).
fn the_newer_of_two_writes_wins_on_every_node(rt: Rt) {
    let mut nodes = network("lww", 4, rt);
    let ids: Vec<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();

    put_everywhere(&mut nodes, 1, message(1, "first"));
    let first = reads_everywhere(&mut nodes, &message(1, "first"), &ids[1]);
    put_everywhere(&mut nodes, 2, message(1, "second"));
    let second = reads_everywhere(&mut nodes, &message(1, "second"), &ids[2]);
    assert!(second > first, "{second} after {first}");
    // The first writer's typed row is the newer version now, and it no longer publishes
    // the record as its own; a node that never wrote it has no typed row.
    assert_eq!(local_messages(&mut nodes[1]), vec![message(1, "second")]);
    let held = nodes[1].local(1).expect("held");
    assert_ne!(held.publisher.as_deref(), Some(ids[1].as_str()));
    assert_eq!(local_messages(&mut nodes[3]), Vec::<Message>::new());

    put_everywhere(&mut nodes, 1, message(1, "third"));
    let third = reads_everywhere(&mut nodes, &message(1, "third"), &ids[1]);
    assert!(third > second, "{third} after {second}");
    assert_eq!(local_messages(&mut nodes[2]), vec![message(1, "third")]);
}

per_runtime!(the_newer_of_two_writes_wins_on_every_node);

/// Node X holds message 1 (written by W) and its own message 2; it is killed, A overwrites
/// both, and X restarts on its data directory with short replication and republication
/// intervals. X's re-sends of its old copies are answered with the newer ones, which
/// replace its copies (and its typed row); no node reads the old versions afterwards, X
/// included, and what X replicates next is the newer version.
fn a_restarted_node_does_not_bring_back_its_old_copies(rt: Rt) {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = network_with("stale", &[rt; 3], |i, spawn| match i {
        2 => spawn.data_dir(dir.path()),
        _ => spawn,
    });
    let ids: Vec<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();
    let (a, x) = (ids[0].clone(), ids[2].clone());
    put_everywhere(&mut nodes, 1, message(1, "v1 by w"));
    put_everywhere(&mut nodes, 2, message(2, "v1 by x"));
    assert_eq!(local_messages(&mut nodes[2]), vec![message(2, "v1 by x")]);
    // SIGKILL: X keeps whatever it acknowledged.
    drop(nodes.pop());

    put_everywhere(&mut nodes, 0, message(1, "v2 by a"));
    put_everywhere(&mut nodes, 0, message(2, "v2 by a"));
    let mark_a = nodes[0].mark();

    let mut again = Spawn::new("stale2-again", rt)
        .data_dir(dir.path())
        .bootstrap(&nodes[0])
        .arg("--replication-interval-ms", SHORT)
        .arg("--publication-interval-ms", SHORT)
        .start();
    assert_eq!(again.peer_id, x);
    // Its replication (message 1, held for W) and its republication (message 2, its own)
    // are answered with A's newer versions, which replace its copies. (Only a re-send of
    // an older copy is answered so: A and W re-send nothing within the test, and nobody
    // reads, so these events also show that X came back with its old copies.)
    let (k1, k2) = (message_key(1), message_key(2));
    again.expect_event("X learns the newer message 1", updated(&k1));
    again.expect_event("X learns the newer message 2", updated(&k2));
    // Its next replication carries the newer copy, which A stores again.
    nodes[0].expect_event_since(mark_a, "X replicates message 1 again", stored(&k1, &x));

    nodes.push(again);
    reads_everywhere(&mut nodes, &message(1, "v2 by a"), &a);
    reads_everywhere(&mut nodes, &message(2, "v2 by a"), &a);
    // X's typed row is A's version, which X no longer publishes as its own.
    assert_eq!(local_messages(&mut nodes[2]), vec![message(2, "v2 by a")]);
    let held = nodes[2].local(2).expect("held");
    assert_ne!(held.publisher.as_deref(), Some(x.as_str()));
}

per_runtime!(a_restarted_node_does_not_bring_back_its_old_copies);

/// Every node replicates every second. W writes message 1, D is killed, R removes it;
/// D restarts with the old copy. After every holder re-sent its copy (D's old one
/// included), no node reads the record and every node holds R's removal.
fn a_removed_record_stays_removed_through_replication(rt: Rt) {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = network_with("gone", &[rt; 4], |i, spawn| {
        let spawn = spawn.arg("--replication-interval-ms", SHORT);
        match i {
            3 => spawn.data_dir(dir.path()),
            _ => spawn,
        }
    });
    let ids: Vec<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();
    let (a, w, r, d) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    let key = message_key(1);
    put_everywhere(&mut nodes, 1, message(1, "to be removed"));
    assert_eq!(
        local_messages(&mut nodes[1]),
        vec![message(1, "to be removed")]
    );
    drop(nodes.pop());

    let mark_r = nodes[2].mark();
    let marks: Vec<usize> = nodes.iter_mut().map(NodeProc::mark).collect();
    let removed: Option<Message> = nodes[2].call(Command::Remove { id: 1 });
    assert_eq!(removed, None, "R never wrote it to its typed store");
    for i in [0, 1] {
        nodes[i].expect_event_since(marks[i], "the removal arrives", stored(&key, r));
    }
    // The writer's typed row went with it.
    assert_eq!(local_messages(&mut nodes[1]), Vec::<Message>::new());

    let mut back = Spawn::new("gone3-again", rt)
        .data_dir(dir.path())
        .bootstrap(&nodes[0])
        .arg("--replication-interval-ms", SHORT)
        .start();
    assert_eq!(back.peer_id, *d);
    // D came back with the old copy, unless a holder's replication already brought it the
    // removal.
    let held = back.local(1).expect("D holds message 1");
    assert!(
        held.record == Some(message(1, "to be removed")) || held.version.origin == *r,
        "{held:?}"
    );
    // D learns the removal: as the answer to its own re-send of the old copy, or from a
    // holder's replication, whichever comes first.
    let learned = {
        let key = key.clone();
        move |e: &Event| match e {
            Event::RecordUpdated { key: k, .. } if *k == key => Some(()),
            Event::RecordStored { key: k, from } if *k == key && (from == a || from == w) => {
                Some(())
            }
            _ => None,
        }
    };
    back.expect_event("D learns the removal", learned);
    // Every holder has re-sent its copy to R since the removal, D included.
    for from in [a, w, d] {
        nodes[2].expect_event_since(mark_r, &format!("{from} replicates to R"), {
            stored(&key, from)
        });
    }
    nodes.push(back);
    removed_everywhere(&mut nodes, 1, r);
}

per_runtime!(a_removed_record_stays_removed_through_replication);

/// Waits until `node` no longer holds a DHT record for message `id`: each expiry sweep
/// that removes something says so, and the record is looked at after each, with one
/// deadline for all.
fn wait_until_dropped(node: &mut NodeProc, id: u64) {
    let mut mark = node.mark();
    while node.local(id).is_some() {
        node.expect_event_since(mark, &format!("message {id} expires"), |e| {
            matches!(e, Event::Expired { .. }).then_some(())
        });
        mark = node.mark();
    }
}

/// Tombstones live 3 s, records 2 s. Writer W puts messages 1 and 2 and is killed; A
/// removes message 1; the removal and every copy expire on A and B while W is still down.
/// W comes back on its data directory and republishes every second: its expired copies
/// must not go out again, since nothing can tell it any more which of them was removed
/// meanwhile: message 1 must not come back to A or B (and neither does message 2). A
/// record W writes after its return is republished, which shows the republication ran,
/// past the keys of messages 1 and 2, twice.
fn a_writer_back_after_the_tombstone_horizon_does_not_resurrect_its_record(rt: Rt) {
    let short = |spawn: Spawn| {
        spawn
            .arg("--tombstone-horizon-ms", "3000")
            .arg("--record-ttl-ms", "2000")
            .arg("--expiry-sweep-interval-ms", "250")
    };
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = network_with("horizon", &[rt; 3], |i, spawn| match i {
        2 => short(spawn).data_dir(dir.path()),
        _ => short(spawn),
    });
    let w = nodes[2].peer_id.clone();
    put_everywhere(&mut nodes, 2, message(1, "removed while w is down"));
    put_everywhere(&mut nodes, 2, message(2, "expired while w is down"));
    drop(nodes.pop());

    let k1 = message_key(1);
    let a = nodes[0].peer_id.clone();
    let mark_b = nodes[1].mark();
    let _: Option<Message> = nodes[0].call(Command::Remove { id: 1 });
    nodes[1].expect_event_since(mark_b, "the removal reaches B", stored(&k1, &a));
    for node in nodes.iter_mut() {
        wait_until_dropped(node, 1);
        wait_until_dropped(node, 2);
    }

    let marks: Vec<usize> = nodes.iter_mut().map(NodeProc::mark).collect();
    let mut back = short(Spawn::new("horizon2-again", rt))
        .data_dir(dir.path())
        .bootstrap(&nodes[0])
        .arg("--publication-interval-ms", SHORT)
        .start();
    assert_eq!(back.peer_id, w);
    let put: PutReply = back.call(Command::Put {
        message: message(3, "written after the return"),
    });
    assert_eq!(put.quorum_error, None, "{put:?}");
    let k3 = message_key(3);
    let mut rounds = 0;
    nodes[0].expect_event_since(marks[0], "the put and two republications of W", |e| {
        if stored(&k3, &w)(e).is_some() {
            rounds += 1;
        }
        (rounds == 3).then_some(())
    });
    for node in nodes.iter_mut() {
        assert_eq!(
            node.local(1),
            None,
            "{}: W's old message 1 came back",
            node.name
        );
        assert_eq!(
            node.local(2),
            None,
            "{}: W's expired message 2 went out",
            node.name
        );
        assert!(node.local(3).is_some(), "{}", node.name);
    }
    drop(back.local(1));
}

per_runtime!(a_writer_back_after_the_tombstone_horizon_does_not_resurrect_its_record: tokio);
