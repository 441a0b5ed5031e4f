//! The driver: one task that owns the swarm, the core node and the DHT record store, and
//! moves bytes and events between them. Every decision is the core's.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::channel::{mpsc, oneshot};
use futures::future::{BoxFuture, Fuse, FusedFuture, FutureExt};
use futures::{StreamExt, select_biased};
use libp2p::core::transport::{ListenerId, TransportError};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, Swarm, identify, mdns, ping};
use netabase_core::{
    Address, Event, Instant, Machine, MachineOutput, Mode, Node, NodeStats, Output, QueryId,
    QueryResult, QueryStats, Quorum, Record, RecordKey, RequestFailure, RequestId,
};
use netabase_store::PersistentRecordStore;

use crate::behaviour::{NodeBehaviour, NodeBehaviourEvent};
use crate::carrier::CarrierEvent;
use crate::convert::{to_address, to_core_peer, to_libp2p_peer, to_multiaddr};
use crate::error::NetabaseError;
use crate::event::{NetabaseEvent, QueryKind};
use crate::metrics::{
    KINDS, NodeMetrics, kind_index, kind_label, outcome_label, rejection_label, stream_error_label,
};
use crate::runtime::Runtime;

/// How often the gauges that need a store read are refreshed while metrics are kept.
const GAUGE_REFRESH: Duration = Duration::from_secs(1);

/// At most this many swarm events that are already waiting are handled after a step,
/// before the step's outputs go out (bounding the latency one burst adds to the first).
const READY_BATCH: usize = 64;

/// The label value of a query kind.
fn operation_label(kind: QueryKind) -> &'static str {
    match kind {
        QueryKind::GetRecord => "get_record",
        QueryKind::PutRecord => "put_record",
        QueryKind::StartProviding => "start_providing",
        QueryKind::GetProviders => "get_providers",
        QueryKind::Bootstrap => "bootstrap",
        QueryKind::Lookup => "lookup",
    }
}

/// The driver's handles on its metrics: Kademlia message counters resolved once, so
/// counting a message is one atomic add.
struct DriverMetrics {
    node: NodeMetrics,
    /// `[direction][role][kind]`: direction 0 in, 1 out; role 0 request, 1 response.
    kad: [[[prometheus_client::metrics::counter::Counter; 6]; 2]; 2],
    identify_in: prometheus_client::metrics::counter::Counter,
    identify_out: prometheus_client::metrics::counter::Counter,
    identify_push_out: prometheus_client::metrics::counter::Counter,
    ping_out: prometheus_client::metrics::counter::Counter,
    pong_in: prometheus_client::metrics::counter::Counter,
}

impl DriverMetrics {
    fn new(node: NodeMetrics, protocol: &StreamProtocol) -> Self {
        let kad_protocol: std::borrow::Cow<'static, str> = protocol.to_string().into();
        let kad = std::array::from_fn(|direction| {
            std::array::from_fn(|role| {
                std::array::from_fn(|kind| {
                    node.message_counter(
                        ["in", "out"][direction],
                        kad_protocol.clone(),
                        kind_label(KINDS[kind]),
                        ["request", "response"][role],
                    )
                })
            })
        });
        let counter = |direction, protocol: &StreamProtocol, kind, role| {
            node.message_counter(direction, protocol.to_string().into(), kind, role)
        };
        DriverMetrics {
            identify_in: counter("in", &identify::PROTOCOL_NAME, "identify", "response"),
            identify_out: counter("out", &identify::PROTOCOL_NAME, "identify", "response"),
            identify_push_out: counter("out", &identify::PUSH_PROTOCOL_NAME, "identify", "request"),
            ping_out: counter("out", &ping::PROTOCOL_NAME, "ping", "request"),
            pong_in: counter("in", &ping::PROTOCOL_NAME, "ping", "response"),
            kad,
            node,
        }
    }

    fn kad(&self, inbound: bool, response: bool, kind: netabase_core::MessageKind) {
        self.kad[usize::from(!inbound)][usize::from(response)][kind_index(kind)].inc();
    }
}

/// The answer to a query command: the core's result and counters.
pub(crate) type QueryReply = oneshot::Sender<Result<QueryDone, NetabaseError>>;

/// A finished query: the core's result, its counters, and for a put the newer version a
/// peer answered with, if one did.
#[derive(Debug)]
pub(crate) struct QueryDone {
    pub(crate) result: QueryResult,
    pub(crate) stats: QueryStats,
    pub(crate) superseded_by: Option<Box<Record>>,
}

/// A record to version, sign and publish: the driver asks the core to seal it, runs the
/// local write, then publishes.
#[derive(Debug)]
pub(crate) struct PutOp {
    pub(crate) key: RecordKey,
    pub(crate) model: netabase_core::model::ModelId,
    pub(crate) schema_version: u32,
    pub(crate) payload: Vec<u8>,
    /// A removal: the record becomes a tombstone (`payload` is empty).
    pub(crate) tombstone: bool,
    pub(crate) local: LocalWrite,
}

/// A write to the local typed store that must succeed before a put is published. The
/// driver runs it, on its own thread or task, so that a durable commit (which waits for the
/// disk) holds no task of the caller.
pub(crate) struct LocalWrite(pub(crate) Box<LocalWriteFn>);

/// The typed write of a put or removal, given the version the core sealed.
pub(crate) type LocalWriteFn =
    dyn FnOnce(&netabase_core::Version) -> Result<(), NetabaseError> + Send;

impl std::fmt::Debug for LocalWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalWrite")
    }
}

/// A query an API call starts.
#[derive(Debug)]
pub(crate) enum QueryOp {
    /// Sealed by the core, then the local write; the record is published only if it
    /// succeeds.
    Put(Box<PutOp>),
    Get(RecordKey),
    StartProviding(RecordKey),
    GetProviders(RecordKey),
    Bootstrap,
}

/// What the node looks like from outside, for the handle's inspection calls.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) listen_addresses: Vec<Multiaddr>,
    pub(crate) connected_peers: Vec<libp2p::PeerId>,
    pub(crate) routing_table: Vec<libp2p::PeerId>,
    pub(crate) mode: Mode,
    pub(crate) stats: NodeStats,
    pub(crate) inbound_stream_failures: u64,
    pub(crate) inbound_refused: u64,
}

/// A call from a handle.
pub(crate) enum Command {
    Query {
        op: QueryOp,
        reply: QueryReply,
    },
    StopProviding {
        key: RecordKey,
        reply: oneshot::Sender<Result<(), NetabaseError>>,
    },
    AddAddress {
        peer: libp2p::PeerId,
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), NetabaseError>>,
    },
    RemoveAddress {
        peer: libp2p::PeerId,
        addr: Multiaddr,
        reply: oneshot::Sender<()>,
    },
    RemovePeer {
        peer: libp2p::PeerId,
        reply: oneshot::Sender<bool>,
    },
    SetMode {
        mode: Mode,
        reply: oneshot::Sender<()>,
    },
    Snapshot {
        reply: oneshot::Sender<Snapshot>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
    Consensus(crate::consensus::ConsensusCommand),
}

/// The node's clock: microseconds since the Unix epoch at start, advanced by the runtime's
/// monotonic clock, so that record expiry times written to disk stay meaningful across
/// restarts and never go backwards while the node runs.
struct Clock<R: Runtime> {
    origin: u64,
    start: std::time::Instant,
    _runtime: std::marker::PhantomData<fn() -> R>,
}

impl<R: Runtime> Clock<R> {
    fn new() -> Self {
        let origin = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Clock {
            origin,
            start: R::now(),
            _runtime: std::marker::PhantomData,
        }
    }

    fn now(&self) -> Instant {
        let elapsed =
            u64::try_from(R::now().duration_since(self.start).as_micros()).unwrap_or(u64::MAX);
        Instant::from_micros(self.origin.saturating_add(elapsed))
    }

    fn until(&self, deadline: Instant) -> Duration {
        deadline.saturating_duration_since(self.now())
    }
}

/// Settings the driver needs besides the node's.
pub(crate) struct DriverSettings {
    pub(crate) protocol: StreamProtocol,
    pub(crate) put_quorum: Quorum,
    pub(crate) get_quorum: Quorum,
    pub(crate) metrics: Option<NodeMetrics>,
    /// The key the node signs its records with.
    pub(crate) keypair: Option<netabase_core::Keypair>,
    /// The consensus member's settings.
    pub(crate) consensus: netabase_core::consensus::ConsensusConfig,
    /// The consensus engine.
    #[cfg(feature = "paxakos")]
    pub(crate) engine: crate::config::Engine,
    /// The paxakos engine's settings.
    #[cfg(feature = "paxakos")]
    pub(crate) paxakos: netabase_paxakos::engine::EngineConfig,
}

/// The node's protocols: Kademlia over the DHT record store, and a consensus member over
/// its log and replicated state.
pub(crate) type NodeMachine = Machine<
    PersistentRecordStore,
    crate::consensus::ConsensusLog,
    crate::consensus::ConsensusState,
>;

mod consensus;
mod paxakos;

pub(crate) use paxakos::paxakos_behaviour;

pub(crate) struct Driver<R: Runtime> {
    swarm: Swarm<NodeBehaviour<R::Mdns>>,
    machine: NodeMachine,
    /// API calls waiting on the consensus member.
    pub(crate) consensus: crate::consensus::ConsensusClient,
    /// The paxakos engine, when it is the node's engine and the node is in a cluster.
    paxakos: paxakos::PaxakosSlot,
    commands: mpsc::Receiver<Command>,
    events: async_broadcast::Sender<NetabaseEvent>,
    clock: Clock<R>,
    settings: DriverSettings,
    queries: HashMap<QueryId, (QueryKind, QueryReply)>,
    /// Newer versions peers answered running puts with, until the put finishes.
    superseded: HashMap<QueryId, Box<Record>>,
    timer: Fuse<BoxFuture<'static, ()>>,
    timer_at: Option<Instant>,
    inbound_stream_failures: u64,
    /// Connections and requests the inbound limits refused.
    inbound_refused: u64,
    /// Listeners that have not reported an address yet (during start-up).
    unbound: HashSet<ListenerId>,
    metrics: Option<DriverMetrics>,
    /// Fires when the gauges that need a store read are due (never without metrics).
    gauge_tick: Fuse<BoxFuture<'static, ()>>,
    /// Set when the store could not make its writes durable: the node stops.
    store_failed: bool,
    /// Set when a request went out since the last sync (which may have deferred writes
    /// to make durable).
    requests_before_sync: bool,
    /// Set when consensus messages were queued on the swarm since it was last polled.
    consensus_sends: bool,
}

/// The error for listen address `addr`, which runtime `R` has no transport for.
fn unsupported_listen_address<R: Runtime>(addr: &Multiaddr) -> NetabaseError {
    NetabaseError::UnsupportedListenAddress {
        address: addr.clone(),
        runtime: R::NAME,
        supported: R::TRANSPORTS,
    }
}

enum Step<E> {
    Command(Option<Command>),
    Swarm(SwarmEvent<E>),
    Timer,
    Metrics,
    Paxakos(paxakos::PaxakosStep),
}

impl<R: Runtime> Driver<R> {
    pub(crate) fn new(
        swarm: Swarm<NodeBehaviour<R::Mdns>>,
        kad: netabase_core::Config,
        store: PersistentRecordStore,
        seed: u64,
        commands: mpsc::Receiver<Command>,
        events: async_broadcast::Sender<NetabaseEvent>,
        settings: DriverSettings,
    ) -> Result<Self, NetabaseError> {
        let clock = Clock::<R>::new();
        let config_consensus = settings.consensus.clone();
        let local = to_core_peer(swarm.local_peer_id())
            .ok_or_else(|| NetabaseError::Config("unsupported local peer id".into()))?;
        // Progress events are forwarded to subscribers as `NetabaseEvent::QueryProgress`.
        let kad = netabase_core::Config {
            query_progress: true,
            ..kad
        };
        let now = clock.now();
        let mut node = match settings.keypair.clone() {
            Some(keypair) if keypair.peer_id() == local => {
                Node::with_identity(kad, keypair, store, seed, now)
            }
            _ => Node::new(kad, local, store, seed, now),
        }
        .map_err(NetabaseError::InvalidConfig)?;
        node.set_wall_clock(now, wall_clock_micros());
        let metrics = settings
            .metrics
            .clone()
            .map(|m| DriverMetrics::new(m, &settings.protocol));
        let gauge_tick = match metrics {
            Some(_) => R::sleep(GAUGE_REFRESH).fuse(),
            None => Fuse::terminated(),
        };
        Ok(Driver {
            swarm,
            machine: Machine::new(node),
            consensus: crate::consensus::ConsensusClient::new(config_consensus),
            paxakos: paxakos::PaxakosSlot::default(),
            commands,
            events,
            clock,
            settings,
            queries: HashMap::new(),
            superseded: HashMap::new(),
            timer: Fuse::terminated(),
            timer_at: None,
            inbound_stream_failures: 0,
            inbound_refused: 0,
            unbound: HashSet::new(),
            metrics,
            gauge_tick,
            store_failed: false,
            requests_before_sync: false,
            consensus_sends: false,
        })
    }

    /// The node's current time.
    fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Reads the wall clock into the node (record versions follow it; it may step, while
    /// the node's `now` never does).
    fn read_wall_clock(&mut self) {
        let now = self.now();
        self.machine.kad.set_wall_clock(now, wall_clock_micros());
    }

    fn emit(&self, event: NetabaseEvent) {
        // With overflow on, a full channel drops its oldest event; with no subscriber the
        // event is simply not kept. Neither blocks the node.
        let _ = self.events.try_broadcast(event);
    }

    /// Opens the listeners on the `configured` addresses (`None`: the runtime's defaults)
    /// and waits until each has an address (or fails), for at most `timeout`. An address
    /// the runtime has no transport for is refused before any listener opens. Events that
    /// arrive meanwhile are handled as usual.
    pub(crate) async fn listen(
        &mut self,
        configured: &Option<Vec<Multiaddr>>,
        timeout: Duration,
    ) -> Result<(), NetabaseError> {
        let addrs = match configured {
            Some(addrs) => addrs.clone(),
            None => R::default_listen_addresses(),
        };
        if let Some(addr) = addrs
            .iter()
            .find(|a| R::supports_listen_address(a) == Some(false))
        {
            return Err(unsupported_listen_address::<R>(addr));
        }
        let mut opened: HashMap<ListenerId, Multiaddr> = HashMap::new();
        for addr in &addrs {
            let id = self.swarm.listen_on(addr.clone()).map_err(|e| match e {
                TransportError::MultiaddrNotSupported(_) => unsupported_listen_address::<R>(addr),
                e => NetabaseError::Listen {
                    address: addr.clone(),
                    reason: e.to_string(),
                },
            })?;
            self.unbound.insert(id);
            opened.insert(id, addr.clone());
        }
        let address_of = |id: &ListenerId| opened.get(id).cloned().unwrap_or_else(Multiaddr::empty);
        let mut deadline = R::sleep(timeout).fuse();
        while !self.unbound.is_empty() {
            select_biased! {
                event = self.swarm.select_next_some() => {
                    if let SwarmEvent::ListenerClosed { listener_id, reason: Err(e), .. }
                    | SwarmEvent::ListenerError { listener_id, error: e } = &event
                        && self.unbound.contains(listener_id)
                    {
                        return Err(NetabaseError::Listen {
                            address: address_of(listener_id),
                            reason: e.to_string(),
                        });
                    }
                    self.on_swarm_event(event);
                }
                () = deadline => {
                    let waiting = self.unbound.iter().next().map(address_of);
                    return Err(NetabaseError::Listen {
                        address: waiting.unwrap_or_else(Multiaddr::empty),
                        reason: "no listen address reported in time".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Adds the configured bootstrap peers to the routing table.
    pub(crate) fn add_bootstrap_peers(&mut self, peers: &[(libp2p::PeerId, Multiaddr)]) {
        for (peer, addr) in peers {
            let _ = self.add_address(*peer, addr.clone());
        }
        self.drain();
    }

    /// Runs until a stop command or until every handle is gone, then closes everything.
    pub(crate) async fn run(mut self) {
        self.emit(NetabaseEvent::Started {
            peer: *self.swarm.local_peer_id(),
        });
        let stop_reply = loop {
            self.arm_timer();
            let step = select_biased! {
                command = self.commands.next() => Step::Command(command),
                event = self.swarm.select_next_some() => Step::Swarm(event),
                () = &mut self.timer => Step::Timer,
                () = &mut self.gauge_tick => Step::Metrics,
                step = paxakos::next_step(&mut self.paxakos).fuse() => Step::Paxakos(step),
            };
            self.read_wall_clock();
            match step {
                Step::Command(None) => break None,
                Step::Command(Some(Command::Stop { reply })) => break Some(reply),
                Step::Command(Some(command)) => self.on_command(command),
                Step::Swarm(event) => self.on_swarm_event(event),
                Step::Timer => {
                    self.timer_at = None;
                    let now = self.now();
                    self.machine.handle_timeout(now);
                }
                Step::Metrics => {
                    self.refresh_gauges();
                    self.gauge_tick = R::sleep(GAUGE_REFRESH).fuse();
                }
                Step::Paxakos(step) => self.on_paxakos_step(step),
            }
            // Group commit: the swarm events that are already waiting are handled before
            // anything goes out, so that the writes they make share one sync in `drain`.
            for _ in 0..READY_BATCH {
                match self.swarm.select_next_some().now_or_never() {
                    Some(event) => self.on_swarm_event(event),
                    None => break,
                }
            }
            // API calls already waiting join the same step: their consensus proposals share
            // one slot and one sync.
            let mut stop = None;
            for _ in 0..READY_BATCH {
                match self.commands.next().now_or_never() {
                    Some(Some(Command::Stop { reply })) => {
                        stop = Some(Some(reply));
                        break;
                    }
                    Some(None) => {
                        stop = Some(None);
                        break;
                    }
                    Some(Some(command)) => self.on_command(command),
                    None => break,
                }
            }
            self.drain();
            // A bounded number of rounds, so that timers and new calls are not starved
            // under load (what is left goes out at the next step).
            for _ in 0..8 {
                if self.store_failed {
                    break;
                }
                if self.consensus_sends {
                    // Proposals, heartbeats and commit notices leave before any sync.
                    self.consensus_sends = false;
                    self.deliver();
                } else if self.requests_before_sync {
                    // Requests went out ahead of a pending sync: hand them to their
                    // connections first, so that the disk's flush overlaps their round trips.
                    self.deliver();
                    let _ = self.durable();
                    self.drain();
                } else if self.machine.needs_sync() {
                    // The consensus leader's own vote counts once durable: sync for it even
                    // when no output waits.
                    let _ = self.durable();
                    self.drain();
                } else {
                    break;
                }
            }
            self.close_open_requests();
            if self.store_failed {
                break None;
            }
            if let Some(stop) = stop {
                break stop;
            }
            if let Some(m) = &self.metrics {
                m.node
                    .set_routing_table_peers(self.machine.kad.routing_table().len());
                m.node.set_queries_running(self.queries.len());
            }
        };
        self.hand_over().await;
        self.shutdown();
        if let Some(reply) = stop_reply {
            let _ = reply.send(());
        }
    }

    /// Fails every pending operation with [`NetabaseError::Stopped`], then drops the swarm
    /// (closing every connection) and the node with its store.
    fn shutdown(mut self) {
        for (_, (kind, reply)) in self.queries.drain() {
            if let Some(m) = &self.metrics {
                m.node.operation(operation_label(kind), "stopped");
            }
            let _ = reply.send(Err(NetabaseError::Stopped));
        }
        if let Some(m) = &self.metrics {
            m.node.set_queries_running(0);
            m.node.set_connected_peers(0);
        }
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            // Dropping a command's reply channel tells its caller the node stopped.
            if let Command::Stop { reply } = command {
                let _ = reply.send(());
            }
        }
        // The paxakos engine leaves a snapshot to resume from.
        self.stop_paxakos();
        // The consensus log with its state's rows (so that a restart replays nothing it
        // applied), then the writes that no output has depended on yet (expiry,
        // republication); the log's sync in `durable` then has nothing left to write.
        if !self.store_failed
            && let Some(m) = &mut self.machine.consensus
            && let Err(e) = m.log_mut().flush()
        {
            tracing::warn!(error = %e, "the consensus state could not be written at the stop; the next start replays it from the log");
        }
        let _ = self.durable();
        self.emit(NetabaseEvent::Stopped);
        let Driver { swarm, machine, .. } = self;
        drop(swarm);
        drop(machine.kad.into_store());
    }

    /// Re-arms the timer to the core's next deadline.
    fn arm_timer(&mut self) {
        // Work a bounded step left over (a sync for the leader's own vote, consensus
        // messages to hand to their connections) runs at once.
        let next = if self.machine.needs_sync() || self.consensus_sends {
            Some(self.now())
        } else {
            self.machine.poll_timeout()
        };
        if next == self.timer_at && !self.timer.is_terminated() {
            return;
        }
        self.timer_at = next;
        self.timer = match next {
            Some(at) => R::sleep(self.clock.until(at)).fuse(),
            None => Fuse::terminated(),
        };
    }

    /// Sets the gauges that need a store read or a walk over the swarm's connections.
    fn refresh_gauges(&self) {
        let Some(m) = &self.metrics else {
            return;
        };
        let store = self.machine.kad.store();
        match (
            store.record_count(),
            store.provider_count(),
            store.provided_count(),
        ) {
            (Ok(records), Ok(providers), Ok(provided)) => {
                m.node.set_store(records, providers, provided);
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                tracing::warn!(error = %e, "cannot read the store's counters for the metrics");
            }
        }
        m.node
            .set_connected_peers(self.swarm.connected_peers().count());
        m.node
            .set_routing_table_peers(self.machine.kad.routing_table().len());
        m.node.set_queries_running(self.queries.len());
        let lag = self
            .machine
            .kad
            .background_lag(self.now())
            .unwrap_or_default();
        m.node
            .set_background(lag, self.machine.kad.queued_job_count());
        m.node
            .set_consensus(self.machine.consensus.as_ref().map(|c| {
                crate::metrics::ConsensusView {
                    role: c.role(),
                    round: c.round(),
                    committed: c.committed(),
                    applied: c.applied(),
                    pending: c.pending_proposals(),
                    stats: c.stats(),
                    lag: c
                        .follower_lag()
                        .into_iter()
                        .map(|(p, lag)| {
                            let peer = crate::convert::to_libp2p_peer(&p)
                                .map_or_else(|| format!("{p:?}"), |p| p.to_string());
                            (peer, lag)
                        })
                        .collect(),
                }
            }));
    }

    /// Makes every write of the store durable (one `fdatasync` for all the writes since the
    /// last call, none when there were none). The node's store commits with deferred
    /// durability, and this runs before anything that could acknowledge a write leaves the
    /// driver: a response to a peer, an API reply, a finished query. A store that cannot
    /// sync can no longer promise durability: the node stops (nothing unsynced is
    /// acknowledged).
    fn durable(&mut self) -> Result<(), NetabaseError> {
        if self.store_failed {
            return Err(NetabaseError::Stopped);
        }
        self.requests_before_sync = false;
        match self.machine.kad.store().sync() {
            Ok(()) => {
                // The consensus log and state: one more durable transaction.
                if let Some(m) = &mut self.machine.consensus
                    && let Err(e) = m.log_mut().sync()
                {
                    tracing::error!(error = %e, "the consensus log cannot be made durable; stopping the node");
                    self.store_failed = true;
                    return Err(NetabaseError::Store(e));
                }
                let now = self.now();
                self.machine.synced(now);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "the store cannot make writes durable; stopping the node");
                self.store_failed = true;
                Err(NetabaseError::RecordStore(e))
            }
        }
    }

    /// Polls the swarm until it has nothing ready, so that it hands the requests queued on
    /// the behaviour to their connections (which send them on their own tasks); the events
    /// it yields meanwhile are handled and drained as usual.
    fn deliver(&mut self) {
        for _ in 0..READY_BATCH {
            match self.swarm.select_next_some().now_or_never() {
                Some(event) => {
                    self.on_swarm_event(event);
                    self.drain();
                }
                None => return,
            }
        }
    }

    /// Carries out everything the core asked for; every output but a request waits until
    /// the writes made so far are durable.
    fn drain(&mut self) {
        while let Some(output) = self.machine.poll_output() {
            if !self.machine.output_waits_for_sync(&output) {
                // A request acknowledges nothing; it may leave before the writes are
                // durable (the run loop syncs once it is on its way). Consensus outputs
                // that do not wait need no sync after them either: what they report is
                // durable on a quorum already, or is a proposal.
                if matches!(output, MachineOutput::Kad(_)) {
                    self.requests_before_sync = true;
                }
            } else if self.durable().is_err() {
                // Outputs made after the failed sync are dropped: the node stops.
                return;
            }
            let output = match output {
                MachineOutput::Kad(output) => output,
                MachineOutput::Consensus(output) => {
                    if matches!(output, netabase_core::consensus::Output::Send { .. }) {
                        self.consensus_sends = true;
                    }
                    self.on_consensus_output(output);
                    continue;
                }
            };
            match output {
                Output::SendRequest {
                    id,
                    peer,
                    addrs,
                    request,
                } => match to_libp2p_peer(&peer) {
                    Some(peer) => {
                        if let Some(m) = &self.metrics {
                            m.kad(false, false, request.kind());
                        }
                        let addrs = addrs.iter().filter_map(to_multiaddr).collect();
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .send_request(id.0, peer, addrs, request);
                    }
                    None => {
                        let now = self.now();
                        self.machine
                            .kad
                            .handle_request_failed(now, id, RequestFailure::Dial);
                    }
                },
                Output::SendResponse { id, response, .. } => {
                    if let Some(m) = &self.metrics {
                        m.kad(false, true, response.kind());
                    }
                    self.swarm.behaviour_mut().kad.respond(id.0, Some(response));
                }
                Output::RejectInbound { id, .. } => {
                    self.swarm.behaviour_mut().kad.respond(id.0, None);
                }
                Output::Event(event) => self.on_core_event(event),
            }
        }
    }

    fn on_core_event(&mut self, event: Event) {
        let event = match event {
            Event::QueryProgress { id, stats } => {
                let Some((kind, _)) = self.queries.get(&id) else {
                    return;
                };
                NetabaseEvent::QueryProgress {
                    id: id.0,
                    kind: *kind,
                    stats,
                }
            }
            Event::QueryFinished { id, result, stats } => {
                let Some((kind, reply)) = self.queries.remove(&id) else {
                    return;
                };
                let error = query_error(&result);
                let success = error.is_none();
                let outcome = outcome_label(error);
                let seconds = stats
                    .finished
                    .saturating_duration_since(stats.started)
                    .as_secs_f64();
                if let Some(m) = &self.metrics {
                    m.node
                        .query_finished(operation_label(kind), outcome, seconds);
                }
                tracing::debug!(
                    query = id.0,
                    operation = operation_label(kind),
                    outcome,
                    seconds,
                    requests = stats.requests,
                    hops = stats.hops,
                    "query finished"
                );
                let superseded_by = self.superseded.remove(&id);
                let _ = reply.send(Ok(QueryDone {
                    result,
                    stats: stats.clone(),
                    superseded_by,
                }));
                NetabaseEvent::QueryFinished {
                    id: id.0,
                    kind,
                    success,
                    stats,
                }
            }
            Event::PeerAdded { peer, .. } => match to_libp2p_peer(&peer) {
                Some(peer) => NetabaseEvent::RoutingTablePeerAdded { peer },
                None => return,
            },
            Event::PeerRemoved { peer } => match to_libp2p_peer(&peer) {
                Some(peer) => NetabaseEvent::RoutingTablePeerRemoved { peer },
                None => return,
            },
            Event::RecordStored { key, from } => match to_libp2p_peer(&from) {
                Some(from) => NetabaseEvent::RecordStored { key, from },
                None => return,
            },
            Event::Expired { count } => NetabaseEvent::Expired { count },
            Event::RecordUpdated { key, from } => match to_libp2p_peer(&from) {
                Some(from) => NetabaseEvent::RecordUpdated { key, from },
                None => return,
            },
            Event::RecordSuperseded {
                id,
                key,
                record,
                from,
            } => {
                if let Some(id) = id
                    && self.queries.contains_key(&id)
                {
                    self.superseded.insert(id, record);
                }
                match to_libp2p_peer(&from) {
                    Some(from) => NetabaseEvent::RecordUpdated { key, from },
                    None => return,
                }
            }
            Event::ProviderAdded { key, provider } => match to_libp2p_peer(&provider) {
                Some(provider) => NetabaseEvent::ProviderAdded { key, provider },
                None => return,
            },
            Event::InboundRejected { peer, kind, reason } => {
                if let Some(m) = &self.metrics {
                    m.node.rejected("request", rejection_label(&reason));
                }
                let Some(peer) = to_libp2p_peer(&peer) else {
                    return;
                };
                tracing::debug!(%peer, ?kind, ?reason, "inbound request refused");
                NetabaseEvent::InboundRejected {
                    peer,
                    kind,
                    reason: format!("{reason:?}"),
                }
            }
            Event::InvalidRecord { peer, key, error } => {
                if let Some(m) = &self.metrics {
                    m.node.rejected("record", "invalid_record");
                }
                let Some(peer) = to_libp2p_peer(&peer) else {
                    return;
                };
                tracing::debug!(%peer, %error, "invalid record in an answer");
                NetabaseEvent::InvalidRecord {
                    peer,
                    key,
                    reason: error.to_string(),
                }
            }
            Event::ModeChanged { mode } => NetabaseEvent::ModeChanged { mode },
        };
        self.emit(event);
    }

    fn add_address(&mut self, peer: libp2p::PeerId, addr: Multiaddr) -> Result<(), NetabaseError> {
        let core_peer = to_core_peer(&peer)
            .ok_or_else(|| NetabaseError::Config(format!("unsupported peer id {peer}")))?;
        let address = to_address(&addr)
            .ok_or_else(|| NetabaseError::Config(format!("address too long: {addr}")))?;
        self.swarm.add_peer_address(peer, addr);
        let now = self.now();
        self.machine.kad.add_address(now, core_peer, address);
        Ok(())
    }

    fn start_query(&mut self, op: QueryOp, reply: QueryReply) {
        let now = self.now();
        let (kind, started) = match op {
            QueryOp::Put(op) => {
                let PutOp {
                    key,
                    model,
                    schema_version,
                    payload,
                    tombstone,
                    local,
                } = *op;
                let record = match self.machine.kad.seal_record(
                    now,
                    key,
                    model,
                    schema_version,
                    tombstone,
                    &payload,
                ) {
                    Ok(record) => record,
                    Err(e) => {
                        if let Some(m) = &self.metrics {
                            m.node
                                .operation(operation_label(QueryKind::PutRecord), "refused");
                        }
                        let _ = reply.send(Err(NetabaseError::Api(e)));
                        return;
                    }
                };
                let Some(version) = netabase_core::version::version_of(&record.value) else {
                    // The core seals format-2 envelopes: this cannot happen, but a typed
                    // row without its version must not be written.
                    let _ = reply.send(Err(NetabaseError::Config(
                        "sealed record has no version".into(),
                    )));
                    return;
                };
                if let Err(e) = (local.0)(&version) {
                    if let Some(m) = &self.metrics {
                        m.node
                            .operation(operation_label(QueryKind::PutRecord), "refused");
                    }
                    let _ = reply.send(Err(e));
                    return;
                }
                (
                    QueryKind::PutRecord,
                    self.machine
                        .kad
                        .put_record(now, record, self.settings.put_quorum),
                )
            }
            QueryOp::Get(key) => (
                QueryKind::GetRecord,
                self.machine
                    .kad
                    .get_record(now, key, self.settings.get_quorum),
            ),
            QueryOp::StartProviding(key) => (
                QueryKind::StartProviding,
                self.machine.kad.start_providing(now, key),
            ),
            QueryOp::GetProviders(key) => (
                QueryKind::GetProviders,
                self.machine.kad.get_providers(now, key),
            ),
            QueryOp::Bootstrap => (QueryKind::Bootstrap, self.machine.kad.bootstrap(now)),
        };
        match started {
            Ok(id) => {
                tracing::debug!(
                    query = id.0,
                    operation = operation_label(kind),
                    "query started"
                );
                self.queries.insert(id, (kind, reply));
                self.emit(NetabaseEvent::QueryStarted { id: id.0, kind });
            }
            Err(e) => {
                if let Some(m) = &self.metrics {
                    m.node.operation(operation_label(kind), "refused");
                }
                tracing::debug!(operation = operation_label(kind), error = %e, "query refused");
                let _ = reply.send(Err(NetabaseError::Api(e)));
            }
        }
    }

    /// Counts one operation that is not a query.
    fn count<T, E>(&self, operation: &'static str, result: &Result<T, E>) {
        if let Some(m) = &self.metrics {
            m.node.operation(
                operation,
                if result.is_ok() { "success" } else { "refused" },
            );
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Query { op, reply } => self.start_query(op, reply),
            Command::Consensus(command) => self.on_consensus_command(command),
            Command::StopProviding { key, reply } => {
                let result = self
                    .machine
                    .kad
                    .stop_providing(&key)
                    .map_err(Into::into)
                    .and_then(|()| self.durable());
                self.count("stop_providing", &result);
                let _ = reply.send(result);
            }
            Command::AddAddress { peer, addr, reply } => {
                let result = self.add_address(peer, addr);
                self.count("add_address", &result);
                let _ = reply.send(result);
            }
            Command::RemoveAddress { peer, addr, reply } => {
                if let (Some(peer), Some(addr)) = (to_core_peer(&peer), to_address(&addr)) {
                    let now = self.now();
                    self.machine.kad.remove_address(now, &peer, &addr);
                }
                self.count("remove_address", &Ok::<(), ()>(()));
                let _ = reply.send(());
            }
            Command::RemovePeer { peer, reply } => {
                let now = self.now();
                let removed =
                    to_core_peer(&peer).is_some_and(|p| self.machine.kad.remove_peer(now, &p));
                self.count("remove_peer", &Ok::<(), ()>(()));
                let _ = reply.send(removed);
            }
            Command::SetMode { mode, reply } => {
                self.machine.kad.set_mode(mode);
                self.swarm
                    .behaviour_mut()
                    .kad
                    .set_serving(mode == Mode::Server);
                self.count("set_mode", &Ok::<(), ()>(()));
                let _ = reply.send(());
            }
            Command::Snapshot { reply } => {
                self.refresh_gauges();
                let _ = reply.send(self.snapshot());
            }
            Command::Stop { reply } => {
                // Handled by the run loop; unreachable here, answered anyway.
                let _ = reply.send(());
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            listen_addresses: self.swarm.listeners().cloned().collect(),
            connected_peers: self.swarm.connected_peers().copied().collect(),
            routing_table: self
                .machine
                .kad
                .routing_table()
                .entries()
                .filter_map(|e| to_libp2p_peer(&e.peer))
                .collect(),
            mode: self.machine.kad.mode(),
            stats: self.machine.kad.stats().clone(),
            inbound_stream_failures: self.inbound_stream_failures,
            inbound_refused: self.inbound_refused,
        }
    }

    fn update_local_addresses(&mut self) {
        let addrs = self.swarm.listeners().filter_map(to_address).collect();
        self.machine.kad.set_local_addresses(addrs);
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<NodeBehaviourEvent<R::Mdns>>) {
        let now = self.now();
        if let Some(m) = &self.metrics {
            m.node.libp2p(&event);
            match &event {
                SwarmEvent::Behaviour(NodeBehaviourEvent::Identify(e)) => {
                    m.node.libp2p(e);
                    let counter = match e {
                        identify::Event::Received { .. } => Some(&m.identify_in),
                        identify::Event::Sent { .. } => Some(&m.identify_out),
                        identify::Event::Pushed { .. } => Some(&m.identify_push_out),
                        identify::Event::Error { .. } => None,
                    };
                    if let Some(counter) = counter {
                        counter.inc();
                    }
                }
                SwarmEvent::Behaviour(NodeBehaviourEvent::Ping(e)) => {
                    m.node.libp2p(e);
                    if e.result.is_ok() {
                        m.ping_out.inc();
                        m.pong_in.inc();
                    }
                }
                _ => {}
            }
        }
        match event {
            SwarmEvent::Behaviour(NodeBehaviourEvent::Kad(event)) => self.on_carrier_event(event),
            SwarmEvent::Behaviour(NodeBehaviourEvent::Paxos(event)) => self.on_paxos_event(event),
            SwarmEvent::Behaviour(NodeBehaviourEvent::Paxakos(event)) => {
                self.on_paxakos_event(event)
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let serves_dht = info.protocols.contains(&self.settings.protocol);
                if let Some(peer) = to_core_peer(&peer_id) {
                    let addrs: Vec<Address> =
                        info.listen_addrs.iter().filter_map(to_address).collect();
                    self.machine
                        .kad
                        .handle_peer_identified(now, peer, &addrs, serves_dht);
                }
                self.emit(NetabaseEvent::PeerIdentified {
                    peer: peer_id,
                    serves_dht,
                    listen_addresses: info.listen_addrs,
                });
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    let _ = self.add_address(peer, addr.clone());
                    self.emit(NetabaseEvent::PeerDiscovered {
                        peer,
                        address: addr,
                    });
                }
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Mdns(mdns::Event::Expired(gone))) => {
                for (peer, address) in gone {
                    self.emit(NetabaseEvent::PeerExpired { peer, address });
                }
            }
            SwarmEvent::Behaviour(_) => {}
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                endpoint,
                ..
            } if num_established.get() == 1 => {
                if let Some(peer) = to_core_peer(&peer_id) {
                    self.machine.kad.handle_connection_established(now, peer);
                }
                self.emit(NetabaseEvent::PeerConnected {
                    peer: peer_id,
                    address: endpoint.get_remote_address().clone(),
                });
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                if let Some(peer) = to_core_peer(&peer_id) {
                    self.machine.kad.handle_connection_closed(now, peer);
                }
                self.emit(NetabaseEvent::PeerDisconnected { peer: peer_id });
            }
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                self.unbound.remove(&listener_id);
                self.update_local_addresses();
                self.emit(NetabaseEvent::ListenAddressAdded { address });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.update_local_addresses();
                self.emit(NetabaseEvent::ListenAddressExpired { address });
            }
            _ => {}
        }
    }

    fn on_carrier_event(&mut self, event: CarrierEvent) {
        let now = self.now();
        match event {
            CarrierEvent::Request { peer, id, request } => match to_core_peer(&peer) {
                Some(core_peer) => {
                    if let Some(m) = &self.metrics {
                        m.kad(true, false, request.kind());
                    }
                    self.machine.kad.handle_request(
                        now,
                        core_peer,
                        netabase_core::InboundId(id),
                        request,
                    );
                }
                None => self.swarm.behaviour_mut().kad.respond(id, None),
            },
            CarrierEvent::Outcome { id, result } => {
                let id = RequestId(id);
                match result {
                    Ok(Some(response)) => {
                        if let Some(m) = &self.metrics {
                            m.kad(true, true, response.kind());
                        }
                        self.machine.kad.handle_response(now, id, response)
                    }
                    Ok(None) => self.machine.kad.handle_request_sent(now, id),
                    Err(failure) => {
                        if let Some(m) = &self.metrics {
                            m.node.request_failed(&failure);
                        }
                        self.machine.kad.handle_request_failed(now, id, failure)
                    }
                }
            }
            CarrierEvent::Refused { peer, refusal } => {
                self.inbound_refused += 1;
                if let Some(m) = &self.metrics {
                    m.node.rejected("limit", refusal.label());
                }
                tracing::debug!(?peer, %refusal, "inbound work refused");
            }
            CarrierEvent::InboundFailed { peer, error } => {
                self.inbound_stream_failures += 1;
                if let Some(m) = &self.metrics {
                    m.node.rejected("stream", stream_error_label(&error));
                }
                tracing::debug!(%peer, %error, "inbound stream failed");
                self.emit(NetabaseEvent::InboundStreamFailed {
                    peer,
                    error: error.to_string(),
                });
            }
        }
    }
}

/// Why a query did not succeed; `None`: it did.
fn query_error(result: &QueryResult) -> Option<&netabase_core::QueryError> {
    match result {
        QueryResult::GetClosestPeers(r) => r.as_ref().err(),
        QueryResult::FindPeer(r) => r.as_ref().err(),
        QueryResult::GetRecord(r) => r.as_ref().err(),
        QueryResult::PutRecord(r) => r.as_ref().err(),
        QueryResult::StartProviding(r) => r.as_ref().err(),
        QueryResult::GetProviders(r) => r.as_ref().err(),
        QueryResult::Bootstrap(r) => r.as_ref().err(),
    }
}

/// The wall clock in microseconds since the Unix epoch (0 before it).
fn wall_clock_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
