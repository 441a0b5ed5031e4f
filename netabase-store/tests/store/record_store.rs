//! The DHT record store on every backend: the same answers as the core's memory store, and
//! records and provider records that survive a restart.

use netabase_store::core::model::Envelope;
use netabase_store::core::store::PutOutcome;
use netabase_store::core::{
    Address, Instant, Keypair, MemoryStore, PeerId, ProviderRecord, Record, RecordKey, RecordStore,
    StoreError as CoreError, Version,
};
use netabase_store::{BackendKind, PersistentRecordStore, RecordStoreConfig, Store};
use proptest::prelude::*;

use crate::support::*;
use crate::{BACKENDS, config, store_path};

fn key(n: u8) -> RecordKey {
    // Keys with a zero byte and prefixes of each other, to exercise the key encoding.
    let bytes: &[u8] = match n % 4 {
        0 => b"a",
        1 => b"a\0",
        2 => b"ab",
        _ => b"\0",
    };
    let mut v = bytes.to_vec();
    v.push(n / 4);
    RecordKey::new(&v).unwrap()
}

fn limits() -> RecordStoreConfig {
    RecordStoreConfig {
        max_records: 3,
        max_value_bytes: 8,
        max_providers_per_key: 2,
        max_provided_keys: 2,
        max_held_bytes: 20,
    }
}

fn local() -> PeerId {
    PeerId::from_seed(0)
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, Vec<u8>, Option<u64>, Option<u64>),
    PutResolved(u8, Vec<u8>, Option<u64>, Option<u64>),
    SetCeiling(u64),
    Outbox(u8, bool),
    Remove(u8),
    AddProvider(u8, u64, Option<u64>),
    RemoveProvider(u8, u64),
    RemoveExpired(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let expiry = prop::option::of(0u64..100);
    prop_oneof![
        3 => (0u8..8, prop::collection::vec(any::<u8>(), 0..10), prop::option::of(0u64..4), expiry.clone())
            .prop_map(|(k, v, p, e)| Op::Put(k, v, p, e)),
        3 => (0u8..8, prop::collection::vec(any::<u8>(), 0..3), prop::option::of(0u64..4), prop::option::of(0u64..100))
            .prop_map(|(k, v, p, e)| Op::PutResolved(k, v, p, e)),
        1 => any::<u64>().prop_map(Op::SetCeiling),
        2 => (0u8..8, any::<bool>()).prop_map(|(k, add)| Op::Outbox(k, add)),
        1 => (0u8..8).prop_map(Op::Remove),
        3 => (0u8..8, 0u64..4, expiry).prop_map(|(k, p, e)| Op::AddProvider(k, p, e)),
        1 => (0u8..8, 0u64..4).prop_map(|(k, p)| Op::RemoveProvider(k, p)),
        1 => (0u64..100).prop_map(Op::RemoveExpired),
    ]
}

fn apply(store: &mut impl RecordStore, op: &Op) -> Result<usize, CoreError> {
    let at = |ms: &Option<u64>| ms.map(Instant::from_millis);
    match op {
        Op::Put(k, v, p, e) => store
            .put(Record {
                key: key(*k),
                value: v.clone(),
                publisher: p.map(PeerId::from_seed),
                expires: at(e),
            })
            .map(|()| 0),
        Op::PutResolved(k, v, p, e) => store
            .put_resolved(Record {
                key: key(*k),
                value: v.clone(),
                publisher: p.map(PeerId::from_seed),
                expires: at(e),
            })
            .map(|outcome| match outcome {
                PutOutcome::Stored => 1,
                PutOutcome::Refreshed => 2,
                PutOutcome::Kept(_) => 3,
            }),
        Op::SetCeiling(c) => store.set_clock_ceiling(*c).map(|()| 0),
        Op::Outbox(k, true) => store.outbox_add(&key(*k)).map(|()| 0),
        Op::Outbox(k, false) => store.outbox_remove(&key(*k)).map(|()| 0),
        Op::Remove(k) => store.remove(&key(*k)).map(|()| 0),
        Op::AddProvider(k, p, e) => store
            .add_provider(ProviderRecord {
                key: key(*k),
                provider: PeerId::from_seed(*p),
                addresses: vec![Address::from_bytes(&[*k, 1, 2]).unwrap()],
                expires: at(e),
            })
            .map(|()| 0),
        Op::RemoveProvider(k, p) => store
            .remove_provider(&key(*k), &PeerId::from_seed(*p))
            .map(|()| 0),
        Op::RemoveExpired(now) => store.remove_expired(Instant::from_millis(*now)),
    }
}

fn same_contents(a: &impl RecordStore, b: &impl RecordStore, context: &str) {
    assert_eq!(a.records().unwrap(), b.records().unwrap(), "{context}");
    assert_eq!(a.provided().unwrap(), b.provided().unwrap(), "{context}");
    assert_eq!(
        a.clock_ceiling().unwrap(),
        b.clock_ceiling().unwrap(),
        "{context}"
    );
    assert_eq!(a.outbox(100).unwrap(), b.outbox(100).unwrap(), "{context}");
    for after in [None, Some(key(0)), Some(key(5)), Some(key(30))] {
        for limit in [1, 3, 100] {
            assert_eq!(
                a.records_after(after.as_ref(), limit).unwrap(),
                b.records_after(after.as_ref(), limit).unwrap(),
                "{context}: records after {after:?}, {limit}"
            );
        }
    }
    assert_eq!(a.outbox(2).unwrap(), b.outbox(2).unwrap(), "{context}");
    for k in 0..8 {
        assert_eq!(
            a.get(&key(k)).unwrap(),
            b.get(&key(k)).unwrap(),
            "{context}"
        );
        assert_eq!(
            a.providers(&key(k)).unwrap(),
            b.providers(&key(k)).unwrap(),
            "{context}: providers of {k}"
        );
    }
}

fn open(kind: BackendKind, dir: &tempfile::TempDir) -> PersistentRecordStore {
    PersistentRecordStore::open(store_path(dir), config(kind, false), local(), limits()).unwrap()
}

proptest! {
    #[test]
    fn answers_like_the_memory_store_also_after_a_restart(
        ops in prop::collection::vec(op(), 1..30),
        restart_at in 0usize..30,
    ) {
        for kind in BACKENDS {
            let dir = tempfile::tempdir().unwrap();
            let mut reference = MemoryStore::with_config(local(), limits());
            let mut store = open(kind, &dir);
            for (i, op) in ops.iter().enumerate() {
                if i == restart_at && kind != BackendKind::Memory {
                    drop(store);
                    store = open(kind, &dir);
                }
                let context = format!("{kind:?}, step {i}: {op:?}");
                prop_assert_eq!(apply(&mut store, op), apply(&mut reference, op), "{}", context);
                same_contents(&store, &reference, &context);
                prop_assert_eq!(
                    store.record_count().unwrap(),
                    reference.record_count() as u64,
                    "{}", context
                );
                prop_assert_eq!(
                    store.held_count().unwrap(),
                    reference.held_count() as u64,
                    "{}", context
                );
                prop_assert_eq!(
                    store.held_bytes().unwrap(),
                    reference.held_bytes() as u64,
                    "{}", context
                );
            }
        }
    }
}

#[test]
fn records_and_providers_survive_a_restart_and_limits_hold() {
    for kind in [BackendKind::Redb, BackendKind::Sled] {
        let dir = tempfile::tempdir().unwrap();
        let record = Record {
            key: key(1),
            value: b"value".to_vec(),
            publisher: Some(PeerId::from_seed(3)),
            expires: Some(Instant::from_millis(5_000)),
        };
        let provider = ProviderRecord {
            key: key(2),
            provider: local(),
            addresses: vec![Address::from_bytes(b"/ip4").unwrap()],
            expires: None,
        };
        {
            let mut store = open(kind, &dir);
            store.put(record.clone()).unwrap();
            store.put(Record::new(key(3), vec![1])).unwrap();
            store.put(Record::new(key(4), vec![2])).unwrap();
            store.add_provider(provider.clone()).unwrap();
            store
                .add_provider(ProviderRecord {
                    key: key(5),
                    ..provider.clone()
                })
                .unwrap();
        }
        let mut store = open(kind, &dir);
        assert_eq!(store.get(&key(1)).unwrap(), Some(record), "{kind:?}");
        assert_eq!(store.providers(&key(2)).unwrap(), vec![provider.clone()]);
        assert_eq!(store.provided().unwrap().len(), 2);
        // The limits count what was stored before the restart: a key farther from this
        // node than the three held is refused (a nearer one would evict the farthest).
        let me = netabase_store::core::Key::from_peer(&local());
        let distance = |k: &RecordKey| me.distance(&k.key());
        let held_farthest = [key(1), key(3), key(4)].iter().map(distance).max().unwrap();
        let farther = (6..64)
            .map(key)
            .find(|k| distance(k) > held_farthest)
            .unwrap();
        assert_eq!(
            store.put(Record::new(farther, vec![])),
            Err(CoreError::MaxRecords { max: 3 }),
            "{kind:?}"
        );
        assert_eq!(
            store.add_provider(ProviderRecord {
                key: key(6),
                ..provider.clone()
            }),
            Err(CoreError::MaxProvidedKeys { max: 2 })
        );
        assert_eq!(
            store.put(Record::new(key(3), vec![0; 9])),
            Err(CoreError::ValueTooLarge { size: 9, max: 8 })
        );
        // Expiry frees the record budget.
        assert_eq!(store.remove_expired(Instant::from_millis(6_000)), Ok(1));
        store.put(Record::new(key(6), vec![])).unwrap();
        assert_eq!(store.record_count().unwrap(), 3);
    }
}

#[test]
fn a_store_backed_record_store_validates_against_the_definition() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::<ChatDefinition>::open_with(store_path(&dir), config(BackendKind::Redb, false))
            .unwrap();
    let mut records = store.record_store(local(), RecordStoreConfig::default());
    let value = ChatDefinition::Message(message(1, "ada", 1, "hi"));
    let (record_key, bytes) = Envelope::seal(&value, 1, &Keypair::from_seed(0)).unwrap();
    records.validate(&record_key, &bytes).unwrap();
    assert!(matches!(
        records.validate(&record_key, b"garbage"),
        Err(CoreError::Rejected(_))
    ));
    assert!(matches!(
        records.validate(&key(1), &bytes),
        Err(CoreError::Rejected(_))
    ));
    // A record of a later schema is kept as bytes (a rolling upgrade converges); only
    // reading it as a model fails.
    let later = Envelope::seal_parts(
        &record_key,
        netabase_store::core::model::SealParts {
            model: 0,
            schema_version: 99,
            timestamp: 2,
            tombstone: false,
            payload: b"a payload of schema 99",
        },
        &Keypair::from_seed(0),
    );
    records.validate(&record_key, &later).unwrap();
    // The record tables live beside the typed tables in the same file.
    records
        .put(Record::new(record_key.clone(), bytes.clone()))
        .unwrap();
    store.put(&message(2, "bob", 1, "typed")).unwrap();
    assert_eq!(records.get(&record_key).unwrap().unwrap().value, bytes);
    assert_eq!(store.count::<Message>().unwrap(), 1);
}

#[test]
fn compare_and_put_keeps_the_newer_version_and_the_clock_ceiling_persists() {
    let writer = Keypair::from_seed(5);
    let value = ChatDefinition::Message(message(1, "ada", 1, "hi"));
    let newer_value = ChatDefinition::Message(message(1, "ada", 1, "hi again"));
    let (k, old) = Envelope::seal(&value, 10, &writer).unwrap();
    let (_, new) = Envelope::seal(&newer_value, 11, &writer).unwrap();
    for kind in [BackendKind::Redb, BackendKind::Sled] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = PersistentRecordStore::open(
            store_path(&dir),
            config(kind, false),
            local(),
            RecordStoreConfig::default(),
        )
        .unwrap();
        let record = |v: &Vec<u8>, expires: u64| Record {
            expires: Some(Instant::from_millis(expires)),
            ..Record::new(k.clone(), v.clone())
        };
        assert_eq!(store.put_resolved(record(&new, 5)), Ok(PutOutcome::Stored));
        // The older version is refused, and the newer one comes back.
        assert_eq!(
            store.put_resolved(record(&old, 9)),
            Ok(PutOutcome::Kept(record(&new, 5)))
        );
        // The same bytes extend the expiry.
        assert_eq!(
            store.put_resolved(record(&new, 7)),
            Ok(PutOutcome::Refreshed)
        );
        assert_eq!(store.get(&k).unwrap(), Some(record(&new, 7)));
        assert_eq!(store.clock_ceiling(), Ok(None));
        store.set_clock_ceiling(1234).unwrap();
        drop(store);
        let store = PersistentRecordStore::open(
            store_path(&dir),
            config(kind, false),
            local(),
            RecordStoreConfig::default(),
        )
        .unwrap();
        assert_eq!(store.clock_ceiling(), Ok(Some(1234)), "{kind:?}");
        assert_eq!(store.get(&k).unwrap(), Some(record(&new, 7)), "{kind:?}");
    }
}

#[test]
fn a_newer_version_from_another_peer_replaces_the_typed_row_in_the_same_transaction() {
    use netabase_store::core::model::{NetabaseModel, SealParts};
    for kind in [BackendKind::Redb, BackendKind::Sled, BackendKind::Memory] {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::<ChatDefinition>::open_with(store_path(&dir), config(kind, false)).unwrap();
        let me = Keypair::from_seed(0);
        let other = Keypair::from_seed(1);
        let mut records = store.record_store(me.peer_id(), RecordStoreConfig::default());
        // This node's own row, written by it (typed row and DHT record).
        let mine = message(1, "ada", 1, "first");
        store.put(&mine).unwrap();
        let (k1, v1) = Envelope::seal(&ChatDefinition::Message(mine), 10, &me).unwrap();
        assert_eq!(
            records.put_resolved(Record::new(k1.clone(), v1)),
            Ok(PutOutcome::Stored)
        );
        // Another peer's newer version: row and secondary index follow.
        let theirs = message(1, "bob", 1, "second");
        let (_, v2) = Envelope::seal(&ChatDefinition::Message(theirs.clone()), 11, &other).unwrap();
        assert_eq!(
            records.put_resolved(Record::new(k1.clone(), v2.clone())),
            Ok(PutOutcome::Stored)
        );
        assert_eq!(store.get(&MessagePrimaryKey(1)).unwrap(), Some(theirs));
        assert_eq!(
            store.record_version(&MessagePrimaryKey(1)).unwrap(),
            Some(Version {
                timestamp: 11,
                origin: other.peer_id()
            })
        );
        assert_eq!(
            store
                .get_by_secondary(&MessageSecondaryKeys::Author(MessageAuthorSecondaryKey(
                    "bob".into()
                )))
                .unwrap()
                .len(),
            1,
            "{kind:?}"
        );
        assert!(
            store
                .get_by_secondary(&MessageSecondaryKeys::Author(MessageAuthorSecondaryKey(
                    "ada".into()
                )))
                .unwrap()
                .is_empty()
        );
        // An older version changes nothing.
        let (_, v0) = Envelope::seal(
            &ChatDefinition::Message(message(1, "eve", 1, "stale")),
            5,
            &other,
        )
        .unwrap();
        assert!(matches!(
            records.put_resolved(Record::new(k1.clone(), v0)),
            Ok(PutOutcome::Kept(_))
        ));
        assert_eq!(
            store.get(&MessagePrimaryKey(1)).unwrap().unwrap().author,
            "bob"
        );
        // A tombstone removes the row and its index entries.
        let tombstone = Envelope::seal_parts(
            &k1,
            SealParts {
                model: Message::ID,
                schema_version: 1,
                timestamp: 12,
                tombstone: true,
                payload: &[],
            },
            &other,
        );
        assert_eq!(
            records.put_resolved(Record::new(k1.clone(), tombstone)),
            Ok(PutOutcome::Stored)
        );
        assert_eq!(store.get(&MessagePrimaryKey(1)).unwrap(), None);
        assert_eq!(store.record_version(&MessagePrimaryKey(1)).unwrap(), None);
        assert!(
            store
                .get_by_secondary(&MessageSecondaryKeys::Author(MessageAuthorSecondaryKey(
                    "bob".into()
                )))
                .unwrap()
                .is_empty()
        );
        // A record held for others (no typed row here) stays out of the typed store.
        let held = message(2, "carol", 1, "not mine");
        let (k2, v) = Envelope::seal(&ChatDefinition::Message(held), 20, &other).unwrap();
        records.put_resolved(Record::new(k2, v)).unwrap();
        assert_eq!(store.get(&MessagePrimaryKey(2)).unwrap(), None, "{kind:?}");
    }
}
