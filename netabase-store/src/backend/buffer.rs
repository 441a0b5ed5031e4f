//! Changes held in memory on top of a committed state: the buffer of deferred commits of
//! the redb backend, and the changes of one write transaction over it.
//!
//! A [`Buffer`] maps each table it touches to its changed keys (a value, or `None` for a
//! removed key) and remembers whether the table was cleared, which hides every committed
//! entry of it. Readers look through a stack of buffers, the newest first, down to the
//! committed state: the first layer that knows a key decides it; a cleared table stops the
//! search at its layer.

use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};

use super::overlay::is_empty_range;
use super::{KeyRange, ReadTransaction, ValueReader, Visitor};
use crate::error::Result;

/// What a buffered entry costs beyond its key and value bytes (the map's node share and the
/// two vectors), for the memory bound.
const ENTRY_OVERHEAD: usize = 64;

/// The changes of one table.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableChanges {
    /// The table was cleared: committed entries are gone, only `entries` remain.
    cleared: bool,
    /// Changed keys: the new value, or `None` when the key was removed.
    entries: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The memory the entries take, about.
    bytes: usize,
}

fn entry_bytes(key: &[u8], value: Option<&[u8]>) -> usize {
    key.len() + value.map_or(0, <[u8]>::len) + ENTRY_OVERHEAD
}

impl TableChanges {
    fn insert(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let added = entry_bytes(&key, value.as_deref());
        let key_len = key.len();
        if let Some(old) = self.entries.insert(key, value) {
            self.bytes -= key_len + old.as_deref().map_or(0, <[u8]>::len) + ENTRY_OVERHEAD;
        }
        self.bytes += added;
    }

    /// Whether the table was cleared (its committed entries are gone).
    pub(crate) fn cleared(&self) -> bool {
        self.cleared
    }

    /// The changed keys in key order: the new value, or `None` for a removed key.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.entries
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
    }
}

/// What a layer knows about a key.
pub(crate) enum Lookup<'a> {
    /// The key holds this value.
    Value(&'a [u8]),
    /// The key holds nothing (removed, or its table cleared).
    Removed,
    /// This layer did not change the key: ask the one below.
    Unknown,
}

/// Changes of several tables, held in memory.
#[derive(Debug, Clone, Default)]
pub(crate) struct Buffer {
    /// A store has a handful of tables: a list is quicker to search than a map.
    tables: Vec<(Box<str>, TableChanges)>,
}

impl Buffer {
    /// Whether the buffer holds no change at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The memory the buffer takes, about.
    pub(crate) fn bytes(&self) -> usize {
        self.tables
            .iter()
            .map(|(name, t)| name.len() + ENTRY_OVERHEAD + t.bytes)
            .sum()
    }

    /// The changed tables with their changes.
    pub(crate) fn tables(&self) -> impl Iterator<Item = (&str, &TableChanges)> {
        self.tables.iter().map(|(name, t)| (&**name, t))
    }

    #[inline]
    fn table(&self, table: &str) -> Option<&TableChanges> {
        self.tables
            .iter()
            .find(|(name, _)| &**name == table)
            .map(|(_, t)| t)
    }

    fn table_mut(&mut self, table: &str) -> &mut TableChanges {
        let i = match self.tables.iter().position(|(name, _)| &**name == table) {
            Some(i) => i,
            None => {
                self.tables.push((table.into(), TableChanges::default()));
                self.tables.len() - 1
            }
        };
        &mut self.tables[i].1
    }

    /// What this buffer says about `key` of `table`.
    #[inline]
    pub(crate) fn lookup(&self, table: &str, key: &[u8]) -> Lookup<'_> {
        match self.table(table) {
            None => Lookup::Unknown,
            Some(t) => match t.entries.get(key) {
                Some(Some(value)) => Lookup::Value(value),
                Some(None) => Lookup::Removed,
                None if t.cleared => Lookup::Removed,
                None => Lookup::Unknown,
            },
        }
    }

    /// Sets `key` of `table` to `value`.
    pub(crate) fn put(&mut self, table: &str, key: &[u8], value: &[u8]) {
        self.table_mut(table)
            .insert(key.to_vec(), Some(value.to_vec()));
    }

    /// Removes `key` of `table`.
    pub(crate) fn remove(&mut self, table: &str, key: &[u8]) {
        self.table_mut(table).insert(key.to_vec(), None);
    }

    /// Removes every entry of `table`, committed or buffered.
    pub(crate) fn clear(&mut self, table: &str) {
        *self.table_mut(table) = TableChanges {
            cleared: true,
            ..TableChanges::default()
        };
    }

    /// Applies `newer`, a later set of changes, on top of this one.
    pub(crate) fn absorb(&mut self, newer: Buffer) {
        for (name, changes) in newer.tables {
            if changes.cleared {
                *self.table_mut(&name) = changes;
            } else {
                let table = self.table_mut(&name);
                for (key, value) in changes.entries {
                    table.insert(key, value);
                }
            }
        }
    }
}

/// Buffers stacked over a committed state, the newest first.
#[derive(Clone, Copy)]
pub(crate) struct Layers<'a> {
    layers: [Option<&'a Buffer>; 2],
}

/// Keys and values of a scan's range as the buffers have them: sorted, `None` removed.
struct Merged<'a> {
    /// A buffer cleared the table: committed entries do not show.
    hides_committed: bool,
    entries: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

impl<'a> Layers<'a> {
    /// `newer` over `older` over the committed state; empty buffers are skipped.
    #[inline]
    pub(crate) fn new(newer: Option<&'a Buffer>, older: Option<&'a Buffer>) -> Self {
        let keep = |b: Option<&'a Buffer>| b.filter(|b| !b.is_empty());
        Layers {
            layers: [keep(newer), keep(older)],
        }
    }

    fn iter(&self) -> impl Iterator<Item = &'a Buffer> + '_ {
        self.layers.iter().flatten().copied()
    }

    /// Whether no buffer holds anything: reads go straight to the committed state.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.layers.iter().all(Option::is_none)
    }

    /// Whether some buffer changed `table`.
    fn touches(&self, table: &str) -> bool {
        self.iter().any(|b| b.table(table).is_some())
    }

    /// What the buffers say about `key`: the newest that knows it decides.
    #[inline]
    pub(crate) fn lookup(&self, table: &str, key: &[u8]) -> Lookup<'a> {
        for buffer in self.iter() {
            match buffer.lookup(table, key) {
                Lookup::Unknown => continue,
                known => return known,
            }
        }
        Lookup::Unknown
    }

    /// The buffered changes of `table` within `range`, oldest layer first so that newer
    /// ones overwrite; `None` when no buffer changed the table.
    fn merged(&self, table: &str, range: KeyRange<'_>) -> Option<Merged<'a>> {
        if !self.touches(table) {
            return None;
        }
        let mut hides_committed = false;
        let mut map: BTreeMap<&'a [u8], Option<&'a [u8]>> = BTreeMap::new();
        for buffer in self.layers.iter().rev().flatten() {
            let Some(changes) = buffer.table(table) else {
                continue;
            };
            if changes.cleared {
                hides_committed = true;
                map.clear();
            }
            for (k, v) in changes.entries.range::<[u8], _>(range) {
                map.insert(k.as_slice(), v.as_deref());
            }
        }
        Some(Merged {
            hides_committed,
            entries: map.into_iter().collect(),
        })
    }

    /// [`ReadTransaction::get_with`] through the buffers down to `base`.
    pub(crate) fn get_with<'b>(
        &self,
        table: &str,
        key: &[u8],
        read: &mut ValueReader<'_>,
        base: impl FnOnce() -> Result<Base<'b>>,
    ) -> Result<bool> {
        match self.lookup(table, key) {
            Lookup::Value(value) => read(value).map(|()| true),
            Lookup::Removed => Ok(false),
            Lookup::Unknown => base()?.get_with(table, key, read),
        }
    }

    /// [`ReadTransaction::get_many_with`] through the buffers down to `base`.
    pub(crate) fn get_many_with<'b>(
        &self,
        table: &str,
        keys: &[&[u8]],
        read: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
        base: impl FnOnce() -> Result<Base<'b>>,
    ) -> Result<()> {
        if !self.touches(table) {
            return base()?.get_many_with(table, keys, read);
        }
        let mut base = Lazy::new(base);
        for (i, key) in keys.iter().enumerate() {
            match self.lookup(table, key) {
                Lookup::Value(value) => read(i, value)?,
                Lookup::Removed => {}
                Lookup::Unknown => {
                    base.get()?.get_with(table, key, &mut |v| read(i, v))?;
                }
            }
        }
        Ok(())
    }

    /// [`ReadTransaction::scan`] of the buffers merged with `base`.
    pub(crate) fn scan<'b>(
        &self,
        table: &str,
        range: KeyRange<'_>,
        visit: &mut Visitor<'_>,
        base: impl FnOnce() -> Result<Base<'b>>,
    ) -> Result<()> {
        if is_empty_range(&range) {
            return Ok(());
        }
        let Some(merged) = self.merged(table, range) else {
            return base()?.scan(table, range, visit);
        };
        let mut pending = merged.entries.into_iter().peekable();
        if !merged.hides_committed {
            let mut stopped = false;
            base()?.scan(table, range, &mut |k, v| {
                // Buffered keys before this committed one come first.
                while let Some((bk, bv)) = pending.next_if(|(bk, _)| *bk < k) {
                    if let Some(bv) = bv
                        && visit(bk, bv)?.is_break()
                    {
                        stopped = true;
                        return Ok(ControlFlow::Break(()));
                    }
                }
                // A buffered change of this very key replaces (or removes) it.
                let flow = match pending.next_if(|(bk, _)| *bk == k) {
                    Some((_, Some(bv))) => visit(k, bv)?,
                    Some((_, None)) => ControlFlow::Continue(()),
                    None => visit(k, v)?,
                };
                stopped = flow.is_break();
                Ok(flow)
            })?;
            if stopped {
                return Ok(());
            }
        }
        for (bk, bv) in pending {
            if let Some(bv) = bv
                && visit(bk, bv)?.is_break()
            {
                break;
            }
        }
        Ok(())
    }

    /// [`ReadTransaction::len`] of the buffers merged with `base`.
    pub(crate) fn len<'b>(
        &self,
        table: &str,
        base: impl FnOnce() -> Result<Base<'b>>,
    ) -> Result<u64> {
        if !self.touches(table) {
            return base()?.len(table);
        }
        let mut n = 0u64;
        self.scan(
            table,
            (Bound::Unbounded, Bound::Unbounded),
            &mut |_, _| {
                n += 1;
                Ok(ControlFlow::Continue(()))
            },
            base,
        )?;
        Ok(n)
    }
}

/// The committed state under the buffers.
pub(crate) type Base<'a> = &'a dyn ReadTransaction;

/// A base opened on first use.
struct Lazy<'a, F> {
    open: Option<F>,
    base: Option<Base<'a>>,
}

impl<'a, F: FnOnce() -> Result<Base<'a>>> Lazy<'a, F> {
    fn new(open: F) -> Self {
        Lazy {
            open: Some(open),
            base: None,
        }
    }

    fn get(&mut self) -> Result<Base<'a>> {
        if let Some(base) = self.base {
            return Ok(base);
        }
        let open = self.open.take().ok_or_else(|| {
            crate::StoreError::Backend("the committed state could not be opened".into())
        })?;
        let base = open()?;
        self.base = Some(base);
        Ok(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_layers_decide_and_clear_hides_older_ones() {
        let mut older = Buffer::default();
        older.put("t", b"a", b"1");
        older.put("t", b"b", b"2");
        let mut newer = Buffer::default();
        newer.clear("t");
        newer.put("t", b"c", b"3");
        let layers = Layers::new(Some(&newer), Some(&older));
        assert!(matches!(layers.lookup("t", b"a"), Lookup::Removed));
        assert!(matches!(layers.lookup("t", b"c"), Lookup::Value(b"3")));
        assert!(matches!(layers.lookup("u", b"a"), Lookup::Unknown));
        let mut absorbed = older.clone();
        absorbed.absorb(newer);
        let only = Layers::new(Some(&absorbed), None);
        assert!(matches!(only.lookup("t", b"b"), Lookup::Removed));
        assert!(matches!(only.lookup("t", b"c"), Lookup::Value(b"3")));
    }

    #[test]
    fn bytes_follow_replacements() {
        let mut buffer = Buffer::default();
        buffer.put("t", b"k", &[0; 100]);
        let one = buffer.bytes();
        buffer.put("t", b"k", &[0; 10]);
        assert_eq!(buffer.bytes(), one - 90);
        buffer.remove("t", b"k");
        assert_eq!(buffer.bytes(), one - 100);
        buffer.clear("t");
        assert!(buffer.bytes() < one - 100);
    }
}
