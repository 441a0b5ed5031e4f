//! libp2p's bandwidth metrics for a node whose [`NodeMetrics`](crate::NodeMetrics) were
//! registered before its transport exists.
//!
//! [`libp2p::metrics::BandwidthTransport`] registers its counters in a registry when it is
//! built around a transport, but a node's metrics are registered by the application (in
//! the registry it serves) long before the node builds its swarm. So the bandwidth
//! transport is built at registration around a [`LateTransport`], an empty slot that the
//! runtime fills with the real transport when it builds the swarm (and fills again when
//! the node restarts: the previous swarm is gone by then).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use libp2p::PeerId;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::core::{Multiaddr, Transport};
use libp2p::metrics::BandwidthTransport;
use prometheus_client::registry::Registry;

/// The transports a runtime builds: authenticated, multiplexed connections.
pub type NodeTransport = Boxed<(PeerId, StreamMuxerBox)>;

/// A transport that forwards to the one put in its slot, and refuses every address while
/// the slot is empty.
#[derive(Clone, Default)]
pub(crate) struct LateTransport {
    slot: Arc<Mutex<Option<NodeTransport>>>,
}

impl LateTransport {
    fn inner(&self) -> MutexGuard<'_, Option<NodeTransport>> {
        // Poisoning needs a panic while the lock is held, in a transport's own method.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Transport for LateTransport {
    type Output = (PeerId, StreamMuxerBox);
    type Error = io::Error;
    type ListenerUpgrade = BoxFuture<'static, io::Result<Self::Output>>;
    type Dial = BoxFuture<'static, io::Result<Self::Output>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        match self.inner().as_mut() {
            Some(t) => t.listen_on(id, addr),
            None => Err(TransportError::MultiaddrNotSupported(addr)),
        }
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner().as_mut().is_some_and(|t| t.remove_listener(id))
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        match self.inner().as_mut() {
            Some(t) => t.dial(addr, opts),
            None => Err(TransportError::MultiaddrNotSupported(addr)),
        }
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        match self.inner().as_mut() {
            Some(t) => Pin::new(t).poll(cx),
            // Filled before the swarm that polls it exists.
            None => Poll::Pending,
        }
    }
}

/// A node's bandwidth counters (`libp2p_bandwidth_bytes_total`, by direction and
/// protocol stack), registered up front, waiting for the transport they measure.
#[derive(Clone)]
pub(crate) struct Bandwidth {
    late: LateTransport,
    measured: BandwidthTransport<LateTransport>,
}

impl Bandwidth {
    /// Registers the counters in `registry` (under the prefix `libp2p`).
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let late = LateTransport::default();
        let measured = BandwidthTransport::new(late.clone(), registry);
        Bandwidth { late, measured }
    }

    /// `transport`, with every byte its connections carry counted.
    pub(crate) fn measure(&self, transport: NodeTransport) -> NodeTransport {
        *self.late.inner() = Some(transport);
        self.measured
            .clone()
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed()
    }
}
