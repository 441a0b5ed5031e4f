//! Records and providers between nodes on async-std, on smol, and on both at once.

use netabase_async_std::{AsyncStdRuntime, NetabaseEvent, Runtime, SmolRuntime};

use crate::support::*;

/// A record put on `A`'s node is fetched typed from `B`'s; a key `B` provides is found by
/// `A` with `B`'s address; `A` hears that `B` stored its record.
async fn records_and_providers<A: Runtime, B: Runtime>() {
    let first = start::<A>(|_| {}).await;
    let second = join::<B, A>(&first).await;
    let mut second_events = second.node.subscribe_to_broadcasts();

    let hello = message(1, "hello from the first node");
    let put = first.node.put_record(hello.clone()).await.unwrap();
    assert!(put.quorum_error.is_none(), "{put:?}");
    assert_eq!(put.stored_at, vec![second.id()]);
    let origin = first.id();
    wait_for(&mut second_events, "the remote store event", |e| {
        matches!(e, NetabaseEvent::RecordStored { from, .. } if *from == origin).then_some(())
    })
    .await;

    // The second node holds the copy in its DHT store; a fresh third node asks the network.
    let held = second
        .node
        .get_record(&MessagePrimaryKey(1))
        .await
        .unwrap()
        .expect("held locally");
    assert_eq!((held.record, held.source), (hello.clone(), None));
    let third = join::<B, A>(&first).await;
    let got = third
        .node
        .get_record(&MessagePrimaryKey(1))
        .await
        .unwrap()
        .expect("found on the network");
    assert_eq!(got.record, hello);
    assert_eq!(got.origin, first.id());
    assert!(
        got.source
            .is_some_and(|s| s == first.id() || s == second.id())
    );
    assert_eq!(
        third.node.get_record(&MessagePrimaryKey(2)).await.unwrap(),
        None
    );

    let providing = second
        .node
        .start_providing(&MessagePrimaryKey(1))
        .await
        .unwrap();
    assert!(!providing.announced_to.is_empty(), "{providing:?}");
    let providers = first
        .node
        .get_providers(&MessagePrimaryKey(1))
        .await
        .unwrap();
    let found = providers
        .iter()
        .find(|p| p.peer == second.id())
        .unwrap_or_else(|| panic!("the second node provides: {providers:?}"));
    assert!(found.addresses.contains(&second.addr), "{found:?}");

    third.node.stop_swarm().await.unwrap();
    second.node.stop_swarm().await.unwrap();
    first.node.stop_swarm().await.unwrap();
}

#[test]
fn two_nodes_exchange_records_and_providers_on_each_runtime() {
    on_each_runtime(
        records_and_providers::<AsyncStdRuntime, AsyncStdRuntime>,
        records_and_providers::<SmolRuntime, SmolRuntime>,
    );
}

#[test]
fn an_async_std_node_and_a_smol_node_exchange_records_and_providers() {
    on_each_runtime(
        records_and_providers::<AsyncStdRuntime, SmolRuntime>,
        records_and_providers::<SmolRuntime, AsyncStdRuntime>,
    );
}

/// A node stops and starts again on the same directory with its records.
async fn stop_and_restart<R: Runtime>() {
    let node = start::<R>(|_| {}).await;
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

#[test]
fn a_node_stops_and_starts_again_on_each_runtime() {
    on_each_runtime(
        stop_and_restart::<AsyncStdRuntime>,
        stop_and_restart::<SmolRuntime>,
    );
}

/// A durable commit in a node's driver waits for the disk; on an executor thread it would
/// hold that thread. Here the only thread of smol's global executor is held while a caller
/// outside it reads a local record and puts another (whose durable local write the driver
/// makes): the driver, on its own thread, answers both.
#[test]
fn a_node_answers_while_its_executor_is_held() {
    // smol's global executor has one thread unless SMOL_THREADS says otherwise; hold them
    // all.
    let threads = std::env::var("SMOL_THREADS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let node = smol::block_on(start::<SmolRuntime>(|_| {}));
    smol::block_on(node.node.put_record(message(1, "local"))).unwrap();

    let (held_tx, held_rx) = std::sync::mpsc::channel();
    // The executor threads wait on this lock until the test lets it go.
    let gate = std::sync::Arc::new(std::sync::RwLock::new(()));
    let closed = gate.write().unwrap();
    for _ in 0..threads {
        let held_tx = held_tx.clone();
        let gate = std::sync::Arc::clone(&gate);
        smol::spawn(async move {
            held_tx.send(()).unwrap();
            // Blocks this executor thread until the calls below have their answers (or
            // the test ends).
            let _open = gate.read();
        })
        .detach();
    }
    for _ in 0..threads {
        held_rx.recv().unwrap();
    }

    let (answer_tx, answer_rx) = std::sync::mpsc::channel();
    let caller = node.node.clone();
    std::thread::spawn(move || {
        let got = futures::executor::block_on(caller.get_record(&MessagePrimaryKey(1)));
        let put = futures::executor::block_on(caller.put_record(message(2, "while held")));
        let _ = answer_tx.send((got, put));
    });
    let answers = answer_rx.recv_timeout(DEADLINE);
    drop(closed);
    let (got, put) = answers.expect("the driver answers while the executor is held");
    let got = got.unwrap().expect("the record is local");
    assert_eq!((got.record, got.source), (message(1, "local"), None));
    // No peer to publish to, but the local write stands.
    assert!(put.unwrap().quorum_error.is_some());
    assert_eq!(
        smol::block_on(node.node.query_local_records::<Message>(10)).unwrap(),
        vec![message(1, "local"), message(2, "while held")]
    );
    smol::block_on(node.node.stop_swarm()).unwrap();
}
