//! A client-mode node process: it queries the DHT but is never queried nor added to routing
//! tables, until it switches to server mode.

use netabase_testnode::{BootstrapReply, Command, Event, ModeName, PutReply};

use super::support::*;

fn a_client_queries_but_is_not_queried(rt: Rt) {
    let mut nodes = network("modes", 3, rt);
    let mut client = Spawn::new("modes-client", rt)
        .client()
        .bootstrap(&nodes[0])
        .start();
    let client_id = client.peer_id.clone();
    let joined: BootstrapReply = client.call(Command::Bootstrap);
    assert_eq!(joined.routing_table_size, 3);
    assert_eq!(client.call::<ModeName>(Command::GetMode), ModeName::Client);
    // Identify tells the bootstrap node that the client does not serve the DHT.
    let serves = nodes[0].expect_event("client identified", |e| match e {
        Event::PeerIdentified {
            peer, serves_dht, ..
        } if *peer == client_id => Some(*serves_dht),
        _ => None,
    });
    assert!(!serves);

    // The client writes and reads.
    let put: PutReply = client.call(Command::Put {
        message: message(3, "from a client"),
    });
    assert_eq!(put.quorum_error, None);
    assert!(!put.stored_at.is_empty());
    let _: PutReply = nodes[1].call(Command::Put {
        message: message(4, "from a server"),
    });
    let got = client.get(4).expect("the client finds it");
    assert_eq!(got.record.text, "from a server");
    assert_eq!(got.origin, nodes[1].peer_id);
    assert!(got.source.is_some());

    // No server added it, and none of their lookups asked it anything.
    for node in &mut nodes {
        let _: BootstrapReply = node.call(Command::Bootstrap);
        assert!(!node.routing_table().contains(&client_id), "{}", node.name);
        assert_eq!(
            node.get(3).expect("stored at the servers").origin,
            client_id
        );
    }
    let stats = client.stats();
    assert_eq!(stats.inbound_requests, 0, "{stats:?}");
    assert!(stats.requests_sent > 0);

    // As a server it is added again: identify pushes the change.
    let mark = nodes[0].mark();
    let _: serde_json::Value = client.call(Command::SetMode {
        mode: ModeName::Server,
    });
    client.expect_event("mode changed", |e| {
        matches!(
            e,
            Event::ModeChanged {
                mode: ModeName::Server
            }
        )
        .then_some(())
    });
    nodes[0].expect_event_since(mark, "the former client added", |e| {
        matches!(e, Event::RoutingTablePeerAdded { peer } if *peer == client_id).then_some(())
    });
    assert_eq!(client.call::<ModeName>(Command::GetMode), ModeName::Server);
}

per_runtime!(a_client_queries_but_is_not_queried);
