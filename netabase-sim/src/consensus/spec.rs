//! The `[consensus]` section of a scenario file.

use std::time::Duration;

use netabase_core::consensus::{Compaction, ConsensusConfig, LeaseConfig};
use serde::{Deserialize, Serialize};

/// The deliberate bugs a consensus scenario can switch on (`[consensus] inject`) that live
/// in the simulator's driver, state or client (with the `fault-injection` feature, the
/// bugs planted in the member itself, by the kebab-case names of the core's
/// `consensus::Mutant`, are injectable too):
/// - `"reply-before-sync"`: the driver sends promises and accepted votes before the log
///   writes they report are durable;
/// - `"no-dedup"`: the replicated state applies a retried entry again (its duplicate is
///   re-executed under a fresh id instead of being answered from the dedup table);
/// - `"local-read-as-linearizable"`: the client serves linearizable reads with a
///   [`ReadLevel::Local`](netabase_core::consensus::ReadLevel::Local) read and reports
///   them as linearizable.
pub const CONSENSUS_INJECTABLE: [&str; 3] = [
    "reply-before-sync",
    "no-dedup",
    "local-read-as-linearizable",
];

/// A consensus simulation: a Multi-Paxos cluster under faults, a client workload, and the
/// checkers of [`crate::consensus`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusSpec {
    /// Voting members of the first configuration (3 or 5 in the shipped scenarios).
    pub members: usize,
    /// Nodes outside the first configuration, started as joiners: the operator of
    /// `faults.membership_every_s` adds them (and replaces members with them).
    #[serde(default)]
    pub spares: usize,
    /// Length of the safety phase, in seconds of virtual time: faults and the workload
    /// run during it.
    pub duration_s: f64,
    /// The liveness bound: after every fault heals at the end of the safety phase, every
    /// member must apply a fresh write of every member within this many seconds.
    #[serde(default = "default_liveness_bound")]
    pub liveness_bound_s: f64,
    /// Client operations per second offered by all clients together.
    #[serde(default = "default_rate")]
    pub rate_per_s: f64,
    /// Clients per member. Each is bound to its member and has one operation in
    /// progress at a time (a write whose outcome it lost counts as over).
    #[serde(default = "default_clients")]
    pub clients_per_member: usize,
    /// Distinct keys the clients write and read (few keys: many conflicts).
    #[serde(default = "default_keys")]
    pub keys: u8,
    /// Fraction of the operations that are reads (the rest are puts, compare-and-sets
    /// and appends in equal parts; reads are linearizable, lease and local in equal parts).
    #[serde(default = "default_read_fraction")]
    pub read_fraction: f64,
    /// Search steps the linearizability check may take; running out fails the run.
    #[serde(default = "default_lin_budget")]
    pub lin_budget_steps: u64,
    /// A deliberate bug (one of [`CONSENSUS_INJECTABLE`]).
    #[serde(default)]
    pub inject: Option<String>,
    /// The links between members.
    #[serde(default)]
    pub network: ConsensusNetwork,
    /// Partitions, crashes, pauses, clocks and disks.
    #[serde(default)]
    pub faults: ConsensusFaults,
    /// The members' timing and bounds.
    #[serde(default)]
    pub timing: ConsensusTiming,
}

fn default_liveness_bound() -> f64 {
    5.0
}
fn default_rate() -> f64 {
    40.0
}
fn default_clients() -> usize {
    2
}
fn default_keys() -> u8 {
    3
}
fn default_read_fraction() -> f64 {
    0.5
}
fn default_lin_budget() -> u64 {
    5_000_000
}

/// Latency, loss, duplication, reordering and late delivery of the links.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusNetwork {
    /// One-way latency, uniform in `[min, max]` milliseconds.
    pub latency_ms: [f64; 2],
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Probability that a copy is held back by `reorder_delay_ms` more (overtaken by
    /// later messages).
    pub reorder: f64,
    /// See `reorder`.
    pub reorder_delay_ms: f64,
    /// Probability that a copy arrives late, after a delay uniform in `late_ms`: long
    /// enough for elections to pass, so such messages carry old ballots.
    pub late: f64,
    /// See `late`.
    pub late_ms: [f64; 2],
}

impl Default for ConsensusNetwork {
    fn default() -> Self {
        ConsensusNetwork {
            latency_ms: [0.2, 8.0],
            loss: 0.05,
            duplicate: 0.03,
            reorder: 0.05,
            reorder_delay_ms: 30.0,
            late: 0.01,
            late_ms: [300.0, 4_000.0],
        }
    }
}

/// The shape of a partition (`[consensus.faults] partitions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsensusPartition {
    /// The leader (a random member if there is none) is cut off both ways.
    LeaderIsolated,
    /// A random minority is cut off from the majority both ways.
    Minority,
    /// The leader's messages to every other member are lost; theirs still reach it.
    OneWayFromLeader,
    /// The leader and one other member cannot reach each other; both reach the rest.
    NonTransitive,
}

/// Faults of the safety phase. Everything heals at its end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusFaults {
    /// The partition shapes to draw from (empty: no partitions).
    pub partitions: Vec<ConsensusPartition>,
    /// Time from one partition's heal to the next's start, uniform in `[min, max]` s.
    pub partition_gap_s: [f64; 2],
    /// How long a partition lasts, uniform in `[min, max]` s.
    pub partition_length_s: [f64; 2],
    /// Time between crashes of single members (the leader half of the time), uniform in
    /// `[min, max]` s; `None`: no crashes. A crash loses the log writes not yet synced.
    pub crash_every_s: Option<[f64; 2]>,
    /// How long a crashed member stays down, uniform in `[min, max]` s.
    pub downtime_s: [f64; 2],
    /// Whether the whole cluster crashes once, at a random time, every member losing its
    /// unsynced writes at the same instant.
    pub cluster_crash: bool,
    /// Time between process pauses (the leader's, if there is one), uniform in
    /// `[min, max]` s; `None`: no pauses. A paused member handles nothing while its clock
    /// keeps running.
    pub pause_every_s: Option<[f64; 2]>,
    /// How long a pause lasts, uniform in `[min, max]` s; must exceed the lease wait
    /// plus the election timeout.
    pub pause_s: [f64; 2],
    /// Each member's clock runs this many parts per million fast or slow against
    /// virtual time. Two clocks then differ in rate by up to twice this, which must stay
    /// within the lease's drift bound ε (`timing.lease_drift_ppm`): `drift_ppm = ε / 2`
    /// is the bound.
    pub drift_ppm: u32,
    /// The adverse direction: a member that wins an election runs slow (its lease lasts
    /// longest) and every other member fast (its promise wait ends soonest). Otherwise
    /// each member's direction is drawn once.
    pub adverse_drift: bool,
    /// A log sync takes a time uniform in `[min, max]` milliseconds.
    pub sync_latency_ms: [f64; 2],
    /// One member, drawn from the seed, has a slow disk: its syncs take a time uniform
    /// in `[min, max]` milliseconds (`None`: no slow disk).
    pub slow_disk_ms: Option<[f64; 2]>,
    /// Time between membership changes, uniform in `[min, max]` s (`None`: the first
    /// configuration stays). The operator asks a random live member to add a node, remove
    /// a voter (the leader among them) or replace one, keeping `members` or `members + 1`
    /// voters; the network is cut anew when a change is decided and again when it comes
    /// into force α slots later.
    pub membership_every_s: Option<[f64; 2]>,
}

impl Default for ConsensusFaults {
    fn default() -> Self {
        ConsensusFaults {
            partitions: Vec::new(),
            partition_gap_s: [0.5, 2.5],
            partition_length_s: [0.5, 2.5],
            crash_every_s: None,
            downtime_s: [0.2, 1.7],
            cluster_crash: false,
            pause_every_s: None,
            pause_s: [1.2, 2.0],
            drift_ppm: 0,
            adverse_drift: false,
            sync_latency_ms: [0.2, 3.0],
            slow_disk_ms: None,
            membership_every_s: None,
        }
    }
}

/// The members' timing and bounds ([`ConsensusConfig`]); the defaults are short, so that
/// a run of seconds sees many elections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusTiming {
    /// Heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// Election timeout, ms.
    pub election_timeout_ms: u64,
    /// Retry interval, ms.
    pub retry_ms: u64,
    /// Proposal timeout (then the outcome is unknown), ms.
    pub proposal_timeout_ms: u64,
    /// Read timeout, ms.
    pub read_timeout_ms: u64,
    /// Slots in flight at once.
    pub concurrency: usize,
    /// Entries per batch.
    pub max_batch_entries: usize,
    /// Slots per catch-up answer.
    pub catch_up_slots: usize,
    /// Lease duration, ms (0: no leases).
    pub lease_ms: u64,
    /// The lease's drift bound ε, parts per million.
    pub lease_drift_ppm: u32,
    /// The lease's margin, ms.
    pub lease_margin_ms: u64,
    /// Members compact their log once this many applied slots beyond `compact_keep`
    /// are in it (0: never).
    pub compact_entries: u64,
    /// Applied slots kept behind the truncation point.
    pub compact_keep: u64,
    /// Bytes per snapshot chunk.
    pub snapshot_chunk_bytes: usize,
}

impl Default for ConsensusTiming {
    fn default() -> Self {
        ConsensusTiming {
            heartbeat_ms: 40,
            election_timeout_ms: 450,
            retry_ms: 60,
            proposal_timeout_ms: 4_000,
            read_timeout_ms: 2_000,
            concurrency: 4,
            max_batch_entries: 8,
            catch_up_slots: 3,
            lease_ms: 400,
            lease_drift_ppm: 50_000,
            lease_margin_ms: 0,
            compact_entries: 24,
            compact_keep: 6,
            snapshot_chunk_bytes: 512,
        }
    }
}

impl ConsensusSpec {
    /// The members' configuration.
    pub fn config(&self) -> ConsensusConfig {
        let t = &self.timing;
        ConsensusConfig {
            heartbeat_interval: Duration::from_millis(t.heartbeat_ms),
            election_timeout: Duration::from_millis(t.election_timeout_ms),
            retry_interval: Duration::from_millis(t.retry_ms),
            proposal_timeout: Duration::from_millis(t.proposal_timeout_ms),
            read_timeout: Duration::from_millis(t.read_timeout_ms),
            concurrency: t.concurrency,
            max_batch_entries: t.max_batch_entries,
            max_batch_bytes: 4096,
            max_entry_bytes: 1024,
            max_pending: 256,
            max_pending_reads: 256,
            catch_up_slots: t.catch_up_slots,
            lease: (t.lease_ms > 0).then(|| LeaseConfig {
                duration: Duration::from_millis(t.lease_ms),
                drift_ppm: t.lease_drift_ppm,
                margin: Duration::from_millis(t.lease_margin_ms),
            }),
            alpha: ConsensusConfig::default().alpha,
            forward_rate: ConsensusConfig::default().forward_rate,
            compaction: (t.compact_entries > 0).then_some(Compaction {
                entries: t.compact_entries,
                bytes: u64::MAX,
                keep: t.compact_keep,
            }),
            snapshot_chunk_bytes: t.snapshot_chunk_bytes,
            max_snapshot_bytes: 64 << 20,
        }
    }

    /// Whether the deliberate bug `name` is switched on.
    pub fn injects(&self, name: &str) -> bool {
        self.inject.as_deref() == Some(name)
    }

    /// The bug planted in every member, if `inject` names one.
    #[cfg(feature = "fault-injection")]
    pub fn member_bug(&self) -> Option<netabase_core::consensus::Mutant> {
        self.inject
            .as_deref()
            .and_then(netabase_core::consensus::Mutant::from_name)
    }

    /// Without the `fault-injection` feature no member bug is injectable.
    #[cfg(not(feature = "fault-injection"))]
    pub fn member_bug(&self) -> Option<std::convert::Infallible> {
        None
    }

    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), String> {
        let range = |r: [f64; 2]| r[0] >= 0.0 && r[1] >= r[0] && r[1].is_finite();
        let prob = |p: f64| (0.0..=1.0).contains(&p);
        if !(1..=9).contains(&self.members) || self.members + self.spares > 9 {
            return Err("consensus.members must be in 1..=9, with spares 9 nodes at most".into());
        }
        if !(self.duration_s > 0.0 && self.duration_s.is_finite()) {
            return Err("consensus.duration_s must be positive".into());
        }
        if !(self.liveness_bound_s > 0.0 && self.liveness_bound_s.is_finite()) {
            return Err("consensus.liveness_bound_s must be positive".into());
        }
        if !(self.rate_per_s >= 0.0 && self.rate_per_s.is_finite())
            || self.keys == 0
            || self.keys == u8::MAX
            || self.clients_per_member == 0
        {
            return Err(
                "consensus needs rate_per_s >= 0, keys in 1..=254 and clients_per_member >= 1"
                    .into(),
            );
        }
        if !prob(self.read_fraction) {
            return Err("consensus.read_fraction must be in [0, 1]".into());
        }
        if let Some(bug) = &self.inject
            && !CONSENSUS_INJECTABLE.contains(&bug.as_str())
            && self.member_bug().is_none()
        {
            return Err(format!(
                "consensus.inject must be one of {CONSENSUS_INJECTABLE:?} (the member's own \
                 planted bugs need the fault-injection feature)"
            ));
        }
        let n = &self.network;
        if !range(n.latency_ms) || !range(n.late_ms) || n.reorder_delay_ms < 0.0 {
            return Err("consensus.network ranges must be [min, max] with 0 <= min <= max".into());
        }
        if ![n.loss, n.duplicate, n.reorder, n.late]
            .into_iter()
            .all(prob)
        {
            return Err("consensus.network probabilities must be in [0, 1]".into());
        }
        let f = &self.faults;
        for r in [
            Some(f.partition_gap_s),
            Some(f.partition_length_s),
            f.crash_every_s,
            Some(f.downtime_s),
            f.pause_every_s,
            Some(f.pause_s),
            Some(f.sync_latency_ms),
            f.slow_disk_ms,
            f.membership_every_s,
        ]
        .into_iter()
        .flatten()
        {
            if !range(r) {
                return Err(
                    "consensus.faults ranges must be [min, max] with 0 <= min <= max".into(),
                );
            }
        }
        for r in [
            Some(f.partition_gap_s),
            f.crash_every_s,
            f.pause_every_s,
            f.membership_every_s,
        ]
        .into_iter()
        .flatten()
        {
            if r[0] <= 0.0 {
                return Err("consensus.faults intervals must be positive".into());
            }
        }
        let config = self.config();
        config
            .validate()
            .map_err(|e| format!("[consensus.timing]: {e}"))?;
        if let Some(lease) = config.lease {
            if 2 * u64::from(f.drift_ppm) > u64::from(lease.drift_ppm) {
                return Err(
                    "two clocks drifting apart at 2 x consensus.faults.drift_ppm exceed the lease's drift bound: leases would be unsafe"
                        .into(),
                );
            }
            if f.pause_every_s.is_some() {
                let wait = lease.acceptor_wait() + config.election_timeout;
                if f.pause_s[0] <= wait.as_secs_f64() {
                    return Err(format!(
                        "consensus.faults.pause_s must exceed the lease wait plus the election timeout ({:.3} s)",
                        wait.as_secs_f64()
                    ));
                }
            }
        }
        if f.drift_ppm >= 500_000 {
            return Err("consensus.faults.drift_ppm must be below 500000".into());
        }
        Ok(())
    }
}
