//! Mixed networks: nodes on tokio, async-std and smol in one network exchange records and
//! provider records in every direction.

use netabase_testnode::{Command, Event, ProviderReply, ProvidingReply, PutReply};

use super::support::*;

#[test]
fn tokio_async_std_and_smol_nodes_exchange_records_and_providers() {
    // Two nodes of each runtime, joined through a smol node.
    let runtimes = [
        Rt::Smol,
        Rt::Tokio,
        Rt::AsyncStd,
        Rt::Tokio,
        Rt::AsyncStd,
        Rt::Smol,
    ];
    let mut nodes = network_of("mixed", &runtimes);
    let ids: Vec<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();

    // Every node writes one record; every other node fetches it, typed, with its writer.
    for (i, node) in nodes.iter_mut().enumerate() {
        let put: PutReply = node.call(Command::Put {
            message: message(i as u64, &format!("from a {} node", runtimes[i].flag())),
        });
        assert_eq!(put.quorum_error, None, "{}: {put:?}", node.name);
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        for (j, rt) in runtimes.iter().enumerate() {
            let found = node
                .get(j as u64)
                .unwrap_or_else(|| panic!("node {i} finds the record of node {j}"));
            assert_eq!(
                found.record,
                message(j as u64, &format!("from a {} node", rt.flag()))
            );
            assert_eq!(found.origin, ids[j]);
        }
    }

    // One provider per runtime; a node of each other runtime finds all three.
    let providers = [(1, Rt::Tokio), (2, Rt::AsyncStd), (0, Rt::Smol)];
    for (index, rt) in providers {
        assert_eq!(runtimes[index], rt);
        let announced: ProvidingReply = nodes[index].call(Command::StartProviding { id: 100 });
        assert_eq!(announced.error, None, "{announced:?}");
        assert!(!announced.announced_to.is_empty());
        // Each peer it announced to reports the provider.
        let provider = ids[index].clone();
        for peer in &announced.announced_to {
            let node = nodes.iter_mut().find(|n| n.peer_id == *peer).unwrap();
            node.expect_event("provider added", |e| {
                matches!(e, Event::ProviderAdded { key, provider: p }
                    if *key == message_key(100) && *p == provider)
                .then_some(())
            });
        }
    }
    for asker in [3, 4, 5] {
        let found: Vec<ProviderReply> = nodes[asker].call(Command::GetProviders { id: 100 });
        for (index, _) in providers {
            let entry = found
                .iter()
                .find(|p| p.peer == ids[index])
                .unwrap_or_else(|| panic!("node {asker} finds provider {index}: {found:?}"));
            assert!(
                entry.addresses.contains(&nodes[index].addrs[0]),
                "{entry:?}"
            );
        }
    }
}
