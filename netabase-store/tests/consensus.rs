//! Tests of the persistent consensus log and key-value state: equivalence with the core's
//! in-memory `KvState`, reopening, crashes, damaged rows, and a three-member cluster of
//! `Member`s on redb.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use netabase_powercut::{Disk, RedbDisk, Retention, Rng as PowerRng};
use netabase_store::backend::{ReadTransaction, WriteTransaction};
use netabase_store::consensus::{
    DEDUP_FLOOR_TABLE, DEDUP_TABLE, KV_META_TABLE, KV_TABLE, LOG_TABLE, META_TABLE,
    STATE_WRITE_INTERVAL, STATE_WRITE_ROWS,
};
use netabase_store::core::consensus::{
    AcceptedValue, Ballot, ClusterId, Compaction, Configuration, ConsensusConfig, Entry, EntryId,
    Event, KvCommand, KvState, LeaseConfig, LogStore, Member, Membership, Message, Output,
    Position, Role, Slot, State, Value,
};
use netabase_store::core::{Instant, PeerId};
use netabase_store::{
    Backend, MemoryBackend, PersistentKvState, PersistentLog, RedbBackend, RedbOptions, StoreError,
};
use proptest::prelude::*;
use tempfile::TempDir;

fn open_redb(path: &Path) -> Arc<RedbBackend> {
    Arc::new(RedbBackend::open(path, &RedbOptions::default()).expect("open redb"))
}

fn open_pair<B: Backend>(backend: Arc<B>) -> (PersistentLog<B>, PersistentKvState<B>) {
    let mut log = PersistentLog::open(backend).expect("open log");
    let state = PersistentKvState::open(&mut log).expect("open state");
    (log, state)
}

fn ballot(round: u64) -> Ballot {
    Ballot {
        round,
        leader: PeerId::from_seed(round % 3),
    }
}

fn accepted(round: u64, chosen: bool, command: &[u8]) -> AcceptedValue {
    AcceptedValue {
        ballot: ballot(round),
        value: Value::Batch(vec![Entry {
            id: EntryId {
                proposer: PeerId::from_seed(9),
                seq: round,
            },
            command: command.to_vec(),
        }]),
        chosen,
    }
}

/// Every slot of a log, in order.
fn slots(log: &impl LogStore) -> BTreeMap<Slot, AcceptedValue> {
    log.slots_from(0, usize::MAX)
        .into_iter()
        .filter_map(|s| log.get(s).map(|v| (s, v)))
        .collect()
}

/// The highest slot through which every slot is chosen.
fn chosen_prefix(log: &impl LogStore) -> Slot {
    let mut slot = log.truncated();
    while log.get(slot + 1).is_some_and(|a| a.chosen) {
        slot += 1;
    }
    slot
}

/// Asserts that a persistent state holds what an in-memory one does.
fn assert_same<B: Backend>(mem: &KvState, state: &PersistentKvState<B>, ids: &[EntryId]) {
    assert_eq!(state.digest(), mem.digest(), "digest");
    assert_eq!(State::applied(state), State::applied(mem), "applied");
    assert_eq!(state.len(), mem.len(), "number of keys");
    let keys: Vec<Vec<u8>> = mem.keys().map(<[u8]>::to_vec).collect();
    assert_eq!(state.keys(), keys, "keys");
    for key in &keys {
        let expected = mem.get(key).map(|(v, p)| (v.to_vec(), p));
        assert_eq!(state.get(key), expected, "value of {key:?}");
    }
    for id in ids {
        assert_eq!(
            state.applied_response(id),
            mem.applied_response(id),
            "answer of {id:?}"
        );
    }
}

// ----- equivalence with KvState ------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    /// A new entry of proposer `proposer`.
    New { proposer: u64, command: Vec<u8> },
    /// An earlier entry again (a retry), picked by index.
    Retry(usize),
    /// An earlier entry's id with another command.
    Reuse { pick: usize, command: Vec<u8> },
    /// The slot ends.
    EndSlot,
    /// This many slots without entries (no-ops) end.
    EmptySlots(u64),
    /// The log syncs (the state's rows are written when due).
    Sync,
    /// The log flushes (the state's rows are written).
    Flush,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(b"a".to_vec()), Just(b"b".to_vec()), Just(Vec::new())]
}

fn small() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..3, 0..3)
}

fn command() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (key(), small()).prop_map(|(key, value)| KvCommand::Put { key, value }.encode()),
        key().prop_map(|key| KvCommand::Remove { key }.encode()),
        (key(), prop::option::of(small()), prop::option::of(small())).prop_map(
            |(key, expected, new)| KvCommand::CompareAndSet { key, expected, new }.encode()
        ),
        (key(), small()).prop_map(|(key, value)| KvCommand::Append { key, value }.encode()),
        // Bytes that are not a command (answered `Invalid`).
        prop::collection::vec(any::<u8>(), 0..4),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..3, command()).prop_map(|(proposer, command)| Op::New { proposer, command }),
        2 => any::<usize>().prop_map(Op::Retry),
        1 => (any::<usize>(), command()).prop_map(|(pick, command)| Op::Reuse { pick, command }),
        2 => Just(Op::EndSlot),
        1 => (1..2 * STATE_WRITE_INTERVAL).prop_map(Op::EmptySlots),
        1 => Just(Op::Sync),
        1 => Just(Op::Flush),
    ]
}

/// Applies `entry` to both states at `slot` and the next index; their answers agree.
fn apply_both<B: Backend>(
    entry: &Entry,
    mem: &mut KvState,
    state: &mut PersistentKvState<B>,
    slot: Slot,
    index: &mut u32,
) {
    let position = Position {
        slot,
        index: *index,
    };
    *index += 1;
    let a = mem.apply(position, entry);
    let b = state.apply(position, entry);
    assert_eq!(a, b, "answer to {entry:?}");
    assert_eq!(mem.digest(), state.digest());
}

/// Applies `ops` to a `KvState` and to a persistent state over `backend`, checking that
/// every answer agrees; then drops the persistent state (after a last sync if
/// `final_sync`), reopens it with `reopen` and checks that it holds what the in-memory
/// state held at its last sync.
fn equivalence<B: Backend>(
    backend: Arc<B>,
    reopen: impl FnOnce(Arc<B>) -> Arc<B>,
    ops: &[Op],
    final_sync: bool,
) {
    let (mut log, mut state) = open_pair(backend);
    let mut mem = KvState::new();
    let mut at_sync = mem.clone();
    let mut entries: Vec<Entry> = Vec::new();
    let mut seqs = [0u64; 3];
    let (mut slot, mut index) = (1, 0u32);
    for op in ops {
        match op {
            Op::New { proposer, command } => {
                let p = *proposer as usize;
                seqs[p] += 1;
                let entry = Entry {
                    id: EntryId {
                        proposer: PeerId::from_seed(*proposer),
                        seq: seqs[p],
                    },
                    command: command.clone(),
                };
                apply_both(&entry, &mut mem, &mut state, slot, &mut index);
                entries.push(entry);
            }
            Op::Retry(pick) if !entries.is_empty() => {
                let entry = entries[pick % entries.len()].clone();
                apply_both(&entry, &mut mem, &mut state, slot, &mut index);
            }
            Op::Reuse { pick, command } if !entries.is_empty() => {
                let entry = Entry {
                    id: entries[pick % entries.len()].id,
                    command: command.clone(),
                };
                apply_both(&entry, &mut mem, &mut state, slot, &mut index);
            }
            Op::Retry(_) | Op::Reuse { .. } => {}
            Op::EndSlot => {
                mem.set_applied(slot);
                state.set_applied(slot);
                slot += 1;
                index = 0;
            }
            Op::EmptySlots(n) => {
                slot += n - 1;
                mem.set_applied(slot);
                state.set_applied(slot);
                slot += 1;
                index = 0;
            }
            Op::Sync => {
                let due = mem.applied() - at_sync.applied() >= STATE_WRITE_INTERVAL;
                log.sync().expect("sync");
                assert!(
                    !due || !state.dirty(),
                    "a sync writes the state's rows once due"
                );
                // Rows not due stay unwritten: the reopen at the end finds the state of
                // the last write.
                if !state.dirty() {
                    at_sync = mem.clone();
                }
            }
            Op::Flush => {
                log.flush().expect("flush");
                assert!(!state.dirty());
                at_sync = mem.clone();
            }
        }
    }
    let ids: Vec<EntryId> = entries.iter().map(|e| e.id).collect();
    assert_same(&mem, &state, &ids);
    // Hits count this process's refusals (they start from zero after a reopen).
    assert_eq!(state.dedup_hits(), mem.dedup().hits(), "dedup hits");
    if final_sync {
        log.flush().expect("flush");
        at_sync = mem.clone();
    }
    let backend = Arc::clone(log.backend());
    drop((log, state));
    let (_log, state) = open_pair(reopen(backend));
    assert_same(&at_sync, &state, &ids);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn persistent_state_equals_kv_state_on_memory(
        ops in prop::collection::vec(op(), 0..120),
        final_sync in any::<bool>(),
    ) {
        let backend = Arc::new(MemoryBackend::new());
        equivalence(backend, |b| b, &ops, final_sync);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn persistent_state_equals_kv_state_on_redb(
        ops in prop::collection::vec(op(), 0..120),
        final_sync in any::<bool>(),
    ) {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("paxos.redb");
        equivalence(open_redb(&path), |b| { drop(b); open_redb(&path) }, &ops, final_sync);
    }
}

// ----- reopen and crash --------------------------------------------------------------------

/// Writes a log and a state, syncs, writes more, and "crashes" (drops everything without
/// a sync); returns what the first sync made durable.
fn write_sync_crash<B: Backend>(backend: Arc<B>) -> (BTreeMap<Slot, AcceptedValue>, KvState) {
    let (mut log, mut state) = open_pair(backend);
    let mut mem = KvState::new();
    let cluster = ClusterId([3; 16]);
    log.set_cluster(cluster);
    log.set_incarnation(4);
    log.set_promised(ballot(5));
    for slot in 1..=3 {
        log.put(slot, accepted(slot, true, b"x"));
        let entry = Entry {
            id: EntryId {
                proposer: PeerId::from_seed(1),
                seq: slot,
            },
            command: KvCommand::Put {
                key: vec![slot as u8],
                value: b"v".to_vec(),
            }
            .encode(),
        };
        let position = Position { slot, index: 0 };
        mem.apply(position, &entry);
        mem.set_applied(slot);
        state.apply(position, &entry);
        state.set_applied(slot);
    }
    log.put(5, accepted(5, false, b"gap"));
    assert!(log.dirty());
    log.flush().unwrap();
    assert!(!log.dirty());
    assert_eq!(log.syncs(), 1);
    log.sync().unwrap();
    assert_eq!(
        log.syncs(),
        1,
        "a sync with nothing to write writes nothing"
    );
    let durable = slots(&log);
    // Unsynced: a promise, an overwritten slot, a new slot, a new chosen slot applied.
    log.set_promised(ballot(9));
    log.set_incarnation(5);
    log.put(2, accepted(2, false, b"overwritten"));
    log.put(4, accepted(4, true, b"y"));
    log.put(7, accepted(7, false, b"z"));
    let entry = Entry {
        id: EntryId {
            proposer: PeerId::from_seed(1),
            seq: 4,
        },
        command: KvCommand::Remove { key: vec![1] }.encode(),
    };
    state.apply(Position { slot: 4, index: 0 }, &entry);
    state.set_applied(4);
    assert_eq!(log.last_slot(), 7);
    assert_eq!(log.slots_from(3, 3), vec![3, 4, 5]);
    assert_eq!(log.len(), 6);
    assert!(state.get(&[1]).is_none());
    assert!(log.dirty() && state.dirty());
    drop((log, state));
    (durable, mem)
}

fn check_after_crash<B: Backend>(
    backend: Arc<B>,
    durable: &BTreeMap<Slot, AcceptedValue>,
    mem: &KvState,
) {
    let (log, state) = open_pair(backend);
    assert_eq!(log.cluster(), Some(ClusterId([3; 16])));
    assert_eq!(log.incarnation(), 4);
    assert_eq!(log.promised(), Some(ballot(5)));
    assert_eq!(&slots(&log), durable);
    assert_eq!(log.last_slot(), 5);
    assert_eq!(chosen_prefix(&log), 3);
    assert_eq!(state.applied(), 3);
    assert!(state.applied() <= chosen_prefix(&log), "state ahead of log");
    assert_same(mem, &state, &[]);
    assert!(!log.dirty() && !state.dirty());
}

#[test]
fn a_crash_loses_exactly_the_unsynced_writes_on_memory() {
    let backend = Arc::new(MemoryBackend::new());
    let (durable, mem) = write_sync_crash(Arc::clone(&backend));
    check_after_crash(backend, &durable, &mem);
}

#[test]
fn a_crash_loses_exactly_the_unsynced_writes_on_redb() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("paxos.redb");
    let (durable, mem) = write_sync_crash(open_redb(&path));
    check_after_crash(open_redb(&path), &durable, &mem);
}

#[test]
fn reopen_after_sync_keeps_everything() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("paxos.redb");
    let (mut log, mut state) = open_pair(open_redb(&path));
    assert_eq!(
        (log.cluster(), log.incarnation(), log.promised()),
        (None, 0, None)
    );
    assert!(log.is_empty() && state.is_empty() && state.applied() == 0);
    log.set_cluster(ClusterId([1; 16]));
    log.set_incarnation(2);
    log.set_promised(ballot(3));
    for slot in 1..=40 {
        log.put(slot, accepted(slot, slot <= 30, &slot.to_be_bytes()));
    }
    log.sync().unwrap();
    // Overwrites after a sync, synced again.
    log.put(31, accepted(32, true, b"chosen later"));
    state.apply(
        Position { slot: 1, index: 0 },
        &Entry {
            id: EntryId {
                proposer: PeerId::from_seed(2),
                seq: 1,
            },
            command: KvCommand::Append {
                key: b"l".to_vec(),
                value: b"e".to_vec(),
            }
            .encode(),
        },
    );
    state.set_applied(1);
    log.flush().unwrap();
    let (expected, digest) = (slots(&log), state.digest());
    let value = state.get(b"l");
    assert!(value.is_some());
    drop((log, state));
    let (log, state) = open_pair(open_redb(&path));
    assert_eq!(log.cluster(), Some(ClusterId([1; 16])));
    assert_eq!(log.incarnation(), 2);
    assert_eq!(log.promised(), Some(ballot(3)));
    assert_eq!(slots(&log), expected);
    assert_eq!(chosen_prefix(&log), 31);
    assert_eq!(state.digest(), digest);
    assert_eq!(state.get(b"l"), value);
    assert_eq!(state.applied(), 1);
}

/// A key-value entry of proposer 7 with sequence number `seq`.
fn put_entry(seq: u64, key: &[u8], value: &[u8]) -> Entry {
    Entry {
        id: EntryId {
            proposer: PeerId::from_seed(7),
            seq,
        },
        command: KvCommand::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        }
        .encode(),
    }
}

#[test]
fn compaction_and_snapshot_install_are_atomic_with_the_state() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("paxos.redb");
    let (mut log, mut state) = open_pair(open_redb(&path));
    for slot in 1..=10 {
        log.put(slot, accepted(slot, true, &slot.to_be_bytes()));
        state.apply(
            Position { slot, index: 0 },
            &put_entry(slot, &[slot as u8], b"old"),
        );
        state.set_applied(slot);
    }
    log.sync().unwrap();
    // Compaction: the log drops the slots the state applied, in the state's sync.
    log.truncate(6);
    assert_eq!(log.truncated(), 6);
    assert!(log.get(6).is_none() && log.get(7).is_some());
    assert_eq!(log.slots_from(1, 100), (7..=10).collect::<Vec<_>>());
    log.sync().unwrap();
    drop((log, state));
    let (mut log, mut state) = open_pair(open_redb(&path));
    assert_eq!(log.truncated(), 6);
    assert_eq!(log.slots_from(0, 100), (7..=10).collect::<Vec<_>>());
    assert_eq!(log.len(), 4);
    assert_eq!(state.applied(), 10);
    let old_digest = state.digest();
    // Another member's state at slot 20, frozen.
    let mut other = KvState::new();
    for seq in 1..=3 {
        other.apply(
            Position {
                slot: 20,
                index: seq as u32,
            },
            &put_entry(100 + seq, b"new", &seq.to_be_bytes()),
        );
    }
    other.set_applied(20);
    let image = other.freeze();
    // Bytes that are not an image change nothing.
    assert!(state.install(20, b"not an image").is_err());
    assert_eq!((state.applied(), state.digest()), (10, old_digest));
    // An install and its truncation that were never synced are lost together.
    state.install(20, &image).unwrap();
    log.truncate(20);
    assert_eq!(state.applied(), 20);
    drop((log, state));
    let (mut log, mut state) = open_pair(open_redb(&path));
    assert_eq!((log.truncated(), state.applied()), (6, 10));
    assert_eq!(state.digest(), old_digest);
    // Synced, both stay: the old keys and dedup rows are gone, the image's are there.
    state.install(20, &image).unwrap();
    log.truncate(20);
    log.sync().unwrap();
    drop((log, state));
    let (log, state) = open_pair(open_redb(&path));
    assert_eq!((log.truncated(), log.len(), log.last_slot()), (20, 0, 0));
    assert_eq!(state.applied(), 20);
    assert_eq!(state.digest(), other.digest());
    assert_eq!(state.keys(), vec![b"new".to_vec()]);
    assert_eq!(
        state.freeze(),
        image,
        "the image round-trips through the store"
    );
    let id = |seq| EntryId {
        proposer: PeerId::from_seed(7),
        seq,
    };
    assert!(state.applied_response(&id(101)).is_some());
    assert!(
        state.applied_response(&id(3)).is_none(),
        "old dedup rows deleted"
    );
}

/// A sync writes the state's rows only when due: once the state applied
/// `STATE_WRITE_INTERVAL` slots or changed `STATE_WRITE_ROWS` rows since they were last
/// written, or when the sync truncates the log. Until then the log keeps every slot the
/// backend's state lacks.
#[test]
fn a_sync_writes_the_state_only_when_due() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("paxos.redb");
    let (mut log, mut state) = open_pair(open_redb(&path));
    // Slot `slot` with `entries` entries writing distinct keys (two rows each: the key
    // and its dedup entry), applied.
    let apply = |log: &mut PersistentLog<RedbBackend>,
                 state: &mut PersistentKvState<RedbBackend>,
                 slot: Slot,
                 entries: u64| {
        log.put(slot, accepted(slot, true, b"x"));
        for i in 0..entries {
            let seq = slot * 10_000 + i;
            state.apply(
                Position {
                    slot,
                    index: i as u32,
                },
                &put_entry(seq, &seq.to_be_bytes(), b"v"),
            );
        }
        state.set_applied(slot);
    };
    // Slots short of the interval, with few rows: not due.
    for slot in 1..STATE_WRITE_INTERVAL {
        apply(&mut log, &mut state, slot, u64::from(slot <= 3));
    }
    log.sync().unwrap();
    assert!(state.dirty(), "not due yet");
    drop((log, state));
    let (mut log, mut state) = open_pair(open_redb(&path));
    assert_eq!(
        (log.len() as u64, state.applied(), state.len()),
        (STATE_WRITE_INTERVAL - 1, 0, 0),
        "the log is durable, the state's rows were not due"
    );
    // Applied again (as a member replays its log at start) and one slot more: due.
    for slot in 1..=STATE_WRITE_INTERVAL {
        apply(&mut log, &mut state, slot, u64::from(slot <= 3));
    }
    log.sync().unwrap();
    assert!(!state.dirty(), "due after the interval");
    // One slot of many entries: due by rows.
    let busy = STATE_WRITE_INTERVAL + 1;
    apply(&mut log, &mut state, busy, STATE_WRITE_ROWS as u64 / 2);
    log.sync().unwrap();
    assert!(!state.dirty(), "due by rows");
    let digest = state.digest();
    // One more slot and a truncation: the truncating sync writes the state with it.
    apply(&mut log, &mut state, busy + 1, 1);
    log.truncate(busy + 1);
    log.sync().unwrap();
    assert!(!state.dirty(), "written with the truncation");
    let (truncated_digest, keys) = (state.digest(), state.len());
    assert_ne!(digest, truncated_digest);
    drop((log, state));
    let (log, state) = open_pair(open_redb(&path));
    assert_eq!(log.truncated(), busy + 1);
    assert_eq!(
        (state.applied(), state.digest(), state.len()),
        (busy + 1, truncated_digest, keys)
    );
}

#[test]
fn a_state_opened_again_detaches_the_first() {
    let backend = Arc::new(MemoryBackend::new());
    let (mut log, mut first) = open_pair(Arc::clone(&backend));
    let entry = Entry {
        id: EntryId {
            proposer: PeerId::from_seed(1),
            seq: 1,
        },
        command: KvCommand::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        }
        .encode(),
    };
    first.apply(Position { slot: 1, index: 0 }, &entry);
    let second = PersistentKvState::open(&mut log).unwrap();
    assert!(second.get(b"k").is_none());
    log.sync().unwrap();
    assert_eq!(
        log.syncs(),
        0,
        "the detached state's writes are not written"
    );
    drop((log, first, second));
    let (_, state) = open_pair(backend);
    assert!(state.is_empty());
}

// ----- damaged rows ------------------------------------------------------------------------

/// A backend with a synced log and state in every table.
fn populated() -> Arc<MemoryBackend> {
    let backend = Arc::new(MemoryBackend::new());
    let (durable, _) = write_sync_crash(Arc::clone(&backend));
    assert!(!durable.is_empty());
    backend
}

fn damage<B: Backend>(backend: &B, table: &str, key: &[u8], value: Option<&[u8]>) {
    let mut tx = backend.begin_write().unwrap();
    let bytes = match value {
        Some(v) => v.to_vec(),
        None => {
            let mut v = tx.get(table, key).unwrap().expect("row to damage");
            let last = v.len() - 1;
            v[last] ^= 0x40;
            v
        }
    };
    tx.put(table, key, &bytes).unwrap();
    tx.commit().unwrap();
}

fn open_both<B: Backend>(backend: Arc<B>) -> Result<(), StoreError> {
    let mut log = PersistentLog::open(backend)?;
    PersistentKvState::open(&mut log).map(drop)
}

fn expect_corrupt(result: Result<(), StoreError>, table: &str, key: &[u8]) {
    match result {
        Err(StoreError::Corrupt {
            model,
            key: found,
            reason,
        }) => {
            assert_eq!(model, table, "{reason}");
            assert_eq!(found, key, "{reason}");
        }
        other => panic!("expected a corrupt row of {table}, got {other:?}"),
    }
}

/// A table, a key, and the bytes to put there (`None`: the row's own with a bit flipped).
type Damage<'a> = (&'a str, &'a [u8], Option<&'a [u8]>);

#[test]
fn a_damaged_row_fails_open_with_a_typed_error() {
    let slot2 = 2u64.to_be_bytes();
    let cases: [Damage<'_>; 9] = [
        (LOG_TABLE, &slot2, None),
        (LOG_TABLE, b"abc", Some(b"")),
        (LOG_TABLE, &0u64.to_be_bytes(), Some(b"")),
        (META_TABLE, b"promised", None),
        (META_TABLE, b"incarnation", Some(&[0xff; 3])),
        (META_TABLE, b"surprise", Some(b"")),
        (KV_TABLE, &[2], None),
        (DEDUP_TABLE, b"\x01x", Some(b"")),
        (KV_META_TABLE, b"digest", Some(&[2, 1, 0, 0, 0, 0])),
    ];
    for (table, key, value) in cases {
        let backend = populated();
        assert!(open_both(Arc::clone(&backend)).is_ok());
        damage(&*backend, table, key, value);
        expect_corrupt(open_both(backend), table, key);
    }
}

#[test]
fn a_damaged_row_fails_open_on_redb() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("paxos.redb");
    write_sync_crash(open_redb(&path));
    damage(&*open_redb(&path), LOG_TABLE, &1u64.to_be_bytes(), None);
    expect_corrupt(
        PersistentLog::open(open_redb(&path)).map(drop),
        LOG_TABLE,
        &1u64.to_be_bytes(),
    );
}

// ----- a cluster of members on redb --------------------------------------------------------

type RedbMember = Member<PersistentLog<RedbBackend>, PersistentKvState<RedbBackend>>;

const CLUSTER: ClusterId = ClusterId([7; 16]);

fn config() -> ConsensusConfig {
    ConsensusConfig {
        heartbeat_interval: Duration::from_millis(40),
        election_timeout: Duration::from_millis(450),
        retry_interval: Duration::from_millis(60),
        concurrency: 4,
        max_batch_entries: 8,
        catch_up_slots: 3,
        lease: Some(LeaseConfig {
            duration: Duration::from_millis(400),
            drift_ppm: 50_000,
            margin: Duration::ZERO,
        }),
        ..ConsensusConfig::default()
    }
}

struct Cluster {
    peers: Vec<PeerId>,
    paths: Vec<PathBuf>,
    members: Vec<Option<RedbMember>>,
    queue: VecDeque<(PeerId, PeerId, netabase_store::core::consensus::Envelope)>,
    now: Instant,
    committed: BTreeMap<EntryId, Position>,
    starts: u64,
    config: ConsensusConfig,
    _dir: TempDir,
}

impl Cluster {
    fn new(n: u64) -> Self {
        Self::with_config(n, config())
    }

    fn with_config(n: u64, config: ConsensusConfig) -> Self {
        let dir = TempDir::new().unwrap();
        let peers: Vec<PeerId> = (1..=n).map(PeerId::from_seed).collect();
        let paths = (0..n)
            .map(|i| dir.path().join(format!("member-{i}.redb")))
            .collect();
        let mut cluster = Cluster {
            peers,
            paths,
            members: (0..n).map(|_| None).collect(),
            queue: VecDeque::new(),
            now: Instant::ZERO,
            committed: BTreeMap::new(),
            starts: 0,
            config,
            _dir: dir,
        };
        for i in 0..n as usize {
            cluster.start(i);
        }
        cluster
    }

    /// Starts member `i` from its files.
    fn start(&mut self, i: usize) {
        let (log, state) = open_pair(open_redb(&self.paths[i]));
        assert!(
            state.applied() <= chosen_prefix(&log),
            "the state is ahead of the durable log"
        );
        self.starts += 1;
        let member = Member::new(
            self.config.clone(),
            Membership {
                local: self.peers[i],
                cluster: CLUSTER,
                members: Configuration::new(self.peers.iter().copied()),
                contacts: Default::default(),
            },
            log,
            state,
            self.starts,
            self.now,
        )
        .expect("member starts");
        self.members[i] = Some(member);
    }

    /// Stops member `i` without a sync (a crash) and returns it.
    fn stop(&mut self, i: usize) -> RedbMember {
        self.members[i].take().expect("running")
    }

    fn member(&self, i: usize) -> &RedbMember {
        self.members[i].as_ref().expect("running")
    }

    fn leader(&self) -> Option<usize> {
        (0..self.members.len()).find(|i| {
            self.members[*i]
                .as_ref()
                .is_some_and(|m| m.role() == Role::Leader)
        })
    }

    /// Carries out member `i`'s outputs, syncing its log before each that waits for it.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        let Some(m) = self.members[i].as_mut() else {
            return;
        };
        loop {
            while let Some(output) = m.poll_output() {
                if output.waits_for_sync() {
                    m.log_mut().sync().expect("sync");
                    m.synced(now);
                }
                match output {
                    Output::Send { to, envelope } => {
                        self.queue.push_back((self.peers[i], to, envelope))
                    }
                    Output::Event(Event::Committed { id, position, .. }) => {
                        self.committed.insert(id, position);
                    }
                    Output::Event(_) => {}
                }
            }
            if !m.needs_sync() {
                break;
            }
            m.log_mut().sync().expect("sync");
            m.synced(now);
        }
    }

    /// Delivers every message in flight, in order; when none is, advances the clock to
    /// the earliest timer and runs the timers due.
    fn step(&mut self) {
        for i in 0..self.members.len() {
            self.drain(i);
        }
        if self.queue.is_empty() {
            let next = self
                .members
                .iter()
                .flatten()
                .map(|m| m.poll_timeout())
                .min()
                .unwrap_or(Instant::MAX);
            assert!(next < Instant::MAX, "no timer is set");
            self.now = self.now.max(next);
            for i in 0..self.members.len() {
                if let Some(m) = self.members[i].as_mut()
                    && m.poll_timeout() <= self.now
                {
                    m.handle_timeout(self.now);
                }
            }
            return;
        }
        for (from, to, envelope) in std::mem::take(&mut self.queue) {
            let i = self.peers.iter().position(|p| *p == to).expect("a member");
            if let Some(m) = self.members[i].as_mut() {
                m.handle_message(self.now, from, envelope);
                self.drain(i);
            }
        }
    }

    fn run_until(&mut self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        for _ in 0..200_000 {
            if done(self) {
                return;
            }
            self.step();
        }
        panic!("{what}: not reached by {:?}", self.now);
    }

    /// Proposes `n` commands, round-robin over the running members, and runs until they
    /// are all committed.
    fn commit(&mut self, first: u64, n: u64) {
        let mut ids = Vec::new();
        for k in first..first + n {
            let command = match k % 4 {
                0 => KvCommand::Append {
                    key: b"list".to_vec(),
                    value: k.to_be_bytes().to_vec(),
                },
                1 => KvCommand::CompareAndSet {
                    key: format!("k{}", k % 5).into_bytes(),
                    expected: None,
                    new: Some(k.to_be_bytes().to_vec()),
                },
                2 => KvCommand::Remove {
                    key: format!("k{}", k % 5).into_bytes(),
                },
                _ => KvCommand::Put {
                    key: format!("k{}", k % 5).into_bytes(),
                    value: k.to_be_bytes().to_vec(),
                },
            };
            let running: Vec<usize> = (0..self.members.len())
                .filter(|i| self.members[*i].is_some())
                .collect();
            let i = running[k as usize % running.len()];
            let now = self.now;
            let m = self.members[i].as_mut().expect("running");
            ids.push(m.propose(now, command.encode()).expect("proposed"));
            self.drain(i);
        }
        self.run_until("commit", |c| {
            ids.iter().all(|id| c.committed.contains_key(id))
        });
    }

    /// Runs until every running member applied everything the leader committed.
    fn settle(&mut self) {
        self.run_until("settle", |c| {
            let Some(l) = c.leader() else { return false };
            let committed = c.member(l).committed();
            c.members
                .iter()
                .flatten()
                .all(|m| m.applied() == committed && m.committed() == committed)
        });
    }
}

/// The digest of a fresh `KvState` that applied `log`'s slots `1..=through`.
fn replayed_digest(log: &impl LogStore, through: Slot) -> [u8; 32] {
    let mut state = KvState::new();
    for slot in 1..=through {
        let a = log.get(slot).expect("slot");
        assert!(a.chosen);
        if let Value::Batch(entries) = &a.value {
            for (index, entry) in entries.iter().enumerate() {
                state.apply(
                    Position {
                        slot,
                        index: index as u32,
                    },
                    entry,
                );
            }
        }
        state.set_applied(slot);
    }
    state.digest()
}

#[test]
fn a_member_behind_the_compaction_installs_a_snapshot_on_redb() {
    let mut c = Cluster::with_config(
        3,
        ConsensusConfig {
            compaction: Some(Compaction {
                entries: 16,
                bytes: u64::MAX,
                keep: 2,
            }),
            snapshot_chunk_bytes: 256,
            ..config()
        },
    );
    c.run_until("a leader", |c| c.leader().is_some());
    c.commit(0, 20);
    c.settle();
    // A follower is down while the others commit and compact their logs past it.
    let follower = (0..3).find(|i| Some(*i) != c.leader()).unwrap();
    let mut down = c.stop(follower);
    down.log_mut().sync().unwrap();
    let behind = down.applied();
    drop(down);
    for round in 0..8 {
        c.commit(20 + round * 10, 10);
    }
    let leader = c.leader().expect("a leader");
    let truncated = c.member(leader).log().truncated();
    assert!(truncated > behind, "{truncated} > {behind}");
    c.start(follower);
    c.settle();
    let m = c.member(follower);
    assert_eq!(m.stats().snapshot_installs, 1);
    assert!(m.stats().snapshots_refused == 0);
    assert!(m.log().truncated() > behind);
    let digest = c.member(leader).state().digest();
    assert_eq!(m.state().digest(), digest);
    // It restarts from its own files: the state it installed was written with the
    // truncated log.
    let mut stopped = c.stop(follower);
    stopped.log_mut().sync().unwrap();
    drop(stopped);
    c.start(follower);
    assert_eq!(c.member(follower).state().digest(), digest);
    c.commit(200, 10);
    c.settle();
    let digest = c.member(0).state().digest();
    for i in 0..3 {
        assert_eq!(c.member(i).state().digest(), digest, "member {i}");
    }
}

#[test]
fn three_members_on_redb_commit_restart_and_replay() {
    let mut c = Cluster::new(3);
    c.run_until("a leader", |c| c.leader().is_some());
    for round in 0..10 {
        c.commit(round * 10, 10);
    }
    c.settle();
    let digest = c.member(0).state().digest();
    let committed = c.member(0).committed();
    assert!(committed > 10, "{committed} slots");
    for i in 0..3 {
        assert_eq!(c.member(i).state().digest(), digest, "member {i}");
        assert_eq!(c.member(i).applied(), committed);
        // The persistent state equals the in-memory one on the same log.
        assert_eq!(replayed_digest(c.member(i).log(), committed), digest);
    }
    let list = c.member(0).state().get(b"list").expect("the list");
    assert_eq!(KvState::decode_list(&list.0).len(), 25);

    // A follower crashes (no sync) and restarts from its files: its state is at most at
    // the durable log's chosen prefix, the member replays that prefix, and it catches up.
    let follower = (0..3).find(|i| Some(*i) != c.leader()).unwrap();
    let crashed = c.stop(follower);
    let applied_before = crashed.applied();
    assert!(crashed.log().dirty(), "the crash loses unsynced writes");
    drop(crashed);
    c.start(follower);
    let m = c.member(follower);
    let prefix = chosen_prefix(m.log());
    // Chosen flags the follower learned after its last sync are lost (and the state
    // applied through them was never written): it restarts behind and replays.
    assert!(prefix < applied_before, "{prefix} < {applied_before}");
    assert_eq!(m.applied(), prefix);
    assert_eq!(m.state().digest(), replayed_digest(m.log(), prefix));
    c.commit(100, 10);
    c.settle();
    let digest = c.member(0).state().digest();
    for i in 0..3 {
        assert_eq!(
            c.member(i).state().digest(),
            digest,
            "member {i} after the crash"
        );
    }

    // A member stops after a sync; with its state tables wiped it replays the whole log
    // from its files to the same digest.
    let i = (follower + 1) % 3;
    let mut stopped = c.stop(i);
    stopped.log_mut().sync().unwrap();
    let (log, state) = stopped.into_parts();
    let backend = Arc::clone(log.backend());
    drop((log, state));
    let mut tx = backend.begin_write().unwrap();
    tx.clear(KV_TABLE).unwrap();
    tx.clear(KV_META_TABLE).unwrap();
    tx.clear(DEDUP_TABLE).unwrap();
    tx.clear(DEDUP_FLOOR_TABLE).unwrap();
    tx.commit().unwrap();
    drop(backend);
    c.start(i);
    let m = c.member(i);
    assert_eq!(m.committed(), c.member(follower).committed());
    assert_eq!(m.applied(), m.committed());
    assert_eq!(m.state().digest(), c.member(follower).state().digest());
    c.settle();
    let digest = c.member(0).state().digest();
    for i in 0..3 {
        assert_eq!(
            c.member(i).state().digest(),
            digest,
            "member {i} at the end"
        );
    }
}

// ----- power cuts ---------------------------------------------------------------------------

/// A new consensus database on a simulated disk, closed cleanly: what every cut starts from.
fn empty_disk_image() -> Vec<u8> {
    let disk = Disk::new();
    let backend = RedbBackend::with_storage(RedbDisk(disk.clone()), &RedbOptions::default())
        .expect("create a database on the simulated disk");
    drop(backend);
    disk.sync().expect("sync the new database");
    disk.durable()
}

/// The settings of the member under power cuts: compaction every few slots.
fn cut_config() -> ConsensusConfig {
    ConsensusConfig {
        compaction: Some(Compaction {
            entries: 4,
            bytes: u64::MAX,
            keep: 1,
        }),
        ..config()
    }
}

/// Member 1 of a three-member cluster on `disk`, as an acceptor of a leader (member 2)
/// that prepares, proposes and commits, in the rounds and slots the seed draws. Its
/// driver makes the log durable before every output that waits for it, as the node's
/// does; returns the promises and votes that left (after a sync that returned) before
/// the power went. With `sync_first` off (a planted bug), replies leave before the sync.
fn drive_acceptor(seed: u64, disk: &Disk, sync_first: bool) -> Vec<Message> {
    let mut sent = Vec::new();
    let Ok(backend) = RedbBackend::with_storage(RedbDisk(disk.clone()), &RedbOptions::default())
    else {
        return sent;
    };
    let backend = Arc::new(backend);
    let Ok(mut log) = PersistentLog::open(backend) else {
        return sent;
    };
    let Ok(state) = PersistentKvState::open(&mut log) else {
        return sent;
    };
    let peers: Vec<PeerId> = (1..=3).map(PeerId::from_seed).collect();
    let mut member = Member::new(
        cut_config(),
        Membership {
            local: peers[0],
            cluster: CLUSTER,
            members: Configuration::new(peers.iter().copied()),
            contacts: Default::default(),
        },
        log,
        state,
        seed,
        Instant::ZERO,
    )
    .expect("member starts");
    let mut rng = PowerRng::new(seed ^ 0xACCE_9704);
    let mut now = Instant::from_millis(1);
    let (mut round, mut slot, mut committed) = (1u64, 0u64, 0u64);
    let leader = peers[1];
    for step in 0..60u64 {
        now += Duration::from_millis(1 + rng.below(20));
        let ballot = Ballot { round, leader };
        let message = match rng.below(10) {
            0 => {
                round += 1;
                Message::Prepare {
                    ballot: Ballot { round, leader },
                    from: committed + 1,
                }
            }
            1..=6 => {
                slot += 1;
                Message::Accept {
                    ballot,
                    slot,
                    value: Value::Batch(vec![put_entry(step, &[step as u8 % 5], b"v")]),
                    committed,
                }
            }
            _ => {
                committed = slot.saturating_sub(rng.below(2));
                Message::Heartbeat {
                    ballot,
                    committed,
                    seq: step,
                }
            }
        };
        member.handle_message(
            now,
            leader,
            netabase_store::core::consensus::Envelope {
                cluster: CLUSTER,
                instance: 7,
                message,
            },
        );
        loop {
            while let Some(output) = member.poll_output() {
                if output.waits_for_sync() && sync_first {
                    if member.log_mut().sync().is_err() {
                        return sent;
                    }
                    member.synced(now);
                }
                if let Output::Send { envelope, .. } = output
                    && matches!(
                        envelope.message,
                        Message::Promise { .. } | Message::Accepted { .. }
                    )
                {
                    sent.push(envelope.message);
                }
            }
            if !member.needs_sync() {
                break;
            }
            if member.log_mut().sync().is_err() {
                return sent;
            }
            member.synced(now);
        }
        if disk.is_cut() {
            break;
        }
    }
    sent
}

/// After a power cut anywhere in the acceptor's run, the log that survives holds every
/// promise and vote that left before it (a slot compacted away counts: it is chosen and
/// in the state), and the member starts on it: its state is neither ahead of the log nor
/// behind its truncation point.
fn acceptor_cut(seed: u64, sync_first: bool) -> Result<(), String> {
    let mut rng = PowerRng::new(seed);
    let empty = empty_disk_image();
    let probe = Disk::from_image(empty.clone());
    drive_acceptor(seed, &probe, sync_first);
    let total = probe.ops();
    let disk = Disk::from_image(empty);
    let retention = Retention::draw(&mut rng);
    let cut_seed = rng.next_u64();
    disk.schedule_cut(rng.below(total + 2), cut_seed, retention);
    let sent = drive_acceptor(seed, &disk, sync_first);
    let image = disk.cut_now(cut_seed, retention);
    let backend =
        RedbBackend::with_storage(RedbDisk(Disk::from_image(image)), &RedbOptions::default())
            .map_err(|e| format!("reopen: {e}"))?;
    let mut log = PersistentLog::open(Arc::new(backend)).map_err(|e| format!("log: {e}"))?;
    let state = PersistentKvState::open(&mut log).map_err(|e| format!("state: {e}"))?;
    for message in &sent {
        match message {
            Message::Promise { ballot, .. } if log.promised() < Some(*ballot) => {
                return Err(format!(
                    "promise {ballot:?} lost (durable {:?})",
                    log.promised()
                ));
            }
            Message::Accepted { ballot, slot }
                if *slot > log.truncated()
                    && !log
                        .get(*slot)
                        .is_some_and(|a| a.ballot >= *ballot || a.chosen) =>
            {
                return Err(format!("vote for slot {slot} in {ballot:?} lost"));
            }
            _ => {}
        }
    }
    Member::new(
        cut_config(),
        Membership {
            local: PeerId::from_seed(1),
            cluster: CLUSTER,
            members: Configuration::new((1..=3).map(PeerId::from_seed)),
            contacts: Default::default(),
        },
        log,
        state,
        seed,
        Instant::ZERO,
    )
    .map(drop)
    .map_err(|e| format!("the member does not start on what survived: {e}"))
}

fn acceptor_cuts() -> u64 {
    std::env::var("NETABASE_POWERCUT_CUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
}

#[test]
fn an_acceptor_s_promises_and_votes_survive_power_cuts() {
    let failures: Vec<String> = (0..acceptor_cuts())
        .filter_map(|seed| {
            acceptor_cut(seed, true)
                .err()
                .map(|e| format!("seed {seed}: {e}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn replies_sent_before_their_sync_are_caught_by_a_power_cut() {
    let caught = (0..acceptor_cuts()).find_map(|seed| acceptor_cut(seed, false).err());
    let why = caught.expect("no cut lost a reply sent before its sync");
    eprintln!("caught: {why}");
}
