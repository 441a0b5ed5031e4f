//! The paxakos engine for Netabase: [paxakos](https://docs.rs/paxakos/0.13.0) 0.13 behind
//! the same replicated key-value state as the core's own Multi-Paxos engine.
//!
//! # Status
//!
//! This crate holds the engine; the swarm glue runs it behind the same API as the core's
//! engine (`NetabaseConfig::with_consensus`). What it has:
//!
//! - [`PaxakosEntry`] is paxakos's `LogEntry`: the core engine's [`Entry`], with the same
//!   [`EntryId`] (proposer and sequence number), so a retried proposal is answered from
//!   the same dedup table whichever engine ordered it;
//! - [`PeerNode`] is its `NodeInfo`: a libp2p [`PeerId`](libp2p_identity::PeerId);
//! - [`KvMachine`] is its `State`: the core's [`KvState`] (the one definition of what a
//!   key-value command does, with its dedup table and chained digest), applied one entry
//!   per paxakos round at position `(round, 0)`, with `cluster_at` and `concurrency`;
//! - [`KvInvocation`] ties them to a communicator's error type; a yea carries a lease;
//! - [`wire`] is the engine's message format on its own protocol, and
//!   [`NetCommunicator`] its `Communicator` over any request-response [`Transport`], with
//!   [`serve`] answering requests on the receiving side;
//! - [`engine`] runs a node with heartbeats, autofill, catch-up and master leases, takes
//!   writes (forwarded to the leader) and reads at the core engine's three levels, and
//!   restarts after a crash through paxakos's recovery path or after a clean stop from
//!   the snapshot the stop returned.
//!
//! Its crash model differs from the core engine's: paxakos keeps promises and state in
//! memory only. After a crash a node restarts passive and without state, installs a
//! peer's snapshot, and votes again only once the rounds it may have voted in are
//! settled; a cluster that loses a majority of its nodes at once loses its state. A clean
//! stop leaves a snapshot the node resumes from.
//!
//! The simulator drives this engine on virtual time in a workspace of its own
//! (`sim-paxakos/` in the repository: it patches `instant` and `futures-timer`, which
//! paxakos reads the time and sleeps through, onto a virtual clock; [`engine::run_with`]
//! takes the executor paxakos's state keeper runs on).
//!
//! Planned, not built yet: `freeze` handing out a redb snapshot instead of a copy of the
//! state (the state is in memory); snapshots larger than one message (16 MiB); membership
//! changes (the members are fixed when the cluster starts).
//!
//! paxakos is GPL-3.0-only, like Netabase. Its last release, 0.13.0, is from November
//! 2022. Behaviours of it a driver must work around, each covered by this crate's tests:
//! its catch-up decoration starts each next poll inside `poll_events` without polling it,
//! so a node that hears nothing else stalls unless its events are also polled on a tick;
//! it panics if a peer promises in answer to a catch-up poll (coordination number 0),
//! which [`NetCommunicator`] therefore refuses as an unexpected answer; it panics when
//! abstentions leave a prepare short of a quorum (found by the simulator), so an
//! abstaining peer's answer reaches it as a failed exchange
//! ([`CommunicatorError::Abstained`]); its lease-granting
//! voter reports leases with `futures::executor::block_on` inside the state keeper, which
//! panics under its default executor and can block the state keeper for good, and the
//! node its builder returns does not expose the master-lease decoration's reads (so
//! [`leases`] has a voter and a communicator of its own writing to one lease book).
//!
//! ```
//! use netabase_core::PeerId;
//! use netabase_core::consensus::{Entry, EntryId, KvCommand};
//! use netabase_paxakos::{KvMachine, PaxakosEntry, PeerNode};
//! use paxakos::State as _;
//!
//! let members = vec![PeerNode(libp2p_identity::PeerId::random())];
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
use std::time::Duration;

use netabase_core::consensus::{Applied, Entry, EntryId, KvState, Position, Slot, State as _};
use netabase_core::model::{decode_value, encode_value};
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
pub struct PeerNode(pub libp2p_identity::PeerId);

impl paxakos::NodeInfo for PeerNode {
    type Id = libp2p_identity::PeerId;

    fn id(&self) -> libp2p_identity::PeerId {
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
/// entry per round, with the cluster's fixed members.
///
/// It serializes (inside paxakos snapshots) as its members, concurrency, the last round
/// applied and the core state's image.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(into = "MachineImage", try_from = "MachineImage")]
pub struct KvMachine {
    kv: KvState,
    members: Vec<PeerNode>,
    concurrency: NonZeroUsize,
}

/// A [`KvMachine`] as it is serialized.
#[derive(Serialize, Deserialize)]
struct MachineImage {
    members: Vec<Vec<u8>>,
    concurrency: u64,
    round: Slot,
    image: Vec<u8>,
}

impl From<KvMachine> for MachineImage {
    fn from(m: KvMachine) -> Self {
        MachineImage {
            members: m.members.iter().map(|p| p.0.to_bytes()).collect(),
            concurrency: m.concurrency.get() as u64,
            round: m.kv.applied(),
            image: m.kv.freeze(),
        }
    }
}

impl TryFrom<MachineImage> for KvMachine {
    type Error = String;

    fn try_from(image: MachineImage) -> Result<Self, String> {
        let members = image
            .members
            .iter()
            .map(|b| libp2p_identity::PeerId::from_bytes(b).map(PeerNode))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("a member is no peer id: {e}"))?;
        let concurrency = usize::try_from(image.concurrency)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or("a concurrency of 0")?;
        let mut kv = KvState::new();
        kv.install(image.round, &image.image)
            .map_err(|e| e.to_string())?;
        Ok(KvMachine {
            kv,
            members,
            concurrency,
        })
    }
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

    /// The cluster's members.
    pub fn members(&self) -> &[PeerNode] {
        &self.members
    }

    /// The state's bytes: what [`decode`](KvMachine::decode) turns back into it.
    pub fn encode(&self) -> Vec<u8> {
        encode_value(self).unwrap_or_default()
    }

    /// The state in `bytes`, or why they are not one.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        decode_value("paxakos key-value state", bytes).map_err(|e| e.to_string())
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

/// A paxakos snapshot of the key-value state.
pub type KvSnapshot = paxakos::node::Snapshot<KvMachine, u64, u32>;

/// The paxakos invocation of the key-value state, for a communicator whose errors are
/// `E`: rounds are `u64` (the core engine's slots), coordination numbers `u32`; a yea
/// carries the master lease the voter grants and an abstention how long the voter is
/// bound to another leader's lease (paxakos's lease-granting voter).
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
    type Yea = Duration;
    type Nay = Infallible;
    type Abstain = Duration;
    type Ejection = Infallible;
    type CommunicationError = E;
}

pub mod communicator;
pub mod engine;
pub mod leases;
pub mod wire;

pub use communicator::{CommunicatorError, NetCommunicator, NetInvocation, Transport, serve};

#[cfg(test)]
mod tests;
