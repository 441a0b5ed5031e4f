//! The redb backend.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::overlay::is_empty_range;
use super::{
    Backend, BackendKind, Durability, KeyRange, ReadTransaction, ValueReader, Visitor,
    WriteTransaction,
};
use crate::error::{Result, StoreError};

/// Options of the redb backend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedbOptions {
    /// Whether a commit is durable when it returns ([`Durability::Immediate`], the default:
    /// one `fdatasync` per commit) or only visible ([`Durability::Deferred`]).
    pub durability: Durability,
    /// redb's page cache size in bytes; redb's default when `None`.
    pub cache_size: Option<usize>,
}

/// A redb database file: ACID transactions, copy-on-write B-trees, one table per store
/// table.
///
/// With [`Durability::Immediate`] (the default) a commit returns after redb has written
/// and `fdatasync`ed the new state, so an acknowledged write survives a crash of the
/// process and a power loss.
#[derive(Debug)]
pub struct RedbBackend {
    db: redb::Database,
    durability: Durability,
    /// Set when a deferred write transaction begins; [`Backend::sync`] clears it before it
    /// commits durably. Writers are serialised, so a deferred commit either precedes the
    /// sync's commit (and is made durable by it) or sets the flag again.
    unsynced: AtomicBool,
}

fn definition(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// Maps any redb error to a store error, keeping I/O errors as such.
fn map_err(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(io) => StoreError::Io(io),
        redb::Error::Corrupted(what) => StoreError::Backend(format!("redb: corrupted: {what}")),
        other => StoreError::Backend(format!("redb: {other}")),
    }
}

impl RedbBackend {
    /// Opens (or creates) the redb database file at `path`.
    ///
    /// Fails with [`StoreError::AlreadyOpen`] when another process or handle has it open.
    pub fn open(path: impl AsRef<Path>, options: &RedbOptions) -> Result<Self> {
        let path = path.as_ref();
        let mut builder = redb::Database::builder();
        if let Some(bytes) = options.cache_size {
            builder.set_cache_size(bytes);
        }
        if !path.exists() {
            create_atomically(&builder, path)?;
        }
        let db = builder.create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen {
                path: PathBuf::from(path),
            },
            other => map_err(other),
        })?;
        Ok(RedbBackend {
            db,
            durability: options.durability,
            unsynced: AtomicBool::new(false),
        })
    }
}

/// Creates a new, empty database file at `path` so that no crash can leave a half-written
/// file there.
///
/// redb initialises a new file in several writes; a process killed in between leaves a file
/// that no later open accepts ("invalid data"), so a store that never held a write would be
/// unusable. The file is therefore initialised under a temporary name in the same directory,
/// made durable, and hard-linked into place: linking is atomic and never replaces an
/// existing file, so when two processes create the store at once one file wins and both
/// open it (the second open then fails with [`StoreError::AlreadyOpen`] as usual). The
/// directory is synced so that the new name itself survives a power loss.
fn create_atomically(builder: &redb::Builder, path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.creating-{}", std::process::id()));
    // A leftover of this process id (a previous crash of a process that had the same id).
    let _ = std::fs::remove_file(&temp);
    let created = builder.create(&temp).map_err(map_err).and_then(|db| {
        drop(db);
        std::fs::File::open(&temp)
            .and_then(|f| f.sync_all())
            .map_err(StoreError::Io)
    });
    let linked = created.and_then(|()| match std::fs::hard_link(&temp, path) {
        Ok(()) => Ok(()),
        // Another process created the store first: open that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        // A file system without hard links: a rename is atomic too, only not exclusive.
        Err(_) if !path.exists() => std::fs::rename(&temp, path).map_err(StoreError::Io),
        Err(e) => Err(StoreError::Io(e)),
    });
    let _ = std::fs::remove_file(&temp);
    linked?;
    sync_dir(&dir)
}

/// Makes the directory entries of `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::Io)
}

/// Directories cannot be opened and synced on this platform; redb's own sync covers the
/// file.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// A read transaction of a [`RedbBackend`]: a snapshot of the last commit.
pub struct RedbRead {
    tx: redb::ReadTransaction,
}

/// A read transaction borrowed: what [`RedbRead`] and [`RedbBackend`]'s one-shot reads run
/// on.
struct ReadRef<'a>(&'a redb::ReadTransaction);

impl ReadRef<'_> {
    /// Runs `f` on table `name` (`None` if it does not exist).
    #[inline]
    fn with_table<R>(
        &self,
        name: &str,
        f: impl FnOnce(Option<&ReadTable>) -> Result<R>,
    ) -> Result<R> {
        match self.0.open_table(definition(name)) {
            Ok(table) => f(Some(&table)),
            Err(redb::TableError::TableDoesNotExist(_)) => f(None),
            Err(e) => Err(map_err(e)),
        }
    }
}

fn scan_table<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    range: KeyRange<'_>,
    visit: &mut Visitor<'_>,
) -> Result<()> {
    if is_empty_range(&range) {
        return Ok(());
    }
    for entry in table.range::<&[u8]>(range).map_err(map_err)? {
        let (k, v) = entry.map_err(map_err)?;
        if visit(k.value(), v.value())?.is_break() {
            break;
        }
    }
    Ok(())
}

impl ReadTransaction for RedbRead {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        ReadRef(&self.tx).get(table, key)
    }

    fn get_with(&self, table: &str, key: &[u8], read: &mut ValueReader<'_>) -> Result<bool> {
        ReadRef(&self.tx).get_with(table, key, read)
    }

    fn get_many_with(
        &self,
        table: &str,
        keys: &[&[u8]],
        read: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        ReadRef(&self.tx).get_many_with(table, keys, read)
    }

    fn scan(&self, table: &str, range: KeyRange<'_>, visit: &mut Visitor<'_>) -> Result<()> {
        ReadRef(&self.tx).scan(table, range, visit)
    }

    fn len(&self, table: &str) -> Result<u64> {
        ReadRef(&self.tx).len(table)
    }
}

impl ReadTransaction for ReadRef<'_> {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with_table(table, |table| match table {
            Some(table) => Ok(table.get(key).map_err(map_err)?.map(|v| v.value().to_vec())),
            None => Ok(None),
        })
    }

    fn get_with(&self, table: &str, key: &[u8], read: &mut ValueReader<'_>) -> Result<bool> {
        self.with_table(table, |table| {
            let Some(table) = table else {
                return Ok(false);
            };
            match table.get(key).map_err(map_err)? {
                Some(value) => read(value.value()).map(|()| true),
                None => Ok(false),
            }
        })
    }

    fn get_many_with(
        &self,
        table: &str,
        keys: &[&[u8]],
        read: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.with_table(table, |table| {
            let Some(table) = table else {
                return Ok(());
            };
            for (i, key) in keys.iter().enumerate() {
                if let Some(value) = table.get(*key).map_err(map_err)? {
                    read(i, value.value())?;
                }
            }
            Ok(())
        })
    }

    fn scan(&self, table: &str, range: KeyRange<'_>, visit: &mut Visitor<'_>) -> Result<()> {
        self.with_table(table, |table| match table {
            Some(table) => scan_table(table, range, visit),
            None => Ok(()),
        })
    }

    fn len(&self, table: &str) -> Result<u64> {
        self.with_table(table, |table| match table {
            Some(table) => table.len().map_err(map_err),
            None => Ok(0),
        })
    }
}

/// A write transaction of a [`RedbBackend`].
pub struct RedbWrite {
    tx: redb::WriteTransaction,
}

impl RedbWrite {
    fn open(&self, name: &str) -> Result<redb::Table<'_, &'static [u8], &'static [u8]>> {
        self.tx.open_table(definition(name)).map_err(map_err)
    }
}

impl ReadTransaction for RedbWrite {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let table = self.open(table)?;
        Ok(table.get(key).map_err(map_err)?.map(|v| v.value().to_vec()))
    }

    fn get_with(&self, table: &str, key: &[u8], read: &mut ValueReader<'_>) -> Result<bool> {
        let table = self.open(table)?;
        match table.get(key).map_err(map_err)? {
            Some(value) => read(value.value()).map(|()| true),
            None => Ok(false),
        }
    }

    fn scan(&self, table: &str, range: KeyRange<'_>, visit: &mut Visitor<'_>) -> Result<()> {
        scan_table(&self.open(table)?, range, visit)
    }

    fn len(&self, table: &str) -> Result<u64> {
        self.open(table)?.len().map_err(map_err)
    }
}

impl WriteTransaction for RedbWrite {
    fn replace(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut table = self.open(table)?;
        let old = table
            .insert(key, value)
            .map_err(map_err)?
            .map(|v| v.value().to_vec());
        Ok(old)
    }

    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let mut table = self.open(table)?;
        table.insert(key, value).map_err(map_err)?;
        Ok(())
    }

    fn take(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut table = self.open(table)?;
        let old = table
            .remove(key)
            .map_err(map_err)?
            .map(|v| v.value().to_vec());
        Ok(old)
    }

    fn delete(&mut self, table: &str, key: &[u8]) -> Result<()> {
        let mut table = self.open(table)?;
        table.remove(key).map_err(map_err)?;
        Ok(())
    }

    fn clear(&mut self, table: &str) -> Result<()> {
        self.tx.delete_table(definition(table)).map_err(map_err)?;
        Ok(())
    }

    fn replace_all(
        &mut self,
        table: &str,
        entries: &[(&[u8], &[u8])],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let mut table = self.open(table)?;
        entries
            .iter()
            .map(|(key, value)| {
                Ok(table
                    .insert(*key, *value)
                    .map_err(map_err)?
                    .map(|v| v.value().to_vec()))
            })
            .collect()
    }

    fn apply(&mut self, table: &str, changes: &[(&[u8], Option<&[u8]>)]) -> Result<()> {
        let mut table = self.open(table)?;
        for (key, value) in changes {
            match value {
                Some(value) => drop(table.insert(*key, *value).map_err(map_err)?),
                None => drop(table.remove(*key).map_err(map_err)?),
            }
        }
        Ok(())
    }

    fn commit(self) -> Result<()> {
        self.tx.commit().map_err(map_err)
    }
}

impl Backend for RedbBackend {
    type Read<'a> = RedbRead;
    type Write<'a> = RedbWrite;

    fn begin_read(&self) -> Result<RedbRead> {
        Ok(RedbRead {
            tx: self.db.begin_read().map_err(map_err)?,
        })
    }

    /// Runs `f` on the transaction where it was opened.
    #[inline]
    fn with_read<R>(&self, f: impl FnOnce(&dyn ReadTransaction) -> Result<R>) -> Result<R> {
        let tx = self.db.begin_read().map_err(map_err)?;
        f(&ReadRef(&tx))
    }

    fn begin_write(&self) -> Result<RedbWrite> {
        self.begin_write_with(self.durability)
    }

    fn begin_write_with(&self, durability: Durability) -> Result<RedbWrite> {
        let mut tx = self.db.begin_write().map_err(map_err)?;
        let durability = match durability {
            Durability::Immediate => redb::Durability::Immediate,
            Durability::Deferred => {
                self.unsynced.store(true, Ordering::Release);
                redb::Durability::None
            }
        };
        tx.set_durability(durability).map_err(map_err)?;
        Ok(RedbWrite { tx })
    }

    /// An empty durable commit: redb persists the latest state, with every deferred commit
    /// before it.
    fn sync(&self) -> Result<()> {
        if !self.unsynced.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let result = self
            .begin_write_with(Durability::Immediate)
            .and_then(|tx| tx.commit());
        if result.is_err() {
            self.unsynced.store(true, Ordering::Release);
        }
        result
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Redb
    }
}
