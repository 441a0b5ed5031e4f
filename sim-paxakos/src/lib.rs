//! The paxakos engine under the deterministic simulator.
//!
//! Each run drives a cluster of [`netabase_paxakos::engine`] nodes (heartbeats, autofill,
//! catch-up and master leases on) on one thread: a single-threaded executor the loop
//! polls runs every node's engine task and paxakos's state keepers, a virtual clock (the
//! workspace's stand-ins for `instant` and `futures-timer`) gives every timer its time, and
//! every message goes through the simulated network. The faults (crashes and restarts
//! through paxakos's recovery path, partitions, process pauses, per-message loss) are
//! scheduled from the seed by virtual time, and a message's loss is drawn from (seed,
//! link, message number), whatever the engine does. Each node's clock runs off the global
//! one by up to half the drift bound the leases assume, drawn from the seed. A run's trace hash folds every delivery and every applied
//! entry: the same seed gives the same hash.
//!
//! Checkers: `agreement` (every node applies the same entry in each round),
//! `acked-write-lost` (every acknowledged write is the entry of the round it was
//! acknowledged at), `linearizability` (writes, linearizable and lease reads, with
//! netabase-sim's checker), `liveness` (after the faults heal, a write through every node
//! is applied within the bound).

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::future::{BoxFuture, FutureExt};
use futures::task::{FutureObj, Spawn, SpawnError};
use netabase_core::consensus::{EntryId, KvCommand, KvResponse, LeaseConfig, ReadLevel};
use netabase_paxakos::Transport;
use netabase_paxakos::engine::{self, EngineConfig, EngineError, Input, Observed, Setup, Start};
use netabase_sim::linearizability::{Budget, KvInput, KvModel, KvOutput, Operation, Verdict};
use xxhash_rust::xxh3::xxh3_64;

/// A run's settings.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Cluster members.
    pub members: usize,
    /// Seconds of faults and workload, then the heal and the liveness check.
    pub duration_s: u64,
    /// Client operations per second (over all nodes).
    pub rate_per_s: u64,
    /// Share of messages lost while faults run.
    pub loss: f64,
    /// Crashes (each followed by a restart through the recovery path) per minute.
    pub crashes_per_min: f64,
    /// Partitions (one node cut off) per minute.
    pub partitions_per_min: f64,
    /// Process pauses (a node runs nothing, its clock runs on) per minute.
    pub pauses_per_min: f64,
    /// The bound on the rate difference between two nodes' clocks, in parts per million
    /// (each node's clock runs off the global one by up to half of it, drawn from the
    /// seed); the leases assume the same bound.
    pub drift_ppm: u32,
    /// Seconds after the heal within which a write through every node must apply.
    pub liveness_bound_s: u64,
    /// Master leases on.
    pub leases: bool,
    /// A bug planted in the simulator's own recording, to show a checker catches it.
    pub inject: Option<Bug>,
}

/// Bugs the simulator can plant in what it records, each caught by one checker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Acknowledged writes are recorded one round later than they were applied
    /// (`acked-write-lost`).
    AckedLate,
    /// Node 1 records a different entry for the rounds it applies after round 20
    /// (`agreement`).
    ForgedApply,
    /// Lease reads are served from a node's state without checking its lease, and local
    /// reads count as linearizable (`linearizability`).
    StaleReads,
}

impl Bug {
    /// Every plantable bug.
    pub const ALL: [Bug; 3] = [Bug::AckedLate, Bug::ForgedApply, Bug::StaleReads];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Bug::AckedLate => "acked-late",
            Bug::ForgedApply => "forged-apply",
            Bug::StaleReads => "stale-reads",
        }
    }

    /// The bug named `name`.
    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            members: 3,
            duration_s: 20,
            rate_per_s: 20,
            loss: 0.02,
            crashes_per_min: 6.0,
            partitions_per_min: 6.0,
            pauses_per_min: 4.0,
            drift_ppm: LeaseConfig::default().drift_ppm,
            liveness_bound_s: 30,
            leases: true,
            inject: None,
        }
    }
}

/// What a run found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Each violated property with what was seen.
    pub violations: Vec<(&'static str, String)>,
    /// Folded over every delivery and applied entry.
    pub trace_hash: u64,
    /// Writes acknowledged.
    pub acked_writes: u64,
    /// Reads answered.
    pub reads: u64,
    /// Crashes (and restarts).
    pub crashes: u64,
    /// Partitions.
    pub partitions: u64,
    /// Pauses.
    pub pauses: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages lost.
    pub lost: u64,
    /// The highest round applied anywhere.
    pub rounds: u64,
}

impl Report {
    /// One paragraph for people.
    pub fn human(&self) -> String {
        let mut s = format!(
            "seed {}: {} rounds, {} writes acknowledged, {} reads, {} crashes, {} partitions, {} pauses, {} delivered, {} lost; trace {:016x}",
            self.seed,
            self.rounds,
            self.acked_writes,
            self.reads,
            self.crashes,
            self.partitions,
            self.pauses,
            self.delivered,
            self.lost,
            self.trace_hash
        );
        for (checker, what) in &self.violations {
            s.push_str(&format!("\n  VIOLATION {checker}: {what}"));
        }
        if !self.violations.is_empty() {
            s.push_str(&format!(
                "\n  replay: cd sim-paxakos && cargo run --release -- --seed {}",
                self.seed
            ));
        }
        s
    }
}

// ---------------------------------------------------------------------------------------
// The executor.

type Task = Pin<Box<dyn Future<Output = ()>>>;

/// Wakes a task by queueing its id.
struct TaskWaker {
    id: u64,
    ready: Arc<Mutex<VecDeque<u64>>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.ready.lock().expect("ready queue").push_back(self.id);
    }
}

/// Tasks handed to a node's spawner (paxakos's state keeper), waiting to be adopted.
type Spawned = Arc<Mutex<Vec<(usize, FutureObj<'static, ()>)>>>;

/// The spawner paxakos's state keeper of node `node` is spawned with.
#[derive(Clone)]
struct NodeSpawner {
    node: usize,
    spawned: Spawned,
}

impl Spawn for NodeSpawner {
    fn spawn_obj(&self, future: FutureObj<'static, ()>) -> Result<(), SpawnError> {
        self.spawned
            .lock()
            .expect("spawned")
            .push((self.node, future));
        Ok(())
    }
}

/// Tasks of every node, polled in the order they were woken.
struct Executor {
    tasks: BTreeMap<u64, (usize, Task)>,
    ready: Arc<Mutex<VecDeque<u64>>>,
    spawned: Spawned,
    next: u64,
}

impl Executor {
    fn new() -> Self {
        Executor {
            tasks: BTreeMap::new(),
            ready: Arc::new(Mutex::new(VecDeque::new())),
            spawned: Arc::new(Mutex::new(Vec::new())),
            next: 0,
        }
    }

    fn spawn(&mut self, node: usize, task: Task) {
        let id = self.next;
        self.next += 1;
        self.tasks.insert(id, (node, task));
        self.ready.lock().expect("ready").push_back(id);
    }

    fn spawner(&self, node: usize) -> NodeSpawner {
        NodeSpawner {
            node,
            spawned: self.spawned.clone(),
        }
    }

    /// Drops every task of `node` (a crash).
    fn kill(&mut self, node: usize) {
        self.tasks.retain(|_, (n, _)| *n != node);
    }

    /// Polls woken tasks until none is.
    /// Polls woken tasks until none is, except those of `paused` nodes (kept woken for
    /// when they continue).
    fn run_until_stalled(&mut self, paused: &BTreeSet<usize>) -> u64 {
        let mut polls = 0;
        let mut held = Vec::new();
        loop {
            let adopted: Vec<_> = std::mem::take(&mut *self.spawned.lock().expect("spawned"));
            for (node, future) in adopted {
                self.spawn(node, Box::pin(future));
            }
            let Some(id) = self.ready.lock().expect("ready").pop_front() else {
                self.ready.lock().expect("ready").extend(held);
                return polls;
            };
            let Some((node, task)) = self.tasks.get_mut(&id) else {
                continue;
            };
            if paused.contains(node) {
                held.push(id);
                continue;
            }
            let node = (*node != usize::MAX).then_some(*node);
            let waker = Waker::from(Arc::new(TaskWaker {
                id,
                ready: self.ready.clone(),
            }));
            polls += 1;
            let done = instant::sim::as_node(node, || {
                task.as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_ready()
            });
            if done {
                self.tasks.remove(&id);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The network.

/// How long a request waits for its answer before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);

enum Carried {
    Request {
        bytes: Vec<u8>,
        answer: oneshot::Sender<Vec<u8>>,
    },
    Response {
        bytes: Vec<u8>,
        answer: oneshot::Sender<Vec<u8>>,
    },
}

struct Message {
    from: usize,
    to: usize,
    carried: Carried,
}

/// Messages in flight, cuts and loss.
struct Net {
    seed: u64,
    now: u64,
    queue: BTreeMap<(u64, u64), Message>,
    seq: u64,
    /// Messages sent per link, for the loss draw.
    sent: BTreeMap<(usize, usize), u64>,
    loss: f64,
    /// Nodes cut off from every other.
    cut: BTreeSet<usize>,
    lost: u64,
}

impl Net {
    /// Whether message `n` of link `from → to` is lost: drawn from (seed, link, n) alone.
    fn lost(&mut self, from: usize, to: usize) -> bool {
        let n = self.sent.entry((from, to)).or_default();
        *n += 1;
        if from == to {
            return false;
        }
        if self.cut.contains(&from) || self.cut.contains(&to) {
            return true;
        }
        let draw = xxh3_64(
            &[
                self.seed.to_le_bytes(),
                (from as u64).to_le_bytes(),
                (to as u64).to_le_bytes(),
                n.to_le_bytes(),
            ]
            .concat(),
        );
        (draw as f64 / u64::MAX as f64) < self.loss
    }

    fn send(&mut self, from: usize, to: usize, carried: Carried) {
        if self.lost(from, to) {
            self.lost += 1;
            return;
        }
        // 0.2 to 1.2 ms one way, from the same draw stream.
        let jitter = xxh3_64(&[self.seed.to_le_bytes(), self.seq.to_le_bytes()].concat()) % 1_000;
        let at = self.now + 200 + jitter;
        self.seq += 1;
        self.queue
            .insert((at, self.seq), Message { from, to, carried });
    }
}

/// A node's transport: its requests go into the simulated network.
#[derive(Clone)]
struct SimTransport {
    me: usize,
    peers: Arc<Vec<libp2p_identity::PeerId>>,
    net: Arc<Mutex<Net>>,
}

impl Transport for SimTransport {
    type Error = &'static str;

    fn request(
        &self,
        to: libp2p_identity::PeerId,
        request: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, &'static str>> {
        let Some(to) = self.peers.iter().position(|p| *p == to) else {
            return futures::future::ready(Err("unknown peer")).boxed();
        };
        let (answer, answered) = oneshot::channel();
        self.net.lock().expect("net").send(
            self.me,
            to,
            Carried::Request {
                bytes: request,
                answer,
            },
        );
        async move {
            futures::select_biased! {
                a = answered.fuse() => a.map_err(|_| "dropped"),
                () = futures_timer::Delay::new(REQUEST_TIMEOUT).fuse() => Err("timed out"),
            }
        }
        .boxed()
    }
}

// ---------------------------------------------------------------------------------------
// The simulation.

/// An operation of the history.
struct OpRec {
    client: u64,
    input: KvInput<u8, u64>,
    call: u64,
    ret: Option<u64>,
    output: Option<KvOutput<u64>>,
    /// A write whose outcome is unknown (it may or may not have taken effect).
    ambiguous: bool,
    /// Refused before it was proposed, or a read that failed: no effect.
    failed: bool,
    /// The write's id and the round it was acknowledged at.
    acked: Option<(EntryId, u64)>,
}

struct Shared {
    history: Vec<OpRec>,
    /// The entry each node applied in each round.
    applied: Vec<BTreeMap<u64, EntryId>>,
    /// When a put of each value was first applied anywhere (values are unique).
    put_applied: BTreeMap<u64, u64>,
    hash: u64,
}

impl Shared {
    /// Records an operation called at `call`; returns its index. Until it is answered a
    /// write's outcome is unknown and a read has failed (no effect).
    fn record(&mut self, client: u64, input: KvInput<u8, u64>, call: u64) -> usize {
        let write = !matches!(input, KvInput::Get { .. });
        self.history.push(OpRec {
            client,
            input,
            call,
            ret: None,
            output: None,
            ambiguous: write,
            failed: !write,
            acked: None,
        });
        self.history.len() - 1
    }
}

fn fold(hash: &mut u64, parts: &[u64]) {
    let mut bytes = hash.to_le_bytes().to_vec();
    for p in parts {
        bytes.extend_from_slice(&p.to_le_bytes());
    }
    *hash = xxh3_64(&bytes);
}

struct Node {
    inputs: Option<mpsc::Sender<Input>>,
    incarnation: u64,
    /// When it last restarted after a crash.
    restarted_at: Option<u64>,
}

/// Seconds a restarted node is given to recover before another node may crash.
const RECOVERY_S: u64 = 10;

/// A node's liveness write.
#[derive(Default)]
struct Live {
    done: bool,
    pending: Option<oneshot::Receiver<Result<engine::Written, EngineError>>>,
    retry_at: u64,
}

/// One run of a cluster.
pub struct Simulation {
    spec: Spec,
    /// Prints faults as they happen and every node's status at the end.
    pub verbose: bool,
    exec: Executor,
    net: Arc<Mutex<Net>>,
    peers: Arc<Vec<libp2p_identity::PeerId>>,
    nodes: Vec<Node>,
    shared: Rc<RefCell<Shared>>,
    /// Scheduled faults and client operations, by virtual time (µs).
    events: BTreeMap<(u64, u64), Ev>,
    event_seq: u64,
    /// Nodes paused, and the messages that arrived for them meanwhile.
    paused: BTreeSet<usize>,
    held: Vec<Message>,
    rng: u64,
    report: Report,
}

#[derive(Debug)]
enum Ev {
    Crash(usize),
    Restart(usize),
    Cut(usize),
    Mend(usize),
    Pause(usize),
    Resume(usize),
    Client,
    Heal,
    Liveness,
}

fn engine_config(leases: bool) -> EngineConfig {
    EngineConfig {
        lease: leases.then(LeaseConfig::default),
        ..EngineConfig::default()
    }
}

impl Simulation {
    /// A run of `spec` with `seed`.
    pub fn new(spec: Spec, seed: u64) -> Self {
        // Each node's clock off the global one by up to half the drift bound, from the
        // seed: any two differ by at most the bound.
        let half = i64::from(spec.drift_ppm / 2);
        let rates = (0..spec.members)
            .map(|i| {
                let draw = xxh3_64(&[seed.to_le_bytes(), (i as u64 + 77).to_le_bytes()].concat());
                (draw % (2 * half as u64 + 1)) as i64 - half
            })
            .collect();
        instant::sim::reset(rates);
        let peers: Vec<_> = (0..spec.members)
            .map(|i| {
                let mut secret = [0u8; 32];
                secret[..8].copy_from_slice(&seed.to_le_bytes());
                secret[8] = i as u8 + 1;
                let key = libp2p_identity::Keypair::ed25519_from_bytes(secret).expect("a key");
                key.public().to_peer_id()
            })
            .collect();
        let net = Net {
            seed,
            now: 0,
            queue: BTreeMap::new(),
            seq: 0,
            sent: BTreeMap::new(),
            loss: spec.loss,
            cut: BTreeSet::new(),
            lost: 0,
        };
        let members = spec.members;
        Simulation {
            spec,
            verbose: false,
            exec: Executor::new(),
            net: Arc::new(Mutex::new(net)),
            peers: Arc::new(peers),
            nodes: (0..members)
                .map(|_| Node {
                    inputs: None,
                    incarnation: 0,
                    restarted_at: None,
                })
                .collect(),
            shared: Rc::new(RefCell::new(Shared {
                history: Vec::new(),
                applied: vec![BTreeMap::new(); members],
                put_applied: BTreeMap::new(),
                hash: seed,
            })),
            events: BTreeMap::new(),
            event_seq: 0,
            paused: BTreeSet::new(),
            held: Vec::new(),
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            report: Report {
                seed,
                ..Report::default()
            },
        }
    }

    fn random(&mut self) -> u64 {
        self.rng = xxh3_64(&self.rng.to_le_bytes());
        self.rng
    }

    fn uniform(&mut self, below: u64) -> u64 {
        self.random() % below.max(1)
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.event_seq += 1;
        self.events.insert((at, self.event_seq), ev);
    }

    fn now() -> u64 {
        instant::sim::elapsed_micros()
    }

    fn start(&mut self, i: usize, start: Start) {
        let (inputs, receiver) = mpsc::channel(256);
        let shared = self.shared.clone();
        let forge = self.spec.inject == Some(Bug::ForgedApply) && i == 1;
        let applied = Arc::new(Mutex::new(Vec::<(u64, EntryId, Option<u64>)>::new()));
        let observed = applied.clone();
        let incarnation = self.nodes[i].incarnation;
        self.nodes[i].incarnation += 1;
        let setup = Setup {
            me: self.peers[i],
            proposer: netabase_core::PeerId::from_seed(i as u64 + 1),
            first_seq: 1 + incarnation * 1_000_000_000,
            members: self.peers.to_vec(),
            transport: SimTransport {
                me: i,
                peers: self.peers.clone(),
                net: self.net.clone(),
            },
            config: engine_config(self.spec.leases),
            start,
            observer: Some(Box::new(move |seen| {
                let Observed::Applied { round, entry } = seen else {
                    return;
                };
                let put = match KvCommand::decode(&entry.0.command) {
                    Some(KvCommand::Put { value, .. }) => {
                        value.try_into().ok().map(u64::from_be_bytes)
                    }
                    _ => None,
                };
                observed
                    .lock()
                    .expect("observed")
                    .push((round, entry.0.id, put));
            })),
        };
        let spawner = self.exec.spawner(i);
        let run = engine::run_with(setup, receiver, spawner);
        // The engine's task, and one that moves what it applied into the shared record
        // in the order it was applied.
        self.exec.spawn(
            i,
            Box::pin(async move {
                let _ = run.await;
            }),
        );
        let drain = async move {
            loop {
                let batch: Vec<_> = std::mem::take(&mut *applied.lock().expect("applied"));
                if !batch.is_empty() {
                    let mut s = shared.borrow_mut();
                    let now = Self::now();
                    for (round, mut id, put) in batch {
                        if let Some(v) = put {
                            s.put_applied.entry(v).or_insert(now);
                        }
                        if forge && round > 20 {
                            id.seq ^= 1;
                        }
                        let Shared { hash, applied, .. } = &mut *s;
                        fold(hash, &[2, i as u64, round, id.seq]);
                        applied[i].insert(round, id);
                    }
                }
                futures_timer::Delay::new(Duration::from_millis(5)).await;
            }
        };
        self.exec.spawn(i, Box::pin(drain));
        self.nodes[i].inputs = Some(inputs);
    }

    fn crash(&mut self, i: usize) {
        self.exec.kill(i);
        self.nodes[i].inputs = None;
        self.report.crashes += 1;
    }

    /// A client operation at a random node.
    fn client(&mut self) {
        let i = self.uniform(self.spec.members as u64) as usize;
        let key = self.uniform(KEYS) as u8;
        let kind = self.uniform(10);
        let value = self.random() >> 1;
        let call = Self::now();
        let client = self.event_seq;
        let Some(inputs) = self.nodes[i].inputs.as_mut() else {
            return;
        };
        let shared = self.shared.clone();
        let acked_late = self.spec.inject == Some(Bug::AckedLate);
        if kind < 5 {
            let (reply, answered) = oneshot::channel();
            let command = KvCommand::Put {
                key: vec![key],
                value: value.to_be_bytes().to_vec(),
            };
            if inputs
                .try_send(Input::Write {
                    command: command.encode(),
                    reply,
                })
                .is_err()
            {
                return;
            }
            let index = shared
                .borrow_mut()
                .record(client, KvInput::Put { key, value }, call);
            self.exec.spawn(
                usize::MAX,
                Box::pin(async move {
                    let answer = answered.await;
                    let mut s = shared.borrow_mut();
                    let op = &mut s.history[index];
                    match answer {
                        Ok(Ok(w)) => {
                            op.ret = Some(Self::now());
                            op.ambiguous = false;
                            op.output = match KvResponse::decode(&w.response) {
                                Some(KvResponse::Done) => Some(KvOutput::Ok),
                                _ => None,
                            };
                            op.acked = Some((w.id, w.position.slot + u64::from(acked_late)));
                        }
                        Ok(Err(EngineError::Recovering | EngineError::Busy)) => {
                            op.ambiguous = false;
                            op.failed = true;
                        }
                        // Indeterminate, stopped, or its node crashed: unknown.
                        _ => {}
                    }
                }),
            );
        } else {
            let level = if self.spec.inject == Some(Bug::StaleReads) {
                ReadLevel::Local
            } else if kind < 8 {
                ReadLevel::Linearizable
            } else {
                ReadLevel::Lease
            };
            let (reply, answered) = oneshot::channel();
            if inputs
                .try_send(Input::Read {
                    key: vec![key],
                    level,
                    reply,
                })
                .is_err()
            {
                return;
            }
            let index = shared
                .borrow_mut()
                .record(client, KvInput::Get { key }, call);
            self.exec.spawn(
                usize::MAX,
                Box::pin(async move {
                    if let Ok(Ok(found)) = answered.await {
                        let mut s = shared.borrow_mut();
                        let op = &mut s.history[index];
                        op.ret = Some(Self::now());
                        op.failed = false;
                        op.output =
                            Some(KvOutput::Value(found.map(|(v, _)| {
                                u64::from_be_bytes(v.try_into().unwrap_or([0; 8]))
                            })));
                    }
                }),
            );
        }
    }

    fn deliver(&mut self, message: Message) {
        if self.paused.contains(&message.to) {
            self.held.push(message);
            return;
        }
        self.report.delivered += 1;
        fold(
            &mut self.shared.borrow_mut().hash,
            &[1, message.from as u64, message.to as u64, Self::now()],
        );
        match message.carried {
            Carried::Response { bytes, answer } => {
                let _ = answer.send(bytes);
            }
            Carried::Request { bytes, answer } => {
                let to = message.to;
                let from = message.from;
                let Some(inputs) = self.nodes[to].inputs.as_mut() else {
                    return;
                };
                let (reply, served) = oneshot::channel();
                if inputs
                    .try_send(Input::Serve {
                        request: bytes,
                        reply,
                    })
                    .is_err()
                {
                    return;
                }
                let net = self.net.clone();
                self.exec.spawn(
                    to,
                    Box::pin(async move {
                        if let Ok(Ok(bytes)) = served.await {
                            net.lock().expect("net").send(
                                to,
                                from,
                                Carried::Response { bytes, answer },
                            );
                        }
                    }),
                );
            }
        }
    }

    /// Node `i` continues: the messages that arrived while it was paused reach it now.
    fn resume(&mut self, i: usize) {
        if !self.paused.remove(&i) {
            return;
        }
        let (now_for, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|m| m.to == i);
        self.held = later;
        for m in now_for {
            self.deliver(m);
        }
    }

    fn on_event(&mut self, ev: Ev) {
        let now = Self::now();
        if self.verbose && !matches!(ev, Ev::Client) {
            println!("{:>10.3} s  {ev:?}", now as f64 / 1e6);
        }
        match ev {
            Ev::Client => {
                self.client();
                if now < self.spec.duration_s * 1_000_000 {
                    let gap = 1_000_000 / self.spec.rate_per_s.max(1);
                    let next = now + gap / 2 + self.uniform(gap);
                    self.schedule(next, Ev::Client);
                }
            }
            Ev::Crash(i) => {
                // One node down or recovering at a time: a recovering node takes part
                // again only once active nodes (a quorum without it) settle the rounds it
                // may have voted in, so two at once in three is beyond paxakos's crash
                // model.
                let others_settled = self.nodes.iter().enumerate().all(|(j, n)| {
                    j == i
                        || (n.inputs.is_some()
                            && n.restarted_at
                                .is_none_or(|t| now >= t + RECOVERY_S * 1_000_000))
                });
                if self.nodes[i].inputs.is_some() && others_settled {
                    self.crash(i);
                    let back = now + 500_000 + self.uniform(3_000_000);
                    self.schedule(back, Ev::Restart(i));
                }
            }
            Ev::Restart(i) => {
                if self.nodes[i].inputs.is_none() {
                    self.start(i, Start::Recover);
                    self.nodes[i].restarted_at = Some(now);
                }
            }
            Ev::Cut(i) => {
                self.report.partitions += 1;
                self.net.lock().expect("net").cut.insert(i);
                let back = now + 500_000 + self.uniform(4_000_000);
                self.schedule(back, Ev::Mend(i));
            }
            Ev::Mend(i) => {
                self.net.lock().expect("net").cut.remove(&i);
            }
            Ev::Pause(i) => {
                if self.paused.insert(i) {
                    self.report.pauses += 1;
                    // Longer than the lease and the election timeout together.
                    let back = now + 1_500_000 + self.uniform(2_000_000);
                    self.schedule(back, Ev::Resume(i));
                }
            }
            Ev::Resume(i) => self.resume(i),
            Ev::Heal => {
                {
                    let mut net = self.net.lock().expect("net");
                    net.cut.clear();
                    net.loss = 0.0;
                }
                for i in std::mem::take(&mut self.paused) {
                    self.paused.insert(i);
                    self.resume(i);
                }
            }
            Ev::Liveness => {
                for i in 0..self.spec.members {
                    if self.nodes[i].inputs.is_none() {
                        self.start(i, Start::Recover);
                        self.nodes[i].restarted_at = Some(now);
                    }
                }
            }
        }
    }

    /// Runs to the end and checks.
    pub fn run(mut self) -> Report {
        let end_faults = self.spec.duration_s * 1_000_000;
        for i in 0..self.spec.members {
            self.start(i, Start::Initial);
        }
        self.schedule(0, Ev::Client);
        // Faults, one at a time in each stream, at random times while they run.
        let crash_gap = (60_000_000.0 / self.spec.crashes_per_min.max(1e-9)) as u64;
        let cut_gap = (60_000_000.0 / self.spec.partitions_per_min.max(1e-9)) as u64;
        let mut t = 1_000_000;
        while self.spec.crashes_per_min > 0.0 {
            t += crash_gap / 2 + self.uniform(crash_gap);
            let i = self.uniform(self.spec.members as u64) as usize;
            if t >= end_faults {
                break;
            }
            self.schedule(t, Ev::Crash(i));
        }
        let mut t = 1_000_000;
        while self.spec.partitions_per_min > 0.0 {
            t += cut_gap / 2 + self.uniform(cut_gap);
            let i = self.uniform(self.spec.members as u64) as usize;
            if t >= end_faults {
                break;
            }
            self.schedule(t, Ev::Cut(i));
        }
        let pause_gap = (60_000_000.0 / self.spec.pauses_per_min.max(1e-9)) as u64;
        let mut t = 1_000_000;
        while self.spec.pauses_per_min > 0.0 {
            t += pause_gap / 2 + self.uniform(pause_gap);
            let i = self.uniform(self.spec.members as u64) as usize;
            if t >= end_faults {
                break;
            }
            self.schedule(t, Ev::Pause(i));
        }
        self.schedule(end_faults, Ev::Heal);
        // Every node back up, then a write through each.
        let live_at = end_faults + 5_000_000;
        self.schedule(end_faults + 1, Ev::Liveness);
        let deadline = live_at + self.spec.liveness_bound_s * 1_000_000;
        let mut liveness: Vec<Live> = (0..self.spec.members).map(|_| Live::default()).collect();
        let mut liveness_started = false;
        loop {
            self.exec.run_until_stalled(&self.paused);
            let now = Self::now();
            if now >= live_at {
                liveness_started = true;
                self.liveness_step(&mut liveness, now);
                if liveness.iter().all(|l| l.done) {
                    break;
                }
            }
            let next_net = self
                .net
                .lock()
                .expect("net")
                .queue
                .keys()
                .next()
                .map(|k| k.0);
            let next_event = self.events.keys().next().map(|k| k.0);
            let next_timer = instant::sim::next_deadline_micros();
            let mut next = [next_net, next_event, next_timer]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(deadline);
            if !liveness_started {
                next = next.min(live_at);
            } else if let Some(retry) = liveness
                .iter()
                .filter(|l| !l.done)
                .map(|l| l.retry_at)
                .min()
            {
                next = next.min(retry.max(now + 1));
            }
            if next > deadline {
                break;
            }
            instant::sim::advance_to(next);
            self.net.lock().expect("net").now = next;
            loop {
                let due = {
                    let mut net = self.net.lock().expect("net");
                    match net.queue.first_key_value() {
                        Some((k, _)) if k.0 <= next => net.queue.pop_first().map(|(_, m)| m),
                        _ => None,
                    }
                };
                let Some(m) = due else { break };
                self.deliver(m);
            }
            while let Some(entry) = self.events.first_entry() {
                if entry.key().0 > next {
                    break;
                }
                let ev = entry.remove();
                self.on_event(ev);
            }
        }
        if self.verbose {
            self.print_statuses();
        }
        self.check(liveness)
    }

    fn print_statuses(&mut self) {
        let mut waiting = Vec::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            let (reply, answered) = oneshot::channel();
            if let Some(inputs) = n.inputs.as_mut()
                && inputs.try_send(Input::Status { reply }).is_ok()
            {
                waiting.push((i, answered));
            }
        }
        self.exec.run_until_stalled(&self.paused);
        for (i, mut w) in waiting {
            println!("node {i}: {:?}", w.try_recv());
        }
    }

    /// Sends each node that has not applied its liveness write yet a write, again after
    /// every failure (a recovering node refuses writes until it has a state).
    fn liveness_step(&mut self, live: &mut [Live], now: u64) {
        for (i, l) in live.iter_mut().enumerate() {
            if l.done {
                continue;
            }
            if let Some(r) = &mut l.pending {
                match r.try_recv() {
                    Ok(None) => continue,
                    Ok(Some(Ok(_))) => {
                        l.done = true;
                        continue;
                    }
                    _ => l.pending = None,
                }
            }
            if now < l.retry_at {
                continue;
            }
            l.retry_at = now + 200_000;
            let (reply, answered) = oneshot::channel();
            if let Some(inputs) = self.nodes[i].inputs.as_mut()
                && inputs
                    .try_send(Input::Write {
                        command: KvCommand::Put {
                            key: b"live".to_vec(),
                            value: vec![i as u8],
                        }
                        .encode(),
                        reply,
                    })
                    .is_ok()
            {
                l.pending = Some(answered);
            }
        }
    }

    fn check(mut self, liveness: Vec<Live>) -> Report {
        let mut report = std::mem::take(&mut self.report);
        {
            let net = self.net.lock().expect("net");
            report.lost = net.lost;
        }
        let s = self.shared.borrow();
        report.trace_hash = s.hash;
        // Agreement.
        let mut chosen: BTreeMap<u64, EntryId> = BTreeMap::new();
        for (i, applied) in s.applied.iter().enumerate() {
            for (round, id) in applied {
                match chosen.get(round) {
                    Some(other) if other != id => push_violation(
                        &mut report,
                        (
                            "agreement",
                            format!("node {i} applied {id:?} in round {round}, another {other:?}"),
                        ),
                    ),
                    _ => {
                        chosen.insert(*round, *id);
                    }
                }
            }
        }
        report.rounds = chosen.keys().last().copied().unwrap_or(0);
        // Acknowledged writes.
        for op in &s.history {
            if let Some((id, round)) = op.acked {
                report.acked_writes += 1;
                if chosen.get(&round).is_some_and(|c| *c != id) {
                    push_violation(
                        &mut report,
                        (
                            "acked-write-lost",
                            format!("{id:?} acknowledged at round {round}, which chose another"),
                        ),
                    );
                }
            }
            if matches!(op.input, KvInput::Get { .. }) && !op.failed {
                report.reads += 1;
            }
        }
        // Linearizability.
        let history: Vec<Operation<KvInput<u8, u64>, KvOutput<u64>>> = s
            .history
            .iter()
            .filter(|o| !o.failed)
            .filter_map(|o| match (o.ret, &o.output) {
                (Some(ret), Some(out)) => Some(Operation::completed(
                    o.client,
                    o.input.clone(),
                    o.call,
                    ret,
                    out.clone(),
                )),
                // A put whose answer never came but whose value some node applied took
                // effect by then (values are unique).
                _ if o.ambiguous => match &o.input {
                    KvInput::Put { value, .. } => match s.put_applied.get(value) {
                        Some(at) => Some(Operation::completed(
                            o.client,
                            o.input.clone(),
                            o.call,
                            (*at).max(o.call),
                            KvOutput::Ok,
                        )),
                        None => Some(Operation::unknown(o.client, o.input.clone(), o.call)),
                    },
                    _ => Some(Operation::unknown(o.client, o.input.clone(), o.call)),
                },
                _ => None,
            })
            .collect();
        match netabase_sim::linearizability::check(
            &KvModel::<u8, u64>::new(),
            &history,
            Budget::steps(LIN_BUDGET_STEPS),
        ) {
            Verdict::Linearizable => {}
            other => {
                let mut text = other.to_string();
                text.truncate(2_000);
                push_violation(&mut report, ("linearizability", text));
            }
        }
        // Liveness.
        let missing: Vec<usize> = liveness
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.done)
            .map(|(i, _)| i)
            .collect();
        if !missing.is_empty() {
            push_violation(
                &mut report,
                (
                    "liveness",
                    format!(
                        "writes through nodes {missing:?} not applied within {} s of the heal",
                        self.spec.liveness_bound_s
                    ),
                ),
            );
        }
        report
    }
}

/// Keys the clients write and read (few, so that operations on one key overlap).
const KEYS: u64 = 8;

/// Steps the linearizability checker may take per run; running out fails the run.
const LIN_BUDGET_STEPS: u64 = 20_000_000;

/// Most violations kept per checker (the rest are counted in the last message).
const KEPT_PER_CHECKER: usize = 5;

fn push_violation(report: &mut Report, (checker, what): (&'static str, String)) {
    let kept = report
        .violations
        .iter()
        .filter(|(c, _)| *c == checker)
        .count();
    if kept < KEPT_PER_CHECKER {
        report.violations.push((checker, what));
    } else if let Some(last) = report
        .violations
        .iter_mut()
        .rev()
        .find(|(c, _)| *c == checker)
        && !last.1.ends_with(" more)")
    {
        last.1.push_str(" (and more)");
    }
}

/// Runs `spec` with `seed`.
pub fn run(spec: &Spec, seed: u64) -> Report {
    Simulation::new(spec.clone(), seed).run()
}
