//! The consensus member's acceptor log and replicated key-value state on a store backend.
//!
//! [`PersistentLog`] implements the core's [`LogStore`] and [`PersistentKvState`] its
//! [`State`] (with the semantics of [`KvState`](netabase_core::consensus::KvState)) over any [`Backend`], so that a
//! [`Member`](netabase_core::consensus::Member) survives restarts.
//!
//! # Durability
//!
//! The [`LogStore`] and [`State`] methods cannot fail: every write takes effect at once in
//! memory, and [`PersistentLog::sync`] (with [`PersistentLog::flush`], the only fallible
//! operations) makes every write of the log so far durable in one
//! [`Durability::Immediate`] transaction, the state's with it when due (below). The
//! driver calls it before each output that [`waits_for_sync`](netabase_core::consensus::Output::waits_for_sync)
//! (and whenever the member [`needs_sync`](netabase_core::consensus::Member::needs_sync)),
//! then calls [`Member::synced`](netabase_core::consensus::Member::synced).
//!
//! The state never writes on its own: its changes (values, applied slot, dedup table and
//! digest) are buffered in memory and written by a sync of the log, in the same
//! transaction as the log's promise, cluster, incarnation, slots and truncation point. A
//! `sync` writes them only when they are due: when it truncates the log, or once the state
//! applied [`STATE_WRITE_INTERVAL`] slots or changed [`STATE_WRITE_ROWS`] rows since its
//! rows were last written ([`PersistentLog::flush`] writes them whatever their age, for a
//! clean stop). Slots applied in between cost no state rows in the commit that makes each
//! of them durable; after a crash they are replayed from the log, which keeps them (it
//! truncates only in a transaction that writes the state). A compaction (the log drops
//! slots its state applied) and a snapshot install (the state replaced by another
//! member's, the log truncated through its slot) are therefore atomic: a crash
//! keeps the state with the log it was written with. A state only applies slots the
//! log holds as chosen, so whatever a crash keeps of the state is applied through a slot
//! at or below the chosen prefix of the log it was kept with: the state is never ahead of
//! the durable log, and [`Member::new`](netabase_core::consensus::Member::new) replays the
//! rest of the chosen prefix into it. A crash loses exactly the writes since the last
//! successful `sync`; a failed `sync` keeps them for the next one.
//!
//! # Memory
//!
//! Both keep everything in memory, loaded at `open`: the log caches every slot it holds
//! (those after its truncation point: the member compacts it, see
//! [`Compaction`](netabase_core::consensus::Compaction)), and the state holds its whole map, like [`KvState`](netabase_core::consensus::KvState). Reads never
//! touch the backend, so they cannot fail. A `sync` writes only what changed since the
//! previous one: the dedup table's rows are written and deleted one by one as entries
//! enter and leave its window ([`DedupTable::WINDOW`] answers per proposer).
//!
//! # Layout
//!
//! Tables (every row behind the crate's value header, see [`codec`], with
//! layout version 1, and bincode 2 inside):
//!
//! | table | key | value |
//! |---|---|---|
//! | [`LOG_TABLE`] | slot, big-endian `u64` | [`AcceptedValue`] |
//! | [`META_TABLE`] | `cluster`, `incarnation`, `promised`, `instance`, `configurations`, `truncated` | [`ClusterId`], `u32`, [`Ballot`], [`Instance`], the configurations by first slot, [`Slot`] |
//! | [`KV_TABLE`] | the key's bytes | the value's bytes and the [`Position`] that wrote it |
//! | [`KV_META_TABLE`] | `applied`, `digest` | [`Slot`], `[u8; 32]` |
//! | [`DEDUP_TABLE`] | proposer id length (one byte), its bytes, seq (big-endian `u64`) | the entry's answer |
//! | [`DEDUP_FLOOR_TABLE`] | proposer id bytes | its floor, `u64` |
//!
//! A row that does not decode (damaged bytes, a key that is not a slot, an unknown key)
//! fails `open` with [`StoreError::Corrupt`] naming its table and key.
//!
//! One log, with at most one state, may use a backend at a time; the tables can share a
//! database with a typed [`Store`](crate::Store).
//!
//! ```
//! use std::sync::Arc;
//! use netabase_store::MemoryBackend;
//! use netabase_store::consensus::{PersistentKvState, PersistentLog};
//! use netabase_store::core::consensus::{Ballot, LogStore};
//! use netabase_store::core::PeerId;
//!
//! # fn main() -> netabase_store::Result<()> {
//! let backend = Arc::new(MemoryBackend::new());
//! let mut log = PersistentLog::open(Arc::clone(&backend))?;
//! let state = PersistentKvState::open(&mut log)?;
//! let ballot = Ballot { round: 1, leader: PeerId::from_seed(1) };
//! log.set_promised(ballot);
//! log.sync()?;
//! drop((log, state));
//! let log = PersistentLog::open(backend)?;
//! assert_eq!(log.promised(), Some(ballot));
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use netabase_core::PeerId;
use netabase_core::consensus::{
    AcceptedValue, Applied, Ballot, ClusterId, Configuration, DedupTable, Entry, EntryId, Instance,
    KvImage, KvMap, LogStore, Position, PositionedMap, Slot, SnapshotError, State, chain_digest,
    execute,
};
use netabase_core::model::decode_value;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::guard::TxGuard;
use crate::backend::{Backend, Durability, FULL_RANGE, ReadTransaction, WriteTransaction};
use crate::codec;
use crate::error::{Result, StoreError};

/// The accepted values, one row per slot.
pub const LOG_TABLE: &str = "paxos.log";
/// The log's cluster id, incarnation, instance, promise and configurations.
pub const META_TABLE: &str = "paxos.meta";
/// The key-value state's map.
pub const KV_TABLE: &str = "paxos.kv";
/// The key-value state's applied slot and digest.
pub const KV_META_TABLE: &str = "paxos.kv.meta";
/// The key-value state's dedup table: the answers of the entry ids it remembers.
pub const DEDUP_TABLE: &str = "paxos.dedup";
/// The dedup table's floors: per proposer, the seq at or below which every id counts as
/// applied.
pub const DEDUP_FLOOR_TABLE: &str = "paxos.dedup.floor";

/// Slots a state may apply beyond its rows in the backend before a [`PersistentLog::sync`]
/// writes them (besides the syncs that truncate the log, which always do, and
/// [`STATE_WRITE_ROWS`]). A commit that makes a slot durable then writes only the log's
/// rows, not the state's map, dedup and meta rows (on redb, 7 pages per commit instead
/// of 12 with one writer); a restart replays at most this many slots from the log more.
pub const STATE_WRITE_INTERVAL: Slot = 1024;

/// Changed rows of a state (keys, dedup entries and floors) after which a
/// [`PersistentLog::sync`] writes them even before [`STATE_WRITE_INTERVAL`] slots, so
/// that busy slots of many entries do not pile up one large transaction.
pub const STATE_WRITE_ROWS: usize = 1024;

/// The layout version in the header of every row.
const LAYOUT: u32 = 1;

const CLUSTER_KEY: &[u8] = b"cluster";
const INCARNATION_KEY: &[u8] = b"incarnation";
const PROMISED_KEY: &[u8] = b"promised";
const INSTANCE_KEY: &[u8] = b"instance";
const CONFIGURATIONS_KEY: &[u8] = b"configurations";
const TRUNCATED_KEY: &[u8] = b"truncated";
const APPLIED_KEY: &[u8] = b"applied";
const DIGEST_KEY: &[u8] = b"digest";

/// One row to put (`Some`) or delete (`None`).
type Change = (&'static str, Vec<u8>, Option<Vec<u8>>);

/// Encodes a row.
fn seal<T: Serialize + ?Sized>(table: &'static str, key: &[u8], value: &T) -> Result<Vec<u8>> {
    codec::seal(LAYOUT, value).map_err(|e| {
        StoreError::Backend(format!(
            "cannot encode a row of {table} under {key:02x?}: {e}"
        ))
    })
}

/// Decodes a row, or says what is wrong with it.
fn unseal<T: DeserializeOwned>(table: &'static str, key: &[u8], bytes: &[u8]) -> Result<T> {
    let payload =
        codec::open_version(bytes, LAYOUT).map_err(|r| StoreError::corrupt(table, key, r))?;
    decode_value(table, payload).map_err(|e| StoreError::corrupt(table, key, e.to_string()))
}

/// Every row of `table`, in key order.
fn rows<T: ReadTransaction + ?Sized>(tx: &T, table: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    tx.scan(table, FULL_RANGE, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// Locks a mutex; a panic elsewhere while it was held leaves data that is still whole
/// (every critical section here keeps it consistent), so poisoning is ignored.
fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn guard<B: Backend>(backend: &Arc<B>) -> Result<TxGuard> {
    TxGuard::enter(Arc::as_ptr(backend) as *const () as usize)
}

/// Writes a state buffers until the log's sync.
trait Staged: Send {
    /// Whether there is anything to write.
    fn dirty(&self) -> bool;
    /// The rows to write.
    fn changes(&self) -> Result<Vec<Change>>;
    /// The rows were written durably.
    fn written(&mut self);
    /// Whether a sync should write the rows ([`STATE_WRITE_INTERVAL`] slots or
    /// [`STATE_WRITE_ROWS`] rows changed since they were last written).
    fn due(&self) -> bool;
}

/// The log's meta and slots, as a backend holds them or as written since the last sync.
#[derive(Clone, Debug, Default)]
struct LogImage {
    cluster: Option<ClusterId>,
    incarnation: Option<u32>,
    instance: Option<Instance>,
    promised: Option<Ballot>,
    /// Every configuration (a handful: one per membership change), in one row.
    configurations: Option<BTreeMap<Slot, Configuration>>,
    /// Every slot at or below this one is compacted away.
    truncated: Option<Slot>,
    slots: BTreeMap<Slot, AcceptedValue>,
}

impl LogImage {
    fn is_empty(&self) -> bool {
        self.cluster.is_none()
            && self.incarnation.is_none()
            && self.instance.is_none()
            && self.promised.is_none()
            && self.configurations.is_none()
            && self.truncated.is_none()
            && self.slots.is_empty()
    }
}

/// The core's [`LogStore`] on a store [`Backend`]: writes go to an in-memory overlay and
/// become durable at [`sync`](PersistentLog::sync), in one transaction together with the
/// changes of the [`PersistentKvState`] opened on this log.
///
/// Reads see the overlay over a cache of the whole durable log, loaded at
/// [`open`](PersistentLog::open); see the [module documentation](self) for the layout and
/// the memory this costs.
pub struct PersistentLog<B: Backend> {
    backend: Arc<B>,
    /// What the backend holds.
    durable: LogImage,
    /// What was written since the last sync.
    overlay: LogImage,
    /// The attached state's buffer, written by the syncs it is due at.
    state: Option<Weak<Mutex<dyn Staged>>>,
    syncs: u64,
}

impl<B: Backend> fmt::Debug for PersistentLog<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistentLog")
            .field("backend", &self.backend.kind())
            .field("cluster", &self.cluster())
            .field("incarnation", &self.incarnation())
            .field("promised", &self.promised())
            .field("last_slot", &self.last_slot())
            .field("unsynced_slots", &self.overlay.slots.len())
            .field("syncs", &self.syncs)
            .finish()
    }
}

impl<B: Backend> PersistentLog<B> {
    /// Opens the log kept in `backend` (an empty log if it holds none) and loads all of
    /// it into memory. A row that does not decode fails with [`StoreError::Corrupt`].
    pub fn open(backend: Arc<B>) -> Result<Self> {
        let durable = {
            let _guard = guard(&backend)?;
            let tx = backend.begin_read()?;
            load_log(&tx)?
        };
        Ok(PersistentLog {
            backend,
            durable,
            overlay: LogImage::default(),
            state: None,
            syncs: 0,
        })
    }

    /// Makes every write of the log so far durable in one durable transaction, with the
    /// state's changes when they are due (this sync truncates the log, or the state
    /// applied [`STATE_WRITE_INTERVAL`] slots or changed [`STATE_WRITE_ROWS`] rows since
    /// its rows were last written);
    /// costs nothing when nothing is to be written. On an error nothing of it is written
    /// and every write stays pending for the next sync.
    pub fn sync(&mut self) -> Result<()> {
        self.write(false)
    }

    /// Like [`sync`](Self::sync), and writes the state's changes whatever their age: a
    /// node stopping cleanly calls it, so that it restarts without replaying the slots its
    /// state applied since its rows were last written.
    pub fn flush(&mut self) -> Result<()> {
        self.write(true)
    }

    fn write(&mut self, whole_state: bool) -> Result<()> {
        let state = self.state.as_ref().and_then(Weak::upgrade);
        let mut state = state.as_deref().map(lock);
        let write_state = state.as_ref().is_some_and(|s| {
            s.dirty() && (whole_state || self.overlay.truncated.is_some() || s.due())
        });
        if self.overlay.is_empty() && !write_state {
            return Ok(());
        }
        let mut changes = Vec::with_capacity(self.overlay.slots.len() + 3);
        let overlay = &self.overlay;
        if let Some(cluster) = &overlay.cluster {
            changes.push(meta_row(CLUSTER_KEY, cluster)?);
        }
        if let Some(incarnation) = &overlay.incarnation {
            changes.push(meta_row(INCARNATION_KEY, incarnation)?);
        }
        if let Some(promised) = &overlay.promised {
            changes.push(meta_row(PROMISED_KEY, promised)?);
        }
        if let Some(instance) = &overlay.instance {
            changes.push(meta_row(INSTANCE_KEY, instance)?);
        }
        if let Some(configurations) = &overlay.configurations {
            changes.push(meta_row(CONFIGURATIONS_KEY, configurations)?);
        }
        if let Some(truncated) = overlay.truncated {
            // The compacted slots go in the same transaction as the state that holds
            // them applied.
            changes.push(meta_row(TRUNCATED_KEY, &truncated)?);
            for slot in self.durable.slots.range(..=truncated).map(|(s, _)| *s) {
                changes.push((LOG_TABLE, slot.to_be_bytes().to_vec(), None));
            }
        }
        for (slot, value) in &overlay.slots {
            let key = slot.to_be_bytes();
            let row = seal(LOG_TABLE, &key, value)?;
            changes.push((LOG_TABLE, key.to_vec(), Some(row)));
        }
        if let Some(state) = state.as_ref().filter(|_| write_state) {
            changes.extend(state.changes()?);
        }
        {
            let _guard = guard(&self.backend)?;
            let mut tx = self.backend.begin_write_with(Durability::Immediate)?;
            for (table, key, value) in &changes {
                match value {
                    Some(value) => tx.put(table, key, value)?,
                    None => tx.delete(table, key)?,
                }
            }
            tx.commit()?;
        }
        if let Some(state) = state.as_mut().filter(|_| write_state) {
            state.written();
        }
        let overlay = std::mem::take(&mut self.overlay);
        if overlay.cluster.is_some() {
            self.durable.cluster = overlay.cluster;
        }
        if overlay.incarnation.is_some() {
            self.durable.incarnation = overlay.incarnation;
        }
        if overlay.promised.is_some() {
            self.durable.promised = overlay.promised;
        }
        if overlay.instance.is_some() {
            self.durable.instance = overlay.instance;
        }
        if overlay.configurations.is_some() {
            self.durable.configurations = overlay.configurations;
        }
        if let Some(truncated) = overlay.truncated {
            self.durable.truncated = Some(truncated);
            self.durable.slots = self.durable.slots.split_off(&(truncated + 1));
        }
        self.durable.slots.extend(overlay.slots);
        self.syncs += 1;
        Ok(())
    }

    /// Whether a sync would write something (of the log or of its state).
    pub fn dirty(&self) -> bool {
        !self.overlay.is_empty()
            || self
                .state
                .as_ref()
                .and_then(Weak::upgrade)
                .is_some_and(|s| lock(&s).dirty())
    }

    /// How many syncs wrote something.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// The number of slots with a value.
    pub fn len(&self) -> usize {
        let truncated = self.truncated();
        self.durable.slots.range(truncated + 1..).count()
            + self
                .overlay
                .slots
                .keys()
                .filter(|s| !self.durable.slots.contains_key(s))
                .count()
    }

    /// Whether no slot has a value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// Attaches a state's buffer: the next syncs write it. A state attached before is
    /// detached.
    fn attach(&mut self, state: Weak<Mutex<dyn Staged>>) {
        self.state = Some(state);
    }
}

fn meta_row<T: Serialize>(key: &'static [u8], value: &T) -> Result<Change> {
    Ok((
        META_TABLE,
        key.to_vec(),
        Some(seal(META_TABLE, key, value)?),
    ))
}

fn load_log<T: ReadTransaction + ?Sized>(tx: &T) -> Result<LogImage> {
    let mut image = LogImage::default();
    for (key, value) in rows(tx, META_TABLE)? {
        match key.as_slice() {
            CLUSTER_KEY => image.cluster = Some(unseal(META_TABLE, &key, &value)?),
            INCARNATION_KEY => image.incarnation = Some(unseal(META_TABLE, &key, &value)?),
            PROMISED_KEY => image.promised = Some(unseal(META_TABLE, &key, &value)?),
            INSTANCE_KEY => image.instance = Some(unseal(META_TABLE, &key, &value)?),
            CONFIGURATIONS_KEY => {
                image.configurations = Some(unseal(META_TABLE, &key, &value)?);
            }
            TRUNCATED_KEY => image.truncated = Some(unseal(META_TABLE, &key, &value)?),
            _ => return Err(StoreError::corrupt(META_TABLE, &key, "unknown key")),
        }
    }
    for (key, value) in rows(tx, LOG_TABLE)? {
        let slot = <[u8; 8]>::try_from(key.as_slice())
            .map(u64::from_be_bytes)
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| StoreError::corrupt(LOG_TABLE, &key, "not a slot number"))?;
        image.slots.insert(slot, unseal(LOG_TABLE, &key, &value)?);
    }
    Ok(image)
}

impl<B: Backend> LogStore for PersistentLog<B> {
    fn cluster(&self) -> Option<ClusterId> {
        self.overlay.cluster.or(self.durable.cluster)
    }

    fn set_cluster(&mut self, cluster: ClusterId) {
        self.overlay.cluster = Some(cluster);
    }

    fn incarnation(&self) -> u32 {
        self.overlay
            .incarnation
            .or(self.durable.incarnation)
            .unwrap_or(0)
    }

    fn set_incarnation(&mut self, incarnation: u32) {
        self.overlay.incarnation = Some(incarnation);
    }

    fn promised(&self) -> Option<Ballot> {
        self.overlay.promised.or(self.durable.promised)
    }

    fn set_promised(&mut self, ballot: Ballot) {
        self.overlay.promised = Some(ballot);
    }

    fn get(&self, slot: Slot) -> Option<AcceptedValue> {
        if slot <= self.truncated() {
            return None;
        }
        self.overlay
            .slots
            .get(&slot)
            .or_else(|| self.durable.slots.get(&slot))
            .cloned()
    }

    fn put(&mut self, slot: Slot, value: AcceptedValue) {
        self.overlay.slots.insert(slot, value);
    }

    fn last_slot(&self) -> Slot {
        let last = |m: &BTreeMap<Slot, AcceptedValue>| m.keys().next_back().copied().unwrap_or(0);
        let last = last(&self.overlay.slots).max(last(&self.durable.slots));
        if last <= self.truncated() { 0 } else { last }
    }

    fn slots_from(&self, from: Slot, limit: usize) -> Vec<Slot> {
        let from = from.max(self.truncated() + 1);
        let overlay = self
            .overlay
            .slots
            .range(from..)
            .map(|(s, _)| *s)
            .take(limit);
        let durable = self
            .durable
            .slots
            .range(from..)
            .map(|(s, _)| *s)
            .take(limit);
        let merged: BTreeSet<Slot> = overlay.chain(durable).collect();
        merged.into_iter().take(limit).collect()
    }

    fn truncated(&self) -> Slot {
        self.overlay
            .truncated
            .or(self.durable.truncated)
            .unwrap_or(0)
    }

    fn truncate(&mut self, upto: Slot) {
        if upto > self.truncated() {
            self.overlay.truncated = Some(upto);
            self.overlay.slots = self.overlay.slots.split_off(&(upto + 1));
        }
    }

    fn instance(&self) -> Instance {
        self.overlay.instance.or(self.durable.instance).unwrap_or(0)
    }

    fn set_instance(&mut self, instance: Instance) {
        self.overlay.instance = Some(instance);
    }

    fn configurations(&self) -> Vec<(Slot, Configuration)> {
        self.overlay
            .configurations
            .as_ref()
            .or(self.durable.configurations.as_ref())
            .map(|c| c.iter().map(|(s, c)| (*s, c.clone())).collect())
            .unwrap_or_default()
    }

    fn put_configuration(&mut self, from: Slot, configuration: Configuration) {
        let mut all = self
            .overlay
            .configurations
            .take()
            .or_else(|| self.durable.configurations.clone())
            .unwrap_or_default();
        all.insert(from, configuration);
        self.overlay.configurations = Some(all);
    }
}

/// The state's data and what changed since the last sync.
#[derive(Debug, Default)]
struct KvInner {
    map: PositionedMap,
    applied: Slot,
    dedup: DedupTable,
    digest: [u8; 32],
    /// Keys written since the last sync.
    dirty_keys: BTreeSet<Vec<u8>>,
    /// Dedup entries recorded (`Some`) or evicted (`None`) since the last sync.
    dirty_dedup: BTreeMap<EntryId, Option<Vec<u8>>>,
    /// Proposers whose dedup floor rose since the last sync.
    dirty_floors: BTreeSet<PeerId>,
    /// The applied slot, dedup table or digest changed since the last sync.
    dirty_meta: bool,
    /// The applied slot the backend holds.
    written_applied: Slot,
}

impl KvInner {
    fn load<T: ReadTransaction + ?Sized>(tx: &T) -> Result<Self> {
        let mut inner = KvInner::default();
        for (key, value) in rows(tx, KV_META_TABLE)? {
            match key.as_slice() {
                APPLIED_KEY => inner.applied = unseal(KV_META_TABLE, &key, &value)?,
                DIGEST_KEY => inner.digest = unseal(KV_META_TABLE, &key, &value)?,
                _ => return Err(StoreError::corrupt(KV_META_TABLE, &key, "unknown key")),
            }
        }
        for (key, value) in rows(tx, KV_TABLE)? {
            let value = unseal(KV_TABLE, &key, &value)?;
            inner.map.insert(key, value);
        }
        for (key, value) in rows(tx, DEDUP_TABLE)? {
            let id = dedup_id(&key)
                .ok_or_else(|| StoreError::corrupt(DEDUP_TABLE, &key, "not an entry id"))?;
            inner.dedup.restore(id, unseal(DEDUP_TABLE, &key, &value)?);
        }
        for (key, value) in rows(tx, DEDUP_FLOOR_TABLE)? {
            let proposer = PeerId::from_bytes(&key)
                .map_err(|e| StoreError::corrupt(DEDUP_FLOOR_TABLE, &key, e.to_string()))?;
            inner
                .dedup
                .restore_floor(proposer, unseal(DEDUP_FLOOR_TABLE, &key, &value)?);
        }
        inner.written_applied = inner.applied;
        Ok(inner)
    }
}

/// The state's map, noting the keys it writes.
impl KvMap for KvInner {
    fn value(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.value(key)
    }

    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>, position: Position) {
        self.dirty_keys.insert(key.clone());
        self.map.insert(key, (value, position));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.map.remove(&key);
        self.dirty_keys.insert(key);
    }
}

impl Staged for KvInner {
    fn dirty(&self) -> bool {
        self.dirty_meta || !self.dirty_keys.is_empty() || !self.dirty_dedup.is_empty()
    }

    fn changes(&self) -> Result<Vec<Change>> {
        let mut out = Vec::with_capacity(self.dirty_keys.len() + 3);
        for key in &self.dirty_keys {
            let row = match self.map.get(key) {
                Some(value) => Some(seal(KV_TABLE, key, value)?),
                None => None,
            };
            out.push((KV_TABLE, key.clone(), row));
        }
        if self.dirty_meta {
            let meta = |key: &'static [u8], row| (KV_META_TABLE, key.to_vec(), Some(row));
            out.push(meta(
                APPLIED_KEY,
                seal(KV_META_TABLE, APPLIED_KEY, &self.applied)?,
            ));
            out.push(meta(
                DIGEST_KEY,
                seal(KV_META_TABLE, DIGEST_KEY, &self.digest)?,
            ));
        }
        for (id, response) in &self.dirty_dedup {
            let key = dedup_key(id);
            let row = match response {
                Some(r) => Some(seal(DEDUP_TABLE, &key, r)?),
                None => None,
            };
            out.push((DEDUP_TABLE, key, row));
        }
        for proposer in &self.dirty_floors {
            let key = proposer.to_bytes();
            let floor = self.dedup.floor(proposer);
            let row = match floor {
                0 => None,
                _ => Some(seal(DEDUP_FLOOR_TABLE, &key, &floor)?),
            };
            out.push((DEDUP_FLOOR_TABLE, key, row));
        }
        Ok(out)
    }

    fn due(&self) -> bool {
        self.applied.saturating_sub(self.written_applied) >= STATE_WRITE_INTERVAL
            || self.dirty_keys.len() + self.dirty_dedup.len() + self.dirty_floors.len()
                >= STATE_WRITE_ROWS
    }

    fn written(&mut self) {
        self.written_applied = self.applied;
        self.dirty_keys.clear();
        self.dirty_dedup.clear();
        self.dirty_floors.clear();
        self.dirty_meta = false;
    }
}

/// The core's key-value [`State`] with the semantics of [`KvState`](netabase_core::consensus::KvState) (the same commands,
/// answers, dedup and chained digest: a replica of either kind that applied the same
/// entries reports the same digest), kept in the backend of a [`PersistentLog`].
///
/// The state holds its whole map in memory (loaded at [`open`](PersistentKvState::open))
/// and never writes on its own: the log's syncs write its changes (when due, see
/// [`STATE_WRITE_INTERVAL`]) in the log's durable transaction, so that a crash never
/// leaves it ahead of the durable log (see the [module documentation](self)).
pub struct PersistentKvState<B: Backend> {
    inner: Arc<Mutex<KvInner>>,
    _backend: PhantomData<fn() -> B>,
}

impl<B: Backend> fmt::Debug for PersistentKvState<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = lock(&self.inner);
        f.debug_struct("PersistentKvState")
            .field("keys", &inner.map.len())
            .field("applied", &inner.applied)
            .field("digest", &inner.digest)
            .field("unsynced_keys", &inner.dirty_keys.len())
            .finish()
    }
}

impl<B: Backend> PersistentKvState<B> {
    /// Opens the state kept in `log`'s backend (an empty state if it holds none), loads
    /// all of it into memory and attaches it to `log`, whose syncs then write its changes.
    /// A state opened on the same log before is detached: its writes since the last sync
    /// are never written. A row that does not decode fails with [`StoreError::Corrupt`].
    pub fn open(log: &mut PersistentLog<B>) -> Result<Self> {
        let inner = {
            let _guard = guard(&log.backend)?;
            let tx = log.backend.begin_read()?;
            KvInner::load(&tx)?
        };
        let inner = Arc::new(Mutex::new(inner));
        let staged: Arc<Mutex<dyn Staged>> = inner.clone();
        log.attach(Arc::downgrade(&staged));
        Ok(PersistentKvState {
            inner,
            _backend: PhantomData,
        })
    }

    /// The value at `key` and the position that wrote it.
    pub fn get(&self, key: &[u8]) -> Option<(Vec<u8>, Position)> {
        lock(&self.inner).map.get(key).cloned()
    }

    /// The keys, in order.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        lock(&self.inner).map.keys().cloned().collect()
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        lock(&self.inner).map.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        lock(&self.inner).map.is_empty()
    }

    /// The chained digest of every entry applied (as [`KvState::digest`](netabase_core::consensus::KvState::digest)).
    pub fn digest(&self) -> [u8; 32] {
        lock(&self.inner).digest
    }

    /// Duplicates refused since the state was opened (as [`DedupTable::hits`]).
    pub fn dedup_hits(&self) -> u64 {
        lock(&self.inner).dedup.hits()
    }

    /// Whether the state changed since its rows were last written.
    pub fn dirty(&self) -> bool {
        lock(&self.inner).dirty()
    }
}

impl<B: Backend> State for PersistentKvState<B> {
    fn applied(&self) -> Slot {
        lock(&self.inner).applied
    }

    fn apply(&mut self, position: Position, entry: &Entry) -> Applied {
        let mut inner = lock(&self.inner);
        inner.dirty_meta = true;
        if let Some(response) = inner.dedup.seen(&entry.id) {
            inner.dedup.hit();
            return Applied {
                response,
                duplicate: true,
            };
        }
        let response = execute(&mut *inner, position, &entry.command).encode();
        if let Some(evicted) = inner.dedup.record(entry.id, response.clone()) {
            inner.dirty_dedup.insert(evicted, None);
            inner.dirty_floors.insert(evicted.proposer);
        }
        inner.dirty_dedup.insert(entry.id, Some(response.clone()));
        inner.digest = chain_digest(&inner.digest, position, entry, &response);
        Applied {
            response,
            duplicate: false,
        }
    }

    fn set_applied(&mut self, slot: Slot) {
        let mut inner = lock(&self.inner);
        inner.applied = slot;
        inner.dirty_meta = true;
    }

    fn applied_response(&self, id: &EntryId) -> Option<Vec<u8>> {
        lock(&self.inner).dedup.seen(id)
    }

    fn freeze(&self) -> Vec<u8> {
        let inner = lock(&self.inner);
        KvImage::of(&inner.map, &inner.dedup, inner.digest).encode()
    }

    fn install(&mut self, slot: Slot, image: &[u8]) -> std::result::Result<(), SnapshotError> {
        let image = KvImage::decode(image)?;
        let mut inner = lock(&self.inner);
        let inner = &mut *inner;
        // Every row of the old state is rewritten or deleted at the next sync.
        let old_keys: Vec<Vec<u8>> = inner.map.keys().cloned().collect();
        inner.dirty_keys.extend(old_keys);
        let old_ids: Vec<EntryId> = inner.dedup.entries().map(|(id, _)| id).collect();
        for id in old_ids {
            inner.dirty_dedup.insert(id, None);
        }
        let old_proposers: Vec<PeerId> = inner.dedup.proposers().copied().collect();
        inner.dirty_floors.extend(old_proposers);
        let hits = inner.dedup.hits();
        (inner.map, inner.dedup, inner.digest) = image.into_parts(hits);
        inner.applied = slot;
        inner.dirty_meta = true;
        let new_keys: Vec<Vec<u8>> = inner.map.keys().cloned().collect();
        inner.dirty_keys.extend(new_keys);
        let new_ids: Vec<(EntryId, Vec<u8>)> = inner
            .dedup
            .entries()
            .map(|(id, r)| (id, r.to_vec()))
            .collect();
        for (id, response) in new_ids {
            inner.dirty_dedup.insert(id, Some(response));
        }
        let new_proposers: Vec<PeerId> = inner.dedup.proposers().copied().collect();
        inner.dirty_floors.extend(new_proposers);
        Ok(())
    }
}

/// A dedup row's key: the proposer's id bytes (length first) and the seq, big-endian.
fn dedup_key(id: &EntryId) -> Vec<u8> {
    let proposer = id.proposer.as_bytes();
    let mut key = Vec::with_capacity(1 + proposer.len() + 8);
    key.push(proposer.len() as u8);
    key.extend_from_slice(proposer);
    key.extend_from_slice(&id.seq.to_be_bytes());
    key
}

/// The entry id of a dedup row's key.
fn dedup_id(key: &[u8]) -> Option<EntryId> {
    let (&len, rest) = key.split_first()?;
    let len = usize::from(len);
    if rest.len() != len + 8 {
        return None;
    }
    let proposer = PeerId::from_bytes(&rest[..len]).ok()?;
    let seq = u64::from_be_bytes(rest[len..].try_into().ok()?);
    Some(EntryId { proposer, seq })
}
