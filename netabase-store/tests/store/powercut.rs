//! Power loss under the redb backend, in process: redb runs on a simulated disk
//! ([`netabase_powercut::Disk`]) whose writes are volatile until redb syncs, and a seeded
//! cut keeps a seeded subset of the unsynced 4 KiB blocks (torn, reordered, all or none).
//! Unlike `SIGKILL` (the `crash` tests), this loses what the page cache held, so a missing
//! sync shows.
//!
//! One cut: a seeded workload of transactions (puts of small and multi-page values,
//! removals, cleared tables) runs until the power goes at a seeded operation of the disk;
//! the store is reopened on what survived (sometimes with a second cut during that
//! recovery, then reopened again) and must hold exactly the state after some commit at or
//! after the last acknowledged one: nothing acknowledged lost, no transaction in part. An
//! acknowledged commit is one whose durable commit returned, or a deferred one followed by
//! a sync that returned. Then the recovered store must take a new commit.
//!
//! Seeds run from 0 (`NETABASE_POWERCUT_CUTS` of them per test, [`DEFAULT_CUTS`] by
//! default); `NETABASE_POWERCUT_SEED` replays one. A failure prints the seed and the
//! command that replays it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use netabase_powercut::{Disk, RedbDisk, Retention, Rng, SyncMode};
use netabase_store::backend::{FULL_RANGE, ReadTransaction, WriteTransaction};
use netabase_store::{Backend, Durability, RedbBackend, RedbOptions};

/// Cuts per sweep unless `NETABASE_POWERCUT_CUTS` says otherwise.
const DEFAULT_CUTS: u64 = 200;

const TABLES: [&str; 2] = ["a", "b"];

/// Every table's entries: (table index, key) to value.
type State = BTreeMap<(usize, Vec<u8>), Vec<u8>>;

/// What one sweep runs.
#[derive(Debug, Clone, Copy)]
struct Workload {
    /// The name of the test, for the replay command.
    test: &'static str,
    durability: Durability,
    /// The redb backend's buffer limit (small ones make deferred commits spill).
    buffer_limit: usize,
    sync_mode: SyncMode,
}

/// One change of a transaction.
#[derive(Debug, Clone)]
enum Change {
    Put(usize, Vec<u8>, Vec<u8>),
    Remove(usize, Vec<u8>),
    Clear(usize),
}

/// The transactions of the workload of `seed`: 10 to 40 of them, each with 1 to 6 changes,
/// and after which of them a deferred workload syncs.
fn transactions(seed: u64) -> Vec<(Vec<Change>, bool)> {
    let mut rng = Rng::new(seed ^ 0x5EED_0F7A);
    let count = 10 + rng.below(31);
    (0..count)
        .map(|_| {
            let changes = (0..1 + rng.below(6))
                .map(|_| {
                    let table = rng.below(2) as usize;
                    let key = (rng.below(48) as u16).to_be_bytes().to_vec();
                    match rng.below(100) {
                        0..=1 => Change::Clear(table),
                        2..=21 => Change::Remove(table, key),
                        _ => {
                            // Mostly small values; one in eight spans several pages.
                            let len = if rng.below(8) == 0 {
                                1000 + rng.below(9000)
                            } else {
                                rng.below(200)
                            };
                            Change::Put(table, key, rng.bytes(len as usize))
                        }
                    }
                })
                .collect();
            (changes, rng.below(3) == 0)
        })
        .collect()
}

fn apply_to_model(state: &mut State, changes: &[Change]) {
    for change in changes {
        match change {
            Change::Put(t, k, v) => {
                state.insert((*t, k.clone()), v.clone());
            }
            Change::Remove(t, k) => {
                state.remove(&(*t, k.clone()));
            }
            Change::Clear(t) => state.retain(|(table, _), _| table != t),
        }
    }
}

fn commit(backend: &RedbBackend, durability: Durability, changes: &[Change]) -> bool {
    let Ok(mut tx) = backend.begin_write_with(durability) else {
        return false;
    };
    for change in changes {
        let done = match change {
            Change::Put(t, k, v) => tx.put(TABLES[*t], k, v),
            Change::Remove(t, k) => tx.delete(TABLES[*t], k),
            Change::Clear(t) => tx.clear(TABLES[*t]),
        };
        if done.is_err() {
            return false;
        }
    }
    tx.commit().is_ok()
}

fn options(workload: &Workload) -> RedbOptions {
    RedbOptions {
        durability: workload.durability,
        buffer_limit: workload.buffer_limit,
        ..RedbOptions::default()
    }
}

/// A new, empty database, closed cleanly: the durable image every cut starts from.
fn empty_image() -> Vec<u8> {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let disk = Disk::new();
            let backend =
                RedbBackend::with_storage(RedbDisk(disk.clone()), &RedbOptions::default())
                    .expect("create a database on the simulated disk");
            drop(backend);
            disk.sync().expect("sync the new database");
            disk.durable()
        })
        .clone()
}

/// What the workload did before the power went.
struct Run {
    /// `history[i]`: the state after the first `first + i` commits, from the last
    /// acknowledged one on.
    history: Vec<State>,
    /// The number of commits acknowledged.
    acknowledged: usize,
    /// The index of `history[0]` (equal to `acknowledged`).
    first: usize,
}

/// Runs the workload of `seed` on `disk` until it ends or the power goes.
fn run(workload: &Workload, seed: u64, disk: &Disk) -> Run {
    let mut out = Run {
        history: vec![State::new()],
        acknowledged: 0,
        first: 0,
    };
    let Ok(backend) = RedbBackend::with_storage(RedbDisk(disk.clone()), &options(workload)) else {
        return out;
    };
    let mut current = State::new();
    let mut commits = 0;
    for (changes, sync_after) in transactions(seed) {
        apply_to_model(&mut current, &changes);
        // A failed commit may be durable all the same (the power went after redb's sync):
        // its state is allowed, never required.
        out.history.push(current.clone());
        if !commit(&backend, workload.durability, &changes) {
            break;
        }
        commits += 1;
        let acked = match workload.durability {
            Durability::Immediate => true,
            Durability::Deferred => sync_after && backend.sync().is_ok(),
        };
        if acked {
            out.history.drain(..commits - out.first);
            out.first = commits;
            out.acknowledged = commits;
        }
        if disk.is_cut() {
            break;
        }
    }
    drop(backend);
    out
}

/// Every entry of every table.
fn read_state(backend: &RedbBackend) -> Result<State, String> {
    let tx = backend
        .begin_read()
        .map_err(|e| format!("begin_read: {e}"))?;
    let mut state = State::new();
    for (t, name) in TABLES.iter().enumerate() {
        tx.scan(name, FULL_RANGE, &mut |k, v| {
            state.insert((t, k.to_vec()), v.to_vec());
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .map_err(|e| format!("scan {name}: {e}"))?;
    }
    Ok(state)
}

/// How a cut went wrong.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The recovered state is that after commit `.0`, before the acknowledged `.1`.
    LostAcknowledged(usize, usize),
    /// The recovered state is that after no commit (a transaction in part, or garbage).
    NoCommitState,
    /// The store does not open, read or write after the cut.
    Broken(String),
    /// Something panicked (redb, when it opens the file).
    Panicked(String),
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// The key of the commit made while the store recovers from a cut, before a second cut:
/// it may or may not survive, so the checks leave it out.
const RECOVERING: &[u8] = b"recovering";

/// Opens the store on `image`, reads its state (without the commit made while recovering)
/// and checks that it takes a new commit.
fn reopen(workload: &Workload, image: Vec<u8>) -> Result<State, Failure> {
    let backend = RedbBackend::with_storage(RedbDisk(Disk::from_image(image)), &options(workload))
        .map_err(|e| Failure::Broken(format!("reopen: {e}")))?;
    let mut state = read_state(&backend).map_err(Failure::Broken)?;
    state.remove(&(1, RECOVERING.to_vec()));
    let probe = [Change::Put(0, b"probe".to_vec(), b"after the cut".to_vec())];
    if !commit(&backend, Durability::Immediate, &probe) {
        return Err(Failure::Broken("a commit after the cut failed".into()));
    }
    let after = read_state(&backend).map_err(Failure::Broken)?;
    if after.get(&(0, b"probe".to_vec())).map(Vec::as_slice) != Some(&b"after the cut"[..]) {
        return Err(Failure::Broken(
            "the commit after the cut is not there".into(),
        ));
    }
    Ok(state)
}

/// Checks the store recovered from `image` against `run`: the state after some commit at
/// or after the last acknowledged one. When it is not, finds out whether it is an older
/// one (acknowledged commits lost) or none at all.
fn check(workload: &Workload, seed: u64, run: &Run, image: Vec<u8>) -> Result<(), Failure> {
    let state = reopen(workload, image)?;
    if run.history.contains(&state) {
        return Ok(());
    }
    let mut current = State::new();
    if state == current && run.acknowledged > 0 {
        return Err(Failure::LostAcknowledged(0, run.acknowledged));
    }
    for (i, (changes, _)) in transactions(seed).iter().enumerate() {
        apply_to_model(&mut current, changes);
        if current == state && i + 1 < run.acknowledged {
            return Err(Failure::LostAcknowledged(i + 1, run.acknowledged));
        }
    }
    Err(Failure::NoCommitState)
}

/// One cut of `seed`: the workload, a cut at a seeded operation, recovery (sometimes cut
/// again), the checks.
fn cut(workload: &Workload, seed: u64) -> Result<(), Failure> {
    let mut rng = Rng::new(seed);
    // How many operations the whole workload makes, to cut anywhere in it (or after it).
    let probe = Disk::from_image(empty_image());
    probe.set_sync_mode(workload.sync_mode);
    run(workload, seed, &probe);
    let total = probe.ops();

    let disk = Disk::from_image(empty_image());
    disk.set_sync_mode(workload.sync_mode);
    let retention = Retention::draw(&mut rng);
    let cut_seed = rng.next_u64();
    disk.schedule_cut(rng.below(total + 2), cut_seed, retention);
    let run = run(workload, seed, &disk);
    let mut image = disk.cut_now(cut_seed, retention);

    if rng.below(4) == 0 {
        // The power goes again while the store recovers (redb may repair the file) and
        // takes a commit.
        let again = Disk::from_image(image);
        let second_seed = rng.next_u64();
        let second = Retention::draw(&mut rng);
        again.schedule_cut(rng.below(64), second_seed, second);
        if let Ok(backend) = RedbBackend::with_storage(RedbDisk(again.clone()), &options(workload))
        {
            let _ = read_state(&backend);
            let _ = commit(
                &backend,
                Durability::Immediate,
                &[Change::Put(1, RECOVERING.to_vec(), vec![1; 5000])],
            );
            drop(backend);
        }
        image = again.cut_now(second_seed, second);
    }
    check(workload, seed, &run, image)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a number")))
}

/// Runs the cuts of a sweep and returns the failures (seed and what went wrong).
fn sweep(workload: &Workload, cuts: u64) -> Vec<(u64, Failure)> {
    let seeds: Vec<u64> = match env_u64("NETABASE_POWERCUT_SEED") {
        Some(seed) => vec![seed],
        None => (0..cuts).collect(),
    };
    let started = std::time::Instant::now();
    let failures: Vec<(u64, Failure)> = seeds
        .iter()
        .filter_map(|&seed| {
            let outcome = std::panic::catch_unwind(|| cut(workload, seed))
                .unwrap_or_else(|panic| Err(Failure::Panicked(panic_message(&*panic))));
            outcome.err().map(|f| (seed, f))
        })
        .collect();
    eprintln!(
        "{}: {} cuts in {:.1} s, {} failed",
        workload.test,
        seeds.len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    for (seed, failure) in failures.iter().take(20) {
        eprintln!("  seed {seed}: {failure:?}");
    }
    failures
}

/// Runs a sweep that must lose nothing; on a failure, names the seed and the replay
/// command.
fn must_survive(workload: Workload) {
    let cuts = env_u64("NETABASE_POWERCUT_CUTS").unwrap_or(DEFAULT_CUTS);
    let failures = sweep(&workload, cuts);
    if let Some((seed, failure)) = failures.first() {
        panic!(
            "{} of {cuts} power cuts failed; the first, seed {seed}: {failure:?}\n\
             replay: NETABASE_POWERCUT_SEED={seed} cargo nextest run -p netabase-store --test store powercut::{}",
            failures.len(),
            workload.test
        );
    }
}

#[test]
fn durable_commits_survive_power_cuts() {
    must_survive(Workload {
        test: "durable_commits_survive_power_cuts",
        durability: Durability::Immediate,
        buffer_limit: netabase_store::backend::DEFAULT_BUFFER_LIMIT,
        sync_mode: SyncMode::Honest,
    });
}

/// The redb backend's write-behind buffer: deferred commits, acknowledged by a sync.
#[test]
fn synced_deferred_commits_survive_power_cuts() {
    must_survive(Workload {
        test: "synced_deferred_commits_survive_power_cuts",
        durability: Durability::Deferred,
        buffer_limit: netabase_store::backend::DEFAULT_BUFFER_LIMIT,
        sync_mode: SyncMode::Honest,
    });
}

/// The same with a buffer so small that deferred commits spill into redb between syncs.
#[test]
fn spilled_deferred_commits_survive_power_cuts() {
    must_survive(Workload {
        test: "spilled_deferred_commits_survive_power_cuts",
        durability: Durability::Deferred,
        buffer_limit: 8 << 10,
        sync_mode: SyncMode::Honest,
    });
}

/// Positive control: on a disk whose syncs make nothing durable, redb's acknowledged
/// commits are lost within a few dozen cuts, and the checks above say so.
#[test]
fn a_store_whose_syncs_do_nothing_loses_acknowledged_commits() {
    let workload = Workload {
        test: "a_store_whose_syncs_do_nothing_loses_acknowledged_commits",
        durability: Durability::Immediate,
        buffer_limit: netabase_store::backend::DEFAULT_BUFFER_LIMIT,
        sync_mode: SyncMode::Ignored,
    };
    let failures = sweep(&workload, 40);
    let lost = failures
        .iter()
        .filter(|(_, f)| matches!(f, Failure::LostAcknowledged(..)))
        .count();
    assert!(
        lost > 0,
        "no cut of 40 lost an acknowledged commit without syncs: {failures:?}"
    );
}

/// Positive control: a deferred commit that was never synced is gone after a cut that
/// keeps no unsynced block, while the synced one before it stays.
#[test]
fn an_unsynced_deferred_commit_is_lost() {
    let disk = Disk::from_image(empty_image());
    let backend = RedbBackend::with_storage(
        RedbDisk(disk.clone()),
        &RedbOptions {
            durability: Durability::Deferred,
            ..RedbOptions::default()
        },
    )
    .unwrap();
    let synced = [Change::Put(0, b"synced".to_vec(), vec![1; 3000])];
    assert!(commit(&backend, Durability::Deferred, &synced));
    backend.sync().unwrap();
    let unsynced = [Change::Put(0, b"unsynced".to_vec(), vec![2; 3000])];
    assert!(commit(&backend, Durability::Deferred, &unsynced));
    // Visible before the cut.
    assert_eq!(read_state(&backend).unwrap().len(), 2);
    let image = disk.cut_now(7, Retention::ALL);
    drop(backend);
    let state = read_state(
        &RedbBackend::with_storage(RedbDisk(Disk::from_image(image)), &RedbOptions::default())
            .unwrap(),
    )
    .unwrap();
    assert!(state.contains_key(&(0, b"synced".to_vec())));
    assert!(!state.contains_key(&(0, b"unsynced".to_vec())));
}

/// What [`RedbBackend`] guards against, shown on redb alone: a commit that grows the file
/// writes a header describing the longer file, and a cut that keeps that header's block but
/// neither the new length nor the last blocks leaves a file redb 3.1 refuses to open, with
/// a panic. `RedbBackend` makes each length change durable first, and the same cuts leave
/// it a store that opens at the last acknowledged commit.
#[test]
fn redb_alone_can_be_left_unopenable_by_a_lost_length_change() {
    let value = vec![7u8; 1 << 20];
    let grow = |db: &redb::Database| {
        let tx = db.begin_write().unwrap();
        tx.open_table(redb::TableDefinition::<&[u8], &[u8]>::new("a"))
            .unwrap()
            .insert(&b"big"[..], &value[..])
            .unwrap();
        tx.commit()
    };
    // The operation of the disk that is the commit's last sync.
    let probe = Disk::from_image(empty_image());
    let db = redb::Database::builder()
        .create_with_backend(RedbDisk(probe.clone()))
        .unwrap();
    grow(&db).unwrap();
    let last_sync = probe.ops() - 1;
    drop(db);

    let retention = Retention {
        keep: 0.05,
        tear: 0.0,
    };
    const SEEDS: u64 = 150;
    let mut redb_panicked = 0;
    // redb's panics are expected here: keep them out of the output.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for seed in 0..SEEDS {
        for raw in [true, false] {
            let disk = Disk::from_image(empty_image());
            disk.schedule_cut(last_sync, seed, retention);
            if raw {
                let db = redb::Database::builder()
                    .create_with_backend(RedbDisk(disk.clone()))
                    .unwrap();
                assert!(
                    grow(&db).is_err(),
                    "the power went before the commit's sync"
                );
                drop(db);
            } else {
                let backend =
                    RedbBackend::with_storage(RedbDisk(disk.clone()), &RedbOptions::default())
                        .unwrap();
                let changes = [Change::Put(0, b"big".to_vec(), value.clone())];
                assert!(!commit(&backend, Durability::Immediate, &changes));
                drop(backend);
            }
            let image = disk.cut_now(seed, retention);
            let opened = std::panic::catch_unwind(|| {
                redb::Database::builder()
                    .create_with_backend(RedbDisk(Disk::from_image(image.clone())))
                    .map(drop)
            });
            match (raw, opened) {
                (true, Err(_)) => redb_panicked += 1,
                (false, Err(panic)) => {
                    std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
                    panic!(
                        "seed {seed}: RedbBackend's file does not open after the cut: {}",
                        panic_message(&*panic)
                    )
                }
                (_, Ok(result)) => {
                    result.unwrap_or_else(|e| panic!("seed {seed}: raw {raw}: {e}"));
                }
            }
        }
    }
    std::panic::set_hook(hook);
    assert!(
        redb_panicked > 0,
        "no cut of {SEEDS} left redb alone unopenable"
    );
    eprintln!("redb alone: {redb_panicked} of {SEEDS} cuts left a file that redb cannot open");
}
