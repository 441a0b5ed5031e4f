//! Versioned records at one node, with exact outputs: older copies are refused and answered
//! with the newer one, newer ones and tombstones replace, forged or unsigned envelopes and
//! versions too far ahead are refused and counted, peers cannot fill the store against the
//! node's own writes, and puts and gets resolve the copies they meet.

use netabase_core::hlc::HlcConfig;
use netabase_core::identity::SignatureError;
use netabase_core::message::WireRecord;
use netabase_core::model::{Envelope, EnvelopeError, SealParts};
use netabase_core::store::RecordStore;
use netabase_core::{
    ApiError, Config, Event, InboundId, Instant, Keypair, MemoryStore, MemoryStoreConfig,
    MessageKind, Node, Output, PeerId, QueryError, QueryResult, Quorum, Record, RecordKey,
    Rejection, Request, RequestId, Response, StoreError,
};

use crate::harness::addr_of;

/// The node's clock (and wall clock): 1,000 s after the epoch.
const T0: Instant = Instant::from_millis(1_000_000);
const SEC: u64 = 1_000_000;

fn key() -> RecordKey {
    RecordKey::new(b"/nb/test/Item/1").unwrap()
}

fn sealed(writer: &Keypair, timestamp: u64, payload: &[u8], tombstone: bool) -> Vec<u8> {
    Envelope::seal_parts(
        &key(),
        SealParts {
            model: 0,
            schema_version: 1,
            timestamp,
            tombstone,
            payload,
        },
        writer,
    )
}

fn wire(value: &[u8], publisher: Option<PeerId>) -> WireRecord {
    WireRecord {
        key: key(),
        value: value.to_vec(),
        publisher,
        ttl_secs: Some(600),
    }
}

fn put(value: &[u8]) -> Request {
    Request::PutValue {
        record: Box::new(wire(value, None)),
    }
}

struct Setup {
    node: Node<MemoryStore>,
    me: Keypair,
    b: Keypair,
    c: Keypair,
}

fn setup_with(store: MemoryStoreConfig) -> Setup {
    let config = Config {
        k: 3,
        alpha: 2,
        bootstrap_interval: None,
        cache_peers: 0,
        lookup_patience: None,
        ..Config::default()
    };
    let me = Keypair::from_seed(100);
    let (b, c) = (Keypair::from_seed(101), Keypair::from_seed(102));
    let store = MemoryStore::with_config(me.peer_id(), store);
    let mut node = Node::with_identity(config, me.clone(), store, 1, T0).unwrap();
    for p in [&b, &c] {
        node.add_address(T0, p.peer_id(), addr_of(&p.peer_id()));
    }
    drain(&mut node);
    Setup { node, me, b, c }
}

fn setup() -> Setup {
    setup_with(MemoryStoreConfig::default())
}

fn drain(node: &mut Node<MemoryStore>) -> Vec<Output> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

fn stored(node: &Node<MemoryStore>) -> Option<Vec<u8>> {
    node.store().get(&key()).unwrap().map(|r| r.value)
}

/// The request id the node sent to `peer` among `out`.
fn request_to(out: &[Output], peer: PeerId) -> RequestId {
    out.iter()
        .find_map(|o| match o {
            Output::SendRequest { id, peer: p, .. } if *p == peer => Some(*id),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no request to {peer}: {out:?}"))
}

#[test]
fn an_older_put_is_refused_and_answered_with_the_newer() {
    let Setup { mut node, b, c, .. } = setup();
    let (older, newer) = (
        sealed(&c, T0.as_micros() - 2, b"old", false),
        sealed(&b, T0.as_micros() - 1, b"new", false),
    );
    node.handle_request(T0, b.peer_id(), InboundId(1), put(&newer));
    drain(&mut node);
    node.handle_request(T0, c.peer_id(), InboundId(2), put(&older));
    assert_eq!(
        drain(&mut node),
        vec![Output::SendResponse {
            id: InboundId(2),
            peer: c.peer_id(),
            response: Response::PutValue {
                key: key(),
                value: newer.clone(),
            },
        }]
    );
    assert_eq!(stored(&node), Some(newer));
    assert_eq!(node.stats().stale_records, 1);
    assert_eq!(node.stats().inbound_rejected, 0);
}

#[test]
fn a_newer_put_replaces_the_stored_copy() {
    let Setup { mut node, b, c, .. } = setup();
    let (older, newer) = (
        sealed(&b, T0.as_micros() - 2, b"old", false),
        sealed(&c, T0.as_micros() - 1, b"new", false),
    );
    node.handle_request(T0, b.peer_id(), InboundId(1), put(&older));
    drain(&mut node);
    node.handle_request(T0, c.peer_id(), InboundId(2), put(&newer));
    assert_eq!(
        drain(&mut node),
        vec![
            Output::Event(Event::RecordStored {
                key: key(),
                from: c.peer_id(),
            }),
            Output::SendResponse {
                id: InboundId(2),
                peer: c.peer_id(),
                response: Response::PutValue {
                    key: key(),
                    value: newer.clone(),
                },
            },
        ]
    );
    assert_eq!(stored(&node), Some(newer));
}

#[test]
fn a_tombstone_beats_older_puts_and_loses_to_newer_ones() {
    let Setup { mut node, b, c, .. } = setup();
    let t = T0.as_micros() - 10;
    let value = sealed(&b, t, b"v", false);
    let tombstone = sealed(&c, t + 1, b"", true);
    let later = sealed(&b, t + 2, b"again", false);
    node.handle_request(T0, b.peer_id(), InboundId(1), put(&value));
    node.handle_request(T0, c.peer_id(), InboundId(2), put(&tombstone));
    drain(&mut node);
    assert_eq!(stored(&node), Some(tombstone.clone()));
    // A tombstone lives until its own timestamp plus the horizon, not the inbound TTL.
    let horizon = Config::default().tombstone_horizon.as_micros() as u64;
    assert_eq!(
        node.store().get(&key()).unwrap().unwrap().expires,
        Some(Instant::from_micros(t + 1 + horizon))
    );
    // The older value comes back: refused, answered with the tombstone.
    node.handle_request(T0, b.peer_id(), InboundId(3), put(&value));
    assert_eq!(
        drain(&mut node),
        vec![Output::SendResponse {
            id: InboundId(3),
            peer: b.peer_id(),
            response: Response::PutValue {
                key: key(),
                value: tombstone.clone(),
            },
        }]
    );
    // A newer write wins over the removal.
    node.handle_request(T0, b.peer_id(), InboundId(4), put(&later));
    drain(&mut node);
    assert_eq!(stored(&node), Some(later));
}

#[test]
fn forged_origins_bad_signatures_and_unsigned_envelopes_are_refused() {
    let Setup { mut node, b, c, .. } = setup();
    let good = sealed(&c, T0.as_micros(), b"payload", false);
    // The payload changed after signing.
    let mut tampered = good.clone();
    let at = tampered.len() - 64 - 1;
    tampered[at] ^= 1;
    // Signed by C, but claiming B as its origin (the ids have the same length).
    let mut forged = good.clone();
    let (b_id, c_id) = (b.peer_id().to_bytes(), c.peer_id().to_bytes());
    let start = forged
        .windows(c_id.len())
        .position(|w| w == c_id.as_slice())
        .unwrap();
    forged[start..start + b_id.len()].copy_from_slice(&b_id);
    // The format of earlier releases: no signature at all.
    let mut legacy = Envelope::decode(&good).unwrap();
    legacy.format = 1;
    let legacy = legacy.encode();
    let expected = [
        EnvelopeError::Signature(SignatureError::Invalid),
        EnvelopeError::Signature(SignatureError::Invalid),
        EnvelopeError::Unsigned,
    ];
    for (i, (value, error)) in [tampered, forged, legacy].iter().zip(expected).enumerate() {
        let id = InboundId(i as u64);
        node.handle_request(T0, b.peer_id(), id, put(value));
        assert_eq!(
            drain(&mut node),
            vec![
                Output::RejectInbound {
                    id,
                    peer: b.peer_id()
                },
                Output::Event(Event::InboundRejected {
                    peer: b.peer_id(),
                    kind: MessageKind::PutValue,
                    reason: Rejection::Envelope(error),
                }),
            ]
        );
    }
    assert_eq!(stored(&node), None);
    assert_eq!(node.stats().forged_records, 3);
}

#[test]
fn nobody_else_can_name_this_node_as_publisher() {
    let Setup {
        mut node, me, b, ..
    } = setup();
    let value = sealed(&b, T0.as_micros(), b"v", false);
    let record = Request::PutValue {
        record: Box::new(wire(&value, Some(me.peer_id()))),
    };
    node.handle_request(T0, b.peer_id(), InboundId(1), record);
    drain(&mut node);
    let held = node.store().get(&key()).unwrap().unwrap();
    assert_eq!((held.value, held.publisher), (value, None));
}

#[test]
fn peers_cannot_fill_the_store_against_the_nodes_own_writes() {
    let Setup {
        mut node, me, b, ..
    } = setup_with(MemoryStoreConfig {
        max_records: 2,
        ..MemoryStoreConfig::default()
    });
    // The two keys nearest this node, then the farthest: the store is full of nearer
    // keys when the farthest comes.
    let local = netabase_core::Key::from_peer(&me.peer_id());
    let mut keys: Vec<RecordKey> = (0..10u8)
        .map(|i| RecordKey::new(&[b'k', i]).unwrap())
        .collect();
    keys.sort_by_key(|k| local.distance(&k.key()));
    let order = [keys[0].clone(), keys[1].clone(), keys[9].clone()];
    for (i, key) in order.into_iter().enumerate() {
        let i = i as u8;
        let record = Request::PutValue {
            record: Box::new(WireRecord {
                key,
                value: vec![i],
                publisher: None,
                ttl_secs: Some(60),
            }),
        };
        node.handle_request(T0, b.peer_id(), InboundId(u64::from(i)), record);
    }
    let out = drain(&mut node);
    assert!(
        out.contains(&Output::Event(Event::InboundRejected {
            peer: b.peer_id(),
            kind: MessageKind::PutValue,
            reason: Rejection::Store(StoreError::MaxRecords { max: 2 }),
        })),
        "{out:?}"
    );
    for i in 0..10u8 {
        let key = RecordKey::new(&[b'o', i]).unwrap();
        let record = node.seal_record(T0, key, 0, 1, false, &[i]).unwrap();
        node.put_record(T0, record, Quorum::One).unwrap();
    }
    assert_eq!(node.store().record_count(), 12);
    assert_eq!(node.store().held_count(), 2);
}

#[test]
fn received_versions_are_merged_accepted_or_refused_by_how_far_ahead_they_are() {
    let Setup { mut node, b, .. } = setup();
    let wall = T0.as_micros();
    assert_eq!(*node.clock().config(), HlcConfig::default());
    // Half a second ahead: merged, so the next local version follows it.
    let near = sealed(&b, wall + SEC / 2, b"near", false);
    node.handle_request(T0, b.peer_id(), InboundId(1), put(&near));
    drain(&mut node);
    assert_eq!(node.clock().last(), wall + SEC / 2);
    // Thirty seconds ahead: stored, but the clock does not follow.
    let far = sealed(&b, wall + 30 * SEC, b"far", false);
    node.handle_request(T0, b.peer_id(), InboundId(2), put(&far));
    drain(&mut node);
    assert_eq!(stored(&node), Some(far));
    assert_eq!(node.clock().last(), wall + SEC / 2);
    // A local write still supersedes the stored version: one above it.
    let own = node.seal_record(T0, key(), 0, 1, false, b"mine").unwrap();
    assert_eq!(
        Envelope::decode(&own.value).unwrap().timestamp,
        wall + 30 * SEC + 1
    );
    // Beyond max_offset + max_drift (61 s): refused and counted.
    let too_far = sealed(&b, wall + 62 * SEC, b"too far", false);
    node.handle_request(T0, b.peer_id(), InboundId(3), put(&too_far));
    let out = drain(&mut node);
    assert!(matches!(
        out.as_slice(),
        [
            Output::RejectInbound { .. },
            Output::Event(Event::InboundRejected {
                reason: Rejection::ClockAhead(e),
                ..
            }),
        ] if e.ahead_micros == 62 * SEC && e.limit_micros == 61 * SEC
    ));
    assert_eq!(node.stats().clock_refused, 1);
    // The wall clock the driver reports moves versions, not timers.
    node.set_wall_clock(T0, wall + 100 * SEC);
    let later = node
        .seal_record(T0, RecordKey::new(b"other").unwrap(), 0, 1, false, b"x")
        .unwrap();
    assert_eq!(
        Envelope::decode(&later.value).unwrap().timestamp,
        wall + 100 * SEC
    );
}

#[test]
fn a_local_put_older_than_the_stored_copy_is_refused() {
    let Setup {
        mut node, me, b, ..
    } = setup();
    let mine = sealed(&me, T0.as_micros() - 5, b"mine", false);
    let theirs = sealed(&b, T0.as_micros() - 1, b"theirs", false);
    node.handle_request(T0, b.peer_id(), InboundId(1), put(&theirs));
    drain(&mut node);
    let err = node
        .put_record(T0, Record::new(key(), mine), Quorum::One)
        .unwrap_err();
    assert!(matches!(err, ApiError::Superseded { current } if current.value == theirs));
}

#[test]
fn a_put_answered_with_a_newer_version_is_superseded() {
    let Setup { mut node, b, c, .. } = setup();
    let record = node.seal_record(T0, key(), 0, 1, false, b"mine").unwrap();
    let qid = node.put_record(T0, record.clone(), Quorum::One).unwrap();
    // The lookup asks both peers; neither knows closer ones.
    let out = drain(&mut node);
    for p in [&b, &c] {
        let id = request_to(&out, p.peer_id());
        node.handle_response(
            T0,
            id,
            Response::FindNode {
                closer_peers: vec![],
            },
        );
    }
    // The fan-out: B holds a newer version and answers with it.
    let fanout = drain(&mut node);
    let newer = sealed(&c, T0.as_micros() + 10, b"newer", false);
    node.handle_response(
        T0,
        request_to(&fanout, b.peer_id()),
        Response::PutValue {
            key: key(),
            value: newer.clone(),
        },
    );
    let out = drain(&mut node);
    assert!(
        out.iter().any(|o| matches!(o,
            Output::Event(Event::RecordSuperseded { id: Some(q), record: r, from, .. })
                if *q == qid && r.value == newer && *from == b.peer_id())),
        "{out:?}"
    );
    assert_eq!(stored(&node), Some(newer));
    // C echoes the put, which confirms it (a stock peer answers the same way); B's answer
    // did not count.
    node.handle_response(
        T0,
        request_to(&fanout, c.peer_id()),
        Response::PutValue {
            key: key(),
            value: record.value.clone(),
        },
    );
    let out = drain(&mut node);
    assert!(
        out.iter().any(|o| matches!(o,
            Output::Event(Event::QueryFinished { id, result: QueryResult::PutRecord(Ok(peers)), .. })
                if *id == qid && *peers == vec![c.peer_id()])),
        "{out:?}"
    );
}

#[test]
fn a_get_returns_the_newest_copy_first_and_repairs_the_older_one() {
    let Setup { mut node, b, c, .. } = setup();
    let older = sealed(&b, T0.as_micros() - 2, b"old", false);
    let newer = sealed(&c, T0.as_micros() - 1, b"new", false);
    let qid = node.get_record(T0, key(), Quorum::N(2)).unwrap();
    let out = drain(&mut node);
    let (to_b, to_c) = (request_to(&out, b.peer_id()), request_to(&out, c.peer_id()));
    let answer = |value: &[u8]| Response::GetValue {
        record: Some(Box::new(wire(value, None))),
        closer_peers: vec![],
    };
    node.handle_response(T0, to_b, answer(&older));
    node.handle_response(T0, to_c, answer(&newer));
    let out = drain(&mut node);
    let found = out
        .iter()
        .find_map(|o| match o {
            Output::Event(Event::QueryFinished {
                id,
                result: QueryResult::GetRecord(Ok(found)),
                ..
            }) if *id == qid => Some(found.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{out:?}"));
    let values: Vec<(Option<PeerId>, Vec<u8>)> = found
        .into_iter()
        .map(|r| (r.peer, r.record.value))
        .collect();
    assert_eq!(
        values,
        vec![
            (Some(c.peer_id()), newer.clone()),
            (Some(b.peer_id()), older)
        ]
    );
    // Read repair: B, which answered with the older copy, is sent the newer one.
    let repair: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::SendRequest {
                peer,
                request: Request::PutValue { record },
                ..
            } => Some((*peer, record.value.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(repair, vec![(b.peer_id(), newer)]);
}

/// Runs a get of `key()` at `now` answered by B with `older` and by C with `newer`, and
/// returns the peers the node wrote a record back to.
fn repaired_by_get(setup: &mut Setup, now: Instant, older: &[u8], newer: &[u8]) -> Vec<PeerId> {
    let Setup { node, b, c, .. } = setup;
    node.get_record(now, key(), Quorum::N(2)).unwrap();
    let out = drain(node);
    let (to_b, to_c) = (request_to(&out, b.peer_id()), request_to(&out, c.peer_id()));
    let answer = |value: &[u8]| Response::GetValue {
        record: Some(Box::new(wire(value, None))),
        closer_peers: vec![],
    };
    node.handle_response(now, to_b, answer(older));
    node.handle_response(now, to_c, answer(newer));
    drain(node)
        .iter()
        .filter_map(|o| match o {
            Output::SendRequest {
                peer,
                request: Request::PutValue { .. },
                ..
            } => Some(*peer),
            _ => None,
        })
        .collect()
}

#[test]
fn read_repair_of_a_key_happens_at_most_once_per_interval() {
    let mut setup = setup();
    let interval = Config::default().read_repair_interval;
    let older = sealed(&setup.b, T0.as_micros() - 2, b"old", false);
    let newer = sealed(&setup.c, T0.as_micros() - 1, b"new", false);
    let b = setup.b.peer_id();
    assert_eq!(repaired_by_get(&mut setup, T0, &older, &newer), vec![b]);
    // B keeps answering with its old copy (its write was lost, say): within the interval
    // the key is not repaired again, however often it is read.
    let soon = T0 + interval / 2;
    for _ in 0..3 {
        assert_eq!(repaired_by_get(&mut setup, soon, &older, &newer), vec![]);
    }
    assert_eq!(setup.node.stats().read_repairs, 1);
    assert_eq!(setup.node.stats().read_repairs_skipped, 3);
    // One interval after the repair, it may be repaired again.
    let later = T0 + interval;
    assert_eq!(repaired_by_get(&mut setup, later, &older, &newer), vec![b]);
    assert_eq!(setup.node.stats().read_repairs, 2);
    setup.node.check_invariants().unwrap();
}

#[test]
fn a_quorum_failure_reports_the_copies_it_saw_nowhere() {
    // A get of a key nobody holds ends NotFound, as before versions.
    let Setup { mut node, b, c, .. } = setup();
    let qid = node.get_record(T0, key(), Quorum::One).unwrap();
    let out = drain(&mut node);
    for p in [&b, &c] {
        node.handle_response(
            T0,
            request_to(&out, p.peer_id()),
            Response::GetValue {
                record: None,
                closer_peers: vec![],
            },
        );
    }
    let out = drain(&mut node);
    assert!(out.iter().any(|o| matches!(o,
        Output::Event(Event::QueryFinished { id, result: QueryResult::GetRecord(Err(QueryError::NotFound)), .. })
            if *id == qid)));
}

#[test]
fn a_put_that_missed_its_quorum_waits_in_the_outbox_and_is_published_again() {
    use netabase_core::RequestFailure;
    let Setup { mut node, b, c, .. } = setup();
    let record = node.seal_record(T0, key(), 0, 1, false, b"mine").unwrap();
    let qid = node.put_record(T0, record.clone(), Quorum::One).unwrap();
    let lookup = drain(&mut node);
    for p in [&b, &c] {
        let id = request_to(&lookup, p.peer_id());
        node.handle_response(
            T0,
            id,
            Response::FindNode {
                closer_peers: vec![],
            },
        );
    }
    let fanout = drain(&mut node);
    for p in [&b, &c] {
        node.handle_request_failed(T0, request_to(&fanout, p.peer_id()), RequestFailure::Io);
    }
    let out = drain(&mut node);
    assert!(out.iter().any(|o| matches!(o,
        Output::Event(Event::QueryFinished { id, result: QueryResult::PutRecord(Err(QueryError::QuorumFailed { .. })), .. })
            if *id == qid)), "{out:?}");
    assert_eq!(node.store().outbox(10), Ok(vec![key()]));
    // One outbox interval later the node publishes it again, and a confirmation empties
    // the outbox.
    let later = T0 + Config::default().outbox_interval.unwrap();
    node.handle_timeout(later);
    let lookup = drain(&mut node);
    for p in [&b, &c] {
        let id = request_to(&lookup, p.peer_id());
        node.handle_response(
            later,
            id,
            Response::FindNode {
                closer_peers: vec![],
            },
        );
    }
    let fanout = drain(&mut node);
    for p in [&b, &c] {
        node.handle_response(
            later,
            request_to(&fanout, p.peer_id()),
            Response::PutValue {
                key: key(),
                value: record.value.clone(),
            },
        );
    }
    drain(&mut node);
    assert_eq!(node.store().outbox(10), Ok(vec![]));
}

#[test]
fn replication_walks_the_store_in_bounded_batches_and_reaches_every_record() {
    use netabase_core::RequestFailure;
    use std::collections::BTreeSet;
    let config = Config {
        k: 3,
        alpha: 2,
        bootstrap_interval: None,
        outbox_interval: None,
        publication_interval: None,
        max_queued_jobs: 100,
        max_job_queries: 2,
        ..Config::default()
    };
    let me = Keypair::from_seed(100);
    let b = Keypair::from_seed(101);
    let store = MemoryStore::with_config(
        me.peer_id(),
        MemoryStoreConfig {
            max_records: 10_000,
            ..MemoryStoreConfig::default()
        },
    );
    let mut node = Node::with_identity(config.clone(), me, store, 1, T0).unwrap();
    node.add_address(T0, b.peer_id(), addr_of(&b.peer_id()));
    let held: BTreeSet<RecordKey> = (0..500u32)
        .map(|i| RecordKey::new(format!("held/{i:04}").as_bytes()).unwrap())
        .collect();
    for (i, key) in held.iter().enumerate() {
        let record = Request::PutValue {
            record: Box::new(WireRecord {
                key: key.clone(),
                value: vec![1],
                publisher: None,
                ttl_secs: None,
            }),
        };
        node.handle_request(T0, b.peer_id(), InboundId(i as u64), record);
    }
    drain(&mut node);
    let at = T0 + config.replication_interval.unwrap();
    node.handle_timeout(at);
    assert!(
        node.queued_job_count() <= 100,
        "{}",
        node.queued_job_count()
    );
    assert_eq!(node.background_lag(at), Some(std::time::Duration::ZERO));
    node.check_invariants().unwrap();
    // Every request fails at once, so each publication ends after its lookup; the walk
    // goes on as jobs finish, until it has published every held record once.
    let mut published = Vec::new();
    for _ in 0..10_000 {
        let out = drain(&mut node);
        if out.is_empty() {
            break;
        }
        for o in out {
            if let Output::SendRequest {
                id,
                request: Request::FindNode { key },
                ..
            } = o
            {
                published.push(key);
                node.handle_request_failed(at, id, RequestFailure::Dial);
            }
        }
        assert!(node.queued_job_count() <= 100);
        node.check_invariants().unwrap();
    }
    let distinct: BTreeSet<RecordKey> = published.iter().cloned().collect();
    assert_eq!(distinct, held);
    assert_eq!(published.len(), held.len(), "each record once");
    assert_eq!(node.background_lag(at), None);
    assert_eq!(node.stats().walks_overrun, 0);
}

#[test]
fn a_node_without_peers_republishes_a_large_store_in_bounded_steps() {
    let config = Config {
        bootstrap_interval: None,
        outbox_interval: None,
        replication_interval: None,
        ..Config::default()
    };
    let me = Keypair::from_seed(100);
    let local = me.peer_id();
    let mut store = MemoryStore::new(local);
    for i in 0..5_000u32 {
        let record = Record {
            publisher: Some(local),
            expires: Some(T0 + std::time::Duration::from_secs(48 * 3600)),
            ..Record::new(RecordKey::new(&i.to_be_bytes()).unwrap(), vec![1])
        };
        store.put(record).unwrap();
    }
    let mut node = Node::with_identity(config.clone(), me, store, 1, T0).unwrap();
    let at = T0 + config.publication_interval.unwrap();
    node.handle_timeout(at);
    drain(&mut node);
    let mut inputs = 1;
    let mut now = at;
    // Until the walk is over, the node asks to go on within 10 ms each time.
    while node.background_lag(now).is_some() {
        node.handle_timeout(now);
        drain(&mut node);
        node.check_invariants().unwrap();
        inputs += 1;
        assert!(inputs < 10_000, "no progress");
        let next = node.poll_timeout().unwrap();
        assert!(next <= now + std::time::Duration::from_millis(10));
        now = next.max(now);
    }
    // Each input started a bounded share of the jobs, and together they reached every
    // record: each has the fresh expiry of its republication.
    assert!(inputs >= 5_000 / 64, "{inputs} inputs");
    let fresh = at + config.record_ttl.unwrap();
    let records = node.store().records().unwrap();
    assert_eq!(records.len(), 5_000);
    assert!(records.iter().all(|r| r.expires >= Some(fresh)));
    assert_eq!(node.background_lag(now), None);
}
