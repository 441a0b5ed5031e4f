//! The untyped, ordered key-value layer under the typed store.
//!
//! A [`Backend`] holds named tables of byte keys and byte values, sorted by key, and offers
//! read and write transactions over all of them. A write transaction is all-or-nothing:
//! [`WriteTransaction::commit`] makes every change of the transaction visible (and, for the
//! persistent backends with [`Durability::Immediate`], durable) at once, and dropping the
//! transaction without committing discards every change.
//!
//! Three implementations ship with the crate:
//!
//! - [`RedbBackend`] (feature `redb`, the default): ACID, copy-on-write B-trees, a commit
//!   returns after one `fdatasync`.
//! - [`SledBackend`] (feature `sled`): atomic batches, flushed and `fdatasync`ed before a
//!   commit returns; see its documentation for why sled's flush alone is not enough.
//! - [`MemoryBackend`]: ordered maps in memory, nothing persists. For tests, wasm32 and the
//!   simulator; it needs neither redb nor sled.
//!
//! [`AnyBackend`] wraps whichever of them was chosen at run time; the typed
//! [`Store`](crate::Store) uses it unless told otherwise.
//!
//! # Nesting
//!
//! Backends may block (redb, sled) or deadlock when a thread that holds a transaction opens
//! another one on the same backend. The typed store and the record store refuse such
//! nesting with [`StoreError::NestedTransaction`](crate::StoreError::NestedTransaction).

use std::ops::{Bound, ControlFlow};

use crate::error::Result;

// The write buffer of the redb backend.
#[cfg(feature = "redb")]
mod buffer;
pub(crate) mod guard;
mod memory;
mod overlay;
#[cfg(feature = "redb")]
mod redb;
#[cfg(feature = "sled")]
mod sled;

pub use memory::{MemoryBackend, MemoryRead, MemoryWrite};
#[cfg(feature = "redb")]
pub use redb::{DEFAULT_BUFFER_LIMIT, RedbBackend, RedbOptions, RedbRead, RedbWrite};
#[cfg(feature = "sled")]
pub use sled::{SledBackend, SledOptions, SledRead, SledWrite};

/// A range of keys inside one table: lower and upper bound.
pub type KeyRange<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The whole table.
pub const FULL_RANGE: KeyRange<'static> = (Bound::Unbounded, Bound::Unbounded);

/// A visitor of the entries of a scan, called in key order with each key and value; it
/// returns [`ControlFlow::Break`] to stop early, or an error to stop and fail the scan.
pub type Visitor<'v> = dyn FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>> + 'v;

/// A reader of one value, called with the value's bytes while they are borrowed from the
/// backend.
pub type ValueReader<'r> = dyn FnMut(&[u8]) -> Result<()> + 'r;

/// When a committed write transaction is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Durable when `commit` returns (redb: `fdatasync`; sled: `flush`, then `fdatasync`).
    #[default]
    Immediate,
    /// Visible when `commit` returns, persisted later (redb: held in memory and written
    /// with the next sync or durable commit; sled: by its background flusher). A crash may
    /// lose such commits, never part of one. For group commit ([`Backend::sync`]), bulk
    /// loads and benchmarks.
    Deferred,
}

/// [`ReadTransaction::get`] for a transaction whose
/// [`get_with`](ReadTransaction::get_with) lends values: a copy of the value it lends.
pub(crate) fn copied<T: ReadTransaction + ?Sized>(
    tx: &T,
    table: &str,
    key: &[u8],
) -> Result<Option<Vec<u8>>> {
    let mut out = None;
    tx.get_with(table, key, &mut |v| {
        out = Some(v.to_vec());
        Ok(())
    })?;
    Ok(out)
}

/// A read view of the tables: every read of one transaction sees the same committed state
/// (and, in a write transaction, that transaction's own changes).
pub trait ReadTransaction {
    /// The value under `key` in `table`; a table that was never written reads as empty.
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Calls `read` with the value under `key`, borrowed from the backend where it can be
    /// (no copy); returns whether there was a value.
    fn get_with(&self, table: &str, key: &[u8], read: &mut ValueReader<'_>) -> Result<bool> {
        match self.get(table, key)? {
            Some(value) => {
                read(&value)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Calls `read` with the index in `keys` and the value of every key of `keys` that has
    /// one, in the order of `keys`. Backends that pay per table access (redb) open the table
    /// once.
    fn get_many_with(
        &self,
        table: &str,
        keys: &[&[u8]],
        read: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        for (i, key) in keys.iter().enumerate() {
            self.get_with(table, key, &mut |value| read(i, value))?;
        }
        Ok(())
    }

    /// Calls `visit` with every entry of `table` within `range`, in ascending key order,
    /// until the entries run out or `visit` breaks or fails.
    fn scan(&self, table: &str, range: KeyRange<'_>, visit: &mut Visitor<'_>) -> Result<()>;

    /// The number of entries in `table`.
    fn len(&self, table: &str) -> Result<u64> {
        let mut n = 0u64;
        self.scan(table, FULL_RANGE, &mut |_, _| {
            n += 1;
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(n)
    }
}

/// A write transaction: reads see the transaction's own changes; [`commit`] applies them all
/// at once; dropping the transaction discards them.
///
/// [`commit`]: WriteTransaction::commit
pub trait WriteTransaction: ReadTransaction {
    /// Inserts or replaces the value under `key`; returns the value it replaced.
    fn replace(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Inserts or replaces the value under `key` without reading the old value.
    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.replace(table, key, value).map(drop)
    }

    /// Removes the value under `key`; returns it.
    fn take(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Removes the value under `key`, if any, without reading it.
    fn delete(&mut self, table: &str, key: &[u8]) -> Result<()> {
        self.take(table, key).map(drop)
    }

    /// Removes every entry of `table`.
    fn clear(&mut self, table: &str) -> Result<()>;

    /// Inserts or replaces every entry of `entries` in order (as [`replace`] would, one after
    /// the other); returns the values they replaced. Backends that pay per table access
    /// (redb) open the table once.
    ///
    /// [`replace`]: WriteTransaction::replace
    fn replace_all(
        &mut self,
        table: &str,
        entries: &[(&[u8], &[u8])],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        entries
            .iter()
            .map(|(key, value)| self.replace(table, key, value))
            .collect()
    }

    /// Puts (`Some`) or deletes (`None`) every key of `changes`.
    fn apply(&mut self, table: &str, changes: &[(&[u8], Option<&[u8]>)]) -> Result<()> {
        for (key, value) in changes {
            match value {
                Some(value) => self.put(table, key, value)?,
                None => self.delete(table, key)?,
            }
        }
        Ok(())
    }

    /// Applies every change of the transaction atomically. With
    /// [`Durability::Immediate`] the changes are durable when this returns `Ok`.
    fn commit(self) -> Result<()>;
}

/// An ordered key-value store with named tables and transactions.
pub trait Backend: Send + Sync + 'static {
    /// Read transactions.
    type Read<'a>: ReadTransaction
    where
        Self: 'a;
    /// Write transactions.
    type Write<'a>: WriteTransaction
    where
        Self: 'a;

    /// Opens a read transaction on the latest committed state.
    fn begin_read(&self) -> Result<Self::Read<'_>>;

    /// Runs `f` in a read transaction of its own, like `f(&self.begin_read()?)`, without
    /// handing the transaction out: an [`AnyBackend`] then runs `f` on the chosen backend's
    /// transaction where it was opened, instead of moving it into an [`AnyRead`] first
    /// (the typed store's one-shot reads go through here).
    fn with_read<R>(&self, f: impl FnOnce(&dyn ReadTransaction) -> Result<R>) -> Result<R>
    where
        Self: Sized,
    {
        f(&self.begin_read()?)
    }

    /// In a read transaction of its own, hands the value under `key` in `table` to `read`
    /// (borrowed from the backend where it can be) and returns what `read` returns, or
    /// `None` when there is no value: the typed store's lookups by primary key. Backends
    /// override it to read without a transaction object or calls through `dyn`; by
    /// default it is [`with_read`](Backend::with_read) and
    /// [`ReadTransaction::get_with`].
    fn read_one<R>(
        &self,
        table: &str,
        key: &[u8],
        read: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<Option<R>>
    where
        Self: Sized,
    {
        self.with_read(|tx| read_one_in(tx, table, key, read))
    }

    /// Opens a write transaction. Write transactions are serialised: this blocks while
    /// another one is open.
    fn begin_write(&self) -> Result<Self::Write<'_>>;

    /// Opens a write transaction whose commit has `durability`, whatever durability the
    /// backend was opened with. [`Durability::Deferred`] commits are made durable by the
    /// next [`Backend::sync`] (or the next durable commit): many writers' commits can then
    /// share one `fdatasync` (group commit).
    fn begin_write_with(&self, durability: Durability) -> Result<Self::Write<'_>>;

    /// Makes every committed transaction durable. Costs nothing (no I/O) when no commit
    /// since the last sync was deferred.
    fn sync(&self) -> Result<()>;

    /// Which implementation this is.
    fn kind(&self) -> BackendKind;
}

/// The backend implementations of this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// [`RedbBackend`].
    Redb,
    /// [`SledBackend`].
    Sled,
    /// [`MemoryBackend`].
    Memory,
}

/// Which backend to open, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendConfig {
    /// A redb database file.
    #[cfg(feature = "redb")]
    Redb(RedbOptions),
    /// A sled database directory.
    #[cfg(feature = "sled")]
    Sled(SledOptions),
    /// A fresh in-memory store; the path is ignored.
    Memory,
}

impl BackendConfig {
    /// redb with default options (durable commits).
    #[cfg(feature = "redb")]
    pub fn redb() -> Self {
        BackendConfig::Redb(RedbOptions::default())
    }

    /// sled with default options (flushed commits).
    #[cfg(feature = "sled")]
    pub fn sled() -> Self {
        BackendConfig::Sled(SledOptions::default())
    }

    /// The kind of backend this configuration opens.
    pub fn kind(&self) -> BackendKind {
        match self {
            #[cfg(feature = "redb")]
            BackendConfig::Redb(_) => BackendKind::Redb,
            #[cfg(feature = "sled")]
            BackendConfig::Sled(_) => BackendKind::Sled,
            BackendConfig::Memory => BackendKind::Memory,
        }
    }

    /// Opens the backend at `path`.
    pub fn open(&self, path: impl AsRef<std::path::Path>) -> Result<AnyBackend> {
        let _ = &path;
        Ok(match self {
            #[cfg(feature = "redb")]
            BackendConfig::Redb(options) => AnyBackend::Redb(RedbBackend::open(path, options)?),
            #[cfg(feature = "sled")]
            BackendConfig::Sled(options) => AnyBackend::Sled(SledBackend::open(path, options)?),
            BackendConfig::Memory => AnyBackend::Memory(MemoryBackend::new()),
        })
    }
}

/// One of the backends of this crate, chosen at run time.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyBackend {
    /// redb.
    #[cfg(feature = "redb")]
    Redb(RedbBackend),
    /// sled.
    #[cfg(feature = "sled")]
    Sled(SledBackend),
    /// Memory.
    Memory(MemoryBackend),
}

/// A read transaction of an [`AnyBackend`].
#[non_exhaustive]
// One value per open transaction, never collected: boxing redb's would only add an
// allocation per transaction.
#[allow(clippy::large_enum_variant)]
pub enum AnyRead<'a> {
    /// redb.
    #[cfg(feature = "redb")]
    Redb(RedbRead),
    /// sled.
    #[cfg(feature = "sled")]
    Sled(SledRead<'a>),
    /// Memory.
    Memory(MemoryRead<'a>),
}

/// A write transaction of an [`AnyBackend`].
#[non_exhaustive]
// One value per open transaction, never collected: boxing redb's would only add an
// allocation per transaction.
#[allow(clippy::large_enum_variant)]
pub enum AnyWrite<'a> {
    /// redb.
    #[cfg(feature = "redb")]
    Redb(RedbWrite<'a>),
    /// sled.
    #[cfg(feature = "sled")]
    Sled(SledWrite<'a>),
    /// Memory.
    Memory(MemoryWrite<'a>),
}

macro_rules! dispatch {
    ($value:expr, $enum:ident, $inner:ident => $body:expr) => {
        match $value {
            #[cfg(feature = "redb")]
            $enum::Redb($inner) => $body,
            #[cfg(feature = "sled")]
            $enum::Sled($inner) => $body,
            $enum::Memory($inner) => $body,
        }
    };
}

impl Backend for AnyBackend {
    type Read<'a> = AnyRead<'a>;
    type Write<'a> = AnyWrite<'a>;

    fn begin_read(&self) -> Result<AnyRead<'_>> {
        Ok(match self {
            #[cfg(feature = "redb")]
            AnyBackend::Redb(b) => AnyRead::Redb(b.begin_read()?),
            #[cfg(feature = "sled")]
            AnyBackend::Sled(b) => AnyRead::Sled(b.begin_read()?),
            AnyBackend::Memory(b) => AnyRead::Memory(b.begin_read()?),
        })
    }

    #[inline]
    fn with_read<R>(&self, f: impl FnOnce(&dyn ReadTransaction) -> Result<R>) -> Result<R> {
        dispatch!(self, AnyBackend, b => b.with_read(f))
    }

    #[inline]
    fn read_one<R>(
        &self,
        table: &str,
        key: &[u8],
        read: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<Option<R>> {
        dispatch!(self, AnyBackend, b => b.read_one(table, key, read))
    }

    fn begin_write(&self) -> Result<AnyWrite<'_>> {
        Ok(match self {
            #[cfg(feature = "redb")]
            AnyBackend::Redb(b) => AnyWrite::Redb(b.begin_write()?),
            #[cfg(feature = "sled")]
            AnyBackend::Sled(b) => AnyWrite::Sled(b.begin_write()?),
            AnyBackend::Memory(b) => AnyWrite::Memory(b.begin_write()?),
        })
    }

    fn begin_write_with(&self, durability: Durability) -> Result<AnyWrite<'_>> {
        Ok(match self {
            #[cfg(feature = "redb")]
            AnyBackend::Redb(b) => AnyWrite::Redb(b.begin_write_with(durability)?),
            #[cfg(feature = "sled")]
            AnyBackend::Sled(b) => AnyWrite::Sled(b.begin_write_with(durability)?),
            AnyBackend::Memory(b) => AnyWrite::Memory(b.begin_write_with(durability)?),
        })
    }

    fn sync(&self) -> Result<()> {
        dispatch!(self, AnyBackend, b => b.sync())
    }

    fn kind(&self) -> BackendKind {
        dispatch!(self, AnyBackend, b => b.kind())
    }
}

impl ReadTransaction for AnyRead<'_> {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        dispatch!(self, AnyRead, t => t.get(table, key))
    }
    fn get_with(&self, table: &str, key: &[u8], read: &mut ValueReader<'_>) -> Result<bool> {
        dispatch!(self, AnyRead, t => t.get_with(table, key, read))
    }
    fn get_many_with(
        &self,
        table: &str,
        keys: &[&[u8]],
        read: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        dispatch!(self, AnyRead, t => t.get_many_with(table, keys, read))
    }
    fn scan(&self, table: &str, range: KeyRange<'_>, visit: &mut Visitor<'_>) -> Result<()> {
        dispatch!(self, AnyRead, t => t.scan(table, range, visit))
    }
    fn len(&self, table: &str) -> Result<u64> {
        dispatch!(self, AnyRead, t => t.len(table))
    }
}

impl ReadTransaction for AnyWrite<'_> {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        dispatch!(self, AnyWrite, t => t.get(table, key))
    }
    fn get_with(&self, table: &str, key: &[u8], read: &mut ValueReader<'_>) -> Result<bool> {
        dispatch!(self, AnyWrite, t => t.get_with(table, key, read))
    }
    fn get_many_with(
        &self,
        table: &str,
        keys: &[&[u8]],
        read: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        dispatch!(self, AnyWrite, t => t.get_many_with(table, keys, read))
    }
    fn scan(&self, table: &str, range: KeyRange<'_>, visit: &mut Visitor<'_>) -> Result<()> {
        dispatch!(self, AnyWrite, t => t.scan(table, range, visit))
    }
    fn len(&self, table: &str) -> Result<u64> {
        dispatch!(self, AnyWrite, t => t.len(table))
    }
}

impl WriteTransaction for AnyWrite<'_> {
    fn replace(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
        dispatch!(self, AnyWrite, t => t.replace(table, key, value))
    }
    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<()> {
        dispatch!(self, AnyWrite, t => t.put(table, key, value))
    }
    fn take(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        dispatch!(self, AnyWrite, t => t.take(table, key))
    }
    fn delete(&mut self, table: &str, key: &[u8]) -> Result<()> {
        dispatch!(self, AnyWrite, t => t.delete(table, key))
    }
    fn clear(&mut self, table: &str) -> Result<()> {
        dispatch!(self, AnyWrite, t => t.clear(table))
    }
    fn replace_all(
        &mut self,
        table: &str,
        entries: &[(&[u8], &[u8])],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        dispatch!(self, AnyWrite, t => t.replace_all(table, entries))
    }
    fn apply(&mut self, table: &str, changes: &[(&[u8], Option<&[u8]>)]) -> Result<()> {
        dispatch!(self, AnyWrite, t => t.apply(table, changes))
    }
    fn commit(self) -> Result<()> {
        dispatch!(self, AnyWrite, t => t.commit())
    }
}

impl From<MemoryBackend> for AnyBackend {
    fn from(backend: MemoryBackend) -> Self {
        AnyBackend::Memory(backend)
    }
}

#[cfg(feature = "redb")]
impl From<RedbBackend> for AnyBackend {
    fn from(backend: RedbBackend) -> Self {
        AnyBackend::Redb(backend)
    }
}

#[cfg(feature = "sled")]
impl From<SledBackend> for AnyBackend {
    fn from(backend: SledBackend) -> Self {
        AnyBackend::Sled(backend)
    }
}

/// [`Backend::read_one`] in transaction `tx`.
pub(crate) fn read_one_in<R>(
    tx: &dyn ReadTransaction,
    table: &str,
    key: &[u8],
    read: impl FnOnce(&[u8]) -> Result<R>,
) -> Result<Option<R>> {
    let mut read = Some(read);
    let mut out = None;
    tx.get_with(table, key, &mut |value| {
        if let Some(read) = read.take() {
            out = Some(read(value)?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// The smallest key greater than every key that starts with `prefix`, or `None` when there is
/// none (the prefix is empty or all `0xFF`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Makes the directory entries of `dir` durable (after creating, renaming or growing a
/// file in it); the redb and sled backends call it.
#[cfg(all(unix, any(feature = "redb", feature = "sled")))]
pub(crate) fn sync_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(crate::error::StoreError::Io)
}

/// Directories cannot be opened and synced on this platform; each file's own sync is all
/// there is.
#[cfg(all(not(unix), any(feature = "redb", feature = "sled")))]
pub(crate) fn sync_dir(_dir: &std::path::Path) -> Result<()> {
    Ok(())
}
