//! Netabase: a peer-to-peer data layer on libp2p with typed, persistent storage, a Kademlia
//! DHT, automatic sync and optional consensus.
//!
//! This facade crate is what applications depend on. It re-exports the pure protocol core,
//! [`netabase_core`], as [`core`], the typed embedded store, [`netabase_store`], as
//! [`store`], with the definition macros at the root, and the networked node: with the
//! default feature `tokio`, [`Netabase<D>`](Netabase) is the node on the tokio runtime
//! (TCP, QUIC, DNS, mDNS); with the features `async-std` and `smol` the same node runs on
//! async-std or smol (`AsyncStdNetabase<D>`, `SmolNetabase<D>`: TCP, DNS and mDNS on
//! async-io, no tokio). It is configured by [`NetabaseConfig`], reporting
//! [`NetabaseEvent`]s and failing with [`NetabaseError`]. The runtime-generic glue is
//! [`swarm`]. The README's quick start shows two nodes exchanging a record.
//!
//! ```
//! use netabase::{NetabaseModel, Store, netabase_definition_module};
//!
//! #[netabase_definition_module(ChatDefinition, ChatKeys)]
//! pub mod chat {
//!     use netabase::NetabaseModel;
//!
//!     #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//!     pub struct User {
//!         #[primary_key]
//!         pub name: String,
//!         #[secondary_key]
//!         pub email: String,
//!     }
//! }
//! use chat::*;
//!
//! let store = Store::<ChatDefinition>::memory().unwrap();
//! let ada = User { name: "ada".into(), email: "ada@example.org".into() };
//! store.put(&ada).unwrap();
//! assert_eq!(store.get(&UserPrimaryKey("ada".into())).unwrap(), Some(ada));
//! ```

pub use netabase_core as core;
pub use netabase_store as store;
pub use netabase_store::{
    NetabaseDefinition, NetabaseModel, PrimaryKey, SecondaryKey, Store, StoreError,
    netabase_definition_module,
};
pub use netabase_swarm as swarm;
/// The paxakos consensus engine (`Engine::Paxakos`) and its settings.
#[cfg(feature = "paxakos")]
pub use netabase_swarm::paxakos;
pub use netabase_swarm::{
    AppliedEntry, ClusterId, ClusterStatus, CompareAndSet, ConsensusConfig, ConsensusError,
    ConsensusWrite, Engine, EntryId, EntryStatus, LeaseConfig, PAXOS_PROTOCOL, Position, ReadLevel,
    Role,
};
pub use netabase_swarm::{
    BootstrapResult, ConnectionLimits, DEFAULT_DATA_DIR, DEFAULT_PROTOCOL_NAME, EventError,
    EventSubscriber, GetRecordResult, IPFS_PROTOCOL_NAME, Keypair, Mode, Multiaddr, NetabaseConfig,
    NetabaseError, NetabaseEvent, NetabaseStats, PeerId, ProviderInfo, ProvidingResult,
    PutRecordResult, QueryError, QueryKind, Quorum, RecordKey, StorageBackend,
};
/// The Netabase node on the tokio runtime (the default runtime).
#[cfg(feature = "tokio")]
pub use netabase_tokio::{Netabase, TokioRuntime};

/// The async-io runtime crate (async-std and smol), with its TCP transport and mDNS service.
#[cfg(any(feature = "async-std", feature = "smol"))]
pub use netabase_async_std as async_io;
/// The Netabase node on async-std (feature `async-std`).
#[cfg(feature = "async-std")]
pub use netabase_async_std::{AsyncStdNetabase, AsyncStdRuntime};
/// The Netabase node on smol (feature `smol`).
#[cfg(feature = "smol")]
pub use netabase_async_std::{SmolNetabase, SmolRuntime};

/// The Netabase node on async-std: with the `tokio` feature off, `Netabase<D>` names the
/// node on the async-io runtime the features select (async-std first, then smol).
#[cfg(all(not(feature = "tokio"), feature = "async-std"))]
pub type Netabase<D> = AsyncStdNetabase<D>;
/// The Netabase node on smol: with the `tokio` and `async-std` features off, `Netabase<D>`
/// names the node on smol.
#[cfg(all(not(feature = "tokio"), not(feature = "async-std"), feature = "smol"))]
pub type Netabase<D> = SmolNetabase<D>;

/// The README's code examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The features this build of Netabase has: its runtimes (`tokio`, `async-std`, `smol`)
/// and its storage backends (`redb`, `sled`; the memory backend is always there), in that
/// order.
pub fn build_features() -> Vec<&'static str> {
    let runtimes = [
        ("tokio", cfg!(feature = "tokio")),
        ("async-std", cfg!(feature = "async-std")),
        ("smol", cfg!(feature = "smol")),
    ];
    runtimes
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .chain(netabase_store::BACKENDS.iter().copied())
        .collect()
}
