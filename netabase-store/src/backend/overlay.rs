//! Transactions for flat ordered key-value stores without their own multi-key transactions
//! (sled, the memory maps).
//!
//! Tables are key prefixes: `table ++ 0x00 ++ key` (table names never contain `0x00`).
//! Writers are serialised by a mutex; a write transaction buffers its changes in an overlay
//! that its own reads consult, and at commit applies them in one atomic step under the
//! write side of a reader-writer lock. Read transactions hold the read side for their whole
//! life, so every read of one transaction sees the same committed state.

use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

use super::{KeyRange, ValueReader, Visitor};
use crate::error::Result;

/// The changes of a write transaction: `None` removes the key.
pub(crate) type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A flat ordered key-value store.
pub(crate) trait FlatKv: Send + Sync + 'static {
    /// The value under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Calls `read` with the value under `key`, if any; returns whether there was one.
    fn get_with(&self, key: &[u8], read: &mut ValueReader<'_>) -> Result<bool>;
    /// Visits the entries within the (non-empty) range in key order.
    fn scan(&self, range: KeyRange<'_>, visit: &mut Visitor<'_>) -> Result<()>;
    /// Applies all changes atomically.
    fn apply(&mut self, changes: Changes) -> Result<()>;
    /// Makes applied changes durable (as far as the store can).
    fn sync(&self) -> Result<()>;
}

/// A flat store with its locks.
#[derive(Debug)]
pub(crate) struct Locked<K> {
    writer: Mutex<()>,
    data: RwLock<K>,
}

impl<K: FlatKv> Locked<K> {
    pub(crate) fn new(kv: K) -> Self {
        Locked {
            writer: Mutex::new(()),
            data: RwLock::new(kv),
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, K> {
        self.data.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn begin_read(&self) -> OverlayRead<'_, K> {
        OverlayRead { data: self.read() }
    }

    pub(crate) fn begin_write(&self, sync: bool) -> OverlayWrite<'_, K> {
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        OverlayWrite {
            locked: self,
            _writer: writer,
            changes: Changes::new(),
            sync,
        }
    }
}

/// `table ++ 0x00 ++ key`.
fn flat(table: &str, key: &[u8]) -> Vec<u8> {
    debug_assert!(
        !table.as_bytes().contains(&0),
        "table names never contain 0x00"
    );
    let mut out = Vec::with_capacity(table.len() + 1 + key.len());
    out.extend_from_slice(table.as_bytes());
    out.push(0);
    out.extend_from_slice(key);
    out
}

/// Calls `f` with `table ++ 0x00 ++ key`, built on the stack when it is short.
fn with_flat<R>(table: &str, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    const INLINE: usize = 96;
    let len = table.len() + 1 + key.len();
    if len > INLINE {
        return f(&flat(table, key));
    }
    debug_assert!(
        !table.as_bytes().contains(&0),
        "table names never contain 0x00"
    );
    let mut buf = [0u8; INLINE];
    buf[..table.len()].copy_from_slice(table.as_bytes());
    buf[table.len() + 1..len].copy_from_slice(key);
    f(&buf[..len])
}

/// The flat bounds of `range` inside `table`.
fn flat_range(table: &str, range: KeyRange<'_>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let lo = match range.0 {
        Bound::Included(k) => Bound::Included(flat(table, k)),
        Bound::Excluded(k) => Bound::Excluded(flat(table, k)),
        Bound::Unbounded => Bound::Included(flat(table, &[])),
    };
    let hi = match range.1 {
        Bound::Included(k) => Bound::Included(flat(table, k)),
        Bound::Excluded(k) => Bound::Excluded(flat(table, k)),
        Bound::Unbounded => {
            let mut end = table.as_bytes().to_vec();
            end.push(1);
            Bound::Excluded(end)
        }
    };
    (lo, hi)
}

fn as_slices(range: &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> KeyRange<'_> {
    (
        range.0.as_ref().map(Vec::as_slice),
        range.1.as_ref().map(Vec::as_slice),
    )
}

/// Whether a range holds no key at all (such ranges make ordered maps panic).
pub(crate) fn is_empty_range(range: &KeyRange<'_>) -> bool {
    match (range.0, range.1) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b))
        | (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

fn scan_flat<K: FlatKv>(
    kv: &K,
    table: &str,
    range: KeyRange<'_>,
    visit: &mut Visitor<'_>,
) -> Result<()> {
    if is_empty_range(&range) {
        return Ok(());
    }
    let skip = table.len() + 1;
    let flat = flat_range(table, range);
    kv.scan(as_slices(&flat), &mut |k, v| visit(&k[skip..], v))
}

/// A read transaction: holds the read lock for its life.
pub(crate) struct OverlayRead<'a, K> {
    data: RwLockReadGuard<'a, K>,
}

impl<K: FlatKv> OverlayRead<'_, K> {
    pub(crate) fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        with_flat(table, key, |k| self.data.get(k))
    }

    pub(crate) fn get_with(
        &self,
        table: &str,
        key: &[u8],
        read: &mut ValueReader<'_>,
    ) -> Result<bool> {
        with_flat(table, key, |k| self.data.get_with(k, read))
    }

    pub(crate) fn scan(
        &self,
        table: &str,
        range: KeyRange<'_>,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        scan_flat(&*self.data, table, range, visit)
    }
}

/// A write transaction: holds the writer lock for its life and buffers its changes.
pub(crate) struct OverlayWrite<'a, K> {
    locked: &'a Locked<K>,
    _writer: MutexGuard<'a, ()>,
    changes: Changes,
    sync: bool,
}

impl<K: FlatKv> OverlayWrite<'_, K> {
    pub(crate) fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        with_flat(table, key, |k| match self.changes.get(k) {
            Some(change) => Ok(change.clone()),
            None => self.locked.read().get(k),
        })
    }

    pub(crate) fn get_with(
        &self,
        table: &str,
        key: &[u8],
        read: &mut ValueReader<'_>,
    ) -> Result<bool> {
        with_flat(table, key, |k| match self.changes.get(k) {
            Some(Some(value)) => read(value).map(|()| true),
            Some(None) => Ok(false),
            None => self.locked.read().get_with(k, read),
        })
    }

    pub(crate) fn scan(
        &self,
        table: &str,
        range: KeyRange<'_>,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        if is_empty_range(&range) {
            return Ok(());
        }
        let skip = table.len() + 1;
        let flat = flat_range(table, range);
        let mut pending = self.changes.range::<[u8], _>(as_slices(&flat)).peekable();
        let mut stopped = false;
        self.locked.read().scan(as_slices(&flat), &mut |k, v| {
            // Changes before this base entry come first.
            while let Some((ck, cv)) = pending.next_if(|(ck, _)| ck.as_slice() < k) {
                if let Some(cv) = cv
                    && visit(&ck[skip..], cv)?.is_break()
                {
                    stopped = true;
                    return Ok(ControlFlow::Break(()));
                }
            }
            // A change of this very key replaces (or removes) it.
            let flow = match pending.next_if(|(ck, _)| ck.as_slice() == k) {
                Some((_, Some(cv))) => visit(&k[skip..], cv)?,
                Some((_, None)) => ControlFlow::Continue(()),
                None => visit(&k[skip..], v)?,
            };
            stopped = flow.is_break();
            Ok(flow)
        })?;
        if !stopped {
            for (ck, cv) in pending {
                if let Some(cv) = cv
                    && visit(&ck[skip..], cv)?.is_break()
                {
                    break;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn replace(
        &mut self,
        table: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let old = self.get(table, key)?;
        self.changes.insert(flat(table, key), Some(value.to_vec()));
        Ok(old)
    }

    pub(crate) fn put(&mut self, table: &str, key: &[u8], value: &[u8]) {
        self.changes.insert(flat(table, key), Some(value.to_vec()));
    }

    pub(crate) fn take(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let old = self.get(table, key)?;
        if old.is_some() {
            self.changes.insert(flat(table, key), None);
        }
        Ok(old)
    }

    pub(crate) fn delete(&mut self, table: &str, key: &[u8]) {
        self.changes.insert(flat(table, key), None);
    }

    pub(crate) fn clear(&mut self, table: &str) -> Result<()> {
        let flat = flat_range(table, super::FULL_RANGE);
        let mut doomed: Vec<Vec<u8>> = Vec::new();
        self.locked.read().scan(as_slices(&flat), &mut |k, _| {
            doomed.push(k.to_vec());
            Ok(ControlFlow::Continue(()))
        })?;
        for (_, change) in self.changes.range_mut::<[u8], _>(as_slices(&flat)) {
            *change = None;
        }
        for k in doomed {
            self.changes.insert(k, None);
        }
        Ok(())
    }

    pub(crate) fn commit(self) -> Result<()> {
        if self.changes.is_empty() {
            return Ok(());
        }
        self.locked
            .data
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .apply(self.changes)?;
        if self.sync {
            self.locked.read().sync()?;
        }
        Ok(())
    }
}
