//! A minimal in-test network: many core nodes, one virtual clock, messages delivered with
//! seeded latency. Nodes are driven only through the core's public sans-IO API, exactly as
//! a real adapter drives them. The simulator crate builds the full-featured version of this.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use netabase_core::{
    Address, Config, Event, InboundId, Instant, MemoryStore, Node, Output, PeerId, QueryId,
    QueryResult, QueryStats, Request, RequestFailure, RequestId, Response,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

#[derive(Debug)]
enum Delivery {
    Request {
        from: PeerId,
        to: PeerId,
        id: RequestId,
        request: Request,
    },
    Response {
        to: PeerId,
        id: RequestId,
        response: Response,
    },
    Sent {
        to: PeerId,
        id: RequestId,
    },
    Failed {
        to: PeerId,
        id: RequestId,
    },
    Timer {
        node: PeerId,
    },
}

pub(crate) struct Net {
    pub(crate) now: Instant,
    pub(crate) nodes: BTreeMap<PeerId, Node<MemoryStore>>,
    /// Nodes that receive nothing and answer nothing (their requesters time out).
    pub(crate) down: BTreeSet<PeerId>,
    queue: BTreeMap<(Instant, u64), Delivery>,
    seq: u64,
    rng: ChaCha8Rng,
    base_latency: Duration,
    jitter_micros: u64,
    inbound: BTreeMap<(PeerId, InboundId), (PeerId, RequestId)>,
    next_inbound: u64,
    timers: BTreeMap<PeerId, Instant>,
    /// Pairs that have "connected" (lower id first): identify has run between them.
    links: BTreeSet<(PeerId, PeerId)>,
    pub(crate) events: Vec<(PeerId, Event)>,
    pub(crate) messages: u64,
}

pub(crate) fn addr_of(peer: &PeerId) -> Address {
    Address::from_bytes(peer.as_bytes()).unwrap()
}

impl Net {
    pub(crate) fn new(seed: u64) -> Self {
        Net {
            now: Instant::ZERO,
            nodes: BTreeMap::new(),
            down: BTreeSet::new(),
            queue: BTreeMap::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            base_latency: Duration::from_millis(5),
            jitter_micros: 10_000,
            inbound: BTreeMap::new(),
            next_inbound: 0,
            timers: BTreeMap::new(),
            links: BTreeSet::new(),
            events: Vec::new(),
            messages: 0,
        }
    }

    /// Adds `count` nodes with ids derived from `id_base`, returns their ids.
    pub(crate) fn add_nodes(&mut self, count: usize, id_base: u64, config: &Config) -> Vec<PeerId> {
        (0..count)
            .map(|i| {
                let peer = PeerId::from_seed(id_base + i as u64);
                let node = Node::new(
                    config.clone(),
                    peer,
                    MemoryStore::new(peer),
                    id_base ^ i as u64,
                    self.now,
                )
                .expect("a valid test configuration");
                self.nodes.insert(peer, node);
                self.reschedule(peer);
                peer
            })
            .collect()
    }

    pub(crate) fn node(&mut self, peer: &PeerId) -> &mut Node<MemoryStore> {
        self.nodes.get_mut(peer).expect("unknown node")
    }

    /// Tells `peer` about `other` (as `add_address`), and processes what that causes.
    pub(crate) fn introduce(&mut self, peer: PeerId, other: PeerId) {
        let now = self.now;
        self.node(&peer).add_address(now, other, addr_of(&other));
        self.drain(peer);
    }

    fn push(&mut self, at: Instant, d: Delivery) {
        self.seq += 1;
        self.queue.insert((at, self.seq), d);
    }

    fn latency(&mut self) -> Duration {
        self.base_latency + Duration::from_micros(self.rng.next_u64() % self.jitter_micros.max(1))
    }

    fn reschedule(&mut self, peer: PeerId) {
        let Some(node) = self.nodes.get(&peer) else {
            return;
        };
        if let Some(t) = node.poll_timeout() {
            let t = t.max(self.now);
            match self.timers.get(&peer) {
                Some(&s) if s <= t && s >= self.now => {}
                _ => {
                    self.timers.insert(peer, t);
                    self.push(t, Delivery::Timer { node: peer });
                }
            }
        }
    }

    /// Carries out everything `peer` wants to do.
    pub(crate) fn drain(&mut self, peer: PeerId) {
        while let Some(out) = self.nodes.get_mut(&peer).and_then(|n| n.poll_output()) {
            match out {
                Output::SendRequest {
                    id,
                    peer: to,
                    request,
                    ..
                } => {
                    self.messages += 1;
                    let one_way = !request.expects_response();
                    if self.nodes.contains_key(&to) && !self.down.contains(&to) {
                        let at = self.now + self.latency();
                        self.push(
                            at,
                            Delivery::Request {
                                from: peer,
                                to,
                                id,
                                request,
                            },
                        );
                        if one_way {
                            self.push(at, Delivery::Sent { to: peer, id });
                        }
                    }
                }
                Output::SendResponse { id, response, .. } => {
                    self.messages += 1;
                    if let Some((to, rid)) = self.inbound.remove(&(peer, id)) {
                        let at = self.now + self.latency();
                        self.push(
                            at,
                            Delivery::Response {
                                to,
                                id: rid,
                                response,
                            },
                        );
                    }
                }
                Output::RejectInbound { id, .. } => {
                    if let Some((to, rid)) = self.inbound.remove(&(peer, id)) {
                        let at = self.now + self.latency();
                        self.push(at, Delivery::Failed { to, id: rid });
                    }
                }
                Output::Event(e) => self.events.push((peer, e)),
            }
        }
        self.reschedule(peer);
    }

    /// Processes one delivery; returns false when nothing is queued.
    pub(crate) fn step(&mut self) -> bool {
        let Some(((at, _), d)) = self.queue.pop_first() else {
            return false;
        };
        self.now = self.now.max(at);
        let now = self.now;
        let target = match d {
            Delivery::Request {
                from,
                to,
                id,
                request,
            } => {
                if self.down.contains(&to) {
                    return true;
                }
                self.connect(from, to);
                let inbound = InboundId(self.next_inbound);
                self.next_inbound += 1;
                if request.expects_response() {
                    self.inbound.insert((to, inbound), (from, id));
                }
                self.node(&to).handle_request(now, from, inbound, request);
                to
            }
            Delivery::Response { to, id, response } => {
                if self.down.contains(&to) {
                    return true;
                }
                self.node(&to).handle_response(now, id, response);
                to
            }
            Delivery::Sent { to, id } => {
                self.node(&to).handle_request_sent(now, id);
                to
            }
            Delivery::Failed { to, id } => {
                self.node(&to)
                    .handle_request_failed(now, id, RequestFailure::Io);
                to
            }
            Delivery::Timer { node } => {
                if self.timers.get(&node) == Some(&at) {
                    self.timers.remove(&node);
                }
                self.node(&node).handle_timeout(now);
                node
            }
        };
        self.drain(target);
        true
    }

    /// The first request between two nodes opens a connection: each side learns whether
    /// the other serves the DHT, as libp2p's identify protocol tells a real node.
    fn connect(&mut self, a: PeerId, b: PeerId) {
        let pair = if a < b { (a, b) } else { (b, a) };
        if !self.links.insert(pair) {
            return;
        }
        let now = self.now;
        for (x, y) in [(a, b), (b, a)] {
            let serves = self.nodes[&y].mode() == netabase_core::Mode::Server;
            let node = self.node(&x);
            node.handle_connection_established(now, y);
            node.handle_peer_identified(now, y, &[addr_of(&y)], serves);
        }
        self.drain(a);
    }

    /// Runs until `node` reports the end of query `id`, or `limit` of virtual time passes.
    pub(crate) fn run_query(
        &mut self,
        node: PeerId,
        id: QueryId,
        limit: Duration,
    ) -> (QueryResult, QueryStats) {
        self.drain(node);
        let deadline = self.now + limit;
        let mut seen = 0;
        loop {
            for (p, e) in &self.events[seen..] {
                if let Event::QueryFinished {
                    id: qid,
                    result,
                    stats,
                } = e
                    && *p == node
                    && *qid == id
                {
                    return (result.clone(), stats.clone());
                }
            }
            seen = self.events.len();
            assert!(
                self.now <= deadline,
                "query {id:?} of {node:?} did not finish within {limit:?}"
            );
            assert!(self.step(), "queue ran dry before query {id:?} finished");
        }
    }

    /// Runs all deliveries due up to `now + d`.
    pub(crate) fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while let Some((&(at, _), _)) = self.queue.first_key_value() {
            if at > until {
                break;
            }
            self.step();
        }
        self.now = self.now.max(until);
    }

    /// Introduces every node to every other, in a seeded random order.
    pub(crate) fn full_mesh_tables(&mut self) {
        let peers: Vec<PeerId> = self.nodes.keys().copied().collect();
        for &p in &peers {
            let mut others: Vec<PeerId> = peers.iter().copied().filter(|o| *o != p).collect();
            // Fisher-Yates with the harness RNG, so bucket contents vary with the seed.
            for i in (1..others.len()).rev() {
                let j = (self.rng.next_u64() % (i as u64 + 1)) as usize;
                others.swap(i, j);
            }
            let now = self.now;
            let node = self.nodes.get_mut(&p).unwrap();
            for o in others {
                node.add_address(now, o, addr_of(&o));
            }
            self.drain(p);
        }
    }

    pub(crate) fn live_peers(&self) -> Vec<PeerId> {
        self.nodes
            .keys()
            .copied()
            .filter(|p| !self.down.contains(p))
            .collect()
    }
}
