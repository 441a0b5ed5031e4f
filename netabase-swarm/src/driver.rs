//! The driver: one task that owns the swarm, the core node and the DHT record store, and
//! moves bytes and events between them. Every decision is the core's.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::channel::{mpsc, oneshot};
use futures::future::{BoxFuture, Fuse, FusedFuture, FutureExt};
use futures::{StreamExt, select_biased};
use libp2p::core::transport::ListenerId;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, Swarm, identify, mdns};
use netabase_core::{
    Address, Event, Instant, Mode, Node, NodeStats, Output, QueryId, QueryResult, QueryStats,
    Quorum, Record, RecordKey, RequestFailure, RequestId,
};
use netabase_store::PersistentRecordStore;

use crate::behaviour::{NodeBehaviour, NodeBehaviourEvent};
use crate::carrier::CarrierEvent;
use crate::convert::{to_address, to_core_peer, to_libp2p_peer, to_multiaddr};
use crate::error::NetabaseError;
use crate::event::{NetabaseEvent, QueryKind};
use crate::runtime::Runtime;

/// The answer to a query command: the core's result and counters.
pub(crate) type QueryReply = oneshot::Sender<Result<(QueryResult, QueryStats), NetabaseError>>;

/// A query an API call starts.
#[derive(Debug)]
pub(crate) enum QueryOp {
    Put(Record),
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
    RemoveRecord {
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
}

pub(crate) struct Driver<R: Runtime> {
    swarm: Swarm<NodeBehaviour<R::Mdns>>,
    node: Node<PersistentRecordStore>,
    commands: mpsc::Receiver<Command>,
    events: async_broadcast::Sender<NetabaseEvent>,
    clock: Clock<R>,
    settings: DriverSettings,
    queries: HashMap<QueryId, (QueryKind, QueryReply)>,
    timer: Fuse<BoxFuture<'static, ()>>,
    timer_at: Option<Instant>,
    inbound_stream_failures: u64,
    /// Listeners that have not reported an address yet (during start-up).
    unbound: HashSet<ListenerId>,
}

enum Step<E> {
    Command(Option<Command>),
    Swarm(SwarmEvent<E>),
    Timer,
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
        let local = to_core_peer(swarm.local_peer_id())
            .ok_or_else(|| NetabaseError::Config("unsupported local peer id".into()))?;
        // Progress events are forwarded to subscribers as `NetabaseEvent::QueryProgress`.
        let kad = netabase_core::Config {
            query_progress: true,
            ..kad
        };
        let node = Node::new(kad, local, store, seed, clock.now());
        Ok(Driver {
            swarm,
            node,
            commands,
            events,
            clock,
            settings,
            queries: HashMap::new(),
            timer: Fuse::terminated(),
            timer_at: None,
            inbound_stream_failures: 0,
            unbound: HashSet::new(),
        })
    }

    /// The node's current time.
    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn emit(&self, event: NetabaseEvent) {
        // With overflow on, a full channel drops its oldest event; with no subscriber the
        // event is simply not kept. Neither blocks the node.
        let _ = self.events.try_broadcast(event);
    }

    /// Opens the listeners and waits until each has an address (or fails), for at most
    /// `timeout`. Events that arrive meanwhile are handled as usual.
    pub(crate) async fn listen(
        &mut self,
        addrs: &[Multiaddr],
        timeout: Duration,
    ) -> Result<(), NetabaseError> {
        for addr in addrs {
            let id = self
                .swarm
                .listen_on(addr.clone())
                .map_err(|e| NetabaseError::Listen {
                    address: addr.clone(),
                    reason: e.to_string(),
                })?;
            self.unbound.insert(id);
        }
        let mut deadline = R::sleep(timeout).fuse();
        while !self.unbound.is_empty() {
            select_biased! {
                event = self.swarm.select_next_some() => {
                    if let SwarmEvent::ListenerClosed { listener_id, reason: Err(e), .. }
                    | SwarmEvent::ListenerError { listener_id, error: e } = &event
                        && self.unbound.contains(listener_id)
                    {
                        return Err(NetabaseError::Listen {
                            address: addrs.first().cloned().unwrap_or_else(Multiaddr::empty),
                            reason: e.to_string(),
                        });
                    }
                    self.on_swarm_event(event);
                }
                () = deadline => {
                    return Err(NetabaseError::Listen {
                        address: addrs.first().cloned().unwrap_or_else(Multiaddr::empty),
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
            };
            match step {
                Step::Command(None) => break None,
                Step::Command(Some(Command::Stop { reply })) => break Some(reply),
                Step::Command(Some(command)) => self.on_command(command),
                Step::Swarm(event) => self.on_swarm_event(event),
                Step::Timer => {
                    self.timer_at = None;
                    let now = self.now();
                    self.node.handle_timeout(now);
                }
            }
            self.drain();
        };
        self.shutdown();
        if let Some(reply) = stop_reply {
            let _ = reply.send(());
        }
    }

    /// Fails every pending operation with [`NetabaseError::Stopped`], then drops the swarm
    /// (closing every connection) and the node with its store.
    fn shutdown(mut self) {
        for (_, (_, reply)) in self.queries.drain() {
            let _ = reply.send(Err(NetabaseError::Stopped));
        }
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            // Dropping a command's reply channel tells its caller the node stopped.
            if let Command::Stop { reply } = command {
                let _ = reply.send(());
            }
        }
        self.emit(NetabaseEvent::Stopped);
        let Driver { swarm, node, .. } = self;
        drop(swarm);
        drop(node.into_store());
    }

    /// Re-arms the timer to the core's next deadline.
    fn arm_timer(&mut self) {
        let next = self.node.poll_timeout();
        if next == self.timer_at && !self.timer.is_terminated() {
            return;
        }
        self.timer_at = next;
        self.timer = match next {
            Some(at) => R::sleep(self.clock.until(at)).fuse(),
            None => Fuse::terminated(),
        };
    }

    /// Carries out everything the core asked for.
    fn drain(&mut self) {
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::SendRequest {
                    id,
                    peer,
                    addrs,
                    request,
                } => match to_libp2p_peer(&peer) {
                    Some(peer) => {
                        let addrs = addrs.iter().filter_map(to_multiaddr).collect();
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .send_request(id.0, peer, addrs, request);
                    }
                    None => {
                        let now = self.now();
                        self.node
                            .handle_request_failed(now, id, RequestFailure::Dial);
                    }
                },
                Output::SendResponse { id, response, .. } => {
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
                let success = query_succeeded(&result);
                let _ = reply.send(Ok((result, stats.clone())));
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
            Event::ProviderAdded { key, provider } => match to_libp2p_peer(&provider) {
                Some(provider) => NetabaseEvent::ProviderAdded { key, provider },
                None => return,
            },
            Event::InboundRejected { peer, kind, reason } => match to_libp2p_peer(&peer) {
                Some(peer) => NetabaseEvent::InboundRejected {
                    peer,
                    kind,
                    reason: format!("{reason:?}"),
                },
                None => return,
            },
            Event::InvalidRecord { peer, key, error } => match to_libp2p_peer(&peer) {
                Some(peer) => NetabaseEvent::InvalidRecord {
                    peer,
                    key,
                    reason: error.to_string(),
                },
                None => return,
            },
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
        self.node.add_address(now, core_peer, address);
        Ok(())
    }

    fn start_query(&mut self, op: QueryOp, reply: QueryReply) {
        let now = self.now();
        let (kind, started) = match op {
            QueryOp::Put(record) => (
                QueryKind::PutRecord,
                self.node.put_record(now, record, self.settings.put_quorum),
            ),
            QueryOp::Get(key) => (
                QueryKind::GetRecord,
                self.node.get_record(now, key, self.settings.get_quorum),
            ),
            QueryOp::StartProviding(key) => (
                QueryKind::StartProviding,
                self.node.start_providing(now, key),
            ),
            QueryOp::GetProviders(key) => {
                (QueryKind::GetProviders, self.node.get_providers(now, key))
            }
            QueryOp::Bootstrap => (QueryKind::Bootstrap, self.node.bootstrap(now)),
        };
        match started {
            Ok(id) => {
                self.queries.insert(id, (kind, reply));
                self.emit(NetabaseEvent::QueryStarted { id: id.0, kind });
            }
            Err(e) => {
                let _ = reply.send(Err(NetabaseError::Api(e)));
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Query { op, reply } => self.start_query(op, reply),
            Command::StopProviding { key, reply } => {
                let _ = reply.send(self.node.stop_providing(&key).map_err(Into::into));
            }
            Command::RemoveRecord { key, reply } => {
                let _ = reply.send(self.node.remove_record(&key).map_err(Into::into));
            }
            Command::AddAddress { peer, addr, reply } => {
                let _ = reply.send(self.add_address(peer, addr));
            }
            Command::RemoveAddress { peer, addr, reply } => {
                if let (Some(peer), Some(addr)) = (to_core_peer(&peer), to_address(&addr)) {
                    let now = self.now();
                    self.node.remove_address(now, &peer, &addr);
                }
                let _ = reply.send(());
            }
            Command::RemovePeer { peer, reply } => {
                let now = self.now();
                let removed = to_core_peer(&peer).is_some_and(|p| self.node.remove_peer(now, &p));
                let _ = reply.send(removed);
            }
            Command::SetMode { mode, reply } => {
                self.node.set_mode(mode);
                self.swarm
                    .behaviour_mut()
                    .kad
                    .set_serving(mode == Mode::Server);
                let _ = reply.send(());
            }
            Command::Snapshot { reply } => {
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
                .node
                .routing_table()
                .entries()
                .filter_map(|e| to_libp2p_peer(&e.peer))
                .collect(),
            mode: self.node.mode(),
            stats: self.node.stats().clone(),
            inbound_stream_failures: self.inbound_stream_failures,
        }
    }

    fn update_local_addresses(&mut self) {
        let addrs = self.swarm.listeners().filter_map(to_address).collect();
        self.node.set_local_addresses(addrs);
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<NodeBehaviourEvent<R::Mdns>>) {
        let now = self.now();
        match event {
            SwarmEvent::Behaviour(NodeBehaviourEvent::Kad(event)) => self.on_carrier_event(event),
            SwarmEvent::Behaviour(NodeBehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let serves_dht = info.protocols.contains(&self.settings.protocol);
                if let Some(peer) = to_core_peer(&peer_id) {
                    let addrs: Vec<Address> =
                        info.listen_addrs.iter().filter_map(to_address).collect();
                    self.node
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
                    self.node.handle_connection_established(now, peer);
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
                    self.node.handle_connection_closed(now, peer);
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
                    self.node
                        .handle_request(now, core_peer, netabase_core::InboundId(id), request);
                }
                None => self.swarm.behaviour_mut().kad.respond(id, None),
            },
            CarrierEvent::Outcome { id, result } => {
                let id = RequestId(id);
                match result {
                    Ok(Some(response)) => self.node.handle_response(now, id, response),
                    Ok(None) => self.node.handle_request_sent(now, id),
                    Err(failure) => self.node.handle_request_failed(now, id, failure),
                }
            }
            CarrierEvent::InboundFailed { peer, error } => {
                self.inbound_stream_failures += 1;
                self.emit(NetabaseEvent::InboundStreamFailed {
                    peer,
                    error: error.to_string(),
                });
            }
        }
    }
}

fn query_succeeded(result: &QueryResult) -> bool {
    match result {
        QueryResult::GetClosestPeers(r) => r.is_ok(),
        QueryResult::FindPeer(r) => r.is_ok(),
        QueryResult::GetRecord(r) => r.is_ok(),
        QueryResult::PutRecord(r) => r.is_ok(),
        QueryResult::StartProviding(r) => r.is_ok(),
        QueryResult::GetProviders(r) => r.is_ok(),
        QueryResult::Bootstrap(r) => r.is_ok(),
    }
}
