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

use crate::key::RecordKey;
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
    /// The store holds its maximum number of records for other peers.
    #[error("the store is full ({max} records held for other peers)")]
    MaxRecords {
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
    /// Records held for other peers (not published by `local`).
    held_count: usize,
    /// Boxed: rarely touched, and it keeps the store small enough to sit inline beside a
    /// boxed node in the simulator's node states.
    meta: Box<NodeMeta>,
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
            held_count: 0,
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
        self.held_count
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
        let held = self.is_held(&record);
        if held && was_held != Some(true) && self.held_count >= self.config.max_records {
            return Err(StoreError::MaxRecords {
                max: self.config.max_records,
            });
        }
        self.held_count = self.held_count + usize::from(held) - usize::from(was_held == Some(true));
        self.records.insert(record.key.clone(), record);
        Ok(())
    }

    fn remove(&mut self, key: &RecordKey) -> Result<(), StoreError> {
        if let Some(r) = self.records.remove(key)
            && self.is_held(&r)
        {
            self.held_count -= 1;
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
        let mut held_removed = 0;
        self.records.retain(|_, r| {
            let keep = !r.is_expired(now);
            if !keep && r.publisher != Some(local) {
                held_removed += 1;
            }
            keep
        });
        self.held_count -= held_removed;
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
        };
        let mut store = MemoryStore::with_config(local, config);
        store.put(Record::new(key(1), vec![1])).unwrap();
        store.put(Record::new(key(2), vec![2])).unwrap();
        assert_eq!(
            store.put(Record::new(key(3), vec![3])),
            Err(StoreError::MaxRecords { max: 2 })
        );
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
        store.put(Record::new(key(3), vec![3])).unwrap();
        assert_eq!(
            store.put(Record::new(key(2), vec![2])),
            Err(StoreError::MaxRecords { max: 2 })
        );
        store.remove(&key(3)).unwrap();
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
