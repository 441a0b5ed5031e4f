//! The typed API on every backend.

use std::sync::Arc;

use netabase_store::core::model::{NetabaseDefinition, NetabaseModel, encode_key};
use netabase_store::{BackendKind, MemoryBackend, Store, StoreError};

use crate::support::*;
use crate::{BACKENDS, config, open, store_path};

#[test]
fn put_get_replace_remove() {
    for kind in BACKENDS {
        let store = open(kind, false).store;
        let first = message(1, "ada", 7, "hello");
        assert_eq!(store.put(&first).unwrap(), None, "{kind:?}");
        assert_eq!(
            store.get(&MessagePrimaryKey(1)).unwrap(),
            Some(first.clone())
        );
        assert_eq!(store.get(&MessagePrimaryKey(2)).unwrap(), None);

        let second = message(1, "bob", 7, "edited");
        assert_eq!(store.put(&second).unwrap(), Some(first), "{kind:?}");
        assert_eq!(
            store.get(&MessagePrimaryKey(1)).unwrap(),
            Some(second.clone())
        );

        // A String primary key, in another model of the same definition.
        let ada = user("ada", "uk", 36);
        store.put(&ada).unwrap();
        assert_eq!(store.get(&UserPrimaryKey("ada".into())).unwrap(), Some(ada));
        assert_eq!(store.count::<User>().unwrap(), 1);
        assert_eq!(store.count::<Message>().unwrap(), 1);

        assert_eq!(
            store.remove(&MessagePrimaryKey(1)).unwrap(),
            Some(second),
            "{kind:?}"
        );
        assert_eq!(store.remove(&MessagePrimaryKey(1)).unwrap(), None);
        assert_eq!(store.get(&MessagePrimaryKey(1)).unwrap(), None);
        assert_eq!(store.count::<Message>().unwrap(), 0);
    }
}

#[test]
fn secondary_indexes_follow_replaces_and_removes() {
    for kind in BACKENDS {
        let store = open(kind, true).store;
        store.put(&message(1, "ada", 1, "a")).unwrap();
        store.put(&message(2, "ada", 2, "b")).unwrap();
        store.put(&message(3, "bob", 1, "c")).unwrap();
        let ids = |key: &MessageSecondaryKeys| -> Vec<u64> {
            store
                .get_by_secondary(key)
                .unwrap()
                .iter()
                .map(|m| m.id)
                .collect()
        };
        assert_eq!(ids(&author("ada")), vec![1, 2], "{kind:?}");
        assert_eq!(ids(&channel(1)), vec![1, 3]);
        assert_eq!(ids(&author("ad")), Vec::<u64>::new(), "exact match only");

        // Replacing moves the entries; an unchanged key stays.
        store.put(&message(1, "bob", 1, "a2")).unwrap();
        assert_eq!(ids(&author("ada")), vec![2], "{kind:?}");
        assert_eq!(ids(&author("bob")), vec![1, 3]);
        assert_eq!(ids(&channel(1)), vec![1, 3]);

        store.remove(&MessagePrimaryKey(3)).unwrap();
        assert_eq!(ids(&author("bob")), vec![1]);
        assert_eq!(ids(&channel(1)), vec![1]);

        // The index table holds exactly the live entries: 2 per message.
        let entries = store
            .read(|tx| {
                use netabase_store::backend::ReadTransaction;
                tx.raw().len(&netabase_store::index_table("Message"))
            })
            .unwrap();
        assert_eq!(entries, 4, "{kind:?}");

        let de = user("eve", "de", 30);
        store.put(&de).unwrap();
        assert_eq!(store.get_by_secondary(&country("de")).unwrap(), vec![de]);
        assert_eq!(store.get_by_secondary(&country("fr")).unwrap(), vec![]);
    }
}

#[test]
fn ranges_prefixes_queries_in_key_order() {
    for kind in BACKENDS {
        let store = open(kind, true).store;
        for id in [5u64, 1, 9, 3, 7, 300, 256] {
            store.put(&message(id, "x", 0, "")).unwrap();
        }
        let ids = |v: Vec<Message>| v.iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store
                .range::<Message>(MessagePrimaryKey(3)..MessagePrimaryKey(9))
                .unwrap()),
            vec![3, 5, 7],
            "{kind:?}"
        );
        assert_eq!(
            ids(store
                .range::<Message>(MessagePrimaryKey(7)..=MessagePrimaryKey(256))
                .unwrap()),
            vec![7, 9, 256]
        );
        assert_eq!(
            ids(store.range::<Message>(MessagePrimaryKey(200)..).unwrap()),
            vec![256, 300]
        );
        assert_eq!(
            ids(store
                .range::<Message>(MessagePrimaryKey(9)..MessagePrimaryKey(3))
                .unwrap()),
            Vec::<u64>::new(),
            "an inverted range is empty"
        );
        assert_eq!(ids(store.query::<Message>(3).unwrap()), vec![1, 3, 5]);
        assert_eq!(ids(store.query::<Message>(0).unwrap()), Vec::<u64>::new());
        assert_eq!(store.query::<Message>(100).unwrap().len(), 7);

        for name in ["carol", "bob", "bobby", "alice", "bo", "b\0x"] {
            store.put(&user(name, "uk", 1)).unwrap();
        }
        let names = |v: Vec<User>| v.into_iter().map(|u| u.name).collect::<Vec<_>>();
        assert_eq!(
            names(store.prefix::<User, _>("bo").unwrap()),
            vec!["bo", "bob", "bobby"],
            "{kind:?}"
        );
        assert_eq!(
            names(store.prefix::<User, _>("b").unwrap()),
            vec!["b\0x", "bo", "bob", "bobby"]
        );
        assert_eq!(names(store.prefix::<User, _>("").unwrap()).len(), 6);
        assert_eq!(
            names(
                store
                    .range::<User>(UserPrimaryKey("b".into())..UserPrimaryKey("bob".into()))
                    .unwrap()
            ),
            vec!["b\0x", "bo"]
        );

        // A tuple key: equal leading field, string prefix on the last one.
        for (n, s) in [(1, "chat/a"), (1, "chat/b"), (1, "mail/a"), (2, "chat/a")] {
            store
                .put(&Setting {
                    key: (n, s.into()),
                    value: vec![],
                })
                .unwrap();
        }
        let keys: Vec<_> = store
            .prefix::<Setting, _>(&(1u32, "chat/"))
            .unwrap()
            .into_iter()
            .map(|s| s.key)
            .collect();
        assert_eq!(keys, vec![(1, "chat/a".into()), (1, "chat/b".into())]);
        assert_eq!(store.prefix::<Setting, _>(&2u32).unwrap().len(), 1);
    }
}

#[test]
fn batches_and_transactions_are_all_or_nothing() {
    for kind in BACKENDS {
        let store = open(kind, false).store;
        store.put(&message(1, "ada", 1, "keep")).unwrap();

        // A batch across models.
        let mut batch = store.batch();
        batch
            .put(message(2, "bob", 1, "two"))
            .put(user("bob", "fr", 40))
            .remove(&MessagePrimaryKey(1));
        assert_eq!(batch.len(), 3);
        store.apply(batch).unwrap();
        assert_eq!(store.get(&MessagePrimaryKey(1)).unwrap(), None, "{kind:?}");
        assert!(store.get(&MessagePrimaryKey(2)).unwrap().is_some());
        assert_eq!(store.get_by_secondary(&country("fr")).unwrap().len(), 1);
        assert_eq!(store.get_by_secondary(&author("ada")).unwrap(), vec![]);

        // A failing transaction leaves nothing behind, including index entries.
        let err = store
            .write(|tx| {
                tx.put(&message(3, "carol", 9, "three"))?;
                tx.remove(&MessagePrimaryKey(2))?;
                // Reads inside see the transaction's own writes.
                assert!(tx.get(&MessagePrimaryKey(3))?.is_some());
                assert_eq!(tx.get_by_secondary(&author("carol"))?.len(), 1);
                assert_eq!(tx.get(&MessagePrimaryKey(2))?, None);
                assert_eq!(tx.count::<Message>()?, 1);
                Err::<(), _>(StoreError::aborted("changed my mind"))
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::Aborted(_)), "{err}");
        assert_eq!(store.get(&MessagePrimaryKey(3)).unwrap(), None, "{kind:?}");
        assert!(store.get(&MessagePrimaryKey(2)).unwrap().is_some());
        assert_eq!(store.get_by_secondary(&author("carol")).unwrap(), vec![]);
        assert_eq!(store.get_by_secondary(&channel(9)).unwrap(), vec![]);

        // A successful one applies everything.
        let n = store
            .write(|tx| {
                let replaced = tx.put(&message(2, "dave", 2, "2b"))?;
                assert_eq!(replaced.map(|m| m.author), Some("bob".into()));
                tx.put(&user("dave", "de", 20))?;
                tx.put_many(&[message(4, "dave", 2, ""), message(5, "dave", 2, "")])
            })
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(store.get_by_secondary(&author("dave")).unwrap().len(), 3);
        assert_eq!(store.put_many(&[user("x", "y", 1)]).unwrap(), 1);

        // Reads in one read transaction.
        let (messages, users) = store
            .read(|tx| Ok((tx.count::<Message>()?, tx.count::<User>()?)))
            .unwrap();
        assert_eq!((messages, users), (3, 3), "{kind:?}");
    }
}

#[test]
fn nested_transactions_are_refused_not_deadlocked() {
    for kind in BACKENDS {
        let store = open(kind, true).store;
        let clone = store.clone();
        let err = store
            .write(|tx| {
                tx.put(&message(1, "a", 1, ""))?;
                clone.get(&MessagePrimaryKey(1))
            })
            .unwrap_err();
        assert!(
            matches!(err, StoreError::NestedTransaction),
            "{kind:?}: {err}"
        );
        let err = store
            .read(|_| store.put(&message(1, "a", 1, "")))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::NestedTransaction),
            "{kind:?}: {err}"
        );
        // Nothing was written, and the store is usable afterwards.
        assert_eq!(store.get(&MessagePrimaryKey(1)).unwrap(), None);
        store.put(&message(1, "a", 1, "")).unwrap();
    }
}

#[test]
fn definition_values_share_records_and_indexes_with_typed_access() {
    for kind in BACKENDS {
        let store = open(kind, true).store;
        let m = message(10, "ada", 3, "via definition");
        assert_eq!(
            store
                .put_definition(&ChatDefinition::Message(m.clone()))
                .unwrap(),
            None
        );
        assert_eq!(store.get(&MessagePrimaryKey(10)).unwrap(), Some(m.clone()));
        assert_eq!(
            store.get_by_secondary(&author("ada")).unwrap(),
            vec![m.clone()]
        );

        let edited = message(10, "bob", 3, "typed");
        store.put(&edited).unwrap();
        let key = encode_key(&10u64).unwrap();
        assert_eq!(
            store.get_definition(Message::ID, &key).unwrap(),
            Some(ChatDefinition::Message(edited.clone()))
        );
        assert_eq!(
            store
                .put_definition(&ChatDefinition::Message(m.clone()))
                .unwrap(),
            Some(ChatDefinition::Message(edited))
        );
        assert_eq!(store.get_by_secondary(&author("bob")).unwrap(), vec![]);
        assert_eq!(
            store.remove_definition(Message::ID, &key).unwrap(),
            Some(ChatDefinition::Message(m))
        );
        assert_eq!(store.get_by_secondary(&author("ada")).unwrap(), vec![]);
        assert!(matches!(
            store.get_definition(99, &key),
            Err(StoreError::Model(_))
        ));
    }
}

#[test]
fn data_survives_close_and_reopen() {
    for kind in [BackendKind::Redb, BackendKind::Sled] {
        let opened = open(kind, false);
        let path = store_path(&opened.dir);
        opened
            .store
            .put(&message(1, "ada", 1, "persisted"))
            .unwrap();
        opened.store.put(&user("ada", "uk", 36)).unwrap();
        drop(opened.store);
        let store = Store::<ChatDefinition>::open_with(&path, config(kind, false)).unwrap();
        assert_eq!(
            store.get(&MessagePrimaryKey(1)).unwrap().map(|m| m.text),
            Some("persisted".into()),
            "{kind:?}"
        );
        assert_eq!(store.get_by_secondary(&country("uk")).unwrap().len(), 1);
    }
}

#[test]
fn stores_can_share_a_backend_and_see_each_other() {
    let backend = Arc::new(netabase_store::AnyBackend::from(MemoryBackend::new()));
    let a = Store::<ChatDefinition>::from_backend(Arc::clone(&backend)).unwrap();
    let b = Store::<ChatDefinition>::from_backend(backend).unwrap();
    a.put(&message(1, "x", 1, "")).unwrap();
    assert!(b.get(&MessagePrimaryKey(1)).unwrap().is_some());
    assert_eq!(ChatDefinition::NAME, "ChatDefinition");
}

/// Raw access through the backend trait: tables hold their own keys only, whatever their
/// number (the flat backends give the first 127 tables a one-byte key prefix and the others
/// two bytes), and keep them across a reopen.
#[test]
fn many_tables_keep_their_own_keys_across_a_reopen() {
    use std::ops::ControlFlow;

    use netabase_store::backend::{FULL_RANGE, ReadTransaction, WriteTransaction};
    use netabase_store::{AnyBackend, Backend};

    const TABLES: usize = 300;
    let name = |t: usize| format!("table{t}");
    let check = |backend: &AnyBackend, kind: BackendKind| {
        let tx = backend.begin_read().unwrap();
        for t in 0..TABLES {
            let mut keys = Vec::new();
            tx.scan(&name(t), FULL_RANGE, &mut |k, v| {
                assert_eq!(v, name(t).as_bytes(), "{kind:?}");
                keys.push(k.to_vec());
                Ok(ControlFlow::Continue(()))
            })
            .unwrap();
            let expected: Vec<Vec<u8>> = [&[][..], &[0], b"k", &[0xFF]]
                .iter()
                .map(|k| k.to_vec())
                .collect();
            assert_eq!(keys, expected, "{kind:?} table {t}");
            assert_eq!(tx.len(&name(t)).unwrap(), 4);
            assert_eq!(tx.get(&name(t), b"k").unwrap(), Some(name(t).into_bytes()));
        }
        assert_eq!(tx.get("never written", b"k").unwrap(), None);
        assert_eq!(tx.len("never written").unwrap(), 0);
    };
    for kind in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let backend = config(kind, false).open(&path).unwrap();
        // Tables are created in two commits, the second one from inside a transaction that
        // also reads them.
        for part in [0..TABLES / 2, TABLES / 2..TABLES] {
            let mut tx = backend.begin_write().unwrap();
            for t in part {
                for key in [&[][..], &[0], &[0xFF], b"k"] {
                    tx.put(&name(t), key, name(t).as_bytes()).unwrap();
                }
                assert_eq!(tx.len(&name(t)).unwrap(), 4, "{kind:?}");
            }
            tx.commit().unwrap();
        }
        // A table created by a transaction that is dropped does not exist afterwards.
        let mut tx = backend.begin_write().unwrap();
        tx.put("dropped", b"k", b"v").unwrap();
        drop(tx);
        check(&backend, kind);
        assert_eq!(backend.begin_read().unwrap().len("dropped").unwrap(), 0);
        if kind != BackendKind::Memory {
            drop(backend);
            let backend = config(kind, false).open(&path).unwrap();
            check(&backend, kind);
        }
    }
}

/// A sled directory whose keys are not in this crate's layout is refused, not read as an
/// empty store.
#[test]
fn a_sled_store_in_another_key_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    {
        let db = sled::open(&path).unwrap();
        let tree = db.open_tree("netabase").unwrap();
        // How a record of table `m/Message` used to be stored: the table's name in the key.
        tree.insert(b"m/Message\0\0\0\0\0\0\0\0\x01", &b"value"[..])
            .unwrap();
        db.flush().unwrap();
    }
    // sled's flusher thread may hold the directory's lock for a moment after the handle
    // is dropped: wait for it to go, with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let opened = loop {
        match Store::<ChatDefinition>::open_with(&path, config(BackendKind::Sled, false)) {
            Err(StoreError::AlreadyOpen { .. }) if std::time::Instant::now() < deadline => {
                std::thread::yield_now();
            }
            other => break other,
        }
    };
    match opened {
        Err(StoreError::Backend(reason)) => assert!(reason.contains("layout"), "{reason}"),
        other => panic!("expected a layout error, got {other:?}"),
    }
}

#[test]
fn lookups_by_primary_key_see_buffered_and_synced_commits_alike() {
    for kind in BACKENDS {
        let store = open(kind, true).store;
        let (m1, m2) = (message(1, "ada", 1, "a"), message(2, "bob", 2, "b"));
        assert_eq!(store.get(&MessagePrimaryKey(1)).unwrap(), None, "{kind:?}");
        store.put(&m1).unwrap();
        assert_eq!(
            store.get(&MessagePrimaryKey(1)).unwrap().as_ref(),
            Some(&m1)
        );
        store.sync().unwrap();
        assert_eq!(
            store.get(&MessagePrimaryKey(1)).unwrap().as_ref(),
            Some(&m1)
        );
        // A deferred commit on top of synced ones (buffered in memory on redb).
        store.put(&m2).unwrap();
        store.remove(&MessagePrimaryKey(1)).unwrap();
        assert_eq!(store.get(&MessagePrimaryKey(1)).unwrap(), None, "{kind:?}");
        assert_eq!(
            store.get(&MessagePrimaryKey(2)).unwrap().as_ref(),
            Some(&m2)
        );
        assert_eq!(store.get(&MessagePrimaryKey(3)).unwrap(), None);
        assert_eq!(store.get(&UserPrimaryKey("nobody".into())).unwrap(), None);
        store.sync().unwrap();
        assert_eq!(store.get(&MessagePrimaryKey(1)).unwrap(), None, "{kind:?}");
        assert_eq!(
            store.get(&MessagePrimaryKey(2)).unwrap().as_ref(),
            Some(&m2)
        );
        // Inside a transaction, a lookup sees the transaction's own writes.
        store
            .write(|tx| {
                tx.put(&m1)?;
                assert_eq!(tx.get(&MessagePrimaryKey(1))?.as_ref(), Some(&m1));
                assert!(matches!(
                    store.get(&MessagePrimaryKey(1)),
                    Err(StoreError::NestedTransaction)
                ));
                Ok(())
            })
            .unwrap();
        assert_eq!(
            store.get(&MessagePrimaryKey(1)).unwrap().as_ref(),
            Some(&m1)
        );
    }
}
