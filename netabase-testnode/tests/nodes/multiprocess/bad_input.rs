//! A raw libp2p peer (hand-made bytes over `libp2p-stream`) against a node process:
//! malformed, truncated, oversized and unexpected Kademlia messages as requests and as
//! answers, and garbage on the identify and ping protocols. The node reports what it
//! refuses, keeps serving a well-behaved node process, and loses no stored record.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use netabase_core::model::{Envelope, NetabaseDefinition, SealParts};
use netabase_core::wire::Frame;
use netabase_core::{
    Codec, ConnectionType, MessageKind, PeerInfo, RecordKey, Request, Response, WireRecord,
};
use netabase_testnode::{ChatDefinition, Command, Event, Message, PutReply, StatsReply};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use super::support::*;
use crate::stock::tokio_swarm;

pub(crate) const KAD: StreamProtocol = StreamProtocol::new("/netabase/kad/1.0.0");
const IDENTIFY: StreamProtocol = StreamProtocol::new("/ipfs/id/1.0.0");
const IDENTIFY_PUSH: StreamProtocol = StreamProtocol::new("/ipfs/id/push/1.0.0");
const PING: StreamProtocol = StreamProtocol::new("/ipfs/ping/1.0.0");

/// How the raw peer answers the node's next GET_VALUE request.
#[derive(Debug, Clone, Copy)]
enum BadAnswer {
    /// A PING answer.
    WrongKind,
    /// A frame whose payload is not protobuf.
    Garbage,
    /// A frame cut short.
    Truncated,
    /// A length prefix far over the limit.
    Oversized,
    /// Closes the stream without an answer.
    Nothing,
    /// A well-formed answer carrying a record that is not a typed envelope.
    InvalidRecord,
}

fn frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 128);
    let mut out = vec![payload.len() as u8];
    out.extend_from_slice(payload);
    out
}

impl BadAnswer {
    fn bytes(self, codec: &Codec, key: RecordKey) -> Vec<u8> {
        match self {
            BadAnswer::WrongKind => codec.encode_response(&Response::Pong),
            BadAnswer::Garbage => frame(&[0xff, 0xff, 0xff, 0xff]),
            BadAnswer::Truncated => vec![20, 1, 2, 3],
            BadAnswer::Oversized => vec![0xff, 0xff, 0xff, 0x7f],
            BadAnswer::Nothing => Vec::new(),
            BadAnswer::InvalidRecord => codec.encode_response(&Response::GetValue {
                record: Some(Box::new(WireRecord {
                    key,
                    value: b"not an envelope".to_vec(),
                    publisher: None,
                    ttl_secs: Some(60),
                })),
                closer_peers: Vec::new(),
            }),
        }
    }
}

/// Reads one length-prefixed frame (as the Kademlia protocol frames messages).
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S, codec: &Codec) -> io::Result<Vec<u8>> {
    let mut prefix = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await?;
        prefix.push(byte[0]);
        match codec.read_frame(&prefix).map_err(io::Error::other)? {
            Frame::Complete { payload, .. } => return Ok(payload.to_vec()),
            Frame::Incomplete {
                needed: Some(total),
            } => {
                let mut payload = vec![0u8; total - prefix.len()];
                stream.read_exact(&mut payload).await?;
                return Ok(payload);
            }
            Frame::Incomplete { needed: None } => {}
        }
    }
}

/// The correct answer to `request`, or none for a one-way request.
fn good_answer(request: &Request) -> Option<Response> {
    match request {
        Request::FindNode { .. } => Some(Response::FindNode {
            closer_peers: Vec::new(),
        }),
        Request::GetValue { .. } => Some(Response::GetValue {
            record: None,
            closer_peers: Vec::new(),
        }),
        Request::PutValue { record } => Some(Response::PutValue {
            key: record.key.clone(),
            value: record.value.clone(),
        }),
        Request::GetProviders { .. } => Some(Response::GetProviders {
            closer_peers: Vec::new(),
            provider_peers: Vec::new(),
        }),
        Request::AddProvider { .. } => None,
        Request::Ping => Some(Response::Pong),
    }
}

/// Serves the Kademlia protocol on one inbound stream: GET_VALUE requests get the next
/// scripted bad answer, everything else a correct one.
async fn serve_stream(mut stream: Stream, script: Arc<Mutex<VecDeque<BadAnswer>>>) {
    let codec = Codec::default();
    let Ok(payload) = read_frame(&mut stream, &codec).await else {
        return;
    };
    let Ok(request) = codec.decode_request(&payload) else {
        return;
    };
    let bytes = match &request {
        Request::GetValue { key } => {
            let bad = script.lock().unwrap().pop_front();
            match bad {
                Some(bad) => bad.bytes(&codec, key.clone()),
                None => codec.encode_response(&good_answer(&request).unwrap()),
            }
        }
        other => good_answer(other)
            .map(|r| codec.encode_response(&r))
            .unwrap_or_default(),
    };
    let _ = stream.write_all(&bytes).await;
    let _ = stream.close().await;
}

/// The raw peer's behaviour: raw streams, and ping (a node stops serving ping on a
/// connection whose peer does not answer pings, so the peer answers them).
#[derive(libp2p::swarm::NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct RawBehaviour {
    streams: libp2p_stream::Behaviour,
    ping: libp2p::ping::Behaviour,
}

/// A libp2p peer that opens and accepts raw streams.
pub(crate) struct RawPeer {
    rt: Runtime,
    control: libp2p_stream::Control,
    id: PeerId,
    addr: Multiaddr,
    script: Arc<Mutex<VecDeque<BadAnswer>>>,
}

impl RawPeer {
    /// Starts the peer, listening on 127.0.0.1, connected to `remote` at `remote_addr`.
    fn start(remote: PeerId, remote_addr: Multiaddr) -> RawPeer {
        RawPeer::start_from("127.0.0.1", remote, remote_addr)
    }

    /// Starts the peer, listening on `ip` (its dials go out from there), connected to
    /// `remote` at `remote_addr`.
    pub(crate) fn start_from(ip: &str, remote: PeerId, remote_addr: Multiaddr) -> RawPeer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let (control, id, addr) = rt.block_on(async {
            let behaviour = |_: &libp2p::identity::Keypair| RawBehaviour {
                streams: libp2p_stream::Behaviour::new(),
                ping: libp2p::ping::Behaviour::default(),
            };
            let idle = Duration::from_secs(60);
            // On 127.0.0.1 the peer listens too (the node dials it back); on another
            // address it only dials, from that address.
            let (mut swarm, addr) = if ip == "127.0.0.1" {
                let mut swarm = tokio_swarm(behaviour, Some(idle));
                swarm
                    .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
                    .unwrap();
                let addr = loop {
                    if let SwarmEvent::NewListenAddr { address, .. } =
                        swarm.select_next_some().await
                    {
                        break address;
                    }
                };
                (swarm, addr)
            } else {
                let swarm =
                    netabase_testnode::source_tcp::swarm_from(ip.parse().unwrap(), behaviour, idle)
                        .unwrap();
                (swarm, format!("/ip4/{ip}/tcp/0").parse().unwrap())
            };
            let id = *swarm.local_peer_id();
            swarm
                .dial(remote_addr.with(libp2p::multiaddr::Protocol::P2p(remote)))
                .unwrap();
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == remote => {
                        break;
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        panic!("dialling the node: {error}")
                    }
                    _ => {}
                }
            }
            let mut control = swarm.behaviour().streams.new_control();
            let mut incoming = control.accept(KAD).unwrap();
            tokio::spawn(async move {
                loop {
                    swarm.select_next_some().await;
                }
            });
            let serving = Arc::clone(&script);
            tokio::spawn(async move {
                while let Some((_, stream)) = incoming.next().await {
                    tokio::spawn(serve_stream(stream, Arc::clone(&serving)));
                }
            });
            (control, id, addr)
        });
        RawPeer {
            rt,
            control,
            id,
            addr,
            script,
        }
    }

    /// Opens a stream of `protocol` to `peer`, writes `bytes`, closes the sending side and
    /// reads until the node ends the stream; an error means the node reset it.
    pub(crate) fn exchange(
        &mut self,
        peer: PeerId,
        protocol: StreamProtocol,
        bytes: &[u8],
    ) -> io::Result<Vec<u8>> {
        let control = &mut self.control;
        self.rt.block_on(async {
            tokio::time::timeout(DEADLINE, async {
                let mut stream = control
                    .open_stream(peer, protocol)
                    .await
                    .unwrap_or_else(|e| panic!("opening a stream: {e}"));
                stream.write_all(bytes).await?;
                stream.close().await?;
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer).await?;
                Ok(answer)
            })
            .await
            .expect("the node ends every stream in time")
        })
    }

    /// A ping as libp2p's ping protocol does it: 32 bytes out, the same 32 bytes back on
    /// the open stream.
    fn ping(&mut self, peer: PeerId) -> Vec<u8> {
        let control = &mut self.control;
        self.rt.block_on(async {
            tokio::time::timeout(DEADLINE, async {
                let mut stream = control.open_stream(peer, PING).await.unwrap();
                stream.write_all(&[7u8; 32]).await.unwrap();
                stream.flush().await.unwrap();
                let mut echo = vec![0u8; 32];
                stream.read_exact(&mut echo).await.unwrap();
                echo
            })
            .await
            .expect("the node echoes a ping in time")
        })
    }

    /// Opens `n` streams of the Kademlia protocol at once, sending nothing on them; returns
    /// once the node has ended each of them.
    fn idle_streams(&mut self, peer: PeerId, n: usize) {
        let control = &self.control;
        self.rt.block_on(async {
            let (done_tx, mut done) = mpsc::unbounded_channel();
            for _ in 0..n {
                let mut control = control.clone();
                let done_tx = done_tx.clone();
                tokio::spawn(async move {
                    let mut stream = control.open_stream(peer, KAD).await.unwrap();
                    let mut rest = Vec::new();
                    let _ = stream.read_to_end(&mut rest).await;
                    let _ = done_tx.send(());
                });
            }
            for _ in 0..n {
                tokio::time::timeout(DEADLINE, done.recv())
                    .await
                    .expect("the node ends idle streams")
                    .unwrap();
            }
        });
    }
}

fn libp2p_peer(id: &str) -> PeerId {
    id.parse().unwrap()
}

fn core_key(id: u64) -> RecordKey {
    netabase_core::model::record_key(&netabase_testnode::MessagePrimaryKey(id)).unwrap()
}

/// Waits for the node's first report of a failed inbound stream from `peer` after `mark`,
/// which must be for `error`.
fn expect_stream_failure(node: &mut NodeProc, mark: usize, peer: &str, error: &str) {
    node.expect_event_since(mark, &format!("stream failure `{error}`"), |e| match e {
        Event::InboundStreamFailed {
            peer: p,
            error: text,
        } if p == peer => {
            assert!(text.contains(error), "expected `{error}`, got `{text}`");
            Some(())
        }
        _ => None,
    });
}

fn expect_rejection(node: &mut NodeProc, mark: usize, peer: &str, kind: MessageKind) {
    let kind = format!("{kind:?}");
    node.expect_event_since(mark, &format!("{kind} rejected"), |e| {
        matches!(e, Event::InboundRejected { peer: p, request, .. } if p == peer && *request == kind)
            .then_some(())
    });
}

fn a_node_survives_bad_input_and_keeps_its_records(rt: Rt) {
    // Streams that send nothing end after this long.
    let mut target = Spawn::new("target", rt)
        .arg("--stream-timeout-ms", "2000")
        .start();
    let mut writer = Spawn::new("writer", rt).bootstrap(&target).start();
    let _: netabase_testnode::BootstrapReply = writer.call(Command::Bootstrap);
    let original = message(1, "written by a well-behaved node");
    let own = message(2, "written by the target itself");
    let _: PutReply = writer.call(Command::Put {
        message: original.clone(),
    });
    let key = message_key(1);
    let writer_id = writer.peer_id.clone();
    target.expect_event("the writer's record stored", |e| {
        matches!(e, Event::RecordStored { key: k, from } if *k == key && *from == writer_id)
            .then_some(())
    });
    let _: PutReply = target.call(Command::Put {
        message: own.clone(),
    });

    let node = libp2p_peer(&target.peer_id);
    let mut raw = RawPeer::start(node, target.addrs[0].parse().unwrap());
    let raw_id = raw.id.to_string();
    let codec = Codec::default();

    // 1. Bytes that are no request at all: each fails its stream, reported with its cause.
    let malformed: [(&[u8], &str); 6] = [
        // A whole frame of bytes that are no protobuf.
        (&frame(&[0xff, 0xff, 0xff]), "malformed protobuf"),
        // A frame that announces 8 bytes and carries 1.
        (&[0x08, 0x63][..], "ended inside a message"),
        // A length prefix (varint) cut after its first byte.
        (&[0x80], "ended inside a message"),
        // A prefix announcing 256 MiB.
        (&[0xff, 0xff, 0xff, 0x7f], "exceeds the limit"),
        // A varint longer than any length.
        (&[0xff; 10], "malformed length prefix"),
        // Valid protobuf of a message type that does not exist.
        (&frame(&[0x08, 0x63]), "unknown message type 99"),
    ];
    for (bytes, error) in malformed {
        let mark = target.mark();
        let answer = raw.exchange(node, KAD, bytes);
        assert!(answer.map_or(true, |a| a.is_empty()), "{error}: answered");
        expect_stream_failure(&mut target, mark, &raw_id, error);
    }
    // A stream that sends nothing times out; one beyond the per-connection limit is
    // refused at once; a stream closed before any byte is no failure.
    let mark = target.mark();
    raw.idle_streams(node, 1);
    expect_stream_failure(&mut target, mark, &raw_id, "timed out");
    assert_eq!(raw.exchange(node, KAD, &[]).unwrap(), Vec::<u8>::new());
    let mark = target.mark();
    raw.idle_streams(node, 33);
    target.expect_event_since(mark, "a stream over the limit refused", |e| {
        matches!(e, Event::InboundStreamFailed { peer, error }
            if *peer == raw_id && error.contains("too many concurrent streams"))
        .then_some(())
    });
    // Six malformed, one idle, then 32 idle and one refused.
    let expected_failures = 6 + 1 + 32 + 1;
    target.expect_event_count(
        0,
        expected_failures,
        "failed streams",
        |e| matches!(e, Event::InboundStreamFailed { peer, .. } if *peer == raw_id),
    );
    assert_eq!(
        target.stats().inbound_stream_failures,
        expected_failures as u64
    );

    // 2. Well-formed messages the node must refuse: each is rejected without an answer.
    // Signed by its writer for key 7, but its value belongs under key 1.
    let forger = netabase_core::Keypair::from_seed(99);
    let misplaced = ChatDefinition::Message(message(1, "forged"));
    let moved = Envelope::seal_parts(
        &core_key(7),
        SealParts {
            model: misplaced.model_id(),
            schema_version: 1,
            timestamp: 1,
            tombstone: false,
            payload: &misplaced.encode_model().unwrap(),
        },
        &forger,
    );
    let refused = [
        // A value that is no typed record, under the writer's key.
        Request::PutValue {
            record: Box::new(WireRecord {
                key: core_key(1),
                value: b"garbage".to_vec(),
                publisher: None,
                ttl_secs: Some(60),
            }),
        },
        // A valid envelope under a key it does not belong to.
        Request::PutValue {
            record: Box::new(WireRecord {
                key: core_key(7),
                value: moved,
                publisher: None,
                ttl_secs: Some(60),
            }),
        },
    ];
    for request in refused {
        let mark = target.mark();
        let answer = raw.exchange(node, KAD, &codec.encode_request(&request));
        assert_eq!(answer.unwrap(), Vec::<u8>::new());
        expect_rejection(&mut target, mark, &raw_id, MessageKind::PutValue);
    }
    // A provider announcement on behalf of another peer.
    let someone_else = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let foreign = Request::AddProvider {
        key: core_key(1),
        provider: Box::new(PeerInfo {
            id: netabase_core::PeerId::from_bytes(&someone_else.to_bytes()).unwrap(),
            addrs: Vec::new().into(),
            connection: ConnectionType::Connected,
        }),
    };
    let mark = target.mark();
    let answer = raw.exchange(node, KAD, &codec.encode_request(&foreign));
    assert_eq!(answer.unwrap(), Vec::<u8>::new());
    expect_rejection(&mut target, mark, &raw_id, MessageKind::AddProvider);

    // An answer sent as a request: a GET_VALUE answer carrying a forged record reads as a
    // GET_VALUE request for its key. The node answers with the record it holds and does not
    // take the forged one.
    let (_, forged) = Envelope::seal(
        &ChatDefinition::Message(message(1, "forged")),
        u64::MAX,
        &forger,
    )
    .unwrap();
    let answer_as_request = codec.encode_response(&Response::GetValue {
        record: Some(Box::new(WireRecord {
            key: core_key(1),
            value: forged,
            publisher: None,
            ttl_secs: Some(60),
        })),
        closer_peers: Vec::new(),
    });
    let answer = raw.exchange(node, KAD, &answer_as_request).unwrap();
    let Frame::Complete { payload, .. } = codec.read_frame(&answer).unwrap() else {
        panic!("a whole answer: {answer:?}");
    };
    let Response::GetValue {
        record: Some(held), ..
    } = codec.decode_response(payload).unwrap()
    else {
        panic!("the node answers with its record");
    };
    let (value, envelope) = Envelope::open::<ChatDefinition>(&core_key(1), &held.value).unwrap();
    assert_eq!(value, ChatDefinition::Message(original.clone()));
    assert_eq!(
        envelope.origin.to_bytes(),
        libp2p_peer(&writer.peer_id).to_bytes()
    );

    let stats = target.stats();
    assert_eq!(stats.inbound_rejected, 3, "{stats:?}");
    assert_eq!(stats.invalid_records, 2, "{stats:?}");

    // 3. Garbage on identify and ping: the node answers identify regardless, drops the bad
    // push and the short ping, and still echoes a proper ping.
    let info = raw.exchange(node, IDENTIFY, b"\x05hello").unwrap();
    assert!(!info.is_empty(), "identify still answers");
    let _ = raw.exchange(node, IDENTIFY_PUSH, b"\x7fnot identify at all");
    let _ = raw.exchange(node, IDENTIFY_PUSH, &[0xff; 64]);
    let _ = raw.exchange(node, PING, b"short");
    assert_eq!(raw.ping(node), vec![7u8; 32]);

    // 4. Bad answers to the node's own requests: a get asks the raw peer, whose answer is
    // wrong in a new way each time. Each get ends without a result, counted.
    let raw_addr = raw.addr.to_string();
    let answers = [
        BadAnswer::WrongKind,
        BadAnswer::Garbage,
        BadAnswer::Truncated,
        BadAnswer::Oversized,
        BadAnswer::Nothing,
        BadAnswer::InvalidRecord,
    ];
    for (i, bad) in answers.into_iter().enumerate() {
        let before = target.stats();
        let _: serde_json::Value = target.call(Command::AddAddress {
            peer: raw_id.clone(),
            address: raw_addr.clone(),
        });
        raw.script.lock().unwrap().push_back(bad);
        let mark = target.mark();
        let id = 1000 + i as u64;
        assert_eq!(target.get(id), None, "{bad:?}");
        assert!(raw.script.lock().unwrap().is_empty(), "{bad:?}: asked");
        let after = target.stats();
        match bad {
            BadAnswer::WrongKind => {
                assert_eq!(after.mismatched_responses, before.mismatched_responses + 1);
            }
            BadAnswer::InvalidRecord => {
                assert_eq!(after.invalid_records, before.invalid_records + 1);
                let key = message_key(id);
                target.expect_event_since(mark, "invalid record reported", |e| {
                    matches!(e, Event::InvalidRecord { peer, key: k, .. }
                        if *peer == raw_id && *k == key)
                    .then_some(())
                });
            }
            _ => assert_eq!(
                after.requests_failed,
                before.requests_failed + 1,
                "{bad:?}: {after:?}"
            ),
        }
    }

    // 5. Nothing was lost and the node still serves a well-behaved node.
    let held = target.get(1).expect("still held");
    assert_eq!(held.record, original);
    assert_eq!((held.source, held.origin), (None, writer.peer_id.clone()));
    assert_eq!(target.get(2).expect("still held").record, own);
    assert_eq!(target.get(7), None);
    let local: Vec<Message> = target.call(Command::LocalMessages { limit: 10 });
    assert_eq!(local, vec![own]);
    let later = message(3, "after the noise");
    let put: PutReply = writer.call(Command::Put {
        message: later.clone(),
    });
    assert_eq!(put.quorum_error, None, "{put:?}");
    let (key, writer_id) = (message_key(3), writer.peer_id.clone());
    target.expect_event("the new record stored", |e| {
        matches!(e, Event::RecordStored { key: k, from } if *k == key && *from == writer_id)
            .then_some(())
    });
    let got = target.get(3).expect("stored by the put");
    assert_eq!((got.record, got.origin), (later, writer.peer_id.clone()));
    assert_eq!(writer.get(1).expect("served").record, original);
    let final_stats: StatsReply = target.stats();
    assert_eq!(final_stats.inbound_rejected, 3, "{final_stats:?}");
}

per_runtime!(a_node_survives_bad_input_and_keeps_its_records);
