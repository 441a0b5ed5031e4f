//! Consensus on real nodes: a three-member cluster over `/paxos/1.0.0` elects a leader,
//! commits writes from every member in one order, serves reads at every level and refuses
//! a stale compare-and-set.

use netabase::core::consensus::{Compaction, KvCommand};
use netabase::{ConsensusError, NetabaseError, NetabaseEvent, ReadLevel, Role};
use netabase_testnode::MessagePrimaryKey;
use netabase_testnode::in_process::*;

per_runtime!(a_three_member_cluster_commits_and_reads_linearizably);
async fn a_three_member_cluster_commits_and_reads_linearizably<R: TestRuntime>() {
    let nodes = network::<R>(3).await;
    let members: Vec<_> = nodes.iter().map(|n| n.id()).collect();
    let mut events = nodes[0].events();

    // Before any cluster: a typed error.
    let err = nodes[0]
        .node
        .put_record_consensus(message(1, "early"))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        NetabaseError::Consensus(ConsensusError::NoCluster)
    ));

    let cluster = nodes[0].node.create_cluster(&members).await.unwrap();
    for n in &nodes[1..] {
        n.node.join_cluster(cluster, &members).await.unwrap();
    }
    let again = nodes[1]
        .node
        .join_cluster(cluster, &members)
        .await
        .unwrap_err();
    assert!(matches!(
        again,
        NetabaseError::Consensus(ConsensusError::AlreadyMember(_))
    ));
    events
        .wait_for("a leader is elected", |e| match e {
            NetabaseEvent::ConsensusLeader {
                leader: Some(_), ..
            } => Some(()),
            _ => None,
        })
        .await;

    // Writes from every member land in one log, in increasing positions per writer.
    let mut positions = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let w = within::<R, _>(
            "a consensus put",
            n.node.put_record_consensus(message(i as u64, "v1")),
        )
        .await
        .unwrap();
        positions.push(w.position);
    }
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

    // Every member reads every write linearizably, with the position that wrote it.
    for n in &nodes {
        for (i, position) in positions.iter().enumerate() {
            let (got, at) = within::<R, _>(
                "a linearizable read",
                n.node
                    .get_record_consensus(&MessagePrimaryKey(i as u64), ReadLevel::Linearizable),
            )
            .await
            .unwrap()
            .unwrap();
            assert_eq!(got, message(i as u64, "v1"));
            assert_eq!(at, *position);
        }
    }

    // The applied feed lists the writes in log order, and resumes after a slot.
    let feed = nodes[1].node.applied_entries(1, 1000).await.unwrap();
    let fed: Vec<_> = feed.iter().map(|e| e.position).collect();
    assert_eq!(fed, positions, "every write, in order, nothing else");
    assert!(
        feed.iter()
            .all(|e| matches!(e.command, Some(KvCommand::Put { .. })))
    );
    let rest = nodes[1]
        .node
        .applied_entries(positions[1].slot + 1, 1000)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].position, positions[2]);

    // Compare-and-set: the current value swaps, a stale expectation does not.
    let cas = nodes[2]
        .node
        .compare_and_set_consensus(
            &MessagePrimaryKey(0),
            Some(message(0, "v1")),
            Some(message(0, "v2")),
        )
        .await
        .unwrap();
    assert!(cas.swapped);
    let stale = nodes[1]
        .node
        .compare_and_set_consensus(
            &MessagePrimaryKey(0),
            Some(message(0, "v1")),
            Some(message(0, "lost")),
        )
        .await
        .unwrap();
    assert!(!stale.swapped);
    assert!(stale.position > cas.position);
    for level in [ReadLevel::Linearizable, ReadLevel::Lease] {
        let (got, at) = nodes[1]
            .node
            .get_record_consensus(&MessagePrimaryKey(0), level)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((got, at), (message(0, "v2"), cas.position), "{level:?}");
    }

    // A removal through the log; consensus records stay apart from the DHT.
    nodes[0]
        .node
        .remove_record_consensus(&MessagePrimaryKey(1))
        .await
        .unwrap();
    let gone = nodes[2]
        .node
        .get_record_consensus(&MessagePrimaryKey(1), ReadLevel::Linearizable)
        .await
        .unwrap();
    assert_eq!(gone, None);
    assert!(
        nodes[0]
            .node
            .get_record(&MessagePrimaryKey(2))
            .await
            .unwrap()
            .is_none()
    );

    // Status: one leader, every member applied the same prefix or is catching up.
    let mut leaders = 0;
    for n in &nodes {
        let status = n.node.cluster_status().await.unwrap().unwrap();
        assert_eq!(status.cluster, cluster);
        assert_eq!(status.members.len(), 3);
        assert!(status.leader.is_some());
        leaders += usize::from(status.role == Role::Leader);
        assert!(status.applied >= positions[0].slot);
    }
    assert_eq!(leaders, 1);

    // The leader hands leadership over; another member leads and takes writes.
    let old = nodes[0]
        .node
        .cluster_status()
        .await
        .unwrap()
        .unwrap()
        .leader
        .unwrap();
    let leader_node = nodes.iter().find(|n| n.id() == old).unwrap();
    let mut watch = nodes.iter().find(|n| n.id() != old).unwrap().events();
    let target = leader_node.node.transfer_leadership().await.unwrap();
    assert!(target.is_some_and(|t| t != old));
    let new = watch
        .wait_for("another leader", |e| match e {
            NetabaseEvent::ConsensusLeader {
                leader: Some(l), ..
            } if *l != old => Some(*l),
            _ => None,
        })
        .await;
    assert_ne!(new, old);
    nodes[0]
        .node
        .put_record_consensus(message(8, "after the hand-over"))
        .await
        .unwrap();

    // A follower restarts: its log and state come back from its database, it rejoins
    // with the same id and members, and it reads the writes made while it was down.
    let leader = nodes[0]
        .node
        .cluster_status()
        .await
        .unwrap()
        .unwrap()
        .leader;
    let follower = nodes
        .iter()
        .position(|n| Some(n.id()) != leader)
        .expect("a follower");
    let f = &nodes[follower];
    f.node.stop_swarm().await.unwrap();
    let writer = &nodes[(follower + 1) % 3];
    writer
        .node
        .put_record_consensus(message(7, "while down"))
        .await
        .unwrap();
    f.node.start_swarm().await.unwrap();
    for n in &nodes {
        if n.id() != f.id() {
            let addrs = n.node.listen_addresses().await.unwrap();
            f.node.add_address(n.id(), addrs[0].clone()).await.unwrap();
        }
    }
    let status = f.node.cluster_status().await.unwrap();
    assert_eq!(
        status, None,
        "a stopped node has left its cluster until it joins again"
    );
    f.node.join_cluster(cluster, &members).await.unwrap();
    let status = f.node.cluster_status().await.unwrap().unwrap();
    assert!(
        status.applied >= cas.position.slot,
        "the state replays from the log"
    );
    let (got, _) = within::<R, _>(
        "a read after the restart",
        f.node
            .get_record_consensus(&MessagePrimaryKey(7), ReadLevel::Linearizable),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got, message(7, "while down"));
}

/// A cluster created by `nodes[0]` with every node of `nodes`, each joined.
async fn form_cluster<R: TestRuntime>(nodes: &[TestNode<R>]) -> netabase::ClusterId {
    let ids: Vec<_> = nodes.iter().map(|n| n.id()).collect();
    let cluster = nodes[0].node.create_cluster(&ids).await.unwrap();
    for n in &nodes[1..] {
        n.node.join_cluster(cluster, &ids).await.unwrap();
    }
    cluster
}

/// `joiner` joins `cluster` (knowing `contacts`) while `adder` adds it; both succeed.
async fn join_added<R: TestRuntime>(
    joiner: &TestNode<R>,
    adder: &TestNode<R>,
    cluster: netabase::ClusterId,
    contacts: &[netabase::PeerId],
) {
    let (join, added) = futures::join!(
        within::<R, _>(
            "the new member to be added",
            joiner.node.join_cluster(cluster, contacts)
        ),
        adder.node.add_member(joiner.id()),
    );
    join.unwrap();
    added.unwrap();
}

per_runtime!(a_member_added_after_compaction_catches_up_by_snapshot);
async fn a_member_added_after_compaction_catches_up_by_snapshot<R: TestRuntime>() {
    let nodes = network_with::<R>(4, |c| {
        c.consensus.compaction = Some(Compaction {
            entries: 8,
            bytes: u64::MAX,
            keep: 2,
        });
        c.consensus.snapshot_chunk_bytes = 512;
    })
    .await;
    let ids: Vec<_> = nodes.iter().map(|n| n.id()).collect();
    let first = ids[..3].to_vec();
    let cluster = form_cluster(&nodes[..3]).await;
    for k in 0..30 {
        within::<R, _>(
            "a consensus put",
            nodes[(k % 3) as usize]
                .node
                .put_record_consensus(message(k, "compacted")),
        )
        .await
        .unwrap();
    }
    // The log no longer holds the first slots: a reader of the feed is told so.
    let err = nodes[0].node.applied_entries(1, 10).await.unwrap_err();
    let NetabaseError::Consensus(ConsensusError::Compacted { first: resume }) = err else {
        panic!("expected Compacted, got {err:?}");
    };
    assert!(resume > 1);
    assert!(
        !nodes[0]
            .node
            .applied_entries(resume, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A new member cannot catch up by entries from slot 1: it installs the state.
    let mut joined = nodes[3].events();
    join_added(&nodes[3], &nodes[1], cluster, &first).await;
    let slot = joined
        .wait_for("node 3 to install a snapshot", |e| match e {
            NetabaseEvent::ConsensusSnapshotInstalled { slot } => Some(*slot),
            _ => None,
        })
        .await;
    assert!(slot >= resume, "{slot} >= {resume}");
    let (got, _) = within::<R, _>(
        "a read on the new member",
        nodes[3]
            .node
            .get_record_consensus(&MessagePrimaryKey(0), ReadLevel::Linearizable),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got, message(0, "compacted"));
}

per_runtime!(members_are_added_replaced_and_removed_through_the_log);
async fn members_are_added_replaced_and_removed_through_the_log<R: TestRuntime>() {
    let nodes = network::<R>(5).await;
    let ids: Vec<_> = nodes.iter().map(|n| n.id()).collect();
    let first = ids[..3].to_vec();
    let cluster = form_cluster(&nodes[..3]).await;
    nodes[0]
        .node
        .put_record_consensus(message(1, "before"))
        .await
        .unwrap();

    // Node 3 joins: its call resolves once a member adds it; the leader promotes it once
    // it has caught up.
    let mut joined = nodes[3].events();
    join_added(&nodes[3], &nodes[1], cluster, &first).await;
    joined
        .wait_for("node 3 to become a voter", |e| match e {
            NetabaseEvent::ConsensusConfiguration { voters, .. } if voters.contains(&ids[3]) => {
                Some(())
            }
            _ => None,
        })
        .await;
    let (got, _) = within::<R, _>(
        "a read on the new member",
        nodes[3]
            .node
            .get_record_consensus(&MessagePrimaryKey(1), ReadLevel::Linearizable),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got, message(1, "before"));

    // The leader is removed: it hands over, and the others keep writing.
    let leader = nodes[0]
        .node
        .cluster_status()
        .await
        .unwrap()
        .unwrap()
        .leader
        .expect("a leader");
    let other = nodes[..4]
        .iter()
        .find(|n| n.id() != leader)
        .expect("a non-leader");
    within::<R, _>("the leader's removal", other.node.remove_member(leader))
        .await
        .unwrap();
    let writer = nodes[..4]
        .iter()
        .find(|n| n.id() != leader)
        .expect("a remaining member");
    within::<R, _>(
        "a write after the leader left",
        writer.node.put_record_consensus(message(2, "after")),
    )
    .await
    .unwrap();
    let status = writer.node.cluster_status().await.unwrap().unwrap();
    assert!(!status.members.contains(&leader), "{status:?}");
    assert_ne!(status.leader, Some(leader));

    // Node 4 replaces a remaining voter: the number of voters stays three.
    let old = status
        .members
        .iter()
        .copied()
        .find(|p| *p != writer.id())
        .expect("another voter");
    let contacts: Vec<_> = status.members.clone();
    let mut replaced = nodes[4].events();
    let (join, done) = futures::join!(
        within::<R, _>(
            "node 4 to be added",
            nodes[4].node.join_cluster(cluster, &contacts)
        ),
        writer.node.replace_member(old, ids[4]),
    );
    join.unwrap();
    done.unwrap();
    let voters = replaced
        .wait_for("node 4 to replace a voter", |e| match e {
            NetabaseEvent::ConsensusConfiguration { voters, .. } if voters.contains(&ids[4]) => {
                Some(voters.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(voters.len(), 3, "{voters:?}");
    assert!(!voters.contains(&old));

    // A refused change is a typed error: neither peer is a voter any more.
    let err = nodes[4].node.replace_member(old, leader).await.unwrap_err();
    assert!(
        matches!(err, NetabaseError::Consensus(ConsensusError::Membership(_))),
        "{err:?}"
    );
}
