//! A raw libp2p peer (on tokio) that pushes a record which is not a typed record envelope,
//! and an oversized frame, to a node on each runtime.

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use netabase::NetabaseEvent;
use netabase::swarm::Runtime;
use netabase_core::{Codec, MessageKind, RecordKey, Request, WireRecord};
use netabase_testnode::MessagePrimaryKey;
use netabase_testnode::in_process::*;
use tokio::sync::oneshot;

use crate::stock::{TokioPeers, tokio_swarm};

/// A raw libp2p peer on `peers`' runtime that opens streams of any protocol with
/// hand-made bytes; returns once it is connected to `target`.
async fn raw_peer<R: Runtime>(
    peers: &TokioPeers,
    target: Multiaddr,
) -> (PeerId, libp2p_stream::Control) {
    let (connected_tx, connected) = oneshot::channel::<Result<_, String>>();
    peers.spawn(async move {
        let mut swarm = tokio_swarm(|_| libp2p_stream::Behaviour::new(), None);
        let mut connected_tx = Some((
            connected_tx,
            *swarm.local_peer_id(),
            swarm.behaviour().new_control(),
        ));
        swarm.dial(target).unwrap();
        loop {
            let outcome = match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => Ok(()),
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    Err(format!("dial failed: {error}"))
                }
                _ => continue,
            };
            if let Some((tx, id, control)) = connected_tx.take() {
                let _ = tx.send(outcome.map(|()| (id, control)));
            }
        }
    });
    within::<R, _>("the raw peer's connection", connected)
        .await
        .expect("the raw peer runs")
        .unwrap_or_else(|e| panic!("{e}"))
}

per_runtime!(an_invalid_record_from_a_peer_is_rejected_and_counted);
async fn an_invalid_record_from_a_peer_is_rejected_and_counted<R: TestRuntime>() {
    let target = start_with::<R>(|_| {}).await;
    let mut events = target.events();
    let peers = TokioPeers::new();
    let (raw_peer, mut control) = raw_peer::<R>(&peers, target.addr.clone()).await;

    let protocol = StreamProtocol::new("/netabase/kad/1.0.0");
    let key = RecordKey::new(b"/nb/ChatDefinition/Message/\x01").unwrap();
    let request = Request::PutValue {
        record: Box::new(WireRecord {
            key: key.clone(),
            value: b"not an envelope".to_vec(),
            publisher: None,
            ttl_secs: Some(60),
        }),
    };
    let codec = Codec::default();
    let mut stream = within::<R, _>(
        "a stream",
        control.open_stream(target.id(), protocol.clone()),
    )
    .await
    .unwrap();
    stream
        .write_all(&codec.encode_request(&request))
        .await
        .unwrap();
    stream.close().await.unwrap();
    // The node refuses the record: it closes the stream without an answer.
    let mut answer = Vec::new();
    within::<R, _>("the end of the stream", stream.read_to_end(&mut answer))
        .await
        .unwrap();
    assert!(answer.is_empty(), "answered {answer:?}");

    let (peer, kind) = events
        .wait_for("rejection", |e| match e {
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
    let mut oversized = within::<R, _>(
        "a stream",
        control.open_stream(target.id(), protocol.clone()),
    )
    .await
    .unwrap();
    oversized
        .write_all(&[0xFF, 0xFF, 0xFF, 0x7F])
        .await
        .unwrap();
    events
        .wait_for("stream failure", |e| match e {
            NetabaseEvent::InboundStreamFailed { peer, .. } if *peer == raw_peer => Some(()),
            _ => None,
        })
        .await;
    let mut ping = within::<R, _>("a stream", control.open_stream(target.id(), protocol))
        .await
        .unwrap();
    ping.write_all(&codec.encode_request(&Request::Ping))
        .await
        .unwrap();
    ping.close().await.unwrap();
    let mut reply = Vec::new();
    within::<R, _>("the answer to a ping", ping.read_to_end(&mut reply))
        .await
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
}
