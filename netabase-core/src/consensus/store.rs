//! What a member keeps: the acceptor's durable log ([`LogStore`]) and the replicated
//! state the chosen entries are applied to ([`State`]).
//!
//! Durability follows the driver's group-commit rule: a member writes to its log store at
//! once, and every output that depends on those writes (a promise, an accepted vote, the
//! leader counting its own vote) waits until the driver has made them durable and called
//! [`Member::synced`](super::Member::synced). The applied state is written without its
//! own sync: after a crash it is rebuilt from the log (its applied slot says from where).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::types::{
    Ballot, ClusterId, Configuration, Entry, EntryId, Instance, Position, Slot, Value,
};
use crate::PeerId;

/// A value an acceptor accepted at a slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedValue {
    /// The ballot it was accepted in.
    pub ballot: Ballot,
    /// The value.
    pub value: Value,
    /// Whether the member knows it is chosen.
    pub chosen: bool,
}

/// The acceptor's log: its promise, what it accepted per slot, which of those are chosen,
/// its cluster and its incarnation.
///
/// Writes take effect in the store's view at once and become durable at the driver's next
/// sync (every write before a sync is durable after it, in order). Implementations keep
/// the unsynced writes in memory and write them in one durable transaction at the sync.
pub trait LogStore {
    /// The cluster this log belongs to, if it was ever joined.
    fn cluster(&self) -> Option<ClusterId>;
    /// Records the cluster (once, when the member first starts).
    fn set_cluster(&mut self, cluster: ClusterId);
    /// How many times this member has started with this log; part of every entry id.
    fn incarnation(&self) -> u32;
    /// Records a new incarnation.
    fn set_incarnation(&mut self, incarnation: u32);
    /// The highest ballot promised.
    fn promised(&self) -> Option<Ballot>;
    /// Records a promise.
    fn set_promised(&mut self, ballot: Ballot);
    /// The value accepted at `slot`.
    fn get(&self, slot: Slot) -> Option<AcceptedValue>;
    /// Records a value accepted (or learned chosen) at `slot`.
    fn put(&mut self, slot: Slot, value: AcceptedValue);
    /// The highest slot with a value.
    fn last_slot(&self) -> Slot;
    /// Slots from `from` with a value, in order, at most `limit` of them.
    fn slots_from(&self, from: Slot, limit: usize) -> Vec<Slot>;
    /// Every slot at or below this one was removed by compaction (0: none).
    fn truncated(&self) -> Slot;
    /// Removes every slot at or below `upto` and records `upto` as the truncation point
    /// (a lower `upto` than the current point changes nothing). The member calls it only
    /// for slots its state has applied, so that the state written with the same sync is
    /// the snapshot the removed slots are folded into: a store must write the truncation
    /// in the same durable transaction as the state's changes, never before them.
    fn truncate(&mut self, upto: Slot);
    /// This member's instance (0: none minted yet).
    fn instance(&self) -> Instance;
    /// Records the instance minted for this log.
    fn set_instance(&mut self, instance: Instance);
    /// The configurations this member knows, each with the first slot it is in force
    /// for.
    fn configurations(&self) -> Vec<(Slot, Configuration)>;
    /// Records the configuration in force from slot `from` on.
    fn put_configuration(&mut self, from: Slot, configuration: Configuration);
}

/// A [`LogStore`] in memory with an explicit durability boundary: [`sync`] makes the writes
/// so far durable, [`crash`] forgets everything written since the last sync. Used by tests
/// and the simulator, and by nodes whose consensus log need not outlive the process.
///
/// [`sync`]: MemoryLogStore::sync
/// [`crash`]: MemoryLogStore::crash
#[derive(Clone, Debug, Default)]
pub struct MemoryLogStore {
    durable: LogImage,
    current: LogImage,
    syncs: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct LogImage {
    cluster: Option<ClusterId>,
    incarnation: u32,
    instance: Instance,
    configurations: BTreeMap<Slot, Configuration>,
    promised: Option<Ballot>,
    truncated: Slot,
    slots: BTreeMap<Slot, AcceptedValue>,
}

impl MemoryLogStore {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every write so far durable.
    pub fn sync(&mut self) {
        if self.durable != self.current {
            self.durable = self.current.clone();
            self.syncs += 1;
        }
    }

    /// Whether there are writes a sync would make durable.
    pub fn dirty(&self) -> bool {
        self.durable != self.current
    }

    /// Loses every write since the last sync, as a power cut would.
    pub fn crash(&mut self) {
        self.current = self.durable.clone();
    }

    /// The durable promise (what a crash now would keep).
    pub fn durable_promised(&self) -> Option<Ballot> {
        self.durable.promised
    }

    /// The durable value at `slot` (what a crash now would keep).
    pub fn durable_get(&self, slot: Slot) -> Option<&AcceptedValue> {
        self.durable.slots.get(&slot)
    }

    /// The durable truncation point (what a crash now would keep).
    pub fn durable_truncated(&self) -> Slot {
        self.durable.truncated
    }

    /// How many syncs wrote something.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }
}

impl LogStore for MemoryLogStore {
    fn cluster(&self) -> Option<ClusterId> {
        self.current.cluster
    }
    fn set_cluster(&mut self, cluster: ClusterId) {
        self.current.cluster = Some(cluster);
    }
    fn incarnation(&self) -> u32 {
        self.current.incarnation
    }
    fn set_incarnation(&mut self, incarnation: u32) {
        self.current.incarnation = incarnation;
    }
    fn promised(&self) -> Option<Ballot> {
        self.current.promised
    }
    fn set_promised(&mut self, ballot: Ballot) {
        self.current.promised = Some(ballot);
    }
    fn get(&self, slot: Slot) -> Option<AcceptedValue> {
        self.current.slots.get(&slot).cloned()
    }
    fn put(&mut self, slot: Slot, value: AcceptedValue) {
        self.current.slots.insert(slot, value);
    }
    fn last_slot(&self) -> Slot {
        self.current.slots.keys().next_back().copied().unwrap_or(0)
    }
    fn slots_from(&self, from: Slot, limit: usize) -> Vec<Slot> {
        self.current
            .slots
            .range(from..)
            .take(limit)
            .map(|(s, _)| *s)
            .collect()
    }
    fn truncated(&self) -> Slot {
        self.current.truncated
    }
    fn truncate(&mut self, upto: Slot) {
        if upto > self.current.truncated {
            self.current.truncated = upto;
            self.current.slots = self.current.slots.split_off(&(upto + 1));
        }
    }
    fn instance(&self) -> Instance {
        self.current.instance
    }
    fn set_instance(&mut self, instance: Instance) {
        self.current.instance = instance;
    }
    fn configurations(&self) -> Vec<(Slot, Configuration)> {
        self.current
            .configurations
            .iter()
            .map(|(s, c)| (*s, c.clone()))
            .collect()
    }
    fn put_configuration(&mut self, from: Slot, configuration: Configuration) {
        self.current.configurations.insert(from, configuration);
    }
}

/// What applying one entry gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The state's answer, returned to the proposer.
    pub response: Vec<u8>,
    /// The entry's id was applied before; the state did not change and `response` is the
    /// first application's answer.
    pub duplicate: bool,
}

/// The replicated state machine the chosen entries are applied to, in log order.
pub trait State {
    /// The slot every entry up to which is applied (0: none).
    fn applied(&self) -> Slot;
    /// Applies one entry at `position`. A state must apply an entry id at most once
    /// (see [`DedupTable`]) and must be deterministic: every member applies the same
    /// entries in the same order and must end in the same state.
    fn apply(&mut self, position: Position, entry: &Entry) -> Applied;
    /// Records that every entry of `slot` is applied (called after the slot's last
    /// [`apply`](State::apply), and for slots with no entries).
    fn set_applied(&mut self, slot: Slot);
    /// The answer of entry `id` if the state applied it (empty if the answer was
    /// forgotten), from its dedup table.
    fn applied_response(&self, id: &EntryId) -> Option<Vec<u8>>;
    /// The state's image as applied through [`applied`](State::applied): everything
    /// later applications depend on, the dedup table included, so that a member that
    /// [`install`](State::install)s it continues exactly as this one does (the seed's
    /// `freeze`). Members send it to members whose missing slots were compacted away.
    fn freeze(&self) -> Vec<u8>;
    /// Replaces the whole state by `image`, which [`freeze`](State::freeze) made on a
    /// member applied through `slot`; afterwards [`applied`](State::applied) is `slot`.
    /// Bytes that are not an image fail with [`SnapshotError`] and change nothing. Like
    /// every state write, it becomes durable with the log's next sync.
    fn install(&mut self, slot: Slot, image: &[u8]) -> Result<(), SnapshotError>;
}

/// Why snapshot bytes cannot be installed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The image does not decode.
    #[error("malformed state image: {0}")]
    Malformed(alloc::string::String),
}

/// The image a key-value state freezes to: its map, dedup table and digest.
#[derive(Serialize, Deserialize)]
pub struct KvImage {
    /// The map, in key order, each value with the position that wrote it.
    pub map: Vec<(Vec<u8>, Vec<u8>, Position)>,
    /// The dedup table.
    pub dedup: DedupTable,
    /// The chained digest.
    pub digest: [u8; 32],
}

/// A key-value map with the position that wrote each value.
pub type PositionedMap = BTreeMap<Vec<u8>, (Vec<u8>, Position)>;

impl KvImage {
    /// The image of `map` with its dedup table and digest.
    pub fn of(map: &PositionedMap, dedup: &DedupTable, digest: [u8; 32]) -> Self {
        KvImage {
            map: map
                .iter()
                .map(|(k, (v, p))| (k.clone(), v.clone(), *p))
                .collect(),
            dedup: dedup.clone(),
            digest,
        }
    }

    /// The map, the dedup table (counting `hits` duplicates, the installing state's own
    /// count) and the digest.
    pub fn into_parts(self, hits: u64) -> (PositionedMap, DedupTable, [u8; 32]) {
        let mut dedup = self.dedup;
        dedup.set_hits(hits);
        let map = self.map.into_iter().map(|(k, v, p)| (k, (v, p))).collect();
        (map, dedup, self.digest)
    }

    /// Encodes the image.
    pub fn encode(&self) -> Vec<u8> {
        crate::model::encode_value(self).unwrap_or_default()
    }

    /// Decodes an image; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        crate::model::decode_value("key-value state image", bytes)
            .map_err(|e| SnapshotError::Malformed(alloc::format!("{e}")))
    }
}

/// The most recent entry ids a state applied, per proposer, with their answers, so that a
/// retried entry is applied at most once.
///
/// Proposers number their entries in increasing order, so per proposer the table keeps
/// the last [`DedupTable::WINDOW`] ids applied and a floor below which every id counts as
/// applied (its answer forgotten). A retry older than the window is therefore refused as a
/// duplicate even if it never applied, which a proposer avoids by giving up on an entry
/// (reporting it indeterminate) long before it proposes `WINDOW` newer ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupTable {
    proposers: BTreeMap<PeerId, ProposerWindow>,
    /// A local count, not part of the replicated table (replicas' images are equal).
    #[serde(skip)]
    hits: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ProposerWindow {
    floor: u64,
    recent: BTreeMap<u64, Vec<u8>>,
}

impl DedupTable {
    /// Ids kept per proposer.
    pub const WINDOW: usize = 4096;

    /// The earlier answer if `id` was applied (an empty answer if it is below the window).
    pub fn seen(&self, id: &EntryId) -> Option<Vec<u8>> {
        let window = self.proposers.get(&id.proposer)?;
        if let Some(response) = window.recent.get(&id.seq) {
            return Some(response.clone());
        }
        (id.seq <= window.floor && window.floor > 0).then(Vec::new)
    }

    /// Records that `id` was applied with `response`; returns the id that left the
    /// window to make room, if one did (its proposer's floor rose to it).
    pub fn record(&mut self, id: EntryId, response: Vec<u8>) -> Option<EntryId> {
        let window = self.proposers.entry(id.proposer).or_default();
        window.recent.insert(id.seq, response);
        let mut evicted = None;
        while window.recent.len() > Self::WINDOW {
            if let Some((seq, _)) = window.recent.pop_first() {
                window.floor = window.floor.max(seq);
                evicted = Some(EntryId {
                    proposer: id.proposer,
                    seq,
                });
            }
        }
        evicted
    }

    /// The seq at or below which every id of `proposer` counts as applied (0: none).
    pub fn floor(&self, proposer: &PeerId) -> u64 {
        self.proposers.get(proposer).map_or(0, |w| w.floor)
    }

    /// Restores one remembered id with its answer, as a persistent state loads its table
    /// (no eviction: the window was kept when it was written).
    pub fn restore(&mut self, id: EntryId, response: Vec<u8>) {
        self.proposers
            .entry(id.proposer)
            .or_default()
            .recent
            .insert(id.seq, response);
    }

    /// Restores a proposer's floor.
    pub fn restore_floor(&mut self, proposer: PeerId, floor: u64) {
        let window = self.proposers.entry(proposer).or_default();
        window.floor = window.floor.max(floor);
    }

    /// Counts a duplicate that was refused.
    pub fn hit(&mut self) {
        self.hits += 1;
    }

    /// Duplicates refused so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Sets the count of duplicates refused (a state that installs another member's
    /// table keeps its own count).
    pub fn set_hits(&mut self, hits: u64) {
        self.hits = hits;
    }

    /// Whether `id` was applied.
    pub fn contains(&self, id: &EntryId) -> bool {
        self.seen(id).is_some()
    }

    /// Every remembered id with its answer, by proposer and seq.
    pub fn entries(&self) -> impl Iterator<Item = (EntryId, &[u8])> {
        self.proposers.iter().flat_map(|(proposer, w)| {
            w.recent.iter().map(|(seq, response)| {
                (
                    EntryId {
                        proposer: *proposer,
                        seq: *seq,
                    },
                    response.as_slice(),
                )
            })
        })
    }

    /// The proposers the table knows.
    pub fn proposers(&self) -> impl Iterator<Item = &PeerId> {
        self.proposers.keys()
    }
}

/// A command of the replicated key-value state ([`KvState`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes `key`.
    Remove {
        /// The key.
        key: Vec<u8>,
    },
    /// Sets `key` to `new` (`None` removes it) if its value is `expected` (`None`: absent).
    CompareAndSet {
        /// The key.
        key: Vec<u8>,
        /// The value expected.
        expected: Option<Vec<u8>>,
        /// The value to set.
        new: Option<Vec<u8>>,
    },
    /// Appends `value` to the list stored at `key` (the value is a bincode `Vec<Vec<u8>>`).
    Append {
        /// The key.
        key: Vec<u8>,
        /// The element.
        value: Vec<u8>,
    },
}

impl KvCommand {
    /// The command's bytes in a log entry.
    pub fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, crate::model::bincode_config()).unwrap_or_default()
    }

    /// Decodes a command; `None` for bytes that are not one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (command, read) = crate::model::decode_limited::<KvCommand>(bytes).ok()?;
        (read == bytes.len()).then_some(command)
    }
}

/// The answer to a [`KvCommand`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResponse {
    /// Done.
    Done,
    /// A compare-and-set swapped (`true`) or found another value (`false`).
    Swapped(bool),
    /// The command's bytes did not decode; nothing changed.
    Invalid,
}

impl KvResponse {
    /// The answer's bytes.
    pub fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, crate::model::bincode_config()).unwrap_or_default()
    }

    /// Decodes an answer.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (response, read) = crate::model::decode_limited::<KvResponse>(bytes).ok()?;
        (read == bytes.len()).then_some(response)
    }
}

/// A replicated key-value map with [`KvCommand`]s: each value keeps the position that
/// wrote it (its version), and a chained SHA-256 digest of everything applied lets
/// replicas prove they are equal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvState {
    map: PositionedMap,
    applied: Slot,
    dedup: DedupTable,
    digest: [u8; 32],
    /// A planted bug for the harness: apply retried entries again.
    #[cfg(test)]
    pub(crate) no_dedup: bool,
}

impl KvState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value at `key` and the position that wrote it.
    pub fn get(&self, key: &[u8]) -> Option<(&[u8], Position)> {
        self.map.get(key).map(|(v, p)| (v.as_slice(), *p))
    }

    /// Keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.map.keys().map(Vec::as_slice)
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The chained digest of every entry applied.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The dedup table.
    pub fn dedup(&self) -> &DedupTable {
        &self.dedup
    }

    /// Decodes a list written by [`KvCommand::Append`].
    pub fn decode_list(bytes: &[u8]) -> Vec<Vec<u8>> {
        crate::model::decode_limited::<Vec<Vec<u8>>>(bytes)
            .map(|(l, _)| l)
            .unwrap_or_default()
    }
}

impl State for KvState {
    fn applied(&self) -> Slot {
        self.applied
    }

    fn apply(&mut self, position: Position, entry: &Entry) -> Applied {
        #[cfg(test)]
        let check = !self.no_dedup;
        #[cfg(not(test))]
        let check = true;
        if let Some(response) = self.dedup.seen(&entry.id).filter(|_| check) {
            self.dedup.hit();
            return Applied {
                response,
                duplicate: true,
            };
        }
        let response = execute(&mut self.map, position, &entry.command).encode();
        self.dedup.record(entry.id, response.clone());
        self.digest = chain_digest(&self.digest, position, entry, &response);
        Applied {
            response,
            duplicate: false,
        }
    }

    fn set_applied(&mut self, slot: Slot) {
        self.applied = slot;
    }

    fn applied_response(&self, id: &EntryId) -> Option<Vec<u8>> {
        self.dedup.seen(id)
    }

    fn freeze(&self) -> Vec<u8> {
        KvImage::of(&self.map, &self.dedup, self.digest).encode()
    }

    fn install(&mut self, slot: Slot, image: &[u8]) -> Result<(), SnapshotError> {
        let hits = self.dedup.hits();
        (self.map, self.dedup, self.digest) = KvImage::decode(image)?.into_parts(hits);
        self.applied = slot;
        Ok(())
    }
}

/// The map a key-value state runs [`KvCommand`]s against: each value with the position
/// that wrote it. A persistent state implements it to note what changed.
pub trait KvMap {
    /// The value at `key`.
    fn value(&self, key: &[u8]) -> Option<&[u8]>;
    /// Sets `key` to `value`, written at `position`.
    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>, position: Position);
    /// Removes `key`.
    fn remove(&mut self, key: Vec<u8>);
}

impl KvMap for PositionedMap {
    fn value(&self, key: &[u8]) -> Option<&[u8]> {
        self.get(key).map(|(v, _)| v.as_slice())
    }
    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>, position: Position) {
        BTreeMap::insert(self, key, (value, position));
    }
    fn remove(&mut self, key: Vec<u8>) {
        BTreeMap::remove(self, &key);
    }
}

/// Runs the command encoded in `command` at `position` against `map`: the one definition
/// of what [`KvCommand`]s do, for every key-value state (bytes that are not a command
/// change nothing and answer [`KvResponse::Invalid`]).
pub fn execute(map: &mut impl KvMap, position: Position, command: &[u8]) -> KvResponse {
    let Some(command) = KvCommand::decode(command) else {
        return KvResponse::Invalid;
    };
    match command {
        KvCommand::Put { key, value } => {
            map.insert(key, value, position);
            KvResponse::Done
        }
        KvCommand::Remove { key } => {
            map.remove(key);
            KvResponse::Done
        }
        KvCommand::CompareAndSet { key, expected, new } => {
            if map.value(&key) != expected.as_deref() {
                return KvResponse::Swapped(false);
            }
            match new {
                Some(v) => map.insert(key, v, position),
                None => map.remove(key),
            }
            KvResponse::Swapped(true)
        }
        KvCommand::Append { key, value } => {
            let mut list = map
                .value(&key)
                .map(KvState::decode_list)
                .unwrap_or_default();
            list.push(value);
            let bytes = bincode::serde::encode_to_vec(&list, crate::model::bincode_config())
                .unwrap_or_default();
            map.insert(key, bytes, position);
            KvResponse::Done
        }
    }
}

/// The state digest after `entry`, applied at `position` with `response`, follows
/// `digest`: SHA-256 over the previous digest, the position, the entry's id and command,
/// and the answer. Replicas that applied the same entries have the same digest.
pub fn chain_digest(
    digest: &[u8; 32],
    position: Position,
    entry: &Entry,
    response: &[u8],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(digest);
    h.update(position.slot.to_be_bytes());
    h.update(position.index.to_be_bytes());
    h.update(entry.id.proposer.as_bytes());
    h.update(entry.id.seq.to_be_bytes());
    h.update(&entry.command);
    h.update(response);
    h.finalize().into()
}

/// Ids of entries in a value, for tests and checkers.
pub fn entry_ids(value: &Value) -> BTreeSet<EntryId> {
    match value {
        Value::Noop | Value::Reconfigure(_) => BTreeSet::new(),
        Value::Batch(entries) => entries.iter().map(|e| e.id).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> EntryId {
        EntryId {
            proposer: PeerId::from_seed(1),
            seq,
        }
    }

    #[test]
    fn dedup_window_keeps_answers_and_a_floor() {
        let mut t = DedupTable::default();
        assert!(t.seen(&id(1)).is_none());
        for seq in 1..=(DedupTable::WINDOW as u64 + 10) {
            t.record(id(seq), alloc::vec![seq as u8]);
        }
        assert_eq!(t.seen(&id(20)), Some(alloc::vec![20]));
        assert_eq!(
            t.seen(&id(3)),
            Some(Vec::new()),
            "below the window: applied"
        );
        assert!(t.seen(&id(DedupTable::WINDOW as u64 + 11)).is_none());
    }

    #[test]
    fn kv_applies_once_and_digests_agree() {
        let put = |seq, v: &[u8]| Entry {
            id: id(seq),
            command: KvCommand::Put {
                key: b"k".to_vec(),
                value: v.to_vec(),
            }
            .encode(),
        };
        let cas = Entry {
            id: id(3),
            command: KvCommand::CompareAndSet {
                key: b"k".to_vec(),
                expected: Some(b"a".to_vec()),
                new: Some(b"c".to_vec()),
            }
            .encode(),
        };
        let mut a = KvState::new();
        let p = |slot| Position { slot, index: 0 };
        assert!(!a.apply(p(1), &put(1, b"a")).duplicate);
        let again = a.apply(p(2), &put(1, b"b"));
        assert!(again.duplicate);
        assert_eq!(a.get(b"k").unwrap().0, b"a");
        let r = a.apply(p(3), &cas);
        assert_eq!(
            KvResponse::decode(&r.response),
            Some(KvResponse::Swapped(true))
        );
        assert_eq!(a.get(b"k").unwrap(), (&b"c"[..], p(3)));
        let mut b = KvState::new();
        b.apply(p(1), &put(1, b"a"));
        b.apply(p(2), &put(1, b"b"));
        b.apply(p(3), &cas);
        assert_eq!(a.digest(), b.digest());
        let garbage = Entry {
            id: id(9),
            command: alloc::vec![0xff; 3],
        };
        let r = a.apply(p(4), &garbage);
        assert_eq!(KvResponse::decode(&r.response), Some(KvResponse::Invalid));
        assert_ne!(a.digest(), b.digest());
    }

    /// A command of the property below: a key-value command by proposer `p` (a retry of
    /// an earlier id when `retry`).
    fn arb_command() -> impl proptest::strategy::Strategy<Value = (u8, bool, u8, u8, u8)> {
        use proptest::prelude::*;
        (0u8..3, any::<bool>(), 0u8..4, 0u8..4, any::<u8>())
    }

    fn kv_entry(p: u8, seq: u64, kind: u8, key: u8, v: u8) -> Entry {
        let key = alloc::vec![key];
        let command = match kind {
            0 => KvCommand::Put {
                key,
                value: alloc::vec![v],
            },
            1 => KvCommand::Remove { key },
            2 => KvCommand::CompareAndSet {
                key,
                expected: None,
                new: Some(alloc::vec![v]),
            },
            _ => KvCommand::Append {
                key,
                value: alloc::vec![v],
            },
        };
        Entry {
            id: EntryId {
                proposer: PeerId::from_seed(u64::from(p)),
                seq,
            },
            command: command.encode(),
        }
    }

    proptest::proptest! {
        /// A state installed from another's frozen image is that state: same digest and
        /// map, and every later entry (retries included) gets the same answer on both.
        #[test]
        fn an_installed_image_continues_like_its_original(
            before in proptest::collection::vec(arb_command(), 0..40),
            after in proptest::collection::vec(arb_command(), 0..40),
        ) {
            let mut original = KvState::new();
            let mut seqs = [0u64; 3];
            let run = |state: &mut KvState,
                       ops: &[(u8, bool, u8, u8, u8)],
                       seqs: &mut [u64; 3],
                       slot0: u64| {
                let mut answers = Vec::new();
                for (i, &(p, retry, kind, key, v)) in ops.iter().enumerate() {
                    let seq = if retry && seqs[p as usize] > 0 {
                        seqs[p as usize]
                    } else {
                        seqs[p as usize] += 1;
                        seqs[p as usize]
                    };
                    let slot = slot0 + i as u64;
                    let entry = kv_entry(p, seq, kind, key, v);
                    answers.push(state.apply(Position { slot, index: 0 }, &entry));
                    state.set_applied(slot);
                }
                answers
            };
            run(&mut original, &before, &mut seqs, 1);
            let image = original.freeze();
            let mut copy = KvState::new();
            let slot = original.applied();
            copy.install(slot, &image).unwrap();
            proptest::prop_assert_eq!(copy.applied(), slot);
            proptest::prop_assert_eq!(copy.digest(), original.digest());
            proptest::prop_assert_eq!(copy.freeze(), image);
            let mut seqs_copy = seqs;
            let a = run(&mut original, &after, &mut seqs, slot + 1);
            let b = run(&mut copy, &after, &mut seqs_copy, slot + 1);
            proptest::prop_assert_eq!(a, b);
            proptest::prop_assert_eq!(copy.digest(), original.digest());
        }

        /// Bytes that are not an image change nothing.
        #[test]
        fn garbage_is_not_installed(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let mut state = KvState::new();
            state.apply(Position { slot: 1, index: 0 }, &kv_entry(0, 1, 0, 1, 1));
            state.set_applied(1);
            let before = state.clone();
            if state.install(9, &bytes).is_err() {
                proptest::prop_assert_eq!(state, before);
            }
        }
    }

    #[test]
    fn memory_log_loses_unsynced_writes_at_a_crash() {
        let b = Ballot {
            round: 1,
            leader: PeerId::from_seed(2),
        };
        let mut log = MemoryLogStore::new();
        log.set_promised(b);
        log.sync();
        log.put(
            1,
            AcceptedValue {
                ballot: b,
                value: Value::Noop,
                chosen: false,
            },
        );
        assert!(log.dirty());
        log.crash();
        assert_eq!(log.promised(), Some(b));
        assert!(log.get(1).is_none());
    }
}
