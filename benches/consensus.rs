//! Consensus writes on 127.0.0.1: committed writes per second, latency, entries per
//! fsync and CPU per commit, for 3 and 5 members on redb (every log write durable before
//! the vote that reports it), with one client and with 64 closed-loop clients on the
//! leader. Beside every run, the floor a commit cannot beat: one fdatasync on the same
//! disk, one request/response of the same size over the same libp2p stack (TCP, Noise,
//! yamux), and one round trip over raw TCP.
//!
//! ```sh
//! cargo bench --bench consensus                      # 3 and 5 members, 10 s per run
//! cargo bench --bench consensus -- --seconds 3 --members 3
//! cargo bench --bench consensus --features paxakos -- --engine core --engine paxakos
//! ```
//!
//! With the `paxakos` feature the same runs measure the paxakos engine too. Its promises
//! and state are in memory (no fsync per commit), so its rows compare with the core
//! engine's `--memory` rows for the protocol's cost, and with the redb rows for what
//! durability costs.
//!
//! All nodes, clients and the floor probes run in this one process on the machine's cores.

// A benchmark reports on standard output.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, Swarm};
use netabase::{
    Engine, Netabase, NetabaseConfig, NetabaseEvent, Role, StorageBackend,
    netabase_definition_module,
};

/// The record the clients write.
// The macro generates public key types without documentation of their own.
#[allow(missing_docs)]
#[netabase_definition_module(BenchDefinition, BenchKeys)]
pub mod model {
    use netabase::NetabaseModel;

    /// A value under a key.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[netabase(consensus)]
    pub struct Cell {
        /// The key.
        #[primary_key]
        pub key: u64,
        /// The value.
        pub value: Vec<u8>,
    }
}
use model::{BenchDefinition, Cell};

type Node = Netabase<BenchDefinition>;

#[derive(Debug, Parser)]
struct Args {
    /// Seconds each run measures.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Cluster sizes to run (repeatable).
    #[arg(long = "members", default_values_t = [3usize, 5])]
    members: Vec<usize>,
    /// Closed-loop clients of the concurrent run.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Bytes of each written value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Keys the clients write (uniformly).
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Nodes keep log and state in memory (no fsync): what a commit costs besides the
    /// disk, beside the floor's libp2p exchange.
    #[arg(long)]
    memory: bool,
    /// Consensus engines to run (repeatable): `core`, or `paxakos` with the feature.
    #[arg(long = "engine", default_values_t = default_engines(), value_parser = parse_engine)]
    engines: Vec<EngineName>,
    /// Ignored (cargo bench passes it).
    #[arg(long, hide = true)]
    bench: bool,
}

/// An engine, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EngineName(Engine);

impl std::fmt::Display for EngineName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            #[cfg(feature = "paxakos")]
            Engine::Paxakos => f.pad("paxakos"),
            _ => f.pad("core"),
        }
    }
}

fn parse_engine(name: &str) -> Result<EngineName, String> {
    match name {
        "core" => Ok(EngineName(Engine::Core)),
        #[cfg(feature = "paxakos")]
        "paxakos" => Ok(EngineName(Engine::Paxakos)),
        other => Err(format!(
            "unknown engine {other} (core, or paxakos with the paxakos feature)"
        )),
    }
}

fn default_engines() -> Vec<EngineName> {
    vec![
        EngineName(Engine::Core),
        #[cfg(feature = "paxakos")]
        EngineName(Engine::Paxakos),
    ]
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    println!(
        "consensus benchmark: value {} bytes, {} keys, {} s per run, {}, {} cores",
        args.value_size,
        args.keys,
        args.seconds,
        if args.memory {
            "log and state in memory (no fsync)"
        } else {
            "redb with durable commits"
        },
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for &members in &args.members {
        let floor = Floor::measure(args.value_size).await;
        println!(
            "floor:      fdatasync p50 {:.3} ms; libp2p request/response p50 {:.3} ms; raw TCP round trip p50 {:.3} ms; floor = fdatasync + libp2p = {:.3} ms",
            ms(floor.fsync),
            ms(floor.libp2p),
            ms(floor.tcp),
            ms(floor.total())
        );
        for &engine in &args.engines {
            let dir = tempfile::tempdir().expect("temporary directory");
            let nodes = cluster(dir.path(), members, args.memory, engine.0).await;
            let leader = leader_of(&nodes).await;
            let one = measure(&nodes, leader, 1, &args).await;
            report(engine, members, 1, &one, &floor);
            let many = measure(&nodes, leader, args.clients, &args).await;
            report(engine, members, args.clients, &many, &floor);
            for n in &nodes {
                let _ = n.stop_swarm().await;
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What a commit cannot beat, measured now (the disk's fsync latency changes by itself).
struct Floor {
    fsync: Duration,
    libp2p: Duration,
    tcp: Duration,
}

impl Floor {
    async fn measure(size: usize) -> Floor {
        Floor {
            fsync: fsync_p50(200),
            libp2p: libp2p_p50(size, 500).await,
            tcp: tcp_p50(size, 500).await,
        }
    }

    fn total(&self) -> Duration {
        self.fsync + self.libp2p
    }
}

fn p(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples.get(i).copied().unwrap_or_default()
}

/// The median of `count` 4 KiB appends, each followed by an fdatasync, in a new file of
/// the temporary directory (where the nodes' databases live).
fn fsync_p50(count: usize) -> Duration {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut file = std::fs::File::create(dir.path().join("probe")).expect("probe file");
    let block = [7u8; 4096];
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
        samples.push(started.elapsed());
    }
    p(&mut samples, 0.5)
}

/// Echoes each request's bytes.
#[derive(Clone, Default)]
struct Echo;

impl request_response::Codec for Echo {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        use futures::AsyncReadExt;
        let mut v = Vec::new();
        io.take(1 << 20).read_to_end(&mut v).await?;
        Ok(v)
    }

    async fn read_response<T>(&mut self, p: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        self.read_request(p, io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        use futures::AsyncWriteExt;
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        self.write_request(p, io, res).await
    }
}

fn echo_swarm() -> Swarm<request_response::Behaviour<Echo>> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("tcp transport")
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                Echo,
                [(
                    StreamProtocol::new("/bench/echo/1.0.0"),
                    ProtocolSupport::Full,
                )],
                request_response::Config::default(),
            )
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// The median round trip of a `size`-byte request answered by a `size`-byte response
/// between two libp2p swarms on 127.0.0.1, over one established connection.
async fn libp2p_p50(size: usize, count: usize) -> Duration {
    let mut server = echo_swarm();
    server
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
        .expect("listen");
    let addr: Multiaddr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let server_id = *server.local_peer_id();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_server = stop.clone();
    let serving = tokio::spawn(async move {
        while !stop_server.load(Ordering::Relaxed) {
            if let SwarmEvent::Behaviour(request_response::Event::Message {
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            }) = server.select_next_some().await
            {
                let _ = server.behaviour_mut().send_response(channel, request);
            }
        }
    });
    let mut client = echo_swarm();
    client.add_peer_address(server_id, addr);
    let mut samples = Vec::with_capacity(count);
    let payload = vec![1u8; size];
    for i in 0..count + 20 {
        let started = Instant::now();
        client
            .behaviour_mut()
            .send_request(&server_id, payload.clone());
        loop {
            match client.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { .. },
                    ..
                }) => break,
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => {
                    panic!("echo request failed: {error}")
                }
                _ => {}
            }
        }
        // The first exchanges also dial and negotiate: not part of the floor.
        if i >= 20 {
            samples.push(started.elapsed());
        }
    }
    stop.store(true, Ordering::Relaxed);
    serving.abort();
    p(&mut samples, 0.5)
}

/// The median round trip of `size` bytes echoed over one raw TCP connection on
/// 127.0.0.1 (no encryption, no multiplexing).
async fn tcp_p50(size: usize, count: usize) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let echo = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = vec![0u8; size];
        while s.read_exact(&mut buf).await.is_ok() {
            if s.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let out = vec![1u8; size];
    let mut back = vec![0u8; size];
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        s.write_all(&out).await.expect("write");
        s.read_exact(&mut back).await.expect("read");
        samples.push(started.elapsed());
    }
    drop(s);
    let _ = echo.await;
    p(&mut samples, 0.5)
}

/// `members` nodes on 127.0.0.1 (redb with durable commits, or memory; mDNS off) in one
/// cluster.
async fn cluster(
    root: &std::path::Path,
    members: usize,
    memory: bool,
    engine: Engine,
) -> Vec<Node> {
    let mut nodes = Vec::new();
    for i in 0..members {
        let backend = if memory {
            StorageBackend::Memory
        } else {
            StorageBackend::Redb
        };
        let config = NetabaseConfig::default()
            .with_backend(backend)
            .with_data_dir(root.join(format!("node-{i}")))
            .with_listen_addresses(["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")])
            .with_mdns(false)
            .with_consensus(engine);
        let node = Node::new_with_config(config).expect("node");
        node.start_swarm().await.expect("start");
        nodes.push(node);
    }
    for a in &nodes {
        for b in &nodes {
            if a.local_peer_id() != b.local_peer_id() {
                let addrs = b.listen_addresses().await.expect("addresses");
                a.add_address(b.local_peer_id(), addrs[0].clone())
                    .await
                    .expect("address");
            }
        }
    }
    let ids: Vec<_> = nodes.iter().map(Node::local_peer_id).collect();
    let mut events = nodes[0].subscribe_to_broadcasts();
    let cluster = nodes[0].create_cluster(&ids).await.expect("cluster");
    for n in &nodes[1..] {
        n.join_cluster(cluster, &ids).await.expect("join");
    }
    if engine == Engine::Core {
        loop {
            if let Ok(NetabaseEvent::ConsensusLeader {
                leader: Some(_), ..
            }) = events.recv().await
            {
                break;
            }
        }
    } else {
        // paxakos elects its leader with the first write.
        nodes[0]
            .put_record_consensus(Cell {
                key: 0,
                value: Vec::new(),
            })
            .await
            .expect("a first write");
    }
    nodes
}

async fn leader_of(nodes: &[Node]) -> usize {
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if let Ok(Some(s)) = n.cluster_status().await
                && s.role == Role::Leader
            {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Run {
    commits: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    cpu: Option<f64>,
    syncs: u64,
    slots: u64,
}

/// `clients` closed-loop writers on the leader for the configured time.
async fn measure(nodes: &[Node], leader: usize, clients: usize, args: &Args) -> Run {
    let before = nodes[leader]
        .cluster_status()
        .await
        .ok()
        .flatten()
        .map(|s| (s.stats.syncs, s.stats.slots_committed))
        .unwrap_or_default();
    let cpu_before = process_cpu_seconds();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let node = nodes[leader].clone();
        let (keys, size) = (args.keys, args.value_size);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = c as u64;
            while Instant::now() < deadline {
                i = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let cell = Cell {
                    key: (i >> 33) % keys,
                    value: vec![(i >> 56) as u8; size],
                };
                let t = Instant::now();
                if node.put_record_consensus(cell).await.is_ok() {
                    latencies.push(t.elapsed());
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("client"));
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu_seconds().zip(cpu_before).map(|(a, b)| a - b);
    let after = nodes[leader]
        .cluster_status()
        .await
        .ok()
        .flatten()
        .map(|s| (s.stats.syncs, s.stats.slots_committed))
        .unwrap_or_default();
    Run {
        commits: latencies.len() as u64,
        elapsed,
        latencies,
        cpu,
        syncs: after.0.saturating_sub(before.0),
        slots: after.1.saturating_sub(before.1),
    }
}

fn report(engine: EngineName, members: usize, clients: usize, run: &Run, floor: &Floor) {
    let mut l = run.latencies.clone();
    let (p50, p99) = (p(&mut l, 0.5), p(&mut l, 0.99));
    let rate = run.commits as f64 / run.elapsed.as_secs_f64();
    // The paxakos engine counts neither fsyncs (it has none) nor slots.
    let per = |n: u64| {
        if n == 0 {
            "n/a".to_string()
        } else {
            format!("{:.1}", run.commits as f64 / n as f64)
        }
    };
    println!(
        "{engine:>7}, {members} members, {clients:>2} client(s): {rate:>8.0} commits/s; p50 {:.3} ms ({:.2}× floor), p99 {:.3} ms; {} entries per leader fsync, {} entries per slot; {} CPU µs per commit (all nodes)",
        ms(p50),
        p50.as_secs_f64() / floor.total().as_secs_f64().max(1e-9),
        ms(p99),
        per(run.syncs),
        per(run.slots),
        run.cpu
            .map(|c| format!("{:.0}", c * 1e6 / run.commits.max(1) as f64))
            .unwrap_or_else(|| "n/a".into()),
    );
}

/// CPU time (user and system) this process has used so far, from `/proc/self/stat`
/// (Linux); `None` elsewhere.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
