//! Netabase: a peer-to-peer data layer on libp2p with typed, persistent storage, a Kademlia
//! DHT, automatic sync and optional consensus.
//!
//! This facade crate is what applications depend on. It re-exports the pure protocol core,
//! [`netabase_core`], as [`core`]; the runtime adapters, the typed store and the `Netabase`
//! handle are added beside it as they land.

pub use netabase_core as core;

/// The README's code examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
