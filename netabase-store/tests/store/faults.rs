//! Bad bytes and faults: damaged values, a store held by another process, a full disk.

use netabase_store::backend::{ReadTransaction, WriteTransaction};
use netabase_store::core::model::encode_key;
use netabase_store::{BackendKind, Store, StoreError, index_table, records_table};

use crate::child::{Child, Mode};
use crate::support::*;
use crate::{BACKENDS, config, open, store_path};

/// Overwrites the stored bytes of message `id` with `damage(bytes)`, bypassing the store.
fn damage(store: &Store<ChatDefinition>, id: u64, damage: impl FnOnce(Vec<u8>) -> Vec<u8>) {
    let key = encode_key(&id).unwrap();
    let table = records_table("Message");
    store
        .write(|tx| {
            let raw = tx.raw();
            let bytes = raw.get(&table, &key)?.expect("stored");
            raw.put(&table, &key, &damage(bytes))
        })
        .unwrap();
}

fn assert_corrupt(result: Result<impl std::fmt::Debug, StoreError>, id: u64, what: &str) {
    match result {
        Err(StoreError::Corrupt { model, key, reason }) => {
            assert_eq!(model, "Message", "{what}");
            assert_eq!(key, encode_key(&id).unwrap(), "{what}");
            assert!(!reason.is_empty());
        }
        other => panic!("{what}: expected Corrupt for message {id}, got {other:?}"),
    }
}

#[test]
fn a_damaged_value_is_reported_for_that_record_only() {
    type Damage = fn(Vec<u8>) -> Vec<u8>;
    let damages: [(&str, Damage); 5] = [
        ("garbage", |_| b"not a value at all".to_vec()),
        ("truncated", |mut b| {
            b.truncate(b.len() - 3);
            b
        }),
        ("header only", |mut b| {
            b.truncate(11);
            b
        }),
        ("flipped payload bit", |mut b| {
            let last = b.len() - 1;
            b[last] ^= 0x01;
            b
        }),
        ("empty", |_| Vec::new()),
    ];
    for kind in BACKENDS {
        for (what, how) in damages {
            let store = open(kind, true).store;
            for id in 1..=5 {
                store
                    .put(&message(id, if id == 3 { "eve" } else { "ada" }, 1, "text"))
                    .unwrap();
            }
            damage(&store, 3, how);
            let what = format!("{kind:?}, {what}");

            assert_corrupt(store.get(&MessagePrimaryKey(3)), 3, &what);
            for id in [1, 2, 4, 5] {
                assert!(
                    store.get(&MessagePrimaryKey(id)).unwrap().is_some(),
                    "{what}"
                );
            }
            // Strict scans fail naming the record; lenient scans skip it with its error.
            assert_corrupt(store.range::<Message>(..), 3, &what);
            assert_corrupt(store.query::<Message>(10), 3, &what);
            assert_eq!(store.query::<Message>(2).unwrap().len(), 2, "{what}");
            let scan = store.scan::<Message>(..).unwrap();
            assert_eq!(
                scan.records.iter().map(|m| m.id).collect::<Vec<_>>(),
                vec![1, 2, 4, 5],
                "{what}"
            );
            assert_eq!(scan.errors.len(), 1, "{what}");
            assert_corrupt(scan.strict(), 3, &what);
            assert_eq!(store.get_by_secondary(&author("ada")).unwrap().len(), 4);
            assert_corrupt(store.get_by_secondary(&author("eve")), 3, &what);
            assert_eq!(store.count::<Message>().unwrap(), 5);

            // Writing over it repairs it, and its old index entries go away.
            assert_eq!(store.put(&message(3, "zed", 2, "new")).unwrap(), None);
            assert_eq!(store.get_by_secondary(&author("eve")).unwrap(), vec![]);
            assert_eq!(store.get_by_secondary(&author("zed")).unwrap().len(), 1);
            let entries = store
                .read(|tx| tx.raw().len(&index_table("Message")))
                .unwrap();
            assert_eq!(entries, 10, "{what}");

            // So does writing over it in a batch.
            damage(&store, 3, how);
            store
                .put_many(&[message(3, "amy", 2, "batch"), message(6, "amy", 2, "")])
                .unwrap();
            assert_eq!(store.get_by_secondary(&author("zed")).unwrap(), vec![]);
            assert_eq!(store.get_by_secondary(&author("amy")).unwrap().len(), 2);
            store.remove(&MessagePrimaryKey(6)).unwrap();

            // Removing a damaged record also removes its index entries.
            damage(&store, 3, how);
            assert_eq!(store.remove(&MessagePrimaryKey(3)).unwrap(), None);
            assert_eq!(store.get(&MessagePrimaryKey(3)).unwrap(), None);
            assert_eq!(store.get_by_secondary(&author("amy")).unwrap(), vec![]);
            assert_eq!(store.range::<Message>(..).unwrap().len(), 4, "{what}");
        }
    }
}

#[test]
fn a_value_of_another_schema_version_is_not_reinterpreted() {
    let store = open(BackendKind::Memory, true).store;
    store.put(&message(1, "ada", 1, "x")).unwrap();
    // A well-formed value whose header claims schema version 2.
    let payload = netabase_store::core::model::encode_value(&message(1, "ada", 1, "x")).unwrap();
    damage(&store, 1, |_| {
        netabase_store::codec::seal_payload(2, &payload)
    });
    match store.get(&MessagePrimaryKey(1)) {
        Err(StoreError::Corrupt { reason, .. }) => {
            assert!(reason.contains("schema version 2"), "{reason}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_second_open_in_this_process_is_refused() {
    for kind in [BackendKind::Redb, BackendKind::Sled] {
        let opened = open(kind, false);
        let path = store_path(&opened.dir);
        match Store::<ChatDefinition>::open_with(&path, config(kind, false)) {
            Err(StoreError::AlreadyOpen { path: p }) => assert_eq!(p, path),
            other => panic!("{kind:?}: expected AlreadyOpen, got {other:?}"),
        }
        // Still usable, and openable again once closed.
        opened.store.put(&message(1, "a", 1, "")).unwrap();
        drop(opened.store);
        let store = Store::<ChatDefinition>::open_with(&path, config(kind, false)).unwrap();
        assert!(store.get(&MessagePrimaryKey(1)).unwrap().is_some());
    }
}

#[test]
fn another_process_cannot_open_a_store_held_here() {
    for kind in [BackendKind::Redb, BackendKind::Sled] {
        let opened = open(kind, false);
        let path = store_path(&opened.dir);
        let output = Child::new(Mode::OpenProbe, kind, &path).run_to_end();
        assert!(
            output.lines.iter().any(|l| l == "OPEN already-open"),
            "{kind:?}: {output:?}"
        );
        drop(opened.store);
        let output = Child::new(Mode::OpenProbe, kind, &path).run_to_end();
        assert!(
            output.lines.iter().any(|l| l == "OPEN ok"),
            "{kind:?}: {output:?}"
        );
    }
}

#[test]
fn a_full_disk_is_an_error_not_a_panic() {
    for kind in [BackendKind::Redb, BackendKind::Sled] {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        // The child may write at most 4 MiB per file (RLIMIT_FSIZE, with SIGXFSZ ignored so
        // that writes past it fail with EFBIG, as on a full disk).
        let output = Child::new(Mode::Fill, kind, &path)
            .file_size_limit_kib(4096)
            .run_to_end();
        assert!(output.success, "{kind:?}: the child failed: {output:?}");
        assert!(
            !output.stderr.contains("panicked"),
            "{kind:?}: {}",
            output.stderr
        );
        let error = output
            .lines
            .iter()
            .find(|l| l.starts_with("ERR "))
            .unwrap_or_else(|| panic!("{kind:?}: no error reported: {output:?}"));
        assert!(
            error.contains("I/O") || error.contains("Io"),
            "{kind:?}: {error}"
        );
        eprintln!("{kind:?}: {error}");
        let acked = output.acks();
        assert!(
            !acked.is_empty(),
            "{kind:?}: nothing was written: {output:?}"
        );
        // Every acknowledged write is there after the fault.
        let store = Store::<ChatDefinition>::open_with(&path, config(kind, false)).unwrap();
        for i in acked {
            let m = store.get(&MessagePrimaryKey(i)).unwrap();
            assert_eq!(m.map(|m| m.id), Some(i), "{kind:?}: acknowledged write {i}");
        }
    }
}
