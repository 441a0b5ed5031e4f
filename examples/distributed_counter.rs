//! A counter shared by three Netabase nodes through consensus: every node increments it
//! with compare-and-set (read the value, set value + 1 if nobody changed it meanwhile,
//! retry otherwise), concurrently. At the end every node reads the total, which must equal
//! the number of acknowledged increments: none lost, none counted twice. Prints a short
//! report and exits 0 when every check held, 1 otherwise.
//!
//! ```sh
//! cargo run --release --example distributed_counter
//! ```
//!
//! The nodes run in one process on 127.0.0.1 with mDNS off, each with its own redb
//! database under a temporary directory (removed at the end).

// An example talks to its user on standard output.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::Instant;

use netabase::{
    ConsensusError, Netabase, NetabaseConfig, NetabaseError, NetabaseEvent, ReadLevel, Role,
    netabase_definition_module,
};

/// The records of the demo.
// The macro generates public key types without documentation of their own.
#[allow(missing_docs)]
#[netabase_definition_module(CounterDefinition, CounterKeys)]
pub mod model {
    use netabase::NetabaseModel;

    /// A named counter.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[netabase(consensus)]
    pub struct Counter {
        /// The primary key.
        #[primary_key]
        pub name: String,
        /// The count.
        pub value: u64,
    }
}
use model::{Counter, CounterDefinition, CounterPrimaryKey};

type Node = Netabase<CounterDefinition>;

/// Nodes in the cluster.
const NODES: usize = 3;
/// Increments each node makes, split among its tasks.
const INCREMENTS: u64 = 40;
/// Concurrent incrementing tasks per node.
const TASKS: u64 = 2;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("distributed_counter: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let root = match tempfile::Builder::new()
        .prefix("netabase-counter-")
        .tempdir()
    {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("distributed_counter: cannot create a data directory: {e}");
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

fn key() -> CounterPrimaryKey {
    CounterPrimaryKey("visits".to_string())
}

fn counter(value: u64) -> Counter {
    Counter {
        name: "visits".to_string(),
        value,
    }
}

/// Increments the counter once through compare-and-set; returns how many attempts it
/// took.
async fn increment(node: &Node) -> Result<u32, String> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let current = node
            .get_record_consensus(&key(), ReadLevel::Linearizable)
            .await
            .map_err(|e| format!("read: {e}"))?
            .map(|(c, _)| c);
        let next = counter(current.as_ref().map_or(0, |c| c.value) + 1);
        let done = node
            .compare_and_set_consensus(&key(), current, Some(next))
            .await
            .map_err(|e| format!("compare-and-set: {e}"))?;
        if done.swapped {
            return Ok(attempts);
        }
    }
}

async fn run(root: &std::path::Path) -> Result<(), String> {
    let started = Instant::now();
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let config = NetabaseConfig::default()
            .with_data_dir(root.join(format!("node-{i}")))
            .with_listen_addresses(["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")])
            .with_mdns(false);
        let node = Node::new_with_config(config).map_err(|e| format!("node {i}: {e}"))?;
        node.start_swarm()
            .await
            .map_err(|e| format!("node {i}: start: {e}"))?;
        nodes.push(node);
    }
    // Every node learns every other's address.
    for a in &nodes {
        for b in &nodes {
            if a.local_peer_id() != b.local_peer_id() {
                let addrs = b.listen_addresses().await.map_err(|e| e.to_string())?;
                a.add_address(b.local_peer_id(), addrs[0].clone())
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    println!("{NODES} nodes in one process on 127.0.0.1 (mDNS off)");
    let members: Vec<_> = nodes.iter().map(Node::local_peer_id).collect();
    let mut events = nodes[0].subscribe_to_broadcasts();
    let cluster = nodes[0]
        .create_cluster(&members)
        .await
        .map_err(|e| e.to_string())?;
    for n in &nodes[1..] {
        n.join_cluster(cluster, &members)
            .await
            .map_err(|e| e.to_string())?;
    }
    let leader = loop {
        match events.recv().await {
            Ok(NetabaseEvent::ConsensusLeader {
                leader: Some(leader),
                ..
            }) => break leader,
            Ok(_) => continue,
            Err(e) => return Err(format!("events: {e}")),
        }
    };
    println!(
        "cluster:    {cluster}, leader …{}",
        tail(&leader.to_string())
    );

    // The counter is a consensus model: the DHT's write path refuses it.
    match nodes[0].put_record(counter(7)).await {
        Err(NetabaseError::Consensus(ConsensusError::ConsensusModel(model))) => {
            println!("put_record:  refused, {model} is a consensus model");
        }
        other => return Err(format!("put_record of a consensus model gave {other:?}")),
    }

    // Every node increments concurrently, TASKS tasks each.
    let began = Instant::now();
    let mut tasks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for _ in 0..TASKS {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                let mut acknowledged = 0u64;
                let mut attempts = 0u64;
                for _ in 0..INCREMENTS / TASKS {
                    attempts += u64::from(increment(&node).await?);
                    acknowledged += 1;
                }
                Ok::<_, String>((i, acknowledged, attempts))
            }));
        }
    }
    let mut acknowledged = [0u64; NODES];
    let mut attempts = 0;
    for t in tasks {
        let (i, acked, tries) = t.await.map_err(|e| e.to_string())??;
        acknowledged[i] += acked;
        attempts += tries;
    }
    let total: u64 = acknowledged.iter().sum();
    println!(
        "increments: {total} acknowledged ({acknowledged:?} per node) in {:.0} ms, {attempts} compare-and-set attempts",
        began.elapsed().as_secs_f64() * 1000.0
    );

    // Every node reads the same total, and it is the number of acknowledged increments.
    for (i, node) in nodes.iter().enumerate() {
        let (value, position) = node
            .get_record_consensus(&key(), ReadLevel::Linearizable)
            .await
            .map_err(|e| format!("node {i}: read: {e}"))?
            .ok_or_else(|| format!("node {i}: no counter"))?;
        println!(
            "node {i}:     total {}, written at slot {} (linearizable read)",
            value.value, position.slot
        );
        if value.value != total {
            return Err(format!(
                "node {i} reads {} but {total} increments were acknowledged",
                value.value
            ));
        }
    }
    let mut leaders = 0;
    for node in &nodes {
        let status = node
            .cluster_status()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no cluster")?;
        leaders += usize::from(status.role == Role::Leader);
    }
    if leaders != 1 {
        return Err(format!("{leaders} nodes think they lead"));
    }
    for node in &nodes {
        node.stop_swarm().await.map_err(|e| e.to_string())?;
    }
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn tail(s: &str) -> &str {
    &s[s.len().saturating_sub(6)..]
}
