//! The typed store against raw redb and raw sled doing the same work, side by side.
//!
//! Every contender stores the same record (a `u64` id, an author of 8 bytes that is a
//! secondary key, a 100-byte text), bincode 2 encoded, with its index entry written in the
//! same atomic commit and the old entry removed when a record is replaced, and with the
//! same durability: redb `Durability::Immediate` (one fdatasync per commit) or `None`
//! (the typed store's deferred commits are held in memory until a sync writes them in one
//! durable commit, so on redb the deferred groups compare that write-behind buffer with
//! raw non-durable commits: different work, and the typed store's gain);
//! sled `flush()`, then an fdatasync of sled's data file and a sync of its directory (what
//! makes a sled commit survive a power cut; the sled backend does the same), after every
//! commit or none. The raw contenders are what a careful user
//! would write by hand on each engine: redb with a record table and an index table in one
//! transaction, sled with one tree, key prefixes and an atomic `apply_batch`.
//!
//! Groups: `put` (one record per commit), `batch_put_100` (100 records per commit), each
//! durable and deferred; `get`; `get_by_secondary` (10 records per author). Durable single
//! commits are dominated by the disk's fdatasync (about 0.1 ms or 4 ms on the reference
//! machine), so the deferred and batched groups are where the typed layer's own cost shows.
//!
//! Run with `cargo bench --bench store`. A full run (no filter) ends with an interleaved
//! comparison: typed and raw alternate round by round (reads on preloaded stores first,
//! then durable puts on empty stores, then deferred writes), so that load from other
//! processes on a shared machine falls on both alike, and the median ratio per operation
//! (over pairs of rounds, which cancels the advantage of going first) is printed with its
//! quartiles (their spread shows how far to trust the median).
//! `cargo bench --bench store -- interleaved` runs only that comparison;
//! `STORE_BENCH_ROUNDS` sets its number of rounds (default 46) and `STORE_BENCH_ONLY` keeps
//! the lines (`"<engine> <operation>"`) that contain it, e.g. `STORE_BENCH_ONLY="sled put"`.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::cell::Cell;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, criterion_group, measurement::WallTime};
use netabase_store::core::model::{decode_value, encode_value};
use netabase_store::{
    BackendConfig, Durability, RedbOptions, SledOptions, Store, netabase_definition_module,
};

/// The benchmark's definition.
#[netabase_definition_module(BenchDefinition, BenchKeys)]
pub mod bench {
    use netabase_store::NetabaseModel;

    /// The benchmark record.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Message {
        /// Primary key.
        #[primary_key]
        pub id: u64,
        /// Secondary key.
        #[secondary_key]
        pub author: String,
        /// Payload.
        pub text: String,
    }
}
use bench::{Message, MessageAuthorSecondaryKey, MessagePrimaryKey, MessageSecondaryKeys};

const PRELOAD: u64 = 10_000;
const AUTHORS: u64 = 1_000;
const BATCH: u64 = 100;

fn message(id: u64) -> Message {
    Message {
        id,
        author: format!("auth{:04}", id % AUTHORS),
        text: "t".repeat(100),
    }
}

/// bincode 2, standard configuration (what the typed store uses).
fn encode(m: &Message) -> Vec<u8> {
    encode_value(m).expect("encode")
}

fn decode(bytes: &[u8]) -> Message {
    decode_value("Message", bytes).expect("decode")
}

/// The operations every contender implements.
trait Contender {
    fn put(&self, m: &Message);
    fn put_batch(&self, ms: &[Message]);
    fn get(&self, id: u64) -> Option<Message>;
    fn by_author(&self, author: &str) -> Vec<Message>;
    /// Makes every write so far durable (reads after it come from the engine's own files,
    /// not from a buffer of deferred commits).
    fn sync(&self);
}

struct Typed(Store<bench::BenchDefinition>);

impl Contender for Typed {
    fn put(&self, m: &Message) {
        self.0.put(m).expect("put");
    }
    fn put_batch(&self, ms: &[Message]) {
        self.0.put_many(ms).expect("put_many");
    }
    fn get(&self, id: u64) -> Option<Message> {
        self.0.get(&MessagePrimaryKey(id)).expect("get")
    }
    fn by_author(&self, author: &str) -> Vec<Message> {
        self.0
            .get_by_secondary(&MessageSecondaryKeys::Author(MessageAuthorSecondaryKey(
                author.into(),
            )))
            .expect("get_by_secondary")
    }
    fn sync(&self) {
        self.0.sync().expect("sync");
    }
}

fn index_key(author: &str, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(author.len() + 9);
    k.extend_from_slice(author.as_bytes());
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

const RECORDS: redb::TableDefinition<'_, &[u8], &[u8]> = redb::TableDefinition::new("records");
const INDEX: redb::TableDefinition<'_, &[u8], &[u8]> = redb::TableDefinition::new("index");

struct RawRedb {
    db: redb::Database,
    durability: redb::Durability,
}

impl RawRedb {
    fn write(&self, ms: &[Message]) {
        let mut tx = self.db.begin_write().expect("begin");
        tx.set_durability(self.durability).expect("durability");
        {
            let mut records = tx.open_table(RECORDS).expect("records");
            let mut index = tx.open_table(INDEX).expect("index");
            for m in ms {
                let value = encode(m);
                let old = records
                    .insert(&m.id.to_be_bytes()[..], value.as_slice())
                    .expect("insert")
                    .map(|old| decode(old.value()));
                if let Some(old) = old
                    && old.author != m.author
                {
                    index
                        .remove(index_key(&old.author, m.id).as_slice())
                        .expect("remove");
                }
                index
                    .insert(index_key(&m.author, m.id).as_slice(), &[][..])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
}

impl Contender for RawRedb {
    fn put(&self, m: &Message) {
        self.write(std::slice::from_ref(m));
    }
    fn sync(&self) {
        let mut tx = self.db.begin_write().expect("begin");
        tx.set_durability(redb::Durability::Immediate)
            .expect("durability");
        tx.commit().expect("commit");
    }
    fn put_batch(&self, ms: &[Message]) {
        self.write(ms);
    }
    fn get(&self, id: u64) -> Option<Message> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read().expect("begin");
        let records = tx.open_table(RECORDS).expect("records");
        let value = records.get(&id.to_be_bytes()[..]).expect("get");
        value.map(|v| decode(v.value()))
    }
    fn by_author(&self, author: &str) -> Vec<Message> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read().expect("begin");
        let records = tx.open_table(RECORDS).expect("records");
        let index = tx.open_table(INDEX).expect("index");
        let mut prefix = author.as_bytes().to_vec();
        prefix.push(0);
        let mut end = author.as_bytes().to_vec();
        end.push(1);
        let mut out = Vec::new();
        for entry in index
            .range(prefix.as_slice()..end.as_slice())
            .expect("range")
        {
            let (k, _) = entry.expect("entry");
            let id = &k.value()[prefix.len()..];
            if let Some(v) = records.get(id).expect("get") {
                out.push(decode(v.value()));
            }
        }
        out
    }
}

struct RawSled {
    tree: sled::Tree,
    flush: bool,
    /// sled's data file and its directory, synced after a flush as the sled backend does
    /// (sled 0.34's flush alone does not survive a power cut).
    data_file: std::fs::File,
    dir: std::fs::File,
    _db: sled::Db,
}

impl RawSled {
    fn durable_flush(&self) {
        self.tree.flush().expect("flush");
        self.data_file.sync_data().expect("fdatasync");
        self.dir.sync_all().expect("sync the directory");
    }
}

fn record_key(id: u64) -> [u8; 9] {
    let mut k = [b'r'; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

impl RawSled {
    fn write(&self, ms: &[Message]) {
        let mut batch = sled::Batch::default();
        for m in ms {
            let key = record_key(m.id);
            if let Some(old) = self.tree.get(key).expect("get") {
                let old = decode(&old);
                if old.author != m.author {
                    let mut ik = vec![b'i'];
                    ik.extend_from_slice(&index_key(&old.author, m.id));
                    batch.remove(ik);
                }
            }
            batch.insert(&key[..], encode(m));
            let mut ik = vec![b'i'];
            ik.extend_from_slice(&index_key(&m.author, m.id));
            batch.insert(ik, &[][..]);
        }
        self.tree.apply_batch(batch).expect("apply");
        if self.flush {
            self.durable_flush();
        }
    }
}

impl Contender for RawSled {
    fn put(&self, m: &Message) {
        self.write(std::slice::from_ref(m));
    }
    fn sync(&self) {
        self.durable_flush();
    }
    fn put_batch(&self, ms: &[Message]) {
        self.write(ms);
    }
    fn get(&self, id: u64) -> Option<Message> {
        self.tree
            .get(record_key(id))
            .expect("get")
            .map(|v| decode(&v))
    }
    fn by_author(&self, author: &str) -> Vec<Message> {
        let mut prefix = vec![b'i'];
        prefix.extend_from_slice(author.as_bytes());
        prefix.push(0);
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(&prefix) {
            let (k, _) = entry.expect("entry");
            let id = u64::from_be_bytes(k[prefix.len()..].try_into().expect("8 bytes"));
            if let Some(v) = self.tree.get(record_key(id)).expect("get") {
                out.push(decode(&v));
            }
        }
        out
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Redb,
    Sled,
}

fn durability(durable: bool) -> Durability {
    if durable {
        Durability::Immediate
    } else {
        Durability::Deferred
    }
}

fn typed(engine: Engine, path: &Path, durable: bool) -> Box<dyn Contender> {
    let config = match engine {
        Engine::Redb => BackendConfig::Redb(RedbOptions {
            durability: durability(durable),
            ..RedbOptions::default()
        }),
        Engine::Sled => BackendConfig::Sled(SledOptions {
            durability: durability(durable),
            ..SledOptions::default()
        }),
    };
    Box::new(Typed(
        Store::open_with(path, config).expect("open the typed store"),
    ))
}

fn raw(engine: Engine, path: &Path, durable: bool) -> Box<dyn Contender> {
    match engine {
        Engine::Redb => Box::new(RawRedb {
            db: redb::Database::create(path).expect("open redb"),
            durability: if durable {
                redb::Durability::Immediate
            } else {
                redb::Durability::None
            },
        }),
        Engine::Sled => {
            let db = sled::open(path).expect("open sled");
            Box::new(RawSled {
                tree: db.open_tree("bench").expect("tree"),
                flush: durable,
                data_file: std::fs::File::open(path.join("db")).expect("sled's data file"),
                dir: std::fs::File::open(path).expect("sled's directory"),
                _db: db,
            })
        }
    }
}

type Open = fn(Engine, &Path, bool) -> Box<dyn Contender>;

const CONTENDERS: [(&str, Engine, Open); 4] = [
    ("typed-redb", Engine::Redb, typed),
    ("raw-redb", Engine::Redb, raw),
    ("typed-sled", Engine::Sled, typed),
    ("raw-sled", Engine::Sled, raw),
];

/// A fresh contender in its own directory.
fn fresh(open: Open, engine: Engine, durable: bool) -> (tempfile::TempDir, Box<dyn Contender>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let contender = open(engine, &dir.path().join("db"), durable);
    (dir, contender)
}

fn preloaded(open: Open, engine: Engine) -> (tempfile::TempDir, Box<dyn Contender>) {
    let (dir, c) = fresh(open, engine, false);
    let all: Vec<Message> = (0..PRELOAD).map(message).collect();
    for chunk in all.chunks(1_000) {
        c.put_batch(chunk);
    }
    // The reads then measure the engines' own read paths.
    c.sync();
    (dir, c)
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>, slow: bool) {
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(if slow { 4 } else { 3 }))
        .sample_size(if slow { 10 } else { 50 });
}

fn puts(c: &mut Criterion) {
    for (name, durable) in [("put/durable", true), ("put/deferred", false)] {
        let mut group = c.benchmark_group(name);
        configure(&mut group, durable);
        for (id, engine, open) in CONTENDERS {
            let (_dir, contender) = fresh(open, engine, durable);
            let next = Cell::new(0u64);
            group.bench_function(id, |b| {
                b.iter(|| {
                    let id = next.get();
                    next.set(id + 1);
                    contender.put(&message(id));
                })
            });
        }
        group.finish();
    }
}

fn batches(c: &mut Criterion) {
    for (name, durable) in [
        ("batch_put_100/durable", true),
        ("batch_put_100/deferred", false),
    ] {
        let mut group = c.benchmark_group(name);
        configure(&mut group, durable);
        for (id, engine, open) in CONTENDERS {
            let (_dir, contender) = fresh(open, engine, durable);
            let next = Cell::new(0u64);
            group.bench_function(id, |b| {
                b.iter(|| {
                    let start = next.get();
                    next.set(start + BATCH);
                    let batch: Vec<Message> = (start..start + BATCH).map(message).collect();
                    contender.put_batch(&batch);
                })
            });
        }
        group.finish();
    }
}

fn reads(c: &mut Criterion) {
    let stores: Vec<_> = CONTENDERS
        .iter()
        .map(|&(id, engine, open)| (id, preloaded(open, engine)))
        .collect();
    let mut group = c.benchmark_group("get");
    configure(&mut group, false);
    for (id, (_, contender)) in &stores {
        let next = Cell::new(0u64);
        group.bench_function(*id, |b| {
            b.iter(|| {
                let id = next.get().wrapping_mul(7919) % PRELOAD;
                next.set(next.get() + 1);
                black_box(contender.get(id)).expect("present");
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("get_by_secondary");
    configure(&mut group, false);
    for (id, (_, contender)) in &stores {
        let next = Cell::new(0u64);
        group.bench_function(*id, |b| {
            b.iter(|| {
                let author = format!("auth{:04}", next.get() % AUTHORS);
                next.set(next.get() + 1);
                assert_eq!(black_box(contender.by_author(&author)).len(), 10);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, puts, batches, reads);

/// The median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Typed against raw with the two interleaved: rounds alternate between them (and which
/// goes first), so that load from other processes falls on both alike; prints the median
/// time per operation of each and the median of the per-round ratios. Rounds are short (a
/// few milliseconds) and many, so that the two halves of a round see the same load.
// Printing the results is what a benchmark is for.
#[allow(clippy::print_stdout)]
fn interleaved() {
    let rounds: u64 = std::env::var("STORE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r >= 2)
        .unwrap_or(46);
    let only = std::env::var("STORE_BENCH_ONLY").unwrap_or_default();
    type Op = fn(&dyn Contender, u64, u64);
    // Name, operations per round, the operation, and whether it runs on durable stores.
    // Reads come first, while the deferred stores hold the preloaded records only (10 per
    // author); the writes after them add records.
    let ops: [(&str, u64, Op, bool); 5] = [
        (
            "get",
            6_000,
            |c, round, i| {
                let id = (round * 7 + i).wrapping_mul(7919) % PRELOAD;
                black_box(c.get(id)).expect("present");
            },
            false,
        ),
        (
            "get_by_secondary",
            600,
            |c, round, i| {
                let author = format!("auth{:04}", (round * 7 + i) % AUTHORS);
                black_box(c.by_author(&author));
            },
            false,
        ),
        (
            "put/durable",
            4,
            |c, round, i| c.put(&message(round * 1_000_000 + i)),
            true,
        ),
        (
            "put/deferred",
            256,
            |c, round, i| c.put(&message(PRELOAD + round * 1_000_000 + i)),
            false,
        ),
        (
            "batch_put_100/deferred",
            8,
            |c, round, i| {
                let start = PRELOAD + round * 1_000_000 + i * BATCH;
                let batch: Vec<Message> = (start..start + BATCH).map(message).collect();
                c.put_batch(&batch);
            },
            false,
        ),
    ];
    println!(
        "\ninterleaved typed/raw ({rounds} alternating rounds; median over pairs of rounds of \
         the geometric mean of their ratios, quartiles in parentheses):"
    );
    for (engine, name) in [(Engine::Redb, "redb"), (Engine::Sled, "sled")] {
        let wanted = |op_name: &str| format!("{name} {op_name}").contains(&only);
        // Durable stores start empty, like the criterion group's; deferred ones are preloaded.
        let durable = ops
            .iter()
            .any(|&(op_name, _, _, durable)| durable && wanted(op_name))
            .then(|| (fresh(typed, engine, true), fresh(raw, engine, true)));
        let deferred = ops
            .iter()
            .any(|&(op_name, _, _, durable)| !durable && wanted(op_name))
            .then(|| (preloaded(typed, engine), preloaded(raw, engine)));
        for (op_name, per_round, op, on_durable) in ops {
            let stores = if on_durable { &durable } else { &deferred };
            let Some(((_, typed_store), (_, raw_store))) =
                stores.as_ref().filter(|_| wanted(op_name))
            else {
                continue;
            };
            let (mut t, mut r, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..rounds {
                let time = |c: &dyn Contender| {
                    let start = std::time::Instant::now();
                    for i in 0..per_round {
                        op(c, round, i);
                    }
                    start.elapsed().as_nanos() as f64 / per_round as f64
                };
                let (typed_ns, raw_ns) = if round % 2 == 0 {
                    let a = time(&**typed_store);
                    (a, time(&**raw_store))
                } else {
                    let b = time(&**raw_store);
                    (time(&**typed_store), b)
                };
                t.push(typed_ns);
                r.push(raw_ns);
                ratios.push(typed_ns / raw_ns);
            }
            // The contender that runs first in a round runs right after its own turn in the
            // previous round (typed-raw, raw-typed, ...) and finds its caches warm, the
            // second one does not: the ratios of even and odd rounds lean opposite ways. The
            // geometric mean of each pair of rounds cancels that.
            let mut pairs: Vec<f64> = ratios
                .chunks_exact(2)
                .map(|pair| (pair[0] * pair[1]).sqrt())
                .collect();
            let ratio = median(&mut pairs);
            // `median` sorted the pairs: their quartiles show how much the rounds disagree.
            let quartile = |q: usize| pairs[(pairs.len() - 1) * q / 4];
            println!(
                "  {name} {op_name:<24} typed {:>10.0} ns  raw {:>10.0} ns  typed/raw {ratio:.3} \
                 (quartiles {:.3}..{:.3})",
                median(&mut t),
                median(&mut r),
                quartile(1),
                quartile(3),
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--bench") && args.iter().any(|a| a == "interleaved") {
        interleaved();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Only in a full run (no filter, not a `--list` or `--test` pass).
    if !args.is_empty() && args.iter().all(|a| a == "--bench") {
        interleaved();
    }
}
