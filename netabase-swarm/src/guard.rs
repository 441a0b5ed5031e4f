//! Limits on what peers may ask of a node: connections per source address before the
//! Noise handshake, and requests, request bytes and answers awaited per peer and per
//! source address after it. Every refusal is counted by its reason.
//!
//! libp2p's `connection_limits` counts connections per peer and in all; a peer that
//! rotates its identity from one address passes those, so the address is the key here.
//! Addresses are grouped by prefix ([`InboundLimits::ipv4_prefix`],
//! [`InboundLimits::ipv6_prefix`]), so that one host's many IPv6 addresses count as one.
//! Rates are token buckets, written here because the only well-kept crate for them
//! (`governor`) brings its own clock and keying machinery for what is a few lines.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

/// A rate: `per_second` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Sustained units per second.
    pub per_second: u32,
    /// Units allowed at once after a quiet spell.
    pub burst: u32,
}

/// Limits of inbound work, per peer and per source address (prefix). `None` switches a
/// limit off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundLimits {
    /// Inbound connections still in their handshake, per source address.
    pub max_pending_per_ip: Option<u32>,
    /// Established inbound connections per source address.
    pub max_connections_per_ip: Option<u32>,
    /// New inbound connections per source address.
    pub connections_per_ip: Option<Rate>,
    /// Kademlia requests per peer.
    pub requests_per_peer: Option<Rate>,
    /// Kademlia requests per source address.
    pub requests_per_ip: Option<Rate>,
    /// Bytes of Kademlia requests per peer.
    pub bytes_per_peer: Option<Rate>,
    /// Bytes of Kademlia requests per source address.
    pub bytes_per_ip: Option<Rate>,
    /// Requests whose answers the node still owes, per source address.
    pub max_in_flight_per_ip: Option<u32>,
    /// A connection whose requests the limits refuse this often within one second is
    /// closed, and its source address may not connect again for
    /// [`cooldown`](InboundLimits::cooldown): a peer that keeps sending over its limits
    /// costs the node a refused handshake, not a decrypted and decoded request each.
    pub max_refusals_per_connection: Option<u32>,
    /// How long a source address whose connection was closed for its refusals is refused
    /// before its handshake.
    pub cooldown: std::time::Duration,
    /// IPv4 addresses that share this many leading bits count as one source.
    pub ipv4_prefix: u8,
    /// IPv6 addresses that share this many leading bits count as one source.
    pub ipv6_prefix: u8,
}

impl Default for InboundLimits {
    fn default() -> Self {
        InboundLimits {
            max_pending_per_ip: Some(16),
            max_connections_per_ip: Some(32),
            connections_per_ip: Some(Rate {
                per_second: 8,
                burst: 32,
            }),
            requests_per_peer: Some(Rate {
                per_second: 1_000,
                burst: 2_000,
            }),
            requests_per_ip: Some(Rate {
                per_second: 4_000,
                burst: 8_000,
            }),
            bytes_per_peer: Some(Rate {
                per_second: 8 << 20,
                burst: 16 << 20,
            }),
            bytes_per_ip: Some(Rate {
                per_second: 32 << 20,
                burst: 64 << 20,
            }),
            max_in_flight_per_ip: Some(256),
            max_refusals_per_connection: Some(64),
            cooldown: std::time::Duration::from_secs(10),
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }
}

/// Why the guard refused a connection or a request (the label of its metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Refusal {
    /// Too many connections of one source address in their handshake.
    #[error("too many pending connections from one address")]
    PendingPerIp,
    /// Too many established connections of one source address.
    #[error("too many connections from one address")]
    ConnectionsPerIp,
    /// New connections of one source address come too fast.
    #[error("connections from one address come too fast")]
    ConnectionRatePerIp,
    /// A peer's requests come too fast.
    #[error("a peer's requests come too fast")]
    RequestsPerPeer,
    /// One source address's requests come too fast.
    #[error("requests from one address come too fast")]
    RequestsPerIp,
    /// A peer sends request bytes too fast.
    #[error("a peer sends too many bytes")]
    BytesPerPeer,
    /// One source address sends request bytes too fast.
    #[error("one address sends too many bytes")]
    BytesPerIp,
    /// One source address awaits too many answers.
    #[error("too many requests from one address await answers")]
    InFlightPerIp,
    /// The source address had a connection closed for its refusals a short while ago.
    #[error("the address is cooling down after too many refusals")]
    Cooldown,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::PendingPerIp => "pending_per_ip",
            Refusal::ConnectionsPerIp => "connections_per_ip",
            Refusal::ConnectionRatePerIp => "connection_rate_per_ip",
            Refusal::RequestsPerPeer => "requests_per_peer",
            Refusal::RequestsPerIp => "requests_per_ip",
            Refusal::BytesPerPeer => "bytes_per_peer",
            Refusal::BytesPerIp => "bytes_per_ip",
            Refusal::InFlightPerIp => "in_flight_per_ip",
            Refusal::Cooldown => "cooldown",
        }
    }
}

/// A source address with the bits beyond its prefix cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Source(IpAddr);

impl Source {
    /// The source of `addr` (its first IP component), `None` for addresses without one.
    pub(crate) fn of(addr: &Multiaddr, limits: &InboundLimits) -> Option<Source> {
        addr.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => {
                let bits = u32::from(ip) & mask32(limits.ipv4_prefix);
                Some(Source(IpAddr::from(bits.to_be_bytes())))
            }
            Protocol::Ip6(ip) => {
                let bits = u128::from(ip) & mask128(limits.ipv6_prefix);
                Some(Source(IpAddr::from(bits.to_be_bytes())))
            }
            _ => None,
        })
    }
}

fn mask32(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - p),
    }
}

fn mask128(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p if p >= 128 => u128::MAX,
        p => u128::MAX << (128 - p),
    }
}

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(rate.burst),
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * f64::from(rate.per_second)).min(f64::from(rate.burst));
        self.at = now;
    }

    /// Takes `n` tokens if there are that many.
    fn take(&mut self, rate: Rate, now: Instant, n: f64) -> bool {
        self.refill(rate, now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut b = *self;
        b.refill(rate, now);
        b.tokens >= f64::from(rate.burst)
    }
}

/// Buckets by key, bounded: when it holds [`MAX_KEYS`] keys, the full (idle) buckets are
/// dropped, and a key that still finds no room is refused.
#[derive(Debug)]
struct Buckets<K> {
    rate: Option<Rate>,
    buckets: HashMap<K, Bucket>,
}

/// The most keys a table of buckets holds (each table: peers or source addresses).
const MAX_KEYS: usize = 16_384;

impl<K: std::hash::Hash + Eq + Copy> Buckets<K> {
    fn new(rate: Option<Rate>) -> Self {
        Buckets {
            rate,
            buckets: HashMap::new(),
        }
    }

    fn take(&mut self, key: K, now: Instant, n: f64) -> bool {
        let Some(rate) = self.rate else {
            return true;
        };
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_KEYS {
            self.buckets.retain(|_, b| !b.is_full(rate, now));
            if self.buckets.len() >= MAX_KEYS {
                return false;
            }
        }
        self.buckets
            .entry(key)
            .or_insert_with(|| Bucket::full(rate, now))
            .take(rate, now, n)
    }
}

/// What the guard knows of one inbound connection.
#[derive(Debug, Clone, Copy)]
struct Inbound {
    source: Option<Source>,
    established: bool,
    /// Requests refused in the current one-second window, and when it began.
    refusals: u32,
    window: Option<Instant>,
}

impl Inbound {
    fn new(source: Option<Source>, established: bool) -> Self {
        Inbound {
            source,
            established,
            refusals: 0,
            window: None,
        }
    }
}

/// What the carrier does with a refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Only this request is refused.
    Refuse(Refusal),
    /// The request is refused and its connection closed (too many refusals).
    Close(Refusal),
}

/// The state behind [`InboundLimits`].
#[derive(Debug)]
pub(crate) struct Guard {
    limits: InboundLimits,
    connections: HashMap<ConnectionId, Inbound>,
    pending: HashMap<Source, u32>,
    established: HashMap<Source, u32>,
    in_flight: HashMap<Source, u32>,
    new_connections: Buckets<Source>,
    requests_per_peer: Buckets<PeerId>,
    requests_per_ip: Buckets<Source>,
    bytes_per_peer: Buckets<PeerId>,
    bytes_per_ip: Buckets<Source>,
    /// Source addresses refused before their handshake until the given time.
    cooling: HashMap<Source, Instant>,
}

fn decrement(map: &mut HashMap<Source, u32>, source: Source) {
    if let Some(n) = map.get_mut(&source) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&source);
        }
    }
}

impl Guard {
    pub(crate) fn new(limits: InboundLimits) -> Self {
        Guard {
            new_connections: Buckets::new(limits.connections_per_ip),
            requests_per_peer: Buckets::new(limits.requests_per_peer),
            requests_per_ip: Buckets::new(limits.requests_per_ip),
            bytes_per_peer: Buckets::new(limits.bytes_per_peer),
            bytes_per_ip: Buckets::new(limits.bytes_per_ip),
            limits,
            connections: HashMap::new(),
            pending: HashMap::new(),
            established: HashMap::new(),
            in_flight: HashMap::new(),
            cooling: HashMap::new(),
        }
    }

    /// An inbound connection from `remote` begins its handshake.
    pub(crate) fn admit_pending(
        &mut self,
        conn: ConnectionId,
        remote: &Multiaddr,
        now: Instant,
    ) -> Result<(), Refusal> {
        let source = Source::of(remote, &self.limits);
        if let Some(source) = source {
            if let Some(&until) = self.cooling.get(&source) {
                if now < until {
                    return Err(Refusal::Cooldown);
                }
                self.cooling.remove(&source);
            }
            let pending = self.pending.get(&source).copied().unwrap_or(0);
            if self
                .limits
                .max_pending_per_ip
                .is_some_and(|max| pending >= max)
            {
                return Err(Refusal::PendingPerIp);
            }
            if !self.new_connections.take(source, now, 1.0) {
                return Err(Refusal::ConnectionRatePerIp);
            }
            *self.pending.entry(source).or_default() += 1;
        }
        self.connections.insert(conn, Inbound::new(source, false));
        Ok(())
    }

    /// The handshake of inbound connection `conn` from `remote` completed.
    pub(crate) fn admit_established(
        &mut self,
        conn: ConnectionId,
        remote: &Multiaddr,
    ) -> Result<(), Refusal> {
        let source = match self.connections.get(&conn) {
            Some(c) => c.source,
            None => Source::of(remote, &self.limits),
        };
        self.release(conn);
        if let Some(source) = source {
            let established = self.established.get(&source).copied().unwrap_or(0);
            if self
                .limits
                .max_connections_per_ip
                .is_some_and(|max| established >= max)
            {
                return Err(Refusal::ConnectionsPerIp);
            }
            *self.established.entry(source).or_default() += 1;
        }
        self.connections.insert(conn, Inbound::new(source, true));
        Ok(())
    }

    /// Connection `conn` closed or failed: whatever it held is released.
    pub(crate) fn release(&mut self, conn: ConnectionId) {
        let Some(c) = self.connections.remove(&conn) else {
            return;
        };
        if let Some(source) = c.source {
            if c.established {
                decrement(&mut self.established, source);
            } else {
                decrement(&mut self.pending, source);
            }
        }
    }

    /// A request of `bytes` from `peer` on `conn` arrived; `answer`: the node owes an
    /// answer (released with [`Guard::answered`]). Returns the source it counts against,
    /// or what to do with the refused request.
    pub(crate) fn admit_request(
        &mut self,
        peer: PeerId,
        conn: ConnectionId,
        bytes: usize,
        answer: bool,
        now: Instant,
    ) -> Result<Option<Source>, Verdict> {
        self.check_request(peer, conn, bytes, answer, now)
            .map_err(|refusal| self.count_refusal(conn, refusal, now))
    }

    fn check_request(
        &mut self,
        peer: PeerId,
        conn: ConnectionId,
        bytes: usize,
        answer: bool,
        now: Instant,
    ) -> Result<Option<Source>, Refusal> {
        let source = self.connections.get(&conn).and_then(|c| c.source);
        let bytes = bytes as f64;
        if !self.requests_per_peer.take(peer, now, 1.0) {
            return Err(Refusal::RequestsPerPeer);
        }
        if !self.bytes_per_peer.take(peer, now, bytes) {
            return Err(Refusal::BytesPerPeer);
        }
        let Some(source) = source else {
            return Ok(None);
        };
        if !self.requests_per_ip.take(source, now, 1.0) {
            return Err(Refusal::RequestsPerIp);
        }
        if !self.bytes_per_ip.take(source, now, bytes) {
            return Err(Refusal::BytesPerIp);
        }
        if answer {
            let in_flight = self.in_flight.entry(source).or_default();
            if self
                .limits
                .max_in_flight_per_ip
                .is_some_and(|max| *in_flight >= max)
            {
                return Err(Refusal::InFlightPerIp);
            }
            *in_flight += 1;
        }
        Ok(Some(source))
    }

    /// Counts a refusal against its connection: past the limit the connection is to be
    /// closed and its source cools down.
    fn count_refusal(&mut self, conn: ConnectionId, refusal: Refusal, now: Instant) -> Verdict {
        let Some(max) = self.limits.max_refusals_per_connection else {
            return Verdict::Refuse(refusal);
        };
        let Some(c) = self.connections.get_mut(&conn) else {
            return Verdict::Refuse(refusal);
        };
        match c.window {
            Some(start) if now.saturating_duration_since(start).as_secs() < 1 => {}
            _ => {
                c.window = Some(now);
                c.refusals = 0;
            }
        }
        c.refusals += 1;
        if c.refusals <= max {
            return Verdict::Refuse(refusal);
        }
        if let Some(source) = c.source {
            if self.cooling.len() >= MAX_KEYS {
                self.cooling.retain(|_, until| *until > now);
            }
            if self.cooling.len() < MAX_KEYS {
                self.cooling.insert(source, now + self.limits.cooldown);
            }
        }
        Verdict::Close(refusal)
    }

    /// An answer owed to `source` went out (or its connection closed).
    pub(crate) fn answered(&mut self, source: Option<Source>) {
        if let Some(source) = source {
            decrement(&mut self.in_flight, source);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn sources_are_grouped_by_prefix() {
        let limits = InboundLimits {
            ipv4_prefix: 24,
            ..InboundLimits::default()
        };
        let a = Source::of(&addr("/ip4/10.1.2.3/tcp/1"), &limits);
        let b = Source::of(&addr("/ip4/10.1.2.200/tcp/2"), &limits);
        let c = Source::of(&addr("/ip4/10.1.3.3/tcp/1"), &limits);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let d = InboundLimits::default();
        let v6a = Source::of(&addr("/ip6/2001:db8::1/tcp/1"), &d);
        let v6b = Source::of(&addr("/ip6/2001:db8::ffff/tcp/1"), &d);
        let v6c = Source::of(&addr("/ip6/2001:db9::1/tcp/1"), &d);
        assert_eq!(v6a, v6b);
        assert_ne!(v6a, v6c);
        assert_eq!(Source::of(&addr("/memory/5"), &d), None);
        assert_ne!(
            Source::of(&addr("/ip4/127.0.0.2/tcp/1"), &d),
            Source::of(&addr("/ip4/127.0.0.3/tcp/1"), &d)
        );
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let rate = Rate {
            per_second: 10,
            burst: 5,
        };
        let t0 = Instant::now();
        let mut b = Buckets::new(Some(rate));
        let granted = (0..20).filter(|_| b.take(1u8, t0, 1.0)).count();
        assert_eq!(granted, 5);
        // 0.5 s later: five more (10 per second), not six.
        let t1 = t0 + Duration::from_millis(500);
        let granted = (0..20).filter(|_| b.take(1u8, t1, 1.0)).count();
        assert_eq!(granted, 5);
        // Another key has its own bucket.
        assert!(b.take(2u8, t1, 1.0));
        let mut off = Buckets::new(None);
        assert!((0..1000).all(|_| off.take(1u8, t0, 1.0)));
    }

    #[test]
    fn connections_per_source_are_limited_before_and_after_the_handshake() {
        let limits = InboundLimits {
            max_pending_per_ip: Some(2),
            max_connections_per_ip: Some(1),
            connections_per_ip: Some(Rate {
                per_second: 1,
                burst: 3,
            }),
            ..InboundLimits::default()
        };
        let mut g = Guard::new(limits);
        let now = Instant::now();
        let attacker = addr("/ip4/127.0.0.5/tcp/4000");
        let honest = addr("/ip4/127.0.0.2/tcp/4000");
        let c = ConnectionId::new_unchecked;
        assert_eq!(g.admit_pending(c(1), &attacker, now), Ok(()));
        assert_eq!(g.admit_pending(c(2), &attacker, now), Ok(()));
        assert_eq!(
            g.admit_pending(c(3), &attacker, now),
            Err(Refusal::PendingPerIp)
        );
        assert_eq!(g.admit_pending(c(4), &honest, now), Ok(()));
        assert_eq!(g.admit_established(c(1), &attacker), Ok(()));
        assert_eq!(
            g.admit_established(c(2), &attacker),
            Err(Refusal::ConnectionsPerIp)
        );
        // The refused connection is gone, so its pending slot is free again; the third
        // new connection spends the rate (3 at once), the fourth is refused.
        assert_eq!(g.admit_pending(c(5), &attacker, now), Ok(()));
        assert_eq!(
            g.admit_pending(c(6), &attacker, now),
            Err(Refusal::ConnectionRatePerIp)
        );
        g.release(c(1));
        g.release(c(5));
        assert_eq!(
            g.admit_pending(c(7), &attacker, now + Duration::from_secs(1)),
            Ok(())
        );
        assert_eq!(g.admit_established(c(7), &attacker), Ok(()));
        // Only the honest connection is still in its handshake.
        assert_eq!(g.pending.len(), 1);
        assert_eq!(g.established.values().sum::<u32>(), 1);
    }

    #[test]
    fn requests_are_limited_per_peer_and_per_source_and_answers_owed_are_bounded() {
        let limits = InboundLimits {
            requests_per_peer: Some(Rate {
                per_second: 1,
                burst: 2,
            }),
            requests_per_ip: Some(Rate {
                per_second: 1,
                burst: 3,
            }),
            max_in_flight_per_ip: Some(2),
            ..InboundLimits::default()
        };
        let mut g = Guard::new(limits);
        let now = Instant::now();
        let attacker = addr("/ip4/127.0.0.5/tcp/4000");
        let c = ConnectionId::new_unchecked;
        g.admit_pending(c(1), &attacker, now).unwrap();
        g.admit_established(c(1), &attacker).unwrap();
        g.admit_pending(c(2), &attacker, now).unwrap();
        g.admit_established(c(2), &attacker).unwrap();
        let (p1, p2) = (PeerId::random(), PeerId::random());
        let s = g.admit_request(p1, c(1), 100, true, now).unwrap();
        g.admit_request(p1, c(1), 100, false, now).unwrap();
        assert_eq!(
            g.admit_request(p1, c(1), 100, false, now),
            Err(Verdict::Refuse(Refusal::RequestsPerPeer))
        );
        // A new identity on the same address: its own peer bucket, the address's
        // in-flight bound (one answer owed already) and then its rate.
        g.admit_request(p2, c(2), 100, true, now).unwrap();
        assert_eq!(
            g.admit_request(p2, c(2), 100, true, now),
            Err(Verdict::Refuse(Refusal::RequestsPerIp))
        );
        let later = now + Duration::from_secs(5);
        assert_eq!(
            g.admit_request(p2, c(2), 100, true, later),
            Err(Verdict::Refuse(Refusal::InFlightPerIp))
        );
        g.answered(s);
        assert!(g.admit_request(p2, c(2), 100, true, later).is_ok());
    }

    #[test]
    fn a_connection_refused_too_often_is_closed_and_its_source_cools_down() {
        let limits = InboundLimits {
            requests_per_peer: Some(Rate {
                per_second: 1,
                burst: 1,
            }),
            max_refusals_per_connection: Some(3),
            cooldown: Duration::from_secs(10),
            ..InboundLimits::default()
        };
        let mut g = Guard::new(limits);
        let now = Instant::now();
        let flooder = addr("/ip4/127.0.0.5/tcp/4000");
        let c = ConnectionId::new_unchecked;
        g.admit_pending(c(1), &flooder, now).unwrap();
        g.admit_established(c(1), &flooder).unwrap();
        let peer = PeerId::random();
        g.admit_request(peer, c(1), 10, false, now).unwrap();
        for _ in 0..3 {
            assert_eq!(
                g.admit_request(peer, c(1), 10, false, now),
                Err(Verdict::Refuse(Refusal::RequestsPerPeer))
            );
        }
        assert_eq!(
            g.admit_request(peer, c(1), 10, false, now),
            Err(Verdict::Close(Refusal::RequestsPerPeer))
        );
        g.release(c(1));
        // The address is refused before its handshake until the cooldown ends; another
        // address is not.
        assert_eq!(
            g.admit_pending(c(2), &flooder, now + Duration::from_secs(9)),
            Err(Refusal::Cooldown)
        );
        assert_eq!(
            g.admit_pending(c(3), &addr("/ip4/127.0.0.2/tcp/1"), now),
            Ok(())
        );
        assert_eq!(
            g.admit_pending(c(4), &flooder, now + Duration::from_secs(10)),
            Ok(())
        );
    }
}
