//! Multi-Paxos consensus: a replicated log of client entries, applied in order to a
//! replicated state, for strongly consistent writes beside the DHT's eventual
//! consistency (feature `paxos`, on by default).
//!
//! The pieces follow the vocabulary of the product description (and of paxakos, the
//! engine planned behind the same API): log [`Entry`]s with ids ([`EntryId`]), a
//! [`State`] that applies them, members named by their libp2p [`PeerId`](crate::PeerId),
//! prepare / promise / accept (proposal) / commit and commit by id, heartbeats, autofill
//! of gaps, catch-up, and master leases. [`Member`] is the sans-IO machine; its
//! documentation states the driving contract and the protocol. [`LogStore`] is the
//! acceptor's durable log, [`MemoryLogStore`] its in-memory form with an explicit sync
//! and crash; [`KvState`] is a replicated key-value state with compare-and-set.
//!
//! Membership changes go through the log ([`MembershipChange`]): a change decided at
//! slot `k` is in force from `k + alpha` ([`Member::cluster_at`]); new members catch up
//! as learners and the leader promotes them. Each voter is bound to its [`Instance`], so
//! a member whose data was wiped stops voting until it is removed and added again (the
//! first members of a cluster only once the leader has bound them: a wipe before that
//! is not detected).
//!
//! What this engine does not do yet: log compaction and snapshot transfer (the log grows
//! with every slot, and a new member catches up from slot 1).

mod member;
mod message;
mod store;
mod types;

#[cfg(test)]
mod tests;

pub use member::{
    ConsensusConfig, ConsensusConfigError, ConsensusStats, EntryStatus, Event, LeaseConfig, Member,
    Membership, Output, ProposeError, ReadFailure, ReadId, ReadLevel, Role, StartError,
};
pub use message::{Envelope, MAX_MESSAGE_BYTES, Message, SlotValue, WIRE_FORMAT, WireError};
pub use store::{
    AcceptedValue, Applied, DedupTable, KvCommand, KvMap, KvResponse, KvState, LogStore,
    MemoryLogStore, State, chain_digest, entry_ids, execute,
};
pub use types::{
    Ballot, ChangeError, ClusterId, Configuration, Entry, EntryId, Instance, MembershipChange,
    Position, Reconfiguration, Slot, Value,
};
