//! The network model: link latencies, loss, duplication, reordering, partitions and
//! clogs, the messages nodes exchange, and the connections they keep.

use std::sync::PoisonError;
use std::time::Duration;

use netabase_core::{Address, Instant, PeerId, Request, RequestFailure, RequestId, Response};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;

use super::engine::Cx;
use super::node::NodeState;
use super::{Simulation, ms, splitmix, unit};
use crate::scenario::PartitionKind;

/// The simulated address of node `i`: its index.
pub(super) fn address_of(i: usize) -> Address {
    Address::from_bytes(&(i as u32).to_be_bytes()).expect("four bytes")
}

#[derive(Debug, Clone)]
pub(super) enum Msg {
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

pub(super) struct ActivePartition {
    pub(super) kind: PartitionKind,
    /// Group A membership (split, one-way) or the isolated node (isolate).
    pub(super) in_a: Vec<bool>,
    pub(super) active: bool,
    pub(super) fault: Option<usize>,
}

/// What every shard may read about any node during an epoch.
#[derive(Clone, Copy)]
pub(super) struct Status {
    pub(super) up: bool,
    pub(super) incarnation: u32,
}

/// The network as shards see it during an epoch: changed only between epochs.
pub(super) struct Net {
    pub(super) peers: Vec<PeerId>,
    pub(super) index: FxHashMap<PeerId, usize>,
    pub(super) status: Vec<Status>,
    /// Whether the nodes serve the DHT (all run the same configuration).
    pub(super) servers: bool,
    pub(super) link_seed: u64,
    pub(super) latency_min_ms: f64,
    pub(super) latency_max_ms: f64,
    pub(super) jitter_ms: f64,
    pub(super) loss: f64,
    pub(super) duplicate: f64,
    pub(super) reorder: f64,
    pub(super) reorder_delay_ms: f64,
    pub(super) max_connections: usize,
    /// Loss, duplication and reordering apply (until every fault heals).
    pub(super) impaired: bool,
    pub(super) partitions: Vec<ActivePartition>,
    pub(super) clogged: Vec<Option<usize>>,
    /// Whether shards write trace lines.
    pub(super) tracing: bool,
    /// A sync takes `[min, max]` ms; `None`: no disk model.
    pub(super) sync_latency_ms: Option<(f64, f64)>,
    /// Deliberate bug: outputs do not wait for the sync.
    pub(super) acks_before_sync: bool,
    /// Nodes from this index on are forgers.
    pub(super) first_forger: usize,
    /// Deliberate bug: the forgers' changes carry valid signatures of the records' origins,
    /// which is what nodes that check no signature would let through.
    pub(super) forgeries_signed: bool,
    /// Deliberate bug: every node corrupts every third record it serves.
    pub(super) corrupt_every_third: bool,
    /// The seed every node's identity derives from (node `i`'s keypair is
    /// `Keypair::from_seed(splitmix(id_seed ^ i))`).
    pub(super) id_seed: u64,
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
    pub(super) fn resolve(&self, peer: &PeerId, addrs: &[Address]) -> Option<usize> {
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
pub(super) struct Mail {
    pub(super) at: Instant,
    pub(super) order: u64,
    pub(super) to: u32,
    pub(super) to_inc: Option<u32>,
    pub(super) from: u32,
    pub(super) msg: Msg,
}

impl Cx<'_> {
    /// Sends a message over the simulated network: blocked, lost, delayed, duplicated.
    /// Returns `false` when a partition or clog blocks it (the sender's stream then stalls
    /// until it times out); a lost message still left the sender.
    pub(super) fn transmit(&mut self, from: u32, to: u32, to_inc: Option<u32>, msg: Msg) -> bool {
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
    pub(super) fn notify(&mut self, from: u32, to: u32, msg: Msg) {
        let inc = self.net.status[to as usize].incarnation;
        let at = self.now + self.net.link_latency(from, to);
        self.send(from, at, to, Some(inc), from, msg);
    }

    /// Like [`Cx::notify`], for a message that node `i` sends itself about peer `j`.
    pub(super) fn notify_self(&mut self, i: u32, j: u32, msg: Msg) {
        let inc = self.node(i as usize).incarnation;
        let at = self.now + self.net.link_latency(i, j);
        self.send(i, at, i, Some(inc), j, msg);
    }

    /// Node `x`'s side of its connection with `y` is (or stays) open. A node keeps at most
    /// `network.max_connections` connections; opening one more closes its oldest quarter
    /// at once (so closing costs little per connection opened), as libp2p's connection
    /// limits and idle timeouts do; the other sides learn of it one hop later.
    pub(super) fn connected(&mut self, x: usize, y: usize) {
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
}

impl Simulation {
    pub(super) fn end_partition(&mut self, p: usize, now: Instant) {
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

    pub(super) fn heal_all(&mut self, now: Instant) {
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
}
