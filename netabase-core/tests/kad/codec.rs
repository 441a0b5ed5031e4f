//! The Kademlia wire codec: round trips, framing and hostile bytes.

use netabase_core::message::WireRecord;
use netabase_core::wire::{Codec, DecodeError, Frame};
use netabase_core::{Address, ConnectionType, PeerId, PeerInfo, RecordKey, Request, Response};
use proptest::prelude::*;

fn peer_id() -> impl Strategy<Value = PeerId> {
    prop_oneof![
        any::<[u8; 32]>().prop_map(PeerId::from_sha256_digest),
        // Identity multihashes, as Ed25519 peer ids are.
        prop::collection::vec(any::<u8>(), 1..=40).prop_map(|key| {
            let mut bytes = vec![0x00, key.len() as u8];
            bytes.extend(key);
            PeerId::from_bytes(&bytes).unwrap()
        }),
    ]
}

fn record_key() -> impl Strategy<Value = RecordKey> {
    prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| RecordKey::new(&b).unwrap())
}

fn connection() -> impl Strategy<Value = ConnectionType> {
    prop_oneof![
        Just(ConnectionType::NotConnected),
        Just(ConnectionType::Connected),
        Just(ConnectionType::CanConnect),
        Just(ConnectionType::CannotConnect),
    ]
}

fn peer_info() -> impl Strategy<Value = PeerInfo> {
    (
        peer_id(),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..4),
        connection(),
    )
        .prop_map(|(id, addrs, connection)| PeerInfo {
            id,
            addrs: addrs
                .iter()
                .map(|a| Address::from_bytes(a).unwrap())
                .collect(),
            connection,
        })
}

fn wire_record() -> impl Strategy<Value = WireRecord> {
    (
        record_key(),
        prop::collection::vec(any::<u8>(), 0..256),
        prop::option::of(peer_id()),
        prop::option::of(1u32..),
    )
        .prop_map(|(key, value, publisher, ttl_secs)| WireRecord {
            key,
            value,
            publisher,
            ttl_secs,
        })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        record_key().prop_map(|key| Request::FindNode { key }),
        record_key().prop_map(|key| Request::GetValue { key }),
        wire_record().prop_map(|record| Request::PutValue {
            record: Box::new(record),
        }),
        record_key().prop_map(|key| Request::GetProviders { key }),
        (record_key(), peer_info()).prop_map(|(key, provider)| Request::AddProvider {
            key,
            provider: Box::new(provider),
        }),
        Just(Request::Ping),
    ]
}

fn peers() -> impl Strategy<Value = Vec<PeerInfo>> {
    prop::collection::vec(peer_info(), 0..25)
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        peers().prop_map(|closer_peers| Response::FindNode { closer_peers }),
        (prop::option::of(wire_record()), peers()).prop_map(|(record, closer_peers)| {
            Response::GetValue {
                record: record.map(Box::new),
                closer_peers,
            }
        }),
        (record_key(), prop::collection::vec(any::<u8>(), 0..256))
            .prop_map(|(key, value)| Response::PutValue { key, value }),
        (peers(), peers()).prop_map(|(closer_peers, provider_peers)| Response::GetProviders {
            closer_peers,
            provider_peers
        }),
        Just(Response::Pong),
    ]
}

fn payload(frame: &[u8]) -> &[u8] {
    match Codec::default().read_frame(frame).unwrap() {
        Frame::Complete { payload, consumed } => {
            assert_eq!(consumed, frame.len());
            payload
        }
        Frame::Incomplete { .. } => panic!("incomplete frame"),
    }
}

proptest! {
    #[test]
    fn every_request_round_trips(req in request()) {
        let codec = Codec::default();
        let frame = codec.encode_request(&req);
        prop_assert_eq!(codec.decode_request(payload(&frame)).unwrap(), req);
    }

    #[test]
    fn every_response_round_trips(resp in response()) {
        let codec = Codec::default();
        let frame = codec.encode_response(&resp);
        prop_assert_eq!(codec.decode_response(payload(&frame)).unwrap(), resp);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let codec = Codec::new(1024);
        let _ = codec.decode_request(&bytes);
        let _ = codec.decode_response(&bytes);
        if let Ok(Frame::Complete { payload, consumed }) = codec.read_frame(&bytes) {
            prop_assert!(consumed <= bytes.len());
            prop_assert!(payload.len() <= 1024);
        }
    }

    #[test]
    fn frames_split_anywhere_reassemble(req in request(), cut in any::<prop::sample::Index>()) {
        let codec = Codec::default();
        let frame = codec.encode_request(&req);
        let cut = cut.index(frame.len());
        let incomplete = matches!(codec.read_frame(&frame[..cut]).unwrap(), Frame::Incomplete { .. });
        prop_assert!(incomplete);
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        let Frame::Complete { consumed, .. } = codec.read_frame(&two).unwrap() else { panic!() };
        prop_assert_eq!(consumed, frame.len());
    }
}

#[test]
fn oversized_frames_are_refused_before_reading_the_body() {
    let codec = Codec::new(100);
    // Announces 1 MiB; only the prefix is present.
    let prefix = [0x80, 0x80, 0x40];
    assert_eq!(
        codec.read_frame(&prefix),
        Err(DecodeError::TooLarge {
            size: 1 << 20,
            max: 100
        })
    );
    assert_eq!(
        codec.read_frame(&[0xff; 11]),
        Err(DecodeError::LengthPrefix)
    );
    assert_eq!(
        codec.decode_request(&[0u8; 101]),
        Err(DecodeError::TooLarge {
            size: 101,
            max: 100
        })
    );
}

#[test]
fn malformed_peers_are_skipped_and_bad_fields_are_typed_errors() {
    let codec = Codec::default();
    let good = PeerInfo {
        id: PeerId::from_seed(1),
        addrs: vec![].into(),
        connection: ConnectionType::Connected,
    };
    let resp = Response::FindNode {
        closer_peers: vec![good.clone()],
    };
    let mut bytes = payload(&codec.encode_response(&resp)).to_vec();
    // Append a closerPeers entry (field 8) whose id (field 1) is garbage.
    bytes.extend_from_slice(&[0x42, 0x05, 0x0a, 0x03, 0xff, 0xff, 0xff]);
    assert_eq!(
        codec.decode_response(&bytes),
        Ok(Response::FindNode {
            closer_peers: vec![good]
        })
    );

    // Unknown message type.
    assert_eq!(
        codec.decode_request(&[0x08, 0x09]),
        Err(DecodeError::UnknownType(9))
    );
    // PUT_VALUE without a record.
    assert!(matches!(
        codec.decode_request(&[0x08, 0x00]),
        Err(DecodeError::MissingField { .. })
    ));
    // A key over the limit.
    let mut long_key = vec![0x08, 0x01, 0x12, 0x81, 0x08];
    long_key.extend(std::iter::repeat_n(0u8, 1025));
    assert!(matches!(
        codec.decode_request(&long_key),
        Err(DecodeError::Key(_))
    ));
    // Truncated protobuf.
    assert!(matches!(
        codec.decode_request(&[0x12, 0x05, 0x01]),
        Err(DecodeError::Protobuf(_))
    ));
}
