//! The runtime abstraction: what the node needs from an async runtime.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Multiaddr, PeerId, Swarm, mdns};

use crate::bandwidth::NodeTransport;
use crate::metrics::NodeMetrics;

/// A timer factory: a future that completes after the given duration.
pub type Sleep = Arc<dyn Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync>;

/// How long the security and multiplexing handshakes of a new connection may take.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(20);

/// Settings the runtime's transport stack needs.
#[derive(Debug, Clone)]
pub struct TransportSettings {
    /// How long a connection without streams stays open.
    pub idle_connection_timeout: Duration,
    /// The node's metrics, whose bandwidth counters measure the transport.
    pub metrics: Option<NodeMetrics>,
}

impl TransportSettings {
    /// The transport the swarm runs on: `transport`, measured by the node's bandwidth
    /// counters when it has metrics.
    pub fn measure(&self, transport: NodeTransport) -> NodeTransport {
        match &self.metrics {
            Some(m) => m.measure_transport(transport),
            None => transport,
        }
    }
}

/// A transport a runtime listens and dials on, as told by the shape of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// TCP, upgraded with noise and yamux: `/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>`.
    Tcp,
    /// QUIC v1: `/ip4|ip6|dns|dns4|dns6/<host>/udp/<port>/quic-v1`.
    Quic,
}

impl TransportKind {
    /// The transport `addr` is for, ignoring a trailing `/p2p/<peer id>`: TCP for a host
    /// followed by `/tcp/<port>` alone, QUIC for a host followed by `/udp/<port>/quic-v1`,
    /// `None` for anything else (WebSocket, memory, an old QUIC draft, ...).
    pub fn of(addr: &Multiaddr) -> Option<TransportKind> {
        let mut parts = addr
            .iter()
            .filter(|p| !matches!(p, Protocol::P2p(_)))
            .peekable();
        match parts.next()? {
            Protocol::Ip4(_)
            | Protocol::Ip6(_)
            | Protocol::Dns(_)
            | Protocol::Dns4(_)
            | Protocol::Dns6(_) => {}
            _ => return None,
        }
        let kind = match (parts.next()?, parts.next()) {
            (Protocol::Tcp(_), None) => return Some(TransportKind::Tcp),
            (Protocol::Udp(_), Some(Protocol::QuicV1)) => TransportKind::Quic,
            _ => return None,
        };
        parts.next().is_none().then_some(kind)
    }

    /// The address that listens on every IPv4 interface on a port the system picks:
    /// `/ip4/0.0.0.0/tcp/0` or `/ip4/0.0.0.0/udp/0/quic-v1`.
    pub fn any_ipv4(self) -> Multiaddr {
        let any = Multiaddr::empty().with(Protocol::Ip4(std::net::Ipv4Addr::UNSPECIFIED));
        match self {
            TransportKind::Tcp => any.with(Protocol::Tcp(0)),
            TransportKind::Quic => any.with(Protocol::Udp(0)).with(Protocol::QuicV1),
        }
    }

    /// Its name: `TCP` or `QUIC`.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Tcp => "TCP",
            TransportKind::Quic => "QUIC",
        }
    }
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a swarm or an mDNS service could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the network stack: {0}")]
pub struct BuildError(pub String);

/// What the node needs from an async runtime: spawning the driver, timers, and the
/// runtime-specific parts of the libp2p stack (transports and the mDNS service).
///
/// The node's logic is runtime-agnostic; an adapter crate (`netabase-tokio`, and the
/// async-io one for async-std and smol) implements this trait and nothing else.
pub trait Runtime: Send + Sync + 'static {
    /// The runtime's mDNS behaviour (libp2p's mDNS for this runtime).
    type Mdns: NetworkBehaviour<ToSwarm = mdns::Event> + Send + 'static;

    /// The runtime's name in messages and errors (`"tokio"`, `"async-std"`, `"smol"`).
    const NAME: &'static str;

    /// The transports [`build_swarm`](Runtime::build_swarm) listens and dials on. A listen
    /// address of another [`TransportKind`] is refused with
    /// [`NetabaseError::UnsupportedListenAddress`](crate::NetabaseError::UnsupportedListenAddress)
    /// before any listener opens.
    const TRANSPORTS: &'static [TransportKind];

    /// Where a node listens when its configuration names no addresses
    /// ([`NetabaseConfig::listen_addresses`](crate::NetabaseConfig::listen_addresses) is
    /// `None`, as in `NetabaseConfig::default()`): every IPv4 interface, on a port the
    /// system picks, once for each of the runtime's [`TRANSPORTS`](Runtime::TRANSPORTS).
    fn default_listen_addresses() -> Vec<Multiaddr> {
        Self::TRANSPORTS.iter().map(|t| t.any_ipv4()).collect()
    }

    /// Whether the runtime has a transport for listen address `addr`: `Some(false)` when
    /// the address is for a transport it lacks, `Some(true)` when for one it offers,
    /// `None` when [`TransportKind::of`] does not tell (the swarm decides then).
    fn supports_listen_address(addr: &Multiaddr) -> Option<bool> {
        TransportKind::of(addr).map(|kind| Self::TRANSPORTS.contains(&kind))
    }

    /// Runs the node's driver, `future`, in the background. The driver makes blocking
    /// storage calls (a durable commit waits for the disk's fdatasync), so a runtime gives
    /// it a thread of its own where it can, rather than holding one of the executor's
    /// threads (and every task queued behind it) during each commit.
    fn spawn(future: BoxFuture<'static, ()>);

    /// A future that completes after `duration`.
    fn sleep(duration: Duration) -> BoxFuture<'static, ()>;

    /// The monotonic clock the node's time is measured on.
    fn now() -> std::time::Instant {
        std::time::Instant::now()
    }

    /// Builds a swarm for `keypair` running `behaviour` over the runtime's transports.
    fn build_swarm<B: NetworkBehaviour + Send + 'static>(
        keypair: Keypair,
        behaviour: B,
        settings: &TransportSettings,
    ) -> Result<Swarm<B>, BuildError>;

    /// Starts the runtime's mDNS service for `local`.
    fn mdns(local: PeerId, config: mdns::Config) -> Result<Self::Mdns, BuildError>;
}

/// [`Runtime::sleep`] as a shareable timer factory.
pub(crate) fn sleeper<R: Runtime>() -> Sleep {
    Arc::new(|d| R::sleep(d))
}

#[cfg(test)]
mod tests {
    use super::TransportKind;
    use crate::NetabaseError;

    fn kind(addr: &str) -> Option<TransportKind> {
        TransportKind::of(&addr.parse().unwrap())
    }

    #[test]
    fn addresses_are_told_apart_by_transport() {
        assert_eq!(kind("/ip4/0.0.0.0/tcp/0"), Some(TransportKind::Tcp));
        assert_eq!(kind("/ip6/::1/tcp/4001"), Some(TransportKind::Tcp));
        assert_eq!(kind("/dns4/example.org/tcp/4001"), Some(TransportKind::Tcp));
        let peer = "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp";
        assert_eq!(
            kind(&format!("/ip4/10.0.0.1/tcp/1/p2p/{peer}")),
            Some(TransportKind::Tcp)
        );
        assert_eq!(
            kind("/ip4/0.0.0.0/udp/0/quic-v1"),
            Some(TransportKind::Quic)
        );
        assert_eq!(
            kind("/dns6/example.org/udp/4001/quic-v1"),
            Some(TransportKind::Quic)
        );
        // Not told: the swarm decides.
        for other in [
            "/ip4/127.0.0.1/tcp/1/ws",
            "/ip4/127.0.0.1/udp/1",
            "/ip4/127.0.0.1/udp/1/quic",
            "/ip4/127.0.0.1/udp/1/quic-v1/webtransport",
            "/memory/1",
            "/ip4/127.0.0.1",
            "/tcp/1",
        ] {
            assert_eq!(kind(other), None, "{other}");
        }
    }

    #[test]
    fn the_any_address_of_each_transport_is_of_that_transport() {
        for t in [TransportKind::Tcp, TransportKind::Quic] {
            assert_eq!(TransportKind::of(&t.any_ipv4()), Some(t));
        }
        assert_eq!(
            TransportKind::Quic.any_ipv4().to_string(),
            "/ip4/0.0.0.0/udp/0/quic-v1"
        );
    }

    #[test]
    fn the_unsupported_address_error_names_address_runtime_and_transports() {
        let e = NetabaseError::UnsupportedListenAddress {
            address: "/ip4/0.0.0.0/udp/0/quic-v1".parse().unwrap(),
            runtime: "smol",
            supported: &[TransportKind::Tcp],
        };
        assert_eq!(
            e.to_string(),
            "cannot listen on /ip4/0.0.0.0/udp/0/quic-v1: the smol runtime has no transport \
             for this address (it listens on TCP)"
        );
        let e = NetabaseError::UnsupportedListenAddress {
            address: "/memory/1".parse().unwrap(),
            runtime: "tokio",
            supported: &[TransportKind::Tcp, TransportKind::Quic],
        };
        assert!(
            e.to_string().ends_with("(it listens on TCP and QUIC)"),
            "{e}"
        );
    }
}
