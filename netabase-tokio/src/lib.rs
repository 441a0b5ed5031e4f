//! The tokio runtime of Netabase.
//!
//! [`TokioRuntime`] implements [`netabase_swarm::Runtime`] with tokio's tasks and timers
//! and libp2p's tokio transports: TCP (noise encryption, yamux multiplexing), QUIC, DNS
//! resolution and mDNS discovery. [`Netabase<D>`] is the node handle on this runtime; the
//! `netabase` crate re-exports it as its default.
//!
//! ```no_run
//! # async fn demo<D: netabase_store::NetabaseDefinition>() -> Result<(), netabase_tokio::NetabaseError> {
//! let node = netabase_tokio::Netabase::<D>::new_with_path("./my-node")?;
//! node.start_swarm().await?;
//! println!("listening on {:?}", node.listen_addresses().await?);
//! node.stop_swarm().await?;
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use libp2p::core::{muxing::StreamMuxerBox, upgrade::Version};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Swarm, Transport, dns, mdns, noise, quic, tcp, yamux};
pub use netabase_swarm::{
    BootstrapResult, BuildError, ConnectionLimits, DEFAULT_DATA_DIR, DEFAULT_PROTOCOL_NAME,
    EventError, EventSubscriber, GetRecordResult, IDENTIFY_PROTOCOL_VERSION, IPFS_PROTOCOL_NAME,
    Keypair, Mode, Multiaddr, NetabaseConfig, NetabaseError, NetabaseEvent, NetabaseStats, PeerId,
    ProviderInfo, ProvidingResult, PutRecordResult, QueryError, QueryKind, QueryStats, Quorum,
    RecordKey, Runtime, StorageBackend, StreamError, TransportKind, TransportSettings,
    UPGRADE_TIMEOUT, libp2p,
};

/// The tokio runtime: the node's driver on a thread of its own (on a multi-threaded
/// runtime; see [`TokioRuntime::spawn`]), connection tasks and timers of the ambient tokio
/// runtime, TCP (noise, yamux), QUIC and DNS transports, tokio mDNS.
///
/// Its methods must run inside a tokio runtime (`Netabase::start_swarm` is called from
/// one).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioRuntime;

/// The future in `slot`, if it is still there.
fn take(slot: &Mutex<Option<BoxFuture<'static, ()>>>) -> Option<BoxFuture<'static, ()>> {
    // Poisoning needs a panic while the lock is held, and nothing here panics.
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// The Netabase node on tokio.
pub type Netabase<D> = netabase_swarm::Netabase<D, TokioRuntime>;

impl Runtime for TokioRuntime {
    type Mdns = mdns::tokio::Behaviour;

    const NAME: &'static str = "tokio";

    /// TCP and QUIC: the default configuration listens on `/ip4/0.0.0.0/tcp/0` and
    /// `/ip4/0.0.0.0/udp/0/quic-v1`.
    const TRANSPORTS: &'static [TransportKind] = &[TransportKind::Tcp, TransportKind::Quic];

    /// Runs the node's driver. On a multi-threaded runtime it gets a thread of its own
    /// (named `netabase-node`, polled with the runtime's handle, so its connections, I/O
    /// and timers stay on the runtime): the driver makes blocking storage calls (a
    /// durable redb commit waits for the disk's fdatasync), which would otherwise hold a
    /// worker thread and stall every other task of the runtime, including other nodes'
    /// connections and the application's own tasks. On a current-thread runtime it is a
    /// task of that runtime.
    fn spawn(future: BoxFuture<'static, ()>) {
        let handle = tokio::runtime::Handle::current();
        if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            // Shared with the thread, so that the future is still here if no thread can
            // be started.
            let slot = Arc::new(Mutex::new(Some(future)));
            let for_thread = Arc::clone(&slot);
            let on_thread = handle.clone();
            let started = std::thread::Builder::new()
                .name("netabase-node".into())
                .spawn(move || {
                    if let Some(future) = take(&for_thread) {
                        on_thread.block_on(future);
                    }
                });
            if started.is_err()
                && let Some(future) = take(&slot)
            {
                handle.spawn(future);
            }
        } else {
            tokio::spawn(future);
        }
    }

    fn sleep(duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }

    fn build_swarm<B: NetworkBehaviour + Send + 'static>(
        keypair: Keypair,
        behaviour: B,
        settings: &TransportSettings,
    ) -> Result<Swarm<B>, BuildError> {
        // Composed by hand rather than with `SwarmBuilder`, so that the node's bandwidth
        // counters, registered before the swarm exists, can measure the transport.
        let noise = noise::Config::new(&keypair)
            .map_err(|e| BuildError(format!("noise handshake: {e}")))?;
        let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .timeout(UPGRADE_TIMEOUT)
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
        let quic = quic::tokio::Transport::new(quic::Config::new(&keypair))
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
        let transport = dns::tokio::Transport::system(
            tcp.or_transport(quic).map(|either, _| either.into_inner()),
        )
        .map_err(|e| BuildError(format!("DNS transport: {e}")))?
        .boxed();
        let config = libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(settings.idle_connection_timeout);
        Ok(Swarm::new(
            settings.measure(transport),
            behaviour,
            keypair.public().to_peer_id(),
            config,
        ))
    }

    fn mdns(local: PeerId, config: mdns::Config) -> Result<Self::Mdns, BuildError> {
        mdns::tokio::Behaviour::new(config, local).map_err(|e| BuildError(format!("mDNS: {e}")))
    }
}
