//! The discrete-event engine: many cores, one thread, one virtual clock.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::time::Duration;

use netabase_core::{
    Address, Config, Event, InboundId, InjectedFault, Instant, Key, MemoryStore, Mode, Node,
    Output, PeerId, QueryId, QueryResult, Quorum, Record, RecordKey, Request, RequestFailure,
    RequestId, Response,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::Xxh3;

use crate::checkers::{self, Checker, Detail};
use crate::history::{FaultLog, History, OpKind, OpRecord, Outcome, Scope};
use crate::queue::EventQueue;
use crate::report::{OpCounts, Report, Violation, percentile};
use crate::scenario::{PartitionKind, Scenario};

/// Bytes of trace gathered before they are hashed.
const TRACE_CHUNK: usize = 16 * 1024;

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

/// The life stage of a simulated node.
pub enum NodeState {
    /// Not started yet.
    NotJoined,
    /// Running.
    Up(Box<Node<MemoryStore>>),
    /// Crashed: only its durable store is left.
    Down(MemoryStore),
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
    /// Bumped at every restart: answers addressed to an earlier incarnation are dropped.
    pub incarnation: u32,
    timer_at: Option<Instant>,
    /// Peers it has had a connection with, in no particular order (sorted before any
    /// use that could show the order). A connection the other side closed stays listed
    /// until this node next looks through the list, so that closing one never searches
    /// the other side's list: the link map of [`Simulation`] (one entry per open
    /// connection, with when it was last used) says which are open.
    links: Vec<u32>,
    /// Number of open connections.
    open_links: usize,
}

impl SimNode {
    /// The running node, if up.
    pub fn node(&self) -> Option<&Node<MemoryStore>> {
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
        self.open_links
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
    pub nodes: Vec<SimNode>,
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
}

#[derive(Debug)]
enum Ev {
    Deliver {
        to: u32,
        /// Incarnation the message is addressed to (answers); `None` for new requests.
        to_inc: Option<u32>,
        from: u32,
        /// Slot of the message in [`Simulation::msgs`].
        msg: u32,
    },
    Timer {
        node: u32,
    },
    Join(u32),
    Crash(u32),
    Restart(u32),
    PartitionStart(usize),
    PartitionEnd(usize),
    Clog(u32),
    Unclog(u32),
    HealAll,
    Op,
    MemCheck,
}

struct ActivePartition {
    kind: PartitionKind,
    /// Group A membership (split, one-way) or the isolated node (isolate).
    in_a: Vec<bool>,
    active: bool,
    fault: Option<usize>,
}

/// A simulation run in progress.
pub struct Simulation {
    /// The state checkers read.
    pub world: World,
    config: Config,
    queue: EventQueue<Ev>,
    seq: u64,
    link_seed: u64,
    net_rng: ChaCha8Rng,
    work_rng: ChaCha8Rng,
    partitions: Vec<ActivePartition>,
    clogged: Vec<Option<usize>>,
    crashed_fault: Vec<Option<usize>>,
    impaired: bool,
    ops_by_query: FxHashMap<(u32, QueryId), usize>,
    completed_puts: Vec<usize>,
    completed_provides: Vec<usize>,
    trace: Xxh3,
    /// Trace bytes not yet hashed: the hash is fed in large chunks (a streaming hash of
    /// the same bytes is the same however they are split), which costs less per event.
    trace_buf: Vec<u8>,
    events: u64,
    messages: u64,
    checkers: Vec<Box<dyn Checker>>,
    violations: Vec<Violation>,
    end: Instant,
    trace_out: Option<Box<dyn std::io::Write>>,
    /// Messages in flight, by slot; freed slots are reused (most recently freed first, so
    /// a new message usually lands in memory that is still in cache).
    msgs: Vec<Option<Msg>>,
    free_msgs: Vec<u32>,
    /// Open connections, keyed by the pair of node indices (lower one in the high half),
    /// with when each was last used (event sequence). Only looked up, never iterated.
    links: FxHashMap<u64, u64>,
    /// Inbound requests waiting for the node's answer: (node, inbound id) to (requester,
    /// its incarnation, its request id). Nodes answer at once, so this stays tiny and
    /// in cache.
    inbound: FxHashMap<(u32, u64), (u32, u32, RequestId)>,
    next_inbound: u64,
}

/// The key of the connection between `a` and `b` in [`Simulation::links`].
fn pair(a: usize, b: usize) -> u64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    (lo as u64) << 32 | hi as u64
}

impl Simulation {
    /// Sets up a run of `scenario` with `seed`: nodes, joins, faults and workload are all
    /// scheduled from the seed.
    pub fn new(scenario: Scenario, seed: u64) -> Self {
        let mut master = ChaCha8Rng::seed_from_u64(seed);
        let mut sched_rng = ChaCha8Rng::seed_from_u64(master.next_u64());
        let net_rng = ChaCha8Rng::seed_from_u64(master.next_u64());
        let work_rng = ChaCha8Rng::seed_from_u64(master.next_u64());
        let link_seed = master.next_u64();
        let id_seed = master.next_u64();

        let mut config = Config::default();
        let c = &scenario.core;
        if let Some(k) = c.k {
            config.k = k;
        }
        if let Some(a) = c.alpha {
            config.alpha = a;
        }
        if let Some(t) = c.request_timeout_ms {
            config.request_timeout = Duration::from_millis(t);
        }
        if let Some(t) = c.query_timeout_ms {
            config.query_timeout = Duration::from_millis(t);
        }
        if let Some(t) = c.bootstrap_interval_s {
            config.bootstrap_interval = (t > 0).then(|| Duration::from_secs(t));
        }
        if let Some(t) = c.replication_interval_s {
            config.replication_interval = (t > 0).then(|| Duration::from_secs(t));
        }
        if scenario.faults.inject.as_deref() == Some("corrupt-every-third-value") {
            config.injected_fault = Some(InjectedFault::CorruptEveryThirdValue);
        }

        let n = scenario.nodes;
        let max_skew = scenario.clock.max_skew_ms;
        let mut nodes = Vec::with_capacity(n);
        let mut index = FxHashMap::default();
        for i in 0..n {
            let peer = PeerId::from_seed(splitmix(id_seed ^ i as u64));
            index.insert(peer, i);
            let skew = ms(unit(&mut sched_rng) * max_skew);
            nodes.push(SimNode {
                peer,
                key: Key::from_peer(&peer),
                state: NodeState::NotJoined,
                skew,
                incarnation: 0,
                timer_at: None,
                links: Vec::new(),
                open_links: 0,
            });
        }
        let end = secs(scenario.duration_s);
        let heal_at = scenario.faults_end_s.map(secs);
        let world = World {
            seed,
            now: Instant::ZERO,
            nodes,
            index,
            faults: FaultLog::default(),
            history: History::default(),
            all_joined_at: Instant::ZERO,
            heal_at,
            scenario: scenario.clone(),
        };
        let impaired = scenario.network.loss > 0.0
            || scenario.network.duplicate > 0.0
            || scenario.network.reorder > 0.0;
        let mut sim = Simulation {
            world,
            config,
            queue: EventQueue::new(),
            seq: 0,
            link_seed,
            net_rng,
            work_rng,
            partitions: Vec::new(),
            clogged: vec![None; n],
            crashed_fault: vec![None; n],
            impaired,
            ops_by_query: FxHashMap::default(),
            completed_puts: Vec::new(),
            completed_provides: Vec::new(),
            trace: Xxh3::new(),
            trace_buf: Vec::with_capacity(TRACE_CHUNK),
            events: 0,
            messages: 0,
            checkers: checkers::all(&scenario),
            violations: Vec::new(),
            end,
            trace_out: None,
            msgs: Vec::new(),
            free_msgs: Vec::new(),
            links: FxHashMap::default(),
            inbound: FxHashMap::default(),
            next_inbound: 0,
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
            sim.push(at, Ev::Join(i as u32));
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
            sim.partitions.push(ActivePartition {
                kind: p.kind,
                in_a,
                active: false,
                fault: None,
            });
            sim.push(secs(p.start_s), Ev::PartitionStart(pi));
            sim.push(secs(p.end_s), Ev::PartitionEnd(pi));
        }

        // Swizzle: clog nodes one by one, heal them in a different random order.
        if let Some(sw) = &scenario.swizzle {
            let mut order: Vec<usize> = (0..n).collect();
            shuffle(&mut order, &mut sched_rng);
            order.truncate(sw.nodes.min(n));
            let mut t = sw.start_s;
            for &i in &order {
                sim.push(secs(t), Ev::Clog(i as u32));
                t += sw.step_s;
            }
            shuffle(&mut order, &mut sched_rng);
            for &i in &order {
                sim.push(secs(t), Ev::Unclog(i as u32));
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
                sim.push(secs(at), Ev::Crash(i as u32));
                sim.push(secs(at + down), Ev::Restart(i as u32));
            }
        }

        if let Some(h) = heal_at {
            sim.push(h, Ev::HealAll);
        }
        let w = &scenario.workload;
        if w.rate_per_s > 0.0 && w.end_s > w.start_s {
            sim.push(secs(w.start_s), Ev::Op);
        }
        if scenario.checks.memory_check_interval_s > 0.0 {
            sim.push(secs(scenario.checks.memory_check_interval_s), Ev::MemCheck);
        }
        sim
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(at, self.seq, ev);
    }

    fn local_now(&self, i: usize) -> Instant {
        self.world.now + self.world.nodes[i].skew
    }

    fn node_mut(&mut self, i: usize) -> Option<&mut Node<MemoryStore>> {
        match &mut self.world.nodes[i].state {
            NodeState::Up(n) => Some(n),
            _ => None,
        }
    }

    /// Base one-way latency of the link between `a` and `b` (symmetric, from the seed).
    fn link_latency(&self, a: u32, b: u32) -> Duration {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let h = splitmix(self.link_seed ^ (u64::from(lo) << 32 | u64::from(hi)));
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        let net = &self.world.scenario.network;
        ms(net.latency_min_ms + u * (net.latency_max_ms - net.latency_min_ms))
    }

    fn message_delay(&mut self, a: u32, b: u32) -> Duration {
        let net = &self.world.scenario.network;
        let (jitter, reorder, reorder_delay) = (net.jitter_ms, net.reorder, net.reorder_delay_ms);
        let mut d = self.link_latency(a, b) + ms(unit(&mut self.net_rng) * jitter);
        if self.impaired && reorder > 0.0 && unit(&mut self.net_rng) < reorder {
            d += ms(reorder_delay);
        }
        d
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

    /// Sends a message over the simulated network: blocked, lost, delayed, duplicated.
    fn transmit(&mut self, from: u32, to: u32, to_inc: Option<u32>, msg: Msg) {
        self.messages += 1;
        if self.blocked(from, to) {
            return;
        }
        let (loss, dup) = {
            let net = &self.world.scenario.network;
            (net.loss, net.duplicate)
        };
        if self.impaired && loss > 0.0 && unit(&mut self.net_rng) < loss {
            return;
        }
        let duplicate = self.impaired && dup > 0.0 && unit(&mut self.net_rng) < dup;
        let at = self.world.now + self.message_delay(from, to);
        if duplicate {
            let later = self.world.now + self.message_delay(from, to);
            let copy = self.store_msg(msg.clone());
            self.push(
                later,
                Ev::Deliver {
                    to,
                    to_inc,
                    from,
                    msg: copy,
                },
            );
        }
        let msg = self.store_msg(msg);
        self.push(
            at,
            Ev::Deliver {
                to,
                to_inc,
                from,
                msg,
            },
        );
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

    /// A local notification that takes one hop's time but cannot be lost (the outcome of a
    /// dial or of writing to a stream).
    fn notify(&mut self, to: u32, from: u32, msg: Msg) {
        let inc = self.world.nodes[to as usize].incarnation;
        let at = self.world.now + self.link_latency(from, to);
        let msg = self.store_msg(msg);
        self.push(
            at,
            Ev::Deliver {
                to,
                to_inc: Some(inc),
                from,
                msg,
            },
        );
    }

    fn address_of(i: usize) -> Address {
        Address::from_bytes(&(i as u32).to_be_bytes()).expect("four bytes")
    }

    /// The node `peer` is, found from the address the request was sent to (a simulated
    /// address is the node's index) when that address is the peer's own, otherwise by id.
    fn resolve(&self, peer: &PeerId, addrs: &[Address]) -> Option<usize> {
        if let Some(a) = addrs.first()
            && let Ok(b) = <[u8; 4]>::try_from(a.as_bytes())
        {
            let j = u32::from_be_bytes(b) as usize;
            if self.world.nodes.get(j).is_some_and(|n| n.peer == *peer) {
                return Some(j);
            }
        }
        self.world.index.get(peer).copied()
    }

    /// Carries out everything node `i` wants done, then re-arms its timer.
    fn drain(&mut self, i: usize) {
        while let Some(out) = self.node_mut(i).and_then(|n| n.poll_output()) {
            match out {
                Output::SendRequest {
                    id,
                    peer,
                    addrs,
                    request,
                } => {
                    let one_way = !request.expects_response();
                    let from_inc = self.world.nodes[i].incarnation;
                    match self.resolve(&peer, &addrs) {
                        Some(j) if self.world.nodes[j].is_up() => {
                            if self.blocked(i as u32, j as u32) {
                                // A partitioned peer is silent: the request times out.
                                self.messages += 1;
                                continue;
                            }
                            self.transmit(
                                i as u32,
                                j as u32,
                                None,
                                Msg::Request {
                                    id,
                                    from_inc,
                                    request,
                                },
                            );
                            if one_way {
                                self.notify(i as u32, j as u32, Msg::Sent { id });
                            }
                        }
                        Some(j) => {
                            // Down or not started: the dial is refused.
                            self.messages += 1;
                            self.notify(
                                i as u32,
                                j as u32,
                                Msg::Failed {
                                    id,
                                    failure: RequestFailure::Dial,
                                },
                            );
                        }
                        None => {
                            self.messages += 1;
                            self.notify(
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
                    if let Some((j, inc, rid)) = self.inbound.remove(&(i as u32, id.0)) {
                        self.transmit(i as u32, j, Some(inc), Msg::Response { id: rid, response });
                    }
                }
                Output::RejectInbound { id, .. } => {
                    if let Some((j, inc, rid)) = self.inbound.remove(&(i as u32, id.0)) {
                        self.transmit(
                            i as u32,
                            j,
                            Some(inc),
                            Msg::Failed {
                                id: rid,
                                failure: RequestFailure::UnsupportedProtocol,
                            },
                        );
                    }
                }
                Output::Event(Event::QueryFinished { id, result, stats }) => {
                    self.query_finished(i, id, result, stats.hops);
                }
                Output::Event(_) => {}
            }
        }
        self.rearm(i);
    }

    fn rearm(&mut self, i: usize) {
        let skew = self.world.nodes[i].skew;
        let Some(t) = self.node_mut(i).and_then(|n| n.poll_timeout()) else {
            return;
        };
        let global = t.saturating_sub(skew).max(self.world.now);
        let node = &mut self.world.nodes[i];
        if node.timer_at.is_none_or(|s| global < s) {
            node.timer_at = Some(global);
            self.push(global, Ev::Timer { node: i as u32 });
        }
    }

    /// Opens a connection between `a` and `b` on first contact: each learns, as from
    /// identify, whether the other serves the DHT. A node keeps at most
    /// `network.max_connections` connections; opening one more closes its least recently
    /// used quarter at once (so closing costs little per connection opened), as libp2p's
    /// connection limits and idle timeouts do.
    fn connect(&mut self, a: usize, b: usize) {
        let stamp = self.seq;
        let max = self.world.scenario.network.max_connections;
        if let Some(t) = self.links.get_mut(&pair(a, b)) {
            *t = stamp;
            return;
        }
        for x in [a, b] {
            if self.world.nodes[x].open_links >= max {
                // (last use, peer) of each open connection, oldest first; a peer listed
                // twice (closed by the other side, then opened again) has the same entry
                // twice, side by side.
                let listed = std::mem::take(&mut self.world.nodes[x].links);
                let mut by_age: Vec<(u64, u32)> = listed
                    .into_iter()
                    .filter_map(|y| Some((*self.links.get(&pair(x, y as usize))?, y)))
                    .collect();
                by_age.sort_unstable();
                by_age.dedup();
                let (old, kept) = by_age.split_at(max / 4);
                self.world.nodes[x].links = kept.iter().map(|&(_, y)| y).collect();
                for &(_, y) in old {
                    self.disconnect(x, y as usize);
                }
            }
        }
        self.links.insert(pair(a, b), stamp);
        for (x, y) in [(a, b), (b, a)] {
            let node = &mut self.world.nodes[x];
            node.links.push(y as u32);
            node.open_links += 1;
            if node.links.len() >= 2 * max {
                // Many connections closed by the other side: forget them.
                let open = self.open_links_of(x);
                self.world.nodes[x].links = open;
            }
        }
        for (x, y) in [(a, b), (b, a)] {
            let serves = self.world.nodes[y]
                .node()
                .is_some_and(|n| n.mode() == Mode::Server);
            let peer = self.world.nodes[y].peer;
            let now = self.local_now(x);
            if let Some(node) = self.node_mut(x) {
                node.handle_connection_established(now, peer);
                node.handle_peer_identified(now, peer, &[Self::address_of(y)], serves);
            }
        }
        self.drain(a);
        self.drain(b);
    }

    /// The peers `x` has an open connection with, each once, in increasing order.
    fn open_links_of(&mut self, x: usize) -> Vec<u32> {
        let mut open = std::mem::take(&mut self.world.nodes[x].links);
        open.sort_unstable();
        open.dedup();
        open.retain(|&y| self.links.contains_key(&pair(x, y as usize)));
        open
    }

    /// Closes the connection between `x` and `y`; both sides are told. The caller takes
    /// `y` out of `x`'s list; `x` stays in `y`'s until `y` looks through it.
    fn disconnect(&mut self, x: usize, y: usize) {
        self.links.remove(&pair(x, y));
        self.world.nodes[x].open_links -= 1;
        self.world.nodes[y].open_links -= 1;
        for (p, q) in [(x, y), (y, x)] {
            let peer = self.world.nodes[q].peer;
            let now = self.local_now(p);
            if let Some(node) = self.node_mut(p) {
                node.handle_connection_closed(now, peer);
            }
        }
    }

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
            const KINDS: [&str; 16] = [
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
            ];
            let kind = KINDS.get(usize::from(code)).copied().unwrap_or("?");
            // A failing trace writer must not change the run; the hash is what counts.
            let _ = writeln!(w, "{:>14} {kind:<15} {node:>6} {extra}", at.as_micros());
        }
    }

    /// Writes one line per processed event (time in µs, kind, node, id) to `out`.
    pub fn set_trace_writer(&mut self, out: Box<dyn std::io::Write>) {
        self.trace_out = Some(out);
    }

    /// Processes the next event; returns `false` when the run is over.
    pub fn step(&mut self) -> bool {
        let Some((at, _, ev)) = self.queue.pop() else {
            return false;
        };
        if at > self.end {
            return false;
        }
        self.world.now = self.world.now.max(at);
        let now = self.world.now;
        match ev {
            Ev::Deliver {
                to,
                to_inc,
                from,
                msg,
            } => {
                let (t, f) = (to as usize, from as usize);
                let msg = self.take_msg(msg);
                if !self.world.nodes[t].is_up() {
                    if let Msg::Request { id, from_inc, .. } = msg {
                        // Arrived at a crashed node: the sender's stream breaks.
                        if self.world.nodes[f].incarnation == from_inc {
                            self.notify(
                                from,
                                to,
                                Msg::Failed {
                                    id,
                                    failure: RequestFailure::Io,
                                },
                            );
                        }
                    }
                    return true;
                }
                if to_inc.is_some_and(|inc| inc != self.world.nodes[t].incarnation) {
                    return true;
                }
                self.events += 1;
                let local = self.local_now(t);
                match msg {
                    Msg::Request {
                        id,
                        from_inc,
                        request,
                    } => {
                        self.trace_event(now, 1, to, id.0);
                        self.connect(f, t);
                        let inbound = InboundId(self.next_inbound);
                        self.next_inbound += 1;
                        if request.expects_response() {
                            self.inbound.insert((to, inbound.0), (from, from_inc, id));
                        }
                        let peer = self.world.nodes[f].peer;
                        if let Some(n) = self.node_mut(t) {
                            n.handle_request(local, peer, inbound, request);
                        }
                    }
                    Msg::Response { id, response } => {
                        self.trace_event(now, 2, to, id.0);
                        if let Some(n) = self.node_mut(t) {
                            n.handle_response(local, id, response);
                        }
                    }
                    Msg::Sent { id } => {
                        self.trace_event(now, 3, to, id.0);
                        if let Some(n) = self.node_mut(t) {
                            n.handle_request_sent(local, id);
                        }
                    }
                    Msg::Failed { id, failure } => {
                        self.trace_event(now, 4, to, id.0);
                        if let Some(n) = self.node_mut(t) {
                            n.handle_request_failed(local, id, failure);
                        }
                    }
                }
                self.drain(t);
            }
            Ev::Timer { node } => {
                let i = node as usize;
                if self.world.nodes[i].timer_at != Some(at) {
                    return true;
                }
                self.world.nodes[i].timer_at = None;
                self.events += 1;
                self.trace_event(now, 5, node, 0);
                let local = self.local_now(i);
                if let Some(n) = self.node_mut(i) {
                    n.handle_timeout(local);
                }
                self.drain(i);
            }
            Ev::Join(i) => {
                self.events += 1;
                self.trace_event(now, 6, i, 0);
                self.start_node(i as usize);
            }
            Ev::Crash(i) => {
                self.events += 1;
                self.trace_event(now, 7, i, 0);
                self.crash(i as usize);
            }
            Ev::Restart(i) => {
                self.events += 1;
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
            Ev::PartitionStart(p) => {
                self.events += 1;
                self.trace_event(now, 9, p as u32, 0);
                if !self.partitions[p].active && self.world.heal_at.is_none_or(|h| now < h) {
                    self.partitions[p].active = true;
                    self.partitions[p].fault = Some(self.world.faults.start(now, Scope::All));
                }
            }
            Ev::PartitionEnd(p) => {
                self.events += 1;
                self.trace_event(now, 10, p as u32, 0);
                self.end_partition(p, now);
            }
            Ev::Clog(i) => {
                self.events += 1;
                self.trace_event(now, 11, i, 0);
                let i = i as usize;
                if self.clogged[i].is_none() && self.world.heal_at.is_none_or(|h| now < h) {
                    self.clogged[i] = Some(self.world.faults.start(now, Scope::Node(i)));
                }
            }
            Ev::Unclog(i) => {
                self.events += 1;
                self.trace_event(now, 12, i, 0);
                if let Some(f) = self.clogged[i as usize].take() {
                    self.world.faults.end(f, now);
                }
            }
            Ev::HealAll => {
                self.events += 1;
                self.trace_event(now, 13, 0, 0);
                self.heal_all(now);
            }
            Ev::Op => {
                self.events += 1;
                self.issue_op();
                let w = &self.world.scenario.workload;
                let interval = (0.5 + unit(&mut self.work_rng)) / w.rate_per_s;
                let next = now + Duration::from_secs_f64(interval);
                if next <= secs(w.end_s) {
                    self.push(next, Ev::Op);
                }
            }
            Ev::MemCheck => {
                self.events += 1;
                let mut out = Vec::new();
                for c in &mut self.checkers {
                    c.on_tick(&self.world, &mut out);
                }
                self.violations.extend(out);
                let d = self.world.scenario.checks.memory_check_interval_s;
                self.push(now + Duration::from_secs_f64(d), Ev::MemCheck);
            }
        }
        true
    }

    fn end_partition(&mut self, p: usize, now: Instant) {
        if self.partitions[p].active {
            self.partitions[p].active = false;
            if let Some(f) = self.partitions[p].fault.take() {
                self.world.faults.end(f, now);
            }
        }
    }

    fn heal_all(&mut self, now: Instant) {
        for p in 0..self.partitions.len() {
            self.end_partition(p, now);
        }
        for i in 0..self.clogged.len() {
            if let Some(f) = self.clogged[i].take() {
                self.world.faults.end(f, now);
            }
        }
        self.impaired = false;
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
        let store = match std::mem::replace(&mut node.state, NodeState::NotJoined) {
            NodeState::Down(store) => store,
            NodeState::NotJoined => MemoryStore::new(node.peer),
            up @ NodeState::Up(_) => {
                node.state = up;
                return;
            }
        };
        let peer = node.peer;
        let seed = splitmix(self.world.seed ^ ((i as u64) << 24) ^ u64::from(node.incarnation));
        let now = self.local_now(i);
        let mut core = Node::new(self.config.clone(), peer, store, seed, now);
        core.set_local_addresses(vec![Self::address_of(i)]);
        self.world.nodes[i].state = NodeState::Up(Box::new(core));
        let boots = self.world.scenario.join.bootstrap_nodes;
        if i < boots {
            // The bootstrap nodes know each other from the start.
            for j in 0..boots {
                if j != i {
                    let p = self.world.nodes[j].peer;
                    if let Some(n) = self.node_mut(i) {
                        n.add_address(now, p, Self::address_of(j));
                    }
                }
            }
        } else {
            let j = (splitmix(seed) % boots as u64) as usize;
            let p = self.world.nodes[j].peer;
            if let Some(n) = self.node_mut(i) {
                n.add_address(now, p, Self::address_of(j));
            }
        }
        if let Some(n) = self.node_mut(i) {
            // Bootstrap is an internal query: its result is not a client operation.
            let _ = n.bootstrap(now);
        }
        self.drain(i);
    }

    fn crash(&mut self, i: usize) {
        let node = &mut self.world.nodes[i];
        let NodeState::Up(core) = std::mem::replace(&mut node.state, NodeState::NotJoined) else {
            return;
        };
        // Only what the store made durable survives.
        node.state = NodeState::Down(core.into_store());
        node.timer_at = None;
        let peer = node.peer;
        self.inbound.retain(|&(n, _), _| n as usize != i);
        self.crashed_fault[i] = Some(self.world.faults.start(self.world.now, Scope::Node(i)));
        let links = self.open_links_of(i);
        self.world.nodes[i].open_links = 0;
        for j in links {
            let j = j as usize;
            self.links.remove(&pair(i, j));
            self.world.nodes[j].open_links -= 1;
            let now = self.local_now(j);
            if let Some(n) = self.node_mut(j) {
                n.handle_connection_closed(now, peer);
            }
            self.drain(j);
        }
        // Pending client operations of the crashed node fail.
        let pending: Vec<(u32, QueryId)> = self
            .ops_by_query
            .keys()
            .filter(|(n, _)| *n as usize == i)
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for key in pending {
            if let Some(op) = self.ops_by_query.remove(&key) {
                self.complete_op(op, Outcome::Failed("node crashed".into()), 0, None);
            }
        }
    }

    fn pick_up_node(&mut self) -> Option<usize> {
        let n = self.world.nodes.len();
        for _ in 0..16 {
            let i = (self.work_rng.next_u64() % n as u64) as usize;
            if self.world.nodes[i].is_up() {
                return Some(i);
            }
        }
        None
    }

    fn issue_op(&mut self) {
        let w = self.world.scenario.workload.clone();
        let Some(i) = self.pick_up_node() else {
            return;
        };
        let total = w.put + w.get + w.provide + w.get_providers + w.lookup;
        if total <= 0.0 {
            return;
        }
        let mut x = unit(&mut self.work_rng) * total;
        let mut kind = OpKind::Lookup;
        for (k, weight) in [
            (OpKind::Put, w.put),
            (OpKind::Get, w.get),
            (OpKind::Provide, w.provide),
            (OpKind::GetProviders, w.get_providers),
            (OpKind::Lookup, w.lookup),
        ] {
            if x < weight {
                kind = k;
                break;
            }
            x -= weight;
        }
        let id = self.world.history.ops.len();
        let mut reads = None;
        let (key, value) = match kind {
            OpKind::Put => {
                let mut value = vec![0u8; w.value_bytes];
                for chunk in value.chunks_mut(8) {
                    let r = self.work_rng.next_u64().to_le_bytes();
                    chunk.copy_from_slice(&r[..chunk.len()]);
                }
                (format!("rec-{id}").into_bytes(), value)
            }
            OpKind::Provide => (format!("prov-{id}").into_bytes(), Vec::new()),
            OpKind::Get if !self.completed_puts.is_empty() => {
                let p = self.completed_puts
                    [(self.work_rng.next_u64() % self.completed_puts.len() as u64) as usize];
                reads = Some(p);
                (self.world.history.ops[p].key.clone(), Vec::new())
            }
            OpKind::GetProviders if !self.completed_provides.is_empty() => {
                let p = self.completed_provides
                    [(self.work_rng.next_u64() % self.completed_provides.len() as u64) as usize];
                reads = Some(p);
                (self.world.history.ops[p].key.clone(), Vec::new())
            }
            _ => {
                kind = OpKind::Lookup;
                let mut k = [0u8; 16];
                for b in k.chunks_mut(8) {
                    b.copy_from_slice(&self.work_rng.next_u64().to_le_bytes());
                }
                (k.to_vec(), Vec::new())
            }
        };
        let now = self.world.now;
        self.world.history.ops.push(OpRecord {
            id,
            node: i,
            kind,
            key: key.clone(),
            value: value.clone(),
            reads,
            invoked: now,
            completed: None,
            outcome: Outcome::Pending,
            hops: 0,
        });
        let local = self.local_now(i);
        let rkey = RecordKey::new(&key).expect("workload keys are short");
        let Some(node) = self.node_mut(i) else {
            return;
        };
        let started = match kind {
            OpKind::Put => node.put_record(local, Record::new(rkey, value), Quorum::One),
            OpKind::Get => node.get_record(local, rkey, Quorum::One),
            OpKind::Provide => node.start_providing(local, rkey),
            OpKind::GetProviders => node.get_providers(local, rkey),
            OpKind::Lookup => node.get_closest_peers(local, rkey),
        };
        match started {
            Ok(q) => {
                self.ops_by_query.insert((i as u32, q), id);
                self.trace_event(now, 14, i as u32, id as u64);
            }
            Err(e) => self.complete_op(id, Outcome::Failed(e.to_string()), 0, None),
        }
        self.drain(i);
    }

    fn query_finished(&mut self, i: usize, qid: QueryId, result: QueryResult, hops: u32) {
        let Some(op) = self.ops_by_query.remove(&(i as u32, qid)) else {
            return;
        };
        let expect_provider = self.world.history.ops[op]
            .reads
            .map(|p| self.world.nodes[self.world.history.ops[p].node].peer);
        let mut lookup_peers = None;
        let outcome = match result {
            QueryResult::PutRecord(Ok(_)) | QueryResult::StartProviding(Ok(_)) => Outcome::Ok,
            QueryResult::GetRecord(Ok(records)) => {
                let value = records
                    .first()
                    .map(|r| r.record.value.clone())
                    .unwrap_or_default();
                self.world.history.ops[op].value = value;
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
                OpKind::Put => self.completed_puts.push(op),
                OpKind::Provide => self.completed_provides.push(op),
                _ => {}
            }
        }
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
        let mut since = 0u64;
        while self.step() {
            since += 1;
            if since >= 200_000 {
                since = 0;
                progress(self.world.now);
            }
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

    fn report(self, wall: Duration) -> Report {
        let ops = &self.world.history.ops;
        let mut counts: [OpCounts; 5] = Default::default();
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
            .filter(|g| g.ok() && g.reads.is_some_and(|p| ops[p].value == g.value))
            .count();
        let wall_ms = wall.as_millis() as u64;
        let [puts, gets_c, provides, get_providers, lookups] = counts;
        Report {
            scenario: self.world.scenario.name.clone(),
            seed: self.world.seed,
            nodes: self.world.nodes.len(),
            virtual_ms: self.world.now.as_millis(),
            wall_ms,
            events: self.events,
            events_per_sec: self.events as f64 / wall.as_secs_f64().max(1e-9),
            ops: ops.len() as u64,
            ops_ok: ok,
            ops_failed: ops.len() as u64 - ok,
            puts,
            gets: gets_c,
            provides,
            get_providers,
            lookups,
            get_after_put_success: if gets.is_empty() {
                1.0
            } else {
                gets_ok as f64 / gets.len() as f64
            },
            lookup_hops_p50: percentile(&hops, 50.0),
            lookup_hops_p99: percentile(&hops, 99.0),
            latency_ms_p50: percentile(&lat, 50.0),
            latency_ms_p99: percentile(&lat, 99.0),
            messages: self.messages,
            trace_hash: format!("{:016x}", {
                let mut trace = self.trace;
                trace.update(&self.trace_buf);
                trace.digest()
            }),
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

/// Runs `scenario` with `seed` to the end.
pub fn run(scenario: &Scenario, seed: u64) -> Report {
    Simulation::new(scenario.clone(), seed).run(&mut |_| {})
}
