//! The paxakos engine for Netabase: [paxakos](https://docs.rs/paxakos/0.13.0) 0.13 behind
//! the same replicated key-value state as the core's own Multi-Paxos engine.
//!
//! # Status
//!
//! This crate holds the first of the product description's four integration phases and
//! the message layer of the second:
//!
//! - [`PaxakosEntry`] is paxakos's `LogEntry`: the core engine's [`Entry`], with the same
//!   [`EntryId`] (proposer and sequence number), so a retried proposal is answered from
//!   the same dedup table whichever engine ordered it;
//! - [`PeerNode`] is its `NodeInfo`: a libp2p [`PeerId`](libp2p::PeerId);
//! - [`KvMachine`] is its `State`: the core's [`KvState`] (the one definition of what a
//!   key-value command does, with its dedup table and chained digest), applied one entry
//!   per paxakos round at position `(round, 0)`, with `cluster_at` and `concurrency`;
//! - [`KvInvocation`] ties them to a communicator's error type;
//! - [`wire`] is the engine's message format on its own protocol, and
//!   [`NetCommunicator`] its `Communicator` over any request-response [`Transport`], with
//!   [`serve`] answering requests on the receiving side.
//!
//! Planned, not built yet: `freeze` handing out a redb snapshot instead of a copy of the
//! state; the communicator over libp2p on a protocol of its own (phase 2); starting the
//! paxakos node in `start_swarm` behind `NetabaseConfig::with_consensus` (phase 3);
//! heartbeats, autofill, catch-up and master leases (phase 4); the recovery path after a
//! crash (paxakos keeps its promises in memory only); and the simulator driving paxakos
//! nodes on virtual time beside the core engine.
//!
//! paxakos is GPL-3.0-only, like Netabase. Its last release, 0.13.0, is from November
//! 2022. Two of its behaviours a driver must work around, both covered by this crate's
//! tests: its catch-up decoration starts each next poll inside `poll_events` without
//! polling it, so a node that hears nothing else stalls unless its events are also polled
//! on a tick; and it panics if a peer promises in answer to a catch-up poll
//! (coordination number 0), which [`NetCommunicator`] therefore refuses as an unexpected
//! answer.
//!
//! ```
//! use netabase_core::PeerId;
//! use netabase_core::consensus::{Entry, EntryId, KvCommand};
//! use netabase_paxakos::{KvMachine, PaxakosEntry, PeerNode};
//! use paxakos::State as _;
//!
//! let members = vec![PeerNode(libp2p::PeerId::random())];
//! let mut machine = KvMachine::new(members, 4);
//! let entry = PaxakosEntry(Entry {
//!     id: EntryId { proposer: PeerId::from_seed(1), seq: 1 },
//!     command: KvCommand::Put { key: b"k".to_vec(), value: b"v".to_vec() }.encode(),
//! });
//! let (first, _) = machine.apply(&entry, &mut ()).unwrap();
//! let (again, _) = machine.apply(&entry, &mut ()).unwrap();
//! assert!(!first.duplicate && again.duplicate);
//! assert_eq!(machine.kv().get(b"k").map(|(v, _)| v), Some(&b"v"[..]));
//! ```

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroUsize;

use netabase_core::consensus::{Applied, Entry, EntryId, KvState, Position, Slot, State as _};
use serde::{Deserialize, Serialize};

/// A paxakos log entry: one client command of the core engine's form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PaxakosEntry(pub Entry);

impl paxakos::LogEntry for PaxakosEntry {
    type Id = EntryId;

    fn id(&self) -> EntryId {
        self.0.id
    }
}

/// A cluster member as paxakos sees it: its libp2p peer id (how to reach it is the
/// swarm's business).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerNode(pub libp2p::PeerId);

impl paxakos::NodeInfo for PeerNode {
    type Id = libp2p::PeerId;

    fn id(&self) -> libp2p::PeerId {
        self.0
    }
}

/// What applying an entry did, as paxakos reports it in `Event::Apply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedEntry {
    /// Where it was applied: the paxakos round, index 0.
    pub position: Position,
    /// The entry's id.
    pub id: EntryId,
    /// The encoded [`KvResponse`](netabase_core::consensus::KvResponse).
    pub response: Vec<u8>,
    /// Whether the entry was applied before (answered from the dedup table).
    pub duplicate: bool,
}

/// The replicated key-value state as a paxakos `State`: the core's [`KvState`], one
/// entry per round.
#[derive(Clone, Debug)]
pub struct KvMachine {
    kv: KvState,
    members: Vec<PeerNode>,
    concurrency: NonZeroUsize,
}

impl KvMachine {
    /// An empty state for a cluster of `members` that lets paxakos run `concurrency`
    /// rounds at once (at least one).
    pub fn new(members: Vec<PeerNode>, concurrency: usize) -> Self {
        KvMachine {
            kv: KvState::new(),
            members,
            concurrency: NonZeroUsize::new(concurrency).unwrap_or(NonZeroUsize::MIN),
        }
    }

    /// The key-value state.
    pub fn kv(&self) -> &KvState {
        &self.kv
    }

    /// The last round applied (0 before the first).
    pub fn round(&self) -> Slot {
        self.kv.applied()
    }

    /// The chained digest of every entry applied: equal on replicas that applied the same
    /// entries in the same rounds, and equal to a core [`KvState`]'s that applied them at
    /// the same positions.
    pub fn digest(&self) -> [u8; 32] {
        self.kv.digest()
    }
}

impl paxakos::State for KvMachine {
    // A copy for now; a redb read transaction is planned (see the crate documentation).
    type Frozen = KvMachine;
    type LogEntry = PaxakosEntry;
    type Context = ();
    type Outcome = Applied;
    type Effect = AppliedEntry;
    type Error = Infallible;
    type Node = PeerNode;

    fn apply(
        &mut self,
        log_entry: &PaxakosEntry,
        _context: &mut (),
    ) -> Result<(Applied, AppliedEntry), Infallible> {
        let position = Position {
            slot: self.kv.applied() + 1,
            index: 0,
        };
        let applied = self.kv.apply(position, &log_entry.0);
        self.kv.set_applied(position.slot);
        let effect = AppliedEntry {
            position,
            id: log_entry.0.id,
            response: applied.response.clone(),
            duplicate: applied.duplicate,
        };
        Ok((applied, effect))
    }

    fn concurrency(this: Option<&Self>) -> Option<NonZeroUsize> {
        this.map(|s| s.concurrency)
    }

    fn cluster_at(&self, _round_offset: NonZeroUsize) -> Vec<PeerNode> {
        self.members.clone()
    }

    fn freeze(&self, _context: &mut ()) -> KvMachine {
        self.clone()
    }
}

/// The paxakos invocation of the key-value state, for a communicator whose errors are
/// `E`: rounds are `u64` (the core engine's slots), coordination numbers `u32`.
pub struct KvInvocation<E>(PhantomData<fn() -> E>);

impl<E> fmt::Debug for KvInvocation<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KvInvocation")
    }
}

impl<E: fmt::Debug + Send + Sync + 'static> paxakos::invocation::Invocation for KvInvocation<E> {
    type RoundNum = u64;
    type CoordNum = u32;
    type State = KvMachine;
    type Yea = ();
    type Nay = Infallible;
    type Abstain = Infallible;
    type Ejection = Infallible;
    type CommunicationError = E;
}

pub mod communicator;
pub mod wire;

pub use communicator::{CommunicatorError, NetCommunicator, NetInvocation, Transport, serve};

#[cfg(test)]
mod tests;
