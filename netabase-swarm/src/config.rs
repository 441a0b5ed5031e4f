//! Configuration of a Netabase node.

use std::path::PathBuf;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use netabase_core::wire::{DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_PROTOCOL_NAME, IPFS_PROTOCOL_NAME};
use netabase_core::{Mode, Quorum};
use netabase_store::RecordStoreConfig;

use crate::guard::InboundLimits;
use crate::metrics::NodeMetrics;
use crate::runtime::Runtime;

/// The default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./netabase-data";

/// Which storage engine holds the node's typed records and its DHT records (both live in
/// one database).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageBackend {
    /// redb: ACID, a commit is durable (fdatasync) when it returns. The default.
    #[default]
    Redb,
    /// sled: atomic commits, flushed before they are acknowledged (survives a process
    /// crash, not necessarily a power loss).
    Sled,
    /// Memory only: nothing is written to disk but the identity key, and the records are
    /// gone when the swarm stops (a later `start_swarm` starts empty). For tests,
    /// benchmarks and caches.
    Memory,
}

/// Which consensus engine serves a node's cluster
/// ([`Netabase::create_cluster`](crate::Netabase::create_cluster) and the calls after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Engine {
    /// The core's own Multi-Paxos member on `/paxos/1.0.0`: durable log and state in the
    /// node's database, membership changes, snapshots. The default.
    #[default]
    Core,
    /// paxakos 0.13 on `/netabase/paxakos/1.0.0` (the `paxakos` feature): heartbeats,
    /// autofill, catch-up and master leases; fixed members; promises and state in memory,
    /// a crashed node recovering from a peer's snapshot. See the `netabase_paxakos`
    /// crate for what it offers and lacks beside the core engine.
    #[cfg(feature = "paxakos")]
    Paxakos,
}

/// Connection limits of the node (libp2p's connection-limits behaviour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most established connections in all.
    pub max_established: u32,
    /// Most established connections per peer.
    pub max_established_per_peer: u32,
    /// Most connections being set up (both directions).
    pub max_pending: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_established: 256,
            max_established_per_peer: 2,
            max_pending: 64,
        }
    }
}

/// Everything a [`Netabase`](crate::Netabase) node can be told at construction.
///
/// `NetabaseConfig::default()` listens on every interface with each transport of the
/// node's runtime, on ports the system picks ([`Runtime::default_listen_addresses`]: TCP
/// and QUIC on tokio, TCP on async-std and smol), stores its data in [`DEFAULT_DATA_DIR`] with redb, runs the DHT in server mode
/// under `/netabase/kad/1.0.0` and discovers local peers with mDNS. The `with_*` methods
/// change one setting each.
#[derive(Debug, Clone)]
pub struct NetabaseConfig {
    /// Where the database and the identity key live (created if missing).
    pub data_dir: PathBuf,
    /// The storage engine.
    pub backend: StorageBackend,
    /// Addresses to listen on (`/ip4/127.0.0.1/tcp/0`, `/ip4/0.0.0.0/udp/0/quic-v1`, ...).
    /// `None`, the default: the runtime's defaults
    /// ([`Runtime::default_listen_addresses`]). `Some` of an empty list: no listener (the
    /// node only dials). An address for a transport the runtime lacks makes `start_swarm`
    /// fail with [`NetabaseError::UnsupportedListenAddress`](crate::NetabaseError::UnsupportedListenAddress).
    pub listen_addresses: Option<Vec<Multiaddr>>,
    /// The Kademlia protocol name: [`DEFAULT_PROTOCOL_NAME`] or, to join stock libp2p
    /// and IPFS peers, [`IPFS_PROTOCOL_NAME`].
    pub protocol_name: String,
    /// The Kademlia core's settings: K, alpha, timeouts, record lifetimes, job intervals,
    /// limits, and the DHT mode the node starts in.
    pub kad: netabase_core::Config,
    /// Limits of the DHT record store (records held, value size, providers).
    pub record_store: RecordStoreConfig,
    /// How many peers must store a record for a put to count as replicated.
    pub put_quorum: Quorum,
    /// How many answers a get waits for (a record in the local store counts as one).
    pub get_quorum: Quorum,
    /// Largest Kademlia message accepted or sent, in bytes.
    pub max_message_size: usize,
    /// Longest time one Kademlia stream (request and answer) may take.
    pub stream_timeout: Duration,
    /// Most Kademlia streams per connection and direction.
    pub max_streams_per_connection: usize,
    /// Connection limits.
    pub connection_limits: ConnectionLimits,
    /// Limits of what one peer, or one source address, may ask of the node: connections
    /// (checked before the Noise handshake), requests and request bytes per second,
    /// answers owed. Every refusal is counted by its reason.
    pub inbound_limits: InboundLimits,
    /// How long a connection without streams stays open.
    pub idle_connection_timeout: Duration,
    /// Whether local peers are discovered with mDNS (multicast on the local network).
    pub mdns: bool,
    /// Peers added to the routing table when the swarm starts.
    pub bootstrap_peers: Vec<(PeerId, Multiaddr)>,
    /// The node's identity. `None`: the key stored in the data directory
    /// (`identity.key`), generated (Ed25519) and stored there on first start, so the peer
    /// id survives restarts.
    pub identity: Option<Keypair>,
    /// Events kept for each subscriber; a subscriber that falls further behind loses the
    /// oldest and is told how many it missed.
    pub event_capacity: usize,
    /// Metrics the node updates (`None`, the default: none are kept). See
    /// [`NodeMetrics`] for their names.
    pub metrics: Option<NodeMetrics>,
    /// Timing and bounds of the consensus member, once the node creates or joins a
    /// cluster ([`Netabase::create_cluster`](crate::Netabase::create_cluster)).
    pub consensus: netabase_core::consensus::ConsensusConfig,
    /// The consensus engine ([`Engine::Core`] by default).
    pub engine: Engine,
    /// The paxakos engine's settings, when it is the engine.
    #[cfg(feature = "paxakos")]
    pub paxakos: netabase_paxakos::engine::EngineConfig,
}

impl Default for NetabaseConfig {
    fn default() -> Self {
        NetabaseConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            backend: StorageBackend::Redb,
            listen_addresses: None,
            protocol_name: DEFAULT_PROTOCOL_NAME.to_string(),
            kad: netabase_core::Config::default(),
            record_store: RecordStoreConfig::default(),
            put_quorum: Quorum::One,
            get_quorum: Quorum::One,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            stream_timeout: Duration::from_secs(10),
            max_streams_per_connection: 32,
            connection_limits: ConnectionLimits::default(),
            inbound_limits: InboundLimits::default(),
            idle_connection_timeout: Duration::from_secs(60),
            mdns: true,
            bootstrap_peers: Vec::new(),
            identity: None,
            event_capacity: 1024,
            metrics: None,
            consensus: netabase_core::consensus::ConsensusConfig::default(),
            engine: Engine::Core,
            #[cfg(feature = "paxakos")]
            paxakos: netabase_paxakos::engine::EngineConfig::default(),
        }
    }
}

impl NetabaseConfig {
    /// Checks every setting (the Kademlia core's with [`netabase_core::Config::validate`])
    /// and the relations between them. Starting a node runs it first.
    pub fn validate(&self) -> Result<(), netabase_core::ConfigError> {
        use netabase_core::ConfigError;
        self.kad.validate()?;
        let at_least_one = |field, value: u64| {
            if value == 0 {
                Err(ConfigError::OutOfRange {
                    field,
                    value,
                    min: 1,
                    max: u64::MAX,
                })
            } else {
                Ok(())
            }
        };
        let nonzero = |field, d: Duration| {
            if d.is_zero() {
                Err(ConfigError::Zero { field })
            } else {
                Ok(())
            }
        };
        at_least_one("event_capacity", self.event_capacity as u64)?;
        at_least_one(
            "max_streams_per_connection",
            self.max_streams_per_connection as u64,
        )?;
        at_least_one(
            "connection_limits.max_established",
            self.connection_limits.max_established.into(),
        )?;
        at_least_one(
            "connection_limits.max_established_per_peer",
            self.connection_limits.max_established_per_peer.into(),
        )?;
        at_least_one(
            "connection_limits.max_pending",
            self.connection_limits.max_pending.into(),
        )?;
        for (field, quorum) in [
            ("put_quorum", self.put_quorum),
            ("get_quorum", self.get_quorum),
        ] {
            if quorum == Quorum::N(0) {
                at_least_one(field, 0)?;
            }
        }
        nonzero("stream_timeout", self.stream_timeout)?;
        nonzero("idle_connection_timeout", self.idle_connection_timeout)?;
        if self.kad.max_record_size >= self.max_message_size {
            return Err(ConfigError::Contradiction {
                field: "kad.max_record_size",
                other: "max_message_size",
                reason: "a record that large could not be sent in one message",
            });
        }
        Ok(())
    }

    /// Keeps the database and the identity key in `data_dir`.
    pub fn with_data_dir(mut self, data_dir: impl Into<PathBuf>) -> Self {
        self.data_dir = data_dir.into();
        self
    }

    /// Uses `backend` for storage.
    pub fn with_backend(mut self, backend: StorageBackend) -> Self {
        self.backend = backend;
        self
    }

    /// Listens on exactly these addresses (none: the node only dials).
    pub fn with_listen_addresses(mut self, addrs: impl IntoIterator<Item = Multiaddr>) -> Self {
        self.listen_addresses = Some(addrs.into_iter().collect());
        self
    }

    /// Listens on the runtime's default addresses
    /// ([`Runtime::default_listen_addresses`]), as `NetabaseConfig::default()` does.
    pub fn with_default_listen_addresses(mut self) -> Self {
        self.listen_addresses = None;
        self
    }

    /// The addresses a node on runtime `R` listens on with this configuration: the
    /// configured ones, or `R`'s defaults.
    pub fn listen_addresses_on<R: Runtime>(&self) -> Vec<Multiaddr> {
        match &self.listen_addresses {
            Some(addrs) => addrs.clone(),
            None => R::default_listen_addresses(),
        }
    }

    /// Switches mDNS discovery on or off.
    pub fn with_mdns(mut self, on: bool) -> Self {
        self.mdns = on;
        self
    }

    /// Starts the DHT in `mode`.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.kad.mode = mode;
        self
    }

    /// Speaks the Kademlia protocol under `name`.
    pub fn with_protocol_name(mut self, name: impl Into<String>) -> Self {
        self.protocol_name = name.into();
        self
    }

    /// Speaks the public IPFS DHT protocol (`/ipfs/kad/1.0.0`), for stock libp2p peers.
    pub fn with_ipfs_protocol(self) -> Self {
        self.with_protocol_name(IPFS_PROTOCOL_NAME)
    }

    /// Adds a peer to join through.
    pub fn with_bootstrap_peer(mut self, peer: PeerId, addr: Multiaddr) -> Self {
        self.bootstrap_peers.push((peer, addr));
        self
    }

    /// Uses `keypair` as the node's identity instead of the stored one.
    pub fn with_identity(mut self, keypair: Keypair) -> Self {
        self.identity = Some(keypair);
        self
    }

    /// Updates `metrics` while the node runs (register them in a registry first with
    /// [`NodeMetrics::register`]).
    pub fn with_metrics(mut self, metrics: NodeMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Replaces the Kademlia core's settings.
    pub fn with_kad_config(mut self, kad: netabase_core::Config) -> Self {
        self.kad = kad;
        self
    }

    /// Sets the consensus member's settings.
    pub fn with_consensus_config(
        mut self,
        consensus: netabase_core::consensus::ConsensusConfig,
    ) -> Self {
        self.consensus = consensus;
        self
    }

    /// Chooses the consensus engine.
    pub fn with_consensus(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// Sets the paxakos engine's settings (used when it is the engine).
    #[cfg(feature = "paxakos")]
    pub fn with_paxakos_config(mut self, config: netabase_paxakos::engine::EngineConfig) -> Self {
        self.paxakos = config;
        self
    }
}

#[cfg(test)]
mod tests {
    use netabase_core::ConfigError;

    use super::*;

    #[test]
    fn invalid_settings_are_refused_with_the_field_they_name() {
        let d = NetabaseConfig::default();
        d.validate().unwrap();
        let kad = NetabaseConfig {
            kad: netabase_core::Config {
                alpha: 0,
                ..d.kad.clone()
            },
            ..d.clone()
        };
        assert!(matches!(
            kad.validate(),
            Err(ConfigError::OutOfRange { field: "alpha", .. })
        ));
        let events = NetabaseConfig {
            event_capacity: 0,
            ..d.clone()
        };
        assert!(matches!(
            events.validate(),
            Err(ConfigError::OutOfRange {
                field: "event_capacity",
                ..
            })
        ));
        let quorum = NetabaseConfig {
            get_quorum: Quorum::N(0),
            ..d.clone()
        };
        assert!(matches!(
            quorum.validate(),
            Err(ConfigError::OutOfRange {
                field: "get_quorum",
                ..
            })
        ));
        let streams = NetabaseConfig {
            stream_timeout: Duration::ZERO,
            ..d.clone()
        };
        assert_eq!(
            streams.validate(),
            Err(ConfigError::Zero {
                field: "stream_timeout"
            })
        );
        let big = NetabaseConfig {
            max_message_size: d.kad.max_record_size,
            ..d
        };
        assert!(matches!(
            big.validate(),
            Err(ConfigError::Contradiction {
                field: "kad.max_record_size",
                other: "max_message_size",
                ..
            })
        ));
    }
}
