//! The wire codec of the libp2p Kademlia protocol: `dht.proto` messages with an
//! unsigned-varint length prefix, so that stock libp2p kad nodes (rust, go, js) interoperate.
//!
//! Decoding never panics: any byte string gives a message or a [`DecodeError`]. Frames are
//! bounded by [`Codec::max_message_size`] before anything is allocated, and lists inside a
//! message by [`MAX_PEERS_PER_MESSAGE`] and [`MAX_ADDRS_PER_PEER`]. Peer entries with a
//! malformed id, and addresses of a bad length, are skipped (as libp2p does) rather than
//! failing the whole message; a malformed record or key fails it.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use prost::Message as _;

use crate::key::{RecordKey, RecordKeyError};
use crate::message::{ConnectionType, MessageKind, PeerInfo, Request, Response, WireRecord};
use crate::peer::{Address, PeerId, PeerIdError};

/// Default protocol name of Netabase's Kademlia.
pub const DEFAULT_PROTOCOL_NAME: &str = "/netabase/kad/1.0.0";
/// The protocol name of the public IPFS DHT, selectable for interoperability.
pub const IPFS_PROTOCOL_NAME: &str = "/ipfs/kad/1.0.0";
/// Default bound on one framed message (payload bytes).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 128 * 1024;
/// Most peers accepted in one list of a message.
pub const MAX_PEERS_PER_MESSAGE: usize = 256;
/// Most addresses accepted for one peer.
pub const MAX_ADDRS_PER_PEER: usize = 64;

/// The protobuf structures of `dht.proto` (proto3).
mod pb {
    use alloc::string::String;
    use alloc::vec::Vec;

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Record {
        #[prost(bytes = "vec", tag = "1")]
        pub(super) key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub(super) value: Vec<u8>,
        #[prost(string, tag = "5")]
        pub(super) time_received: String,
        #[prost(bytes = "vec", tag = "666")]
        pub(super) publisher: Vec<u8>,
        #[prost(uint32, tag = "777")]
        pub(super) ttl: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Peer {
        #[prost(bytes = "vec", tag = "1")]
        pub(super) id: Vec<u8>,
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub(super) addrs: Vec<Vec<u8>>,
        #[prost(int32, tag = "3")]
        pub(super) connection: i32,
        #[prost(bytes = "vec", optional, tag = "4")]
        pub(super) public_key: Option<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Message {
        #[prost(int32, tag = "1")]
        pub(super) r#type: i32,
        #[prost(int32, tag = "10")]
        pub(super) cluster_level_raw: i32,
        #[prost(bytes = "vec", tag = "2")]
        pub(super) key: Vec<u8>,
        #[prost(message, optional, tag = "3")]
        pub(super) record: Option<Record>,
        #[prost(message, repeated, tag = "8")]
        pub(super) closer_peers: Vec<Peer>,
        #[prost(message, repeated, tag = "9")]
        pub(super) provider_peers: Vec<Peer>,
    }

    pub(super) const PUT_VALUE: i32 = 0;
    pub(super) const GET_VALUE: i32 = 1;
    pub(super) const ADD_PROVIDER: i32 = 2;
    pub(super) const GET_PROVIDERS: i32 = 3;
    pub(super) const FIND_NODE: i32 = 4;
    pub(super) const PING: i32 = 5;
}

/// Why bytes could not be decoded as a Kademlia message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The length prefix announces more than the allowed maximum.
    #[error("message of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced size.
        size: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The length prefix is not a valid unsigned varint.
    #[error("malformed length prefix")]
    LengthPrefix,
    /// The protobuf encoding is malformed.
    #[error("malformed protobuf: {0}")]
    Protobuf(String),
    /// The message type field holds an unknown value.
    #[error("unknown message type {0}")]
    UnknownType(i32),
    /// A field the message type requires is absent.
    #[error("{kind:?} message lacks its {field}")]
    MissingField {
        /// The message type.
        kind: MessageKind,
        /// The missing field.
        field: &'static str,
    },
    /// A key is longer than allowed.
    #[error(transparent)]
    Key(#[from] RecordKeyError),
    /// A peer id that must be valid (a record publisher or a provider) is not.
    #[error("invalid peer id: {0}")]
    PeerId(#[from] PeerIdError),
    /// A list is longer than allowed.
    #[error("{what} has {count} entries, more than the limit of {max}")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// How many it has.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// Encodes and decodes framed Kademlia messages under a size bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    /// Largest payload accepted or produced, in bytes (excluding the length prefix).
    pub max_message_size: usize,
}

impl Default for Codec {
    fn default() -> Self {
        Codec {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

/// Outcome of looking for one frame at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole frame: its payload and the number of buffer bytes it took (prefix included).
    Complete {
        /// The payload bytes.
        payload: &'a [u8],
        /// Bytes consumed from the buffer.
        consumed: usize,
    },
    /// More bytes are needed; at least this many in total.
    Incomplete {
        /// Total buffer length needed, when known from the prefix.
        needed: Option<usize>,
    },
}

impl Codec {
    /// A codec with the given payload bound.
    pub fn new(max_message_size: usize) -> Self {
        Codec { max_message_size }
    }

    /// Splits one length-prefixed frame off the front of `buf`.
    pub fn read_frame<'a>(&self, buf: &'a [u8]) -> Result<Frame<'a>, DecodeError> {
        let mut len: u64 = 0;
        for i in 0..10 {
            let Some(&b) = buf.get(i) else {
                return Ok(Frame::Incomplete { needed: None });
            };
            len |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                let size = usize::try_from(len).unwrap_or(usize::MAX);
                if size > self.max_message_size {
                    return Err(DecodeError::TooLarge {
                        size,
                        max: self.max_message_size,
                    });
                }
                let start = i + 1;
                let end = start + size;
                if buf.len() < end {
                    return Ok(Frame::Incomplete { needed: Some(end) });
                }
                return Ok(Frame::Complete {
                    payload: &buf[start..end],
                    consumed: end,
                });
            }
            if i == 9 {
                break;
            }
        }
        Err(DecodeError::LengthPrefix)
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 5);
        let mut n = payload.len() as u64;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend_from_slice(payload);
        out
    }

    /// Encodes a request as one length-prefixed frame.
    pub fn encode_request(&self, request: &Request) -> Vec<u8> {
        Self::frame(&request_to_pb(request).encode_to_vec())
    }

    /// Encodes a response as one length-prefixed frame.
    pub fn encode_response(&self, response: &Response) -> Vec<u8> {
        Self::frame(&response_to_pb(response).encode_to_vec())
    }

    /// Decodes a request from a frame's payload (without the length prefix).
    pub fn decode_request(&self, payload: &[u8]) -> Result<Request, DecodeError> {
        self.check_size(payload)?;
        let msg = pb::Message::decode(payload).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
        request_from_pb(msg)
    }

    /// Decodes a response from a frame's payload (without the length prefix).
    pub fn decode_response(&self, payload: &[u8]) -> Result<Response, DecodeError> {
        self.check_size(payload)?;
        let msg = pb::Message::decode(payload).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
        response_from_pb(msg)
    }

    fn check_size(&self, payload: &[u8]) -> Result<(), DecodeError> {
        if payload.len() > self.max_message_size {
            return Err(DecodeError::TooLarge {
                size: payload.len(),
                max: self.max_message_size,
            });
        }
        Ok(())
    }
}

use alloc::string::ToString;

fn connection_to_pb(c: ConnectionType) -> i32 {
    match c {
        ConnectionType::NotConnected => 0,
        ConnectionType::Connected => 1,
        ConnectionType::CanConnect => 2,
        ConnectionType::CannotConnect => 3,
    }
}

fn connection_from_pb(c: i32) -> ConnectionType {
    match c {
        1 => ConnectionType::Connected,
        2 => ConnectionType::CanConnect,
        3 => ConnectionType::CannotConnect,
        _ => ConnectionType::NotConnected,
    }
}

fn peer_to_pb(p: &PeerInfo) -> pb::Peer {
    pb::Peer {
        id: p.id.to_bytes(),
        addrs: p.addrs.iter().map(|a| a.as_bytes().to_vec()).collect(),
        connection: connection_to_pb(p.connection),
        public_key: None,
    }
}

fn peer_from_pb(p: pb::Peer) -> Result<PeerInfo, DecodeError> {
    let id = PeerId::from_bytes(&p.id)?;
    if p.addrs.len() > MAX_ADDRS_PER_PEER {
        return Err(DecodeError::TooMany {
            what: "peer addresses",
            count: p.addrs.len(),
            max: MAX_ADDRS_PER_PEER,
        });
    }
    let addrs = p
        .addrs
        .iter()
        .filter_map(|a| Address::from_bytes(a).ok())
        .collect();
    Ok(PeerInfo {
        id,
        addrs,
        connection: connection_from_pb(p.connection),
    })
}

/// Decodes a list of peers, skipping entries whose id is malformed.
fn peers_from_pb(peers: Vec<pb::Peer>, what: &'static str) -> Result<Vec<PeerInfo>, DecodeError> {
    if peers.len() > MAX_PEERS_PER_MESSAGE {
        return Err(DecodeError::TooMany {
            what,
            count: peers.len(),
            max: MAX_PEERS_PER_MESSAGE,
        });
    }
    let mut out = Vec::with_capacity(peers.len());
    for p in peers {
        match peer_from_pb(p) {
            Ok(info) => out.push(info),
            Err(DecodeError::PeerId(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn record_to_pb(r: &WireRecord) -> pb::Record {
    pb::Record {
        key: r.key.as_bytes().to_vec(),
        value: r.value.clone(),
        time_received: String::new(),
        publisher: r.publisher.map(|p| p.to_bytes()).unwrap_or_default(),
        ttl: r.ttl_secs.unwrap_or(0),
    }
}

fn record_from_pb(r: pb::Record) -> Result<WireRecord, DecodeError> {
    let publisher = if r.publisher.is_empty() {
        None
    } else {
        Some(PeerId::from_bytes(&r.publisher)?)
    };
    Ok(WireRecord {
        key: RecordKey::new(&r.key)?,
        value: r.value,
        publisher,
        ttl_secs: (r.ttl > 0).then_some(r.ttl),
    })
}

fn empty(kind: i32) -> pb::Message {
    pb::Message {
        r#type: kind,
        ..Default::default()
    }
}

fn request_to_pb(req: &Request) -> pb::Message {
    match req {
        Request::FindNode { key } => pb::Message {
            key: key.as_bytes().to_vec(),
            ..empty(pb::FIND_NODE)
        },
        Request::GetValue { key } => pb::Message {
            key: key.as_bytes().to_vec(),
            ..empty(pb::GET_VALUE)
        },
        Request::PutValue { record } => pb::Message {
            key: record.key.as_bytes().to_vec(),
            record: Some(record_to_pb(record)),
            ..empty(pb::PUT_VALUE)
        },
        Request::GetProviders { key } => pb::Message {
            key: key.as_bytes().to_vec(),
            ..empty(pb::GET_PROVIDERS)
        },
        Request::AddProvider { key, provider } => pb::Message {
            key: key.as_bytes().to_vec(),
            provider_peers: alloc::vec![peer_to_pb(provider)],
            ..empty(pb::ADD_PROVIDER)
        },
        Request::Ping => empty(pb::PING),
    }
}

fn request_from_pb(msg: pb::Message) -> Result<Request, DecodeError> {
    Ok(match msg.r#type {
        pb::FIND_NODE => Request::FindNode {
            key: RecordKey::new(&msg.key)?,
        },
        pb::GET_VALUE => Request::GetValue {
            key: RecordKey::new(&msg.key)?,
        },
        pb::PUT_VALUE => {
            let record = msg.record.ok_or(DecodeError::MissingField {
                kind: MessageKind::PutValue,
                field: "record",
            })?;
            Request::PutValue {
                record: Box::new(record_from_pb(record)?),
            }
        }
        pb::GET_PROVIDERS => Request::GetProviders {
            key: RecordKey::new(&msg.key)?,
        },
        pb::ADD_PROVIDER => {
            if msg.provider_peers.len() > MAX_PEERS_PER_MESSAGE {
                return Err(DecodeError::TooMany {
                    what: "provider peers",
                    count: msg.provider_peers.len(),
                    max: MAX_PEERS_PER_MESSAGE,
                });
            }
            // The announcing peer lists itself; a first entry that does not parse is an error.
            let provider =
                msg.provider_peers
                    .into_iter()
                    .next()
                    .ok_or(DecodeError::MissingField {
                        kind: MessageKind::AddProvider,
                        field: "provider peer",
                    })?;
            Request::AddProvider {
                key: RecordKey::new(&msg.key)?,
                provider: Box::new(peer_from_pb(provider)?),
            }
        }
        pb::PING => Request::Ping,
        other => return Err(DecodeError::UnknownType(other)),
    })
}

fn response_to_pb(resp: &Response) -> pb::Message {
    match resp {
        Response::FindNode { closer_peers } => pb::Message {
            closer_peers: closer_peers.iter().map(peer_to_pb).collect(),
            ..empty(pb::FIND_NODE)
        },
        Response::GetValue {
            record,
            closer_peers,
        } => pb::Message {
            key: record
                .as_ref()
                .map(|r| r.key.as_bytes().to_vec())
                .unwrap_or_default(),
            record: record.as_deref().map(record_to_pb),
            closer_peers: closer_peers.iter().map(peer_to_pb).collect(),
            ..empty(pb::GET_VALUE)
        },
        Response::PutValue { key, value } => pb::Message {
            key: key.as_bytes().to_vec(),
            record: Some(pb::Record {
                key: key.as_bytes().to_vec(),
                value: value.clone(),
                ..Default::default()
            }),
            ..empty(pb::PUT_VALUE)
        },
        Response::GetProviders {
            closer_peers,
            provider_peers,
        } => pb::Message {
            closer_peers: closer_peers.iter().map(peer_to_pb).collect(),
            provider_peers: provider_peers.iter().map(peer_to_pb).collect(),
            ..empty(pb::GET_PROVIDERS)
        },
        Response::Pong => empty(pb::PING),
    }
}

fn response_from_pb(msg: pb::Message) -> Result<Response, DecodeError> {
    Ok(match msg.r#type {
        pb::FIND_NODE => Response::FindNode {
            closer_peers: peers_from_pb(msg.closer_peers, "closer peers")?,
        },
        pb::GET_VALUE => Response::GetValue {
            record: msg
                .record
                .map(|r| record_from_pb(r).map(Box::new))
                .transpose()?,
            closer_peers: peers_from_pb(msg.closer_peers, "closer peers")?,
        },
        pb::PUT_VALUE => {
            let record = msg.record.ok_or(DecodeError::MissingField {
                kind: MessageKind::PutValue,
                field: "record",
            })?;
            Response::PutValue {
                key: RecordKey::new(&record.key)?,
                value: record.value,
            }
        }
        pb::GET_PROVIDERS => Response::GetProviders {
            closer_peers: peers_from_pb(msg.closer_peers, "closer peers")?,
            provider_peers: peers_from_pb(msg.provider_peers, "provider peers")?,
        },
        pb::PING => Response::Pong,
        pb::ADD_PROVIDER => return Err(DecodeError::UnknownType(pb::ADD_PROVIDER)),
        other => return Err(DecodeError::UnknownType(other)),
    })
}
