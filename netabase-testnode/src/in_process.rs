//! Nodes in the test's own process, on any runtime: the support of the in-process tests.
//!
//! Every helper is generic over [`Runtime`], so a scenario is written once as
//! `async fn scenario<R: TestRuntime>()` and run on each runtime with
//! [`TestRuntime::block_on`]. Nodes listen on TCP on 127.0.0.1 with mDNS off and short
//! timeouts ([`test_config`]); every wait is for an event or an answer, bounded by
//! [`DEADLINE`] on the runtime's own timer ([`Runtime::sleep`]).
//!
//! ```no_run
//! use netabase::swarm::Runtime;
//! use netabase_testnode::in_process::{TestRuntime, message, network};
//!
//! async fn a_record_travels<R: Runtime>() {
//!     let nodes = network::<R>(2).await;
//!     let put = nodes[0].node.put_record(message(1, "hi")).await.unwrap();
//!     assert_eq!(put.stored_at, vec![nodes[1].id()]);
//! }
//!
//! netabase::SmolRuntime::block_on(a_record_travels::<netabase::SmolRuntime>());
//! ```

use std::future::Future;
use std::marker::PhantomData;
use std::path::Path;
use std::time::Duration;

use futures::FutureExt;
use netabase::swarm::{Netabase, Runtime};
use netabase::{
    EventError, EventSubscriber, Mode, Multiaddr, NetabaseConfig, NetabaseEvent, PeerId,
    StorageBackend,
};
use tempfile::TempDir;

use crate::{ChatDefinition, Message};

/// How long any single wait of a test may take.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A runtime a test can run its main future on.
pub trait TestRuntime: Runtime {
    /// Runs `future` to its end on this runtime, from a thread outside it (a test's own).
    fn block_on<T>(future: impl Future<Output = T>) -> T;
}

impl TestRuntime for netabase::TokioRuntime {
    /// On a multi-threaded tokio runtime with two workers (what
    /// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` builds), dropped
    /// afterwards.
    fn block_on<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(future)
    }
}

impl TestRuntime for netabase::AsyncStdRuntime {
    /// With `async_std::task::block_on` (tasks run on async-std's executor).
    fn block_on<T>(future: impl Future<Output = T>) -> T {
        async_std::task::block_on(future)
    }
}

impl TestRuntime for netabase::SmolRuntime {
    /// With `smol::block_on` (tasks run on smol's global executor).
    fn block_on<T>(future: impl Future<Output = T>) -> T {
        smol::block_on(future)
    }
}

/// The node type on runtime `R`, for the chat definition.
pub type Node<R> = Netabase<ChatDefinition, R>;

/// A started node and the temporary directory that holds its data (removed on drop).
pub struct TestNode<R: Runtime> {
    /// The node.
    pub node: Node<R>,
    /// Its first listen address.
    pub addr: Multiaddr,
    _dir: TempDir,
}

impl<R: Runtime> TestNode<R> {
    /// The node's peer id.
    pub fn id(&self) -> PeerId {
        self.node.local_peer_id()
    }

    /// The node's events, subscribed now.
    pub fn events(&self) -> Events<R> {
        subscribe(&self.node)
    }
}

/// A configuration for tests, with its data in `dir`: TCP on 127.0.0.1 (port chosen by the
/// system), mDNS off, requests and streams timing out after 3 s, queries after 8 s, and
/// lookups waiting for every answer up to the request timeout (no adaptive patience, which
/// on a loaded machine can give up on a two-node network's only peer).
pub fn test_config(dir: impl AsRef<Path>) -> NetabaseConfig {
    let mut config = NetabaseConfig::default()
        .with_data_dir(dir.as_ref())
        .with_listen_addresses(["/ip4/127.0.0.1/tcp/0".parse().expect("an address")])
        .with_mdns(false);
    config.kad.request_timeout = Duration::from_secs(3);
    config.kad.query_timeout = Duration::from_secs(8);
    config.kad.lookup_patience = None;
    config.stream_timeout = Duration::from_secs(3);
    config
}

/// Message `id` by `author-<id>` saying `text`.
pub fn message(id: u64, text: &str) -> Message {
    Message {
        id,
        author: format!("author-{id}"),
        text: text.to_string(),
    }
}

/// The durable storage backends, for scenarios run on each.
pub fn backends() -> [StorageBackend; 2] {
    [StorageBackend::Redb, StorageBackend::Sled]
}

/// Opens and starts a node on `R` with `config`, whose data directory must be `dir`.
///
/// # Panics
/// If the node does not open, start or listen.
pub async fn start<R: Runtime>(config: NetabaseConfig, dir: TempDir) -> TestNode<R> {
    let node = Node::<R>::new_with_config(config).expect("node opens");
    node.start_swarm().await.expect("swarm starts");
    let addr = node
        .listen_addresses()
        .await
        .expect("listen addresses")
        .into_iter()
        .next()
        .expect("a listen address");
    TestNode {
        node,
        addr,
        _dir: dir,
    }
}

/// Starts a node on `R` with [`test_config`] in a new temporary directory, changed by
/// `tweak`.
pub async fn start_with<R: Runtime>(tweak: impl FnOnce(&mut NetabaseConfig)) -> TestNode<R> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = test_config(&dir);
    tweak(&mut config);
    start(config, dir).await
}

/// Starts a node on `R` that knows only `boot` (on any runtime), bootstraps through it,
/// and returns once `boot` has it in its routing table.
pub async fn join<R: Runtime, B: Runtime>(boot: &TestNode<B>) -> TestNode<R> {
    join_with::<R, B>(boot, |_| {}).await
}

/// Like [`join`], with the node's configuration changed by `tweak`.
pub async fn join_with<R: Runtime, B: Runtime>(
    boot: &TestNode<B>,
    tweak: impl FnOnce(&mut NetabaseConfig),
) -> TestNode<R> {
    let mut boot_events = boot.events();
    let (boot_id, boot_addr) = (boot.id(), boot.addr.clone());
    let node = start_with::<R>(|c| {
        tweak(c);
        c.bootstrap_peers = vec![(boot_id, boot_addr)];
    })
    .await;
    node.node.bootstrap().await.expect("bootstrap succeeds");
    let id = node.id();
    boot_events
        .wait_for("the bootstrap node adds the newcomer", |e| {
            matches!(e, NetabaseEvent::RoutingTablePeerAdded { peer } if *peer == id).then_some(())
        })
        .await;
    node
}

/// `n` server nodes on `R`: the first is the bootstrap node, every other one knows only it
/// and [joins](join) through it, one after the other (so later ones learn the earlier
/// ones).
pub async fn network<R: Runtime>(n: usize) -> Vec<TestNode<R>> {
    network_with::<R>(n, |_| {}).await
}

/// Like [`network`], with every node's configuration changed by `tweak`.
pub async fn network_with<R: Runtime>(
    n: usize,
    tweak: impl Fn(&mut NetabaseConfig),
) -> Vec<TestNode<R>> {
    let mut nodes = vec![start_with::<R>(&tweak).await];
    for _ in 1..n {
        let node = join_with::<R, R>(&nodes[0], &tweak).await;
        nodes.push(node);
    }
    nodes
}

/// A client-mode node on `R` that bootstrapped through `boot`.
pub async fn client_of<R: Runtime>(boot: &TestNode<R>) -> TestNode<R> {
    let (id, addr) = (boot.id(), boot.addr.clone());
    let node = start_with::<R>(|c| {
        c.kad.mode = Mode::Client;
        c.bootstrap_peers = vec![(id, addr)];
    })
    .await;
    node.node.bootstrap().await.expect("bootstrap succeeds");
    node
}

/// `future`'s output, failing the test (naming `what`) if it takes longer than
/// [`DEADLINE`] on `R`'s timer.
pub async fn within<R: Runtime, T>(what: &str, future: impl Future<Output = T>) -> T {
    futures::select! {
        t = future.fuse() => t,
        () = R::sleep(DEADLINE).fuse() => panic!("timed out waiting for {what}"),
    }
}

/// `node`'s events, subscribed now.
pub fn subscribe<R: Runtime>(node: &Node<R>) -> Events<R> {
    Events {
        subscriber: node.subscribe_to_broadcasts(),
        runtime: PhantomData,
    }
}

/// A node's events, read with deadlines on `R`'s timer.
pub struct Events<R> {
    subscriber: EventSubscriber,
    runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime> Events<R> {
    /// The next event or lag notice, failing the test after [`DEADLINE`].
    pub async fn recv(&mut self) -> Result<NetabaseEvent, EventError> {
        within::<R, _>("an event", self.subscriber.recv()).await
    }

    /// The first event that `pick` accepts (mapped by it), failing the test (naming `what`)
    /// after [`DEADLINE`] or if the events end. Lag notices are skipped.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&NetabaseEvent) -> Option<T>,
    ) -> T {
        let subscriber = &mut self.subscriber;
        within::<R, _>(what, async {
            loop {
                match subscriber.recv().await {
                    Ok(event) => {
                        if let Some(t) = pick(&event) {
                            return t;
                        }
                    }
                    Err(EventError::Lagged(_)) => {}
                    Err(EventError::Closed) => panic!("events closed waiting for {what}"),
                }
            }
        })
        .await
    }
}

/// The middle of a runtime's "a node answers while every thread of its executor is held"
/// test: with `node` holding message 1 (`"local"`) and the caller holding every executor
/// thread until `release` runs, a caller on a plain thread (outside any runtime) reads
/// message 1 and puts message 2 (`"while held"`). Both must be answered within
/// [`DEADLINE`] (the node's driver runs on a thread of its own, so its blocking storage
/// calls hold no executor thread, and none holds it): the get from the local store, the
/// put with its local write standing but no peer to publish to. `release` runs before
/// any check fails.
pub fn get_and_put_from_a_plain_thread<R: Runtime>(node: &Node<R>, release: impl FnOnce()) {
    let (answer_tx, answer_rx) = std::sync::mpsc::channel();
    let caller = node.clone();
    std::thread::spawn(move || {
        let got = futures::executor::block_on(caller.get_record(&crate::MessagePrimaryKey(1)));
        let put = futures::executor::block_on(caller.put_record(message(2, "while held")));
        let _ = answer_tx.send((got, put));
    });
    let answers = answer_rx.recv_timeout(DEADLINE);
    release();
    let (got, put) = answers.expect("the driver answers while the executor is held");
    let got = got.expect("the get succeeds").expect("the record is local");
    assert_eq!((got.record, got.source), (message(1, "local"), None));
    // No peer to publish to, but the local write stands.
    assert!(put.expect("the put succeeds").quorum_error.is_some());
}
