//! The runtime abstraction: what the node needs from an async runtime.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{PeerId, Swarm, mdns};

/// A timer factory: a future that completes after the given duration.
pub type Sleep = Arc<dyn Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync>;

/// Settings the runtime's transport stack needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSettings {
    /// How long a connection without streams stays open.
    pub idle_connection_timeout: Duration,
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

    /// Runs `future` in the background.
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
