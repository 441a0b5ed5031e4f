//! The DHT's record storage on a persistent backend.

use std::ops::{Bound, ControlFlow};
use std::path::Path;
use std::sync::Arc;

use netabase_core::model::{
    Envelope, EnvelopeError, ModelId, NetabaseDefinition, Opened, SealParts, decode_value,
    primary_key_of, record_key_of,
};
use netabase_core::store::{
    MemoryStoreConfig, PutOutcome, RecordStore, StoreError as CoreError, decide_put, held_size,
};
use netabase_core::{Address, Instant, Key, Keypair, PeerId, ProviderRecord, Record, RecordKey};
use serde::{Deserialize, Serialize};

use crate::backend::guard::TxGuard;
use crate::backend::{
    AnyBackend, Backend, BackendConfig, Durability, FULL_RANGE, KeyRange, MemoryBackend,
    ReadTransaction, WriteTransaction, prefix_end,
};
use crate::codec;
use crate::error::StoreError;
use crate::ops::{Tables, Writer, read_version, remove_version, set_version};
use crate::store::Store;

/// Limits of a [`PersistentRecordStore`]: the same as the core's memory store.
pub type RecordStoreConfig = MemoryStoreConfig;

const RECORDS: &str = "dht/records";
const PROVIDERS: &str = "dht/providers";
const COUNTERS: &str = "dht/meta";
/// This node's records whose latest version has not reached its quorum yet (key bytes,
/// empty values).
const OUTBOX: &str = "dht/outbox";
const RECORD_COUNT: &[u8] = b"records";
const PROVIDED_COUNT: &[u8] = b"provided";
/// The number of records held for other peers (the ones the record limit applies to).
const HELD_TOTALS: &[u8] = b"held";
/// The records held for other peers by distance from this node, farthest first (see
/// [`held_entry`]), for eviction.
const HELD: &str = "dht/held";
/// The persisted ceiling of the node's hybrid logical clock.
const CLOCK_CEILING: &[u8] = b"hlc-ceiling";
/// The layout version of the stored DHT records (in the value header's version field).
const LAYOUT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct StoredRecord {
    value: Vec<u8>,
    publisher: Option<Vec<u8>>,
    expires: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct StoredProvider {
    key: Vec<u8>,
    provider: Vec<u8>,
    addresses: Vec<Vec<u8>>,
    expires: Option<u64>,
}

type Validator = fn(&RecordKey, &[u8]) -> Result<(), String>;

/// Applies a newer version of a record to the typed store, inside the transaction that
/// stores it in the DHT tables (see [`Store::record_store`]).
type Mirror<B> = Arc<
    dyn for<'a> Fn(&mut <B as Backend>::Write<'a>, &Record) -> Result<(), CoreError> + Send + Sync,
>;

/// The core's [`RecordStore`] on a store backend: the DHT records and provider records a
/// node holds, persisted across restarts, with the limits of [`RecordStoreConfig`].
///
/// Records live in table `dht/records` under their key bytes, provider records in
/// `dht/providers` under the order-preserving encoding of their key followed by the
/// provider, and the counts the limits need in `dht/meta`; every write is one transaction
/// (durable when it returns, with the backend's default durability). The tables can share a
/// database with a typed [`Store`] (see [`Store::record_store`]).
///
/// Listings skip entries whose bytes are damaged (they could not be served anyway); a
/// `get` of a damaged record fails with a backend error naming it.
pub struct PersistentRecordStore<B: Backend = AnyBackend> {
    backend: Arc<B>,
    local: PeerId,
    config: RecordStoreConfig,
    validator: Option<Validator>,
    mirror: Option<Mirror<B>>,
    /// The durability of this store's writes (`None`: the backend's own).
    durability: Option<Durability>,
}

impl<B: Backend> std::fmt::Debug for PersistentRecordStore<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistentRecordStore")
            .field("backend", &self.backend.kind())
            .field("local", &self.local)
            .field("config", &self.config)
            .field("validating", &self.validator.is_some())
            .field("durability", &self.durability)
            .finish()
    }
}

impl PersistentRecordStore<AnyBackend> {
    /// Opens (or creates) the record store at `path` for node `local`.
    pub fn open(
        path: impl AsRef<Path>,
        backend: BackendConfig,
        local: PeerId,
        config: RecordStoreConfig,
    ) -> Result<Self, StoreError> {
        Ok(Self::new(Arc::new(backend.open(path)?), local, config))
    }

    /// A record store in memory.
    pub fn memory(local: PeerId, config: RecordStoreConfig) -> Self {
        Self::new(
            Arc::new(AnyBackend::Memory(MemoryBackend::new())),
            local,
            config,
        )
    }
}

impl<D: NetabaseDefinition, B: Backend> Store<D, B> {
    /// A record store in the same database as this store, validating incoming records
    /// against definition `D`, and keeping the typed store in agreement with it: when a
    /// newer version written by another peer replaces a record whose key has a row in the
    /// typed store, the row (and its secondary-index entries) is replaced with the newer
    /// value, or removed for a tombstone, in the same transaction. Records of keys without
    /// a typed row (held for other peers) stay out of the typed store, and so do versions
    /// this node cannot decode (a newer schema): those are kept and forwarded as bytes.
    pub fn record_store(
        &self,
        local: PeerId,
        config: RecordStoreConfig,
    ) -> PersistentRecordStore<B> {
        let tables = Arc::clone(self.tables());
        let mirror: Mirror<B> =
            Arc::new(move |tx, record| mirror_typed::<D, _>(&tables, tx, record, local));
        let mut store =
            PersistentRecordStore::new(Arc::clone(self.backend()), local, config).validating::<D>();
        store.mirror = Some(mirror);
        store
    }
}

/// What [`Store::migrate_record_store`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordStoreMigration {
    /// The node's own records of envelope format 1, signed again as format 2 (same
    /// version, same payload).
    pub resigned: u64,
    /// Records of other writers of envelope format 1, dropped: unsigned, they cannot be
    /// verified (their writers publish them again once they run this release).
    pub dropped: u64,
    /// Typed rows that got a version: their DHT record's, or (0, this node).
    pub versioned_rows: u64,
}

impl RecordStoreMigration {
    /// Whether the migration changed anything.
    pub fn changed(&self) -> bool {
        *self != RecordStoreMigration::default()
    }
}

/// The layout of the DHT tables this code writes: 2 adds envelope format 2 (signed),
/// the held-record count and typed-row versions.
const CURRENT_LAYOUT: u64 = 2;
const LAYOUT_KEY: &[u8] = b"layout";

impl<D: NetabaseDefinition, B: Backend> Store<D, B> {
    /// Brings the DHT tables of this database to the current layout, in one durable
    /// transaction (a crash leaves the old layout whole; running it again after it is done
    /// changes nothing): the node's own format-1 records are signed again as format 2 with
    /// `keypair` (their version and payload unchanged; without a key they are dropped like
    /// other writers'), other writers' format-1 records are dropped, the record counts are
    /// taken afresh, and each typed row without a version takes its DHT record's version,
    /// or (0, `local`) when there is none. Records of a newer envelope format or schema
    /// are kept as they are.
    pub fn migrate_record_store(
        &self,
        local: PeerId,
        keypair: Option<&Keypair>,
    ) -> Result<RecordStoreMigration, StoreError> {
        let tables = Arc::clone(self.tables());
        let _guard = self.guard()?;
        let mut tx = self.backend().begin_write_with(Durability::Immediate)?;
        let layout = match tx.get(COUNTERS, LAYOUT_KEY)? {
            Some(_) => read_counter(&tx, LAYOUT_KEY).map_err(core_error)?,
            None => 1,
        };
        if layout >= CURRENT_LAYOUT {
            return Ok(RecordStoreMigration::default());
        }
        let mut report = RecordStoreMigration::default();
        let (mut records, mut held, mut held_bytes) = (0u64, 0u64, 0u64);
        let limits = Limits {
            local,
            local_key: Key::from_peer(&local),
            max_records: usize::MAX,
            max_held_bytes: usize::MAX,
        };
        for (k, v) in entries(&tx, RECORDS, FULL_RANGE).map_err(core_error)? {
            let Ok(mut record) = decode_record(&k, &v) else {
                records += 1;
                held += 1;
                continue;
            };
            if let Ok(envelope) = Envelope::decode(&record.value)
                && envelope.format == netabase_core::model::LEGACY_ENVELOPE_FORMAT
            {
                match keypair.filter(|kp| envelope.origin == kp.peer_id()) {
                    Some(keypair) => {
                        record.value = Envelope::seal_parts(
                            &record.key,
                            SealParts {
                                model: envelope.model,
                                schema_version: envelope.schema_version,
                                timestamp: envelope.timestamp,
                                tombstone: false,
                                payload: &envelope.payload,
                            },
                            keypair,
                        );
                        tx.put(RECORDS, &k, &encode_record(&record).map_err(core_error)?)?;
                        report.resigned += 1;
                    }
                    None => {
                        tx.delete(RECORDS, &k)?;
                        report.dropped += 1;
                        continue;
                    }
                }
            }
            records += 1;
            if is_held(&record, local) {
                held += 1;
                held_bytes += held_size(&record) as u64;
                tx.put(HELD, &held_entry(&limits, &record.key), &[])?;
            }
        }
        write_counter(&mut tx, RECORD_COUNT, records).map_err(core_error)?;
        write_held(&mut tx, (held, held_bytes)).map_err(core_error)?;
        for model in 0..D::MODELS.len() as ModelId {
            let t = tables.get(model)?;
            let mut rows = Vec::new();
            tx.scan(&t.records, FULL_RANGE, &mut |pk, _| {
                rows.push(pk.to_vec());
                Ok(ControlFlow::Continue(()))
            })?;
            for pk in rows {
                if read_version(&tx, model, &pk)?.is_some() {
                    continue;
                }
                let key = record_key_of::<D>(model, &pk)?;
                let version = tx
                    .get(RECORDS, key.as_bytes())?
                    .and_then(|bytes| decode_record(key.as_bytes(), &bytes).ok())
                    .and_then(|r| netabase_core::version::version_of(&r.value))
                    .unwrap_or(netabase_core::Version {
                        timestamp: 0,
                        origin: local,
                    });
                set_version(&mut tx, model, &pk, &version)?;
                report.versioned_rows += 1;
            }
        }
        write_counter(&mut tx, LAYOUT_KEY, CURRENT_LAYOUT).map_err(core_error)?;
        tx.commit()?;
        Ok(report)
    }
}

fn core_error(e: CoreError) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Applies `record`, which just replaced the DHT copy of its key, to the typed row of that
/// key, if there is one and the record is another peer's (this node's own writes went to
/// the typed store when they were made).
fn mirror_typed<D: NetabaseDefinition, T: WriteTransaction + ?Sized>(
    tables: &Tables,
    tx: &mut T,
    record: &Record,
    local: PeerId,
) -> Result<(), CoreError> {
    // The cheap checks first: most records a node stores are held for others and have no
    // typed row, and those need no decoding.
    let Ok(head) = Envelope::peek(&record.value) else {
        return Ok(());
    };
    if head.origin == local {
        return Ok(());
    }
    let model = head.model;
    let Some(pk) = primary_key_of::<D>(model, &record.key) else {
        return Ok(());
    };
    let Ok(t) = tables.get(model) else {
        return Ok(());
    };
    if tx.get(&t.records, pk).map_err(backend_error)?.is_none() {
        return Ok(());
    }
    let Ok(opened) = Envelope::open_verified::<D>(&record.key, &record.value) else {
        return Ok(());
    };
    let version = head.version();
    let mut writer = Writer {
        tx: &mut *tx,
        tables,
    };
    match opened {
        Opened::Value(value, _) => writer
            .put_definition(&value)
            .and_then(|_| set_version(tx, model, pk, &version)),
        Opened::Removed(_) => writer
            .remove_definition::<D>(model, pk)
            .and_then(|_| remove_version(tx, model, pk)),
    }
    .map_err(backend_error)
}

fn backend_error(e: StoreError) -> CoreError {
    CoreError::Backend(e.to_string())
}

fn corrupt(what: &str, key: &[u8], reason: impl std::fmt::Display) -> CoreError {
    CoreError::Backend(format!("corrupt {what} under key {key:02x?}: {reason}"))
}

/// Order-preserving, self-delimiting encoding of a record key: `0x00` escaped as
/// `0x00 0xFF`, terminated by `0x00 0x00`.
fn provider_prefix(key: &RecordKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.as_bytes().len() + 2);
    for &b in key.as_bytes() {
        if b == 0 {
            out.extend_from_slice(&[0, 0xFF]);
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&[0, 0]);
    out
}

fn provider_key(key: &RecordKey, provider: &PeerId) -> Vec<u8> {
    let mut out = provider_prefix(key);
    out.extend_from_slice(provider.as_bytes());
    out
}

fn encode_record(record: &Record) -> Result<Vec<u8>, CoreError> {
    codec::seal(
        LAYOUT,
        &StoredRecord {
            value: record.value.clone(),
            publisher: record.publisher.map(|p| p.to_bytes()),
            expires: record.expires.map(Instant::as_micros),
        },
    )
    .map_err(CoreError::Backend)
}

fn decode_record(key: &[u8], bytes: &[u8]) -> Result<Record, CoreError> {
    let payload = codec::open_version(bytes, LAYOUT).map_err(|r| corrupt("record", key, r))?;
    let stored: StoredRecord =
        decode_value("DHT record", payload).map_err(|e| corrupt("record", key, e))?;
    Ok(Record {
        key: RecordKey::new(key).map_err(|e| corrupt("record", key, e))?,
        value: stored.value,
        publisher: stored
            .publisher
            .map(|p| PeerId::from_bytes(&p))
            .transpose()
            .map_err(|e| corrupt("record", key, e))?,
        expires: stored.expires.map(Instant::from_micros),
    })
}

fn encode_provider(record: &ProviderRecord) -> Result<Vec<u8>, CoreError> {
    codec::seal(
        LAYOUT,
        &StoredProvider {
            key: record.key.as_bytes().to_vec(),
            provider: record.provider.to_bytes(),
            addresses: record
                .addresses
                .iter()
                .map(|a| a.as_bytes().to_vec())
                .collect(),
            expires: record.expires.map(Instant::as_micros),
        },
    )
    .map_err(CoreError::Backend)
}

fn decode_provider(key: &[u8], bytes: &[u8]) -> Result<ProviderRecord, CoreError> {
    let payload = codec::open_version(bytes, LAYOUT).map_err(|r| corrupt("provider", key, r))?;
    let stored: StoredProvider =
        decode_value("DHT provider record", payload).map_err(|e| corrupt("provider", key, e))?;
    let record = ProviderRecord {
        key: RecordKey::new(&stored.key).map_err(|e| corrupt("provider", key, e))?,
        provider: PeerId::from_bytes(&stored.provider).map_err(|e| corrupt("provider", key, e))?,
        addresses: stored
            .addresses
            .iter()
            .map(|a| Address::from_bytes(a))
            .collect::<Result<_, _>>()
            .map_err(|e| corrupt("provider", key, e))?,
        expires: stored.expires.map(Instant::from_micros),
    };
    if provider_key(&record.key, &record.provider) != key {
        return Err(corrupt(
            "provider",
            key,
            "the value belongs under another key",
        ));
    }
    Ok(record)
}

fn read_counter<T: ReadTransaction + ?Sized>(tx: &T, name: &[u8]) -> Result<u64, CoreError> {
    match tx.get(COUNTERS, name).map_err(backend_error)? {
        None => Ok(0),
        Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt("counter", name, "not 8 bytes")),
    }
}

fn write_counter<T: WriteTransaction + ?Sized>(
    tx: &mut T,
    name: &[u8],
    value: u64,
) -> Result<(), CoreError> {
    tx.put(COUNTERS, name, &value.to_be_bytes())
        .map_err(backend_error)
}

/// An owned key and value.
type Entry = (Vec<u8>, Vec<u8>);

/// Every entry of `table` within `range`, as owned pairs.
fn entries<T: ReadTransaction + ?Sized>(
    tx: &T,
    table: &str,
    range: KeyRange<'_>,
) -> Result<Vec<Entry>, CoreError> {
    let mut out = Vec::new();
    tx.scan(table, range, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        Ok(ControlFlow::Continue(()))
    })
    .map_err(backend_error)?;
    Ok(out)
}

impl<B: Backend> PersistentRecordStore<B> {
    /// A record store for node `local` on `backend` (which may also hold a typed store).
    pub fn new(backend: Arc<B>, local: PeerId, config: RecordStoreConfig) -> Self {
        PersistentRecordStore {
            backend,
            local,
            config,
            validator: None,
            mirror: None,
            durability: None,
        }
    }

    /// Commit this store's writes with `durability` instead of the backend's default.
    ///
    /// With [`Durability::Deferred`] a write returns before it is durable; whoever drives
    /// the node must then call [`Backend::sync`] (through [`PersistentRecordStore::sync`])
    /// before anything that acknowledges the write leaves the node. The node's drivers do
    /// so before every output, so the writes made while handling a burst of requests share
    /// one `fdatasync` (group commit).
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = Some(durability);
        self
    }

    /// Makes every committed write of the backend durable; no I/O when none was deferred.
    pub fn sync(&self) -> Result<(), CoreError> {
        self.backend.sync().map_err(backend_error)
    }

    /// Refuse records from the network whose value is not a valid typed record (or
    /// tombstone) of definition `D` under its key, with [`CoreError::Rejected`]. The core
    /// has checked the envelope's signature before it asks
    /// ([`Envelope::open_verified`]).
    pub fn validating<D: NetabaseDefinition>(mut self) -> Self {
        self.validator = Some(
            |key, value| match Envelope::open_verified::<D>(key, value) {
                // Written by a later release: kept and forwarded as bytes (the core checked
                // its signature); only reading it as a model fails.
                Ok(_)
                | Err(EnvelopeError::NewerSchema { .. })
                | Err(EnvelopeError::UnsupportedFormat(3..)) => Ok(()),
                Err(e) => Err(e.to_string()),
            },
        );
        self
    }

    /// The limits of this store.
    pub fn config(&self) -> &RecordStoreConfig {
        &self.config
    }

    /// The backend under the store.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    fn guard(&self) -> Result<TxGuard, CoreError> {
        TxGuard::enter(Arc::as_ptr(&self.backend) as *const () as usize).map_err(backend_error)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&B::Read<'_>) -> Result<T, CoreError>,
    ) -> Result<T, CoreError> {
        let _guard = self.guard()?;
        let tx = self.backend.begin_read().map_err(backend_error)?;
        f(&tx)
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&mut B::Write<'_>) -> Result<T, CoreError>,
    ) -> Result<T, CoreError> {
        let _guard = self.guard()?;
        let mut tx = match self.durability {
            Some(durability) => self.backend.begin_write_with(durability),
            None => self.backend.begin_write(),
        }
        .map_err(backend_error)?;
        let out = f(&mut tx)?;
        tx.commit().map_err(backend_error)?;
        Ok(out)
    }

    /// Number of records held.
    pub fn record_count(&self) -> Result<u64, CoreError> {
        self.read(|tx| read_counter(tx, RECORD_COUNT))
    }

    fn check_size(&self, record: &Record) -> Result<(), CoreError> {
        if record.value.len() > self.config.max_value_bytes {
            return Err(CoreError::ValueTooLarge {
                size: record.value.len(),
                max: self.config.max_value_bytes,
            });
        }
        Ok(())
    }

    fn limits(&self) -> Limits {
        Limits {
            local: self.local,
            local_key: Key::from_peer(&self.local),
            max_records: self.config.max_records,
            max_held_bytes: self.config.max_held_bytes,
        }
    }

    /// Bytes of the records held for other peers
    /// ([`held_size`](netabase_core::store::held_size)).
    pub fn held_bytes(&self) -> Result<u64, CoreError> {
        let local = self.local;
        self.read(|tx| read_held(tx, local).map(|(_, bytes)| bytes))
    }

    /// Number of records held for other peers (the ones [`RecordStoreConfig`]'s
    /// `max_records` limits).
    pub fn held_count(&self) -> Result<u64, CoreError> {
        let local = self.local;
        self.read(|tx| read_held(tx, local).map(|(count, _)| count))
    }

    /// Number of keys the local node provides.
    pub fn provided_count(&self) -> Result<u64, CoreError> {
        self.read(|tx| read_counter(tx, PROVIDED_COUNT))
    }

    /// Number of provider records held, over all keys.
    pub fn provider_count(&self) -> Result<u64, CoreError> {
        self.read(|tx| tx.len(PROVIDERS).map_err(backend_error))
    }
}

/// The first `limit` entries of `table` in `range` that `pick` makes something of.
fn first_of<T: ReadTransaction + ?Sized, X>(
    tx: &T,
    table: &str,
    range: KeyRange<'_>,
    limit: usize,
    mut pick: impl FnMut(&[u8], &[u8]) -> Option<X>,
) -> Result<Vec<X>, CoreError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    tx.scan(table, range, &mut |k, v| {
        out.extend(pick(k, v));
        Ok(if out.len() >= limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })
    .map_err(backend_error)?;
    Ok(out)
}

/// The record stored under `key`, if any.
fn stored_record<T: ReadTransaction + ?Sized>(
    tx: &T,
    key: &RecordKey,
) -> Result<Option<Record>, CoreError> {
    match tx.get(RECORDS, key.as_bytes()).map_err(backend_error)? {
        Some(bytes) => decode_record(key.as_bytes(), &bytes).map(Some),
        None => Ok(None),
    }
}

/// Whether `record` is held for another peer (not published by `local`).
fn is_held(record: &Record, local: PeerId) -> bool {
    record.publisher != Some(local)
}

/// The number and bytes of the records held for other peers (one counter, read and written
/// once per change); counted once from the records when it was never written (a store of
/// an earlier release, which counted all records against the limit).
fn read_held<T: ReadTransaction + ?Sized>(tx: &T, local: PeerId) -> Result<(u64, u64), CoreError> {
    if let Some(bytes) = tx.get(COUNTERS, HELD_TOTALS).map_err(backend_error)? {
        let totals = <[u8; 16]>::try_from(bytes.as_slice())
            .map_err(|_| corrupt("counter", HELD_TOTALS, "not 16 bytes"))?;
        let (count, size) = totals.split_at(8);
        return Ok((
            u64::from_be_bytes(count.try_into().unwrap_or_default()),
            u64::from_be_bytes(size.try_into().unwrap_or_default()),
        ));
    }
    let (mut count, mut size) = (0u64, 0u64);
    tx.scan(RECORDS, FULL_RANGE, &mut |k, v| {
        if let Ok(r) = decode_record(k, v)
            && is_held(&r, local)
        {
            count += 1;
            size += held_size(&r) as u64;
        }
        Ok(ControlFlow::Continue(()))
    })
    .map_err(backend_error)?;
    Ok((count, size))
}

fn write_held<T: WriteTransaction + ?Sized>(
    tx: &mut T,
    (count, size): (u64, u64),
) -> Result<(), CoreError> {
    let mut totals = [0u8; 16];
    totals[..8].copy_from_slice(&count.to_be_bytes());
    totals[8..].copy_from_slice(&size.to_be_bytes());
    tx.put(COUNTERS, HELD_TOTALS, &totals)
        .map_err(backend_error)
}

/// What the accounting of records held for other peers needs.
#[derive(Clone, Copy)]
struct Limits {
    local: PeerId,
    local_key: Key,
    max_records: usize,
    max_held_bytes: usize,
}

/// The entry of `key` in the table of held records by distance: the distance from this
/// node, inverted (so the farthest comes first in key order), then the key.
fn held_entry(limits: &Limits, key: &RecordKey) -> Vec<u8> {
    let distance = limits.local_key.distance(&key.key()).to_bytes();
    let mut entry = Vec::with_capacity(32 + key.as_bytes().len());
    entry.extend(distance.iter().map(|b| !b));
    entry.extend_from_slice(key.as_bytes());
    entry
}

/// Counts `record` in, or out of (`sign` false), the held accounting, if it is held.
fn account<T: WriteTransaction + ?Sized>(
    tx: &mut T,
    limits: &Limits,
    record: &Record,
    add: bool,
) -> Result<(), CoreError> {
    if !is_held(record, limits.local) {
        return Ok(());
    }
    let (count, bytes) = read_held(tx, limits.local)?;
    let size = held_size(record) as u64;
    let entry = held_entry(limits, &record.key);
    if add {
        write_held(tx, (count + 1, bytes + size))?;
        tx.put(HELD, &entry, &[]).map_err(backend_error)
    } else {
        write_held(tx, (count.saturating_sub(1), bytes.saturating_sub(size)))?;
        tx.delete(HELD, &entry).map_err(backend_error).map(drop)
    }
}

/// Makes room for `record`, a new record held for another peer: evicts held records
/// farther from this node than it, farthest first, until it fits, or refuses it.
fn make_room<T: WriteTransaction + ?Sized>(
    tx: &mut T,
    limits: &Limits,
    record: &Record,
) -> Result<(), CoreError> {
    let distance = limits.local_key.distance(&record.key.key());
    let size = held_size(record) as u64;
    loop {
        let (count, bytes) = read_held(tx, limits.local)?;
        let over_count = too_many(limits.max_records, count);
        let over_bytes = bytes.saturating_add(size) > limits.max_held_bytes as u64;
        if !over_count && !over_bytes {
            return Ok(());
        }
        let mut farthest = None;
        tx.scan(HELD, FULL_RANGE, &mut |k, _| {
            farthest = Some(k.to_vec());
            Ok(ControlFlow::Break(()))
        })
        .map_err(backend_error)?;
        let victim = farthest
            .and_then(|entry| RecordKey::new(&entry[32.min(entry.len())..]).ok())
            .filter(|key| limits.local_key.distance(&key.key()) > distance);
        let Some(victim) = victim else {
            return Err(if over_count {
                CoreError::MaxRecords {
                    max: limits.max_records,
                }
            } else {
                CoreError::MaxHeldBytes {
                    max: limits.max_held_bytes,
                }
            });
        };
        match tx.take(RECORDS, victim.as_bytes()).map_err(backend_error)? {
            Some(bytes) => {
                let evicted = decode_record(victim.as_bytes(), &bytes)?;
                account(tx, limits, &evicted, false)?;
                let count = read_counter(tx, RECORD_COUNT)?;
                write_counter(tx, RECORD_COUNT, count.saturating_sub(1))?;
            }
            // An index entry without its record: drop the entry.
            None => {
                tx.delete(HELD, &held_entry(limits, &victim))
                    .map_err(backend_error)?;
            }
        }
    }
}

/// Writes `record` over `old` (the stored record under its key, if any), keeping the counts
/// and the held index; a new record for another peer first makes room ([`make_room`]).
fn write_record<T: WriteTransaction + ?Sized>(
    tx: &mut T,
    record: &Record,
    old: Option<&Record>,
    limits: &Limits,
) -> Result<(), CoreError> {
    let bytes = encode_record(record)?;
    let was_held = old.is_some_and(|o| is_held(o, limits.local));
    if is_held(record, limits.local) && !was_held {
        make_room(tx, limits, record)?;
    }
    match old {
        Some(old) => account(tx, limits, old, false)?,
        None => {
            let count = read_counter(tx, RECORD_COUNT)?;
            write_counter(tx, RECORD_COUNT, count + 1)?;
        }
    }
    account(tx, limits, record, true)?;
    tx.put(RECORDS, record.key.as_bytes(), &bytes)
        .map_err(backend_error)
}

/// Takes the removed `record` out of the counts and the held index.
fn count_removed<T: WriteTransaction + ?Sized>(
    tx: &mut T,
    limits: &Limits,
    record: &Record,
) -> Result<(), CoreError> {
    let count = read_counter(tx, RECORD_COUNT)?;
    write_counter(tx, RECORD_COUNT, count.saturating_sub(1))?;
    account(tx, limits, record, false)
}

fn too_many(max: usize, count: u64) -> bool {
    usize::try_from(count).map_or(true, |count| count >= max)
}

impl<B: Backend> RecordStore for PersistentRecordStore<B> {
    fn get(&self, key: &RecordKey) -> Result<Option<Record>, CoreError> {
        self.read(|tx| stored_record(tx, key))
    }

    fn put(&mut self, record: Record) -> Result<(), CoreError> {
        self.check_size(&record)?;
        let limits = self.limits();
        self.write(|tx| {
            let old = stored_record(tx, &record.key)?;
            write_record(tx, &record, old.as_ref(), &limits)
        })
    }

    fn put_resolved(&mut self, record: Record) -> Result<PutOutcome, CoreError> {
        self.check_size(&record)?;
        let limits = self.limits();
        // Read, decide and write in one transaction: the compare-and-put is atomic even
        // with other writers on the database.
        self.write(|tx| {
            let existing = stored_record(tx, &record.key)?;
            let (write, outcome) = decide_put(existing.as_ref(), record);
            if let Some(write) = write {
                write_record(tx, &write, existing.as_ref(), &limits)?;
                if let (Some(mirror), PutOutcome::Stored) = (&self.mirror, &outcome) {
                    mirror(tx, &write)?;
                }
            }
            Ok(outcome)
        })
    }

    fn clock_ceiling(&self) -> Result<Option<u64>, CoreError> {
        self.read(
            |tx| match tx.get(COUNTERS, CLOCK_CEILING).map_err(backend_error)? {
                None => Ok(None),
                Some(_) => read_counter(tx, CLOCK_CEILING).map(Some),
            },
        )
    }

    fn set_clock_ceiling(&mut self, ceiling: u64) -> Result<(), CoreError> {
        self.write(|tx| write_counter(tx, CLOCK_CEILING, ceiling))
    }

    fn outbox_add(&mut self, key: &RecordKey) -> Result<(), CoreError> {
        self.write(|tx| tx.put(OUTBOX, key.as_bytes(), &[]).map_err(backend_error))
    }

    fn outbox_remove(&mut self, key: &RecordKey) -> Result<(), CoreError> {
        self.write(|tx| {
            tx.delete(OUTBOX, key.as_bytes())
                .map_err(backend_error)
                .map(drop)
        })
    }

    fn outbox(&self, limit: usize) -> Result<Vec<RecordKey>, CoreError> {
        self.read(|tx| first_of(tx, OUTBOX, FULL_RANGE, limit, |k, _| RecordKey::new(k).ok()))
    }

    fn remove(&mut self, key: &RecordKey) -> Result<(), CoreError> {
        let limits = self.limits();
        self.write(|tx| {
            if let Some(bytes) = tx.take(RECORDS, key.as_bytes()).map_err(backend_error)? {
                // A damaged record is taken for a held one of no bytes (it was no record
                // of this node's).
                let removed = decode_record(key.as_bytes(), &bytes)
                    .unwrap_or_else(|_| Record::new(key.clone(), Vec::new()));
                count_removed(tx, &limits, &removed)?;
            }
            Ok(())
        })
    }

    fn records(&self) -> Result<Vec<Record>, CoreError> {
        self.read(|tx| {
            Ok(entries(tx, RECORDS, FULL_RANGE)?
                .into_iter()
                .filter_map(|(k, v)| decode_record(&k, &v).ok())
                .collect())
        })
    }

    fn records_after(
        &self,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<Record>, CoreError> {
        let start = after.map_or(Bound::Unbounded, |k| Bound::Excluded(k.as_bytes()));
        // Damaged entries are skipped, as the full listing does.
        self.read(|tx| {
            first_of(tx, RECORDS, (start, Bound::Unbounded), limit, |k, v| {
                decode_record(k, v).ok()
            })
        })
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<(), CoreError> {
        let key = provider_key(&record.key, &record.provider);
        let bytes = encode_provider(&record)?;
        let local = record.provider == self.local;
        let config = self.config.clone();
        self.write(|tx| {
            let exists = tx.get(PROVIDERS, &key).map_err(backend_error)?.is_some();
            if !exists {
                if local {
                    let provided = read_counter(tx, PROVIDED_COUNT)?;
                    if too_many(config.max_provided_keys, provided) {
                        return Err(CoreError::MaxProvidedKeys {
                            max: config.max_provided_keys,
                        });
                    }
                    write_counter(tx, PROVIDED_COUNT, provided + 1)?;
                } else {
                    let prefix = provider_prefix(&record.key);
                    let end = prefix_end(&prefix);
                    let range = (
                        Bound::Included(prefix.as_slice()),
                        end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
                    );
                    let mut held = 0u64;
                    tx.scan(PROVIDERS, range, &mut |_, _| {
                        held += 1;
                        Ok(ControlFlow::Continue(()))
                    })
                    .map_err(backend_error)?;
                    if too_many(config.max_providers_per_key, held) {
                        // Full: keep the ones we have (a remote provider never displaces
                        // the local one).
                        return Ok(());
                    }
                }
            }
            tx.put(PROVIDERS, &key, &bytes).map_err(backend_error)
        })
    }

    fn providers(&self, key: &RecordKey) -> Result<Vec<ProviderRecord>, CoreError> {
        let prefix = provider_prefix(key);
        let end = prefix_end(&prefix);
        let range = (
            Bound::Included(prefix.as_slice()),
            end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
        );
        let mut out: Vec<ProviderRecord> = self.read(|tx| {
            Ok(entries(tx, PROVIDERS, range)?
                .into_iter()
                .filter_map(|(k, v)| decode_provider(&k, &v).ok())
                .collect())
        })?;
        // The same order as the memory store: by provider.
        out.sort_by_key(|p| p.provider);
        Ok(out)
    }

    fn provided(&self) -> Result<Vec<ProviderRecord>, CoreError> {
        let local = self.local;
        self.read(|tx| {
            Ok(entries(tx, PROVIDERS, FULL_RANGE)?
                .into_iter()
                .filter_map(|(k, v)| decode_provider(&k, &v).ok())
                .filter(|p| p.provider == local)
                .collect())
        })
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) -> Result<(), CoreError> {
        let local = *provider == self.local;
        self.write(|tx| {
            let removed = tx
                .take(PROVIDERS, &provider_key(key, provider))
                .map_err(backend_error)?
                .is_some();
            if removed && local {
                let provided = read_counter(tx, PROVIDED_COUNT)?;
                write_counter(tx, PROVIDED_COUNT, provided.saturating_sub(1))?;
            }
            Ok(())
        })
    }

    fn remove_expired(&mut self, now: Instant) -> Result<usize, CoreError> {
        let limits = self.limits();
        let local = self.local;
        self.write(|tx| {
            let mut removed = 0usize;
            for (k, v) in entries(tx, RECORDS, FULL_RANGE)? {
                if let Ok(r) = decode_record(&k, &v)
                    && r.is_expired(now)
                {
                    tx.delete(RECORDS, &k).map_err(backend_error)?;
                    count_removed(tx, &limits, &r)?;
                    removed += 1;
                }
            }
            let mut local_removed = 0u64;
            for (k, v) in entries(tx, PROVIDERS, FULL_RANGE)? {
                if let Ok(p) = decode_provider(&k, &v)
                    && p.is_expired(now)
                {
                    tx.delete(PROVIDERS, &k).map_err(backend_error)?;
                    removed += 1;
                    if p.provider == local {
                        local_removed += 1;
                    }
                }
            }
            if local_removed > 0 {
                let provided = read_counter(tx, PROVIDED_COUNT)?;
                write_counter(tx, PROVIDED_COUNT, provided.saturating_sub(local_removed))?;
            }
            Ok(removed)
        })
    }

    fn validate(&self, key: &RecordKey, value: &[u8]) -> Result<(), CoreError> {
        match self.validator {
            Some(validate) => validate(key, value).map_err(CoreError::Rejected),
            None => Ok(()),
        }
    }
}
