//! Records, providers, bootstrap and routing-table edits across node processes.

use std::collections::BTreeSet;

use netabase_testnode::{BootstrapReply, Command, Event, ProviderReply, ProvidingReply, PutReply};

use super::support::*;

fn a_record_put_on_one_node_is_fetched_on_the_others_in_a_ten_node_network(rt: Rt) {
    let mut nodes = network("ten", 10, rt);
    let writer = nodes[7].peer_id.clone();
    let hello = message(1, "hello, ten nodes");
    let put: PutReply = nodes[7].call(Command::Put {
        message: hello.clone(),
    });
    assert_eq!(put.quorum_error, None, "{put:?}");
    assert!(!put.stored_at.is_empty());
    assert!(!put.stored_at.contains(&writer));

    // Every other node finds it, typed, with its writer (asked all at once).
    let reqs: Vec<(usize, u64)> = (0..10)
        .filter(|&i| i != 7)
        .map(|i| (i, nodes[i].send(Command::Get { id: 1 })))
        .collect();
    for (i, req) in reqs {
        let found: Option<netabase_testnode::Found<netabase_testnode::Message>> =
            nodes[i].reply_as(req);
        let found = found.unwrap_or_else(|| panic!("node {i} finds the record"));
        assert_eq!(found.record, hello, "node {i}");
        assert_eq!(found.origin, writer, "node {i}");
    }

    // Ten nodes are fewer than K: the put reached every one. Node 3, which never wrote it,
    // removes it: the tombstone reaches every node, and no node reads the record any more.
    let key = message_key(1);
    nodes[3].expect_event("the put reached node 3", |e| {
        matches!(e, Event::RecordStored { key: k, from } if *k == key && *from == writer)
            .then_some(())
    });
    let removed: Option<netabase_testnode::Message> = nodes[3].call(Command::Remove { id: 1 });
    assert_eq!(removed, None, "node 3 never wrote it to its typed store");
    let remover = nodes[3].peer_id.clone();
    for (i, node) in nodes.iter_mut().enumerate().filter(|(i, _)| *i != 3) {
        node.expect_event(&format!("the tombstone reached node {i}"), |e| {
            matches!(e, Event::RecordStored { key: k, from } if *k == key && *from == remover)
                .then_some(())
        });
    }
    let reqs: Vec<(usize, u64)> = (0..10)
        .map(|i| (i, nodes[i].send(Command::Get { id: 1 })))
        .collect();
    for (i, req) in reqs {
        let found: Option<netabase_testnode::Found<netabase_testnode::Message>> =
            nodes[i].reply_as(req);
        assert!(
            found.is_none(),
            "node {i} still reads a removed record: {found:?}"
        );
    }
    assert_eq!(nodes[5].get(2), None);
}

fn providers_are_announced_and_found_across_nodes(rt: Rt) {
    let mut nodes = network("prov", 4, rt);
    let announced: ProvidingReply = nodes[1].call(Command::StartProviding { id: 42 });
    assert_eq!(announced.error, None, "{announced:?}");
    assert!(!announced.announced_to.is_empty());
    assert_eq!(announced.key, message_key(42));
    // Every peer it announced to reports the provider.
    let provider = nodes[1].peer_id.clone();
    for peer in &announced.announced_to {
        let node = nodes
            .iter_mut()
            .find(|n| n.peer_id == *peer)
            .expect("announced to a node of the network");
        node.expect_event("provider added", |e| {
            matches!(e, Event::ProviderAdded { key, provider: p }
                if *key == message_key(42) && *p == provider)
            .then_some(())
        });
    }

    let found: Vec<ProviderReply> = nodes[3].call(Command::GetProviders { id: 42 });
    let entry = found
        .iter()
        .find(|p| p.peer == provider)
        .unwrap_or_else(|| panic!("provider found: {found:?}"));
    assert!(entry.addresses.contains(&nodes[1].addrs[0]), "{entry:?}");

    // A second provider of the same key; a key nobody provides has none.
    let second: ProvidingReply = nodes[2].call(Command::StartProviding { id: 42 });
    assert_eq!(second.error, None);
    let both: BTreeSet<String> = nodes[0]
        .call::<Vec<ProviderReply>>(Command::GetProviders { id: 42 })
        .into_iter()
        .map(|p| p.peer)
        .collect();
    let expected: BTreeSet<String> = [provider.clone(), nodes[2].peer_id.clone()].into();
    assert_eq!(both, expected);
    let none: Vec<ProviderReply> = nodes[3].call(Command::GetProviders { id: 43 });
    assert!(none.is_empty(), "{none:?}");

    // Stopping is acknowledged (copies at other peers expire with their lifetime).
    let stopped: serde_json::Value = nodes[2].call(Command::StopProviding { id: 42 });
    assert!(stopped.is_null());
}

fn bootstrap_fills_the_routing_table_and_needs_a_known_peer(rt: Rt) {
    let mut nodes = network("boot", 4, rt);
    let joined: BootstrapReply = nodes[3].call(Command::Bootstrap);
    assert_eq!(joined.routing_table_size, 3);
    let table: BTreeSet<String> = nodes[3].routing_table().into_iter().collect();
    let others: BTreeSet<String> = nodes[..3].iter().map(|n| n.peer_id.clone()).collect();
    assert_eq!(table, others);

    // A node that knows nobody cannot bootstrap; told one address, it learns them all.
    let mut lone = Spawn::new("boot-lone", rt).start();
    let refused = lone.try_call(Command::Bootstrap).unwrap_err();
    assert!(refused.contains("no known peers"), "{refused}");
    let added: serde_json::Value = lone.call(Command::AddAddress {
        peer: nodes[0].peer_id.clone(),
        address: nodes[0].addrs[0].clone(),
    });
    assert!(added.is_null());
    let joined: BootstrapReply = lone.call(Command::Bootstrap);
    assert_eq!(joined.routing_table_size, 4);
}

fn remove_peer_and_remove_address_edit_the_routing_table(rt: Rt) {
    let mut nodes = network("rm", 3, rt);
    let (b_id, b_addr) = (nodes[0].peer_id.clone(), nodes[0].addrs[0].clone());
    let a = &mut nodes[2];
    assert!(a.routing_table().contains(&b_id));
    let mark = a.mark();
    assert!(a.call::<bool>(Command::RemovePeer { peer: b_id.clone() }));
    a.expect_event_since(mark, "peer removed", |e| {
        matches!(e, Event::RoutingTablePeerRemoved { peer } if *peer == b_id).then_some(())
    });
    assert!(!a.routing_table().contains(&b_id));
    assert!(!a.call::<bool>(Command::RemovePeer { peer: b_id.clone() }));
    // Refused input is a typed error, not a crash.
    let bad = a
        .try_call(Command::RemovePeer {
            peer: "not-a-peer-id".into(),
        })
        .unwrap_err();
    assert!(bad.contains("peer id"), "{bad}");

    // Back by address, then gone with its only address.
    let _: serde_json::Value = a.call(Command::AddAddress {
        peer: b_id.clone(),
        address: b_addr.clone(),
    });
    assert!(a.routing_table().contains(&b_id));
    let _: serde_json::Value = a.call(Command::RemoveAddress {
        peer: b_id.clone(),
        address: b_addr,
    });
    assert!(!a.routing_table().contains(&b_id));
}

per_runtime!(a_record_put_on_one_node_is_fetched_on_the_others_in_a_ten_node_network);
per_runtime!(providers_are_announced_and_found_across_nodes);
per_runtime!(bootstrap_fills_the_routing_table_and_needs_a_known_peer);
per_runtime!(remove_peer_and_remove_address_edit_the_routing_table);
