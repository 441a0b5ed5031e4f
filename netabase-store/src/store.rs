//! The typed store: [`Store`], its transactions and batches.

use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use netabase_core::Version;
use netabase_core::model::{
    KeyEncodeError, ModelId, NetabaseDefinition, NetabaseModel, PrimaryKey, SecondaryKey,
};
use serde::Serialize;

use crate::backend::guard::TxGuard;
use crate::backend::{
    AnyBackend, Backend, BackendConfig, Durability, MemoryBackend, WriteTransaction,
};
use crate::error::Result;
#[allow(unused_imports)] // for documentation links
use crate::error::StoreError;
use crate::migration::StoreBuilder;
use crate::ops::{Reader, Scan, Tables, Writer};

/// A typed embedded database holding the models of one definition `D`.
///
/// Values are stored with bincode 2 behind a small versioned header, one table per model,
/// with a secondary-index table per model that is written in the same transaction as the
/// records and kept exact on replace and remove. Every method is one transaction;
/// [`write`](Store::write) and [`read`](Store::read) group several operations, across
/// models, into one.
///
/// `Store` is cheap to clone (the clones share the backend) and can be used from several
/// threads: reads run concurrently, writes are serialised.
///
/// ```
/// # use netabase_store::Store;
/// # fn demo<D: netabase_store::NetabaseDefinition>() -> netabase_store::Result<()> {
/// let store = Store::<D>::memory()?;
/// # let _ = store; Ok(()) }
/// ```
pub struct Store<D: NetabaseDefinition, B: Backend = AnyBackend> {
    backend: Arc<B>,
    tables: Arc<Tables>,
    _definition: PhantomData<fn() -> D>,
}

impl<D: NetabaseDefinition, B: Backend> Clone for Store<D, B> {
    fn clone(&self) -> Self {
        Store {
            backend: Arc::clone(&self.backend),
            tables: Arc::clone(&self.tables),
            _definition: PhantomData,
        }
    }
}

impl<D: NetabaseDefinition, B: Backend> std::fmt::Debug for Store<D, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("definition", &D::NAME)
            .field("schema_version", &D::SCHEMA_VERSION)
            .field("backend", &self.backend.kind())
            .finish()
    }
}

impl<D: NetabaseDefinition> Store<D> {
    /// Opens (or creates) the redb store at file `path`.
    ///
    /// Fails with [`StoreError::AlreadyOpen`] if another process has it open, with
    /// [`StoreError::SchemaTooNew`] if it was written by a newer schema version, and with
    /// [`StoreError::MigrationMissing`] if it was written by an older one (register
    /// migrations with [`Store::builder`]).
    #[cfg(feature = "redb")]
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::builder(path).open()
    }

    /// Opens (or creates) the store at `path` with the given backend (a file for redb, a
    /// directory for sled).
    pub fn open_with(path: impl AsRef<Path>, backend: BackendConfig) -> Result<Self> {
        Self::builder(path).backend(backend).open()
    }

    /// A fresh store in memory.
    pub fn memory() -> Result<Self> {
        Self::from_backend(Arc::new(AnyBackend::Memory(MemoryBackend::new())))
    }

    /// A builder for opening the store at `path`: choose the backend and register
    /// migrations from older schema versions.
    pub fn builder(path: impl AsRef<Path>) -> StoreBuilder<D> {
        StoreBuilder::new(path.as_ref())
    }
}

impl<D: NetabaseDefinition, B: Backend> Store<D, B> {
    /// A store on an open backend, with the same checks as [`Store::open`] (no migrations).
    /// Backends can be shared: see [`Store::backend`].
    pub fn from_backend(backend: Arc<B>) -> Result<Self> {
        StoreBuilder::from_backend(backend).open()
    }

    pub(crate) fn assemble(backend: Arc<B>) -> Self {
        Store {
            backend,
            tables: Arc::new(Tables::of::<D>()),
            _definition: PhantomData,
        }
    }

    /// The backend under the store (for a [`PersistentRecordStore`](crate::PersistentRecordStore)
    /// in the same database, or for raw access).
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    pub(crate) fn tables(&self) -> &Arc<Tables> {
        &self.tables
    }

    #[inline]
    pub(crate) fn guard(&self) -> Result<TxGuard> {
        TxGuard::enter(Arc::as_ptr(&self.backend) as *const () as usize)
    }

    /// Runs `f` in a write transaction across all models of the definition. The changes are
    /// committed (durably, by default) when `f` returns `Ok`; when `f` returns `Err` (or
    /// panics) none of them is applied.
    ///
    /// Inside `f`, use the transaction handle: calling other methods of this store (or of a
    /// clone) from `f` fails with [`StoreError::NestedTransaction`].
    #[inline]
    pub fn write<T>(&self, f: impl FnOnce(&mut WriteTx<'_, D, B>) -> Result<T>) -> Result<T> {
        let _guard = self.guard()?;
        self.write_in(self.backend.begin_write()?, f)
    }

    /// Like [`Store::write`], with `durability` for this transaction whatever the store was
    /// opened with. A [`Durability::Deferred`] commit is visible at once and made durable
    /// by the next [`Store::sync`]: many transactions then share one `fdatasync` (group
    /// commit), and nothing that depends on them may be acknowledged before that sync.
    pub fn write_with<T>(
        &self,
        durability: Durability,
        f: impl FnOnce(&mut WriteTx<'_, D, B>) -> Result<T>,
    ) -> Result<T> {
        let _guard = self.guard()?;
        self.write_in(self.backend.begin_write_with(durability)?, f)
    }

    fn write_in<'s, T>(
        &'s self,
        tx: B::Write<'s>,
        f: impl FnOnce(&mut WriteTx<'_, D, B>) -> Result<T>,
    ) -> Result<T> {
        let mut tx = WriteTx {
            tx,
            tables: &self.tables,
            _definition: PhantomData,
        };
        let out = f(&mut tx)?;
        tx.tx.commit()?;
        Ok(out)
    }

    /// Makes every committed transaction durable (see [`Store::write_with`]); no I/O when
    /// none was deferred.
    pub fn sync(&self) -> Result<()> {
        let _guard = self.guard()?;
        self.backend.sync()
    }

    /// Runs `f` in a read transaction: every read inside sees the same committed state.
    #[inline]
    pub fn read<T>(&self, f: impl FnOnce(&ReadTx<'_, D, B>) -> Result<T>) -> Result<T> {
        let _guard = self.guard()?;
        let tx = ReadTx {
            tx: self.backend.begin_read()?,
            tables: &self.tables,
            _definition: PhantomData,
        };
        f(&tx)
    }

    /// Inserts or replaces a record (and its index entries); returns the value it replaced.
    ///
    /// A replaced value that cannot be decoded (damaged on disk) is overwritten, its index
    /// entries are removed, and `None` is returned for it.
    pub fn put<M: NetabaseModel<Definition = D>>(&self, model: &M) -> Result<Option<M>> {
        self.write(|tx| tx.put(model))
    }

    /// Writes all `models` in one transaction; returns how many were written.
    pub fn put_many<'m, M: NetabaseModel<Definition = D>>(
        &self,
        models: impl IntoIterator<Item = &'m M>,
    ) -> Result<usize> {
        self.write(|tx| tx.put_many(models))
    }

    /// Applies a [`Batch`] in one transaction: all of it or nothing.
    pub fn apply(&self, batch: Batch<D>) -> Result<()> {
        self.write(|tx| tx.apply(batch))
    }

    /// A new, empty batch for this store's definition.
    pub fn batch(&self) -> Batch<D> {
        Batch::new()
    }

    /// Removes the record with primary key `key` (and its index entries); returns it.
    pub fn remove<K>(&self, key: &K) -> Result<Option<K::Model>>
    where
        K: PrimaryKey,
        K::Model: NetabaseModel<Definition = D>,
    {
        self.write(|tx| tx.remove(key))
    }

    /// Inserts or replaces a record given as a definition value (the node stores records
    /// that arrive from the network this way); returns the value it replaced.
    pub fn put_definition(&self, value: &D) -> Result<Option<D>> {
        self.write(|tx| tx.put_definition(value))
    }

    /// Removes the record of model `model` whose encoded primary key is `key`.
    pub fn remove_definition(&self, model: ModelId, key: &[u8]) -> Result<Option<D>> {
        self.write(|tx| tx.remove_definition(model, key))
    }
}

macro_rules! read_methods {
    ($self:ident => $reader:expr, $run:ident) => {
        /// The record with primary key `key`; the model is the key's model.
        ///
        /// A stored value that cannot be decoded gives [`StoreError::Corrupt`].
        pub fn get<K>(&$self, key: &K) -> Result<Option<K::Model>>
        where
            K: PrimaryKey,
            K::Model: NetabaseModel<Definition = D>,
        {
            $run!($self, $reader, get key)
        }

        /// The records whose secondary key equals `key`, in primary-key order.
        pub fn get_by_secondary<S>(&$self, key: &S) -> Result<Vec<S::Model>>
        where
            S: SecondaryKey,
            S::Model: NetabaseModel<Definition = D>,
        {
            $run!($self, $reader, |r| r.get_by_secondary(key))
        }

        /// The records of model `M` whose primary keys lie in `range`, in key order. Fails
        /// with [`StoreError::Corrupt`] at the first record that does not decode (see
        /// [`scan`](Self::scan) to read around it).
        pub fn range<M: NetabaseModel<Definition = D>>(
            &$self,
            range: impl RangeBounds<M::PrimaryKey>,
        ) -> Result<Vec<M>> {
            $run!($self, $reader, |r| r.scan::<M>(range, usize::MAX)?.strict())
        }

        /// Like [`range`](Self::range), but records that do not decode are skipped and
        /// reported in [`Scan::errors`].
        pub fn scan<M: NetabaseModel<Definition = D>>(
            &$self,
            range: impl RangeBounds<M::PrimaryKey>,
        ) -> Result<Scan<M>> {
            $run!($self, $reader, |r| r.scan::<M>(range, usize::MAX))
        }

        /// The records of model `M` whose primary key starts with `prefix`, in key order.
        ///
        /// `prefix` is encoded with
        /// [`encode_key_prefix`](netabase_core::model::encode_key_prefix): a `&str` selects
        /// the `String` keys that start with it; a tuple selects keys whose leading fields
        /// equal its leading fields and whose last string field starts with its last one.
        pub fn prefix<M: NetabaseModel<Definition = D>, P: Serialize + ?Sized>(
            &$self,
            prefix: &P,
        ) -> Result<Vec<M>> {
            $run!($self, $reader, |r| r.prefix::<M, P>(prefix))
        }

        /// The first `limit` records of model `M` in primary-key order.
        pub fn query<M: NetabaseModel<Definition = D>>(&$self, limit: usize) -> Result<Vec<M>> {
            $run!($self, $reader, |r| r.scan::<M>(.., limit)?.strict())
        }

        /// The number of records of model `M`.
        pub fn count<M: NetabaseModel<Definition = D>>(&$self) -> Result<u64> {
            $run!($self, $reader, |r| r.count::<M>())
        }

        /// The record of model `model` whose encoded primary key is `key`, as a definition
        /// value.
        pub fn get_definition(&$self, model: ModelId, key: &[u8]) -> Result<Option<D>> {
            $run!($self, $reader, |r| r.get_definition::<D>(model, key))
        }

        /// The version (timestamp, writer) of the row of model `model` whose encoded
        /// primary key is `key`, as a node last wrote or learned it. `None` for a row no
        /// node versioned (written with [`Store::put`] directly) or no row at all.
        pub fn version(&$self, model: ModelId, key: &[u8]) -> Result<Option<Version>> {
            $run!($self, $reader, |r| r.version(model, key))
        }

        /// The version of the row with primary key `key` (see [`version`](Self::version)).
        pub fn record_version<K>(&$self, key: &K) -> Result<Option<Version>>
        where
            K: PrimaryKey,
            K::Model: NetabaseModel<Definition = D>,
        {
            let pk = key.key_bytes()?;
            $run!($self, $reader, |r| r.version(<K::Model as NetabaseModel>::ID, &pk))
        }
    };
}

/// Runs a read in a fresh read transaction of the store.
macro_rules! in_read_tx {
    // A lookup by primary key: the backend's one-shot read.
    ($self:ident, $reader:expr, get $key:ident) => {{
        let _guard = $self.guard()?;
        crate::ops::get_one(&*$self.backend, &$self.tables, $key)
    }};
    ($self:ident, $reader:expr, |$r:ident| $body:expr) => {{
        let _guard = $self.guard()?;
        $self.backend.with_read(|tx| {
            let $r = Reader {
                tx,
                tables: &$self.tables,
            };
            $body
        })
    }};
}

/// Runs a read in the transaction at hand.
macro_rules! in_this_tx {
    ($self:ident, $reader:expr, get $key:ident) => {{
        let r = $reader;
        r.get($key)
    }};
    ($self:ident, $reader:expr, |$r:ident| $body:expr) => {{
        let $r = $reader;
        $body
    }};
}

impl<D: NetabaseDefinition, B: Backend> Store<D, B> {
    read_methods!(self => (), in_read_tx);
}

/// A read-only view of a [`Store`]: every read of the store, no write. A running node hands
/// this out (`Netabase::local_store`), since its writes must go through the node, which
/// versions them and keeps the DHT store in step.
pub struct ReadOnlyStore<D: NetabaseDefinition, B: Backend = AnyBackend> {
    backend: Arc<B>,
    tables: Arc<Tables>,
    _definition: PhantomData<fn() -> D>,
}

impl<D: NetabaseDefinition, B: Backend> Clone for ReadOnlyStore<D, B> {
    fn clone(&self) -> Self {
        ReadOnlyStore {
            backend: Arc::clone(&self.backend),
            tables: Arc::clone(&self.tables),
            _definition: PhantomData,
        }
    }
}

impl<D: NetabaseDefinition, B: Backend> std::fmt::Debug for ReadOnlyStore<D, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOnlyStore")
            .field("definition", &D::NAME)
            .field("backend", &self.backend.kind())
            .finish()
    }
}

impl<D: NetabaseDefinition, B: Backend> Store<D, B> {
    /// A read-only view of this store.
    pub fn read_only(&self) -> ReadOnlyStore<D, B> {
        ReadOnlyStore {
            backend: Arc::clone(&self.backend),
            tables: Arc::clone(&self.tables),
            _definition: PhantomData,
        }
    }
}

impl<D: NetabaseDefinition, B: Backend> ReadOnlyStore<D, B> {
    read_methods!(self => (), in_read_tx);

    #[inline]
    fn guard(&self) -> Result<TxGuard> {
        TxGuard::enter(Arc::as_ptr(&self.backend) as *const () as usize)
    }

    /// Runs `f` in a read transaction: every read inside sees the same committed state.
    pub fn read<T>(&self, f: impl FnOnce(&ReadTx<'_, D, B>) -> Result<T>) -> Result<T> {
        let _guard = self.guard()?;
        let tx = ReadTx {
            tx: self.backend.begin_read()?,
            tables: &self.tables,
            _definition: PhantomData,
        };
        f(&tx)
    }
}

/// A read transaction of a [`Store`], handed to [`Store::read`] closures.
pub struct ReadTx<'s, D: NetabaseDefinition, B: Backend + 's> {
    tx: B::Read<'s>,
    tables: &'s Tables,
    _definition: PhantomData<fn() -> D>,
}

impl<'s, D: NetabaseDefinition, B: Backend> ReadTx<'s, D, B> {
    read_methods!(self => Reader { tx: &self.tx, tables: self.tables }, in_this_tx);

    /// The backend's raw transaction.
    pub fn raw(&self) -> &B::Read<'s> {
        &self.tx
    }
}

/// A write transaction of a [`Store`], handed to [`Store::write`] closures. Its reads see its
/// own writes.
pub struct WriteTx<'s, D: NetabaseDefinition, B: Backend + 's> {
    tx: B::Write<'s>,
    tables: &'s Tables,
    _definition: PhantomData<fn() -> D>,
}

impl<'s, D: NetabaseDefinition, B: Backend> WriteTx<'s, D, B> {
    read_methods!(self => Reader { tx: &self.tx, tables: self.tables }, in_this_tx);

    fn writer(&mut self) -> Writer<'_, B::Write<'s>> {
        Writer {
            tx: &mut self.tx,
            tables: self.tables,
        }
    }

    /// Inserts or replaces a record (see [`Store::put`]); returns the value it replaced.
    pub fn put<M: NetabaseModel<Definition = D>>(&mut self, model: &M) -> Result<Option<M>> {
        self.writer().put(model)
    }

    /// Writes all `models`; returns how many were written.
    pub fn put_many<'m, M: NetabaseModel<Definition = D>>(
        &mut self,
        models: impl IntoIterator<Item = &'m M>,
    ) -> Result<usize> {
        self.writer().put_many(models)
    }

    /// Removes the record with primary key `key`; returns it (see [`Store::remove`]).
    pub fn remove<K>(&mut self, key: &K) -> Result<Option<K::Model>>
    where
        K: PrimaryKey,
        K::Model: NetabaseModel<Definition = D>,
    {
        self.writer().remove(key)
    }

    /// Inserts or replaces a record given as a definition value.
    pub fn put_definition(&mut self, value: &D) -> Result<Option<D>> {
        self.writer().put_definition(value)
    }

    /// Removes the record of model `model` whose encoded primary key is `key`.
    pub fn remove_definition(&mut self, model: ModelId, key: &[u8]) -> Result<Option<D>> {
        self.writer().remove_definition(model, key)
    }

    /// Records the version of the row of model `model` with encoded primary key `key` (a
    /// node does, in the transaction that writes the row).
    pub fn set_version(&mut self, model: ModelId, key: &[u8], version: &Version) -> Result<()> {
        crate::ops::set_version(&mut self.tx, model, key, version)
    }

    /// Forgets the version of a row (a node does when it removes the row).
    pub fn remove_version(&mut self, model: ModelId, key: &[u8]) -> Result<()> {
        crate::ops::remove_version(&mut self.tx, model, key)
    }

    /// Applies every operation of `batch`, in order.
    pub fn apply(&mut self, batch: Batch<D>) -> Result<()> {
        if let Some(e) = batch.error {
            return Err(e.into());
        }
        for op in batch.ops {
            match op {
                BatchOp::Put(value) => {
                    self.put_definition(&value)?;
                }
                BatchOp::Remove { model, key } => {
                    self.remove_definition(model, &key)?;
                }
            }
        }
        Ok(())
    }

    /// The backend's raw transaction (changes made through it bypass the typed checks and
    /// the secondary indexes).
    pub fn raw(&mut self) -> &mut B::Write<'s> {
        &mut self.tx
    }
}

#[derive(Debug, Clone)]
enum BatchOp<D> {
    Put(D),
    Remove { model: ModelId, key: Vec<u8> },
}

/// Puts and removes across the models of a definition, applied together by
/// [`Store::apply`]: all of them or none.
#[derive(Debug, Clone)]
pub struct Batch<D> {
    ops: Vec<BatchOp<D>>,
    error: Option<KeyEncodeError>,
}

impl<D: NetabaseDefinition> Default for Batch<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: NetabaseDefinition> Batch<D> {
    /// An empty batch.
    pub fn new() -> Self {
        Batch {
            ops: Vec::new(),
            error: None,
        }
    }

    /// Adds an insert-or-replace of `model`.
    pub fn put<M: NetabaseModel<Definition = D>>(&mut self, model: M) -> &mut Self {
        self.ops.push(BatchOp::Put(model.into()));
        self
    }

    /// Adds the removal of the record with primary key `key`. A key that cannot be encoded
    /// fails the whole batch when it is applied.
    pub fn remove<K>(&mut self, key: &K) -> &mut Self
    where
        K: PrimaryKey,
        K::Model: NetabaseModel<Definition = D>,
    {
        match key.key_bytes() {
            Ok(bytes) => self.ops.push(BatchOp::Remove {
                model: <K::Model as NetabaseModel>::ID,
                key: bytes,
            }),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
