//! The runtime-generic libp2p glue of Netabase.
//!
//! This crate binds the sans-IO protocol core ([`netabase_core`]) to a real libp2p
//! [`Swarm`](libp2p::Swarm) and offers the [`Netabase`] handle applications use:
//!
//! - a network behaviour that carries the core's Kademlia messages over libp2p streams
//!   (one stream per request, the standard `dht.proto` framing, under a configurable
//!   protocol name), beside identify, ping, mDNS, connection limits and the consensus
//!   messages of `/paxos/1.0.0` ([`ClusterStatus`], [`Netabase::put_record_consensus`]);
//! - a driver task that owns the swarm, the core node and the DHT record store, feeds
//!   swarm events, API calls and timeouts into the core and carries its commands out;
//! - the typed, async [`Netabase`] handle and its [`NetabaseEvent`]s.
//!
//! With [`NetabaseConfig::with_metrics`] the driver keeps Prometheus metrics (its own and
//! libp2p's, listed in [`metrics`]), and every API operation runs in a `tracing` span.
//!
//! It depends on no async runtime: a runtime crate implements [`Runtime`] (spawning,
//! timers, transports, mDNS) and names the handle, as `netabase-tokio` does with
//! `netabase_tokio::Netabase<D>`.

mod bandwidth;
mod behaviour;
mod carrier;
mod config;
mod consensus;
mod convert;
mod driver;
mod error;
mod event;
mod guard;
mod handle;
mod handler;
mod identity;
pub mod metrics;
mod paxos;
mod protocol;
mod runtime;

pub use bandwidth::NodeTransport;
pub use config::{ConnectionLimits, DEFAULT_DATA_DIR, Engine, NetabaseConfig, StorageBackend};
pub use consensus::{AppliedEntry, ClusterStatus, CompareAndSet, ConsensusError, ConsensusWrite};
pub use error::NetabaseError;
pub use event::{EventError, EventSubscriber, NetabaseEvent, QueryKind};
pub use guard::{InboundLimits, Rate, Refusal};
pub use handle::{
    BootstrapResult, GetRecordResult, IDENTIFY_PROTOCOL_VERSION, Netabase, NetabaseStats,
    ProviderInfo, ProvidingResult, PutRecordResult,
};
pub use identity::{core_keypair, load_or_create as load_or_create_identity};
pub use metrics::NodeMetrics;
pub use paxos::PAXOS_PROTOCOL;
pub use protocol::StreamError;
pub use runtime::{BuildError, Runtime, Sleep, TransportKind, TransportSettings, UPGRADE_TIMEOUT};

pub use libp2p;
pub use libp2p::identity::Keypair;
pub use libp2p::{Multiaddr, PeerId};
pub use netabase_core::consensus::{
    ClusterId, ConsensusConfig, EntryId, EntryStatus, LeaseConfig, Position, ReadLevel, Role,
};
pub use netabase_core::wire::{DEFAULT_PROTOCOL_NAME, IPFS_PROTOCOL_NAME};
pub use netabase_core::{Mode, QueryError, QueryStats, Quorum, RecordKey};
/// The paxakos consensus engine (`Engine::Paxakos`) and its settings.
#[cfg(feature = "paxakos")]
pub use netabase_paxakos as paxakos;
pub use prometheus_client;
