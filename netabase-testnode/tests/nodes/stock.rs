//! Stock rust-libp2p peers on tokio, beside nodes of any runtime: a tokio runtime of a
//! test's own ([`TokioPeers`]) and a swarm as libp2p's own examples build it
//! ([`tokio_swarm`]).

use std::future::Future;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Swarm, SwarmBuilder, noise, tcp, yamux};

/// A tokio runtime with one worker for peers that are not Netabase nodes; dropping it
/// stops every task spawned on it.
pub(crate) struct TokioPeers(Option<tokio::runtime::Runtime>);

impl TokioPeers {
    pub(crate) fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime for the peers");
        TokioPeers(Some(runtime))
    }

    /// Runs `task` on the peers' runtime.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        if let Some(runtime) = &self.0 {
            runtime.spawn(task);
        }
    }
}

impl Drop for TokioPeers {
    fn drop(&mut self) {
        // Without waiting: the test may end inside another runtime (tokio's included),
        // where blocking on a shutdown is not allowed.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A stock swarm on tokio with a new identity: TCP upgraded with noise and yamux,
/// `behaviour` made from the identity's key, connections without streams closed after
/// `idle` (libp2p's default, 10 s, if `None`). Build it inside the tokio runtime that
/// drives it.
pub(crate) fn tokio_swarm<B: NetworkBehaviour>(
    behaviour: impl FnOnce(&Keypair) -> B,
    idle: Option<Duration>,
) -> Swarm<B> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("the TCP transport")
        .with_behaviour(behaviour)
        .expect("the behaviour")
        .with_swarm_config(|c| match idle {
            Some(idle) => c.with_idle_connection_timeout(idle),
            None => c,
        })
        .build()
}
