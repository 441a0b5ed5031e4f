//! Lookups, records and providers on static networks, checked against brute force.

use std::time::Duration;

use netabase_core::{Config, Key, Mode, PeerId, QueryResult, Quorum, Record, RecordKey};
use proptest::prelude::*;

use crate::harness::Net;

const LIMIT: Duration = Duration::from_secs(300);

fn brute_force_closest(net: &Net, from: &PeerId, target: &Key, k: usize) -> Vec<PeerId> {
    let mut live: Vec<PeerId> = net.live_peers().into_iter().filter(|p| p != from).collect();
    live.sort_by_key(|p| Key::from_peer(p).distance(target));
    live.truncate(k);
    live
}

/// A network of `n` nodes whose routing tables were filled by introducing every node to
/// every other (buckets capped at K), with `down` of them then crashed.
fn static_network(seed: u64, n: usize, down: usize) -> (Net, Vec<PeerId>) {
    let mut net = Net::new(seed);
    // Exactness is a property of the lookup itself: wait for every answer.
    let config = Config {
        lookup_patience: None,
        ..Config::default()
    };
    let peers = net.add_nodes(n, seed.wrapping_mul(1_000_003), &config);
    net.full_mesh_tables();
    // Let the liveness probes of full buckets settle while everyone is up.
    net.run_for(Duration::from_secs(1));
    for p in peers.iter().take(down) {
        net.down.insert(*p);
    }
    (net, peers)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, .. ProptestConfig::default() })]

    /// FIND_NODE from any node of a static network returns exactly the K closest peers.
    #[test]
    fn find_node_returns_exactly_the_k_closest_peers(
        seed in any::<u64>(),
        n in 50usize..=500,
        lookups in prop::collection::vec((any::<prop::sample::Index>(), any::<[u8; 16]>()), 3),
    ) {
        let (mut net, peers) = static_network(seed, n, 0);
        for (from_idx, target_bytes) in lookups {
            let from = *from_idx.get(&peers);
            let key = RecordKey::new(&target_bytes).unwrap();
            let now = net.now;
            let id = net.node(&from).get_closest_peers(now, key.clone()).unwrap();
            let (result, _) = net.run_query(from, id, LIMIT);
            let QueryResult::GetClosestPeers(Ok(found)) = result else {
                panic!("lookup failed: {result:?}");
            };
            let expected = brute_force_closest(&net, &from, &key.key(), 20);
            prop_assert_eq!(found, expected);
        }
        for p in &peers {
            net.node(p).check_invariants().map_err(TestCaseError::fail)?;
        }
    }

    /// With up to 10% of the nodes crashed (still listed in routing tables), lookups return
    /// only live peers, closest first, and lose at most one result per crashed node that
    /// occupies a slot in the responders' answers.
    #[test]
    fn lookups_route_around_crashed_nodes(
        seed in any::<u64>(),
        n in 50usize..=300,
        down_percent in 1usize..=10,
        lookups in prop::collection::vec((any::<prop::sample::Index>(), any::<[u8; 16]>()), 2),
    ) {
        let down = n * down_percent / 100;
        let (mut net, peers) = static_network(seed, n, down);
        let live: Vec<PeerId> = peers[down..].to_vec();
        for (from_idx, target_bytes) in lookups {
            let from = *from_idx.get(&live);
            let key = RecordKey::new(&target_bytes).unwrap();
            let now = net.now;
            let id = net.node(&from).get_closest_peers(now, key.clone()).unwrap();
            let (result, _) = net.run_query(from, id, LIMIT);
            let QueryResult::GetClosestPeers(Ok(found)) = result else {
                panic!("lookup failed: {result:?}");
            };
            let target = key.key();
            prop_assert!(found.iter().all(|p| !net.down.contains(p)));
            prop_assert!(found.windows(2).all(|w| Key::from_peer(&w[0]).distance(&target) < Key::from_peer(&w[1]).distance(&target)));
            prop_assert!(found.len() + down >= 20);
            let expected = brute_force_closest(&net, &from, &target, 20);
            let common = found.iter().filter(|p| expected.contains(p)).count();
            prop_assert!(common + down >= 20, "found {} of the 20 closest live peers", common);
        }
    }

    /// A record put from one node is found from any other.
    #[test]
    fn put_then_get_from_another_node(
        seed in any::<u64>(),
        n in 50usize..=300,
        value in prop::collection::vec(any::<u8>(), 0..512),
        pick in any::<(prop::sample::Index, prop::sample::Index)>(),
    ) {
        let (mut net, peers) = static_network(seed, n, 0);
        let (a, b) = (*pick.0.get(&peers), *pick.1.get(&peers));
        prop_assume!(a != b);
        let key = RecordKey::new(&seed.to_be_bytes()).unwrap();
        let now = net.now;
        let id = net.node(&a).put_record(now, Record::new(key.clone(), value.clone()), Quorum::Majority).unwrap();
        let (result, _) = net.run_query(a, id, LIMIT);
        let QueryResult::PutRecord(Ok(stored)) = result else { panic!("put failed: {result:?}") };
        prop_assert!(stored.len() >= 11);
        let now = net.now;
        let id = net.node(&b).get_record(now, key.clone(), Quorum::One).unwrap();
        let (result, _) = net.run_query(b, id, LIMIT);
        let QueryResult::GetRecord(Ok(records)) = result else { panic!("get failed: {result:?}") };
        prop_assert_eq!(&records[0].record.value, &value);
        prop_assert_eq!(records[0].record.publisher, Some(a));
    }
}

#[test]
fn providers_are_found_from_other_nodes() {
    let (mut net, peers) = static_network(7, 120, 0);
    let key = RecordKey::new(b"content").unwrap();
    for provider in &peers[..3] {
        let now = net.now;
        let id = net
            .node(provider)
            .start_providing(now, key.clone())
            .unwrap();
        let (result, _) = net.run_query(*provider, id, LIMIT);
        let QueryResult::StartProviding(Ok(sent)) = result else {
            panic!("{result:?}")
        };
        assert_eq!(sent.len(), 20);
    }
    let asker = peers[100];
    let now = net.now;
    let id = net.node(&asker).get_providers(now, key).unwrap();
    let (result, _) = net.run_query(asker, id, LIMIT);
    let QueryResult::GetProviders(Ok(found)) = result else {
        panic!("{result:?}")
    };
    let mut ids: Vec<PeerId> = found.iter().map(|p| p.id).collect();
    ids.sort();
    let mut expected = peers[..3].to_vec();
    expected.sort();
    assert_eq!(ids, expected);
}

#[test]
fn nodes_joining_through_one_bootstrap_node_find_each_other() {
    let mut net = Net::new(99);
    let config = Config::default();
    let peers = net.add_nodes(150, 5000, &config);
    let seed_node = peers[0];
    for p in &peers[1..] {
        net.introduce(*p, seed_node);
        let now = net.now;
        let id = net.node(p).bootstrap(now).unwrap();
        let (result, _) = net.run_query(*p, id, LIMIT);
        assert!(
            matches!(result, QueryResult::Bootstrap(Ok(_))),
            "{result:?}"
        );
    }
    // Every node now knows enough of the network to find any other's closest peers.
    for (i, from) in peers.iter().enumerate().step_by(15) {
        let key = RecordKey::new(&(i as u64).to_be_bytes()).unwrap();
        let now = net.now;
        let id = net.node(from).get_closest_peers(now, key.clone()).unwrap();
        let (result, stats) = net.run_query(*from, id, LIMIT);
        let QueryResult::GetClosestPeers(Ok(found)) = result else {
            panic!("{result:?}")
        };
        assert_eq!(found, brute_force_closest(&net, from, &key.key(), 20));
        assert!(stats.hops <= 4, "lookup took {} hops", stats.hops);
    }
}

#[test]
fn client_nodes_query_but_are_never_added_to_tables() {
    let (mut net, peers) = static_network(3, 60, 0);
    let client_config = Config {
        mode: Mode::Client,
        ..Config::default()
    };
    let client = net.add_nodes(1, 777_777, &client_config)[0];
    net.introduce(client, peers[0]);
    let now = net.now;
    let id = net.node(&client).bootstrap(now).unwrap();
    let (result, _) = net.run_query(client, id, LIMIT);
    assert!(
        matches!(result, QueryResult::Bootstrap(Ok(n)) if n >= 20),
        "{result:?}"
    );
    // The client can read and write the DHT ...
    let key = RecordKey::new(b"from-client").unwrap();
    let now = net.now;
    let id = net
        .node(&client)
        .put_record(now, Record::new(key.clone(), b"v".to_vec()), Quorum::All)
        .unwrap();
    let (result, _) = net.run_query(client, id, LIMIT);
    assert!(
        matches!(result, QueryResult::PutRecord(Ok(ref s)) if s.len() == 20),
        "{result:?}"
    );
    // ... but no server ever adds it, even though it appears in their traffic.
    for p in &peers {
        assert!(!net.nodes[p].routing_table().contains(&client));
    }
    // A server that is told about the client directly still cannot use it: it refuses.
    net.introduce(peers[1], client);
    let now = net.now;
    let id = net
        .node(&peers[1])
        .get_closest_peers(now, RecordKey::new(client.as_bytes()).unwrap())
        .unwrap();
    let (result, _) = net.run_query(peers[1], id, LIMIT);
    let QueryResult::GetClosestPeers(Ok(found)) = result else {
        panic!("{result:?}")
    };
    assert!(!found.contains(&client));
}

#[test]
fn records_expire_and_replication_restores_them_at_new_closest_peers() {
    let config = Config {
        record_ttl: Some(Duration::from_secs(600)),
        replication_interval: Some(Duration::from_secs(60)),
        publication_interval: Some(Duration::from_secs(300)),
        bootstrap_interval: None,
        ..Config::default()
    };
    let mut net = Net::new(11);
    let peers = net.add_nodes(80, 123, &config);
    net.full_mesh_tables();
    net.run_for(Duration::from_secs(1));
    let key = RecordKey::new(b"replicated").unwrap();
    let publisher = peers[0];
    let now = net.now;
    let id = net
        .node(&publisher)
        .put_record(now, Record::new(key.clone(), b"x".to_vec()), Quorum::All)
        .unwrap();
    let (result, _) = net.run_query(publisher, id, LIMIT);
    assert!(
        matches!(result, QueryResult::PutRecord(Ok(_))),
        "{result:?}"
    );
    // Well past the record TTL: the publisher republished it with fresh lifetimes, so the
    // closest peers still hold it and nobody holds an expired copy.
    net.run_for(Duration::from_secs(1500));
    let target = key.key();
    let mut closest = peers.clone();
    closest.sort_by_key(|p| Key::from_peer(p).distance(&target));
    let now = net.now;
    for p in closest.iter().take(20) {
        use netabase_core::RecordStore;
        let r = net.nodes[p]
            .store()
            .get(&key)
            .unwrap()
            .unwrap_or_else(|| panic!("{p:?} lost the record"));
        assert!(!r.is_expired(now));
    }
}

#[test]
fn find_node_is_exact_on_500_nodes() {
    let (mut net, peers) = static_network(500, 500, 0);
    for i in 0..10u64 {
        let from = peers[(i as usize * 53) % peers.len()];
        let key = RecordKey::new(&i.to_le_bytes()).unwrap();
        let now = net.now;
        let id = net.node(&from).get_closest_peers(now, key.clone()).unwrap();
        let (result, stats) = net.run_query(from, id, LIMIT);
        let QueryResult::GetClosestPeers(Ok(found)) = result else {
            panic!("{result:?}")
        };
        assert_eq!(found, brute_force_closest(&net, &from, &key.key(), 20));
        assert!(stats.hops <= 4, "lookup took {} hops", stats.hops);
    }
}
