//! Exact command sequences for the tricky paths of one node.

use std::time::Duration;

use netabase_core::message::WireRecord;
use netabase_core::{
    Config, ConnectionType, Event, InboundId, Instant, Key, MemoryStore, MessageKind, Mode, Node,
    Output, PeerId, PeerInfo, QueryId, QueryResult, QueryStats, RecordKey, Rejection, Request,
    RequestFailure, RequestId, Response,
};

use crate::harness::addr_of;

const T0: Instant = Instant::from_millis(1_000);

fn secs(s: f64) -> Instant {
    T0 + Duration::from_secs_f64(s)
}

fn drain(node: &mut Node<MemoryStore>) -> Vec<Output> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

fn find_node(id: u64, peer: PeerId, key: &RecordKey) -> Output {
    Output::SendRequest {
        id: RequestId(id),
        peer,
        addrs: vec![addr_of(&peer)].into(),
        request: Request::FindNode { key: key.clone() },
    }
}

fn info(peer: PeerId) -> PeerInfo {
    PeerInfo {
        id: peer,
        addrs: vec![addr_of(&peer)].into(),
        connection: ConnectionType::NotConnected,
    }
}

/// A node with K=3, alpha=2 that knows three peers, returned closest to `key` first.
/// Lookups wait for each answer until the request timeout.
fn setup(key: &RecordKey) -> (Node<MemoryStore>, Vec<PeerId>) {
    setup_with(key, None)
}

fn setup_with(
    key: &RecordKey,
    lookup_patience: Option<Duration>,
) -> (Node<MemoryStore>, Vec<PeerId>) {
    let config = Config {
        k: 3,
        alpha: 2,
        bootstrap_interval: None,
        lookup_patience,
        ..Config::default()
    };
    let local = PeerId::from_seed(0);
    let mut node = Node::new(config, local, MemoryStore::new(local), 1, T0).unwrap();
    let mut peers: Vec<PeerId> = (1..=3).map(PeerId::from_seed).collect();
    for p in &peers {
        node.add_address(T0, *p, addr_of(p));
    }
    let events = drain(&mut node);
    assert_eq!(events.len(), 3);
    assert!(
        events
            .iter()
            .all(|e| matches!(e, Output::Event(Event::PeerAdded { .. })))
    );
    let target = key.key();
    peers.sort_by_key(|p| Key::from_peer(p).distance(&target));
    (node, peers)
}

#[test]
fn timeouts_late_answers_and_duplicates() {
    let key = RecordKey::new(b"target").unwrap();
    let (mut node, p) = setup(&key);
    let local = *node.local_peer_id();

    // alpha = 2: the two closest peers are asked at once.
    let id = node.get_closest_peers(T0, key.clone()).unwrap();
    assert_eq!(id, QueryId(0));
    assert_eq!(
        drain(&mut node),
        vec![find_node(0, p[0], &key), find_node(1, p[1], &key)]
    );
    assert_eq!(node.poll_timeout(), Some(secs(10.0)));

    // p0 answers, naming itself and us: neither becomes a candidate. The free slot goes to p2.
    node.handle_response(
        secs(1.0),
        RequestId(0),
        Response::FindNode {
            closer_peers: vec![info(p[0]), info(local)],
        },
    );
    assert_eq!(drain(&mut node), vec![find_node(2, p[2], &key)]);

    // The same answer again changes nothing.
    node.handle_response(
        secs(1.5),
        RequestId(0),
        Response::FindNode {
            closer_peers: vec![],
        },
    );
    assert_eq!(drain(&mut node), vec![]);
    assert_eq!(node.stats().unexpected_responses, 1);

    // p1's request times out at 10 s; an extra timeout call before that does nothing.
    node.handle_timeout(secs(9.9));
    assert_eq!(drain(&mut node), vec![]);
    node.handle_timeout(secs(10.0));
    assert_eq!(drain(&mut node), vec![]);
    assert_eq!(node.stats().requests_timed_out, 1);
    assert_eq!(node.poll_timeout(), Some(secs(11.0)));

    // p1 answers after its timeout: ignored.
    node.handle_response(
        secs(10.5),
        RequestId(1),
        Response::FindNode {
            closer_peers: vec![info(PeerId::from_seed(99))],
        },
    );
    assert_eq!(drain(&mut node), vec![]);
    assert_eq!(node.stats().unexpected_responses, 2);

    // p2 answers: the lookup ends with the two peers that answered, closest first.
    node.handle_response(
        secs(10.6),
        RequestId(2),
        Response::FindNode {
            closer_peers: vec![],
        },
    );
    let expected_stats = QueryStats {
        requests: 3,
        successes: 2,
        failures: 1,
        hops: 1,
        started: T0,
        finished: secs(10.6),
    };
    assert_eq!(
        drain(&mut node),
        vec![Output::Event(Event::QueryFinished {
            id,
            result: QueryResult::GetClosestPeers(Ok(vec![p[0], p[2]])),
            stats: expected_stats,
        })]
    );
    // The timed-out peer is marked disconnected in the table; the others are connected.
    let status = |peer: &PeerId| node.routing_table().entry(peer).unwrap().status;
    assert_eq!(status(&p[1]), netabase_core::kbucket::Status::Disconnected);
    assert_eq!(status(&p[0]), netabase_core::kbucket::Status::Connected);
    node.check_invariants().unwrap();
}

#[test]
fn a_slow_peer_stops_holding_the_lookup_back_but_its_late_answer_counts() {
    let key = RecordKey::new(b"target").unwrap();
    let (mut node, p) = setup_with(&key, Some(Duration::from_secs(2)));
    let id = node.get_closest_peers(T0, key.clone()).unwrap();
    assert_eq!(
        drain(&mut node),
        vec![find_node(0, p[0], &key), find_node(1, p[1], &key)]
    );
    // No round trip measured yet: the patience is its cap, 2 s (the timeout is 10 s).
    assert_eq!(node.poll_timeout(), Some(secs(2.0)));
    node.handle_response(
        secs(0.1),
        RequestId(0),
        Response::FindNode {
            closer_peers: vec![],
        },
    );
    assert_eq!(drain(&mut node), vec![find_node(2, p[2], &key)]);
    // One 100 ms sample: srtt 100 ms, rttvar 50 ms, so p2 gets 400 ms of patience.
    assert_eq!(
        node.round_trip_estimate(),
        Some((Duration::from_millis(100), Duration::from_millis(50)))
    );
    assert_eq!(node.poll_timeout(), Some(secs(0.5)));
    node.handle_timeout(secs(0.5));
    assert_eq!(drain(&mut node), vec![]);
    // p2's late answer still counts; p1, closer and still within its patience, holds the
    // lookup back until its own patience runs out.
    node.handle_response(
        secs(0.6),
        RequestId(2),
        Response::FindNode {
            closer_peers: vec![],
        },
    );
    assert_eq!(drain(&mut node), vec![]);
    node.handle_timeout(secs(2.0));
    let out = drain(&mut node);
    let [
        Output::Event(Event::QueryFinished {
            id: done,
            result,
            stats,
        }),
    ] = &out[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(*done, id);
    assert_eq!(result, &QueryResult::GetClosestPeers(Ok(vec![p[0], p[2]])));
    assert_eq!((stats.requests, stats.successes, stats.failures), (3, 2, 0));
    assert_eq!(stats.finished, secs(2.0));
    node.check_invariants().unwrap();
}

#[test]
fn a_lookup_with_only_slow_peers_waits_for_a_late_answer_instead_of_ending_empty() {
    let key = RecordKey::new(b"target").unwrap();
    let (mut node, p) = setup_with(&key, Some(Duration::from_secs(2)));
    let id = node.get_closest_peers(T0, key.clone()).unwrap();
    assert_eq!(
        drain(&mut node),
        vec![find_node(0, p[0], &key), find_node(1, p[1], &key)]
    );
    // p0 and p1 run out of patience: p2 is asked in their place.
    node.handle_timeout(secs(2.0));
    assert_eq!(drain(&mut node), vec![find_node(2, p[2], &key)]);
    // p2 too: nobody is left to ask and nobody has answered, so the lookup waits.
    node.handle_timeout(secs(4.0));
    assert_eq!(drain(&mut node), vec![]);
    assert_eq!(node.poll_timeout(), Some(secs(10.0)));
    // p1's late answer ends it: with an answer in hand, the other slow peers are not
    // waited for.
    node.handle_response(
        secs(4.5),
        RequestId(1),
        Response::FindNode {
            closer_peers: vec![],
        },
    );
    let out = drain(&mut node);
    let [
        Output::Event(Event::QueryFinished {
            id: done,
            result,
            stats,
        }),
    ] = &out[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(*done, id);
    assert_eq!(result, &QueryResult::GetClosestPeers(Ok(vec![p[1]])));
    assert_eq!((stats.requests, stats.successes, stats.failures), (3, 1, 0));
    assert_eq!(stats.finished, secs(4.5));
    node.check_invariants().unwrap();
}

#[test]
fn a_found_record_is_cached_at_the_closest_peer_that_lacked_it() {
    let key = RecordKey::new(b"cached").unwrap();
    let (mut node, p) = setup(&key);
    let get = |id: u64, peer: PeerId| Output::SendRequest {
        id: RequestId(id),
        peer,
        addrs: vec![addr_of(&peer)].into(),
        request: Request::GetValue { key: key.clone() },
    };
    let id = node
        .get_record(T0, key.clone(), netabase_core::Quorum::One)
        .unwrap();
    assert_eq!(drain(&mut node), vec![get(0, p[0]), get(1, p[1])]);
    // p1 has nothing; p2 is asked next.
    node.handle_response(
        secs(0.1),
        RequestId(1),
        Response::GetValue {
            record: None,
            closer_peers: vec![],
        },
    );
    assert_eq!(drain(&mut node), vec![get(2, p[2])]);
    // p0 has it: the quorum of one is met, and p1 gets a copy.
    let found = WireRecord {
        key: key.clone(),
        value: b"v".to_vec(),
        publisher: Some(p[2]),
        ttl_secs: Some(100),
    };
    node.handle_response(
        secs(0.2),
        RequestId(0),
        Response::GetValue {
            record: Some(Box::new(found.clone())),
            closer_peers: vec![],
        },
    );
    let out = drain(&mut node);
    let cached = WireRecord {
        ttl_secs: Some(100),
        ..found
    };
    assert_eq!(
        out[0],
        Output::SendRequest {
            id: RequestId(3),
            peer: p[1],
            addrs: vec![addr_of(&p[1])].into(),
            request: Request::PutValue {
                record: Box::new(cached),
            },
        }
    );
    let Output::Event(Event::QueryFinished {
        id: done,
        result: QueryResult::GetRecord(Ok(records)),
        ..
    }) = &out[1]
    else {
        panic!("{out:?}")
    };
    assert_eq!(*done, id);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].peer, Some(p[0]));
    assert_eq!(records[0].record.value, b"v");
    assert_eq!(records[0].record.expires, Some(secs(100.2)));
    assert_eq!(out.len(), 2);
}

#[test]
fn an_answer_of_the_wrong_kind_counts_as_a_failure() {
    let key = RecordKey::new(b"target").unwrap();
    let (mut node, p) = setup(&key);
    node.get_closest_peers(T0, key.clone()).unwrap();
    assert_eq!(
        drain(&mut node),
        vec![find_node(0, p[0], &key), find_node(1, p[1], &key)]
    );
    node.handle_response(secs(0.1), RequestId(0), Response::Pong);
    assert_eq!(drain(&mut node), vec![find_node(2, p[2], &key)]);
    assert_eq!(node.stats().mismatched_responses, 1);
    assert_eq!(node.stats().requests_failed, 1);
    // The peer that answered nonsense is not confirmed as a live server.
    assert_eq!(
        node.routing_table().entry(&p[0]).unwrap().status,
        netabase_core::kbucket::Status::Disconnected
    );
    node.check_invariants().unwrap();
}

#[test]
fn garbage_closer_peers_are_tried_then_dropped() {
    let key = RecordKey::new(b"target").unwrap();
    let (mut node, p) = setup(&key);
    let target = key.key();
    let d0 = Key::from_peer(&p[0]).distance(&target);
    // Two peers that do not exist, both closer to the target than anything known.
    let mut fakes: Vec<PeerId> = (1000..)
        .map(PeerId::from_seed)
        .filter(|f| Key::from_peer(f).distance(&target) < d0)
        .take(2)
        .collect();
    fakes.sort_by_key(|f| Key::from_peer(f).distance(&target));

    node.get_closest_peers(T0, key.clone()).unwrap();
    assert_eq!(
        drain(&mut node),
        vec![find_node(0, p[0], &key), find_node(1, p[1], &key)]
    );
    node.handle_response(
        secs(0.1),
        RequestId(0),
        Response::FindNode {
            closer_peers: fakes.iter().map(|f| info(*f)).collect(),
        },
    );
    // One slot is free (p1 is in flight): the closest fake is asked.
    assert_eq!(drain(&mut node), vec![find_node(2, fakes[0], &key)]);
    node.handle_request_failed(secs(0.2), RequestId(2), RequestFailure::Dial);
    assert_eq!(drain(&mut node), vec![find_node(3, fakes[1], &key)]);
    node.handle_request_failed(secs(0.3), RequestId(3), RequestFailure::Dial);
    assert_eq!(drain(&mut node), vec![find_node(4, p[2], &key)]);
    node.handle_response(
        secs(0.4),
        RequestId(1),
        Response::FindNode {
            closer_peers: vec![],
        },
    );
    assert_eq!(drain(&mut node), vec![]);
    node.handle_response(
        secs(0.5),
        RequestId(4),
        Response::FindNode {
            closer_peers: vec![],
        },
    );
    let out = drain(&mut node);
    assert_eq!(out.len(), 1);
    let Output::Event(Event::QueryFinished { result, stats, .. }) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(result, &QueryResult::GetClosestPeers(Ok(p.clone())));
    assert_eq!((stats.requests, stats.successes, stats.failures), (5, 3, 2));
    // Failed fakes never enter the routing table.
    assert!(fakes.iter().all(|f| !node.routing_table().contains(f)));
}

#[test]
fn inbound_requests_are_answered_or_rejected_exactly_once() {
    let key = RecordKey::new(b"k").unwrap();
    let (mut node, p) = setup(&key);
    let sender = p[0];

    let record = WireRecord {
        key: key.clone(),
        value: b"v".to_vec(),
        publisher: Some(sender),
        ttl_secs: Some(30),
    };
    node.handle_request(
        T0,
        sender,
        InboundId(7),
        Request::PutValue {
            record: Box::new(record),
        },
    );
    assert_eq!(
        drain(&mut node),
        vec![
            Output::Event(Event::RecordStored {
                key: key.clone(),
                from: sender
            }),
            Output::SendResponse {
                id: InboundId(7),
                peer: sender,
                response: Response::PutValue {
                    key: key.clone(),
                    value: b"v".to_vec()
                }
            },
        ]
    );

    // The record is served with its remaining lifetime, closer peers exclude the requester.
    node.handle_request(
        secs(10.0),
        p[1],
        InboundId(8),
        Request::GetValue { key: key.clone() },
    );
    let out = drain(&mut node);
    let [
        Output::SendResponse {
            id: InboundId(8),
            response:
                Response::GetValue {
                    record: Some(r),
                    closer_peers,
                },
            ..
        },
    ] = &out[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(r.ttl_secs, Some(20));
    assert_eq!(r.publisher, Some(sender));
    assert!(closer_peers.iter().all(|c| c.id != p[1]));
    assert_eq!(closer_peers.len(), 2);

    // Expired: gone.
    node.handle_request(
        secs(31.0),
        p[1],
        InboundId(9),
        Request::GetValue { key: key.clone() },
    );
    let out = drain(&mut node);
    assert!(
        matches!(
            &out[..],
            [Output::SendResponse {
                response: Response::GetValue { record: None, .. },
                ..
            }]
        ),
        "{out:?}"
    );

    // Oversized values are refused without touching the store.
    let big = WireRecord {
        key: key.clone(),
        value: vec![0; 65 * 1024 + 1],
        publisher: None,
        ttl_secs: None,
    };
    node.handle_request(
        secs(32.0),
        sender,
        InboundId(10),
        Request::PutValue {
            record: Box::new(big),
        },
    );
    assert_eq!(
        drain(&mut node),
        vec![
            Output::RejectInbound {
                id: InboundId(10),
                peer: sender
            },
            Output::Event(Event::InboundRejected {
                peer: sender,
                kind: MessageKind::PutValue,
                reason: Rejection::RecordTooLarge {
                    size: 65 * 1024 + 1
                }
            }),
        ]
    );

    // A provider announcement naming somebody else is refused (it has no answer).
    node.handle_request(
        secs(33.0),
        sender,
        InboundId(11),
        Request::AddProvider {
            key: key.clone(),
            provider: Box::new(info(p[2])),
        },
    );
    assert_eq!(
        drain(&mut node),
        vec![Output::Event(Event::InboundRejected {
            peer: sender,
            kind: MessageKind::AddProvider,
            reason: Rejection::ForeignProvider
        })]
    );
    node.handle_request(
        secs(34.0),
        sender,
        InboundId(12),
        Request::AddProvider {
            key: key.clone(),
            provider: Box::new(info(sender)),
        },
    );
    assert_eq!(
        drain(&mut node),
        vec![Output::Event(Event::ProviderAdded {
            key: key.clone(),
            provider: sender
        })]
    );

    // In client mode nothing is answered.
    node.set_mode(Mode::Client);
    assert_eq!(
        drain(&mut node),
        vec![Output::Event(Event::ModeChanged { mode: Mode::Client })]
    );
    node.handle_request(
        secs(35.0),
        sender,
        InboundId(13),
        Request::FindNode { key: key.clone() },
    );
    assert_eq!(
        drain(&mut node),
        vec![
            Output::RejectInbound {
                id: InboundId(13),
                peer: sender
            },
            Output::Event(Event::InboundRejected {
                peer: sender,
                kind: MessageKind::FindNode,
                reason: Rejection::ClientMode
            }),
        ]
    );
    node.check_invariants().unwrap();
}

#[test]
fn full_bucket_probes_the_oldest_entry_and_replaces_it_when_dead() {
    let config = Config {
        k: 2,
        bootstrap_interval: None,
        outbox_interval: None,
        ..Config::default()
    };
    let local = PeerId::from_seed(0);
    let mut node = Node::new(config, local, MemoryStore::new(local), 1, T0).unwrap();
    let local_key = Key::from_peer(&local);
    // Three peers in bucket 255 (the far half of the key space).
    let far: Vec<PeerId> = (1..)
        .map(PeerId::from_seed)
        .filter(|p| local_key.distance(&Key::from_peer(p)).bucket_index() == Some(255))
        .take(3)
        .collect();
    node.add_address(T0, far[0], addr_of(&far[0]));
    node.add_address(secs(1.0), far[1], addr_of(&far[1]));
    drain(&mut node);
    node.add_address(secs(2.0), far[2], addr_of(&far[2]));
    // The bucket is full: the least recently seen entry is probed.
    let probe_key = RecordKey::new(local.as_bytes()).unwrap();
    assert_eq!(drain(&mut node), vec![find_node(0, far[0], &probe_key)]);
    assert_eq!(node.poll_timeout(), Some(secs(12.0)));
    // No answer: marked disconnected at its timeout, replaced at the pending deadline (60 s).
    node.handle_timeout(secs(12.0));
    assert_eq!(drain(&mut node), vec![]);
    node.handle_timeout(secs(62.0));
    assert_eq!(
        drain(&mut node),
        vec![
            Output::Event(Event::PeerRemoved { peer: far[0] }),
            Output::Event(Event::PeerAdded {
                peer: far[2],
                bucket: 255
            }),
        ]
    );
    assert!(!node.routing_table().contains(&far[0]));
    node.check_invariants().unwrap();
}

#[test]
fn an_entry_that_answers_its_probe_keeps_its_place() {
    let config = Config {
        k: 2,
        bootstrap_interval: None,
        ..Config::default()
    };
    let local = PeerId::from_seed(0);
    let mut node = Node::new(config, local, MemoryStore::new(local), 1, T0).unwrap();
    let local_key = Key::from_peer(&local);
    let far: Vec<PeerId> = (1..)
        .map(PeerId::from_seed)
        .filter(|p| local_key.distance(&Key::from_peer(p)).bucket_index() == Some(255))
        .take(3)
        .collect();
    for (i, p) in far.iter().enumerate() {
        node.add_address(secs(i as f64), *p, addr_of(p));
    }
    drain(&mut node);
    // The probed entry answers and becomes the most recently seen. At the pending deadline
    // the least recently seen entry that never proved alive (far[1], known only by address)
    // gives way; the one that answered stays.
    node.handle_response(
        secs(2.5),
        RequestId(0),
        Response::FindNode {
            closer_peers: vec![],
        },
    );
    node.handle_timeout(secs(62.0));
    assert_eq!(
        drain(&mut node),
        vec![
            Output::Event(Event::PeerRemoved { peer: far[1] }),
            Output::Event(Event::PeerAdded {
                peer: far[2],
                bucket: 255
            }),
        ]
    );
    assert!(node.routing_table().contains(&far[0]));
    node.check_invariants().unwrap();
}

#[test]
fn query_progress_is_reported_per_answer_when_asked_for() {
    let key = RecordKey::new(b"target").unwrap();
    let config = Config {
        k: 3,
        alpha: 2,
        bootstrap_interval: None,
        lookup_patience: None,
        query_progress: true,
        ..Config::default()
    };
    let local = PeerId::from_seed(0);
    let mut node = Node::new(config, local, MemoryStore::new(local), 1, T0).unwrap();
    let mut p: Vec<PeerId> = (1..=3).map(PeerId::from_seed).collect();
    for peer in &p {
        node.add_address(T0, *peer, addr_of(peer));
    }
    drain(&mut node);
    p.sort_by_key(|peer| Key::from_peer(peer).distance(&key.key()));
    let id = node.get_closest_peers(T0, key.clone()).unwrap();
    assert_eq!(
        drain(&mut node),
        vec![find_node(0, p[0], &key), find_node(1, p[1], &key)]
    );
    node.handle_response(
        secs(0.1),
        RequestId(0),
        Response::FindNode {
            closer_peers: vec![],
        },
    );
    let out = drain(&mut node);
    assert_eq!(
        out[0],
        Output::Event(Event::QueryProgress {
            id,
            stats: QueryStats {
                requests: 2,
                successes: 1,
                failures: 0,
                hops: 0,
                started: T0,
                finished: secs(0.1),
            }
        })
    );
    assert_eq!(out[1], find_node(2, p[2], &key));
    node.handle_request_failed(secs(0.2), RequestId(1), RequestFailure::Io);
    let out = drain(&mut node);
    assert!(matches!(
        out[0],
        Output::Event(Event::QueryProgress { id: done, stats: QueryStats { successes: 1, failures: 1, .. } }) if done == id
    ));
}
