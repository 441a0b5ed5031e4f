//! The redb backend's buffer of deferred commits, checked against a reference model:
//! arbitrary sequences of deferred and durable write transactions (committed or dropped),
//! syncs, reopenings and read transactions held across later commits, on buffers small
//! enough to spill into the file, with every read of every table compared after every step.

use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};

use proptest::prelude::*;

use netabase_store::backend::{
    Backend, DEFAULT_BUFFER_LIMIT, FULL_RANGE, KeyRange, ReadTransaction, WriteTransaction,
};
use netabase_store::{Durability, RedbBackend, RedbOptions};

const TABLES: [&str; 3] = ["a", "b", "a/b"];

type Table = BTreeMap<Vec<u8>, Vec<u8>>;
type Model = BTreeMap<&'static str, Table>;

#[derive(Debug, Clone)]
enum Step {
    Put(usize, Vec<u8>, Vec<u8>),
    Replace(usize, Vec<u8>, Vec<u8>),
    Take(usize, Vec<u8>),
    Delete(usize, Vec<u8>),
    Clear(usize),
    Apply(usize, Vec<(Vec<u8>, Option<Vec<u8>>)>),
    ReplaceAll(usize, Vec<(Vec<u8>, Vec<u8>)>),
    /// Reads inside the transaction: a get, a range scan and the length.
    Read(usize, Vec<u8>, Bound<Vec<u8>>, Bound<Vec<u8>>),
}

#[derive(Debug, Clone)]
struct Write {
    deferred: bool,
    steps: Vec<Step>,
    commit: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Write(Write),
    Sync,
    /// Drop the backend and open the file again.
    Reopen,
    /// A read transaction opened before these writes must still see the state before them.
    HeldRead(Vec<Write>),
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![Just(0u8), Just(1), Just(2), Just(0xFF)], 0..3)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..40)
}

fn bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
    prop_oneof![
        1 => Just(Bound::Unbounded),
        2 => key().prop_map(Bound::Included),
        2 => key().prop_map(Bound::Excluded),
    ]
}

fn table() -> impl Strategy<Value = usize> {
    0..TABLES.len()
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (table(), key(), value()).prop_map(|(t, k, v)| Step::Put(t, k, v)),
        2 => (table(), key(), value()).prop_map(|(t, k, v)| Step::Replace(t, k, v)),
        2 => (table(), key()).prop_map(|(t, k)| Step::Take(t, k)),
        2 => (table(), key()).prop_map(|(t, k)| Step::Delete(t, k)),
        1 => table().prop_map(Step::Clear),
        1 => (table(), prop::collection::vec((key(), prop::option::of(value())), 0..4))
            .prop_map(|(t, c)| Step::Apply(t, c)),
        1 => (table(), prop::collection::vec((key(), value()), 0..4))
            .prop_map(|(t, e)| Step::ReplaceAll(t, e)),
        3 => (table(), key(), bound(), bound()).prop_map(|(t, k, lo, hi)| Step::Read(t, k, lo, hi)),
    ]
}

fn write() -> impl Strategy<Value = Write> {
    (
        prop::bool::weighted(0.8),
        prop::collection::vec(step(), 0..6),
        prop::bool::weighted(0.85),
    )
        .prop_map(|(deferred, steps, commit)| Write {
            deferred,
            steps,
            commit,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => write().prop_map(Op::Write),
        2 => Just(Op::Sync),
        1 => Just(Op::Reopen),
        1 => prop::collection::vec(write(), 1..4).prop_map(Op::HeldRead),
    ]
}

fn as_range(lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> KeyRange<'static> {
    // Leaked: a few bytes per test step, for a `'static` range.
    let leak = |b: &Bound<Vec<u8>>| match b {
        Bound::Included(k) => Bound::Included(&*Box::leak(k.clone().into_boxed_slice())),
        Bound::Excluded(k) => Bound::Excluded(&*Box::leak(k.clone().into_boxed_slice())),
        Bound::Unbounded => Bound::Unbounded,
    };
    (leak(lo), leak(hi))
}

fn empty_range(range: &KeyRange<'_>) -> bool {
    match (range.0, range.1) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b))
        | (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

fn model_range(table: &Table, range: KeyRange<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    if empty_range(&range) {
        return Vec::new();
    }
    table
        .range::<[u8], _>(range)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn scan_all<T: ReadTransaction + ?Sized>(
    tx: &T,
    table: &str,
    range: KeyRange<'_>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    tx.scan(table, range, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        Ok(ControlFlow::Continue(()))
    })
    .expect("scan");
    out
}

/// Every read of every table of `tx` against `model`.
fn check_reads<T: ReadTransaction + ?Sized>(tx: &T, model: &Model, context: &str) {
    for name in TABLES {
        let expected = model.get(name).cloned().unwrap_or_default();
        let all: Vec<_> = expected
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(
            scan_all(tx, name, FULL_RANGE),
            all,
            "{context}: scan of {name}"
        );
        assert_eq!(
            tx.len(name).expect("len"),
            all.len() as u64,
            "{context}: len of {name}"
        );
        // A scan stopped after the first entry.
        let mut first = None;
        tx.scan(name, FULL_RANGE, &mut |k, v| {
            first = Some((k.to_vec(), v.to_vec()));
            Ok(ControlFlow::Break(()))
        })
        .expect("scan");
        assert_eq!(first, all.first().cloned(), "{context}: first of {name}");
        let probes: Vec<Vec<u8>> = [&[][..], &[0], &[1], &[0, 0xFF], &[0xFF, 2], &[2, 2]]
            .iter()
            .map(|k| k.to_vec())
            .chain(expected.keys().cloned())
            .collect();
        for probe in &probes {
            assert_eq!(
                tx.get(name, probe).expect("get"),
                expected.get(probe).cloned(),
                "{context}: get {probe:02x?} of {name}"
            );
        }
        let keys: Vec<&[u8]> = probes.iter().map(Vec::as_slice).collect();
        let mut many = Vec::new();
        tx.get_many_with(name, &keys, &mut |i, v| {
            many.push((i, v.to_vec()));
            Ok(())
        })
        .expect("get_many_with");
        let expected_many: Vec<(usize, Vec<u8>)> = probes
            .iter()
            .enumerate()
            .filter_map(|(i, k)| expected.get(k).map(|v| (i, v.clone())))
            .collect();
        assert_eq!(many, expected_many, "{context}: get_many of {name}");
        for (lo, hi) in [
            (Bound::Included(&[0u8][..]), Bound::Excluded(&[1u8][..])),
            (Bound::Excluded(&[0u8][..]), Bound::Included(&[0xFFu8][..])),
            (Bound::Unbounded, Bound::Included(&[0u8, 0xFF][..])),
        ] {
            assert_eq!(
                scan_all(tx, name, (lo, hi)),
                model_range(&expected, (lo, hi)),
                "{context}: range {lo:?}..{hi:?} of {name}"
            );
        }
    }
}

/// Runs `write` on `backend` and on a copy of `model`; returns the copy if it committed.
fn run_write(backend: &RedbBackend, model: &Model, write: &Write, context: &str) -> Model {
    let durability = if write.deferred {
        Durability::Deferred
    } else {
        Durability::Immediate
    };
    let mut tx = backend.begin_write_with(durability).expect("begin write");
    let mut next = model.clone();
    for step in &write.steps {
        match step {
            Step::Put(t, k, v) => {
                tx.put(TABLES[*t], k, v).expect("put");
                next.entry(TABLES[*t])
                    .or_default()
                    .insert(k.clone(), v.clone());
            }
            Step::Replace(t, k, v) => {
                let old = tx.replace(TABLES[*t], k, v).expect("replace");
                let expected = next
                    .entry(TABLES[*t])
                    .or_default()
                    .insert(k.clone(), v.clone());
                assert_eq!(old, expected, "{context}: replaced value");
            }
            Step::Take(t, k) => {
                let old = tx.take(TABLES[*t], k).expect("take");
                let expected = next.entry(TABLES[*t]).or_default().remove(k);
                assert_eq!(old, expected, "{context}: taken value");
            }
            Step::Delete(t, k) => {
                tx.delete(TABLES[*t], k).expect("delete");
                next.entry(TABLES[*t]).or_default().remove(k);
            }
            Step::Clear(t) => {
                tx.clear(TABLES[*t]).expect("clear");
                next.remove(TABLES[*t]);
            }
            Step::Apply(t, changes) => {
                let borrowed: Vec<(&[u8], Option<&[u8]>)> = changes
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_deref()))
                    .collect();
                tx.apply(TABLES[*t], &borrowed).expect("apply");
                let table = next.entry(TABLES[*t]).or_default();
                for (k, v) in changes {
                    match v {
                        Some(v) => table.insert(k.clone(), v.clone()),
                        None => table.remove(k),
                    };
                }
            }
            Step::ReplaceAll(t, entries) => {
                let borrowed: Vec<(&[u8], &[u8])> = entries
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_slice()))
                    .collect();
                let olds = tx.replace_all(TABLES[*t], &borrowed).expect("replace_all");
                let table = next.entry(TABLES[*t]).or_default();
                let expected: Vec<Option<Vec<u8>>> = entries
                    .iter()
                    .map(|(k, v)| table.insert(k.clone(), v.clone()))
                    .collect();
                assert_eq!(olds, expected, "{context}: replaced values");
            }
            Step::Read(t, k, lo, hi) => {
                let table = next.get(TABLES[*t]).cloned().unwrap_or_default();
                assert_eq!(
                    tx.get(TABLES[*t], k).expect("get"),
                    table.get(k).cloned(),
                    "{context}: get in transaction"
                );
                let range = as_range(lo, hi);
                assert_eq!(
                    scan_all(&tx, TABLES[*t], range),
                    model_range(&table, range),
                    "{context}: scan in transaction"
                );
                assert_eq!(
                    tx.len(TABLES[*t]).expect("len"),
                    table.len() as u64,
                    "{context}: len in transaction"
                );
            }
        }
    }
    next.retain(|_, t| !t.is_empty());
    if write.commit {
        tx.commit().expect("commit");
        next
    } else {
        drop(tx);
        model.clone()
    }
}

fn open(path: &std::path::Path, limit: usize) -> RedbBackend {
    RedbBackend::open(
        path,
        &RedbOptions {
            buffer_limit: limit,
            ..RedbOptions::default()
        },
    )
    .expect("open redb")
}

fn check(backend: &RedbBackend, model: &Model, context: &str) {
    check_reads(&backend.begin_read().expect("begin read"), model, context);
    for name in TABLES {
        let table = model.get(name).cloned().unwrap_or_default();
        let probes = [&[][..], &[0], &[1], &[0, 0xFF], &[0xFF, 2]];
        for key in table.keys().map(Vec::as_slice).chain(probes) {
            assert_eq!(
                backend
                    .read_one(name, key, |v| Ok(v.to_vec()))
                    .expect("read_one"),
                table.get(key).cloned(),
                "{context}: read_one {key:02x?} of {name}"
            );
        }
    }
    backend
        .with_read(|tx| {
            check_reads(tx, model, context);
            Ok(())
        })
        .expect("with_read");
}

fn run(ops: &[Op], limit: usize) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("store.redb");
    let mut backend = Some(open(&path, limit));
    let mut model = Model::new();
    for (i, op) in ops.iter().enumerate() {
        let context = format!("step {i} ({op:?}), limit {limit}");
        let b = backend.as_ref().expect("open");
        match op {
            Op::Write(write) => model = run_write(b, &model, write, &context),
            Op::Sync => {
                b.sync().expect("sync");
                assert_eq!(
                    b.buffered_bytes(),
                    0,
                    "{context}: the sync wrote the buffer"
                );
            }
            Op::Reopen => {
                drop(backend.take());
                backend = Some(open(&path, limit));
            }
            Op::HeldRead(writes) => {
                let held = b.begin_read().expect("begin read");
                let before = model.clone();
                for write in writes {
                    model = run_write(b, &model, write, &context);
                }
                check_reads(&held, &before, &format!("{context}: held read"));
            }
        }
        let b = backend.as_ref().expect("open");
        assert!(
            b.buffered_bytes() <= limit.max(4096),
            "{context}: {} bytes buffered",
            b.buffered_bytes()
        );
        check(b, &model, &context);
    }
    drop(backend);
    check(&open(&path, limit), &model, "reopened at the end");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn buffered_redb_agrees_with_the_reference(
        ops in prop::collection::vec(op(), 1..24),
        limit in prop_oneof![Just(0usize), Just(600), Just(DEFAULT_BUFFER_LIMIT)],
    ) {
        run(&ops, limit);
    }
}

/// A deferred commit is not in the file until a sync: the process that wrote it sees it,
/// a copy of the file taken before the sync does not hold it, one taken after does.
#[test]
fn deferred_commits_reach_the_file_only_with_a_sync() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("store.redb");
    let backend = open(&path, DEFAULT_BUFFER_LIMIT);
    let mut tx = backend.begin_write_with(Durability::Deferred).unwrap();
    tx.put("t", b"k", b"v").unwrap();
    tx.commit().unwrap();
    assert_eq!(
        backend.begin_read().unwrap().get("t", b"k").unwrap(),
        Some(b"v".to_vec())
    );
    assert!(backend.buffered_bytes() > 0);

    let copy = |name: &str| {
        let to = dir.path().join(name);
        std::fs::copy(&path, &to).unwrap();
        let copied = open(&to, DEFAULT_BUFFER_LIMIT);
        copied.begin_read().unwrap().get("t", b"k").unwrap()
    };
    assert_eq!(
        copy("before.redb"),
        None,
        "a deferred commit is in memory only"
    );
    backend.sync().unwrap();
    assert_eq!(backend.buffered_bytes(), 0);
    assert_eq!(copy("after.redb"), Some(b"v".to_vec()), "the sync wrote it");
}

/// A durable write transaction sees the buffered deferred commits and persists them with
/// its own changes.
#[test]
fn a_durable_commit_persists_the_deferred_ones_before_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("store.redb");
    let backend = open(&path, DEFAULT_BUFFER_LIMIT);
    let mut tx = backend.begin_write_with(Durability::Deferred).unwrap();
    tx.put("t", b"a", b"1").unwrap();
    tx.commit().unwrap();
    let mut tx = backend.begin_write_with(Durability::Immediate).unwrap();
    assert_eq!(tx.get("t", b"a").unwrap(), Some(b"1".to_vec()));
    tx.put("t", b"b", b"2").unwrap();
    tx.commit().unwrap();
    assert_eq!(backend.buffered_bytes(), 0);
    let to = dir.path().join("copy.redb");
    std::fs::copy(&path, &to).unwrap();
    let copied = open(&to, DEFAULT_BUFFER_LIMIT);
    let read = copied.begin_read().unwrap();
    assert_eq!(read.get("t", b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(read.get("t", b"b").unwrap(), Some(b"2".to_vec()));
}

/// Readers on other threads never see part of a transaction or a state older than one they
/// saw, while deferred commits, spills of a small buffer, syncs and durable commits go on.
#[test]
fn concurrent_readers_see_whole_transactions_in_order() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let backend = open(&dir.path().join("store.redb"), 300);
    let done = std::sync::atomic::AtomicBool::new(false);
    let read_pair = |tx: &dyn ReadTransaction| -> (u64, u64) {
        let n = |table: &str| {
            tx.get(table, b"n")
                .expect("get")
                .map_or(0, |v| u64::from_be_bytes(v.try_into().expect("8 bytes")))
        };
        (n("a"), n("b"))
    };
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut last = 0;
                let mut reads = 0u64;
                while !done.load(std::sync::atomic::Ordering::Acquire) || reads < 10 {
                    let (a, b) = read_pair(&backend.begin_read().expect("begin read"));
                    assert_eq!(a, b, "a transaction seen in part");
                    assert!(a >= last, "state went back from {last} to {a}");
                    last = a;
                    let (a, b) = backend.with_read(|tx| Ok(read_pair(tx))).expect("read");
                    assert_eq!(a, b, "a transaction seen in part");
                    assert!(a >= last, "state went back from {last} to {a}");
                    last = a;
                    reads += 1;
                }
            });
        }
        // Readers stop when the writer is done, also when it fails: a failure then shows
        // as the writer's panic instead of readers spinning until the test times out.
        struct Done<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Release);
            }
        }
        let _done = Done(&done);
        for n in 1..=600u64 {
            let durability = if n % 50 == 0 {
                Durability::Immediate
            } else {
                Durability::Deferred
            };
            let mut tx = backend.begin_write_with(durability).expect("begin write");
            tx.put("a", b"n", &n.to_be_bytes()).expect("put");
            tx.put("b", b"n", &n.to_be_bytes()).expect("put");
            tx.put("a", &n.to_be_bytes(), &[0; 32]).expect("put");
            tx.commit().expect("commit");
            if n % 7 == 0 {
                backend.sync().expect("sync");
            }
        }
    });
    assert_eq!(read_pair(&backend.begin_read().unwrap()), (600, 600));
}
