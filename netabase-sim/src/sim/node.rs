//! The simulated nodes: their state and clocks, the order of their events, their
//! connections, and starting, crashing and restarting them over their disks.

use std::collections::{BTreeMap, VecDeque};
use std::ops::{Index, IndexMut};
use std::time::Duration;

use netabase_core::{
    InboundId, Instant, Key, Keypair, Node, Output, PeerId, QueryId, RecordKey, RecordStore,
    RequestId, Version,
};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;

use super::network::{Msg, Status, address_of};
use super::workload::{OpRun, OpStart};
use super::{CRASHED, Simulation, splitmix, version_of};
use crate::disk::SimStore;
use crate::history::{Outcome, Scope};

/// Bits of an event's order key that count the originating node's events.
pub(super) const ORDER_BITS: u32 = 40;

/// The wall clocks of the simulated nodes start here (microseconds since the Unix epoch,
/// November 2023), far enough from zero that a clock may step back.
const WALL_EPOCH_MICROS: i128 = 1_700_000_000_000_000;

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
pub(super) enum Queued {
    Msg { from: u32, msg: Msg },
    Timer,
    Op(Box<OpStart>),
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
    pub(super) keypair: Keypair,
    /// How fast its wall clock runs, in parts per million off virtual time.
    pub(super) drift_ppm: f64,
    /// Steps of its wall clock: (when, by how many µs).
    pub(super) steps: Vec<(Instant, i64)>,
    /// Bumped at every restart: answers addressed to an earlier incarnation are dropped.
    pub incarnation: u32,
    pub(super) timer_at: Option<Instant>,
    /// Its open connections as it sees them. The other side learns of a closed
    /// connection one link latency later.
    pub(super) conns: Conns,
    /// Inbound requests waiting for its answer: (inbound id, requester, the requester's
    /// incarnation, its request id). Nodes answer at once, so this holds one or two.
    pub(super) inbound: Vec<(u64, u32, u32, RequestId)>,
    pub(super) next_inbound: u64,
    /// Client operations running on it, by query.
    pub(super) ops: FxHashMap<QueryId, OpRun>,
    /// Draws for the messages it sends: jitter, loss, duplication, reordering.
    pub(super) rng: ChaCha8Rng,
    /// Events it has scheduled or processed: orders its events and stamps connection use.
    pub(super) count: u64,
    /// Hash of its own event stream.
    pub(super) trace: u64,
    /// Draws for its disk's sync latencies.
    pub(super) disk_rng: ChaCha8Rng,
    /// The sync in progress, if any (its number).
    pub(super) sync: Option<u64>,
    pub(super) sync_seq: u64,
    /// Outputs waiting for the sync in progress.
    pub(super) held: Vec<Output>,
    /// Inputs waiting for the sync in progress.
    pub(super) queued: VecDeque<Queued>,
    /// With a disk model: for every key it acknowledged holding (a PUT_VALUE answer, a put
    /// of its own that completed), the newest version and that copy's expiry.
    pub(super) acked: BTreeMap<RecordKey, (Version, Option<Instant>)>,
    /// GET_VALUE answers with a record it served (for the `corrupt-every-third-value` bug).
    pub(super) served_values: u64,
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

    pub(super) fn core_mut(&mut self) -> Option<&mut Node<SimStore>> {
        match &mut self.state {
            NodeState::Up(n) => Some(n),
            _ => None,
        }
    }

    /// The requester of inbound request `id`: (node, incarnation, its request id).
    pub(super) fn take_inbound(&mut self, id: InboundId) -> Option<(u32, u32, RequestId)> {
        let pos = self.inbound.iter().position(|e| e.0 == id.0)?;
        let (_, j, inc, rid) = self.inbound.swap_remove(pos);
        Some((j, inc, rid))
    }

    /// The order key of the next event this node (index `i`) schedules.
    pub(super) fn next_order(&mut self, i: usize) -> u64 {
        self.count += 1;
        ((i as u64 + 1) << ORDER_BITS) | self.count
    }
}

/// A node's open connections: a bit per peer to look one up with one memory access (an
/// event's node is usually cold in the cache), and the peers in the order they connected.
#[derive(Default)]
pub(super) struct Conns {
    bits: Vec<u64>,
    pub(super) order: VecDeque<u32>,
}

impl Conns {
    pub(super) fn contains(&self, y: u32) -> bool {
        self.bits
            .get(y as usize / 64)
            .is_some_and(|w| w >> (y % 64) & 1 == 1)
    }

    /// Adds `y`, which is not in.
    pub(super) fn insert(&mut self, y: u32) {
        let word = y as usize / 64;
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        self.bits[word] |= 1 << (y % 64);
        self.order.push_back(y);
    }

    /// Removes `y`; whether it was in. (The list is kept for closing the oldest: a peer
    /// taken out of it by the caller only has its bit cleared here.)
    pub(super) fn remove(&mut self, y: u32) -> bool {
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
    pub(super) parts: Vec<Vec<SimNode>>,
    pub(super) part_len: usize,
    len: usize,
}

impl Nodes {
    pub(super) fn new(nodes: Vec<SimNode>, part_len: usize) -> Self {
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
    pub(super) fn regroup(&mut self, part_len: usize) {
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

impl Simulation {
    fn node_mut(&mut self, i: usize) -> Option<&mut Node<SimStore>> {
        self.world.nodes[i].core_mut()
    }

    pub(super) fn start_node(&mut self, i: usize) {
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

    pub(super) fn crash(&mut self, i: usize) {
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
}
