//! Events, stopping, restarting, storage backends.

use netabase::{
    EventError, Keypair, Mode, Multiaddr, NetabaseError, NetabaseEvent, QueryKind, StorageBackend,
};
use netabase_testnode::in_process::*;
use netabase_testnode::{Message, MessagePrimaryKey};

per_runtime!(events_reach_every_subscriber_and_a_slow_one_lags);
async fn events_reach_every_subscriber_and_a_slow_one_lags<R: TestRuntime>() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    config.event_capacity = 4;
    let node = Node::<R>::new_with_config(config).unwrap();
    let mut fast = subscribe(&node);
    let mut second = subscribe(&node);
    let mut slow = subscribe(&node);
    node.start_swarm().await.unwrap();
    let me = node.local_peer_id();
    for sub in [&mut fast, &mut second] {
        sub.wait_for("started", |e| {
            matches!(e, NetabaseEvent::Started { peer } if *peer == me).then_some(())
        })
        .await;
    }
    // Every get emits a start and a finish; the fast subscribers keep up, the slow one
    // reads nothing.
    for id in 0..6 {
        node.get_record(&MessagePrimaryKey(id)).await.unwrap();
        for sub in [&mut fast, &mut second] {
            let finished = sub
                .wait_for("query finished", |e| match e {
                    NetabaseEvent::QueryFinished { kind, success, .. } => Some((*kind, *success)),
                    _ => None,
                })
                .await;
            assert_eq!(finished, (QueryKind::GetRecord, false));
        }
    }
    match slow.recv().await {
        Err(EventError::Lagged(n)) => assert!(n > 0),
        other => panic!("expected a lag notice, got {other:?}"),
    }
    // After the notice the slow subscriber reads the newest events.
    assert!(slow.recv().await.is_ok());
    node.stop_swarm().await.unwrap();
}

per_runtime!(stop_swarm_fails_pending_operations);
async fn stop_swarm_fails_pending_operations<R: TestRuntime>() {
    // A peer whose TCP connections complete (in the listen backlog) and never answer
    // holds a lookup open.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr: Multiaddr =
        format!("/ip4/127.0.0.1/tcp/{}", silent.local_addr().unwrap().port())
            .parse()
            .unwrap();
    let node = start_with::<R>(|_| {}).await;
    let ghost = Keypair::generate_ed25519().public().to_peer_id();
    node.node.add_address(ghost, silent_addr).await.unwrap();
    let mut events = node.events();
    let pending = node.node.get_record(&MessagePrimaryKey(1));
    let stop = async {
        events
            .wait_for("query started", |e| {
                matches!(
                    e,
                    NetabaseEvent::QueryStarted {
                        kind: QueryKind::GetRecord,
                        ..
                    }
                )
                .then_some(())
            })
            .await;
        node.node.stop_swarm().await.unwrap();
    };
    let (outcome, ()) =
        within::<R, _>("the pending get", futures::future::join(pending, stop)).await;
    assert!(
        matches!(outcome, Err(NetabaseError::Stopped)),
        "{outcome:?}"
    );
    assert!(matches!(
        node.node.get_record(&MessagePrimaryKey(1)).await,
        Err(NetabaseError::Stopped)
    ));
    assert!(matches!(
        node.node.query_local_records::<Message>(1).await,
        Err(NetabaseError::Stopped)
    ));
    assert!(!node.node.is_running());
    // Stopping twice is fine.
    node.node.stop_swarm().await.unwrap();
    drop(silent);
}

per_runtime!(a_restarted_node_keeps_its_peer_id_and_records);
async fn a_restarted_node_keeps_its_peer_id_and_records<R: TestRuntime>() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&dir).with_backend(backend);
        let first = Node::<R>::new_with_config(config.clone()).unwrap();
        let id = first.local_peer_id();
        first.start_swarm().await.unwrap();
        first.put_record(message(9, "durable")).await.unwrap();
        first.stop_swarm().await.unwrap();
        drop(first);

        let second = Node::<R>::new_with_config(config.clone()).unwrap();
        assert_eq!(second.local_peer_id(), id, "{backend:?}");
        // The typed store is usable before the swarm starts.
        assert_eq!(
            second.query_local_records::<Message>(10).await.unwrap(),
            vec![message(9, "durable")]
        );
        assert!(matches!(
            second.get_record(&MessagePrimaryKey(9)).await,
            Err(NetabaseError::NotRunning)
        ));
        second.start_swarm().await.unwrap();
        // The DHT record survived too: it is found locally without any peer.
        let got = second
            .get_record(&MessagePrimaryKey(9))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.record, got.source, got.origin),
            (message(9, "durable"), None, id)
        );
        // The same data directory cannot be opened twice at once.
        assert!(Node::<R>::new_with_config(config).is_err());
        second.stop_swarm().await.unwrap();
    }
}

per_runtime!(a_node_stops_and_starts_again_with_its_records);
/// A node stops and starts again on the same handle and directory with its records.
async fn a_node_stops_and_starts_again_with_its_records<R: TestRuntime>() {
    let node = start_with::<R>(|_| {}).await;
    node.node.put_record(message(5, "kept")).await.unwrap();
    node.node.stop_swarm().await.unwrap();
    assert!(!node.node.is_running());
    node.node.start_swarm().await.unwrap();
    let kept = node
        .node
        .get_record(&MessagePrimaryKey(5))
        .await
        .unwrap()
        .expect("kept across the restart");
    assert_eq!(kept.record, message(5, "kept"));
    node.node.stop_swarm().await.unwrap();
}

per_runtime!(a_memory_node_serves_records_writes_no_database_and_restarts_empty);
async fn a_memory_node_serves_records_writes_no_database_and_restarts_empty<R: TestRuntime>() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(&dir).with_backend(StorageBackend::Memory);
    let memory = start::<R>(config.clone(), dir).await;
    // The peer bootstraps through the memory node, which has it in its table before the
    // first put.
    let peer = join::<R, R>(&memory).await;

    // Records flow both ways and the memory node keeps them while it runs.
    let put = memory
        .node
        .put_record(message(1, "in memory"))
        .await
        .unwrap();
    assert_eq!(put.stored_at, vec![peer.id()]);
    peer.node.put_record(message(2, "to memory")).await.unwrap();
    let got = memory
        .node
        .get_record(&MessagePrimaryKey(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.record, got.source), (message(2, "to memory"), None));
    assert_eq!(
        memory
            .node
            .query_local_records::<Message>(10)
            .await
            .unwrap(),
        vec![message(1, "in memory")]
    );

    // Only the identity key is on disk.
    let files: Vec<String> = std::fs::read_dir(&config.data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, vec!["identity.key".to_string()]);

    // A restart keeps the peer id and starts with empty stores.
    memory.node.stop_swarm().await.unwrap();
    memory.node.start_swarm().await.unwrap();
    assert!(
        memory
            .node
            .query_local_records::<Message>(10)
            .await
            .unwrap()
            .is_empty()
    );
    memory
        .node
        .add_address(peer.id(), peer.addr.clone())
        .await
        .unwrap();
    let refetched = memory
        .node
        .get_record(&MessagePrimaryKey(1))
        .await
        .unwrap()
        .expect("the peer still holds it");
    assert_eq!(refetched.source, Some(peer.id()));
    memory.node.stop_swarm().await.unwrap();
    peer.node.stop_swarm().await.unwrap();
}

per_runtime!(start_swarm_twice_and_calls_before_start_are_refused);
async fn start_swarm_twice_and_calls_before_start_are_refused<R: TestRuntime>() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::<R>::new_with_config(test_config(&dir)).unwrap();
    assert!(matches!(
        node.bootstrap().await,
        Err(NetabaseError::NotRunning)
    ));
    assert_eq!(node.get_mode().await.unwrap(), Mode::Server);
    node.start_swarm().await.unwrap();
    assert!(matches!(
        node.start_swarm().await,
        Err(NetabaseError::AlreadyRunning)
    ));
    assert!(node.is_running());
    node.stop_swarm().await.unwrap();
    // A stopped node starts again on the same data.
    node.start_swarm().await.unwrap();
    assert!(!node.listen_addresses().await.unwrap().is_empty());
    node.stop_swarm().await.unwrap();
}
