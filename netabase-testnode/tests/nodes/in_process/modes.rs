//! Client and server mode.

use netabase::{Mode, NetabaseEvent};
use netabase_testnode::MessagePrimaryKey;
use netabase_testnode::in_process::*;

per_runtime!(a_client_queries_but_is_neither_queried_nor_added);
async fn a_client_queries_but_is_neither_queried_nor_added<R: TestRuntime>() {
    let nodes = network::<R>(3).await;
    let mut boot_events = nodes[0].events();
    let client = client_of(&nodes[0]).await;
    let client_id = client.id();
    // The bootstrap node learns through identify that the client does not serve the DHT.
    boot_events
        .wait_for("client identified", |e| match e {
            NetabaseEvent::PeerIdentified {
                peer, serves_dht, ..
            } if *peer == client_id => Some(*serves_dht),
            _ => None,
        })
        .await
        .then(|| panic!("the client claims to serve the DHT"));
    assert_eq!(client.node.get_mode().await.unwrap(), Mode::Client);
    assert_eq!(client.node.routing_table_peers().await.unwrap().len(), 3);

    // The client can write and read.
    let put = client
        .node
        .put_record(message(3, "from a client"))
        .await
        .unwrap();
    assert!(put.peer_count() >= 1, "{put:?}");
    nodes[1]
        .node
        .put_record(message(4, "from a server"))
        .await
        .unwrap();
    let got = client
        .node
        .get_record(&MessagePrimaryKey(4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.record.text, "from a server");

    // No server added it, and none of their lookups asked it anything.
    for node in &nodes {
        node.node.bootstrap().await.unwrap();
        assert!(
            !node
                .node
                .routing_table_peers()
                .await
                .unwrap()
                .contains(&client_id)
        );
    }
    assert_eq!(client.node.stats().await.unwrap().kad.inbound_requests, 0);
}

per_runtime!(set_mode_switches_serving_and_peers_follow);
async fn set_mode_switches_serving_and_peers_follow<R: TestRuntime>() {
    let nodes = network::<R>(2).await;
    let (a, b) = (&nodes[0].node, &nodes[1].node);
    let b_id = nodes[1].id();
    assert_eq!(b.get_mode().await.unwrap(), Mode::Server);
    assert!(a.routing_table_peers().await.unwrap().contains(&b_id));

    let mut a_events = subscribe(a);
    let mut b_events = subscribe(b);
    b.set_mode(Mode::Client).await.unwrap();
    assert_eq!(b.get_mode().await.unwrap(), Mode::Client);
    b_events
        .wait_for("mode changed", |e| {
            matches!(e, NetabaseEvent::ModeChanged { mode: Mode::Client }).then_some(())
        })
        .await;
    // Identify pushes the change; a drops b from its table.
    a_events
        .wait_for("b removed", |e| {
            matches!(e, NetabaseEvent::RoutingTablePeerRemoved { peer } if *peer == b_id)
                .then_some(())
        })
        .await;
    assert!(!a.routing_table_peers().await.unwrap().contains(&b_id));

    b.set_mode(Mode::Server).await.unwrap();
    a_events
        .wait_for("b added again", |e| {
            matches!(e, NetabaseEvent::RoutingTablePeerAdded { peer } if *peer == b_id)
                .then_some(())
        })
        .await;
    assert_eq!(b.get_mode().await.unwrap(), Mode::Server);
    assert_eq!(
        b.get_protocol_names(),
        vec!["/netabase/kad/1.0.0".to_string()]
    );
}
