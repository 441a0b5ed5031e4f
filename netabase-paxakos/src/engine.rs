//! A paxakos node at work: the node with heartbeats, autofill and catch-up (paxakos's
//! decorations) and master leases ([`crate::leases`]), driven by one task that takes the
//! application's writes and reads, the requests peers sent it, and a stop.
//!
//! [`run`] is that task and [`spawn`] starts it on a thread of its own. It is
//! runtime-agnostic: the caller hands it a [`Transport`] to reach peers and feeds it
//! [`Input`]s over a bounded channel; its timers are `futures-timer`'s, as paxakos's own
//! are. The swarm glue runs it on libp2p; tests run it over memory.
//!
//! Writes: an entry goes to the node believed to lead (paxakos's leadership tracking), as
//! a [`Request::Append`](crate::wire::Request::Append), so that followers do not contend
//! for leadership (with master leases on, the voters would refuse them while the lease
//! lasts); if that fails, this node appends it itself. Every entry has an id of this
//! node's (its core peer id and a sequence number), so a write retried after an unknown
//! outcome is applied at most once.
//!
//! Reads: [`ReadLevel::Local`] reads this node's state; [`ReadLevel::Lease`] is paxakos's
//! strict master read (this node holds a lease from a majority of every configuration in
//! its concurrency window), falling back to a linearizable read; [`ReadLevel::Linearizable`]
//! appends a no-op entry and reads once it is applied here.
//!
//! After a crash the node restarts passive with no state ([`Start::Recover`]): it asks
//! its peers for a snapshot, installs it, and takes part again once the rounds it may have
//! voted in before the crash are settled (paxakos's recovery). After a clean stop it
//! resumes from the snapshot [`run`] returned ([`Start::Resume`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use netabase_core::consensus::{Entry, EntryId, LeaseConfig, Position, ReadLevel};
use paxakos::append::{AppendArgs, AppendError, Importance};
use paxakos::autofill::AutofillBuilderExt;
use paxakos::catch_up::CatchUpBuilderExt;
use paxakos::heartbeats::HeartbeatsBuilderExt;
use paxakos::invocation::Invocation;
use paxakos::leadership::track::TrackLeadershipBuilderExt;
use paxakos::node::builder::Starter;
use paxakos::node::{NodeStatus, Participation, Shutdown as _};
use paxakos::retry::RetryPolicy;
use paxakos::{Event, Node, ShutdownEvent};

use crate::communicator::{NetCommunicator, NetInvocation, Transport, serve};
use crate::leases::{LeaseBook, LeaseCommunicator, LeaseVoter};
use crate::wire::WireError;
use crate::{KvMachine, KvSnapshot, PaxakosEntry, PeerNode};

/// The engine's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Rounds in flight at once (paxakos's concurrency).
    pub concurrency: usize,
    /// How often the leader appends a heartbeat (a no-op entry), which also renews its
    /// master lease; well below the lease's duration.
    pub leader_heartbeat_interval: Duration,
    /// How long a node that is not the leader waits without hearing of a new round before
    /// it appends a heartbeat itself (and so contends for leadership): the engine's
    /// election timeout.
    pub heartbeat_interval: Duration,
    /// Gaps in the log (rounds a failed leader left open) are filled with no-ops after
    /// this delay, at most `autofill_batch` at a time.
    pub autofill_delay: Duration,
    /// Gaps filled at a time.
    pub autofill_batch: usize,
    /// Master leases: the voters grant the leader `duration`, the leader relies on it
    /// for `duration − (duration·ε + margin)` (paxakos's dilation margin from the drift
    /// bound ε). `None`: no leases, [`ReadLevel::Lease`] reads go through the log.
    pub lease: Option<LeaseConfig>,
    /// How often the node's events are polled without a wake-up (paxakos's catch-up
    /// decoration starts polls it never wakes the node for).
    pub tick: Duration,
    /// Attempts per append before the write fails as indeterminate.
    pub append_attempts: u32,
    /// The pause between two attempts (grown to an abstaining voter's lease if longer).
    pub retry_pause: Duration,
    /// Requests from peers being answered at once; more are refused.
    pub max_serving: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            concurrency: 8,
            leader_heartbeat_interval: Duration::from_millis(100),
            heartbeat_interval: Duration::from_millis(1_000),
            autofill_delay: Duration::from_millis(100),
            autofill_batch: 8,
            lease: Some(LeaseConfig::default()),
            tick: Duration::from_millis(20),
            append_attempts: 16,
            retry_pause: Duration::from_millis(20),
            max_serving: 256,
        }
    }
}

/// How the node starts.
#[derive(Debug)]
pub enum Start {
    /// A new cluster: round 0, empty state.
    Initial,
    /// After a crash: passive and without state until it installs a peer's snapshot and
    /// the rounds it may have voted in are settled.
    Recover,
    /// After a clean stop, from the snapshot that stop returned.
    Resume(Box<KvSnapshot>),
}

/// A write applied: its id, where, its answer, and whether it was a duplicate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The entry's id.
    pub id: EntryId,
    /// Where it was applied (round, index 0).
    pub position: Position,
    /// The encoded [`KvResponse`](netabase_core::consensus::KvResponse).
    pub response: Vec<u8>,
    /// Whether the entry had been applied before.
    pub duplicate: bool,
}

/// Why a write or read failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// Every attempt failed; the entry may still be applied, or never.
    #[error("the outcome of entry {0:?} is unknown")]
    Indeterminate(EntryId),
    /// The node has no state yet (recovering) or takes no part yet (passive).
    #[error("the node is recovering and cannot serve this yet")]
    Recovering,
    /// The node stopped.
    #[error("the engine stopped")]
    Stopped,
    /// Too many requests are being handled.
    #[error("the engine is busy")]
    Busy,
}

/// A read's answer: the value and the position that wrote it, if the key is set.
pub type ReadAnswer = Option<(Vec<u8>, Position)>;

/// What the engine is asked to do.
pub enum Input {
    /// Append an entry with `command` and answer once it is applied here.
    Write {
        /// The encoded [`KvCommand`](netabase_core::consensus::KvCommand).
        command: Vec<u8>,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<Written, EngineError>>,
    },
    /// Read `key` at `level`.
    Read {
        /// The key.
        key: Vec<u8>,
        /// How fresh.
        level: ReadLevel,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<ReadAnswer, EngineError>>,
    },
    /// Answer a peer's request.
    Serve {
        /// The request's bytes.
        request: Vec<u8>,
        /// Where the answer's bytes go (dropped: the request is not answered).
        reply: oneshot::Sender<Result<Vec<u8>, WireError>>,
    },
    /// Report the node's status.
    Status {
        /// Where it goes.
        reply: oneshot::Sender<EngineStatus>,
    },
}

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Write { .. } => f.write_str("Write"),
            Input::Read { level, .. } => write!(f, "Read({level:?})"),
            Input::Serve { .. } => f.write_str("Serve"),
            Input::Status { .. } => f.write_str("Status"),
        }
    }
}

/// A node's view of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineStatus {
    /// The cluster's members.
    pub members: Vec<libp2p_identity::PeerId>,
    /// The node believed to lead: the one whose directive carried the highest
    /// coordination number seen.
    pub leader: Option<libp2p_identity::PeerId>,
    /// That coordination number (0 before any).
    pub coord: u32,
    /// Whether this node takes part (false while recovering).
    pub active: bool,
    /// Whether it has a state (false until a recovering node installed a snapshot).
    pub oriented: bool,
    /// The last round applied here.
    pub round: u64,
    /// Counters.
    pub stats: EngineStats,
}

/// What the engine counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Entries applied.
    pub applied: u64,
    /// Writes forwarded to the leader.
    pub forwarded: u64,
    /// Forwarded writes that failed and were appended here instead.
    pub forward_failures: u64,
    /// Append attempts retried.
    pub retries: u64,
    /// Writes that failed as indeterminate.
    pub indeterminate: u64,
    /// Reads answered from a master lease.
    pub lease_reads: u64,
    /// Peer requests refused because too many were being answered.
    pub refused_requests: u64,
    /// Snapshots installed.
    pub snapshots_installed: u64,
}

/// How to reach the cluster and where this node stands in it.
pub struct Setup<T: Transport> {
    /// This node.
    pub me: libp2p_identity::PeerId,
    /// The proposer id its entries carry (its core peer id).
    pub proposer: netabase_core::PeerId,
    /// The first sequence number of its entries: above any it used before (a clock
    /// reading in microseconds does, unless it proposed more than one entry per
    /// microsecond).
    pub first_seq: u64,
    /// The cluster's members, this node included.
    pub members: Vec<libp2p_identity::PeerId>,
    /// How to reach them.
    pub transport: T,
    /// The settings.
    pub config: EngineConfig,
    /// How it starts.
    pub start: Start,
    /// Told of every entry applied here and of every change of leader (the swarm's
    /// events, the simulator's checkers).
    pub observer: Option<Observer>,
}

/// What an [`Observer`] is told.
#[derive(Debug)]
pub enum Observed<'a> {
    /// `entry` was applied in `round`.
    Applied {
        /// The round.
        round: u64,
        /// The entry.
        entry: &'a PaxakosEntry,
    },
    /// The node believed to lead changed: the one whose directive carried the highest
    /// coordination number seen.
    Leader {
        /// The leader.
        leader: libp2p_identity::PeerId,
        /// Its coordination number.
        coord: u32,
    },
}

/// A callback told of what a node applies and of changes of leader, on the engine's
/// thread (it must not block).
pub type Observer = Box<dyn FnMut(Observed<'_>) + Send>;

/// The sequence numbers of one node's entries, shared by its writes and its no-ops.
#[derive(Clone)]
struct Ids {
    proposer: netabase_core::PeerId,
    next: Arc<AtomicU64>,
}

impl Ids {
    fn next(&self) -> EntryId {
        EntryId {
            proposer: self.proposer,
            seq: self.next.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A no-op entry (heartbeats, gap fillers, read barriers): a command the state
    /// ignores.
    fn noop(&self) -> PaxakosEntry {
        PaxakosEntry(Entry {
            id: self.next(),
            command: Vec::new(),
        })
    }
}

/// Retries an append a bounded number of times, pausing between attempts (at least as
/// long as an abstaining voter's lease). An attempt that found its round settled and
/// learned the entry there (a node behind by that round) is retried at once in the next
/// round without counting, up to [`CATCHING_UP_ATTEMPTS`].
struct Retries<I> {
    left: u32,
    catching_up: u32,
    pause: Duration,
    retried: Arc<AtomicU64>,
    _invocation: std::marker::PhantomData<fn() -> I>,
}

impl<E: fmt::Debug + Send + Sync + 'static> RetryPolicy
    for Retries<crate::KvInvocation<crate::CommunicatorError<E>>>
{
    type Invocation = crate::KvInvocation<crate::CommunicatorError<E>>;
    type Error = AppendError<Self::Invocation>;
    type StaticError = AppendError<Self::Invocation>;
    type Future = BoxFuture<'static, Result<(), Self::Error>>;

    fn eval(&mut self, error: AppendError<Self::Invocation>) -> Self::Future {
        if matches!(error, AppendError::Converged { caught_up: true }) && self.catching_up > 0 {
            self.catching_up -= 1;
            self.retried.fetch_add(1, Ordering::Relaxed);
            return futures::future::ready(Ok(())).boxed();
        }
        let retry = self.left > 0
            && matches!(
                error,
                AppendError::Converged { .. }
                    | AppendError::Lost
                    | AppendError::NoQuorum { .. }
                    | AppendError::Railroaded
            );
        if !retry {
            return futures::future::ready(Err(error)).boxed();
        }
        self.left -= 1;
        self.retried.fetch_add(1, Ordering::Relaxed);
        let mut pause = self.pause;
        if let AppendError::NoQuorum {
            abstentions,
            communication_errors,
            ..
        } = &error
        {
            let bound = communication_errors.iter().filter_map(|e| match e {
                crate::CommunicatorError::Abstained(d) => Some(d),
                _ => None,
            });
            if let Some(longest) = abstentions.iter().chain(bound).max() {
                pause = pause.max(*longest);
            }
        }
        futures_timer::Delay::new(pause).map(Ok).boxed()
    }
}

/// Rounds an append may learn (and retry past) without counting an attempt.
const CATCHING_UP_ATTEMPTS: u32 = 4096;

/// Heartbeats with entries of this node's ids.
struct Heartbeats<N> {
    ids: Ids,
    interval: Duration,
    leader_interval: Duration,
    _node: std::marker::PhantomData<fn() -> N>,
}

impl<N, E> paxakos::heartbeats::Config for Heartbeats<N>
where
    N: Node<Invocation = crate::KvInvocation<E>>,
    E: fmt::Debug + Send + Sync + 'static,
{
    type Node = N;
    type Applicable = PaxakosEntry;
    type RetryPolicy = paxakos::retry::DoNotRetry<crate::KvInvocation<E>>;

    fn leader_interval(&self) -> Option<Duration> {
        Some(self.leader_interval)
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    fn new_heartbeat(&self) -> PaxakosEntry {
        self.ids.noop()
    }

    fn retry_policy(&self) -> Self::RetryPolicy {
        paxakos::retry::DoNotRetry::new()
    }
}

/// Gap filling with entries of this node's ids.
struct Autofill<N> {
    ids: Ids,
    batch: usize,
    delay: Duration,
    _node: std::marker::PhantomData<fn() -> N>,
}

impl<N, E> paxakos::autofill::Config for Autofill<N>
where
    N: Node<Invocation = crate::KvInvocation<E>>,
    E: fmt::Debug + Send + Sync + 'static,
{
    type Node = N;
    type Applicable = PaxakosEntry;
    type RetryPolicy = paxakos::retry::DoNotRetry<crate::KvInvocation<E>>;

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn delay(&self) -> Option<Duration> {
        Some(self.delay)
    }

    fn new_filler(&self) -> PaxakosEntry {
        self.ids.noop()
    }

    fn retry_policy(&self) -> Self::RetryPolicy {
        paxakos::retry::DoNotRetry::new()
    }
}

/// What the task waits for next.
enum Step<E: fmt::Debug + Send + Sync + 'static> {
    Event(Event<crate::KvInvocation<E>>),
    Input(Option<Input>),
    Done(Done),
    Tick,
}

/// Work finished in the background.
enum Done {
    /// An answer to a peer's request went out.
    Served,
    /// A write applied (at the leader when it was forwarded) or failed.
    Written {
        reply: oneshot::Sender<Result<Written, EngineError>>,
        result: Result<Written, EngineError>,
        forwarded: bool,
        forward_failed: bool,
    },
    /// A snapshot fetched from a peer (or not).
    Snapshot(Option<Box<KvSnapshot>>),
    /// A snapshot installed (or not).
    Installed(bool),
    /// A read answered.
    Read,
    /// A campaign's no-op appended (or not).
    Campaigned,
    /// A read's no-op applied at round `at` (at the leader when it was forwarded): the
    /// read is served once this node applied that round.
    Barrier {
        at: Result<u64, EngineError>,
        key: Vec<u8>,
        reply: oneshot::Sender<Result<ReadAnswer, EngineError>>,
    },
}

/// A write applied at the leader, waiting for its round to be applied here.
type WaitingWrite = (u64, oneshot::Sender<Result<Written, EngineError>>, Written);

/// A read waiting for its round to be applied here.
type WaitingRead = (
    u64,
    Vec<u8>,
    oneshot::Sender<Result<ReadAnswer, EngineError>>,
);

/// Runs the node described by `setup` until `inputs` closes (every sender dropped), then
/// shuts it down cleanly and returns the snapshot to [resume](Start::Resume) from (`None`
/// if it had no state).
pub async fn run<T: Transport>(
    setup: Setup<T>,
    inputs: mpsc::Receiver<Input>,
) -> Option<KvSnapshot> {
    run_with(setup, inputs, paxakos::executor::StdThread).await
}

/// The executor paxakos's state keeper of a node of the engine can be run by.
pub trait KeeperExecutor<T: Transport>:
    paxakos::executor::Executor<
        NetInvocation<T>,
        LeaseVoter,
        paxakos::buffer::InMemoryBuffer<u64, u32, PaxakosEntry>,
        Error: fmt::Debug,
    >
{
}

impl<T: Transport, X> KeeperExecutor<T> for X where
    X: paxakos::executor::Executor<
            NetInvocation<T>,
            LeaseVoter,
            paxakos::buffer::InMemoryBuffer<u64, u32, PaxakosEntry>,
            Error: fmt::Debug,
        >
{
}

/// Like [`run`], with paxakos's state keeper run by `executor` instead of a thread of its
/// own (the simulator runs it on its single-threaded executor).
pub async fn run_with<T: Transport, X: KeeperExecutor<T>>(
    setup: Setup<T>,
    mut inputs: mpsc::Receiver<Input>,
    executor: X,
) -> Option<KvSnapshot> {
    let Setup {
        me,
        proposer,
        first_seq,
        members,
        transport,
        config,
        start,
        mut observer,
    } = setup;
    let ids = Ids {
        proposer,
        next: Arc::new(AtomicU64::new(first_seq.max(1))),
    };
    let nodes: Vec<PeerNode> = members.iter().copied().map(PeerNode).collect();
    let net = NetCommunicator::new(transport);
    let leases = LeaseBook::new(me, config.lease);
    let communicator = LeaseCommunicator::new(net.clone(), leases.clone());
    let voter = LeaseVoter::new(leases.clone());
    let builder = NetInvocation::<T>::node_builder()
        .for_node(me)
        .communicating_via(communicator);
    let initial = KvMachine::new(nodes, config.concurrency);
    let starter = match start {
        Start::Initial => Starter::Resume(KvSnapshot::initial_with(initial)),
        Start::Recover => Starter::None,
        Start::Resume(snapshot) => Starter::Resume(*snapshot),
    };
    let spawned = builder
        .with(starter)
        .voting_with(voter)
        .track_leadership()
        .send_heartbeats(Heartbeats {
            ids: ids.clone(),
            interval: config.heartbeat_interval,
            leader_interval: config.leader_heartbeat_interval,
            _node: std::marker::PhantomData,
        })
        .fill_gaps(Autofill {
            ids: ids.clone(),
            batch: config.autofill_batch,
            delay: config.autofill_delay,
            _node: std::marker::PhantomData,
        })
        .catch_up(paxakos::catch_up::StaticConfig::default())
        .spawn_using(executor)
        .await;
    let (handler, mut node) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            tracing::error!(error = ?e, "the paxakos node cannot start");
            return None;
        }
    };
    let handle = node.handle();
    let handler = Arc::new(handler);
    let retried = Arc::new(AtomicU64::new(0));
    let retries = || Retries {
        left: config.append_attempts,
        catching_up: CATCHING_UP_ATTEMPTS,
        pause: config.retry_pause,
        retried: retried.clone(),
        _invocation: std::marker::PhantomData,
    };
    let mut stats = EngineStats::default();
    let mut round = 0u64;
    let mut background: FuturesUnordered<BoxFuture<'static, Done>> = FuturesUnordered::new();
    let mut serving = 0usize;
    let mut fetching = false;
    let mut next_source = 0usize;
    // Writes applied at the leader, answered once this node applied their round too (so
    // that a local read after a write sees it).
    let mut applied_elsewhere: Vec<WaitingWrite> = Vec::new();
    let mut reads_waiting: Vec<WaitingRead> = Vec::new();
    let mut leader: Option<(u32, libp2p_identity::PeerId)> = None;
    // When this node last heard of a round (a directive or an applied entry), and whether
    // its own campaign is under way.
    let mut last_heard = instant::Instant::now();
    let mut campaigning = false;
    let rank = {
        let mut sorted = members.clone();
        sorted.sort();
        sorted.iter().position(|m| *m == me).unwrap_or(0) as u32
    };
    let mut tick = futures_timer::Delay::new(config.tick).fuse();
    loop {
        // Reads whose barrier round is applied here.
        if reads_waiting.iter().any(|(at, _, _)| *at <= round) {
            let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut reads_waiting)
                .into_iter()
                .partition(|(at, _, _)| *at <= round);
            reads_waiting = later;
            for (_, key, reply) in ready {
                background.push(read_state(&handle, key, reply));
            }
        }
        let step = {
            let events = futures::future::poll_fn(|cx| match node.poll_events(cx) {
                Poll::Ready(e) => Poll::Ready(Step::Event(e)),
                Poll::Pending => Poll::Pending,
            });
            futures::select_biased! {
                step = events.fuse() => step,
                input = inputs.next() => Step::Input(input),
                done = background.select_next_some() => Step::Done(done),
                () = tick => Step::Tick,
            }
        };
        match step {
            Step::Event(Event::Apply {
                round: r,
                log_entry,
                ..
            }) => {
                last_heard = instant::Instant::now();
                if let Some(observe) = &mut observer {
                    observe(Observed::Applied {
                        round: r,
                        entry: &log_entry,
                    });
                }
                round = r;
                stats.applied += 1;
                answer_applied(&mut applied_elsewhere, round);
            }
            Step::Event(Event::Install { round: r, .. } | Event::Init { round: r, .. }) => {
                round = r;
                answer_applied(&mut applied_elsewhere, round);
            }
            // The node believed to lead: the one whose directive (prepare, proposal or
            // commit) carried the highest coordination number seen.
            Step::Event(Event::Directive {
                leader: l,
                coord_num,
                ..
            }) => {
                last_heard = instant::Instant::now();
                if leader.is_none_or(|(c, _)| coord_num >= c) && leader != Some((coord_num, l.0)) {
                    leader = Some((coord_num, l.0));
                    if let Some(observe) = &mut observer {
                        observe(Observed::Leader {
                            leader: l.0,
                            coord: coord_num,
                        });
                    }
                }
            }
            Step::Event(_) => {}
            Step::Tick => {
                tick = futures_timer::Delay::new(config.tick).fuse();
                // paxakos's heartbeats only maintain a leadership, and only a write
                // gains one: a node that has heard of no round for its election timeout
                // (staggered by its place among the members, so that they rarely contend)
                // appends a no-op to lead.
                let now = instant::Instant::now();
                let timeout = config.heartbeat_interval
                    + config.heartbeat_interval * rank / (members.len() as u32).max(1);
                if !campaigning
                    && matches!(node.participation(), Participation::Active)
                    && node.status() != NodeStatus::Disoriented
                    && now.duration_since(last_heard) >= timeout
                {
                    campaigning = true;
                    last_heard = now;
                    let (handle, noop, policy) = (handle.clone(), ids.noop(), retries());
                    background.push(
                        async move {
                            let _ = append_here(&handle, noop, policy).await;
                            Done::Campaigned
                        }
                        .boxed(),
                    );
                }
                // A recovering node without state, or one that fell behind what the
                // others still hold entries for, asks its peers for a snapshot, one at a
                // time, in turn.
                if matches!(node.status(), NodeStatus::Disoriented | NodeStatus::Lagging)
                    && !fetching
                {
                    let peers: Vec<_> = members.iter().filter(|p| **p != me).copied().collect();
                    if !peers.is_empty() {
                        let peer = peers[next_source % peers.len()];
                        next_source += 1;
                        fetching = true;
                        let fetch = net.fetch_snapshot(peer);
                        background.push(
                            async move { Done::Snapshot(fetch.await.ok().map(Box::new)) }.boxed(),
                        );
                    }
                }
            }
            Step::Done(Done::Snapshot(snapshot)) => {
                fetching = false;
                if let Some(snapshot) = snapshot
                    && (node.status() == NodeStatus::Disoriented
                        || (node.status() == NodeStatus::Lagging && snapshot.round() > round))
                {
                    fetching = true;
                    let installing = handle.install_snapshot(*snapshot);
                    background
                        .push(async move { Done::Installed(installing.await.is_ok()) }.boxed());
                }
            }
            Step::Done(Done::Installed(installed)) => {
                fetching = false;
                stats.snapshots_installed += u64::from(installed);
            }
            Step::Done(Done::Read) => {}
            Step::Done(Done::Campaigned) => campaigning = false,
            Step::Done(Done::Served) => serving = serving.saturating_sub(1),
            Step::Done(Done::Barrier { at, key, reply }) => match at {
                Ok(at) => reads_waiting.push((at, key, reply)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Step::Done(Done::Written {
                reply,
                result,
                forwarded,
                forward_failed,
            }) => {
                stats.forwarded += u64::from(forwarded);
                stats.forward_failures += u64::from(forward_failed);
                match result {
                    Ok(written) if written.position.slot > round => {
                        applied_elsewhere.push((written.position.slot, reply, written));
                    }
                    result => {
                        if matches!(result, Err(EngineError::Indeterminate(_))) {
                            stats.indeterminate += 1;
                        }
                        let _ = reply.send(result);
                    }
                }
            }
            Step::Input(None) => break,
            Step::Input(Some(Input::Status { reply })) => {
                stats.retries = retried.load(Ordering::Relaxed);
                let _ = reply.send(EngineStatus {
                    members: members.clone(),
                    leader: leader.map(|(_, l)| l),
                    coord: leader.map_or(0, |(c, _)| c),
                    active: matches!(node.participation(), Participation::Active),
                    oriented: node.status() != NodeStatus::Disoriented,
                    round,
                    stats: stats.clone(),
                });
            }
            Step::Input(Some(Input::Serve { request, reply })) => {
                if serving >= config.max_serving {
                    stats.refused_requests += 1;
                    continue;
                }
                serving += 1;
                let handler = handler.clone();
                let handle = handle.clone();
                background.push(
                    async move {
                        let _ = reply.send(serve(&handler, &handle, &request).await);
                        Done::Served
                    }
                    .boxed(),
                );
            }
            Step::Input(Some(Input::Write { command, reply })) => {
                if node.status() == NodeStatus::Disoriented {
                    let _ = reply.send(Err(EngineError::Recovering));
                    continue;
                }
                let entry = PaxakosEntry(Entry {
                    id: ids.next(),
                    command,
                });
                let forward_to = leader.map(|(_, l)| l).filter(|l| *l != me);
                let forward = forward_to
                    .map(|l| bounded(net.forward(l, entry.clone()), config.heartbeat_interval));
                let forwarded = forward.is_some();
                let submitted = submit(entry, forward, handle.clone(), retries());
                background.push(
                    async move {
                        let (result, forward_failed) = submitted.await;
                        Done::Written {
                            reply,
                            result,
                            forwarded,
                            forward_failed,
                        }
                    }
                    .boxed(),
                );
            }
            Step::Input(Some(Input::Read { key, level, reply })) => {
                if node.status() == NodeStatus::Disoriented {
                    let _ = reply.send(Err(EngineError::Recovering));
                    continue;
                }
                if level == ReadLevel::Local {
                    background.push(read_state(&handle, key, reply));
                    continue;
                }
                let master = leases
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_master(&members);
                if level == ReadLevel::Lease && master {
                    stats.lease_reads += 1;
                    background.push(read_state(&handle, key, reply));
                    continue;
                }
                // Through the log: a no-op appended (by the leader when it is another
                // node), then the state read once it is applied here.
                let barrier = ids.noop();
                let forward_to = leader.map(|(_, l)| l).filter(|l| *l != me);
                let forward = forward_to
                    .map(|l| bounded(net.forward(l, barrier.clone()), config.heartbeat_interval));
                let submitted = submit(barrier, forward, handle.clone(), retries());
                background.push(
                    async move {
                        let (written, _) = submitted.await;
                        let at = written.map(|w| w.position.slot);
                        Done::Barrier { at, key, reply }
                    }
                    .boxed(),
                );
            }
        }
    }
    // A clean stop: paxakos hands back the snapshot to resume from.
    let mut shutdown = node.shut_down();
    let last = futures::future::poll_fn(|cx| {
        loop {
            match shutdown.poll_shutdown(cx) {
                Poll::Ready(ShutdownEvent::Final { snapshot, .. }) => return Poll::Ready(snapshot),
                Poll::Ready(_) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    last.state().is_some().then_some(last)
}

/// `forward`'s answer, or `None` after `limit` (a leader that stopped answering: the
/// write is appended here instead, as a write with an unknown outcome may be again).
async fn bounded<T>(
    forward: BoxFuture<'static, Result<T, impl fmt::Debug>>,
    limit: Duration,
) -> Result<T, ()> {
    futures::select_biased! {
        answer = forward.fuse() => answer.map_err(|_| ()),
        () = futures_timer::Delay::new(limit).fuse() => Err(()),
    }
}

/// Reads `key` from the node's state and answers `reply`, in the background (the task
/// never waits on the state keeper itself, so that it keeps taking inputs and events).
fn read_state<E: fmt::Debug + Send + Sync + 'static>(
    handle: &paxakos::NodeHandle<crate::KvInvocation<E>>,
    key: Vec<u8>,
    reply: oneshot::Sender<Result<ReadAnswer, EngineError>>,
) -> BoxFuture<'static, Done> {
    let read = handle.read_stale(move |s: &KvMachine| lookup(s, &key));
    async move {
        let _ = reply.send(read.await.map_err(|_| EngineError::Recovering));
        Done::Read
    }
    .boxed()
}

fn lookup(state: &KvMachine, key: &[u8]) -> ReadAnswer {
    state.kv().get(key).map(|(v, p)| (v.to_vec(), p))
}

/// Sends the answers of writes applied elsewhere whose round this node applied.
fn answer_applied(waiting: &mut Vec<WaitingWrite>, round: u64) {
    let mut i = 0;
    while i < waiting.len() {
        if waiting[i].0 <= round {
            let (_, reply, written) = waiting.swap_remove(i);
            let _ = reply.send(Ok(written));
        } else {
            i += 1;
        }
    }
}

/// Appends `entry` through the node believed to lead when `forward` asks it (another
/// node), else (or when that fails) through this node; with whether forwarding failed.
async fn submit<E: fmt::Debug + Send + Sync + 'static>(
    entry: PaxakosEntry,
    forward: Option<impl Future<Output = Result<crate::communicator::Forwarded, ()>>>,
    handle: paxakos::NodeHandle<crate::KvInvocation<crate::CommunicatorError<E>>>,
    policy: Retries<crate::KvInvocation<crate::CommunicatorError<E>>>,
) -> (Result<Written, EngineError>, bool) {
    let id = entry.0.id;
    let Some(forward) = forward else {
        return (append_here(&handle, entry, policy).await, false);
    };
    match forward.await {
        Ok((round, response, duplicate)) => {
            let position = Position {
                slot: round,
                index: 0,
            };
            let written = Written {
                id,
                position,
                response,
                duplicate,
            };
            (Ok(written), false)
        }
        Err(()) => (append_here(&handle, entry, policy).await, true),
    }
}

/// Appends `entry` through this node and waits until it is applied here.
async fn append_here<E: fmt::Debug + Send + Sync + 'static>(
    handle: &paxakos::NodeHandle<crate::KvInvocation<crate::CommunicatorError<E>>>,
    entry: PaxakosEntry,
    policy: Retries<crate::KvInvocation<crate::CommunicatorError<E>>>,
) -> Result<Written, EngineError> {
    let id = entry.0.id;
    let args = AppendArgs {
        round: 0..=u64::MAX,
        importance: Importance::GainLeadership,
        retry_policy: policy,
    };
    let commit = handle
        .append(entry, args)
        .await
        .map_err(|_| EngineError::Indeterminate(id))?;
    let round = commit.round_num();
    let applied = commit.await.map_err(|_| EngineError::Stopped)?;
    Ok(Written {
        id,
        position: Position {
            slot: round,
            index: 0,
        },
        response: applied.response,
        duplicate: applied.duplicate,
    })
}

/// Starts the engine of `setup` on a thread of its own, with an input channel of
/// `capacity` (a full channel refuses inputs at once: the caller answers "busy"). The
/// thread ends when every sender of the channel is dropped, with the snapshot a clean
/// stop leaves.
///
/// A thread of its own, as paxakos gives its state keeper, so that the engine does not
/// depend on the caller's runtime.
pub fn spawn<T: Transport>(
    setup: Setup<T>,
    capacity: usize,
) -> std::io::Result<(
    mpsc::Sender<Input>,
    std::thread::JoinHandle<Option<KvSnapshot>>,
)> {
    let (inputs, receiver) = mpsc::channel(capacity);
    let thread = std::thread::Builder::new()
        .name("netabase-paxakos".into())
        .spawn(move || futures::executor::block_on(run(setup, receiver)))?;
    Ok((inputs, thread))
}

#[cfg(test)]
mod tests;
