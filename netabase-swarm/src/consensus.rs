//! Strongly consistent writes: consensus models through a Multi-Paxos cluster.
//!
//! A cluster is a set of nodes (voters) that replicate one log over `/paxos/1.0.0`.
//! [`Netabase::create_cluster`] mints its id and starts the cluster with its node as the
//! only voter, then adds the other members it names through the log; each of them calls
//! [`Netabase::join_cluster`] with that id and the member list. Members change
//! through the log ([`Netabase::add_member`], [`Netabase::remove_member`],
//! [`Netabase::replace_member`]); a node joining later calls `join_cluster` with the
//! current members, which resolves once it is added. Writes
//! ([`put_record_consensus`](Netabase::put_record_consensus),
//! [`remove_record_consensus`](Netabase::remove_record_consensus),
//! [`compare_and_set_consensus`](Netabase::compare_and_set_consensus)) resolve once the
//! entry is chosen and applied on this node, with its log position, which is the record's
//! version; reads choose their level ([`ReadLevel`]).
//!
//! What a consensus record is: the model's encoded value under its record key, in the
//! cluster's replicated state, apart from the DHT and the typed store (`put_record` and
//! `get_record` never see it). Mark a model `#[netabase(consensus)]` to keep it in that
//! namespace only: `put_record` and `remove_record` then refuse it with
//! [`ConsensusError::ConsensusModel`].
//!
//! The log and the replicated state live in the node's database (tables `paxos.*`): the
//! log's writes are made durable before any promise or vote that reports them leaves,
//! and the state is written in the same transaction. A node that restarts calls
//! [`Netabase::join_cluster`] again with the same id and members; it keeps its promises
//! and replays its log. After a restart a member waits out the lease duration before it
//! promises anything.
//!
//! With [`Engine::Paxakos`](crate::Engine) (feature `paxakos`) the same calls go to a
//! paxakos node instead, on `/netabase/paxakos/1.0.0`: its members are fixed when the
//! cluster is created (every node passes the same member list; membership calls,
//! leadership transfer, the applied-entries feed and entry status answer
//! [`ConsensusError::NotOffered`]), its promises and state live in memory (a node that
//! crashed recovers from a peer's snapshot, answering [`ConsensusError::Recovering`]
//! until then; one stopped cleanly resumes from the snapshot it kept in its database).
//! See the `netabase_paxakos` crate.
//!
//! A leader that stops (`stop_swarm`) hands leadership over first
//! ([`Netabase::transfer_leadership`]).
//!
//! A node whose data directory was wiped comes back with a new instance: the cluster
//! does not count its votes, and it does not vote, until it is removed and added again
//! ([`ClusterStatus::stale_instance`]). Every member is bound to its instance before it
//! votes: the creator while it is the only voter, the others when they are promoted.
//!
//! The log is compacted ([`Compaction`](netabase_core::consensus::Compaction): by default
//! once 10,000 applied slots beyond the last 1,000 are in it, or 64 MiB of values): the
//! state, written in the same durable transaction, is the snapshot of the slots dropped.
//! A member behind the compacted slots (a new member, or one down for long) receives the
//! state instead, in chunks that resume where a transfer stopped, and reports
//! [`NetabaseEvent::ConsensusSnapshotInstalled`](crate::NetabaseEvent::ConsensusSnapshotInstalled);
//! [`Netabase::applied_entries`] of compacted slots fails with
//! [`ConsensusError::Compacted`]. The log after the truncation point and the whole state
//! are held in memory while the node runs; a snapshot is frozen whole into memory to be
//! sent, and received whole (up to `max_snapshot_bytes`, 1 GiB by default) before it is
//! installed.

use std::collections::HashMap;

use futures::channel::oneshot;
use libp2p::PeerId;
use netabase_core::consensus::{
    ChangeError, ClusterId, ConsensusConfig, ConsensusStats, EntryId, EntryStatus, KvCommand,
    KvResponse, MembershipChange, Position, ProposeError, ReadFailure, ReadId, ReadLevel, Role,
    Slot, StartError,
};
use netabase_core::model::{NetabaseDefinition, NetabaseModel, PrimaryKey, record_key};
use netabase_store::AnyBackend;
use netabase_store::consensus::{PersistentKvState, PersistentLog};

use crate::driver::Command;
use crate::error::NetabaseError;
use crate::handle::Netabase;
use crate::runtime::Runtime;

/// The consensus log of a running node, in its database.
pub(crate) type ConsensusLog = PersistentLog<AnyBackend>;
/// The replicated state of a running node, in its database beside the log.
pub(crate) type ConsensusState = PersistentKvState<AnyBackend>;

/// Why a consensus operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsensusError {
    /// The node is in no cluster.
    #[error("this node is not a member of a consensus cluster")]
    NoCluster,
    /// The node is already a member of a cluster.
    #[error("this node is already a member of cluster {0}")]
    AlreadyMember(ClusterId),
    /// The member could not start.
    #[error("the consensus member cannot start: {0}")]
    Start(#[from] StartError),
    /// The proposal was refused at once (too large, queue full).
    #[error("the proposal was refused: {0}")]
    Propose(#[from] ProposeError),
    /// The read could not be served.
    #[error("the read failed: {0}")]
    Read(#[from] ReadFailure),
    /// The entry was not applied in time: it may still be applied, or never. Ask with
    /// [`Netabase::consensus_entry_status`].
    #[error("the outcome of entry {0:?} is unknown")]
    Indeterminate(EntryId),
    /// The model is a consensus model (`#[netabase(consensus)]`): only the cluster's log
    /// writes it, `put_record` and `remove_record` refuse it.
    #[error("model {0} is a consensus model: write it with put_record_consensus")]
    ConsensusModel(&'static str),
    /// A member's peer id is not one the core can address.
    #[error("unsupported member peer id {0}")]
    UnsupportedPeer(PeerId),
    /// The membership change was refused (removing the last voter, replacing a peer that
    /// is no voter, ...).
    #[error("the membership change was refused: {0}")]
    Membership(#[from] ChangeError),
    /// The paxakos engine restarted after a crash and has no state yet: it installs a
    /// peer's snapshot first ([`Engine::Paxakos`](crate::Engine)).
    #[error("the consensus engine is recovering")]
    Recovering,
    /// The consensus engine has more requests waiting than it takes.
    #[error("the consensus engine is busy")]
    Busy,
    /// The node's consensus engine does not offer this operation (the paxakos engine has
    /// fixed members, no leadership transfer and no applied-entries feed).
    #[error("the consensus engine does not offer {0}")]
    NotOffered(&'static str),
    /// The applied entries asked for were compacted out of this node's log (they are
    /// folded into its state); the feed goes on from `first`.
    #[error("the applied entries before slot {first} were compacted away")]
    Compacted {
        /// The first slot whose entries the log still holds.
        first: Slot,
    },
}

/// A node's view of its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The cluster.
    pub cluster: ClusterId,
    /// The voters (of the next slot to apply).
    pub members: Vec<PeerId>,
    /// The learners: members added and catching up, promoted to voters by the leader.
    pub learners: Vec<PeerId>,
    /// Whether the cluster binds this node to an instance of its data it no longer has
    /// (its data directory was wiped): it does not vote until removed and added again.
    pub stale_instance: bool,
    /// This node's role.
    pub role: Role,
    /// The leader it follows or is.
    pub leader: Option<PeerId>,
    /// The highest ballot round seen.
    pub round: u64,
    /// Every slot up to here is known chosen.
    pub committed: Slot,
    /// Every slot up to here is applied.
    pub applied: Slot,
    /// Counters.
    pub stats: ConsensusStats,
}

/// A write through the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsensusWrite {
    /// The entry's id.
    pub id: EntryId,
    /// Where it landed: the record's version.
    pub position: Position,
}

/// The outcome of a compare-and-set through the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompareAndSet {
    /// Whether the record held the expected value and was set.
    pub swapped: bool,
    /// Where the entry landed.
    pub position: Position,
}

/// An applied entry of this node's own.
#[derive(Debug)]
pub(crate) struct Committed {
    pub(crate) id: EntryId,
    pub(crate) position: Position,
    pub(crate) response: Vec<u8>,
}

pub(crate) type WriteReply = oneshot::Sender<Result<Committed, NetabaseError>>;
pub(crate) type ChangeReply = oneshot::Sender<Result<Slot, NetabaseError>>;
pub(crate) type ReadReply = oneshot::Sender<Result<Option<(Vec<u8>, Position)>, NetabaseError>>;

/// A consensus API call for the driver.
pub(crate) enum ConsensusCommand {
    Start {
        cluster: ClusterId,
        members: Vec<PeerId>,
        /// Whether this node creates the cluster (it starts as its only voter and adds
        /// the others through the log).
        create: bool,
        reply: oneshot::Sender<Result<(), NetabaseError>>,
    },
    Change {
        change: MembershipChange,
        reply: ChangeReply,
    },
    Propose {
        command: KvCommand,
        reply: WriteReply,
    },
    Read {
        key: Vec<u8>,
        level: ReadLevel,
        reply: ReadReply,
    },
    Status {
        reply: oneshot::Sender<Option<ClusterStatus>>,
    },
    EntryStatus {
        id: EntryId,
        reply: oneshot::Sender<Result<EntryStatus, NetabaseError>>,
    },
    Transfer {
        reply: oneshot::Sender<Result<Option<PeerId>, NetabaseError>>,
    },
    Applied {
        from: Slot,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<AppliedEntry>, NetabaseError>>,
    },
}

/// One entry of the applied log, as [`Netabase::applied_entries`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedEntry {
    /// Where it was applied.
    pub position: Position,
    /// Its id.
    pub id: EntryId,
    /// The command, or `None` for bytes that are not one (the state ignored them).
    pub command: Option<KvCommand>,
}

/// API calls waiting on the member, and its settings.
pub(crate) struct ConsensusClient {
    pub(crate) config: ConsensusConfig,
    pub(crate) writes: HashMap<EntryId, WriteReply>,
    pub(crate) changes: HashMap<EntryId, ChangeReply>,
    /// Decided changes waiting until their configuration is in force (the slot before its
    /// first is applied here).
    pub(crate) activating: Vec<(Slot, ChangeReply)>,
    /// `join_cluster` calls waiting until a configuration includes this node.
    pub(crate) joining: Vec<oneshot::Sender<Result<(), NetabaseError>>>,
    /// The members a cluster this node created adds through the log, by the id of the
    /// change in flight (proposed again if its outcome is unknown).
    pub(crate) adding: HashMap<EntryId, netabase_core::PeerId>,
    pub(crate) reads: HashMap<ReadId, (Vec<u8>, ReadReply)>,
    /// Requests of `/paxos/1.0.0` not answered yet, per peer, oldest first: the next
    /// message to that peer rides on the answer.
    pub(crate) open_requests:
        HashMap<PeerId, Vec<libp2p::request_response::ResponseChannel<Vec<u8>>>>,
}

impl ConsensusClient {
    pub(crate) fn new(config: ConsensusConfig) -> Self {
        ConsensusClient {
            config,
            writes: HashMap::new(),
            changes: HashMap::new(),
            activating: Vec::new(),
            joining: Vec::new(),
            adding: HashMap::new(),
            reads: HashMap::new(),
            open_requests: HashMap::new(),
        }
    }
}

fn to_core(peer: PeerId) -> Result<netabase_core::PeerId, NetabaseError> {
    crate::convert::to_core_peer(&peer).ok_or_else(|| ConsensusError::UnsupportedPeer(peer).into())
}

/// A consensus record's stored bytes: the model id (big-endian) and the model's encoding.
fn encode_definition<D: NetabaseDefinition>(value: &D) -> Result<Vec<u8>, NetabaseError> {
    let mut bytes = value.model_id().to_be_bytes().to_vec();
    bytes.extend_from_slice(&value.encode_model()?);
    Ok(bytes)
}

fn decode_model<M: NetabaseModel>(bytes: &[u8]) -> Result<M, NetabaseError>
where
    M::Definition: NetabaseDefinition,
{
    let (id, payload) = bytes
        .split_first_chunk::<2>()
        .ok_or(NetabaseError::WrongModel { found: u16::MAX })?;
    let id = u16::from_be_bytes(*id);
    let value = <M::Definition as NetabaseDefinition>::decode_model(id, payload)?;
    M::try_from(value).map_err(|_| NetabaseError::WrongModel { found: id })
}

impl<D: NetabaseDefinition, R: Runtime> Netabase<D, R> {
    async fn consensus<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> ConsensusCommand,
    ) -> Result<T, NetabaseError> {
        self.call(|reply| Command::Consensus(make(reply))).await
    }

    /// Creates a consensus cluster and starts this node's member as its only voter;
    /// returns the new cluster's id, which every other node of `members` passes to
    /// [`join_cluster`](Netabase::join_cluster). This node adds each of them through the
    /// log (as [`add_member`](Netabase::add_member) does): each becomes a voter once it
    /// has joined and caught up, bound to the instance of its data, so that a member
    /// whose data is lost later is told apart. Until the others have joined, this node
    /// decides alone.
    pub async fn create_cluster(&self, members: &[PeerId]) -> Result<ClusterId, NetabaseError> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id)
            .map_err(|e| NetabaseError::Config(format!("no randomness for a cluster id: {e}")))?;
        let cluster = ClusterId(id);
        self.start_member(cluster, members, true).await?;
        Ok(cluster)
    }

    /// Starts this node's member of `cluster`: `members` are the members it trusts to
    /// hear from (the list the cluster was created with, or its current members). It
    /// resolves once this node votes: at once for a voter whose log knows it (a restart);
    /// for a new member once another member has added it (the creator adds the members
    /// it was created with; [`add_member`](Netabase::add_member) or
    /// [`replace_member`](Netabase::replace_member) on any member adds others), it has
    /// caught up as a learner, and the configuration the leader promoted it in is in
    /// force here.
    pub async fn join_cluster(
        &self,
        cluster: ClusterId,
        members: &[PeerId],
    ) -> Result<(), NetabaseError> {
        self.start_member(cluster, members, false).await
    }

    async fn start_member(
        &self,
        cluster: ClusterId,
        members: &[PeerId],
        create: bool,
    ) -> Result<(), NetabaseError> {
        let members = members.to_vec();
        self.consensus(|reply| ConsensusCommand::Start {
            cluster,
            members,
            create,
            reply,
        })
        .await?
    }

    async fn change_membership(&self, change: MembershipChange) -> Result<Slot, NetabaseError> {
        self.consensus(|reply| ConsensusCommand::Change { change, reply })
            .await?
    }

    /// Adds `peer` to this node's cluster through the log. It joins as a learner (it must
    /// call [`join_cluster`](Netabase::join_cluster) with the cluster's id) and the leader
    /// promotes it to voter once it has caught up. A change decided at slot `k` is in force
    /// from slot `k + alpha` ([`ConsensusConfig::alpha`]; an idle leader fills the slots
    /// between with no-ops); the call resolves with that slot once it is in force here.
    /// Adding a member twice changes nothing.
    pub async fn add_member(&self, peer: PeerId) -> Result<Slot, NetabaseError> {
        let peer = to_core(peer)?;
        self.change_membership(MembershipChange::Add(peer)).await
    }

    /// Removes `peer` (a voter or a learner) from this node's cluster through the log. A
    /// leader that is removed hands leadership to a remaining voter. The last voter cannot
    /// be removed. Resolves with the first slot without it, once that is in force here.
    pub async fn remove_member(&self, peer: PeerId) -> Result<Slot, NetabaseError> {
        let peer = to_core(peer)?;
        self.change_membership(MembershipChange::Remove(peer)).await
    }

    /// Replaces the voter `old` by `new` through the log: `new` joins as a learner and,
    /// once caught up, takes `old`'s vote in one step, so the number of voters never
    /// changes. Resolves once `new` is a learner here (the swap follows when it has caught
    /// up: watch [`NetabaseEvent::ConsensusConfiguration`](crate::NetabaseEvent)).
    pub async fn replace_member(&self, old: PeerId, new: PeerId) -> Result<Slot, NetabaseError> {
        let change = MembershipChange::Replace {
            old: to_core(old)?,
            new: to_core(new)?,
        };
        self.change_membership(change).await
    }

    /// This node's view of its cluster; `None` when it is in none.
    pub async fn cluster_status(&self) -> Result<Option<ClusterStatus>, NetabaseError> {
        self.consensus(|reply| ConsensusCommand::Status { reply })
            .await
    }

    /// What became of an entry this node proposed (say after
    /// [`ConsensusError::Indeterminate`]).
    pub async fn consensus_entry_status(&self, id: EntryId) -> Result<EntryStatus, NetabaseError> {
        self.consensus(|reply| ConsensusCommand::EntryStatus { id, reply })
            .await?
    }

    /// Hands leadership to another member, if this node leads: it drops its lease, steps
    /// down and asks the member that answered it most recently to start an election at
    /// once. Returns that member (`None`: this node does not lead). `stop_swarm` does this
    /// on a leader by itself.
    pub async fn transfer_leadership(&self) -> Result<Option<PeerId>, NetabaseError> {
        self.consensus(|reply| ConsensusCommand::Transfer { reply })
            .await?
    }

    /// The entries applied on this node from slot `from` on, in log order, at most
    /// `limit` slots' worth: a lossless feed of every change, which a reader resumes from
    /// the slot after the last one it saw. Slots without entries (leaders' no-ops) are
    /// skipped; an empty answer means nothing from `from` on is applied yet. Slots the
    /// log compacted away fail with [`ConsensusError::Compacted`] (a reader that falls
    /// that far behind reads the state itself, then resumes from the slot it names).
    pub async fn applied_entries(
        &self,
        from: Slot,
        limit: usize,
    ) -> Result<Vec<AppliedEntry>, NetabaseError> {
        self.consensus(|reply| ConsensusCommand::Applied { from, limit, reply })
            .await?
    }

    async fn propose(&self, command: KvCommand) -> Result<Committed, NetabaseError> {
        self.consensus(|reply| ConsensusCommand::Propose { command, reply })
            .await?
    }

    /// Writes `model` through the cluster's log; resolves once the entry is applied on
    /// this node, with its position (the record's version).
    pub async fn put_record_consensus<M>(&self, model: M) -> Result<ConsensusWrite, NetabaseError>
    where
        M: NetabaseModel<Definition = D>,
    {
        let value: D = model.into();
        let key = value.record_key()?.as_bytes().to_vec();
        let value = encode_definition(&value)?;
        let done = self.propose(KvCommand::Put { key, value }).await?;
        Ok(ConsensusWrite {
            id: done.id,
            position: done.position,
        })
    }

    /// Removes the record with primary key `key` through the cluster's log.
    pub async fn remove_record_consensus<K>(&self, key: &K) -> Result<ConsensusWrite, NetabaseError>
    where
        K: PrimaryKey,
        K::Model: NetabaseModel<Definition = D>,
    {
        let key = record_key(key)?.as_bytes().to_vec();
        let done = self.propose(KvCommand::Remove { key }).await?;
        Ok(ConsensusWrite {
            id: done.id,
            position: done.position,
        })
    }

    /// Sets the record with primary key `key` to `new` (`None` removes it) if it holds
    /// `expected` (`None`: absent), atomically through the cluster's log.
    pub async fn compare_and_set_consensus<K>(
        &self,
        key: &K,
        expected: Option<K::Model>,
        new: Option<K::Model>,
    ) -> Result<CompareAndSet, NetabaseError>
    where
        K: PrimaryKey,
        K::Model: NetabaseModel<Definition = D>,
    {
        let record = record_key(key)?.as_bytes().to_vec();
        let encode = |m: Option<K::Model>| -> Result<Option<Vec<u8>>, NetabaseError> {
            m.map(|m| {
                let value: D = m.into();
                encode_definition(&value)
            })
            .transpose()
        };
        let command = KvCommand::CompareAndSet {
            key: record,
            expected: encode(expected)?,
            new: encode(new)?,
        };
        let done = self.propose(command).await?;
        let swapped = matches!(
            KvResponse::decode(&done.response),
            Some(KvResponse::Swapped(true))
        );
        Ok(CompareAndSet {
            swapped,
            position: done.position,
        })
    }

    /// Reads the consensus record with primary key `key` at `level`, with the position
    /// that wrote it. [`ReadLevel::Local`] is this node's applied state, possibly stale.
    pub async fn get_record_consensus<K>(
        &self,
        key: &K,
        level: ReadLevel,
    ) -> Result<Option<(K::Model, Position)>, NetabaseError>
    where
        K: PrimaryKey,
        K::Model: NetabaseModel<Definition = D>,
    {
        let key = record_key(key)?.as_bytes().to_vec();
        let found = self
            .consensus(|reply| ConsensusCommand::Read { key, level, reply })
            .await??;
        match found {
            None => Ok(None),
            Some((bytes, position)) => Ok(Some((decode_model::<K::Model>(&bytes)?, position))),
        }
    }
}
