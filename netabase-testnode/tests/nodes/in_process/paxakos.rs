//! The paxakos engine on real nodes (`Engine::Paxakos`): a three-member cluster over
//! `/netabase/paxakos/1.0.0` takes writes from every member through the same API as the
//! core engine, serves reads at every level, refuses a stale compare-and-set, refuses what
//! it does not offer with a typed error, and a member stopped cleanly resumes from the
//! snapshot it kept.

use std::time::Duration;

use netabase::paxakos::engine::EngineConfig;
use netabase::{ConsensusError, Engine, NetabaseError, ReadLevel, Role};
use netabase_testnode::MessagePrimaryKey;
use netabase_testnode::in_process::*;

/// The paxakos engine with short heartbeats and leases, so that the test runs quickly.
fn paxakos(config: &mut netabase::NetabaseConfig) {
    config.engine = Engine::Paxakos;
    config.paxakos = EngineConfig {
        heartbeat_interval: Duration::from_millis(500),
        leader_heartbeat_interval: Duration::from_millis(50),
        lease: Some(netabase::LeaseConfig {
            duration: Duration::from_millis(300),
            drift_ppm: 10_000,
            margin: Duration::from_millis(20),
        }),
        ..EngineConfig::default()
    };
}

per_runtime!(a_paxakos_cluster_commits_reads_and_resumes_after_a_clean_stop);
async fn a_paxakos_cluster_commits_reads_and_resumes_after_a_clean_stop<R: TestRuntime>() {
    let nodes = network_with::<R>(3, paxakos).await;
    let members: Vec<_> = nodes.iter().map(|n| n.id()).collect();
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

    // Writes from every member land in one log, in increasing positions.
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
    for n in &nodes {
        for i in 0..3u64 {
            let (got, _) = within::<R, _>(
                "a linearizable read",
                n.node
                    .get_record_consensus(&MessagePrimaryKey(i), ReadLevel::Linearizable),
            )
            .await
            .unwrap()
            .unwrap();
            assert_eq!(got, message(i, "v1"));
        }
    }

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
    assert!(!stale.swapped && stale.position > cas.position);

    // One leader; every member reads at the lease level too (served from the lease on
    // the leader, through the log elsewhere).
    let mut leaders = 0;
    for n in &nodes {
        let status = n.node.cluster_status().await.unwrap().unwrap();
        assert_eq!(status.cluster, cluster);
        assert_eq!(status.members.len(), 3);
        assert!(status.stats.entries_committed >= 5, "{status:?}");
        leaders += usize::from(status.role == Role::Leader);
        let (got, _) = n
            .node
            .get_record_consensus(&MessagePrimaryKey(0), ReadLevel::Lease)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, message(0, "v2"));
    }
    assert!(leaders <= 1);

    // What the engine does not offer is refused, typed.
    let refused = nodes[0].node.remove_member(members[2]).await.unwrap_err();
    assert!(matches!(
        refused,
        NetabaseError::Consensus(ConsensusError::NotOffered(_))
    ));

    // A member stops cleanly, misses a write, starts again and resumes from its
    // snapshot: it catches up and takes writes.
    let f = &nodes[2];
    f.node.stop_swarm().await.unwrap();
    nodes[0]
        .node
        .put_record_consensus(message(7, "while down"))
        .await
        .unwrap();
    f.node.start_swarm().await.unwrap();
    for n in &nodes[..2] {
        let addrs = n.node.listen_addresses().await.unwrap();
        f.node.add_address(n.id(), addrs[0].clone()).await.unwrap();
    }
    f.node.join_cluster(cluster, &members).await.unwrap();
    within::<R, _>(
        "a write through the resumed member",
        f.node.put_record_consensus(message(8, "after the restart")),
    )
    .await
    .unwrap();
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
