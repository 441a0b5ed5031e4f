//! The network benchmark itself, shared by the bench binary (`main.rs`) and the quick run in
//! the root package's test suite: networks of Netabase nodes and of stock rust-libp2p
//! Kademlia nodes on 127.0.0.1, the same operation mix on each, and the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use libp2p::kad;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, noise, tcp, yamux};
use netabase::core::model::{Envelope, record_key};
use netabase::store::RecordStoreConfig;
use netabase::swarm::Runtime;
use netabase::{NetabaseConfig, StorageBackend, netabase_definition_module};
use tokio::sync::{mpsc, oneshot};

/// The benchmark's records: an id and a payload of the configured size.
// The macro generates public key types without documentation of their own.
#[allow(missing_docs, unreachable_pub)]
#[netabase_definition_module(BenchDefinition, BenchKeys)]
pub mod model {
    use netabase::NetabaseModel;

    /// One benchmark record.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Item {
        /// The primary key.
        #[primary_key]
        pub id: u64,
        /// The payload.
        pub payload: String,
    }
}
use model::{BenchDefinition, Item, ItemPrimaryKey};

/// The Kademlia protocol name both kinds of node speak.
const PROTOCOL: &str = "/netabase/kad/1.0.0";
/// How long a connection without streams stays open, on both kinds of node.
const IDLE: Duration = Duration::from_secs(60);
/// Records a node may hold: far more than a run writes, on both kinds of node.
const MAX_RECORDS: usize = 1_000_000;

/// One kind of network under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum System {
    /// Stock rust-libp2p `kad::Behaviour` with its `MemoryStore`, on tokio.
    Stock,
    /// Stock rust-libp2p `kad::Behaviour` on tokio over [`RedbRecordStore`], a record store
    /// on redb whose every put is a durable commit (fdatasync) before it returns.
    StockRedb,
    /// Netabase nodes with a storage backend, on a runtime.
    Netabase(Backend, Rt),
}

/// The storage backend of a Netabase network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// The memory backend.
    Memory,
    /// redb, every commit durable (fdatasync) before it is acknowledged.
    Redb,
}

/// The runtime the nodes of a Netabase network run on (their drivers and connections; the
/// load generator is the same tokio one for every network).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rt {
    /// tokio (each node's driver on a thread of its own).
    Tokio,
    /// async-std (feature `async-std`).
    AsyncStd,
    /// smol (feature `smol`; its global executor runs `SMOL_THREADS` threads, 1 unless
    /// set).
    Smol,
}

impl Rt {
    /// Its name, as `--runtime` and cargo's features spell it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Rt::Tokio => "tokio",
            Rt::AsyncStd => "async-std",
            Rt::Smol => "smol",
        }
    }

    /// Whether this build has the runtime (the `netabase` crate's feature of that name).
    pub(crate) fn built(self) -> bool {
        match self {
            Rt::Tokio => cfg!(feature = "tokio"),
            Rt::AsyncStd => cfg!(feature = "async-std"),
            Rt::Smol => cfg!(feature = "smol"),
        }
    }

    const ALL: [Rt; 3] = [Rt::Tokio, Rt::AsyncStd, Rt::Smol];
}

impl System {
    /// Netabase with the memory backend on tokio.
    pub(crate) const NETABASE_MEMORY: System = System::Netabase(Backend::Memory, Rt::Tokio);
    /// Netabase with durable redb on tokio.
    pub(crate) const NETABASE_REDB: System = System::Netabase(Backend::Redb, Rt::Tokio);

    /// Its name in the report.
    pub(crate) fn name(self) -> String {
        match self {
            System::Stock => "stock libp2p kad (MemoryStore)".to_string(),
            System::StockRedb => "stock libp2p kad (redb durable)".to_string(),
            System::Netabase(Backend::Memory, rt) => format!("Netabase memory, {}", rt.name()),
            System::Netabase(Backend::Redb, rt) => {
                format!("Netabase redb durable, {}", rt.name())
            }
        }
    }

    /// Whether its store makes every write durable (redb), so that it is compared with
    /// stock kad over redb too.
    fn durable(self) -> bool {
        matches!(self, System::StockRedb | System::Netabase(Backend::Redb, _))
    }

    /// The systems named in `NETABASE_BENCH_SYSTEMS`: a comma-separated list of `stock`
    /// and `stock-redb` (stock kad over its memory store and over a durable redb store),
    /// `memory` and `redb` (Netabase on tokio), `memory-<runtime>` and `redb-<runtime>`
    /// (runtime `tokio`, `async-std` or `smol`; a leading `netabase-` is allowed), and
    /// `all`: both stock networks, then both backends on every runtime this build has.
    pub(crate) fn parse_list(list: &str) -> Result<Vec<System>, String> {
        let mut systems = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "all" {
                systems.push(System::Stock);
                systems.push(System::StockRedb);
                for rt in Rt::ALL.into_iter().filter(|rt| rt.built()) {
                    systems.push(System::Netabase(Backend::Memory, rt));
                    systems.push(System::Netabase(Backend::Redb, rt));
                }
                continue;
            }
            let system = match name.strip_prefix("netabase-").unwrap_or(name) {
                "stock" => System::Stock,
                "stock-redb" => System::StockRedb,
                other => {
                    let (backend, rt) = other.split_once('-').unwrap_or((other, "tokio"));
                    let backend = match backend {
                        "memory" => Backend::Memory,
                        "redb" => Backend::Redb,
                        _ => return Err(unknown_system(name)),
                    };
                    let rt = Rt::ALL
                        .into_iter()
                        .find(|r| r.name() == rt)
                        .ok_or_else(|| unknown_system(name))?;
                    if !rt.built() {
                        return Err(format!(
                            "NETABASE_BENCH_SYSTEMS: {name:?} needs the {0} runtime: run with \
                             `--features {0}`",
                            rt.name()
                        ));
                    }
                    System::Netabase(backend, rt)
                }
            };
            if !systems.contains(&system) {
                systems.push(system);
            }
        }
        Ok(systems)
    }
}

fn unknown_system(name: &str) -> String {
    format!(
        "NETABASE_BENCH_SYSTEMS: {name:?} is none of stock, stock-redb, memory, redb, \
         memory-<runtime>, redb-<runtime> (runtime tokio, async-std or smol), all"
    )
}

/// What a run does.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Nodes per network.
    pub(crate) nodes: usize,
    /// Kademlia's K (bucket size and replication factor), the same on every node.
    pub(crate) k: usize,
    /// Bytes of payload per record.
    pub(crate) payload: usize,
    /// Operations in flight at once.
    pub(crate) concurrency: usize,
    /// Operations per network before measuring (connections, caches, allocator).
    pub(crate) warmup: usize,
    /// Measured operations per network and round.
    pub(crate) ops: usize,
    /// Rounds; each round runs every network once, in turn (each round starting one
    /// network later than the one before), so that load from elsewhere on the machine
    /// falls on all of them alike. A network exists only during its turn: it is started,
    /// warmed up, measured and stopped before the next one starts.
    pub(crate) rounds: usize,
    /// 4 KiB appends with an fdatasync each, in the stores' directory, at the start of
    /// every round: the disk's fsync floor.
    pub(crate) floor_syncs: usize,
    /// The networks, in the order they run within a round.
    pub(crate) systems: Vec<System>,
}

impl Settings {
    /// The full run.
    pub(crate) fn full() -> Settings {
        Settings {
            nodes: 10,
            k: 5,
            payload: 256,
            concurrency: 16,
            warmup: 200,
            ops: 1000,
            rounds: 5,
            floor_syncs: 200,
            systems: vec![
                System::Stock,
                System::StockRedb,
                System::NETABASE_MEMORY,
                System::NETABASE_REDB,
            ],
        }
    }

    /// A run of a few seconds that checks the benchmark works.
    pub(crate) fn quick() -> Settings {
        Settings {
            warmup: 10,
            ops: 30,
            rounds: 1,
            floor_syncs: 20,
            concurrency: 4,
            ..Settings::full()
        }
    }

    /// The full or the quick run (`NETABASE_BENCH_QUICK=1`), with any of
    /// `NETABASE_BENCH_{NODES,K,PAYLOAD,CONCURRENCY,WARMUP,OPS,ROUNDS}` overriding, and
    /// `NETABASE_BENCH_SYSTEMS` choosing the networks (see [`System::parse_list`]).
    pub(crate) fn from_env() -> Result<Settings, String> {
        let quick = std::env::var("NETABASE_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
        let mut s = if quick {
            Settings::quick()
        } else {
            Settings::full()
        };
        for (name, field) in [
            ("NODES", &mut s.nodes),
            ("K", &mut s.k),
            ("PAYLOAD", &mut s.payload),
            ("CONCURRENCY", &mut s.concurrency),
            ("WARMUP", &mut s.warmup),
            ("OPS", &mut s.ops),
            ("ROUNDS", &mut s.rounds),
        ] {
            let var = format!("NETABASE_BENCH_{name}");
            if let Ok(value) = std::env::var(&var) {
                *field = value.parse().map_err(|e| format!("{var}={value:?}: {e}"))?;
            }
        }
        if let Ok(value) = std::env::var("NETABASE_BENCH_SYSTEMS") {
            s.systems = System::parse_list(&value)?;
        }
        if s.nodes < 3
            || s.k == 0
            || s.concurrency == 0
            || s.rounds == 0
            || s.ops == 0
            || s.systems.is_empty()
        {
            return Err("need NODES >= 3, K, CONCURRENCY, OPS, ROUNDS >= 1 and a network".into());
        }
        Ok(s)
    }
}

/// The measurements of one network.
#[derive(Debug, Clone)]
pub(crate) struct SystemReport {
    /// Which network.
    pub(crate) system: System,
    /// Measured operations (a put and a get each) that succeeded.
    pub(crate) ops: usize,
    /// Measured operations that failed (a put without a peer, a get that found nothing or
    /// something else).
    pub(crate) failures: usize,
    /// Wall time of the measured operations, all rounds.
    pub(crate) seconds: f64,
    /// Latencies of the puts, the gets and the whole operations, sorted.
    pub(crate) put: Vec<Duration>,
    /// See `put`.
    pub(crate) get: Vec<Duration>,
    /// See `put`.
    pub(crate) op: Vec<Duration>,
    /// Bytes of one record's value on the wire (the sealed envelope).
    pub(crate) value_bytes: usize,
    /// Kademlia requests the nodes served during the measured operations.
    pub(crate) requests: u64,
    /// Record signatures the nodes verified during the measured operations (`None`: the
    /// network does not count them).
    pub(crate) verified: Option<u64>,
    /// CPU time the whole process used during the measured operations, when the platform
    /// reports it: this network's nodes and the load generator (no other network exists
    /// while it runs).
    pub(crate) cpu_seconds: Option<f64>,
    /// Each round's measurements, in order.
    pub(crate) rounds: Vec<RoundStats>,
}

/// One network's measured operations in one round.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoundStats {
    /// Operations that succeeded.
    pub(crate) ops: usize,
    /// Operations that failed, and errors of a stock redb store.
    pub(crate) failures: usize,
    /// Wall time.
    pub(crate) seconds: f64,
    /// CPU time of the process (see [`SystemReport::cpu_seconds`]).
    pub(crate) cpu_seconds: Option<f64>,
}

impl RoundStats {
    /// Operations per second.
    pub(crate) fn throughput(&self) -> f64 {
        self.ops as f64 / self.seconds.max(f64::MIN_POSITIVE)
    }

    /// CPU milliseconds per operation (succeeded or not).
    fn cpu_ms_per_op(&self) -> Option<f64> {
        self.cpu_seconds
            .map(|c| c * 1000.0 / (self.ops + self.failures).max(1) as f64)
    }
}

/// The median, least and greatest of `v` (`None` if empty).
pub(crate) fn spread(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    v.sort_by(f64::total_cmp);
    let (first, last) = (*v.first()?, *v.last()?);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((median, first, last))
}

impl SystemReport {
    /// Operations per second over all rounds.
    // The bench binary reports rounds' medians; the test suite checks this total.
    #[allow(dead_code)]
    pub(crate) fn throughput(&self) -> f64 {
        self.ops as f64 / self.seconds.max(f64::MIN_POSITIVE)
    }

    /// `total` per operation (succeeded or not).
    pub(crate) fn per_op(&self, total: f64) -> f64 {
        total / (self.ops + self.failures).max(1) as f64
    }
}

/// CPU time (user and system) this process has used so far, from `/proc/self/stat`
/// (Linux); `None` elsewhere.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (in parentheses, which may hold spaces) start
    // with the state (field 3); utime and stime are fields 14 and 15, in 1/100 s.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The `q`-quantile (0..=1) of sorted `v`.
pub(crate) fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((v.len() as f64) * q).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The whole run.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// What ran.
    pub(crate) settings: Settings,
    /// One entry per network, in the order of `settings.systems`.
    pub(crate) systems: Vec<SystemReport>,
    /// The fsync floor of each round: the median latency of a 4 KiB append and its
    /// fdatasync in the directory the stores are in (`None`: it could not be measured).
    pub(crate) floor: Vec<Option<Duration>>,
    /// How the nodes are scheduled (threads, executors and their worker counts).
    pub(crate) scheduling: String,
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// `(median, least, greatest)` as `median (least-greatest)`, with `digits` decimals.
fn range(s: Option<(f64, f64, f64)>, digits: usize) -> String {
    s.map_or_else(
        || "-".to_string(),
        |(m, lo, hi)| format!("{m:.digits$} ({lo:.digits$}-{hi:.digits$})"),
    )
}

impl Report {
    /// The report of `system`, if it ran.
    pub(crate) fn of(&self, system: System) -> Option<&SystemReport> {
        self.systems.iter().find(|r| r.system == system)
    }

    /// `r`'s throughput over `base`'s in each round (rounds interleave the networks, so a
    /// round's ratio compares networks measured under about the same load), as median,
    /// least and greatest.
    fn ratio(r: &SystemReport, base: &SystemReport) -> Option<(f64, f64, f64)> {
        spread(
            r.rounds
                .iter()
                .zip(&base.rounds)
                .map(|(a, b)| a.throughput() / b.throughput().max(f64::MIN_POSITIVE))
                .collect(),
        )
    }

    /// The table, the ratios against the stock networks, and the fsync floor.
    pub(crate) fn render(&self) -> String {
        let s = &self.settings;
        let value = self.systems.first().map_or(0, |r| r.value_bytes);
        let mut out = format!(
            "{} nodes per network on 127.0.0.1 (TCP + noise + yamux), K = {} (bucket size and \
             replication factor on both sides), put and get quorum 1, {} B payload ({} B \
             record value), {} operations in flight, {} round(s) x {} measured operations \
             per network (+{} warm-up each round), networks interleaved, each one alone in \
             the process during its turn; one operation = put at a node outside the \
             record's K closest, then get from the farthest node\n{}\n\n",
            s.nodes,
            s.k,
            s.payload,
            value,
            s.concurrency,
            s.rounds,
            s.ops,
            s.warmup,
            self.scheduling
        );
        out.push_str(&format!(
            "{:<34} {:>19} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>17} {:>6}\n",
            "network",
            "ops/s",
            "put p50",
            "put p99",
            "get p50",
            "get p99",
            "op p50",
            "op p99",
            "req/op",
            "sig/op",
            "CPU/op",
            "failed"
        ));
        out.push_str(&format!(
            "{:<34} {:>19} {:>53} {:>6} {:>6} {:>17}\n",
            "", "(median, range)", "(milliseconds)", "", "", "(ms, median)"
        ));
        for r in &self.systems {
            let cpu = spread(
                r.rounds
                    .iter()
                    .filter_map(RoundStats::cpu_ms_per_op)
                    .collect(),
            );
            let sigs = r
                .verified
                .map_or_else(|| "-".to_string(), |v| format!("{:.1}", r.per_op(v as f64)));
            out.push_str(&format!(
                "{:<34} {:>19} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6.1} {:>6} {:>17} {:>6}\n",
                r.system.name(),
                range(
                    spread(r.rounds.iter().map(RoundStats::throughput).collect()),
                    0
                ),
                ms(quantile(&r.put, 0.5)),
                ms(quantile(&r.put, 0.99)),
                ms(quantile(&r.get, 0.5)),
                ms(quantile(&r.get, 0.99)),
                ms(quantile(&r.op, 0.5)),
                ms(quantile(&r.op, 0.99)),
                r.per_op(r.requests as f64),
                sigs,
                range(cpu, 2),
                r.failures
            ));
        }
        out.push('\n');
        for (base_system, label) in [(System::Stock, "stock"), (System::StockRedb, "stock redb")] {
            let Some(base) = self.of(base_system) else {
                continue;
            };
            for r in self.systems.iter().filter(|r| {
                r.system != base_system
                    && r.system != System::Stock
                    && (base_system == System::Stock || r.system.durable())
            }) {
                let p50 = quantile(&r.op, 0.5).as_secs_f64()
                    / quantile(&base.op, 0.5).as_secs_f64().max(f64::MIN_POSITIVE);
                out.push_str(&format!(
                    "{} / {label}: throughput x{} by round (higher is better), op p50 x{:.2} \
                     (lower is better)\n",
                    r.system.name(),
                    range(Self::ratio(r, base), 2),
                    p50
                ));
            }
        }
        let floors: Vec<f64> = self
            .floor
            .iter()
            .flatten()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        if let Some((median, lo, hi)) = spread(floors) {
            out.push_str(&format!(
                "\nfsync floor (a 4 KiB append + fdatasync, {} per round, in the stores' \
                 directory): p50 {median:.3} ms by round ({lo:.3}-{hi:.3}), about {:.0} \
                 syncs/s for one writer\n",
                s.floor_syncs,
                1000.0 / median.max(f64::MIN_POSITIVE)
            ));
            for r in self.systems.iter().filter(|r| r.system.durable()) {
                out.push_str(&format!(
                    "{}: put p50 = {:.1} floors\n",
                    r.system.name(),
                    quantile(&r.put, 0.5).as_secs_f64() * 1000.0 / median.max(f64::MIN_POSITIVE)
                ));
            }
        }
        out
    }
}

/// A network under test.
enum Net {
    Stock(StockNet),
    /// Netabase nodes on one of the runtimes.
    Netabase(Box<dyn NetabaseNetwork>),
}

/// The record of operation `id`, as both kinds of network store it.
fn item(id: u64, payload: usize) -> Item {
    Item {
        id,
        payload: "p".repeat(payload),
    }
}

/// Which node puts and which gets the record of `key`: the two nodes farthest from it
/// (so neither is among its K closest when K < nodes - 1): the second farthest puts, the
/// farthest gets.
fn roles(peers: &[PeerId], key: &[u8]) -> (usize, usize) {
    let target = kad::KBucketKey::new(kad::RecordKey::new(&key));
    let mut ranked: Vec<usize> = (0..peers.len()).collect();
    ranked.sort_by_key(|&i| target.distance(&kad::KBucketKey::from(peers[i])));
    (ranked[peers.len() - 2], ranked[peers.len() - 1])
}

impl Net {
    async fn start(system: System, settings: &Settings) -> Result<Net, String> {
        let (backend, rt) = match system {
            System::Stock => {
                return Ok(Net::Stock(
                    StockNet::start(settings, StockStore::Memory).await?,
                ));
            }
            System::StockRedb => {
                return Ok(Net::Stock(
                    StockNet::start(settings, StockStore::Redb).await?,
                ));
            }
            System::Netabase(backend, rt) => (backend, rt),
        };
        let backend = match backend {
            Backend::Memory => StorageBackend::Memory,
            Backend::Redb => StorageBackend::Redb,
        };
        Ok(Net::Netabase(match rt {
            Rt::Tokio => start_netabase::<netabase::TokioRuntime>(settings, backend).await?,
            #[cfg(feature = "async-std")]
            Rt::AsyncStd => start_netabase::<netabase::AsyncStdRuntime>(settings, backend).await?,
            #[cfg(feature = "smol")]
            Rt::Smol => start_netabase::<netabase::SmolRuntime>(settings, backend).await?,
            // Only reachable in a build without every runtime feature.
            #[allow(unreachable_patterns)]
            other => return Err(format!("this build has no {} runtime", other.name())),
        }))
    }

    fn peers(&self) -> &[PeerId] {
        match self {
            Net::Stock(n) => &n.peers,
            Net::Netabase(n) => n.peers(),
        }
    }

    /// Puts the record of `id` at node `at`.
    async fn put(&self, at: usize, id: u64, payload: usize) -> Result<(), String> {
        match self {
            Net::Stock(n) => n.put(at, id, payload).await,
            Net::Netabase(n) => n.put(at, id, payload).await,
        }
    }

    /// Gets the record of `id` at node `at` and checks it.
    async fn get(&self, at: usize, id: u64, payload: usize) -> Result<(), String> {
        match self {
            Net::Stock(n) => n.get(at, id, payload).await,
            Net::Netabase(n) => n.get(at, id, payload).await,
        }
    }

    /// Kademlia requests every node of the network has served so far, the record
    /// signatures they verified (when the network counts them), and the errors of their
    /// stores (when the benchmark sees them: a stock network's redb stores).
    async fn counters(&self) -> (u64, Option<u64>, u64) {
        match self {
            Net::Stock(n) => (
                n.served.load(Ordering::Relaxed),
                None,
                n.store_errors.load(Ordering::Relaxed),
            ),
            Net::Netabase(n) => {
                let (served, verified) = n.counters().await;
                (served, Some(verified), 0)
            }
        }
    }

    async fn stop(self) {
        match self {
            Net::Stock(n) => n.stop().await,
            Net::Netabase(n) => n.stop().await,
        }
    }
}

/// The key bytes and sealed value of the record of `id` written and signed by `writer`
/// (what a Netabase node publishes, byte for byte, at the same signing cost).
fn seal(
    writer: &netabase::core::Keypair,
    id: u64,
    payload: usize,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let value = BenchDefinition::from(item(id, payload));
    let (key, bytes) = Envelope::seal(&value, 1, writer).map_err(|e| e.to_string())?;
    Ok((key.as_bytes().to_vec(), bytes))
}

fn key_of(id: u64) -> Result<Vec<u8>, String> {
    Ok(record_key(&ItemPrimaryKey(id))
        .map_err(|e| e.to_string())?
        .as_bytes()
        .to_vec())
}

// ---------------------------------------------------------------------------------------
// Netabase.

/// A network of Netabase nodes on some runtime, as the load generator uses it.
trait NetabaseNetwork: Send + Sync {
    fn peers(&self) -> &[PeerId];
    /// Puts the record of `id` at node `at`.
    fn put(&self, at: usize, id: u64, payload: usize) -> BoxFuture<'_, Result<(), String>>;
    /// Gets the record of `id` at node `at` and checks it.
    fn get(&self, at: usize, id: u64, payload: usize) -> BoxFuture<'_, Result<(), String>>;
    /// Kademlia requests every node has served so far, and record signatures verified.
    fn counters(&self) -> BoxFuture<'_, (u64, u64)>;
    fn stop(&self) -> BoxFuture<'_, ()>;
}

async fn start_netabase<R: Runtime>(
    settings: &Settings,
    backend: StorageBackend,
) -> Result<Box<dyn NetabaseNetwork>, String> {
    Ok(Box::new(NetabaseNet::<R>::start(settings, backend).await?))
}

/// Netabase nodes on runtime `R`.
struct NetabaseNet<R: Runtime> {
    nodes: Vec<netabase::swarm::Netabase<BenchDefinition, R>>,
    peers: Vec<PeerId>,
    _dir: tempfile::TempDir,
}

impl<R: Runtime> NetabaseNetwork for NetabaseNet<R> {
    fn peers(&self) -> &[PeerId] {
        &self.peers
    }

    fn put(&self, at: usize, id: u64, payload: usize) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let put = self.nodes[at]
                .put_record(item(id, payload))
                .await
                .map_err(|e| e.to_string())?;
            match put.quorum_error {
                None => Ok(()),
                Some(e) => Err(format!("put {id}: {e}")),
            }
        })
    }

    fn get(&self, at: usize, id: u64, payload: usize) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let found = self.nodes[at]
                .get_record(&ItemPrimaryKey(id))
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("get {id}: not found"))?;
            if found.record.id == id && found.record.payload.len() == payload {
                Ok(())
            } else {
                Err(format!("get {id}: another record"))
            }
        })
    }

    fn counters(&self) -> BoxFuture<'_, (u64, u64)> {
        Box::pin(async move {
            let (mut served, mut verified) = (0, 0);
            for node in &self.nodes {
                if let Ok(stats) = node.stats().await {
                    served += stats.kad.inbound_requests;
                    verified += stats.kad.signatures_verified;
                }
            }
            (served, verified)
        })
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for node in &self.nodes {
                let _ = node.stop_swarm().await;
            }
        })
    }
}

impl<R: Runtime> NetabaseNet<R> {
    async fn start(settings: &Settings, backend: StorageBackend) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("netabase-bench-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let config = |i: usize| {
            let mut c = NetabaseConfig::default()
                .with_data_dir(dir.path().join(format!("node-{i}")))
                .with_listen_addresses(["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")])
                .with_mdns(false)
                .with_backend(backend)
                .with_protocol_name(PROTOCOL);
            c.kad.k = settings.k;
            // Stock kad caches nothing unless its user does; neither does this side.
            c.kad.cache_peers = 0;
            // Stock kad's memory store limits record counts only.
            c.record_store = RecordStoreConfig {
                max_records: MAX_RECORDS,
                max_held_bytes: usize::MAX,
                ..RecordStoreConfig::default()
            };
            c.idle_connection_timeout = IDLE;
            c
        };
        let first = netabase::swarm::Netabase::<BenchDefinition, R>::new_with_config(config(0))
            .map_err(|e| e.to_string())?;
        first.start_swarm().await.map_err(|e| e.to_string())?;
        let addr = first
            .listen_addresses()
            .await
            .map_err(|e| e.to_string())?
            .remove(0);
        let mut nodes = vec![first.clone()];
        for i in 1..settings.nodes {
            let node = netabase::swarm::Netabase::<BenchDefinition, R>::new_with_config(
                config(i).with_bootstrap_peer(first.local_peer_id(), addr.clone()),
            )
            .map_err(|e| e.to_string())?;
            node.start_swarm().await.map_err(|e| e.to_string())?;
            nodes.push(node);
        }
        // Every node knows every other one's address, as on the stock network.
        let peers: Vec<PeerId> = nodes.iter().map(|n| n.local_peer_id()).collect();
        let mut addrs = Vec::new();
        for node in &nodes {
            addrs.push(
                node.listen_addresses()
                    .await
                    .map_err(|e| e.to_string())?
                    .remove(0),
            );
        }
        for (i, node) in nodes.iter().enumerate() {
            for (j, (peer, addr)) in peers.iter().zip(&addrs).enumerate() {
                if i != j {
                    node.add_address(*peer, addr.clone())
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        for _round in 0..2 {
            for node in &nodes[1..] {
                node.bootstrap().await.map_err(|e| e.to_string())?;
            }
        }
        Ok(NetabaseNet {
            nodes,
            peers,
            _dir: dir,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Stock rust-libp2p Kademlia: one swarm per node, driven by commands as an application
// would drive it, on a thread of its own polled with the tokio runtime's handle (as
// Netabase's tokio runtime runs a node's driver), its connections tasks of that runtime.

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum StockCmd {
    AddAddress(PeerId, Multiaddr),
    Bootstrap(Reply<()>),
    Put(kad::Record, Reply<()>),
    Get(kad::RecordKey, Reply<Option<Vec<u8>>>),
}

/// The record store of a stock network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StockStore {
    /// libp2p's `MemoryStore`.
    Memory,
    /// [`RedbRecordStore`], every put durable.
    Redb,
}

struct StockNet {
    commands: Vec<mpsc::UnboundedSender<StockCmd>>,
    peers: Vec<PeerId>,
    /// The identity each node signs the records it writes with.
    writers: Vec<netabase::core::Keypair>,
    /// Each node's thread; it ends when its command channel closes.
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Inbound requests served, every node together.
    served: Arc<AtomicU64>,
    /// Errors of the nodes' redb stores, every node together.
    store_errors: Arc<AtomicU64>,
    _dir: Option<tempfile::TempDir>,
}

async fn ask<T>(
    tx: &mpsc::UnboundedSender<StockCmd>,
    make: impl FnOnce(Reply<T>) -> StockCmd,
) -> Result<T, String> {
    let (reply, answer) = oneshot::channel();
    tx.send(make(reply))
        .map_err(|_| "stock node gone".to_string())?;
    answer.await.map_err(|_| "stock node gone".to_string())?
}

impl StockNet {
    async fn start(settings: &Settings, store: StockStore) -> Result<StockNet, String> {
        let dir = match store {
            StockStore::Memory => None,
            StockStore::Redb => Some(
                tempfile::Builder::new()
                    .prefix("netabase-bench-stock-")
                    .tempdir()
                    .map_err(|e| e.to_string())?,
            ),
        };
        let mut commands = Vec::new();
        let mut peers = Vec::new();
        let mut addrs = Vec::new();
        let mut threads = Vec::new();
        let served = Arc::new(AtomicU64::new(0));
        let store_errors = Arc::new(AtomicU64::new(0));
        for i in 0..settings.nodes {
            let keypair = libp2p::identity::Keypair::generate_ed25519();
            let id = keypair.public().to_peer_id();
            let node = match &dir {
                None => {
                    let store = kad::store::MemoryStore::with_config(
                        id,
                        kad::store::MemoryStoreConfig {
                            max_records: MAX_RECORDS,
                            ..Default::default()
                        },
                    );
                    stock_node(keypair, store, settings.k, Arc::clone(&served)).await?
                }
                Some(dir) => {
                    let store = RedbRecordStore::create(
                        &dir.path().join(format!("node-{i}.redb")),
                        id,
                        Arc::clone(&store_errors),
                    )?;
                    stock_node(keypair, store, settings.k, Arc::clone(&served)).await?
                }
            };
            let (peer, addr, tx, thread) = node;
            peers.push(peer);
            addrs.push(addr);
            commands.push(tx);
            threads.push(thread);
        }
        // Every node knows every other one's address (stock kad learns the addresses of
        // peers that dialled it only from identify, which this bare node lacks).
        for (i, tx) in commands.iter().enumerate() {
            for (j, (peer, addr)) in peers.iter().zip(&addrs).enumerate() {
                if i != j {
                    tx.send(StockCmd::AddAddress(*peer, addr.clone()))
                        .map_err(|_| "stock node gone")?;
                }
            }
        }
        for _round in 0..2 {
            for tx in &commands[1..] {
                ask(tx, StockCmd::Bootstrap).await?;
            }
        }
        let writers = (0..peers.len() as u64)
            .map(netabase::core::Keypair::from_seed)
            .collect();
        Ok(StockNet {
            commands,
            peers,
            writers,
            threads,
            served,
            store_errors,
            _dir: dir,
        })
    }

    async fn put(&self, at: usize, id: u64, payload: usize) -> Result<(), String> {
        // The same bytes a Netabase node would publish, sealed here as it seals them.
        let (key, value) = seal(&self.writers[at], id, payload)?;
        let record = kad::Record::new(kad::RecordKey::new(&key), value);
        ask(&self.commands[at], |r| StockCmd::Put(record, r)).await
    }

    async fn get(&self, at: usize, id: u64, payload: usize) -> Result<(), String> {
        let key = key_of(id)?;
        let value = ask(&self.commands[at], |r| {
            StockCmd::Get(kad::RecordKey::new(&key), r)
        })
        .await?
        .ok_or_else(|| format!("get {id}: not found"))?;
        // Opened and decoded as a Netabase node opens what it gets.
        let key = record_key(&ItemPrimaryKey(id)).map_err(|e| e.to_string())?;
        let (value, _) =
            Envelope::open::<BenchDefinition>(&key, &value).map_err(|e| e.to_string())?;
        match Item::try_from(value) {
            Ok(found) if found.id == id && found.payload.len() == payload => Ok(()),
            _ => Err(format!("get {id}: another record")),
        }
    }

    /// Closes every node's command channel and waits for its thread to end (which drops
    /// its swarm, closing its connections).
    async fn stop(self) {
        drop(self.commands);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// A stock node: its peer id, listen address, command channel and thread.
type StockNode = (
    PeerId,
    Multiaddr,
    mpsc::UnboundedSender<StockCmd>,
    std::thread::JoinHandle<()>,
);

/// Starts one stock Kademlia server on 127.0.0.1: TCP (nodelay, as Netabase's), noise,
/// yamux, `kad::Behaviour` with K as bucket size and replication factor over `store`; its
/// swarm on a thread of its own, named `stock-node`.
async fn stock_node<S>(
    keypair: libp2p::identity::Keypair,
    store: S,
    k: usize,
    served: Arc<AtomicU64>,
) -> Result<StockNode, String>
where
    S: kad::store::RecordStore + Send + 'static,
{
    let k = std::num::NonZeroUsize::new(k).ok_or("K must be positive")?;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| e.to_string())?
        .with_behaviour(|key| {
            let id = key.public().to_peer_id();
            let mut config = kad::Config::new(StreamProtocol::new(PROTOCOL));
            config.set_kbucket_size(k);
            config.set_replication_factor(k);
            kad::Behaviour::with_config(id, store, config)
        })
        .map_err(|e| e.to_string())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE))
        .build();
    swarm.behaviour_mut().set_mode(Some(kad::Mode::Server));
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
        .map_err(|e| e.to_string())?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let peer = *swarm.local_peer_id();
    let (tx, rx) = mpsc::unbounded_channel::<StockCmd>();
    let handle = tokio::runtime::Handle::current();
    let thread = std::thread::Builder::new()
        .name("stock-node".into())
        .spawn(move || handle.block_on(stock_loop(swarm, rx, served)))
        .map_err(|e| format!("stock node thread: {e}"))?;
    Ok((peer, addr, tx, thread))
}

/// A stock node's loop: its commands and its swarm's events, until its command channel
/// closes.
async fn stock_loop<S>(
    mut swarm: libp2p::Swarm<kad::Behaviour<S>>,
    mut rx: mpsc::UnboundedReceiver<StockCmd>,
    served: Arc<AtomicU64>,
) where
    S: kad::store::RecordStore + Send + 'static,
{
    let mut puts = std::collections::HashMap::new();
    let mut gets = std::collections::HashMap::new();
    let mut bootstraps = std::collections::HashMap::new();
    loop {
        tokio::select! {
            command = rx.recv() => match command {
                None => return,
                Some(StockCmd::AddAddress(peer, addr)) => {
                    swarm.behaviour_mut().add_address(&peer, addr);
                }
                Some(StockCmd::Bootstrap(reply)) => match swarm.behaviour_mut().bootstrap() {
                    Ok(id) => { bootstraps.insert(id, reply); }
                    Err(e) => { let _ = reply.send(Err(e.to_string())); }
                },
                Some(StockCmd::Put(record, reply)) => {
                    match swarm.behaviour_mut().put_record(record, kad::Quorum::One) {
                        Ok(id) => { puts.insert(id, reply); }
                        Err(e) => { let _ = reply.send(Err(e.to_string())); }
                    }
                }
                Some(StockCmd::Get(key, reply)) => {
                    gets.insert(swarm.behaviour_mut().get_record(key), reply);
                }
            },
            event = swarm.select_next_some() => {
                let (id, result, step) = match event {
                    SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
                        id, result, step, ..
                    }) => (id, result, step),
                    SwarmEvent::Behaviour(kad::Event::InboundRequest { .. }) => {
                        served.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    _ => continue,
                };
                match result {
                    kad::QueryResult::PutRecord(r) => {
                        if let Some(reply) = puts.remove(&id) {
                            let _ = reply.send(r.map(|_| ()).map_err(|e| e.to_string()));
                        }
                    }
                    kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))) => {
                        // Quorum 1: the first record answers the get, and the query
                        // stops, as the stock API documents for that case.
                        if let Some(reply) = gets.remove(&id) {
                            let _ = reply.send(Ok(Some(found.record.value)));
                        }
                        if let Some(mut query) = swarm.behaviour_mut().query_mut(&id) {
                            query.finish();
                        }
                    }
                    kad::QueryResult::GetRecord(r) => {
                        if let Some(reply) = gets.remove(&id) {
                            let _ = reply.send(match r {
                                Err(kad::GetRecordError::NotFound { .. }) => Ok(None),
                                Err(e) => Err(e.to_string()),
                                Ok(_) => Ok(None),
                            });
                        }
                    }
                    kad::QueryResult::Bootstrap(r) => {
                        if step.last && let Some(reply) = bootstraps.remove(&id) {
                            let _ = reply.send(r.map(|_| ()).map_err(|e| e.to_string()));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A libp2p record store on redb, as durable as Netabase's redb backend: every record put
// is committed with `Durability::Immediate` (redb writes and fdatasyncs before `commit`
// returns) before `put` returns, so a stock node acknowledges a record (its own put, or a
// peer's PUT_VALUE) only once it is on disk. Provider records stay in memory (the
// benchmark announces none).

/// The table of records: key bytes to [`encode`]d record.
const RECORDS: redb::TableDefinition<'static, &[u8], &[u8]> = redb::TableDefinition::new("records");
/// The largest value accepted, as stock's `MemoryStore` by default.
const MAX_VALUE_BYTES: usize = 65 * 1024;

/// A `RecordStore` on a redb file. The trait's methods return no I/O errors, so each redb
/// error is counted in `errors` (the benchmark reports them as failures) and the call
/// answers as if the record were absent, or refuses the put with `MaxRecords`.
pub(crate) struct RedbRecordStore {
    db: redb::Database,
    /// Records stored.
    records: usize,
    providers: kad::store::MemoryStore,
    errors: Arc<AtomicU64>,
}

impl RedbRecordStore {
    /// Opens the store in the redb file at `path`, creating it if it does not exist; redb
    /// errors of its later calls are counted in `errors`.
    pub(crate) fn create(
        path: &std::path::Path,
        local: PeerId,
        errors: Arc<AtomicU64>,
    ) -> Result<Self, String> {
        use redb::{ReadableDatabase, ReadableTableMetadata};
        let failed = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let db = redb::Database::create(path).map_err(|e| failed(&e))?;
        let tx = db.begin_read().map_err(|e| failed(&e))?;
        let records = match tx.open_table(RECORDS) {
            Ok(table) => table.len().map_err(|e| failed(&e))? as usize,
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => return Err(failed(&e)),
        };
        drop(tx);
        Ok(RedbRecordStore {
            db,
            records,
            providers: kad::store::MemoryStore::new(local),
            errors,
        })
    }

    fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn try_put(&mut self, key: &[u8], bytes: &[u8]) -> Result<(), StoreFailure> {
        let mut tx = self.db.begin_write().map_err(StoreFailure::io)?;
        tx.set_durability(redb::Durability::Immediate)
            .map_err(StoreFailure::io)?;
        let new = {
            let mut table = tx.open_table(RECORDS).map_err(StoreFailure::io)?;
            let old = table.insert(key, bytes).map_err(StoreFailure::io)?;
            old.is_none()
        };
        if new && self.records >= MAX_RECORDS {
            // Dropping the transaction aborts it.
            return Err(StoreFailure::Full);
        }
        tx.commit().map_err(StoreFailure::io)?;
        self.records += usize::from(new);
        Ok(())
    }

    fn try_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, redb::Error> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let table = match tx.open_table(RECORDS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    fn try_all(&self) -> Result<Vec<Entry>, redb::Error> {
        use redb::{ReadableDatabase, ReadableTable};
        let tx = self.db.begin_read()?;
        let table = match tx.open_table(RECORDS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut all = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            all.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(all)
    }

    fn try_remove(&mut self, key: &[u8]) -> Result<bool, redb::Error> {
        let tx = self.db.begin_write()?;
        let removed = {
            let mut table = tx.open_table(RECORDS)?;
            table.remove(key)?.is_some()
        };
        tx.commit()?;
        Ok(removed)
    }
}

/// A stored record's key and bytes.
type Entry = (Vec<u8>, Vec<u8>);

/// Why a put into [`RedbRecordStore`] failed.
enum StoreFailure {
    Full,
    Io,
}

impl StoreFailure {
    fn io(_: impl std::error::Error) -> StoreFailure {
        StoreFailure::Io
    }
}

/// A record as stored: the publisher's peer id (length-prefixed, empty for none), the
/// expiry in milliseconds since the Unix epoch (0 for none), then the value.
fn encode(record: &kad::Record) -> Vec<u8> {
    let publisher = record.publisher.map(|p| p.to_bytes()).unwrap_or_default();
    let expires = record.expires.map_or(0, |at| {
        let left = at.saturating_duration_since(std::time::Instant::now());
        (std::time::SystemTime::now() + left)
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis().clamp(1, u128::from(u64::MAX)) as u64)
    });
    let mut out = Vec::with_capacity(1 + publisher.len() + 8 + record.value.len());
    out.push(publisher.len() as u8);
    out.extend_from_slice(&publisher);
    out.extend_from_slice(&expires.to_be_bytes());
    out.extend_from_slice(&record.value);
    out
}

/// The record of `key` stored as `bytes` (see [`encode`]); `None` if they are malformed.
fn decode(key: &[u8], bytes: &[u8]) -> Option<kad::Record> {
    let (&len, rest) = bytes.split_first()?;
    let (publisher, rest) = rest.split_at_checked(usize::from(len))?;
    let (expires, value) = rest.split_at_checked(8)?;
    let publisher = if publisher.is_empty() {
        None
    } else {
        Some(PeerId::from_bytes(publisher).ok()?)
    };
    let expires = u64::from_be_bytes(expires.try_into().ok()?);
    let expires = (expires != 0).then(|| {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(expires);
        let left = at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO);
        std::time::Instant::now() + left
    });
    Some(kad::Record {
        key: kad::RecordKey::new(&key),
        value: value.to_vec(),
        publisher,
        expires,
    })
}

impl kad::store::RecordStore for RedbRecordStore {
    type RecordsIter<'a> = std::vec::IntoIter<std::borrow::Cow<'a, kad::Record>>;
    type ProvidedIter<'a> = <kad::store::MemoryStore as kad::store::RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &kad::RecordKey) -> Option<std::borrow::Cow<'_, kad::Record>> {
        match self.try_get(k.as_ref()) {
            Ok(found) => {
                let record = decode(k.as_ref(), &found?);
                if record.is_none() {
                    self.failed();
                }
                record.map(std::borrow::Cow::Owned)
            }
            Err(_) => {
                self.failed();
                None
            }
        }
    }

    fn put(&mut self, r: kad::Record) -> kad::store::Result<()> {
        if r.value.len() >= MAX_VALUE_BYTES {
            return Err(kad::store::Error::ValueTooLarge);
        }
        match self.try_put(r.key.as_ref(), &encode(&r)) {
            Ok(()) => Ok(()),
            Err(StoreFailure::Full) => Err(kad::store::Error::MaxRecords),
            Err(StoreFailure::Io) => {
                // The trait has no error for a failed write; the put is refused all the same.
                self.failed();
                Err(kad::store::Error::MaxRecords)
            }
        }
    }

    fn remove(&mut self, k: &kad::RecordKey) {
        match self.try_remove(k.as_ref()) {
            Ok(true) => self.records = self.records.saturating_sub(1),
            Ok(false) => {}
            Err(_) => self.failed(),
        }
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        let all = self.try_all().unwrap_or_else(|_| {
            self.failed();
            Vec::new()
        });
        all.iter()
            .filter_map(|(k, v)| decode(k, v).map(std::borrow::Cow::Owned))
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn add_provider(&mut self, record: kad::ProviderRecord) -> kad::store::Result<()> {
        self.providers.add_provider(record)
    }

    fn providers(&self, key: &kad::RecordKey) -> Vec<kad::ProviderRecord> {
        self.providers.providers(key)
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.providers.provided()
    }

    fn remove_provider(&mut self, k: &kad::RecordKey, p: &PeerId) {
        self.providers.remove_provider(k, p);
    }
}

// ---------------------------------------------------------------------------------------
// The run.

/// Latencies of one batch of operations.
#[derive(Default)]
struct Batch {
    put: Vec<Duration>,
    get: Vec<Duration>,
    op: Vec<Duration>,
    failures: usize,
    first_error: Option<String>,
}

/// Runs `count` operations with ids from `first_id` on `net`, `concurrency` at a time.
async fn batch(
    net: &Arc<Net>,
    first_id: u64,
    count: usize,
    settings: &Settings,
) -> (Batch, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..settings.concurrency)
        .map(|_| {
            let net = Arc::clone(net);
            let next = Arc::clone(&next);
            let payload = settings.payload;
            tokio::spawn(async move {
                let mut out = Batch::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return out;
                    }
                    let id = first_id + i as u64;
                    let (putter, getter) = match key_of(id) {
                        Ok(key) => roles(net.peers(), &key),
                        Err(e) => {
                            out.failures += 1;
                            out.first_error.get_or_insert(e);
                            continue;
                        }
                    };
                    let t0 = Instant::now();
                    let put = net.put(putter, id, payload).await;
                    let t1 = Instant::now();
                    let get = match put {
                        Ok(()) => net.get(getter, id, payload).await,
                        Err(e) => Err(e),
                    };
                    let t2 = Instant::now();
                    match get {
                        Ok(()) => {
                            out.put.push(t1 - t0);
                            out.get.push(t2 - t1);
                            out.op.push(t2 - t0);
                        }
                        Err(e) => {
                            out.failures += 1;
                            out.first_error.get_or_insert(e);
                        }
                    }
                }
            })
        })
        .collect();
    let mut all = Batch::default();
    for worker in workers {
        match worker.await {
            Ok(b) => {
                all.put.extend(b.put);
                all.get.extend(b.get);
                all.op.extend(b.op);
                all.failures += b.failures;
                if all.first_error.is_none() {
                    all.first_error = b.first_error;
                }
            }
            Err(e) => {
                all.failures += 1;
                all.first_error.get_or_insert(e.to_string());
            }
        }
    }
    (all, started.elapsed())
}

/// The median latency of `count` 4 KiB appends, each followed by an fdatasync, to a new
/// file in the directory the stores are created in (the default temporary directory).
fn fsync_floor(count: usize) -> Result<Duration, String> {
    use std::io::Write;
    let dir = tempfile::Builder::new()
        .prefix("netabase-bench-floor-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let mut file = std::fs::File::create(dir.path().join("probe")).map_err(|e| e.to_string())?;
    let block = [7u8; 4096];
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let started = Instant::now();
        file.write_all(&block).map_err(|e| e.to_string())?;
        file.sync_data().map_err(|e| e.to_string())?;
        samples.push(started.elapsed());
    }
    samples.sort();
    Ok(quantile(&samples, 0.5))
}

/// Threads of this process whose name is `netabase-node` or `stock-node` (a node's
/// driver or swarm), from `/proc/self/task` (Linux); `None` elsewhere.
fn node_threads() -> Option<usize> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        tasks
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|n| matches!(n.trim(), "netabase-node" | "stock-node"))
            })
            .count(),
    )
}

/// Waits, up to a deadline, until no more than `before` node threads are left in the
/// process (a stopped network's threads end shortly after its nodes answered the stop).
/// The node threads beyond `before` still there at the deadline.
async fn node_threads_back_to(before: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = node_threads().unwrap_or(0).saturating_sub(before);
        if left == 0 || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How the nodes of `systems` are scheduled in this process, with the worker counts of
/// the executors they use.
fn scheduling(systems: &[System], stray: usize) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = |var: &str, default: usize| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(default)
    };
    let tokio_workers = tokio::runtime::Handle::current().metrics().num_workers();
    let mut out = format!(
        "scheduling: every node's event loop (a stock swarm, a Netabase driver) on a thread \
         of its own; connections (noise, yamux, protocol handlers) are tasks of the node's \
         runtime: tokio with {tokio_workers} worker thread(s), shared with the load \
         generator (stock nodes and Netabase on tokio)"
    );
    let uses = |rt: Rt| {
        systems
            .iter()
            .any(|s| matches!(s, System::Netabase(_, r) if *r == rt))
    };
    if uses(Rt::AsyncStd) {
        out.push_str(&format!(
            ", async-std's executor with {} thread(s)",
            threads("ASYNC_STD_THREAD_COUNT", cores)
        ));
    }
    if uses(Rt::Smol) {
        out.push_str(&format!(
            ", smol's global executor with {} thread(s)",
            threads("SMOL_THREADS", 1)
        ));
    }
    out.push_str(&format!("; {cores} core(s)"));
    if stray > 0 {
        out.push_str(&format!(
            "; {stray} node thread(s) of stopped networks were still running after a 2 s \
             wait (another network's measurement may include them)"
        ));
    }
    out
}

/// Runs the benchmark: the rounds, each of which starts every network in turn, warms it
/// up, measures it and stops it, after measuring the disk's fsync floor. `progress` is
/// told what is happening (for a terminal).
pub(crate) async fn run(
    settings: &Settings,
    mut progress: impl FnMut(&str),
) -> Result<Report, String> {
    let systems = &settings.systems;
    let payload = settings.payload;
    let mut reports: Vec<SystemReport> = systems
        .iter()
        .map(|&system| SystemReport {
            system,
            ops: 0,
            failures: 0,
            seconds: 0.0,
            put: Vec::new(),
            get: Vec::new(),
            op: Vec::new(),
            value_bytes: seal(&netabase::core::Keypair::from_seed(0), 0, payload)
                .map_or(0, |(_, v)| v.len()),
            requests: 0,
            verified: Some(0),
            cpu_seconds: process_cpu_seconds().map(|_| 0.0),
            rounds: Vec::new(),
        })
        .collect();
    let mut floor = Vec::new();
    let mut stray = 0;
    // Ids: each network has its own range, each round and phase its own part of it.
    let id_base = |n: usize| (n as u64 + 1) << 40;
    let mut next_id: Vec<u64> = (0..systems.len()).map(id_base).collect();
    for round in 0..settings.rounds {
        let floor_now = fsync_floor(settings.floor_syncs);
        if let Err(e) = &floor_now {
            progress(&format!("fsync floor: {e}"));
        }
        floor.push(floor_now.ok());
        // Each round starts one network later, so that none always follows the same one.
        for turn in 0..systems.len() {
            let n = (round + turn) % systems.len();
            let system = systems[n];
            progress(&format!(
                "round {}/{}: {} ({} nodes)",
                round + 1,
                settings.rounds,
                system.name(),
                settings.nodes
            ));
            let threads_before = node_threads().unwrap_or(0);
            let net = Arc::new(Net::start(system, settings).await?);
            let (warm, _) = batch(&net, next_id[n], settings.warmup, settings).await;
            next_id[n] += settings.warmup as u64;
            if warm.failures > 0 {
                progress(&format!(
                    "  {} warm-up failures, first: {}",
                    warm.failures,
                    warm.first_error.unwrap_or_default()
                ));
            }
            let (served_before, verified_before, errors_before) = net.counters().await;
            let cpu_before = process_cpu_seconds();
            let (b, took) = batch(&net, next_id[n], settings.ops, settings).await;
            let cpu_after = process_cpu_seconds();
            let (served_after, verified_after, errors_after) = net.counters().await;
            next_id[n] += settings.ops as u64;
            let store_errors = errors_after.saturating_sub(errors_before) as usize;
            let stats = RoundStats {
                ops: b.op.len(),
                failures: b.failures + store_errors,
                seconds: took.as_secs_f64(),
                cpu_seconds: cpu_before.zip(cpu_after).map(|(a, b)| b - a),
            };
            let r = &mut reports[n];
            r.requests += served_after.saturating_sub(served_before);
            r.verified = match (r.verified, verified_before, verified_after) {
                (Some(total), Some(before), Some(after)) => {
                    Some(total + after.saturating_sub(before))
                }
                _ => None,
            };
            r.cpu_seconds = r.cpu_seconds.zip(stats.cpu_seconds).map(|(t, c)| t + c);
            r.ops += stats.ops;
            r.failures += stats.failures;
            r.seconds += stats.seconds;
            r.rounds.push(stats);
            r.put.extend(b.put);
            r.get.extend(b.get);
            r.op.extend(b.op);
            if let Some(e) = b.first_error {
                progress(&format!("  {} failures, first: {e}", b.failures));
            }
            if store_errors > 0 {
                progress(&format!("  {store_errors} store errors"));
            }
            match Arc::try_unwrap(net) {
                Ok(net) => net.stop().await,
                Err(_) => return Err("a network is still in use after its operations".into()),
            }
            let left = node_threads_back_to(threads_before).await;
            if left > 0 {
                stray += left;
                progress(&format!(
                    "  {left} node thread(s) still run after the network stopped"
                ));
            }
        }
    }
    for r in &mut reports {
        r.put.sort();
        r.get.sort();
        r.op.sort();
    }
    Ok(Report {
        settings: settings.clone(),
        systems: reports,
        floor,
        scheduling: scheduling(systems, stray),
    })
}
