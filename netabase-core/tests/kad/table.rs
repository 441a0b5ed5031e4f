//! Routing-table invariants under arbitrary sequences of operations.

use std::time::Duration;

use netabase_core::kbucket::{RoutingTable, Status, UpdateOutcome};
use netabase_core::{Address, Instant, Key, PeerId};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Update { peer: u8, connected: bool },
    Disconnect { peer: u8 },
    Remove { peer: u8 },
    RemoveAddress { peer: u8 },
    Advance { secs: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), any::<bool>()).prop_map(|(peer, connected)| Op::Update { peer, connected }),
        1 => any::<u8>().prop_map(|peer| Op::Disconnect { peer }),
        1 => any::<u8>().prop_map(|peer| Op::Remove { peer }),
        1 => any::<u8>().prop_map(|peer| Op::RemoveAddress { peer }),
        1 => (0u16..120).prop_map(|secs| Op::Advance { secs }),
    ]
}

fn peer(n: u8) -> PeerId {
    PeerId::from_seed(u64::from(n))
}

fn addr(n: u8) -> Address {
    Address::from_bytes(&[n, 1]).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn invariants_hold_under_arbitrary_operations(
        k in 1usize..6,
        ops in prop::collection::vec(op(), 0..300),
    ) {
        let local = PeerId::from_seed(100_000);
        let mut table = RoutingTable::new(Key::from_peer(&local), k, Duration::from_secs(60));
        let mut now = Instant::ZERO;
        for op in ops {
            match op {
                Op::Update { peer: n, connected } => {
                    let status = if connected { Status::Connected } else { Status::Disconnected };
                    let before = table.contains(&peer(n));
                    let outcome = table.update(now, peer(n), &[addr(n)], status);
                    match outcome {
                        UpdateOutcome::Inserted { .. } => prop_assert!(!before),
                        UpdateOutcome::Updated { .. } => {
                            prop_assert!(before);
                            prop_assert_eq!(table.entry(&peer(n)).unwrap().status, status);
                        }
                        UpdateOutcome::Pending { probe, .. } => {
                            prop_assert!(!before && table.contains(&probe));
                        }
                        UpdateOutcome::Full { .. } => prop_assert!(!table.contains(&peer(n))),
                        UpdateOutcome::SelfEntry => prop_assert!(false, "no peer here is local"),
                    }
                }
                Op::Disconnect { peer: n } => {
                    let present = table.contains(&peer(n));
                    prop_assert_eq!(table.mark_disconnected(&peer(n)), present);
                }
                Op::Remove { peer: n } => {
                    table.remove(now, &peer(n));
                    prop_assert!(!table.contains(&peer(n)));
                }
                Op::RemoveAddress { peer: n } => {
                    table.remove_address(now, &peer(n), &addr(n));
                    prop_assert!(!table.contains(&peer(n)));
                }
                Op::Advance { secs } => {
                    now += Duration::from_secs(u64::from(secs));
                    for r in table.apply_pending(now) {
                        prop_assert!(table.contains(&r.inserted));
                        prop_assert!(!table.contains(&r.evicted));
                    }
                    prop_assert!(table.next_pending_deadline().is_none_or(|t| t > now));
                }
            }
            table.check_invariants().map_err(TestCaseError::fail)?;
        }
        // closest() agrees with a brute-force sort of every entry, for any count and with
        // any one peer left out.
        let target = Key::hash(b"target");
        let mut all: Vec<PeerId> = table.entries().map(|e| e.peer).collect();
        all.sort_by_key(|p| Key::from_peer(p).distance(&target));
        let mut expected = all.clone();
        expected.truncate(k);
        let closest: Vec<PeerId> = table.closest(&target, k).into_iter().map(|e| e.peer).collect();
        prop_assert_eq!(closest, expected);
        for n in [0, 1, 2, k + 1, 3 * k] {
            for exclude in [None, all.first(), all.get(1), all.last()] {
                let expected: Vec<PeerId> = all
                    .iter()
                    .filter(|p| Some(*p) != exclude)
                    .take(n)
                    .copied()
                    .collect();
                let got: Vec<PeerId> = table
                    .closest_excluding(&target, n, exclude)
                    .into_iter()
                    .map(|e| e.peer)
                    .collect();
                prop_assert_eq!(got, expected);
            }
        }
    }
}
