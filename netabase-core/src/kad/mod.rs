//! The Kademlia DHT: the routing table ([`kbucket`]), iterative lookups ([`query`]), the
//! wire messages and their codec ([`message`], [`wire`]), and the node that runs them
//! ([`Node`]), whose record and provider storage goes through [`crate::store`].

pub mod kbucket;
pub mod message;
mod node;
pub mod query;
pub(crate) mod requests;
pub mod wire;

pub use node::{
    ApiError, Config, ConfigError, Event, InboundId, Mode, Node, NodeStats, Output, PeerRecord,
    QueryError, QueryId, QueryResult, QueryStats, Quorum, READ_REPAIR_KEYS, Rejection,
    RequestFailure, RequestId, seal_version,
};
