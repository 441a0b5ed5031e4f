//! The discrete-event engine: many cores under one virtual clock, on one thread or several.
//!
//! Nodes are split into shards of consecutive indices, one per thread. Every event
//! belongs to one node, and a message takes at least the network's minimum latency (the
//! lookahead) to reach another node, so a shard may process its events up to one
//! lookahead past the slowest shard without waiting: nothing the others do later can reach
//! it sooner (conservative parallel simulation). Shards hand each other messages through
//! mailboxes. Time advances in epochs of 16 lookaheads, cut at every event
//! that touches the whole network (joins, crashes, partitions, memory checks), which runs
//! alone between epochs, as do choosing the workload's next operations and recording and
//! checking the finished ones.
//!
//! The run does not depend on the number of shards: events are ordered by (virtual time,
//! originating node, that node's own count), every random draw of a message comes from its
//! sender's generator, epochs are cut at the same times, and the trace hash folds each
//! node's own event stream. One thread and eight give the same trace hash.

use std::io::Write as _;
use std::ops::{Index, IndexMut};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use std::collections::{BTreeMap, VecDeque};

use netabase_core::model::Envelope;
use netabase_core::{
    Address, Config, Event, InboundId, Instant, Key, Keypair, Mode, Node, Output, PeerId, QueryId,
    QueryResult, Quorum, RecordKey, RecordStore, Request, RequestFailure, RequestId, Response,
    Version,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::{Xxh3, xxh3_64_with_seed};

use crate::checkers::{self, Checker, Detail};
use crate::disk::{SimStore, StoreBugs};
use crate::history::{FaultLog, History, OpKind, OpRecord, Outcome, Scope};
use crate::queue::EventQueue;
use crate::report::{OpCounts, Report, Violation, percentile};
use crate::scenario::{PartitionKind, Scenario};

/// Bytes of trace gathered before they are hashed.
const TRACE_CHUNK: usize = 16 * 1024;

/// Length of an epoch, in lookaheads (of at least a millisecond): the workload's
/// operations are chosen, and finished ones recorded and checked, between epochs.
const EPOCH_LOOKAHEADS: u32 = 16;

/// Bits of an event's order key that count the originating node's events.
const ORDER_BITS: u32 = 40;

/// SplitMix64: derives independent 64-bit values from a seed and a counter.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform draw in `[0, 1)`.
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn secs(s: f64) -> Instant {
    Instant::from_micros((s.max(0.0) * 1e6) as u64)
}

fn ms(m: f64) -> Duration {
    Duration::from_micros((m.max(0.0) * 1e3) as u64)
}

/// The wall clocks of the simulated nodes start here (microseconds since the Unix epoch,
/// November 2023), far enough from zero that a clock may step back.
const WALL_EPOCH_MICROS: i128 = 1_700_000_000_000_000;

/// The failure of an operation whose node crashed before it finished.
pub(crate) const CRASHED: &str = "node crashed";

/// How a put or removal that a newer version superseded fails (the write lost, as last
/// writer wins says it must).
pub const SUPERSEDED: &str = "superseded by a newer version";

/// The model id of the records the workload writes.
const WORKLOAD_MODEL: u16 = 0;

/// The schema version of the records the workload writes.
const WORKLOAD_SCHEMA: u32 = 1;

/// The version of a record value, if it is a signed envelope.
pub fn version_of(value: &[u8]) -> Option<(Version, bool)> {
    Envelope::version_of(value)
}

/// The simulated address of node `i`: its index.
fn address_of(i: usize) -> Address {
    Address::from_bytes(&(i as u32).to_be_bytes()).expect("four bytes")
}

/// The life stage of a simulated node.
pub enum NodeState {
    /// Not started yet.
    NotJoined,
    /// Running.
    Up(Box<Node<SimStore>>),
    /// Crashed: only its durable store is left.
    Down(Box<SimStore>),
}

/// An input that reached a node while it was syncing its disk: handled, in arrival
/// order, once the sync completes.
enum Queued {
    Msg { from: u32, msg: Msg },
    Timer,
    Op(Box<OpStart>),
}

/// A client operation running on a node.
struct OpRun {
    op: usize,
    /// A get: the version of the node's own copy when it started.
    local: Option<Version>,
    /// A put or removal: the key and the version it wrote.
    written: Option<(RecordKey, Version)>,
    /// A put or removal a peer answered with a newer version of the record.
    superseded: bool,
}

/// One simulated node.
pub struct SimNode {
    /// Its identity.
    pub peer: PeerId,
    /// Its key (cached).
    pub key: Key,
    /// Its state.
    pub state: NodeState,
    /// How far its clock is ahead of virtual time.
    pub skew: Duration,
    /// Its signing identity.
    keypair: Keypair,
    /// How fast its wall clock runs, in parts per million off virtual time.
    drift_ppm: f64,
    /// Steps of its wall clock: (when, by how many µs).
    steps: Vec<(Instant, i64)>,
    /// Bumped at every restart: answers addressed to an earlier incarnation are dropped.
    pub incarnation: u32,
    timer_at: Option<Instant>,
    /// Its open connections as it sees them. The other side learns of a closed
    /// connection one link latency later.
    conns: Conns,
    /// Inbound requests waiting for its answer: (inbound id, requester, the requester's
    /// incarnation, its request id). Nodes answer at once, so this holds one or two.
    inbound: Vec<(u64, u32, u32, RequestId)>,
    next_inbound: u64,
    /// Client operations running on it, by query.
    ops: FxHashMap<QueryId, OpRun>,
    /// Draws for the messages it sends: jitter, loss, duplication, reordering.
    rng: ChaCha8Rng,
    /// Events it has scheduled or processed: orders its events and stamps connection use.
    count: u64,
    /// Hash of its own event stream.
    trace: u64,
    /// Draws for its disk's sync latencies.
    disk_rng: ChaCha8Rng,
    /// The sync in progress, if any (its number).
    sync: Option<u64>,
    sync_seq: u64,
    /// Outputs waiting for the sync in progress.
    held: Vec<Output>,
    /// Inputs waiting for the sync in progress.
    queued: VecDeque<Queued>,
    /// With a disk model: for every key it acknowledged holding (a PUT_VALUE answer, a put
    /// of its own that completed), the newest version and that copy's expiry.
    acked: BTreeMap<RecordKey, (Version, Option<Instant>)>,
    /// GET_VALUE answers with a record it served (for the `corrupt-every-third-value` bug).
    served_values: u64,
}

impl SimNode {
    /// The running node, if up.
    pub fn node(&self) -> Option<&Node<SimStore>> {
        match &self.state {
            NodeState::Up(n) => Some(n),
            _ => None,
        }
    }

    /// Whether the node is running.
    pub fn is_up(&self) -> bool {
        matches!(self.state, NodeState::Up(_))
    }

    /// How many connections the node has open.
    pub fn open_connections(&self) -> usize {
        self.conns.order.len()
    }

    /// The node's store: the running node's, or what a crashed node kept.
    pub fn store(&self) -> Option<&SimStore> {
        match &self.state {
            NodeState::Up(n) => Some(n.store()),
            NodeState::Down(s) => Some(&**s),
            NodeState::NotJoined => None,
        }
    }

    /// Its wall clock at virtual time `t`, in microseconds since the Unix epoch: virtual
    /// time plus its skew, drift and the steps made so far.
    pub fn wall_clock(&self, t: Instant) -> u64 {
        let micros = t.as_micros();
        let drift = (micros as f64 * self.drift_ppm / 1e6) as i128;
        let steps: i128 = self
            .steps
            .iter()
            .filter(|(at, _)| *at <= t)
            .map(|(_, d)| i128::from(*d))
            .sum();
        let wall =
            WALL_EPOCH_MICROS + i128::from(micros) + self.skew.as_micros() as i128 + drift + steps;
        wall.clamp(0, i128::from(u64::MAX)) as u64
    }

    fn core_mut(&mut self) -> Option<&mut Node<SimStore>> {
        match &mut self.state {
            NodeState::Up(n) => Some(n),
            _ => None,
        }
    }

    /// The requester of inbound request `id`: (node, incarnation, its request id).
    fn take_inbound(&mut self, id: InboundId) -> Option<(u32, u32, RequestId)> {
        let pos = self.inbound.iter().position(|e| e.0 == id.0)?;
        let (_, j, inc, rid) = self.inbound.swap_remove(pos);
        Some((j, inc, rid))
    }

    /// The order key of the next event this node (index `i`) schedules.
    fn next_order(&mut self, i: usize) -> u64 {
        self.count += 1;
        ((i as u64 + 1) << ORDER_BITS) | self.count
    }
}

/// A node's open connections: a bit per peer to look one up with one memory access (an
/// event's node is usually cold in the cache), and the peers in the order they connected.
#[derive(Default)]
struct Conns {
    bits: Vec<u64>,
    order: std::collections::VecDeque<u32>,
}

impl Conns {
    fn contains(&self, y: u32) -> bool {
        self.bits
            .get(y as usize / 64)
            .is_some_and(|w| w >> (y % 64) & 1 == 1)
    }

    /// Adds `y`, which is not in.
    fn insert(&mut self, y: u32) {
        let word = y as usize / 64;
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        self.bits[word] |= 1 << (y % 64);
        self.order.push_back(y);
    }

    /// Removes `y`; whether it was in. (The list is kept for closing the oldest: a peer
    /// taken out of it by the caller only has its bit cleared here.)
    fn remove(&mut self, y: u32) -> bool {
        if !self.contains(y) {
            return false;
        }
        self.bits[y as usize / 64] &= !(1 << (y % 64));
        if let Some(p) = self.order.iter().position(|&z| z == y) {
            self.order.remove(p);
        }
        true
    }
}

/// The simulated nodes, by index. They are kept in runs of consecutive indices, one per
/// shard, so that a shard's nodes can go to another thread for an epoch.
pub struct Nodes {
    parts: Vec<Vec<SimNode>>,
    part_len: usize,
    len: usize,
}

impl Nodes {
    fn new(nodes: Vec<SimNode>, part_len: usize) -> Self {
        let len = nodes.len();
        let mut nodes = nodes.into_iter();
        let mut parts = Vec::new();
        loop {
            let part: Vec<SimNode> = nodes.by_ref().take(part_len).collect();
            if part.is_empty() {
                break;
            }
            parts.push(part);
        }
        Nodes {
            parts,
            part_len,
            len,
        }
    }

    /// Splits the nodes into runs of `part_len`.
    fn regroup(&mut self, part_len: usize) {
        let all: Vec<SimNode> = std::mem::take(&mut self.parts)
            .into_iter()
            .flatten()
            .collect();
        *self = Nodes::new(all, part_len);
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The nodes in index order.
    pub fn iter(&self) -> impl Iterator<Item = &SimNode> {
        self.parts.iter().flatten()
    }

    /// Node `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&SimNode> {
        self.parts.get(i / self.part_len)?.get(i % self.part_len)
    }
}

impl Index<usize> for Nodes {
    type Output = SimNode;
    fn index(&self, i: usize) -> &SimNode {
        &self.parts[i / self.part_len][i % self.part_len]
    }
}

impl IndexMut<usize> for Nodes {
    fn index_mut(&mut self, i: usize) -> &mut SimNode {
        &mut self.parts[i / self.part_len][i % self.part_len]
    }
}

/// The state checkers may read.
pub struct World {
    /// The scenario.
    pub scenario: Scenario,
    /// The seed of this run.
    pub seed: u64,
    /// Current virtual time.
    pub now: Instant,
    /// The nodes.
    pub nodes: Nodes,
    /// Node index by peer id.
    pub index: FxHashMap<PeerId, usize>,
    /// When faults were active.
    pub faults: FaultLog,
    /// Every client operation.
    pub history: History,
    /// When the last node joined.
    pub all_joined_at: Instant,
    /// When every fault healed (start of the liveness phase), if scheduled.
    pub heal_at: Option<Instant>,
    /// Records a node acknowledged holding that its disk did not keep through a crash:
    /// (node, when it crashed, what was lost).
    pub lost_acks: Vec<(usize, Instant, String)>,
}

#[derive(Debug, Clone)]
enum Msg {
    Request {
        id: RequestId,
        from_inc: u32,
        request: Request,
    },
    Response {
        id: RequestId,
        response: Response,
    },
    Sent {
        id: RequestId,
    },
    Failed {
        id: RequestId,
        failure: RequestFailure,
    },
    /// The sender closed its connection to the receiver.
    Closed,
}

/// An event of one node.
#[derive(Debug)]
enum Ev {
    Deliver {
        to: u32,
        /// Incarnation the message is addressed to (answers); `None` for new requests.
        to_inc: Option<u32>,
        from: u32,
        /// Slot of the message in [`Shard::msgs`].
        msg: u32,
    },
    Timer {
        node: u32,
    },
    /// A client operation starts on a node.
    Op(Box<OpStart>),
    /// A node's disk finished sync number `seq`.
    SyncDone {
        node: u32,
        seq: u64,
    },
}

/// A client operation, chosen between epochs, that starts on its node during one.
#[derive(Debug)]
struct OpStart {
    node: u32,
    op: usize,
    kind: OpKind,
    key: RecordKey,
    /// A put's payload.
    value: Vec<u8>,
    /// Copies a put must store, or a get collect.
    quorum: usize,
    /// Whether a put seals a versioned record (otherwise it writes the plain payload).
    versioned: bool,
}

/// An event that touches the whole network: processed between epochs, alone. (The
/// workload's operations are chosen between epochs too, but each one starts as an event
/// of its node, so they do not cut epochs short.)
#[derive(Debug)]
enum Global {
    Join(u32),
    Crash(u32),
    Restart(u32),
    PartitionStart(usize),
    PartitionEnd(usize),
    Clog(u32),
    Unclog(u32),
    HealAll,
    MemCheck,
    /// Every key with an acknowledged write is read once more.
    FinalReads,
    /// The closest live nodes of every key are compared.
    Converge,
}

struct ActivePartition {
    kind: PartitionKind,
    /// Group A membership (split, one-way) or the isolated node (isolate).
    in_a: Vec<bool>,
    active: bool,
    fault: Option<usize>,
}

/// What every shard may read about any node during an epoch.
#[derive(Clone, Copy)]
struct Status {
    up: bool,
    incarnation: u32,
}

/// The network as shards see it during an epoch: changed only between epochs.
struct Net {
    peers: Vec<PeerId>,
    index: FxHashMap<PeerId, usize>,
    status: Vec<Status>,
    /// Whether the nodes serve the DHT (all run the same configuration).
    servers: bool,
    link_seed: u64,
    latency_min_ms: f64,
    latency_max_ms: f64,
    jitter_ms: f64,
    loss: f64,
    duplicate: f64,
    reorder: f64,
    reorder_delay_ms: f64,
    max_connections: usize,
    /// Loss, duplication and reordering apply (until every fault heals).
    impaired: bool,
    partitions: Vec<ActivePartition>,
    clogged: Vec<Option<usize>>,
    /// Whether shards write trace lines.
    tracing: bool,
    /// A sync takes `[min, max]` ms; `None`: no disk model.
    sync_latency_ms: Option<(f64, f64)>,
    /// Deliberate bug: outputs do not wait for the sync.
    acks_before_sync: bool,
    /// Nodes from this index on are forgers.
    first_forger: usize,
    /// Deliberate bug: the forgers' changes carry valid signatures of the records' origins,
    /// which is what nodes that check no signature would let through.
    forgeries_signed: bool,
    /// Deliberate bug: every node corrupts every third record it serves.
    corrupt_every_third: bool,
    /// The seed every node's identity derives from (node `i`'s keypair is
    /// `Keypair::from_seed(splitmix(id_seed ^ i))`).
    id_seed: u64,
}

impl Net {
    /// Base one-way latency of the link between `a` and `b` (symmetric, from the seed).
    fn link_latency(&self, a: u32, b: u32) -> Duration {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let h = splitmix(self.link_seed ^ (u64::from(lo) << 32 | u64::from(hi)));
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        ms(self.latency_min_ms + u * (self.latency_max_ms - self.latency_min_ms))
    }

    fn blocked(&self, a: u32, b: u32) -> bool {
        let (a, b) = (a as usize, b as usize);
        if self.clogged[a].is_some() || self.clogged[b].is_some() {
            return true;
        }
        self.partitions
            .iter()
            .filter(|p| p.active)
            .any(|p| match p.kind {
                PartitionKind::Split => p.in_a[a] != p.in_a[b],
                PartitionKind::Isolate => p.in_a[a] || p.in_a[b],
                PartitionKind::OneWay => p.in_a[a] && !p.in_a[b],
            })
    }

    /// The node `peer` is, found from the address the request was sent to (a simulated
    /// address is the node's index) when that address is the peer's own, otherwise by id.
    fn resolve(&self, peer: &PeerId, addrs: &[Address]) -> Option<usize> {
        if let Some(a) = addrs.first()
            && let Ok(b) = <[u8; 4]>::try_from(a.as_bytes())
        {
            let j = u32::from_be_bytes(b) as usize;
            if self.peers.get(j) == Some(peer) {
                return Some(j);
            }
        }
        self.index.get(peer).copied()
    }
}

/// A message for a node of another shard, handed over through a mailbox.
struct Mail {
    at: Instant,
    order: u64,
    to: u32,
    to_inc: Option<u32>,
    from: u32,
    msg: Msg,
}

/// How a client operation ended on its node.
enum Finished {
    /// Its query finished, after this many rounds; a get's local version at its start;
    /// whether a put was superseded.
    Query(QueryResult, u32, Option<Version>, bool),
    /// The node refused to start it.
    Refused(String),
    /// A put or removal sealed this record value (the operation goes on).
    Sealed(Vec<u8>),
}

/// A client operation ended on its node.
struct Done {
    at: Instant,
    order: u64,
    op: usize,
    how: Finished,
}

/// One line of the trace file, written in (time, node, order) order.
struct Line {
    at: Instant,
    order: u64,
    text: String,
}

/// The events of a range of nodes, and what their processing produced for the rest.
struct Shard {
    /// Its number.
    index: usize,
    /// Index of its first node.
    lo: usize,
    /// Nodes per shard.
    part_len: usize,
    /// Its nodes while another thread runs it.
    held: Vec<SimNode>,
    /// Its nodes' events.
    queue: EventQueue<Ev>,
    /// Messages in flight to its nodes, by slot; freed slots are reused (most recently
    /// freed first, so a new message usually lands in memory that is still in cache).
    msgs: Vec<Option<Msg>>,
    free_msgs: Vec<u32>,
    /// Messages for the nodes of each other shard, posted after each step of an epoch.
    outbox: Vec<Vec<Mail>>,
    /// The earliest message posted to another shard, since this epoch began, that the
    /// epoch does not reach.
    posted_next: Option<Instant>,
    done: Vec<Done>,
    lines: Vec<Line>,
    events: u64,
    messages: u64,
}

impl Shard {
    fn new(index: usize, part_len: usize, shards: usize) -> Self {
        Shard {
            index,
            lo: index * part_len,
            part_len,
            held: Vec::new(),
            queue: EventQueue::new(),
            msgs: Vec::new(),
            free_msgs: Vec::new(),
            outbox: (0..shards).map(|_| Vec::new()).collect(),
            posted_next: None,
            done: Vec::new(),
            lines: Vec::new(),
            events: 0,
            messages: 0,
        }
    }

    /// Puts `msg` in a free slot of the message slab.
    fn store_msg(&mut self, msg: Msg) -> u32 {
        match self.free_msgs.pop() {
            Some(slot) => {
                self.msgs[slot as usize] = Some(msg);
                slot
            }
            None => {
                self.msgs.push(Some(msg));
                (self.msgs.len() - 1) as u32
            }
        }
    }

    /// Takes the message out of `slot` and frees the slot.
    fn take_msg(&mut self, slot: u32) -> Msg {
        self.free_msgs.push(slot);
        self.msgs[slot as usize]
            .take()
            .expect("a scheduled delivery owns its message slot")
    }

    fn deliver(&mut self, mail: Mail) {
        let msg = self.store_msg(mail.msg);
        self.queue.push(
            mail.at,
            mail.order,
            Ev::Deliver {
                to: mail.to,
                to_inc: mail.to_inc,
                from: mail.from,
                msg,
            },
        );
    }

    /// Hands the messages for other shards to their mailboxes.
    /// Messages due before `taken_before` are taken by their shards before the current
    /// epoch ends; [`Shard::next_at`] counts the others.
    fn post(&mut self, team: &Team, taken_before: Instant) {
        let n = self.outbox.len();
        for (to, out) in self.outbox.iter_mut().enumerate() {
            if out.is_empty() {
                continue;
            }
            if let Some(first) = out
                .iter()
                .map(|m| m.at)
                .filter(|&t| t >= taken_before)
                .min()
            {
                self.posted_next = Some(self.posted_next.map_or(first, |p| p.min(first)));
            }
            lock(&team.mail[self.index * n + to]).append(out);
        }
    }

    /// Takes the messages other shards posted for this one.
    fn collect(&mut self, team: &Team, scratch: &mut Vec<Mail>) {
        let n = self.outbox.len();
        for from in 0..n {
            if from == self.index {
                continue;
            }
            std::mem::swap(scratch, &mut *lock(&team.mail[from * n + self.index]));
            for mail in scratch.drain(..) {
                self.deliver(mail);
            }
        }
    }

    /// One epoch: processes this shard's events before `until`, taking the mail of the
    /// other shards and posting its own for them.
    ///
    /// Shards move through the epoch at their own pace: a shard may process its events
    /// up to one lookahead past the shard furthest behind (no message sent later than that
    /// can arrive earlier), taking the other shards' mail before each step and posting its
    /// own after it, then saying how far it got.
    fn epoch(&mut self, nodes: &mut [SimNode], team: &Team, net: &Net, until: Instant) {
        let mut scratch = Vec::new();
        let mut reached = Instant::from_micros(team.progress[self.index].load(Ordering::Acquire));
        let mut first = true;
        loop {
            let horizon = if team.shards.len() == 1 {
                until
            } else {
                let mut horizon = until;
                let mut abandoned = false;
                wait_until(|| {
                    // Another thread failed, or the run is being torn down: stop here.
                    if team.failed.load(Ordering::Acquire) || team.stop.load(Ordering::Acquire) {
                        abandoned = true;
                        return true;
                    }
                    let behind = team
                        .progress
                        .iter()
                        .enumerate()
                        .filter(|&(k, _)| k != self.index)
                        .map(|(_, p)| p.load(Ordering::Acquire))
                        .min()
                        .unwrap_or(u64::MAX);
                    horizon =
                        Instant::from_micros(behind.saturating_add(team.lookahead)).min(until);
                    horizon > reached
                });
                if abandoned {
                    return;
                }
                horizon
            };
            self.collect(team, &mut scratch);
            if first {
                self.posted_next = None;
                first = false;
            }
            while let Some((at, _, ev)) = self.queue.pop_before(horizon) {
                let mut cx = Cx {
                    shard: self,
                    nodes: &mut *nodes,
                    net,
                    now: at,
                };
                cx.process(at, ev);
            }
            self.post(team, until);
            team.progress[self.index].store(horizon.as_micros(), Ordering::Release);
            if team.shards.len() > 1 {
                team.wake();
            }
            reached = horizon;
            if horizon >= until {
                return;
            }
        }
    }

    /// When this shard's next event is, counting messages it posted that the other
    /// shards have not taken yet.
    fn next_at(&mut self) -> Option<Instant> {
        match (self.queue.peek_time(), self.posted_next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Locks `m`; a lock whose holder panicked still gives its data (the panic is reported on
/// its own).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read access to the network.
fn read(net: &RwLock<Net>) -> RwLockReadGuard<'_, Net> {
    net.read().unwrap_or_else(PoisonError::into_inner)
}

/// What the run's threads share: the shards, the mailboxes between them, the network,
/// and the signals that start and end an epoch.
struct Team {
    shards: Vec<Mutex<Shard>>,
    /// Mail from shard `a` to shard `b` at `a * shards + b`.
    mail: Vec<Mutex<Vec<Mail>>>,
    net: RwLock<Net>,
    /// Bumped to start an epoch on the helper threads.
    epochs_started: AtomicU64,
    /// End of the epoch, in µs of virtual time.
    until: AtomicU64,
    /// Helper threads still working on the epoch.
    pending: AtomicUsize,
    /// How far each shard got in the current epoch (µs of virtual time): its events
    /// before that are processed and the messages they sent posted.
    progress: Vec<AtomicU64>,
    /// Shortest one-way delay between two nodes, µs: how far a shard may run ahead of the
    /// slowest one (zero: a single shard).
    lookahead: u64,
    stop: AtomicBool,
    /// A helper thread panicked.
    failed: AtomicBool,
    /// The run's threads, to wake when something they may wait for changed.
    threads_of_run: std::sync::OnceLock<Vec<std::thread::Thread>>,
}

impl Team {
    fn new(net: Net, shards: usize, part_len: usize, lookahead: Duration) -> Self {
        Team {
            shards: (0..shards)
                .map(|k| Mutex::new(Shard::new(k, part_len, shards)))
                .collect(),
            mail: (0..shards * shards)
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            net: RwLock::new(net),
            epochs_started: AtomicU64::new(0),
            until: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            progress: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            lookahead: lookahead.as_micros() as u64,
            stop: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            threads_of_run: std::sync::OnceLock::new(),
        }
    }

    /// Wakes the run's sleeping threads (cheap for those that are not asleep).
    fn wake(&self) {
        if let Some(threads) = self.threads_of_run.get() {
            for t in threads {
                t.unpark();
            }
        }
    }
}

/// Waits until `done` says so: spins for a short while (the other threads are usually
/// microseconds away), then sleeps until woken by [`Team::wake`] (or, as a safety net, for
/// at most a millisecond between checks), so that more threads than cores still share
/// the cores well.
fn wait_until(mut done: impl FnMut() -> bool) {
    let mut spins = 0u32;
    while !done() {
        if spins < 1 << 10 {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::park_timeout(Duration::from_millis(1));
        }
    }
}

/// A helper thread: runs shard `k` each epoch until told to stop.
fn helper(team: &Team, k: usize) {
    let mut seen = 0;
    loop {
        wait_until(|| {
            team.epochs_started.load(Ordering::Acquire) != seen || team.stop.load(Ordering::Acquire)
        });
        if team.stop.load(Ordering::Acquire) {
            return;
        }
        seen = team.epochs_started.load(Ordering::Acquire);
        let until = Instant::from_micros(team.until.load(Ordering::Acquire));
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_shard(team, k, until);
        }));
        if ran.is_err() {
            team.failed.store(true, Ordering::Release);
        }
        team.pending.fetch_sub(1, Ordering::AcqRel);
        team.wake();
    }
}

/// Runs the epoch on shard `k`, whose nodes were handed over in [`Shard::held`]. (A
/// thread always runs the same shard, so that its nodes stay in that core's caches.)
fn run_shard(team: &Team, k: usize, until: Instant) {
    let net = read(&team.net);
    let mut shard = lock(&team.shards[k]);
    let mut nodes = std::mem::take(&mut shard.held);
    shard.epoch(&mut nodes, team, &net, until);
    shard.held = nodes;
}

/// Tells the helper threads to stop when the run ends, however it ends.
struct StopHelpers(Arc<Team>);

impl Drop for StopHelpers {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Release);
        self.0.wake();
    }
}
/// A shard at work on its nodes at one instant.
struct Cx<'a> {
    shard: &'a mut Shard,
    nodes: &'a mut [SimNode],
    net: &'a Net,
    now: Instant,
}

impl Cx<'_> {
    fn node(&mut self, i: usize) -> &mut SimNode {
        &mut self.nodes[i - self.shard.lo]
    }

    fn local_now(&mut self, i: usize) -> Instant {
        let now = self.now;
        now + self.node(i).skew
    }

    fn owns(&self, i: usize) -> bool {
        i >= self.shard.lo && i < self.shard.lo + self.nodes.len()
    }

    /// Folds one event of node `i` into its trace hash (and the trace file).
    fn trace(&mut self, i: usize, code: u8, extra: u64) {
        let at = self.now;
        let tracing = self.net.tracing;
        let node = self.node(i);
        node.count += 1;
        let order = node.count;
        let mut buf = [0u8; 17];
        buf[..8].copy_from_slice(&at.as_micros().to_le_bytes());
        buf[8] = code;
        buf[9..].copy_from_slice(&extra.to_le_bytes());
        node.trace = xxh3_64_with_seed(&buf, node.trace);
        if tracing {
            self.shard.lines.push(Line {
                at,
                order: ((i as u64 + 1) << ORDER_BITS) | order,
                text: trace_line(at, code, i as u32, extra),
            });
        }
    }

    /// Schedules the delivery of a message from `from` to `to` at `at`; `origin`, a node
    /// of this shard, is the node whose event causes it.
    fn send(
        &mut self,
        origin: u32,
        at: Instant,
        to: u32,
        to_inc: Option<u32>,
        from: u32,
        msg: Msg,
    ) {
        let order = self.node(origin as usize).next_order(origin as usize);
        let mail = Mail {
            at,
            order,
            to,
            to_inc,
            from,
            msg,
        };
        if self.owns(to as usize) {
            self.shard.deliver(mail);
        } else {
            let shard = to as usize / self.shard.part_len;
            self.shard.outbox[shard].push(mail);
        }
    }

    /// Sends a message over the simulated network: blocked, lost, delayed, duplicated.
    /// Returns `false` when a partition or clog blocks it (the sender's stream then stalls
    /// until it times out); a lost message still left the sender.
    fn transmit(&mut self, from: u32, to: u32, to_inc: Option<u32>, msg: Msg) -> bool {
        self.shard.messages += 1;
        let net = self.net;
        if net.blocked(from, to) {
            return false;
        }
        let now = self.now;
        let base = net.link_latency(from, to);
        let rng = &mut self.node(from as usize).rng;
        if net.impaired && net.loss > 0.0 && unit(rng) < net.loss {
            return true;
        }
        let duplicate = net.impaired && net.duplicate > 0.0 && unit(rng) < net.duplicate;
        let delay = |rng: &mut ChaCha8Rng| {
            let mut d = base + ms(unit(rng) * net.jitter_ms);
            if net.impaired && net.reorder > 0.0 && unit(rng) < net.reorder {
                d += ms(net.reorder_delay_ms);
            }
            d
        };
        let at = now + delay(rng);
        let later = duplicate.then(|| now + delay(rng));
        if let Some(later) = later {
            self.send(from, later, to, to_inc, from, msg.clone());
        }
        self.send(from, at, to, to_inc, from, msg);
        true
    }

    /// A notification to `to` that takes one hop's time but cannot be lost (the outcome of
    /// a dial or of writing to a stream, a closed connection); `from` is this event's node.
    fn notify(&mut self, from: u32, to: u32, msg: Msg) {
        let inc = self.net.status[to as usize].incarnation;
        let at = self.now + self.net.link_latency(from, to);
        self.send(from, at, to, Some(inc), from, msg);
    }

    /// Like [`Cx::notify`], for a message that node `i` sends itself about peer `j`.
    fn notify_self(&mut self, i: u32, j: u32, msg: Msg) {
        let inc = self.node(i as usize).incarnation;
        let at = self.now + self.net.link_latency(i, j);
        self.send(i, at, i, Some(inc), j, msg);
    }

    /// Node `x`'s side of its connection with `y` is (or stays) open. A node keeps at most
    /// `network.max_connections` connections; opening one more closes its oldest quarter
    /// at once (so closing costs little per connection opened), as libp2p's connection
    /// limits and idle timeouts do; the other sides learn of it one hop later.
    fn connected(&mut self, x: usize, y: usize) {
        let max = self.net.max_connections;
        let node = self.node(x);
        if node.conns.contains(y as u32) {
            return;
        }
        if node.conns.order.len() >= max {
            let oldest: Vec<u32> = node.conns.order.drain(..max / 4).collect();
            for z in oldest {
                self.close(x, z);
            }
        }
        let now = self.local_now(x);
        let (peer, serves) = (self.net.peers[y], self.net.servers);
        let node = self.node(x);
        node.conns.insert(y as u32);
        if let Some(core) = node.core_mut() {
            core.handle_connection_established(now, peer);
            core.handle_peer_identified(now, peer, &[address_of(y)], serves);
        }
    }

    /// Node `x` closes its connection with `y`.
    fn close(&mut self, x: usize, y: u32) {
        let now = self.local_now(x);
        let peer = self.net.peers[y as usize];
        let node = self.node(x);
        node.conns.remove(y);
        if let Some(core) = node.core_mut() {
            core.handle_connection_closed(now, peer);
        }
        self.notify(x as u32, y, Msg::Closed);
    }

    /// Tells node `i` its wall clock before it handles an input; returns its `now`.
    fn input_now(&mut self, i: usize) -> Instant {
        let t = self.now;
        let local = self.local_now(i);
        let node = self.node(i);
        let wall = node.wall_clock(t);
        if let Some(core) = node.core_mut() {
            core.set_wall_clock(local, wall);
        }
        local
    }

    fn syncing(&mut self, i: usize) -> bool {
        self.node(i).sync.is_some()
    }

    fn process(&mut self, at: Instant, ev: Ev) {
        match ev {
            Ev::Deliver {
                to,
                to_inc,
                from,
                msg,
            } => {
                let (t, f) = (to as usize, from as usize);
                let msg = self.shard.take_msg(msg);
                if !self.node(t).is_up() {
                    if let Msg::Request { id, from_inc, .. } = msg {
                        // Arrived at a crashed node: the sender's stream breaks.
                        if self.net.status[f].incarnation == from_inc {
                            self.notify(
                                to,
                                from,
                                Msg::Failed {
                                    id,
                                    failure: RequestFailure::Io,
                                },
                            );
                        }
                    }
                    return;
                }
                if to_inc.is_some_and(|inc| inc != self.node(t).incarnation) {
                    return;
                }
                if self.syncing(t) {
                    self.node(t).queued.push_back(Queued::Msg { from, msg });
                    return;
                }
                self.handle_msg(t, from, msg);
            }
            Ev::Timer { node } => {
                let i = node as usize;
                if self.node(i).timer_at != Some(at) {
                    return;
                }
                self.node(i).timer_at = None;
                if self.syncing(i) {
                    self.node(i).queued.push_back(Queued::Timer);
                    return;
                }
                self.handle_timer(i);
            }
            Ev::Op(start) => {
                let i = start.node as usize;
                if self.syncing(i) {
                    self.node(i).queued.push_back(Queued::Op(start));
                    return;
                }
                self.start_op(*start);
            }
            Ev::SyncDone { node, seq } => self.sync_done(node as usize, seq),
        }
    }

    /// A message reaches node `t`, which is up and not syncing.
    fn handle_msg(&mut self, t: usize, from: u32, msg: Msg) {
        let f = from as usize;
        self.shard.events += 1;
        let local = self.input_now(t);
        let peer = self.net.peers[f];
        match msg {
            Msg::Request {
                id,
                from_inc,
                request,
            } => {
                self.trace(t, 1, id.0);
                self.connected(t, f);
                let node = self.node(t);
                let inbound = node.next_inbound;
                node.next_inbound += 1;
                if request.expects_response() {
                    node.inbound.push((inbound, from, from_inc, id));
                }
                if let Some(n) = node.core_mut() {
                    n.handle_request(local, peer, InboundId(inbound), request);
                }
            }
            Msg::Response { id, response } => {
                self.trace(t, 2, id.0);
                // The requester's side of the connection: open since its request
                // got through.
                self.connected(t, f);
                if let Some(n) = self.node(t).core_mut() {
                    n.handle_response(local, id, response);
                }
            }
            Msg::Sent { id } => {
                self.trace(t, 3, id.0);
                self.connected(t, f);
                if let Some(n) = self.node(t).core_mut() {
                    n.handle_request_sent(local, id);
                }
            }
            Msg::Failed { id, failure } => {
                self.trace(t, 4, id.0);
                if failure == RequestFailure::UnsupportedProtocol {
                    self.connected(t, f);
                }
                if let Some(n) = self.node(t).core_mut() {
                    n.handle_request_failed(local, id, failure);
                }
            }
            Msg::Closed => {
                self.trace(t, 16, u64::from(from));
                let node = self.node(t);
                if node.conns.remove(from)
                    && let Some(n) = node.core_mut()
                {
                    n.handle_connection_closed(local, peer);
                }
            }
        }
        self.drain(t);
    }

    /// Node `i`'s timer fires (it is up and not syncing).
    fn handle_timer(&mut self, i: usize) {
        self.shard.events += 1;
        self.trace(i, 5, 0);
        let local = self.input_now(i);
        if let Some(n) = self.node(i).core_mut() {
            n.handle_timeout(local);
        }
        self.drain(i);
    }

    /// Node `i`'s disk finished sync `seq`: the writes are durable, the outputs that
    /// waited for them are carried out, then the inputs that waited are handled in order
    /// (until one of them starts another sync).
    fn sync_done(&mut self, i: usize, seq: u64) {
        if self.node(i).sync != Some(seq) {
            return;
        }
        self.shard.events += 1;
        self.trace(i, 17, seq);
        let node = self.node(i);
        node.sync = None;
        if let NodeState::Up(core) = &mut node.state {
            core.store_mut().sync();
            core.synced();
        }
        let held = std::mem::take(&mut self.node(i).held);
        for out in held {
            self.carry_out(i, out);
        }
        while !self.syncing(i) {
            let Some(q) = self.node(i).queued.pop_front() else {
                break;
            };
            match q {
                Queued::Msg { from, msg } => self.handle_msg(i, from, msg),
                Queued::Timer => self.handle_timer(i),
                Queued::Op(start) => self.start_op(*start),
            }
        }
        if !self.syncing(i) {
            self.rearm(i);
        }
    }

    /// A client operation starts on its node.
    fn start_op(&mut self, start: OpStart) {
        let i = start.node as usize;
        self.shard.events += 1;
        self.trace(i, 14, start.op as u64);
        let local = self.input_now(i);
        let Some(node) = self.node(i).core_mut() else {
            return;
        };
        let key = start.key;
        let mut run = OpRun {
            op: start.op,
            local: None,
            written: None,
            superseded: false,
        };
        let mut sealed = None;
        let quorum = Quorum::N(start.quorum);
        let started = match start.kind {
            OpKind::Put if !start.versioned => {
                sealed = Some(start.value.clone());
                node.put_record(local, netabase_core::Record::new(key, start.value), quorum)
            }
            OpKind::Put | OpKind::Remove => {
                let tombstone = start.kind == OpKind::Remove;
                let payload = if tombstone { &[][..] } else { &start.value[..] };
                match node.seal_record(
                    local,
                    key.clone(),
                    WORKLOAD_MODEL,
                    WORKLOAD_SCHEMA,
                    tombstone,
                    payload,
                ) {
                    Ok(record) => {
                        run.written = version_of(&record.value).map(|(v, _)| (key.clone(), v));
                        sealed = Some(record.value.clone());
                        node.put_record(local, record, quorum)
                    }
                    Err(e) => Err(e),
                }
            }
            OpKind::Get => {
                run.local = node
                    .store()
                    .get(&key)
                    .ok()
                    .flatten()
                    .filter(|r| !r.is_expired(local))
                    .and_then(|r| version_of(&r.value))
                    .map(|(v, _)| v);
                node.get_record(local, key, quorum)
            }
            OpKind::Provide => node.start_providing(local, key),
            OpKind::GetProviders => node.get_providers(local, key),
            OpKind::Lookup => node.get_closest_peers(local, key),
        };
        let at = self.now;
        let node = self.node(i);
        if let Some(value) = sealed {
            let order = node.next_order(i);
            self.shard.done.push(Done {
                at,
                order,
                op: start.op,
                how: Finished::Sealed(value),
            });
        }
        let node = self.node(i);
        match started {
            Ok(q) => {
                node.ops.insert(q, run);
            }
            Err(e) => {
                let order = node.next_order(i);
                self.shard.done.push(Done {
                    at,
                    order,
                    op: start.op,
                    how: Finished::Refused(e.to_string()),
                });
            }
        }
        self.drain(i);
    }

    /// Carries out everything node `i` wants done, then re-arms its timer. With a disk
    /// model, writes the input made are synced first: requests leave at once, every other
    /// output waits for the sync (the group-commit rule, [`Output::waits_for_sync`]).
    fn drain(&mut self, i: usize) {
        let dirty = self.net.sync_latency_ms.is_some()
            && self.node(i).node().is_some_and(|n| n.store().is_dirty());
        let hold = dirty && !self.net.acks_before_sync;
        while let Some((out, waits)) = self.node(i).core_mut().and_then(|n| {
            let out = n.poll_output()?;
            let waits = n.output_waits_for_sync(&out);
            Some((out, waits))
        }) {
            if hold && waits {
                self.node(i).held.push(out);
            } else {
                self.carry_out(i, out);
            }
        }
        if dirty {
            let (lo, hi) = self.net.sync_latency_ms.unwrap_or((0.0, 0.0));
            let node = self.node(i);
            let latency = ms(lo + unit(&mut node.disk_rng) * (hi - lo));
            node.sync_seq += 1;
            let seq = node.sync_seq;
            node.sync = Some(seq);
            let order = node.next_order(i);
            let at = self.now + latency;
            self.shard.queue.push(
                at,
                order,
                Ev::SyncDone {
                    node: i as u32,
                    seq,
                },
            );
        }
        self.rearm(i);
    }

    /// With a disk model, remembers that node `i` acknowledged holding `value` under
    /// `key` (checked against what survives its next crash).
    fn note_ack(&mut self, i: usize, key: &RecordKey, version: Version) {
        if self.net.sync_latency_ms.is_none() {
            return;
        }
        let node = self.node(i);
        let expires = node
            .node()
            .and_then(|n| n.store().get(key).ok().flatten())
            .and_then(|r| r.expires);
        let e = node.acked.entry(key.clone()).or_insert((version, expires));
        if version >= e.0 {
            *e = (version, expires);
        }
    }

    /// Carries out one output of node `i`.
    fn carry_out(&mut self, i: usize, mut out: Output) {
        if i >= self.net.first_forger {
            let own = self.net.peers[i];
            let record = match &mut out {
                Output::SendRequest {
                    request: Request::PutValue { record },
                    ..
                } => Some(record),
                Output::SendResponse {
                    response:
                        Response::GetValue {
                            record: Some(record),
                            ..
                        },
                    ..
                } => Some(record),
                _ => None,
            };
            if let Some(record) = record
                && forge(&mut record.value, own)
                && self.net.forgeries_signed
            {
                sign_forgery(self.net, &record.key, &mut record.value);
            }
        }
        if self.net.corrupt_every_third
            && let Output::SendResponse {
                response:
                    Response::GetValue {
                        record: Some(record),
                        ..
                    },
                ..
            } = &mut out
        {
            let node = self.node(i);
            node.served_values += 1;
            if node.served_values.is_multiple_of(3) {
                record.value.push(0xEE);
            }
        }
        match out {
            Output::SendRequest {
                id,
                peer,
                addrs,
                request,
            } => {
                let one_way = !request.expects_response();
                let from_inc = self.node(i).incarnation;
                match self.net.resolve(&peer, &addrs) {
                    Some(j) if self.net.status[j].up => {
                        let request = Msg::Request {
                            id,
                            from_inc,
                            request,
                        };
                        // A partitioned peer is silent: the request times out.
                        if !self.transmit(i as u32, j as u32, None, request) {
                            return;
                        }
                        if one_way {
                            self.notify_self(i as u32, j as u32, Msg::Sent { id });
                        }
                    }
                    Some(j) => {
                        // Down or not started: the dial is refused.
                        self.shard.messages += 1;
                        self.notify_self(
                            i as u32,
                            j as u32,
                            Msg::Failed {
                                id,
                                failure: RequestFailure::Dial,
                            },
                        );
                    }
                    None => {
                        self.shard.messages += 1;
                        self.notify_self(
                            i as u32,
                            i as u32,
                            Msg::Failed {
                                id,
                                failure: RequestFailure::Dial,
                            },
                        );
                    }
                }
            }
            Output::SendResponse { id, response, .. } => {
                if let Response::PutValue { key, value } = &response
                    && let Some((version, _)) = version_of(value)
                {
                    self.note_ack(i, key, version);
                }
                if let Some((j, inc, rid)) = self.node(i).take_inbound(id) {
                    self.transmit(i as u32, j, Some(inc), Msg::Response { id: rid, response });
                }
            }
            Output::RejectInbound { id, .. } => {
                // A client does not speak the protocol at all; a server that refuses one
                // request (a forged record, a version too far ahead) closes its stream.
                let failure = if self.net.servers {
                    RequestFailure::Io
                } else {
                    RequestFailure::UnsupportedProtocol
                };
                if let Some((j, inc, rid)) = self.node(i).take_inbound(id) {
                    self.transmit(i as u32, j, Some(inc), Msg::Failed { id: rid, failure });
                }
            }
            Output::Event(Event::QueryFinished { id, result, stats }) => {
                let at = self.now;
                let node = self.node(i);
                if let Some(run) = node.ops.remove(&id) {
                    if let (QueryResult::PutRecord(Ok(_)), Some((key, version))) =
                        (&result, &run.written)
                    {
                        self.note_ack(i, key, *version);
                    }
                    let node = self.node(i);
                    let order = node.next_order(i);
                    self.shard.done.push(Done {
                        at,
                        order,
                        op: run.op,
                        how: Finished::Query(result, stats.hops, run.local, run.superseded),
                    });
                }
            }
            Output::Event(Event::RecordSuperseded { id: Some(id), .. }) => {
                if let Some(run) = self.node(i).ops.get_mut(&id) {
                    run.superseded = true;
                }
            }
            Output::Event(_) => {}
        }
    }

    fn rearm(&mut self, i: usize) {
        let now = self.now;
        let node = self.node(i);
        let skew = node.skew;
        let Some(t) = node.core_mut().and_then(|n| n.poll_timeout()) else {
            return;
        };
        let global = t.saturating_sub(skew).max(now);
        if node.timer_at.is_none_or(|s| global < s) {
            node.timer_at = Some(global);
            let order = node.next_order(i);
            self.shard
                .queue
                .push(global, order, Ev::Timer { node: i as u32 });
        }
    }
}

/// A forger's change to a signed record of another origin: a later timestamp and a
/// flipped byte of the payload (or origin), under the original signature. Whether it
/// changed anything.
fn forge(value: &mut [u8], own: PeerId) -> bool {
    /// Offset of the timestamp in a format-2 envelope.
    const TIMESTAMP: std::ops::Range<usize> = 11..19;
    if version_of(value).is_none_or(|(v, _)| v.origin == own) || value.len() < 20 + 64 {
        return false;
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&value[TIMESTAMP]);
    let ts = u64::from_be_bytes(ts).saturating_add(1_000);
    value[TIMESTAMP].copy_from_slice(&ts.to_be_bytes());
    let last = value.len() - 65;
    value[last] ^= 0xFF;
    true
}

/// Signs a forged record again with the key of the origin it names (a simulated node's,
/// derived from the identity seed), so that it passes every signature check: the
/// `unchecked-signatures` bug, as nodes that check no signature would see it. Forgeries
/// whose origin is no simulated node (or that no longer decode) stay as they are.
fn sign_forgery(net: &Net, key: &RecordKey, value: &mut Vec<u8>) {
    let Ok(envelope) = netabase_core::model::Envelope::decode(value) else {
        return;
    };
    let Some(&j) = net.index.get(&envelope.origin) else {
        return;
    };
    let keypair = Keypair::from_seed(splitmix(net.id_seed ^ j as u64));
    *value = netabase_core::model::Envelope::seal_parts(
        key,
        netabase_core::model::SealParts {
            model: envelope.model,
            schema_version: envelope.schema_version,
            timestamp: envelope.timestamp,
            tombstone: envelope.tombstone,
            payload: &envelope.payload,
        },
        &keypair,
    );
}

/// The trace file's line for one event.
fn trace_line(at: Instant, code: u8, node: u32, extra: u64) -> String {
    const KINDS: [&str; 19] = [
        "?",
        "request",
        "response",
        "sent",
        "failed",
        "timer",
        "join",
        "crash",
        "restart",
        "partition-start",
        "partition-end",
        "clog",
        "unclog",
        "heal-all",
        "op-start",
        "op-end",
        "closed",
        "sync",
        "final-reads",
    ];
    let kind = KINDS.get(usize::from(code)).copied().unwrap_or("?");
    format!("{:>14} {kind:<15} {node:>6} {extra}", at.as_micros())
}

/// A simulation run in progress.
pub struct Simulation {
    /// The state checkers read.
    pub world: World,
    config: Config,
    team: Arc<Team>,
    /// Events of the whole network, in order of (time, sequence).
    globals: EventQueue<Global>,
    /// When the workload chooses its next operation.
    next_op: Option<Instant>,
    seq: u64,
    work_rng: ChaCha8Rng,
    crashed_fault: Vec<Option<usize>>,
    completed_provides: Vec<usize>,
    /// Record keys with an acknowledged write, in the order of their first one.
    keys: Vec<Vec<u8>>,
    /// The latest acknowledged write of each key (by completion).
    latest_acked: FxHashMap<Vec<u8>, usize>,
    /// Puts of fresh keys issued.
    fresh_keys: usize,
    bugs: StoreBugs,
    /// Hash of the events of the whole network (the nodes' own are in each node).
    trace: Xxh3,
    /// Trace bytes not yet hashed: the hash is fed in large chunks (a streaming hash of
    /// the same bytes is the same however they are split), which costs less per event.
    trace_buf: Vec<u8>,
    events: u64,
    checkers: Vec<Box<dyn Checker>>,
    violations: Vec<Violation>,
    end: Instant,
    trace_out: Option<Box<dyn std::io::Write>>,
    /// Operations finished in the last epoch, gathered from the shards.
    done: Vec<Done>,
    lines: Vec<Line>,
}

impl Simulation {
    /// Sets up a run of `scenario` with `seed`: nodes, joins, faults and workload are all
    /// scheduled from the seed. It runs on one thread unless [`Simulation::set_threads`]
    /// says otherwise.
    pub fn new(scenario: Scenario, seed: u64) -> Self {
        let mut master = ChaCha8Rng::seed_from_u64(seed);
        let mut sched_rng = ChaCha8Rng::seed_from_u64(master.next_u64());
        let net_seed = master.next_u64();
        let work_rng = ChaCha8Rng::seed_from_u64(master.next_u64());
        let link_seed = master.next_u64();
        let id_seed = master.next_u64();

        let config = scenario.core_config();
        let faults = &scenario.faults;
        let bugs = StoreBugs {
            ignore_versions: faults.is("store-ignores-versions"),
            drop_clock_ceiling: faults.is("clock-ceiling-not-persisted"),
            shorten_tombstones: faults.is("tombstone-horizon-ignored").then(|| {
                config
                    .tombstone_horizon
                    .saturating_sub(Duration::from_secs(1))
            }),
        };

        let n = scenario.nodes;
        let max_skew = scenario.clock.max_skew_ms;
        let max_drift = scenario.clock.max_drift_ppm;
        let mut nodes = Vec::with_capacity(n);
        let mut index = FxHashMap::default();
        for i in 0..n {
            let keypair = Keypair::from_seed(splitmix(id_seed ^ i as u64));
            let peer = keypair.peer_id();
            index.insert(peer, i);
            let skew = ms(unit(&mut sched_rng) * max_skew);
            let drift_ppm = if max_drift > 0.0 {
                (unit(&mut sched_rng) * 2.0 - 1.0) * max_drift
            } else {
                0.0
            };
            nodes.push(SimNode {
                peer,
                key: Key::from_peer(&peer),
                state: NodeState::NotJoined,
                skew,
                keypair,
                drift_ppm,
                steps: Vec::new(),
                incarnation: 0,
                timer_at: None,
                conns: Conns::default(),
                inbound: Vec::new(),
                next_inbound: 0,
                ops: FxHashMap::default(),
                rng: ChaCha8Rng::seed_from_u64(splitmix(net_seed ^ i as u64)),
                count: 0,
                trace: 0,
                disk_rng: ChaCha8Rng::seed_from_u64(splitmix(
                    net_seed ^ i as u64 ^ 0xD15C_0000_0000_0000,
                )),
                sync: None,
                sync_seq: 0,
                held: Vec::new(),
                queued: VecDeque::new(),
                acked: BTreeMap::new(),
                served_values: 0,
            });
        }
        // Wall-clock steps: each picks its nodes at random.
        for step in &scenario.clock.steps {
            let mut order: Vec<usize> = (0..n).collect();
            shuffle(&mut order, &mut sched_rng);
            for &i in order.iter().take(step.nodes.min(n)) {
                nodes[i]
                    .steps
                    .push((secs(step.at_s), (step.offset_ms * 1e3) as i64));
            }
        }
        let end = secs(scenario.duration_s);
        let heal_at = scenario.faults_end_s.map(secs);
        let nw = &scenario.network;
        let net = Net {
            peers: nodes.iter().map(|n| n.peer).collect(),
            index: index.clone(),
            status: vec![
                Status {
                    up: false,
                    incarnation: 0,
                };
                n
            ],
            servers: config.mode == Mode::Server,
            link_seed,
            latency_min_ms: nw.latency_min_ms,
            latency_max_ms: nw.latency_max_ms,
            jitter_ms: nw.jitter_ms,
            loss: nw.loss,
            duplicate: nw.duplicate,
            reorder: nw.reorder,
            reorder_delay_ms: nw.reorder_delay_ms,
            max_connections: nw.max_connections,
            impaired: nw.loss > 0.0 || nw.duplicate > 0.0 || nw.reorder > 0.0,
            partitions: Vec::new(),
            clogged: vec![None; n],
            tracing: false,
            sync_latency_ms: scenario
                .disk
                .as_ref()
                .map(|d| (d.sync_latency_ms[0], d.sync_latency_ms[1])),
            acks_before_sync: faults.is("acks-before-sync"),
            first_forger: n - scenario.faults.forgers,
            forgeries_signed: faults.is("unchecked-signatures"),
            corrupt_every_third: faults.is("corrupt-every-third-value"),
            id_seed,
        };
        // Every message between two nodes takes at least this long.
        let lookahead = ms(nw.latency_min_ms);
        let world = World {
            seed,
            now: Instant::ZERO,
            nodes: Nodes::new(nodes, n),
            index,
            faults: FaultLog::default(),
            history: History::default(),
            all_joined_at: Instant::ZERO,
            heal_at,
            lost_acks: Vec::new(),
            scenario: scenario.clone(),
        };
        let mut sim = Simulation {
            world,
            config,
            team: Arc::new(Team::new(net, 1, n, lookahead)),
            globals: EventQueue::new(),
            next_op: None,
            seq: 0,
            work_rng,
            crashed_fault: vec![None; n],
            completed_provides: Vec::new(),
            keys: Vec::new(),
            latest_acked: FxHashMap::default(),
            fresh_keys: 0,
            bugs,
            trace: Xxh3::new(),
            trace_buf: Vec::with_capacity(TRACE_CHUNK),
            events: 0,
            checkers: checkers::all(&scenario),
            violations: Vec::new(),
            end,
            trace_out: None,
            done: Vec::new(),
            lines: Vec::new(),
        };

        // Joins: the bootstrap nodes at zero, the rest spread over the join window.
        let mut last_join = Instant::ZERO;
        for i in 0..n {
            let at = if i < scenario.join.bootstrap_nodes {
                Instant::ZERO
            } else {
                secs(unit(&mut sched_rng) * scenario.join.spread_s)
            };
            last_join = last_join.max(at);
            sim.push(at, Global::Join(i as u32));
        }
        sim.world.all_joined_at = last_join;

        // Partitions.
        for (pi, p) in scenario.partitions.iter().enumerate() {
            let mut in_a = vec![false; n];
            match p.kind {
                PartitionKind::Isolate => {
                    in_a[(sched_rng.next_u64() % n as u64) as usize] = true;
                }
                PartitionKind::Split | PartitionKind::OneWay => {
                    let mut order: Vec<usize> = (0..n).collect();
                    shuffle(&mut order, &mut sched_rng);
                    let count = ((n as f64) * p.fraction).round() as usize;
                    for &i in order.iter().take(count) {
                        in_a[i] = true;
                    }
                }
            }
            sim.net_mut().partitions.push(ActivePartition {
                kind: p.kind,
                in_a,
                active: false,
                fault: None,
            });
            sim.push(secs(p.start_s), Global::PartitionStart(pi));
            sim.push(secs(p.end_s), Global::PartitionEnd(pi));
        }

        // Swizzle: clog nodes one by one, heal them in a different random order.
        if let Some(sw) = &scenario.swizzle {
            let mut order: Vec<usize> = (0..n).collect();
            shuffle(&mut order, &mut sched_rng);
            order.truncate(sw.nodes.min(n));
            let mut t = sw.start_s;
            for &i in &order {
                sim.push(secs(t), Global::Clog(i as u32));
                t += sw.step_s;
            }
            shuffle(&mut order, &mut sched_rng);
            for &i in &order {
                sim.push(secs(t), Global::Unclog(i as u32));
                t += sw.step_s;
            }
        }

        // Churn: crashes of non-bootstrap nodes, each restarting after its downtime.
        if let Some(ch) = &scenario.churn {
            let first = scenario.join.bootstrap_nodes.min(n - 1);
            for _ in 0..ch.crashes {
                let i = first + (sched_rng.next_u64() % (n - first) as u64) as usize;
                let at = ch.start_s + unit(&mut sched_rng) * (ch.end_s - ch.start_s);
                let down = ch.downtime_min_s
                    + unit(&mut sched_rng) * (ch.downtime_max_s - ch.downtime_min_s);
                sim.push(secs(at), Global::Crash(i as u32));
                sim.push(secs(at + down), Global::Restart(i as u32));
            }
        }

        if let Some(h) = heal_at {
            sim.push(h, Global::HealAll);
        }
        let w = &scenario.workload;
        if w.rate_per_s > 0.0 && w.end_s > w.start_s {
            sim.next_op = Some(secs(w.start_s));
        }
        if let Some(t) = scenario.checks.final_reads_s {
            sim.push(secs(t), Global::FinalReads);
        }
        if let Some(t) = scenario.checks.convergence_s {
            sim.push(secs(t), Global::Converge);
        }
        if scenario.checks.memory_check_interval_s > 0.0 {
            sim.push(
                secs(scenario.checks.memory_check_interval_s),
                Global::MemCheck,
            );
        }
        sim
    }

    /// Runs the nodes' events on `threads` threads (at least one; at most one per node).
    /// The run is the same whatever the number: same events, same results, same trace
    /// hash. Call it before [`Simulation::run`]. A network whose links can have no latency
    /// at all (`latency_min_ms` under a microsecond) runs on one thread: a message could
    /// arrive at the very instant it was sent, so no shard could run ahead of another.
    pub fn set_threads(&mut self, threads: usize) {
        let n = self.world.nodes.len();
        let threads = if self.team.lookahead == 0 {
            1
        } else {
            threads.clamp(1, n)
        };
        let part_len = n.div_ceil(threads);
        self.world.nodes.regroup(part_len);
        let shards = self.world.nodes.parts.len();
        let team = Arc::get_mut(&mut self.team)
            .expect("the simulation's threads start only when it runs, which consumes it");
        // Nothing is scheduled on the shards before the run starts.
        team.shards = (0..shards)
            .map(|k| Mutex::new(Shard::new(k, part_len, shards)))
            .collect();
        team.mail = (0..shards * shards)
            .map(|_| Mutex::new(Vec::new()))
            .collect();
        team.progress = (0..shards).map(|_| AtomicU64::new(0)).collect();
    }

    /// Writes one line per processed event (time in µs, kind, node, id) to `out`.
    pub fn set_trace_writer(&mut self, out: Box<dyn std::io::Write>) {
        self.trace_out = Some(out);
        self.net_mut().tracing = true;
    }

    /// The network, to change between epochs.
    fn net_mut(&self) -> std::sync::RwLockWriteGuard<'_, Net> {
        self.team
            .net
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&mut self, at: Instant, ev: Global) {
        self.seq += 1;
        self.globals.push(at, self.seq, ev);
    }

    /// Runs `f` on the shard holding node `i`, at the current time.
    fn with_cx<R>(&mut self, i: usize, f: impl FnOnce(&mut Cx<'_>) -> R) -> R {
        let s = i / self.world.nodes.part_len;
        let net = read(&self.team.net);
        let mut shard = lock(&self.team.shards[s]);
        let mut cx = Cx {
            shard: &mut shard,
            nodes: &mut self.world.nodes.parts[s],
            net: &net,
            now: self.world.now,
        };
        f(&mut cx)
    }

    /// Posts the messages the last events of the whole network sent.
    fn post_all(&mut self) {
        for shard in &self.team.shards {
            lock(shard).post(&self.team, Instant::ZERO);
        }
    }

    fn node_mut(&mut self, i: usize) -> Option<&mut Node<SimStore>> {
        self.world.nodes[i].core_mut()
    }

    /// Folds an event of the whole network into the trace.
    fn trace_event(&mut self, at: Instant, code: u8, node: u32, extra: u64) {
        let mut buf = [0u8; 21];
        buf[..8].copy_from_slice(&at.as_micros().to_le_bytes());
        buf[8] = code;
        buf[9..13].copy_from_slice(&node.to_le_bytes());
        buf[13..].copy_from_slice(&extra.to_le_bytes());
        self.trace_buf.extend_from_slice(&buf);
        if self.trace_buf.len() >= TRACE_CHUNK {
            self.trace.update(&self.trace_buf);
            self.trace_buf.clear();
        }
        if let Some(w) = self.trace_out.as_mut() {
            // A failing trace writer must not change the run; the hash is what counts.
            let _ = writeln!(w, "{}", trace_line(at, code, node, extra));
        }
    }

    /// Processes every node's events before `until`: each shard on its own thread.
    fn run_epoch(&mut self, start: Instant, until: Instant) {
        let team = Arc::clone(&self.team);
        let shards = team.shards.len();
        for p in &team.progress {
            p.store(start.as_micros(), Ordering::Release);
        }
        if shards > 1 {
            for k in 1..shards {
                lock(&team.shards[k]).held = std::mem::take(&mut self.world.nodes.parts[k]);
            }
            team.until.store(until.as_micros(), Ordering::Release);
            team.pending.store(shards - 1, Ordering::Release);
            team.epochs_started.fetch_add(1, Ordering::AcqRel);
            team.wake();
        }
        {
            let net = read(&team.net);
            lock(&team.shards[0]).epoch(&mut self.world.nodes.parts[0], &team, &net, until);
        }
        if shards > 1 {
            wait_until(|| team.pending.load(Ordering::Acquire) == 0);
            assert!(
                !team.failed.load(Ordering::Acquire),
                "a simulation thread panicked (its message is above)"
            );
            for k in 1..shards {
                self.world.nodes.parts[k] = std::mem::take(&mut lock(&team.shards[k]).held);
            }
        }
        // What finished in the epoch, in the order of a single run.
        for shard in &team.shards {
            let mut shard = lock(shard);
            self.done.append(&mut shard.done);
            self.lines.append(&mut shard.lines);
        }
        if !self.lines.is_empty() {
            self.lines.sort_unstable_by_key(|l| (l.at, l.order));
            if let Some(w) = self.trace_out.as_mut() {
                for l in &self.lines {
                    let _ = writeln!(w, "{}", l.text);
                }
            }
            self.lines.clear();
        }
        if !self.done.is_empty() {
            let mut done = std::mem::take(&mut self.done);
            done.sort_unstable_by_key(|d| (d.at, d.order));
            for d in done.drain(..) {
                self.world.now = d.at;
                match d.how {
                    Finished::Query(result, hops, local, superseded) => {
                        self.query_finished(d.op, result, hops, local, superseded);
                    }
                    Finished::Refused(e) => self.complete_op(d.op, Outcome::Failed(e), 0, None),
                    Finished::Sealed(value) => self.sealed(d.op, value),
                }
            }
            self.done = done;
        }
    }

    /// Processes the next epoch or event of the whole network; `false` when the run is
    /// over.
    fn step(&mut self) -> bool {
        let nodes_next = self
            .team
            .shards
            .iter()
            .filter_map(|s| lock(s).next_at())
            .min();
        let global_next = self.globals.peek_time();
        let work_next = [nodes_next, self.next_op].into_iter().flatten().min();
        if let Some(g) = global_next
            && work_next.is_none_or(|w| g <= w)
        {
            if g > self.end {
                return false;
            }
            let (at, _, ev) = self.globals.pop().expect("just peeked");
            self.world.now = self.world.now.max(at);
            self.global(ev);
            self.post_all();
            return true;
        }
        let Some(start) = work_next else {
            return false;
        };
        if start > self.end {
            return false;
        }
        let mut until = (start
            + Duration::from_micros(self.team.lookahead.max(1_000)) * EPOCH_LOOKAHEADS)
            .min(self.end + Duration::from_micros(1));
        if let Some(g) = global_next {
            until = until.min(g);
        }
        // The operations that start in this epoch, chosen now: no node joins, crashes or
        // restarts before the epoch ends.
        while let Some(t) = self.next_op.filter(|&t| t < until) {
            self.issue_op(t);
            let w = &self.world.scenario.workload;
            let interval = (0.5 + unit(&mut self.work_rng)) / w.rate_per_s;
            let next = t + Duration::from_secs_f64(interval);
            self.next_op = (next <= secs(w.end_s)).then_some(next);
        }
        self.run_epoch(start, until);
        true
    }

    fn global(&mut self, ev: Global) {
        let now = self.world.now;
        self.events += 1;
        match ev {
            Global::Join(i) => {
                self.trace_event(now, 6, i, 0);
                self.start_node(i as usize);
            }
            Global::Crash(i) => {
                self.trace_event(now, 7, i, 0);
                self.crash(i as usize);
            }
            Global::Restart(i) => {
                self.trace_event(now, 8, i, 0);
                let i = i as usize;
                if let Some(f) = self.crashed_fault[i].take() {
                    self.world.faults.end(f, now);
                }
                if matches!(self.world.nodes[i].state, NodeState::Down(_)) {
                    self.world.nodes[i].incarnation += 1;
                    self.start_node(i);
                }
            }
            Global::PartitionStart(p) => {
                self.trace_event(now, 9, p as u32, 0);
                let heal_at = self.world.heal_at;
                let mut net = self
                    .team
                    .net
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                if !net.partitions[p].active && heal_at.is_none_or(|h| now < h) {
                    net.partitions[p].active = true;
                    net.partitions[p].fault = Some(self.world.faults.start(now, Scope::All));
                }
            }
            Global::PartitionEnd(p) => {
                self.trace_event(now, 10, p as u32, 0);
                self.end_partition(p, now);
            }
            Global::Clog(i) => {
                self.trace_event(now, 11, i, 0);
                let i = i as usize;
                let heal_at = self.world.heal_at;
                let mut net = self
                    .team
                    .net
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                if net.clogged[i].is_none() && heal_at.is_none_or(|h| now < h) {
                    net.clogged[i] = Some(self.world.faults.start(now, Scope::Node(i)));
                }
            }
            Global::Unclog(i) => {
                self.trace_event(now, 12, i, 0);
                let fault = self.net_mut().clogged[i as usize].take();
                if let Some(f) = fault {
                    self.world.faults.end(f, now);
                }
            }
            Global::HealAll => {
                self.trace_event(now, 13, 0, 0);
                self.heal_all(now);
            }
            Global::FinalReads => {
                self.trace_event(now, 18, 0, 0);
                self.final_reads(now);
            }
            Global::Converge => {
                let mut out = Vec::new();
                for c in &mut self.checkers {
                    c.on_converged(&self.world, &mut out);
                }
                self.violations.extend(out);
            }
            Global::MemCheck => {
                let mut out = Vec::new();
                for c in &mut self.checkers {
                    c.on_tick(&self.world, &mut out);
                }
                self.violations.extend(out);
                let d = self.world.scenario.checks.memory_check_interval_s;
                self.push(now + Duration::from_secs_f64(d), Global::MemCheck);
            }
        }
    }

    fn end_partition(&mut self, p: usize, now: Instant) {
        let mut net = self
            .team
            .net
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let part = &mut net.partitions[p];
        if part.active {
            part.active = false;
            if let Some(f) = part.fault.take() {
                self.world.faults.end(f, now);
            }
        }
    }

    fn heal_all(&mut self, now: Instant) {
        let partitions = self.net_mut().partitions.len();
        for p in 0..partitions {
            self.end_partition(p, now);
        }
        let clogged: Vec<usize> = {
            let mut net = self.net_mut();
            net.impaired = false;
            net.clogged.iter_mut().filter_map(Option::take).collect()
        };
        for f in clogged {
            self.world.faults.end(f, now);
        }
        for i in 0..self.world.nodes.len() {
            if matches!(self.world.nodes[i].state, NodeState::Down(_)) {
                if let Some(f) = self.crashed_fault[i].take() {
                    self.world.faults.end(f, now);
                }
                self.world.nodes[i].incarnation += 1;
                self.start_node(i);
            }
        }
    }

    fn start_node(&mut self, i: usize) {
        let node = &mut self.world.nodes[i];
        let disk = self.world.scenario.disk.is_some();
        let store = match std::mem::replace(&mut node.state, NodeState::NotJoined) {
            NodeState::Down(store) => *store,
            NodeState::NotJoined => SimStore::new(node.peer, disk, self.bugs),
            up @ NodeState::Up(_) => {
                node.state = up;
                return;
            }
        };
        let seed = splitmix(self.world.seed ^ ((i as u64) << 24) ^ u64::from(node.incarnation));
        let now = self.world.now + node.skew;
        let keypair = node.keypair.clone();
        let wall = node.wall_clock(self.world.now);
        let mut core = Node::with_identity(self.config.clone(), keypair, store, seed, now)
            .expect("Scenario::validate checked the core's configuration");
        core.set_wall_clock(now, wall);
        core.set_local_addresses(vec![address_of(i)]);
        let incarnation = self.world.nodes[i].incarnation;
        self.net_mut().status[i] = Status {
            up: true,
            incarnation,
        };
        self.world.nodes[i].state = NodeState::Up(Box::new(core));
        let boots = self.world.scenario.join.bootstrap_nodes;
        let known: Vec<usize> = if i < boots {
            // The bootstrap nodes know each other from the start.
            (0..boots).filter(|&j| j != i).collect()
        } else {
            vec![(splitmix(seed) % boots as u64) as usize]
        };
        for j in known {
            let p = self.world.nodes[j].peer;
            if let Some(n) = self.node_mut(i) {
                n.add_address(now, p, address_of(j));
            }
        }
        if let Some(n) = self.node_mut(i) {
            // Bootstrap is an internal query: its result is not a client operation.
            let _ = n.bootstrap(now);
        }
        self.with_cx(i, |cx| cx.drain(i));
    }

    fn crash(&mut self, i: usize) {
        let node = &mut self.world.nodes[i];
        let NodeState::Up(core) = std::mem::replace(&mut node.state, NodeState::NotJoined) else {
            return;
        };
        // Only what the store made durable survives.
        let store = core.into_store().crash();
        node.sync = None;
        node.held.clear();
        node.queued.clear();
        // Everything it acknowledged holding must have survived (unless it expired or a
        // newer version replaced it before).
        let local = self.world.now + node.skew;
        for (key, (version, expires)) in std::mem::take(&mut node.acked) {
            if expires.is_some_and(|e| e <= local) {
                continue;
            }
            let kept = store
                .get(&key)
                .ok()
                .flatten()
                .and_then(|r| version_of(&r.value))
                .map(|(v, _)| v);
            if kept.is_none_or(|v| v < version) {
                let what = format!(
                    "key {} at version {} (kept: {:?})",
                    String::from_utf8_lossy(key.as_bytes()),
                    version.timestamp,
                    kept.map(|v| v.timestamp)
                );
                self.world.lost_acks.push((i, self.world.now, what));
            }
        }
        let node = &mut self.world.nodes[i];
        node.state = NodeState::Down(Box::new(store));
        node.timer_at = None;
        node.inbound.clear();
        let mut links: Vec<u32> = std::mem::take(&mut node.conns).order.into();
        links.sort_unstable();
        let mut pending: Vec<usize> = node.ops.drain().map(|(_, run)| run.op).collect();
        pending.sort_unstable();
        self.net_mut().status[i].up = false;
        self.crashed_fault[i] = Some(self.world.faults.start(self.world.now, Scope::Node(i)));
        // The other ends see the connections break one hop later.
        self.with_cx(i, |cx| {
            for j in links {
                cx.notify(i as u32, j, Msg::Closed);
            }
        });
        // Pending client operations of the crashed node fail.
        for op in pending {
            self.complete_op(op, Outcome::Failed(CRASHED.into()), 0, None);
        }
    }

    /// A random running node to issue an operation at (forgers issue none: they are the
    /// adversary, not clients).
    fn pick_up_node(&mut self) -> Option<usize> {
        let n = self.world.nodes.len() - self.world.scenario.faults.forgers;
        for _ in 0..16 {
            let i = (self.work_rng.next_u64() % n as u64) as usize;
            if self.world.nodes[i].is_up() {
                return Some(i);
            }
        }
        None
    }

    /// Chooses the operation that starts at `at` and schedules its start on its node.
    fn issue_op(&mut self, at: Instant) {
        let w = self.world.scenario.workload.clone();
        let Some(i) = self.pick_up_node() else {
            return;
        };
        let weights = [
            (OpKind::Put, w.put),
            (OpKind::Put, w.overwrite),
            (OpKind::Remove, w.remove),
            (OpKind::Get, w.get),
            (OpKind::Provide, w.provide),
            (OpKind::GetProviders, w.get_providers),
            (OpKind::Lookup, w.lookup),
        ];
        let total: f64 = weights.iter().map(|(_, x)| x).sum();
        if total <= 0.0 {
            return;
        }
        let mut x = unit(&mut self.work_rng) * total;
        let mut choice = weights.len() - 1;
        for (c, (_, weight)) in weights.iter().enumerate() {
            if x < *weight {
                choice = c;
                break;
            }
            x -= weight;
        }
        let mut kind = weights[choice].0;
        // A put of a fresh key, unless the scenario's keys are all taken.
        let fresh = choice == 0 && w.max_keys.is_none_or(|m| self.fresh_keys < m);
        let id = self.world.history.ops.len();
        let mut reads = None;
        let mut value = Vec::new();
        let key = match kind {
            OpKind::Put if fresh => {
                self.fresh_keys += 1;
                format!("rec-{id}").into_bytes()
            }
            OpKind::Put | OpKind::Remove | OpKind::Get if !self.keys.is_empty() => {
                let k =
                    self.keys[(self.work_rng.next_u64() % self.keys.len() as u64) as usize].clone();
                if kind == OpKind::Get {
                    reads = self.latest_acked.get(&k).copied();
                }
                k
            }
            OpKind::Provide => format!("prov-{id}").into_bytes(),
            OpKind::GetProviders if !self.completed_provides.is_empty() => {
                let p = self.completed_provides
                    [(self.work_rng.next_u64() % self.completed_provides.len() as u64) as usize];
                reads = Some(p);
                self.world.history.ops[p].key.clone()
            }
            _ => {
                kind = OpKind::Lookup;
                let mut k = [0u8; 16];
                for b in k.chunks_mut(8) {
                    b.copy_from_slice(&self.work_rng.next_u64().to_le_bytes());
                }
                k.to_vec()
            }
        };
        if kind == OpKind::Put {
            // The payload says who wrote it and in which operation, then random bytes.
            value = vec![0u8; w.value_bytes.max(12)];
            value[..8].copy_from_slice(&(id as u64).to_be_bytes());
            value[8..12].copy_from_slice(&(i as u32).to_be_bytes());
            for chunk in value[12..].chunks_mut(8) {
                let r = self.work_rng.next_u64().to_le_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
        }
        self.schedule_op(at, i, kind, key, value, reads);
    }

    /// Records operation `kind` on `key` in the history and schedules its start at node
    /// `i` at `at`.
    fn schedule_op(
        &mut self,
        at: Instant,
        i: usize,
        kind: OpKind,
        key: Vec<u8>,
        payload: Vec<u8>,
        reads: Option<usize>,
    ) {
        let id = self.world.history.ops.len();
        let w = &self.world.scenario.workload;
        let quorum = match kind {
            OpKind::Get => w.get_quorum,
            _ => w.put_quorum,
        };
        self.world.history.ops.push(OpRecord {
            id,
            node: i,
            kind,
            key: key.clone(),
            value: Vec::new(),
            version: None,
            tombstone: false,
            local_version: None,
            incarnation: self.world.nodes[i].incarnation,
            reads,
            invoked: at,
            completed: None,
            outcome: Outcome::Pending,
            hops: 0,
        });
        let key = RecordKey::new(&key).expect("workload keys are short");
        let order = self.world.nodes[i].next_order(i);
        let start = Ev::Op(Box::new(OpStart {
            node: i as u32,
            op: id,
            kind,
            key,
            value: payload,
            quorum,
            versioned: self.world.scenario.workload.versioned,
        }));
        lock(&self.team.shards[i / self.world.nodes.part_len])
            .queue
            .push(at, order, start);
    }

    /// Reads every key with an acknowledged write once more, each at a random up node.
    fn final_reads(&mut self, at: Instant) {
        for k in 0..self.keys.len() {
            let Some(i) = self.pick_up_node() else {
                return;
            };
            let key = self.keys[k].clone();
            let reads = self.latest_acked.get(&key).copied();
            self.schedule_op(at, i, OpKind::Get, key, Vec::new(), reads);
        }
    }

    /// A put or removal sealed its record: the history keeps its value and version.
    fn sealed(&mut self, op: usize, value: Vec<u8>) {
        let rec = &mut self.world.history.ops[op];
        if let Some((v, t)) = version_of(&value) {
            rec.version = Some(v);
            rec.tombstone = t;
        }
        rec.value = value;
    }

    fn query_finished(
        &mut self,
        op: usize,
        result: QueryResult,
        hops: u32,
        local: Option<Version>,
        superseded: bool,
    ) {
        let expect_provider = self.world.history.ops[op]
            .reads
            .map(|p| self.world.nodes[self.world.history.ops[p].node].peer);
        let mut lookup_peers = None;
        let outcome = match result {
            QueryResult::PutRecord(Ok(_)) | QueryResult::StartProviding(Ok(_)) => Outcome::Ok,
            QueryResult::PutRecord(Err(e)) if superseded => {
                Outcome::Failed(format!("{SUPERSEDED} ({e})"))
            }
            QueryResult::GetRecord(Ok(records)) => {
                // The newest copy comes first (the injected bug takes the last, the oldest).
                let chosen = if self.world.scenario.faults.is("get-returns-oldest-copy") {
                    records.last()
                } else {
                    records.first()
                };
                let value = chosen.map(|r| r.record.value.clone()).unwrap_or_default();
                let rec = &mut self.world.history.ops[op];
                if let Some((v, t)) = version_of(&value) {
                    rec.version = Some(v);
                    rec.tombstone = t;
                }
                rec.value = value;
                rec.local_version = local;
                Outcome::Ok
            }
            QueryResult::GetProviders(Ok(providers)) => {
                if expect_provider.is_some_and(|p| providers.iter().any(|x| x.id == p)) {
                    Outcome::Ok
                } else {
                    Outcome::Failed("announced provider not among the providers found".into())
                }
            }
            QueryResult::GetClosestPeers(Ok(peers)) => {
                lookup_peers = Some(peers);
                Outcome::Ok
            }
            QueryResult::PutRecord(Err(e))
            | QueryResult::StartProviding(Err(e))
            | QueryResult::GetRecord(Err(e))
            | QueryResult::GetProviders(Err(e))
            | QueryResult::GetClosestPeers(Err(e))
            | QueryResult::FindPeer(Err(e))
            | QueryResult::Bootstrap(Err(e)) => Outcome::Failed(e.to_string()),
            QueryResult::FindPeer(Ok(_)) | QueryResult::Bootstrap(Ok(_)) => Outcome::Ok,
        };
        self.world.history.ops[op].local_version = local;
        self.complete_op(op, outcome, hops, lookup_peers);
    }

    fn complete_op(&mut self, op: usize, outcome: Outcome, hops: u32, peers: Option<Vec<PeerId>>) {
        let now = self.world.now;
        {
            let rec = &mut self.world.history.ops[op];
            rec.completed = Some(now);
            rec.outcome = outcome;
            rec.hops = hops;
        }
        let code = u64::from(self.world.history.ops[op].ok());
        self.trace_event(now, 15, op as u32, code);
        let rec = &self.world.history.ops[op];
        if rec.ok() {
            match rec.kind {
                OpKind::Put | OpKind::Remove
                    if self.latest_acked.insert(rec.key.clone(), op).is_none() =>
                {
                    self.keys.push(rec.key.clone());
                }
                OpKind::Provide => self.completed_provides.push(op),
                _ => {}
            }
        }
        let rec = &self.world.history.ops[op];
        let target = RecordKey::new(&rec.key).map(|k| k.key()).ok();
        let detail = match (&peers, &target) {
            (Some(p), Some(t)) => Detail::Lookup {
                target: t,
                peers: p,
            },
            _ => Detail::None,
        };
        let mut out = Vec::new();
        for c in &mut self.checkers {
            c.on_complete(&self.world, &self.world.history.ops[op], &detail, &mut out);
        }
        self.violations.extend(out);
    }

    /// Runs to the end; `progress` is called now and then with the virtual time reached.
    pub fn run(mut self, progress: &mut dyn FnMut(Instant)) -> Report {
        let started = std::time::Instant::now();
        let helpers: Vec<_> = (1..self.team.shards.len())
            .map(|k| {
                let team = Arc::clone(&self.team);
                std::thread::spawn(move || helper(&team, k))
            })
            .collect();
        let mut threads = vec![std::thread::current()];
        threads.extend(helpers.iter().map(|h| h.thread().clone()));
        // Set once per run: a simulation runs once.
        let _ = self.team.threads_of_run.set(threads);
        let stop = StopHelpers(Arc::clone(&self.team));
        let mut reported = 0u64;
        while self.step() {
            let events = self.events();
            if events - reported >= 200_000 {
                reported = events;
                progress(self.world.now);
            }
        }
        drop(stop);
        for h in helpers {
            // A helper that panicked has said so in the epoch it panicked in.
            let _ = h.join();
        }
        self.world.now = self.world.now.max(self.end);
        // Operations still running at the end did not finish in time.
        let mut out = Vec::new();
        for c in &mut self.checkers {
            c.on_tick(&self.world, &mut out);
            c.finish(&self.world, &mut out);
        }
        self.violations.extend(out);
        let wall = started.elapsed();
        self.report(wall)
    }

    /// Events processed so far.
    fn events(&self) -> u64 {
        self.events + self.team.shards.iter().map(|s| lock(s).events).sum::<u64>()
    }

    fn report(self, wall: Duration) -> Report {
        let ops = &self.world.history.ops;
        let mut counts: [OpCounts; 6] = Default::default();
        let mut hops = Vec::new();
        let mut lat = Vec::new();
        for op in ops {
            let c = &mut counts[op.kind as usize];
            c.issued += 1;
            if op.ok() {
                c.ok += 1;
                if matches!(op.kind, OpKind::Lookup | OpKind::Get) {
                    hops.push(op.hops);
                }
                if let Some(l) = op.latency_ms() {
                    lat.push(l);
                }
            } else {
                c.failed += 1;
            }
        }
        hops.sort_unstable();
        lat.sort_by(f64::total_cmp);
        let ok = ops.iter().filter(|o| o.ok()).count() as u64;
        let gets: Vec<&OpRecord> = ops
            .iter()
            .filter(|o| o.kind == OpKind::Get && o.reads.is_some())
            .collect();
        let gets_ok = gets
            .iter()
            .filter(|g| {
                g.ok()
                    && g.reads
                        .is_some_and(|p| crate::checkers::reads_at_least(g, &ops[p]))
            })
            .count();
        let wall_ms = wall.as_millis() as u64;
        let events = self.events();
        // The whole network's events, then every node's own stream, in node order.
        let mut trace = self.trace;
        trace.update(&self.trace_buf);
        for n in self.world.nodes.iter() {
            trace.update(&n.trace.to_le_bytes());
        }
        let [puts, gets_c, provides, get_providers, lookups, removes] = counts;
        Report {
            scenario: self.world.scenario.name.clone(),
            seed: self.world.seed,
            nodes: self.world.nodes.len(),
            threads: self.team.shards.len(),
            virtual_ms: self.world.now.as_millis(),
            wall_ms,
            events,
            events_per_sec: events as f64 / wall.as_secs_f64().max(1e-9),
            ops: ops.len() as u64,
            ops_ok: ok,
            ops_failed: ops.len() as u64 - ok,
            puts,
            gets: gets_c,
            provides,
            get_providers,
            lookups,
            removes,
            get_after_put_success: if gets.is_empty() {
                1.0
            } else {
                gets_ok as f64 / gets.len() as f64
            },
            lookup_hops_p50: percentile(&hops, 50.0),
            lookup_hops_p99: percentile(&hops, 99.0),
            latency_ms_p50: percentile(&lat, 50.0),
            latency_ms_p99: percentile(&lat, 99.0),
            messages: self.team.shards.iter().map(|s| lock(s).messages).sum(),
            forged_refused: self
                .world
                .nodes
                .iter()
                .filter_map(|n| n.node())
                .map(|n| n.stats().forged_records)
                .sum(),
            clock_refused: self
                .world
                .nodes
                .iter()
                .filter_map(|n| n.node())
                .map(|n| n.stats().clock_refused)
                .sum(),
            trace_hash: format!("{:016x}", trace.digest()),
            violations: self.violations,
        }
    }
}

fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// Runs `scenario` with `seed` to the end, on one thread.
pub fn run(scenario: &Scenario, seed: u64) -> Report {
    Simulation::new(scenario.clone(), seed).run(&mut |_| {})
}
