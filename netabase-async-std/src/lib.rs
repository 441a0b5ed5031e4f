//! The async-io runtime of Netabase, for async-std and smol.
//!
//! async-std and smol run on the same reactor, `async-io`, so one adapter serves both:
//! `AsyncStdRuntime` (feature `async-std`, the default) spawns the node's driver on
//! async-std's executor, `SmolRuntime` (feature `smol`) on smol's global executor; both
//! use async-io's timers, the [`TcpTransport`] of this crate (TCP on async-io with DNS
//! names resolved on the `blocking` pool, noise encryption, yamux multiplexing) and this
//! crate's mDNS service, which moves datagrams for the sans-IO mDNS state machine of
//! `netabase-core`. Nothing here depends on tokio. QUIC is not offered: the default
//! configuration listens on TCP (`/ip4/0.0.0.0/tcp/0`), and a QUIC listen address makes
//! `start_swarm` fail with [`NetabaseError::UnsupportedListenAddress`].
//!
//! ```no_run
//! # #[cfg(feature = "async-std")]
//! # async fn demo<D: netabase_store::NetabaseDefinition>() -> Result<(), netabase_async_std::NetabaseError> {
//! use netabase_async_std::NetabaseConfig;
//! let config = NetabaseConfig::default().with_data_dir("./my-node");
//! let node = netabase_async_std::AsyncStdNetabase::<D>::new_with_config(config)?;
//! node.start_swarm().await?;
//! println!("listening on {:?}", node.listen_addresses().await?);
//! node.stop_swarm().await?;
//! # Ok(()) }
//! ```

#[cfg(any(feature = "async-std", feature = "smol"))]
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

#[cfg(any(feature = "async-std", feature = "smol"))]
use futures::{FutureExt, future::BoxFuture};
#[cfg(any(feature = "async-std", feature = "smol"))]
use libp2p::core::{muxing::StreamMuxerBox, upgrade::Version};
#[cfg(any(feature = "async-std", feature = "smol"))]
use libp2p::swarm::NetworkBehaviour;
#[cfg(any(feature = "async-std", feature = "smol"))]
use libp2p::{Swarm, Transport, mdns, noise, yamux};
#[cfg(any(feature = "async-std", feature = "smol"))]
use netabase_swarm::UPGRADE_TIMEOUT;
pub use netabase_swarm::{
    BootstrapResult, BuildError, ConnectionLimits, DEFAULT_DATA_DIR, DEFAULT_PROTOCOL_NAME,
    EventError, EventSubscriber, GetRecordResult, IDENTIFY_PROTOCOL_VERSION, IPFS_PROTOCOL_NAME,
    Keypair, Mode, Multiaddr, NetabaseConfig, NetabaseError, NetabaseEvent, NetabaseStats, PeerId,
    ProviderInfo, ProvidingResult, PutRecordResult, QueryError, QueryKind, QueryStats, Quorum,
    RecordKey, Runtime, StorageBackend, StreamError, TransportKind, TransportSettings, libp2p,
};

pub mod mdns_service;
pub mod tcp;

pub use mdns_service::MdnsBehaviour;
pub use tcp::{TcpConfig, TcpTransport};

#[cfg(any(feature = "async-std", feature = "smol"))]
/// The transports of the async-io runtimes: TCP (with DNS names).
const ASYNC_IO_TRANSPORTS: &[TransportKind] = &[TransportKind::Tcp];

#[cfg(any(feature = "async-std", feature = "smol"))]
/// Builds the swarm for any async-io executor: TCP (with DNS names) upgraded with noise and
/// yamux; connection tasks run on `spawn`.
fn build_swarm_with<B: NetworkBehaviour + Send + 'static>(
    keypair: Keypair,
    behaviour: B,
    settings: &TransportSettings,
    spawn: fn(BoxFuture<'static, ()>),
) -> Result<Swarm<B>, BuildError> {
    let noise =
        noise::Config::new(&keypair).map_err(|e| BuildError(format!("noise handshake: {e}")))?;
    let transport = TcpTransport::new(TcpConfig::default())
        .upgrade(Version::V1Lazy)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .timeout(UPGRADE_TIMEOUT)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed();
    let transport = settings.measure(transport);
    let config = libp2p::swarm::Config::with_executor(
        move |future: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
            spawn(future)
        },
    )
    .with_idle_connection_timeout(settings.idle_connection_timeout);
    Ok(Swarm::new(
        transport,
        behaviour,
        keypair.public().to_peer_id(),
        config,
    ))
}

#[cfg(any(feature = "async-std", feature = "smol"))]
/// A timer on the async-io reactor.
/// Runs a node's driver on a thread of its own, named `netabase-node`, with a `block_on`
/// that only parks the thread (`futures::executor::block_on`), not async-io's, which would
/// take its turn at polling the reactor: readiness events for connections would then land
/// on driver threads, each waking an executor thread to run the connection's task (in the
/// network benchmark that cost 0.4-0.7 ms of CPU per operation). This way the executor's
/// threads (and async-io's own thread when they are busy) poll the reactor, and a thread
/// that receives an event runs the woken task itself. The driver makes
/// blocking storage calls (a durable commit waits for the disk's fdatasync); on an executor
/// thread each of them would hold that thread and every task queued behind it (async-std
/// has one per core, smol's global executor one unless `SMOL_THREADS` says otherwise). If
/// no thread can be started, the driver becomes a task of the executor (`fallback`).
fn spawn_driver(future: BoxFuture<'static, ()>, fallback: fn(BoxFuture<'static, ()>)) {
    // Shared with the thread, so that the future is still here if no thread can be started.
    let slot = Arc::new(Mutex::new(Some(future)));
    let for_thread = Arc::clone(&slot);
    let take = |slot: &Mutex<Option<BoxFuture<'static, ()>>>| {
        slot.lock().unwrap_or_else(PoisonError::into_inner).take()
    };
    let started = std::thread::Builder::new()
        .name("netabase-node".into())
        .spawn(move || {
            if let Some(future) = take(&for_thread) {
                futures::executor::block_on(future);
            }
        });
    if started.is_err()
        && let Some(future) = take(&slot)
    {
        fallback(future);
    }
}

/// The runtime type `$runtime` and node alias `$node` for an async-io executor: they differ
/// only in where a connection's task runs (`$spawn_task`); the driver gets a thread of its
/// own on both ([`spawn_driver`]).
macro_rules! async_io_runtime {
    (
        $feature:literal, $name:literal, $runtime:ident, $node:ident,
        $spawn_task:expr, $doc:literal
    ) => {
        #[doc = concat!("The ", $name, " runtime: ", $doc, ", async-io timers, TCP (noise, yamux) with DNS names, and the core's mDNS over async-io UDP sockets.")]
        #[cfg(feature = $feature)]
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $runtime;

        #[doc = concat!("The Netabase node on ", $name, ".")]
        #[cfg(feature = $feature)]
        pub type $node<D> = netabase_swarm::Netabase<D, $runtime>;

        #[cfg(feature = $feature)]
        impl Runtime for $runtime {
            type Mdns = MdnsBehaviour;

            const NAME: &'static str = $name;

            /// TCP only (no QUIC on async-io): the default configuration listens on
            /// `/ip4/0.0.0.0/tcp/0`.
            const TRANSPORTS: &'static [TransportKind] = ASYNC_IO_TRANSPORTS;

            /// The driver gets a thread of its own, `netabase-node`, that does not poll the
            /// reactor: its durable commits wait for the disk and must not hold an executor
            /// thread. Its connections are tasks of the executor.
            fn spawn(future: BoxFuture<'static, ()>) {
                spawn_driver(future, $spawn_task);
            }

            fn sleep(duration: Duration) -> BoxFuture<'static, ()> {
                async_io::Timer::after(duration).map(|_| ()).boxed()
            }

            fn build_swarm<B: NetworkBehaviour + Send + 'static>(
                keypair: Keypair,
                behaviour: B,
                settings: &TransportSettings,
            ) -> Result<Swarm<B>, BuildError> {
                build_swarm_with(keypair, behaviour, settings, $spawn_task)
            }

            fn mdns(local: PeerId, config: mdns::Config) -> Result<Self::Mdns, BuildError> {
                MdnsBehaviour::new(local, config)
            }
        }
    };
}

async_io_runtime!(
    "async-std",
    "async-std",
    AsyncStdRuntime,
    AsyncStdNetabase,
    // Dropping async-std's join handle detaches the task.
    |future| drop(async_std::task::spawn(future)),
    "tasks on async-std's executor"
);

async_io_runtime!(
    "smol",
    "smol",
    SmolRuntime,
    SmolNetabase,
    |future| smol::spawn(future).detach(),
    "tasks on smol's global executor"
);
