//! Integration tests of the typed store, its backends and the DHT record store.

mod basic;
mod buffered;
mod child;
mod crash;
mod faults;
mod migration;
mod model_based;
mod powercut;
mod powercut_fs;
mod record_store;
mod support;

use netabase_store::{BackendConfig, BackendKind, Durability, RedbOptions, SledOptions, Store};
use support::ChatDefinition;
use tempfile::TempDir;

/// Every backend kind.
pub(crate) const BACKENDS: [BackendKind; 3] =
    [BackendKind::Memory, BackendKind::Redb, BackendKind::Sled];

/// A store on one backend, with the directory it lives in.
pub(crate) struct Opened {
    pub(crate) store: Store<ChatDefinition>,
    pub(crate) dir: TempDir,
}

/// The configuration of backend `kind` (durable commits unless `deferred`).
pub(crate) fn config(kind: BackendKind, deferred: bool) -> BackendConfig {
    let durability = if deferred {
        Durability::Deferred
    } else {
        Durability::Immediate
    };
    match kind {
        BackendKind::Redb => BackendConfig::Redb(RedbOptions {
            durability,
            ..RedbOptions::default()
        }),
        BackendKind::Sled => BackendConfig::Sled(SledOptions {
            durability,
            ..SledOptions::default()
        }),
        BackendKind::Memory => BackendConfig::Memory,
    }
}

/// The path of the store inside `dir`.
pub(crate) fn store_path(dir: &TempDir) -> std::path::PathBuf {
    dir.path().join("store")
}

/// A fresh store on backend `kind`.
pub(crate) fn open(kind: BackendKind, deferred: bool) -> Opened {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open_with(store_path(&dir), config(kind, deferred)).expect("open store");
    Opened { store, dir }
}
