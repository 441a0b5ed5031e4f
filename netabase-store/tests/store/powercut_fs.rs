//! Power cuts of whole processes, on a FUSE file system whose file data is volatile until
//! the file's `fsync` and whose directory entries are volatile until the directory's
//! (`netabase_powercut::fs`). A child process writes transactions and acknowledges each
//! one (the `crash` tests' writer); after a seeded number of acknowledgements it is killed
//! with SIGKILL, the FUSE connection aborted, the unsynced state dropped (file data in
//! part, drawn from the seed) and a fresh instance mounted on what survived; the store is
//! reopened there and must hold every acknowledged transaction, whole, with its index
//! entries (the `crash` tests' checks).
//!
//! Needs root and `/dev/fuse`. `NETABASE_POWERCUT_FS_CUTS` sets the number of cuts per
//! test ([`DEFAULT_CUTS`] by default), `NETABASE_POWERCUT_SEED` the seed (0 by default).

use netabase_powercut::fs::{Image, mount};
use netabase_powercut::{Retention, Rng};
use netabase_store::{BackendKind, Store};

use crate::child::{Child, Mode};
use crate::config;
use crate::crash::verify;
use crate::support::ChatDefinition;

/// Cuts per test unless `NETABASE_POWERCUT_FS_CUTS` says otherwise.
const DEFAULT_CUTS: u64 = 20;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a number")))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// What a series of cuts found.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Cuts made.
    pub(crate) cuts: u64,
    /// Cuts after which at least one transaction had been acknowledged.
    pub(crate) after_acks: u64,
    /// The failures: the cut and what was wrong.
    pub(crate) failures: Vec<(u64, String)>,
}

/// `cuts` power cuts of a child writing to a store of `kind` on the FUSE file system.
/// Stops at the first failure.
pub(crate) fn cut_repeatedly(kind: BackendKind, mode: Mode, cuts: u64, seed: u64) -> Outcome {
    cut_and_check(kind, mode, cuts, seed, |path, acked, context| {
        let store = Store::<ChatDefinition>::open_with(path, config(kind, false))
            .map_err(|e| format!("{context}: reopening failed: {e}"))?;
        verify(&store, acked, context);
        Ok(())
    })
}

fn cut_and_check(
    kind: BackendKind,
    mode: Mode,
    cuts: u64,
    seed: u64,
    check: impl Fn(&std::path::Path, Option<u64>, &str) -> Result<(), String>,
) -> Outcome {
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path().join("mnt");
    std::fs::create_dir(&at).unwrap();
    let mut mounted =
        mount(Image::empty(), &at).expect("mount the FUSE file system (root, /dev/fuse)");
    let path = at.join("store");
    let mut acked: Option<u64> = None;
    let mut outcome = Outcome::default();
    for cut in 0..cuts {
        outcome.cuts += 1;
        let wait_for = match rng.below(8) {
            0 => 0,
            _ => 1 + rng.below(30),
        };
        let mut child = Child::new(mode, kind, &path).spawn();
        let mut seen = 0;
        while seen < wait_for {
            match child.next_line() {
                Some(line) if line.starts_with("ACK ") => seen += 1,
                Some(_) => {}
                None => break,
            }
        }
        let output = child.kill();
        if output.success {
            outcome
                .failures
                .push((cut, format!("the child ended by itself: {output:?}")));
            break;
        }
        if let Some(&max) = output.acks().iter().max() {
            acked = Some(acked.map_or(max, |a| a.max(max)));
            outcome.after_acks += 1;
        }
        let retention = Retention::draw(&mut rng);
        let image = mounted.cut(rng.next_u64(), retention);
        mounted = mount(image, &at).expect("mount again");
        let context = format!("{kind:?} {mode:?}, cut {cut} of seed {seed} ({retention:?})");
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check(&path, acked, &context)
        }));
        let failure = match checked {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(panic) => Some(panic_message(&*panic)),
        };
        if let Some(failure) = failure {
            outcome.failures.push((cut, failure));
            break;
        }
    }
    drop(mounted);
    outcome
}

/// Runs the cuts that must lose nothing; a failure names the seed and the replay command.
fn must_survive(test: &str, kind: BackendKind, mode: Mode) {
    let cuts = env_u64("NETABASE_POWERCUT_FS_CUTS").unwrap_or(DEFAULT_CUTS);
    let seed = env_u64("NETABASE_POWERCUT_SEED").unwrap_or(0);
    let started = std::time::Instant::now();
    let outcome = cut_repeatedly(kind, mode, cuts, seed);
    eprintln!(
        "{test}: {} cuts ({} after acknowledgements) in {:.1} s, failures: {:?}",
        outcome.cuts,
        outcome.after_acks,
        started.elapsed().as_secs_f64(),
        outcome.failures
    );
    if let Some((cut, failure)) = outcome.failures.first() {
        panic!(
            "power cut {cut} failed: {failure}\n\
             replay: NETABASE_POWERCUT_SEED={seed} NETABASE_POWERCUT_FS_CUTS={} cargo nextest run -p netabase-store --test store powercut_fs::{test}",
            cut + 1
        );
    }
    assert!(
        outcome.after_acks >= cuts / 2,
        "only {} of {cuts} cuts came after an acknowledged write",
        outcome.after_acks
    );
}

#[test]
fn redb_loses_nothing_acknowledged_over_power_cuts() {
    must_survive(
        "redb_loses_nothing_acknowledged_over_power_cuts",
        BackendKind::Redb,
        Mode::Crash,
    );
}

#[test]
fn redb_group_commits_lose_nothing_acknowledged_over_power_cuts() {
    must_survive(
        "redb_group_commits_lose_nothing_acknowledged_over_power_cuts",
        BackendKind::Redb,
        Mode::CrashGrouped,
    );
}

#[test]
fn sled_loses_nothing_acknowledged_over_power_cuts() {
    must_survive(
        "sled_loses_nothing_acknowledged_over_power_cuts",
        BackendKind::Sled,
        Mode::Crash,
    );
}

/// sled 0.34 as it is (its own `flush()`, no further sync; the directory entries of its
/// files synced by the writer, so only file data is at stake): acknowledged writes are
/// lost within a few cuts, because its `sync_file_range` never reaches the file system as
/// a sync. The positive control of the cuts above: a store that skips its sync is caught.
#[test]
fn sled_alone_loses_acknowledged_writes() {
    const CUTS: u64 = 10;
    let outcome = cut_and_check(
        BackendKind::Sled,
        Mode::SledAlone,
        CUTS,
        0,
        |path, acked, context| {
            let db = sled::open(path).map_err(|e| format!("{context}: reopening failed: {e}"))?;
            for n in 0..=acked.unwrap_or(0) {
                if acked.is_some() && db.get(n.to_be_bytes()).ok().flatten().is_none() {
                    return Err(format!("{context}: write {n} was acknowledged and is gone"));
                }
            }
            Ok(())
        },
    );
    eprintln!("sled alone: {outcome:?}");
    assert!(
        !outcome.failures.is_empty(),
        "sled alone lost nothing over {CUTS} cuts: {outcome:?}"
    );
}
