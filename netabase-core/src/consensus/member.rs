//! One member of a Multi-Paxos cluster (see [`Member`]).

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::message::{Envelope, MAX_MESSAGE_BYTES, Message, SlotValue};
use super::store::{AcceptedValue, LogStore, State};
use super::types::{
    Ballot, ChangeError, ClusterId, Configuration, Entry, EntryId, Instance, MembershipChange,
    Position, Reconfiguration, Slot, Value,
};
use crate::{Instant, PeerId};

/// Master leases: the leader serves [`ReadLevel::Lease`] reads without a quorum round
/// while its lease runs.
///
/// Leases run on the monotonic clock the driver passes as `now`, never on wall time. The
/// leader dates a lease from when it sent the heartbeat round a quorum acknowledged and
/// drops it at `start + duration·(1 − ε) − margin`; an acceptor that acknowledged refuses
/// other candidates for `duration·(1 + ε)` on its own clock, and after a restart waits
/// that long before promising anything. Unsafe on hosts that suspend processes (a
/// suspended leader's clock stops while the others' run); off by default on wasm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The lease's nominal length `D`.
    pub duration: Duration,
    /// The bound ε on the relative rate difference between any two members' clocks, in
    /// parts per million.
    pub drift_ppm: u32,
    /// Subtracted from the leader's end of lease on top of the drift.
    pub margin: Duration,
}

impl LeaseConfig {
    fn scaled(d: Duration, ppm: i64) -> Duration {
        let micros = d.as_micros() as i128 * (1_000_000 + ppm as i128) / 1_000_000;
        Duration::from_micros(micros.max(0) as u64)
    }

    /// `D·(1 + ε)`: how long an acceptor refuses other candidates after granting.
    pub fn acceptor_wait(&self) -> Duration {
        Self::scaled(self.duration, i64::from(self.drift_ppm))
    }

    /// `D·(1 − ε) − margin`: how long the leader relies on a lease from its start.
    pub fn leader_span(&self) -> Duration {
        Self::scaled(self.duration, -i64::from(self.drift_ppm)).saturating_sub(self.margin)
    }
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            duration: Duration::from_millis(400),
            drift_ppm: 10_000,
            margin: Duration::from_millis(20),
        }
    }
}

/// When a member folds the slots its state applied into a snapshot and drops them from
/// its log (log compaction).
///
/// The state written with the log's next sync is the snapshot: the log store writes the
/// truncation in that same durable transaction, so a crash keeps both or neither. A member
/// that asks for slots compacted away receives the state instead, in chunks
/// ([`Message::Snapshot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compaction {
    /// Compact once this many applied slots beyond `keep` are in the log.
    pub entries: u64,
    /// Or once the values applied since the last compaction take this many bytes (as
    /// [`Value::size`] counts them; counted from zero at each start).
    pub bytes: u64,
    /// Applied slots kept behind the truncation point, so that a member a little behind
    /// catches up by entries rather than by a snapshot.
    pub keep: u64,
}

impl Default for Compaction {
    fn default() -> Self {
        Compaction {
            entries: 10_000,
            bytes: 64 << 20,
            keep: 1_000,
        }
    }
}

/// Timing and bounds of a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsensusConfig {
    /// How often the leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// A follower that hears no leader for a random time in `[t, 2t)` starts an election.
    pub election_timeout: Duration,
    /// Unanswered prepares, accepts, forwards and catch-up requests are resent after this.
    pub retry_interval: Duration,
    /// A proposal not applied after this is reported [`Event::Indeterminate`].
    pub proposal_timeout: Duration,
    /// A read not served after this fails with [`ReadFailure::Timeout`].
    pub read_timeout: Duration,
    /// Slots the leader has in flight at once (the pipeline's depth).
    pub concurrency: usize,
    /// Entries per batch (one batch per slot).
    pub max_batch_entries: usize,
    /// Bytes per batch.
    pub max_batch_bytes: usize,
    /// Bytes of one entry's command.
    pub max_entry_bytes: usize,
    /// Entries waiting to be proposed at this member, its own and forwarded ones; a full
    /// queue answers [`ProposeError::Busy`].
    pub max_pending: usize,
    /// Reads waiting at this member.
    pub max_pending_reads: usize,
    /// Slots per catch-up answer.
    pub catch_up_slots: usize,
    /// Master leases, if any.
    pub lease: Option<LeaseConfig>,
    /// A membership change decided at slot `k` is in force from slot `k + alpha`, and
    /// the leader proposes slot `s` only once `s − alpha` is applied. It also caps the
    /// pipeline's depth beside `concurrency`.
    pub alpha: u64,
    /// Entries per second the leader takes from each other member's forwards (a token
    /// bucket holding up to a second's worth); the rest is refused and retried by its
    /// proposer.
    pub forward_rate: u32,
    /// Log compaction; `None` keeps every slot.
    pub compaction: Option<Compaction>,
    /// Bytes per snapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// The largest snapshot this member receives (it holds one transfer in memory);
    /// a larger one is refused and counted.
    pub max_snapshot_bytes: u64,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        ConsensusConfig {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout: Duration::from_millis(600),
            retry_interval: Duration::from_millis(200),
            proposal_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(5),
            concurrency: 16,
            max_batch_entries: 1024,
            max_batch_bytes: 1 << 20,
            max_entry_bytes: 1 << 20,
            max_pending: 16 * 1024,
            max_pending_reads: 16 * 1024,
            catch_up_slots: 64,
            lease: if cfg!(target_arch = "wasm32") {
                None
            } else {
                Some(LeaseConfig::default())
            },
            alpha: 32,
            forward_rate: 100_000,
            compaction: Some(Compaction::default()),
            snapshot_chunk_bytes: 1 << 20,
            max_snapshot_bytes: 1 << 30,
        }
    }
}

/// A [`ConsensusConfig`] that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConsensusConfigError {
    /// A duration or count that must be positive is zero.
    #[error("consensus setting {0} must be positive")]
    Zero(&'static str),
    /// Heartbeats must come well within an election timeout.
    #[error("the heartbeat interval must be below a third of the election timeout")]
    HeartbeatTooSlow,
    /// The election timeout must exceed the acceptors' lease wait `D·(1 + ε)`.
    #[error("the election timeout must exceed the lease duration times (1 + drift)")]
    LeaseTooLong,
    /// A batch, entry or snapshot chunk limit above what one message carries.
    #[error("batch, entry and snapshot chunk sizes must stay below half the message limit")]
    TooLarge,
}

impl ConsensusConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConsensusConfigError> {
        for (name, zero) in [
            ("heartbeat_interval", self.heartbeat_interval.is_zero()),
            ("election_timeout", self.election_timeout.is_zero()),
            ("retry_interval", self.retry_interval.is_zero()),
            ("proposal_timeout", self.proposal_timeout.is_zero()),
            ("read_timeout", self.read_timeout.is_zero()),
            ("concurrency", self.concurrency == 0),
            ("max_batch_entries", self.max_batch_entries == 0),
            ("max_batch_bytes", self.max_batch_bytes == 0),
            ("max_entry_bytes", self.max_entry_bytes == 0),
            ("max_pending", self.max_pending == 0),
            ("max_pending_reads", self.max_pending_reads == 0),
            ("catch_up_slots", self.catch_up_slots == 0),
            ("alpha", self.alpha == 0),
            ("forward_rate", self.forward_rate == 0),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes == 0),
            ("max_snapshot_bytes", self.max_snapshot_bytes == 0),
            (
                "compaction.entries",
                self.compaction.is_some_and(|c| c.entries == 0),
            ),
            (
                "compaction.bytes",
                self.compaction.is_some_and(|c| c.bytes == 0),
            ),
        ] {
            if zero {
                return Err(ConsensusConfigError::Zero(name));
            }
        }
        if self.heartbeat_interval * 3 > self.election_timeout {
            return Err(ConsensusConfigError::HeartbeatTooSlow);
        }
        if let Some(lease) = self.lease {
            if lease.duration.is_zero() {
                return Err(ConsensusConfigError::Zero("lease.duration"));
            }
            if lease.acceptor_wait() >= self.election_timeout {
                return Err(ConsensusConfigError::LeaseTooLong);
            }
        }
        if self.max_batch_bytes > MAX_MESSAGE_BYTES / 2
            || self.max_entry_bytes > self.max_batch_bytes
            || self.snapshot_chunk_bytes > MAX_MESSAGE_BYTES / 2
        {
            return Err(ConsensusConfigError::TooLarge);
        }
        Ok(())
    }

    /// How long an acceptor keeps following a leader it heard: the election timeout, or
    /// the lease wait if longer.
    fn stickiness(&self) -> Duration {
        let lease = self.lease.map(|l| l.acceptor_wait()).unwrap_or_default();
        self.election_timeout.max(lease)
    }
}

/// Who a member is: its own id, its cluster, and the members it starts from.
///
/// A log that knows its configurations (every restart) keeps them and takes `members`
/// only as contacts. An empty log takes `members` as the cluster's first configuration
/// if it lists this member (the members a cluster is created with), and otherwise joins:
/// it trusts `members` as contacts, learns the log as a non-voter, and votes once a
/// configuration it learns from the log makes it a voter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// This member's id.
    pub local: PeerId,
    /// The cluster.
    pub cluster: ClusterId,
    /// The first configuration, or the contacts of a member joining.
    pub members: Configuration,
    /// More peers whose messages this member takes besides the members of its
    /// configurations: the cluster's members as the operator knows them, so that a member
    /// that joins, lags behind a change or is added again hears a leader it has not
    /// learned of yet. Their votes count only where a configuration makes them voters.
    pub contacts: BTreeSet<PeerId>,
}

/// Why a member cannot start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The settings are invalid.
    #[error(transparent)]
    Config(#[from] ConsensusConfigError),
    /// The log belongs to another cluster.
    #[error("the consensus log belongs to cluster {found}, not {expected}")]
    WrongCluster {
        /// The cluster asked for.
        expected: ClusterId,
        /// The cluster in the log.
        found: ClusterId,
    },
    /// The log was compacted past what the state applied: the state is not the one
    /// written with the log.
    #[error(
        "the log is compacted through slot {truncated} but the state is applied only through {applied}"
    )]
    StateBehind {
        /// The state's applied slot.
        applied: Slot,
        /// The log's truncation point.
        truncated: Slot,
    },
    /// The state claims more applied than the log holds chosen.
    #[error(
        "the state is applied through slot {applied} but the log is chosen only through {chosen}"
    )]
    StateAhead {
        /// The state's applied slot.
        applied: Slot,
        /// The log's chosen prefix.
        chosen: Slot,
    },
}

/// Why a proposal was refused at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// The command is larger than `max_entry_bytes`.
    #[error("command of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The command's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The proposal queue is full.
    #[error("the proposal queue is full")]
    Busy,
    /// The membership change cannot be made.
    #[error("the membership change is refused: {0}")]
    Membership(#[from] ChangeError),
    /// This member knows no configuration yet (it joins and was not added).
    #[error("this member knows no configuration of its cluster yet")]
    NoConfiguration,
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadLevel {
    /// Sees every write acknowledged before the read began: the leader's commit index
    /// confirmed by a quorum heartbeat in its current ballot, applied locally first.
    Linearizable,
    /// Like linearizable, but the leader answers from its lease without a quorum round;
    /// relies on the clock drift bound. Falls back to a quorum round without a lease.
    Lease,
    /// This member's applied state as it is: possibly stale, never blocked.
    Local,
}

/// A read's handle, named in [`Event::ReadReady`] and [`Event::ReadFailed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadId(pub u64);

/// Why a read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadFailure {
    /// No leader confirmed a read index in time.
    #[error("no leader confirmed the read in time")]
    Timeout,
    /// Too many reads wait already.
    #[error("too many reads are waiting")]
    Busy,
}

/// What the member tells the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An entry this member proposed is applied here.
    Committed {
        /// The entry.
        id: EntryId,
        /// Where it landed: its version.
        position: Position,
        /// The state's answer.
        response: Vec<u8>,
        /// The id was applied before (a retry); `response` is the first answer.
        duplicate: bool,
    },
    /// An entry this member proposed was not applied within the proposal timeout: it may
    /// still be applied later, or never. [`Member::entry_status`] tells later.
    Indeterminate {
        /// The entry.
        id: EntryId,
    },
    /// A slot was applied to the state (every member sees every slot once, in order).
    Applied {
        /// The slot.
        slot: Slot,
        /// The ids of its entries, in batch order.
        entries: Vec<EntryId>,
    },
    /// The read may run against the state now.
    ReadReady {
        /// The read.
        read: ReadId,
    },
    /// The read cannot be served.
    ReadFailed {
        /// The read.
        read: ReadId,
        /// Why.
        reason: ReadFailure,
    },
    /// A membership change was applied: `configuration` is in force from slot `from`.
    Configuration {
        /// The first slot of the configuration.
        from: Slot,
        /// The configuration.
        configuration: Configuration,
    },
    /// A membership change this member asked for was decided.
    ChangeDone {
        /// The change's id.
        id: EntryId,
        /// The first slot of the new configuration, or why the change was refused.
        result: Result<Slot, ChangeError>,
    },
    /// The state jumped to `slot` by installing a snapshot from another member: the
    /// slots up to it that [`Event::Applied`] did not report were compacted away there.
    SnapshotInstalled {
        /// The slot the state is now applied through.
        slot: Slot,
    },
    /// The leader this member follows changed.
    Leader {
        /// The leader, if one is known.
        leader: Option<PeerId>,
        /// Its ballot's round.
        round: u64,
    },
}

/// An effect for the driver to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send a message to a member.
    Send {
        /// The member.
        to: PeerId,
        /// The message, with the cluster id.
        envelope: Envelope,
    },
    /// Tell the application.
    Event(Event),
}

impl Output {
    /// Whether the driver must make the log durable before carrying this out: promises
    /// and accepted votes report durable state. Proposals, heartbeats, commits and
    /// catch-up leave at once; events report states quorums made durable.
    pub fn waits_for_sync(&self) -> bool {
        matches!(
            self,
            Output::Send {
                envelope: Envelope {
                    message: Message::Promise { .. } | Message::Accepted { .. },
                    ..
                },
                ..
            }
        )
    }
}

/// What became of an entry id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryStatus {
    /// Applied, with the state's answer (empty if the answer was forgotten).
    Applied(Vec<u8>),
    /// Proposed here and not yet applied nor given up.
    Pending,
    /// Not known to be applied: it may still be, if it is in flight somewhere.
    Unknown,
}

/// The member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Gathers promises.
    Candidate,
    /// Leads.
    Leader,
}

/// Counters of a member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsensusStats {
    /// Elections this member started.
    pub elections: u64,
    /// Elections it won.
    pub terms_led: u64,
    /// Slots this member saw chosen as leader.
    pub slots_committed: u64,
    /// Client entries in those slots.
    pub entries_committed: u64,
    /// Entries applied that were duplicates of an earlier application.
    pub dedup_hits: u64,
    /// Reads served, per level: linearizable, lease, local.
    pub reads: [u64; 3],
    /// Lease reads the leader answered from its lease.
    pub lease_reads: u64,
    /// Catch-up answers sent.
    pub catch_ups: u64,
    /// Messages ignored: from non-members, of another cluster, or out of bounds.
    pub refused: u64,
    /// Forwarded entries the leader refused (queue full).
    pub forwards_refused: u64,
    /// Promises this acceptor refused because it follows a live leader.
    pub sticky_refusals: u64,
    /// Leaderships handed to this member (it started an election on request).
    pub transfers_received: u64,
    /// Log syncs the member waited for.
    pub syncs: u64,
    /// Membership changes applied (refused ones not counted).
    pub config_changes: u64,
    /// Votes and promises not counted because their sender's instance is not the one
    /// its configuration binds (a member whose data was wiped).
    pub stale_instances: u64,
    /// Compactions of this member's log.
    pub compactions: u64,
    /// Snapshots this member froze to send.
    pub snapshots_frozen: u64,
    /// Snapshot chunks it sent.
    pub snapshot_chunks_sent: u64,
    /// Snapshots it installed.
    pub snapshot_installs: u64,
    /// Snapshot chunks or images it refused: too large, out of bounds, a digest or image
    /// that does not check.
    pub snapshots_refused: u64,
    /// Elections it gave up because an acceptor had compacted slots it lacks (it catches
    /// up first).
    pub behind_compaction: u64,
}

struct Outstanding {
    entry: Entry,
    /// A membership change travels under the entry's id instead of a command.
    change: Option<MembershipChange>,
    since: Instant,
    last_sent: Instant,
}

enum ReadOrigin {
    Local(ReadId, ReadLevel),
    Remote {
        peer: PeerId,
        request: u64,
        lease: bool,
    },
}

enum ReadStage {
    /// Waits for a leader to ask (followers) or for the leader's no-op (leaders).
    Leader { sent: Option<Instant> },
    /// The leader waits for a quorum to acknowledge heartbeat round `seq`.
    Quorum { seq: u64, index: Slot },
    /// Waits until the state is applied through `index`.
    Applied { index: Slot },
}

struct PendingRead {
    origin: ReadOrigin,
    deadline: Instant,
    stage: ReadStage,
}

struct Inflight {
    value: Value,
    votes: BTreeSet<PeerId>,
    last_sent: Instant,
}

struct Candidate {
    ballot: Ballot,
    from: Slot,
    last_sent: Instant,
    complete: BTreeSet<PeerId>,
    partial: BTreeSet<PeerId>,
    refusals: BTreeSet<PeerId>,
    best: BTreeMap<Slot, SlotValue>,
    self_durable: bool,
}

struct Leader {
    ballot: Ballot,
    /// The next slot to propose in; slots are proposed in order.
    next_slot: Slot,
    inflight: BTreeMap<Slot, Inflight>,
    noop_slot: Slot,
    /// Slots up to here are proposed with the value phase 1 found, or a no-op, never
    /// with new entries.
    fill_to: Slot,
    /// What phase 1 (and promises gathered later) found accepted in slots not proposed yet.
    best: BTreeMap<Slot, SlotValue>,
    /// Members whose promise for this ballot is complete.
    promised: BTreeSet<PeerId>,
    /// When prepares went to members of a configuration short of a quorum of promises.
    prepare_sent: Option<(Slot, Instant)>,
    /// Membership changes waiting, with their ids.
    changes: VecDeque<(EntryId, MembershipChange)>,
    /// The slot of the change proposed last, until it is applied.
    change_slot: Option<Slot>,
    /// With nothing else to propose, the leader fills slots below this one with no-ops, so
    /// that a configuration decided in an idle cluster comes into force.
    activate_by: Slot,
    /// Every slot up to here is chosen at each member, as its heartbeat acks say.
    progress: BTreeMap<PeerId, Slot>,
    /// Each member's forward budget: entries it may still forward, and when it was
    /// last refilled.
    forward_budget: BTreeMap<PeerId, (u64, Instant)>,
    queue: VecDeque<Entry>,
    queued: BTreeSet<EntryId>,
    /// Entries in `queue`, per proposer (each proposer's share of the queue is bounded).
    waiting_by: BTreeMap<PeerId, usize>,
    hb_seq: u64,
    hb_sent: BTreeMap<u64, Instant>,
    acked: BTreeMap<PeerId, u64>,
    next_heartbeat: Instant,
    confirmed_at: Instant,
    lease_until: Instant,
}

enum Phase {
    Follower,
    Candidate(Candidate),
    Leader(alloc::boxed::Box<Leader>),
}

enum Deferred {
    Promise(Ballot),
    Vote(Ballot, Slot),
}

/// One member of a Multi-Paxos cluster: acceptor, learner and, when elected, the
/// distinguished proposer (leader).
///
/// # Driving contract
///
/// Like [`crate::Node`], a member never reads a clock, never sleeps and never does I/O.
/// The driver:
/// - hands in every consensus message with [`Self::handle_message`] (the sender's
///   `PeerId` as the transport authenticated it) and API calls ([`Self::propose`],
///   [`Self::read`]);
/// - calls [`Self::handle_timeout`] at or after [`Self::poll_timeout`];
/// - drains [`Self::poll_output`] after every call, and before carrying out an output
///   for which [`Output::waits_for_sync`] holds, makes every log write so far durable and
///   calls [`Self::synced`]; it also syncs whenever [`Self::needs_sync`] holds with no
///   output pending (the leader's own vote counts only once it is durable).
///
/// # The protocol
///
/// Classic Multi-Paxos with a distinguished leader. A member that hears no leader for a
/// randomized election timeout prepares a ballot above every round it has seen, for every
/// slot above its chosen prefix; acceptors promise (durably) and report what they
/// accepted, in chunks. With a quorum of promises the candidate re-proposes the value of
/// the highest ballot in every open slot, fills gaps with no-ops (autofill), and appends a
/// no-op of its own ballot; it serves reads once that no-op is applied. Client entries are
/// batched, one batch per slot, with up to `concurrency` slots in flight. A value is chosen
/// when a quorum accepted it (the leader's own vote counts once durable); commits travel by
/// id, never repeating the value: every accept and heartbeat carries the leader's commit
/// index, and a follower marks chosen each slot within it that it accepted in that
/// ballot (a [`Message::Commit`] names one slot and ballot the same way). Followers learn
/// gaps by catch-up. A leader can hand over ([`Member::transfer_leadership`]). Acceptors ignore prepares while they hear a live leader (leader stickiness),
/// so a member returning from a partition cannot depose a healthy leader.
///
/// Reads come at three levels ([`ReadLevel`]): linearizable (read index confirmed by a
/// quorum heartbeat round of the current ballot), lease (the leader's lease, dated from
/// before it asked, shortened by the drift bound), local (possibly stale).
pub struct Member<L, S> {
    config: ConsensusConfig,
    local: PeerId,
    cluster: ClusterId,
    /// Configurations by the first slot they are in force for.
    configs: BTreeMap<Slot, Configuration>,
    /// Peers trusted before this member knows a configuration that includes it.
    contacts: BTreeSet<PeerId>,
    instance: Instance,
    /// The instance each peer's last message named.
    instances: BTreeMap<PeerId, Instance>,
    log: L,
    state: S,
    rng: ChaCha8Rng,
    phase: Phase,
    max_round: u64,
    leader: Option<Ballot>,
    leader_contact: Option<Instant>,
    election_deadline: Instant,
    promise_blocked_until: Instant,
    committed: Slot,
    leader_committed: Slot,
    catch_up_sent: Option<Instant>,
    /// A contact outside this member's configurations that leads, and its ballot.
    catch_up_from: Option<(PeerId, Ballot)>,
    incarnation: u32,
    next_seq: u64,
    durable_once: bool,
    outstanding: BTreeMap<EntryId, Outstanding>,
    waiting: VecDeque<EntryId>,
    reads: BTreeMap<u64, PendingRead>,
    next_read: u64,
    outputs: VecDeque<Output>,
    /// The queued entries are proposed at the next `poll_output`, dated this.
    pump_at: Option<Instant>,
    deferred: Vec<Deferred>,
    stats: ConsensusStats,
    /// Bytes of the values applied since the last compaction.
    log_bytes: u64,
    /// The snapshot this member sends, frozen once and sent in chunks.
    serving: Option<snapshot::Serving>,
    /// The snapshot this member receives.
    receiving: Option<snapshot::Receiving>,
    #[cfg(any(test, feature = "fault-injection"))]
    mutant: Option<super::Mutant>,
}

/// Whether the planted bug `$m` is on (never, without the `fault-injection` feature).
macro_rules! planted {
    ($self:ident, $m:ident) => {{
        #[cfg(any(test, feature = "fault-injection"))]
        let on = $self.mutant == Some(super::Mutant::$m);
        #[cfg(not(any(test, feature = "fault-injection")))]
        let on = false;
        on
    }};
}

impl<L: LogStore, S: State> Member<L, S> {
    /// Starts (or restarts) a member as `membership` says, over its log
    /// and state. The state is brought up to the log's chosen prefix at once (replay);
    /// proposals made before the first [`synced`](Member::synced) wait for it, since
    /// entry ids use the incarnation this call records.
    pub fn new(
        config: ConsensusConfig,
        membership: Membership,
        mut log: L,
        state: S,
        seed: u64,
        now: Instant,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let Membership {
            local,
            cluster,
            members,
            mut contacts,
        } = membership;
        match log.cluster() {
            Some(found) if found != cluster => {
                return Err(StartError::WrongCluster {
                    expected: cluster,
                    found,
                });
            }
            Some(_) => {}
            None => log.set_cluster(cluster),
        }
        let incarnation = log.incarnation().wrapping_add(1);
        log.set_incarnation(incarnation);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut instance = log.instance();
        if instance == 0 {
            instance = rng.next_u64().max(1);
            log.set_instance(instance);
        }
        let mut configs: BTreeMap<Slot, Configuration> = log.configurations().into_iter().collect();
        contacts.extend(members.peers().copied());
        contacts.remove(&local);
        if configs.is_empty() && members.contains(&local) {
            log.put_configuration(0, members.clone());
            configs.insert(0, members);
        }
        let max_round = log.promised().map(|b| b.round).unwrap_or(0);
        let promise_blocked_until = config
            .lease
            .map(|l| now + l.acceptor_wait())
            .unwrap_or(Instant::ZERO);
        let mut member = Member {
            local,
            cluster,
            configs,
            contacts,
            instance,
            instances: BTreeMap::new(),
            log,
            state,
            rng,
            phase: Phase::Follower,
            max_round,
            leader: None,
            leader_contact: None,
            election_deadline: now,
            promise_blocked_until,
            committed: 0,
            leader_committed: 0,
            catch_up_sent: None,
            catch_up_from: None,
            incarnation,
            next_seq: 0,
            durable_once: false,
            outstanding: BTreeMap::new(),
            waiting: VecDeque::new(),
            reads: BTreeMap::new(),
            // Read numbers, like entry ids, never repeat across restarts: a late answer
            // to a read of an earlier incarnation must not complete a new one.
            next_read: u64::from(incarnation) << 32,
            outputs: VecDeque::new(),
            pump_at: None,
            deferred: Vec::new(),
            stats: ConsensusStats::default(),
            log_bytes: 0,
            serving: None,
            receiving: None,
            config,
            #[cfg(any(test, feature = "fault-injection"))]
            mutant: None,
        };
        if member.state.applied() < member.log.truncated() {
            return Err(StartError::StateBehind {
                applied: member.state.applied(),
                truncated: member.log.truncated(),
            });
        }
        member.committed = member.state.applied();
        member.advance_committed();
        if member.state.applied() > member.committed {
            return Err(StartError::StateAhead {
                applied: member.state.applied(),
                chosen: member.committed,
            });
        }
        member.reset_election(now);
        member.apply_committed(now);
        Ok(member)
    }

    /// Plants `mutant` in this member, for checkers to catch (feature `fault-injection`;
    /// never in a production build).
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn inject(&mut self, mutant: super::Mutant) {
        self.mutant = Some(mutant);
        if mutant == super::Mutant::NoLeaseWaitAfterRestart {
            // A restarted member promises at once instead of waiting out the leases it
            // may have granted before the crash.
            self.promise_blocked_until = Instant::ZERO;
        }
    }

    // ----- accessors -------------------------------------------------------------------

    /// This member's id.
    pub fn local(&self) -> PeerId {
        self.local
    }

    /// The cluster.
    pub fn cluster(&self) -> ClusterId {
        self.cluster
    }

    /// The configuration of the next slot to apply (empty while a joining member knows
    /// none).
    pub fn configuration(&self) -> Configuration {
        self.cluster_at(self.state.applied() + 1)
            .cloned()
            .unwrap_or_default()
    }

    /// The configuration in force at `slot`, if known (the seed's `cluster_at`).
    pub fn cluster_at(&self, slot: Slot) -> Option<&Configuration> {
        self.configs.range(..=slot).next_back().map(|(_, c)| c)
    }

    /// Every configuration this member knows, by the first slot it is in force for.
    pub fn configurations(&self) -> &BTreeMap<Slot, Configuration> {
        &self.configs
    }

    /// The newest configuration this member knows, in force now or scheduled.
    pub fn latest_configuration(&self) -> Option<&Configuration> {
        self.configs.values().next_back()
    }

    /// This member's instance.
    pub fn instance(&self) -> Instance {
        self.instance
    }

    /// Whether the newest configuration binds this member as a voter to another instance:
    /// its data was wiped, and it votes again only once removed and added anew.
    pub fn is_stale_instance(&self) -> bool {
        self.latest_configuration()
            .and_then(|c| c.voters.get(&self.local))
            .is_some_and(|bound| *bound != 0 && *bound != self.instance)
    }

    /// The settings.
    pub fn config(&self) -> &ConsensusConfig {
        &self.config
    }

    /// The role now.
    pub fn role(&self) -> Role {
        match self.phase {
            Phase::Follower => Role::Follower,
            Phase::Candidate(_) => Role::Candidate,
            Phase::Leader(_) => Role::Leader,
        }
    }

    /// The leader this member follows or is, if known.
    pub fn leader(&self) -> Option<PeerId> {
        match &self.phase {
            Phase::Leader(l) => Some(l.ballot.leader),
            _ => self.leader.map(|b| b.leader),
        }
    }

    /// The highest round seen.
    pub fn round(&self) -> u64 {
        self.max_round
    }

    /// Every slot up to this one is known chosen here.
    pub fn committed(&self) -> Slot {
        self.committed
    }

    /// Every slot up to this one is applied to the state.
    pub fn applied(&self) -> Slot {
        self.state.applied()
    }

    /// The replicated state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The log.
    pub fn log(&self) -> &L {
        &self.log
    }

    /// The log, for the driver's sync.
    pub fn log_mut(&mut self) -> &mut L {
        &mut self.log
    }

    /// The log and state, for a restart.
    pub fn into_parts(self) -> (L, S) {
        (self.log, self.state)
    }

    /// Counters.
    pub fn stats(&self) -> &ConsensusStats {
        &self.stats
    }

    /// Whether the leader holds a lease at `now`.
    pub fn has_lease(&self, now: Instant) -> bool {
        matches!(&self.phase, Phase::Leader(l) if now < l.lease_until)
    }

    /// On a leader, how far behind it each other member of the configurations still
    /// deciding slots is: the leader's chosen prefix minus the member's, as its last
    /// heartbeat acknowledgement said (a member never heard from counts from 0). Empty on
    /// other members.
    pub fn follower_lag(&self) -> Vec<(PeerId, Slot)> {
        let Phase::Leader(l) = &self.phase else {
            return Vec::new();
        };
        self.audience()
            .into_iter()
            .map(|p| {
                let seen = l.progress.get(&p).copied().unwrap_or(0);
                (p, self.committed.saturating_sub(seen))
            })
            .collect()
    }

    /// Entries proposed here and not yet applied or given up.
    pub fn pending_proposals(&self) -> usize {
        self.outstanding.len()
    }

    /// What became of `id`, as far as this member knows.
    pub fn entry_status(&self, id: &EntryId) -> EntryStatus {
        if let Some(response) = self.state.applied_response(id) {
            EntryStatus::Applied(response)
        } else if self.outstanding.contains_key(id) {
            EntryStatus::Pending
        } else {
            EntryStatus::Unknown
        }
    }

    /// Whether writes wait for a sync before they count.
    pub fn needs_sync(&self) -> bool {
        !self.deferred.is_empty() || !self.durable_once
    }

    // ----- driving ---------------------------------------------------------------------

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        // Entries queued by the inputs handled since the last drain go out now, together:
        // every proposal that arrived in one burst shares a slot.
        if let Some(now) = self.pump_at.take() {
            self.pump(now);
        }
        self.outputs.pop_front()
    }

    /// Asks for the queued entries to be proposed at the next [`poll_output`](Self::poll_output).
    fn pump_due(&mut self, now: Instant) {
        self.pump_at = Some(self.pump_at.map_or(now, |at| at.max(now)));
    }

    /// Tells the member every log write so far is durable.
    pub fn synced(&mut self, now: Instant) {
        self.stats.syncs += 1;
        if !self.durable_once {
            self.durable_once = true;
            while let Some(id) = self.waiting.pop_front() {
                self.route(id);
            }
        }
        for d in core::mem::take(&mut self.deferred) {
            match d {
                Deferred::Promise(ballot) => {
                    if let Phase::Candidate(c) = &mut self.phase
                        && c.ballot == ballot
                    {
                        c.self_durable = true;
                    }
                    self.check_promises(now);
                }
                Deferred::Vote(ballot, slot) => {
                    let local = self.local;
                    if let Phase::Leader(l) = &mut self.phase
                        && l.ballot == ballot
                        && let Some(f) = l.inflight.get_mut(&slot)
                    {
                        f.votes.insert(local);
                    }
                    self.check_chosen(now, slot);
                }
            }
        }
        self.pump_due(now);
    }

    /// When [`handle_timeout`](Member::handle_timeout) wants to run next.
    pub fn poll_timeout(&self) -> Instant {
        let mut next = Instant::MAX;
        match &self.phase {
            Phase::Leader(l) => {
                next = next.min(l.next_heartbeat);
                for f in l.inflight.values() {
                    next = next.min(f.last_sent + self.config.retry_interval);
                }
                if let Some((_, at)) = l.prepare_sent {
                    next = next.min(at + self.config.retry_interval);
                }
            }
            Phase::Candidate(c) => {
                next = next.min(c.last_sent + self.config.retry_interval);
                next = next.min(self.election_deadline);
            }
            Phase::Follower => next = next.min(self.election_deadline),
        }
        for o in self.outstanding.values() {
            next = next.min(o.last_sent + self.config.retry_interval);
            next = next.min(o.since + self.config.proposal_timeout);
        }
        for r in self.reads.values() {
            next = next.min(r.deadline);
            if let ReadStage::Leader { sent: Some(at) } = r.stage {
                next = next.min(at + self.config.retry_interval);
            }
            // A follower's read waits for a leader (elected by then); a leader's waits
            // for its no-op, which applying wakes, not a timer.
            if matches!(r.stage, ReadStage::Leader { sent: None })
                && !matches!(self.phase, Phase::Leader(_))
            {
                next = next.min(self.election_deadline);
            }
        }
        if let Some(at) = self.catch_up_sent {
            next = next.min(at + self.config.retry_interval);
        }
        next
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let retry = self.config.retry_interval;
        match &mut self.phase {
            Phase::Follower => {
                if now >= self.election_deadline {
                    self.start_election(now);
                }
            }
            Phase::Candidate(c) => {
                if now >= self.election_deadline {
                    self.start_election(now);
                } else if now >= c.last_sent + retry {
                    c.last_sent = now;
                    let (ballot, from) = (c.ballot, c.from);
                    let asked: BTreeSet<PeerId> = c.complete.union(&c.partial).copied().collect();
                    let waiting: Vec<PeerId> = self
                        .electorate(from)
                        .into_iter()
                        .filter(|p| !asked.contains(p))
                        .collect();
                    for p in waiting {
                        self.send(p, Message::Prepare { ballot, from });
                    }
                }
            }
            Phase::Leader(l) => {
                if now.saturating_duration_since(l.confirmed_at) > self.config.election_timeout {
                    // No quorum heard this leader for a whole election timeout: it steps
                    // down so that clients fail over instead of waiting on it.
                    self.step_down(now);
                } else {
                    if now >= l.next_heartbeat {
                        self.heartbeat(now);
                    }
                    self.resend_accepts(now);
                    // Late prepares to a configuration short of promises are resent by
                    // the pump, if they are still needed.
                    if let Phase::Leader(l) = &mut self.phase
                        && l.prepare_sent.is_some_and(|(_, at)| now >= at + retry)
                    {
                        l.prepare_sent = None;
                        self.pump(now);
                    }
                }
            }
        }
        if let Some(at) = self.catch_up_sent
            && now >= at + retry
        {
            self.catch_up_sent = None;
            self.maybe_catch_up(now);
        }
        self.retry_outstanding(now);
        self.retry_reads(now);
    }

    /// Handles a message from `from` (as the transport authenticated it).
    pub fn handle_message(&mut self, now: Instant, from: PeerId, envelope: Envelope) {
        if envelope.cluster != self.cluster || from == self.local {
            self.stats.refused += 1;
            return;
        }
        if !self.knows(&from) {
            if self.contacts.contains(&from) {
                self.on_contact_message(now, from, envelope.message);
            } else {
                self.stats.refused += 1;
            }
            return;
        }
        if envelope.instance != 0 {
            self.instances.insert(from, envelope.instance);
            let bound = self
                .latest_configuration()
                .and_then(|c| c.voters.get(&from).copied());
            if bound.is_some_and(|b| b != 0 && b != envelope.instance)
                && matches!(
                    envelope.message,
                    Message::Promise { .. } | Message::Accepted { .. }
                )
            {
                // Its vote will not count: the member lost the data it voted with.
                self.stats.stale_instances += 1;
            }
        }
        match envelope.message {
            Message::Prepare { ballot, from: slot } => self.on_prepare(now, from, ballot, slot),
            Message::Promise {
                ballot,
                accepted,
                next,
                truncated,
            } => self.on_promise(now, from, ballot, accepted, next, truncated),
            Message::Nack {
                ballot,
                promised,
                leader_alive,
            } => self.on_nack(now, from, ballot, promised, leader_alive),
            Message::Accept {
                ballot,
                slot,
                value,
                committed,
            } => self.on_accept(now, from, ballot, slot, value, committed),
            Message::Accepted { ballot, slot } => self.on_accepted(now, from, ballot, slot),
            Message::Commit { ballot, slot } => self.on_commit(now, from, ballot, slot),
            Message::Heartbeat {
                ballot,
                committed,
                seq,
            } => self.on_heartbeat(now, from, ballot, committed, seq),
            Message::HeartbeatAck {
                ballot,
                seq,
                committed,
            } => self.on_heartbeat_ack(now, from, ballot, seq, committed),
            Message::CatchUp { from: slot } => self.on_catch_up(now, from, slot),
            Message::Entries { entries } => self.on_entries(now, from, entries),
            Message::Snapshot(chunk) => self.on_snapshot(now, from, chunk),
            Message::SnapshotNext {
                slot,
                digest,
                offset,
            } => self.serve_snapshot(now, from, Some((slot, digest)), offset),
            Message::Forward { entries } => self.on_forward(now, from, entries),
            Message::ReadIndex { request, lease } => self.on_read_index(now, from, request, lease),
            Message::ReadIndexReply { request, index } => {
                self.on_read_index_reply(now, request, index)
            }
            Message::Relinquish { ballot } => {
                if from == ballot.leader && self.leader == Some(ballot) {
                    self.leader = None;
                    self.leader_contact = None;
                    self.emit(Event::Leader {
                        leader: None,
                        round: ballot.round,
                    });
                }
            }
            Message::TimeoutNow { ballot } => {
                if from == ballot.leader
                    && self.leader == Some(ballot)
                    && matches!(self.phase, Phase::Follower)
                {
                    self.stats.transfers_received += 1;
                    self.leader = None;
                    self.leader_contact = None;
                    self.start_election(now);
                }
            }
            Message::ChangeMembership { id, change } => {
                self.on_change_membership(now, from, id, *change)
            }
        }
    }

    /// Hands leadership over (a leader about to stop, or asked to): drops its lease,
    /// steps down, tells every follower it gave up its ballot, and asks the member that
    /// acknowledged its heartbeats most recently to start an election at once. Returns
    /// the member asked, or `None` when this member does not lead or has no other member
    /// to ask. Entries it had not proposed yet are retried by their proposers.
    pub fn transfer_leadership(&mut self, now: Instant) -> Option<PeerId> {
        let Phase::Leader(l) = &self.phase else {
            return None;
        };
        let ballot = l.ballot;
        let latest = self.latest_configuration()?;
        let target = l
            .acked
            .iter()
            .filter(|(peer, _)| latest.votes(peer, self.instance_of(peer)))
            .max_by_key(|(peer, seq)| (**seq, **peer))
            .map(|(peer, _)| *peer)?;
        self.step_down(now);
        self.leader_contact = None;
        // The target hears of it through the request to take over (a relinquish reaching
        // it first would make it forget the ballot that request names).
        let others: Vec<PeerId> = self
            .audience()
            .into_iter()
            .filter(|p| *p != target)
            .collect();
        for p in others {
            self.send(p, Message::Relinquish { ballot });
        }
        self.send(target, Message::TimeoutNow { ballot });
        Some(target)
    }

    /// Decodes and handles a message's bytes; malformed bytes are counted and dropped.
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        from: PeerId,
        bytes: &[u8],
    ) -> Result<(), super::WireError> {
        match Envelope::decode(bytes) {
            Ok(envelope) => {
                self.handle_message(now, from, envelope);
                Ok(())
            }
            Err(e) => {
                self.stats.refused += 1;
                Err(e)
            }
        }
    }

    // ----- client API ------------------------------------------------------------------

    /// Proposes `command`; its outcome arrives as [`Event::Committed`] (or
    /// [`Event::Indeterminate`]) naming the returned id.
    pub fn propose(&mut self, now: Instant, command: Vec<u8>) -> Result<EntryId, ProposeError> {
        if command.len() > self.config.max_entry_bytes {
            return Err(ProposeError::TooLarge {
                size: command.len(),
                max: self.config.max_entry_bytes,
            });
        }
        self.submit(now, command, None)
    }

    /// Asks for a membership change; [`Event::ChangeDone`] names the returned id once it
    /// is decided (or [`Event::Indeterminate`] after the proposal timeout). The change is
    /// checked against the newest configuration this member knows, and again by the
    /// leader when it proposes it.
    pub fn change_membership(
        &mut self,
        now: Instant,
        change: MembershipChange,
    ) -> Result<EntryId, ProposeError> {
        let latest = self
            .latest_configuration()
            .ok_or(ProposeError::NoConfiguration)?;
        latest.changed(&change)?;
        self.submit(now, Vec::new(), Some(change))
    }

    fn next_id(&mut self) -> EntryId {
        self.next_seq += 1;
        EntryId {
            proposer: self.local,
            seq: (u64::from(self.incarnation) << 32) | self.next_seq,
        }
    }

    fn submit(
        &mut self,
        now: Instant,
        command: Vec<u8>,
        change: Option<MembershipChange>,
    ) -> Result<EntryId, ProposeError> {
        if self.outstanding.len() >= self.config.max_pending {
            return Err(ProposeError::Busy);
        }
        let id = self.next_id();
        self.outstanding.insert(
            id,
            Outstanding {
                entry: Entry { id, command },
                change,
                since: now,
                last_sent: now,
            },
        );
        if self.durable_once {
            self.route(id);
            self.pump_due(now);
        } else {
            self.waiting.push_back(id);
        }
        Ok(id)
    }

    /// Starts a read at `level`; [`Event::ReadReady`] says when the state may be read.
    pub fn read(&mut self, now: Instant, level: ReadLevel) -> Result<ReadId, ReadFailure> {
        if self.reads.len() >= self.config.max_pending_reads {
            return Err(ReadFailure::Busy);
        }
        self.next_read += 1;
        let id = ReadId(self.next_read);
        if level == ReadLevel::Local {
            self.stats.reads[2] += 1;
            self.emit(Event::ReadReady { read: id });
            return Ok(id);
        }
        let key = self.next_read;
        self.reads.insert(
            key,
            PendingRead {
                origin: ReadOrigin::Local(id, level),
                deadline: now + self.config.read_timeout,
                stage: ReadStage::Leader { sent: None },
            },
        );
        self.advance_read(now, key);
        Ok(id)
    }

    // ----- internals: output -----------------------------------------------------------

    fn send(&mut self, to: PeerId, message: Message) {
        // The instance is named only once it is durable: a crash before the first sync
        // mints another, and peers must not bind the one that was lost. Promises and
        // votes leave after a sync anyway.
        let durable = self.durable_once
            || matches!(message, Message::Promise { .. } | Message::Accepted { .. });
        self.outputs.push_back(Output::Send {
            to,
            envelope: Envelope {
                cluster: self.cluster,
                instance: if durable { self.instance } else { 0 },
                message,
            },
        });
    }

    /// Sends `message` to every peer of the configurations still deciding slots.
    fn broadcast(&mut self, message: Message) {
        for p in self.audience() {
            self.send(p, message.clone());
        }
    }

    fn emit(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    fn reset_election(&mut self, now: Instant) {
        let base = self.config.election_timeout.as_micros() as u64;
        let jitter = self.rng.next_u64() % base.max(1);
        self.election_deadline = now + Duration::from_micros(base + jitter);
    }

    fn observe_round(&mut self, ballot: Ballot) {
        self.max_round = self.max_round.max(ballot.round);
    }

    fn set_leader(&mut self, now: Instant, ballot: Ballot) {
        self.leader_contact = Some(now);
        self.reset_election(now);
        if self.leader != Some(ballot) {
            self.leader = Some(ballot);
            self.emit(Event::Leader {
                leader: Some(ballot.leader),
                round: ballot.round,
            });
            // Entries and reads waiting for a leader go to the new one.
            let ids: Vec<EntryId> = self.outstanding.keys().copied().collect();
            for id in ids {
                if let Some(o) = self.outstanding.get_mut(&id) {
                    o.last_sent = now;
                }
                self.route(id);
            }
            let keys: Vec<u64> = self.reads.keys().copied().collect();
            for k in keys {
                self.advance_read(now, k);
            }
        }
    }

    /// Whether an acceptor keeps following its leader at `now` instead of promising a
    /// new candidate (stickiness, and the lease wait after a restart).
    fn sticky(&self, now: Instant, ballot: Ballot) -> bool {
        if now < self.promise_blocked_until {
            return true;
        }
        match (self.leader, self.leader_contact) {
            (Some(leader), Some(at)) => {
                leader.leader != ballot.leader && now < at + self.config.stickiness()
            }
            _ => false,
        }
    }

    /// Refuses a new `ballot` from `from` (a nack saying a live leader is heard) while
    /// this member keeps following its leader; returns whether it refused.
    fn refuses_for_stickiness(&mut self, now: Instant, from: PeerId, ballot: Ballot) -> bool {
        let promised = self.log.promised();
        if promised == Some(ballot) || !self.sticky(now, ballot) {
            return false;
        }
        self.stats.sticky_refusals += 1;
        self.send(
            from,
            Message::Nack {
                ballot,
                promised,
                leader_alive: true,
            },
        );
        true
    }

    // ----- internals: elections --------------------------------------------------------

    fn start_election(&mut self, now: Instant) {
        if !self.may_lead() {
            // Learners, joining members, removed members and members whose data was
            // wiped never campaign. With no leader heard for a whole election timeout, it
            // asks the voters it knows for the slots chosen after its own: a learner may
            // have been made a voter by a slot that only a member being removed (which
            // leaves leading to those that stay) has learned.
            self.reset_election(now);
            self.ask_for_chosen(now);
            return;
        }
        self.stats.elections += 1;
        let ballot = Ballot {
            round: self.max_round + 1,
            leader: self.local,
        };
        self.max_round = ballot.round;
        self.leader = None;
        self.leader_contact = None;
        self.reset_election(now);
        let from = self.committed + 1;
        self.log.set_promised(ballot);
        self.deferred.push(Deferred::Promise(ballot));
        let mut candidate = Candidate {
            ballot,
            from,
            last_sent: now,
            complete: BTreeSet::new(),
            partial: BTreeSet::new(),
            refusals: BTreeSet::new(),
            best: BTreeMap::new(),
            self_durable: false,
        };
        // The candidate's own accepted values count as its own promise's report.
        let mut cursor = from;
        loop {
            let slots = self.log.slots_from(cursor, 1024);
            let Some(&last) = slots.last() else { break };
            for slot in slots {
                if let Some(a) = self.log.get(slot) {
                    merge_best(
                        &mut candidate.best,
                        SlotValue {
                            slot,
                            ballot: a.ballot,
                            value: a.value,
                            chosen: a.chosen,
                        },
                    );
                }
            }
            cursor = last + 1;
        }
        self.phase = Phase::Candidate(candidate);
        for p in self.electorate(from) {
            self.send(p, Message::Prepare { ballot, from });
        }
        self.check_promises(now);
    }

    fn on_prepare(&mut self, now: Instant, from: PeerId, ballot: Ballot, slot: Slot) {
        self.observe_round(ballot);
        if self.is_stale_instance() {
            // Its promises were lost with its data: it promises nothing.
            return;
        }
        let promised = self.log.promised();
        if promised.is_some_and(|p| p > ballot) {
            self.send(
                from,
                Message::Nack {
                    ballot,
                    promised,
                    leader_alive: false,
                },
            );
            return;
        }
        if self.refuses_for_stickiness(now, from, ballot) {
            return;
        }
        if promised != Some(ballot) {
            if !planted!(self, PromiseNotPersisted) {
                self.log.set_promised(ballot);
            }
            if matches!(self.phase, Phase::Leader(_) | Phase::Candidate(_)) {
                self.step_down(now);
            }
            self.leader = None;
            self.leader_contact = None;
            self.reset_election(now);
        }
        // Report accepted values from `slot`, in chunks that fit a message.
        let mut accepted = Vec::new();
        let mut bytes = 0;
        let mut next = None;
        let start = slot.max(self.log.truncated() + 1);
        let mut cursor = start;
        'outer: loop {
            let slots = self.log.slots_from(cursor, 256);
            let Some(&last) = slots.last() else { break };
            for s in slots {
                if let Some(a) = self.log.get(s) {
                    let size = a.value.size() + 64;
                    if !accepted.is_empty() && bytes + size > MAX_MESSAGE_BYTES / 2 {
                        next = Some(s);
                        break 'outer;
                    }
                    bytes += size;
                    accepted.push(SlotValue {
                        slot: s,
                        ballot: a.ballot,
                        value: a.value,
                        chosen: a.chosen,
                    });
                }
            }
            cursor = last + 1;
        }
        let truncated = if planted!(self, TruncatedReportedEmpty) {
            0
        } else {
            self.log.truncated()
        };
        self.send(
            from,
            Message::Promise {
                ballot,
                accepted,
                next,
                truncated,
            },
        );
    }

    fn on_promise(
        &mut self,
        now: Instant,
        from: PeerId,
        ballot: Ballot,
        accepted: Vec<SlotValue>,
        next: Option<Slot>,
        truncated: Slot,
    ) {
        let first_open = match &self.phase {
            Phase::Leader(l) if l.ballot == ballot => l.next_slot,
            Phase::Candidate(c) if c.ballot == ballot => c.from,
            _ => return,
        };
        if truncated >= first_open {
            // The acceptor folded slots into its state that this member never learned:
            // they are chosen, and it must not propose in them. It catches up first.
            self.stats.behind_compaction += 1;
            self.step_down(now);
            self.leader_committed = self.leader_committed.max(truncated);
            self.catch_up_sent = Some(now);
            let from_slot = self.committed + 1;
            self.send(from, Message::CatchUp { from: from_slot });
            return;
        }
        if let Phase::Leader(l) = &mut self.phase {
            // A late promise, asked for when a configuration came into force whose quorum
            // had not promised: what it reports fills the slots not proposed yet.
            if l.ballot != ballot || l.promised.contains(&from) {
                return;
            }
            for v in accepted {
                if v.slot >= l.next_slot {
                    l.fill_to = l.fill_to.max(v.slot);
                    merge_best(&mut l.best, v);
                }
            }
            match next {
                Some(from_slot) => self.send(
                    from,
                    Message::Prepare {
                        ballot,
                        from: from_slot,
                    },
                ),
                None => {
                    l.promised.insert(from);
                    self.pump_due(now);
                    let keys: Vec<u64> = self.reads.keys().copied().collect();
                    for k in keys {
                        self.advance_read(now, k);
                    }
                }
            }
            return;
        }
        let Phase::Candidate(c) = &mut self.phase else {
            return;
        };
        if c.ballot != ballot || c.complete.contains(&from) {
            return;
        }
        for v in accepted {
            if v.slot >= c.from {
                merge_best(&mut c.best, v);
            }
        }
        match next {
            Some(slot) => {
                c.partial.insert(from);
                let from_slot = slot;
                self.send(
                    from,
                    Message::Prepare {
                        ballot,
                        from: from_slot,
                    },
                );
            }
            None => {
                c.partial.remove(&from);
                c.complete.insert(from);
            }
        }
        self.check_promises(now);
    }

    /// A candidate wins with a quorum of promises in every configuration of the slots it
    /// may propose in before it applies more (its first open slot and `alpha − 1` after).
    fn check_promises(&mut self, now: Instant) {
        let Phase::Candidate(c) = &self.phase else {
            return;
        };
        let configs = self.configs_between(c.from, c.from - 1 + self.config.alpha);
        let won = !configs.is_empty()
            && configs.iter().all(|cfg| {
                let promised = c
                    .complete
                    .iter()
                    .filter(|p| cfg.votes(p, self.instance_of(p)))
                    .count();
                let own = c.self_durable && cfg.votes(&self.local, self.instance);
                promised + usize::from(own) >= cfg.quorum()
            });
        if won {
            self.become_leader(now);
        }
    }

    fn on_nack(
        &mut self,
        now: Instant,
        from: PeerId,
        ballot: Ballot,
        promised: Option<Ballot>,
        leader_alive: bool,
    ) {
        if let Some(p) = promised {
            self.observe_round(p);
        }
        let ours = match &self.phase {
            Phase::Candidate(c) => c.ballot,
            Phase::Leader(l) => l.ballot,
            Phase::Follower => return,
        };
        if ballot != ours {
            return;
        }
        if promised.is_some_and(|p| p > ours) {
            self.step_down(now);
            return;
        }
        if leader_alive {
            let quorum = match &self.phase {
                Phase::Candidate(c) => self.cluster_at(c.from).map_or(1, Configuration::quorum),
                _ => 1,
            };
            if let Phase::Candidate(c) = &mut self.phase {
                c.refusals.insert(from);
                if c.refusals.len() >= quorum {
                    // A quorum follows a live leader: wait for it instead of pushing on.
                    self.step_down(now);
                }
            }
        }
    }

    fn step_down(&mut self, now: Instant) {
        let was_leader = matches!(self.phase, Phase::Leader(_));
        self.phase = Phase::Follower;
        self.reset_election(now);
        if was_leader {
            self.leader = None;
            self.emit(Event::Leader {
                leader: None,
                round: self.max_round,
            });
            // Forwarded entries the leader held are dropped; their proposers retry.
        }
        let keys: Vec<u64> = self.reads.keys().copied().collect();
        for k in keys {
            if let Some(r) = self.reads.get_mut(&k)
                && !matches!(r.stage, ReadStage::Applied { .. })
            {
                r.stage = ReadStage::Leader { sent: None };
            }
        }
    }

    fn become_leader(&mut self, now: Instant) {
        let Phase::Candidate(c) = core::mem::replace(&mut self.phase, Phase::Follower) else {
            return;
        };
        self.stats.terms_led += 1;
        let ballot = c.ballot;
        let last = c
            .best
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(c.from - 1);
        // Values known chosen are learned at once; the others are proposed again in
        // order (`pump`), gaps filled with no-ops, then this ballot's own no-op.
        let mut best = BTreeMap::new();
        for (slot, v) in c.best {
            if v.chosen {
                if !self.log.get(slot).is_some_and(|a| a.chosen) {
                    self.log.put(
                        slot,
                        AcceptedValue {
                            ballot: v.ballot,
                            value: v.value,
                            chosen: true,
                        },
                    );
                }
            } else {
                best.insert(slot, v);
            }
        }
        let leader = Leader {
            ballot,
            next_slot: c.from,
            inflight: BTreeMap::new(),
            noop_slot: last + 1,
            fill_to: last + 1,
            best,
            promised: c.complete,
            prepare_sent: None,
            changes: VecDeque::new(),
            change_slot: None,
            activate_by: self.configs.keys().next_back().copied().unwrap_or(0),
            progress: BTreeMap::new(),
            forward_budget: BTreeMap::new(),
            queue: VecDeque::new(),
            queued: BTreeSet::new(),
            waiting_by: BTreeMap::new(),
            hb_seq: 0,
            hb_sent: BTreeMap::new(),
            acked: BTreeMap::new(),
            next_heartbeat: now,
            confirmed_at: now,
            lease_until: Instant::ZERO,
        };
        self.leader = Some(ballot);
        self.leader_contact = Some(now);
        self.phase = Phase::Leader(alloc::boxed::Box::new(leader));
        self.emit(Event::Leader {
            leader: Some(self.local),
            round: ballot.round,
        });
        self.advance_committed();
        self.apply_committed(now);
        self.heartbeat(now);
        // Entries waiting here go into the queue.
        let ids: Vec<EntryId> = self.outstanding.keys().copied().collect();
        for id in ids {
            self.route(id);
        }
        self.pump(now);
        let keys: Vec<u64> = self.reads.keys().copied().collect();
        for k in keys {
            self.advance_read(now, k);
        }
        self.pump_due(now);
    }

    // ----- internals: configurations --------------------------------------------------

    fn instance_of(&self, peer: &PeerId) -> Instance {
        if *peer == self.local {
            self.instance
        } else {
            self.instances.get(peer).copied().unwrap_or(0)
        }
    }

    /// The configurations still deciding slots: the one of the next slot to apply, and
    /// every one scheduled after it.
    fn live_configs(&self) -> impl Iterator<Item = &Configuration> {
        let from = self
            .configs
            .range(..=self.state.applied() + 1)
            .next_back()
            .map_or(0, |(s, _)| *s);
        self.configs.range(from..).map(|(_, c)| c)
    }

    /// The configurations of slots `from..=to`.
    fn configs_between(&self, from: Slot, to: Slot) -> Vec<&Configuration> {
        let start = self
            .configs
            .range(..=from)
            .next_back()
            .map_or(from, |(s, _)| *s);
        self.configs
            .range(start..=to.max(start))
            .map(|(_, c)| c)
            .collect()
    }

    /// Whether messages from `peer` are taken: it is a peer of a configuration still
    /// deciding slots.
    fn knows(&self, peer: &PeerId) -> bool {
        self.live_configs().any(|c| c.includes(peer))
    }

    /// A message from a contact outside this member's configurations: a member that
    /// joins, lags behind a change or is added again learns from it how far the log is
    /// chosen and catches up from it, and nothing more (it neither promises nor votes
    /// for it, so a removed member cannot take its followers from the leader).
    fn on_contact_message(&mut self, now: Instant, from: PeerId, message: Message) {
        match message {
            Message::Heartbeat {
                ballot, committed, ..
            }
            | Message::Accept {
                ballot, committed, ..
            } => {
                if from != ballot.leader {
                    self.stats.refused += 1;
                    return;
                }
                // Catch-up goes to it when its ballot is later than the leader this member
                // follows; the member's own leader and stickiness stay as they are (a
                // removed member with a higher round must not free it from a lease).
                if self.catch_up_from.is_none_or(|(_, b)| b <= ballot) {
                    if self.catch_up_from.is_some_and(|(p, _)| p != from) {
                        self.catch_up_sent = None;
                    }
                    self.catch_up_from = Some((from, ballot));
                }
                self.leader_committed = self.leader_committed.max(committed);
                self.maybe_catch_up(now);
            }
            Message::Entries { entries } => self.on_entries(now, from, entries),
            Message::Snapshot(chunk) => self.on_snapshot(now, from, chunk),
            _ => self.stats.refused += 1,
        }
    }

    /// The peers the leader's accepts and heartbeats go to.
    fn audience(&self) -> Vec<PeerId> {
        let mut peers = BTreeSet::new();
        for c in self.live_configs() {
            peers.extend(c.peers().copied());
        }
        peers.remove(&self.local);
        peers.into_iter().collect()
    }

    /// The voters a candidate asks for promises from slot `from`.
    fn electorate(&self, from: Slot) -> BTreeSet<PeerId> {
        let mut peers = BTreeSet::new();
        for c in self.configs_between(from, from - 1 + self.config.alpha) {
            peers.extend(c.voters.keys().copied());
        }
        peers.remove(&self.local);
        peers
    }

    /// Whether this member may campaign and lead: it votes in the newest configuration it
    /// knows (a member being removed leaves the log to those that stay, and one that
    /// joins may lead slots of configurations before its own, whose quorums it asks like
    /// any candidate), and its data was not wiped.
    fn may_lead(&self) -> bool {
        self.latest_configuration()
            .is_some_and(|c| c.votes(&self.local, self.instance))
    }

    /// Whether a quorum of the configuration of `slot` promised the leader's ballot.
    fn ready(&self, slot: Slot) -> bool {
        let (Phase::Leader(l), Some(c)) = (&self.phase, self.cluster_at(slot)) else {
            return false;
        };
        let promised = l
            .promised
            .iter()
            .filter(|p| c.votes(p, self.instance_of(p)))
            .count();
        promised + usize::from(c.votes(&self.local, self.instance)) >= c.quorum()
    }

    /// Asks the voters of the configuration of `slot` that have not promised the leader's
    /// ballot for their promise, from `slot` on (resent after the retry interval).
    fn prepare_config(&mut self, now: Instant, slot: Slot) {
        let retry = self.config.retry_interval;
        let voters: Vec<PeerId> = self
            .cluster_at(slot)
            .map(|c| c.voters.keys().copied().collect())
            .unwrap_or_default();
        let local = self.local;
        let Phase::Leader(l) = &mut self.phase else {
            return;
        };
        if l.prepare_sent
            .is_some_and(|(s, at)| s == slot && now < at + retry)
        {
            return;
        }
        l.prepare_sent = Some((slot, now));
        let ballot = l.ballot;
        let ask: Vec<PeerId> = voters
            .into_iter()
            .filter(|p| *p != local && !l.promised.contains(p))
            .collect();
        for p in ask {
            self.send(p, Message::Prepare { ballot, from: slot });
        }
    }

    /// A leader that is no voter of its next slot (it was removed, or replaced) hands
    /// leadership to a voter of the newest configuration, or gives it up.
    fn hand_over(&mut self, now: Instant) {
        if self.transfer_leadership(now).is_none()
            && let Phase::Leader(l) = &self.phase
        {
            let ballot = l.ballot;
            self.step_down(now);
            self.leader_contact = None;
            self.broadcast(Message::Relinquish { ballot });
        }
    }

    /// Whether the leader has a change of its own to make: a caught-up learner to
    /// promote, or a voter whose instance is not bound yet.
    fn wants_change(&self) -> bool {
        self.auto_change().is_some()
    }

    fn auto_change(&self) -> Option<MembershipChange> {
        let Phase::Leader(l) = &self.phase else {
            return None;
        };
        let latest = self.latest_configuration()?;
        for peer in latest.learners.keys() {
            let instance = self.instance_of(peer);
            let caught_up = l
                .progress
                .get(peer)
                .is_some_and(|c| c + self.config.alpha >= self.committed);
            if instance != 0 && caught_up {
                return Some(MembershipChange::Promote {
                    peer: *peer,
                    instance,
                });
            }
        }
        latest.voters.iter().find_map(|(peer, bound)| {
            let instance = self.instance_of(peer);
            (*bound == 0 && instance != 0).then_some(MembershipChange::Promote {
                peer: *peer,
                instance,
            })
        })
    }

    /// The next membership change to propose, with the configuration it makes, if the
    /// last one proposed is applied (one change in flight).
    fn next_change(&mut self) -> Option<Reconfiguration> {
        let applied = self.state.applied();
        let Phase::Leader(l) = &self.phase else {
            return None;
        };
        if l.change_slot.is_some_and(|s| s > applied) {
            return None;
        }
        let (id, change) = match l.changes.front() {
            Some(c) => *c,
            None => {
                let change = self.auto_change()?;
                (self.next_id(), change)
            }
        };
        if let Phase::Leader(l) = &mut self.phase {
            l.changes.retain(|(i, _)| *i != id);
        }
        let latest = self.latest_configuration().cloned().unwrap_or_default();
        Some(Reconfiguration {
            id,
            change,
            outcome: latest.changed(&change),
        })
    }

    /// Records the configuration in force from `from`.
    fn record_config(&mut self, from: Slot, configuration: Configuration) {
        self.log.put_configuration(from, configuration.clone());
        self.configs.insert(from, configuration);
        if let Phase::Leader(l) = &mut self.phase {
            // A lease counts only for the configurations that granted it.
            l.lease_until = Instant::ZERO;
            l.activate_by = l.activate_by.max(from);
        }
    }

    fn on_change_membership(
        &mut self,
        now: Instant,
        from: PeerId,
        id: EntryId,
        change: MembershipChange,
    ) {
        let Phase::Leader(l) = &mut self.phase else {
            // Not the leader: the requester retries toward the leader it learns.
            return;
        };
        if id.proposer != from || l.changes.len() >= 64 {
            self.stats.refused += 1;
            return;
        }
        if !l.changes.iter().any(|(i, _)| *i == id) {
            l.changes.push_back((id, change));
        }
        self.pump_due(now);
    }

    // ----- internals: phase 2 ----------------------------------------------------------

    /// Writes the leader's own accept of `value` at `slot` and sends it to the others.
    fn propose_slot(&mut self, now: Instant, ballot: Ballot, slot: Slot, value: Value) {
        self.log.put(
            slot,
            AcceptedValue {
                ballot,
                value: value.clone(),
                chosen: false,
            },
        );
        self.deferred.push(Deferred::Vote(ballot, slot));
        let committed = self.committed;
        if let Phase::Leader(l) = &mut self.phase
            && let Some(f) = l.inflight.get_mut(&slot)
        {
            f.last_sent = now;
        }
        self.broadcast(Message::Accept {
            ballot,
            slot,
            value,
            committed,
        });
    }

    /// Proposes in the leader's next slots, in order, while the pipeline has room: the
    /// values phase 1 found (or no-ops) up to `fill_to`, then membership changes (one at
    /// a time) and batches of waiting entries. Slot `s` is proposed only once `s − alpha`
    /// is applied (so its configuration is known) and a quorum of that configuration has
    /// promised this ballot; a leader that is no voter of the newest configuration hands
    /// over.
    fn pump(&mut self, now: Instant) {
        loop {
            let (max_entries, max_bytes, concurrency, alpha) = (
                self.config.max_batch_entries,
                self.config.max_batch_bytes,
                self.config.concurrency,
                self.config.alpha,
            );
            let (applied, committed) = (self.state.applied(), self.committed);
            let Phase::Leader(l) = &mut self.phase else {
                return;
            };
            let t = l.next_slot;
            if t <= committed || self.log.get(t).is_some_and(|a| a.chosen) {
                l.best.remove(&t);
                l.next_slot += 1;
                continue;
            }
            let filling = t <= l.fill_to;
            if l.inflight.len() >= concurrency || t > applied + alpha {
                return;
            }
            let activating = t < l.activate_by;
            if !filling
                && !activating
                && l.queue.is_empty()
                && l.changes.is_empty()
                && !self.wants_change()
            {
                return;
            }
            if !self.may_lead() {
                self.hand_over(now);
                return;
            }
            if !self.ready(t) {
                self.prepare_config(now, t);
                return;
            }
            let change = if filling { None } else { self.next_change() };
            let Phase::Leader(l) = &mut self.phase else {
                return;
            };
            let value = if filling {
                l.best.remove(&t).map_or(Value::Noop, |v| v.value)
            } else if let Some(r) = change {
                l.change_slot = Some(t);
                Value::Reconfigure(alloc::boxed::Box::new(r))
            } else if !l.queue.is_empty() {
                let mut batch = Vec::new();
                let mut bytes = 0;
                while let Some(e) = l.queue.front() {
                    if !batch.is_empty()
                        && (batch.len() >= max_entries || bytes + e.size() > max_bytes)
                    {
                        break;
                    }
                    bytes += e.size();
                    let e = l.queue.pop_front().expect("front exists");
                    if let Some(n) = l.waiting_by.get_mut(&e.id.proposer) {
                        *n = n.saturating_sub(1);
                    }
                    batch.push(e);
                }
                Value::Batch(batch)
            } else if activating {
                Value::Noop
            } else {
                return;
            };
            l.next_slot += 1;
            let ballot = l.ballot;
            l.inflight.insert(
                t,
                Inflight {
                    value: value.clone(),
                    votes: BTreeSet::new(),
                    last_sent: now,
                },
            );
            self.propose_slot(now, ballot, t, value);
        }
    }

    fn resend_accepts(&mut self, now: Instant) {
        let retry = self.config.retry_interval;
        let committed = self.committed;
        let Phase::Leader(l) = &mut self.phase else {
            return;
        };
        let ballot = l.ballot;
        let mut due = Vec::new();
        for (slot, f) in l.inflight.iter_mut() {
            if now >= f.last_sent + retry {
                f.last_sent = now;
                due.push((*slot, f.value.clone(), f.votes.clone()));
            }
        }
        let mut sends = Vec::new();
        for (slot, value, votes) in due {
            let Some(config) = self.cluster_at(slot) else {
                continue;
            };
            for p in config.peers() {
                if *p != self.local && !votes.contains(p) {
                    sends.push((*p, slot, value.clone()));
                }
            }
        }
        for (p, slot, value) in sends {
            self.send(
                p,
                Message::Accept {
                    ballot,
                    slot,
                    value,
                    committed,
                },
            );
        }
    }

    fn on_accept(
        &mut self,
        now: Instant,
        from: PeerId,
        ballot: Ballot,
        slot: Slot,
        value: Value,
        committed: Slot,
    ) {
        if !self.follow(now, from, ballot) {
            return;
        }
        let known = self.log.get(slot);
        if slot > self.log.truncated() && !known.as_ref().is_some_and(|a| a.chosen) {
            self.log.put(
                slot,
                AcceptedValue {
                    ballot,
                    value,
                    chosen: false,
                },
            );
        }
        if !self.is_stale_instance() {
            self.send(from, Message::Accepted { ballot, slot });
        }
        self.learn_commit_index(now, ballot, committed);
    }

    fn on_accepted(&mut self, now: Instant, from: PeerId, ballot: Ballot, slot: Slot) {
        let Phase::Leader(l) = &mut self.phase else {
            return;
        };
        if l.ballot != ballot {
            return;
        }
        if let Some(f) = l.inflight.get_mut(&slot) {
            f.votes.insert(from);
        }
        self.check_chosen(now, slot);
    }

    fn check_chosen(&mut self, now: Instant, slot: Slot) {
        let Some(config) = self.cluster_at(slot) else {
            return;
        };
        let Phase::Leader(l) = &self.phase else {
            return;
        };
        let Some(f) = l.inflight.get(&slot) else {
            return;
        };
        let votes = f
            .votes
            .iter()
            .filter(|p| config.votes(p, self.instance_of(p)))
            .count();
        if votes < config.quorum() {
            return;
        }
        let Phase::Leader(l) = &mut self.phase else {
            return;
        };
        let f = l.inflight.remove(&slot).expect("present");
        let ballot = l.ballot;
        self.stats.slots_committed += 1;
        if let Value::Batch(b) = &f.value {
            self.stats.entries_committed += b.len() as u64;
        }
        self.log.put(
            slot,
            AcceptedValue {
                ballot,
                value: f.value,
                chosen: true,
            },
        );
        // No commit notice per slot: the next accept or heartbeat carries the commit
        // index, from which followers learn (`learn_commit_index`).
        self.advance_committed();
        self.apply_committed(now);
        self.pump_due(now);
    }

    fn on_commit(&mut self, now: Instant, _from: PeerId, ballot: Ballot, slot: Slot) {
        if let Some(a) = self.log.get(slot) {
            if !a.chosen && a.ballot == ballot {
                self.log.put(slot, AcceptedValue { chosen: true, ..a });
                self.advance_committed();
                self.apply_committed(now);
                return;
            }
            if a.chosen {
                return;
            }
        }
        // The value is missing or from another ballot: fetch it.
        self.leader_committed = self.leader_committed.max(slot);
        self.maybe_catch_up(now);
    }

    // ----- internals: heartbeats, catch-up ---------------------------------------------

    fn heartbeat(&mut self, now: Instant) {
        let interval = self.config.heartbeat_interval;
        let committed = self.committed;
        let Phase::Leader(l) = &mut self.phase else {
            return;
        };
        l.hb_seq += 1;
        let seq = l.hb_seq;
        l.hb_sent.insert(seq, now);
        while l.hb_sent.len() > 256 {
            l.hb_sent.pop_first();
        }
        l.next_heartbeat = now + interval;
        let ballot = l.ballot;
        self.broadcast(Message::Heartbeat {
            ballot,
            committed,
            seq,
        });
        self.confirm(now);
    }

    /// Takes a message of the leader of `ballot` (an accept or a heartbeat): refuses it
    /// with a nack if this member promised a higher ballot or `from` does not lead
    /// `ballot`; otherwise promises `ballot` (an accept implies the promise), steps down
    /// if it was leading or running, and follows `from`. Returns whether it follows.
    fn follow(&mut self, now: Instant, from: PeerId, ballot: Ballot) -> bool {
        self.observe_round(ballot);
        let promised = self.log.promised();
        if promised.is_some_and(|p| p > ballot) || from != ballot.leader {
            self.send(
                from,
                Message::Nack {
                    ballot,
                    promised,
                    leader_alive: false,
                },
            );
            return false;
        }
        // An accept or heartbeat of a new ballot is a promise too, and leader stickiness
        // holds for it as for a prepare: a leader elected by an older configuration's
        // members must not take the followers that granted the current leader its lease.
        if self.refuses_for_stickiness(now, from, ballot) {
            return false;
        }
        if matches!(self.phase, Phase::Leader(_) | Phase::Candidate(_)) {
            self.step_down(now);
        }
        if promised != Some(ballot) {
            self.log.set_promised(ballot);
        }
        self.set_leader(now, ballot);
        true
    }

    fn on_heartbeat(
        &mut self,
        now: Instant,
        from: PeerId,
        ballot: Ballot,
        committed: Slot,
        seq: u64,
    ) {
        if !self.follow(now, from, ballot) {
            return;
        }
        let acked = self.committed;
        self.send(
            from,
            Message::HeartbeatAck {
                ballot,
                seq,
                committed: acked,
            },
        );
        self.learn_commit_index(now, ballot, committed);
    }

    fn on_heartbeat_ack(
        &mut self,
        now: Instant,
        from: PeerId,
        ballot: Ballot,
        seq: u64,
        committed: Slot,
    ) {
        let Phase::Leader(l) = &mut self.phase else {
            return;
        };
        if l.ballot != ballot {
            return;
        }
        let progress = l.progress.entry(from).or_insert(0);
        *progress = (*progress).max(committed);
        let e = l.acked.entry(from).or_insert(0);
        *e = (*e).max(seq);
        // A learner that caught up is promoted by the next pump.
        self.pump_due(now);
        self.confirm(now);
    }

    /// The heartbeat round a quorum (the leader included) has acknowledged, and with it
    /// leadership confirmation, the lease, and reads waiting for either.
    fn confirm(&mut self, now: Instant) {
        let lease = self.config.lease;
        let Phase::Leader(l) = &self.phase else {
            return;
        };
        // The round a quorum of every configuration still deciding slots acknowledged.
        // Only members that promised this ballot count: one that merely followed its
        // heartbeats may still owe a lease to another leader (a leader elected by an
        // older configuration reaches a newer one's members this way).
        let mut round = u64::MAX;
        for c in self.live_configs() {
            let mut seqs: Vec<u64> = c
                .voters
                .keys()
                .filter(|p| c.votes(p, self.instance_of(p)))
                .filter(|p| **p == self.local || l.promised.contains(p))
                .map(|p| {
                    if *p == self.local {
                        l.hb_seq
                    } else {
                        l.acked.get(p).copied().unwrap_or(0)
                    }
                })
                .collect();
            seqs.sort_unstable_by(|a, b| b.cmp(a));
            round = round.min(seqs.get(c.quorum() - 1).copied().unwrap_or(0));
        }
        if round == 0 || round == u64::MAX {
            return;
        }
        let Phase::Leader(l) = &mut self.phase else {
            return;
        };
        let Some(&sent) = l.hb_sent.get(&round) else {
            return;
        };
        l.confirmed_at = l.confirmed_at.max(sent);
        // A confirmed leader is sticky for itself too: it refuses other candidates as
        // its followers do, so a member that cannot hear it cannot win with its vote.
        self.leader_contact = Some(l.confirmed_at);
        // A lease only once the leader knows every configuration it may serve under: its
        // no-op and what phase 1 found are applied (a leader elected by an older
        // configuration learns here that a newer one has taken over).
        let knows_all = self.state.applied() >= l.noop_slot.max(l.fill_to);
        if let Some(lease) = lease.filter(|_| knows_all) {
            let span = if planted!(self, LeaseIgnoresDrift) {
                // The acceptors' bound, D·(1 + ε), used on the leader's own clock.
                lease.acceptor_wait()
            } else {
                lease.leader_span()
            };
            l.lease_until = l.lease_until.max(sent + span);
        }
        let keys: Vec<u64> = self.reads.keys().copied().collect();
        for k in keys {
            if let Some(r) = self.reads.get_mut(&k)
                && let ReadStage::Quorum { seq, index } = r.stage
                && seq <= round
            {
                r.stage = ReadStage::Applied { index };
                self.advance_read(now, k);
            }
        }
    }

    /// Learns from the leader of `ballot` that every slot up to `committed` is chosen.
    /// A value this member accepted in that same ballot at such a slot is the chosen one:
    /// the leader proposes one value per slot in its ballot, and knows a slot chosen only
    /// by its own quorum in that ballot or, for slots it never proposed in, from the
    /// chosen flags its phase 1 gathered. Other slots are fetched by catch-up.
    fn learn_commit_index(&mut self, now: Instant, ballot: Ballot, committed: Slot) {
        self.leader_committed = self.leader_committed.max(committed);
        if committed > self.committed {
            let slots = self
                .log
                .slots_from(self.committed + 1, self.config.catch_up_slots.max(1024));
            for slot in slots.into_iter().take_while(|s| *s <= committed) {
                if let Some(a) = self.log.get(slot)
                    && !a.chosen
                    && a.ballot == ballot
                {
                    self.log.put(slot, AcceptedValue { chosen: true, ..a });
                }
            }
            self.advance_committed();
            self.apply_committed(now);
        }
        self.maybe_catch_up(now);
    }

    fn maybe_catch_up(&mut self, now: Instant) {
        if self.committed >= self.leader_committed || self.catch_up_sent.is_some() {
            return;
        }
        let followed = self.leader.filter(|b| b.leader != self.local);
        let target = match (followed, self.catch_up_from) {
            (Some(b), Some((contact, cb))) if cb > b => Some(contact),
            (Some(b), _) => Some(b.leader),
            (None, contact) => contact.map(|(p, _)| p),
        }
        // With no leader known, a snapshot transfer goes on with its sender.
        .or(self.receiving.as_ref().map(|r| r.from));
        let Some(leader) = target else {
            return;
        };
        self.catch_up_sent = Some(now);
        if let Some(r) = &self.receiving {
            // A snapshot transfer resumes where it stopped.
            let (slot, digest, offset) = (r.slot, r.digest, r.bytes.len() as u64);
            // Its sender first; after two silent retries whoever this member catches up
            // from (which sends its own snapshot from the start if it is another member).
            let to = if r.retries < 2 { r.from } else { leader };
            if let Some(r) = self.receiving.as_mut() {
                r.retries += 1;
            }
            self.send(
                to,
                Message::SnapshotNext {
                    slot,
                    digest,
                    offset,
                },
            );
            return;
        }
        let from = self.committed + 1;
        self.send(leader, Message::CatchUp { from });
    }

    fn on_catch_up(&mut self, now: Instant, from: PeerId, slot: Slot) {
        if slot <= self.log.truncated() {
            // Compacted away: the state goes instead.
            self.serve_snapshot(now, from, None, 0);
            return;
        }
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut s = slot.max(1);
        while entries.len() < self.config.catch_up_slots && s <= self.committed {
            let Some(a) = self.log.get(s) else { break };
            if !a.chosen {
                break;
            }
            bytes += a.value.size() + 64;
            if !entries.is_empty() && bytes > MAX_MESSAGE_BYTES / 2 {
                break;
            }
            entries.push(SlotValue {
                slot: s,
                ballot: a.ballot,
                value: a.value,
                chosen: true,
            });
            s += 1;
        }
        if !entries.is_empty() {
            self.stats.catch_ups += 1;
            self.send(from, Message::Entries { entries });
        }
    }

    /// Asks every voter of the configurations this member knows (none for a member that
    /// knows none) for the chosen slots after its own; `on_entries` goes on asking the
    /// first that answers while its answers come full.
    fn ask_for_chosen(&mut self, now: Instant) {
        if self.receiving.is_some() {
            return;
        }
        let voters: BTreeSet<PeerId> = self
            .live_configs()
            .flat_map(|c| c.voters.keys().copied())
            .filter(|p| *p != self.local)
            .collect();
        if voters.is_empty() {
            return;
        }
        self.catch_up_sent = Some(now);
        let from = self.committed + 1;
        for p in voters {
            self.send(p, Message::CatchUp { from });
        }
    }

    fn on_entries(&mut self, now: Instant, from: PeerId, entries: Vec<SlotValue>) {
        self.catch_up_sent = None;
        // A full answer while no leader is followed: the sender may hold more (with a
        // leader, its commit index says how far to go).
        let more = entries.len() >= self.config.catch_up_slots.max(1) && self.leader.is_none();
        for v in entries {
            if !v.chosen || v.slot <= self.log.truncated() {
                continue;
            }
            if self.log.get(v.slot).is_some_and(|a| a.chosen) {
                continue;
            }
            self.leader_committed = self.leader_committed.max(v.slot);
            self.log.put(
                v.slot,
                AcceptedValue {
                    ballot: v.ballot,
                    value: v.value,
                    chosen: true,
                },
            );
        }
        self.advance_committed();
        self.apply_committed(now);
        if more && self.catch_up_sent.is_none() {
            self.catch_up_sent = Some(now);
            let from_slot = self.committed + 1;
            self.send(from, Message::CatchUp { from: from_slot });
        }
        self.maybe_catch_up(now);
    }

    // ----- internals: applying ---------------------------------------------------------

    fn advance_committed(&mut self) {
        while self.log.get(self.committed + 1).is_some_and(|a| a.chosen) {
            self.committed += 1;
        }
    }

    fn apply_committed(&mut self, now: Instant) {
        while self.state.applied() < self.committed {
            let slot = self.state.applied() + 1;
            let Some(a) = self.log.get(slot) else { break };
            let mut ids = Vec::new();
            self.log_bytes += a.value.size() as u64;
            if let Value::Reconfigure(r) = &a.value {
                self.apply_reconfiguration(slot, r);
            }
            if let Value::Batch(entries) = &a.value {
                for (index, entry) in entries.iter().enumerate() {
                    let position = Position {
                        slot,
                        index: index as u32,
                    };
                    let applied = self.state.apply(position, entry);
                    if applied.duplicate {
                        self.stats.dedup_hits += 1;
                    }
                    ids.push(entry.id);
                    if self.outstanding.remove(&entry.id).is_some() {
                        self.emit(Event::Committed {
                            id: entry.id,
                            position,
                            response: applied.response,
                            duplicate: applied.duplicate,
                        });
                    }
                    if let Phase::Leader(l) = &mut self.phase {
                        l.queued.remove(&entry.id);
                    }
                }
            }
            self.state.set_applied(slot);
            self.emit(Event::Applied { slot, entries: ids });
        }
        self.maybe_compact(now);
        let keys: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| {
                matches!(r.stage, ReadStage::Applied { .. })
                    || matches!(r.stage, ReadStage::Leader { .. })
            })
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.advance_read(now, k);
        }
    }

    /// Applies a membership change decided at `slot`: its configuration is in force from
    /// `slot + alpha`.
    fn apply_reconfiguration(&mut self, slot: Slot, r: &Reconfiguration) {
        let from = if planted!(self, ConfigActiveEarly) {
            slot + 1
        } else {
            slot + self.config.alpha
        };
        let result = match &r.outcome {
            Ok(configuration) => {
                self.stats.config_changes += 1;
                self.record_config(from, configuration.clone());
                self.emit(Event::Configuration {
                    from,
                    configuration: configuration.clone(),
                });
                Ok(from)
            }
            Err(e) => Err(*e),
        };
        if self.outstanding.remove(&r.id).is_some() {
            self.emit(Event::ChangeDone { id: r.id, result });
        }
    }

    // ----- internals: proposals --------------------------------------------------------

    /// Sends an entry or a membership change toward the leader: into its queue if this
    /// member leads, forwarded to the leader if one is known, else kept until one is.
    fn route(&mut self, id: EntryId) {
        // Until the incarnation in the entry's id is durable, the entry goes nowhere: a
        // crash before that sync would hand the same id to another command, which the
        // state would then take for a retry of this one. `synced` routes it.
        if !self.durable_once {
            return;
        }
        let Some(o) = self.outstanding.get(&id) else {
            return;
        };
        let (entry, change) = (o.entry.clone(), o.change);
        let leader = self.leader();
        match (&mut self.phase, change) {
            (Phase::Leader(l), Some(change)) => {
                if !l.changes.iter().any(|(i, _)| *i == id) {
                    l.changes.push_back((id, change));
                }
            }
            (Phase::Leader(l), None) => {
                if l.queued.insert(entry.id) {
                    *l.waiting_by.entry(entry.id.proposer).or_default() += 1;
                    l.queue.push_back(entry);
                }
            }
            (_, change) => {
                let Some(leader) = leader.filter(|l| *l != self.local) else {
                    return;
                };
                let message = match change {
                    Some(change) => Message::ChangeMembership {
                        id,
                        change: alloc::boxed::Box::new(change),
                    },
                    None => Message::Forward {
                        entries: alloc::vec![entry],
                    },
                };
                self.send(leader, message);
            }
        }
    }

    fn on_forward(&mut self, now: Instant, from: PeerId, entries: Vec<Entry>) {
        let (max_pending, max_entry) = (self.config.max_pending, self.config.max_entry_bytes);
        let rate = u64::from(self.config.forward_rate);
        // No member may fill the leader's queue: each has an equal share of it, and a
        // budget of entries per second.
        let share = (max_pending / (self.audience().len() + 1)).max(1);
        let Phase::Leader(l) = &mut self.phase else {
            // Not the leader: the proposer retries toward the leader it learns.
            return;
        };
        let (tokens, at) = l.forward_budget.entry(from).or_insert((rate, now));
        let refill = now.saturating_duration_since(*at).as_micros() as u64 * rate / 1_000_000;
        if refill > 0 {
            *tokens = (*tokens + refill).min(rate);
            *at = now;
        }
        for e in entries {
            if e.id.proposer != from || e.command.len() > max_entry {
                self.stats.refused += 1;
                continue;
            }
            if l.queued.contains(&e.id) {
                continue;
            }
            let mine = l.waiting_by.get(&from).copied().unwrap_or(0);
            let (tokens, _) = l.forward_budget.get_mut(&from).expect("inserted above");
            if l.queue.len() >= max_pending || mine >= share || *tokens == 0 {
                self.stats.forwards_refused += 1;
                continue;
            }
            *tokens -= 1;
            if l.queued.insert(e.id) {
                *l.waiting_by.entry(from).or_default() += 1;
                l.queue.push_back(e);
            }
        }
        self.pump_due(now);
    }

    fn retry_outstanding(&mut self, now: Instant) {
        let retry = self.config.retry_interval;
        let timeout = self.config.proposal_timeout;
        let mut given_up = Vec::new();
        let mut resend = Vec::new();
        for (id, o) in self.outstanding.iter_mut() {
            if now >= o.since + timeout {
                given_up.push(*id);
            } else if now >= o.last_sent + retry {
                o.last_sent = now;
                resend.push(*id);
            }
        }
        for id in given_up {
            self.outstanding.remove(&id);
            self.emit(Event::Indeterminate { id });
        }
        if !self.durable_once {
            return;
        }
        for id in resend {
            self.route(id);
        }
        self.pump_due(now);
    }

    // ----- internals: reads ------------------------------------------------------------

    /// Whether the leader knows every slot that may be chosen beyond its applied prefix,
    /// so that its commit index bounds every acknowledged write: its no-op and every value
    /// phase 1 found are applied, and a quorum of the configuration of each of the next
    /// `alpha` slots promised its ballot (a slot further on is proposed only once the one
    /// `alpha` below it is chosen). Asks for the promises it lacks.
    fn settled(&mut self, now: Instant) -> bool {
        let applied = self.state.applied();
        let Phase::Leader(l) = &self.phase else {
            return false;
        };
        if planted!(self, ReadBeforeNoop) {
            return true;
        }
        if applied < l.noop_slot || applied < l.fill_to {
            return false;
        }
        let short = (applied + 1..=applied + self.config.alpha).find(|t| !self.ready(*t));
        match short {
            Some(t) => {
                self.prepare_config(now, t);
                false
            }
            None => true,
        }
    }

    fn advance_read(&mut self, now: Instant, key: u64) {
        let settled = self.reads.contains_key(&key) && self.settled(now);
        let applied = self.state.applied();
        let committed = self.committed;
        let leader = self.leader();
        let Some(r) = self.reads.get_mut(&key) else {
            return;
        };
        match r.stage {
            ReadStage::Applied { index } => {
                if applied >= index {
                    let r = self.reads.remove(&key).expect("present");
                    self.finish_read(r, index);
                }
                return;
            }
            ReadStage::Quorum { .. } => return,
            ReadStage::Leader { sent } => {
                match &mut self.phase {
                    Phase::Leader(l) => {
                        // Serve only once this ballot's no-op is applied and nothing chosen
                        // can be unknown to it.
                        if !settled {
                            return;
                        }
                        let wants_lease = match r.origin {
                            ReadOrigin::Local(_, level) => level == ReadLevel::Lease,
                            ReadOrigin::Remote { lease, .. } => lease,
                        };
                        if wants_lease && now < l.lease_until {
                            self.stats.lease_reads += 1;
                            r.stage = ReadStage::Applied { index: committed };
                        } else {
                            r.stage = ReadStage::Quorum {
                                seq: l.hb_seq + 1,
                                index: committed,
                            };
                            self.heartbeat(now);
                            return;
                        }
                    }
                    _ => {
                        if let ReadOrigin::Local(_, _level) = r.origin {
                            if planted!(self, FollowerReadsLocally) {
                                r.stage = ReadStage::Applied { index: applied };
                                self.advance_read(now, key);
                                return;
                            }
                            if sent.is_none()
                                && let Some(leader) = leader
                            {
                                let lease =
                                    matches!(r.origin, ReadOrigin::Local(_, ReadLevel::Lease));
                                r.stage = ReadStage::Leader { sent: Some(now) };
                                self.send(
                                    leader,
                                    Message::ReadIndex {
                                        request: key,
                                        lease,
                                    },
                                );
                            }
                        } else {
                            // A remote read reached a member that no longer leads.
                            let r = self.reads.remove(&key).expect("present");
                            if let ReadOrigin::Remote { peer, request, .. } = r.origin {
                                self.send(
                                    peer,
                                    Message::ReadIndexReply {
                                        request,
                                        index: None,
                                    },
                                );
                            }
                        }
                        return;
                    }
                }
            }
        }
        self.advance_read(now, key);
    }

    fn finish_read(&mut self, r: PendingRead, index: Slot) {
        match r.origin {
            ReadOrigin::Local(id, level) => {
                self.stats.reads[if level == ReadLevel::Linearizable {
                    0
                } else {
                    1
                }] += 1;
                self.emit(Event::ReadReady { read: id });
            }
            ReadOrigin::Remote { peer, request, .. } => {
                self.send(
                    peer,
                    Message::ReadIndexReply {
                        request,
                        index: Some(index),
                    },
                );
            }
        }
    }

    fn on_read_index(&mut self, now: Instant, from: PeerId, request: u64, lease: bool) {
        if !matches!(self.phase, Phase::Leader(_))
            || self.reads.len() >= self.config.max_pending_reads
        {
            self.send(
                from,
                Message::ReadIndexReply {
                    request,
                    index: None,
                },
            );
            return;
        }
        self.next_read += 1;
        let key = self.next_read;
        self.reads.insert(
            key,
            PendingRead {
                origin: ReadOrigin::Remote {
                    peer: from,
                    request,
                    lease,
                },
                deadline: now + self.config.read_timeout,
                stage: ReadStage::Leader { sent: None },
            },
        );
        self.advance_read(now, key);
        // A remote read waits at the leader only for its own applied index (which the
        // leader reaches first), then answers; the asker waits for its own apply.
        if let Some(r) = self.reads.get_mut(&key)
            && let ReadStage::Applied { index } = r.stage
        {
            let r = self.reads.remove(&key).expect("present");
            self.finish_read(r, index);
        }
    }

    fn on_read_index_reply(&mut self, now: Instant, request: u64, index: Option<Slot>) {
        let Some(r) = self.reads.get_mut(&request) else {
            return;
        };
        if !matches!(r.stage, ReadStage::Leader { sent: Some(_) }) {
            return;
        }
        match index {
            Some(index) => {
                r.stage = ReadStage::Applied { index };
                self.leader_committed = self.leader_committed.max(index);
                self.maybe_catch_up(now);
                self.advance_read(now, request);
            }
            None => r.stage = ReadStage::Leader { sent: None },
        }
    }

    fn retry_reads(&mut self, now: Instant) {
        let retry = self.config.retry_interval;
        let mut failed = Vec::new();
        let mut again = Vec::new();
        for (k, r) in &mut self.reads {
            if now >= r.deadline {
                failed.push(*k);
            } else if let ReadStage::Leader { sent: Some(at) } = r.stage {
                if now >= at + retry {
                    r.stage = ReadStage::Leader { sent: None };
                    again.push(*k);
                }
            } else if matches!(r.stage, ReadStage::Leader { sent: None }) {
                again.push(*k);
            }
        }
        for k in failed {
            let r = self.reads.remove(&k).expect("present");
            match r.origin {
                ReadOrigin::Local(read, _) => self.emit(Event::ReadFailed {
                    read,
                    reason: ReadFailure::Timeout,
                }),
                ReadOrigin::Remote { peer, request, .. } => {
                    self.send(
                        peer,
                        Message::ReadIndexReply {
                            request,
                            index: None,
                        },
                    );
                }
            }
        }
        for k in again {
            self.advance_read(now, k);
        }
    }

    /// Checks internal invariants; panics with a description if one is broken (tests and
    /// fuzzing call it after every step).
    pub fn check_invariants(&self) {
        assert!(
            self.state.applied() <= self.committed,
            "applied past the chosen prefix"
        );
        assert!(
            self.committed <= self.log.last_slot().max(self.log.truncated()),
            "chosen prefix past the log"
        );
        assert!(
            self.log.truncated() <= self.state.applied(),
            "log compacted past the state"
        );
        if let Phase::Leader(l) = &self.phase {
            assert!(
                l.next_slot > self.log.truncated()
                    && l.inflight.keys().all(|s| *s > self.log.truncated()),
                "a proposal at or below the truncation point"
            );
            assert!(
                l.queue.len() <= self.config.max_pending + self.config.max_pending,
                "queue unbounded"
            );
            assert!(
                l.inflight.keys().all(|s| *s < l.next_slot),
                "in flight past next slot"
            );
            assert!(
                l.inflight
                    .keys()
                    .all(|s| *s <= self.state.applied() + self.config.alpha),
                "a slot proposed before the slot alpha below it was applied"
            );
            assert_eq!(
                Some(l.ballot),
                self.log.promised(),
                "leader without its own promise"
            );
        }
        assert!(self.reads.len() <= self.config.max_pending_reads + 1);
        assert!(self.outstanding.len() <= self.config.max_pending);
    }
}

mod snapshot;

fn merge_best(best: &mut BTreeMap<Slot, SlotValue>, v: SlotValue) {
    match best.get(&v.slot) {
        Some(old) if old.chosen => {}
        Some(old) if !v.chosen && old.ballot >= v.ballot => {}
        _ => {
            best.insert(v.slot, v);
        }
    }
}
