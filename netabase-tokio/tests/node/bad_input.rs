//! A peer that pushes a record which is not a typed record envelope.

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{StreamProtocol, noise, tcp, yamux};
use netabase_core::{Codec, MessageKind, RecordKey, Request, WireRecord};
use netabase_tokio::{NetabaseEvent, libp2p};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_record_from_a_peer_is_rejected_and_counted() {
    let target = start_with(|_| {}).await;
    let mut events = target.node.subscribe_to_broadcasts();

    // A raw libp2p peer that speaks the protocol with hand-made messages.
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .build();
    let raw_peer = *swarm.local_peer_id();
    let mut control = swarm.behaviour().new_control();
    swarm.dial(target.addr.clone()).unwrap();
    let (connected_tx, connected) = tokio::sync::oneshot::channel();
    let driver = tokio::spawn(async move {
        let mut connected_tx = Some(connected_tx);
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => {
                    if let Some(tx) = connected_tx.take() {
                        let _ = tx.send(());
                    }
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
                _ => {}
            }
        }
    });
    tokio::time::timeout(DEADLINE, connected)
        .await
        .unwrap()
        .unwrap();

    let protocol = StreamProtocol::new("/netabase/kad/1.0.0");
    let key = RecordKey::new(b"/nb/ChatDefinition/Message/\x01").unwrap();
    let request = Request::PutValue {
        record: WireRecord {
            key: key.clone(),
            value: b"not an envelope".to_vec(),
            publisher: None,
            ttl_secs: Some(60),
        },
    };
    let codec = Codec::default();
    let mut stream =
        tokio::time::timeout(DEADLINE, control.open_stream(target.id(), protocol.clone()))
            .await
            .unwrap()
            .unwrap();
    stream
        .write_all(&codec.encode_request(&request))
        .await
        .unwrap();
    stream.close().await.unwrap();
    // The node refuses the record: it closes the stream without an answer.
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.is_empty(), "answered {answer:?}");

    let (peer, kind) = wait_for(&mut events, "rejection", |e| match e {
        NetabaseEvent::InboundRejected { peer, kind, .. } => Some((*peer, *kind)),
        _ => None,
    })
    .await;
    assert_eq!((peer, kind), (raw_peer, MessageKind::PutValue));
    let stats = target.node.stats().await.unwrap();
    assert_eq!(stats.kad.invalid_records, 1);
    assert_eq!(stats.kad.inbound_rejected, 1);

    // A frame that announces more than the size limit fails the stream, and the node
    // keeps serving: a well-formed request still gets its answer.
    let mut oversized =
        tokio::time::timeout(DEADLINE, control.open_stream(target.id(), protocol.clone()))
            .await
            .unwrap()
            .unwrap();
    oversized
        .write_all(&[0xFF, 0xFF, 0xFF, 0x7F])
        .await
        .unwrap();
    wait_for(&mut events, "stream failure", |e| match e {
        NetabaseEvent::InboundStreamFailed { peer, .. } if *peer == raw_peer => Some(()),
        _ => None,
    })
    .await;
    let mut ping = control.open_stream(target.id(), protocol).await.unwrap();
    ping.write_all(&codec.encode_request(&Request::Ping))
        .await
        .unwrap();
    ping.close().await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(DEADLINE, ping.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(!reply.is_empty());
    assert_eq!(
        target.node.stats().await.unwrap().inbound_stream_failures,
        1
    );
    assert!(
        target
            .node
            .get_record(&MessagePrimaryKey(1))
            .await
            .unwrap()
            .is_none()
    );
    driver.abort();
}
