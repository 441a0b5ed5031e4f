//! A replicated key-value state machine on three Netabase nodes, as a walkthrough: the
//! nodes form a consensus cluster, write through the log, lose their leader (its node
//! stops), elect another and keep writing; the old leader comes back, rejoins and catches
//! up. Every step prints what happened; the example exits 0 when every check held, 1
//! otherwise.
//!
//! ```sh
//! cargo run --release --example replicated_state_machine
//! ```
//!
//! The nodes run in one process on 127.0.0.1 with mDNS off, each with its own redb
//! database under a temporary directory (removed at the end). The log and the state live
//! in each node's database, so the restarted node keeps its votes and replays its log.

// An example talks to its user on standard output.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use netabase::{
    ClusterId, EventSubscriber, Netabase, NetabaseConfig, NetabaseEvent, PeerId, ReadLevel,
    netabase_definition_module,
};

/// The records of the demo.
// The macro generates public key types without documentation of their own.
#[allow(missing_docs)]
#[netabase_definition_module(KvDefinition, KvKeys)]
pub mod model {
    use netabase::NetabaseModel;

    /// One key of the machine.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[netabase(consensus)]
    pub struct Pair {
        /// The primary key.
        #[primary_key]
        pub key: String,
        /// The value.
        pub value: String,
    }
}
use model::{KvDefinition, Pair, PairPrimaryKey};

type Node = Netabase<KvDefinition>;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("replicated_state_machine: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let root = match tempfile::Builder::new().prefix("netabase-rsm-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("replicated_state_machine: cannot create a data directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(root.path())) {
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

fn pair(key: &str, value: &str) -> Pair {
    Pair {
        key: key.to_string(),
        value: value.to_string(),
    }
}

fn pk(key: &str) -> PairPrimaryKey {
    PairPrimaryKey(key.to_string())
}

fn short(peer: &PeerId) -> String {
    let s = peer.to_string();
    format!("…{}", &s[s.len().saturating_sub(6)..])
}

fn err(what: &'static str) -> impl Fn(netabase::NetabaseError) -> String {
    move |e| format!("{what}: {e}")
}

/// Waits (at most 10 s) for a node's event saying some leader leads.
async fn next_leader(events: &mut EventSubscriber) -> Result<PeerId, String> {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(NetabaseEvent::ConsensusLeader {
                    leader: Some(leader),
                    ..
                }) => return Ok(leader),
                Ok(_) => {}
                Err(e) => return Err(format!("events: {e}")),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .map_err(|_| "no leader elected within 10 s".to_string())?
}

/// Lets `node` dial every other node of `nodes`.
async fn introduce(node: &Node, nodes: &[Node]) -> Result<(), String> {
    for other in nodes {
        if other.local_peer_id() != node.local_peer_id() && other.is_running() {
            let addrs = other.listen_addresses().await.map_err(err("addresses"))?;
            node.add_address(other.local_peer_id(), addrs[0].clone())
                .await
                .map_err(err("add address"))?;
        }
    }
    Ok(())
}

/// Reads `keys` on `node` at `level` and checks them against `expected`.
async fn expect(node: &Node, name: &str, expected: &[(&str, Option<&str>)]) -> Result<(), String> {
    let mut shown = Vec::new();
    for (key, want) in expected {
        let got = node
            .get_record_consensus(&pk(key), ReadLevel::Linearizable)
            .await
            .map_err(err("read"))?
            .map(|(p, _)| p.value);
        if got.as_deref() != *want {
            return Err(format!("{name} reads {key} = {got:?}, expected {want:?}"));
        }
        shown.push(format!("{key}={}", got.as_deref().unwrap_or("∅")));
    }
    println!("read:       {name} (linearizable): {}", shown.join(" "));
    Ok(())
}

async fn run(root: &std::path::Path) -> Result<(), String> {
    let started = Instant::now();
    let configs: Vec<NetabaseConfig> = (0..3)
        .map(|i| {
            NetabaseConfig::default()
                .with_data_dir(root.join(format!("node-{i}")))
                .with_listen_addresses(["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")])
                .with_mdns(false)
        })
        .collect();
    let mut nodes = Vec::new();
    for config in &configs {
        let node = Node::new_with_config(config.clone()).map_err(err("node"))?;
        node.start_swarm().await.map_err(err("start"))?;
        nodes.push(node);
    }
    for node in &nodes {
        introduce(node, &nodes).await?;
    }
    let members: Vec<PeerId> = nodes.iter().map(Node::local_peer_id).collect();
    println!(
        "nodes:      {} on 127.0.0.1 (mDNS off)",
        members.iter().map(short).collect::<Vec<_>>().join(" ")
    );

    // 1. A cluster of the three.
    let mut events: Vec<EventSubscriber> =
        nodes.iter().map(Node::subscribe_to_broadcasts).collect();
    let cluster: ClusterId = nodes[0]
        .create_cluster(&members)
        .await
        .map_err(err("create cluster"))?;
    for node in &nodes[1..] {
        node.join_cluster(cluster, &members)
            .await
            .map_err(err("join cluster"))?;
    }
    let leader = next_leader(&mut events[0]).await?;
    println!("cluster:    {cluster}, leader {}", short(&leader));

    // 2. Writes through every node land in one log.
    for (i, (k, v)) in [("a", "1"), ("b", "2"), ("c", "3")].into_iter().enumerate() {
        let w = nodes[i]
            .put_record_consensus(pair(k, v))
            .await
            .map_err(err("put"))?;
        println!(
            "put:        {k}={v} through node {i}: slot {} index {}",
            w.position.slot, w.position.index
        );
    }

    // 3. The leader's node stops. The others elect a new leader and keep writing.
    let old = members
        .iter()
        .position(|m| *m == leader)
        .ok_or("the leader is not a member")?;
    let lost = Instant::now();
    nodes[old].stop_swarm().await.map_err(err("stop"))?;
    println!("stopped:    node {old} (the leader)");
    let survivor = (old + 1) % 3;
    let new_leader = loop {
        let l = next_leader(&mut events[survivor]).await?;
        if l != leader {
            break l;
        }
    };
    println!(
        "elected:    {} after {:.0} ms",
        short(&new_leader),
        lost.elapsed().as_secs_f64() * 1000.0
    );
    nodes[survivor]
        .put_record_consensus(pair("d", "4"))
        .await
        .map_err(err("put after failover"))?;
    let cas = nodes[survivor]
        .compare_and_set_consensus(&pk("a"), Some(pair("a", "1")), Some(pair("a", "10")))
        .await
        .map_err(err("compare-and-set"))?;
    if !cas.swapped {
        return Err("a held another value than 1".into());
    }
    nodes[(old + 2) % 3]
        .remove_record_consensus(&pk("b"))
        .await
        .map_err(err("remove"))?;
    println!("written:    d=4, a: 1 -> 10 (compare-and-set), b removed, with node {old} down");
    let state = [
        ("a", Some("10")),
        ("b", None),
        ("c", Some("3")),
        ("d", Some("4")),
    ];
    expect(&nodes[survivor], &format!("node {survivor}"), &state).await?;

    // 4. The old leader comes back on its database, rejoins and catches up.
    nodes[old].start_swarm().await.map_err(err("restart"))?;
    introduce(&nodes[old], &nodes).await?;
    nodes[old]
        .join_cluster(cluster, &members)
        .await
        .map_err(err("rejoin"))?;
    println!("restarted:  node {old} rejoined {cluster}");
    expect(&nodes[old], &format!("node {old}"), &state).await?;
    let status = nodes[old]
        .cluster_status()
        .await
        .map_err(err("status"))?
        .ok_or("no cluster")?;
    println!(
        "status:     node {old} follows {}, applied through slot {}",
        status.leader.as_ref().map(short).unwrap_or_default(),
        status.applied
    );
    for node in &nodes {
        node.stop_swarm().await.map_err(err("stop"))?;
    }
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
