//! Swarms whose TCP connections leave from a chosen source address (127.0.0.2,
//! 127.0.0.5, ...), so that a test can play peers on distinct addresses of one host.
//! libp2p's TCP transport binds an outbound connection to the unspecified address, which
//! the kernel turns into 127.0.0.1 for every loopback peer; this dial-only transport binds
//! the source address itself.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::core::upgrade::Version;
use libp2p::core::{Multiaddr, Transport};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Swarm, SwarmBuilder, identity::Keypair, noise, yamux};

/// A TCP transport that only dials, from `source`.
#[derive(Debug, Clone, Copy)]
pub struct SourceTcp {
    source: Ipv4Addr,
}

impl SourceTcp {
    /// Dials from `source` (port chosen by the kernel).
    pub fn new(source: Ipv4Addr) -> Self {
        SourceTcp { source }
    }
}

fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut iter = addr.iter();
    match (iter.next(), iter.next()) {
        (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(port))) => {
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        _ => None,
    }
}

impl Transport for SourceTcp {
    type Output = libp2p::tcp::tokio::TcpStream;
    type Error = io::Error;
    type ListenerUpgrade = futures::future::Pending<Result<Self::Output, io::Error>>;
    type Dial = BoxFuture<'static, Result<Self::Output, io::Error>>;

    fn listen_on(
        &mut self,
        _: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<io::Error>> {
        Err(TransportError::MultiaddrNotSupported(addr))
    }

    fn remove_listener(&mut self, _: ListenerId) -> bool {
        false
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _: DialOpts,
    ) -> Result<Self::Dial, TransportError<io::Error>> {
        let Some(remote) = socket_addr(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let local = SocketAddr::new(self.source.into(), 0);
        Ok(async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(local)?;
            let stream = socket.connect(remote).await?;
            stream.set_nodelay(true)?;
            Ok(libp2p::tcp::tokio::TcpStream(stream))
        }
        .boxed())
    }

    fn poll(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Poll::Pending
    }
}

/// A tokio swarm with a new identity whose connections (TCP, noise, yamux) leave from
/// `source`; it cannot listen.
pub fn swarm_from<B: NetworkBehaviour>(
    source: Ipv4Addr,
    behaviour: impl FnOnce(&Keypair) -> B,
    idle: Duration,
) -> Result<Swarm<B>, String> {
    Ok(SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                Ok(SourceTcp::new(source)
                    .upgrade(Version::V1)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default())
                    .timeout(Duration::from_secs(10)))
            },
        )
        .map_err(|e| format!("transport: {e}"))?
        .with_behaviour(behaviour)
        .map_err(|e| format!("behaviour: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build())
}
