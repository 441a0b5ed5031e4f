//! mDNS peer discovery as a sans-IO state machine (the libp2p mDNS specification).
//!
//! A node asks for the service `_p2p._udp.local` with a PTR query sent to the mDNS
//! multicast group on every interface it uses; every node that hears the query answers with
//! a PTR record pointing at a random name of its own and, in the additional section, one
//! TXT record per listen address on that interface, `dnsaddr=<multiaddr>/p2p/<peer id>`.
//! Discovered addresses live for the TTL of the answer; queries repeat, fast at first
//! (every 0.5 s, doubling) and then at the query interval, so that live peers are refreshed
//! before they expire. This follows rust-libp2p's `libp2p-mdns`, with which it
//! interoperates.
//!
//! [`Mdns`] follows the same driving contract as [`Node`](crate::Node): the driver adds
//! the interfaces it listens on ([`Mdns::add_interface`]), passes every datagram it
//! receives on port 5353 to [`Mdns::handle_datagram`] and calls [`Mdns::handle_timeout`]
//! at [`Mdns::poll_timeout`]; after each input it drains [`Mdns::poll_output`], sending
//! each [`MdnsOutput::Transmit`] to the multicast group ([`MULTICAST_V4`] or
//! [`MULTICAST_V6`], port [`MDNS_PORT`]) from that interface. Time comes in as `now`,
//! randomness from a seeded generator; there is no clock, socket or global state, so the
//! simulator and property tests drive it like the adapters do.

pub mod dns;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::str::FromStr;
use core::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::peer::PeerId;
use crate::time::Instant;
use dns::{
    CLASS_IN, DnsError, DnsMessage, DnsName, DnsQuestion, FLAGS_RESPONSE, RecordData,
    ResourceRecord,
};

/// The mDNS service name of libp2p peers.
pub const SERVICE_NAME: &str = "_p2p._udp.local";
/// The DNS-SD meta query for the services on a link.
pub const META_QUERY_SERVICE: &str = "_services._dns-sd._udp.local";
/// The IPv4 mDNS multicast group.
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
/// The IPv6 mDNS multicast group.
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xFF02, 0, 0, 0, 0, 0, 0, 0xFB);
/// The mDNS port.
pub const MDNS_PORT: u16 = 5353;
/// The prefix of a TXT string carrying an address.
pub const DNSADDR_PREFIX: &str = "dnsaddr=";

/// The first interval between queries while probing; it doubles up to the query interval.
pub const INITIAL_QUERY_INTERVAL: Duration = Duration::from_millis(500);
/// The longest TXT string a response carries (one DNS character string).
const MAX_TXT_LENGTH: usize = 255;
/// TXT records per response packet (as libp2p-mdns packs them, under 9000 bytes).
const MAX_RECORDS_PER_PACKET: usize = (9000 - 68 - 100) / (MAX_TXT_LENGTH + 45);

/// Settings of [`Mdns`]. Every bound it keeps is here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdnsConfig {
    /// How long others may keep this node's addresses (the TTL of its answers).
    pub ttl: Duration,
    /// The interval between queries once probing is over.
    pub query_interval: Duration,
    /// The most `(peer, address)` pairs remembered; answers beyond it are ignored until
    /// entries expire.
    pub max_discovered: usize,
    /// The most addresses taken from one peer's answer.
    pub max_addresses_per_peer: usize,
    /// The most response packets waiting to be sent; queries beyond it go unanswered.
    pub max_queued_transmits: usize,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        MdnsConfig {
            ttl: Duration::from_secs(6 * 60),
            query_interval: Duration::from_secs(5 * 60),
            max_discovered: 1024,
            max_addresses_per_peer: 16,
            max_queued_transmits: 64,
        }
    }
}

/// What the driver must do or report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MdnsOutput {
    /// Send `packet` to the mDNS multicast group of `interface`'s family from `interface`.
    Transmit {
        /// The interface address to send from.
        interface: IpAddr,
        /// The datagram.
        packet: Vec<u8>,
    },
    /// A peer was found at a new address (a multiaddr without `/p2p`).
    Discovered {
        /// The peer.
        peer: PeerId,
        /// Its address, as the text form of a multiaddr.
        address: String,
    },
    /// A discovered address was not refreshed within its TTL.
    Expired {
        /// The peer.
        peer: PeerId,
        /// The address that expired.
        address: String,
    },
}

/// What a received datagram was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MdnsPacketKind {
    /// A query for libp2p peers (answered if this node has addresses on the interface).
    Query,
    /// A DNS-SD service enumeration query (answered).
    ServiceDiscovery,
    /// A response; `peers` peers other than this node were in it.
    Response {
        /// How many peers other than this node it announced.
        peers: usize,
    },
    /// A well-formed message about something else.
    Ignored,
}

/// Why a datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MdnsError {
    /// It is not a DNS message.
    #[error("malformed mDNS packet: {0}")]
    Dns(#[from] DnsError),
    /// It arrived on an interface that was not added.
    #[error("datagram on an unknown interface")]
    UnknownInterface,
}

/// The query schedule of one interface.
#[derive(Clone, Debug)]
struct Interface {
    /// When the next query goes out.
    next_query: Instant,
    /// The current interval while probing; `None` once at the query interval.
    probing: Option<Duration>,
    /// The query interval of this interface (the configured one plus jitter).
    query_interval: Duration,
}

/// The mDNS discovery state machine of one node. See the [module documentation](self).
#[derive(Debug)]
pub struct Mdns {
    config: MdnsConfig,
    local: PeerId,
    local_base58: String,
    rng: ChaCha8Rng,
    interfaces: BTreeMap<IpAddr, Interface>,
    /// The node's listen addresses (text multiaddrs without `/p2p`).
    listen_addresses: Vec<String>,
    /// Discovered `(peer, address)` pairs and when each expires.
    discovered: BTreeMap<(PeerId, String), Instant>,
    outputs: VecDeque<MdnsOutput>,
}

impl Mdns {
    /// A state machine for `local`, its randomness drawn from `seed`.
    pub fn new(config: MdnsConfig, local: PeerId, seed: u64) -> Mdns {
        Mdns {
            config,
            local,
            local_base58: local.to_base58(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            interfaces: BTreeMap::new(),
            listen_addresses: Vec::new(),
            discovered: BTreeMap::new(),
            outputs: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MdnsConfig {
        &self.config
    }

    /// Starts querying on the interface with address `interface` (at once, then probing).
    /// Adding an interface twice changes nothing.
    pub fn add_interface(&mut self, now: Instant, interface: IpAddr) {
        let jitter = Duration::from_millis(self.rng.next_u64() % 100);
        let query_interval = self.config.query_interval + jitter;
        self.interfaces.entry(interface).or_insert(Interface {
            next_query: now,
            probing: Some(INITIAL_QUERY_INTERVAL),
            query_interval,
        });
    }

    /// Stops using the interface with address `interface`; returns whether it was in use.
    /// Addresses discovered through it expire on their own.
    pub fn remove_interface(&mut self, interface: IpAddr) -> bool {
        self.interfaces.remove(&interface).is_some()
    }

    /// The interfaces in use.
    pub fn interfaces(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.interfaces.keys().copied()
    }

    /// Sets the node's listen addresses (text multiaddrs without `/p2p`). Each interface
    /// answers with those whose IP is the interface's address.
    pub fn set_listen_addresses(&mut self, addresses: Vec<String>) {
        self.listen_addresses = addresses;
    }

    /// The discovered `(peer, address)` pairs that have not expired by `now`.
    pub fn discovered(&self, now: Instant) -> impl Iterator<Item = (&PeerId, &str)> + '_ {
        self.discovered
            .iter()
            .filter(move |(_, expires)| **expires > now)
            .map(|((peer, addr), _)| (peer, addr.as_str()))
    }

    /// When [`handle_timeout`](Mdns::handle_timeout) must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let query = self.interfaces.values().map(|i| i.next_query).min();
        let expiry = self.discovered.values().copied().min();
        match (query, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<MdnsOutput> {
        self.outputs.pop_front()
    }

    /// Sends the queries that are due and expires addresses whose TTL has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (ip, interface) in self.interfaces.iter_mut() {
            if interface.next_query > now {
                continue;
            }
            due.push(*ip);
            let interval = match interface.probing {
                Some(probe) => {
                    let doubled = probe * 2;
                    if doubled >= interface.query_interval {
                        interface.probing = None;
                        interface.query_interval
                    } else {
                        interface.probing = Some(doubled);
                        doubled
                    }
                }
                None => interface.query_interval,
            };
            interface.next_query = now + interval;
        }
        for interface in due {
            let packet = self.query_packet();
            self.outputs
                .push_back(MdnsOutput::Transmit { interface, packet });
        }
        let expired: Vec<(PeerId, String)> = self
            .discovered
            .iter()
            .filter(|(_, expires)| **expires <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            self.discovered.remove(&key);
            let (peer, address) = key;
            self.outputs
                .push_back(MdnsOutput::Expired { peer, address });
        }
    }

    /// Handles a datagram received on `interface` (the address of the interface whose
    /// socket received it) from `from`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        interface: IpAddr,
        from: SocketAddr,
        packet: &[u8],
    ) -> Result<MdnsPacketKind, MdnsError> {
        if !self.interfaces.contains_key(&interface) {
            return Err(MdnsError::UnknownInterface);
        }
        let message = DnsMessage::parse(packet)?;
        if message.is_response() || message.questions.is_empty() {
            let peers = self.handle_response(now, interface, from, &message);
            return Ok(MdnsPacketKind::Response { peers });
        }
        let service = DnsName::from_dotted(SERVICE_NAME);
        let meta = DnsName::from_dotted(META_QUERY_SERVICE);
        if message.questions.iter().any(|q| q.name == service) {
            self.answer_query(interface, message.id);
            Ok(MdnsPacketKind::Query)
        } else if message.questions.iter().any(|q| q.name == meta) {
            self.answer_service_discovery(interface, message.id);
            Ok(MdnsPacketKind::ServiceDiscovery)
        } else {
            Ok(MdnsPacketKind::Ignored)
        }
    }

    fn ttl_secs(&self) -> u32 {
        let ttl = self.config.ttl;
        let secs = ttl
            .as_secs()
            .saturating_add(u64::from(ttl.subsec_nanos() > 0));
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    /// A PTR query for the libp2p service with a random id.
    fn query_packet(&mut self) -> Vec<u8> {
        let message = DnsMessage {
            id: self.rng.next_u32() as u16,
            flags: 0,
            questions: alloc::vec![DnsQuestion {
                name: DnsName::from_dotted(SERVICE_NAME),
                qtype: dns::TYPE_PTR,
                qclass: CLASS_IN,
            }],
            ..DnsMessage::default()
        };
        message.encode().unwrap_or_default()
    }

    fn queue(&mut self, interface: IpAddr, packet: Vec<u8>) {
        if self.outputs.len() < self.config.max_queued_transmits {
            self.outputs
                .push_back(MdnsOutput::Transmit { interface, packet });
        }
    }

    /// A random single-label name for one response (32 to 63 alphanumeric characters).
    fn random_peer_name(&mut self) -> DnsName {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let len = 32 + (self.rng.next_u32() % 32) as usize;
        let label = (0..len)
            .map(|_| ALPHABET[(self.rng.next_u32() % ALPHABET.len() as u32) as usize])
            .collect();
        DnsName::from_labels(alloc::vec![label])
    }

    /// Answers a query with this node's addresses on `interface`, in as many packets as
    /// they need.
    fn answer_query(&mut self, interface: IpAddr, id: u16) {
        let ttl = self.ttl_secs();
        let name = self.random_peer_name();
        let txts: Vec<ResourceRecord> = self
            .listen_addresses
            .iter()
            .filter(|a| leading_ip(a) == Some(interface))
            .map(|a| format!("{DNSADDR_PREFIX}{a}/p2p/{}", self.local_base58))
            .filter(|txt| txt.len() <= MAX_TXT_LENGTH && txt.is_ascii() && !txt.contains(' '))
            .map(|txt| {
                let mut record =
                    ResourceRecord::txt(name.clone(), ttl, alloc::vec![txt.into_bytes()]);
                // Cache-flush class, as libp2p-mdns writes its TXT records.
                record.class = 0x8000 | CLASS_IN;
                record
            })
            .collect();
        let ptr = ResourceRecord::ptr(DnsName::from_dotted(SERVICE_NAME), ttl, name);
        let mut chunks: Vec<Vec<ResourceRecord>> = txts
            .chunks(MAX_RECORDS_PER_PACKET)
            .map(<[ResourceRecord]>::to_vec)
            .collect();
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        for additionals in chunks {
            let message = DnsMessage {
                id,
                flags: FLAGS_RESPONSE,
                answers: alloc::vec![ptr.clone()],
                additionals,
                ..DnsMessage::default()
            };
            if let Ok(packet) = message.encode() {
                self.queue(interface, packet);
            }
        }
    }

    /// Answers a DNS-SD enumeration: this link offers the libp2p service.
    fn answer_service_discovery(&mut self, interface: IpAddr, id: u16) {
        let mut record = ResourceRecord::ptr(
            DnsName::from_dotted(META_QUERY_SERVICE),
            self.ttl_secs(),
            DnsName::from_dotted(SERVICE_NAME),
        );
        record.class = 0x8000 | CLASS_IN;
        let message = DnsMessage {
            id,
            flags: FLAGS_RESPONSE,
            answers: alloc::vec![record],
            ..DnsMessage::default()
        };
        if let Ok(packet) = message.encode() {
            self.queue(interface, packet);
        }
    }

    /// Takes the peers and addresses of a response; returns how many peers other than this
    /// node it announced.
    fn handle_response(
        &mut self,
        now: Instant,
        interface: IpAddr,
        from: SocketAddr,
        message: &DnsMessage,
    ) -> usize {
        let service = DnsName::from_dotted(SERVICE_NAME);
        let mut peers = 0;
        let mut found_any = false;
        for answer in &message.answers {
            let RecordData::Ptr(target) = &answer.data else {
                continue;
            };
            if answer.name != service {
                continue;
            }
            let Some((peer, addresses)) = self.announced_peer(message, target) else {
                continue;
            };
            if peer == self.local {
                continue;
            }
            peers += 1;
            let expires = now + Duration::from_secs(u64::from(answer.ttl));
            for address in addresses {
                let Some(address) = translate(&address, from) else {
                    continue;
                };
                found_any = true;
                let key = (peer, address);
                if let Some(old) = self.discovered.get_mut(&key) {
                    *old = expires;
                } else if self.discovered.len() < self.config.max_discovered {
                    self.discovered.insert(key.clone(), expires);
                    let (peer, address) = key;
                    self.outputs
                        .push_back(MdnsOutput::Discovered { peer, address });
                }
            }
        }
        // Someone answered: the probing phase on this interface is over.
        if found_any && let Some(state) = self.interfaces.get_mut(&interface) {
            state.probing = None;
            state.next_query = now + state.query_interval;
        }
        peers
    }

    /// The peer and addresses the TXT records named `target` announce: every
    /// `dnsaddr=<multiaddr>/p2p/<peer>` string, all for one peer (strings for another peer,
    /// or without a valid peer id, are skipped).
    fn announced_peer(
        &self,
        message: &DnsMessage,
        target: &DnsName,
    ) -> Option<(PeerId, Vec<String>)> {
        let mut peer: Option<PeerId> = None;
        let mut addresses = Vec::new();
        let strings = message
            .answers
            .iter()
            .chain(&message.additionals)
            .filter(|r| r.name == *target)
            .filter_map(|r| match &r.data {
                RecordData::Txt(strings) => Some(strings),
                _ => None,
            })
            .flatten();
        for string in strings {
            let Some((address, id)) = parse_dnsaddr(string) else {
                continue;
            };
            match peer {
                Some(p) if p != id => continue,
                Some(_) => {}
                None => peer = Some(id),
            }
            if addresses.len() < self.config.max_addresses_per_peer && !addresses.contains(&address)
            {
                addresses.push(address);
            }
        }
        peer.map(|p| (p, addresses))
    }
}

/// The multiaddr and peer of a `dnsaddr=<multiaddr>/p2p/<peer id>` TXT string (quotes
/// around it allowed, as libp2p-mdns reads them).
pub fn parse_dnsaddr(string: &[u8]) -> Option<(String, PeerId)> {
    let string = match string {
        [b'"', inner @ .., b'"'] => inner,
        s => s,
    };
    let text = core::str::from_utf8(string).ok()?;
    let rest = text.strip_prefix(DNSADDR_PREFIX)?;
    let (address, id) = rest.rsplit_once("/p2p/")?;
    if !address.starts_with('/') || id.contains('/') {
        return None;
    }
    let bytes = bs58::decode(id).into_vec().ok()?;
    let peer = PeerId::from_bytes(&bytes).ok()?;
    Some((String::from(address), peer))
}

/// The IP address a multiaddr text starts with (`/ip4/<ip>/..` or `/ip6/<ip>/..`).
pub fn leading_ip(address: &str) -> Option<IpAddr> {
    let mut parts = address.strip_prefix('/')?.split('/');
    let (proto, value) = (parts.next()?, parts.next()?);
    match proto {
        "ip4" => Ipv4Addr::from_str(value).ok().map(IpAddr::V4),
        "ip6" => Ipv6Addr::from_str(value).ok().map(IpAddr::V6),
        _ => None,
    }
}

/// The announced `address` as seen from the sender's IP: its leading IP or DNS component
/// is replaced by `from`'s IP (kept as announced when `from` is an IPv6 link-local
/// address, as libp2p-mdns does). `None` for an address that does not start with one.
pub fn translate(address: &str, from: SocketAddr) -> Option<String> {
    let body = address.strip_prefix('/')?;
    let mut parts = body.splitn(3, '/');
    let proto = parts.next()?;
    let _value = parts.next()?;
    let rest = parts.next().unwrap_or("");
    if !matches!(proto, "ip4" | "ip6" | "dns" | "dns4" | "dns6") {
        return None;
    }
    let ip = from.ip();
    if let IpAddr::V6(v6) = ip
        && (v6.segments()[0] & 0xFFC0) == 0xFE80
    {
        return Some(String::from(address));
    }
    let proto = if ip.is_ipv4() { "ip4" } else { "ip6" };
    Some(if rest.is_empty() {
        format!("/{proto}/{ip}")
    } else {
        format!("/{proto}/{ip}/{rest}")
    })
}

#[cfg(test)]
mod tests;
