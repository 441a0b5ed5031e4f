//! Scenario files: what to simulate, as TOML.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A complete description of one simulation; every random choice in it derives from `seed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, shown in reports.
    pub name: String,
    /// What the scenario exercises.
    #[serde(default)]
    pub description: String,
    /// Number of nodes (DHT scenarios; a consensus scenario names its members in
    /// `[consensus]` and leaves this out).
    #[serde(default)]
    pub nodes: usize,
    /// Default seed (the CLI's `--seed` overrides it).
    #[serde(default = "one")]
    pub seed: u64,
    /// Total virtual time of the run, in seconds (DHT scenarios; a consensus scenario
    /// sets its length in `[consensus]`).
    #[serde(default)]
    pub duration_s: f64,
    /// When every fault heals (partitions, clogs, loss, duplication, reordering, crashed
    /// nodes restart): the start of the liveness phase. `None`: faults run to the end.
    #[serde(default)]
    pub faults_end_s: Option<f64>,
    /// Link behaviour.
    #[serde(default)]
    pub network: NetworkSpec,
    /// How nodes join.
    #[serde(default)]
    pub join: JoinSpec,
    /// The operations clients issue.
    #[serde(default)]
    pub workload: WorkloadSpec,
    /// Scheduled partitions.
    #[serde(default)]
    pub partitions: Vec<PartitionSpec>,
    /// Clogging random nodes one by one, then healing them in random order.
    #[serde(default)]
    pub swizzle: Option<SwizzleSpec>,
    /// Crashes and restarts.
    #[serde(default)]
    pub churn: Option<ChurnSpec>,
    /// Clock skew, drift and steps.
    #[serde(default)]
    pub clock: ClockSpec,
    /// The disk under every node's store: `None`, every write is durable at once.
    #[serde(default)]
    pub disk: Option<DiskSpec>,
    /// What the checkers demand.
    #[serde(default)]
    pub checks: CheckSpec,
    /// Protocol parameters of every node.
    #[serde(default)]
    pub core: CoreSpec,
    /// Deliberate bugs, to show that the checkers catch them.
    #[serde(default)]
    pub faults: FaultSpec,
    /// A consensus scenario: a Multi-Paxos cluster instead of a DHT, run by
    /// [`crate::consensus::run_consensus`] (not by [`crate::run`]). The DHT sections do
    /// not apply to it.
    #[serde(default)]
    pub consensus: Option<crate::consensus::ConsensusSpec>,
}

fn one() -> u64 {
    1
}

/// The default of [`NetworkSpec::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Per-link latency, loss, duplication, reordering and connection limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSpec {
    /// Each link's base one-way latency is drawn uniformly from `[min, max]` ms.
    pub latency_min_ms: f64,
    /// See `latency_min_ms`.
    pub latency_max_ms: f64,
    /// Per-message extra delay, uniform in `[0, jitter]` ms.
    pub jitter_ms: f64,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Probability that a message is held back by `reorder_delay_ms`, overtaking order.
    pub reorder: f64,
    /// See `reorder`.
    pub reorder_delay_ms: f64,
    /// Most connections a node keeps open: opening one more closes its least recently
    /// used quarter, as libp2p's connection limits and idle timeouts do (kubo's connection
    /// manager keeps 600–900).
    pub max_connections: usize,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            latency_min_ms: 5.0,
            latency_max_ms: 50.0,
            jitter_ms: 5.0,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay_ms: 100.0,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// How nodes join the network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JoinSpec {
    /// Nodes that start at time zero knowing each other; every later node is introduced to
    /// one of them and bootstraps.
    pub bootstrap_nodes: usize,
    /// The other nodes join at uniform random times in `[0, spread_s]`.
    pub spread_s: f64,
}

impl Default for JoinSpec {
    fn default() -> Self {
        JoinSpec {
            bootstrap_nodes: 1,
            spread_s: 10.0,
        }
    }
}

/// The operations issued by clients at random nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadSpec {
    /// When operations start, in seconds.
    pub start_s: f64,
    /// When operations stop being issued.
    pub end_s: f64,
    /// Operations per second of virtual time.
    pub rate_per_s: f64,
    /// Relative weight of puts (each to a fresh key, until `max_keys` keys exist; then
    /// they overwrite).
    pub put: f64,
    /// Relative weight of overwrites of keys that were written before.
    pub overwrite: f64,
    /// Relative weight of removals (tombstones) of keys that were written before.
    pub remove: f64,
    /// Relative weight of gets (of keys whose put completed).
    pub get: f64,
    /// Relative weight of provider announcements (fresh keys).
    pub provide: f64,
    /// Relative weight of provider lookups (of announced keys).
    pub get_providers: f64,
    /// Relative weight of closest-peer lookups of random keys.
    pub lookup: f64,
    /// Size of put values.
    pub value_bytes: usize,
    /// Most distinct record keys (`None`: every put writes a fresh key). Fewer keys, more
    /// writers per key.
    pub max_keys: Option<usize>,
    /// Peers that must confirm a put (or removal) for it to be acknowledged.
    pub put_quorum: usize,
    /// Copies a get collects before it answers with the newest.
    pub get_quorum: usize,
    /// Whether puts write versioned, signed records (envelopes sealed by the writer's
    /// node, as typed models are written). `false`: plain values without a version, as a
    /// stock libp2p peer writes them (no signatures to check: much cheaper to simulate);
    /// removals need versions.
    pub versioned: bool,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            start_s: 30.0,
            end_s: 60.0,
            rate_per_s: 10.0,
            put: 1.0,
            get: 2.0,
            provide: 0.5,
            get_providers: 0.5,
            lookup: 1.0,
            value_bytes: 64,
            overwrite: 0.0,
            remove: 0.0,
            max_keys: None,
            put_quorum: 1,
            get_quorum: 1,
            versioned: true,
        }
    }
}

/// The shape of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionKind {
    /// Two groups that cannot reach each other.
    Split,
    /// One node cut off from all others.
    Isolate,
    /// Messages from group A to group B are lost; B to A still arrive.
    OneWay,
}

/// A partition that starts and heals at scheduled times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    /// Its shape.
    pub kind: PartitionKind,
    /// Fraction of the nodes in group A (split, one-way), chosen at random.
    #[serde(default = "half")]
    pub fraction: f64,
    /// When it starts, in seconds.
    pub start_s: f64,
    /// When it heals.
    pub end_s: f64,
}

fn half() -> f64 {
    0.5
}

/// Clog `nodes` random nodes one every `step_s` from `start_s`, then heal them in random
/// order, one every `step_s`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwizzleSpec {
    /// When the first node is clogged.
    pub start_s: f64,
    /// Time between steps.
    pub step_s: f64,
    /// How many nodes are clogged.
    pub nodes: usize,
}

/// Crashes at random times in `[start_s, end_s]`, each followed by a restart after a
/// downtime drawn from `[downtime_min_s, downtime_max_s]`. A restarted node keeps only what
/// its store made durable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChurnSpec {
    /// Number of crashes.
    pub crashes: usize,
    /// Window start.
    pub start_s: f64,
    /// Window end.
    pub end_s: f64,
    /// Shortest downtime.
    pub downtime_min_s: f64,
    /// Longest downtime.
    pub downtime_max_s: f64,
}

/// Clocks. Skew moves a node's whole clock (its timers and its wall clock); drift and
/// steps move only its wall clock, which versions records, never its timers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockSpec {
    /// Each node's clock is ahead of virtual time by a uniform amount in `[0, max]` ms.
    pub max_skew_ms: f64,
    /// Each node's wall clock runs fast or slow by a uniform rate in `[-max, max]` parts
    /// per million.
    pub max_drift_ppm: f64,
    /// Scheduled wall-clock steps.
    pub steps: Vec<ClockStepSpec>,
}

/// At `at_s`, the wall clocks of `nodes` random nodes jump by `offset_ms` (negative:
/// backwards), as an NTP correction or an operator would make them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockStepSpec {
    /// When, in seconds of virtual time.
    pub at_s: f64,
    /// How far, in milliseconds.
    pub offset_ms: f64,
    /// How many nodes step (chosen at random).
    #[serde(default = "one_usize")]
    pub nodes: usize,
}

fn one_usize() -> usize {
    1
}

/// A disk under each node's store: a write is durable only after a sync, which takes a
/// latency drawn from `sync_latency_ms`; a crash loses what is not synced. A node follows
/// the group-commit output rule: its requests leave at once, its other outputs wait for
/// the sync, and it handles no input while a sync runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// A sync takes a uniform time in `[min, max]` milliseconds.
    pub sync_latency_ms: [f64; 2],
}

/// What the checkers demand.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckSpec {
    /// Minimum fraction of eligible gets (after a completed put, no partition between)
    /// that must find the value.
    pub min_get_success: f64,
    /// After `faults_end_s + liveness_grace_s`, every operation must succeed.
    pub liveness_grace_s: f64,
    /// How often every node's memory bounds are checked, in seconds.
    pub memory_check_interval_s: f64,
    /// Fraction of lookups, issued while no fault is active and all nodes have joined,
    /// whose result is compared with a brute-force sort of all live nodes.
    pub exact_lookup_sample: f64,
    /// How long an acknowledged write may take to reach every copy of its key (its
    /// fan-out, then a replication round that updates stale and cached copies): the
    /// acked-writes and no-resurrection checkers hold gets to the writes acknowledged this
    /// long before they started.
    pub settle_s: f64,
    /// When every record key written so far is read once more, at a random node (after
    /// the liveness grace, this shows that no acknowledged write was lost).
    pub final_reads_s: Option<f64>,
    /// When the closest live nodes of every key are compared, store by store: they must
    /// hold the same version (`None`: not checked).
    pub convergence_s: Option<f64>,
}

impl Default for CheckSpec {
    fn default() -> Self {
        CheckSpec {
            min_get_success: 1.0,
            liveness_grace_s: 30.0,
            memory_check_interval_s: 60.0,
            exact_lookup_sample: 0.0,
            settle_s: 0.0,
            final_reads_s: None,
            convergence_s: None,
        }
    }
}

/// Protocol parameters (unset fields keep the core's defaults).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoreSpec {
    /// Bucket size.
    pub k: Option<usize>,
    /// Lookup parallelism.
    pub alpha: Option<usize>,
    /// Request timeout, ms.
    pub request_timeout_ms: Option<u64>,
    /// Query timeout, ms.
    pub query_timeout_ms: Option<u64>,
    /// Periodic bootstrap interval, s (0 disables).
    pub bootstrap_interval_s: Option<u64>,
    /// Replication interval, s (0 disables).
    pub replication_interval_s: Option<u64>,
    /// Republication interval of a node's own records, s (0 disables).
    pub publication_interval_s: Option<u64>,
    /// Lifetime of published records, s (0: never expire).
    pub record_ttl_s: Option<u64>,
    /// How long a tombstone is kept after its own timestamp, s.
    pub tombstone_horizon_s: Option<u64>,
    /// Peers a successful get caches the record at.
    pub cache_peers: Option<usize>,
    /// How far ahead of a node's wall clock a received version is merged into its clock, ms.
    pub hlc_max_offset_ms: Option<u64>,
    /// How much further ahead it is still accepted, ms.
    pub hlc_max_drift_ms: Option<u64>,
}

/// The deliberate bugs a scenario can switch on (`[faults] inject`).
pub const INJECTABLE: [&str; 7] = [
    "corrupt-every-third-value",
    "store-ignores-versions",
    "acks-before-sync",
    "get-returns-oldest-copy",
    "clock-ceiling-not-persisted",
    "tombstone-horizon-ignored",
    "unchecked-signatures",
];

/// Deliberate bugs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultSpec {
    /// One of [`INJECTABLE`]:
    /// - `"corrupt-every-third-value"`: every node corrupts every third record it serves
    ///   (the simulator changes its answers on their way out);
    /// - `"store-ignores-versions"`: every store's compare-and-put takes the incoming copy,
    ///   older or not;
    /// - `"acks-before-sync"`: nodes carry out every output at once instead of waiting for
    ///   the sync of the writes it reports, so a crash can lose what was acknowledged;
    /// - `"get-returns-oldest-copy"`: the client takes the last copy of a get's answer (the
    ///   oldest) instead of the first;
    /// - `"clock-ceiling-not-persisted"`: stores drop the clock ceiling, so a restarted
    ///   node's clock starts from its wall clock;
    /// - `"tombstone-horizon-ignored"`: tombstones are kept only a second after their
    ///   timestamp, however long `core.tombstone_horizon_s` says;
    /// - `"unchecked-signatures"`: nodes take records from the network without checking
    ///   their signatures, so the forgers' copies get through (the simulator signs each
    ///   forgery with the key of the origin it names, which is what a node that checks no
    ///   signature lets through).
    pub inject: Option<String>,
    /// How many nodes (the last ones) are forgers: every record of another origin they
    /// serve or forward (GET_VALUE answers, replicated, cached and repaired copies) goes
    /// out with a later timestamp and another payload under the original signature, which
    /// no longer verifies. Honest nodes must refuse every such copy.
    pub forgers: usize,
}

impl FaultSpec {
    /// Whether `name` is switched on.
    pub fn is(&self, name: &str) -> bool {
        self.inject.as_deref() == Some(name)
    }
}

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown fields.
    #[error("invalid scenario {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The error.
        source: toml::de::Error,
    },
    /// The values are inconsistent.
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ScenarioError::Parse { source, .. } => ScenarioError::Parse {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates scenario TOML.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|source| ScenarioError::Parse {
            path: "<text>".into(),
            source,
        })?;
        s.validate()?;
        Ok(s)
    }

    /// The core's configuration every node of the scenario runs: the defaults with the
    /// `[core]` settings applied.
    pub fn core_config(&self) -> netabase_core::Config {
        let mut config = netabase_core::Config::default();
        let c = &self.core;
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
        if let Some(t) = c.publication_interval_s {
            config.publication_interval = (t > 0).then(|| Duration::from_secs(t));
        }
        if let Some(t) = c.record_ttl_s {
            config.record_ttl = (t > 0).then(|| Duration::from_secs(t));
        }
        if let Some(t) = c.tombstone_horizon_s {
            config.tombstone_horizon = Duration::from_secs(t);
        }
        if let Some(n) = c.cache_peers {
            config.cache_peers = n;
        }
        if let Some(t) = c.hlc_max_offset_ms {
            config.hlc.max_offset = Duration::from_millis(t);
        }
        if let Some(t) = c.hlc_max_drift_ms {
            config.hlc.max_drift = Duration::from_millis(t);
        }
        config
    }

    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: &str| Err(ScenarioError::Invalid(m.to_string()));
        if let Some(c) = &self.consensus {
            if self.nodes != 0 || self.duration_s != 0.0 {
                return bad(
                    "a consensus scenario sets members and duration_s in [consensus], not nodes and duration_s",
                );
            }
            return c.validate().map_err(ScenarioError::Invalid);
        }
        if self.nodes < 2 {
            return bad("nodes must be at least 2");
        }
        if self.join.bootstrap_nodes == 0 || self.join.bootstrap_nodes > self.nodes {
            return bad("join.bootstrap_nodes must be in 1..=nodes");
        }
        if self.duration_s.is_nan() || self.duration_s <= 0.0 {
            return bad("duration_s must be positive");
        }
        let n = &self.network;
        if n.latency_min_ms < 0.0 || n.latency_max_ms < n.latency_min_ms || n.jitter_ms < 0.0 {
            return bad("network latencies must satisfy 0 <= min <= max, jitter >= 0");
        }
        if n.max_connections < 4 {
            return bad("network.max_connections must be at least 4");
        }
        for p in [n.loss, n.duplicate, n.reorder] {
            if !(0.0..=1.0).contains(&p) {
                return bad("network probabilities must be in [0, 1]");
            }
        }
        let w = &self.workload;
        if w.rate_per_s < 0.0 || w.end_s < w.start_s {
            return bad("workload needs rate >= 0 and end >= start");
        }
        if [w.put, w.get, w.provide, w.get_providers, w.lookup]
            .iter()
            .any(|x| *x < 0.0)
        {
            return bad("workload weights must be non-negative");
        }
        for p in &self.partitions {
            if p.end_s < p.start_s || !(0.0..=1.0).contains(&p.fraction) {
                return bad("partitions need end >= start and fraction in [0, 1]");
            }
        }
        if let Some(c) = &self.churn
            && (c.end_s < c.start_s || c.downtime_max_s < c.downtime_min_s)
        {
            return bad("churn needs end >= start and max downtime >= min");
        }
        if let Some(f) = &self.faults.inject
            && !INJECTABLE.contains(&f.as_str())
        {
            return Err(ScenarioError::Invalid(format!(
                "faults.inject must be one of {INJECTABLE:?}"
            )));
        }
        if !w.versioned && w.remove > 0.0 {
            return bad("workload.remove needs versioned records");
        }
        if self.faults.forgers >= self.nodes.saturating_sub(self.join.bootstrap_nodes) {
            return bad("faults.forgers must leave the bootstrap nodes and one more honest");
        }
        self.core_config()
            .validate()
            .map_err(|e| ScenarioError::Invalid(format!("[core]: {e}")))?;
        if w.put_quorum == 0 || w.get_quorum == 0 {
            return bad("workload quorums must be at least 1");
        }
        if [w.overwrite, w.remove].iter().any(|x| *x < 0.0) {
            return bad("workload weights must be non-negative");
        }
        if let Some(d) = &self.disk
            && (d.sync_latency_ms[0] < 0.0 || d.sync_latency_ms[1] < d.sync_latency_ms[0])
        {
            return bad("disk.sync_latency_ms must be [min, max] with 0 <= min <= max");
        }
        if self.clock.max_drift_ppm < 0.0 || self.clock.max_drift_ppm >= 1e6 {
            return bad("clock.max_drift_ppm must be in [0, 1e6)");
        }
        Ok(())
    }
}
