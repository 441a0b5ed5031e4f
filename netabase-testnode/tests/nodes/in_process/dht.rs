//! Records, providers, bootstrap, routing-table management and the protocol name across
//! nodes.

use netabase::{IPFS_PROTOCOL_NAME, NetabaseConfig, NetabaseError, NetabaseEvent, QueryError};
use netabase_testnode::in_process::*;
use netabase_testnode::{Message, MessagePrimaryKey, UserPrimaryKey};

per_runtime!(a_record_put_on_one_node_is_fetched_typed_from_another);
async fn a_record_put_on_one_node_is_fetched_typed_from_another<R: TestRuntime>() {
    let nodes = network::<R>(4).await;
    let mut holder_events = nodes[3].events();
    let hello = message(1, "hello");
    let put = nodes[1].node.put_record(hello.clone()).await.unwrap();
    assert!(put.quorum_error.is_none(), "{put:?}");
    assert!(put.peer_count() >= 1);
    assert!(!put.stored_at.contains(&nodes[1].id()));

    // In a network this small every node is among the closest and holds a copy; a node
    // that joins later has none and fetches it.
    let late =
        start_with::<R>(|c| c.bootstrap_peers = vec![(nodes[0].id(), nodes[0].addr.clone())]).await;
    late.node.bootstrap().await.unwrap();
    let got = late
        .node
        .get_record(&MessagePrimaryKey(1))
        .await
        .unwrap()
        .expect("found on the network");
    assert_eq!(got.record, hello);
    let source = got.source.expect("came from a peer");
    assert!(nodes.iter().any(|n| n.id() == source), "{source}");
    assert_eq!(got.origin, nodes[1].id());
    let writer = nodes[1].id();
    holder_events
        .wait_for("the copy stored on a node of the network", |e| {
            matches!(e, NetabaseEvent::RecordStored { from, .. } if *from == writer).then_some(())
        })
        .await;
    let held = nodes[3]
        .node
        .get_record(&MessagePrimaryKey(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((held.record, held.source), (message(1, "hello"), None));

    // The writer finds its own copy locally; a key nobody wrote is not found.
    let own = nodes[1]
        .node
        .get_record(&MessagePrimaryKey(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(own.source, None);
    assert_eq!(
        nodes[2]
            .node
            .get_record(&MessagePrimaryKey(99))
            .await
            .unwrap(),
        None
    );
    // Only the writer's typed store holds it.
    assert_eq!(
        nodes[1]
            .node
            .query_local_records::<Message>(10)
            .await
            .unwrap(),
        vec![hello]
    );
    assert!(
        late.node
            .query_local_records::<Message>(10)
            .await
            .unwrap()
            .is_empty()
    );
}

per_runtime!(a_put_reports_remote_storage_events);
async fn a_put_reports_remote_storage_events<R: TestRuntime>() {
    let nodes = network::<R>(3).await;
    let mut events: Vec<_> = nodes.iter().map(|n| n.events()).collect();
    let put = nodes[2].node.put_record(message(7, "x")).await.unwrap();
    let key = put.key.clone();
    for (i, stored_at) in put.stored_at.iter().enumerate() {
        let index = nodes.iter().position(|n| n.id() == *stored_at).unwrap();
        let from = events[index]
            .wait_for("record stored", |e| match e {
                NetabaseEvent::RecordStored { key: k, from } if *k == key => Some(*from),
                _ => None,
            })
            .await;
        assert_eq!(from, nodes[2].id(), "peer {i}");
    }
}

per_runtime!(providers_are_found_across_nodes);
async fn providers_are_found_across_nodes<R: TestRuntime>() {
    let nodes = network::<R>(4).await;
    let key = UserPrimaryKey("ada".into());
    let announced = nodes[1].node.start_providing(&key).await.unwrap();
    assert!(announced.error.is_none(), "{announced:?}");
    assert!(!announced.announced_to.is_empty());

    let providers = nodes[3].node.get_providers(&key).await.unwrap();
    let ada = providers
        .iter()
        .find(|p| p.peer == nodes[1].id())
        .expect("the provider is found");
    assert!(ada.addresses.contains(&nodes[1].addr), "{ada:?}");
    assert!(
        nodes[3]
            .node
            .get_providers(&UserPrimaryKey("nobody".into()))
            .await
            .unwrap()
            .is_empty()
    );
}

per_runtime!(a_lone_provider_keeps_its_record_until_it_stops_providing);
async fn a_lone_provider_keeps_its_record_until_it_stops_providing<R: TestRuntime>() {
    let lone = start_with::<R>(|_| {}).await;
    let key = UserPrimaryKey("grace".into());
    let announced = lone.node.start_providing(&key).await.unwrap();
    assert!(announced.announced_to.is_empty());
    assert!(announced.error.is_some());
    let providers = lone.node.get_providers(&key).await.unwrap();
    assert_eq!(
        providers.iter().map(|p| p.peer).collect::<Vec<_>>(),
        vec![lone.id()]
    );
    lone.node.stop_providing(&key).await.unwrap();
    assert!(lone.node.get_providers(&key).await.unwrap().is_empty());
}

per_runtime!(bootstrap_fills_the_routing_table_and_needs_a_peer);
async fn bootstrap_fills_the_routing_table_and_needs_a_peer<R: TestRuntime>() {
    let nodes = network::<R>(4).await;
    let result = nodes[3].node.bootstrap().await.unwrap();
    assert_eq!(result.routing_table_size, 3);
    let mut table = nodes[3].node.routing_table_peers().await.unwrap();
    table.sort();
    let mut others: Vec<_> = nodes[..3].iter().map(|n| n.id()).collect();
    others.sort();
    assert_eq!(table, others);

    let lone = start_with::<R>(|_| {}).await;
    assert!(matches!(
        lone.node.bootstrap().await,
        Err(NetabaseError::Query(QueryError::NoKnownPeers))
    ));
}

per_runtime!(remove_peer_and_remove_address_edit_the_routing_table);
async fn remove_peer_and_remove_address_edit_the_routing_table<R: TestRuntime>() {
    let nodes = network::<R>(3).await;
    let (a, b) = (&nodes[2].node, nodes[0].id());
    assert!(a.routing_table_peers().await.unwrap().contains(&b));
    let mut events = subscribe(a);
    assert!(a.remove_peer(b).await.unwrap());
    events
        .wait_for("peer removed", |e| {
            matches!(e, NetabaseEvent::RoutingTablePeerRemoved { peer } if *peer == b).then_some(())
        })
        .await;
    assert!(!a.routing_table_peers().await.unwrap().contains(&b));
    assert!(!a.remove_peer(b).await.unwrap());

    // Added back by address, then removed with its only address.
    a.add_address(b, nodes[0].addr.clone()).await.unwrap();
    assert!(a.routing_table_peers().await.unwrap().contains(&b));
    a.remove_address(b, nodes[0].addr.clone()).await.unwrap();
    assert!(!a.routing_table_peers().await.unwrap().contains(&b));
}

per_runtime!(the_ipfs_protocol_name_is_selectable_and_names_must_match);
async fn the_ipfs_protocol_name_is_selectable_and_names_must_match<R: TestRuntime>() {
    let ipfs = |c: &mut NetabaseConfig| {
        c.protocol_name = IPFS_PROTOCOL_NAME.to_string();
    };
    let a = start_with::<R>(ipfs).await;
    assert_eq!(
        a.node.get_protocol_names(),
        vec!["/ipfs/kad/1.0.0".to_string()]
    );
    let (id, addr) = (a.id(), a.addr.clone());
    let b = start_with::<R>(|c| {
        ipfs(c);
        c.bootstrap_peers = vec![(id, addr.clone())];
    })
    .await;
    assert_eq!(b.node.bootstrap().await.unwrap().routing_table_size, 1);
    b.node.put_record(message(11, "ipfs")).await.unwrap();
    let got = a
        .node
        .get_record(&MessagePrimaryKey(11))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.origin, b.id());

    // A node speaking the default name finds nobody to talk to: the negotiation fails,
    // and the peer leaves its routing table.
    let other = start_with::<R>(|c| c.bootstrap_peers = vec![(id, addr)]).await;
    assert!(matches!(
        other.node.bootstrap().await,
        Err(NetabaseError::Query(QueryError::NoKnownPeers))
    ));
    assert!(other.node.routing_table_peers().await.unwrap().is_empty());
}
