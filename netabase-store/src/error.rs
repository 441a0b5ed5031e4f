//! The error type of the store.

use std::path::PathBuf;

use netabase_core::model::{KeyEncodeError, ModelError};

/// A shorthand for results of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in a store operation.
///
/// Bad bytes on disk, a full disk and a store held by another process are all errors of
/// this type; none of them panics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O error of the backend (a full disk, a failing device, a missing directory).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// Any other failure reported by the backend.
    #[error("storage backend error: {0}")]
    Backend(String),

    /// A stored value (or a value handed in as bytes) is not a valid value of its model: it
    /// is truncated, its checksum does not match, or it does not decode. Only this record is
    /// affected; the rest of the store stays readable.
    #[error("corrupt value of {model} under key {key:02x?}: {reason}")]
    Corrupt {
        /// The model (or internal table) the value belongs to.
        model: &'static str,
        /// The encoded primary key of the record.
        key: Vec<u8>,
        /// What is wrong with it.
        reason: String,
    },

    /// Another process (or another handle in this process) has the store open.
    #[error("the store at {path} is already open by another process or handle")]
    AlreadyOpen {
        /// The path that was opened.
        path: PathBuf,
    },

    /// The store was written by a newer schema version than this code's definition.
    #[error(
        "the store was written with schema version {stored}, newer than this program's \
         schema version {current}; refusing to open it"
    )]
    SchemaTooNew {
        /// The schema version recorded in the store.
        stored: u32,
        /// The schema version of the definition this code was built with.
        current: u32,
    },

    /// The store was written by an older schema version and no registered migration covers
    /// the step from `missing_from` to `missing_from + 1`.
    #[error(
        "the store was written with schema version {stored} and this program's schema \
         version is {current}, but no migration from version {missing_from} to \
         {missing_to} is registered",
        missing_to = missing_from + 1
    )]
    MigrationMissing {
        /// The schema version recorded in the store.
        stored: u32,
        /// The schema version of the definition this code was built with.
        current: u32,
        /// The first version step without a migration.
        missing_from: u32,
    },

    /// The store holds data of another definition.
    #[error("the store holds definition {stored:?}, not {expected:?}")]
    DefinitionMismatch {
        /// The definition name recorded in the store.
        stored: String,
        /// The definition name of this code.
        expected: &'static str,
    },

    /// A key could not be encoded.
    #[error(transparent)]
    Key(#[from] KeyEncodeError),

    /// A model value could not be encoded, or a model id is not part of the definition.
    #[error(transparent)]
    Model(#[from] ModelError),

    /// A store method was called while this thread already has a transaction of the same
    /// store open (inside a `read` or `write` closure, use the transaction handle instead).
    #[error(
        "a transaction of this store is already open on this thread; use the transaction \
         handle inside read/write closures"
    )]
    NestedTransaction,

    /// A transaction closure gave up; the transaction was rolled back.
    #[error("transaction aborted: {0}")]
    Aborted(String),
}

impl StoreError {
    /// An [`Aborted`](StoreError::Aborted) error, for transaction closures that decide to
    /// roll back.
    pub fn aborted(reason: impl Into<String>) -> Self {
        StoreError::Aborted(reason.into())
    }

    pub(crate) fn corrupt(model: &'static str, key: &[u8], reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            model,
            key: key.to_vec(),
            reason: reason.into(),
        }
    }
}
