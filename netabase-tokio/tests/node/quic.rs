//! Records between two nodes over QUIC.

use netabase_testnode::MessagePrimaryKey;
use netabase_testnode::in_process::{TestRuntime, message, start_with};
use netabase_tokio::{NetabaseConfig, TokioRuntime};

#[test]
fn records_flow_over_quic() {
    TokioRuntime::block_on(async {
        let quic = |c: &mut NetabaseConfig| {
            c.listen_addresses = Some(vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()]);
        };
        let a = start_with::<TokioRuntime>(quic).await;
        assert!(a.addr.to_string().contains("quic-v1"), "{}", a.addr);
        let (id, addr) = (a.id(), a.addr.clone());
        let b = start_with::<TokioRuntime>(|c| {
            quic(c);
            c.bootstrap_peers = vec![(id, addr)];
        })
        .await;
        b.node.bootstrap().await.unwrap();
        let put = b.node.put_record(message(5, "over quic")).await.unwrap();
        assert_eq!(put.stored_at, vec![a.id()]);
        let got = a
            .node
            .get_record(&MessagePrimaryKey(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.record, message(5, "over quic"));
        // a holds the record for b in its DHT store, so it answers from there.
        assert_eq!(got.source, None);
        assert_eq!(got.origin, b.id());
        // b removes it: the tombstone reaches a over QUIC too, and a reads the removal.
        assert_eq!(
            b.node.remove_record(&MessagePrimaryKey(5)).await.unwrap(),
            Some(message(5, "over quic"))
        );
        assert_eq!(
            a.node.get_record(&MessagePrimaryKey(5)).await.unwrap(),
            None
        );
        let held = a.node.local_record(&got_key(5)).unwrap().unwrap();
        let envelope = netabase_core::model::Envelope::decode(&held.value).unwrap();
        assert!(envelope.tombstone);
    });
}

fn got_key(id: u64) -> netabase_core::RecordKey {
    netabase_core::model::record_key(&MessagePrimaryKey(id)).unwrap()
}
