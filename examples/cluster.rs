//! Five Netabase nodes in one process, on 127.0.0.1 with mDNS off: they join through the
//! first, put typed records and read them back on every other node, announce and find
//! providers, then one node stops and the other four still answer. Prints a short report
//! and exits 0 when every check held, 1 otherwise.
//!
//! ```sh
//! cargo run --release --example cluster
//! ```
//!
//! Each node keeps its data in a directory of its own under a temporary directory (redb,
//! durable commits), removed at the end; `--keep` keeps it and prints where it is.
//! The DHT runs with a replication factor (K) of 3, so every record lives on its writer
//! and its three closest peers and at least one node has to ask the network for it.

// An example talks to its user on standard output.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use netabase::{Multiaddr, Netabase, NetabaseConfig, PeerId, netabase_definition_module};

/// The records of the demo: users (who provide their profile) and their messages.
// The macro generates public key types without documentation of their own.
#[allow(missing_docs)]
#[netabase_definition_module(ClusterDefinition, ClusterKeys)]
pub mod model {
    use netabase::NetabaseModel;

    /// A user, found by name.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct User {
        /// The primary key.
        #[primary_key]
        pub name: String,
        /// Indexed in each node's local store.
        #[secondary_key]
        pub email: String,
    }

    /// A message, found by id.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Message {
        /// The primary key.
        #[primary_key]
        pub id: u64,
        /// Indexed in each node's local store.
        #[secondary_key]
        pub author: String,
        /// The text.
        pub text: String,
    }
}
use model::{ClusterDefinition, Message, MessagePrimaryKey, User, UserPrimaryKey};

/// The node type of this demo.
type Node = Netabase<ClusterDefinition>;

/// Nodes in the cluster.
const NODES: usize = 5;
/// The replication factor (Kademlia's K).
const K: usize = 3;
/// The users, one per node; each also writes one message.
const NAMES: [&str; NODES] = ["ada", "grace", "edsger", "barbara", "ken"];

/// A failed check or a node error, as the report states it.
type Failure = String;

fn main() -> ExitCode {
    let keep = std::env::args().skip(1).any(|a| a == "--keep");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cluster: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let root = match tempfile::Builder::new()
        .prefix("netabase-cluster-")
        .tempdir()
    {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("cluster: cannot create a data directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(root.path()));
    if keep {
        println!("data kept in {}", root.keep().display());
    }
    match outcome {
        Ok(()) => {
            println!("result: every check passed");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("result: FAILED: {failure}");
            ExitCode::FAILURE
        }
    }
}

/// One node's configuration: its own directory, 127.0.0.1, mDNS off, replication factor
/// [`K`], short timeouts (every peer is on this machine).
fn config(root: &std::path::Path, i: usize) -> NetabaseConfig {
    let mut config = NetabaseConfig::default()
        .with_data_dir(root.join(format!("node-{i}")))
        .with_listen_addresses(["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")])
        .with_mdns(false);
    config.kad.k = K;
    config.kad.request_timeout = Duration::from_secs(3);
    config.kad.query_timeout = Duration::from_secs(10);
    config
}

fn short(peer: &PeerId) -> String {
    let s = peer.to_string();
    format!("…{}", &s[s.len().saturating_sub(6)..])
}

fn ms(since: Instant) -> String {
    format!("{:.1} ms", since.elapsed().as_secs_f64() * 1000.0)
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), Failure> {
    if ok { Ok(()) } else { Err(what()) }
}

fn node_err(i: usize, what: &str) -> impl FnOnce(netabase::NetabaseError) -> Failure + '_ {
    move |e| format!("node {i}: {what}: {e}")
}

fn user(i: usize) -> User {
    User {
        name: NAMES[i].to_string(),
        email: format!("{}@example.org", NAMES[i]),
    }
}

fn message(i: usize, text: &str) -> Message {
    Message {
        id: i as u64 + 1,
        author: NAMES[i].to_string(),
        text: text.to_string(),
    }
}

/// Where the reads of one round were answered.
#[derive(Default)]
struct Reads {
    local: usize,
    network: usize,
}

/// Reads every record from every running node other than its writer and compares it with
/// what was written.
async fn read_everything(
    nodes: &[Option<Node>],
    users: &[User],
    messages: &[Message],
) -> Result<Reads, Failure> {
    let mut reads = Reads::default();
    for (i, node) in nodes.iter().enumerate() {
        let Some(node) = node else { continue };
        for (writer, u) in users.iter().enumerate() {
            if writer == i {
                continue;
            }
            let found = node
                .get_record(&UserPrimaryKey(u.name.clone()))
                .await
                .map_err(node_err(i, "get user"))?
                .ok_or_else(|| format!("node {i}: user {:?} not found", u.name))?;
            check(found.record == *u, || {
                format!(
                    "node {i}: user {:?} read back as {:?}",
                    u.name, found.record
                )
            })?;
            match found.source {
                None => reads.local += 1,
                Some(_) => reads.network += 1,
            }
        }
        for (writer, m) in messages.iter().enumerate() {
            if writer == i {
                continue;
            }
            let found = node
                .get_record(&MessagePrimaryKey(m.id))
                .await
                .map_err(node_err(i, "get message"))?
                .ok_or_else(|| format!("node {i}: message {} not found", m.id))?;
            check(found.record == *m, || {
                format!("node {i}: message {} read back as {:?}", m.id, found.record)
            })?;
            match found.source {
                None => reads.local += 1,
                Some(_) => reads.network += 1,
            }
        }
    }
    Ok(reads)
}

/// Every running node other than the provider finds the provider of each user's key.
async fn find_providers(nodes: &[Option<Node>], ids: &[PeerId]) -> Result<usize, Failure> {
    let mut found = 0;
    for (i, node) in nodes.iter().enumerate() {
        let Some(node) = node else { continue };
        for (provider, name) in NAMES.iter().enumerate() {
            if provider == i || nodes[provider].is_none() {
                continue;
            }
            let providers = node
                .get_providers(&UserPrimaryKey(name.to_string()))
                .await
                .map_err(node_err(i, "get providers"))?;
            check(providers.iter().any(|p| p.peer == ids[provider]), || {
                format!("node {i}: providers of {name:?} lack node {provider}: {providers:?}")
            })?;
            found += 1;
        }
    }
    Ok(found)
}

async fn run(root: &std::path::Path) -> Result<(), Failure> {
    let started = Instant::now();
    println!("Netabase cluster: {NODES} nodes in one process on 127.0.0.1 (mDNS off, K = {K})");

    // Start: node 0 first, the others join through it.
    let first = Node::new_with_config(config(root, 0)).map_err(node_err(0, "open"))?;
    first.start_swarm().await.map_err(node_err(0, "start"))?;
    let first_addr: Multiaddr = first
        .listen_addresses()
        .await
        .map_err(node_err(0, "listen addresses"))?
        .into_iter()
        .next()
        .ok_or("node 0 has no listen address")?;
    let mut nodes = vec![first.clone()];
    for i in 1..NODES {
        let node = Node::new_with_config(
            config(root, i).with_bootstrap_peer(first.local_peer_id(), first_addr.clone()),
        )
        .map_err(node_err(i, "open"))?;
        node.start_swarm().await.map_err(node_err(i, "start"))?;
        nodes.push(node);
    }
    let ids: Vec<PeerId> = nodes.iter().map(Node::local_peer_id).collect();
    for (i, node) in nodes.iter().enumerate() {
        let addr = node
            .listen_addresses()
            .await
            .map_err(node_err(i, "listen addresses"))?;
        let addr = addr.first().map(ToString::to_string).unwrap_or_default();
        println!("  node {i}  {}  {addr}", ids[i]);
    }

    // Join: two bootstrap rounds, so that every node learns every other one.
    let t = Instant::now();
    for _round in 0..2 {
        for (i, node) in nodes.iter().enumerate().skip(1) {
            node.bootstrap().await.map_err(node_err(i, "bootstrap"))?;
        }
    }
    let mut table_sizes = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let table = node
            .routing_table_peers()
            .await
            .map_err(node_err(i, "routing table"))?;
        check(!table.is_empty(), || {
            format!("node {i}: empty routing table")
        })?;
        table_sizes.push(table.len());
    }
    println!(
        "joined:     routing tables hold {table_sizes:?} peers ({})",
        ms(t)
    );

    // Put: every node writes one user and one message.
    let t = Instant::now();
    let users: Vec<User> = (0..NODES).map(user).collect();
    let messages: Vec<Message> = (0..NODES)
        .map(|i| message(i, &format!("hello from node {i}")))
        .collect();
    let mut replicas = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for put in [
            node.put_record(users[i].clone()).await,
            node.put_record(messages[i].clone()).await,
        ] {
            let put = put.map_err(node_err(i, "put"))?;
            check(put.quorum_error.is_none(), || {
                format!("node {i}: put reached no peer: {:?}", put.quorum_error)
            })?;
            replicas.push(put.peer_count());
        }
    }
    println!(
        "put:        {} records (users and messages), each confirmed by >= {} peer ({})",
        users.len() + messages.len(),
        replicas.iter().min().copied().unwrap_or(0),
        ms(t)
    );

    // Get: every record from every other node, typed and equal.
    let t = Instant::now();
    let reads = read_everything(&to_options(&nodes), &users, &messages).await?;
    let total = reads.local + reads.network;
    check(reads.network > 0, || {
        "no read went over the network (every node held every record)".into()
    })?;
    println!(
        "get:        {total}/{total} reads on other nodes equal what was written: {} from a \
         local replica, {} over the network ({})",
        reads.local,
        reads.network,
        ms(t)
    );

    // Local typed store: each writer lists its own records and finds them by secondary key.
    for (i, node) in nodes.iter().enumerate() {
        let store = node.local_store().map_err(node_err(i, "local store"))?;
        let mine = store
            .get_by_secondary(&model::MessageSecondaryKeys::Author(
                model::MessageAuthorSecondaryKey(NAMES[i].to_string()),
            ))
            .map_err(|e| format!("node {i}: secondary lookup: {e}"))?;
        check(mine == vec![messages[i].clone()], || {
            format!("node {i}: messages by {} in its store: {mine:?}", NAMES[i])
        })?;
    }
    println!("index:      each node finds its own message by author in its local store");

    // Providers: every node provides its user's key; every other node finds it.
    let t = Instant::now();
    for (i, node) in nodes.iter().enumerate() {
        let announced = node
            .start_providing(&UserPrimaryKey(NAMES[i].to_string()))
            .await
            .map_err(node_err(i, "start providing"))?;
        check(announced.error.is_none(), || {
            format!(
                "node {i}: announcement reached no peer: {:?}",
                announced.error
            )
        })?;
    }
    let found = find_providers(&to_options(&nodes), &ids).await?;
    println!(
        "providers:  {NODES} announced, {found}/{found} provider lookups found them ({})",
        ms(t)
    );

    // Stop node 0 (the one everybody joined through) and ask the others again.
    let t = Instant::now();
    let stopped = 0;
    nodes[stopped]
        .stop_swarm()
        .await
        .map_err(node_err(stopped, "stop"))?;
    let mut remaining = to_options(&nodes);
    remaining[stopped] = None;
    println!("stopped:    node {stopped} ({})", short(&ids[stopped]));
    let after = read_everything(&remaining, &users, &messages).await?;
    let found_after = find_providers(&remaining, &ids).await?;
    let late = Message {
        id: 100,
        ..message(1, "written after node 0 stopped")
    };
    let put = nodes[1]
        .put_record(late.clone())
        .await
        .map_err(node_err(1, "put after the stop"))?;
    check(put.quorum_error.is_none(), || {
        format!(
            "node 1: put after the stop reached no peer: {:?}",
            put.quorum_error
        )
    })?;
    for (i, node) in remaining.iter().enumerate() {
        let Some(node) = node else { continue };
        let got = node
            .get_record(&MessagePrimaryKey(late.id))
            .await
            .map_err(node_err(i, "get after the stop"))?;
        check(got.as_ref().map(|g| &g.record) == Some(&late), || {
            format!("node {i}: the message written after the stop reads as {got:?}")
        })?;
    }
    let alive = remaining.iter().flatten().count();
    println!(
        "after stop: {alive}/{alive} nodes still answer: {} reads ({} over the network), \
         {found_after} provider lookups, a new put read on every node ({})",
        after.local + after.network,
        after.network,
        ms(t)
    );

    for (i, node) in remaining.iter().enumerate() {
        if let Some(node) = node {
            node.stop_swarm().await.map_err(node_err(i, "stop"))?;
        }
    }
    println!(
        "done:       {NODES} nodes, {} records, {:.2} s in all",
        2 * NODES + 1,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn to_options(nodes: &[Node]) -> Vec<Option<Node>> {
    nodes.iter().cloned().map(Some).collect()
}
