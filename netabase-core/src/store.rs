//! The storage trait the core calls for records and provider records, and its memory
//! implementation.
//!
//! The trait is synchronous, like rust-libp2p's `RecordStore`: a write returns only when it
//! is durable in that backend, so the core never acknowledges a write that a crash could
//! lose. The persistent backends (redb, sled) live in `netabase-store`.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use crate::key::{Distance, Key, RecordKey};
use crate::peer::PeerId;
use crate::record::{ProviderRecord, Record};
use crate::time::Instant;
use crate::version::{Resolution, resolve};

/// What [`RecordStore::put_resolved`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// The record was new, or newer than the stored copy, and is stored now.
    Stored,
    /// The stored copy has the same bytes; its expiry was extended to the later of the two
    /// (a republication or replication of the same record).
    Refreshed,
    /// The stored copy is newer and stays; here it is.
    Kept(Record),
}

/// The decision of [`RecordStore::put_resolved`] for `incoming` against the stored copy:
/// the record to write, if any, and the outcome. Shared by every implementation, so they
/// all resolve alike.
pub fn decide_put(existing: Option<&Record>, incoming: Record) -> (Option<Record>, PutOutcome) {
    let Some(existing) = existing else {
        return (Some(incoming), PutOutcome::Stored);
    };
    if existing.value == incoming.value {
        let expires = match (existing.expires, incoming.expires) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        if expires == existing.expires {
            return (None, PutOutcome::Refreshed);
        }
        let refreshed = Record {
            expires,
            ..existing.clone()
        };
        return (Some(refreshed), PutOutcome::Refreshed);
    }
    match resolve(&existing.value, &incoming.value) {
        Resolution::Take => (Some(incoming), PutOutcome::Stored),
        Resolution::Merged(value) => (Some(Record { value, ..incoming }), PutOutcome::Stored),
        Resolution::Keep => (None, PutOutcome::Kept(existing.clone())),
    }
}

/// An error from a record store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store holds its maximum number of records for other peers, none of them
    /// farther from this node than the refused one.
    #[error("the store is full ({max} records held for other peers)")]
    MaxRecords {
        /// The configured maximum.
        max: usize,
    },
    /// The records held for other peers take their maximum of bytes, and none of them is
    /// farther from this node than the refused one.
    #[error("the store is full ({max} bytes of records held for other peers)")]
    MaxHeldBytes {
        /// The configured maximum.
        max: usize,
    },
    /// The record value is larger than the store accepts.
    #[error("record value of {size} bytes exceeds the limit of {max}")]
    ValueTooLarge {
        /// Size of the rejected value.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The store provides its maximum number of keys locally.
    #[error("this node already provides the maximum of {max} keys")]
    MaxProvidedKeys {
        /// The configured maximum.
        max: usize,
    },
    /// The record was rejected by validation (for example it does not decode as a model of
    /// the node's definition).
    #[error("record rejected: {0}")]
    Rejected(String),
    /// The backend failed (I/O error, corruption); the message says what happened.
    #[error("storage backend error: {0}")]
    Backend(String),
}

/// Storage for records and provider records, called synchronously by the core.
///
/// Implementations enforce their own limits and return a [`StoreError`] rather than panic.
/// Iteration order of the listing methods must be deterministic (key order).
pub trait RecordStore {
    /// The record under `key`, if any (expired or not; the core checks expiry).
    fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError>;

    /// Inserts or replaces the record under `record.key` unconditionally. Durable when it
    /// returns `Ok`. The node writes through [`put_resolved`](RecordStore::put_resolved).
    fn put(&mut self, record: Record) -> Result<(), StoreError>;

    /// Compare-and-put: stores `record` only if it wins over the stored copy under
    /// [`resolve`] ([`decide_put`]), atomically with the read of that copy. Every write
    /// path of the node goes through it. The default reads, decides and writes in separate
    /// calls, which is atomic only while the node is the store's single writer; stores
    /// shared with other writers override it with one transaction.
    fn put_resolved(&mut self, record: Record) -> Result<PutOutcome, StoreError> {
        let existing = self.get(&record.key)?;
        let (write, outcome) = decide_put(existing.as_ref(), record);
        if let Some(write) = write {
            self.put(write)?;
        }
        Ok(outcome)
    }

    /// The persisted ceiling of the node's hybrid logical clock ([`crate::hlc`]), if any.
    fn clock_ceiling(&self) -> Result<Option<u64>, StoreError>;

    /// Persists the ceiling of the node's hybrid logical clock (with the same durability as
    /// a record write).
    fn set_clock_ceiling(&mut self, ceiling: u64) -> Result<(), StoreError>;

    /// Adds `key` to the outbox: this node's records whose latest version has not yet
    /// reached its publication quorum (persisted, so a node that was offline publishes
    /// them when it is back). The default keeps no outbox: such records wait for the next
    /// republication.
    fn outbox_add(&mut self, key: &RecordKey) -> Result<(), StoreError> {
        let _ = key;
        Ok(())
    }

    /// Removes `key` from the outbox (its publication reached its quorum).
    fn outbox_remove(&mut self, key: &RecordKey) -> Result<(), StoreError> {
        let _ = key;
        Ok(())
    }

    /// Up to `limit` keys of the outbox, in key order.
    fn outbox(&self, limit: usize) -> Result<Vec<RecordKey>, StoreError> {
        let _ = limit;
        Ok(Vec::new())
    }

    /// Removes the record under `key`, if any.
    fn remove(&mut self, key: &RecordKey) -> Result<(), StoreError>;

    /// All records, in key order.
    fn records(&self) -> Result<Vec<Record>, StoreError>;

    /// Up to `limit` records whose keys follow `after` (from the first key when `None`),
    /// in key order. Replication and republication walk the store with it, one batch at
    /// a time. The default filters [`records`](RecordStore::records); stores override it
    /// with a bounded range read.
    fn records_after(
        &self,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        Ok(self
            .records()?
            .into_iter()
            .filter(|r| after.is_none_or(|a| r.key > *a))
            .take(limit)
            .collect())
    }

    /// Adds or refreshes a provider record (keyed by key and provider).
    fn add_provider(&mut self, record: ProviderRecord) -> Result<(), StoreError>;

    /// The provider records for `key`, closest providers first where the store keeps a
    /// bound, otherwise in provider order.
    fn providers(&self, key: &RecordKey) -> Result<Vec<ProviderRecord>, StoreError>;

    /// The provider records whose provider is the local node, in key order.
    fn provided(&self) -> Result<Vec<ProviderRecord>, StoreError>;

    /// Removes the provider record of `provider` for `key`, if any.
    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) -> Result<(), StoreError>;

    /// Removes every record and provider record that has expired at `now`; returns how many
    /// were removed.
    fn remove_expired(&mut self, now: Instant) -> Result<usize, StoreError>;

    /// Checks a record that arrived from the network before the node stores it, caches it
    /// or returns it from a get: a typed store decodes the value as a model of its
    /// definition and refuses anything else with [`StoreError::Rejected`]. The default
    /// accepts every record.
    fn validate(&self, key: &RecordKey, value: &[u8]) -> Result<(), StoreError> {
        let _ = (key, value);
        Ok(())
    }
}

/// Limits of a [`MemoryStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryStoreConfig {
    /// Maximum number of records held for other peers. The node's own records (published
    /// by it) do not count: they are limited by memory or disk only.
    pub max_records: usize,
    /// Maximum size of a record value in bytes.
    pub max_value_bytes: usize,
    /// Maximum bytes (values and keys) of the records held for other peers. A new record
    /// for another peer that would pass this or [`max_records`](Self::max_records) evicts
    /// the held records farthest from this node (XOR distance of the keys) while they are
    /// farther than it, and is refused otherwise: the keys a node is among the closest
    /// peers for win over copies cached farther away. Newer versions of keys already held
    /// always replace.
    pub max_held_bytes: usize,
    /// Maximum number of providers kept per key.
    pub max_providers_per_key: usize,
    /// Maximum number of keys the local node provides.
    pub max_provided_keys: usize,
}

impl Default for MemoryStoreConfig {
    fn default() -> Self {
        MemoryStoreConfig {
            max_records: 1024,
            max_value_bytes: 65 * 1024,
            max_held_bytes: 64 * 1024 * 1024,
            max_providers_per_key: 20,
            max_provided_keys: 1024,
        }
    }
}

/// An in-memory [`RecordStore`]: nothing survives a restart.
///
/// Used by the simulator, on wasm32 and in tests. Deterministic: ordered maps throughout.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    local: PeerId,
    config: MemoryStoreConfig,
    records: BTreeMap<RecordKey, Record>,
    providers: BTreeMap<RecordKey, BTreeMap<PeerId, ProviderRecord>>,
    provided_count: usize,
    /// The records held for other peers (not published by `local`); boxed, so that the
    /// store stays small enough to sit inline beside a boxed node in the simulator.
    held: Box<Held>,
    /// Boxed: rarely touched, and it keeps the store small enough to sit inline beside a
    /// boxed node in the simulator's node states.
    meta: Box<NodeMeta>,
}

/// What a store holds for other peers: counts, and the keys by distance from the node.
#[derive(Debug, Clone)]
struct Held {
    local: Key,
    count: usize,
    bytes: usize,
    by_distance: alloc::collections::BTreeSet<(Distance, RecordKey)>,
}

/// The bytes a held record takes against [`MemoryStoreConfig::max_held_bytes`].
pub fn held_size(record: &Record) -> usize {
    record.value.len() + record.key.as_bytes().len()
}

/// The clock ceiling and outbox of a [`MemoryStore`].
#[derive(Debug, Clone, Default)]
struct NodeMeta {
    clock_ceiling: Option<u64>,
    outbox: alloc::collections::BTreeSet<RecordKey>,
}

impl MemoryStore {
    /// An empty store for the node `local`, with default limits.
    pub fn new(local: PeerId) -> Self {
        Self::with_config(local, MemoryStoreConfig::default())
    }

    /// An empty store for the node `local`, with the given limits.
    pub fn with_config(local: PeerId, config: MemoryStoreConfig) -> Self {
        MemoryStore {
            local,
            config,
            records: BTreeMap::new(),
            providers: BTreeMap::new(),
            provided_count: 0,
            held: Box::new(Held {
                local: Key::from_peer(&local),
                count: 0,
                bytes: 0,
                by_distance: alloc::collections::BTreeSet::new(),
            }),
            meta: Box::default(),
        }
    }

    /// The limits of this store.
    pub fn config(&self) -> &MemoryStoreConfig {
        &self.config
    }

    /// Number of records held.
    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    /// Number of records held for other peers (the ones [`MemoryStoreConfig::max_records`]
    /// limits).
    pub fn held_count(&self) -> usize {
        self.held.count
    }

    /// Bytes of the records held for other peers (see [`held_size`]).
    pub fn held_bytes(&self) -> usize {
        self.held.bytes
    }

    fn distance(&self, key: &RecordKey) -> Distance {
        self.held.local.distance(&key.key())
    }

    /// Forgets the held record `record` (removed or replaced) in the held accounting.
    fn unhold(&mut self, record: &Record) {
        if self.is_held(record) {
            let d = self.distance(&record.key);
            self.held.count -= 1;
            self.held.bytes -= held_size(record);
            self.held.by_distance.remove(&(d, record.key.clone()));
        }
    }

    /// Counts `record` in the held accounting if it is held for another peer.
    fn hold(&mut self, record: &Record) {
        if self.is_held(record) {
            let d = self.distance(&record.key);
            self.held.count += 1;
            self.held.bytes += held_size(record);
            self.held.by_distance.insert((d, record.key.clone()));
        }
    }

    fn is_held(&self, record: &Record) -> bool {
        record.publisher != Some(self.local)
    }

    /// Number of provider records held, over all keys.
    pub fn provider_count(&self) -> usize {
        self.providers.values().map(BTreeMap::len).sum()
    }
}

impl RecordStore for MemoryStore {
    fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        Ok(self.records.get(key).cloned())
    }

    fn put(&mut self, record: Record) -> Result<(), StoreError> {
        if record.value.len() > self.config.max_value_bytes {
            return Err(StoreError::ValueTooLarge {
                size: record.value.len(),
                max: self.config.max_value_bytes,
            });
        }
        let was_held = self.records.get(&record.key).map(|r| self.is_held(r));
        if self.is_held(&record) && was_held != Some(true) {
            // A new record for another peer: make room by evicting farther ones, all of
            // them or none (the store stays as it was when the record is refused).
            let d = self.distance(&record.key);
            let size = held_size(&record);
            let (mut count, mut bytes) = (self.held.count, self.held.bytes);
            let mut victims = Vec::new();
            let mut farthest = self.held.by_distance.iter().rev();
            loop {
                let over_count = count >= self.config.max_records;
                let over_bytes = bytes + size > self.config.max_held_bytes;
                if !over_count && !over_bytes {
                    break;
                }
                match farthest.next() {
                    Some((fd, key)) if *fd > d => {
                        let victim = &self.records[key];
                        count -= 1;
                        bytes -= held_size(victim);
                        victims.push(key.clone());
                    }
                    _ if over_count => {
                        return Err(StoreError::MaxRecords {
                            max: self.config.max_records,
                        });
                    }
                    _ => {
                        return Err(StoreError::MaxHeldBytes {
                            max: self.config.max_held_bytes,
                        });
                    }
                }
            }
            for key in victims {
                if let Some(evicted) = self.records.remove(&key) {
                    self.unhold(&evicted);
                }
            }
        }
        if let Some(old) = self.records.remove(&record.key) {
            self.unhold(&old);
        }
        self.hold(&record);
        self.records.insert(record.key.clone(), record);
        Ok(())
    }

    fn remove(&mut self, key: &RecordKey) -> Result<(), StoreError> {
        if let Some(r) = self.records.remove(key) {
            self.unhold(&r);
        }
        Ok(())
    }

    fn clock_ceiling(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.meta.clock_ceiling)
    }

    fn set_clock_ceiling(&mut self, ceiling: u64) -> Result<(), StoreError> {
        self.meta.clock_ceiling = Some(ceiling);
        Ok(())
    }

    fn outbox_add(&mut self, key: &RecordKey) -> Result<(), StoreError> {
        self.meta.outbox.insert(key.clone());
        Ok(())
    }

    fn outbox_remove(&mut self, key: &RecordKey) -> Result<(), StoreError> {
        self.meta.outbox.remove(key);
        Ok(())
    }

    fn outbox(&self, limit: usize) -> Result<Vec<RecordKey>, StoreError> {
        Ok(self.meta.outbox.iter().take(limit).cloned().collect())
    }

    fn records(&self) -> Result<Vec<Record>, StoreError> {
        Ok(self.records.values().cloned().collect())
    }

    fn records_after(
        &self,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        use core::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(self
            .records
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect())
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<(), StoreError> {
        let is_local = record.provider == self.local;
        let entry = self.providers.entry(record.key.clone()).or_default();
        if let Some(existing) = entry.get_mut(&record.provider) {
            *existing = record;
            return Ok(());
        }
        if is_local {
            if self.provided_count >= self.config.max_provided_keys {
                if entry.is_empty() {
                    self.providers.remove(&record.key);
                }
                return Err(StoreError::MaxProvidedKeys {
                    max: self.config.max_provided_keys,
                });
            }
            self.provided_count += 1;
        } else if entry.len() >= self.config.max_providers_per_key {
            // Full: keep the ones we have (a remote provider never displaces the local one).
            return Ok(());
        }
        entry.insert(record.provider, record);
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Result<Vec<ProviderRecord>, StoreError> {
        Ok(self
            .providers
            .get(key)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    fn provided(&self) -> Result<Vec<ProviderRecord>, StoreError> {
        Ok(self
            .providers
            .values()
            .filter_map(|m| m.get(&self.local).cloned())
            .collect())
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) -> Result<(), StoreError> {
        if let Some(m) = self.providers.get_mut(key) {
            if m.remove(provider).is_some() && *provider == self.local {
                self.provided_count -= 1;
            }
            if m.is_empty() {
                self.providers.remove(key);
            }
        }
        Ok(())
    }

    fn remove_expired(&mut self, now: Instant) -> Result<usize, StoreError> {
        let before = self.records.len() + self.provider_count();
        let local = self.local;
        let expired: Vec<RecordKey> = self
            .records
            .values()
            .filter(|r| r.is_expired(now))
            .map(|r| r.key.clone())
            .collect();
        for key in expired {
            if let Some(r) = self.records.remove(&key) {
                self.unhold(&r);
            }
        }
        let mut local_removed = 0;
        for m in self.providers.values_mut() {
            m.retain(|p, r| {
                let keep = !r.is_expired(now);
                if !keep && *p == local {
                    local_removed += 1;
                }
                keep
            });
        }
        self.providers.retain(|_, m| !m.is_empty());
        self.provided_count -= local_removed;
        Ok(before - (self.records.len() + self.provider_count()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn key(n: u8) -> RecordKey {
        RecordKey::new(&[n]).unwrap()
    }

    #[test]
    fn memory_store_enforces_its_limits_and_keeps_what_it_had() {
        let local = PeerId::from_seed(0);
        let config = MemoryStoreConfig {
            max_records: 2,
            max_value_bytes: 4,
            max_providers_per_key: 2,
            max_provided_keys: 1,
            ..MemoryStoreConfig::default()
        };
        let mut store = MemoryStore::with_config(local, config);
        store.put(Record::new(key(1), vec![1])).unwrap();
        store.put(Record::new(key(2), vec![2])).unwrap();
        // Replacing an existing record is always allowed.
        store.put(Record::new(key(2), vec![9])).unwrap();
        // The node's own records do not count against the limit.
        let own = |k: u8| Record {
            publisher: Some(local),
            ..Record::new(key(k), vec![k])
        };
        for k in 10..20 {
            store.put(own(k)).unwrap();
        }
        assert_eq!((store.record_count(), store.held_count()), (12, 2));
        // A held record that becomes the node's own frees a place, and back.
        store.put(own(2)).unwrap();
        assert_eq!(store.held_count(), 1);
        store.put(Record::new(key(2), vec![9])).unwrap();
        for k in 10..20 {
            store.remove(&key(k)).unwrap();
        }
        assert_eq!((store.record_count(), store.held_count()), (2, 2));
        assert_eq!(
            store.put(Record::new(key(1), vec![0; 5])),
            Err(StoreError::ValueTooLarge { size: 5, max: 4 })
        );
        assert_eq!(store.get(&key(1)).unwrap().unwrap().value, vec![1]);
        assert_eq!(store.get(&key(2)).unwrap().unwrap().value, vec![9]);

        let provider = |p: PeerId, k: u8| ProviderRecord {
            key: key(k),
            provider: p,
            addresses: vec![],
            expires: None,
        };
        store.add_provider(provider(local, 1)).unwrap();
        assert_eq!(
            store.add_provider(provider(local, 2)),
            Err(StoreError::MaxProvidedKeys { max: 1 })
        );
        store
            .add_provider(provider(PeerId::from_seed(1), 1))
            .unwrap();
        // A full key keeps the providers it has.
        store
            .add_provider(provider(PeerId::from_seed(2), 1))
            .unwrap();
        let ids: Vec<PeerId> = store
            .providers(&key(1))
            .unwrap()
            .iter()
            .map(|p| p.provider)
            .collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&local));
        assert_eq!(store.provided().unwrap().len(), 1);
    }

    #[test]
    fn held_records_make_room_farthest_first_and_closer_keys_win() {
        let local = PeerId::from_seed(0);
        let me = Key::from_peer(&local);
        // Twelve keys, sorted by distance from this node, nearest first.
        let mut keys: Vec<RecordKey> = (0..12u8).map(key).collect();
        keys.sort_by_key(|k| me.distance(&k.key()));
        let held = |k: &RecordKey, len: usize| Record::new(k.clone(), vec![7; len]);
        let config = MemoryStoreConfig {
            max_records: 3,
            max_held_bytes: 1000,
            ..MemoryStoreConfig::default()
        };
        let mut store = MemoryStore::with_config(local, config);
        for k in &keys[4..7] {
            store.put(held(k, 10)).unwrap();
        }
        // Full: a closer key evicts the farthest, a farther one is refused.
        store.put(held(&keys[0], 10)).unwrap();
        assert!(store.get(&keys[6]).unwrap().is_none());
        assert_eq!(
            store.put(held(&keys[11], 10)),
            Err(StoreError::MaxRecords { max: 3 })
        );
        // A newer value of a key held already always replaces, whatever its size (keys
        // are one byte here).
        store.put(held(&keys[5], 900)).unwrap();
        assert_eq!(store.held_bytes(), 11 + 901 + 11);
        // Bytes: room is made farthest first too, down to the incoming key's distance.
        store.remove(&keys[0]).unwrap();
        assert_eq!(
            store.put(held(&keys[8], 100)),
            Err(StoreError::MaxHeldBytes { max: 1000 })
        );
        store.put(held(&keys[1], 100)).unwrap();
        assert!(store.get(&keys[5]).unwrap().is_none());
        assert_eq!(store.held_count(), 2);
        assert_eq!(store.held_bytes(), 101 + 11);
        // The node's own records never count and are never evicted.
        for k in &keys[8..12] {
            store
                .put(Record {
                    publisher: Some(local),
                    ..held(k, 500)
                })
                .unwrap();
        }
        assert_eq!((store.held_count(), store.record_count()), (2, 6));
    }

    #[test]
    fn expired_records_and_providers_are_swept() {
        let local = PeerId::from_seed(0);
        let mut store = MemoryStore::new(local);
        let at = |ms| Some(Instant::from_millis(ms));
        store
            .put(Record {
                expires: at(10),
                ..Record::new(key(1), vec![1])
            })
            .unwrap();
        store
            .put(Record {
                expires: at(30),
                ..Record::new(key(2), vec![2])
            })
            .unwrap();
        store
            .add_provider(ProviderRecord {
                key: key(3),
                provider: local,
                addresses: vec![],
                expires: at(10),
            })
            .unwrap();
        assert_eq!(store.remove_expired(Instant::from_millis(20)), Ok(2));
        assert!(store.get(&key(1)).unwrap().is_none());
        assert!(store.get(&key(2)).unwrap().is_some());
        assert!(store.provided().unwrap().is_empty());
        // The provided-key budget was given back.
        store
            .add_provider(ProviderRecord {
                key: key(4),
                provider: local,
                addresses: vec![],
                expires: None,
            })
            .unwrap();
    }
}
