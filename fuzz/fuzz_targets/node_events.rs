//! Arbitrary sequences of network input, API calls and timeouts fed to one node: it never
//! panics and its invariants and bounds hold after every step.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use netabase_core::wire::Codec;
use netabase_core::{
    Address, Config, InboundId, Instant, MemoryStore, MemoryStoreConfig, Mode, Node, Output,
    PeerId, Quorum, Record, RecordKey, RequestFailure, RequestId,
};

#[derive(Arbitrary, Debug)]
enum Op {
    AddAddress {
        peer: u8,
    },
    RemovePeer {
        peer: u8,
    },
    Connected {
        peer: u8,
    },
    Disconnected {
        peer: u8,
    },
    Identified {
        peer: u8,
        serves: bool,
    },
    /// Raw bytes from a peer, decoded as a request.
    Inbound {
        peer: u8,
        bytes: Vec<u8>,
    },
    /// Raw bytes as the answer to one of the outstanding requests.
    Answer {
        pick: u8,
        bytes: Vec<u8>,
    },
    Fail {
        pick: u8,
        dial: bool,
    },
    Sent {
        pick: u8,
    },
    Advance {
        millis: u32,
    },
    GetClosest {
        key: u8,
    },
    Put {
        key: u8,
        len: u16,
    },
    Get {
        key: u8,
    },
    Provide {
        key: u8,
    },
    GetProviders {
        key: u8,
    },
    Bootstrap,
    FindPeer {
        peer: u8,
    },
    SetMode {
        client: bool,
    },
}

fn peer(n: u8) -> PeerId {
    PeerId::from_seed(u64::from(n) + 1)
}

fn key(n: u8) -> RecordKey {
    RecordKey::new(&[n]).expect("short key")
}

fuzz_target!(|ops: Vec<Op>| {
    let local = PeerId::from_seed(0);
    let config = Config {
        k: 4,
        alpha: 2,
        max_queries: 16,
        ..Config::default()
    };
    let store_config = MemoryStoreConfig {
        max_records: 8,
        max_provided_keys: 4,
        max_providers_per_key: 3,
        ..MemoryStoreConfig::default()
    };
    let mut now = Instant::from_millis(1);
    let mut node = Node::new(
        config,
        local,
        MemoryStore::with_config(local, store_config),
        7,
        now,
    )
    .expect("a valid configuration");
    let codec = Codec::default();
    let mut outstanding: Vec<RequestId> = Vec::new();
    let mut inbound = 0u64;
    for op in ops.into_iter().take(512) {
        match op {
            Op::AddAddress { peer: p } => {
                node.add_address(now, peer(p), Address::from_bytes(&[p, 1]).unwrap());
            }
            Op::RemovePeer { peer: p } => {
                node.remove_peer(now, &peer(p));
            }
            Op::Connected { peer: p } => node.handle_connection_established(now, peer(p)),
            Op::Disconnected { peer: p } => node.handle_connection_closed(now, peer(p)),
            Op::Identified { peer: p, serves } => node.handle_peer_identified(
                now,
                peer(p),
                &[Address::from_bytes(&[p, 2]).unwrap()],
                serves,
            ),
            Op::Inbound { peer: p, bytes } => {
                if let Ok(request) = codec.decode_request(&bytes) {
                    inbound += 1;
                    node.handle_request(now, peer(p), InboundId(inbound), request);
                }
            }
            Op::Answer { pick, bytes } => {
                if !outstanding.is_empty() {
                    let id = outstanding[usize::from(pick) % outstanding.len()];
                    match codec.decode_response(&bytes) {
                        Ok(response) => node.handle_response(now, id, response),
                        Err(_) => node.handle_request_failed(now, id, RequestFailure::Io),
                    }
                }
            }
            Op::Fail { pick, dial } => {
                if !outstanding.is_empty() {
                    let id = outstanding[usize::from(pick) % outstanding.len()];
                    let failure = if dial {
                        RequestFailure::Dial
                    } else {
                        RequestFailure::UnsupportedProtocol
                    };
                    node.handle_request_failed(now, id, failure);
                }
            }
            Op::Sent { pick } => {
                if !outstanding.is_empty() {
                    let id = outstanding[usize::from(pick) % outstanding.len()];
                    node.handle_request_sent(now, id);
                }
            }
            Op::Advance { millis } => {
                now += Duration::from_millis(u64::from(millis));
                node.handle_timeout(now);
            }
            Op::GetClosest { key: k } => {
                let _ = node.get_closest_peers(now, key(k));
            }
            Op::Put { key: k, len } => {
                let record = Record::new(key(k), vec![k; usize::from(len)]);
                let _ = node.put_record(now, record, Quorum::One);
            }
            Op::Get { key: k } => {
                let _ = node.get_record(now, key(k), Quorum::N(2));
            }
            Op::Provide { key: k } => {
                let _ = node.start_providing(now, key(k));
            }
            Op::GetProviders { key: k } => {
                let _ = node.get_providers(now, key(k));
            }
            Op::Bootstrap => {
                let _ = node.bootstrap(now);
            }
            Op::FindPeer { peer: p } => {
                let _ = node.find_peer(now, peer(p));
            }
            Op::SetMode { client } => {
                node.set_mode(if client { Mode::Client } else { Mode::Server })
            }
        }
        while let Some(out) = node.poll_output() {
            if let Output::SendRequest { id, .. } = out {
                outstanding.push(id);
            }
        }
        if outstanding.len() > 256 {
            outstanding.drain(..128);
        }
        if let Err(violation) = node.check_invariants() {
            panic!("invariant violated: {violation}");
        }
        if let Some(t) = node.poll_timeout() {
            assert!(t > Instant::ZERO);
        }
    }
});
