//! Setting a run up from its seed: the nodes and their clocks, the network, and the
//! schedule of joins, partitions, clogs, crashes and checks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use netabase_core::{Instant, Key, Keypair, Mode};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::Xxh3;

use super::engine::Team;
use super::network::{ActivePartition, Net, Status};
use super::node::{Conns, NodeState, Nodes, SimNode};
use super::trace::TRACE_CHUNK;
use super::{Global, Simulation, World, ms, secs, splitmix, unit};
use crate::checkers;
use crate::disk::StoreBugs;
use crate::history::{FaultLog, History};
use crate::queue::EventQueue;
use crate::scenario::{PartitionKind, Scenario};

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
}

fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}
