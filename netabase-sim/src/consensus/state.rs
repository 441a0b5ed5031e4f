//! The replicated state the simulated members apply entries to: the core's [`KvState`],
//! watched by the at-most-once checker, and optionally broken (`no-dedup`).

use std::collections::BTreeSet;

use netabase_core::PeerId;
use netabase_core::consensus::{
    Applied, Entry, EntryId, KvCommand, KvState, Position, Slot, SnapshotError, State,
};

/// A [`KvState`] that records every entry id it applied with effect (not answered as a
/// duplicate), notes each id applied with effect twice, and keeps its digest after every
/// slot.
///
/// With `no_dedup` (the injected bug), an entry the inner state refuses as a duplicate is
/// executed again under a fresh id (a path the dedup table has never seen), and reported
/// as a first application.
#[derive(Clone, Debug, Default)]
pub struct SimState {
    inner: KvState,
    no_dedup: bool,
    fresh: u64,
    effective: BTreeSet<EntryId>,
    twice: Vec<(EntryId, Position)>,
    digests: Vec<(Slot, [u8; 32])>,
}

impl SimState {
    /// An empty state; `no_dedup` re-applies retried entries.
    pub fn new(no_dedup: bool) -> Self {
        SimState {
            no_dedup,
            ..SimState::default()
        }
    }

    /// The key-value state.
    pub fn kv(&self) -> &KvState {
        &self.inner
    }

    /// The state's digest after each slot it applied, in order (this incarnation's; a
    /// restarted member replays its log into a fresh state).
    pub fn digests(&self) -> &[(Slot, [u8; 32])] {
        &self.digests
    }

    /// Entry ids applied with effect more than once, with the position of the repeat, in
    /// the order they happened.
    pub fn applied_twice(&self) -> &[(EntryId, Position)] {
        &self.twice
    }
}

impl State for SimState {
    fn applied(&self) -> Slot {
        self.inner.applied()
    }

    fn apply(&mut self, position: Position, entry: &Entry) -> Applied {
        let mut applied = self.inner.apply(position, entry);
        if applied.duplicate && self.no_dedup {
            self.fresh += 1;
            let fresh = Entry {
                id: EntryId {
                    proposer: entry.id.proposer,
                    seq: (1 << 63) | self.fresh,
                },
                command: entry.command.clone(),
            };
            applied = self.inner.apply(position, &fresh);
        }
        if !applied.duplicate && !self.effective.insert(entry.id) {
            self.twice.push((entry.id, position));
        }
        applied
    }

    fn set_applied(&mut self, slot: Slot) {
        self.inner.set_applied(slot);
        self.digests.push((slot, self.inner.digest()));
    }

    fn applied_response(&self, id: &EntryId) -> Option<Vec<u8>> {
        self.inner.applied_response(id)
    }

    fn freeze(&self) -> Vec<u8> {
        self.inner.freeze()
    }

    fn install(&mut self, slot: Slot, image: &[u8]) -> Result<(), SnapshotError> {
        self.inner.install(slot, image)?;
        self.digests.push((slot, self.inner.digest()));
        Ok(())
    }
}

/// The bytes [`KvState`] stores for a list of `elements` (as [`KvCommand::Append`] writes
/// them): the workload writes every value in this form, so that puts, compare-and-sets
/// and appends to one key compose as the linearizability model's lists do.
pub fn list_bytes(elements: &[u64]) -> Vec<u8> {
    let mut scratch = KvState::new();
    for (i, e) in elements.iter().enumerate() {
        let entry = Entry {
            id: EntryId {
                proposer: PeerId::from_seed(0),
                seq: i as u64 + 1,
            },
            command: KvCommand::Append {
                key: vec![0],
                value: e.to_be_bytes().to_vec(),
            }
            .encode(),
        };
        scratch.apply(
            Position {
                slot: 1,
                index: i as u32,
            },
            &entry,
        );
    }
    scratch
        .get(&[0])
        .map(|(bytes, _)| bytes.to_vec())
        .unwrap_or_default()
}

/// The elements of a list as [`list_bytes`] writes them (elements that are not 8 bytes
/// long read as `u64::MAX`, which no client writes).
pub fn list_elements(bytes: &[u8]) -> Vec<u64> {
    KvState::decode_list(bytes)
        .into_iter()
        .map(|e| {
            <[u8; 8]>::try_from(e.as_slice())
                .map(u64::from_be_bytes)
                .unwrap_or(u64::MAX)
        })
        .collect()
}
