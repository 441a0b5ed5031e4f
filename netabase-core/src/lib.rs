//! The pure, deterministic, sans-IO protocol core of Netabase.
//!
//! Everything that decides what a Netabase node does lives here: the Kademlia routing
//! table and iterative lookups, record and provider storage logic with expiry, republish
//! and replication, and the wire codecs. Nothing here touches a socket, a clock, a thread
//! or a global random number generator: a driver feeds inputs in (network messages, API
//! calls, `now`) and carries commands out. The same core runs under the tokio and async-io
//! adapters, in the deterministic simulator, in property tests and in fuzzers, and builds
//! for `wasm32-unknown-unknown`. It is `no_std` (it needs `alloc` only), and so are its
//! dependencies: CI links it into a library without the standard library (`.ci/no-std`).
//!
//! Start at [`Node`], whose documentation states the driving contract.
//!
//! ```
//! use netabase_core::{Config, Instant, MemoryStore, Node, Output, PeerId, Quorum, Record, RecordKey};
//!
//! let local = PeerId::from_seed(1);
//! let now = Instant::ZERO;
//! let mut node = Node::new(Config::default(), local, MemoryStore::new(local), 42, now).unwrap();
//! let key = RecordKey::new(b"greeting").unwrap();
//! // No peers known yet: the record is stored locally and the query ends at once.
//! node.put_record(now, Record::new(key.clone(), b"hello".to_vec()), Quorum::One).unwrap();
//! while let Some(output) = node.poll_output() {
//!     if let Output::Event(event) = output {
//!         println!("{event:?}");
//!     }
//! }
//! assert_eq!(node.store_mut().record_count(), 1);
//! ```

#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

#[cfg(feature = "paxos")]
pub mod consensus;
mod deadlines;
pub mod hlc;
pub mod identity;
pub mod kad;
pub mod key;
#[cfg(feature = "paxos")]
pub mod machine;
pub mod mdns;
pub mod model;
pub mod peer;
pub mod record;
pub mod store;
pub mod time;
pub mod version;

// The Kademlia modules keep their paths at the crate root.
pub(crate) use kad::requests;
pub use kad::{kbucket, message, query, wire};

pub use hlc::{ClockError, Hlc, HlcConfig};
pub use identity::Keypair;
pub use kad::{
    ApiError, Config, ConfigError, Event, InboundId, Mode, Node, NodeStats, Output, PeerRecord,
    QueryError, QueryId, QueryResult, QueryStats, Quorum, READ_REPAIR_KEYS, Rejection,
    RequestFailure, RequestId, seal_version,
};
pub use key::{Distance, Key, RecordKey};
#[cfg(feature = "paxos")]
pub use machine::{Machine, MachineOutput};
pub use message::{ConnectionType, MessageKind, PeerInfo, Request, Response, WireRecord};
pub use peer::{Address, PeerId};
pub use record::{ProviderRecord, Record};
pub use store::{MemoryStore, MemoryStoreConfig, RecordStore, StoreError};
pub use time::Instant;
pub use version::{Rank, Resolution, Version, resolve};
pub use wire::{Codec, DecodeError};
