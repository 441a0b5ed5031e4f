//! `netabase-test-node`: one Netabase node driven over standard input and output with JSON
//! lines (see the library documentation for the line formats). Logs go to standard error.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use netabase::core::model::{Envelope, Opened, record_key};
use netabase::swarm::libp2p::multiaddr::Protocol;
use netabase::swarm::{Netabase, Runtime};
use netabase::{
    ClusterId, ConsensusError, DEFAULT_PROTOCOL_NAME, EntryId, EntryStatus, EventError, Multiaddr,
    NetabaseConfig, NetabaseError, PeerId, Position, ReadLevel, Role, StorageBackend,
};
use netabase_cli::protocol::{mode_name, mode_of, node_counters};
use netabase_testnode::{
    BootstrapReply, CasReply, ChatDefinition, ClusterStatusReply, Command, ConsensusFound,
    ConsensusReply, ConsensusWriteReply, EntryRef, EntryStatusReply, Event, Found, LocalRecord,
    LogPosition, MessagePrimaryKey, ModeName, Output, PeersReply, ProviderReply, ProvidingReply,
    PutReply, ReadLevelName, Request, RoleName, UserPrimaryKey, Version, hex,
};
use serde_json::Value;

/// The async runtimes the node can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RuntimeName {
    /// tokio (multi-threaded, two workers).
    Tokio,
    /// async-std (its global executor).
    AsyncStd,
    /// smol (its global executor).
    Smol,
}

/// The storage engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BackendName {
    Redb,
    Sled,
    Memory,
}

/// One Netabase node for the chat definition, driven with JSON lines on stdin/stdout.
#[derive(Debug, Parser)]
#[command(name = "netabase-test-node", version, args_override_self = true)]
struct Args {
    /// Where the database and the identity key live (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// An address to listen on (repeatable).
    #[arg(long = "listen", default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: Vec<Multiaddr>,
    /// The DHT mode to start in.
    #[arg(long, value_enum, default_value_t = ModeName::Server)]
    mode: ModeName,
    /// The Kademlia protocol name.
    #[arg(long, default_value = DEFAULT_PROTOCOL_NAME)]
    protocol: String,
    /// Discover peers with mDNS (multicast on every local interface: use it only inside a
    /// network namespace of its own).
    #[arg(long)]
    mdns: bool,
    /// A peer to join through, as a multiaddr ending in `/p2p/<peer id>` (repeatable).
    #[arg(long = "bootstrap")]
    bootstrap: Vec<Multiaddr>,
    /// The async runtime.
    #[arg(long, value_enum, default_value_t = RuntimeName::Tokio)]
    runtime: RuntimeName,
    /// The storage engine.
    #[arg(long, value_enum, default_value_t = BackendName::Redb)]
    backend: BackendName,
    /// How long one DHT request may take, in milliseconds.
    #[arg(long)]
    request_timeout_ms: Option<u64>,
    /// How long one DHT query may take, in milliseconds.
    #[arg(long)]
    query_timeout_ms: Option<u64>,
    /// How long one Kademlia stream may take, in milliseconds.
    #[arg(long)]
    stream_timeout_ms: Option<u64>,
    /// The longest a lookup waits for one peer before going on without it, in
    /// milliseconds; 0: wait for the request timeout.
    #[arg(long)]
    lookup_patience_ms: Option<u64>,
    /// Lifetime of the records this node publishes, in milliseconds; 0: never expire.
    #[arg(long)]
    record_ttl_ms: Option<u64>,
    /// How often the records held for other peers are stored again at the closest peers,
    /// in milliseconds; 0: never.
    #[arg(long)]
    replication_interval_ms: Option<u64>,
    /// How often the node's own records are published again, in milliseconds; 0: never.
    #[arg(long)]
    publication_interval_ms: Option<u64>,
    /// How often the records that missed their put quorum are published again, in
    /// milliseconds; 0: only with the republication.
    #[arg(long)]
    outbox_interval_ms: Option<u64>,
    /// How long a removal (tombstone) is kept, from its own timestamp, in milliseconds.
    #[arg(long)]
    tombstone_horizon_ms: Option<u64>,
    /// How often expired records are removed from the store, in milliseconds.
    #[arg(long)]
    expiry_sweep_interval_ms: Option<u64>,
    /// Kademlia requests per second one source address may send (bursts of twice as
    /// many); 0: no limit.
    #[arg(long)]
    requests_per_ip: Option<u32>,
    /// Kademlia requests per second one peer may send (bursts of twice as many); 0: no
    /// limit.
    #[arg(long)]
    requests_per_peer: Option<u32>,
    /// How long a consensus proposal may wait to be applied before it is reported
    /// indeterminate, in milliseconds.
    #[arg(long)]
    proposal_timeout_ms: Option<u64>,
    /// How long a consensus read may wait for a leader's confirmation, in milliseconds.
    #[arg(long)]
    read_timeout_ms: Option<u64>,
    /// The consensus engine: `core` (the default) or `paxakos`.
    #[arg(long, default_value = "core")]
    engine: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = config(&args).and_then(|config| match args.runtime {
        // The only runtime-specific lines: build the runtime and run the node on it.
        RuntimeName::Tokio => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))
            .and_then(|rt| rt.block_on(serve::<netabase::TokioRuntime>(config, "tokio"))),
        RuntimeName::AsyncStd => {
            async_std::task::block_on(serve::<netabase::AsyncStdRuntime>(config, "async-std"))
        }
        RuntimeName::Smol => smol::block_on(serve::<netabase::SmolRuntime>(config, "smol")),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netabase-test-node: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A `(peer, address)` pair from a multiaddr ending in `/p2p/<peer>`.
fn split_peer(addr: &Multiaddr) -> Result<(PeerId, Multiaddr), String> {
    let mut addr = addr.clone();
    match addr.pop() {
        Some(Protocol::P2p(peer)) => Ok((peer, addr)),
        _ => Err(format!(
            "{addr}: a bootstrap address must end in /p2p/<peer id>"
        )),
    }
}

fn config(args: &Args) -> Result<NetabaseConfig, String> {
    let mut config = NetabaseConfig::default()
        .with_data_dir(&args.data_dir)
        .with_listen_addresses(args.listen.iter().cloned())
        .with_mdns(args.mdns)
        .with_mode(mode_of(args.mode))
        .with_protocol_name(args.protocol.clone())
        .with_backend(match args.backend {
            BackendName::Redb => StorageBackend::Redb,
            BackendName::Sled => StorageBackend::Sled,
            BackendName::Memory => StorageBackend::Memory,
        });
    for addr in &args.bootstrap {
        let (peer, addr) = split_peer(addr)?;
        config = config.with_bootstrap_peer(peer, addr);
    }
    if let Some(ms) = args.request_timeout_ms {
        config.kad.request_timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = args.query_timeout_ms {
        config.kad.query_timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = args.stream_timeout_ms {
        config.stream_timeout = Duration::from_millis(ms);
    }
    match args.lookup_patience_ms {
        Some(0) => config.kad.lookup_patience = None,
        Some(ms) => config.kad.lookup_patience = Some(Duration::from_millis(ms)),
        None => {}
    }
    // Optional periods: 0 switches the job off.
    let period = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
    if let Some(ms) = args.record_ttl_ms {
        config.kad.record_ttl = period(ms);
    }
    if let Some(ms) = args.replication_interval_ms {
        config.kad.replication_interval = period(ms);
    }
    if let Some(ms) = args.publication_interval_ms {
        config.kad.publication_interval = period(ms);
    }
    if let Some(ms) = args.outbox_interval_ms {
        config.kad.outbox_interval = period(ms);
    }
    if let Some(ms) = args.tombstone_horizon_ms {
        config.kad.tombstone_horizon = Duration::from_millis(ms);
    }
    let rate = |n: u32| {
        (n > 0).then_some(netabase::swarm::Rate {
            per_second: n,
            burst: n.saturating_mul(2),
        })
    };
    if let Some(n) = args.requests_per_ip {
        config.inbound_limits.requests_per_ip = rate(n);
    }
    if let Some(n) = args.requests_per_peer {
        config.inbound_limits.requests_per_peer = rate(n);
    }
    if let Some(ms) = args.proposal_timeout_ms {
        config.consensus.proposal_timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = args.read_timeout_ms {
        config.consensus.read_timeout = Duration::from_millis(ms);
    }
    config.engine = match args.engine.as_str() {
        "core" => netabase::Engine::Core,
        "paxakos" => netabase::Engine::Paxakos,
        other => {
            return Err(format!(
                "unknown consensus engine {other} (core or paxakos)"
            ));
        }
    };
    if let Some(ms) = args.expiry_sweep_interval_ms {
        if ms == 0 {
            return Err("--expiry-sweep-interval-ms must be positive".to_string());
        }
        config.kad.expiry_sweep_interval = Duration::from_millis(ms);
    }
    Ok(config)
}

/// Standard output, shared by every task: lines go to one thread that writes and flushes
/// each (the `netabase` command's writer), so that lines never interleave and a slow
/// reader never blocks the node.
#[derive(Clone)]
struct Out(netabase_cli::node::Out);

impl Out {
    fn start() -> (Out, std::thread::JoinHandle<()>) {
        let (out, writer) = netabase_cli::node::Out::start();
        (Out(out), writer)
    }

    fn send(&self, output: &Output) {
        match serde_json::to_string(output) {
            Ok(line) => self.0.line(line),
            Err(e) => eprintln!("netabase-test-node: cannot encode output: {e}"),
        }
    }

    fn reply(&self, req: u64, result: Result<Value, String>) {
        self.send(&match result {
            Ok(result) => Output::Reply {
                req,
                ok: true,
                result,
                error: None,
            },
            Err(error) => Output::Reply {
                req,
                ok: false,
                result: Value::Null,
                error: Some(error),
            },
        });
    }
}

/// Lines of standard input, read on a thread of their own; the stream ends at end of
/// input.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(line) if line.trim().is_empty() => {}
                Ok(line) => {
                    if tx.unbounded_send(line).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    eprintln!("netabase-test-node: reading stdin: {e}");
                    return;
                }
            }
        }
    });
    rx
}

/// Runs the node on runtime `R` until a `shutdown` command or the end of standard input.
async fn serve<R: Runtime>(config: NetabaseConfig, runtime: &str) -> Result<(), String> {
    let node = Netabase::<ChatDefinition, R>::new_with_config(config)
        .map_err(|e| format!("opening the node: {e}"))?;
    let (out, writer) = Out::start();

    let mut events = node.subscribe_to_broadcasts();
    let events_out = out.clone();
    // Ends after forwarding the node's `stopped` event.
    let (forwarded_tx, forwarded) = futures::channel::oneshot::channel::<()>();
    R::spawn(
        async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => Event::from(&event),
                    Err(EventError::Lagged(missed)) => Event::Lagged { missed },
                    Err(EventError::Closed) => return,
                };
                let stopped = event == Event::Stopped;
                events_out.send(&Output::Event { event });
                if stopped {
                    let _ = forwarded_tx.send(());
                    return;
                }
            }
        }
        .boxed(),
    );

    node.start_swarm()
        .await
        .map_err(|e| format!("starting the swarm: {e}"))?;
    let listen_addresses = node
        .listen_addresses()
        .await
        .map_err(|e| format!("listen addresses: {e}"))?;
    out.send(&Output::Ready {
        peer_id: node.local_peer_id().to_string(),
        listen_addresses: listen_addresses.iter().map(ToString::to_string).collect(),
        protocol_names: node.get_protocol_names(),
        runtime: runtime.to_string(),
    });
    eprintln!(
        "netabase-test-node: {} listening on {listen_addresses:?}",
        node.local_peer_id()
    );

    let mut lines = stdin_lines();
    let mut shutdown = None;
    while let Some(line) = lines.next().await {
        let request: Request = match serde_json::from_str(&line) {
            Ok(request) => request,
            Err(e) => {
                out.send(&Output::Invalid {
                    error: e.to_string(),
                });
                continue;
            }
        };
        if request.command == Command::Shutdown {
            shutdown = Some(request.req);
            break;
        }
        let (node, out) = (node.clone(), out.clone());
        // Every command runs on a task of its own, so that a slow query does not hold up
        // the others; replies carry the request's number.
        R::spawn(
            async move {
                let result = execute(&node, request.command).await;
                out.reply(request.req, result);
            }
            .boxed(),
        );
    }
    // A shutdown command (or the end of input): stop gracefully, acknowledge, exit.
    let stopped = node.stop_swarm().await.map_err(|e| e.to_string());
    eprintln!("netabase-test-node: {} stopped", node.local_peer_id());
    // The `stopped` event is the last event line (unless the forwarder lagged past it).
    let _ = futures::future::select(forwarded, R::sleep(Duration::from_secs(2))).await;
    if let Some(id) = shutdown {
        out.reply(id, stopped.clone().map(|()| Value::Null));
    }
    // Everything sent so far is written before the writer ends.
    out.0.close();
    let _ = writer.join();
    stopped
}

fn peer(s: &str) -> Result<PeerId, String> {
    s.parse().map_err(|e| format!("peer id {s:?}: {e}"))
}

fn multiaddr(s: &str) -> Result<Multiaddr, String> {
    s.parse().map_err(|e| format!("address {s:?}: {e}"))
}

fn strings<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

fn json<T: serde::Serialize>(value: T) -> Result<Value, String> {
    serde_json::to_value(value).map_err(|e| e.to_string())
}

fn found<M>(found: Option<netabase::GetRecordResult<M>>) -> Option<Found<M>> {
    found.map(|f| Found {
        record: f.record,
        source: f.source.map(|p| p.to_string()),
        origin: f.origin.to_string(),
        timestamp: f.timestamp,
    })
}

fn put_reply(put: netabase::PutRecordResult) -> PutReply {
    PutReply {
        key: hex(put.key.as_bytes()),
        stored_at: strings(&put.stored_at),
        quorum_error: put.quorum_error.map(|e| e.to_string()),
        superseded_by: put.superseded_by.map(|s| Version {
            origin: s.origin.to_string(),
            timestamp: s.timestamp,
            removed: s.removed,
        }),
    }
}

fn peers(items: &[String]) -> Result<Vec<PeerId>, String> {
    items.iter().map(|p| peer(p)).collect()
}

fn position(p: Position) -> LogPosition {
    LogPosition {
        slot: p.slot,
        index: p.index,
    }
}

fn entry_ref(id: EntryId) -> EntryRef {
    EntryRef {
        proposer: id.proposer.to_string(),
        seq: id.seq,
    }
}

fn entry_id(entry: &EntryRef) -> Result<EntryId, String> {
    let proposer = netabase::core::PeerId::from_bytes(&peer(&entry.proposer)?.to_bytes())
        .map_err(|e| format!("peer id {:?}: {e}", entry.proposer))?;
    Ok(EntryId {
        proposer,
        seq: entry.seq,
    })
}

/// A consensus call's outcome, with its error sorted by kind.
fn consensus<T, U>(
    result: Result<T, NetabaseError>,
    done: impl FnOnce(T) -> U,
) -> ConsensusReply<U> {
    match result {
        Ok(t) => ConsensusReply::Done(done(t)),
        Err(NetabaseError::Consensus(ConsensusError::Indeterminate(id))) => {
            ConsensusReply::Indeterminate(entry_ref(id))
        }
        Err(NetabaseError::Consensus(e)) => ConsensusReply::Refused(e.to_string()),
        Err(e) => ConsensusReply::Failed(e.to_string()),
    }
}

fn cluster_status(status: netabase::ClusterStatus) -> ClusterStatusReply {
    ClusterStatusReply {
        cluster: status.cluster.to_string(),
        members: strings(&status.members),
        learners: strings(&status.learners),
        role: match status.role {
            Role::Follower => RoleName::Follower,
            Role::Candidate => RoleName::Candidate,
            Role::Leader => RoleName::Leader,
        },
        leader: status.leader.map(|p| p.to_string()),
        round: status.round,
        committed: status.committed,
        applied: status.applied,
        elections: status.stats.elections,
        terms_led: status.stats.terms_led,
        dedup_hits: status.stats.dedup_hits,
        catch_ups: status.stats.catch_ups,
    }
}

/// The DHT record `node` holds for `Message` `id`, decoded.
fn local_record<R: Runtime>(
    node: &Netabase<ChatDefinition, R>,
    id: u64,
) -> Result<Option<LocalRecord>, String> {
    let key = record_key(&MessagePrimaryKey(id)).map_err(|e| e.to_string())?;
    let Some(stored) = node.local_record(&key).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let (envelope, record) = match Envelope::open_verified::<ChatDefinition>(&key, &stored.value)
        .map_err(|e| format!("the stored record does not open: {e}"))?
    {
        Opened::Removed(envelope) => (envelope, None),
        Opened::Value(ChatDefinition::Message(message), envelope) => (envelope, Some(message)),
        Opened::Value(other, _) => return Err(format!("not a message: {other:?}")),
    };
    Ok(Some(LocalRecord {
        version: Version {
            origin: envelope.origin.to_string(),
            timestamp: envelope.timestamp,
            removed: envelope.tombstone,
        },
        record,
        publisher: stored.publisher.map(|p| p.to_string()),
        expires: stored.expires.map(|t| t.as_micros()),
    }))
}

/// Runs one command.
async fn execute<R: Runtime>(
    node: &Netabase<ChatDefinition, R>,
    command: Command,
) -> Result<Value, String> {
    let e = |e: NetabaseError| e.to_string();
    match command {
        Command::Put { message } => json(put_reply(node.put_record(message).await.map_err(e)?)),
        Command::PutUser { user } => json(put_reply(node.put_record(user).await.map_err(e)?)),
        Command::Get { id } => json(found(
            node.get_record(&MessagePrimaryKey(id)).await.map_err(e)?,
        )),
        Command::GetUser { name } => json(found(
            node.get_record(&UserPrimaryKey(name)).await.map_err(e)?,
        )),
        Command::Remove { id } => json(
            node.remove_record(&MessagePrimaryKey(id))
                .await
                .map_err(e)?,
        ),
        Command::Local { id } => json(local_record(node, id)?),
        Command::LocalMessages { limit } => json(
            node.query_local_records::<netabase_testnode::Message>(limit)
                .await
                .map_err(e)?,
        ),
        Command::StartProviding { id } => {
            let result = node
                .start_providing(&MessagePrimaryKey(id))
                .await
                .map_err(e)?;
            json(ProvidingReply {
                key: hex(result.key.as_bytes()),
                announced_to: strings(&result.announced_to),
                error: result.error.map(|e| e.to_string()),
            })
        }
        Command::StopProviding { id } => json(
            node.stop_providing(&MessagePrimaryKey(id))
                .await
                .map_err(e)?,
        ),
        Command::GetProviders { id } => {
            let providers = node
                .get_providers(&MessagePrimaryKey(id))
                .await
                .map_err(e)?;
            json(
                providers
                    .into_iter()
                    .map(|p| ProviderReply {
                        peer: p.peer.to_string(),
                        addresses: strings(&p.addresses),
                    })
                    .collect::<Vec<_>>(),
            )
        }
        Command::Bootstrap => json(BootstrapReply {
            routing_table_size: node.bootstrap().await.map_err(e)?.routing_table_size,
        }),
        Command::AddAddress { peer: p, address } => json(
            node.add_address(peer(&p)?, multiaddr(&address)?)
                .await
                .map_err(e)?,
        ),
        Command::RemoveAddress { peer: p, address } => json(
            node.remove_address(peer(&p)?, multiaddr(&address)?)
                .await
                .map_err(e)?,
        ),
        Command::RemovePeer { peer: p } => json(node.remove_peer(peer(&p)?).await.map_err(e)?),
        Command::SetMode { mode } => json(node.set_mode(mode_of(mode)).await.map_err(e)?),
        Command::GetMode => json(mode_name(node.get_mode().await.map_err(e)?)),
        Command::Peers => json(PeersReply {
            connected: strings(&node.connected_peers().await.map_err(e)?),
            routing_table: strings(&node.routing_table_peers().await.map_err(e)?),
        }),
        Command::Stats => json(node_counters(&node.stats().await.map_err(e)?)),
        Command::CreateCluster { members } => json(
            node.create_cluster(&peers(&members)?)
                .await
                .map_err(e)?
                .to_string(),
        ),
        Command::JoinCluster { cluster, members } => {
            let cluster: ClusterId = cluster
                .parse()
                .map_err(|e| format!("cluster id {cluster:?}: {e}"))?;
            json(
                node.join_cluster(cluster, &peers(&members)?)
                    .await
                    .map_err(e)?,
            )
        }
        Command::ClusterStatus => json(node.cluster_status().await.map_err(e)?.map(cluster_status)),
        Command::AddMember { peer: id } => {
            let peer = peer(&id)?;
            json(consensus(node.add_member(peer).await, |slot| slot))
        }
        Command::RemoveMember { peer: id } => {
            let peer = peer(&id)?;
            json(consensus(node.remove_member(peer).await, |slot| slot))
        }
        Command::ReplaceMember { old, new } => {
            let (old, new) = (peer(&old)?, peer(&new)?);
            json(consensus(node.replace_member(old, new).await, |slot| slot))
        }
        Command::ConsensusPut { message } => {
            json(consensus(node.put_record_consensus(message).await, |w| {
                ConsensusWriteReply {
                    entry: entry_ref(w.id),
                    position: position(w.position),
                }
            }))
        }
        Command::ConsensusRemove { id } => json(consensus(
            node.remove_record_consensus(&MessagePrimaryKey(id)).await,
            |w| ConsensusWriteReply {
                entry: entry_ref(w.id),
                position: position(w.position),
            },
        )),
        Command::ConsensusCas { id, expected, new } => json(consensus(
            node.compare_and_set_consensus(&MessagePrimaryKey(id), expected, new)
                .await,
            |c| CasReply {
                swapped: c.swapped,
                position: position(c.position),
            },
        )),
        Command::ConsensusGet { id, level } => {
            let level = match level {
                ReadLevelName::Linearizable => ReadLevel::Linearizable,
                ReadLevelName::Lease => ReadLevel::Lease,
                ReadLevelName::Local => ReadLevel::Local,
            };
            json(consensus(
                node.get_record_consensus(&MessagePrimaryKey(id), level)
                    .await,
                |found| {
                    found.map(|(record, at)| ConsensusFound {
                        record,
                        position: position(at),
                    })
                },
            ))
        }
        Command::ConsensusEntryStatus { entry } => json(consensus(
            node.consensus_entry_status(entry_id(&entry)?).await,
            |status| match status {
                EntryStatus::Applied(answer) => EntryStatusReply::Applied(hex(&answer)),
                EntryStatus::Pending => EntryStatusReply::Pending,
                EntryStatus::Unknown => EntryStatusReply::Unknown,
            },
        )),
        // Handled by the input loop; answered here only if it ever arrives another way.
        Command::Shutdown => Ok(Value::Null),
    }
}
