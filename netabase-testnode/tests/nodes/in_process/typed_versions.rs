//! Versions on real nodes: the typed store keeps the version of each row, and a newer write
//! by another node replaces the typed row and its version (and says so with an event).

use netabase::NetabaseEvent;
use netabase_testnode::MessagePrimaryKey;
use netabase_testnode::in_process::*;

per_runtime!(a_newer_write_elsewhere_replaces_the_typed_row_and_its_version);
async fn a_newer_write_elsewhere_replaces_the_typed_row_and_its_version<R: TestRuntime>() {
    let nodes = network::<R>(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut a_events = a.events();

    // a writes; its typed row carries the version of the record it published.
    let first = a.node.put_record(message(1, "from a")).await.unwrap();
    assert_eq!(first.stored_at, vec![b.id()]);
    let store = a.node.local_store().unwrap();
    let v1 = store
        .record_version(&MessagePrimaryKey(1))
        .unwrap()
        .unwrap();
    let held = a.node.local_record(&first.key).unwrap().unwrap();
    assert_eq!(
        netabase_core::version::version_of(&held.value),
        Some(v1),
        "the typed row and the DHT record carry the same version"
    );

    // b overwrites it: b's version is newer (its clock merged a's), and a's typed row and
    // secondary index follow, with an event.
    let second = b.node.put_record(message(1, "from b")).await.unwrap();
    assert_eq!(second.stored_at, vec![a.id()]);
    assert_eq!(second.superseded_by, None);
    let (b_id, key) = (b.id(), second.key.clone());
    a_events
        .wait_for("a learns the newer version", |e| match e {
            NetabaseEvent::RecordStored { key: k, from } if *k == key && *from == b_id => Some(()),
            _ => None,
        })
        .await;
    let row = store.get(&MessagePrimaryKey(1)).unwrap().unwrap();
    assert_eq!(row, message(1, "from b"));
    let v2 = store
        .record_version(&MessagePrimaryKey(1))
        .unwrap()
        .unwrap();
    assert!(v2 > v1, "{v2:?} after {v1:?}");
    assert_eq!(v2.origin.to_bytes(), b.id().to_bytes());

    // Every node reads the newer one.
    for n in &nodes {
        let got = n
            .node
            .get_record(&MessagePrimaryKey(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.record, message(1, "from b"));
        assert_eq!(got.origin, b.id());
    }
}
