//! A node's own records are limited by its disk only: put and get throughput of a node that
//! holds 1,000,000 records of its own against the same node with 1,000, side by side in
//! interleaved rounds, while its background work runs (republication and replication walk
//! the whole store every second), with the disk's fdatasync latency (the floor of a
//! durable put) measured beside them.
//!
//! Both nodes are real `Netabase` nodes on tokio with the redb backend, every put durable,
//! without peers (so a put is the typed write, the DHT record, the outbox and one sync, and
//! a get is answered from the node's own store). The records are loaded signed by the
//! node's own identity, in batches of deferred transactions, before the nodes start.
//!
//! Run with `cargo bench --bench own_records`. `OWN_BENCH_RECORDS` (default 1000000) sets
//! the large node's records, `OWN_BENCH_OPS` (2000) the operations per round and kind,
//! `OWN_BENCH_ROUNDS` (5) the rounds, `OWN_BENCH_CONCURRENCY` (16) the operations in flight.

// A benchmark binary: its report goes to standard output.
#![allow(missing_docs, clippy::print_stdout)]

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use netabase::core::model::Envelope;
use netabase::core::{Record, RecordStore};
use netabase::store::{Durability, Store};
use netabase::swarm::{core_keypair, load_or_create_identity};
use netabase::{Netabase, NetabaseConfig, netabase_definition_module};

#[netabase_definition_module(OwnDefinition, OwnKeys)]
pub mod model {
    use netabase::NetabaseModel;

    /// The benchmark record: an id and a 100-byte payload.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Item {
        #[primary_key]
        pub id: u64,
        pub payload: Vec<u8>,
    }
}
use model::{Item, ItemPrimaryKey, OwnDefinition};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wall_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn item(id: u64) -> Item {
    Item {
        id,
        payload: vec![(id % 251) as u8; 100],
    }
}

/// Writes `count` records of the node whose data directory is `dir`, signed by its identity,
/// as its own puts would have (typed row with its version, DHT record, no outbox entry).
fn load(dir: &Path, count: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let identity = load_or_create_identity(dir).expect("identity");
    let keypair = core_keypair(&identity).expect("an Ed25519 identity");
    let local = keypair.peer_id();
    let store = Store::<OwnDefinition>::open(dir.join("netabase.redb")).expect("store");
    let mut dht = store
        .record_store(local, Default::default())
        .with_durability(Durability::Deferred);
    let start = wall_micros();
    let expires = netabase::core::Instant::from_micros(start + 48 * 3600 * 1_000_000);
    let started = Instant::now();
    for id in 0..count {
        let value = OwnDefinition::Item(item(id));
        let timestamp = start + id;
        let (key, bytes) = Envelope::seal(&value, timestamp, &keypair).unwrap();
        let version = netabase::core::version::version_of(&bytes).unwrap();
        let pk = netabase::core::model::NetabaseDefinition::primary_key_bytes(&value).unwrap();
        store
            .write_with(Durability::Deferred, |tx| {
                tx.put_definition(&value)?;
                tx.set_version(0, &pk, &version)
            })
            .unwrap();
        dht.put_resolved(Record {
            key,
            value: bytes,
            publisher: Some(local),
            expires: Some(expires),
        })
        .unwrap();
        if id % 10_000 == 9_999 {
            dht.sync().unwrap();
        }
    }
    dht.set_clock_ceiling(start + count + 1).unwrap();
    dht.sync().unwrap();
    // The layout marker, so that the node does not walk the store again when it starts.
    store.migrate_record_store(local, Some(&keypair)).unwrap();
    eprintln!(
        "loaded {count} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

async fn start(dir: &Path) -> Netabase<OwnDefinition> {
    let mut config = NetabaseConfig::default()
        .with_data_dir(dir)
        .with_listen_addresses(["/ip4/127.0.0.1/tcp/0".parse().unwrap()])
        .with_mdns(false);
    // Background work on all the time: both walks start every second (a walk of the large
    // store takes longer, so it is always running there).
    config.kad.publication_interval = Some(Duration::from_secs(1));
    config.kad.replication_interval = Some(Duration::from_secs(1));
    let node = Netabase::new_with_config(config).expect("node");
    node.start_swarm().await.expect("start");
    node
}

/// Operations per second of `ops` calls of `op` with `concurrency` in flight.
async fn rate<F, Fut>(ops: u64, concurrency: usize, op: F) -> f64
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let mut next = 0;
    let mut running = FuturesUnordered::new();
    while next < ops || !running.is_empty() {
        while next < ops && running.len() < concurrency {
            running.push(op(next));
            next += 1;
        }
        running.next().await;
    }
    ops as f64 / started.elapsed().as_secs_f64()
}

/// Median latency of a 4 KiB write and fdatasync in `dir`.
fn fsync_floor(dir: &Path) -> Duration {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("fsync-probe")).unwrap();
    let mut samples: Vec<Duration> = (0..200)
        .map(|_| {
            let started = Instant::now();
            file.write_all(&[7u8; 4096]).unwrap();
            file.sync_data().unwrap();
            started.elapsed()
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let large = setting("OWN_BENCH_RECORDS", 1_000_000);
    let ops = setting("OWN_BENCH_OPS", 2_000);
    let rounds = setting("OWN_BENCH_ROUNDS", 5);
    let concurrency = setting("OWN_BENCH_CONCURRENCY", 16) as usize;
    let root = tempfile::tempdir().unwrap();
    let sizes = [1_000, large];
    for (i, &n) in sizes.iter().enumerate() {
        load(&root.path().join(format!("node{i}")), n);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut nodes = Vec::new();
        for i in 0..sizes.len() {
            nodes.push(start(&root.path().join(format!("node{i}"))).await);
        }
        let mut puts = vec![Vec::new(); sizes.len()];
        let mut gets = vec![Vec::new(); sizes.len()];
        let mut floors = Vec::new();
        for round in 0..rounds {
            floors.push(fsync_floor(root.path()).as_secs_f64() * 1e3);
            // Alternate which node goes first, so that neither always follows the other.
            let order: Vec<usize> = if round % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
            for &i in &order {
                let node = &nodes[i];
                let base = sizes[i] + round * ops;
                let put = rate(ops, concurrency, |k| async move {
                    node.put_record(item(base + k)).await.expect("put");
                })
                .await;
                let n = sizes[i];
                let get = rate(ops, concurrency, |k| async move {
                    // Spread over the whole store.
                    let id = (k.wrapping_mul(2_654_435_761)) % n;
                    let found = node.get_record(&ItemPrimaryKey(id)).await.expect("get");
                    assert!(found.is_some(), "record {id} is there");
                })
                .await;
                puts[i].push(put);
                gets[i].push(get);
            }
            eprintln!(
                "round {round}: put {:.0} / {:.0} ops/s, get {:.0} / {:.0} ops/s",
                puts[0][round as usize],
                puts[1][round as usize],
                gets[0][round as usize],
                gets[1][round as usize]
            );
        }
        let lag = nodes[1].stats().await.map(|s| s.kad.walks_overrun).unwrap_or(0);
        println!(
            "own records: {} vs {large}, {rounds} interleaved rounds of {ops} puts and {ops} gets, {concurrency} in flight",
            sizes[0]
        );
        for (i, &n) in sizes.iter().enumerate() {
            println!(
                "  {n:>9} records: put {:>7.0} ops/s, get {:>7.0} ops/s (medians)",
                median(puts[i].clone()),
                median(gets[i].clone())
            );
        }
        println!(
            "  large/small: put ×{:.3}, get ×{:.3}",
            median(puts[1].clone()) / median(puts[0].clone()),
            median(gets[1].clone()) / median(gets[0].clone())
        );
        println!(
            "  fdatasync of 4 KiB (the floor of a durable put): median {:.3} ms",
            median(floors)
        );
        println!("  republication walks still going at their next interval (large node): {lag}");
        for node in nodes {
            node.stop_swarm().await.unwrap();
        }
    });
}
