//! Shared helpers: a chat definition, nodes on 127.0.0.1 with mDNS off for any runtime,
//! waits with deadlines on the async-io reactor, and running a scenario on each executor.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use netabase_async_std::{
    EventError, EventSubscriber, Multiaddr, NetabaseConfig, NetabaseEvent, PeerId, Runtime,
};
use netabase_store::netabase_definition_module;
use tempfile::TempDir;

// The generated definition is public API by design; in a test binary nothing is.
#[allow(unreachable_pub)]
#[netabase_definition_module(ChatDefinition, ChatKeys)]
pub mod chat {
    use netabase_store::NetabaseModel;

    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Message {
        #[primary_key]
        pub id: u64,
        #[secondary_key]
        pub author: String,
        pub text: String,
    }
}
pub(crate) use chat::{ChatDefinition, Message, MessagePrimaryKey};

/// The node type on runtime `R`.
pub(crate) type Node<R> = netabase_swarm::Netabase<ChatDefinition, R>;

/// How long any single wait in these tests may take.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// Runs `scenario` on async-std's executor and then on smol's.
pub(crate) fn on_each_runtime<FA, FS>(async_std: impl FnOnce() -> FA, smol: impl FnOnce() -> FS)
where
    FA: Future<Output = ()>,
    FS: Future<Output = ()>,
{
    async_std::task::block_on(async_std());
    smol::block_on(smol());
}

/// A started node and the directory that holds its data.
pub(crate) struct TestNode<R: Runtime> {
    pub(crate) node: Node<R>,
    pub(crate) addr: Multiaddr,
    _dir: TempDir,
}

impl<R: Runtime> TestNode<R> {
    pub(crate) fn id(&self) -> PeerId {
        self.node.local_peer_id()
    }
}

/// A configuration for tests: TCP on 127.0.0.1, mDNS off, short timeouts.
pub(crate) fn test_config(dir: &TempDir) -> NetabaseConfig {
    let mut config = NetabaseConfig::default()
        .with_data_dir(dir.path())
        .with_listen_addresses(["/ip4/127.0.0.1/tcp/0".parse().unwrap()])
        .with_mdns(false);
    config.kad.request_timeout = Duration::from_secs(3);
    config.kad.query_timeout = Duration::from_secs(8);
    config.kad.lookup_patience = None;
    config.stream_timeout = Duration::from_secs(3);
    config
}

pub(crate) fn message(id: u64, text: &str) -> Message {
    Message {
        id,
        author: format!("author-{id}"),
        text: text.to_string(),
    }
}

/// Starts a node on `R` with the test configuration, changed by `tweak`.
pub(crate) async fn start<R: Runtime>(tweak: impl FnOnce(&mut NetabaseConfig)) -> TestNode<R> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    tweak(&mut config);
    let node = Node::<R>::new_with_config(config).expect("node opens");
    node.start_swarm().await.expect("swarm starts");
    let addr = node
        .listen_addresses()
        .await
        .unwrap()
        .into_iter()
        .next()
        .expect("a listen address");
    TestNode {
        node,
        addr,
        _dir: dir,
    }
}

/// Starts a node on `R` that bootstraps through `boot` and waits until `boot` has it in its
/// routing table.
pub(crate) async fn join<R: Runtime, B: Runtime>(boot: &TestNode<B>) -> TestNode<R> {
    let mut boot_events = boot.node.subscribe_to_broadcasts();
    let (boot_id, boot_addr) = (boot.id(), boot.addr.clone());
    let node = start::<R>(|c| c.bootstrap_peers = vec![(boot_id, boot_addr)]).await;
    node.node.bootstrap().await.expect("bootstrap succeeds");
    let id = node.id();
    wait_for(
        &mut boot_events,
        "the bootstrap node adds the newcomer",
        |e| matches!(e, NetabaseEvent::RoutingTablePeerAdded { peer } if *peer == id).then_some(()),
    )
    .await;
    node
}

/// `future`'s output, failing the test if it takes longer than `limit`.
pub(crate) async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    futures::select! {
        t = future.fuse() => t,
        _ = async_io::Timer::after(limit).fuse() => panic!("timed out waiting for {what}"),
    }
}

/// Waits for the first event that `pick` accepts, failing the test after [`DEADLINE`].
/// Lag notices are skipped.
pub(crate) async fn wait_for<T>(
    events: &mut EventSubscriber,
    what: &str,
    mut pick: impl FnMut(&NetabaseEvent) -> Option<T>,
) -> T {
    within(DEADLINE, what, async {
        loop {
            match events.recv().await {
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
