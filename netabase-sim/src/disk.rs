//! A simulated disk under each node's [`RecordStore`]: writes are pending until a sync,
//! which takes a seeded latency; a crash loses what is pending.
//!
//! The node sees the `live` store (every write it made, synced or not). Each write is also
//! logged; a completed sync replays the log onto the `durable` store, which is all a
//! crashed node keeps. Without a disk model (`[disk]` absent from the scenario) every write
//! is durable at once, as the simulator always assumed.
//!
//! Two of the deliberate bugs a scenario can switch on live here (`[faults] inject`):
//! a store that ignores versions (its compare-and-put always takes the incoming copy) and
//! one that never persists the clock ceiling.

use std::time::Duration;

use netabase_core::store::{PutOutcome, decide_put};
use netabase_core::{
    Instant, MemoryStore, PeerId, ProviderRecord, Record, RecordKey, RecordStore, StoreError,
};

/// One write, as replayed onto the durable store at a sync.
#[derive(Clone, Debug)]
enum DiskOp {
    Put(Record),
    Remove(RecordKey),
    AddProvider(ProviderRecord),
    RemoveProvider(RecordKey, PeerId),
    Expire(Instant),
    Ceiling(u64),
    OutboxAdd(RecordKey),
    OutboxRemove(RecordKey),
}

/// Deliberate store bugs (see [`crate::scenario::FaultSpec`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreBugs {
    /// Compare-and-put always stores the incoming copy, older or not.
    pub ignore_versions: bool,
    /// The clock ceiling is never written.
    pub drop_clock_ceiling: bool,
    /// Tombstones are stored with their expiry this much earlier than the node asked for
    /// (the node's horizon minus a second: they go a second after their version).
    pub shorten_tombstones: Option<Duration>,
}

/// A node's store on a simulated disk.
#[derive(Clone, Debug)]
pub struct SimStore {
    live: MemoryStore,
    /// What survives a crash; `None`: every write is durable at once.
    durable: Option<MemoryStore>,
    pending: Vec<DiskOp>,
    bugs: StoreBugs,
}

impl SimStore {
    /// An empty store for `local`; `disk`: writes wait for a sync to be durable.
    pub fn new(local: PeerId, disk: bool, bugs: StoreBugs) -> Self {
        let live = MemoryStore::new(local);
        SimStore {
            durable: disk.then(|| live.clone()),
            live,
            pending: Vec::new(),
            bugs,
        }
    }

    /// The store as the node sees it.
    pub fn memory(&self) -> &MemoryStore {
        &self.live
    }

    /// Whether writes wait for a sync.
    pub fn has_disk(&self) -> bool {
        self.durable.is_some()
    }

    /// Whether writes are waiting for a sync.
    pub fn is_dirty(&self) -> bool {
        !self.pending.is_empty()
    }

    /// A sync completed: every pending write is durable.
    pub fn sync(&mut self) {
        let Some(durable) = self.durable.as_mut() else {
            self.pending.clear();
            return;
        };
        // The same writes in the same order give the same results as on the live store.
        for op in self.pending.drain(..) {
            let _ = match op {
                DiskOp::Put(r) => durable.put(r),
                DiskOp::Remove(k) => durable.remove(&k),
                DiskOp::AddProvider(p) => durable.add_provider(p),
                DiskOp::RemoveProvider(k, p) => durable.remove_provider(&k, &p),
                DiskOp::Expire(now) => durable.remove_expired(now).map(|_| ()),
                DiskOp::Ceiling(c) => durable.set_clock_ceiling(c),
                DiskOp::OutboxAdd(k) => durable.outbox_add(&k),
                DiskOp::OutboxRemove(k) => durable.outbox_remove(&k),
            };
        }
    }

    /// The node crashed: what it restarts with (the durable writes only).
    pub fn crash(self) -> SimStore {
        match self.durable {
            Some(durable) => SimStore {
                live: durable.clone(),
                durable: Some(durable),
                pending: Vec::new(),
                bugs: self.bugs,
            },
            None => SimStore {
                pending: Vec::new(),
                ..self
            },
        }
    }

    fn log(&mut self, op: DiskOp) {
        if self.durable.is_some() {
            self.pending.push(op);
        }
    }
}

impl RecordStore for SimStore {
    fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        self.live.get(key)
    }

    fn put(&mut self, mut record: Record) -> Result<(), StoreError> {
        if let (Some(cut), Some(expires)) = (self.bugs.shorten_tombstones, record.expires)
            && netabase_core::model::Envelope::version_of(&record.value)
                .is_some_and(|(_, tombstone)| tombstone)
        {
            record.expires = Some(expires.saturating_sub(cut));
        }
        self.live.put(record.clone())?;
        self.log(DiskOp::Put(record));
        Ok(())
    }

    fn put_resolved(&mut self, record: Record) -> Result<PutOutcome, StoreError> {
        if self.bugs.ignore_versions {
            self.put(record)?;
            return Ok(PutOutcome::Stored);
        }
        let existing = self.get(&record.key)?;
        let (write, outcome) = decide_put(existing.as_ref(), record);
        if let Some(write) = write {
            self.put(write)?;
        }
        Ok(outcome)
    }

    fn clock_ceiling(&self) -> Result<Option<u64>, StoreError> {
        self.live.clock_ceiling()
    }

    fn set_clock_ceiling(&mut self, ceiling: u64) -> Result<(), StoreError> {
        if self.bugs.drop_clock_ceiling {
            return Ok(());
        }
        self.live.set_clock_ceiling(ceiling)?;
        self.log(DiskOp::Ceiling(ceiling));
        Ok(())
    }

    fn remove(&mut self, key: &RecordKey) -> Result<(), StoreError> {
        if self.live.get(key)?.is_none() {
            return Ok(());
        }
        self.live.remove(key)?;
        self.log(DiskOp::Remove(key.clone()));
        Ok(())
    }

    fn records(&self) -> Result<Vec<Record>, StoreError> {
        self.live.records()
    }

    fn records_after(
        &self,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.live.records_after(after, limit)
    }

    fn outbox_add(&mut self, key: &RecordKey) -> Result<(), StoreError> {
        self.live.outbox_add(key)?;
        self.log(DiskOp::OutboxAdd(key.clone()));
        Ok(())
    }

    fn outbox_remove(&mut self, key: &RecordKey) -> Result<(), StoreError> {
        self.live.outbox_remove(key)?;
        self.log(DiskOp::OutboxRemove(key.clone()));
        Ok(())
    }

    fn outbox(&self, limit: usize) -> Result<Vec<RecordKey>, StoreError> {
        self.live.outbox(limit)
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<(), StoreError> {
        self.live.add_provider(record.clone())?;
        self.log(DiskOp::AddProvider(record));
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Result<Vec<ProviderRecord>, StoreError> {
        self.live.providers(key)
    }

    fn provided(&self) -> Result<Vec<ProviderRecord>, StoreError> {
        self.live.provided()
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) -> Result<(), StoreError> {
        self.live.remove_provider(key, provider)?;
        self.log(DiskOp::RemoveProvider(key.clone(), *provider));
        Ok(())
    }

    fn remove_expired(&mut self, now: Instant) -> Result<usize, StoreError> {
        let removed = self.live.remove_expired(now)?;
        if removed > 0 {
            self.log(DiskOp::Expire(now));
        }
        Ok(removed)
    }

    fn validate(&self, key: &RecordKey, value: &[u8]) -> Result<(), StoreError> {
        self.live.validate(key, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: u8, v: u8) -> Record {
        Record::new(RecordKey::new(&[k]).unwrap(), vec![v])
    }

    #[test]
    fn a_crash_keeps_only_what_a_sync_made_durable() {
        let me = PeerId::from_seed(1);
        let mut s = SimStore::new(me, true, StoreBugs::default());
        s.put(rec(1, 1)).unwrap();
        s.set_clock_ceiling(10).unwrap();
        assert!(s.is_dirty());
        s.sync();
        assert!(!s.is_dirty());
        s.put(rec(2, 2)).unwrap();
        s.set_clock_ceiling(20).unwrap();
        let after = s.crash();
        assert_eq!(after.memory().record_count(), 1);
        assert_eq!(after.clock_ceiling().unwrap(), Some(10));
        // Without a disk model every write survives.
        let mut s = SimStore::new(me, false, StoreBugs::default());
        s.put(rec(1, 1)).unwrap();
        assert!(!s.is_dirty());
        assert_eq!(s.crash().memory().record_count(), 1);
    }
}
