//! Any bytes stored as a typed value give the value or a typed error: the value header
//! (format byte, LEB128 schema version, XXH3 checksum) and the model decoder never panic;
//! a header that opens is written again the same way, and a value that decodes re-encodes
//! to bytes that decode to the same value.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use netabase_store::backend::{Backend, WriteTransaction};
use netabase_store::codec::{self, VALUE_FORMAT};
use netabase_store::{
    NetabaseDefinition, NetabaseModel, PrimaryKey, Store, StoreError, netabase_definition_module,
    records_table,
};

include!("../models/store_value.rs");

use models::{FuzzDefinition, MessagePrimaryKey, UserPrimaryKey};

/// One store for the whole run: every input overwrites the same two rows, so memory stays
/// bounded.
fn store() -> &'static Store<FuzzDefinition> {
    static STORE: OnceLock<Store<FuzzDefinition>> = OnceLock::new();
    STORE.get_or_init(|| Store::memory().expect("a memory store opens"))
}

/// Writes `bytes` as the stored value of `key`, bypassing the typed layer.
fn write_raw<K: PrimaryKey>(key: &K, bytes: &[u8]) {
    let table = records_table(<K::Model as NetabaseModel>::NAME);
    let key = key.key_bytes().expect("a fixed key encodes");
    let backend = store().backend();
    let mut tx = backend.begin_write().expect("a memory write begins");
    tx.put(&table, &key, bytes).expect("a memory write");
    tx.commit().expect("a memory commit");
}

/// Reads `bytes` as a value of `key`'s model: a value or [`StoreError::Corrupt`]; a value
/// re-encodes (as the store writes it) to bytes that read back as the same value.
fn check<K>(key: K, bytes: &[u8])
where
    K: PrimaryKey,
    K::Model: NetabaseModel<Definition = FuzzDefinition> + PartialEq + std::fmt::Debug,
{
    write_raw(&key, bytes);
    match store().get(&key) {
        Ok(Some(value)) => {
            let again = codec::seal(FuzzDefinition::SCHEMA_VERSION, &value)
                .expect("a decoded value encodes");
            write_raw(&key, &again);
            assert_eq!(
                store().get(&key).expect("re-encoded bytes decode"),
                Some(value)
            );
        }
        Ok(None) => panic!("a row that was written is missing"),
        Err(StoreError::Corrupt { .. }) => {}
        Err(other) => panic!("a bad value gave {other:?}, not a corrupt-value error"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    // The header alone.
    if let Ok((version, payload)) = codec::open(bytes) {
        let sealed = codec::seal_payload(version, payload);
        assert_eq!(codec::open(&sealed), Ok((version, payload)));
        if bytes.first() == Some(&VALUE_FORMAT) {
            // Each schema version has one header: what opens is what would be written.
            assert_eq!(sealed, bytes, "a format-2 value re-seals to its bytes");
        }
        assert_eq!(codec::open_version(bytes, version), Ok(payload));
    }
    // The store's read of a typed value.
    if pick & 1 == 0 {
        check(MessagePrimaryKey(7), bytes);
    } else {
        check(UserPrimaryKey("ada".into()), bytes);
    }
});
