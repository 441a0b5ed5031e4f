//! Shared helpers: a chat definition, node construction on 127.0.0.1 with mDNS off,
//! networks joined through one bootstrap node, and waiting for events with deadlines.

use std::time::Duration;

use netabase_store::netabase_definition_module;
use netabase_tokio::{
    EventSubscriber, Mode, Multiaddr, NetabaseConfig, NetabaseEvent, PeerId, StorageBackend,
};
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

    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct User {
        #[primary_key]
        pub name: String,
        pub bio: String,
    }
}
pub(crate) use chat::{ChatDefinition, Message, MessagePrimaryKey, UserPrimaryKey};

/// The node type under test.
pub(crate) type Node = netabase_tokio::Netabase<ChatDefinition>;

/// How long any single wait in these tests may take.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// A started node and the directory that holds its data.
pub(crate) struct TestNode {
    pub(crate) node: Node,
    pub(crate) addr: Multiaddr,
    _dir: TempDir,
}

impl TestNode {
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

/// Starts a node with `config` (its data directory must be `dir`).
pub(crate) async fn start(config: NetabaseConfig, dir: TempDir) -> TestNode {
    let node = Node::new_with_config(config).expect("node opens");
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

/// Starts a node with the test configuration, changed by `tweak`.
pub(crate) async fn start_with(tweak: impl FnOnce(&mut NetabaseConfig)) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    tweak(&mut config);
    start(config, dir).await
}

/// `n` server nodes: the first is the bootstrap node, every other one knows only it and
/// bootstraps through it (one after the other, so later ones learn the earlier ones).
/// Returns once the bootstrap node has every other node in its routing table.
pub(crate) async fn network(n: usize) -> Vec<TestNode> {
    let first = start_with(|_| {}).await;
    let (boot_id, boot_addr) = (first.id(), first.addr.clone());
    let mut boot_events = first.node.subscribe_to_broadcasts();
    let mut nodes = vec![first];
    for _ in 1..n {
        let node = start_with(|c| c.bootstrap_peers = vec![(boot_id, boot_addr.clone())]).await;
        node.node.bootstrap().await.expect("bootstrap succeeds");
        let id = node.id();
        wait_for(
            &mut boot_events,
            "the bootstrap node adds the newcomer",
            |e| {
                matches!(e, NetabaseEvent::RoutingTablePeerAdded { peer } if *peer == id)
                    .then_some(())
            },
        )
        .await;
        nodes.push(node);
    }
    nodes
}

/// A client-mode node joined through `boot`.
pub(crate) async fn client_of(boot: &TestNode) -> TestNode {
    let (id, addr) = (boot.id(), boot.addr.clone());
    let node = start_with(|c| {
        c.kad.mode = Mode::Client;
        c.bootstrap_peers = vec![(id, addr)];
    })
    .await;
    node.node.bootstrap().await.expect("bootstrap succeeds");
    node
}

/// Waits for the first event that `pick` accepts, failing the test after [`DEADLINE`].
/// Lag notices are skipped.
pub(crate) async fn wait_for<T>(
    events: &mut EventSubscriber,
    what: &str,
    mut pick: impl FnMut(&NetabaseEvent) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(t) = pick(&event) {
                        return t;
                    }
                }
                Err(netabase_tokio::EventError::Lagged(_)) => {}
                Err(netabase_tokio::EventError::Closed) => {
                    panic!("events closed waiting for {what}")
                }
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub(crate) fn backends() -> [StorageBackend; 2] {
    [StorageBackend::Redb, StorageBackend::Sled]
}
