//! mDNS discovery on async-io: the sockets around the core's sans-IO mDNS state machine.
//!
//! All decisions (what to ask, what to answer, when addresses expire) are made by
//! [`netabase_core::mdns::Mdns`]; this behaviour only follows the machine's IPv4 interfaces
//! with `if-watch`, owns two UDP sockets per interface address (one bound to port 5353
//! that joined the group 224.0.0.251 on that interface, one bound to the interface address
//! that sends), moves datagrams between them and the state machine, arms one timer at the
//! machine's `poll_timeout`, and turns its outputs into libp2p's [`mdns::Event`]s. It
//! interoperates with `libp2p-mdns`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::task::{Context, Poll};
use std::time::Instant as StdInstant;

use async_io::{Async, Timer};
use futures::FutureExt;
use if_watch::IfEvent;
use if_watch::smol::IfWatcher;
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, ListenAddresses, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId, mdns};
use netabase_core::mdns::{MDNS_PORT, MULTICAST_V4, Mdns, MdnsConfig, MdnsOutput};
use netabase_swarm::BuildError;
use socket2::{Domain, Protocol, Socket, Type};

/// The largest datagram read (libp2p-mdns reads 4096 bytes; the mDNS limit is 9000).
const RECV_BUFFER: usize = 9000;

/// The two sockets of one interface address and the packets waiting to go out on it.
#[derive(Debug)]
struct InterfaceSockets {
    /// Bound to `0.0.0.0:5353`, member of the mDNS group on this interface.
    recv: Async<UdpSocket>,
    /// Bound to the interface address; sends queries and answers to the group.
    send: Async<UdpSocket>,
    queue: VecDeque<Vec<u8>>,
}

impl InterfaceSockets {
    fn open(interface: Ipv4Addr) -> io::Result<InterfaceSockets> {
        let recv = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        recv.set_reuse_address(true)?;
        #[cfg(unix)]
        recv.set_reuse_port(true)?;
        recv.bind(&SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), MDNS_PORT).into())?;
        recv.set_multicast_loop_v4(true)?;
        recv.set_multicast_ttl_v4(255)?;
        recv.join_multicast_v4(&MULTICAST_V4, &interface)?;
        let send = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        send.bind(&SocketAddr::new(interface.into(), 0).into())?;
        send.set_multicast_if_v4(&interface)?;
        send.set_multicast_loop_v4(true)?;
        send.set_multicast_ttl_v4(255)?;
        Ok(InterfaceSockets {
            recv: Async::new(UdpSocket::from(recv))?,
            send: Async::new(UdpSocket::from(send))?,
            queue: VecDeque::new(),
        })
    }
}

/// libp2p's [`NetworkBehaviour`] for mDNS discovery on async-io, driven by the core's
/// [`Mdns`] state machine. It reports [`mdns::Event`]s like `libp2p-mdns` does.
pub struct MdnsBehaviour {
    core: Mdns,
    /// The origin of the core's clock.
    epoch: StdInstant,
    if_watcher: IfWatcher,
    interfaces: HashMap<Ipv4Addr, InterfaceSockets>,
    listen_addresses: ListenAddresses,
    /// Current addresses of discovered peers (for dials without addresses).
    discovered: HashMap<PeerId, Vec<Multiaddr>>,
    timer: Option<(netabase_core::Instant, Timer)>,
    events: VecDeque<mdns::Event>,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for MdnsBehaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdnsBehaviour")
            .field("interfaces", &self.interfaces.keys().collect::<Vec<_>>())
            .field("discovered", &self.discovered.len())
            .finish()
    }
}

/// A seed for the state machine's generator: the process's hash keys, the clock and the
/// peer id, so that two nodes never share one.
fn random_seed(local: &PeerId) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    local.hash(&mut hasher);
    std::time::SystemTime::now().hash(&mut hasher);
    hasher.finish()
}

/// The core's peer id of a libp2p peer id.
fn to_core(peer: &PeerId) -> Option<netabase_core::PeerId> {
    netabase_core::PeerId::from_bytes(&peer.to_bytes()).ok()
}

/// The libp2p peer id of a core peer id.
fn from_core(peer: &netabase_core::PeerId) -> Option<PeerId> {
    PeerId::from_bytes(peer.as_bytes()).ok()
}

impl MdnsBehaviour {
    /// Starts the service for `local`: TTL and query interval from `config`. IPv6 is not
    /// supported (as with libp2p's default configuration, discovery runs over IPv4).
    pub fn new(local: PeerId, config: mdns::Config) -> Result<Self, BuildError> {
        if config.enable_ipv6 {
            return Err(BuildError(
                "mDNS over IPv6 is not supported on async-io; use IPv4".into(),
            ));
        }
        let core_peer =
            to_core(&local).ok_or_else(|| BuildError(format!("peer id {local} too long")))?;
        let core_config = MdnsConfig {
            ttl: config.ttl,
            query_interval: config.query_interval,
            ..MdnsConfig::default()
        };
        let if_watcher =
            IfWatcher::new().map_err(|e| BuildError(format!("watching interfaces: {e}")))?;
        Ok(MdnsBehaviour {
            core: Mdns::new(core_config, core_peer, random_seed(&local)),
            epoch: StdInstant::now(),
            if_watcher,
            interfaces: HashMap::new(),
            listen_addresses: ListenAddresses::default(),
            discovered: HashMap::new(),
            timer: None,
            events: VecDeque::new(),
            buffer: vec![0; RECV_BUFFER],
        })
    }

    /// The discovered peers and their addresses.
    pub fn discovered_nodes(&self) -> impl Iterator<Item = &PeerId> {
        self.discovered.keys()
    }

    fn now(&self) -> netabase_core::Instant {
        let micros = self.epoch.elapsed().as_micros();
        netabase_core::Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    fn update_listen_addresses(&mut self) {
        let texts = self
            .listen_addresses
            .iter()
            .map(ToString::to_string)
            .collect();
        self.core.set_listen_addresses(texts);
    }

    /// Follows interface changes: sockets for new IPv4 addresses (loopback excluded), none
    /// for removed ones.
    fn poll_interfaces(&mut self, cx: &mut Context<'_>) {
        while let Poll::Ready(event) = self.if_watcher.poll_if_event(cx) {
            match event {
                Ok(IfEvent::Up(net)) => {
                    let IpAddr::V4(ip) = net.addr() else { continue };
                    if ip.is_loopback() || self.interfaces.contains_key(&ip) {
                        continue;
                    }
                    // An interface that cannot join the group (no multicast) is skipped.
                    if let Ok(sockets) = InterfaceSockets::open(ip) {
                        self.interfaces.insert(ip, sockets);
                        let now = self.now();
                        self.core.add_interface(now, IpAddr::V4(ip));
                    }
                }
                Ok(IfEvent::Down(net)) => {
                    if let IpAddr::V4(ip) = net.addr() {
                        self.interfaces.remove(&ip);
                        self.core.remove_interface(IpAddr::V4(ip));
                    }
                }
                // A failing watcher leaves the interfaces as they are.
                Err(_) => break,
            }
        }
    }

    /// Reads every datagram waiting on the sockets into the state machine; returns whether
    /// any was read.
    fn poll_sockets(&mut self, cx: &mut Context<'_>) -> bool {
        let mut read_any = false;
        let now = self.now();
        for (ip, sockets) in self.interfaces.iter_mut() {
            for socket in [&sockets.recv, &sockets.send] {
                loop {
                    match socket.get_ref().recv_from(&mut self.buffer) {
                        Ok((len, from)) => {
                            read_any = true;
                            // Malformed packets from the link are dropped.
                            let _ = self.core.handle_datagram(
                                now,
                                IpAddr::V4(*ip),
                                from,
                                &self.buffer[..len],
                            );
                        }
                        // Nothing more to read, or an error the socket reported (an ICMP
                        // error, say): wait for the next readiness.
                        Err(_) => {
                            if socket.poll_readable(cx).is_pending() {
                                break;
                            }
                        }
                    }
                }
            }
        }
        read_any
    }

    /// Sends what the interfaces have queued, as far as the sockets take it.
    fn flush(&mut self, cx: &mut Context<'_>) {
        let group = SocketAddr::new(MULTICAST_V4.into(), MDNS_PORT);
        for sockets in self.interfaces.values_mut() {
            while let Some(packet) = sockets.queue.front() {
                match sockets.send.get_ref().send_to(packet, group) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if sockets.send.poll_writable(cx).is_pending() {
                            break;
                        }
                    }
                    // Sent, or failed for good (the link went away): either way it is done.
                    _ => {
                        sockets.queue.pop_front();
                    }
                }
            }
        }
    }

    /// Moves the state machine's outputs to the send queues and the event queue.
    fn drain_outputs(&mut self) {
        let mut found = Vec::new();
        let mut gone = Vec::new();
        while let Some(output) = self.core.poll_output() {
            match output {
                MdnsOutput::Transmit { interface, packet } => {
                    if let IpAddr::V4(ip) = interface
                        && let Some(sockets) = self.interfaces.get_mut(&ip)
                    {
                        sockets.queue.push_back(packet);
                    }
                }
                MdnsOutput::Discovered { peer, address } => {
                    if let Some((peer, addr)) = to_libp2p(&peer, &address) {
                        let addrs = self.discovered.entry(peer).or_default();
                        if !addrs.contains(&addr) {
                            addrs.push(addr.clone());
                        }
                        found.push((peer, addr));
                    }
                }
                MdnsOutput::Expired { peer, address } => {
                    if let Some((peer, addr)) = to_libp2p(&peer, &address) {
                        if let Some(addrs) = self.discovered.get_mut(&peer) {
                            addrs.retain(|a| *a != addr);
                            if addrs.is_empty() {
                                self.discovered.remove(&peer);
                            }
                        }
                        gone.push((peer, addr));
                    }
                }
            }
        }
        if !found.is_empty() {
            self.events.push_back(mdns::Event::Discovered(found));
        }
        if !gone.is_empty() {
            self.events.push_back(mdns::Event::Expired(gone));
        }
    }

    /// Re-arms the timer at the state machine's next deadline; returns whether it is due.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.core.poll_timeout() else {
            self.timer = None;
            return false;
        };
        if self.timer.as_ref().map(|(d, _)| *d) != Some(deadline) {
            let at = self.epoch + std::time::Duration::from_micros(deadline.as_micros());
            self.timer = Some((deadline, Timer::at(at)));
        }
        let due = match self.timer.as_mut() {
            Some((_, timer)) => timer.poll_unpin(cx).is_ready(),
            None => false,
        };
        if due {
            // A fired timer is not polled again: the next deadline gets a new one.
            self.timer = None;
        }
        due
    }
}

/// The libp2p peer and `/…/p2p/<peer>` address of a discovered core pair.
fn to_libp2p(peer: &netabase_core::PeerId, address: &str) -> Option<(PeerId, Multiaddr)> {
    let peer = from_core(peer)?;
    let addr: Multiaddr = address.parse().ok()?;
    Some((peer, addr.with_p2p(peer).ok()?))
}

impl NetworkBehaviour for MdnsBehaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = mdns::Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        Ok(peer
            .and_then(|p| self.discovered.get(&p).cloned())
            .unwrap_or_default())
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if self.listen_addresses.on_swarm_event(&event) {
            self.update_listen_addresses();
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        let _: Infallible = event;
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(event));
            }
            self.poll_interfaces(cx);
            let read = self.poll_sockets(cx);
            let due = self.poll_timer(cx);
            if due {
                let now = self.now();
                self.core.handle_timeout(now);
            }
            self.drain_outputs();
            self.flush(cx);
            if self.events.is_empty() && !read && !due {
                return Poll::Pending;
            }
        }
    }
}
