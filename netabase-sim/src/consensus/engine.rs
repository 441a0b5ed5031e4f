//! The consensus engine: one thread, one event queue in virtual time, members driven
//! through the core's sans-IO API.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;

use netabase_core::consensus::{
    ClusterId, Configuration, ConsensusConfig, EntryId, EntryStatus, Envelope, Event, KvCommand,
    KvResponse, LogStore, Member, Membership, MembershipChange, MemoryLogStore, Message, Output,
    ReadId, ReadLevel, Role, Slot, State as _, Value, entry_ids,
};
use netabase_core::{Instant, PeerId};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::report::{ConsensusOps, ConsensusReport, Coverage};
use super::spec::{ConsensusPartition, ConsensusSpec};
use super::state::{SimState, list_bytes, list_elements};
use crate::linearizability::{Budget, KvInput, KvModel, KvOutput, Operation, Verdict, check};
use crate::report::Violation;

/// The cluster every simulated member belongs to.
const CLUSTER: ClusterId = ClusterId([0x5a; 16]);

/// The timers' granularity: a deadline already past fires this many microseconds later.
const TIMER_GRANULARITY_US: u64 = 1_000;

/// How often a client asks the members what became of its writes in limbo.
const STATUS_POLL_US: u64 = 100_000;

/// Violations kept per checker (the first ones; the rest are counted).
const MAX_VIOLATIONS_PER_CHECKER: usize = 5;

/// The member type the engine drives.
type SimMember = Member<MemoryLogStore, SimState>;

/// A member's clock: piecewise linear in virtual time, its rate changed only at instants
/// the engine picks, never going back.
#[derive(Clone, Copy, Debug)]
struct Clock {
    base_global: u64,
    base_local: u64,
    rate_ppm: i64,
}

impl Clock {
    fn local(&self, global: u64) -> u64 {
        let d = i128::from(global.saturating_sub(self.base_global));
        self.base_local + (d * (1_000_000 + i128::from(self.rate_ppm)) / 1_000_000) as u64
    }

    /// The first virtual instant at which this clock reads at least `local`.
    fn global(&self, local: u64) -> u64 {
        if local == u64::MAX {
            return u64::MAX;
        }
        if local <= self.base_local {
            return self.base_global;
        }
        let d = i128::from(local - self.base_local);
        let rate = 1_000_000 + i128::from(self.rate_ppm);
        self.base_global + ((d * 1_000_000 + rate - 1) / rate) as u64
    }

    fn set_rate(&mut self, global: u64, rate_ppm: i64) {
        self.base_local = self.local(global);
        self.base_global = global;
        self.rate_ppm = rate_ppm;
    }
}

enum Ev {
    Deliver {
        to: usize,
        from: usize,
        env: Box<Envelope>,
        late: bool,
    },
    Timer {
        node: usize,
        epoch: u64,
    },
    Sync {
        node: usize,
        epoch: u64,
    },
    /// Client `client`, bound to member `node`, issues its next operation.
    Client {
        client: usize,
        node: usize,
    },
    /// A member crashes (the leader half of the time).
    Crash,
    Restart {
        node: usize,
    },
    /// Every member crashes at once.
    ClusterCrash,
    /// A member (often the leader) pauses.
    Pause,
    Resume {
        node: usize,
    },
    /// A partition starts; `PartitionHeal` ends it.
    Partition,
    PartitionHeal,
    /// The end of the safety phase: every fault heals.
    Heal,
    /// The liveness phase's writes, one per member.
    Probe,
    /// Clients ask what became of their writes in limbo.
    StatusPoll,
    /// The operator asks a member for a membership change.
    Reconfigure,
    /// The network is cut anew once (a change was decided, or came into force).
    PartitionOnce,
}

impl Ev {
    /// The trace code and node of an event.
    fn code(&self) -> (u8, usize) {
        match self {
            Ev::Deliver { to, .. } => (1, *to),
            Ev::Timer { node, .. } => (2, *node),
            Ev::Sync { node, .. } => (3, *node),
            Ev::Client { client, .. } => (4, *client),
            Ev::Crash => (5, 0),
            Ev::Restart { node } => (6, *node),
            Ev::ClusterCrash => (7, 0),
            Ev::Pause => (8, 0),
            Ev::Resume { node } => (9, *node),
            Ev::Partition => (10, 0),
            Ev::PartitionHeal => (11, 0),
            Ev::Heal => (12, 0),
            Ev::Probe => (13, 0),
            Ev::StatusPoll => (14, 0),
            Ev::Reconfigure => (15, 0),
            Ev::PartitionOnce => (16, 0),
        }
    }

    /// The member a paused process keeps this event for, if it is one of its own.
    fn held_by(&self) -> Option<usize> {
        match self {
            Ev::Deliver { to, .. } => Some(*to),
            Ev::Timer { node, .. } | Ev::Sync { node, .. } | Ev::Client { node, .. } => Some(*node),
            _ => None,
        }
    }
}

/// The trace file's names of the event codes of [`Ev::code`].
const TRACE_KINDS: [&str; 17] = [
    "?",
    "deliver",
    "timer",
    "sync",
    "client",
    "crash",
    "restart",
    "cluster-crash",
    "pause",
    "resume",
    "partition",
    "partition-heal",
    "heal",
    "probe",
    "status-poll",
    "reconfigure",
    "partition-once",
];

struct Node {
    member: Option<SimMember>,
    /// The log while the member is down.
    log: MemoryLogStore,
    clock: Clock,
    epoch: u64,
    /// Outputs waiting for the sync of the writes they report.
    held: VecDeque<Output>,
    sync_scheduled: bool,
    timer_at: Option<u64>,
    writes: BTreeMap<EntryId, usize>,
    reads: BTreeMap<ReadId, usize>,
    /// Membership changes asked of this member, by entry id.
    changes: BTreeMap<EntryId, MembershipChange>,
    paused_until: Option<u64>,
    /// Events that reached the member while it was paused, in order.
    deferred: Vec<Ev>,
    slow_disk: bool,
    was_leader: bool,
    /// Repeated applications the at-most-once checker has reported (this incarnation).
    twice_reported: usize,
    /// Slots whose digest the digest checker has compared (this incarnation).
    digests_checked: usize,
    /// Counters of earlier incarnations: terms led, lease reads, dedup hits.
    past: [u64; 3],
    /// Whether this incarnation's first sync is done (its incarnation number durable).
    synced_once: bool,
    /// The state as the last sync that moved the log's truncation point left it: with
    /// the durable log after it, what a restart finds (the state is written with the
    /// log, without a sync of its own).
    checkpoint: Option<SimState>,
    checkpoint_truncated: Slot,
}

/// A client operation of the history.
#[derive(Clone, Debug)]
struct OpRec {
    node: usize,
    /// The client that issued it (`usize::MAX`: the liveness probes).
    client: usize,
    input: KvInput<u8, u64>,
    /// Reads: the level the history reports.
    level: Option<ReadLevel>,
    call: u64,
    ret: Option<u64>,
    output: Option<KvOutput<u64>>,
    /// Writes: the entry and, once acknowledged, its slot.
    id: Option<EntryId>,
    slot: Option<Slot>,
    /// A read that failed (timed out, or its member crashed), or a write that never
    /// left its member: it had no effect.
    failed: bool,
    /// A write proposed before its member's first sync: its id is unique only once the
    /// incarnation it carries is durable.
    early: bool,
    /// An early write whose member crashed before its first sync: its id may name
    /// another command, so its outcome stays unknown.
    ambiguous: bool,
}

/// One run of a consensus scenario (see [`crate::consensus`]).
pub struct ConsensusSimulation {
    name: String,
    seed: u64,
    spec: ConsensusSpec,
    config: ConsensusConfig,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    nodes: Vec<Node>,
    peers: Vec<PeerId>,
    blocked: BTreeSet<(usize, usize)>,
    faults_on: bool,
    ops: Vec<OpRec>,
    violations: Vec<Violation>,
    per_checker: BTreeMap<&'static str, usize>,
    /// The first state digest seen after each applied slot.
    digests: BTreeMap<Slot, [u8; 32]>,
    /// The chosen value of each slot, across every member.
    chosen: BTreeMap<Slot, Value>,
    /// The entry ids of slots a member applied after its log had compacted them away
    /// (it reports them, the checker no longer sees their value).
    applied_ids: BTreeMap<Slot, Vec<EntryId>>,
    coverage: Coverage,
    hash: u64,
    events: u64,
    messages: u64,
    next_value: u64,
    last_written: BTreeMap<u8, u64>,
    probes: Vec<usize>,
    /// Writes whose client lost track of them (indeterminate, or the proposer crashed):
    /// the client asks the members about them every [`STATUS_POLL_US`] microseconds.
    limbo: BTreeSet<usize>,
    /// Each client's operation in progress.
    busy: Vec<Option<usize>>,
    /// Every configuration any member recorded, by its first slot.
    configs: BTreeMap<Slot, Configuration>,
    /// Changes reported decided, with the first slot of their configuration.
    changes_done: Vec<(MembershipChange, Slot)>,
    /// The first slot of a configuration just decided: the network is cut anew once a
    /// member is about to apply it.
    activation: Option<Slot>,
    trace: Option<Box<dyn Write + Send>>,
}

impl ConsensusSimulation {
    /// A run of `spec` (named `name` in the report) with `seed`.
    pub fn new(name: &str, spec: &ConsensusSpec, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9a05_5e1d_c0de_0001);
        let n = spec.members + spec.spares;
        let peers: Vec<PeerId> = (0..n as u64)
            .map(|i| PeerId::from_seed(seed.wrapping_mul(1_000).wrapping_add(i)))
            .collect();
        let slow = spec
            .faults
            .slow_disk_ms
            .map(|_| (rng.next_u64() % n as u64) as usize);
        let drift = i64::from(spec.faults.drift_ppm);
        let nodes = (0..n)
            .map(|i| {
                let rate = if rng.next_u64() % 2 == 0 {
                    drift
                } else {
                    -drift
                };
                Node {
                    member: None,
                    log: MemoryLogStore::new(),
                    clock: Clock {
                        base_global: 0,
                        base_local: rng.next_u64() % 1_000_000,
                        rate_ppm: rate,
                    },
                    epoch: 0,
                    held: VecDeque::new(),
                    sync_scheduled: false,
                    timer_at: None,
                    writes: BTreeMap::new(),
                    reads: BTreeMap::new(),
                    changes: BTreeMap::new(),
                    paused_until: None,
                    deferred: Vec::new(),
                    slow_disk: slow == Some(i),
                    was_leader: false,
                    twice_reported: 0,
                    digests_checked: 0,
                    past: [0; 3],
                    synced_once: false,
                    checkpoint: None,
                    checkpoint_truncated: 0,
                }
            })
            .collect();
        let mut sim = ConsensusSimulation {
            name: name.to_string(),
            seed,
            config: spec.config(),
            spec: spec.clone(),
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            peers,
            blocked: BTreeSet::new(),
            faults_on: true,
            ops: Vec::new(),
            violations: Vec::new(),
            per_checker: BTreeMap::new(),
            digests: BTreeMap::new(),
            chosen: BTreeMap::new(),
            applied_ids: BTreeMap::new(),
            coverage: Coverage::default(),
            hash: seed,
            events: 0,
            messages: 0,
            next_value: 0,
            last_written: BTreeMap::new(),
            probes: Vec::new(),
            limbo: BTreeSet::new(),
            busy: vec![None; spec.clients_per_member * n],
            configs: BTreeMap::new(),
            changes_done: Vec::new(),
            activation: None,
            trace: None,
        };
        for i in 0..n {
            sim.start(i);
        }
        sim.schedule_fault_streams();
        sim
    }

    /// Writes every processed event, one line each, to `writer`.
    pub fn set_trace_writer(&mut self, writer: Box<dyn Write + Send>) {
        self.trace = Some(writer);
    }

    fn end(&self) -> u64 {
        secs(self.spec.duration_s)
    }

    fn schedule_fault_streams(&mut self) {
        let f = self.spec.faults.clone();
        if self.spec.rate_per_s > 0.0 {
            for client in 0..self.busy.len() {
                self.next_op(client);
            }
        }
        if !f.partitions.is_empty() {
            let at = self.uniform_s(f.partition_gap_s);
            self.schedule(at, Ev::Partition);
        }
        if let Some(every) = f.crash_every_s {
            let at = self.uniform_s(every);
            self.schedule(at, Ev::Crash);
        }
        if f.cluster_crash {
            let end = self.end();
            let at = end / 4 + self.rng.next_u64() % (end / 2).max(1);
            self.schedule(at, Ev::ClusterCrash);
        }
        if let Some(every) = f.pause_every_s {
            let at = self.uniform_s(every);
            self.schedule(at, Ev::Pause);
        }
        if let Some(every) = f.membership_every_s {
            let at = self.uniform_s(every);
            self.schedule(at, Ev::Reconfigure);
        }
        let end = self.end();
        self.schedule(end, Ev::Heal);
        self.schedule(end + 1_000, Ev::Probe);
        self.schedule(STATUS_POLL_US, Ev::StatusPoll);
    }

    // ----- randomness and time ---------------------------------------------------------

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// Microseconds uniform in `[r0, r1]` milliseconds.
    fn uniform_ms(&mut self, r: [f64; 2]) -> u64 {
        let (lo, hi) = ((r[0] * 1_000.0) as u64, (r[1] * 1_000.0) as u64);
        lo + self.rng.next_u64() % (hi - lo + 1)
    }

    /// Microseconds uniform in `[r0, r1]` seconds.
    fn uniform_s(&mut self, r: [f64; 2]) -> u64 {
        self.uniform_ms([r[0] * 1_000.0, r[1] * 1_000.0])
    }

    /// A client's think time: exponential, so that the clients together offer
    /// `rate_per_s` operations a second (capped at ten means).
    fn think(&mut self) -> u64 {
        let mean = 1_000_000.0 * self.busy.len() as f64 / self.spec.rate_per_s;
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-(1.0 - u).ln()).min(10.0) * mean) as u64 + 1
    }

    fn local(&self, i: usize) -> Instant {
        Instant::from_micros(self.nodes[i].clock.local(self.now))
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn violation(&mut self, checker: &'static str, message: String) {
        let count = self.per_checker.entry(checker).or_default();
        *count += 1;
        if *count <= MAX_VIOLATIONS_PER_CHECKER {
            self.violations.push(Violation {
                checker: checker.to_string(),
                at_ms: self.now / 1_000,
                message,
            });
        }
    }

    // ----- members ---------------------------------------------------------------------

    fn start(&mut self, i: usize) {
        let now = self.local(i);
        let log = std::mem::take(&mut self.nodes[i].log);
        let state = self.nodes[i]
            .checkpoint
            .clone()
            .unwrap_or_else(|| SimState::new(self.spec.injects("no-dedup")));
        // The first members start from the first configuration; the spares join. Every
        // node has every other as a contact (the operator names the cluster's nodes).
        let members = if i < self.spec.members {
            Configuration::new(self.peers[..self.spec.members].iter().copied())
        } else {
            Configuration::default()
        };
        let member = Member::new(
            self.config.clone(),
            Membership {
                local: self.peers[i],
                cluster: CLUSTER,
                members,
                contacts: self.peers.iter().copied().collect(),
            },
            log,
            state,
            self.rng.next_u64(),
            now,
        )
        .expect("a validated configuration starts");
        #[cfg(feature = "fault-injection")]
        let member = {
            let mut member = member;
            if let Some(bug) = self.spec.member_bug() {
                member.inject(bug);
            }
            member
        };
        let node = &mut self.nodes[i];
        node.member = Some(member);
        node.epoch += 1;
        node.twice_reported = 0;
        node.digests_checked = 0;
        node.was_leader = false;
        node.synced_once = false;
        self.after(i);
    }

    fn crash(&mut self, i: usize) -> bool {
        let Some(m) = self.nodes[i].member.take() else {
            return false;
        };
        self.coverage.crashes += 1;
        let s = m.stats();
        let past = [s.terms_led, s.lease_reads, s.dedup_hits];
        let (mut log, _) = m.into_parts();
        self.record_chosen_of(i, &log);
        log.crash();
        let node = &mut self.nodes[i];
        for (p, s) in node.past.iter_mut().zip(past) {
            *p += s;
        }
        node.log = log;
        node.held.clear();
        // The clients waiting for the paused process try again later.
        let deferred = std::mem::take(&mut node.deferred);
        node.paused_until = None;
        node.sync_scheduled = false;
        node.timer_at = None;
        node.epoch += 1;
        let writes = std::mem::take(&mut node.writes);
        let reads = std::mem::take(&mut node.reads);
        for op in reads.into_values() {
            self.ops[op].failed = true;
            self.finish(op);
        }
        let early = !self.nodes[i].synced_once;
        for op in writes.into_values() {
            if early && self.ops[op].early {
                // Proposed before the first sync, which never came: the incarnation in its
                // id was not durable, so the next incarnation hands out the same id for
                // other commands, and asking about the id says nothing about this write.
                // (The member forwards such entries when it learns a leader, so it may
                // have been applied.) Its outcome stays unknown.
                self.ops[op].ambiguous = true;
            } else {
                self.limbo.insert(op);
            }
            self.finish(op);
        }
        for ev in deferred {
            if let Ev::Client { client, .. } = ev {
                self.next_op(client);
            }
        }
        true
    }

    /// Drains a member's outputs under the group-commit rule, runs the per-step checks,
    /// and re-arms its timer and sync.
    fn after(&mut self, i: usize) {
        let (reported, checked) = (self.nodes[i].twice_reported, self.nodes[i].digests_checked);
        let Some(member) = self.nodes[i].member.as_mut() else {
            return;
        };
        member.check_invariants();
        let mut disagree = Vec::new();
        for (from, c) in member.configurations() {
            match self.configs.get(from) {
                Some(known) if known != c => disagree.push(*from),
                Some(_) => {}
                None => {
                    self.configs.insert(*from, c.clone());
                }
            }
        }
        let about_to_activate = self
            .activation
            .is_some_and(|from| member.applied() + 1 >= from);
        let digests: Vec<_> = member.state().digests()[checked..].to_vec();
        let twice: Vec<_> = member.state().applied_twice()[reported..].to_vec();
        let is_leader = member.role() == Role::Leader;
        let mut outs = Vec::new();
        while let Some(o) = member.poll_output() {
            outs.push(o);
        }
        for from in disagree {
            self.violation(
                "configuration-agreement",
                format!("member {i} records another configuration from slot {from}"),
            );
        }
        if about_to_activate {
            self.activation = None;
            self.schedule(self.now + 1, Ev::PartitionOnce);
        }
        self.nodes[i].digests_checked += digests.len();
        for (slot, digest) in digests {
            match self.digests.get(&slot) {
                Some(d) if *d != digest => {
                    self.violation(
                        "state-digest",
                        format!(
                            "member {i}: state digest differs from another member's at slot {slot}"
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    self.digests.insert(slot, digest);
                }
            }
        }
        self.nodes[i].twice_reported += twice.len();
        for (id, position) in twice {
            self.violation(
                "at-most-once",
                format!(
                    "member {i} applied entry {id:?} again at slot {} index {}",
                    position.slot, position.index
                ),
            );
        }
        if is_leader && !self.nodes[i].was_leader && self.spec.faults.adverse_drift {
            self.adverse_clocks(i);
        }
        self.nodes[i].was_leader = is_leader;
        let wait = !self.spec.injects("reply-before-sync");
        for o in outs {
            if wait && o.waits_for_sync() {
                self.nodes[i].held.push_back(o);
            } else {
                self.carry_out(i, o);
            }
        }
        self.arm_sync(i);
        self.arm_timer(i);
    }

    fn arm_sync(&mut self, i: usize) {
        let Some(member) = self.nodes[i].member.as_ref() else {
            return;
        };
        let needs = member.needs_sync() || member.log().dirty() || !self.nodes[i].held.is_empty();
        if needs && !self.nodes[i].sync_scheduled {
            self.nodes[i].sync_scheduled = true;
            let range = match (self.nodes[i].slow_disk, self.spec.faults.slow_disk_ms) {
                (true, Some(slow)) => slow,
                _ => self.spec.faults.sync_latency_ms,
            };
            let at = self.now + self.uniform_ms(range).max(1);
            let epoch = self.nodes[i].epoch;
            self.schedule(at, Ev::Sync { node: i, epoch });
        }
    }

    fn arm_timer(&mut self, i: usize) {
        let Some(member) = self.nodes[i].member.as_ref() else {
            return;
        };
        let mut at = self.nodes[i]
            .clock
            .global(member.poll_timeout().as_micros());
        if at <= self.now {
            // A deadline already past fires after the timer granularity, as a runtime's
            // timer would (the contract allows any time at or after the deadline).
            at = self.now + TIMER_GRANULARITY_US;
        }
        if self.nodes[i].timer_at != Some(at) {
            self.nodes[i].timer_at = Some(at);
            let epoch = self.nodes[i].epoch;
            self.schedule(at, Ev::Timer { node: i, epoch });
        }
    }

    /// The new leader `i` runs slow, every member not leading runs fast.
    fn adverse_clocks(&mut self, i: usize) {
        let drift = i64::from(self.spec.faults.drift_ppm);
        for j in 0..self.nodes.len() {
            let leading = self.nodes[j]
                .member
                .as_ref()
                .is_some_and(|m| m.role() == Role::Leader);
            let rate = if j == i || leading { -drift } else { drift };
            if self.nodes[j].clock.rate_ppm != rate {
                let now = self.now;
                self.nodes[j].clock.set_rate(now, rate);
                if j != i {
                    self.nodes[j].timer_at = None;
                    self.arm_timer(j);
                }
            }
        }
        self.nodes[i].timer_at = None;
    }

    fn carry_out(&mut self, i: usize, o: Output) {
        match o {
            Output::Send { to, envelope } => {
                self.check_durable(i, &envelope.message);
                let to = self
                    .peers
                    .iter()
                    .position(|p| *p == to)
                    .expect("messages go to members");
                self.send(i, to, envelope);
            }
            Output::Event(e) => self.on_event(i, e),
        }
    }

    /// A promise or an accepted vote leaves only once what it reports is durable.
    fn check_durable(&mut self, i: usize, message: &Message) {
        let Some(m) = self.nodes[i].member.as_ref() else {
            return;
        };
        let log = m.log();
        let problem = match message {
            Message::Promise { ballot, .. } if log.durable_promised() < Some(*ballot) => Some(
                format!("member {i} promised {ballot:?} before the promise was durable"),
            ),
            Message::Accepted { ballot, slot }
                if *slot > log.durable_truncated()
                    && !log
                        .durable_get(*slot)
                        .is_some_and(|a| a.ballot >= *ballot || a.chosen) =>
            {
                Some(format!(
                    "member {i} voted for slot {slot} in {ballot:?} before the accept was durable"
                ))
            }
            _ => None,
        };
        if let Some(message) = problem {
            self.violation("durable-before-reply", message);
        }
    }

    fn send(&mut self, from: usize, to: usize, env: Envelope) {
        self.messages += 1;
        let n = self.spec.network.clone();
        if self.faults_on && (self.blocked.contains(&(from, to)) || self.chance(n.loss)) {
            return;
        }
        let copies = if self.faults_on && self.chance(n.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let late = self.faults_on && self.chance(n.late);
            let mut delay = self.uniform_ms(n.latency_ms).max(1);
            if late {
                delay = self.uniform_ms(n.late_ms).max(1);
            } else if self.faults_on && self.chance(n.reorder) {
                delay += (n.reorder_delay_ms * 1_000.0) as u64;
            }
            self.schedule(
                self.now + delay,
                Ev::Deliver {
                    to,
                    from,
                    env: Box::new(env.clone()),
                    late,
                },
            );
        }
    }

    fn on_event(&mut self, i: usize, e: Event) {
        let now = self.now;
        match e {
            Event::Committed {
                id,
                position,
                response,
                ..
            } => {
                if let Some(op) = self.nodes[i].writes.remove(&id) {
                    let Some(output) = decode_output(&response) else {
                        let answer = KvResponse::decode(&response);
                        self.violation("responses", format!("entry {id:?} answered {answer:?}"));
                        return;
                    };
                    let rec = &mut self.ops[op];
                    rec.ret = Some(now);
                    rec.output = Some(output);
                    rec.slot = Some(position.slot);
                    self.finish(op);
                }
            }
            Event::Indeterminate { id } => {
                if let Some(op) = self.nodes[i].writes.remove(&id) {
                    self.limbo.insert(op);
                    self.finish(op);
                }
            }
            Event::ReadReady { read } => {
                if let Some(op) = self.nodes[i].reads.remove(&read) {
                    let key = *self.ops[op].input.key();
                    let list = self.nodes[i]
                        .member
                        .as_ref()
                        .and_then(|m| m.state().kv().get(&[key]).map(|(b, _)| list_elements(b)))
                        .unwrap_or_default();
                    let rec = &mut self.ops[op];
                    rec.ret = Some(now);
                    rec.output = Some(KvOutput::List(list));
                    self.finish(op);
                }
            }
            Event::ReadFailed { read, .. } => {
                if let Some(op) = self.nodes[i].reads.remove(&read) {
                    self.ops[op].failed = true;
                    self.finish(op);
                }
            }
            Event::Configuration { .. } => {}
            Event::ChangeDone { id, result } => {
                if let (Some(change), Ok(from)) = (self.nodes[i].changes.remove(&id), result) {
                    self.coverage.membership_changes += 1;
                    self.changes_done.push((change, from));
                    // Cut the network at the decision (slot k) and again when the new
                    // configuration comes into force (k + α).
                    self.activation = Some(from);
                    self.schedule(now + 1, Ev::PartitionOnce);
                }
            }
            Event::SnapshotInstalled { .. } => self.coverage.snapshot_installs += 1,
            Event::Applied { slot, entries } => {
                let (value, truncated) = self.nodes[i]
                    .member
                    .as_ref()
                    .map(|m| (m.log().get(slot), m.log().truncated()))
                    .unwrap_or_default();
                match value {
                    Some(a) => self.record_chosen(i, slot, &a.value),
                    // Compacted since it was applied: its entry ids are compared instead.
                    None if slot <= truncated => match self.applied_ids.get(&slot) {
                        _ if self
                            .chosen
                            .get(&slot)
                            .is_some_and(|v| entry_ids(v) != entries.iter().copied().collect()) =>
                        {
                            self.violation(
                                "agreement",
                                format!("member {i} applied other entries at slot {slot}"),
                            )
                        }
                        Some(known) if *known != entries => self.violation(
                            "agreement",
                            format!("member {i} applied other entries at slot {slot}"),
                        ),
                        Some(_) => {}
                        None => {
                            self.applied_ids.insert(slot, entries);
                        }
                    },
                    None => self.violation(
                        "agreement",
                        format!("member {i} applied slot {slot}, which its log does not hold"),
                    ),
                }
            }
            Event::Leader { .. } => {}
        }
    }

    fn record_chosen(&mut self, i: usize, slot: Slot, value: &Value) {
        match self.chosen.get(&slot) {
            Some(v) if v != value => self.violation(
                "agreement",
                format!("member {i} has another value chosen at slot {slot}"),
            ),
            Some(_) => {}
            None => {
                self.chosen.insert(slot, value.clone());
            }
        }
    }

    /// Records every slot `log` (member `i`'s) marks chosen.
    fn record_chosen_of(&mut self, i: usize, log: &MemoryLogStore) {
        let mut cursor = 1;
        loop {
            let slots = log.slots_from(cursor, 512);
            let Some(&last) = slots.last() else { break };
            for s in slots {
                if let Some(a) = log.get(s).filter(|a| a.chosen) {
                    self.record_chosen(i, s, &a.value);
                }
            }
            cursor = last + 1;
        }
    }

    // ----- the workload ----------------------------------------------------------------

    /// Schedules client `client`'s next operation after its think time.
    fn next_op(&mut self, client: usize) {
        let at = self.now + self.think();
        if at < self.end() {
            let node = client % self.nodes.len();
            self.schedule(at, Ev::Client { client, node });
        }
    }

    /// Operation `op` is over for its client (answered, failed or in limbo): the client
    /// moves on.
    fn finish(&mut self, op: usize) {
        let client = self.ops[op].client;
        if self.busy.get(client) == Some(&Some(op)) {
            self.busy[client] = None;
            self.next_op(client);
        }
    }

    /// Client `c` issues one operation at its member `i`.
    fn client(&mut self, c: usize, i: usize) {
        let now = self.local(i);
        let call = self.now;
        let r = self.rng.next_u64();
        let read = self.chance(self.spec.read_fraction);
        let key = (r % u64::from(self.spec.keys)) as u8;
        if self.nodes[i].member.is_none() {
            self.next_op(c);
            return;
        }
        let issued = self.ops.len();
        if read {
            let level = [ReadLevel::Linearizable, ReadLevel::Lease, ReadLevel::Local]
                [((r >> 8) % 3) as usize];
            let asked = if level == ReadLevel::Linearizable
                && self.spec.injects("local-read-as-linearizable")
            {
                ReadLevel::Local
            } else {
                level
            };
            let member = self.nodes[i].member.as_mut().expect("live");
            if let Ok(read) = member.read(now, asked) {
                self.nodes[i].reads.insert(read, self.ops.len());
                self.ops.push(OpRec {
                    node: i,
                    client: c,
                    input: KvInput::Get { key },
                    level: Some(level),
                    call,
                    ret: None,
                    output: None,
                    id: None,
                    slot: None,
                    failed: false,
                    early: false,
                    ambiguous: false,
                });
            }
        } else {
            self.next_value += 1;
            let value = self.next_value;
            let (command, input) = match (r >> 8) % 3 {
                0 => {
                    self.last_written.insert(key, value);
                    (
                        KvCommand::Put {
                            key: vec![key],
                            value: list_bytes(&[value]),
                        },
                        KvInput::Put { key, value },
                    )
                }
                1 => {
                    let expected = if (r >> 16).is_multiple_of(4) {
                        None
                    } else {
                        self.last_written.get(&key).copied()
                    };
                    self.last_written.insert(key, value);
                    (
                        KvCommand::CompareAndSet {
                            key: vec![key],
                            expected: expected.map(|e| list_bytes(&[e])),
                            new: Some(list_bytes(&[value])),
                        },
                        KvInput::CompareAndSet {
                            key,
                            expected,
                            new: Some(value),
                        },
                    )
                }
                _ => (
                    KvCommand::Append {
                        key: vec![key],
                        value: value.to_be_bytes().to_vec(),
                    },
                    KvInput::Append { key, value },
                ),
            };
            self.propose(i, c, command, input, call);
        }
        if self.ops.len() > issued {
            self.busy[c] = Some(issued);
        } else {
            self.next_op(c);
        }
        self.after(i);
    }

    fn propose(
        &mut self,
        i: usize,
        client: usize,
        command: KvCommand,
        input: KvInput<u8, u64>,
        call: u64,
    ) -> Option<usize> {
        let now = self.local(i);
        let member = self.nodes[i].member.as_mut()?;
        let id = member.propose(now, command.encode()).ok()?;
        let op = self.ops.len();
        self.nodes[i].writes.insert(id, op);
        self.ops.push(OpRec {
            node: i,
            client,
            input,
            level: None,
            call,
            ret: None,
            output: None,
            id: Some(id),
            slot: None,
            failed: false,
            early: !self.nodes[i].synced_once,
            ambiguous: false,
        });
        Some(op)
    }

    /// A client whose write is in limbo asks its proposer (or, while the proposer is
    /// down or paused, the next member that answers) what became of it
    /// ([`Member::entry_status`]); a write found applied took effect before now.
    fn poll_status(&mut self) {
        let n = self.nodes.len();
        let limbo: Vec<usize> = self.limbo.iter().copied().collect();
        for op in limbo {
            let (node, id) = (self.ops[op].node, self.ops[op].id.expect("writes have ids"));
            let asked = (0..n)
                .map(|k| (node + k) % n)
                .find(|&j| self.nodes[j].member.is_some() && self.nodes[j].paused_until.is_none());
            let Some(j) = asked else { continue };
            let member = self.nodes[j].member.as_ref().expect("live");
            if let EntryStatus::Applied(response) = member.entry_status(&id)
                && let Some(output) = decode_output(&response)
            {
                self.limbo.remove(&op);
                let op = &mut self.ops[op];
                op.ret = Some(self.now);
                op.output = Some(output);
            }
        }
    }

    // ----- membership ------------------------------------------------------------------

    /// The operator: asks a random live member for a change that keeps `members` or
    /// `members + 1` voters (adding a node outside, removing a voter, or replacing one).
    fn reconfigure(&mut self) {
        let n = self.nodes.len();
        let i = (self.rng.next_u64() % n as u64) as usize;
        let r = self.rng.next_u64();
        let Some(latest) = self.nodes[i]
            .member
            .as_ref()
            .filter(|_| self.nodes[i].paused_until.is_none())
            .and_then(|m| m.latest_configuration().cloned())
        else {
            return;
        };
        let pick = |v: &[PeerId], salt: u64| v[((r >> salt) % v.len() as u64) as usize];
        let outside: Vec<PeerId> = self
            .peers
            .iter()
            .copied()
            .filter(|p| !latest.includes(p))
            .collect();
        let voters: Vec<PeerId> = latest.voters.keys().copied().collect();
        let members = self.spec.members;
        let change = if voters.len() > members || outside.is_empty() {
            // Never fewer voters than at the start.
            if voters.len() <= members {
                return;
            }
            MembershipChange::Remove(pick(&voters, 8))
        } else if voters.len() < members || r.is_multiple_of(2) {
            MembershipChange::Add(pick(&outside, 8))
        } else {
            MembershipChange::Replace {
                old: pick(&voters, 8),
                new: pick(&outside, 16),
            }
        };
        let leader = self.leader().map(|l| self.peers[l]);
        let down = self.nodes.iter().any(|n| n.member.is_none());
        let now = self.local(i);
        let member = self.nodes[i].member.as_mut().expect("checked");
        if let Ok(id) = member.change_membership(now, change) {
            self.nodes[i].changes.insert(id, change);
            let target = match change {
                MembershipChange::Remove(p) | MembershipChange::Replace { old: p, .. } => Some(p),
                _ => None,
            };
            if target.is_some() && target == leader {
                self.coverage.leader_removals += 1;
            }
            if down {
                self.coverage.changes_while_down += 1;
            }
        }
        self.after(i);
    }

    /// The nodes of the newest configuration any member recorded (the first members
    /// before any change).
    fn final_members(&self) -> Vec<usize> {
        match self.configs.values().next_back() {
            Some(c) => (0..self.nodes.len())
                .filter(|&i| c.includes(&self.peers[i]))
                .collect(),
            None => (0..self.spec.members).collect(),
        }
    }

    // ----- faults ----------------------------------------------------------------------

    /// The member that leads the highest ballot, if any.
    fn leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter_map(|i| {
                let m = self.nodes[i].member.as_ref()?;
                (m.role() == Role::Leader).then_some((m.round(), i))
            })
            .max()
            .map(|(_, i)| i)
    }

    /// A member for a fault to hit: the leader with probability `leader_odds`.
    fn victim(&mut self, leader_odds: f64) -> usize {
        let n = self.nodes.len() as u64;
        match self.leader() {
            Some(l) if self.chance(leader_odds) => l,
            _ => (self.rng.next_u64() % n) as usize,
        }
    }

    fn partition(&mut self) {
        let kinds = self.spec.faults.partitions.clone();
        let kind = kinds[(self.rng.next_u64() % kinds.len() as u64) as usize];
        let n = self.nodes.len();
        self.blocked.clear();
        self.coverage.partitions += 1;
        let both = |blocked: &mut BTreeSet<(usize, usize)>, a: usize, b: usize| {
            blocked.insert((a, b));
            blocked.insert((b, a));
        };
        match kind {
            ConsensusPartition::LeaderIsolated => {
                let x = self.victim(1.0);
                for j in (0..n).filter(|&j| j != x) {
                    both(&mut self.blocked, x, j);
                }
            }
            ConsensusPartition::Minority => {
                let size = 1 + (self.rng.next_u64() % ((n as u64 - 1) / 2).max(1)) as usize;
                let mut order: Vec<usize> = (0..n).collect();
                for k in (1..n).rev() {
                    let j = (self.rng.next_u64() % (k as u64 + 1)) as usize;
                    order.swap(k, j);
                }
                let minority: BTreeSet<usize> = order[..size.min(n)].iter().copied().collect();
                for &a in &minority {
                    for b in (0..n).filter(|b| !minority.contains(b)) {
                        both(&mut self.blocked, a, b);
                    }
                }
            }
            ConsensusPartition::OneWayFromLeader => {
                let x = self.victim(1.0);
                for j in (0..n).filter(|&j| j != x) {
                    self.blocked.insert((x, j));
                }
            }
            ConsensusPartition::NonTransitive => {
                if n >= 3 {
                    let a = self.victim(1.0);
                    let b = (a + 1 + (self.rng.next_u64() % (n as u64 - 1)) as usize) % n;
                    both(&mut self.blocked, a, b);
                }
            }
        }
    }

    fn pause(&mut self) {
        let x = self.victim(0.75);
        if self.nodes[x].member.is_none() || self.nodes[x].paused_until.is_some() {
            return;
        }
        let until = self.now + self.uniform_s(self.spec.faults.pause_s);
        self.nodes[x].paused_until = Some(until);
        self.coverage.pauses += 1;
        self.schedule(until, Ev::Resume { node: x });
    }

    fn resume(&mut self, i: usize) {
        if self.nodes[i].paused_until.take().is_none() {
            return;
        }
        let deferred = std::mem::take(&mut self.nodes[i].deferred);
        for ev in deferred {
            if !matches!(ev, Ev::Timer { .. }) {
                self.schedule(self.now, ev);
            }
        }
        self.nodes[i].timer_at = None;
        self.arm_timer(i);
    }

    // ----- the engine ------------------------------------------------------------------

    fn fold_trace(&mut self, code: u8, node: usize, extra: u64) {
        let mut buf = [0u8; 25];
        buf[..8].copy_from_slice(&self.now.to_le_bytes());
        buf[8] = code;
        buf[9..17].copy_from_slice(&(node as u64).to_le_bytes());
        buf[17..].copy_from_slice(&extra.to_le_bytes());
        self.hash = xxh3_64_with_seed(&buf, self.hash);
        if let Some(w) = self.trace.as_mut() {
            let kind = TRACE_KINDS.get(usize::from(code)).copied().unwrap_or("?");
            let _ = writeln!(w, "{:>12} {kind:<14} {node:>2} {extra:016x}", self.now);
        }
    }

    /// Processes the next event; `false` when none is left.
    fn step(&mut self) -> bool {
        let Some(((at, _), ev)) = self.queue.pop_first() else {
            return false;
        };
        self.now = at;
        if let Some(i) = ev.held_by()
            && self.nodes[i].paused_until.is_some()
        {
            self.nodes[i].deferred.push(ev);
            return true;
        }
        self.events += 1;
        let (code, node) = ev.code();
        let extra = match &ev {
            Ev::Deliver { from, env, .. } => {
                let bytes = env.encode().unwrap_or_default();
                xxh3_64_with_seed(&bytes, *from as u64)
            }
            Ev::Timer { epoch, .. } | Ev::Sync { epoch, .. } => *epoch,
            _ => 0,
        };
        self.fold_trace(code, node, extra);
        match ev {
            Ev::Deliver {
                to,
                from,
                env,
                late,
            } => self.deliver(to, from, *env, late),
            Ev::Timer { node, epoch } => {
                if self.nodes[node].epoch == epoch && self.nodes[node].timer_at == Some(at) {
                    self.nodes[node].timer_at = None;
                    let now = self.local(node);
                    if let Some(m) = self.nodes[node].member.as_mut() {
                        if now >= m.poll_timeout() {
                            m.handle_timeout(now);
                        }
                        self.after(node);
                    }
                }
            }
            Ev::Sync { node, epoch } => {
                if self.nodes[node].epoch == epoch {
                    self.nodes[node].sync_scheduled = false;
                    let now = self.local(node);
                    let n = &mut self.nodes[node];
                    if let Some(m) = n.member.as_mut() {
                        m.log_mut().sync();
                        m.synced(now);
                        n.synced_once = true;
                        let truncated = m.log().durable_truncated();
                        if truncated != n.checkpoint_truncated {
                            n.checkpoint = Some(m.state().clone());
                            n.checkpoint_truncated = truncated;
                        }
                        let held: Vec<Output> = self.nodes[node].held.drain(..).collect();
                        for o in held {
                            self.carry_out(node, o);
                        }
                        self.after(node);
                    }
                }
            }
            Ev::Client { client, node } => self.client(client, node),
            Ev::Crash => {
                if self.faults_on {
                    let x = self.victim(0.5);
                    if self.crash(x) {
                        let back = at + self.uniform_s(self.spec.faults.downtime_s);
                        self.schedule(back, Ev::Restart { node: x });
                    }
                    if let Some(every) = self.spec.faults.crash_every_s {
                        let next = at + self.uniform_s(every);
                        self.schedule(next, Ev::Crash);
                    }
                }
            }
            Ev::Restart { node } => {
                if self.nodes[node].member.is_none() {
                    self.coverage.restarts += 1;
                    self.start(node);
                }
            }
            Ev::ClusterCrash => {
                if self.faults_on {
                    self.coverage.cluster_crashes += 1;
                    for x in 0..self.nodes.len() {
                        if self.crash(x) {
                            let back = at + self.uniform_s(self.spec.faults.downtime_s);
                            self.schedule(back, Ev::Restart { node: x });
                        }
                    }
                }
            }
            Ev::Pause => {
                if self.faults_on {
                    self.pause();
                    if let Some(every) = self.spec.faults.pause_every_s {
                        let next = at + self.uniform_s(every);
                        self.schedule(next, Ev::Pause);
                    }
                }
            }
            Ev::Resume { node } => self.resume(node),
            Ev::Partition => {
                if self.faults_on {
                    self.partition();
                    let back = at + self.uniform_s(self.spec.faults.partition_length_s);
                    self.schedule(back, Ev::PartitionHeal);
                }
            }
            Ev::PartitionHeal => {
                if self.faults_on {
                    self.blocked.clear();
                    let next = at + self.uniform_s(self.spec.faults.partition_gap_s);
                    self.schedule(next, Ev::Partition);
                }
            }
            Ev::Heal => self.heal(),
            Ev::Probe => self.probe(),
            Ev::StatusPoll => {
                self.poll_status();
                self.schedule(at + STATUS_POLL_US, Ev::StatusPoll);
            }
            Ev::Reconfigure => {
                if self.faults_on {
                    self.reconfigure();
                    if let Some(every) = self.spec.faults.membership_every_s {
                        let next = at + self.uniform_s(every);
                        self.schedule(next, Ev::Reconfigure);
                    }
                }
            }
            Ev::PartitionOnce => {
                if self.faults_on && !self.spec.faults.partitions.is_empty() {
                    self.partition();
                }
            }
        }
        if self.config.lease.is_some() {
            self.check_leases();
        }
        true
    }

    fn deliver(&mut self, to: usize, from: usize, env: Envelope, late: bool) {
        if self.faults_on && self.blocked.contains(&(from, to)) {
            return;
        }
        let now = self.local(to);
        let Some(m) = self.nodes[to].member.as_mut() else {
            return;
        };
        let ballot = match &env.message {
            Message::Prepare { ballot, .. }
            | Message::Promise { ballot, .. }
            | Message::Nack { ballot, .. }
            | Message::Accept { ballot, .. }
            | Message::Accepted { ballot, .. }
            | Message::Commit { ballot, .. }
            | Message::Heartbeat { ballot, .. }
            | Message::HeartbeatAck { ballot, .. } => Some(*ballot),
            _ => None,
        };
        if ballot.is_some_and(|b| b.round < m.round()) {
            self.coverage.old_ballot_deliveries += 1;
        }
        if late {
            self.coverage.late_deliveries += 1;
        }
        m.handle_message(now, self.peers[from], env);
        self.after(to);
    }

    fn heal(&mut self) {
        self.faults_on = false;
        self.blocked.clear();
        for i in 0..self.nodes.len() {
            self.resume(i);
            if self.nodes[i].member.is_none() {
                self.coverage.restarts += 1;
                self.start(i);
            }
        }
    }

    fn probe(&mut self) {
        let key = self.spec.keys;
        for i in self.final_members() {
            self.next_value += 1;
            let value = self.next_value;
            let command = KvCommand::Put {
                key: vec![key],
                value: list_bytes(&[value]),
            };
            match self.propose(
                i,
                usize::MAX,
                command,
                KvInput::Put { key, value },
                self.now,
            ) {
                Some(op) => self.probes.push(op),
                None => self.violation(
                    "liveness",
                    format!("member {i} refused a write after the heal"),
                ),
            }
            self.after(i);
        }
    }

    /// Whether every probe of a member of the newest configuration is acknowledged and
    /// applied at every such member (a change still in flight at the heal may remove a
    /// member that probed: it is not held to its probe).
    fn probes_done(&self) -> bool {
        let members = self.final_members();
        self.probes.iter().all(|&op| {
            let op = &self.ops[op];
            !members.contains(&op.node)
                || op.ret.is_some()
                    && op.id.is_some_and(|id| {
                        members.iter().all(|&j| {
                            self.nodes[j]
                                .member
                                .as_ref()
                                .is_some_and(|m| m.state().kv().dedup().contains(&id))
                        })
                    })
        })
    }

    /// At most one member holds a lease at any instant of virtual time.
    fn check_leases(&mut self) {
        let holders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                let t = self.local(i);
                self.nodes[i]
                    .member
                    .as_ref()
                    .is_some_and(|m| m.has_lease(t))
            })
            .collect();
        if holders.len() > 1 {
            self.violation(
                "single-lease",
                format!("members {holders:?} hold a lease at once"),
            );
        }
    }

    /// Runs the safety phase, heals, runs the liveness phase, checks everything and
    /// reports.
    pub fn run(mut self) -> ConsensusReport {
        let started = std::time::Instant::now();
        let end = self.end();
        while self
            .queue
            .first_key_value()
            .is_some_and(|((at, _), _)| *at <= end + 1_000)
        {
            self.step();
        }
        let bound = end + secs(self.spec.liveness_bound_s);
        let mut live = false;
        while self
            .queue
            .first_key_value()
            .is_some_and(|((at, _), _)| *at <= bound)
        {
            self.step();
            if self.probes_done() {
                live = true;
                break;
            }
        }
        if !live {
            let members = self.final_members();
            let missing: Vec<usize> = self
                .probes
                .iter()
                .filter(|&&op| self.ops[op].ret.is_none() && members.contains(&self.ops[op].node))
                .map(|&op| self.ops[op].node)
                .collect();
            self.violation(
                "liveness",
                format!(
                    "not every member applied a fresh write of every member within {} s of the heal (unacknowledged: members {missing:?})",
                    self.spec.liveness_bound_s
                ),
            );
        }
        let mut furthest = None;
        for i in 0..self.nodes.len() {
            if let Some(m) = self.nodes[i].member.take() {
                let s = m.stats();
                let past = [s.terms_led, s.lease_reads, s.dedup_hits];
                for (p, s) in self.nodes[i].past.iter_mut().zip(past) {
                    *p += s;
                }
                let (log, state) = m.into_parts();
                self.record_chosen_of(i, &log);
                self.nodes[i].log = log;
                let applied = state.applied();
                self.final_check_state(i, &state, applied);
                if furthest
                    .as_ref()
                    .is_none_or(|f: &SimState| f.applied() < applied)
                {
                    furthest = Some(state);
                }
            }
        }
        self.check_acknowledged();
        self.check_changes();
        self.check_linearizable(furthest.as_ref());
        self.report(started)
    }

    fn final_check_state(&mut self, i: usize, state: &SimState, applied: Slot) {
        let mut lost = Vec::new();
        for o in &self.ops {
            if let (Some(id), Some(_), Some(slot)) = (o.id, o.ret, o.slot)
                && slot <= applied
                && state.applied_response(&id).is_none()
            {
                lost.push(id);
            }
        }
        for id in lost {
            self.violation(
                "acked-write-lost",
                format!("member {i} applied past acknowledged entry {id:?} without it"),
            );
        }
    }

    /// Every change reported decided is in force from the slot it was reported at, in the
    /// configurations the members recorded.
    fn check_changes(&mut self) {
        let missing: Vec<(MembershipChange, Slot)> = self
            .changes_done
            .iter()
            .filter(|(_, from)| !self.configs.contains_key(from))
            .copied()
            .collect();
        for (change, from) in missing {
            self.violation(
                "configuration-agreement",
                format!(
                    "change {change:?} reported in force from slot {from}, which no member recorded"
                ),
            );
        }
    }

    /// Every acknowledged write is in the chosen value of the slot it was acknowledged at.
    fn check_acknowledged(&mut self) {
        let mut lost = Vec::new();
        for o in &self.ops {
            if let (Some(id), Some(_), Some(slot)) = (o.id, o.ret, o.slot)
                && !self
                    .chosen
                    .get(&slot)
                    .is_some_and(|v| entry_ids(v).contains(&id))
                && !self
                    .applied_ids
                    .get(&slot)
                    .is_some_and(|ids| ids.contains(&id))
            {
                lost.push((id, slot));
            }
        }
        for (id, slot) in lost {
            self.violation(
                "acked-write-lost",
                format!("acknowledged entry {id:?} is not in the value chosen at slot {slot}"),
            );
        }
    }

    /// The client history (writes, linearizable and lease reads) is linearizable.
    ///
    /// A write whose client never learned its outcome, not even by asking later
    /// ([`Self::poll_status`]), is resolved by the state that applied the most slots at
    /// the end (`furthest`): if that state applied the entry, the write took effect before
    /// now, with the answer the state recorded; if not, no read saw it (every member's
    /// applied state is a prefix of that one's), so it is left out, as if it took effect
    /// after the whole history. A write whose id is ambiguous (see [`OpRec::ambiguous`])
    /// stays unknown.
    fn check_linearizable(&mut self, furthest: Option<&SimState>) {
        let now = self.now;
        for o in self
            .ops
            .iter_mut()
            .filter(|o| o.ret.is_none() && !o.ambiguous)
        {
            let Some(id) = o.id else { continue };
            if let Some(output) = furthest
                .and_then(|f| f.applied_response(&id))
                .and_then(|r| decode_output(&r))
            {
                o.ret = Some(now);
                o.output = Some(output);
            }
        }
        let history: Vec<Operation<KvInput<u8, u64>, KvOutput<u64>>> = self
            .ops
            .iter()
            .filter(|o| !o.failed && o.level != Some(ReadLevel::Local))
            .filter_map(|o| match (o.ret, &o.output) {
                (Some(ret), Some(out)) => Some(Operation::completed(
                    o.client as u64,
                    o.input.clone(),
                    o.call,
                    ret,
                    out.clone(),
                )),
                (_, _) if o.ambiguous => {
                    Some(Operation::unknown(o.client as u64, o.input.clone(), o.call))
                }
                // Unanswered reads had no effect; unresolved writes no effect anyone saw.
                _ => None,
            })
            .collect();
        let verdict = check(
            &KvModel::<u8, u64>::new(),
            &history,
            Budget::steps(self.spec.lin_budget_steps),
        );
        match verdict {
            Verdict::Linearizable => {}
            other => {
                let mut text = other.to_string();
                if text.len() > 4_000 {
                    let mut cut = 4_000;
                    while !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    text.truncate(cut);
                    text.push_str(" ...");
                }
                self.violation("linearizability", text);
            }
        }
    }

    fn report(mut self, started: std::time::Instant) -> ConsensusReport {
        let mut coverage = self.coverage.clone();
        for n in &self.nodes {
            coverage.elections_won += n.past[0];
            coverage.lease_reads += n.past[1];
            coverage.dedup_hits += n.past[2];
        }
        let count = |level: Option<ReadLevel>, ops: &[OpRec]| {
            let mut c = ConsensusOps::default();
            for o in ops.iter().filter(|o| o.level == level) {
                c.issued += 1;
                if o.ret.is_some() {
                    c.ok += 1;
                } else if o.failed || o.level.is_some() {
                    c.failed += 1;
                } else {
                    c.unknown += 1;
                }
            }
            c
        };
        let slots = self
            .final_members()
            .into_iter()
            .map(|i| &self.nodes[i])
            .map(|n| {
                let mut last = 0;
                while n.log.get(last + 1).is_some_and(|a| a.chosen) {
                    last += 1;
                }
                last
            })
            .min()
            .unwrap_or(0);
        if let Some(w) = self.trace.as_mut() {
            let _ = w.flush();
        }
        let extra: usize = self
            .per_checker
            .values()
            .map(|c| c.saturating_sub(MAX_VIOLATIONS_PER_CHECKER))
            .sum();
        if extra > 0 {
            self.violations.push(Violation {
                checker: "report".into(),
                at_ms: self.now / 1_000,
                message: format!("{extra} more violations not listed"),
            });
        }
        ConsensusReport {
            scenario: self.name.clone(),
            seed: self.seed,
            members: self.nodes.len(),
            virtual_ms: self.now / 1_000,
            wall_ms: started.elapsed().as_millis() as u64,
            events: self.events,
            messages: self.messages,
            writes: count(None, &self.ops),
            linearizable_reads: count(Some(ReadLevel::Linearizable), &self.ops),
            lease_reads: count(Some(ReadLevel::Lease), &self.ops),
            local_reads: count(Some(ReadLevel::Local), &self.ops),
            slots,
            coverage,
            trace_hash: format!("{:016x}", self.hash),
            violations: self.violations,
        }
    }
}

fn secs(s: f64) -> u64 {
    (s * 1_000_000.0) as u64
}

/// A write's answer as the linearizability model's output.
fn decode_output(response: &[u8]) -> Option<KvOutput<u64>> {
    match KvResponse::decode(response)? {
        KvResponse::Done => Some(KvOutput::Ok),
        KvResponse::Swapped(b) => Some(KvOutput::Swapped(b)),
        KvResponse::Invalid => None,
    }
}
