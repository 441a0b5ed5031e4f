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
//! a member whose data was wiped stops voting until it is removed and added again. A
//! member started with several first members binds them only once the leader hears
//! them (a wipe before that is not detected), so netabase's `create_cluster` starts a
//! cluster with its creator alone and adds the others through the log.
//!
//! Each member compacts its log ([`Compaction`]): the state written with a sync is the
//! snapshot of the slots it applied, and the log drops them in the same durable write. A
//! member that asks for slots compacted away receives the state instead, frozen
//! ([`State::freeze`]) and sent in chunks that resume where a transfer stopped
//! ([`SnapshotImage`]); installing it never moves a member backwards.

#[cfg(any(test, feature = "fault-injection"))]
mod fault;
mod member;
mod message;
mod store;
mod types;

#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "fault-injection"))]
pub use fault::Mutant;
pub use member::{
    Compaction, ConsensusConfig, ConsensusConfigError, ConsensusStats, EntryStatus, Event,
    LeaseConfig, Member, Membership, Output, ProposeError, ReadFailure, ReadId, ReadLevel, Role,
    StartError,
};
pub use message::{
    Envelope, MAX_MESSAGE_BYTES, Message, SlotValue, SnapshotChunk, WIRE_FORMAT, WireError,
};
pub use store::{
    AcceptedValue, Applied, DedupTable, KvCommand, KvImage, KvMap, KvResponse, KvState, LogStore,
    MemoryLogStore, PositionedMap, SnapshotError, State, chain_digest, entry_ids, execute,
};
pub use types::{
    Ballot, ChangeError, ClusterId, Configuration, Entry, EntryId, Instance, MembershipChange,
    Position, Reconfiguration, Slot, SnapshotImage, Value,
};
