//! Kademlia requests and responses as the core sees them: validated, typed values.
//!
//! [`crate::wire`] converts them to and from the bytes of libp2p's `dht.proto`.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::key::RecordKey;
use crate::peer::{Addresses, PeerId};

/// What a sender knows about its connection to a peer it lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum ConnectionType {
    /// No connection and no extra information.
    #[default]
    NotConnected,
    /// A live connection.
    Connected,
    /// Recently connected.
    CanConnect,
    /// Recently failed to connect despite trying.
    CannotConnect,
}

/// A peer as listed in a message: its id, addresses and connection hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer.
    pub id: PeerId,
    /// Its addresses.
    pub addrs: Addresses,
    /// What the sender knows about its connection to the peer.
    pub connection: ConnectionType,
}

/// A record as carried on the wire: its lifetime is relative (seconds left), since peers do
/// not share a clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireRecord {
    /// The record key.
    pub key: RecordKey,
    /// The value.
    pub value: Vec<u8>,
    /// The original publisher, if the sender knows it.
    pub publisher: Option<PeerId>,
    /// Seconds until the record expires, if it expires.
    pub ttl_secs: Option<u32>,
}

/// The kind of a request, for matching responses and counting messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MessageKind {
    /// FIND_NODE.
    FindNode,
    /// GET_VALUE.
    GetValue,
    /// PUT_VALUE.
    PutValue,
    /// GET_PROVIDERS.
    GetProviders,
    /// ADD_PROVIDER.
    AddProvider,
    /// PING.
    Ping,
}

/// A Kademlia request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Asks for the peers closest to the SHA-256 of `key`.
    FindNode {
        /// The preimage of the target (a peer id's bytes or a record key).
        key: RecordKey,
    },
    /// Asks for the record under `key`, and closer peers.
    GetValue {
        /// The record key.
        key: RecordKey,
    },
    /// Asks the peer to store a record.
    PutValue {
        /// The record (boxed: requests are moved often, and most are small).
        record: Box<WireRecord>,
    },
    /// Asks for providers of `key`, and closer peers.
    GetProviders {
        /// The key.
        key: RecordKey,
    },
    /// Announces that `provider` provides `key`. Has no response.
    AddProvider {
        /// The key.
        key: RecordKey,
        /// The provider (must be the sender; boxed like [`Request::PutValue`]'s record).
        provider: Box<PeerInfo>,
    },
    /// Liveness check (deprecated in the libp2p spec, still answered).
    Ping,
}

impl Request {
    /// The kind of this request.
    pub fn kind(&self) -> MessageKind {
        match self {
            Request::FindNode { .. } => MessageKind::FindNode,
            Request::GetValue { .. } => MessageKind::GetValue,
            Request::PutValue { .. } => MessageKind::PutValue,
            Request::GetProviders { .. } => MessageKind::GetProviders,
            Request::AddProvider { .. } => MessageKind::AddProvider,
            Request::Ping => MessageKind::Ping,
        }
    }

    /// Whether the receiver answers this request. ADD_PROVIDER is one-way.
    pub fn expects_response(&self) -> bool {
        !matches!(self, Request::AddProvider { .. })
    }
}

/// A Kademlia response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Answer to FIND_NODE.
    FindNode {
        /// Peers closer to the target, as far as the responder knows.
        closer_peers: Vec<PeerInfo>,
    },
    /// Answer to GET_VALUE.
    GetValue {
        /// The record, if the responder has it (boxed: responses are moved often, and
        /// most carry none).
        record: Option<Box<WireRecord>>,
        /// Peers closer to the key.
        closer_peers: Vec<PeerInfo>,
    },
    /// Answer to PUT_VALUE: the stored key and value echoed back.
    PutValue {
        /// The key stored.
        key: RecordKey,
        /// The value stored.
        value: Vec<u8>,
    },
    /// Answer to GET_PROVIDERS.
    GetProviders {
        /// Peers closer to the key.
        closer_peers: Vec<PeerInfo>,
        /// Known providers of the key.
        provider_peers: Vec<PeerInfo>,
    },
    /// Answer to PING.
    Pong,
}

impl Response {
    /// The kind of request this response answers.
    pub fn kind(&self) -> MessageKind {
        match self {
            Response::FindNode { .. } => MessageKind::FindNode,
            Response::GetValue { .. } => MessageKind::GetValue,
            Response::PutValue { .. } => MessageKind::PutValue,
            Response::GetProviders { .. } => MessageKind::GetProviders,
            Response::Pong => MessageKind::Ping,
        }
    }
}
