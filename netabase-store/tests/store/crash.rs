//! Crash durability: a child process writes transactions and acknowledges each one; the
//! parent kills it with SIGKILL at a random moment, reopens the store and checks that every
//! acknowledged transaction is there, intact, with its index entries, and that no
//! transaction is there in part.
//!
//! The moment is drawn from a seeded generator: after a random number of acknowledgements
//! (sometimes none, to crash during open and recovery) plus a random delay of up to 2 ms.
//! `NETABASE_CRASH_SEED` replays a run; `NETABASE_CRASH_ITERATIONS` (default 20) sets the
//! number of crashes per backend.

use std::time::Duration;

use netabase_store::{BackendKind, Store};

use crate::child::{Child, Mode, counter_key, revisited, written};
use crate::support::*;
use crate::{config, store_path};

/// SplitMix64: a small seeded generator for the crash schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    match std::env::var("NETABASE_CRASH_SEED") {
        Ok(s) => s.parse().expect("NETABASE_CRASH_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

fn iterations() -> usize {
    std::env::var("NETABASE_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

/// Checks the store after a crash; returns the last committed transaction.
pub(crate) fn verify(
    store: &Store<ChatDefinition>,
    acked: Option<u64>,
    context: &str,
) -> Option<u64> {
    let last = store
        .get(&counter_key())
        .unwrap_or_else(|e| panic!("{context}: counter unreadable: {e}"))
        .map(|s| u64::from_be_bytes(s.value.try_into().expect("8 bytes")));
    if let Some(acked) = acked {
        assert!(
            last.is_some_and(|l| l >= acked),
            "{context}: transaction {acked} was acknowledged, the store's last is {last:?}"
        );
    }
    let Some(last) = last else {
        assert_eq!(store.count::<Message>().unwrap(), 0, "{context}");
        return None;
    };
    let all = store
        .range::<Message>(..)
        .unwrap_or_else(|e| panic!("{context}: scan failed: {e}"));
    assert_eq!(
        all.len() as u64,
        3 * (last + 1),
        "{context}: messages of transactions 0..={last} and nothing else"
    );
    for txn in 0..=last {
        for part in 0..3 {
            let expected = if part == 0 && txn < last {
                revisited(txn)
            } else {
                written(txn, part)
            };
            assert_eq!(
                all[(3 * txn + part) as usize],
                expected,
                "{context}: transaction {txn} part {part}"
            );
        }
    }
    for w in 0..4 {
        let expected: Vec<Message> = all
            .iter()
            .filter(|m| m.author == format!("w{w}"))
            .cloned()
            .collect();
        assert_eq!(
            store.get_by_secondary(&author(&format!("w{w}"))).unwrap(),
            expected,
            "{context}: index of author w{w}"
        );
    }
    assert_eq!(
        store.get_by_secondary(&author("r")).unwrap().len() as u64,
        last,
        "{context}: index of revisited messages"
    );
    let entries = store
        .read(|tx| {
            use netabase_store::backend::ReadTransaction;
            tx.raw().len(&netabase_store::index_table("Message"))
        })
        .unwrap();
    assert_eq!(
        entries,
        2 * all.len() as u64,
        "{context}: no stale index entry"
    );
    Some(last)
}

fn crash_repeatedly(kind: BackendKind, mode: Mode) {
    let seed = seed();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let mut acked_total: Option<u64> = None;
    let mut crashes_after_acks = 0;
    let runs = iterations();
    for run in 0..runs {
        let context = format!(
            "{kind:?} {mode:?}, crash {run} of seed {seed} (replay: NETABASE_CRASH_SEED={seed})"
        );
        let wait_for = match rng.below(8) {
            0 => 0,
            _ => 1 + rng.below(40),
        };
        let delay = Duration::from_micros(rng.below(2_000));
        let mut child = Child::new(mode, kind, &path).spawn();
        let mut seen = 0;
        while seen < wait_for {
            match child.next_line() {
                Some(line) if line.starts_with("ACK ") => seen += 1,
                Some(_) => {}
                None => break,
            }
        }
        // The randomised moment of the crash (not a synchronisation).
        std::thread::sleep(delay);
        let output = child.kill();
        assert!(
            !output.success,
            "{context}: the child ended by itself: {output:?}"
        );
        if let Some(&max) = output.acks().iter().max() {
            acked_total = Some(acked_total.map_or(max, |a| a.max(max)));
            crashes_after_acks += 1;
        }
        let store = Store::<ChatDefinition>::open_with(&path, config(kind, false))
            .unwrap_or_else(|e| panic!("{context}: reopening failed: {e}"));
        let last = verify(&store, acked_total, &context);
        assert!(last >= acked_total, "{context}");
    }
    assert!(
        crashes_after_acks >= runs / 2,
        "seed {seed}: only {crashes_after_acks} of {runs} crashes came after a write"
    );
}

#[test]
fn acknowledged_writes_survive_sigkill_redb() {
    crash_repeatedly(BackendKind::Redb, Mode::Crash);
}

#[test]
fn acknowledged_writes_survive_sigkill_sled() {
    crash_repeatedly(BackendKind::Sled, Mode::Crash);
}

/// Deferred commits made durable by one sync for several transactions (as the node's
/// driver does before it answers a burst of requests).
#[test]
fn group_committed_writes_survive_sigkill_redb() {
    crash_repeatedly(BackendKind::Redb, Mode::CrashGrouped);
}

#[test]
fn group_committed_writes_survive_sigkill_sled() {
    crash_repeatedly(BackendKind::Sled, Mode::CrashGrouped);
}
