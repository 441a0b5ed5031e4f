//! Records and providers between two nodes of one runtime, and between nodes of two
//! runtimes in one process.

use netabase::swarm::Runtime;
use netabase::{AsyncStdRuntime, NetabaseEvent, SmolRuntime, TokioRuntime};
use netabase_testnode::MessagePrimaryKey;
use netabase_testnode::in_process::*;

/// A record put on `A`'s node is fetched typed from `B`'s; a key `B` provides is found by
/// `A` with `B`'s address; `A` hears that `B` stored its record.
async fn records_and_providers<A: Runtime, B: Runtime>() {
    let first = start_with::<A>(|_| {}).await;
    let second = join::<B, A>(&first).await;
    let mut second_events = second.events();

    let hello = message(1, "hello from the first node");
    let put = first.node.put_record(hello.clone()).await.unwrap();
    assert!(put.quorum_error.is_none(), "{put:?}");
    assert_eq!(put.stored_at, vec![second.id()]);
    let origin = first.id();
    second_events
        .wait_for("the remote store event", |e| {
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

per_runtime!(two_nodes_exchange_records_and_providers);
async fn two_nodes_exchange_records_and_providers<R: TestRuntime>() {
    records_and_providers::<R, R>().await;
}

// Nodes of two runtimes, each runtime's node first once. A tokio node needs a tokio
// runtime around it; async-std and smol nodes run anywhere.

#[test]
fn a_tokio_node_and_an_async_std_node_exchange_records_and_providers() {
    TokioRuntime::block_on(async {
        records_and_providers::<TokioRuntime, AsyncStdRuntime>().await;
        records_and_providers::<AsyncStdRuntime, TokioRuntime>().await;
    });
}

#[test]
fn a_tokio_node_and_a_smol_node_exchange_records_and_providers() {
    TokioRuntime::block_on(async {
        records_and_providers::<TokioRuntime, SmolRuntime>().await;
        records_and_providers::<SmolRuntime, TokioRuntime>().await;
    });
}

#[test]
fn an_async_std_node_and_a_smol_node_exchange_records_and_providers() {
    AsyncStdRuntime::block_on(records_and_providers::<AsyncStdRuntime, SmolRuntime>());
    SmolRuntime::block_on(records_and_providers::<SmolRuntime, AsyncStdRuntime>());
}
