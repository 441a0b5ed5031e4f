//! TCP on async-io: libp2p's [`Transport`] trait over `async_io::Async<TcpStream>`.
//!
//! Dials `/ip4|ip6/<ip>/tcp/<port>` and `/dns|dns4|dns6/<host>/tcp/<port>` (names are
//! resolved with the system resolver on the `blocking` thread pool, so no other runtime is
//! involved), listens on IP addresses, and expands a listener on an unspecified address
//! (`0.0.0.0`, `::`) into one listen address per interface address, following interface
//! changes with `if-watch`. A trailing `/p2p/<peer id>` is accepted and ignored.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::task::{Context, Poll};

use async_io::Async;
use futures::future::{BoxFuture, Ready};
use futures::{FutureExt, future};
use if_watch::IfEvent;
use if_watch::smol::IfWatcher;
use libp2p::core::multiaddr::Protocol;
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::core::{Multiaddr, Transport};
use socket2::{Domain, Socket, Type};

/// A TCP connection on async-io.
pub type TcpStreamIo = Async<TcpStream>;

/// Settings of the [`TcpTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConfig {
    /// Sets `TCP_NODELAY` on every connection.
    pub nodelay: bool,
    /// The listen backlog.
    pub backlog: i32,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            nodelay: true,
            backlog: 1024,
        }
    }
}

/// Where a dial goes: a socket address or a name to resolve first.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Socket(SocketAddr),
    Name {
        host: String,
        port: u16,
        family: Family,
    },
}

/// Which address family a DNS name may resolve to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Any,
    V4,
    V6,
}

/// The target of `/ip*|dns*/<host>/tcp/<port>[/p2p/<id>]`, or `None` for any other address.
fn parse_target(addr: &Multiaddr) -> Option<Target> {
    let mut iter = addr.iter();
    let first = iter.next()?;
    let port = match iter.next()? {
        Protocol::Tcp(port) => port,
        _ => return None,
    };
    match iter.next() {
        None | Some(Protocol::P2p(_)) => {}
        Some(_) => return None,
    }
    if iter.next().is_some() {
        return None;
    }
    let name = |host: &str, family| Target::Name {
        host: host.to_string(),
        port,
        family,
    };
    Some(match first {
        Protocol::Ip4(ip) => Target::Socket(SocketAddr::new(ip.into(), port)),
        Protocol::Ip6(ip) => Target::Socket(SocketAddr::new(ip.into(), port)),
        Protocol::Dns(host) => name(&host, Family::Any),
        Protocol::Dns4(host) => name(&host, Family::V4),
        Protocol::Dns6(host) => name(&host, Family::V6),
        _ => return None,
    })
}

/// `/ip4|ip6/<ip>/tcp/<port>` of a socket address.
pub fn socket_multiaddr(addr: SocketAddr) -> Multiaddr {
    Multiaddr::empty()
        .with(addr.ip().into())
        .with(Protocol::Tcp(addr.port()))
}

/// One listening socket and the addresses it announced.
struct Listener {
    id: ListenerId,
    socket: Async<TcpListener>,
    /// The address it is bound to (possibly unspecified).
    bound: SocketAddr,
    /// Interface events for a listener on an unspecified address.
    if_watcher: Option<IfWatcher>,
    /// Events to report before accepting further connections.
    pending: VecDeque<TransportEvent<Ready<io::Result<TcpStreamIo>>, io::Error>>,
}

/// libp2p's [`Transport`] for TCP on async-io (no tokio).
pub struct TcpTransport {
    config: TcpConfig,
    listeners: Vec<Listener>,
    /// Where the next `poll` starts, so that one busy listener cannot starve the others.
    next: usize,
    /// Events not tied to a live listener (closures of removed listeners).
    pending: VecDeque<TransportEvent<Ready<io::Result<TcpStreamIo>>, io::Error>>,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("config", &self.config)
            .field("listeners", &self.listeners.len())
            .finish()
    }
}

impl TcpTransport {
    /// A transport with `config`.
    pub fn new(config: TcpConfig) -> Self {
        TcpTransport {
            config,
            listeners: Vec::new(),
            next: 0,
            pending: VecDeque::new(),
        }
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<Async<TcpListener>> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        #[cfg(unix)]
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(self.config.backlog)?;
        Async::new(TcpListener::from(socket))
    }
}

impl Default for TcpTransport {
    fn default() -> Self {
        TcpTransport::new(TcpConfig::default())
    }
}

/// Resolves `target` and connects to the first address that accepts.
async fn connect(target: Target, config: TcpConfig) -> io::Result<TcpStreamIo> {
    let candidates: Vec<SocketAddr> = match target {
        Target::Socket(addr) => vec![addr],
        Target::Name { host, port, family } => {
            let resolved = blocking::unblock(move || {
                (host.as_str(), port)
                    .to_socket_addrs()
                    .map(|it| it.collect::<Vec<_>>())
            })
            .await?;
            resolved
                .into_iter()
                .filter(|a| match family {
                    Family::Any => true,
                    Family::V4 => a.is_ipv4(),
                    Family::V6 => a.is_ipv6(),
                })
                .collect()
        }
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
    for addr in candidates {
        match Async::<TcpStream>::connect(addr).await {
            Ok(stream) => {
                if config.nodelay {
                    stream.get_ref().set_nodelay(true)?;
                }
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl Transport for TcpTransport {
    type Output = TcpStreamIo;
    type Error = io::Error;
    type ListenerUpgrade = Ready<io::Result<TcpStreamIo>>;
    type Dial = BoxFuture<'static, io::Result<TcpStreamIo>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        let bound = match parse_target(&addr) {
            Some(Target::Socket(sa)) => sa,
            _ => return Err(TransportError::MultiaddrNotSupported(addr)),
        };
        let socket = self.bind(bound).map_err(TransportError::Other)?;
        let bound = socket
            .get_ref()
            .local_addr()
            .map_err(TransportError::Other)?;
        let mut pending = VecDeque::new();
        let if_watcher = if bound.ip().is_unspecified() {
            Some(IfWatcher::new().map_err(TransportError::Other)?)
        } else {
            pending.push_back(TransportEvent::NewAddress {
                listener_id: id,
                listen_addr: socket_multiaddr(bound),
            });
            None
        };
        self.listeners.push(Listener {
            id,
            socket,
            bound,
            if_watcher,
            pending,
        });
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        let Some(pos) = self.listeners.iter().position(|l| l.id == id) else {
            return false;
        };
        let listener = self.listeners.remove(pos);
        self.pending.push_back(TransportEvent::ListenerClosed {
            listener_id: listener.id,
            reason: Ok(()),
        });
        true
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let target = match parse_target(&addr) {
            Some(Target::Socket(sa)) if sa.ip().is_unspecified() || sa.port() == 0 => {
                return Err(TransportError::MultiaddrNotSupported(addr));
            }
            Some(target) => target,
            None => return Err(TransportError::MultiaddrNotSupported(addr)),
        };
        Ok(connect(target, self.config).boxed())
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = &mut *self;
        if let Some(event) = this.pending.pop_front() {
            return Poll::Ready(event);
        }
        let count = this.listeners.len();
        for step in 0..count {
            let index = (this.next + step) % count;
            if let Some(event) = poll_listener(&mut this.listeners[index], this.config, cx) {
                this.next = (index + 1) % count;
                if matches!(event, TransportEvent::ListenerClosed { .. }) {
                    this.listeners.remove(index);
                }
                return Poll::Ready(event);
            }
        }
        Poll::Pending
    }
}

/// The next event of one listener, if any (registering the waker otherwise).
fn poll_listener(
    listener: &mut Listener,
    config: TcpConfig,
    cx: &mut Context<'_>,
) -> Option<TransportEvent<Ready<io::Result<TcpStreamIo>>, io::Error>> {
    if let Some(event) = listener.pending.pop_front() {
        return Some(event);
    }
    let id = listener.id;
    let bound = listener.bound;
    if let Some(watcher) = listener.if_watcher.as_mut() {
        while let Poll::Ready(event) = watcher.poll_if_event(cx) {
            match event {
                Ok(IfEvent::Up(net)) if net.addr().is_ipv4() == bound.is_ipv4() => {
                    return Some(TransportEvent::NewAddress {
                        listener_id: id,
                        listen_addr: socket_multiaddr(SocketAddr::new(net.addr(), bound.port())),
                    });
                }
                Ok(IfEvent::Down(net)) if net.addr().is_ipv4() == bound.is_ipv4() => {
                    return Some(TransportEvent::AddressExpired {
                        listener_id: id,
                        listen_addr: socket_multiaddr(SocketAddr::new(net.addr(), bound.port())),
                    });
                }
                Ok(_) => {}
                Err(error) => {
                    return Some(TransportEvent::ListenerError {
                        listener_id: id,
                        error,
                    });
                }
            }
        }
    }
    match listener.socket.poll_readable(cx) {
        Poll::Pending => None,
        Poll::Ready(Err(error)) => Some(TransportEvent::ListenerClosed {
            listener_id: id,
            reason: Err(error),
        }),
        Poll::Ready(Ok(())) => match listener.socket.get_ref().accept() {
            Ok((stream, remote)) => {
                let upgrade = accepted(stream, config);
                let local = local_of(&upgrade, bound);
                Some(TransportEvent::Incoming {
                    listener_id: id,
                    upgrade: future::ready(upgrade),
                    local_addr: socket_multiaddr(local),
                    send_back_addr: socket_multiaddr(remote),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Spurious readiness: wait for the next one.
                cx.waker().wake_by_ref();
                None
            }
            Err(error) => Some(TransportEvent::ListenerError {
                listener_id: id,
                error,
            }),
        },
    }
}

/// Makes an accepted connection non-blocking and registers it with the reactor.
fn accepted(stream: TcpStream, config: TcpConfig) -> io::Result<TcpStreamIo> {
    if config.nodelay {
        stream.set_nodelay(true)?;
    }
    Async::new(stream)
}

/// The local address of an accepted connection (the listener's if it cannot be read).
fn local_of(stream: &io::Result<TcpStreamIo>, bound: SocketAddr) -> SocketAddr {
    stream
        .as_ref()
        .ok()
        .and_then(|s| s.get_ref().local_addr().ok())
        .unwrap_or(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_parsed_strictly() {
        let t = |s: &str| parse_target(&s.parse().unwrap());
        assert_eq!(
            t("/ip4/127.0.0.1/tcp/4001"),
            Some(Target::Socket("127.0.0.1:4001".parse().unwrap()))
        );
        assert_eq!(
            t("/ip6/::1/tcp/7"),
            Some(Target::Socket("[::1]:7".parse().unwrap()))
        );
        assert_eq!(
            t("/dns4/localhost/tcp/9"),
            Some(Target::Name {
                host: "localhost".into(),
                port: 9,
                family: Family::V4
            })
        );
        assert!(
            t("/ip4/127.0.0.1/tcp/1/p2p/12D3KooWGBfDNnDAi4W5MNhLCvbL8YzfqnTMKiuoPHLUv5p8Q2mD")
                .is_some()
        );
        assert_eq!(t("/ip4/127.0.0.1/udp/1/quic-v1"), None);
        assert_eq!(t("/ip4/127.0.0.1"), None);
        assert_eq!(t("/ip4/127.0.0.1/tcp/1/ws"), None);
        assert_eq!(t("/dnsaddr/example.org"), None);
    }

    #[test]
    fn unsupported_addresses_are_refused() {
        let mut transport = TcpTransport::default();
        let opts = DialOpts {
            role: libp2p::core::Endpoint::Dialer,
            port_use: libp2p::core::transport::PortUse::New,
        };
        for addr in [
            "/ip4/0.0.0.0/tcp/1",
            "/ip4/127.0.0.1/tcp/0",
            "/ip4/1.2.3.4/udp/1",
        ] {
            assert!(matches!(
                transport.dial(addr.parse().unwrap(), opts),
                Err(TransportError::MultiaddrNotSupported(_))
            ));
        }
        assert!(matches!(
            transport.listen_on(ListenerId::next(), "/ip4/127.0.0.1/udp/0".parse().unwrap()),
            Err(TransportError::MultiaddrNotSupported(_))
        ));
        assert!(!transport.remove_listener(ListenerId::next()));
    }
}
