//! A data directory written by release 0.1.0, before records were versioned and signed
//! (`tests/fixtures/netabase-0.1.0-redb`, see its README), opens under this release: the
//! node's own records are signed again with their versions unchanged, records of other
//! writers that cannot be verified are dropped, typed rows get their versions, and
//! opening it again changes nothing.

use std::path::Path;
use std::sync::Arc;

use netabase::core::model::{Envelope, record_key};
use netabase::core::{PeerId as CorePeerId, RecordStore, Version};
use netabase::store::{PersistentRecordStore, RecordStoreConfig, Store};
use netabase::swarm::{core_keypair, load_or_create_identity};
use netabase_cli::models::{CliDefinition, DocumentPrimaryKey, RawPrimaryKey};

use crate::support::{NodeProcess, ctl, json, ok};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/netabase-0.1.0-redb"
);

fn copy_fixture(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in ["identity.key", "netabase.redb"] {
        std::fs::copy(Path::new(FIXTURE).join(file), to.join(file)).unwrap();
    }
}

/// The node's id in the core's form, and its signing key.
fn identity(dir: &Path) -> (CorePeerId, netabase::core::Keypair) {
    let keypair = core_keypair(&load_or_create_identity(dir).unwrap()).unwrap();
    (keypair.peer_id(), keypair)
}

fn dht(store: &Store<CliDefinition>, local: CorePeerId) -> PersistentRecordStore {
    PersistentRecordStore::new(
        Arc::clone(store.backend()),
        local,
        RecordStoreConfig::default(),
    )
}

#[test]
fn a_data_directory_of_release_0_1_0_is_migrated_once_and_keeps_its_records() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    copy_fixture(&dir);
    let (local, keypair) = identity(&dir);
    let note = record_key(&RawPrimaryKey("note".into())).unwrap();
    let config = record_key(&DocumentPrimaryKey("config".into())).unwrap();
    let greeting = record_key(&RawPrimaryKey("greeting".into())).unwrap();

    // Before: four unsigned (format 1) records, two of them this node's.
    let before = {
        let store = Store::<CliDefinition>::open(dir.join("netabase.redb")).unwrap();
        let dht = dht(&store, local);
        assert_eq!(dht.record_count().unwrap(), 4);
        let note = Envelope::decode(&dht.get(&note).unwrap().unwrap().value).unwrap();
        assert_eq!((note.format, note.origin), (1, local));
        assert_eq!(
            store.record_version(&RawPrimaryKey("note".into())).unwrap(),
            None
        );
        note
    };

    // The node of this release starts on it and serves its own records; the records of
    // the other writer are gone (unverifiable) and no peer has them.
    let node = NodeProcess::start(&dir, &[]);
    assert_eq!(ok(&ctl(&node, &["get", "note"])), "a note from a\n");
    let doc = json(&ok(&ctl(&node, &["get", "--doc", "config", "--json"])));
    assert_eq!(doc["doc"], json(r#"{"theme":"dark"}"#));
    assert_eq!(ctl(&node, &["get", "greeting"]).status.code(), Some(1));
    assert_eq!(ok(&ctl(&node, &["shutdown"])), "the node is stopping\n");
    let (status, _) = node.wait_exit();
    assert_eq!(status.code(), Some(0));

    // After: signed again (same version and payload), the typed rows carry the versions.
    let store = Store::<CliDefinition>::open(dir.join("netabase.redb")).unwrap();
    let dht = dht(&store, local);
    assert_eq!(dht.record_count().unwrap(), 2);
    assert_eq!(dht.get(&greeting).unwrap(), None);
    for key in [&note, &config] {
        let value = dht.get(key).unwrap().unwrap().value;
        let (_, envelope) = Envelope::open::<CliDefinition>(key, &value).unwrap();
        assert_eq!((envelope.format, envelope.origin), (2, local));
    }
    let resigned = Envelope::decode(&dht.get(&note).unwrap().unwrap().value).unwrap();
    assert_eq!(
        (resigned.timestamp, &resigned.payload),
        (before.timestamp, &before.payload)
    );
    assert_eq!(
        store.record_version(&RawPrimaryKey("note".into())).unwrap(),
        Some(Version {
            timestamp: before.timestamp,
            origin: local
        })
    );
    assert!(
        store
            .record_version(&DocumentPrimaryKey("config".into()))
            .unwrap()
            .is_some()
    );
    // Once is enough: a second run changes nothing.
    let again = store.migrate_record_store(local, Some(&keypair)).unwrap();
    assert!(!again.changed(), "{again:?}");
}
