//! Events, stopping, restarting.

use netabase_tokio::{EventError, NetabaseError, NetabaseEvent, QueryKind, StorageBackend};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_every_subscriber_and_a_slow_one_lags() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    config.event_capacity = 4;
    let node = Node::new_with_config(config).unwrap();
    let mut fast = node.subscribe_to_broadcasts();
    let mut second = node.subscribe_to_broadcasts();
    let mut slow = node.subscribe_to_broadcasts();
    node.start_swarm().await.unwrap();
    let me = node.local_peer_id();
    for sub in [&mut fast, &mut second] {
        wait_for(sub, "started", |e| {
            matches!(e, NetabaseEvent::Started { peer } if *peer == me).then_some(())
        })
        .await;
    }
    // Every get emits a start and a finish; the fast subscribers keep up, the slow one
    // reads nothing.
    for id in 0..6 {
        node.get_record(&MessagePrimaryKey(id)).await.unwrap();
        for sub in [&mut fast, &mut second] {
            let finished = wait_for(sub, "query finished", |e| match e {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_swarm_fails_pending_operations() {
    // A peer that accepts TCP connections and never answers holds a lookup open.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr: netabase_tokio::Multiaddr =
        format!("/ip4/127.0.0.1/tcp/{}", silent.local_addr().unwrap().port())
            .parse()
            .unwrap();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let node = start_with(|_| {}).await;
    let ghost = netabase_tokio::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    node.node.add_address(ghost, silent_addr).await.unwrap();
    let mut events = node.node.subscribe_to_broadcasts();
    let pending = tokio::spawn({
        let node = node.node.clone();
        async move { node.get_record(&MessagePrimaryKey(1)).await }
    });
    wait_for(&mut events, "query started", |e| {
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
    let outcome = tokio::time::timeout(DEADLINE, pending)
        .await
        .unwrap()
        .unwrap();
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
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_peer_id_and_records() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&dir).with_backend(backend);
        let first = Node::new_with_config(config.clone()).unwrap();
        let id = first.local_peer_id();
        first.start_swarm().await.unwrap();
        first.put_record(message(9, "durable")).await.unwrap();
        first.stop_swarm().await.unwrap();
        drop(first);

        let second = Node::new_with_config(config.clone()).unwrap();
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
        assert!(Node::new_with_config(config).is_err());
        second.stop_swarm().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_node_serves_records_writes_no_database_and_restarts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(&dir).with_backend(StorageBackend::Memory);
    let memory = start(config.clone(), dir).await;
    let peer = start_with(|c| c.bootstrap_peers = vec![(memory.id(), memory.addr.clone())]).await;
    peer.node.bootstrap().await.unwrap();

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_swarm_twice_and_calls_before_start_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new_with_config(test_config(&dir)).unwrap();
    assert!(matches!(
        node.bootstrap().await,
        Err(NetabaseError::NotRunning)
    ));
    assert_eq!(node.get_mode().await.unwrap(), netabase_tokio::Mode::Server);
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

/// A durable commit in one node's driver waits for the disk; with the driver on a runtime
/// worker that would stall every task of the runtime. Here the only worker is held while a
/// caller outside the runtime reads a local record and puts another (whose durable local
/// write the driver makes): the driver, on its own thread, answers both.
#[test]
fn a_node_answers_while_every_worker_of_its_runtime_is_held() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let node = runtime.block_on(start_with(|_| {}));
    runtime
        .block_on(node.node.put_record(message(1, "local")))
        .unwrap();

    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    runtime.spawn(async move {
        held_tx.send(()).unwrap();
        // Blocks the only worker until the calls below have their answers (or the test
        // ends).
        let _ = release_rx.recv();
    });
    held_rx.recv().unwrap();

    let (answer_tx, answer_rx) = std::sync::mpsc::channel();
    let caller = node.node.clone();
    std::thread::spawn(move || {
        let got = futures::executor::block_on(caller.get_record(&MessagePrimaryKey(1)));
        let put = futures::executor::block_on(caller.put_record(message(2, "while held")));
        let _ = answer_tx.send((got, put));
    });
    let answers = answer_rx.recv_timeout(DEADLINE);
    release_tx.send(()).unwrap();
    let (got, put) = answers.expect("the driver answers while the worker is held");
    let got = got.unwrap().expect("the record is local");
    assert_eq!((got.record, got.source), (message(1, "local"), None));
    // No peer to publish to, but the local write stands.
    assert!(put.unwrap().quorum_error.is_some());
    assert_eq!(
        runtime
            .block_on(node.node.query_local_records::<Message>(10))
            .unwrap(),
        vec![message(1, "local"), message(2, "while held")]
    );
    runtime.block_on(node.node.stop_swarm()).unwrap();
}
