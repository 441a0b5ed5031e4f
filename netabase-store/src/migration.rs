//! Opening a store: definition and schema checks, and migrations from older schema versions.
//!
//! A store records the name and schema version of the definition that wrote it, and every
//! value's header records the schema version it was written with. Opening a store under
//! the same version just checks; under a newer version it runs the registered migrations,
//! all in one write transaction; under an older version, or without a migration for some
//! version step, it fails and names both versions. Old bytes are never reinterpreted
//! silently: a value whose header says another version than the store's is reported as
//! [`StoreError::Corrupt`].
//!
//! # Migrations
//!
//! A migration step belongs to one model and one version step `v → v + 1`: values of the
//! model in their version-`v` shape are decoded as the old type the program keeps for it
//! and converted to the version-`v + 1` shape. Steps chain, so a store at version 1 opened
//! by code at version 3 runs the `1 → 2` step and then the `2 → 3` step of each model. A
//! model without a step for `v → v + 1` is carried over unchanged, provided some step is
//! registered for `v` (for another model, or with
//! [`version_bump`](StoreBuilder::version_bump) when no stored shape changed); a version step
//! without any registration fails the open with [`StoreError::MigrationMissing`].
//!
//! During a migration every record of every model is decoded with the current definition
//! (after its steps), written back with the current version in its header, and every
//! secondary index is rebuilt; then the store's schema version is updated. All of this is
//! one transaction: a failure (a value that does not decode, a step that fails) leaves the
//! store as it was, and the open fails with the error naming the model and key.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use netabase_core::model::{
    ModelError, ModelId, NetabaseDefinition, NetabaseModel, decode_value, encode_value,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{
    AnyBackend, Backend, BackendConfig, FULL_RANGE, ReadTransaction, WriteTransaction,
};
use crate::codec;
use crate::error::{Result, StoreError};
use crate::ops::{META_TABLE, Tables};
use crate::store::Store;

const META_DEFINITION: &[u8] = b"definition";
const META_SCHEMA: &[u8] = b"schema_version";
const META_FORMAT: &[u8] = b"value_format";
const META_INDEX: &[u8] = b"index_format";

/// The index formats this code can open: its own, and format 1, whose indexes are rebuilt.
const READABLE_INDEX_FORMATS: [u8; 2] = [1, codec::INDEX_FORMAT];

/// One migration step: the payload in the old shape to the payload in the next shape.
type Step = Box<dyn Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync>;

type Opener<B> = Box<dyn FnOnce() -> Result<Arc<B>>>;

/// Opens a [`Store`]: where, on which backend, and with which migrations.
///
/// ```no_run
/// # use netabase_store::{Store, BackendConfig};
/// # fn demo<D: netabase_store::NetabaseDefinition>() -> netabase_store::Result<()> {
/// let store = Store::<D>::builder("app.redb")
///     .backend(BackendConfig::redb())
///     // .migration::<MessageV1, Message>(1, |old| Message { .. })
///     .open()?;
/// # let _ = store; Ok(()) }
/// ```
pub struct StoreBuilder<D: NetabaseDefinition, B: Backend = AnyBackend> {
    path: PathBuf,
    config: Option<BackendConfig>,
    opener: Option<Opener<B>>,
    steps: BTreeMap<(ModelId, u32), Step>,
    bumps: BTreeSet<u32>,
    _definition: std::marker::PhantomData<fn() -> D>,
}

impl<D: NetabaseDefinition> StoreBuilder<D> {
    pub(crate) fn new(path: &Path) -> Self {
        StoreBuilder {
            path: path.to_path_buf(),
            config: None,
            opener: None,
            steps: BTreeMap::new(),
            bumps: BTreeSet::new(),
            _definition: std::marker::PhantomData,
        }
    }

    /// The backend to open the path with (redb by default).
    pub fn backend(mut self, config: BackendConfig) -> Self {
        self.config = Some(config);
        self
    }
}

impl<D: NetabaseDefinition, B: Backend> StoreBuilder<D, B> {
    /// A builder for a store on an already open backend.
    pub fn from_backend(backend: Arc<B>) -> Self {
        StoreBuilder {
            path: PathBuf::new(),
            config: None,
            opener: Some(Box::new(move || Ok(backend))),
            steps: BTreeMap::new(),
            bumps: BTreeSet::new(),
            _definition: std::marker::PhantomData,
        }
    }

    /// Registers the step `from_version → from_version + 1` of model `M` whose new shape is
    /// `M` itself: values of `M` written at `from_version` are decoded as `Old` (the struct
    /// as it was at that version, which the program keeps) and converted with `f`.
    ///
    /// Registering a step for the same model and version again replaces it.
    pub fn migration<Old, M>(
        self,
        from_version: u32,
        f: impl Fn(Old) -> M + Send + Sync + 'static,
    ) -> Self
    where
        Old: DeserializeOwned + 'static,
        M: NetabaseModel<Definition = D>,
    {
        self.migration_via::<M, Old, M>(from_version, f)
    }

    /// Registers the step `from_version → from_version + 1` of model `M` when the shape at
    /// `from_version + 1` is not the current one (a chain through intermediate versions):
    /// values of `M` written at `from_version` are decoded as `Old` and converted with `f`
    /// into `Next`, the shape at `from_version + 1`, which the next step decodes.
    pub fn migration_via<M, Old, Next>(
        mut self,
        from_version: u32,
        f: impl Fn(Old) -> Next + Send + Sync + 'static,
    ) -> Self
    where
        M: NetabaseModel<Definition = D>,
        Old: DeserializeOwned + 'static,
        Next: Serialize + 'static,
    {
        let name = M::NAME;
        let step: Step = Box::new(move |payload| {
            let old: Old = decode_value(name, payload).map_err(|e| match e {
                ModelError::Decode { reason, .. } => {
                    format!("does not decode as its version-{from_version} shape: {reason}")
                }
                other => other.to_string(),
            })?;
            encode_value(&f(old)).map_err(|e| e.to_string())
        });
        self.steps.insert((M::ID, from_version), step);
        self
    }

    /// Declares that the step `from_version → from_version + 1` changed the shape of no
    /// stored model (for example, it only added a model), so that stores at `from_version`
    /// open without any conversion.
    pub fn version_bump(mut self, from_version: u32) -> Self {
        self.bumps.insert(from_version);
        self
    }

    /// Opens the store: checks the definition and schema version, runs migrations if the
    /// store is older.
    pub fn open(self) -> Result<Store<D, B>> {
        let backend = match self.opener {
            Some(open) => open()?,
            None => open_path::<B>(&self.path, self.config)?,
        };
        let store = Store::assemble(backend);
        let migrations = Migrations {
            steps: self.steps,
            bumps: self.bumps,
        };
        initialise::<D, B>(&store, &migrations)?;
        Ok(store)
    }
}

/// Opens `path` with `config` when `B` is [`AnyBackend`]; other backend types are only
/// reachable through [`StoreBuilder::from_backend`].
fn open_path<B: Backend>(path: &Path, config: Option<BackendConfig>) -> Result<Arc<B>> {
    let config = match config {
        Some(config) => config,
        #[cfg(feature = "redb")]
        None => BackendConfig::redb(),
        #[cfg(not(feature = "redb"))]
        None => {
            return Err(StoreError::Backend(
                "no backend chosen and the default (redb) is not built in".into(),
            ));
        }
    };
    let any: Arc<AnyBackend> = Arc::new(config.open(path)?);
    // `StoreBuilder::new` (the only constructor without an opener) is implemented for
    // `AnyBackend` only, so this downcast always succeeds.
    let any: Arc<dyn std::any::Any + Send + Sync> = any;
    any.downcast::<B>()
        .map_err(|_| StoreError::Backend("a path can only be opened as AnyBackend".into()))
}

struct Migrations {
    steps: BTreeMap<(ModelId, u32), Step>,
    bumps: BTreeSet<u32>,
}

impl Migrations {
    fn declared(&self, version: u32) -> bool {
        self.bumps.contains(&version) || self.steps.keys().any(|&(_, v)| v == version)
    }
}

fn meta_corrupt(key: &[u8], reason: impl Into<String>) -> StoreError {
    StoreError::corrupt("meta", key, reason)
}

/// The stored schema version, if the store was ever initialised; checks the definition.
fn stored_version<D: NetabaseDefinition, T: ReadTransaction>(tx: &T) -> Result<Option<u32>> {
    let Some(name) = tx.get(META_TABLE, META_DEFINITION)? else {
        return Ok(None);
    };
    if name != D::NAME.as_bytes() {
        return Err(StoreError::DefinitionMismatch {
            stored: String::from_utf8_lossy(&name).into_owned(),
            expected: D::NAME,
        });
    }
    let format = tx.get(META_TABLE, META_FORMAT)?;
    if let Some(format) = format
        && !matches!(&format[..], [f] if codec::READABLE_VALUE_FORMATS.contains(f))
    {
        return Err(meta_corrupt(
            META_FORMAT,
            format!(
                "value format {format:?} is not supported (this build reads formats {:?})",
                codec::READABLE_VALUE_FORMATS
            ),
        ));
    }
    let index = tx.get(META_TABLE, META_INDEX)?;
    if let Some(index) = index
        && !matches!(&index[..], [f] if READABLE_INDEX_FORMATS.contains(f))
    {
        return Err(meta_corrupt(
            META_INDEX,
            format!(
                "index format {index:?} is not supported (this build reads formats \
                 {READABLE_INDEX_FORMATS:?})"
            ),
        ));
    }
    let version = tx
        .get(META_TABLE, META_SCHEMA)?
        .ok_or_else(|| meta_corrupt(META_SCHEMA, "missing"))?;
    let version: [u8; 4] = version
        .as_slice()
        .try_into()
        .map_err(|_| meta_corrupt(META_SCHEMA, format!("{} bytes, not 4", version.len())))?;
    Ok(Some(u32::from_be_bytes(version)))
}

fn write_meta<D: NetabaseDefinition, T: WriteTransaction>(tx: &mut T) -> Result<()> {
    tx.put(META_TABLE, META_DEFINITION, D::NAME.as_bytes())?;
    tx.put(META_TABLE, META_FORMAT, &[codec::VALUE_FORMAT])?;
    tx.put(META_TABLE, META_INDEX, &[codec::INDEX_FORMAT])?;
    tx.put(META_TABLE, META_SCHEMA, &D::SCHEMA_VERSION.to_be_bytes())
}

fn initialise<D: NetabaseDefinition, B: Backend>(
    store: &Store<D, B>,
    migrations: &Migrations,
) -> Result<()> {
    let _guard = store.guard()?;
    let backend = store.backend();
    let current = D::SCHEMA_VERSION;
    let (stored, formats) = {
        let tx = backend.begin_read()?;
        (
            stored_version::<D, _>(&tx)?,
            (
                tx.get(META_TABLE, META_FORMAT)?,
                tx.get(META_TABLE, META_INDEX)?,
            ),
        )
    };
    let current_formats = (
        Some(vec![codec::VALUE_FORMAT]),
        Some(vec![codec::INDEX_FORMAT]),
    );
    match stored {
        // A store written by an older build: its indexes are rebuilt in the current index
        // format, and it is marked as holding values of the current format too (which
        // builds that read only older formats then refuse as a whole, rather than record
        // by record).
        Some(stored) if stored == current && formats != current_formats => {
            let mut tx = backend.begin_write()?;
            if formats.1 != current_formats.1 {
                rebuild_indexes::<D, _>(&mut tx)?;
            }
            write_meta::<D, _>(&mut tx)?;
            tx.commit()
        }
        Some(stored) if stored == current => Ok(()),
        Some(stored) if stored > current => Err(StoreError::SchemaTooNew { stored, current }),
        Some(stored) => {
            if let Some(missing_from) = (stored..current).find(|&v| !migrations.declared(v)) {
                return Err(StoreError::MigrationMissing {
                    stored,
                    current,
                    missing_from,
                });
            }
            let mut tx = backend.begin_write()?;
            migrate::<D, _>(&mut tx, migrations)?;
            write_meta::<D, _>(&mut tx)?;
            tx.commit()
        }
        None => {
            let mut tx = backend.begin_write()?;
            write_meta::<D, _>(&mut tx)?;
            tx.commit()
        }
    }
}

/// Rebuilds every secondary index from the records. A record that does not decode keeps no
/// index entries (reading it reports it as corrupt, and writing over it repairs it).
fn rebuild_indexes<D: NetabaseDefinition, T: WriteTransaction>(tx: &mut T) -> Result<()> {
    let tables = Tables::of::<D>();
    for (i, t) in tables.all().iter().enumerate() {
        let model = ModelId::try_from(i).map_err(|_| ModelError::UnknownModel(ModelId::MAX))?;
        let mut entries = Vec::new();
        tx.scan(&t.records, FULL_RANGE, &mut |pk, bytes| {
            let keys = codec::open_version(bytes, D::SCHEMA_VERSION)
                .ok()
                .and_then(|payload| D::decode_model(model, payload).ok())
                .and_then(|value| value.secondary_key_bytes().ok());
            for (index, value) in keys.into_iter().flatten() {
                entries.push(codec::index_key(index, &value, pk));
            }
            Ok(ControlFlow::Continue(()))
        })?;
        tx.clear(&t.index)?;
        for key in entries {
            tx.put(&t.index, &key, &[])?;
        }
    }
    Ok(())
}

/// Rewrites every record at the current schema version and rebuilds every index.
fn migrate<D: NetabaseDefinition, T: WriteTransaction>(
    tx: &mut T,
    migrations: &Migrations,
) -> Result<()> {
    let current = D::SCHEMA_VERSION;
    let tables = Tables::of::<D>();
    for (i, t) in tables.all().iter().enumerate() {
        let model = ModelId::try_from(i).map_err(|_| ModelError::UnknownModel(ModelId::MAX))?;
        let mut stored: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        tx.scan(&t.records, FULL_RANGE, &mut |k, v| {
            stored.push((k.to_vec(), v.to_vec()));
            Ok(ControlFlow::Continue(()))
        })?;
        let mut rewritten = Vec::with_capacity(stored.len());
        for (key, bytes) in stored {
            let corrupt = |reason: String| StoreError::corrupt(t.name, &key, reason);
            let (version, payload) = codec::open(&bytes).map_err(corrupt)?;
            if version > current {
                return Err(corrupt(format!(
                    "value was written with schema version {version}, newer than {current}"
                )));
            }
            let mut payload = payload.to_vec();
            for v in version..current {
                if let Some(step) = migrations.steps.get(&(model, v)) {
                    payload = step(&payload)
                        .map_err(|r| corrupt(format!("migrating from version {v}: {r}")))?;
                }
            }
            let value = D::decode_model(model, &payload).map_err(|e| {
                corrupt(format!(
                    "does not decode at schema version {current} after migrating from \
                     version {version}: {e}"
                ))
            })?;
            let pk = value.primary_key_bytes()?;
            let keys = value.secondary_key_bytes()?;
            let sealed = codec::seal_payload(current, &value.encode_model()?);
            rewritten.push((pk, sealed, keys));
        }
        tx.clear(&t.records)?;
        tx.clear(&t.index)?;
        for (pk, sealed, keys) in rewritten {
            tx.put(&t.records, &pk, &sealed)?;
            for (index, value) in keys {
                tx.put(&t.index, &codec::index_key(index, &value, &pk), &[])?;
            }
        }
    }
    Ok(())
}
