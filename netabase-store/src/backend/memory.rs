//! The in-memory backend.

use std::collections::BTreeMap;

use super::overlay::{Changes, FlatKv, Locked, overlay_transactions};
use super::{Backend, BackendKind, Durability, KeyRange, ValueReader, Visitor};
use crate::error::Result;

/// Ordered maps in memory: transactions as on disk, nothing persists.
///
/// For tests, wasm32 and the simulator; it needs neither redb nor sled and is available
/// without any feature. Read transactions see a stable state (they hold a read lock, so a
/// commit waits for them); write transactions buffer their changes and apply them at commit.
#[derive(Debug)]
pub struct MemoryBackend {
    inner: Locked<MemKv>,
}

#[derive(Debug, Default)]
struct MemKv(BTreeMap<Vec<u8>, Vec<u8>>);

impl FlatKv for MemKv {
    type Bytes = Vec<u8>;

    fn get_with(&self, key: &[u8], read: &mut ValueReader<'_>) -> Result<bool> {
        match self.0.get(key) {
            Some(value) => read(value).map(|()| true),
            None => Ok(false),
        }
    }

    fn scan(&self, range: KeyRange<'_>, visit: &mut Visitor<'_>) -> Result<()> {
        for (k, v) in self.0.range::<[u8], _>(range) {
            if visit(k, v)?.is_break() {
                break;
            }
        }
        Ok(())
    }

    fn apply(&mut self, changes: Changes<Vec<u8>>) -> Result<()> {
        for (k, v) in changes {
            match v {
                Some(v) => {
                    self.0.insert(k, v);
                }
                None => {
                    self.0.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        MemoryBackend {
            inner: Locked::empty(MemKv::default()),
        }
    }

    /// The number of entries over all tables.
    pub fn entry_count(&self) -> usize {
        // Keys starting with 0x00 are the layout's own (table ids).
        self.inner
            .read()
            .kv
            .0
            .keys()
            .filter(|k| k.first() != Some(&0))
            .count()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

overlay_transactions!(
    /// A read transaction of a [`MemoryBackend`].
    MemoryRead,
    /// A write transaction of a [`MemoryBackend`].
    MemoryWrite,
    MemKv
);

impl Backend for MemoryBackend {
    type Read<'a> = MemoryRead<'a>;
    type Write<'a> = MemoryWrite<'a>;

    fn begin_read(&self) -> Result<MemoryRead<'_>> {
        Ok(MemoryRead(self.inner.begin_read()))
    }

    #[inline]
    fn read_one<R>(
        &self,
        table: &str,
        key: &[u8],
        read: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<Option<R>> {
        self.inner.read_one(table, key, read)
    }

    fn begin_write(&self) -> Result<MemoryWrite<'_>> {
        Ok(MemoryWrite(self.inner.begin_write(false)))
    }

    /// Memory is never durable: the same as [`Backend::begin_write`].
    fn begin_write_with(&self, _durability: Durability) -> Result<MemoryWrite<'_>> {
        self.begin_write()
    }

    /// Nothing to make durable.
    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Memory
    }
}
