//! The error type of the Netabase handle.

use netabase_core::model::{EnvelopeError, ModelError};
use netabase_core::{ApiError, QueryError};

/// Everything a [`Netabase`](crate::Netabase) operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetabaseError {
    /// The operation needs the network, and the swarm is not started.
    #[error("the swarm is not running (call start_swarm first)")]
    NotRunning,
    /// The swarm is already running.
    #[error("the swarm is already running")]
    AlreadyRunning,
    /// The swarm was stopped (or is stopping) before the operation finished.
    #[error("the swarm was stopped")]
    Stopped,
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] netabase_store::StoreError),
    /// The DHT record store failed.
    #[error("DHT record store: {0}")]
    RecordStore(#[from] netabase_core::StoreError),
    /// The node refused to start the query.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The query ran but did not succeed.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// A model value or key could not be encoded or decoded.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A record fetched from the network is not a valid typed record.
    #[error("invalid record: {0}")]
    InvalidRecord(#[from] EnvelopeError),
    /// A consensus operation failed.
    #[error(transparent)]
    Consensus(#[from] crate::consensus::ConsensusError),
    /// The record under the key holds another model than the one asked for.
    #[error("the record holds model {found}, not the requested model")]
    WrongModel {
        /// The model id found in the record.
        found: u16,
    },
    /// The identity key in the data directory could not be read or written.
    #[error("identity key at {path}: {reason}")]
    Identity {
        /// The key file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The network stack (transports, mDNS) could not be built.
    #[error(transparent)]
    Build(#[from] crate::runtime::BuildError),
    /// A listen address was refused.
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// The address.
        address: libp2p::Multiaddr,
        /// Why.
        reason: String,
    },
    /// A listen address needs a transport the node's runtime does not offer (QUIC on
    /// async-std or smol, WebSocket anywhere, ...); `start_swarm` fails and the node
    /// does not start.
    #[error(
        "cannot listen on {address}: the {runtime} runtime has no transport for this address \
         (it listens on {})",
        transport_list(supported)
    )]
    UnsupportedListenAddress {
        /// The address.
        address: libp2p::Multiaddr,
        /// The runtime's name ([`Runtime::NAME`](crate::Runtime::NAME)).
        runtime: &'static str,
        /// The transports the runtime offers ([`Runtime::TRANSPORTS`](crate::Runtime::TRANSPORTS)).
        supported: &'static [crate::runtime::TransportKind],
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A setting of [`NetabaseConfig`](crate::NetabaseConfig) or of its Kademlia core's
    /// configuration is out of range or contradicts another (the error names the field).
    #[error("invalid configuration: {0}")]
    InvalidConfig(#[from] netabase_core::ConfigError),
    /// An I/O error (creating the data directory).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `TCP and QUIC`, `TCP`, ...
fn transport_list(kinds: &[crate::runtime::TransportKind]) -> String {
    match kinds {
        [] => "no transport".to_string(),
        [one] => one.name().to_string(),
        [init @ .., last] => {
            let init: Vec<&str> = init.iter().map(|k| k.name()).collect();
            format!("{} and {}", init.join(", "), last.name())
        }
    }
}
