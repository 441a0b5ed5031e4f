//! Records the store refuses are never stored, returned or cached, and are counted.

use netabase_core::message::WireRecord;
use netabase_core::store::RecordStore;
use netabase_core::{
    Config, Event, InboundId, Instant, MemoryStore, MessageKind, Node, Output, PeerId,
    ProviderRecord, QueryResult, Quorum, Record, RecordKey, Rejection, Request, RequestId,
    Response, StoreError,
};

use crate::harness::addr_of;

/// A memory store that accepts only values starting with `ok`.
struct Picky(MemoryStore);

impl RecordStore for Picky {
    fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        self.0.get(key)
    }
    fn put(&mut self, record: Record) -> Result<(), StoreError> {
        self.0.put(record)
    }
    fn remove(&mut self, key: &RecordKey) -> Result<(), StoreError> {
        self.0.remove(key)
    }
    fn records(&self) -> Result<Vec<Record>, StoreError> {
        self.0.records()
    }
    fn add_provider(&mut self, record: ProviderRecord) -> Result<(), StoreError> {
        self.0.add_provider(record)
    }
    fn providers(&self, key: &RecordKey) -> Result<Vec<ProviderRecord>, StoreError> {
        self.0.providers(key)
    }
    fn provided(&self) -> Result<Vec<ProviderRecord>, StoreError> {
        self.0.provided()
    }
    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) -> Result<(), StoreError> {
        self.0.remove_provider(key, provider)
    }
    fn remove_expired(&mut self, now: Instant) -> Result<usize, StoreError> {
        self.0.remove_expired(now)
    }
    fn clock_ceiling(&self) -> Result<Option<u64>, StoreError> {
        self.0.clock_ceiling()
    }
    fn set_clock_ceiling(&mut self, ceiling: u64) -> Result<(), StoreError> {
        self.0.set_clock_ceiling(ceiling)
    }
    fn validate(&self, _key: &RecordKey, value: &[u8]) -> Result<(), StoreError> {
        if value.starts_with(b"ok") {
            Ok(())
        } else {
            Err(StoreError::Rejected("not ok".into()))
        }
    }
}

const T0: Instant = Instant::from_millis(1_000);

fn node_with_peer() -> (Node<Picky>, PeerId) {
    let config = Config {
        k: 3,
        alpha: 1,
        bootstrap_interval: None,
        ..Config::default()
    };
    let local = PeerId::from_seed(0);
    let mut node = Node::new(config, local, Picky(MemoryStore::new(local)), 1, T0).unwrap();
    let peer = PeerId::from_seed(1);
    node.add_address(T0, peer, addr_of(&peer));
    while node.poll_output().is_some() {}
    (node, peer)
}

fn wire(key: &RecordKey, value: &[u8], publisher: PeerId) -> WireRecord {
    WireRecord {
        key: key.clone(),
        value: value.to_vec(),
        publisher: Some(publisher),
        ttl_secs: Some(60),
    }
}

#[test]
fn an_invalid_put_is_rejected_counted_and_not_stored() {
    let (mut node, peer) = node_with_peer();
    let key = RecordKey::new(b"k").unwrap();
    let record = wire(&key, b"garbage", peer);
    node.handle_request(
        T0,
        peer,
        InboundId(1),
        Request::PutValue {
            record: Box::new(record),
        },
    );
    let out: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
    assert_eq!(
        out,
        vec![
            Output::RejectInbound {
                id: InboundId(1),
                peer
            },
            Output::Event(Event::InboundRejected {
                peer,
                kind: MessageKind::PutValue,
                reason: Rejection::Store(StoreError::Rejected("not ok".into())),
            }),
        ]
    );
    assert_eq!(node.store_mut().get(&key), Ok(None));
    assert_eq!(node.stats().invalid_records, 1);
    assert_eq!(node.stats().inbound_rejected, 1);

    let record = wire(&key, b"ok then", peer);
    node.handle_request(
        T0,
        peer,
        InboundId(2),
        Request::PutValue {
            record: Box::new(record),
        },
    );
    assert!(node.store_mut().get(&key).unwrap().is_some());
    assert_eq!(node.stats().invalid_records, 1);
}

#[test]
fn an_invalid_record_in_a_get_answer_is_dropped_and_reported() {
    let (mut node, peer) = node_with_peer();
    let key = RecordKey::new(b"k").unwrap();
    let id = node.get_record(T0, key.clone(), Quorum::One).unwrap();
    let out: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
    assert!(matches!(
        out.as_slice(),
        [Output::SendRequest {
            id: RequestId(0),
            ..
        }]
    ));
    node.handle_response(
        T0,
        RequestId(0),
        Response::GetValue {
            record: Some(Box::new(wire(&key, b"forged", peer))),
            closer_peers: vec![],
        },
    );
    let out: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
    assert_eq!(
        out[0],
        Output::Event(Event::InvalidRecord {
            peer,
            key: key.clone(),
            error: StoreError::Rejected("not ok".into()),
        })
    );
    // Nothing else answered: the get fails rather than returning the forged record, and
    // nothing is cached anywhere.
    assert!(
        out.iter().any(|o| matches!(o,
            Output::Event(Event::QueryFinished { id: done, result: QueryResult::GetRecord(Err(_)), .. })
                if *done == id)),
        "{out:?}"
    );
    assert!(!out.iter().any(|o| matches!(o, Output::SendRequest { .. })));
    assert_eq!(node.stats().invalid_records, 1);
}
