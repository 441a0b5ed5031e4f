//! The redb backend.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::buffer::{Buffer, Layers};
use super::overlay::is_empty_range;
use super::{
    Backend, BackendKind, Durability, KeyRange, ReadTransaction, ValueReader, Visitor,
    WriteTransaction,
};
use crate::error::{Result, StoreError};

/// Options of the redb backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedbOptions {
    /// Whether a commit is durable when it returns ([`Durability::Immediate`], the default:
    /// one `fdatasync` per commit) or only visible ([`Durability::Deferred`]).
    pub durability: Durability,
    /// redb's page cache size in bytes; redb's default when `None`.
    pub cache_size: Option<usize>,
    /// How many bytes of deferred commits are held in memory, about, before they are
    /// written into the file (in one durable commit); [`DEFAULT_BUFFER_LIMIT`] by default.
    pub buffer_limit: usize,
}

/// The default [`RedbOptions::buffer_limit`]: 8 MiB.
pub const DEFAULT_BUFFER_LIMIT: usize = 8 << 20;

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            durability: Durability::Immediate,
            cache_size: None,
            buffer_limit: DEFAULT_BUFFER_LIMIT,
        }
    }
}

/// A redb database file: ACID transactions, copy-on-write B-trees, one table per store
/// table.
///
/// With [`Durability::Immediate`] (the default) a commit returns after redb has written
/// and `fdatasync`ed the new state, so an acknowledged write survives a crash of the
/// process and a power loss.
///
/// # Deferred commits
///
/// A [`Durability::Deferred`] write transaction does not touch the file: it collects its
/// changes in memory, over a redb snapshot, and its commit adds them to a buffer in
/// memory that every later read consults first, so they are visible at once.
/// [`Backend::sync`] writes the whole buffer into redb in one durable commit: one commit
/// and one `fdatasync` for any number of deferred transactions (group commit). A crash
/// loses the buffer, that is, exactly the deferred commits not yet synced, and never part
/// of a transaction. When the buffer grows past [`RedbOptions::buffer_limit`] it is
/// written into redb in one durable commit, and a durable write transaction writes it
/// first in its own transaction (its commit persists both). Dropping the backend syncs.
/// Every redb commit of the backend is durable (see `RedbBackend::flush` for why).
///
/// Writers (deferred, durable and the buffer's flushes) are serialised by one lock. Read
/// transactions hold no lock: each takes the buffer as it is (shared, copied only if a
/// deferred commit changes it while the reader still holds it) with a redb snapshot.
#[derive(Debug)]
pub struct RedbBackend {
    db: redb::Database,
    durability: Durability,
    buffer_limit: usize,
    /// Serialises every writer.
    writer: Mutex<()>,
    /// Deferred commits not yet written into redb.
    buffered: Mutex<Arc<Buffer>>,
    /// Whether `buffered` holds anything, set and cleared under its lock: a reader that
    /// finds it clear takes its redb snapshot without that lock (see
    /// [`RedbBackend::snapshot`]).
    has_buffered: AtomicBool,
    /// Set while deferred commits are in the buffer, not yet durable. Changed only by the
    /// holder of the writer lock.
    dirty: AtomicBool,
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
        let already_open = |e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen {
                path: PathBuf::from(path),
            },
            other => map_err(other),
        };
        // What `redb::Builder::create` does, with the file's length changes made durable
        // at once (see `DurableLength`).
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(StoreError::Io)?;
        let file = redb::backends::FileBackend::new(file).map_err(already_open)?;
        let db = builder
            .create_with_backend(DurableLength(file))
            .map_err(already_open)?;
        Ok(Self::on(db, options))
    }

    /// Opens (or creates) a redb database on `storage`, any redb
    /// [`StorageBackend`](redb::StorageBackend) (a file of another kind, or the simulated
    /// disks of the power-loss tests) instead of a file at a path.
    ///
    /// Unlike [`RedbBackend::open`], the creation of a new database is not atomic: the
    /// caller makes sure that `storage` is either empty or holds a whole database.
    pub fn with_storage(storage: impl redb::StorageBackend, options: &RedbOptions) -> Result<Self> {
        let mut builder = redb::Database::builder();
        if let Some(bytes) = options.cache_size {
            builder.set_cache_size(bytes);
        }
        let db = builder
            .create_with_backend(DurableLength(storage))
            .map_err(map_err)?;
        Ok(Self::on(db, options))
    }

    fn on(db: redb::Database, options: &RedbOptions) -> Self {
        RedbBackend {
            db,
            durability: options.durability,
            buffer_limit: options.buffer_limit,
            writer: Mutex::new(()),
            buffered: Mutex::default(),
            has_buffered: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
        }
    }
}

/// A redb storage whose length changes are durable before the next write: `set_len` is
/// followed by `fdatasync`.
///
/// redb 3.1 grows its file with `set_len` and then, in the same commit, writes a header
/// that describes the longer file; with its default one-phase commit both wait for the
/// commit's one `fdatasync`. A power cut that keeps the header's block but not the new
/// length (the kernel writes dirty blocks back in any order, and the length is file-system
/// metadata, committed on its own schedule) leaves a file shorter than its header says,
/// and redb's open then stops on an assertion (`raw_file_len() >= layout().len()`) instead
/// of recovering: the store could never be opened again. The power-cut tests
/// (`netabase-store/tests/store/powercut.rs`) find such cuts. Syncing each length change
/// costs one `fdatasync` per growth of the file, which redb makes in large steps, and
/// keeps the header from ever describing more file than the disk holds.
#[derive(Debug)]
struct DurableLength<S>(S);

impl<S: redb::StorageBackend> redb::StorageBackend for DurableLength<S> {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)?;
        self.0.sync_data()
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
    }

    fn close(&self) -> std::io::Result<()> {
        self.0.close()
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
    super::sync_dir(&dir)
}

type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// Runs `f` on table `name` of `tx` (`None` if it does not exist).
#[inline]
fn with_table<R>(
    tx: &redb::ReadTransaction,
    name: &str,
    f: impl FnOnce(Option<&ReadTable>) -> Result<R>,
) -> Result<R> {
    // `ref`: the table is used where redb returned it, not moved out first.
    match tx.open_table(definition(name)) {
        Ok(ref table) => f(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => f(None),
        Err(e) => Err(map_err(e)),
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

/// The committed state: a redb snapshot.
impl ReadTransaction for redb::ReadTransaction {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        with_table(self, table, |table| match table {
            Some(table) => Ok(table.get(key).map_err(map_err)?.map(|v| v.value().to_vec())),
            None => Ok(None),
        })
    }

    fn get_with(&self, table: &str, key: &[u8], read: &mut ValueReader<'_>) -> Result<bool> {
        with_table(self, table, |table| {
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
        with_table(self, table, |table| {
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
        with_table(self, table, |table| match table {
            Some(table) => scan_table(table, range, visit),
            None => Ok(()),
        })
    }

    fn len(&self, table: &str) -> Result<u64> {
        with_table(self, table, |table| match table {
            Some(table) => table.len().map_err(map_err),
            None => Ok(0),
        })
    }
}

/// A redb snapshot with the deferred commits that were buffered when it was taken.
struct Snapshot<'a> {
    buffered: Option<&'a Buffer>,
    tx: &'a redb::ReadTransaction,
}

impl ReadTransaction for Snapshot<'_> {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        super::copied(self, table, key)
    }

    #[inline]
    fn get_with(&self, table: &str, key: &[u8], read: &mut ValueReader<'_>) -> Result<bool> {
        let layers = Layers::new(self.buffered, None);
        if layers.is_empty() {
            return self.tx.get_with(table, key, read);
        }
        layers.get_with(table, key, read, || Ok(self.tx))
    }

    fn get_many_with(
        &self,
        table: &str,
        keys: &[&[u8]],
        read: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        Layers::new(self.buffered, None).get_many_with(table, keys, read, || Ok(self.tx))
    }

    fn scan(&self, table: &str, range: KeyRange<'_>, visit: &mut Visitor<'_>) -> Result<()> {
        Layers::new(self.buffered, None).scan(table, range, visit, || Ok(self.tx))
    }

    fn len(&self, table: &str) -> Result<u64> {
        Layers::new(self.buffered, None).len(table, || Ok(self.tx))
    }
}

/// A read transaction of a [`RedbBackend`]: a snapshot of the last commit, deferred
/// commits included.
pub struct RedbRead {
    buffered: Option<Arc<Buffer>>,
    tx: redb::ReadTransaction,
}

impl RedbRead {
    fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            buffered: self.buffered.as_deref(),
            tx: &self.tx,
        }
    }
}

impl ReadTransaction for RedbRead {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snapshot().get(table, key)
    }

    fn get_with(&self, table: &str, key: &[u8], read: &mut ValueReader<'_>) -> Result<bool> {
        self.snapshot().get_with(table, key, read)
    }

    fn get_many_with(
        &self,
        table: &str,
        keys: &[&[u8]],
        read: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.snapshot().get_many_with(table, keys, read)
    }

    fn scan(&self, table: &str, range: KeyRange<'_>, visit: &mut Visitor<'_>) -> Result<()> {
        self.snapshot().scan(table, range, visit)
    }

    fn len(&self, table: &str) -> Result<u64> {
        self.snapshot().len(table)
    }
}

/// A write transaction of a [`RedbBackend`].
///
/// With [`Durability::Immediate`] it is a redb write transaction; with
/// [`Durability::Deferred`] it collects its changes in memory, over the buffered deferred
/// commits and a redb snapshot, and its commit adds them to the buffer.
pub struct RedbWrite<'a>(WriteKind<'a>);

// One value per open transaction, never collected: boxing either would only add an
// allocation per transaction.
#[allow(clippy::large_enum_variant)]
enum WriteKind<'a> {
    Direct(DirectWrite<'a>),
    Buffered(BufferedWrite<'a>),
}

/// A redb write transaction (the buffer was written into redb before it began).
struct DirectWrite<'a> {
    backend: &'a RedbBackend,
    tx: redb::WriteTransaction,
    /// Whether `tx` began by writing the buffered deferred commits, which its commit then
    /// makes durable (and the buffer empty).
    wrote_buffer: bool,
    _writer: MutexGuard<'a, ()>,
}

/// A deferred write transaction: changes in memory.
struct BufferedWrite<'a> {
    backend: &'a RedbBackend,
    /// The buffer when the transaction began; it cannot change while the writer lock is
    /// held.
    buffered: Option<Arc<Buffer>>,
    /// The redb snapshot under the buffer, opened on the first read that needs it (redb
    /// does not change either while the writer lock is held).
    committed: OnceCell<redb::ReadTransaction>,
    changes: Buffer,
    _writer: MutexGuard<'a, ()>,
}

impl BufferedWrite<'_> {
    fn committed(&self) -> Result<&redb::ReadTransaction> {
        if let Some(tx) = self.committed.get() {
            return Ok(tx);
        }
        let tx = self.backend.db.begin_read().map_err(map_err)?;
        Ok(self.committed.get_or_init(|| tx))
    }

    #[inline]
    fn layers(&self) -> Layers<'_> {
        Layers::new(Some(&self.changes), self.buffered.as_deref())
    }

    fn base(&self) -> Result<&dyn ReadTransaction> {
        Ok(self.committed()? as &dyn ReadTransaction)
    }
}

impl ReadTransaction for BufferedWrite<'_> {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        super::copied(self, table, key)
    }

    #[inline]
    fn get_with(&self, table: &str, key: &[u8], read: &mut ValueReader<'_>) -> Result<bool> {
        self.layers().get_with(table, key, read, || self.base())
    }

    fn get_many_with(
        &self,
        table: &str,
        keys: &[&[u8]],
        read: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.layers()
            .get_many_with(table, keys, read, || self.base())
    }

    fn scan(&self, table: &str, range: KeyRange<'_>, visit: &mut Visitor<'_>) -> Result<()> {
        self.layers().scan(table, range, visit, || self.base())
    }

    fn len(&self, table: &str) -> Result<u64> {
        self.layers().len(table, || self.base())
    }
}

impl BufferedWrite<'_> {
    fn replace(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
        let old = self.get(table, key)?;
        self.changes.put(table, key, value);
        Ok(old)
    }

    fn take(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let old = self.get(table, key)?;
        if old.is_some() {
            self.changes.remove(table, key);
        }
        Ok(old)
    }

    fn commit(self) -> Result<()> {
        let BufferedWrite {
            backend,
            buffered,
            committed,
            changes,
            _writer,
        } = self;
        if changes.is_empty() {
            return Ok(());
        }
        // The buffer is shared with no one but readers now: it is copied only when one of
        // them still holds it.
        drop(buffered);
        drop(committed);
        // Past the limit, the buffer goes into the file first (so a failure leaves this
        // transaction uncommitted, as a failed commit must).
        if backend.lock_buffered().bytes() + changes.bytes() > backend.buffer_limit {
            backend.flush()?;
        }
        let mut shared = backend.lock_buffered();
        Arc::make_mut(&mut shared).absorb(changes);
        backend.has_buffered.store(true, Ordering::Release);
        drop(shared);
        backend.dirty.store(true, Ordering::Release);
        Ok(())
    }
}

impl DirectWrite<'_> {
    fn open(&self, name: &str) -> Result<redb::Table<'_, &'static [u8], &'static [u8]>> {
        self.tx.open_table(definition(name)).map_err(map_err)
    }
}

impl ReadTransaction for DirectWrite<'_> {
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

impl DirectWrite<'_> {
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

    /// Removes the entries one by one: redb 3.1's `delete_table` of a table changed
    /// earlier in the same transaction records pages of this transaction as freed (its
    /// debug builds assert on it).
    fn clear(&mut self, table: &str) -> Result<()> {
        self.open(table)?.retain(|_, _| false).map_err(map_err)
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
        let DirectWrite {
            backend,
            tx,
            wrote_buffer,
            _writer,
        } = self;
        if wrote_buffer {
            // The commit may change keys the buffer also holds, so readers must not pair
            // the new snapshot with the old buffer: they wait for the buffer's lock (the
            // buffer is not empty, so none takes the lock-free path) until it is emptied.
            let mut shared = backend.lock_buffered();
            tx.commit().map_err(map_err)?;
            *shared = Arc::default();
            backend.has_buffered.store(false, Ordering::Release);
        } else {
            tx.commit().map_err(map_err)?;
        }
        // A durable commit persists every commit before it.
        backend.dirty.store(false, Ordering::Release);
        Ok(())
    }
}

macro_rules! by_kind {
    ($self:expr, $w:ident => $body:expr) => {
        match $self {
            WriteKind::Direct($w) => $body,
            WriteKind::Buffered($w) => $body,
        }
    };
}

impl ReadTransaction for RedbWrite<'_> {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        by_kind!(&self.0, w => w.get(table, key))
    }

    fn get_with(&self, table: &str, key: &[u8], read: &mut ValueReader<'_>) -> Result<bool> {
        by_kind!(&self.0, w => w.get_with(table, key, read))
    }

    fn get_many_with(
        &self,
        table: &str,
        keys: &[&[u8]],
        read: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        by_kind!(&self.0, w => w.get_many_with(table, keys, read))
    }

    fn scan(&self, table: &str, range: KeyRange<'_>, visit: &mut Visitor<'_>) -> Result<()> {
        by_kind!(&self.0, w => w.scan(table, range, visit))
    }

    fn len(&self, table: &str) -> Result<u64> {
        by_kind!(&self.0, w => w.len(table))
    }
}

impl WriteTransaction for RedbWrite<'_> {
    fn replace(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
        by_kind!(&mut self.0, w => w.replace(table, key, value))
    }

    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<()> {
        match &mut self.0 {
            WriteKind::Direct(w) => w.put(table, key, value),
            WriteKind::Buffered(w) => {
                w.changes.put(table, key, value);
                Ok(())
            }
        }
    }

    fn take(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        by_kind!(&mut self.0, w => w.take(table, key))
    }

    fn delete(&mut self, table: &str, key: &[u8]) -> Result<()> {
        match &mut self.0 {
            WriteKind::Direct(w) => w.delete(table, key),
            WriteKind::Buffered(w) => {
                w.changes.remove(table, key);
                Ok(())
            }
        }
    }

    fn clear(&mut self, table: &str) -> Result<()> {
        match &mut self.0 {
            WriteKind::Direct(w) => w.clear(table),
            WriteKind::Buffered(w) => {
                w.changes.clear(table);
                Ok(())
            }
        }
    }

    fn replace_all(
        &mut self,
        table: &str,
        entries: &[(&[u8], &[u8])],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        match &mut self.0 {
            WriteKind::Direct(w) => w.replace_all(table, entries),
            WriteKind::Buffered(w) => entries
                .iter()
                .map(|(key, value)| w.replace(table, key, value))
                .collect(),
        }
    }

    fn apply(&mut self, table: &str, changes: &[(&[u8], Option<&[u8]>)]) -> Result<()> {
        match &mut self.0 {
            WriteKind::Direct(w) => w.apply(table, changes),
            WriteKind::Buffered(w) => {
                for (key, value) in changes {
                    match value {
                        Some(value) => w.changes.put(table, key, value),
                        None => w.changes.remove(table, key),
                    }
                }
                Ok(())
            }
        }
    }

    fn commit(self) -> Result<()> {
        by_kind!(self.0, w => w.commit())
    }
}

/// Writes every change of `buffer` into `tx`.
fn write_buffer(tx: &redb::WriteTransaction, buffer: &Buffer) -> Result<()> {
    for (name, changes) in buffer.tables() {
        let mut table = tx.open_table(definition(name)).map_err(map_err)?;
        if changes.cleared() {
            // Not `delete_table`: see `DirectWrite::clear`.
            table.retain(|_, _| false).map_err(map_err)?;
        }
        for (key, value) in changes.entries() {
            match value {
                Some(value) => drop(table.insert(key, value).map_err(map_err)?),
                None => drop(table.remove(key).map_err(map_err)?),
            }
        }
    }
    Ok(())
}

impl RedbBackend {
    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_buffered(&self) -> MutexGuard<'_, Arc<Buffer>> {
        self.buffered.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The buffered deferred commits (`None` when there are none) and a redb snapshot that
    /// together show the latest state.
    ///
    /// Both are taken under the buffer's lock. A flush commits the buffer to redb first
    /// and empties it afterwards, so the snapshot is either the one before the buffer's
    /// commit (the buffer supplies the changes) or the one after it (the buffer repeats
    /// what redb already holds); the next flush waits for the writer lock, which the
    /// first holds until the buffer is empty.
    ///
    /// When the buffer is empty, which a reader learns from `has_buffered` without taking
    /// the lock, the snapshot alone is the latest state: the flag is cleared only after the
    /// flush's redb commit, and set before a deferred commit returns (a reader that finds
    /// it clear while a deferred commit is being absorbed reads before that commit).
    #[inline]
    fn snapshot(&self) -> Result<(Option<Arc<Buffer>>, redb::ReadTransaction)> {
        if !self.has_buffered.load(Ordering::Acquire) {
            return Ok((None, self.db.begin_read().map_err(map_err)?));
        }
        let shared = self.lock_buffered();
        let buffered = (!shared.is_empty()).then(|| Arc::clone(&shared));
        let tx = self.db.begin_read().map_err(map_err)?;
        drop(shared);
        Ok((buffered, tx))
    }

    /// Writes the buffered deferred commits into redb in one durable commit and empties the
    /// buffer. The caller holds the writer lock.
    ///
    /// redb's non-durable commits are never used: with redb 3.1 a non-durable commit can
    /// free pages of an earlier non-durable commit that a concurrent read transaction
    /// still reads (a debug build of redb stops on its assertion for this; the
    /// `concurrent_readers_see_whole_transactions_in_order` test hit it), so every commit
    /// of this backend is durable. The buffer's limit therefore bounds memory at the cost
    /// of one `fdatasync` per spill.
    fn flush(&self) -> Result<()> {
        let buffer = Arc::clone(&self.lock_buffered());
        let mut tx = self.db.begin_write().map_err(map_err)?;
        tx.set_durability(redb::Durability::Immediate)
            .map_err(map_err)?;
        write_buffer(&tx, &buffer)?;
        tx.commit().map_err(map_err)?;
        self.clear_buffer();
        self.dirty.store(false, Ordering::Release);
        Ok(())
    }

    /// Empties the buffer once its commits are in redb (the caller holds the writer lock).
    fn clear_buffer(&self) {
        let mut shared = self.lock_buffered();
        *shared = Arc::default();
        self.has_buffered.store(false, Ordering::Release);
    }

    /// The number of bytes of deferred commits held in memory, about (for tests and
    /// diagnostics).
    pub fn buffered_bytes(&self) -> usize {
        self.lock_buffered().bytes()
    }
}

impl Backend for RedbBackend {
    type Read<'a> = RedbRead;
    type Write<'a> = RedbWrite<'a>;

    fn begin_read(&self) -> Result<RedbRead> {
        let (buffered, tx) = self.snapshot()?;
        Ok(RedbRead { buffered, tx })
    }

    /// Runs `f` on the snapshot where it was taken.
    #[inline]
    fn with_read<R>(&self, f: impl FnOnce(&dyn ReadTransaction) -> Result<R>) -> Result<R> {
        // The common case of `snapshot`, without moving the transaction out of it.
        if !self.has_buffered.load(Ordering::Acquire) {
            return f(&self.db.begin_read().map_err(map_err)?);
        }
        let (buffered, tx) = self.snapshot()?;
        match buffered {
            None => f(&tx),
            Some(buffer) => f(&Snapshot {
                buffered: Some(&buffer),
                tx: &tx,
            }),
        }
    }

    #[inline]
    fn read_one<R>(
        &self,
        table: &str,
        key: &[u8],
        read: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<Option<R>> {
        if self.has_buffered.load(Ordering::Acquire) {
            return self.with_read(|tx| super::read_one_in(tx, table, key, read));
        }
        // Nothing buffered: redb's snapshot alone is the latest state (see `snapshot`).
        let tx = self.db.begin_read().map_err(map_err)?;
        with_table(&tx, table, |table| {
            let Some(table) = table else {
                return Ok(None);
            };
            match table.get(key).map_err(map_err)? {
                Some(value) => read(value.value()).map(Some),
                None => Ok(None),
            }
        })
    }

    fn begin_write(&self) -> Result<RedbWrite<'_>> {
        self.begin_write_with(self.durability)
    }

    fn begin_write_with(&self, durability: Durability) -> Result<RedbWrite<'_>> {
        let writer = self.lock_writer();
        match durability {
            Durability::Deferred => {
                let shared = self.lock_buffered();
                let buffered = (!shared.is_empty()).then(|| Arc::clone(&shared));
                drop(shared);
                Ok(RedbWrite(WriteKind::Buffered(BufferedWrite {
                    backend: self,
                    buffered,
                    committed: OnceCell::new(),
                    changes: Buffer::default(),
                    _writer: writer,
                })))
            }
            Durability::Immediate => {
                // Deferred commits come first, in this transaction: its durable commit
                // persists them with its own changes (and empties the buffer); if it is
                // dropped instead, they stay buffered.
                let buffer = Arc::clone(&self.lock_buffered());
                let mut tx = self.db.begin_write().map_err(map_err)?;
                tx.set_durability(redb::Durability::Immediate)
                    .map_err(map_err)?;
                write_buffer(&tx, &buffer)?;
                Ok(RedbWrite(WriteKind::Direct(DirectWrite {
                    backend: self,
                    tx,
                    wrote_buffer: !buffer.is_empty(),
                    _writer: writer,
                })))
            }
        }
    }

    /// Writes the buffered deferred commits into redb in one durable commit (one
    /// `fdatasync`); nothing when no commit since the last sync was deferred.
    fn sync(&self) -> Result<()> {
        if !self.dirty.load(Ordering::Acquire) {
            return Ok(());
        }
        let _writer = self.lock_writer();
        if !self.dirty.load(Ordering::Acquire) {
            return Ok(());
        }
        self.flush()
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Redb
    }
}

impl Drop for RedbBackend {
    /// Writes the buffered deferred commits durably before redb closes the file.
    fn drop(&mut self) {
        if self.dirty.load(Ordering::Acquire) && !std::thread::panicking() {
            let _ = self.flush();
        }
    }
}
