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
            System::Netabase(Backend::Memory, rt) => format!("Netabase memory, {}", rt.name()),
            System::Netabase(Backend::Redb, rt) => {
                format!("Netabase redb durable, {}", rt.name())
            }
        }
    }

    /// The systems named in `NETABASE_BENCH_SYSTEMS`: a comma-separated list of `stock`,
    /// `memory` and `redb` (Netabase on tokio), `memory-<runtime>` and `redb-<runtime>`
    /// (runtime `tokio`, `async-std` or `smol`; a leading `netabase-` is allowed), and
    /// `all`: stock, then both backends on every runtime this build has.
    pub(crate) fn parse_list(list: &str) -> Result<Vec<System>, String> {
        let mut systems = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "all" {
                systems.push(System::Stock);
                for rt in Rt::ALL.into_iter().filter(|rt| rt.built()) {
                    systems.push(System::Netabase(Backend::Memory, rt));
                    systems.push(System::Netabase(Backend::Redb, rt));
                }
                continue;
            }
            let system = match name.strip_prefix("netabase-").unwrap_or(name) {
                "stock" => System::Stock,
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
        "NETABASE_BENCH_SYSTEMS: {name:?} is none of stock, memory, redb, memory-<runtime>, \
         redb-<runtime> (runtime tokio, async-std or smol), all"
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
    /// Rounds; each round runs every network once, in turn, so that load from elsewhere
    /// on the machine falls on all of them alike.
    pub(crate) rounds: usize,
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
            systems: vec![
                System::Stock,
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
    /// CPU time the whole process used during the measured operations (every network's
    /// nodes, idle or not, and the load generator), when the platform reports it.
    pub(crate) cpu_seconds: Option<f64>,
}

impl SystemReport {
    /// Operations per second.
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
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

impl Report {
    /// The report of `system`, if it ran.
    pub(crate) fn of(&self, system: System) -> Option<&SystemReport> {
        self.systems.iter().find(|r| r.system == system)
    }

    /// The table and the ratios against the stock network.
    pub(crate) fn render(&self) -> String {
        let s = &self.settings;
        let value = self.systems.first().map_or(0, |r| r.value_bytes);
        let mut out = format!(
            "{} nodes per network on 127.0.0.1 (TCP + noise + yamux), K = {}, put and get \
             quorum 1, {} B payload ({} B record value), {} operations in flight, \
             {} round(s) x {} measured operations per network (+{} warm-up), networks \
             interleaved; one operation = put at a node outside the record's K closest, then \
             get from the farthest node\n\n",
            s.nodes, s.k, s.payload, value, s.concurrency, s.rounds, s.ops, s.warmup
        );
        out.push_str(&format!(
            "{:<32} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>6}\n",
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
            "{:<32} {:>7} {:>53} {:>7} {:>7} {:>7}\n",
            "", "", "(milliseconds)", "", "", "(ms)"
        ));
        for r in &self.systems {
            let cpu = r.cpu_seconds.map_or_else(
                || "-".to_string(),
                |c| format!("{:.2}", r.per_op(c) * 1000.0),
            );
            let sigs = r
                .verified
                .map_or_else(|| "-".to_string(), |v| format!("{:.1}", r.per_op(v as f64)));
            out.push_str(&format!(
                "{:<32} {:>7.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7.1} {:>7} {:>7} {:>6}\n",
                r.system.name(),
                r.throughput(),
                ms(quantile(&r.put, 0.5)),
                ms(quantile(&r.put, 0.99)),
                ms(quantile(&r.get, 0.5)),
                ms(quantile(&r.get, 0.99)),
                ms(quantile(&r.op, 0.5)),
                ms(quantile(&r.op, 0.99)),
                r.per_op(r.requests as f64),
                sigs,
                cpu,
                r.failures
            ));
        }
        if let Some(stock) = self.of(System::Stock) {
            out.push('\n');
            for r in self.systems.iter().filter(|r| r.system != System::Stock) {
                let p50 = quantile(&r.op, 0.5).as_secs_f64()
                    / quantile(&stock.op, 0.5)
                        .as_secs_f64()
                        .max(f64::MIN_POSITIVE);
                out.push_str(&format!(
                    "{} / stock: throughput x{:.2} (higher is better), op p50 x{:.2} (lower \
                     is better)\n",
                    r.system.name(),
                    r.throughput() / stock.throughput().max(f64::MIN_POSITIVE),
                    p50
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
            System::Stock => return Ok(Net::Stock(StockNet::start(settings).await?)),
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

    /// Kademlia requests every node of the network has served so far, and the record
    /// signatures they verified (when the network counts them).
    async fn counters(&self) -> (u64, Option<u64>) {
        match self {
            Net::Stock(n) => (n.served.load(Ordering::Relaxed), None),
            Net::Netabase(n) => {
                let (served, verified) = n.counters().await;
                (served, Some(verified))
            }
        }
    }

    /// Bytes of the sealed value of one record.
    fn value_bytes(&self, payload: usize) -> usize {
        seal(&netabase::core::Keypair::from_seed(0), 0, payload).map_or(0, |(_, v)| v.len())
    }

    async fn stop(self) {
        match self {
            Net::Stock(n) => n.stop(),
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
// Stock rust-libp2p Kademlia: one swarm per node on its own task, driven by commands, as
// an application would run it.

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum StockCmd {
    AddAddress(PeerId, Multiaddr),
    Bootstrap(Reply<()>),
    Put(kad::Record, Reply<()>),
    Get(kad::RecordKey, Reply<Option<Vec<u8>>>),
}

struct StockNet {
    commands: Vec<mpsc::UnboundedSender<StockCmd>>,
    peers: Vec<PeerId>,
    /// The identity each node signs the records it writes with.
    writers: Vec<netabase::core::Keypair>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Inbound requests served, every node together.
    served: Arc<AtomicU64>,
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
    async fn start(settings: &Settings) -> Result<StockNet, String> {
        let mut commands = Vec::new();
        let mut peers = Vec::new();
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        let served = Arc::new(AtomicU64::new(0));
        for _ in 0..settings.nodes {
            let (peer, addr, tx, task) = stock_node(settings.k, Arc::clone(&served)).await?;
            peers.push(peer);
            addrs.push(addr);
            commands.push(tx);
            tasks.push(task);
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
            tasks,
            served,
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

    fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Starts one stock Kademlia server on 127.0.0.1: TCP (nodelay, as Netabase's), noise,
/// yamux, `kad::Behaviour` with a `MemoryStore`.
async fn stock_node(
    k: usize,
    served: Arc<AtomicU64>,
) -> Result<
    (
        PeerId,
        Multiaddr,
        mpsc::UnboundedSender<StockCmd>,
        tokio::task::JoinHandle<()>,
    ),
    String,
> {
    let k = std::num::NonZeroUsize::new(k).ok_or("K must be positive")?;
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
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
            config.set_replication_factor(k);
            let store = kad::store::MemoryStore::with_config(
                id,
                kad::store::MemoryStoreConfig {
                    max_records: MAX_RECORDS,
                    ..Default::default()
                },
            );
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
    let (tx, mut rx) = mpsc::unbounded_channel::<StockCmd>();
    let task = tokio::spawn(async move {
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
    });
    Ok((peer, addr, tx, task))
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

/// Runs the benchmark: starts every network, warms each up, then runs the rounds.
/// `progress` is told what is happening (for a terminal).
pub(crate) async fn run(
    settings: &Settings,
    mut progress: impl FnMut(&str),
) -> Result<Report, String> {
    let mut nets = Vec::new();
    for &system in &settings.systems {
        progress(&format!(
            "starting {} nodes: {}",
            settings.nodes,
            system.name()
        ));
        nets.push((system, Arc::new(Net::start(system, settings).await?)));
    }
    // Ids: each network has its own range, each phase its own part of it.
    let id_base = |n: usize| (n as u64 + 1) << 40;
    let mut next_id: Vec<u64> = (0..nets.len()).map(id_base).collect();
    for (n, (system, net)) in nets.iter().enumerate() {
        progress(&format!("warming up: {}", system.name()));
        let (warm, _) = batch(net, next_id[n], settings.warmup, settings).await;
        next_id[n] += settings.warmup as u64;
        if warm.failures > 0 {
            progress(&format!(
                "  {} warm-up failures, first: {}",
                warm.failures,
                warm.first_error.unwrap_or_default()
            ));
        }
    }
    let mut reports: Vec<SystemReport> = nets
        .iter()
        .map(|(system, net)| SystemReport {
            system: *system,
            ops: 0,
            failures: 0,
            seconds: 0.0,
            put: Vec::new(),
            get: Vec::new(),
            op: Vec::new(),
            value_bytes: net.value_bytes(settings.payload),
            requests: 0,
            verified: Some(0),
            cpu_seconds: process_cpu_seconds().map(|_| 0.0),
        })
        .collect();
    for round in 0..settings.rounds {
        for (n, (system, net)) in nets.iter().enumerate() {
            progress(&format!(
                "round {}/{}: {}",
                round + 1,
                settings.rounds,
                system.name()
            ));
            let (served_before, verified_before) = net.counters().await;
            let cpu_before = process_cpu_seconds();
            let (b, took) = batch(net, next_id[n], settings.ops, settings).await;
            let cpu_after = process_cpu_seconds();
            let (served_after, verified_after) = net.counters().await;
            next_id[n] += settings.ops as u64;
            let r = &mut reports[n];
            r.requests += served_after.saturating_sub(served_before);
            r.verified = match (r.verified, verified_before, verified_after) {
                (Some(total), Some(before), Some(after)) => {
                    Some(total + after.saturating_sub(before))
                }
                _ => None,
            };
            if let (Some(total), Some(before), Some(after)) =
                (r.cpu_seconds.as_mut(), cpu_before, cpu_after)
            {
                *total += after - before;
            }
            r.ops += b.op.len();
            r.failures += b.failures;
            r.seconds += took.as_secs_f64();
            r.put.extend(b.put);
            r.get.extend(b.get);
            r.op.extend(b.op);
            if let Some(e) = b.first_error {
                progress(&format!("  {} failures, first: {e}", b.failures));
            }
        }
    }
    for r in &mut reports {
        r.put.sort();
        r.get.sort();
        r.op.sort();
    }
    for (_, net) in nets {
        if let Ok(net) = Arc::try_unwrap(net) {
            net.stop().await;
        }
    }
    Ok(Report {
        settings: settings.clone(),
        systems: reports,
    })
}
